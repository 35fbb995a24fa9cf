#!/usr/bin/env bash
# Compares the outputs of two ttt binaries byte for byte: eval (prefill, --stream, NLLs), grad
# (rematerialized and not), generate with a seed, the session state files it writes and
# restores, and a short training run (weights, optimizer state, trainer state, losses and
# gradient norms), on a tiny model of every family: TTT-E2E, the SWA/full hybrid, full attention,
# SWA, Mamba 2, Gated DeltaNet and TTT-KVB. For refactors that must not change results: build the
# old commit elsewhere, then
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
echo "{$base, \"seq_modeling_block\": \"SWA\", \"sliding_window_size\": 6}" > swa.json
echo "{$base, \"seq_modeling_block\": \"mamba2\", \"sliding_window_size\": 6, \"swa_every\": 2, \"chunk_size\": 4, \"d_state\": 8, \"headdim\": 8}" > m2.json
echo "{$base, \"seq_modeling_block\": \"gated_deltanet\", \"sliding_window_size\": 6, \"swa_every\": 2, \"chunk_size\": 4}" > gdn.json
echo "{$base, \"seq_modeling_block\": \"ttt_kvb\", \"sliding_window_size\": 6, \"num_lact_heads\": 2, \"lact_chunk_size\": 8}" > kvb.json
# Losses and gradient norms of a metrics file (its timings vary from run to run).
losses() { sed -e 's/"seconds":[^,}]*,\?//' -e 's/"tokens_per_s":[^,}]*,\?//' "$1"; }
bad=0
for cfg in ttt hyb fa swa m2 gdn kvb; do
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
    $bin train --config $cfg.json --seed 5 --tokens tok64.bin --out t_${cfg}_$B --steps 3 --seq-len 16 --batch 2 > /dev/null 2>&1
    cp t_${cfg}_$B/model.safetensors tw_${cfg}_$B
    cp t_${cfg}_$B/checkpoint/optimizer.safetensors to_${cfg}_$B
    cp t_${cfg}_$B/checkpoint/trainer.json ts_${cfg}_$B
    losses t_${cfg}_$B/metrics.jsonl > tm_${cfg}_$B
  done
  for f in nll nlls g gn gen s gen2 s2 tw to ts tm; do
    if cmp -s ${f}_${cfg}_N ${f}_${cfg}_O; then :; else echo "DIFFERENT: $cfg $f"; bad=1; fi
  done
done
[ $bad = 0 ] && echo "bitcheck: all outputs identical (eval, --stream, grad, --no-remat, generate, state files, train; TTT-E2E, hybrid, full attention, SWA, Mamba 2, Gated DeltaNet, TTT-KVB)"
rm -rf $d
exit $bad
