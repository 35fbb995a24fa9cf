#!/usr/bin/env python3
"""Side-by-side benchmark: this engine vs the official JAX code (XLA-CPU) vs PyTorch, each peer's
strongest variant.

Run through scripts/bench_compare.sh (it makes the venv). Bench model: vocab 4096, d 256, 8 layers,
4 heads, f 704, W 1024, b 256; TTT-E2E has prime MLPs in the last 2 blocks.

Workloads (seconds of one call, best of N; --quick: 2K/4K instead of 8K/32K, 2K/4K for gradients):
  swa-prefill-8k     SWA prefill (loss and per-token NLL of 8K tokens)
  full-prefill-8k    full attention prefill at 8K (full-prefill-32k: asked for only)
  ttt-prefill-8k     TTT-E2E prefill (one inner SGD step per 256 tokens), 8K and 32K
  ttt-prefill-32k
  ttt-meta-grad-4k   TTT-E2E meta-learning step on one 4K / 8K sequence (gradient through every
  ttt-meta-grad-8k   inner step, second order), including the global-norm clip and the AdamW update
  swa-grad-4k        SWA pretrain step on one 4K / 8K sequence (same clip and AdamW)
  swa-grad-8k
  ttt-meta-grad-32k, swa-grad-32k, full-prefill-32k: not in the default list (long runs)

Peer variants (each in its own persistent worker process; --jax-variants, --torch-variants):
  jax:blocked    the official code, the attention it sends to cuDNN on GPUs as a blocked
                 jax.numpy attention (scripts/bench_compare_jax.py says how)
  jax:xla        the official code, those calls on XLA's dot_product_attention (T x T scores)
  torch:eager    eager PyTorch, frozen-parameter prefill under inference_mode, SDPA attention
  torch:compile  the same with torch.compile on the pieces around the attention
Each peer column of the main table is the peer's fastest variant in that row (its name follows
the time); a second table has every variant. The variants of one peer must give the same losses
(same weights, tokens and number of steps): the report states the largest relative difference.

What is timed:
  engine  `ttt bench context --model DIR --prefill-lengths T --warm-up` (the "seconds" of its
          prefill throughput table: one e2e::prefill call after one untimed call of the same
          length, as the peers get their warm-up calls) on models made by `ttt init` with the
          bench shape;
          `ttt bench train --seq-len T --steps 1` (one warm-up step, then one timed train step
          of the built-in bench models; one run gives both gradient rows).
  JAX     the official functions (scripts/bench_compare_jax.py): eval_step_fn for prefill,
          train_on_sequence for the gradients; compiled and warmed up first (one call for
          prefill, two for training, whose second call compiles again), blocked on the results.
          For prefill, XLA's buffer plan is read first: one above --mem-limit-gb is reported
          as out of memory without running (jax:xla at 32K materializes the T x T scores: about
          33 GB for TTT-E2E's first blocks and for full attention).
  PyTorch scripts/bench_compare_torch.py on the same weights as the engine's models (f32); one
          warm-up call (torch:compile compiles there).
Runs are interleaved per workload (engine, each JAX variant, each PyTorch variant, engine, ...).
Compilation and imports happen once per workload and worker, outside the timed calls.
Threads: TTT_NUM_THREADS, torch.set_num_threads, XLA_FLAGS intra_op_parallelism_threads (and
Eigen's multi-threading on only when more than one thread) and OMP/MKL/OPENBLAS_NUM_THREADS all
equal --threads; with fewer threads than cores every process is pinned to the same first cores.
OMP_WAIT_POLICY defaults to PASSIVE (see thread_env). A worker that dies or grows past
--mem-limit-gb (resident memory, checked every 0.1 s; default 60% of the memory available at the
start; workers also get an oom_score_adj of 1000) is killed; its cell says why, the rest goes on.

Checked (on by default, before the benchmark; --skip-check skips): on a tiny TTT-E2E model
(V 211, d 64, L 4, H 4, f 96, W 48, b 16, S 2, init std 0.15, T 128 with BOS targets inside) and
the same model as SWA and as full attention (b = T), all made by `ttt init`, for every PyTorch
variant:
  - TTT-E2E prefill NLL per token == `ttt eval --nll-out` (max |diff| <= 1e-4);
  - TTT-E2E with inner lr 0 == its own whole-sequence forward with phi_0 (SWA with the prime
    MLPs) == `ttt eval --no-ttt --nll-out`;
  - meta-gradient (create_graph through every inner step) == `ttt grad` for every parameter
    (max |diff| / max |g| <= 1e-3);
  - SWA and full-attention NLL == `ttt eval --nll-out`; SWA pretrain gradient == `ttt grad`.
and the JAX blocked attention == XLA's implementation on random inputs, windowed and full
(max |diff| <= 1e-4). The JAX column is the official code itself; its equivalence with the
engine is scripts/official_check.sh.
"""
import argparse
import json
import os
import platform
import re
import select
import signal
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)

