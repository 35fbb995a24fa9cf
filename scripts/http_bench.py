#!/usr/bin/env python3
"""HTTP-layer figures of `ttt serve` (issue 25), for one or two builds side by side, loopback.

For each build: (1) median and p99 latency of GET /v1/models on one kept-alive connection;
(2) requests/s of N clients (default 4) for a fixed time, each looping over its own session:
ingest of 8 token ids, GET the session, GET /v1/models, with keep-alive and with
`Connection: close`; (3) with 48 connections stalled in mid-header and 200 idle ones held, the
time a new request takes. The model is a tiny TTT-E2E one (the e2e tests' config), so the
figures are the HTTP layer's, not the engine's.

    scripts/http_bench.py --ttt build/ttt [--ttt /work/main/build/ttt] [--duration 10] [--clients 4]
"""
import argparse
import http.client
import json
import os
import socket
import statistics
import tempfile
import threading
import time

from serve_process import ServeProcess, init_model

CFG = {"vocab_size": 320, "hidden_size": 16, "num_hidden_layers": 3, "num_attention_heads": 2,
       "intermediate_size": 24, "seq_modeling_block": "SWA", "sliding_window_size": 6,
       "mini_batch_size": 4, "prime": True, "suffix_len": 2, "rope_theta": 10000,
       "bos_token_id": 0, "initializer_range": 0.2}


class Server(ServeProcess):
    def __init__(self, ttt, model, work, *args):
        super().__init__(ttt, model, work, *args, timeout=60, log_prefix="bench")


def call(conn, method, path, body=None, close=False):
    h = {"Content-Type": "application/json"}
    if close:
        h["Connection"] = "close"
    conn.request(method, path, body=json.dumps(body) if body is not None else None, headers=h)
    r = conn.getresponse()
    data = r.read()
    return r.status, data


def latency(port, n=2000):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    lat = []
    for _ in range(n):
        t0 = time.perf_counter()
        call(c, "GET", "/v1/models")
        lat.append(time.perf_counter() - t0)
    lat.sort()
    return statistics.median(lat) * 1000, lat[int(0.99 * len(lat))] * 1000


def load(port, clients, duration, keep_alive):
    counts = [0] * clients
    errors = [0] * clients
    stop = time.time() + duration

    def client(i):
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        st, b = call(c, "POST", "/v1/sessions", {}, close=not keep_alive)
        sid = json.loads(b)["id"]
        k = 0
        while time.time() < stop:
            if not keep_alive:
                c.close()
                c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            op = k % 3
            k += 1
            if op == 0:
                st, _ = call(c, "POST", "/v1/sessions/%s/ingest" % sid, {"tokens": [(k * 7 + j) % 300 + 1 for j in range(8)]},
                             close=not keep_alive)
            elif op == 1:
                st, _ = call(c, "GET", "/v1/sessions/" + sid, close=not keep_alive)
            else:
                st, _ = call(c, "GET", "/v1/models", close=not keep_alive)
            counts[i] += 1
            if st >= 400:
                errors[i] += 1

    ts = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    t0 = time.time()
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    return sum(counts) / (time.time() - t0), sum(errors)


def hostile(port, stalled=48, idle=200):
    held = []
    try:
        for _ in range(stalled):
            s = socket.create_connection(("127.0.0.1", port), timeout=5)
            s.sendall(b"POST /v1/sessions HTTP/1.1\r\nHost: x\r\nContent-Le")
            held.append(s)
        for _ in range(idle):
            held.append(socket.create_connection(("127.0.0.1", port), timeout=5))
        time.sleep(0.5)
        t0 = time.time()
        try:
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
            st, _ = call(c, "GET", "/v1/models")
        except OSError as e:
            st = str(e)
        return time.time() - t0, st
    finally:
        for s in held:
            s.close()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--ttt", action="append", required=True)
    ap.add_argument("--duration", type=float, default=10)
    ap.add_argument("--clients", type=int, default=4)
    ap.add_argument("--skip-hostile", action="store_true")
    a = ap.parse_args()
    work = tempfile.mkdtemp(prefix="ttt-bench-")
    with open(os.path.join(work, "cfg.json"), "w") as f:
        json.dump(CFG, f)
    model = os.path.join(work, "model")
    init_model(a.ttt[0], os.path.join(work, "cfg.json"), model, seed=3)
    for ttt in a.ttt:
        print("== %s" % ttt, flush=True)
        srv = Server(ttt, model, work)
        try:
            med, p99 = latency(srv.port)
            print("keep-alive GET /v1/models: median %.3f ms, p99 %.3f ms" % (med, p99), flush=True)
            for ka in (True, False):
                rps, err = load(srv.port, a.clients, a.duration, ka)
                print("%d clients, %s: %.0f req/s (%d errors)" % (a.clients, "keep-alive" if ka else "Connection: close", rps, err),
                      flush=True)
            if not a.skip_hostile:
                dt, st = hostile(srv.port)
                print("48 stalled + 200 idle held: new request answered in %.3f s (status %s)" % (dt, st), flush=True)
        finally:
            srv.stop()


if __name__ == "__main__":
    main()
