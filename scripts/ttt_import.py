#!/usr/bin/env python3
"""Reads an official TTT-E2E checkpoint (github test-time-training/e2e) and writes its weights
under this engine's tensor names (SPEC section 5) as one safetensors file. `ttt import` runs it
and then builds, checks and saves the model directory; run it directly only to debug.

The official code saves with an orbax CheckpointManager: ROOT/<step>/<item>/, item
`model_weights`, one OCDBT key-value store of zarr v2 arrays named by their pytree path joined
with dots (`language_model.model.h.blocks.seq_modeling_block.wq.weight`, stacked [L, ...]; the
prime MLPs of the last S blocks stacked [S, ...] under `h.prime_storage`, entry j belonging to
block L-S+j). `_METADATA` lists every leaf of the tree, None leaves included. The arrays are read
with tensorstore, the library orbax itself stores them with.

usage: ttt_import.py --from DIR --out FILE.safetensors --layers L --suffix-len S [--tied true|false]
  DIR: the checkpoint root (its latest step), one step directory, or the model_weights directory.
Every missing or unexpected array, and every shape that disagrees with L and S, is an error
naming it; the exit status is then 2 and nothing is written.
"""
import argparse
import json
import os
import re
import struct
import sys


def fail(msg):
    print(f"ttt_import: {msg}", file=sys.stderr)
    sys.exit(2)


def resolve_item(path):
    """The model_weights item directory for a root, a step directory or the item itself."""
    def is_item(p):
        return os.path.isfile(os.path.join(p, "_METADATA")) and os.path.isfile(os.path.join(p, "manifest.ocdbt"))
    if not os.path.isdir(path):
        fail(f"{path} is not a directory")
    if is_item(path):
        return path, None
    if is_item(os.path.join(path, "model_weights")):
        return os.path.join(path, "model_weights"), os.path.basename(os.path.normpath(path))
    steps = sorted(int(n) for n in os.listdir(path) if n.isdigit() and is_item(os.path.join(path, n, "model_weights")))
    if steps:
        return os.path.join(path, str(steps[-1]), "model_weights"), str(steps[-1])
    fail(f"{path} is not an orbax checkpoint: no model_weights item in it, in DIR/<step>/, or DIR itself "
         "(expected _METADATA and manifest.ocdbt)")


