#!/usr/bin/env bash
# Every GPU check of the CUDA backend in one command, on a machine with one NVIDIA GPU, from a
# build made beforehand with nvcc and copied along (issue 27):
#
#   scripts/build.sh cuda            # here: build-cuda/ (ttt, tests/ttt_tests, lib/; -DTTT_CUDA=ON)
#   scripts/device_check.sh          # there, from the repository root; logs under $OUT if set
#
# With the device tool: run(command="scripts/device_check.sh", timeout_s=540,
#   carry=["build-cuda/ttt", "build-cuda/tests/ttt_tests", "build-cuda/lib"]) (about 30 MB).
#
# 1. the cross-backend op harness on CUDA against the CPU in float64 (every op: values, first
#    derivatives, Hessian-vector products; build-cuda/tests/ttt_tests --gtest_filter='BackendOps.*');
# 2. small models (a TTT-E2E hybrid and a SWA model), float32, --device cuda against --device cpu:
#    `ttt eval --nll-out` (NLL within 1e-4), `--stream` (within 1e-4 of the CPU, and decode =
#    prefill on the GPU), `ttt grad` (meta-gradient within 1e-4 relative per tensor) and a 3-step
#    `ttt train` (last loss within 1e-4; weights within a loose sanity bound, see below);
# 3. benchmarks on the bench shape (V 4096, d 256, L 8, H 4, f 704, W 1024, b 256; models made by
#    `ttt init` like scripts/bench_compare.py's): `ttt bench context --device cuda`, `ttt bench
#    train --device cuda`, PyTorch eager on the same GPU and weights (scripts/device_bench_torch.py
#    over scripts/bench_compare_torch.py), and the GPU's ceilings measured in the same run (bf16
#    and float32 matrix products, a device-to-device copy).
# Dry run without a GPU (checks this script, not the backend): DEVICE=cpu-checked PREFILL=512
# GRAD=512 scripts/device_check.sh (BUILD=build picks another build directory).
# Each step has a time limit, so the whole run stays within 8 minutes; a step that fails or runs
# out of time is reported as such and the rest goes on. Prints the summary tables last; exits 1
# if any check failed.
set -uo pipefail
cd "$(dirname "$0")/.."
BUILD="${BUILD:-build-cuda}"
TTT="$PWD/$BUILD/ttt"
TESTS="$PWD/$BUILD/tests/ttt_tests"
LOG="${OUT:-$(mktemp -d /tmp/device_check.XXXXXX)}"
mkdir -p "$LOG"
export LD_LIBRARY_PATH="/usr/local/cuda/lib64${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
PY="${PYTHON:-python3}"
DEV="${DEVICE:-cuda}"          # the device under test
PREFILL="${PREFILL:-8192,32768}"  # bench prefill lengths
GRAD="${GRAD:-8192}"              # bench gradient-step length
HERE="$PWD/scripts"
t_start=$SECONDS
checks=()  # "| check | result | detail |" rows
failed=0

note() { echo "[device_check $((SECONDS - t_start))s] $*" >&2; }
record() {  # record NAME STATUS DETAIL
  checks+=("| $1 | $2 | $3 |")
  [ "$2" = ok ] || failed=1
  note "$1: $2 $3"
}

[ -x "$TTT" ] || { echo "device_check: $TTT not found (make it with scripts/build.sh cuda and copy $BUILD along)" >&2; exit 2; }
# Shared libraries the GPU machine's image lacks come from $BUILD/lib (scripts/build.sh cuda).
if ldd "$TTT" "$TESTS" 2>/dev/null | grep -q "not found"; then
  export LD_LIBRARY_PATH="$LD_LIBRARY_PATH:$PWD/$BUILD/lib"
  missing=$(ldd "$TTT" "$TESTS" 2>/dev/null | grep "not found" | sort -u | tr -s ' \t\n' ' ')
  [ -z "$missing" ] || { echo "device_check: shared libraries not found: $missing" >&2; exit 2; }
fi
if command -v nvidia-smi > /dev/null; then
  { nvidia-smi -L; nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv; } > "$LOG/gpu.txt" 2>&1
else
  echo "no nvidia-smi on this machine" > "$LOG/gpu.txt"
fi
"$TTT" info > "$LOG/info.txt" 2>&1
if [ "$DEV" = cuda ] && ! grep -qE '^backend +cuda +built +devices: cuda:0' "$LOG/info.txt"; then
  cat "$LOG/info.txt" >&2
  echo "device_check: the CUDA backend sees no GPU (ttt info above)" >&2
  exit 2
fi

# ---- 1. the op harness
if [ -x "$TESTS" ]; then
  if timeout 150 "$TESTS" --gtest_filter='BackendOps.*' > "$LOG/backend_ops.log" 2>&1 &&
     grep -q "OK \] BackendOps.EveryOpOfEveryBackendMatchesTheCpuInFloat64" "$LOG/backend_ops.log"; then
    record "op harness (float64, every op vs CPU)" ok "$(grep -cE '^\[       OK \]' "$LOG/backend_ops.log") tests passed"
  else
    record "op harness (float64, every op vs CPU)" FAIL "see backend_ops.log: $(grep -E 'differ|error|Failure' "$LOG/backend_ops.log" | head -3 | tr '\n' ' ' | cut -c1-200)"
  fi
