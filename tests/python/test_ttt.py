# SPEC section 10: every equivalence of `import ttt` with the CLI, bad input from Python, the
# GIL and Ctrl-C, arrays in and out.
import json
import os
import pathlib
import signal
import struct
import subprocess
import sys
import textwrap
import threading
import time

import numpy as np
import pytest

import ttt

from conftest import ROOT, TINY


def read_safetensors(path):
    raw = pathlib.Path(path).read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + n])
    header.pop("__metadata__", None)
    out = {}
    for name, h in header.items():
        assert h["dtype"] == "F32", name
        a, b = h["data_offsets"]
        out[name] = np.frombuffer(raw[8 + n + a:8 + n + b], dtype="<f4").reshape(h["shape"])
    return out


def cli_ids(stdout):
    return np.array([int(x) for x in stdout.split()], dtype=np.int32)


# ------------------------------------------------------------------------------------------------
# Equivalences with the CLI.

@pytest.mark.parametrize("use_ttt", [True, False])
def test_eval_equals_cli_bit_for_bit(cli, tiny_model, token_file, work, use_ttt):
    path, ids = token_file("eval.bin", 41)
    nll_path = work / f"nll_{use_ttt}.bin"
    r = cli("eval", "--model", tiny_model, "--tokens", path, "--nll-out", nll_path, *([] if use_ttt else ["--no-ttt"]))
    m = ttt.Model.load(tiny_model)
    loss, nll = m.eval(ids, ttt=use_ttt)
    assert nll.dtype == np.float32 and nll.shape == (40,)
    assert np.array_equal(nll, np.fromfile(nll_path, dtype="<f4"))
    assert r.stdout.strip() == f"loss {loss:.9g}"


def test_eval_stream_equals_cli(cli, tiny_model, token_file, work):
    path, ids = token_file("stream.bin", 21, seed=5)
    cli("eval", "--model", tiny_model, "--tokens", path, "--stream", "--nll-out", work / "stream_nll.bin")
    _, nll = ttt.Model.load(tiny_model).eval(ids, stream=True)
    assert np.array_equal(nll, np.fromfile(work / "stream_nll.bin", dtype="<f4"))


@pytest.mark.parametrize("use_ttt", [True, False])
def test_grad_equals_cli(cli, tiny_model, token_file, work, use_ttt):
    path, ids = token_file("grad.bin", 17, seed=2)
    out = work / f"grad_{use_ttt}.safetensors"
    r = cli("grad", "--model", tiny_model, "--tokens", path, "--out", out, *([] if use_ttt else ["--no-ttt"]))
    m = ttt.Model.load(tiny_model)
    loss, grads = m.grad(ids, ttt=use_ttt)
    assert r.stdout.strip() == f"loss {loss:.9g}"
    ref = read_safetensors(out)
    assert sorted(ref) == sorted(grads) == sorted(m.parameter_names())
    for name, g in grads.items():
        assert g.dtype == np.float32 and g.shape == ref[name].shape, name
        assert np.array_equal(g, ref[name]), name
    # The model still evaluates exactly as before (grad leaves no trace).
    assert np.array_equal(m.eval(ids)[1], ttt.Model.load(tiny_model).eval(ids)[1])


def test_generate_greedy_equals_cli(cli, tiny_model, token_file, work):
    path, ids = token_file("prompt.bin", 11, seed=7)
    r = cli("generate", "--model", tiny_model, "--prompt-tokens", path, "--max-new-tokens", 12, "--temperature", 0)
    s = ttt.Model.load(tiny_model).session()
    s.feed(ids)
    out = s.generate(12, temperature=0)
    assert out.dtype == np.int32
    assert np.array_equal(out, cli_ids(r.stdout))
    assert s.position == 11 + 12  # the session read its whole answer