def leaf_names(item):
    try:
        with open(os.path.join(item, "_METADATA")) as f:
            meta = json.load(f)
        tree = meta["tree_metadata"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        fail(f"{item}/_METADATA is not orbax tree metadata ({e})")
    arrays = {}
    for key, entry in tree.items():
        try:
            path = ".".join(str(k["key"]) for k in entry["key_metadata"])
            value = entry["value_metadata"]
        except (KeyError, TypeError) as e:
            fail(f"{item}/_METADATA: malformed entry {key} ({e})")
        if value.get("value_type") == "None" or value.get("skip_deserialize"):
            continue  # None leaves (unused norms' biases, the untied head, state indices)
        arrays[path] = value.get("write_shape")
    return arrays


# Official name (without the `language_model.` prefix) -> ours. {l}: block index.
BLOCK_MAP = {
    "model.h.blocks.seq_norm.weight": "blocks.{l}.attn_norm.weight",
    "model.h.blocks.seq_modeling_block.wq.weight": "blocks.{l}.attn.wq",
    "model.h.blocks.seq_modeling_block.wk.weight": "blocks.{l}.attn.wk",
    "model.h.blocks.seq_modeling_block.wv.weight": "blocks.{l}.attn.wv",
    "model.h.blocks.seq_modeling_block.wo.weight": "blocks.{l}.attn.wo",
    "model.h.blocks.seq_modeling_block.q_norm.weight": "blocks.{l}.attn.q_norm.weight",
    "model.h.blocks.seq_modeling_block.k_norm.weight": "blocks.{l}.attn.k_norm.weight",
    "model.h.blocks.seq_post_norm.weight": "blocks.{l}.attn_post_norm.weight",
    "model.h.blocks.ffn_norm.weight": "blocks.{l}.mlp_norm.weight",
    "model.h.blocks.feed_forward.w1.weight": "blocks.{l}.mlp.w1",
    "model.h.blocks.feed_forward.w2.weight": "blocks.{l}.mlp.w2",
    "model.h.blocks.feed_forward.w3.weight": "blocks.{l}.mlp.w3",
    "model.h.blocks.ffn_post_norm.weight": "blocks.{l}.mlp_post_norm.weight",
}
PRIME_MAP = {
    "model.h.prime_storage.ffn_prime_norm.weight": "blocks.{l}.prime_norm.weight",
    "model.h.prime_storage.feed_forward_prime.w1.weight": "blocks.{l}.prime.w1",
    "model.h.prime_storage.feed_forward_prime.w2.weight": "blocks.{l}.prime.w2",
    "model.h.prime_storage.feed_forward_prime.w3.weight": "blocks.{l}.prime.w3",
    "model.h.prime_storage.ffn_prime_post_norm.weight": "blocks.{l}.prime_post_norm.weight",
}
TOP_MAP = {"model.wte.weight": "embed.weight", "model.ln_f.weight": "final_norm.weight", "lm_head.weight": "lm_head"}


def write_safetensors(path, tensors):
    """tensors: list of (name, float32 C-contiguous numpy array)."""
    header, offset = {}, 0
    for name, a in tensors:
        header[name] = {"dtype": "F32", "shape": list(a.shape), "data_offsets": [offset, offset + a.nbytes]}
        offset += a.nbytes
    header["__metadata__"] = {"format": "pt", "converted_by": "ttt_import.py"}
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    tmp = f"{path}.tmp.{os.getpid()}"
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for _, a in tensors:
            f.write(a.tobytes(order="C"))
    os.replace(tmp, path)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--from", dest="src", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--layers", type=int, required=True)
    ap.add_argument("--suffix-len", type=int, required=True)
    ap.add_argument("--tied", default="true", choices=["true", "false"])
    a = ap.parse_args()
    try:
        import numpy as np
        import tensorstore as ts
    except ImportError as e:
        fail(f"{e.name} is not installed for {sys.executable} (run scripts/install-deps.sh --import)")

    item, step = resolve_item(a.src)
    arrays = leaf_names(item)
    L, S = a.layers, a.suffix_len
    expected = {"language_model." + k for k in BLOCK_MAP} | {"language_model.model.wte.weight", "language_model.model.ln_f.weight"}
    if S > 0:
        expected |= {"language_model." + k for k in PRIME_MAP}
    if a.tied == "false":
        expected.add("language_model.lm_head.weight")
    for name in sorted(arrays):
        if name not in expected:
            shape = f" {arrays[name]}" if arrays[name] else ""
            fail(f"unexpected array {name}{shape} in {item} (not part of a TTT-E2E model with "
                 f"{L} layers, suffix {S}, {'tied' if a.tied == 'true' else 'untied'} embeddings)")
    for name in sorted(expected):
        if name not in arrays:
            fail(f"missing array {name} in {item}")

    out = []
    for name in sorted(arrays):
        spec = {"driver": "zarr", "kvstore": {"driver": "ocdbt", "base": "file://" + os.path.abspath(item), "path": name}}
        try:
            arr = ts.open(spec, open=True).result().read().result()
        except Exception as e:  # tensorstore raises ValueError / its own errors for bad data
            fail(f"cannot read {name} from {item}: {str(e).splitlines()[0]}")
        arr = np.ascontiguousarray(np.asarray(arr, dtype=np.float32))
        if not np.all(np.isfinite(arr)):
            fail(f"{name} holds NaN or infinite values")
        short = name[len("language_model."):]
        if short in TOP_MAP:
            out.append((TOP_MAP[short], arr))
            continue
        stacked, count, first = (BLOCK_MAP, L, 0) if short in BLOCK_MAP else (PRIME_MAP, S, L - S)
        if arr.ndim < 2 or arr.shape[0] != count:
            fail(f"{name} has shape {list(arr.shape)}: expected a leading axis of {count} "
                 f"({'layers' if stacked is BLOCK_MAP else 'suffix blocks'})")
        for j in range(count):
            out.append((stacked[short].format(l=first + j), np.ascontiguousarray(arr[j])))
    write_safetensors(a.out, out)
    print(json.dumps({"item": item, "step": step, "arrays": len(arrays), "tensors": len(out)}))


if __name__ == "__main__":
    main()
