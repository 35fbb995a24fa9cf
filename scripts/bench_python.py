#!/usr/bin/env python3
"""The Python package's overhead against the engine on the bench model (README "Python").

    python scripts/bench_python.py [--ttt build/ttt] [--tokens 8192] [--repeats 3] [--steps 200]

Per workload, best of --repeats, interleaved:
  eval      Model.eval of T+1 tokens      vs `ttt eval` (its wall minus that of a 2-token eval:
                                             process start and model load)
  feed      Session.feed of T tokens       vs `ttt generate --prompt-tokens` with 0 new tokens
                                             (likewise minus a 1-token prompt)
and for both the binding's own share: the call's wall time minus the time it spent inside the
engine (ttt._ttt._last_engine_seconds). Then 1-token Session.feed calls after T tokens: the
median wall time per call, the median engine time and their difference (the goal: < 50 us).
"""
import argparse
import os
import statistics
import subprocess
import tempfile
import time

import numpy as np

import ttt
from ttt import _ttt

BENCH = {"vocab_size": 4096, "hidden_size": 256, "num_hidden_layers": 8, "num_attention_heads": 4,
         "intermediate_size": 704, "seq_modeling_block": "SWA", "sliding_window_size": 1024,
         "mini_batch_size": 256, "prime": True, "suffix_len": 2, "bos_token_id": 0}

ap = argparse.ArgumentParser()
ap.add_argument("--ttt", default=os.path.join(os.path.dirname(__file__), "..", "build", "ttt"))
ap.add_argument("--tokens", type=int, default=8192)
ap.add_argument("--repeats", type=int, default=3)
ap.add_argument("--steps", type=int, default=200)
a = ap.parse_args()


def wall(cmd):
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - t0


with tempfile.TemporaryDirectory() as tmp:
    m = ttt.Model.init(BENCH, seed=0)
    m.save(f"{tmp}/m")
    ids = np.random.RandomState(0).randint(1, BENCH["vocab_size"], size=a.tokens + 1).astype("<i4")
    ids[0] = 0
    ids.tofile(f"{tmp}/t.bin")
    ids[:2].tofile(f"{tmp}/t2.bin")
    ids[:a.tokens].tofile(f"{tmp}/p.bin")
    ids[:1].tofile(f"{tmp}/p1.bin")
    m = ttt.Model.load(f"{tmp}/m")
    print(f"bench model, {a.tokens} tokens, {ttt.num_threads()} threads, best of {a.repeats}")
    r = {k: [] for k in ("py_eval", "eng_eval", "cli_eval", "py_feed", "eng_feed", "cli_feed")}
    m.eval(ids[:1025])  # warm-up
    for _ in range(a.repeats):
        t0 = time.perf_counter()
        m.eval(ids)
        r["py_eval"].append(time.perf_counter() - t0)
        r["eng_eval"].append(_ttt._last_engine_seconds())
        s = m.session()
        t0 = time.perf_counter()
        s.feed(ids[:a.tokens])
        r["py_feed"].append(time.perf_counter() - t0)
        r["eng_feed"].append(_ttt._last_engine_seconds())
        ev = [a.ttt, "eval", "--model", f"{tmp}/m", "--tokens"]
        r["cli_eval"].append(wall(ev + [f"{tmp}/t.bin"]) - wall(ev + [f"{tmp}/t2.bin"]))
        gen = [a.ttt, "generate", "--model", f"{tmp}/m", "--max-new-tokens", "0", "--prompt-tokens"]
        r["cli_feed"].append(wall(gen + [f"{tmp}/p.bin"]) - wall(gen + [f"{tmp}/p1.bin"]))
    for w in ("eval", "feed"):
        py, eng, cli = min(r[f"py_{w}"]), min(r[f"eng_{w}"]), min(r[f"cli_{w}"])
        # The binding's share of each call (its wall time minus its time inside the engine).
        over = max(p - e for p, e in zip(r[f"py_{w}"], r[f"eng_{w}"]))
        print(f"{w:5s} python {py:.3f} s (best), inside the engine {eng:.3f} s: binding overhead at most "
              f"{over * 1e3:.3f} ms per call ({over / eng * 100:.4f}%); CLI engine time {cli:.3f} s "
              f"(python/CLI {py / cli:.3f})")

    # 1-token feeds in steady decoding.
    s = m.session()
    s.feed(ids[:a.tokens])
    calls, engine = [], []
    for t in ids[1:a.steps + 1]:
        t0 = time.perf_counter()
        s.feed([int(t)])
        calls.append(time.perf_counter() - t0)
        engine.append(_ttt._last_engine_seconds())
    over = [c - e for c, e in zip(calls, engine)]
    print(f"1-token feed ({a.steps} calls after {a.tokens} tokens): median {statistics.median(calls) * 1e6:.0f} us per "
          f"call, engine {statistics.median(engine) * 1e6:.0f} us, overhead median {statistics.median(over) * 1e6:.1f} "
          f"us (p90 {sorted(over)[int(0.9 * len(over))] * 1e6:.1f} us)")