def test_generate_sampled_equals_cli(cli, tiny_model, token_file):
    path, ids = token_file("prompt2.bin", 9, seed=8)
    r = cli("generate", "--model", tiny_model, "--prompt-tokens", path, "--max-new-tokens", 10, "--temperature", 0.8,
            "--top-k", 20, "--top-p", 0.9, "--seed", 42)
    s = ttt.Model.load(tiny_model).session()
    s.feed(ids)
    assert np.array_equal(s.generate(10, temperature=0.8, top_k=20, top_p=0.9, seed=42), cli_ids(r.stdout))


def test_fork_save_load_continue_exactly(cli, tiny_model, token_file, work):
    m = ttt.Model.load(tiny_model)
    _, doc = token_file("doc.bin", 30, seed=9)
    s = m.session()
    s.feed(doc[:13])
    fork = s.fork()
    state = work / "s.state"
    s.save(state)
    loaded = m.load_session(state)
    for x in (fork, loaded):
        assert (x.position, x.ttt_steps, x.pending_tokens) == (s.position, s.ttt_steps, s.pending_tokens)
    assert s.position == 13 and s.ttt_steps == 3 and s.pending_tokens == 1
    a = [x.feed(doc[13:]) for x in (s, fork, loaded)]
    assert np.array_equal(a[0], a[1]) and np.array_equal(a[0], a[2])
    g = [x.generate(6, temperature=0) for x in (s, fork, loaded)]
    assert np.array_equal(g[0], g[1]) and np.array_equal(g[0], g[2])
    # The state file is the CLI's: `ttt generate --state-in` continues it the same way.
    loaded2 = m.load_session(state)
    r = cli("generate", "--model", tiny_model, "--state-in", state, "--prompt", " ".join(map(str, doc[13:20])),
            "--max-new-tokens", 5, "--temperature", 0)
    loaded2.feed(doc[13:20])
    assert np.array_equal(loaded2.generate(5, temperature=0), cli_ids(r.stdout))
    # A state saved by the CLI loads in Python.
    cli("generate", "--model", tiny_model, "--prompt", " ".join(map(str, doc[:13])), "--max-new-tokens", 3,
        "--temperature", 0, "--state-out", work / "cli.state")
    c = m.load_session(work / "cli.state")
    assert c.position == 16
    s.reset()
    assert (s.position, s.ttt_steps, s.pending_tokens, s.last_logits) == (0, 0, 0, None)


def test_feed_equals_eval_and_on_step_sees_chunk_losses(tiny_model, token_file):
    m = ttt.Model.load(tiny_model)
    _, ids = token_file("feed.bin", 4 * 6 + 1, seed=11)
    _, nll = m.eval(ids)
    seen = []
    s = m.session()
    s.feed(ids[:-1], on_step=lambda chunk, loss: seen.append((chunk, loss)))
    # The feed takes the steps of chunks 0..4 (chunk 5's target is not known yet).
    assert [c for c, _ in seen] == [0, 1, 2, 3, 4]
    for c, loss in seen:
        tg = ids[1 + 4 * c:1 + 4 * (c + 1)]
        want = nll[4 * c:4 * (c + 1)][tg != 0].mean()
        assert abs(loss - want) < 1e-5
    # Fed in one call or in pieces, or one token at a time: the same logits.
    p = m.session()
    for i in range(0, 24, 5):
        last = p.feed(ids[i:min(i + 5, 24)])
    one = m.session()
    for t in ids[:24]:
        step = one.feed([t])
    assert np.allclose(last, s.last_logits, atol=1e-5) and np.allclose(step, last, atol=1e-4)