else
  record "op harness" FAIL "$TESTS missing (build with scripts/build.sh cuda: tests on)"
fi

# ---- 2. small models, cuda against cpu
W="$LOG/small"
mkdir -p "$W"
"$PY" - "$W/tok.bin" <<'PY'
import struct, sys
ids = [0 if i % 37 == 0 else (i * 7 + 3) % 61 + 1 for i in range(129)]
open(sys.argv[1], "wb").write(struct.pack("<%di" % len(ids), *ids))
PY
cat > "$W/ttt.json" <<'JSON'
{"vocab_size": 64, "hidden_size": 32, "num_hidden_layers": 4, "num_attention_heads": 2, "intermediate_size": 48,
 "rope_theta": 10000, "bos_token_id": 0, "initializer_range": 0.2, "seq_modeling_block": "SWA",
 "sliding_window_size": 24, "full_attention_every": 2, "mini_batch_size": 16, "prime": true, "suffix_len": 2}
JSON
cat > "$W/swa.json" <<'JSON'
{"vocab_size": 64, "hidden_size": 32, "num_hidden_layers": 3, "num_attention_heads": 2, "intermediate_size": 48,
 "rope_theta": 10000, "bos_token_id": 0, "initializer_range": 0.2, "seq_modeling_block": "SWA",
 "sliding_window_size": 24, "mini_batch_size": 16}
JSON
cmp_step() {  # cmp_step NAME MODE A B TOL
  local out
  if out=$("$PY" "$HERE/device_compare.py" "$2" "$3" "$4" "$5" 2>&1); then record "$1" ok "$out"; else record "$1" FAIL "$out"; fi
}
run() { timeout 60 "$@" 2>>"$W/stderr.log"; }
for m in ttt swa; do
  "$TTT" init --config "$W/$m.json" --seed 5 --out "$W/$m" > /dev/null 2>>"$W/stderr.log" || { record "$m: init" FAIL ""; continue; }
  for d in cpu "$DEV"; do
    p="$W/${m}_$d"
    run "$TTT" eval --device $d --model "$W/$m" --tokens "$W/tok.bin" --nll-out "$p.nll" > "$p.prefill" || echo "failed" > "$p.prefill"
    run "$TTT" eval --device $d --model "$W/$m" --tokens "$W/tok.bin" --stream > "$p.stream" || echo "failed" > "$p.stream"
    run "$TTT" grad --device $d --model "$W/$m" --tokens "$W/tok.bin" --out "$p.grad.safetensors" > "$p.gradloss" || rm -f "$p.grad.safetensors"
    run "$TTT" train --device $d --model "$W/$m" --tokens "$W/tok.bin" --steps 3 --seq-len 32 --batch 2 --val-fraction 0.25 \
      --val-every 0 --seed 2 --quiet --out "$p.train" > "$p.trainloss" || rm -rf "$p.train"
  done
  g="$W/${m}_$DEV" c="$W/${m}_cpu"
  cmp_step "$m: eval NLL $DEV vs cpu" nll "$g.nll" "$c.nll" 1e-4
  cmp_step "$m: --stream $DEV vs cpu" loss "$(cat "$g.stream")" "$(cat "$c.stream")" 1e-4
  cmp_step "$m: decode = prefill on $DEV" loss "$(cat "$g.stream")" "$(cat "$g.prefill")" 1e-4
  cmp_step "$m: grad $DEV vs cpu" tensors "$g.grad.safetensors" "$c.grad.safetensors" 1e-4
  cmp_step "$m: 3-step train loss $DEV vs cpu" metrics "$g.train/metrics.jsonl" "$c.train/metrics.jsonl" 1e-4
  # A sanity bound only: AdamW's first steps move each weight by about lr * sign(gradient), so a
  # gradient entry near zero whose float32 rounding differs between devices moves by up to 2 lr.
  cmp_step "$m: 3-step train weights $DEV vs cpu (sanity, 2e-2)" tensors "$g.train/model.safetensors" \
    "$c.train/model.safetensors" 2e-2
done

# ---- 3. benchmarks
B="$LOG/bench"
mkdir -p "$B/models"
for kind in ttt swa full; do
  "$PY" - "$B/models/$kind.json" "$kind" <<'PY'
import json, sys
cfg = {"vocab_size": 4096, "hidden_size": 256, "num_hidden_layers": 8, "num_attention_heads": 4,
       "intermediate_size": 704, "sliding_window_size": 1024, "mini_batch_size": 256, "bos_token_id": 0,
       "rope_theta": 500000.0, "rms_norm_eps": 1e-6, "initializer_range": 0.02,
       "seq_modeling_block": "self_attention" if sys.argv[2] == "full" else "SWA"}
if sys.argv[2] == "ttt":
    cfg.update(prime=True, suffix_len=2)
json.dump(cfg, open(sys.argv[1], "w"), sort_keys=True)
PY
  "$TTT" init --config "$B/models/$kind.json" --seed 1 --out "$B/models/$kind" > /dev/null
