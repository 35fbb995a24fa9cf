#!/usr/bin/env python3
"""Bounded load test of `ttt serve` from a second process on loopback (issue 12, "Measure").

For 1, 4 and 16 concurrent sessions (one client thread each, fixed duration), each client loops
ingest (random tokens) then generate (sampled, committed); reported per operation: requests/s,
p50/p99 latency, tokens/s. Twice: with every session resident, and with
--max-resident-sessions 1 (every other session spilled to its state file and read back). Then
the server's overhead over the bare engine on the same work: ingest of 8K tokens through the
server vs `ttt generate --prompt-tokens F --max-new-tokens 0 --state-out S` (Session::feed and
the state write, the same work), minus that command's start-up (the same with one token).
Every session's final version must equal the mutations acknowledged to it: zero lost.

    scripts/load_test.py --ttt build/ttt [--model DIR] [--duration 15] [--sessions 1,4,16]
                         [--ingest-tokens 512] [--gen-tokens 16] [--out FILE.md]

Without --model it makes the bench model (vocab 4096, d 256, 8 layers, 4 heads, f 704,
W 1024, b 256, TTT-E2E with 2 prime blocks) with random weights.
"""
import argparse
import json
import os
import random
import shutil
import statistics
import struct
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.request

from serve_process import ServeProcess, init_model

BENCH = {"vocab_size": 4096, "hidden_size": 256, "num_hidden_layers": 8, "num_attention_heads": 4,
         "intermediate_size": 704, "seq_modeling_block": "SWA", "sliding_window_size": 1024,
         "mini_batch_size": 256, "prime": True, "suffix_len": 2, "rope_theta": 10000, "bos_token_id": 0}


class Server(ServeProcess):
    def __init__(self, ttt, model, work, *args):
        super().__init__(ttt, model, work, *args, timeout=120)

    def call(self, method, path, body=None, timeout=600):
        data = json.dumps(body).encode() if body is not None else None
        r = urllib.request.Request("http://127.0.0.1:%d%s" % (self.port, path), data=data, method=method,
                                   headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(r, timeout=timeout) as resp:
                return resp.status, json.loads(resp.read() or b"null")
        except urllib.error.HTTPError as e:
            return e.code, e.read()

    def stop(self):
        return super().stop(timeout=120)


def pct(xs, q):
    if not xs:
        return float("nan")
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(q * (len(xs) - 1))))]