def test_tokenizer_equals_cli(cli, tokenizer_file, work):
    text = "alpha beta kernel memory <s> window\nchunk tokens ünïcode 42\n"
    (work / "in.txt").write_text(text)
    cli("tokenize", "--tokenizer", tokenizer_file, "--in", work / "in.txt", "--out", work / "in.bin")
    cli("tokenize", "--tokenizer", tokenizer_file, "--in", work / "in.txt", "--out", work / "in_bos.bin", "--bos")
    tok = ttt.Tokenizer.load(tokenizer_file)
    ids = tok.encode(text)
    assert ids.dtype == np.int32
    assert np.array_equal(ids, np.fromfile(work / "in.bin", dtype="<i4"))
    assert np.array_equal(tok.encode(text, bos=True), np.fromfile(work / "in_bos.bin", dtype="<i4"))
    assert tok.decode(ids) == text
    assert tok.vocab_size == 300 and tok.bos_id == 0
    assert tok.decode_bytes(ids) == text.encode()


def test_init_equals_cli(cli, work):
    cfg = work / "init.json"
    cfg.write_text(json.dumps(TINY))
    cli("init", "--config", cfg, "--seed", 11, "--out", work / "init_cli")
    m = ttt.Model.init(TINY, seed=11)
    m.save(work / "init_py")
    assert (work / "init_py" / "model.safetensors").read_bytes() == (work / "init_cli" / "model.safetensors").read_bytes()
    assert m.config == ttt.Model.load(work / "init_cli").config
    assert m.config["hidden_size"] == 16


def test_train_equals_cli(cli, work, token_file):
    path, _ = token_file("train.bin", 600, seed=4)
    cfg = work / "train.json"
    cfg.write_text(json.dumps(TINY))
    opts = dict(steps=3, seq_len=8, batch=2, lr=1e-2, val_every=0, seed=5)
    cli("train", "--config", cfg, "--tokens", path, "--out", work / "train_cli", "--quiet",
        *[a for k, v in opts.items() for a in (f"--{k.replace('_', '-')}", v)])
    lines = []
    r = ttt.train(out=work / "train_py", config=TINY, tokens=path, on_step=lines.append, **opts)
    assert r["steps_done"] == 3 and [l["step"] for l in lines] == [1, 2, 3]
    assert all(np.isfinite(l["loss"]) for l in lines) and r["loss"] == lines[-1]["loss"]
    a = (work / "train_cli" / "model.safetensors").read_bytes()
    assert (work / "train_py" / "model.safetensors").read_bytes() == a
    # Continuing from a model directory works too.
    ttt.train(out=work / "train_py2", model=work / "train_py", tokens=path, steps=1, seq_len=8, val_every=0)
    assert (work / "train_py2" / "model.safetensors").exists()


def test_eval_long_equals_eval(tiny_model, token_file):
    m = ttt.Model.load(tiny_model)
    docs = [token_file(f"long{i}.bin", 30, seed=20 + i)[1] for i in range(2)]
    mean, per_doc = m.eval_long(docs, length=24)
    assert mean.shape == (24,) and per_doc.shape == (2, 24)
    for i, d in enumerate(docs):
        _, nll = m.eval(d[:25])
        masked = d[1:25] == 0
        assert np.allclose(per_doc[i][~masked], nll[~masked], atol=1e-6)


# ------------------------------------------------------------------------------------------------
# Arrays in and out.

class OnlyArray:
    def __init__(self, a):
        self.a = np.asarray(a)

    def __array__(self, dtype=None, copy=None):
        return self.a


class OnlyDLPack:
    def __init__(self, a):
        self.a = np.asarray(a)

    def __dlpack__(self, **kw):
        return self.a.__dlpack__(**kw)

    def __dlpack_device__(self):
        return self.a.__dlpack_device__()


def test_token_array_likes(tiny_model, token_file):
    m = ttt.Model.load(tiny_model)
    _, ids = token_file("arr.bin", 13, seed=3)
    ref = m.eval(ids)[1]
    for x in (ids.tolist(), tuple(ids.tolist()), ids.astype(np.int64), ids.astype(np.uint8), ids.astype(np.int16),
              ids[::-1].copy()[::-1], np.repeat(ids, 2)[::2], OnlyArray(ids), OnlyDLPack(ids),
              [np.int64(v) for v in ids]):
        assert np.array_equal(m.eval(x)[1], ref)
    logits = m.session().feed(ids)
    assert logits.dtype == np.float32 and logits.shape == (40,)