done
note "bench context (engine, $DEV)"
timeout 120 "$TTT" bench context --device "$DEV" --model "$B/models/ttt" --model "$B/models/swa" --model "$B/models/full" \
  --prefill-lengths "$PREFILL" --decode-lengths "${PREFILL%%,*}" --decode-tokens 64 --warm-up > "$B/context.md" \
  2> "$B/context.err" || record "ttt bench context --device $DEV" FAIL "exit $? (see bench/context.err)"
note "bench train (engine, $DEV)"
timeout 90 "$TTT" bench train --device "$DEV" --seq-len "$GRAD" --steps 1 > "$B/train.md" 2> "$B/train.err" \
  || record "ttt bench train --device $DEV" FAIL "exit $? (see bench/train.err)"
note "PyTorch eager on the GPU, and the ceilings"
timeout 150 "$PY" "$HERE/device_bench_torch.py" "$B/models" --prefill "$PREFILL" --grad "$GRAD" > "$B/torch.jsonl" \
  2> "$B/torch.err" || record "PyTorch eager benchmark" FAIL "exit $? (see bench/torch.err)"

# ---- summary: the tables last
"$PY" - "$B" "$((SECONDS - t_start))" "$(head -1 "$LOG/gpu.txt")" "$GRAD" "$DEV" > "$LOG/summary.md" <<'PY'
import json, os, re, sys
B, secs, gpu, grad_len, dev = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5]
def rows(path, ncols, section):
    """Rows of the Markdown table under the heading that starts with `section`."""
    out, inside = [], False
    for line in open(path) if os.path.exists(path) else []:
        if line.startswith("#"):
            inside = line.lstrip("#").strip().startswith(section)
            continue
        c = [x.strip() for x in line.strip().strip("|").split("|")]
        if inside and len(c) == ncols and not c[0].startswith("-") and c[0] != "model":
            out.append(c)
    return out
eng, decode = {}, []
for c in rows(os.path.join(B, "context.md"), 9, "prefill throughput"):  # model, context, seconds, ...
    eng[f"{c[0]}-prefill-{c[1]}"] = float(c[2])
decode = rows(os.path.join(B, "context.md"), 11, "decode speed")  # model, context, tokens/s, bound, of bound, ...
for c in rows(os.path.join(B, "train.md"), 7, "ttt bench train"):  # model, mode, s/step, ...
    kind = "ttt" if c[1] == "meta-learning" else "swa"
    eng[f"{kind}-grad-{grad_len}"] = float(c[2])
torch_s, ceil, versions = {}, [], ""
p = os.path.join(B, "torch.jsonl")
for line in open(p) if os.path.exists(p) else []:
    try:
        r = json.loads(line)
    except ValueError:
        continue
    if "versions" in r: versions = r["versions"]
    elif "ceiling" in r: ceil.append(r)
    elif "seconds" in r: torch_s[r["name"]] = r["seconds"]
    elif "error" in r: torch_s[r["name"]] = r["error"]
print(f"### CUDA benchmark ({gpu}; {versions}; bench shape V 4096 d 256 L 8 H 4 f 704 W 1024 b 256)\n")
print(f"| workload | ttt --device {dev} (s) | PyTorch eager, cuda (s) | PyTorch / ttt |\n|---|---:|---:|---:|")
names = sorted(set(eng) | set(torch_s), key=lambda n: (n.split("-")[1], int(n.split("-")[-1]), n))
for n in names:
    e, t = eng.get(n), torch_s.get(n)
    es = f"{e:.4f}" if isinstance(e, float) else "-"
    ts = f"{t:.4f}" if isinstance(t, float) else (t or "-")
    ratio = f"{t / e:.2f}x" if isinstance(e, float) and isinstance(t, float) and e > 0 else "-"
    print(f"| {n} | {es} | {ts} | {ratio} |")
if f"ttt-grad-{grad_len}" in eng and f"swa-grad-{grad_len}" in eng:
    r = eng[f"ttt-grad-{grad_len}"] / eng[f"swa-grad-{grad_len}"]
    print(f"\nmeta-learning step / pretraining step at {grad_len} tokens (engine): {r:.2f}x")
print("\n| ceiling (same GPU, same run) | value |\n|---|---:|")
for c in ceil:
    print(f"| {c['ceiling']} | {c['value']:.1f} {c['unit']} |")
if decode:
    print(f"\n| decode (engine, {dev}) | context | tokens/s | of the bound (CPU-measured bandwidth) |\n|---|---:|---:|---:|")
    for c in decode:
        print(f"| {c[0]} | {c[1]} | {c[2]} | {c[4]} |")
print(f"\n(the engine's full tables: bench/context.md, bench/train.md; the run took {secs} s)")
PY
{
  echo
  echo "### CUDA checks"
  echo
  echo "| check | result | detail |"
  echo "|---|---|---|"
  printf '%s\n' "${checks[@]}"
  echo
  cat "$LOG/summary.md"
} | tee "$LOG/device_check.md"
note "logs in $LOG"
exit $failed
