#!/usr/bin/env python3
"""Soak run of `ttt serve` (issue 25, closing note; not CI).

A durable server (--state-dir) under mixed load from N clients (default 8) for a fixed time,
each over its own sessions and kept-alive connections: ingest, generate (committed), fork,
snapshot, restore, export + import of the state, delete, reset. Every `--kill-every` seconds the
server is killed with SIGKILL and restarted on the same port and state directory. Hostile
connections run the whole time beside them: connections stalled in mid-header, idle ones,
chunked bodies over --max-body-bytes, large bodies without a key, garbage bytes.

Each client keeps at most 12 live sessions (beyond, it deletes), so the data held is bounded and
the RSS curve shows what the server itself keeps. Checked: every acknowledged mutation survives (after each restart and at the end, each session's
version is at least the last one acknowledged to its client, a session whose delete was
acknowledged is gone, an acknowledged fork exists), and no answer is a 5xx other than 503.
Reported: operations and statuses, restarts, and the server's RSS every 10 s (the curve).

    scripts/soak.py --ttt build/ttt [--minutes 30] [--clients 8] [--kill-every 300] [--out soak.md]
"""
import argparse
import collections
import http.client
import json
import os
import random
import signal
import socket
import subprocess
import tempfile
import threading
import time

from serve_process import init_model

CFG = {"vocab_size": 320, "hidden_size": 16, "num_hidden_layers": 3, "num_attention_heads": 2,
       "intermediate_size": 24, "seq_modeling_block": "SWA", "sliding_window_size": 6,
       "mini_batch_size": 4, "prime": True, "suffix_len": 2, "rope_theta": 10000,
       "bos_token_id": 0, "initializer_range": 0.2}
MAX_BODY = 1 << 20


class Server:
    def __init__(self, ttt, model, state, port, work):
        self.args = [ttt, "serve", "--model", model, "--state-dir", state, "--port", str(port),
                     "--max-body-bytes", str(MAX_BODY), "--max-tenant-requests", "64", "--threads", "8",
                     "--max-connections", "400", "--header-timeout", "5"]
        self.port, self.work, self.p = port, work, None
        self.lock = threading.Lock()

    def start(self):
        log = open(os.path.join(self.work, "server-%d.log" % time.monotonic_ns()), "w")
        self.p = subprocess.Popen(self.args, stdout=log, stderr=subprocess.STDOUT)
        t0 = time.time()
        while time.time() - t0 < 60:
            try:
                c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=2)
                c.request("GET", "/health")
                if c.getresponse().status == 200:
                    return time.time() - t0
            except OSError:
                pass
            time.sleep(0.05)
        raise RuntimeError("server did not come back")

    def kill(self):
        self.p.send_signal(signal.SIGKILL)
        self.p.wait()

    def rss_mb(self):
        try:
            with open("/proc/%d/status" % self.p.pid) as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        return int(line.split()[1]) / 1024
        except OSError:
            pass
        return None


class Stats:
    def __init__(self):
        self.lock = threading.Lock()
        self.ops = collections.Counter()
        self.status = collections.Counter()
        self.bad = []  # 5xx other than 503

    def add(self, op, st):
        with self.lock:
            self.ops[op] += 1
            self.status[st] += 1
            if st >= 500 and st != 503:
                self.bad.append((op, st))