def test_torch_tensor_input(tiny_model, token_file):
    torch = pytest.importorskip("torch")
    m = ttt.Model.load(tiny_model)
    _, ids = token_file("torch.bin", 13, seed=3)
    t = torch.from_numpy(ids.astype(np.int64))
    assert np.array_equal(m.eval(t)[1], m.eval(ids)[1])
    s = m.session()
    assert np.array_equal(s.feed(t[:5]), m.session().feed(ids[:5]))
    g = torch.from_numpy(m.session().feed(ids))  # numpy out -> torch without a copy
    assert g.shape == (40,)


# ------------------------------------------------------------------------------------------------
# Bad input: ValueError / RuntimeError with one-line messages, never a crash.

def test_bad_input(tiny_model, token_file, tokenizer_file, work):
    m = ttt.Model.load(tiny_model)
    _, ids = token_file("bad.bin", 9, seed=1)

    def raises(exc, fn, *args, match=None, **kw):
        with pytest.raises(exc, match=match) as e:
            fn(*args, **kw)
        assert "\n" not in str(e.value)
        return str(e.value)

    raises(ValueError, m.eval, [1, 2, 40], match="out of range")
    raises(ValueError, m.eval, [1, -3, 4], match="out of range")
    raises(ValueError, m.eval, [1], match="at least 2")
    raises(ValueError, m.eval, [], match="at least 2")
    raises(ValueError, m.eval, np.zeros((2, 3), dtype=np.int32), match="1-D")
    raises(ValueError, m.eval, np.array([1.0, 2.0]), match="integers")
    raises(ValueError, m.eval, np.array([True, False]), match="integers")
    raises(ValueError, m.eval, [1, "a", 2], match="not an integer")
    raises(ValueError, m.eval, [1, 2 ** 40], match="does not fit")
    raises(ValueError, m.eval, np.array([1, 2 ** 40], dtype=np.int64), match="does not fit")
    raises(ValueError, m.eval, "1 2 3")
    raises(ValueError, m.eval, None)
    raises(ValueError, m.eval, 5)
    raises(ValueError, m.grad, ids[:8], match="multiple of mini_batch_size")
    raises(RuntimeError, ttt.Model.load, work / "no-such-model")
    raises(ValueError, ttt.Model.load, tiny_model, weights="f16")
    raises(ValueError, ttt.Model.init, {"vocab_size": 40}, 0)
    raises(ValueError, ttt.Model.init, [1, 2], 0)
    s = m.session()
    raises(ValueError, s.feed, [41])
    raises(ValueError, s.feed, [])  # nothing read yet
    raises(ValueError, s.generate, 3)  # nothing read yet: no logits to sample from
    s.feed(ids)
    raises(ValueError, s.generate, 3, top_p=0.0)
    raises(ValueError, s.generate, 3, temperature=-1.0)
    raises(ValueError, s.generate, -1)
    raises(ValueError, s.feed, ids, on_step=5)
    assert s.position == len(ids)  # a rejected call changes nothing
    bad_state = work / "bad.state"
    bad_state.write_bytes(b"not a state file")
    raises(RuntimeError, m.load_session, bad_state)
    raises(RuntimeError, m.load_session, work / "missing.state")
    other = ttt.Model.init(TINY, seed=99)
    s.save(work / "ok.state")
    raises(RuntimeError, other.load_session, work / "ok.state")  # another model's state
    raises(RuntimeError, ttt.Tokenizer.load, work / "no-such.model")
    tok = ttt.Tokenizer.load(tokenizer_file)
    raises(ValueError, tok.decode, [10 ** 6])
    raises(ValueError, tok.encode, 42)
    raises(ValueError, ttt.train, out=work / "t_bad", config=TINY, tokens=work / "bad.bin", steps=0)
    raises(ValueError, ttt.train, out=work / "t_bad", config=TINY, tokens=work / "bad.bin", no_such_option=1)
    raises(ValueError, ttt.train, out=work / "t_bad", config=TINY, model=tiny_model, tokens=work / "bad.bin")
    raises(ValueError, ttt.train, out=work / "t_bad", config=TINY, tokens=work / "bad.bin", steps="many")
    raises(RuntimeError, ttt.train, out=work / "t_bad", config=TINY, tokens=work / "missing.bin", steps=1)
    raises(ValueError, ttt.set_num_threads, 0)
    msg = raises(RuntimeError, ttt.import_checkpoint, work / "no-ckpt", work / "imp", size="125m")
    assert "import from" in msg
    raises(ValueError, ttt.import_checkpoint, work / "no-ckpt", work / "imp2")


