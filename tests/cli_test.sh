#!/usr/bin/env bash
# End-to-end checks of the command-line contract (SPEC section 6) through the real `ttt` binary:
# init, eval (prefill, --no-ttt, --stream, --nll-out), grad, and one-line errors on bad input.
set -euo pipefail
TTT="$1"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }

source "$(dirname "$0")/cli_lib.sh"
write_tiny_config "$work/cfg.json"
"$TTT" init --config "$work/cfg.json" --seed 3 --out "$work/model" > /dev/null
[ -s "$work/model/config.json" ] && [ -s "$work/model/model.safetensors" ] || fail "init wrote no model"

ids=(); for i in $(seq 0 16); do ids+=($(( (i * 7 + 3) % 40 ))); done
write_tokens "$work/tok.bin" "${ids[@]}"          # 17 tokens: 16 inputs, 4 whole chunks

prefill=$("$TTT" eval --model "$work/model" --tokens "$work/tok.bin" --nll-out "$work/nll.bin")
stream=$("$TTT" eval --model "$work/model" --tokens "$work/tok.bin" --stream)
nottt=$("$TTT" eval --model "$work/model" --tokens "$work/tok.bin" --no-ttt)
[[ "$prefill" =~ ^loss\ [0-9.eE+-]+$ ]] || fail "eval output '$prefill'"
[ "$(stat -c %s "$work/nll.bin")" = 64 ] || fail "--nll-out should hold 16 float32 values"
awk -v a="${prefill#loss }" -v b="${stream#loss }" 'BEGIN { d = a - b; if (d < 0) d = -d; exit !(d < 1e-4) }' \
  || fail "--stream ($stream) differs from prefill ($prefill)"
[ "$prefill" != "$nottt" ] || fail "TTT made no difference"

# --compute bf16: bf16 x bf16 products where the CPU has AVX512_BF16 (close to float32), a
# one-line refusal where it has not.
if grep -q avx512_bf16 /proc/cpuinfo; then
  cb=$("$TTT" eval --model "$work/model" --tokens "$work/tok.bin" --compute bf16)
  awk -v a="${prefill#loss }" -v b="${cb#loss }" 'BEGIN { d = a - b; if (d < 0) d = -d; exit !(d < 0.05) }' \
    || fail "--compute bf16 ($cb) far from float32 ($prefill)"
  # The AVX512_BF16 kernel where the tile one (AMX) ran: the same rounding, only sums reordered.
  cb2=$(TTT_NO_AMX=1 "$TTT" eval --model "$work/model" --tokens "$work/tok.bin" --compute bf16)
  awk -v a="${cb#loss }" -v b="${cb2#loss }" 'BEGIN { d = a - b; if (d < 0) d = -d; exit !(d < 1e-4) }' \
    || fail "--compute bf16 with TTT_NO_AMX=1 ($cb2) differs from the default kernel ($cb)"
  [[ "$(TTT_NO_AMX=1 "$TTT" info)" == *"bf16 gemm    avx512_bf16"* ]] || fail "ttt info under TTT_NO_AMX=1"
else
  out=$("$TTT" eval --model "$work/model" --tokens "$work/tok.bin" --compute bf16 2>&1) && fail "--compute bf16 without AVX512_BF16 succeeded"
  [[ "$out" == *AVX512_BF16* ]] || fail "--compute bf16 refusal: $out"
fi
# OpenBLAS for every float32 product on request (the tiles' A/B switch), on any CPU.
[[ "$(TTT_NO_TILE_GEMM=1 "$TTT" info)" == *"f32 gemm     openblas"* ]] || fail "ttt info under TTT_NO_TILE_GEMM=1"

g=$("$TTT" grad --model "$work/model" --tokens "$work/tok.bin" --out "$work/g.safetensors")
[[ "$g" =~ ^loss\ [0-9.eE+-]+$ ]] && [ -s "$work/g.safetensors" ] || fail "grad output '$g'"

