//! The built-in corpus: a deterministic generator of short children's stories, so that training works
//! on a fresh machine with no downloads.
//!
//! A story introduces one or two characters (children or animals, with their pronouns), a place and a
//! thing they care about, then follows one of a dozen plots — problem, attempt, resolution — with
//! dialogue in double quotes and feelings, and ends with a closing line and sometimes a moral. Each
//! step picks among several phrasings, so the parts compose into many distinct stories.
//!
//! Format: a story is one or more paragraphs, one per line; stories are separated by
//! [`STORY_SEPARATOR`] (a blank line), and the corpus neither starts nor ends with one.
//! Invariants: the output depends only on the seed and the target size (ChaCha8 with draws made here,
//! not by `rand`'s distributions, so it does not change with `rand`'s version); it is printable ASCII
//! plus `\n`; it holds whole stories and is at least `target_bytes` long (less than one story more).

use std::cell::RefCell;

use rand::{RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::corpus_words::*;

/// Size of the corpus the trainer uses by default: 4 MiB.
pub const DEFAULT_CORPUS_BYTES: usize = 4 << 20;
/// Seed of the default corpus.
pub const DEFAULT_CORPUS_SEED: u64 = 20_240_301;
/// What separates two stories: a blank line.
pub const STORY_SEPARATOR: &str = "\n\n";

/// Whole stories from `seed` until the text is at least `target_bytes` long.
pub fn generate_corpus(seed: u64, target_bytes: usize) -> String {
    let dice = Dice(RefCell::new(ChaCha8Rng::seed_from_u64(seed)));
    let mut out = String::with_capacity(target_bytes + 2048);
    while out.len() < target_bytes {
        if !out.is_empty() {
            out.push_str(STORY_SEPARATOR);
        }
        write_story(&dice, &mut out);
    }
    out
}

/// Random choices, drawn with a fixed multiply-shift rule from ChaCha8. Interior mutability lets a
/// choice be made inside the arguments of a `Writer` call.
struct Dice(RefCell<ChaCha8Rng>);

impl Dice {
    /// Uniform in `0..n` (`n > 0`).
    fn below(&self, n: usize) -> usize {
        ((u128::from(self.0.borrow_mut().next_u64()) * n as u128) >> 64) as usize
    }

    fn pick<T: Copy>(&self, list: &[T]) -> T {
        list[self.below(list.len())]
    }

    /// True with probability `percent` / 100.
    fn chance(&self, percent: usize) -> bool {
        self.below(100) < percent
    }
}

const PRONOUNS: [[&str; 3]; 2] = [["she", "her", "her"], ["he", "him", "his"]];

/// Someone in a story.
#[derive(Debug, Clone)]
struct Character {
    name: String,
    /// "girl", "boy" or an animal.
    kind: &'static str,
    /// 0 she/her, 1 he/him.
    pronoun: usize,
    personality: &'static str,
}

impl Character {
    /// A child or an animal whose name differs from `avoid`.
    fn new(dice: &Dice, avoid: &str) -> Character {
        loop {
            let roll = dice.below(10);
            let (name, kind, pronoun) = if roll < 4 {
                (dice.pick(GIRL_NAMES), "girl", 0)
            } else if roll < 7 {
                (dice.pick(BOY_NAMES), "boy", 1)
            } else {
                (dice.pick(PET_NAMES), dice.pick(ANIMALS), dice.below(2))
            };
            if name != avoid {
                let personality = dice.pick(TRAITS);
                return Character {
                    name: name.to_string(),
                    kind,
                    pronoun,
                    personality,
                };
            }
        }
    }

    fn he(&self) -> &'static str {
        PRONOUNS[self.pronoun][0]
    }

    fn him(&self) -> &'static str {
        PRONOUNS[self.pronoun][1]
    }

    fn his(&self) -> &'static str {
        PRONOUNS[self.pronoun][2]
    }

    /// "a curious cat named Pip".
    fn intro(&self) -> String {
        format!(
            "{} {} {} named {}",
            article(self.personality),
            self.personality,
            self.kind,
            self.name
        )
    }
}

