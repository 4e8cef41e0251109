#!/usr/bin/env python3
"""Differential test: `ocr-cli tokenize/detokenize` against Hugging Face `tokenizers`.

Generates a seeded, reproducible corpus (random Unicode across scripts and planes, digit and
whitespace runs, CRLF and lone CR, markdown, HTML tables, LaTeX, added tokens inside text and
near-misses), encodes it with the real binary in one process call and with HF
`Tokenizer.encode(text, add_special_tokens=False)`, and compares ids. Then decodes ids with
`ocr-cli detokenize` (with and without --skip-special) and compares with HF decode, on the
encodings and on random id sequences (byte tokens cut inside characters, unused ids, specials).

Env: OCR_CLI (the binary), OCR_SHARED_DIR (fixtures). Options: --n, --seed, --show.
Exits 1 on any mismatch; the last line reads `tokenizer_diff: N passed, M failed`.
"""
import argparse
import json
import os
import random
import subprocess
import sys
import tempfile

from tokenizers import Tokenizer

OCR_TOKENS = ["<image>", "<|ref|>", "<|/ref|>", "<|det|>", "<|/det|>", "<|grounding|>", "<td>",
              "</td>", "<tr>", "</tr>", "<|User|>", "<|Assistant|>"]
V3_TOKENS = ["<｜begin▁of▁sentence｜>", "<｜end▁of▁sentence｜>", "<｜▁pad▁｜>", "<｜User｜>",
             "<｜Assistant｜>", "<|EOT|>", "<｜fim▁hole｜>", "<｜tool▁sep｜>",
             "<｜place▁holder▁no▁0｜>", "<｜place▁holder▁no▁799｜>", "<｜tool▁calls▁begin｜>"]
NEAR_MISSES = ["<image >", "<IMAGE>", "< image>", "<image", "image>", "<|ref>", "<|ref|", "|ref|>",
               "<||ref||>", "<td >", "<TD>", "</ td>", "<tr/>", "<｜User|>", "<|User｜>",
               "<｜begin▁of▁sentence|>", "<｜place▁holder▁no▁800｜>", "<<image>>", "<im<image>age>"]

# (first, last) code point ranges per script.
SCRIPTS = {
    "latin": [(0x41, 0x5A), (0x61, 0x7A), (0xC0, 0x24F), (0x1E00, 0x1EFF)],
    "greek": [(0x370, 0x3FF), (0x1F00, 0x1FFF)],
    "cyrillic": [(0x400, 0x4FF)],
    "arabic": [(0x600, 0x6FF), (0x750, 0x77F), (0xFB50, 0xFDFF)],
    "hebrew": [(0x590, 0x5FF)],
    "devanagari": [(0x900, 0x97F)],
    "thai": [(0xE00, 0xE7F)],
    "cjk": [(0x4E00, 0x9FFF), (0x3400, 0x4DBF), (0x20000, 0x2A6DF), (0xF900, 0xFAFF)],
    "kana": [(0x3040, 0x30FF), (0x31F0, 0x31FF), (0xFF66, 0xFF9F)],
    "hangul": [(0xAC00, 0xD7A3), (0x1100, 0x11FF), (0x3130, 0x318F)],
    "combining": [(0x300, 0x36F), (0x1AB0, 0x1AFF), (0x20D0, 0x20FF), (0xFE20, 0xFE2F)],
    "symbols": [(0x2190, 0x23FF), (0x2500, 0x27BF), (0x2900, 0x2BFF), (0x20A0, 0x20CF),
                (0x1D400, 0x1D7FF), (0x2100, 0x214F)],
    "punct": [(0x21, 0x2F), (0x3A, 0x40), (0x5B, 0x60), (0x7B, 0x7E), (0xA1, 0xBF),
              (0x2010, 0x2027), (0x3000, 0x303F), (0xFF01, 0xFF0F)],
    "digits": [(0x30, 0x39), (0x660, 0x669), (0x966, 0x96F), (0xFF10, 0xFF19), (0xB2, 0xB3),
               (0x2160, 0x2188), (0x2460, 0x249B), (0x1D7CE, 0x1D7FF)],
}
EMOJI = ["😀", "🎉", "👍", "👍🏽", "👋🏿", "👨‍👩‍👧‍👦", "👩🏻‍💻", "🏳️‍🌈", "🇯🇵", "🇺🇸", "❤️", "✨", "🧑‍🤝‍🧑",
         "👁️‍🗨️", "🫠", "🥲", "☺︎", "1️⃣", "#️⃣", "🏴󠁧󠁢󠁳󠁣󠁴󠁿"]
