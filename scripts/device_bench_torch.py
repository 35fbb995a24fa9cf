#!/usr/bin/env python3
"""PyTorch eager on the GPU, for scripts/device_check.sh: the engine's bench workloads on the same
weights (model directories made by `ttt init` with the bench shape: ROOT/ttt, ROOT/swa, ROOT/full),
through scripts/bench_compare_torch.py's implementation moved to CUDA, and the two ceilings of
the same GPU measured in the same run: a large matrix product in bf16 and in float32 (TF32 off),
and a device-to-device copy.

Usage: device_bench_torch.py ROOT --prefill 8192,32768 --grad 8192
Prints one JSON object per line: {"name": ..., "seconds": ...} or {"ceiling": ..., "value": ..., "unit": ...},
or {"name": ..., "error": ...} for a workload that failed (out of memory, ...).
"""
import argparse
import json
import os
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench_compare_torch as bt  # noqa: E402


def timed(fn, reps):
    fn()  # warm-up
    torch.cuda.synchronize()
    best = float("inf")
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        best = min(best, time.perf_counter() - t0)
    return best


def ceilings():
    torch.backends.cuda.matmul.allow_tf32 = False
    n = 8192
    for dt, name in ((torch.bfloat16, "bf16 matmul 8192^3"), (torch.float32, "f32 matmul 8192^3 (no TF32)")):
        a = torch.randn(n, n, device="cuda", dtype=dt)
        b = torch.randn(n, n, device="cuda", dtype=dt)
        s = timed(lambda: a @ b, 5)
        yield {"ceiling": name, "value": 2.0 * n ** 3 / s * 1e-12, "unit": "TFLOP/s"}
        del a, b
    x = torch.empty(1 << 28, device="cuda", dtype=torch.float32)  # 1 GiB
    y = torch.empty_like(x)
    s = timed(lambda: y.copy_(x), 10)
    yield {"ceiling": "device-to-device copy 1 GiB (read + write)", "value": 2.0 * x.numel() * 4 / s * 1e-9,
           "unit": "GB/s"}


def workload(model_dir, T, grad):
    m = bt.TorchTTT(model_dir, device="cuda")
    rng = np.random.default_rng(T)
    toks = torch.tensor(rng.integers(1, m.V, size=T + 1), dtype=torch.int64, device="cuda")
    ids, tgt = toks[:-1], toks[1:]
    if not grad:
        return lambda: float(m.masked_mean(m.prefill(ids, tgt), tgt))
    m.require_grad()
    opt = m.make_optimizer()
    meta = m.S > 0
    return lambda: m.train_step(opt, ids, tgt, meta)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("root")
    ap.add_argument("--prefill", default="8192,32768")
    ap.add_argument("--grad", default="8192")
    ap.add_argument("--reps", type=int, default=2)
    a = ap.parse_args()
    print(json.dumps({"versions": f"torch {torch.__version__}, {torch.cuda.get_device_name()}"}), flush=True)
    for c in ceilings():
        print(json.dumps(c), flush=True)
    jobs = [(f"{k}-prefill-{T}", k, T, False) for T in map(int, a.prefill.split(",")) for k in ("ttt", "swa", "full")]
    jobs += [(f"{k}-grad-{T}", k, T, True) for T in map(int, a.grad.split(",")) for k in ("ttt", "swa")]
    for name, kind, T, grad in jobs:
        try:
            s = timed(workload(os.path.join(a.root, kind), T, grad), a.reps)
            print(json.dumps({"name": name, "seconds": s}), flush=True)
        except Exception as e:  # noqa: BLE001 (reported in the table)
            print(json.dumps({"name": name, "error": f"{type(e).__name__}: {str(e)[:160]}"}), flush=True)
        torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
