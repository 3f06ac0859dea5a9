#!/usr/bin/env python3
"""Writes the tokenizer fixtures checked by crates/orion-models/tests/tokenizer.rs.

Outputs (into crates/orion-models/tests/fixtures/tokenizer/ unless a directory is given):

- `llama_bpe.model`  a tiny SentencePiece BPE model trained here, Llama-style: identity normalisation,
                     no removal of extra whitespace, dummy prefix, byte_fallback=True, split digits,
                     whitespace-only pieces allowed.
- `llama_bpe.json`   the same model as a Hugging Face tokenizer.json, converted by transformers'
                     LlamaConverter (legacy: normalizer Prepend "▁" + Replace " " -> "▁").
- `llama_bpe.bin`    the same model in llama2.c's tokenizer.bin format, written the way llama2.c's
                     tokenizer.py export() writes it.
- `plain_bpe.model`  a second tiny BPE model: default whitespace handling (remove_extra_whitespaces),
                     no byte fallback (unknown characters become <unk>), two user-defined symbols, and
                     one piece re-typed as UNUSED so that the resegmentation path is exercised.
- `cases.json`       the test strings and, for each, the ids produced by the reference libraries:
                     tiktoken r50k_base ("gpt2"), sentencepiece on both models ("llama_spm",
                     "plain_spm") with sentencepiece's decode of those ids ("llama_decoded",
                     "plain_decoded"), and the `tokenizers` library on llama_bpe.json as written
                     ("llama_hf") and with its normalizer replaced by a Metaspace pre-tokenizer
                     that does not split ("llama_hf_metaspace") or does ("llama_hf_metaspace_split");
                     the Rust test applies the same edits.

tiktoken normally downloads r50k_base; offline, the script reads the copy embedded in the tiktoken-rs
crate from the cargo registry and lets tiktoken check its published SHA-256, so the reference ids come
from tiktoken's own (Python-side) BPE.

Usage:  pip install tiktoken sentencepiece protobuf tokenizers transformers
        python3 tools/make_tokenizer_fixtures.py [output_dir]
"""

import glob
import io
import json
import os
import struct
import sys

import sentencepiece as spm
import tiktoken
from sentencepiece import sentencepiece_model_pb2 as sp_pb2
from tiktoken.load import load_tiktoken_bpe
from tiktoken_ext import openai_public
from tokenizers import Tokenizer, normalizers, pre_tokenizers

R50K_SHA256 = "306cd27f03c1a714eca7108e03d66b7dc042abe8c258b44c199a7ed9838dd930"

# Training text: plain English prose, a little code, numbers, and a few accented, CJK and emoji
# characters, so that some test characters are in the vocabulary and others are not.
CORPUS = """\
The quick brown fox jumps over the lazy dog. The dog did not mind the fox at all.
Once upon a time there was a small compiler that wanted to run on a neural engine.
It read the graph, checked every node, and then it planned the programs one by one.
The engine was fast, but it was also picky: it wanted half precision and small tensors.
So the compiler learned to split the work into layers, and each layer into programs.
Training a transformer means running the forward pass, then the backward pass, then the update.
The optimizer keeps two moments for every weight, and it updates them after every step.
A tokenizer turns text into numbers, and a model turns numbers into more numbers.
When the model is done, the tokenizer turns the numbers back into text for the reader.
We tested the tokenizer with strings that have spaces, tabs, and new lines in them.
Some words have accents: café, naïve, résumé, façade, and the German word Straße.
Some text is written in other scripts, like 日本 and 中文, and some has emoji like 🙂.
Numbers appear too: 1, 2, 3, 10, 42, 100, 2024, 3.14, and 1000000 are all numbers.
def train(model, data, steps=100):
    for step in range(steps):
        loss = model.step(data[step % len(data)])
        if step % 10 == 0:
            print(f"step {step}: loss {loss:.4f}")
    return model
fn main() {
    let x = vec![1, 2, 3];
    for v in &x {
        println!("{}", v * 2);
    }
}
The weather today is sunny, with a light wind from the west and a few clouds in the evening.
People walked along the river, talking about the news, the prices, and the coming holidays.
A good test asserts something that could fail, and it says what it proves in plain words.
Every file starts with a short header that tells the reader what the file is responsible for.
The lead reviews the work, runs the tests, and then writes the commit message for the team.
In the morning the team meets, and in the afternoon everyone works on their own part.
Reading and writing files must never crash the program; errors name the file and the problem.
The compiler, the runtime, and the models are three parts that work together as one system.
Small models train quickly, and small fixtures keep the repository light and the tests fast.
"""