class Client:
    """One client: its sessions, the versions acknowledged to it, kept-alive connection."""

    def __init__(self, i, port, stats, stop):
        self.i, self.port, self.stats, self.stop = i, port, stats, stop
        self.rng = random.Random(i)
        self.acked = {}      # session -> last acknowledged version
        self.snaps = {}      # session -> versions of acknowledged snapshots
        self.deleted = set()
        self.conn = None
        self.pause = threading.Event()
        self.paused = threading.Event()

    def call(self, method, path, body=None, raw=None):
        for _ in range(2):
            try:
                if self.conn is None:
                    self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
                data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
                self.conn.request(method, path, body=data, headers={"Content-Type": "application/json"})
                r = self.conn.getresponse()
                b = r.read()
                if r.getheader("Connection", "").lower() == "close":
                    self.conn.close()
                    self.conn = None
                return r.status, b
            except (OSError, http.client.HTTPException):
                if self.conn:
                    self.conn.close()
                self.conn = None
                time.sleep(0.2)
        return -1, b""  # server down (a kill): not acknowledged

    def mutated(self, sid, st, b):
        if st in (200, 201):
            try:
                v = json.loads(b).get("version")
                if v is None:
                    v = json.loads(b).get("session", {}).get("version")
            except ValueError:
                v = None
            if v is not None:
                self.acked[sid] = max(self.acked.get(sid, -1), v)

    def run(self):
        while not self.stop.is_set():
            if self.pause.is_set():
                self.paused.set()
                time.sleep(0.05)
                continue
            self.paused.clear()
            live = [s for s in self.acked if s not in self.deleted]
            if len(live) < 2:
                st, b = self.call("POST", "/v1/sessions", {})
                self.stats.add("create", st)
                if st == 201:
                    self.acked[json.loads(b)["id"]] = 0
                continue
            sid = self.rng.choice(live)
            if len(live) > 12:  # a bounded live set: the RSS curve shows leaks, not growth of data
                st, b = self.call("DELETE", "/v1/sessions/" + sid)
                if st == 204:
                    self.deleted.add(sid)
                self.stats.add("delete", st)
                continue
            op = self.rng.choices(["ingest", "generate", "fork", "snapshot", "restore", "export_import", "delete", "reset", "get"],
                                  [30, 15, 5, 8, 6, 5, 3, 2, 10])[0]
            p = "/v1/sessions/" + sid
            if op == "ingest":
                toks = [self.rng.randrange(1, 320) for _ in range(self.rng.randrange(1, 64))]
                st, b = self.call("POST", p + "/ingest", {"tokens": toks})
                self.mutated(sid, st, b)
            elif op == "generate":
                st, b = self.call("POST", p + "/generate", {"prompt": [self.rng.randrange(1, 320)], "max_tokens": 4, "seed": 1})
                self.mutated(sid, st, b)
            elif op == "fork":
                st, b = self.call("POST", p + "/fork")
                if st == 201:
                    self.acked[json.loads(b)["id"]] = 0
            elif op == "snapshot":
                st, b = self.call("POST", p + "/snapshots", {"label": "s"})
                if st == 201:
                    self.snaps.setdefault(sid, set()).add(json.loads(b)["version"])
            elif op == "restore":
                vs = sorted(self.snaps.get(sid, ()))
                if not vs:
                    continue
                st, b = self.call("POST", p + "/restore", {"version": self.rng.choice(vs)})
                self.mutated(sid, st, b)
            elif op == "export_import":
                st, b = self.call("GET", p + "/state")
                self.stats.add("export", st)
                if st != 200:
                    continue
                op = "import"
                st, b = self.call("PUT", p + "/state", raw=b)
                self.mutated(sid, st, b)
            elif op == "delete":
                st, b = self.call("DELETE", p)
                if st == 204:
                    self.deleted.add(sid)
            elif op == "reset":
                st, b = self.call("POST", p + "/reset")
                self.mutated(sid, st, b)
            else:
                st, b = self.call("GET", p)
            if st == 404 and op in ("ingest", "generate", "snapshot", "restore", "import", "reset", "get", "fork"):
                self.stats.add(op + " (404: lost?)", st)
            self.stats.add(op, st)

    def verify(self):
        """Every acknowledged mutation is there; returns the problems."""
        bad = []
        for sid, v in self.acked.items():
            st, b = self.call("GET", "/v1/sessions/" + sid)
            if sid in self.deleted:
                if st != 404:
                    bad.append("%s: deleted (acknowledged) but GET gives %d" % (sid, st))
                continue
            if st != 200:
                bad.append("%s: acknowledged at version %d, GET gives %d" % (sid, v, st))
                continue
            got = json.loads(b)["version"]
            if got < v:
                bad.append("%s: acknowledged version %d, found %d" % (sid, v, got))
            self.acked[sid] = max(v, got)  # an unacknowledged commit in flight at the kill is fine
        return bad


