#!/usr/bin/env python3
"""`ttt tokenize` / `ttt detokenize` against tiktoken on Meta's Llama 3 tokenizer.model (from the
llama-models package): run by tests/tiktoken_compare_test.sh inside the reference venv.

Writes a varied set of texts (this repository's sources, prose, contractions in any case, CJK,
emoji, combining marks, CRLF, long whitespace runs, digits, special-token text, random Unicode),
and checks for each: the ids of `ttt tokenize --tokenizer tokenizer.model` equal tiktoken's
`encode(text, disallowed_special=())`, and `ttt detokenize` gives the text back byte for byte.
Then: `--bos` prepends 128000; the special ids decode to llama-models' special tokens; the rank
file converted to tokenizer.json (scripts/tiktoken_to_hf.py) encodes like tiktoken under the
`tokenizers` library and under `ttt tokenize --tokenizer tokenizer.json`. Exit 1 on any mismatch.
"""
import argparse
import array
import importlib.util
import os
import random
import subprocess
import sys
import unicodedata
from pathlib import Path


def read_ids(path):
    a = array.array("i")
    a.frombytes(Path(path).read_bytes())
    if sys.byteorder != "little":
        a.byteswap()
    return a.tolist()


def write_ids(path, ids):
    a = array.array("i", ids)
    if sys.byteorder != "little":
        a.byteswap()
    Path(path).write_bytes(a.tobytes())


# ---------------------------------------------------------------------------------------------
# Texts

def source_texts(root):
    """The repository's sources, a few hundred KB per text at most."""
    groups = []
    for d in sorted((root / "src").iterdir()):
        if d.is_dir():
            groups.append((f"src-{d.name}", sorted(p for p in d.iterdir() if p.suffix in (".h", ".cpp"))))
    tests = sorted((root / "tests").glob("*.cpp")) + sorted((root / "tests").glob("*.h"))
    for i in range(0, len(tests), 8):
        groups.append((f"tests-{i // 8}", tests[i:i + 8]))
    groups.append(("scripts", sorted((root / "tests").glob("*.sh")) + sorted((root / "scripts").glob("*"))))
    groups.append(("readme", [root / "README.md", root / "CMakeLists.txt"]))
    out = []
    for name, files in groups:
        text = ""
        for f in files:
            if not f.is_file():
                continue
            try:
                body = f.read_bytes().decode("utf-8")
            except UnicodeDecodeError:
                continue
            text += f"==> {f.relative_to(root)} <==\n{body}"
        # keep each text well under llama-models' 400k-character tiktoken limit
        for k in range(0, len(text), 300_000):
            out.append((f"{name}-{k // 300_000}", text[k:k + 300_000]))
    return out


PROSE = """The quick brown fox jumps over the lazy dog. It's a well-known pangram; isn't it? \
They'll say we've seen it before, and I'd agree -- but you're right that it's useful.
"Quotes", 'single quotes', (parentheses), [brackets], {braces}; semi-colons: colons... ellipses…
Mr. O'Neill's café served crème brûlée at 7:30 p.m. on 2024-03-15 (costing $12.50 or €11,20).
E-mail: someone@example.com, URL: https://example.org/path?query=1&x=y#frag, path C:\\Windows\\System32.
"""


def contraction_text(rng):
    forms = ["'s", "'t", "'re", "'ve", "'m", "'ll", "'d"]
    words = ["I", "you", "he", "she", "it", "we", "they", "don", "can", "won", "that", "who", "there", "y", "rock", "O"]
    out = []
    for _ in range(2500):
        f = "".join(c.upper() if rng.random() < 0.5 else c for c in rng.choice(forms))
        w = rng.choice(words)
        w = w.upper() if rng.random() < 0.3 else w
        sep = rng.choice([" ", " ", "\n", "", "  ", "'", "\u2019", "\t", "!", "1"])
        tail = rng.choice(["", "", "x", "ab", "'", "''", "s", "all", "n'roll", "\u017fx", "\u017f"])
        out.append(w + f + tail + sep)
    out.append("'S 'T 'RE 'VE 'M 'LL 'D 's 't 're 've 'm 'll 'd 'Re 'rE 'Ll 'lL 'Ve 'vE ''s '''t it'\u017f IT'\u017fX ")
    out.append("don\u2019t DON\u2019T \u2018quoted\u2019 'twas 'tis 'em o'clock L'Hôpital l'été ")
    return "".join(out)


