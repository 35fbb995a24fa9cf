#!/usr/bin/env python3
"""Projected data-parallel scaling of TTT-E2E meta-learning (issue 14, "Measure"), on paper.

Cost model (no overlap of communication with compute, as `ttt train` runs today):
  step time per rank   C = sequences per rank x seconds per sequence
  ring allreduce       A = 2 (N-1)/N x G / bandwidth + 2 (N-1) x latency,  G = 4 bytes x parameters
  efficiency           C / (C + A)
Weak scaling: every rank trains one sequence of T tokens per step (the global batch grows with N).

Seconds per sequence come from measurements on this machine (scripts/bench_data_parallel.sh):
the bench shape's measured meta-learning time per sequence, and for the official shapes the
pretraining FLOPs per token (6 x matmul parameters + attention over the window) at the FLOP rate
the bench shape's pretraining step achieved, times the measured meta/pretraining cost ratio.

Memory (the ZeRO-1 question): float32 weights, gradients and AdamW moments take 16 bytes per
parameter, 8 of them the moments that ZeRO-1 divides by N; rematerialized meta-learning keeps,
per chunk of b tokens, the suffix's fast weights and window caches (its checkpoint), plus one
chunk's activations being recomputed.

    scripts/dp_projection.py --swa-tokens-per-s X --ttt-tokens-per-s Y [--measured-seq-len 2048]
"""
import argparse

SHAPES = {  # name: (V, d, L, H, f, S, W, b)
    "bench": (4096, 256, 8, 4, 704, 2, 1024, 256),
    "125m": (128256, 768, 12, 12, 1664, 3, 8192, 1024),
    "1b": (128256, 2048, 24, 32, 4352, 6, 8192, 1024),
    "3b": (128256, 2560, 32, 32, 5632, 8, 8192, 1024),
}


def params(shape):
    V, d, L, H, f, S, W, b = shape
    return V * d + L * (4 * d * d + 3 * d * f) + S * 3 * d * f  # tied head, prime MLPs in the suffix


def pretrain_flops_per_token(shape, T):
    V, d, L, H, f, S, W, b = shape
    matmul = L * (4 * d * d + 3 * d * f) + V * d
    window = min(W, T) / 2 if T <= W else W * (1 - W / (2 * T))  # mean keys per query
    return 6 * matmul + 12 * L * d * window


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--swa-tokens-per-s", type=float, required=True, help="bench-shape pretraining, 1 rank x 2 threads")
    ap.add_argument("--ttt-tokens-per-s", type=float, required=True, help="bench-shape meta-learning, 1 rank x 2 threads")
    ap.add_argument("--measured-seq-len", type=int, default=2048)
    ap.add_argument("--seq-len", type=int, default=8192, help="T of the projected runs (one sequence per rank)")
    ap.add_argument("--latency-us", type=float, default=5.0)
    ap.add_argument("--device-gb", type=float, default=80.0, help="memory per rank for the ZeRO-1 question")
    ap.add_argument("--gpu-tflops", type=float, default=400.0,
                    help="also project with ranks that compute this fast (effective TFLOP/s, e.g. an H100 at 40%% MFU)")
    a = ap.parse_args()

    bench = SHAPES["bench"]
    rate = pretrain_flops_per_token(bench, a.measured_seq_len) * a.swa_tokens_per_s  # achieved FLOP/s
    ratio = a.swa_tokens_per_s / a.ttt_tokens_per_s  # meta-learning / pretraining cost
    print("Achieved pretraining rate on this machine: %.1f GFLOP/s; meta-learning costs %.2fx pretraining "
          "(bench shape, T %d).\n" % (rate / 1e9, ratio, a.measured_seq_len))
    print("| shape | parameters | gradient MB | ranks compute at | s per sequence (T %d) | link | N=8 | N=64 | N=512 |" % a.seq_len)
    print("|---|---:|---:|---|---:|---|---:|---:|---:|")
    for name, where, flops in [(n, w, r) for n in ("bench", "125m", "1b")
                               for w, r in (("this machine", rate), ("%.0f TFLOP/s" % a.gpu_tflops, a.gpu_tflops * 1e12))]:
        sh = SHAPES[name]
        P = params(sh)
        G = 4.0 * P
        if name == "bench" and flops == rate:  # measured directly, scaled to T by FLOPs per token
            t_seq = a.seq_len / a.ttt_tokens_per_s * (pretrain_flops_per_token(sh, a.seq_len) / pretrain_flops_per_token(sh, a.measured_seq_len))
        else:
            t_seq = pretrain_flops_per_token(sh, a.seq_len) * a.seq_len * ratio / flops
        for gbps in (100, 400):
            bw = gbps * 1e9 / 8
            cells = []
            for N in (8, 64, 512):
                A = 2 * (N - 1) / N * G / bw + 2 * (N - 1) * a.latency_us * 1e-6
                cells.append("%.1f%%" % (100 * t_seq / (t_seq + A)))
            print("| %s | %.0fM | %.0f | %s | %.3g | %d Gb/s | %s |" % (name, P / 1e6, G / 1e6, where, t_seq, gbps, " | ".join(cells)))

    # ZeRO-1 for the 3B recipe.
    V, d, L, H, f, S, W, b = SHAPES["3b"]
    P = params(SHAPES["3b"])
    states = 16.0 * P / 1e9
    phi = S * 3 * d * f * 4 / 1e9             # fast weights of the suffix, per chunk checkpoint
    window = S * 2 * W * d * 4 / 1e9          # the suffix's window caches, per chunk checkpoint
    chunk_act = L * b * d * 24 * 4 / 1e9      # one chunk's activations while it is recomputed (about 24 d per token per block)
    print("\n3B shape (%.2fB parameters): weights, gradients and AdamW moments %.1f GB (moments %.1f GB); per chunk "
          "checkpoint %.2f GB (fast weights %.2f, window caches %.2f); one chunk's activations %.1f GB.\n"
          % (P / 1e9, states, 8 * P / 1e9, phi + window, phi, window, chunk_act))
    print("| T per rank | without ZeRO-1 (GB) | ZeRO-1, N=8 | ZeRO-1, N=64 | fits %.0f GB without ZeRO-1? |" % a.device_gb)
    print("|---:|---:|---:|---:|---|")
    for T in (4096, 8192, 16384, 32768, 65536):
        act = (T // b) * (phi + window) + chunk_act
        full = states + act
        z8 = states - 8 * P / 1e9 * (1 - 1 / 8) + act
        z64 = states - 8 * P / 1e9 * (1 - 1 / 64) + act
        print("| %d | %.1f | %.1f | %.1f | %s |" % (T, full, z8, z64, "yes" if full <= a.device_gb else "no"))
    print("\nThe global batch does not enter: each rank accumulates its sequences one at a time.")


if __name__ == "__main__":
    main()