/// "a" or "an" for the word that follows.
fn article(word: &str) -> &'static str {
    match word.as_bytes().first() {
        Some(b'a' | b'e' | b'i' | b'o' | b'u') => "an",
        _ => "a",
    }
}

/// The text with its first letter in upper case.
fn cap(text: &str) -> String {
    let mut chars = text.chars();
    match chars.next() {
        Some(first) => first.to_ascii_uppercase().to_string() + chars.as_str(),
        None => String::new(),
    }
}

/// How a line of dialogue is said.
#[derive(Debug, Clone, Copy)]
enum Mood {
    Happy,
    Sad,
    Ask,
}

/// A story being written: the dice and the text.
struct Writer<'a> {
    dice: &'a Dice,
    out: &'a mut String,
    /// Whether the current paragraph has text (sentences are joined by a space).
    open: bool,
}

impl Writer<'_> {
    /// Appends a sentence (its first letter capitalised) to the paragraph.
    fn say_plain(&mut self, sentence: &str) {
        if self.open {
            self.out.push(' ');
        }
        self.out.push_str(&cap(sentence));
        self.open = true;
    }

    /// Ends the paragraph.
    fn paragraph(&mut self) {
        if self.open {
            self.out.push('\n');
            self.open = false;
        }
    }

    /// A line of dialogue; `line` ends with `.`, `!` or `?`.
    fn quote(&mut self, who: &Character, line: &str, mood: Mood) {
        let verb = match mood {
            Mood::Happy => self.dice.pick(SAY_HAPPY),
            Mood::Sad => self.dice.pick(SAY_SAD),
            Mood::Ask => self.dice.pick(SAY_ASK),
        };
        let line = cap(line);
        let inner = match line.strip_suffix('.') {
            Some(stem) => format!("{stem},"),
            None => line.clone(),
        };
        let sentence = match self.dice.below(3) {
            0 => format!("\"{inner}\" {verb} {}.", who.name),
            1 => format!("{} {verb}, \"{line}\"", who.name),
            _ => format!("\"{inner}\" {} {verb}.", who.he()),
        };
        self.say_plain(&sentence);
    }

    fn pick<T: Copy>(&mut self, list: &[T]) -> T {
        self.dice.pick(list)
    }

    fn chance(&self, percent: usize) -> bool {
        self.dice.chance(percent)
    }
}