BENCH_CFG = {"vocab_size": 4096, "hidden_size": 256, "num_hidden_layers": 8, "num_attention_heads": 4,
             "intermediate_size": 704, "sliding_window_size": 1024, "mini_batch_size": 256, "bos_token_id": 0,
             "rope_theta": 500000.0, "rms_norm_eps": 1e-6, "initializer_range": 0.02}

# name -> (label, kind, full length, quick length, gradient?)
WORKLOADS = {
    "swa-prefill-8k": ("SWA prefill", "swa", 8192, 2048, False),
    "full-prefill-8k": ("full attention prefill", "full", 8192, 2048, False),
    "full-prefill-32k": ("full attention prefill", "full", 32768, 4096, False),
    "ttt-prefill-8k": ("TTT-E2E prefill", "ttt", 8192, 2048, False),
    "ttt-prefill-32k": ("TTT-E2E prefill", "ttt", 32768, 4096, False),
    "ttt-meta-grad-4k": ("TTT-E2E meta-gradient step", "ttt", 4096, 2048, True),
    "swa-grad-4k": ("SWA pretrain gradient step", "swa", 4096, 2048, True),
    "ttt-meta-grad-8k": ("TTT-E2E meta-gradient step", "ttt", 8192, 4096, True),
    "swa-grad-8k": ("SWA pretrain gradient step", "swa", 8192, 4096, True),
    # Not in the default list (long runs).
    "ttt-meta-grad-32k": ("TTT-E2E meta-gradient step", "ttt", 32768, 8192, True),
    "swa-grad-32k": ("SWA pretrain gradient step", "swa", 32768, 8192, True),
}
JAX_VARIANTS = ["blocked", "xla"]  # see scripts/bench_compare_jax.py
TORCH_VARIANTS = ["eager", "compile"]  # see scripts/bench_compare_torch.py
DEFAULT_WORKLOADS = [n for n in WORKLOADS if not (n.endswith("-32k") and n != "ttt-prefill-32k")]


def klabel(t):
    return f"{t // 1024}K" if t % 1024 == 0 else str(t)


def short_error(msg, limit=160):
    m = " ".join(str(msg).split())
    m = m[len("MemoryError: "):] if m.startswith("MemoryError: ") else m
    low = m.lower() + (" out of memory" if str(msg).startswith("MemoryError") else "")
    if any(s in low for s in ("resource_exhausted", "out of memory", "can't allocate", "not enough memory",
                              "cannot allocate", "memoryerror", "bad_alloc", "std::bad_alloc")):
        return "out of memory: " + m[:limit]
    return m[:limit]