WHITESPACE = [" ", "  ", "   ", "\t", "\t\t", "\n", "\n\n", "\r\n", "\r\n\r\n", "\r", " \r ", "\u00a0",
              "\u3000", "\u2028", "\u2029", "\u0085", "\u000b", "\u000c", "\u2003", "\u202f",
              "\u205f", "\u1680", " \n ", "\t\n", "\u200b", "\ufeff", "\u180e"]
WORDS = ["the", "quick", "brown", "fox", "OCR", "document", "markdown", "Table", "don't", "it's",
         "I'm", "we've", "naïve", "café", "Straße", "über", "Ελληνικά", "русский", "العربية",
         "עברית", "हिन्दी", "ภาษาไทย", "中文", "日本語", "ひらがな", "カタカナ", "한국어", "ẞ",
         "e.g.", ".NET", "__init__", "x86_64", "C++", "3.14159", "1,234,567", "2024-05-01",
         "foo@bar.com", "https://example.com/a?b=c", "$100", "50%", "--flag", "#hashtag"]
MARKDOWN = ["# Title\n", "## Section 2.1\n", "- item\n", "* bullet\n", "1. first\n", "> quote\n",
            "**bold**", "*italic*", "`code`", "```python\nprint('hi')\n```\n", "| a | b |\n",
            "|---|:---:|\n", "[link](http://x.y)", "![img](a.png)", "---\n", "~~strike~~",
            "    indented code\n", "\\*escaped\\*"]
HTML = ["<table>", "</table>", "<tr>", "</tr>", "<td>", "</td>", "<th>", "</th>",
        "<td colspan=\"2\">", "<td rowspan=3>", "<br>", "<br/>", "&nbsp;", "&amp;", "<b>", "</b>",
        "<div class='x'>", "</div>"]
LATEX = ["$x^2$", "$$\\frac{a}{b}$$", "\\(", "\\)", "\\[", "\\]", "\\sum_{i=1}^{n}", "\\alpha",
         "\\begin{equation}", "\\end{equation}", "\\mathbf{x}", "\\left(", "\\right)", "_{ij}",
         "^{-1}", "\\sqrt{2}", "\\int_0^\\infty", "\\text{if } x > 0", "a \\cdot b", "\\\\", "&",
         "\\begin{array}{cc}"]
GROUNDING = ["<|ref|>title<|/ref|><|det|>[[12, 34, 567, 89]]<|/det|>",
             "<|ref|>text<|/ref|><|det|>[[0, 0, 999, 999]]<|/det|>\n",
             "<|ref|>image<|/ref|><|det|>[[1, 2, 3, 4], [5, 6, 7, 8]]<|/det|>"]


# Code points at the edges of the class runs in src/tokenizer/unicode_tables.inc (filled by
# load_table_edges): where a wrong or stale table, or an off-by-one in its lookup, shows first.
TABLE_EDGES = []


def load_table_edges(source_dir):
    import re
    path = os.path.join(source_dir, "src", "tokenizer", "unicode_tables.inc")
    firsts = [int(m, 16) for m in re.findall(r"\{0x([0-9A-F]+), 0x[0-9A-F]+\}", open(path).read())]
    for first in firsts:
        for c in (first - 1, first, first + 1):
            if 0 <= c < 0x110000 and not 0xD800 <= c <= 0xDFFF:
                TABLE_EDGES.append(chr(c))


def rand_cp(rng, ranges):
    a, b = rng.choice(ranges)
    return chr(rng.randint(a, b))


def rand_any_cp(rng):
    # Anywhere in Unicode, surrogates excepted (not valid in a str that HF accepts).
    while True:
        plane = rng.choice([0, 0, 0, 0, 1, 1, 2, 3, 14, 15, 16])
        c = plane * 0x10000 + rng.randint(0, 0xFFFF)
        if not 0xD800 <= c <= 0xDFFF:
            return chr(c)


