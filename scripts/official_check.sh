#!/usr/bin/env bash
# Equivalence with the official TTT-E2E code, once, by hand (it needs a checkout of
# github test-time-training/e2e and its pinned Python environment, which CI cannot fetch):
#   scripts/official_check.sh E2E_REPO PYTHON [OUT_DIR]
# PYTHON: a Python 3.12 with the official code's pins (jax 0.5.3, equinox 0.12.1, optax 0.2.4,
# orbax-checkpoint 0.11.13, hydra-core, grain; `uv sync` in the checkout makes one). The official
# code builds and saves a small TTT-E2E model with its own Checkpointer and evaluates one
# sequence with test-time training (scripts/official_check.py, float32 compute); then `ttt
# import` reads that checkpoint and `ttt eval --nll-out` scores the same tokens. Prints the
# largest per-token NLL difference; exits 1 above 1e-4.
set -euo pipefail
REPO="$1"; PY="$2"; OUT="${3:-runs/official-check}"
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
TTT="$ROOT/build/ttt"
mkdir -p "$OUT"
"$PY" "$ROOT/scripts/official_check.py" "$REPO" "$OUT" 2> "$OUT/official.log" | tail -1
rm -rf "$OUT/model"
"$TTT" import --from "$OUT/ckpt" --config "$OUT/config.json" --out "$OUT/model" --python "$PY" 2>/dev/null
"$TTT" eval --model "$OUT/model" --tokens "$OUT/tokens.bin" --nll-out "$OUT/ours_nll.f32"
"$PY" - "$OUT/official_nll.f32" "$OUT/ours_nll.f32" <<'PYEOF'
import sys, numpy as np
a, b = np.fromfile(sys.argv[1], "<f4"), np.fromfile(sys.argv[2], "<f4")
assert a.shape == b.shape, (a.shape, b.shape)
d = float(np.max(np.abs(a.astype(np.float64) - b)))
print(f"{a.size} positions: max |dNLL| = {d:.3g} (official mean {a.mean():.6f}, ours {b.mean():.6f})")
sys.exit(0 if d <= 1e-4 else 1)
PYEOF
