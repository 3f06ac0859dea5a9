//! The vocabulary of the built-in story corpus: names, animals, places, objects, foods, feelings,
//! activities and the phrases the story templates choose from.
//!
//! Invariant: every string is printable ASCII without newlines (the corpus test checks the output), and
//! lists are non-empty (the generator picks from them without checking).

pub(super) const GIRL_NAMES: &[&str] = &[
    "Lily", "Mia", "Emma", "Sara", "Lucy", "Anna", "Ella", "Zoe", "Amy", "Rosa", "Nora", "Ivy", "Maya", "Ruby",
    "Sophie", "Clara", "Hannah", "Chloe", "Grace", "Lena", "Daisy", "Molly", "Jane", "Kate", "Olivia", "Bella",
    "Alice", "Julia", "Nina", "Tessa", "Ada", "Fiona",
];

pub(super) const BOY_NAMES: &[&str] = &[
    "Tom", "Ben", "Max", "Sam", "Leo", "Jack", "Tim", "Noah", "Finn", "Owen", "Luke", "Jake", "Eli", "Adam", "Oscar",
    "Henry", "Theo", "Ryan", "Milo", "Hugo", "Dan", "Joe", "Peter", "Lucas", "Toby", "Felix", "Ned", "Oliver", "Arlo",
    "Jonah", "Kai", "Ravi",
];

pub(super) const PET_NAMES: &[&str] = &[
    "Pip", "Bubbles", "Whiskers", "Fluffy", "Spot", "Sunny", "Coco", "Buttons", "Patch", "Pepper", "Ziggy", "Biscuit",
    "Rusty", "Snowy", "Hoppy", "Nibbles", "Tiny", "Goldie", "Muffin", "Shadow", "Peanut", "Dot", "Bramble", "Twig",
];

/// Animals a character can be, singular.
pub(super) const ANIMALS: &[&str] = &[
    "bunny", "cat", "dog", "bear", "fox", "owl", "duck", "frog", "mouse", "bird", "turtle", "squirrel", "puppy",
    "kitten", "lion", "elephant", "pig", "cow", "horse", "sheep", "goat", "hen", "deer", "hedgehog", "raccoon",
    "penguin", "monkey", "giraffe", "zebra", "ladybug", "bee", "snail",
];

/// Personality words for a character ("a curious girl").
pub(super) const TRAITS: &[&str] = &[
    "kind", "curious", "brave", "shy", "silly", "gentle", "clever", "happy", "playful", "friendly", "grumpy", "sleepy",
    "cheerful", "careful", "proud", "little", "busy", "quiet", "loud", "funny", "smart", "honest", "helpful", "bouncy",
];

/// Looks of an object ("a shiny ball").
pub(super) const LOOKS: &[&str] = &[
    "red", "blue", "green", "yellow", "purple", "pink", "orange", "shiny", "soft", "big", "small", "old", "new",
    "tiny", "pretty", "sparkly", "striped", "round", "fluffy", "bright", "special", "little", "wooden", "golden",
];

/// Things a character can own, lose, share or find.
pub(super) const OBJECTS: &[&str] = &[
    "ball",
    "kite",
    "balloon",
    "teddy bear",
    "toy car",
    "boat",
    "book",
    "hat",
    "scarf",
    "drum",
    "box",
    "key",
    "shell",
    "stone",
    "feather",
    "cup",
    "blanket",
    "bike",
    "wagon",
    "doll",
    "robot",
    "puzzle",
    "ring",
    "bell",
    "map",
    "lamp",
    "sock",
    "crayon",
    "whistle",
    "flag",
    "necklace",
    "jar",
    "basket",
    "umbrella",
    "spoon",
    "marble",
    "rope",
    "brush",
    "toy train",
    "backpack",
];

/// Things one can eat.
pub(super) const FOODS: &[&str] = &[
    "cake",
    "pie",
    "soup",
    "bread",
    "honey",
    "carrots",
    "berries",
    "cookies",
    "sandwiches",
    "apples",
    "pancakes",
    "muffins",
    "grapes",
    "cheese",
    "lemonade",
    "ice cream",
    "corn",
    "nuts",
    "jam",
    "peaches",
];

/// Places with the preposition that goes before them.
pub(super) const PLACES: &[(&str, &str)] = &[
    ("in", "the park"),
    ("in", "the forest"),
    ("at", "the beach"),
    ("in", "the garden"),
    ("on", "the farm"),
    ("at", "school"),
    ("by", "the lake"),
    ("on", "the hill"),
    ("in", "the meadow"),
    ("in", "the kitchen"),
    ("at", "the library"),
    ("at", "the playground"),
    ("by", "the river"),
    ("by", "the pond"),
    ("at", "the zoo"),
    ("at", "the market"),
    ("in", "the village"),
    ("in", "the backyard"),
    ("in", "the big field"),
    ("near", "the old castle"),
    ("in", "the toy shop"),
    ("in", "the little town"),
    ("on", "the mountain"),
    ("in", "the barn"),
    ("in", "the woods"),
    ("at", "the fair"),
];

/// Hiding spots for a lost thing ("under the bed").
pub(super) const SPOTS: &[&str] = &[
    "under the bed",
    "behind the door",
    "in the grass",
    "under a big leaf",
    "inside a box",
    "behind a tree",
    "under the table",
    "in the sand",
    "next to a rock",
    "on a high shelf",
    "in the toy chest",
    "under the bench",
    "behind the couch",
    "in a pile of leaves",
    "by the fence",
    "under a bush",
];

