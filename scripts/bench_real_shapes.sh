#!/usr/bin/env bash
# Prefill, decode and memory of the official model shapes (issue 11, "Models of this size on
# this machine"): random weights in the official layout, float32 and bf16 weights.
#
#   scripts/bench_real_shapes.sh [BUILD_DIR] [OUT_DIR] [SIZES]
#
# BUILD_DIR defaults to build, OUT_DIR to runs/bench-real-shapes, SIZES to "125m" ("125m 1b" adds
# the 1B shape: about 6 GB of float32 weights and much longer runs). For each size it writes
# OUT_DIR/<size>-{f32,bf16}/ (model directories: `ttt init`, F32 and BF16 storage) and prints
#   - peak RSS of loading the model (`ttt eval` of 2 tokens, /usr/bin/time -v);
#   - `ttt bench context`: TTT prefill at 8K and 32K (tokens/s, MFU counting the inner steps'
#     FLOPs against the measured sgemm peak, the head's share), decode tokens/s after 100 and
#     after 8300 tokens (a full window; neither timed stretch crosses a TTT step), f32 and bf16;
#   - peak RSS of a 32K-token prefill (`ttt eval` of 32769 random tokens).
# Long: on 2 cores the 125M shape takes tens of minutes. Run it `nice`d on a shared machine and
# note the load average it prints.
set -euo pipefail
BUILD=${1:-build}
OUT=${2:-runs/bench-real-shapes}
SIZES=${3:-125m}
TTT="$BUILD/ttt"
mkdir -p "$OUT"

config() {  # size -> config.json of the official shape (model/presets.cpp)
  local L d H f S
  case "$1" in
    125m) L=12 d=768 H=12 f=1664 S=3 ;;
    1b) L=24 d=2048 H=32 f=4352 S=6 ;;
    *) echo "unknown size $1" >&2; exit 1 ;;
  esac
  cat <<JSON
{"vocab_size": 128256, "hidden_size": $d, "num_hidden_layers": $L, "num_attention_heads": $H,
 "intermediate_size": $f, "seq_modeling_block": "SWA", "sliding_window_size": 8192,
 "mini_batch_size": 1024, "prime": true, "suffix_len": $S, "rope_theta": 500000,
 "rms_norm_eps": 1e-6, "qk_norm": true, "pre_norm": true, "post_norm": true,
 "tie_word_embeddings": true, "bos_token_id": 128000, "initializer_range": 0.02}
JSON
}

tokens() {  # n path: n random token ids below 128000 (int32 little-endian)
  python3 -c "import random,struct,sys; random.seed(1); n=int(sys.argv[1]); sys.stdout.buffer.write(struct.pack('<%di' % n, *[random.randrange(128000) for _ in range(n)]))" "$1" > "$2"
}

peak_rss() {  # command... -> prints "peak RSS <MB>"
  /usr/bin/time -v "$@" 2> "$OUT/time.txt" > /dev/null || { cat "$OUT/time.txt" >&2; return 1; }
  awk '/Maximum resident set size/ {printf "%.0f MB\n", $6 / 1024}' "$OUT/time.txt"
}

echo "load average at start: $(cut -d' ' -f1-3 /proc/loadavg); $(nproc) cores"
"$TTT" info | head -5
tokens 2 "$OUT/t2.bin"
tokens 32769 "$OUT/t32k.bin"
for size in $SIZES; do
  config "$size" > "$OUT/$size.json"
  for st in f32 bf16; do
    [ -f "$OUT/$size-$st/model.safetensors" ] || "$TTT" init --config "$OUT/$size.json" --seed 1 --dtype "$st" --out "$OUT/$size-$st" > /dev/null
  done
  ls -l "$OUT/$size-f32/model.safetensors" "$OUT/$size-bf16/model.safetensors"
  echo "## $size: peak RSS of loading (ttt eval of 2 tokens)"
  echo "f32 file, f32 weights:   $(peak_rss "$TTT" eval --model "$OUT/$size-f32" --tokens "$OUT/t2.bin")"
  echo "bf16 file, f32 weights:  $(peak_rss "$TTT" eval --model "$OUT/$size-bf16" --weights f32 --tokens "$OUT/t2.bin")"
  echo "bf16 file, bf16 weights: $(peak_rss "$TTT" eval --model "$OUT/$size-bf16" --tokens "$OUT/t2.bin")"
  for w in f32 bf16; do
    echo "## $size, $w weights: ttt bench context"
    "$TTT" bench context --model "$OUT/$size-$w" --weights "$w" --prefill-lengths 8192,32768 \
      --decode-lengths 100,8300 --decode-tokens 16
    echo "## $size, $w weights: peak RSS of a 32K-token prefill"
    echo "$(peak_rss "$TTT" eval --model "$OUT/$size-$w" --weights "$w" --tokens "$OUT/t32k.bin")"
  done
done
echo "load average at end: $(cut -d' ' -f1-3 /proc/loadavg)"