/// What a story is about: its characters, place and thing.
struct Cast {
    hero: Character,
    friend: Character,
    place: (&'static str, &'static str),
    /// "red ball".
    thing: String,
    helper: (&'static str, usize),
}

/// Writes one story (no trailing newline).
fn write_story(dice: &Dice, out: &mut String) {
    let hero = Character::new(dice, "");
    let friend = Character::new(dice, &hero.name);
    let cast = Cast {
        place: dice.pick(PLACES),
        thing: format!("{} {}", dice.pick(LOOKS), dice.pick(OBJECTS)),
        helper: dice.pick(HELPERS),
        hero,
        friend,
    };
    let start = out.len();
    let mut w = Writer { dice, out, open: false };
    let plot = w.dice.below(12);
    // These plots introduce the friend themselves, or have none.
    let introduce_friend = !matches!(plot, 3 | 6 | 9 | 11);
    opening(&mut w, &cast, introduce_friend);
    let morals = match plot {
        0 => lost_thing(&mut w, &cast),
        1 => stuck_up_high(&mut w, &cast),
        2 => sharing(&mut w, &cast),
        3 => fear(&mut w, &cast),
        4 => broken(&mut w, &cast),
        5 => race(&mut w, &cast),
        6 => new_friend(&mut w, &cast),
        7 => try_again(&mut w, &cast),
        8 => rainy_day(&mut w, &cast),
        9 => lost_way(&mut w, &cast),
        10 => gift(&mut w, &cast),
        _ => hurt_animal(&mut w, &cast),
    };
    ending(&mut w, &cast, morals);
    if w.out.ends_with('\n') {
        w.out.pop();
    }
    debug_assert!(w.out[start..].bytes().all(|b| b == b'\n' || (b' '..=b'~').contains(&b)));
}

/// Who the hero is, where, and what they love; and who the friend is.
fn opening(w: &mut Writer, c: &Cast, introduce_friend: bool) {
    let h = &c.hero;
    let (prep, place) = c.place;
    let activity = w.pick(ACTIVITIES);
    match w.dice.below(4) {
        0 => w.say_plain(&format!("Once upon a time, there was {}.", h.intro())),
        1 => w.say_plain(&format!("{}, {} was {prep} {place}.", w.dice.pick(TIMES), h.intro())),
        2 => w.say_plain(&format!(
            "{} was {} {} {}.",
            h.name,
            article(h.personality),
            h.personality,
            h.kind
        )),
        _ => w.say_plain(&format!("There once lived {} {prep} {place}.", h.intro())),
    }
    match w.dice.below(3) {
        0 => w.say_plain(&format!("{} loved to {} {prep} {place}.", h.he(), activity.0)),
        1 => w.say_plain(&format!(
            "Every day, {} {} with {} friends.",
            h.he(),
            activity.1,
            h.his()
        )),
        _ => w.say_plain(&format!("{}'s favorite thing was {}.", h.name, activity.2)),
    }
    if w.chance(60) {
        w.say_plain(&format!(
            "{} had {} {} that {} loved very much.",
            h.he(),
            article(&c.thing),
            c.thing,
            h.he()
        ));
    }
    if introduce_friend {
        let f = &c.friend;
        match w.dice.below(3) {
            0 => w.say_plain(&format!("{}'s best friend was {}.", h.name, f.intro())),
            1 => w.say_plain(&format!(
                "{} had a friend named {}, {} {} {}.",
                h.he(),
                f.name,
                article(f.personality),
                f.personality,
                f.kind
            )),
            _ => w.say_plain(&format!(
                "{} often played with {}, {} {} {}.",
                h.name,
                f.name,
                article(f.personality),
                f.personality,
                f.kind
            )),
        }
    }
    w.paragraph();
}

/// The closing line and, sometimes, the moral.
fn ending(w: &mut Writer, c: &Cast, morals: &[&str]) {
    let (h, f) = (&c.hero, &c.friend);
    match w.dice.below(5) {
        0 => w.say_plain(&format!(
            "From that day on, {} and {} were best friends.",
            h.name, f.name
        )),
        1 => w.say_plain(&format!("That night, {} went to bed with a big smile.", h.name)),
        2 => w.say_plain(&format!(
            "{} felt {} and warm inside.",
            h.name,
            w.dice.pick(GOOD_FEELINGS)
        )),
        3 => w.say_plain("And they all lived happily ever after."),
        _ => w.say_plain(&format!("It was the best day ever for {}.", h.name)),
    }
    if w.chance(45) {
        let moral = w.pick(morals);
        match w.dice.below(3) {
            0 => w.say_plain(&format!("The moral of the story is that {moral}.")),
            1 => w.say_plain(&format!("{} learned that {moral}.", h.name)),
            _ => w.say_plain(&format!("Remember: {moral}.")),
        }
    }
    w.paragraph();
}

/// The hero loses the thing; the friend helps find it.
fn lost_thing(w: &mut Writer, c: &Cast) -> &'static [&'static str] {
    let (h, f, t) = (&c.hero, &c.friend, &c.thing);
    let spots = [w.pick(SPOTS), w.pick(SPOTS), w.pick(SPOTS)];
    w.say_plain(&format!(
        "{}, {} could not find {} {t}.",
        w.dice.pick(TIMES),
        h.name,
        h.his()
    ));
    w.say_plain(&format!("{} felt very {}.", h.he(), w.dice.pick(BAD_FEELINGS)));
    w.quote(h, &format!("Where is my {t}?"), Mood::Sad);
    w.say_plain(&format!(
        "{} looked {} and {}, but it was not there.",
        h.he(),
        spots[0],
        spots[1]
    ));
    w.paragraph();
    w.say_plain(&format!("Then {} the {} came by.", f.name, f.kind));
    w.quote(f, &format!("Why are you {}?", w.dice.pick(BAD_FEELINGS)), Mood::Ask);
    w.quote(h, &format!("I lost my {t}."), Mood::Sad);
    w.quote(f, "Do not worry. I will help you look!", Mood::Happy);
    w.say_plain(&format!(
        "They looked together, and soon {} found it {}.",
        f.name, spots[2]
    ));
    w.quote(
        h,
        &format!("{}! My {t}! Thank you, {}!", w.dice.pick(EXCLAIM), f.name),
        Mood::Happy,
    );
    w.paragraph();
    MORALS_HELP
}