# Every sequence mixer through the same commands (SPEC section 9): the recurrent baselines, each
# hybrid with SWA, with a TTT-E2E suffix.
for block in mamba2 gated_deltanet ttt_kvb; do
  sed -e "s/\"seq_modeling_block\": \"SWA\"/\"seq_modeling_block\": \"$block\", \"swa_every\": 3, \"chunk_size\": 3, \"d_state\": 4, \"headdim\": 8, \"num_lact_heads\": 2, \"lact_chunk_size\": 5/" \
    "$work/cfg.json" > "$work/cfg_$block.json"
  "$TTT" init --config "$work/cfg_$block.json" --seed 3 --out "$work/m_$block" > /dev/null
  a=$("$TTT" eval --model "$work/m_$block" --tokens "$work/tok.bin" --nll-out "$work/nll_$block.bin")
  b=$("$TTT" eval --model "$work/m_$block" --tokens "$work/tok.bin" --stream)
  awk -v a="${a#loss }" -v b="${b#loss }" 'BEGIN { d = a - b; if (d < 0) d = -d; exit !(d < 1e-4) }' \
    || fail "$block: --stream ($b) differs from prefill ($a)"
  [ "$(stat -c %s "$work/nll_$block.bin")" = 64 ] || fail "$block: --nll-out size"
  "$TTT" grad --model "$work/m_$block" --tokens "$work/tok.bin" --out "$work/g_$block.safetensors" > /dev/null
  "$TTT" train --model "$work/m_$block" --tokens "$work/tok.bin" --val-fraction 0.5 --steps 2 --seq-len 4 --val-every 0 \
    --out "$work/t_$block" --quiet > /dev/null || fail "$block: train"
  "$TTT" generate --model "$work/m_$block" --prompt "1 2 3 4 5" --max-new-tokens 3 --state-out "$work/s_$block.st" > /dev/null
  "$TTT" generate --model "$work/m_$block" --prompt "6" --max-new-tokens 3 --state-in "$work/s_$block.st" > /dev/null \
    || fail "$block: generate from a saved state"
  echo "ok: $block: init, eval (prefill = --stream), grad, train, generate with state files"
done

# Bad input: a one-line message on stderr, non-zero exit, no crash.
expect_error() {
  local what="$1"; shift
  set +e
  err=$("$@" 2>&1 >/dev/null); rc=$?
  set -e
  [ $rc -ne 0 ] && [ $rc -lt 128 ] || fail "$what: exit code $rc"
  [ "$(printf '%s\n' "$err" | wc -l)" = 1 ] || fail "$what: message is not one line: $err"
  echo "ok: $what -> $err"
}
write_tokens "$work/oob.bin" 1 2 99 3
expect_error "token id out of range" "$TTT" eval --model "$work/model" --tokens "$work/oob.bin"
head -c 10 "$work/tok.bin" > "$work/trunc.bin"
expect_error "truncated token file" "$TTT" eval --model "$work/model" --tokens "$work/trunc.bin"
expect_error "missing model" "$TTT" eval --model "$work/none" --tokens "$work/tok.bin"
write_tokens "$work/odd.bin" 1 2 3 4 5 6
expect_error "T not a multiple of b for grad" "$TTT" grad --model "$work/model" --tokens "$work/odd.bin" --out "$work/x.safetensors"
[ ! -e "$work/x.safetensors" ] || fail "a failed grad wrote its output"
cp -r "$work/model" "$work/broken"
head -c 100 "$work/model/model.safetensors" > "$work/broken/model.safetensors"
expect_error "truncated checkpoint" "$TTT" eval --model "$work/broken" --tokens "$work/tok.bin"
printf 'XXXXXXXXXXXXXXXX' > "$work/broken/model.safetensors"
expect_error "wrong magic" "$TTT" eval --model "$work/broken" --tokens "$work/tok.bin"
sed 's/"hidden_size": 16/"hidden_size": 32/' "$work/cfg.json" > "$work/broken/config.json"
cp "$work/model/model.safetensors" "$work/broken/model.safetensors"
expect_error "shape does not match config" "$TTT" eval --model "$work/broken" --tokens "$work/tok.bin"
expect_error "unknown needle task" "$TTT" eval-needle --model "$work/model" --data "$work/none" --tasks passkey,haystack
expect_error "needle test without a corpus" "$TTT" eval-needle --model "$work/model" --data "$work/none"
expect_error "needle mix without a tokenizer" "$TTT" train --model "$work/model" --tokens "$work/tok.bin" --needle-mix 0.5 --steps 1 --out "$work/nt"
[ ! -e "$work/nt" ] || fail "a failed train wrote its output directory"
# The exact store with `ttt generate` (issue 13): it holds what the saved session read; recall
# without --state-out changes neither the state nor the store; a store of another session is refused.
doc=(); for i in $(seq 1 120); do doc+=($(( (i * 7) % 39 + 1 ))); done
write_tokens "$work/doc.bin" "${doc[@]}"
"$TTT" generate --model "$work/model" --prompt-tokens "$work/doc.bin" --max-new-tokens 2 --state-out "$work/doc.st" \
  --store "$work/doc.db" --store-span 8 > /dev/null