def test_callback_calling_the_engine_is_refused(tiny_model, token_file):
    m = ttt.Model.load(tiny_model)
    _, ids = token_file("cb2.bin", 20, seed=1)
    s = m.session()
    with pytest.raises(RuntimeError, match="cannot call the engine"):
        s.feed(ids, on_step=lambda c, l: m.eval(ids))
    assert s.position % 4 == 0 and s.position > 0


def test_callback_exception_comes_back(tiny_model, token_file):
    m = ttt.Model.load(tiny_model)
    _, ids = token_file("cb.bin", 40, seed=1)

    def boom(chunk, loss):
        raise KeyError("from the callback")

    s = m.session()
    with pytest.raises(KeyError, match="from the callback"):
        s.feed(ids, on_step=boom)
    # The session stopped at a chunk boundary and is consistent: it continues like a fresh one
    # fed the same tokens.
    pos = s.position
    assert 0 < pos < len(ids) and pos % 4 == 0
    ref = m.session()
    ref.feed(ids[:pos])
    assert np.array_equal(s.feed(ids[pos:]), ref.feed(ids[pos:]))


# ------------------------------------------------------------------------------------------------
# Threads and Ctrl-C.

MEDIUM = dict(TINY, vocab_size=256, hidden_size=64, num_hidden_layers=4, num_attention_heads=4,
              intermediate_size=128, sliding_window_size=64, mini_batch_size=32, suffix_len=1)


def test_gil_released_during_eval():
    m = ttt.Model.init(MEDIUM, seed=1)
    ids = np.random.RandomState(0).randint(1, 256, size=3 * 1024 + 1)
    t0 = time.perf_counter()
    m.eval(ids)
    alone = time.perf_counter() - t0
    ticks = [0]
    done = threading.Event()

    def spin():
        while not done.is_set():
            ticks[0] += 1
            time.sleep(0.001)

    th = threading.Thread(target=spin)
    th.start()
    time.sleep(0.01)
    start_ticks = ticks[0]
    t0 = time.perf_counter()
    m.eval(ids)
    during = time.perf_counter() - t0
    counted = ticks[0] - start_ticks
    done.set()
    th.join()
    # With the GIL held the thread would tick about once; released, about once per millisecond.
    assert counted >= max(5, 0.2 * during / 0.002), (counted, during, alone)


def test_ctrl_c_stops_a_long_eval(tmp_path):
    script = textwrap.dedent(f"""
        import os, signal, threading, time, sys
        import numpy as np, ttt
        m = ttt.Model.init({MEDIUM!r}, seed=1)
        ids = np.random.RandomState(0).randint(1, 256, size=64 * 1024 + 1)
        threading.Timer(0.5, lambda: os.kill(os.getpid(), signal.SIGINT)).start()
        t0 = time.perf_counter()
        try:
            m.eval(ids)
            print("finished", time.perf_counter() - t0)
        except KeyboardInterrupt:
            print("interrupted", time.perf_counter() - t0)
        s = m.session()
        threading.Timer(0.5, lambda: os.kill(os.getpid(), signal.SIGINT)).start()
        t0 = time.perf_counter()
        try:
            s.feed(ids)
            print("finished", time.perf_counter() - t0)
        except KeyboardInterrupt:
            print("interrupted", time.perf_counter() - t0, s.position % 32)
    """)
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    lines = r.stdout.split("\n")
    assert r.returncode == 0, r.stderr
    assert lines[0].startswith("interrupted"), r.stdout
    assert float(lines[0].split()[1]) < 5.0, r.stdout
    assert lines[1].startswith("interrupted") and lines[1].split()[2] == "0", r.stdout  # at a chunk boundary