def run_load(srv, n, duration, ingest_tokens, gen_tokens, vocab):
    ids = [srv.call("POST", "/v1/sessions", {})[1]["id"] for _ in range(n)]
    lat = {"ingest": [], "generate": []}
    acked = {i: 0 for i in ids}
    errors = []
    lock = threading.Lock()
    stop_at = time.time() + duration

    def client(sid, seed):
        rng = random.Random(seed)
        first = True
        while time.time() < stop_at:
            toks = [rng.randrange(3, vocab) for _ in range(ingest_tokens)]
            if first:
                toks[0] = 0
                first = False
            for op, body in (("ingest", {"tokens": toks}),
                             ("generate", {"max_tokens": gen_tokens, "temperature": 0.8, "seed": rng.randrange(1 << 30)})):
                t0 = time.perf_counter()
                st, r = srv.call("POST", "/v1/sessions/%s/%s" % (sid, op), body)
                dt = time.perf_counter() - t0
                with lock:
                    if st != 200:
                        errors.append((op, st, r))
                        return
                    lat[op].append(dt)
                    acked[sid] = (r["version"] if op == "ingest" else r["session"]["version"])

    ths = [threading.Thread(target=client, args=(sid, k)) for k, sid in enumerate(ids)]
    t0 = time.time()
    [t.start() for t in ths]
    [t.join() for t in ths]
    wall = time.time() - t0
    lost = sum(1 for sid in ids if srv.call("GET", "/v1/sessions/" + sid)[1]["version"] != acked[sid])
    for sid in ids:
        srv.call("DELETE", "/v1/sessions/" + sid)
    out = {"sessions": n, "wall": wall, "errors": len(errors), "lost": lost}
    for op, xs in lat.items():
        toks = ingest_tokens if op == "ingest" else gen_tokens
        out[op] = {"requests": len(xs), "rps": len(xs) / wall, "p50": pct(xs, 0.5), "p99": pct(xs, 0.99),
                   "tokens_per_s": len(xs) * toks / wall}
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--ttt", required=True)
    ap.add_argument("--model")
    ap.add_argument("--duration", type=float, default=15)
    ap.add_argument("--sessions", default="1,4,16")
    ap.add_argument("--ingest-tokens", type=int, default=512)
    ap.add_argument("--gen-tokens", type=int, default=16)
    ap.add_argument("--overhead-tokens", type=int, default=8192)
    ap.add_argument("--out")
    a = ap.parse_args()
    ttt = os.path.realpath(a.ttt)
    work = tempfile.mkdtemp(prefix="ttt-load-")
    try:
        model = a.model
        if not model:
            json.dump(BENCH, open(os.path.join(work, "bench.json"), "w"))
            model = os.path.join(work, "bench")
            init_model(ttt, os.path.join(work, "bench.json"), model, seed=1)
        vocab = json.load(open(os.path.join(model, "config.json")))["vocab_size"]
        counts = [int(x) for x in a.sessions.split(",")]
        lines = ["| sessions | states | ingest req/s | ingest p50 / p99 (s) | ingest tokens/s | generate req/s | "
                 "generate p50 / p99 (s) | generated tokens/s | errors | lost |", "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for mode in ("resident", "spilled"):
            for n in counts:
                sd = os.path.join(work, "state-%s-%d" % (mode, n))
                args = ["--state-dir", sd, "--threads", str(max(4, n + 2)), "--max-tenant-requests", str(n + 2)]
                args += ["--max-resident-sessions", str(n if mode == "resident" else 1)]
                srv = Server(ttt, model, work, *args)
                r = run_load(srv, n, a.duration, a.ingest_tokens, a.gen_tokens, vocab)
                srv.stop()
                i, g = r["ingest"], r["generate"]
                lines.append("| %d | %s | %.2f | %.3f / %.3f | %.0f | %.2f | %.3f / %.3f | %.1f | %d | %d |" % (
                    n, mode, i["rps"], i["p50"], i["p99"], i["tokens_per_s"], g["rps"], g["p50"], g["p99"],
                    g["tokens_per_s"], r["errors"], r["lost"]))
                print(lines[-1], flush=True)
        # Overhead over the bare engine: the same Session::feed and state write.
        rng = random.Random(5)
        toks = [0] + [rng.randrange(3, vocab) for _ in range(a.overhead_tokens - 1)]
        tf = os.path.join(work, "ov.bin")
        open(tf, "wb").write(struct.pack("<%di" % len(toks), *toks))
        one = os.path.join(work, "one.bin")
        open(one, "wb").write(struct.pack("<i", 0))

        def bare(path):
            t0 = time.perf_counter()
            subprocess.run([ttt, "generate", "--model", model, "--prompt-tokens", path, "--max-new-tokens", "0",
                            "--state-out", os.path.join(work, "ov.state")], check=True, capture_output=True)
            return time.perf_counter() - t0
        bare_t = [bare(tf) - bare(one) for _ in range(3)]
        srv = Server(ttt, model, work, "--state-dir", os.path.join(work, "state-ov"))
        serv_t = []
        for _ in range(3):
            sid = srv.call("POST", "/v1/sessions", {})[1]["id"]
            t0 = time.perf_counter()
            st, r = srv.call("POST", "/v1/sessions/%s/ingest" % sid, {"tokens": toks})
            serv_t.append(time.perf_counter() - t0)
            assert st == 200, r
        srv.stop()
        b, s = statistics.median(bare_t), statistics.median(serv_t)
        lines.append("")
        lines.append("Ingest of %d tokens: server %.3f s, bare engine %.3f s (median of 3): overhead %+.1f%%" % (
            a.overhead_tokens, s, b, 100 * (s - b) / b))
        print(lines[-1], flush=True)
        if a.out:
            open(a.out, "w").write("\n".join(lines) + "\n")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