python3 -c "
import sqlite3, sys
ids = [r[0] for r in sqlite3.connect(sys.argv[1]).execute('SELECT id FROM tokens ORDER BY pos')]
assert len(ids) == 122 and ids[:120] == [int(x) for x in sys.argv[2:]], (len(ids), ids[:10])
" "$work/doc.db" "${doc[@]}" || fail "the store does not hold what the session read"
cp "$work/doc.st" "$work/doc0.st"; cp "$work/doc.db" "$work/doc0.db"
for mode in window review both; do
  "$TTT" generate --model "$work/model" --state-in "$work/doc.st" --prompt "8 15 22" --max-new-tokens 3 \
    --store "$work/doc.db" --store-span 8 --recall 2 --recall-mode $mode > /dev/null 2> "$work/recall.err" || fail "recall $mode failed"
  grep -q "recall: [1-9][0-9]* stretches" "$work/recall.err" || fail "recall $mode recalled nothing: $(cat "$work/recall.err")"
done
cmp -s "$work/doc.st" "$work/doc0.st" || fail "recall without --state-out changed the state"
python3 -c "
import sqlite3, sys
a = list(sqlite3.connect(sys.argv[1]).execute('SELECT pos, id FROM tokens ORDER BY pos'))
b = list(sqlite3.connect(sys.argv[2]).execute('SELECT pos, id FROM tokens ORDER BY pos'))
assert a == b
" "$work/doc.db" "$work/doc0.db" || fail "recall without --state-out changed the store"
expect_error "store of another session" "$TTT" generate --model "$work/model" --prompt "1 2" --store "$work/doc.db" --store-span 8
expect_error "recall without a store" "$TTT" generate --model "$work/model" --state-in "$work/doc.st" --prompt "1 2" --recall 2
expect_error "bad recall mode" "$TTT" generate --model "$work/model" --state-in "$work/doc.st" --prompt "1 2" --store "$work/doc.db" --store-span 8 --recall 2 --recall-mode magic
# bench context times the decode step that takes the TTT step apart: the 16-token context is
# whole chunks of 4, so the first decode step takes one (and every fourth after it).
ctx=$("$TTT" bench context --model "$work/model" --prefill-lengths 8 --decode-lengths 16 --decode-tokens 8)
row=$(printf '%s\n' "$ctx" | grep -E '^\| model \| 16 \|') || fail "bench context: no decode row in: $ctx"
awk -F'|' '{ exit !($4 + 0 > 0 && $7 + 0 > 0 && $8 + 0 > 0) }' <<< "$row" \
  || fail "bench context: the decode row lacks tokens/s, the TTT step or the per-chunk rate: $row"
echo "ok: bench context decode row: $row"
# bench profile --model: the workloads read the model given; those it cannot run are refused.
prof=$("$TTT" bench profile --model "$work/model" --workload prefill,decode --prefill-len 16 --decode-context 16 --decode-tokens 4)
[[ "$prof" == *"TTT-E2E decoding of 4 tokens after 16 ($work/model)"* ]] || fail "bench profile --model: $prof"
expect_error "bench profile --model with a bench-model workload" "$TTT" bench profile --model "$work/model" --workload prefill-swa
[[ "$err" == *"reads a built-in bench model"* ]] || fail "bench profile prefill-swa refusal: $err"
expect_error "bench profile --model: pretrain on a TTT-E2E model" "$TTT" bench profile --model "$work/model" --workload pretrain
[[ "$err" == *"has prime blocks (use meta)"* ]] || fail "bench profile pretrain refusal: $err"
expect_error "bench profile: meta with --compute bf16" "$TTT" bench profile --workload meta --compute bf16 --train-len 16
[[ "$err" == *"apply to prefill and decode only"* || "$err" == *AVX512_BF16* ]] || fail "bench profile meta --compute bf16 refusal: $err"
prof=$("$TTT" bench profile --model "$work/model" --workload prefill --prefill-len 16 --kv-dtype bf16)
[[ "$prof" == *"float32 products, bf16 window cache"* ]] || fail "bench profile --kv-dtype bf16: $prof"
echo "cli_test: all checks passed"