CJK = """中文文本：我们测试分词器是否与参考实现完全一致。这是第二句话，包含数字１２３和标点！
日本語のテキスト。ひらがな、カタカナ、漢字を含みます。「引用」と『二重引用』。半角ｶﾀｶﾅもテスト。
한국어 텍스트입니다. 띄어쓰기와 문장 부호를 포함합니다! 숫자 456과 영어 words 도 섞습니다.
繁體中文：電腦、網路、資訊。粵語：佢哋喺度食緊飯。文言：學而時習之，不亦說乎？
混合 mixed テキスト text 텍스트 with ASCII, 全角スペース　と　半角 spaces.
"""


def emoji_text(rng):
    fixed = ["😀", "😂", "🦄", "👍🏽", "👨‍👩‍👧‍👦", "🏳️‍🌈", "🇫🇷", "🇯🇵", "❤️", "1️⃣", "#️⃣", "©️", "™", "🧑‍💻", "👩🏿‍🔬",
             "✨", "🔥", "🚀", "🎉", "💯", "🤖", "🫠", "🥲", "🙏"]
    ranges = [(0x1F300, 0x1F5FF), (0x1F600, 0x1F64F), (0x1F680, 0x1F6FF), (0x1F900, 0x1F9FF), (0x2600, 0x27BF)]
    out = []
    for _ in range(3000):
        r = rng.random()
        if r < 0.4:
            out.append(rng.choice(fixed))
        elif r < 0.75:
            lo, hi = rng.choice(ranges)
            c = chr(rng.randint(lo, hi))
            if unicodedata.category(c) != "Cn":
                out.append(c)
        else:
            out.append(rng.choice([" ", "  ", "\n", "ok", " text", "!", "123", "é", "中"]))
    return "".join(out)


def combining_text(rng):
    base = "Crème brûlée, naïve café, Ångström, São Paulo, Dvořák, Łódź, Þórr, İstanbul, ﬁnance ﬂow."
    out = [unicodedata.normalize("NFD", base), "\n", base, "\n"]
    out.append("हिन्दी में लिखा गया पाठ। संस्कृतम्। ১২৩ বাংলা লেখা। ภาษาไทยมีวรรณยุกต์ ่ ้ ๊ ๋\n")
    out.append("العربية مع التشكيل: بِسْمِ اللَّهِ الرَّحْمَٰنِ. עִבְרִית עם ניקוד. Ελληνικά με τόνους: άέήίόύώ ΐΰ.\n")
    out.append("한글 자모: \u1100\u1161\u11a8 \u1112\u1161\u11ab\u1100\u1173\u11af. Tiếng Việt có dấu: Nguyễn, Phở, Đà Nẵng.\n")
    for _ in range(300):  # stacked marks ("zalgo"), on letters, digits, spaces and punctuation
        out.append(rng.choice("aeiouxyz0123 .!-"))
        for _ in range(rng.randint(0, 6)):
            out.append(chr(rng.randint(0x0300, 0x036F)))
        if rng.random() < 0.2:
            out.append(rng.choice([" ", "\n", "\u200d", "\u200c", "\ufe0f"]))
    return "".join(out)


def crlf_texts(root):
    code = (root / "src" / "data" / "tokenizer.cpp").read_text(encoding="utf-8")
    mixed = "line one\r\nline two\rline three\n\r\n\r\n\r\r\n  \r\n\t\r\nend \r\n \r\n\r\n  x\r\n"
    return [("crlf-code", code.replace("\n", "\r\n")), ("crlf-mixed", mixed * 200)]


SPACES = [" ", "\t", "\n", "\r", "\x0b", "\x0c", "\u00a0", "\u0085", "\u1680", "\u2000", "\u2003", "\u2009", "\u200a",
          "\u2028", "\u2029", "\u202f", "\u205f", "\u3000", "\u180e", "\u200b", "\ufeff", "\x1c", "\x1f"]


def whitespace_text(rng):
    out = []
    for _ in range(400):
        n = rng.choice([1, 2, 3, 4, 8, 16, 33, 100, 257, 1000, 2500])
        if rng.random() < 0.5:
            out.append(rng.choice(SPACES) * n)  # a run of one kind
        else:
            out.append("".join(rng.choice(SPACES[:6] if rng.random() < 0.7 else SPACES) for _ in range(n)))
        out.append(rng.choice(["word", "x", ".", "123", "é", "中文", "😀", "'s", "-", "", "\n", "end\n"]))
    return "".join(out)


def digit_text(rng):
    out = ["1234567890" * 100, "\n", "3.14159265358979323846264338327950288419716939937510", "\n",
           "1,234,567.89 -42 +7 0x1F 1e-10 2^64 = 18446744073709551616 ", "\n",
           "٠١٢٣٤٥٦٧٨٩ ०१२३४५६७८९ ０１２３４５６７８９ ¹²³⁴ ½¾ Ⅰ Ⅱ Ⅻ ① ② ⑳ 〇一二三 𝟘𝟙𝟚 ", "\n"]
    for _ in range(2000):
        n = rng.randint(1, 12)
        out.append("".join(rng.choice("0123456789") for _ in range(n)))
        out.append(rng.choice([" ", ",", ".", "", "\n", "a", "-", "_", "٣", "５", "²"]))
    return "".join(out)