def hostile(port, stop, counts):
    rng = random.Random(99)
    held = []
    while not stop.is_set():
        kind = rng.choice(["stall", "idle", "chunked", "nokey", "garbage"])
        try:
            s = socket.create_connection(("127.0.0.1", port), timeout=5)
            if kind == "stall":
                s.sendall(b"POST /v1/sessions HTTP/1.1\r\nHost: x\r\nContent-Le")
                held.append(s)
            elif kind == "idle":
                held.append(s)
            elif kind == "chunked":
                s.sendall(b"POST /v1/sessions/x/ingest HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
                piece = b"x" * 65536
                try:
                    for _ in range(40):
                        s.sendall(b"10000\r\n" + piece + b"\r\n")
                except OSError:
                    pass
                s.settimeout(5)
                r = s.recv(100)
                counts["chunked 413" if b" 413 " in r else "chunked other"] += 1
                s.close()
            elif kind == "nokey":
                s.sendall(b"PUT /v1/sessions/x/state HTTP/1.1\r\nHost: x\r\nContent-Length: 300000000\r\n\r\n")
                s.settimeout(5)
                r = s.recv(100)
                counts["big body 413/404" if (b" 413 " in r or b" 404 " in r) else "big body other"] += 1
                s.close()
            else:
                s.sendall(bytes(rng.randrange(256) for _ in range(rng.randrange(1, 400))) + b"\r\n\r\n")
                s.settimeout(5)
                try:
                    s.recv(100)
                except OSError:
                    pass
                s.close()
            counts[kind] += 1
        except OSError:
            counts["refused (server down)"] += 1
            time.sleep(0.2)
        while len(held) > 120:
            held.pop(0).close()
        time.sleep(0.02)
    for s in held:
        s.close()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--ttt", required=True)
    ap.add_argument("--minutes", type=float, default=30)
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--kill-every", type=float, default=300)
    ap.add_argument("--out", default="")
    a = ap.parse_args()
    work = tempfile.mkdtemp(prefix="ttt-soak-")
    with open(os.path.join(work, "cfg.json"), "w") as f:
        json.dump(CFG, f)
    model = os.path.join(work, "model")
    init_model(a.ttt, os.path.join(work, "cfg.json"), model, seed=3)
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    srv = Server(a.ttt, model, os.path.join(work, "state"), port, work)
    srv.start()
    stats, stop = Stats(), threading.Event()
    clients = [Client(i, port, stats, stop) for i in range(a.clients)]
    threads = [threading.Thread(target=c.run) for c in clients]
    hcounts = collections.Counter()
    threads.append(threading.Thread(target=hostile, args=(port, stop, hcounts)))
    for t in threads:
        t.start()
    t0 = time.time()
    end = t0 + a.minutes * 60
    rss = []
    lost = []
    restarts = []
    next_kill = t0 + a.kill_every
    next_sample = t0
    while time.time() < end:
        now = time.time()
        if now >= next_sample:
            r = srv.rss_mb()
            if r is not None:
                rss.append((now - t0, r))
            next_sample += 10
        if now >= next_kill and now + 30 < end:
            srv.kill()
            back = srv.start()
            restarts.append((now - t0, back))
            # Verify with the clients paused (each finishes its request first).
            for c in clients:
                c.pause.set()
            for c in clients:
                c.paused.wait(120)
            for c in clients:
                lost += c.verify()
            for c in clients:
                c.pause.clear()
            print("t=%4.0f s: kill -9, back in %.2f s; lost so far %d; 5xx (not 503) %d" % (now - t0, back, len(lost), len(stats.bad)),
                  flush=True)
            next_kill += a.kill_every
        time.sleep(0.5)
    stop.set()
    for t in threads:
        t.join()
    for c in clients:
        lost += c.verify()
    srv.p.terminate()
    srv.p.wait(60)

    out = []
    out.append("# Soak run: %.0f min, %d clients, kill -9 every %.0f s" % (a.minutes, a.clients, a.kill_every))
    out.append("")
    out.append("- operations: " + ", ".join("%s %d" % kv for kv in sorted(stats.ops.items())))
    out.append("- statuses: " + ", ".join("%s: %d" % kv for kv in sorted(stats.status.items())))
    out.append("- hostile connections: " + ", ".join("%s %d" % kv for kv in sorted(hcounts.items())))
    out.append("- restarts (t, seconds to ready): " + ", ".join("%.0f s: %.2f" % r for r in restarts))
    out.append("- acknowledged mutations lost: %d %s" % (len(lost), lost[:5]))
    out.append("- 5xx other than 503: %d %s" % (len(stats.bad), stats.bad[:5]))
    out.append("- sessions tracked: %d (deleted %d)" % (sum(len(c.acked) for c in clients), sum(len(c.deleted) for c in clients)))
    out.append("")
    out.append("RSS of the server (MB), per minute (min / max of the 10 s samples):")
    out.append("")
    by_min = collections.defaultdict(list)
    for t, r in rss:
        by_min[int(t // 60)].append(r)
    out.append("| minute | min | max |")
    out.append("|---:|---:|---:|")
    for m in sorted(by_min):
        out.append("| %d | %.1f | %.1f |" % (m, min(by_min[m]), max(by_min[m])))
    text = "\n".join(out)
    print(text)
    if a.out:
        with open(a.out, "w") as f:
            f.write(text + "\n")
    return 1 if lost or stats.bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
