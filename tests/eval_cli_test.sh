#!/usr/bin/env bash
# The evaluation commands end to end through the real binary, on every model type (SPEC
# section 9): a synthetic source tree becomes a tokenizer and a corpus, then `ttt eval-long`,
# `ttt probe` and `ttt eval-needle` read it with TTT-E2E, full attention, the SWA/full hybrid,
# Mamba 2, Gated DeltaNet and TTT-KVB models. Checks: every model gets a row with a loss and
# its 95% interval, the plots and records are written, the needle records cover every case, and
# TTT-E2E read with its inner steps off (--ttt-off-too) is its own row.
set -euo pipefail
TTT="$(realpath "$1")"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }

# A source tree: C-like files grouped by directory into documents, long enough for the
# long-context tables (held-out documents of at least 600 tokens).
for d in $(seq 1 12); do
  mkdir -p "$work/src/dir$d"
  for f in 1 2 3; do
    {
      for i in $(seq 1 $((20 + d * 3))); do
        printf 'static int probe_%d_%d(struct device *dev)\n{\n\treturn dev->id + %d;\n}\n' "$d" "$i" $((i * 37 % 1000))
      done
    } > "$work/src/dir$d/file$f.c"
  done
done
"$TTT" tokenizer train --input "$work/src" --vocab-size 320 --out "$work/tok" > /dev/null 2>&1 || fail "tokenizer train"
"$TTT" data build --source "$work/src" --tokenizer "$work/tok.model" --out "$work/corpus" --val-fraction 0.5 \
  --min-val-doc-tokens 600 --quiet > /dev/null || fail "data build"
info=$("$TTT" data info "$work/corpus")
grep -q "val-long" <<<"$info" || fail "data info: $info"
vocab=$(sed -n 's/.*"vocab_size": *\([0-9]*\).*/\1/p' "$work/corpus/index.json" | head -1)
[ -n "$vocab" ] || fail "no vocab_size in the corpus index"

base="\"vocab_size\": $vocab, \"hidden_size\": 16, \"num_hidden_layers\": 4, \"num_attention_heads\": 2, \"intermediate_size\": 24, \"sliding_window_size\": 32, \"mini_batch_size\": 16, \"rope_theta\": 10000, \"bos_token_id\": 0, \"initializer_range\": 0.05"
declare -A cfgs=(
  [ttt-e2e]="\"seq_modeling_block\": \"SWA\", \"prime\": true, \"suffix_len\": 1"
  [full]="\"seq_modeling_block\": \"self_attention\""
  [hybrid]="\"seq_modeling_block\": \"SWA\", \"full_attention_every\": 4"
  [mamba2]="\"seq_modeling_block\": \"mamba2\", \"swa_every\": 4, \"chunk_size\": 16, \"d_state\": 8, \"headdim\": 8"
  [gdn]="\"seq_modeling_block\": \"gated_deltanet\", \"swa_every\": 4, \"chunk_size\": 16"
  [kvb]="\"seq_modeling_block\": \"ttt_kvb\", \"num_lact_heads\": 2, \"lact_chunk_size\": 32"
)
models=()
for name in ttt-e2e full hybrid mamba2 gdn kvb; do
  echo "{$base, ${cfgs[$name]}}" > "$work/$name.json"
  "$TTT" init --config "$work/$name.json" --seed 2 --out "$work/$name" > /dev/null || fail "init $name"
  models+=("$work/$name")
done
row_ok() {  # row_ok TEXT MODEL: a table row for MODEL with a number and a [lo, hi] interval
  grep -E "^\| $2 \| [0-9.]+ \[[0-9.]+, [0-9.]+\]" <<<"$1" > /dev/null
}

out=$("$TTT" eval-long --model "${models[@]}" --data "$work/corpus" --lengths 64,128,256 --docs 3 --out "$work/el" 2>/dev/null) \
  || fail "eval-long"
for name in ttt-e2e full hybrid mamba2 gdn kvb; do row_ok "$out" "$name" || fail "eval-long: no row with an interval for $name: $out"; done
[ -s "$work/el/loss_vs_context.png" ] && [ -s "$work/el/loss_vs_position.png" ] || fail "eval-long: plots missing"
echo "ok: eval-long on every model type, with intervals and plots"

# --kv-dtype bf16 reaches eval-long (that it changes the curve is KvCache.PositionCurveReadsWithTheBf16Cache's
# check): every model still gets its row, and no loss moves far from float32.
first_loss() { grep -E "^\| $2 \|" <<<"$1" | head -1 | awk -F'|' '{ split($3, a, " "); print a[1] }'; }
out_bf=$("$TTT" eval-long --model "$work/ttt-e2e" "$work/full" --data "$work/corpus" --lengths 64,128,256 --docs 3 \
  --kv-dtype bf16 2>/dev/null) || fail "eval-long --kv-dtype bf16"
for name in ttt-e2e full; do
  a=$(first_loss "$out" "$name"); b=$(first_loss "$out_bf" "$name")
  [ -n "$a" ] && [ -n "$b" ] || fail "eval-long --kv-dtype bf16: no loss for $name: $out_bf"
  awk -v a="$a" -v b="$b" 'BEGIN { d = a - b; if (d < 0) d = -d; exit !(d < 0.05) }' \
    || fail "eval-long --kv-dtype bf16: $name $b far from float32 $a"
done
echo "ok: eval-long --kv-dtype bf16 close to float32 (ttt-e2e: $(first_loss "$out" ttt-e2e) vs $(first_loss "$out_bf" ttt-e2e))"

out=$("$TTT" probe --model "${models[@]}" --data "$work/corpus" --gaps 16,64 --span 8 --trials 3 2>/dev/null) || fail "probe"
for name in ttt-e2e full hybrid mamba2 gdn kvb; do
  grep -E "^\| $name \| [0-9.]+ \[" <<<"$out" > /dev/null || fail "probe: no row for $name: $out"
done
echo "ok: probe on every model type"

out=$("$TTT" eval-needle --model "${models[@]}" --data "$work/corpus" --tasks passkey,number --lengths 400,600 --depths 2 \
  --trials 1 --ttt-off-too --records "$work/needle.jsonl" --out "$work/needle" 2>/dev/null) || fail "eval-needle"
for name in ttt-e2e full hybrid mamba2 gdn kvb "ttt-e2e \(TTT off\)"; do
  grep -E "^\| $name \| [0-9.]+ \[" <<<"$out" > /dev/null || fail "eval-needle: no row for $name: $out"
done
# 7 models (six plus the ablation) x 2 tasks x 2 lengths x 2 depths x 1 trial.
[ "$(wc -l < "$work/needle.jsonl")" = 56 ] || fail "eval-needle: $(wc -l < "$work/needle.jsonl") records, expected 56"
[ -s "$work/needle/needle_accuracy.png" ] || fail "eval-needle: plot missing"
echo "ok: eval-needle on every model type, the TTT-off ablation included, every case recorded"