/// The thing gets stuck up high; a try fails; help gets it down.
fn stuck_up_high(w: &mut Writer, c: &Cast) -> &'static [&'static str] {
    let (h, f, t) = (&c.hero, &c.friend, &c.thing);
    let (prep, place) = c.place;
    let high = w.pick(&["a tall tree", "the roof", "a high wall", "the top of a fence"]);
    w.say_plain(&format!(
        "One day, {} was playing with {} {t} {prep} {place}.",
        h.name,
        h.his()
    ));
    w.say_plain(&format!("Suddenly, the wind blew it up onto {high}."));
    w.quote(h, &format!("{}! My {t} is stuck!", w.dice.pick(EXCLAIM)), Mood::Sad);
    w.say_plain(&format!(
        "{} jumped and jumped, but {} could not reach it.",
        h.he(),
        h.he()
    ));
    if w.chance(50) {
        w.say_plain(&format!("{} tried to climb, but it was too high.", h.he()));
    }
    w.paragraph();
    let tool = w.pick(&["a long stick", "a ladder", "a rope", "a big box to stand on"]);
    w.say_plain(&format!("{} saw what happened and ran to get {tool}.", f.name));
    w.quote(f, "Let us try this together.", Mood::Happy);
    w.say_plain(&format!(
        "{} held {tool} while {} reached up high, and down came the {t}.",
        f.name, h.name
    ));
    w.say_plain(&format!("{} was so {}.", h.name, w.dice.pick(GOOD_FEELINGS)));
    w.quote(h, "Thank you! I could not do it alone.", Mood::Happy);
    w.paragraph();
    MORALS_HELP
}

/// The hero does not want to share, sees the friend sad, and shares.
fn sharing(w: &mut Writer, c: &Cast) -> &'static [&'static str] {
    let (h, f) = (&c.hero, &c.friend);
    let food = w.pick(FOODS);
    let (prep, place) = c.place;
    w.say_plain(&format!("One day, {} had some {food} {prep} {place}.", h.name));
    w.say_plain(&format!(
        "{} the {} walked by and looked at the {food}.",
        f.name, f.kind
    ));
    w.quote(f, &format!("Can I have some {food}, please?"), Mood::Ask);
    w.quote(h, "No! It is all mine.", Mood::Happy);
    w.say_plain(&format!(
        "{} walked away, and {} looked very {}.",
        f.name,
        f.he(),
        w.dice.pick(BAD_FEELINGS)
    ));
    w.paragraph();
    w.say_plain(&format!("{} ate alone, but the {food} did not taste so good.", h.name));
    w.say_plain(&format!(
        "{} did not feel {} at all.",
        h.he(),
        w.dice.pick(GOOD_FEELINGS)
    ));
    if w.chance(50) {
        let (helper, _) = c.helper;
        w.say_plain(&format!(
            "{} saw {} and said, \"Food tastes better when you share it.\"",
            cap(helper),
            h.name
        ));
    }
    w.say_plain(&format!(
        "So {} ran after {} and gave {} half of the {food}.",
        h.name,
        f.name,
        f.him()
    ));
    w.quote(h, &format!("I am sorry, {}. Let us share.", f.name), Mood::Happy);
    w.quote(
        f,
        &format!("Thank you, {}! You are a good friend.", h.name),
        Mood::Happy,
    );
    w.say_plain(&format!(
        "They sat together and ate the {food}, and they both felt {}.",
        w.dice.pick(GOOD_FEELINGS)
    ));
    w.paragraph();
    MORALS_SHARE
}