# The strings every loader must tokenize exactly like the reference libraries.
CASES = [
    "",
    "Hello world",
    "hello, world! How are you?",
    "The quick brown fox jumps over the lazy dog.",
    " leading space",
    "trailing space ",
    "  two leading spaces",
    "multiple   spaces   inside",
    "   ",
    " ",
    "\ttab\tseparated\t",
    "line one\nline two\n\nline four\n",
    "windows\r\nline endings",
    "mixed \t \n whitespace  \n\t run",
    "café naïve résumé façade Straße",
    "Ünïcödé ÀÉÎÕÜ",
    "日本語のテキスト",
    "中文字符和标点。",
    "한국어 텍스트",
    "I ❤️ emoji 🙂😀🎉👍🏽",
    "family: 👨\u200d👩\u200d👧",
    "1234567890",
    "The year 2024, pi 3.14159 and 1,000,000 items",
    "0000 007 1e10 -42 +3",
    "def f(x):\n\treturn x**2  # square",
    'fn main() {\n    println!("hi {}", 1 + 2);\n}',
    "if (a && b || !c) { x += 1; } // done",
    "Ω≈ç√∫˜µ≤≥÷ absent symbols",
    "ẞ ǅ ﬁ ＦＵＬＬ width",
    "nbsp\u00a0here and zero\u200bwidth",
    "it's we're they've I'll she'd don't",
    "<|endoftext|> is plain text here",
    "<s> </s> <unk> <0x41> look like special pieces",
    "a ▁ lower one eighth block ▁▁ twice",
    "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
    "the the the the the the",
    "Orion<br>Orion is a user-defined symbol test<br>",
    "x",
    "\n",
    "😀",
]


def r50k_encoding():
    """tiktoken's r50k_base, from the tiktoken-rs crate's embedded copy, checked against the published hash."""
    try:
        return tiktoken.get_encoding("r50k_base")
    except Exception:  # offline: fall back to the registry copy
        pass
    pattern = os.path.expanduser("~/.cargo/registry/src/*/tiktoken-rs-*/assets/r50k_base.tiktoken")
    paths = sorted(glob.glob(pattern))
    if not paths:
        sys.exit("r50k_base.tiktoken not found (no network and no tiktoken-rs in the cargo registry)")
    ranks = load_tiktoken_bpe(paths[-1], expected_hash=R50K_SHA256)
    return tiktoken.Encoding(
        name="r50k_base",
        pat_str=openai_public.r50k_pat_str,
        mergeable_ranks=ranks,
        special_tokens={"<|endoftext|>": 50256},
        explicit_n_vocab=50257,
    )


def train(**options):
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(CORPUS.splitlines()),
        model_writer=model,
        model_type="bpe",
        normalization_rule_name="identity",
        character_coverage=1.0,
        num_threads=1,
        minloglevel=2,
        **options,
    )
    return model.getvalue()


def llama_model():
    return train(
        vocab_size=512,
        byte_fallback=True,
        remove_extra_whitespaces=False,
        split_digits=True,
        allow_whitespace_only_pieces=True,
    )


def plain_model():
    """Default whitespace handling, no byte fallback, user-defined symbols, one UNUSED piece."""
    proto = sp_pb2.ModelProto()
    proto.ParseFromString(
        train(vocab_size=200, byte_fallback=False, user_defined_symbols=["<br>", "Orion"], hard_vocab_limit=False)
    )
    # Re-type a two-character merge as UNUSED: sentencepiece still merges into it (and on into "▁the"), and splits it back when it is final.
    for piece in proto.pieces:
        if piece.type == sp_pb2.ModelProto.SentencePiece.NORMAL and piece.piece == "he":
            piece.type = sp_pb2.ModelProto.SentencePiece.UNUSED
            break
    else:
        sys.exit("plain model has no piece 'he' to mark UNUSED; change the corpus or the piece")
    return proto.SerializeToString()