def fragment(rng, tokens):
    kind = rng.random()
    if kind < 0.22:
        script = rng.choice(list(SCRIPTS))
        return "".join(rand_cp(rng, SCRIPTS[script]) for _ in range(rng.randint(1, 12)))
    if kind < 0.32:
        return rng.choice(WORDS)
    if kind < 0.42:
        return rng.choice(WHITESPACE) * rng.choice([1, 1, 1, 2, 3, 7])
    if kind < 0.48:
        return "".join(rng.choice("0123456789") for _ in range(rng.randint(1, 14)))
    if kind < 0.54:
        return rng.choice(EMOJI) * rng.choice([1, 1, 2])
    if kind < 0.60:
        return rng.choice(MARKDOWN)
    if kind < 0.66:
        return rng.choice(HTML)
    if kind < 0.72:
        return rng.choice(LATEX)
    if kind < 0.78:
        return rng.choice(tokens)
    if kind < 0.82:
        return rng.choice(NEAR_MISSES)
    if kind < 0.84:
        return rng.choice(GROUNDING)
    if kind < 0.86:
        return "".join(rand_any_cp(rng) for _ in range(rng.randint(1, 6)))
    if kind < 0.90 and TABLE_EDGES:
        # Class-boundary code points between context that makes their class matter.
        ctx = [" ", "a", "1", "!", "\n", "", "", "\u0301", "$"]
        return "".join(rng.choice(ctx) + rng.choice(TABLE_EDGES) for _ in range(rng.randint(1, 4)))
    if kind < 0.95:
        # A letter run with combining marks in between, or marks after digits/spaces.
        base = rng.choice(["a", "e", "o", "1", " ", "क", "ก", "ا", "\t", "-"])
        return base + "".join(rand_cp(rng, SCRIPTS["combining"]) for _ in range(rng.randint(1, 3)))
    # ASCII noise: punctuation glued to letters exercises the first alternative of the regex.
    return "".join(rng.choice("!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~ abcXYZ09\n\r\t")
                   for _ in range(rng.randint(1, 10)))


def make_corpus(n, seed, tokens):
    rng = random.Random(seed)
    texts = ["", " ", "\n", "\r\n", "\r", "  \n", "<image>", "<image>\n<|grounding|>Convert the "
             "document to markdown.", "<image><image>", "<<image>>", "<|User|><|Assistant|>"]
    while len(texts) < n:
        size = rng.choice([1, 2, 3, 5, 8, 13, 30])
        texts.append("".join(fragment(rng, tokens) for _ in range(size)))
    return texts[:n]


def random_id_sequences(n, seed, byte_ids, vocab_size):
    rng = random.Random(seed)
    seqs = []
    for _ in range(n):
        ids = []
        for _ in range(rng.randint(0, 16)):
            r = rng.random()
            if r < 0.45:
                ids.append(rng.choice(byte_ids))  # bytes: cut UTF-8, lone continuations, ...
            elif r < 0.75:
                ids.append(rng.randrange(0, 128000))
            elif r < 0.9:
                ids.append(rng.randrange(128000, vocab_size))  # added tokens
            else:
                ids.append(rng.randrange(vocab_size, 129280))  # no text
        seqs.append(ids)
    return seqs


def run_cli(cli, args, lines):
    data = "".join(line + "\n" for line in lines).encode("utf-8")
    proc = subprocess.run([cli] + args, input=data, capture_output=True, timeout=1200)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} exited {proc.returncode}: "
                           f"{proc.stderr.decode('utf-8', 'replace')[-2000:]}")
    out = proc.stdout.decode("utf-8").split("\n")
    if out and out[-1] == "":
        out.pop()
    if len(out) != len(lines):
        raise RuntimeError(f"{' '.join(args)}: {len(lines)} lines in, {len(out)} out")
    return out


def byte_level_ids(hf):
    # Ids of the 256 one-byte tokens (GPT-2 byte-to-unicode alphabet).
    bs = list(range(0x21, 0x7F)) + list(range(0xA1, 0xAD)) + list(range(0xAE, 0x100))
    cs, extra = bs[:], 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + extra)
            extra += 1
    return [hf.token_to_id(chr(c)) for c in cs]