/// The hero is afraid of something; a helper explains; the hero is brave.
fn fear(w: &mut Writer, c: &Cast) -> &'static [&'static str] {
    let h = &c.hero;
    let (fear, truth) = w.pick(FEARS);
    let (helper, helper_pronoun) = c.helper;
    w.say_plain(&format!("But {} was afraid of {fear}.", h.name));
    w.say_plain(&format!(
        "Every time {} thought about it, {} felt {}.",
        h.he(),
        h.he(),
        w.dice.pick(BAD_FEELINGS)
    ));
    w.quote(h, &format!("I do not like {fear}. It is too scary."), Mood::Sad);
    w.paragraph();
    w.say_plain(&format!("{} sat down next to {}.", cap(helper), h.him()));
    w.say_plain(&format!(
        "\"Let us look at it together,\" {} said, holding {} hand.",
        PRONOUNS[helper_pronoun][0],
        h.his()
    ));
    w.say_plain(&format!("{} took a deep breath and looked.", h.name));
    w.say_plain(&format!("Then {} saw that {truth}.", h.he()));
    w.quote(
        h,
        &format!("{}! It is not scary at all!", w.dice.pick(EXCLAIM)),
        Mood::Happy,
    );
    w.say_plain(&format!("{} felt brave and {}.", h.name, w.dice.pick(GOOD_FEELINGS)));
    w.paragraph();
    MORALS_BRAVE
}

/// The hero breaks the friend's thing, tells the truth, and they fix it.
fn broken(w: &mut Writer, c: &Cast) -> &'static [&'static str] {
    let (h, f) = (&c.hero, &c.friend);
    let object = w.pick(OBJECTS);
    w.say_plain(&format!("One day, {} was playing with {}'s {object}.", h.name, f.name));
    w.say_plain(&format!("{} dropped it by mistake, and it broke.", h.he()));
    w.say_plain(&format!(
        "{} felt {}. {} wanted to hide it.",
        h.name,
        w.dice.pick(BAD_FEELINGS),
        cap(h.he())
    ));
    w.paragraph();
    w.say_plain(&format!("But {} knew that hiding it was not right.", h.he()));
    w.say_plain(&format!(
        "So {} went to {} and told {} the truth.",
        h.he(),
        f.name,
        f.him()
    ));
    w.quote(h, &format!("I am sorry, {}. I broke your {object}.", f.name), Mood::Sad);
    w.say_plain(&format!("{} was quiet for a moment.", f.name));
    w.quote(f, "Thank you for telling me. We can fix it together.", Mood::Happy);
    let fix = w.pick(&["some glue", "a piece of tape", "a little string", "some help from Dad"]);
    w.say_plain(&format!(
        "With {fix}, they fixed the {object}, and it looked almost new."
    ));
    w.paragraph();
    MORALS_HONEST
}

/// A race where the hero stops to help a friend who fell.
fn race(w: &mut Writer, c: &Cast) -> &'static [&'static str] {
    let (h, f) = (&c.hero, &c.friend);
    let (prep, place) = c.place;
    let goal = w.pick(&[
        "the big tree",
        "the old gate",
        "the red barn",
        "the end of the path",
        "the little bridge",
    ]);
    w.say_plain(&format!(
        "One day, {} and {} had a race {prep} {place}.",
        h.name, f.name
    ));
    w.quote(f, &format!("The first one to reach {goal} wins!"), Mood::Happy);
    w.say_plain(&format!(
        "They ran as fast as they could. {} was in front.",
        cap(&h.name)
    ));
    w.paragraph();
    w.say_plain(&format!("Then {} tripped on a stone and fell down.", f.name));
    w.quote(f, "Ouch! My knee!", Mood::Sad);
    w.say_plain(&format!(
        "{} could win the race, but {} stopped and ran back.",
        h.name,
        h.he()
    ));
    w.quote(h, "Are you okay? Let me help you up.", Mood::Ask);
    w.say_plain(&format!(
        "{} helped {} stand, and they walked to {goal} together.",
        h.name, f.name
    ));
    w.quote(f, &format!("You are the best friend ever, {}.", h.name), Mood::Happy);
    w.paragraph();
    MORALS_KIND
}

