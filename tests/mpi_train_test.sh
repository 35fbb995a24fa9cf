#!/usr/bin/env bash
# Data-parallel training with real `mpirun` processes (issue 14): for pretraining (SWA) and
# meta-learning (TTT-E2E), 1, 2 and 4 ranks (4 oversubscribed) with the same global batch give
# bit-identical losses, weights and optimizer moments, with and without ZeRO-1; the ring
# reduction agrees within float tolerance; a run stopped on 2 ranks resumes on 4 and ends where
# the uninterrupted run ends; a rank killed with SIGKILL stops the job within a bounded time and
# the last checkpoint resumes. Skipped (77) without mpirun or when ttt was built without MPI.
set -euo pipefail
TTT="$1"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }
source "$(dirname "$0")/cli_lib.sh"

command -v mpirun > /dev/null || { echo "mpirun not installed: skipped"; exit 77; }
"$TTT" info | grep -q "^mpi .*MPI" || { echo "ttt built without MPI: skipped"; exit 77; }
# One thread per rank; no core binding (containers); root is allowed (CI runs as root).
MPI=(mpirun --allow-run-as-root --oversubscribe --bind-to none -x TTT_NUM_THREADS=1)

cd "$work"
write_tiny_config ttt.json
echo '{"vocab_size": 40, "hidden_size": 16, "num_hidden_layers": 3, "num_attention_heads": 2,
 "intermediate_size": 24, "seq_modeling_block": "SWA", "sliding_window_size": 6,
 "rope_theta": 10000, "bos_token_id": 0, "initializer_range": 0.2}' > swa.json
python3 -c "
import random, struct
random.seed(5)
open('tok.bin', 'wb').write(struct.pack('<6000i', *[random.randrange(1, 40) for _ in range(6000)]))"