SPECIAL_TEXT = ("<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nHello!<|eot_id|>"
                "<|start_header_id|>assistant<|end_header_id|>\n\nHi<|eot_id|><|end_of_text|><|python_tag|>"
                "<|reserved_special_token_7|><|image|><|eom_id|><|step_id|><|finetune_right_pad_id|> <| |> <|>\n") * 20


def ascii_soup(rng):
    chars = [chr(c) for c in range(0, 128)]
    return "".join(rng.choice(chars) if rng.random() < 0.3 else rng.choice("abc xyz ,.;'\"\n\t0123456789") for _ in range(60000))


def unicode_ok(c):
    """Characters whose handling does not depend on the Unicode version of the regex engine:
    assigned today, and if a letter or number, already one in Unicode 3.2 (PCRE2 10.42 has
    Unicode 14, tiktoken's Rust regex a newer one; letters added since would differ)."""
    cat = unicodedata.category(c)
    if cat in ("Cn", "Cs"):
        return False
    if cat[0] in "LN":
        return unicodedata.ucd_3_2_0.category(c)[0] == cat[0]
    return True


def random_unicode(rng, n, wide):
    out = []
    while len(out) < n:
        r = rng.random()
        if r < 0.15:
            out.append(rng.choice(SPACES[:3]))
            continue
        if r < 0.2:
            out.append(rng.choice("'.,!?-\"()"))
            continue
        cp = rng.randint(0x20, 0x10FFFF) if wide else rng.randint(0x20, 0xFFFF)
        c = chr(cp)
        if unicode_ok(c):
            out.append(c)
    return "".join(out)


def misc_texts(rng):
    long_word = "".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(5000))
    return [
        ("long-word", long_word + " " + long_word.upper() + "\n" + "Supercalifragilisticexpialidocious" * 50),
        ("punct-runs", "!" * 2000 + " " + "=" * 500 + "\n" + "-" * 3000 + "\n" + "..." * 300 + "\n" + "🙂" * 500 + "\n"),
        ("markup", """# Title\n\n| a | b |\n|---|---|\n| 1 | 2 |\n\n```python\ndef f(x):\n    return x**2  # comment\n```\n"""
                   """<html><body class="x">Text &amp; more</body></html>\n{"json": [1, 2.5, null, true], "k": "v"}\n"""
                   """$$\\int_0^\\infty e^{-x^2}\\,dx = \\frac{\\sqrt{\\pi}}{2}$$\n""" * 40),
        ("empty-lines", "\n" * 1000 + "a" + "\n\n\n" + " \n" * 500),
        ("single-char", "a"),
        ("single-space", " "),
    ]


def make_texts(root):
    rng = random.Random(1234)
    texts = source_texts(root)
    texts.append(("prose", PROSE * 30))
    texts.append(("contractions", contraction_text(rng)))
    texts.append(("cjk", CJK * 40))
    texts.append(("emoji", emoji_text(rng)))
    texts.append(("combining", combining_text(rng)))
    texts += crlf_texts(root)
    texts.append(("whitespace", whitespace_text(rng)))
    texts.append(("digits", digit_text(rng)))
    texts.append(("special-text", SPECIAL_TEXT))
    texts.append(("ascii-soup", ascii_soup(rng)))
    for k in range(3):
        texts.append((f"unicode-bmp-{k}", random_unicode(rng, 20000, False)))
        texts.append((f"unicode-all-{k}", random_unicode(rng, 20000, True)))
    texts += misc_texts(rng)
    return texts


# ---------------------------------------------------------------------------------------------