/// The hero is lonely, meets a shy newcomer, and they become friends.
fn new_friend(w: &mut Writer, c: &Cast) -> &'static [&'static str] {
    let (h, f) = (&c.hero, &c.friend);
    let (prep, place) = c.place;
    let activity = w.pick(ACTIVITIES);
    w.say_plain(&format!("One day, {} saw a new {} {prep} {place}.", h.name, f.kind));
    w.say_plain(&format!(
        "The {} was sitting all alone and looked {}.",
        f.kind,
        w.dice.pick(BAD_FEELINGS)
    ));
    w.say_plain(&format!("{} felt a little shy, but {} walked over.", h.name, h.he()));
    w.quote(
        h,
        &format!("Hello! My name is {}. What is your name?", h.name),
        Mood::Ask,
    );
    w.quote(f, &format!("I am {}. I am new here.", f.name), Mood::Sad);
    w.quote(h, &format!("Do you want to {} with me?", activity.0), Mood::Ask);
    w.paragraph();
    w.say_plain(&format!("{} smiled a big smile.", f.name));
    w.say_plain(&format!("They {} all afternoon and laughed a lot.", activity.1));
    w.say_plain(&format!(
        "When it was time to go home, {} did not feel {} anymore.",
        f.name, "lonely"
    ));
    w.quote(f, "Can we play again tomorrow?", Mood::Ask);
    w.quote(h, "Yes! Every day!", Mood::Happy);
    w.paragraph();
    MORALS_KIND
}

/// The hero makes something, it fails, and the second try works.
fn try_again(w: &mut Writer, c: &Cast) -> &'static [&'static str] {
    let (h, f) = (&c.hero, &c.friend);
    let (thing, failure) = w.pick(MAKES);
    w.say_plain(&format!("One day, {} wanted to make {thing}.", h.name));
    w.say_plain(&format!("{} worked very hard, but {failure}.", h.he()));
    w.quote(h, "I will never be able to do it!", Mood::Sad);
    w.say_plain(&format!(
        "{} felt so {} that {} wanted to give up.",
        h.name,
        w.dice.pick(BAD_FEELINGS),
        h.he()
    ));
    w.paragraph();
    w.say_plain(&format!("{} came to see what was wrong.", f.name));
    w.quote(f, "Let us try one more time. I will help you.", Mood::Happy);
    w.say_plain("This time they went slowly and carefully.");
    if w.chance(50) {
        w.say_plain(&format!("{} held it steady while {} finished it.", f.name, h.name));
    }
    w.say_plain(&format!("At last, {thing} was done, and it was perfect."));
    w.quote(h, &format!("{}! We did it!", w.dice.pick(EXCLAIM)), Mood::Happy);
    w.say_plain(&format!("{} felt very {}.", h.name, w.dice.pick(GOOD_FEELINGS)));
    w.paragraph();
    MORALS_TRY
}

/// A picnic spoiled by rain becomes fun indoors.
fn rainy_day(w: &mut Writer, c: &Cast) -> &'static [&'static str] {
    let (h, f) = (&c.hero, &c.friend);
    let food = w.pick(FOODS);
    let (_, place) = c.place;
    w.say_plain(&format!(
        "{} and {} planned a picnic at {place} with {food}.",
        h.name, f.name
    ));
    w.say_plain("But just as they got there, big dark clouds came and it started to rain.");
    w.quote(h, "Oh no! Our picnic is ruined!", Mood::Sad);
    w.say_plain(&format!("They ran home, wet and {}.", w.dice.pick(BAD_FEELINGS)));
    w.paragraph();
    let inside = w.pick(&[
        "under the kitchen table",
        "in a blanket fort",
        "on the living room floor",
        "by the window",
    ]);
    w.quote(f, "We can have our picnic inside!", Mood::Happy);
    w.say_plain(&format!("So they spread a blanket {inside} and ate the {food}."));
    w.say_plain("They listened to the rain go pitter, patter, pitter, patter.");
    w.quote(h, "This is the best picnic ever!", Mood::Happy);
    w.paragraph();
    MORALS_TRY
}

