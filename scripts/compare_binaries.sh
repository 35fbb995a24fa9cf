#!/usr/bin/env bash
# Compares the outputs of two ttt binaries byte for byte: eval (prefill, --stream, NLLs), grad
# (rematerialized and not), generate with a seed, and the session state files it writes and
# restores, and a 3-step train, on tiny TTT-E2E, hybrid, Mamba 2 and full-attention models. For refactors that must not
# change results: build the old commit elsewhere, then
#   scripts/compare_binaries.sh build/ttt /path/to/old/build/ttt
set -u
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
N=$(realpath "$1"); O=$(realpath "$2"); d=$(mktemp -d); cd "$d"
source "$ROOT/tests/cli_lib.sh"
ids=(); for i in $(seq 0 64); do ids+=($(( i % 20 ? (i * 7 + 3) % 40 : 0 ))); done
write_tokens tok64.bin "${ids[@]}"
base='"vocab_size": 40, "hidden_size": 16, "num_hidden_layers": 4, "num_attention_heads": 2, "intermediate_size": 24, "rope_theta": 10000, "bos_token_id": 0, "initializer_range": 0.2'
echo "{$base, \"seq_modeling_block\": \"SWA\", \"sliding_window_size\": 6, \"mini_batch_size\": 4, \"prime\": true, \"suffix_len\": 2}" > ttt.json
echo "{$base, \"seq_modeling_block\": \"SWA\", \"sliding_window_size\": 6, \"full_attention_every\": 2, \"mini_batch_size\": 4, \"prime\": true, \"suffix_len\": 2}" > hyb.json
echo "{$base, \"seq_modeling_block\": \"self_attention\"}" > fa.json
echo "{$base, \"seq_modeling_block\": \"mamba2\", \"headdim\": 8, \"d_state\": 8, \"mini_batch_size\": 4}" > mamba.json
bad=0
for cfg in ttt hyb fa mamba; do
  $N init --config $cfg.json --seed 5 --out m_$cfg > /dev/null || exit 1
  for B in N O; do
    bin=${!B}
    $bin eval --model m_$cfg --tokens tok64.bin --nll-out nll_${cfg}_$B > /dev/null
    $bin eval --model m_$cfg --tokens tok64.bin --stream --nll-out nlls_${cfg}_$B > /dev/null
    # Every chunk rebuilt (--graph-budget-mb 0; binaries before it rebuilt them by default).
    $bin grad --model m_$cfg --tokens tok64.bin --out g_${cfg}_$B --graph-budget-mb 0 > /dev/null
    $bin grad --model m_$cfg --tokens tok64.bin --out gn_${cfg}_$B --no-remat > /dev/null
    $bin generate --model m_$cfg --prompt "1 2 3 4 5 6 7 8 9" --max-new-tokens 20 --temperature 0.8 --seed 4 --state-out s_${cfg}_$B > gen_${cfg}_$B 2>/dev/null
    $bin generate --model m_$cfg --prompt "5 6 7" --max-new-tokens 9 --state-in s_${cfg}_$B --state-out s2_${cfg}_$B > gen2_${cfg}_$B 2>/dev/null
    $bin train --model m_$cfg --tokens tok64.bin --steps 3 --seq-len 16 --batch 2 --val-fraction 0.25 --val-every 0 \
      --out t_${cfg}_$B > /dev/null 2>&1
    cp t_${cfg}_$B/model.safetensors tw_${cfg}_$B 2>/dev/null
  done
  for f in nll nlls g gn gen s gen2 s2 tw; do
    if cmp -s ${f}_${cfg}_N ${f}_${cfg}_O; then :; else echo "DIFFERENT: $cfg $f"; bad=1; fi
  done
done
[ $bad = 0 ] && echo "bitcheck: all outputs identical (eval, --stream, grad, --no-remat, generate, state files, 3-step train; TTT-E2E, hybrid, full attention, Mamba 2)"
rm -rf $d
exit $bad