# ------------------------------------------------------------------------------------------------
# The example, end to end.

def test_example_runs(tmp_path, tokenizer_file):
    r = subprocess.run([sys.executable, str(ROOT / "examples" / "quickstart.py"), "--tokenizer", str(tokenizer_file)],
                       capture_output=True, text=True,
                       cwd=tmp_path, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "generated" in r.stdout and "loss" in r.stdout


# ------------------------------------------------------------------------------------------------
# ttt.import_checkpoint: with the orbax environment the import_orbax ctest makes (build/
# import-test-venv, made before this stage by ./test.sh); skipped without it.

def test_import_checkpoint_bit_for_bit(cli, work):
    py = ROOT / "build" / "import-test-venv" / "bin" / "python3"
    if not py.exists() or subprocess.run([str(py), "-c", "import orbax.checkpoint, tensorstore"],
                                         capture_output=True).returncode != 0:
        pytest.skip("no orbax environment (build/import-test-venv: ctest -R import_orbax makes it)")
    cfg = dict(TINY, num_hidden_layers=4, rope_theta=500000, bos_token_id=1, initializer_range=0.3)
    (work / "imp.json").write_text(json.dumps(cfg))
    cli("init", "--config", work / "imp.json", "--seed", 4, "--out", work / "imp_orig")
    r = subprocess.run([str(py), str(ROOT / "tests" / "orbax_write_checkpoint.py"), str(work / "imp_orig"),
                        str(work / "ckpt"), "5"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    m = ttt.import_checkpoint(work / "ckpt", work / "imp_py", config=work / "imp.json", python=str(py))
    assert (work / "imp_py" / "model.safetensors").read_bytes() == (work / "imp_orig" / "model.safetensors").read_bytes()
    assert m.config == ttt.Model.load(work / "imp_orig").config
    with pytest.raises(RuntimeError, match="already holds a model"):
        ttt.import_checkpoint(work / "ckpt", work / "imp_py", config=work / "imp.json", python=str(py))


def test_compute_bf16_equals_cli(cli, tiny_model, token_file):
    path, ids = token_file("cb.bin", 25, seed=13)
    r = cli("eval", "--model", tiny_model, "--tokens", path, "--compute", "bf16", check=False)
    if r.returncode != 0:  # a CPU without AVX512_BF16: both refuse
        assert "AVX512_BF16" in r.stderr
        with pytest.raises(ValueError, match="AVX512_BF16"):
            ttt.Model.load(tiny_model, compute="bf16")
        return
    loss, _ = ttt.Model.load(tiny_model, compute="bf16").eval(ids)
    assert r.stdout.strip() == "loss %.9g" % loss
    with pytest.raises(ValueError, match="compute must be"):
        ttt.Model.load(tiny_model, compute="fp8")


def test_bf16_window_cache_equals_cli(cli, tiny_model, token_file):
    path, ids = token_file("kv.bin", 25, seed=12)
    r = cli("eval", "--model", tiny_model, "--tokens", path, "--kv-dtype", "bf16")
    m = ttt.Model.load(tiny_model)
    loss, _ = m.eval(ids, kv_dtype="bf16")
    assert r.stdout.strip() == "loss %.9g" % loss
    s = m.session(kv_dtype="bf16")
    s.feed(ids[:10])
    assert s.position == 10
    with pytest.raises(ValueError, match="unknown kv dtype 'f16'"):
        m.session(kv_dtype="f16")
