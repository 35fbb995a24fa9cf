#!/usr/bin/env python3
"""Writes a model directory of this engine (config.json + model.safetensors) as an official
TTT-E2E checkpoint: an orbax CheckpointManager root with item `model_weights` saved by
StandardSave (OCDBT store of zarr arrays) under the official pytree names, blocks stacked [L, ...]
and the prime MLPs stacked [S, ...] under h.prime_storage, with None leaves where the official
tree has them. The importer test (tests/import_test.sh) reads it back with `ttt import`.

usage: orbax_write_checkpoint.py MODEL_DIR ROOT STEP [--extra NAME | --drop NAME]
"""
import json
import struct
import sys

import numpy as np
import orbax.checkpoint as ocp

model_dir, root, step, *opts = sys.argv[1:]
cfg = json.load(open(f"{model_dir}/config.json"))
raw = open(f"{model_dir}/model.safetensors", "rb").read()
n = struct.unpack("<Q", raw[:8])[0]
header = json.loads(raw[8:8 + n])
data = raw[8 + n:]
ours = {}
for name, e in header.items():
    if name == "__metadata__":
        continue
    assert e["dtype"] == "F32", e
    b, end = e["data_offsets"]
    ours[name] = np.frombuffer(data[b:end], dtype="<f4").reshape(e["shape"])

L, S = cfg["num_hidden_layers"], cfg["suffix_len"] if cfg.get("prime") else 0
def stack(fmt, layers):
    return np.stack([ours[fmt.format(l=l)] for l in layers])
blocks = range(L)
suffix = range(L - S, L)
tree = {"language_model": {
    "model": {
        "wte": {"weight": ours["embed.weight"]},
        "ln_f": {"weight": ours["final_norm.weight"], "bias": None},
        "h": {
            "blocks": {
                "seq_norm": {"weight": stack("blocks.{l}.attn_norm.weight", blocks), "bias": None},
                "seq_modeling_block": {
                    "wq": {"weight": stack("blocks.{l}.attn.wq", blocks)},
                    "wk": {"weight": stack("blocks.{l}.attn.wk", blocks)},
                    "wv": {"weight": stack("blocks.{l}.attn.wv", blocks)},
                    "wo": {"weight": stack("blocks.{l}.attn.wo", blocks)},
                    "q_norm": {"weight": stack("blocks.{l}.attn.q_norm.weight", blocks)},
                    "k_norm": {"weight": stack("blocks.{l}.attn.k_norm.weight", blocks)},
                },
                "seq_post_norm": {"weight": stack("blocks.{l}.attn_post_norm.weight", blocks)},
                "ffn_norm": {"weight": stack("blocks.{l}.mlp_norm.weight", blocks)},
                "feed_forward": {"w1": {"weight": stack("blocks.{l}.mlp.w1", blocks)},
                                 "w2": {"weight": stack("blocks.{l}.mlp.w2", blocks)},
                                 "w3": {"weight": stack("blocks.{l}.mlp.w3", blocks)}},
                "ffn_post_norm": {"weight": stack("blocks.{l}.mlp_post_norm.weight", blocks)},
                "feed_forward_prime": None,
            },
            "prime_storage": None if S == 0 else {
                "ffn_prime_norm": {"weight": stack("blocks.{l}.prime_norm.weight", suffix)},
                "feed_forward_prime": {"w1": {"weight": stack("blocks.{l}.prime.w1", suffix)},
                                       "w2": {"weight": stack("blocks.{l}.prime.w2", suffix)},
                                       "w3": {"weight": stack("blocks.{l}.prime.w3", suffix)}},
                "ffn_prime_post_norm": {"weight": stack("blocks.{l}.prime_post_norm.weight", suffix)},
            },
        },
    },
    "lm_head": None,
}, "step_index": {"init": None}}
if opts and opts[0] == "--extra":
    tree["language_model"]["model"]["h"]["blocks"][opts[1]] = {"weight": np.zeros((L, 3), np.float32)}
if opts and opts[0] == "--drop":
    del tree["language_model"]["model"]["h"]["blocks"][opts[1]]
mgr = ocp.CheckpointManager(root, item_names=("model_weights",))
mgr.save(int(step), args=ocp.args.Composite(model_weights=ocp.args.StandardSave(tree)))
mgr.wait_until_finished()
mgr.close()
