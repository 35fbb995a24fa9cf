#!/usr/bin/env bash
# kill -9 campaign: trains a small TTT-E2E model once without interruption and once under
# repeated SIGKILLs at random moments (restarted each time with --resume), then checks that the
# final weights, optimizer state and trainer state are byte-identical, that metrics.jsonl holds
# every step exactly once, and that no temporary files are left.
#
# Usage: [CKPT_EVERY=5] [KILL_MAX_MS=1500] scripts/kill_campaign.sh [KILLS (default 25)] [WORK_DIR (default /tmp/ttt_kill_campaign)]
# Needs build/ttt (scripts/build.sh release). Prints one line per kill and a summary.
set -euo pipefail
cd "$(dirname "$0")/.."
kills_wanted="${1:-25}"
work="${2:-/tmp/ttt_kill_campaign}"
TTT="$PWD/build/ttt"
[ -x "$TTT" ] || { echo "kill_campaign: build/ttt is missing (scripts/build.sh release)" >&2; exit 2; }
export TTT_NUM_THREADS="${TTT_NUM_THREADS:-1}"
rm -rf "$work" && mkdir -p "$work"

cat > "$work/cfg.json" <<'JSON'
{"vocab_size": 64, "hidden_size": 64, "num_hidden_layers": 4, "num_attention_heads": 4,
 "intermediate_size": 128, "seq_modeling_block": "SWA", "sliding_window_size": 32,
 "mini_batch_size": 16, "prime": true, "suffix_len": 1, "rope_theta": 10000,
 "bos_token_id": 0, "initializer_range": 0.05}
JSON
# Tokens: a noisy deterministic chain in documents of 100 (pure bash, no Python needed).
: > "$work/tokens.txt"
x=1; seed=12345
for i in $(seq 0 19999); do
  seed=$(( (seed * 1103515245 + 12345) % 2147483648 ))
  if (( i % 100 == 0 )); then t=0; elif (( seed % 10 == 0 )); then x=$(( 1 + seed % 63 )); t=$x; else x=$(( (3 * x + 1) % 63 + 1 )); t=$x; fi
  printf '%d\n' "$t" >> "$work/tokens.txt"
done
source tests/cli_lib.sh
mapfile -t ids < "$work/tokens.txt"
write_tokens "$work/tokens.bin" "${ids[@]}"

steps=1200
args=(--config "$work/cfg.json" --seed 7 --tokens "$work/tokens.bin" --steps "$steps" --seq-len 64 --batch 2
      --val-every 50 --val-seqs 2 --ckpt-every "${CKPT_EVERY:-5}" --quiet)

echo "kill_campaign: uninterrupted reference run ($steps steps)"
t0=$(date +%s.%N)
"$TTT" train "${args[@]}" --out "$work/ref" > /dev/null
t1=$(date +%s.%N)
ref_secs=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.1f", b - a }')
echo "kill_campaign: reference took ${ref_secs}s"

# Kill at uniformly random moments in [0, 1.5 s) after each start, so kills land in start-up,
# steps, validations and checkpoint writes alike while the run still advances between kills.
max_ms="${KILL_MAX_MS:-1500}"
kills=0 in_ckpt=0 runs=0
while true; do
  runs=$((runs + 1))
  "$TTT" train "${args[@]}" --out "$work/killed" --resume > /dev/null 2>> "$work/stderr.log" &
  pid=$!
  if [ "$kills" -lt "$kills_wanted" ]; then
    sleep "$(awk -v r="$RANDOM" -v m="$max_ms" 'BEGIN { printf "%.3f", r / 32768 * m / 1000 }')"
    if kill -0 "$pid" 2>/dev/null; then
      kill -9 "$pid" 2>/dev/null || true
      wait "$pid" 2>/dev/null || true
      kills=$((kills + 1))
      step=$(grep -o '"step": *[0-9]*' "$work/killed/checkpoint/trainer.json" 2>/dev/null | grep -o '[0-9]*$' || echo 0)
      during=""
      if compgen -G "$work/killed/checkpoint.tmp-*" > /dev/null || compgen -G "$work/killed/*.tmp.*" > /dev/null \
         || [ -e "$work/killed/checkpoint.old" ]; then during=" (during a checkpoint write)"; in_ckpt=$((in_ckpt + 1)); fi
      echo "kill $kills: checkpoint at step ${step:-0}$during"
      continue
    fi
  fi
  wait "$pid" || { echo "kill_campaign: FAIL: a resumed run failed; see $work/stderr.log" >&2; exit 1; }
  [ -e "$work/killed/checkpoint/trainer.json" ] && grep -q "\"step\": $steps" "$work/killed/checkpoint/trainer.json" && break
done

fail=0
for f in model.safetensors config.json checkpoint/model.safetensors checkpoint/optimizer.safetensors checkpoint/trainer.json; do
  if cmp -s "$work/ref/$f" "$work/killed/$f"; then echo "identical: $f"; else echo "DIFFERENT: $f"; fail=1; fi
done
# metrics.jsonl: steps 1..N exactly once each (the seconds and tokens/s columns differ by nature).
if [ "$(grep -o '"step":[0-9]*' "$work/killed/metrics.jsonl" | sort | uniq -d | wc -l)" != 0 ] ||
   [ "$(wc -l < "$work/killed/metrics.jsonl")" != "$steps" ]; then echo "DIFFERENT: metrics.jsonl steps"; fail=1; fi
strip() { sed -E 's/"(seconds|tokens_per_s)":[^,}]*,?//g' "$1"; }
if diff <(strip "$work/ref/metrics.jsonl") <(strip "$work/killed/metrics.jsonl") > /dev/null; then
  echo "identical: metrics.jsonl losses, learning rates, gradient norms, validation losses"
else echo "DIFFERENT: metrics.jsonl values"; fail=1; fi
leftovers=$(find "$work/killed" -name '*.tmp*' -o -name 'checkpoint.old' | wc -l)
[ "$leftovers" = 0 ] || { echo "DIFFERENT: $leftovers temporary files left"; fail=1; }
echo "kill_campaign: $kills kills ($in_ckpt during a checkpoint write) over $runs starts; weights byte-identical: $([ $fail = 0 ] && echo yes || echo NO)"
exit $fail