def hf_json(model_path):
    """transformers' LlamaConverter (legacy), i.e. what LlamaTokenizerFast saves for a Llama tokenizer.model."""
    from transformers.convert_slow_tokenizer import LlamaConverter, SentencePieceExtractor, generate_merges

    class Extractor(SentencePieceExtractor):
        # transformers 5.x calls extract(vocab_scores) but its extract() expects a model type; this is the
        # 4.x behaviour: merges of every vocab piece into two vocab pieces, ordered by the merged piece's score.
        def extract(self, vocab_scores=None, **kwargs):
            vocab = {piece.piece: i for i, piece in enumerate(self.proto.pieces)}
            return vocab, generate_merges(vocab, vocab_scores)

    class Converter(LlamaConverter):
        SpmExtractor = Extractor

    class Original:  # the few attributes LlamaConverter reads from a slow tokenizer
        vocab_file = model_path
        legacy = True
        add_prefix_space = True

        def __init__(self):
            self.sp = spm.SentencePieceProcessor(model_file=model_path)

        def convert_ids_to_tokens(self, i):
            return self.sp.id_to_piece(i)

    return Converter(Original()).converted()


def llama2c_bin(model_path):
    """llama2.c's tokenizer.py export(): u32 max_token_length, then per id f32 score, u32 len, bytes."""
    sp = spm.SentencePieceProcessor(model_file=model_path)
    tokens, scores = [], []
    for i in range(sp.get_piece_size()):
        t = sp.id_to_piece(i)
        if i == sp.bos_id():
            t = "\n<s>\n"
        elif i == sp.eos_id():
            t = "\n</s>\n"
        tokens.append(t.replace("▁", " ").encode("utf-8"))
        scores.append(sp.get_score(i))
    out = struct.pack("I", max(len(t) for t in tokens))
    for b, s in zip(tokens, scores):
        out += struct.pack("fI", s, len(b)) + b
    return out


def metaspace_variant(tokenizer_json, split):
    """The same tokenizer with the non-legacy layout: no normalizer, a Metaspace pre-tokenizer."""
    tok = Tokenizer.from_str(tokenizer_json)
    tok.normalizer = normalizers.Sequence([])
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first", split=split)
    return tok


def main():
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    out_dir = sys.argv[1] if len(sys.argv) > 1 else os.path.join(root, "crates/orion-models/tests/fixtures/tokenizer")
    os.makedirs(out_dir, exist_ok=True)

    def path(name):
        return os.path.join(out_dir, name)

    with open(path("llama_bpe.model"), "wb") as f:
        f.write(llama_model())
    with open(path("plain_bpe.model"), "wb") as f:
        f.write(plain_model())
    hf = hf_json(path("llama_bpe.model"))
    hf_text = hf.to_str()
    with open(path("llama_bpe.json"), "w", encoding="utf-8") as f:
        f.write(hf_text)
    with open(path("llama_bpe.bin"), "wb") as f:
        f.write(llama2c_bin(path("llama_bpe.model")))

    gpt2 = r50k_encoding()
    llama = spm.SentencePieceProcessor(model_file=path("llama_bpe.model"))
    plain = spm.SentencePieceProcessor(model_file=path("plain_bpe.model"))
    hf_meta = metaspace_variant(hf_text, split=False)
    hf_meta_split = metaspace_variant(hf_text, split=True)
    cases = []
    for text in CASES:
        llama_ids = llama.encode(text)
        plain_ids = plain.encode(text)
        cases.append(
            {
                "text": text,
                "gpt2": gpt2.encode_ordinary(text),
                "llama_spm": llama_ids,
                "llama_decoded": llama.decode(llama_ids),
                "llama_hf": hf.encode(text, add_special_tokens=False).ids,
                "llama_hf_metaspace": hf_meta.encode(text, add_special_tokens=False).ids,
                "llama_hf_metaspace_split": hf_meta_split.encode(text, add_special_tokens=False).ids,
                "plain_spm": plain_ids,
                "plain_decoded": plain.decode(plain_ids),
            }
        )
    meta = {
        "llama": {"vocab_size": llama.get_piece_size(), "bos": llama.bos_id(), "eos": llama.eos_id()},
        "plain": {"vocab_size": plain.get_piece_size(), "bos": plain.bos_id(), "eos": plain.eos_id()},
        "gpt2": {"vocab_size": gpt2.n_vocab, "eos": gpt2.eot_token},
    }
    with open(path("cases.json"), "w", encoding="utf-8") as f:
        json.dump({"models": meta, "cases": cases}, f, ensure_ascii=True, indent=1)
        f.write("\n")
    for case in cases:
        if case["llama_hf"] != case["llama_spm"]:
            print(f"note: tokenizers and sentencepiece differ on {case['text']!r}")
    print(f"wrote {len(cases)} cases to {out_dir}")


if __name__ == "__main__":
    main()
