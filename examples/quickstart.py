#!/usr/bin/env python3
"""Notebook-style tour of `import ttt` (README "Python"): load a model, read a document into a
session (test-time training as it reads), fork it, generate from both, score text.

    python examples/quickstart.py --model MODEL_DIR --tokenizer tokenizer.model [--document FILE]

Without --model a small random TTT-E2E model is initialized (the tour runs anywhere, in seconds;
its text is gibberish). Without --tokenizer the document is token ids.
"""
import argparse
import tempfile
import time

import numpy as np

import ttt

ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
ap.add_argument("--model", help="model directory (config.json, model.safetensors)")
ap.add_argument("--tokenizer", help="SentencePiece .model, tiktoken file or tokenizer.json")
ap.add_argument("--document", help="a text file to read (default: a generated one)")
args = ap.parse_args()

tok = ttt.Tokenizer.load(args.tokenizer) if args.tokenizer else None
if args.model:
    model = ttt.Model.load(args.model)
else:
    vocab = tok.vocab_size if tok else 256
    model = ttt.Model.init({"vocab_size": vocab, "hidden_size": 64, "num_hidden_layers": 4,
                            "num_attention_heads": 4, "intermediate_size": 128, "seq_modeling_block": "SWA",
                            "sliding_window_size": 128, "mini_batch_size": 64, "prime": True, "suffix_len": 1,
                            "bos_token_id": tok.bos_id if tok else 0}, seed=0)
cfg = model.config
print(f"model: {cfg['num_hidden_layers']} layers, d={cfg['hidden_size']}, window {cfg['sliding_window_size']}, "
      f"TTT chunk b={cfg['mini_batch_size']}, {model.num_parameters / 1e6:.2f}M parameters")

# A document: text through the tokenizer (BOS first, as every corpus document), or token ids.
if tok:
    text = open(args.document).read() if args.document else \
        " ".join(["the kernel keeps a window of recent tokens and learns the rest"] * 60)
    doc = tok.encode(text, bos=True)
else:
    doc = np.concatenate([[0], np.random.RandomState(0).randint(1, cfg["vocab_size"], 1000)]).astype(np.int32)

# Read it: every chunk of b tokens is scored, then learned from (one TTT step each).
session = model.session()
losses = []
t0 = time.perf_counter()
logits = session.feed(doc, on_step=lambda chunk, loss: losses.append(loss))
print(f"read {session.position} tokens in {time.perf_counter() - t0:.2f} s: {session.ttt_steps} TTT steps, "
      f"chunk losses {losses[0]:.3f} -> {losses[-1]:.3f}" if losses else "")

# Fork: two independent continuations of the same memory.
other = session.fork()
greedy = session.generate(24, temperature=0)
sampled = other.generate(24, temperature=0.8, top_p=0.95, seed=1)
show = (lambda ids: repr(tok.decode(ids))) if tok else (lambda ids: " ".join(map(str, ids)))
print("generated (greedy): ", show(greedy))
print("generated (sampled):", show(sampled))

# Save the memory and load it back: it continues exactly.
with tempfile.TemporaryDirectory() as tmp:
    session.save(f"{tmp}/doc.state")
    again = model.load_session(f"{tmp}/doc.state")
    assert np.array_equal(again.generate(8, temperature=0), session.generate(8, temperature=0))

# Score text: mean NLL and the per-position NLLs (numpy, float32), with and without TTT.
loss, nll = model.eval(doc)
loss_off, _ = model.eval(doc, ttt=False)
print(f"loss {loss:.4f} with test-time training, {loss_off:.4f} without; nll[:5] = {np.round(nll[:5], 3)}")