class Checker:
    def __init__(self, show):
        self.passed = 0
        self.failed = 0
        self.show = show

    def check(self, ok, what):
        if ok:
            self.passed += 1
            return
        self.failed += 1
        if self.failed <= self.show:
            print("MISMATCH " + what, flush=True)


def differential(name, tokenizer_json, cli, n, seed, tokens, checker, rng_raw):
    hf = Tokenizer.from_file(tokenizer_json)
    texts = make_corpus(n, seed, tokens)
    with tempfile.TemporaryDirectory() as model_dir:
        os.symlink(os.path.abspath(tokenizer_json), os.path.join(model_dir, "tokenizer.json"))
        # Lines as JSON strings (texts hold newlines); some plain lines too, to cover the raw path.
        lines = []
        for t in texts:
            raw_ok = "\n" not in t and not t.startswith(("{", '"')) and t
            if raw_ok and rng_raw.random() < 0.3:
                lines.append(t)
            else:
                lines.append(json.dumps(t, ensure_ascii=rng_raw.random() < 0.5))
        ours = [json.loads(line) for line in run_cli(cli, ["tokenize", "--model", model_dir], lines)]
        ref = [e.ids for e in hf.encode_batch(texts, add_special_tokens=False)]
        for t, a, b in zip(texts, ours, ref):
            checker.check(a == b, f"[{name}] encode {json.dumps(t, ensure_ascii=False)}\n"
                                  f"  ocr-cli {a}\n  HF      {b}")

        # Decode: the reference encodings (round trip) and random id sequences.
        size = hf.get_vocab_size(with_added_tokens=True)
        seqs = ref + random_id_sequences(max(1000, n // 5), seed + 1, byte_level_ids(hf), size)
        id_lines = [json.dumps(s) for s in seqs]
        for skip in (False, True):
            args = ["detokenize", "--model", model_dir] + (["--skip-special"] if skip else [])
            ours = [json.loads(line) for line in run_cli(cli, args, id_lines)]
            refs = hf.decode_batch(seqs, skip_special_tokens=skip)
            for k, (s, a, b) in enumerate(zip(seqs, ours, refs)):
                checker.check(a == b, f"[{name}] decode skip_special={skip} {s}\n"
                                      f"  ocr-cli {json.dumps(a)}\n  HF      {json.dumps(b)}")
                if not skip and k < len(texts):
                    checker.check(a == texts[k], f"[{name}] round trip {json.dumps(texts[k])}")
    return len(texts), len(seqs)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=10000, help="generated strings for the OCR tokenizer")
    ap.add_argument("--seed", type=int, default=20240501)
    ap.add_argument("--show", type=int, default=5, help="mismatches to print")
    args = ap.parse_args()
    cli = os.environ.get("OCR_CLI")
    shared = os.environ.get("OCR_SHARED_DIR")
    if not cli or not shared:
        print("set OCR_CLI and OCR_SHARED_DIR (ctest does)", file=sys.stderr)
        return 2
    fixtures = os.path.join(shared, "fixtures")
    source = os.environ.get("OCR_SOURCE_DIR", os.path.join(os.path.dirname(__file__), "..", ".."))
    load_table_edges(source)
    checker = Checker(args.show)
    rng_raw = random.Random(args.seed + 7)
    runs = [("deepseek-ocr", os.path.join(fixtures, "parity-a", "tokenizer.json"), args.n,
             OCR_TOKENS + V3_TOKENS),
            ("deepseek-v3", os.path.join(fixtures, "tokenizer", "deepseek-v3", "tokenizer.json"),
             max(1, args.n // 5), V3_TOKENS + OCR_TOKENS)]
    for name, path, n, tokens in runs:
        n_texts, n_seqs = differential(name, path, cli, n, args.seed, tokens, checker, rng_raw)
        print(f"{name}: {n_texts} strings encoded, {n_seqs} id sequences decoded twice", flush=True)
    print(f"tokenizer_diff: {checker.passed} passed, {checker.failed} failed")
    return 0 if checker.failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
