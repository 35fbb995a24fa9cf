#!/usr/bin/env bash
# Side-by-side benchmark of this engine (build/ttt) against the official JAX code on XLA-CPU and
# PyTorch, each in its strongest variant, on the bench model shape (vocab 4096, d 256, 8 layers,
# 4 heads, f 704, suffix 2, W 1024, b 256). Issue 15, deliverable 5; issue 28, deliverable 4.
#
#   scripts/bench_compare.sh [--official PATH] [--venv DIR] [--repeats N] [--threads N]
#                            [--workloads LIST] [--jax-variants LIST] [--torch-variants LIST]
#                            [--quick] [--build DIR] [--out DIR] [--no-install] [--skip-check]
#                            [--mem-limit-gb G] [--timeout S]
#
#   --official PATH  a checkout of github test-time-training/e2e (without it the JAX column
#                    says "not run (give --official PATH)")
#   --venv DIR       Python venv for the peers (default runs/bench-compare/venv; runs/ is
#                    git-ignored). Created with Python >= 3.12 (the official code needs it; found
#                    as python3.13/3.12/python3 on PATH or under ~/.pyenv) and filled from PyPI:
#                    jax[cpu], jaxlib, equinox, optax, ... at the versions the official uv.lock
#                    pins, and torch (CPU wheels from the PyTorch CPU index when reachable, else
#                    PyPI's wheel)
#   --repeats N      best of N interleaved runs (default 3; --quick: 1)
#   --threads N      threads for all three (default 2): TTT_NUM_THREADS, torch.set_num_threads,
#                    XLA_FLAGS intra_op_parallelism_threads, OMP/MKL/OPENBLAS_NUM_THREADS
#   --workloads LIST comma list of swa-prefill-8k, full-prefill-8k, ttt-prefill-8k,
#                    ttt-prefill-32k, ttt-meta-grad-4k, swa-grad-4k, ttt-meta-grad-8k,
#                    swa-grad-8k (the default: all of these), full-prefill-32k,
#                    ttt-meta-grad-32k, swa-grad-32k (asked for only)
#   --jax-variants LIST    blocked,xla (default both): the attention the official code sends to
#                    cuDNN on GPUs as a blocked jax.numpy attention, or on XLA's implementation
#   --torch-variants LIST  eager,compile (default both): eager with the frozen-parameter prefill,
#                    or the same with torch.compile on the pieces around the attention
#   --quick          2K/4K lengths instead of 8K/32K, 2K/4K for the gradients, 1 repeat
#   --no-install     use the venv as it is
#   --skip-check     skip the correctness checks (every PyTorch variant against `ttt eval` /
#                    `ttt grad`, the JAX blocked attention against XLA's)
#   --mem-limit-gb G a peer worker above G GB resident is killed and its cell says so
#                    (default 60% of the available memory); --timeout S: seconds per call
#
# Prints two markdown tables (seconds, best of N; in parentheses peer / engine): each peer's
# fastest variant per workload, named, and every variant; writes them to OUT/compare.md (OUT:
# runs/bench-compare). scripts/bench_compare.py is the driver; its header says what is timed,
# how, and what was checked. Run it on a quiet machine (`nice` lowers only this script's
# priority: the timings are wall-clock).
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
OFFICIAL="" VENV="$ROOT/runs/bench-compare/venv" INSTALL=1
PY_ARGS=()
while [ $# -gt 0 ]; do
  case "$1" in
    --official) OFFICIAL="$(cd "$2" && pwd)"; PY_ARGS+=(--official "$OFFICIAL"); shift 2 ;;
    --venv) VENV="$2"; shift 2 ;;
    --no-install) INSTALL=0; shift ;;
    --repeats|--threads|--workloads|--jax-variants|--torch-variants|--build|--out|--mem-limit-gb|--timeout) PY_ARGS+=("$1" "$2"); shift 2 ;;
    --quick|--skip-check) PY_ARGS+=("$1"); shift ;;
    -h|--help) sed -n '2,41p' "$0"; exit 0 ;;
    *) echo "bench_compare.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done

find_python() {  # a Python >= 3.12 (PEP 695 generics in the official code)
  local c
  for c in python3.13 python3.12 python3; do
    if command -v "$c" > /dev/null && "$c" -c 'import sys; sys.exit(sys.version_info < (3, 12))' 2> /dev/null; then
      command -v "$c"; return 0
    fi
  done
  for c in /root/.pyenv/versions/3.1[2-9]*/bin/python3; do
    [ -x "$c" ] && { echo "$c"; return 0; }
  done
  return 1
}

# Pinned version of a package in the official uv.lock, or the fallback.
pin() {
  local name="$1" fallback="$2" v=""
  if [ -n "$OFFICIAL" ] && [ -f "$OFFICIAL/uv.lock" ]; then
    v=$(awk -v n="name = \"$name\"" '$0 == n {getline; if ($1 == "version") {gsub(/"/, "", $3); print $3; exit}}' "$OFFICIAL/uv.lock")
  fi
  echo "${v:-$fallback}"
}

if [ "$INSTALL" = 1 ]; then
  if [ ! -x "$VENV/bin/python" ]; then
    PY=$(find_python) || { echo "bench_compare.sh: needs Python >= 3.12 for the official code" >&2; exit 1; }
    echo "creating venv $VENV with $PY" >&2
    mkdir -p "$(dirname "$VENV")"
    "$PY" -m venv "$VENV"
  fi
  PIP=("$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --no-cache-dir)
  STAMP="$VENV/.bench-compare-installed"
  # The official code's CPU environment (its pyproject asks jax[cuda12]; the CPU build of the same
  # version computes the same). wandb is not installed: the driver stubs it (never called here).
  JAXPKGS=("jax[cpu]==$(pin jax 0.5.3)" "jaxlib==$(pin jaxlib 0.5.3)" "equinox==$(pin equinox 0.12.1)"
           "optax==$(pin optax 0.2.4)" "chex==$(pin chex 0.1.89)" "einops==$(pin einops 0.8.1)"
           "einx==$(pin einx 0.3.0)" "grain==$(pin grain 0.2.7)" "hydra-core==$(pin hydra-core 1.3.2)"
           "jaxtyping==$(pin jaxtyping 0.3.2)" "numpy==$(pin numpy 2.2.5)" "tqdm==$(pin tqdm 4.67.1)"
           "zarr==$(pin zarr 3.0.7)" numcodecs)
  WANT="${JAXPKGS[*]} torch"
  if [ ! -f "$STAMP" ] || [ "$(cat "$STAMP")" != "$WANT" ]; then
    echo "installing into $VENV: ${JAXPKGS[*]}" >&2
    "${PIP[@]}" "${JAXPKGS[@]}"
    if ! "$VENV/bin/python" -c 'import torch' 2> /dev/null; then
      echo "installing torch (CPU index if reachable, else PyPI)" >&2
      "${PIP[@]}" --index-url https://download.pytorch.org/whl/cpu torch 2> /dev/null ||
        "${PIP[@]}" torch
    fi
    echo "$WANT" > "$STAMP"
  fi
fi
[ -x "$VENV/bin/python" ] || { echo "bench_compare.sh: no venv at $VENV" >&2; exit 1; }
cd "$ROOT"
exec "$VENV/bin/python" "$ROOT/scripts/bench_compare.py" "${PY_ARGS[@]}"