def first_difference(got, want):
    for i, (a, b) in enumerate(zip(got, want)):
        if a != b:
            return i
    return min(len(got), len(want))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--ttt", required=True)
    ap.add_argument("--root", required=True, help="repository root")
    ap.add_argument("--work", required=True, help="scratch directory")
    a = ap.parse_args()
    root, work = Path(a.root), Path(a.work)

    spec = importlib.util.find_spec("llama_models")
    model = Path(list(spec.submodule_search_locations)[0]) / "llama3" / "tokenizer.model"
    if not model.is_file():
        sys.exit(f"tiktoken_compare: no llama3/tokenizer.model in the llama_models package ({model})")
    from llama_models.llama3.tokenizer import Tokenizer as LlamaTokenizer
    llama = LlamaTokenizer(model)
    enc = llama.model  # the tiktoken.Encoding llama-models builds (ranks, pattern, special tokens)
    print(f"tiktoken_compare: {model} ({enc.n_vocab} ids, BOS {llama.bos_id})")

    def ttt(*args, **kw):
        r = subprocess.run([a.ttt, *args], capture_output=True, **kw)
        if r.returncode != 0:
            raise RuntimeError(f"ttt {' '.join(args)}: exit {r.returncode}: {r.stderr.decode(errors='replace').strip()}")
        return r

    texts = make_texts(root)
    tdir = work / "texts"
    tdir.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, (name, text) in enumerate(texts):
        p = tdir / f"{i:03d}-{name}.txt"
        p.write_bytes(text.encode("utf-8"))
        paths.append(p)

    mismatches = 0
    tokens = 0
    reported = 0

    def compare(label, got, want, text):
        nonlocal mismatches, reported
        if got == want:
            return
        mismatches += 1
        if reported < 10:
            reported += 1
            i = first_difference(got, want)
            ctx = enc.decode(want[max(0, i - 3):i + 3])
            print(f"MISMATCH {label}: token {i} of {len(want)}: ttt {got[i:i + 6]} tiktoken {want[i:i + 6]} "
                  f"near {ctx!r}", file=sys.stderr)

    out = work / "ids.bin"
    back = work / "back.txt"
    # 1. tiktoken rank file: every text, both directions.
    for (name, text), p in zip(texts, paths):
        want = enc.encode(text, disallowed_special=())
        tokens += len(want)
        ttt("tokenize", "--tokenizer", str(model), "--in", str(p), "--out", str(out))
        compare(f"tokenizer.model {p.name}", read_ids(out), want, text)
        ttt("detokenize", "--tokenizer", str(model), "--in", str(out), "--out", str(back))
        if back.read_bytes() != p.read_bytes():
            mismatches += 1
            print(f"MISMATCH detokenize {p.name}: the text did not come back", file=sys.stderr)
    n_texts = len(texts)

    # 2. --bos prepends the tokenizer's own BOS.
    ttt("tokenize", "--tokenizer", str(model), "--in", str(paths[0]), "--out", str(out), "--bos")
    compare("--bos", read_ids(out), [llama.bos_id] + enc.encode(texts[0][1], disallowed_special=()), texts[0][1])

    # 3. Special ids decode to llama-models' special tokens.
    specials = sorted(llama.special_tokens.items(), key=lambda kv: kv[1])
    write_ids(out, [i for _, i in specials])
    ttt("detokenize", "--tokenizer", str(model), "--in", str(out), "--out", str(back))
    if back.read_bytes() != "".join(s for s, _ in specials).encode():
        mismatches += 1
        print("MISMATCH: special ids do not decode to llama-models' special tokens", file=sys.stderr)
    n_texts += 2

    # 4. tokenizer.json: converted, checked under `tokenizers`, then read by ttt.
    hf_json = work / "tokenizer.json"
    everything = work / "all.txt"
    everything.write_bytes(b"".join(p.read_bytes() for p in paths))
    conv = subprocess.run([sys.executable, str(root / "scripts" / "tiktoken_to_hf.py"), str(model), str(hf_json),
                           "--check", str(everything), *map(str, paths)], capture_output=True, text=True)
    sys.stdout.write(conv.stdout)
    sys.stderr.write(conv.stderr)
    if conv.returncode != 0:
        mismatches += 1
        print("MISMATCH: tokenizers on the converted tokenizer.json differs from tiktoken", file=sys.stderr)
    # ttt reads the 6.6 MB JSON in about a second: all texts at once, and the hardest one by one.
    hard = [i for i, (name, _) in enumerate(texts)
            if name.split("-")[0] in ("contractions", "whitespace", "emoji", "combining", "digits", "unicode", "crlf")]
    json_texts = [(everything, everything.read_bytes().decode("utf-8"))] + [(paths[i], texts[i][1]) for i in hard]
    for p, text in json_texts:
        want = enc.encode(text, disallowed_special=())
        tokens += len(want)
        ttt("tokenize", "--tokenizer", str(hf_json), "--in", str(p), "--out", str(out))
        compare(f"tokenizer.json {p.name}", read_ids(out), want, text)
    ttt("tokenize", "--tokenizer", str(hf_json), "--in", str(paths[0]), "--out", str(out), "--bos")
    if read_ids(out)[:1] != [llama.bos_id]:
        mismatches += 1
        print("MISMATCH: --bos with tokenizer.json does not start with 128000", file=sys.stderr)
    n_texts += len(json_texts) + 1

    print(f"tiktoken_compare: {n_texts} texts, {tokens} tokens, {mismatches} mismatches")
    return 0 if mismatches == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
