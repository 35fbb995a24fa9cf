#!/usr/bin/env python3
"""Converts a tiktoken rank file (Meta's Llama 3 `tokenizer.model`) to a Hugging Face
`tokenizer.json`: byte-level BPE with the Llama 3 pre-tokenizer and special tokens.

    python3 scripts/tiktoken_to_hf.py tokenizer.model tokenizer.json [--check TEXT_FILE...]

The vocabulary is every token as GPT-2's byte-to-unicode string, with its rank as id. Merges
follow transformers' TikTokenConverter: every split of a token into two tokens is a merge, ordered
by the rank of the merged token (then by the ranks of its parts), which makes Hugging Face's
merge-position order tiktoken's rank order. The 256 special tokens are those llama-models gives a
tiktoken file (ids from the number of ranks on), BOS <|begin_of_text|> through the template.

--check loads the result with the `tokenizers` library and the rank file with `tiktoken`, encodes
each text file with both (special-token text as ordinary text) and exits 1 on any difference.
Only the standard library is needed to convert; --check needs tiktoken and tokenizers.
"""
import argparse
import base64
import json
import sys

LLAMA3_PATTERN = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}|"
                  r" ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")

# llama_models/llama3/tokenizer.py (llama-models 0.3): these, then reserved tokens up to 256.
LLAMA3_SPECIALS = [
    "<|begin_of_text|>", "<|end_of_text|>", "<|reserved_special_token_0|>", "<|reserved_special_token_1|>",
    "<|finetune_right_pad_id|>", "<|step_id|>", "<|start_header_id|>", "<|end_header_id|>",
    "<|eom_id|>", "<|eot_id|>", "<|python_tag|>", "<|image|>",
]
NUM_SPECIALS = 256


def llama3_specials():
    return LLAMA3_SPECIALS + [f"<|reserved_special_token_{2 + i}|>" for i in range(NUM_SPECIALS - len(LLAMA3_SPECIALS))]


def bytes_to_unicode():
    """GPT-2's reversible byte -> printable character map."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs)))


def load_ranks(path):
    """tiktoken's load_tiktoken_bpe, strict: every line "<base64> <rank>", ranks 0..n-1."""
    ranks = {}
    with open(path, "rb") as f:
        for no, line in enumerate(f.read().splitlines(), 1):
            if not line:
                continue
            tok, rank = line.split()
            ranks[base64.b64decode(tok, validate=True)] = int(rank)
    if sorted(ranks.values()) != list(range(len(ranks))):
        sys.exit(f"{path}: ranks are not 0..{len(ranks) - 1}")
    return ranks


def convert(ranks):
    enc = bytes_to_unicode()
    as_str = lambda b: "".join(enc[x] for x in b)
    vocab, merges = {}, []
    for token, rank in sorted(ranks.items(), key=lambda kv: kv[1]):
        vocab[as_str(token)] = rank
        local = []
        for i in range(1, len(token)):
            left, right = token[:i], token[i:]
            if left in ranks and right in ranks:
                local.append((ranks[left], ranks[right], left, right))
        local.sort()
        merges.extend((rank, l, r) for _, _, l, r in local)
    merges.sort(key=lambda m: m[0])  # stable: parts' order kept within a token
    n = len(ranks)
    specials = llama3_specials()
    added = [{"id": n + i, "content": s, "single_word": False, "lstrip": False, "rstrip": False,
              "normalized": False, "special": True} for i, s in enumerate(specials)]
    bos = specials[0]
    return {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": added,
        "normalizer": None,
        "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
            {"type": "Split", "pattern": {"Regex": LLAMA3_PATTERN}, "behavior": "Isolated", "invert": False},
            {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": False}]},
        "post_processor": {"type": "Sequence", "processors": [
            {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": False, "use_regex": True},
            {"type": "TemplateProcessing",
             "single": [{"SpecialToken": {"id": bos, "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
             "pair": [{"SpecialToken": {"id": bos, "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}},
                      {"SpecialToken": {"id": bos, "type_id": 1}}, {"Sequence": {"id": "B", "type_id": 1}}],
             "special_tokens": {bos: {"id": bos, "ids": [n], "tokens": [bos]}}}]},
        "decoder": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True},
        "model": {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": None,
                  "end_of_word_suffix": None, "fuse_unk": False, "byte_fallback": False, "ignore_merges": True,
                  "vocab": vocab, "merges": [f"{as_str(l)} {as_str(r)}" for _, l, r in merges]},
    }


def check(rank_path, json_path, texts):
    import tiktoken
    from tokenizers import Tokenizer
    ranks = load_ranks(rank_path)
    specials = {s: len(ranks) + i for i, s in enumerate(llama3_specials())}
    ref = tiktoken.Encoding(name="llama3", pat_str=LLAMA3_PATTERN, mergeable_ranks=ranks, special_tokens=specials)
    hf = Tokenizer.from_file(json_path)
    hf.encode_special_tokens = True  # special-token text is ordinary text, as tiktoken's disallowed_special=()
    bad = tokens = 0
    for path in texts:
        with open(path, encoding="utf-8", newline="") as f:
            text = f.read()
        want = ref.encode(text, disallowed_special=())
        got = hf.encode(text, add_special_tokens=False).ids
        tokens += len(want)
        if got != want:
            bad += 1
            i = next((k for k, (a, b) in enumerate(zip(got, want)) if a != b), min(len(got), len(want)))
            print(f"tiktoken_to_hf: {path}: tokenizers differs from tiktoken at token {i}: "
                  f"{got[i:i + 5]} vs {want[i:i + 5]}", file=sys.stderr)
    print(f"tiktoken_to_hf: tokenizers vs tiktoken: {len(texts)} texts, {tokens} tokens, {bad} mismatches")
    return bad == 0


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("rank_file")
    ap.add_argument("out_json")
    ap.add_argument("--check", nargs="*", default=None, metavar="TEXT_FILE",
                    help="compare tokenizers (on the output) with tiktoken on these UTF-8 files")
    a = ap.parse_args()
    doc = convert(load_ranks(a.rank_file))
    with open(a.out_json, "w", encoding="utf-8") as f:
        json.dump(doc, f, ensure_ascii=False)
    print(f"tiktoken_to_hf: wrote {a.out_json}: {len(doc['model']['vocab'])} tokens, "
          f"{len(doc['model']['merges'])} merges, {len(doc['added_tokens'])} special tokens")
    if a.check is not None and not check(a.rank_file, a.out_json, a.check):
        sys.exit(1)


if __name__ == "__main__":
    main()