# losses FILE: one line per step, the step's loss and validation loss as JSON writes them.
losses() { python3 -c "
import json, sys
for line in open(sys.argv[1]):
    j = json.loads(line)
    print(j['step'], repr(j['loss']), repr(j.get('val_loss')))" "$1"; }
same_run() {  # A B what: identical metrics losses, weights and optimizer moments
  [ "$(losses "$1/metrics.jsonl")" = "$(losses "$2/metrics.jsonl")" ] || { diff <(losses "$1/metrics.jsonl") <(losses "$2/metrics.jsonl") >&2 || true; fail "$3: losses differ"; }
  cmp -s "$1/model.safetensors" "$2/model.safetensors" || fail "$3: final weights differ"
  cmp -s "$1/checkpoint/optimizer.safetensors" "$2/checkpoint/optimizer.safetensors" || fail "$3: optimizer moments differ"
}

for kind in swa ttt; do
  common=(train --config "$kind.json" --seed 3 --tokens tok.bin --steps 6 --seq-len 8 --val-every 3 --ckpt-every 3 --quiet)
  args=("${common[@]}" --batch 4)
  "$TTT" "${args[@]}" --out "$kind-1" > /dev/null
  "${MPI[@]}" -np 2 "$TTT" "${args[@]}" --out "$kind-2" > /dev/null
  same_run "$kind-1" "$kind-2" "$kind, 1 vs 2 ranks"
  "${MPI[@]}" -np 4 "$TTT" "${args[@]}" --out "$kind-4" > /dev/null
  same_run "$kind-1" "$kind-4" "$kind, 1 vs 4 ranks"
  "${MPI[@]}" -np 2 "$TTT" "${args[@]}" --zero1 --out "$kind-2z" > /dev/null
  same_run "$kind-1" "$kind-2z" "$kind, 2 ranks with ZeRO-1"
  "${MPI[@]}" -np 4 "$TTT" "${args[@]}" --zero1 --out "$kind-4z" > /dev/null
  same_run "$kind-1" "$kind-4z" "$kind, 4 ranks with ZeRO-1"
  # The ring reduction adds in another order: equal within float32 rounding.
  "${MPI[@]}" -np 4 "$TTT" "${args[@]}" --allreduce ring --out "$kind-4r" > /dev/null
  python3 - "$kind-1/metrics.jsonl" "$kind-4r/metrics.jsonl" <<'PY' || fail "$kind: ring reduction disagrees"
import json, sys
a = [json.loads(l)["loss"] for l in open(sys.argv[1])]
b = [json.loads(l)["loss"] for l in open(sys.argv[2])]
assert len(a) == len(b) == 6, (len(a), len(b))
worst = max(abs(x - y) / abs(x) for x, y in zip(a, b))
assert worst < 1e-5, worst
PY
  # Stop after 3 steps on 2 ranks, resume on 4 (and with ZeRO-1): the uninterrupted run's end.
  "${MPI[@]}" -np 2 "$TTT" "${args[@]}" --stop-after 3 --out "$kind-resume" > /dev/null
  [ "$(wc -l < "$kind-resume/metrics.jsonl")" = 3 ] || fail "$kind: --stop-after 3 wrote $(wc -l < "$kind-resume/metrics.jsonl") steps"
  "${MPI[@]}" -np 4 "$TTT" "${args[@]}" --zero1 --resume --out "$kind-resume" > /dev/null
  same_run "$kind-1" "$kind-resume" "$kind, stopped on 2 ranks and resumed on 4 with ZeRO-1"
  # Rank-count mismatch and bad options fail on every rank with one message, never hang.
  if out=$(timeout 60 "${MPI[@]}" -np 4 "$TTT" "${common[@]}" --batch 2 --out "$kind-bad" 2>&1); then fail "batch < ranks accepted"; fi
  grep -q "smaller than the number of ranks" <<< "$out" || fail "batch < ranks: unexpected message: $out"
done

# A rank killed mid-run: the job stops within a bounded time with a message, the last
# checkpoint stays valid and the run resumes to the end.
args=(train --config ttt.json --seed 3 --tokens tok.bin --steps 100000 --seq-len 8 --batch 2 --val-every 0 --ckpt-every 5
      --comm-timeout 20 --quiet --out fault)
"${MPI[@]}" -np 2 "$TTT" "${args[@]}" > fault.log 2>&1 &
launcher=$!
for _ in $(seq 1 600); do
  [ -f fault/metrics.jsonl ] && [ "$(wc -l < fault/metrics.jsonl)" -ge 12 ] && break
  sleep 0.1
done
[ -f fault/checkpoint/trainer.json ] || fail "fault run wrote no checkpoint"
victim=""
for pid in $(pgrep -f "$work/fault|--out fault" || true); do
  tr '\0' '\n' < "/proc/$pid/environ" 2> /dev/null | grep -qx "OMPI_COMM_WORLD_RANK=1" && victim=$pid
done
[ -n "$victim" ] || fail "rank 1 not found"
kill -9 "$victim"
start=$(date +%s)
status=0
wait "$launcher" || status=$?
took=$(( $(date +%s) - start ))
[ "$status" != 0 ] || fail "the job exited 0 after a rank was killed"
[ "$took" -le 60 ] || fail "the job took $took s to stop after a rank was killed"
grep -q -i -E "killed|signal 9|exited|did not complete" fault.log || fail "no message about the dead rank: $(tail -5 fault.log)"
step=$(python3 -c "import json; print(json.load(open('fault/checkpoint/trainer.json'))['step'])")
[ "$step" -ge 5 ] || fail "checkpoint step $step"
resume=(train --config ttt.json --seed 3 --tokens tok.bin --steps 100000 --seq-len 8 --batch 2 --val-every 0 --ckpt-every 5
        --stop-after $((step + 2)) --quiet --resume --out fault)
"${MPI[@]}" -np 2 "$TTT" "${resume[@]}" > /dev/null || fail "resume after the fault failed"
[ "$(python3 -c "import json; print(json.load(open('fault/checkpoint/trainer.json'))['step'])")" = $((step + 2)) ] ||
  fail "resume after the fault did not reach step $((step + 2))"
echo "mpi_train: all checks passed (job stopped $took s after the kill)"