# ------------------------------------------------------------------------------------------------
# Worker side (a persistent process per peer: JSON lines on stdin/stdout)
# ------------------------------------------------------------------------------------------------
def worker_main(peer, official, threads, variant):
    proto = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)  # anything a library prints goes to the log, not into the protocol
    if peer == "torch":
        import torch

        torch.set_num_threads(threads)
        try:
            torch.set_num_interop_threads(1)
        except RuntimeError:
            pass
        sys.path.insert(0, HERE)
        import bench_compare_torch as bt
    else:
        sys.path.insert(0, HERE)
        import bench_compare_jax as bj
    run = None
    for line in sys.stdin:
        msg = json.loads(line)
        try:
            if msg["op"] == "versions":
                if peer == "torch":
                    out = {"versions": f"torch {torch.__version__} ({torch.get_num_threads()} threads, "
                                       f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', 'unset')})"}
                else:
                    out = {"versions": bj.versions()}
            elif msg["op"] == "setup":
                run = None
                t0 = time.time()
                kind, T, grad = msg["kind"], msg["T"], msg["grad"]
                if peer == "torch":
                    run = torch_setup(bt, torch, msg["model_dir"], T, grad, variant)
                else:
                    run = bj.setup(official, kind, T, grad, mem_limit_gb=msg.get("mem_limit_gb"), variant=variant)
                warm = [run() for _ in range(2 if (grad and peer == "jax") else 1)]
                out = {"setup_s": time.time() - t0, "loss": warm[-1]}
            elif msg["op"] == "run":
                t0 = time.perf_counter()
                loss = run()
                out = {"seconds": time.perf_counter() - t0, "loss": loss}
            elif msg["op"] == "check" and peer == "torch":
                out = torch_check(bt, torch, msg["dirs"], msg["engine"], variant)
            elif msg["op"] == "check":
                out = {"check": {"JAX blocked attention vs XLA's implementation (max |diff|)": bj.self_test()}}
            else:
                out = {"error": f"unknown op {msg['op']}"}
        except Exception as e:  # reported in the table; the worker stays usable
            import traceback

            traceback.print_exc()
            run = None
            out = {"error": short_error(f"{type(e).__name__}: {e}")}
        proto.write(json.dumps(out) + "\n")


def torch_setup(bt, torch, model_dir, T, grad, variant):
    import numpy as np

    m = bt.TorchTTT(model_dir, variant=variant)
    rng = np.random.default_rng(T)
    toks = torch.tensor(rng.integers(1, m.V, size=T + 1), dtype=torch.int64)
    ids, tgt = toks[:-1], toks[1:]
    if not grad:
        def run():
            nll = m.prefill(ids, tgt)
            return float(m.masked_mean(nll, tgt))
        return run
    opt = m.make_optimizer()
    meta = m.S > 0
    return lambda: m.train_step(opt, ids, tgt, meta)


def torch_check(bt, torch, dirs, engine_out, variant):
    """Compares the PyTorch implementation (this variant) with the engine's outputs (made by the driver)."""
    import numpy as np

    res = {}
    for kind, d in dirs.items():
        m = bt.TorchTTT(d, variant=variant)
        t = torch.tensor(np.fromfile(os.path.join(d, "tokens.bin"), "<i4").astype(np.int64))
        ids, tgt = t[:-1], t[1:]
        e = engine_out[kind]
        nll = m.prefill(ids, tgt).numpy()
        res[f"{kind}: NLL vs ttt eval"] = float(np.abs(nll - np.fromfile(e["nll"], "<f4")).max())
        if kind == "ttt":
            lr0 = m.prefill(ids, tgt, inner_lr=0).numpy()
            whole = m.prefill(ids, tgt, ttt=False).numpy()
            res["ttt: inner lr 0 vs own whole-sequence forward"] = float(np.abs(lr0 - whole).max())
            res["ttt: inner lr 0 vs ttt eval --no-ttt"] = float(np.abs(lr0 - np.fromfile(e["nll_nottt"], "<f4")).max())
        if "grad" in e:
            m.require_grad()
            loss = m.meta_loss(ids, tgt) if kind == "ttt" else m.pretrain_loss(ids, tgt)
            loss.backward()
            g = bt.load_safetensors(e["grad"])
            worst = 0.0
            for k, v in g.items():
                worst = max(worst, float(np.abs(m.P[k].grad.numpy() - v).max() / (np.abs(v).max() + 1e-30)))
            missing = sorted(set(m.P) ^ set(g))
            res[f"{kind}: {'meta-' if kind == 'ttt' else 'pretrain '}gradient vs ttt grad (rel)"] = worst if not missing else f"names differ: {missing[:3]}"
    return {"check": res}


# ------------------------------------------------------------------------------------------------
# Driver side
# ------------------------------------------------------------------------------------------------
class Worker:
    def __init__(self, peer, variant, args, env, log_path):
        self.peer, self.variant, self.args, self.env, self.log_path = peer, variant, args, env, log_path
        self.name = f"{peer}:{variant}"
        self.proc = None
        self.buf = b""

    def start(self):
        log = open(self.log_path, "a")
        cmd = [sys.executable, os.path.abspath(__file__), "--worker", self.peer, "--variant", self.variant,
               "--threads", str(self.args.threads)]
        if self.args.official:
            cmd += ["--official", self.args.official]
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log, env=self.env,
                                     preexec_fn=child_preexec(self.args))
        self.buf = b""

    def rss_gb(self):
        try:
            with open(f"/proc/{self.proc.pid}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        return int(line.split()[1]) / 2**20
        except OSError:
            pass
        return 0.0

    def kill(self):
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.proc = None

    def call(self, msg, timeout):
        """Sends one request; returns its answer, or {"error": why} (the worker is then restarted)."""
        if self.proc is None or self.proc.poll() is not None:
            self.start()
        try:
            self.proc.stdin.write((json.dumps(msg) + "\n").encode())
            self.proc.stdin.flush()
        except BrokenPipeError:
            return self._died()
        t0, peak = time.time(), 0.0
        fd = self.proc.stdout.fileno()
        while b"\n" not in self.buf:
            r, _, _ = select.select([fd], [], [], 0.1)
            if r:
                chunk = os.read(fd, 65536)
                if not chunk:
                    return self._died()
                self.buf += chunk
                continue
            peak = max(peak, self.rss_gb())
            if peak > self.args.mem_limit_gb:
                self.kill()
                return {"error": f"out of memory: over the {self.args.mem_limit_gb:.1f} GB limit (--mem-limit-gb), killed"}
            if time.time() - t0 > timeout:
                self.kill()
                return {"error": f"timed out after {timeout:.0f} s"}
        line, self.buf = self.buf.split(b"\n", 1)
        return json.loads(line)

    def _died(self):
        rc = self.proc.wait()
        self.proc = None
        why = f"killed by signal {-rc}" if rc < 0 else f"exited with {rc}"
        if rc == -signal.SIGKILL:
            why += " (out of memory?)"
        tail = ""
        try:
            with open(self.log_path) as f:
                lines = [x.strip() for x in f.readlines() if x.strip()]
            tail = lines[-1] if lines else ""
        except OSError:
            pass
        return {"error": short_error(f"worker {why}; {tail}")}


def child_preexec(args):
    cpus = args.cpus

    def f():
        try:
            with open("/proc/self/oom_score_adj", "w") as fh:
                fh.write("1000")
        except OSError:
            pass
        if cpus:
            os.sched_setaffinity(0, cpus)
    return f


def thread_env(threads):
    env = dict(os.environ)
    for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "TTT_NUM_THREADS"):
        env[k] = str(threads)
    # Idle OpenMP threads sleep instead of spinning: with spinning, PyTorch's step time grew 10x
    # whenever another process shared the cores (measured: 1.1 s -> 9-16 s for a 2K TTT prefill).
    env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    env["JAX_PLATFORMS"] = "cpu"
    # XLA's compiled programs kept on disk between runs (compilation is never timed; on 2 cores the
    # official meta-gradient step takes minutes to compile, twice per variant and length).
    env.setdefault("JAX_COMPILATION_CACHE_DIR", os.path.join(ROOT, "runs", "bench-compare", "jax-cache"))
    env.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "1")
    env["XLA_FLAGS"] = (f"--xla_cpu_multi_thread_eigen={'true' if threads > 1 else 'false'} "
                        f"intra_op_parallelism_threads={threads}")
    env["TF_CPP_MIN_LOG_LEVEL"] = "2"
    env["PYTHONWARNINGS"] = "ignore"
    return env