/// The hero gets lost and finds the way home with help.
fn lost_way(w: &mut Writer, c: &Cast) -> &'static [&'static str] {
    let h = &c.hero;
    let (helper, _) = c.helper;
    let chase = w.pick(&[
        "a butterfly",
        "a little frog",
        "a shiny bug",
        "a red leaf in the wind",
        "a bouncing ball",
    ]);
    w.say_plain(&format!("One day, {} followed {chase} deep into the woods.", h.name));
    w.say_plain(&format!(
        "When {} looked up, {} did not know where {} was.",
        h.he(),
        h.he(),
        h.he()
    ));
    w.quote(h, "Where am I? How do I get home?", Mood::Ask);
    w.say_plain(&format!("{} felt very {}.", h.name, w.dice.pick(BAD_FEELINGS)));
    w.paragraph();
    let clue = w.pick(&[
        "the river",
        "the path of white stones",
        "the sound of the bells",
        "the smoke from the chimney",
    ]);
    if w.chance(50) {
        w.say_plain(&format!("Then {} heard a voice. It was {helper}.", h.he()));
        w.quote(h, "I am lost. Can you help me?", Mood::Ask);
        w.say_plain(&format!(
            "\"Follow {clue},\" came the answer, \"and it will take you home.\""
        ));
    } else {
        w.say_plain(&format!("{} took a deep breath and remembered {clue}.", h.name));
    }
    w.say_plain(&format!(
        "{} followed {clue}, step by step, until {} saw {} house.",
        h.name,
        h.he(),
        h.his()
    ));
    w.quote(h, "I am home!", Mood::Happy);
    w.paragraph();
    MORALS_BRAVE
}

/// The hero makes a present for the friend.
fn gift(w: &mut Writer, c: &Cast) -> &'static [&'static str] {
    let (h, f) = (&c.hero, &c.friend);
    let made = w.pick(&[
        "a drawing",
        "a necklace of flowers",
        "a little poem",
        "a clay bowl",
        "a card with a big heart",
    ]);
    w.say_plain(&format!(
        "Tomorrow was {}'s birthday, and {} wanted to give {} a present.",
        f.name,
        h.name,
        f.him()
    ));
    w.say_plain(&format!("But {} had no money to buy one.", h.he()));
    w.quote(h, "What can I give my friend?", Mood::Ask);
    w.paragraph();
    w.say_plain(&format!(
        "Then {} had an idea. {} made {made} all by {}self.",
        h.he(),
        cap(h.he()),
        h.him()
    ));
    w.say_plain(&format!("It took a long time, but {} did not give up.", h.he()));
    w.say_plain(&format!("The next day, {} gave {made} to {}.", h.name, f.name));
    w.quote(
        f,
        &format!("{}! I love it! You made it just for me?", w.dice.pick(EXCLAIM)),
        Mood::Ask,
    );
    w.say_plain(&format!(
        "{} nodded, and {} gave {} a big hug.",
        h.name,
        f.name,
        h.him()
    ));
    w.paragraph();
    MORALS_KIND
}

/// The hero finds a hurt animal and cares for it.
fn hurt_animal(w: &mut Writer, c: &Cast) -> &'static [&'static str] {
    let h = &c.hero;
    let (prep, place) = c.place;
    let animal = w.pick(&["bird", "duckling", "kitten", "baby squirrel", "puppy", "little owl"]);
    let hurt = w.pick(&["a hurt wing", "a sore paw", "a thorn in its foot"]);
    w.say_plain(&format!(
        "One day {prep} {place}, {} found a {animal} with {hurt}.",
        h.name
    ));
    w.quote(h, &format!("Poor little {animal}. I will take care of you."), Mood::Sad);
    w.say_plain(&format!("{} carried it home and made it a soft bed in a box.", h.he()));
    let food = w.pick(FOODS);
    w.say_plain(&format!("Every day, {} gave it water and a little {food}.", h.he()));
    w.paragraph();
    w.say_plain(&format!("Soon the {animal} was strong again."));
    w.quote(
        h,
        &format!("You are all better now. Goodbye, little {animal}!"),
        Mood::Happy,
    );
    w.say_plain(&format!(
        "The {animal} went off {prep} {place}, but it came back to visit every morning."
    ));
    w.paragraph();
    MORALS_KIND
}