/// Sentence openings that set the time.
pub(super) const TIMES: &[&str] = &[
    "One sunny morning",
    "One rainy day",
    "On a cold winter night",
    "One warm summer afternoon",
    "Early one spring morning",
    "One windy day",
    "One day",
    "Last Saturday",
    "One snowy morning",
    "One bright afternoon",
    "Late one evening",
    "On a quiet Sunday",
];

/// Feelings, as adjectives.
pub(super) const GOOD_FEELINGS: &[&str] = &[
    "happy",
    "glad",
    "proud",
    "excited",
    "thankful",
    "joyful",
    "calm",
    "cheerful",
    "delighted",
];
pub(super) const BAD_FEELINGS: &[&str] = &[
    "sad",
    "worried",
    "scared",
    "upset",
    "lonely",
    "grumpy",
    "nervous",
    "frustrated",
    "confused",
];

/// Activities: (base, past, -ing).
pub(super) const ACTIVITIES: &[(&str, &str, &str)] = &[
    ("play", "played", "playing"),
    ("run", "ran", "running"),
    ("jump", "jumped", "jumping"),
    ("sing", "sang", "singing"),
    ("dance", "danced", "dancing"),
    ("draw", "drew", "drawing"),
    ("read", "read", "reading"),
    ("swim", "swam", "swimming"),
    ("climb", "climbed", "climbing"),
    ("bake", "baked", "baking"),
    ("build", "built", "building"),
    ("explore", "explored", "exploring"),
    ("paint", "painted", "painting"),
    ("hop", "hopped", "hopping"),
    ("skip", "skipped", "skipping"),
    ("play tag", "played tag", "playing tag"),
    ("look for bugs", "looked for bugs", "looking for bugs"),
    ("fly kites", "flew kites", "flying kites"),
];

/// Grown-ups and wise helpers, with their pronoun set index (0 she, 1 he).
pub(super) const HELPERS: &[(&str, usize)] = &[
    ("Mom", 0),
    ("Dad", 1),
    ("Grandma", 0),
    ("Grandpa", 1),
    ("the teacher", 0),
    ("a wise old owl", 1),
    ("the kind farmer", 1),
    ("Aunt May", 0),
    ("Uncle Joe", 1),
    ("the old turtle", 0),
];

/// Things that can be built or made, for the "try again" plot: (thing, how it fails).
pub(super) const MAKES: &[(&str, &str)] = &[
    ("a sand castle", "a big wave washed it away"),
    ("a tower of blocks", "it wobbled and fell down"),
    ("a paper boat", "it got wet and sank"),
    ("a birdhouse", "the roof fell off"),
    ("a snowman", "its head rolled away"),
    ("a cake", "it came out flat"),
    ("a kite", "it would not fly"),
    ("a fort of pillows", "it fell flat"),
    ("a bridge of sticks", "it broke in the middle"),
    ("a card for a friend", "the paint got smudged"),
];

/// Fears and what they turn out to be.
pub(super) const FEARS: &[(&str, &str)] = &[
    ("the dark", "the dark was just the room without the light"),
    ("the thunder", "thunder is only the loud sound the clouds make"),
    ("the big dog next door", "the big dog only wanted to play"),
    ("the deep water", "the water felt warm and nice"),
    ("the noise in the attic", "the noise was just a little mouse"),
    ("the tall slide", "the slide was fast and fun"),
    ("the shadow on the wall", "the shadow was only a coat on a hook"),
    ("the first day of school", "school was full of new friends"),
];

/// Lessons for the moral, keyed by plot theme.
pub(super) const MORALS_HELP: &[&str] = &[
    "friends help each other",
    "it is good to ask for help",
    "two friends can do more than one",
    "a helping hand makes a big problem small",
];
pub(super) const MORALS_SHARE: &[&str] = &[
    "sharing makes everyone happy",
    "it is more fun to share",
    "a friend is worth more than a toy",
    "kind hearts share what they have",
];
pub(super) const MORALS_BRAVE: &[&str] = &[
    "being brave means trying even when you are scared",
    "things are not so scary when you look closely",
    "fear gets smaller when you face it",
    "it is okay to be scared, and it is good to be brave",
];
pub(super) const MORALS_HONEST: &[&str] = &[
    "telling the truth is always best",
    "it is better to be honest, even when it is hard",
    "saying sorry can fix many things",
];
pub(super) const MORALS_TRY: &[&str] = &[
    "if at first you do not succeed, try again",
    "practice and patience help you do great things",
    "never give up",
    "mistakes help us learn",
];
pub(super) const MORALS_KIND: &[&str] = &[
    "being kind is always worth it",
    "a little kindness goes a long way",
    "everyone needs a friend",
    "a new friend can be a great gift",
];

/// Sounds and exclamations.
pub(super) const EXCLAIM: &[&str] = &["Oh no", "Look", "Wow", "Hooray", "Oh dear", "Yay", "Hello", "Oh my"];

/// Verbs for how a line is said, by mood.
pub(super) const SAY_HAPPY: &[&str] = &["said", "laughed", "cheered", "smiled", "shouted"];
pub(super) const SAY_SAD: &[&str] = &["said", "cried", "sighed", "sobbed", "whispered"];
pub(super) const SAY_ASK: &[&str] = &["asked", "wondered", "called"];