def run_engine(args, cmd, env, timeout):
    p = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout, preexec_fn=child_preexec(args))
    if p.returncode != 0:
        raise RuntimeError(short_error(f"{' '.join(cmd[1:3])} exited {p.returncode}: {p.stderr.strip()[-200:]}"))
    return p.stdout


def engine_prefill(args, env, model_dir, T):
    out = run_engine(args, [args.ttt, "bench", "context", "--model", model_dir, "--prefill-lengths", str(T),
                            "--warm-up", "--decode-lengths", "1", "--decode-tokens", "1"], env, args.timeout)
    name = os.path.basename(model_dir.rstrip("/"))
    m = re.search(rf"^\| {re.escape(name)} \| {T} \| ([0-9.]+) \|", out, re.M)
    if not m:
        raise RuntimeError(f"no prefill row for {name} at {T} in `ttt bench context` output")
    return float(m.group(1))


def engine_train(args, env, T):
    out = run_engine(args, [args.ttt, "bench", "train", "--seq-len", str(T), "--steps", "1"], env, args.timeout)
    res = {}
    for name, mode, key in (("ttt-e2e", "meta-learning", "ttt"), ("swa", "pretrain", "swa")):
        m = re.search(rf"^\| {name} \| {mode} \| ([0-9.]+) \|", out, re.M)
        if not m:
            raise RuntimeError(f"no {name} row in `ttt bench train` output")
        res[key] = float(m.group(1))
    return res


def make_models(args, root):
    dirs = {}
    for kind in ("ttt", "swa", "full"):
        cfg = dict(BENCH_CFG, seq_modeling_block="self_attention" if kind == "full" else "SWA")
        if kind == "ttt":
            cfg.update(prime=True, suffix_len=2)
        d = os.path.join(root, kind)
        cfg_path = os.path.join(root, f"{kind}.json")
        want = json.dumps(cfg, sort_keys=True)
        if not (os.path.exists(os.path.join(d, "model.safetensors")) and os.path.exists(cfg_path)
                and open(cfg_path).read() == want):
            os.makedirs(root, exist_ok=True)
            subprocess.run(["rm", "-rf", d], check=True)
            with open(cfg_path, "w") as f:
                f.write(want)
            subprocess.run([args.ttt, "init", "--config", cfg_path, "--seed", "1", "--out", d], check=True,
                           stdout=subprocess.DEVNULL)
        dirs[kind] = d
    return dirs


