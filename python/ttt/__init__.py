"""TTT-E2E (End-to-End Test-Time Training for long context): the C++ engine from Python.

The contract is SPEC section 10; README "Python" has the API table. The classes come from the
extension module ttt._ttt; this file adds the keyword front ends `train` and `import_checkpoint`.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from typing import Any, Callable, Mapping

from ._ttt import Model, Session, Tokenizer, num_threads, set_num_threads
from . import _ttt

__all__ = [
    "Model",
    "Session",
    "Tokenizer",
    "train",
    "import_checkpoint",
    "num_threads",
    "set_num_threads",
]
__version__ = "0.1.0"


def train(
    out: str | os.PathLike,
    config: Mapping[str, Any] | str | os.PathLike | None = None,
    model: str | os.PathLike | None = None,
    data: str | os.PathLike | None = None,
    tokens: str | os.PathLike | None = None,
    *,
    on_step: Callable[[dict], Any] | None = None,
    verbose: bool = False,
    **options: Any,
) -> dict:
    """`ttt train` with its options as keywords (steps=, seq_len=, batch=, lr=, ...).

    Give exactly one of `config` (a dict of config.json fields, or a path) and `model` (a model
    directory), and one of `data` (a corpus directory) and `tokens` (an int32 token file).
    Option names are the CLI's without dashes (--seq-len -> seq_len, --no-remat -> no_remat).
    `on_step(metrics)` sees each step's metrics.jsonl line as a dict (step, loss, lr, grad_norm,
    tokens_per_s, val_loss, ...): a progress bar is `bar = tqdm(total=steps)` and
    `on_step=lambda m: bar.update(1)`. If it raises, training stops before the next step and the
    exception comes back. `verbose=True` prints the CLI's progress on stderr. Ctrl-C stops before
    the next step (or chunk); the last checkpoint in `out` stays resumable (resume=True).
    Returns {"steps_done", "steps_skipped", "loss", "val_loss"}.
    """
    kw = dict(options)
    kw.update(out=os.fspath(out), model=None if model is None else os.fspath(model),
              data=None if data is None else os.fspath(data),
              tokens=None if tokens is None else os.fspath(tokens),
              on_step=on_step, quiet=not verbose)
    if config is None or isinstance(config, (str, os.PathLike)):
        kw["config"] = None if config is None else os.fspath(config)
        return _ttt._train(kw)
    if not isinstance(config, Mapping):
        raise ValueError(f"config: expected a dict or a path, got {type(config).__name__}")
    with tempfile.TemporaryDirectory(prefix="ttt-train-") as tmp:
        path = os.path.join(tmp, "config.json")
        with open(path, "w") as f:
            json.dump(dict(config), f)
        kw["config"] = path
        return _ttt._train(kw)


def import_checkpoint(
    source: str | os.PathLike,
    out: str | os.PathLike,
    size: str | None = None,
    config: str | os.PathLike | None = None,
    dtype: str = "f32",
    python: str | None = None,
) -> Model:
    """`ttt import`: an official orbax checkpoint (root, step directory or model_weights item)
    to a model directory of SPEC section 5; returns the loaded model.

    Give exactly one of `size` ("125m", "760m", "1b", "3b") and `config` (a config.json path).
    Reading orbax needs tensorstore: `python` is the interpreter that has it (default:
    $TTT_PYTHON, else this one; `scripts/install-deps.sh --import` makes .venv-import).
    """
    converter = os.path.join(os.path.dirname(__file__), "_orbax_import.py")
    python = python or os.environ.get("TTT_PYTHON") or sys.executable
    return _ttt._import_checkpoint(os.fspath(source), os.fspath(out), size or "",
                                   "" if config is None else os.fspath(config), dtype, python, converter)
