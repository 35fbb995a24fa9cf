# Fixtures of the Python package tests (scripts/python_test.sh runs them after `pip install .`
# in a fresh venv): the CLI binary to compare against, a tiny TTT-E2E model (the CLI contract's
# config), token files and a trained SentencePiece tokenizer.
import os

# The same thread count for the CLI and this process: results are bit-identical per count.
os.environ.setdefault("TTT_NUM_THREADS", "2")

import json
import pathlib
import subprocess

import numpy as np
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]

TINY = {"vocab_size": 40, "hidden_size": 16, "num_hidden_layers": 3, "num_attention_heads": 2,
        "intermediate_size": 24, "seq_modeling_block": "SWA", "sliding_window_size": 6,
        "mini_batch_size": 4, "prime": True, "suffix_len": 2, "rope_theta": 10000,
        "bos_token_id": 0, "initializer_range": 0.2}


@pytest.fixture(scope="session")
def cli():
    exe = pathlib.Path(os.environ.get("TTT_CLI", ROOT / "build" / "ttt"))
    if not exe.exists():
        pytest.fail(f"the CLI {exe} is missing: build it first (scripts/build.sh release) or set TTT_CLI")

    def run(*args, check=True):
        r = subprocess.run([str(exe), *map(str, args)], capture_output=True, text=True)
        if check and r.returncode != 0:
            raise AssertionError(f"ttt {' '.join(map(str, args))} failed: {r.stderr}")
        return r
    return run


@pytest.fixture(scope="session")
def work(tmp_path_factory):
    return tmp_path_factory.mktemp("ttt")


@pytest.fixture(scope="session")
def tiny_model(cli, work):
    cfg = work / "tiny.json"
    cfg.write_text(json.dumps(TINY))
    cli("init", "--config", cfg, "--seed", 3, "--out", work / "tiny")
    return work / "tiny"


@pytest.fixture(scope="session")
def token_file(work):
    def make(name, n, seed=0, vocab=40):
        ids = np.random.RandomState(seed).randint(1, vocab, size=n).astype("<i4")
        ids[0] = 0  # documents start with BOS
        path = work / name
        ids.tofile(path)
        return path, ids
    return make


@pytest.fixture(scope="session")
def tokenizer_file(cli, work):
    src = work / "text"
    src.mkdir()
    words = ["alpha", "beta", "gamma", "delta", "kernel", "memory", "window", "chunk", "token", "state"]
    rng = np.random.RandomState(1)
    for i in range(20):
        (src / f"f{i}.txt").write_text(" ".join(words[j] for j in rng.randint(0, len(words), 400)) + "\n")
    cli("tokenizer", "train", "--input", src, "--vocab-size", 300, "--out", work / "tok")
    return work / "tok.model"