def run_check(args, workers, out_root):
    """Tiny models through the engine (eval / grad) and every PyTorch variant; the JAX blocked attention
    against XLA's."""
    import numpy as np

    root = os.path.join(out_root, "check")
    os.makedirs(root, exist_ok=True)
    T = 128
    base = {"vocab_size": 211, "hidden_size": 64, "num_hidden_layers": 4, "num_attention_heads": 4,
            "intermediate_size": 96, "sliding_window_size": 48, "mini_batch_size": 16, "bos_token_id": 0,
            "initializer_range": 0.15}
    cfgs = {"ttt": dict(base, seq_modeling_block="SWA", prime=True, suffix_len=2),
            "swa": dict(base, seq_modeling_block="SWA"),
            "full": dict(base, seq_modeling_block="self_attention", mini_batch_size=T)}
    rng = np.random.default_rng(7)
    toks = rng.integers(1, base["vocab_size"], size=T + 1).astype("<i4")
    toks[0] = 0
    toks[T // 2 + 5] = 0  # a second document: a masked target
    toks[-20:] = toks[10:30]
    dirs, eng = {}, {}
    env = thread_env(args.threads)
    for kind, cfg in cfgs.items():
        d = os.path.join(root, kind)
        subprocess.run(["rm", "-rf", d], check=True)
        with open(os.path.join(root, f"{kind}.json"), "w") as f:
            json.dump(cfg, f)
        subprocess.run([args.ttt, "init", "--config", os.path.join(root, f"{kind}.json"), "--seed", "3", "--out", d],
                       check=True, stdout=subprocess.DEVNULL)
        tok = os.path.join(d, "tokens.bin")
        toks.tofile(tok)
        e = {"nll": os.path.join(d, "engine_nll.f32")}
        subprocess.run([args.ttt, "eval", "--model", d, "--tokens", tok, "--nll-out", e["nll"]], check=True,
                       stdout=subprocess.DEVNULL, env=env)
        if kind == "ttt":
            e["nll_nottt"] = os.path.join(d, "engine_nll_nottt.f32")
            subprocess.run([args.ttt, "eval", "--model", d, "--tokens", tok, "--no-ttt", "--nll-out", e["nll_nottt"]],
                           check=True, stdout=subprocess.DEVNULL, env=env)
        if kind != "full":
            e["grad"] = os.path.join(d, "engine_grad.safetensors")
            subprocess.run([args.ttt, "grad", "--model", d, "--tokens", tok, "--out", e["grad"]], check=True,
                           stdout=subprocess.DEVNULL, env=env)
        dirs[kind], eng[kind] = d, e
    lines, ok = [], True
    for w in workers:
        ans = w.call({"op": "check", "dirs": dirs, "engine": eng}, timeout=args.timeout)
        if "error" in ans:
            lines.append(f"{w.name} check failed to run: {ans['error']}")
            ok = False
            continue
        for k, v in ans["check"].items():
            good = not isinstance(v, str) and v <= (1e-3 if "gradient" in k else 1e-4)
            ok &= good
            lines.append(f"{w.name} {k}: {v if isinstance(v, str) else f'{v:.2g}'} {'ok' if good else 'MISMATCH'}")
    return lines, ok


def machine_info(args):
    cpu = "unknown CPU"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    mem = 0
    try:
        with open("/proc/meminfo") as f:
            mem = int(f.readline().split()[1]) / 2**20
    except OSError:
        pass
    blas = ""
    try:
        info = subprocess.run([args.ttt, "info"], capture_output=True, text=True, timeout=60).stdout
        lib = re.search(r"^blas library\s+(.*)$", info, re.M)
        ker = re.search(r"^blas kernel\s+(.*)$", info, re.M)
        blas = f"engine BLAS {lib.group(1) if lib else '?'} ({ker.group(1) if ker else '?'})"
    except Exception:
        pass
    return f"{cpu}, {os.cpu_count()} cores, {mem:.0f} GiB RAM, {platform.system()} {platform.release()}; {blas}"


def cpu_busy_seconds():
    """CPU seconds all processes of the machine have used (/proc/stat: all but idle and iowait)."""
    try:
        with open("/proc/stat") as f:
            v = [int(x) for x in f.readline().split()[1:]]
        return (sum(v[:8]) - v[3] - v[4]) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return 0.0


def fmt(v, base):
    if isinstance(v, str):
        return v
    s = f"{v:.2f} s"
    if isinstance(base, float) and base > 0:
        s += f" ({v / base:.1f}x)"
    return s


def parse_args():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--official", default="", help="checkout of github test-time-training/e2e")
    ap.add_argument("--repeats", type=int, default=None)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--workloads", default=",".join(DEFAULT_WORKLOADS))
    ap.add_argument("--jax-variants", default=",".join(JAX_VARIANTS), help="of: " + ", ".join(JAX_VARIANTS))
    ap.add_argument("--torch-variants", default=",".join(TORCH_VARIANTS), help="of: " + ", ".join(TORCH_VARIANTS))
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--build", default=os.path.join(ROOT, "build"))
    ap.add_argument("--out", default=os.path.join(ROOT, "runs", "bench-compare"))
    ap.add_argument("--skip-check", action="store_true")
    ap.add_argument("--mem-limit-gb", type=float, default=None,
                    help="kill a peer worker above this resident memory (default 60%% of MemAvailable)")
    ap.add_argument("--timeout", type=float, default=1800, help="seconds per call")
    ap.add_argument("--worker", choices=["torch", "jax"], help=argparse.SUPPRESS)
    ap.add_argument("--variant", default="", help=argparse.SUPPRESS)
    return ap.parse_args()


def variant_list(text, known, what):
    out = [v.strip() for v in text.split(",") if v.strip()]
    for v in out:
        if v not in known:
            sys.exit(f"bench_compare: unknown {what} variant {v} (known: {', '.join(known)})")
    return out


def setup_peers(row, kind, T, grad, models, workers, args):
    """Compiles and warms up every peer variant for one workload; returns the ready ones."""
    ready = []
    for w in workers:
        a = w.call({"op": "setup", "kind": kind, "T": T, "grad": grad, "model_dir": models[kind],
                    "mem_limit_gb": args.mem_limit_gb}, timeout=args.timeout)
        if "error" in a:
            row["notes"][w.name] = f"failed: {a['error']}"
            print(f"  {w.name} setup failed: {a['error']}", file=sys.stderr)
        else:
            ready.append(w)
            row["setup_s"][w.name] = a["setup_s"]
            row["losses"][w.name] = [a["loss"]]
            print(f"  {w.name}: setup and warm-up {a['setup_s']:.1f} s, loss {a['loss']:.5f}", file=sys.stderr)
    return ready


def engine_once(name, r, row, kind, T, grad, names, models, engine_pending, args, env):
    if (name, r) in engine_pending:
        return engine_pending.pop((name, r))
    if not grad:
        return engine_prefill(args, env, models[kind], T)
    both = engine_train(args, env, T)
    # The same `ttt bench train` run timed the other kind's row at this length.
    full_t = WORKLOADS[name][2]
    other = next((n for n, w in WORKLOADS.items() if w[4] and w[1] != kind and w[2] == full_t), None)
    if other in names and names.index(other) > names.index(name):  # None is never in names
        engine_pending[(other, r)] = both["swa" if kind == "ttt" else "ttt"]
    return both[kind]


LOADS = []  # the 1-minute load average after each timed call


def run_workload(name, names, models, workers, engine_pending, args, env, repeats):
    label, kind, full_t, quick_t, grad = WORKLOADS[name]
    T = quick_t if args.quick else full_t
    row = {"label": f"{label} {klabel(T)}", "T": T, "engine": [], "notes": {}, "setup_s": {}, "losses": {}}
    row.update({w.name: [] for w in workers})
    print(f"{row['label']}:", file=sys.stderr)
    ready = setup_peers(row, kind, T, grad, models, workers, args)
    for r in range(repeats):
        try:
            sec = engine_once(name, r, row, kind, T, grad, names, models, engine_pending, args, env)
            row["engine"].append(sec)
            LOADS.append(os.getloadavg()[0])
            print(f"  [{r + 1}/{repeats}] engine {sec:.3f} s", file=sys.stderr)
        except Exception as e:
            row["notes"]["engine"] = f"failed: {short_error(e)}"
            print(f"  engine failed: {e}", file=sys.stderr)
        for w in list(ready):
            a = w.call({"op": "run"}, timeout=args.timeout)
            if "error" in a:
                row["notes"][w.name] = f"failed: {a['error']}"
                print(f"  {w.name} failed: {a['error']}", file=sys.stderr)
                ready.remove(w)
                continue
            row[w.name].append(a["seconds"])
            LOADS.append(os.getloadavg()[0])
            row["losses"][w.name].append(a["loss"])
            print(f"  [{r + 1}/{repeats}] {w.name} {a['seconds']:.3f} s (loss {a['loss']:.5f})", file=sys.stderr)
    return row


def cell(row, key):
    """Best seconds (float) or why there is none (str)."""
    if row.get(key) and key not in row["notes"]:
        return min(row[key])
    if row.get(key):
        return f"{min(row[key]):.2f} s, then {row['notes'][key]}"
    return row["notes"].get(key, "not run")


def best_of_peer(row, workers, peer):
    """(seconds, variant) of the peer's fastest variant in this row, or (why, None)."""
    got = [(cell(row, w.name), w.variant) for w in workers if w.peer == peer]
    timed = [g for g in got if isinstance(g[0], float)]
    if timed:
        return min(timed)
    return ("; ".join(f"{v}: {c}" for c, v in got) if got else "not run (give --official PATH)", None)


def loss_spread(row, workers, peer):
    """Largest relative difference between the variants' losses (same inputs, same steps)."""
    ls = [row["losses"][w.name] for w in workers if w.peer == peer and row["losses"].get(w.name)]
    worst = 0.0
    for a in ls[1:]:
        for x, y in zip(ls[0], a):
            worst = max(worst, abs(x - y) / max(abs(x), 1e-30))
    return worst if len(ls) > 1 else None


def tables(names, results, workers):
    head = ("| workload | this engine | JAX (official code), best variant | PyTorch, best variant |\n"
            "|---|---:|---:|---:|\n")
    body, spreads = "", {}
    for name in names:
        row = results[name]
        eng = cell(row, "engine")
        base = eng if isinstance(eng, float) else None
        cells = []
        for peer in ("jax", "torch"):
            v, var = best_of_peer(row, workers, peer)
            cells.append(fmt(v, base) + (f", {var}" if var else ""))
            sp = loss_spread(row, workers, peer)
            if sp is not None:
                spreads[peer] = max(spreads.get(peer, 0.0), sp)
        body += f"| {row['label']} | {fmt(eng, None)} | {cells[0]} | {cells[1]} |\n"
    allh = "| workload | " + " | ".join(w.name for w in workers) + " |\n|---|" + "---:|" * len(workers) + "\n"
    allb = ""
    for name in names:
        row = results[name]
        eng = cell(row, "engine")
        base = eng if isinstance(eng, float) else None
        allb += f"| {row['label']} | " + " | ".join(fmt(cell(row, w.name), base) for w in workers) + " |\n"
    return head + body, allh + allb, spreads


VARIANT_NOTES = {
    "jax:blocked": "jax:blocked = the official code with the attention it sends to cuDNN on GPUs (TTT-E2E's first "
                   "blocks, full attention) run as a blocked jax.numpy attention (window: 256-query blocks against "
                   "their W + 256 keys; full: 1024-query blocks against the keys up to the block's end)",
    "jax:xla": "jax:xla = the same calls on XLA's jax.nn.dot_product_attention (materializes the T x T scores)",
    "torch:eager": "torch:eager = eager PyTorch, frozen-parameter prefill (inference_mode; only the inner "
                   "gradient's graph recorded), SDPA attention (window: 256-query blocks with a mask)",
    "torch:compile": "torch:compile = the same with the block's pieces around the attention, the MLPs and the "
                     "head through torch.compile (inductor; in the meta-gradient only the first L-S blocks: "
                     "its backward is not differentiable twice)",
}


def main():
    args = parse_args()
    if args.worker:
        return worker_main(args.worker, args.official, args.threads, args.variant)

    t_start = time.time()
    args.ttt = os.path.join(args.build, "ttt")
    if not os.access(args.ttt, os.X_OK):
        sys.exit(f"bench_compare: no engine at {args.ttt} (build it first)")
    repeats = args.repeats or (1 if args.quick else 3)
    names = [w.strip() for w in args.workloads.split(",") if w.strip()]
    for n in names:
        if n not in WORKLOADS:
            sys.exit(f"bench_compare: unknown workload {n} (known: {', '.join(WORKLOADS)})")
    jax_vars = variant_list(args.jax_variants, JAX_VARIANTS, "JAX") if args.official else []
    torch_vars = variant_list(args.torch_variants, TORCH_VARIANTS, "PyTorch")
    allowed = sorted(os.sched_getaffinity(0))
    args.cpus = set(allowed[:args.threads]) if args.threads < len(allowed) else None
    if args.mem_limit_gb is None:
        with open("/proc/meminfo") as f:
            avail = next(int(x.split()[1]) for x in f if x.startswith("MemAvailable")) / 2**20
        args.mem_limit_gb = 0.6 * avail
    os.makedirs(args.out, exist_ok=True)
    env = thread_env(args.threads)
    load0 = os.getloadavg()
    cpu0 = (cpu_busy_seconds(), sum(os.times()[:4]))

    models = make_models(args, os.path.join(args.out, "models"))
    workers = []
    for peer, vs in (("jax", jax_vars), ("torch", torch_vars)):
        for v in vs:
            log = os.path.join(args.out, f"{peer}-{v}-worker.log")
            open(log, "w").close()
            workers.append(Worker(peer, v, args, env, log))
    versions = []
    for peer in ("jax", "torch"):
        w = next((w for w in workers if w.peer == peer), None)
        if w:
            a = w.call({"op": "versions"}, timeout=300)
            versions.append(a.get("versions", f"{peer}: {a.get('error')}"))

    check_lines, check_ok = [], None
    if not args.skip_check:
        print("checking every PyTorch variant against `ttt eval` / `ttt grad` on tiny models, and the JAX blocked "
              "attention against XLA's...", file=sys.stderr)
        check_lines, check_ok = run_check(args, [w for w in workers if w.peer == "torch" or w.variant == "blocked"],
                                          args.out)
        for line in check_lines:
            print("  " + line, file=sys.stderr)

    results, engine_pending = {}, {}  # (workload, repeat) -> seconds measured by a `ttt bench train` run of the other row
    for name in names:
        results[name] = run_workload(name, names, models, workers, engine_pending, args, env, repeats)
    for w in workers:
        w.kill()
    load1 = os.getloadavg()
    others = max(0.0, (cpu_busy_seconds() - cpu0[0]) - (sum(os.times()[:4]) - cpu0[1])) / ((time.time() - t_start) * os.cpu_count())
    report(args, names, results, workers, repeats, versions, check_lines, check_ok, load0, load1, others, t_start)


def report(args, names, results, workers, repeats, versions, check_lines, check_ok, load0, load1, others, t_start):
    best, every, spreads = tables(names, results, workers)
    wall = time.time() - t_start
    notes = [
        f"Seconds per call, best of {repeats} interleaved run{'s' if repeats > 1 else ''}; in parentheses peer / engine "
        f"(above 1: the engine is faster). Bench model: vocab 4096, d 256, 8 layers, 4 heads, f 704, W 1024, b 256, "
        f"TTT-E2E prime MLPs in the last 2 blocks; float32 everywhere (the official code with compute_dtype fp32).",
        "Engine: `ttt bench context --warm-up` (prefill, after one untimed call) and `ttt bench train` (one train step: gradient, clip, AdamW; "
        "one run times both gradient rows). JAX: the official eval_step_fn / train_on_sequence, compiled and warmed "
        "up first. PyTorch: scripts/bench_compare_torch.py, one warm-up call. Each peer column is that peer's "
        "fastest variant in the row (named after the time); every variant is in the second table.",
    ] + [VARIANT_NOTES[w.name] for w in workers] + [
        f"Machine: {machine_info(args)}; {args.threads} threads for every column; "
        f"load average {load0[0]:.2f} before, {load1[0]:.2f} after"
        + (f", {sum(LOADS) / len(LOADS):.2f} on average after the timed calls (max {max(LOADS):.2f})" if LOADS else "")
        + f"; other processes used {100 * others:.0f}% of the "
        f"CPU time during the run; {'; '.join(versions)}.",
    ]
    for peer, sp in spreads.items():
        notes.append(f"{peer} variants agree: largest relative difference of their losses (same weights, tokens and "
                     f"steps) {sp:.1g}{'' if sp <= 1e-4 else ' MISMATCH'}.")
    if others > 0.1:
        notes.append(f"Warning: other processes used {100 * others:.0f}% of the machine's CPU time during this run; "
                     "the timings and ratios are not reliable. Rerun on a quiet machine.")
    if check_lines:
        notes.append("Checked against the engine on tiny models "
                     f"({'all agree' if check_ok else 'MISMATCH'}): " + "; ".join(check_lines) + ".")
    notes.append(f"Whole run: {wall:.0f} s" + (" (--quick: 2K/4K lengths, 1 repeat)." if args.quick else "."))
    text = ("## Engine vs the official JAX code vs PyTorch\n\n" + best + "\nEvery variant:\n\n" + every + "\n"
            + "\n".join(f"- {n}" for n in notes) + "\n")
    print(text)
    with open(os.path.join(args.out, "compare.md"), "w") as f:
        f.write(text)
    with open(os.path.join(args.out, "results.json"), "w") as f:
        json.dump({"repeats": repeats, "threads": args.threads, "quick": args.quick, "workloads": results,
                   "check": check_lines, "versions": versions, "load": [load0, load1], "loads": LOADS,
                   "others": others}, f, indent=1)
    print(f"\nwrote {os.path.join(args.out, 'compare.md')}", file=sys.stderr)


if __name__ == "__main__":
    main()
