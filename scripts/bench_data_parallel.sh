#!/usr/bin/env bash
# Data-parallel training on this machine (issue 14, "Measure"): tokens/s of 1 rank x 2 threads
# against 2 ranks x 1 thread, for pretraining (SWA) and meta-learning (TTT-E2E) on the bench
# shape (V 4096, d 256, L 8, H 4, f 704, W 1024, b 256, S 2), and the seconds per step inside
# collectives; then scripts/dp_projection.py projects the scaling with those measurements.
#
#   scripts/bench_data_parallel.sh [BUILD_DIR] [OUT_DIR] [SEQ_LEN] [STEPS]
#
# Each run trains STEPS steps of a global batch of 4 sequences of SEQ_LEN tokens (defaults 2048
# and 4) from random weights on random tokens; the first step (warm-up) is left out of the means.
set -euo pipefail
BUILD=${1:-build}
OUT=${2:-runs/bench-data-parallel}
T=${3:-2048}
STEPS=${4:-4}
TTT="$(cd "$(dirname "$BUILD/ttt")" && pwd)/ttt"
mkdir -p "$OUT"
cd "$OUT"
for kind in swa ttt; do
  prime=""
  [ $kind = ttt ] && prime='"prime": true, "suffix_len": 2, "mini_batch_size": 256,'
  cat > $kind.json <<JSON
{"vocab_size": 4096, "hidden_size": 256, "num_hidden_layers": 8, "num_attention_heads": 4,
 "intermediate_size": 704, "seq_modeling_block": "SWA", "sliding_window_size": 1024, $prime
 "rope_theta": 10000, "bos_token_id": 0, "initializer_range": 0.02}
JSON
done
python3 -c "
import random, struct
random.seed(1)
n = 400000
open('tokens.bin', 'wb').write(struct.pack('<%di' % n, *[random.randrange(1, 4096) for _ in range(n)]))"
echo "load average at start: $(cut -d' ' -f1-3 /proc/loadavg); $(nproc) cores"
summary() {  # metrics.jsonl -> "tokens/s  seconds/step  comm seconds/step" (steps 2..)
  python3 -c "
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])][1:]
tok = sum(r['tokens_per_s'] for r in rows) / len(rows)
sec = sum(r['seconds'] for r in rows) / len(rows)
comm = sum(r.get('comm_seconds', 0.0) for r in rows) / len(rows)
print('%.0f %.3f %.4f' % (tok, sec, comm))" "$1"
}
MPI=(mpirun --allow-run-as-root --bind-to none)
echo "| workload | layout | tokens/s | s/step | comm s/step |"
echo "|---|---|---:|---:|---:|"
for kind in swa ttt; do
  args=(train --config $kind.json --seed 1 --tokens tokens.bin --val-fraction 0.01 --steps "$STEPS" --seq-len "$T" --batch 4
        --val-every 0 --ckpt-every 0 --quiet)
  rm -rf $kind-1x2 $kind-2x1
  TTT_NUM_THREADS=2 "$TTT" "${args[@]}" --out $kind-1x2 > /dev/null
  "${MPI[@]}" -np 2 -x TTT_NUM_THREADS=1 "$TTT" "${args[@]}" --out $kind-2x1 > /dev/null
  name=$([ $kind = swa ] && echo "pretraining (SWA)" || echo "meta-learning (TTT-E2E)")
  read -r a b c <<< "$(summary $kind-1x2/metrics.jsonl)"
  echo "| $name | 1 rank x 2 threads | $a | $b | - |"
  read -r a b c <<< "$(summary $kind-2x1/metrics.jsonl)"
  echo "| $name | 2 ranks x 1 thread | $a | $b | $c |"
done
echo "load average at end: $(cut -d' ' -f1-3 /proc/loadavg)"
