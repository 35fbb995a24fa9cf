#!/usr/bin/env bash
# `ttt serve` against hostile networks (issue 25): raw-socket checks on loopback against the
# real server with a tiny model (tests/server_hostile_e2e.py). Bounded: about a minute.
#
#   tests/server_hostile_e2e_test.sh path/to/ttt
set -u
TTT="$(realpath "$1")"
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
d="$(mktemp -d)"
trap 'rm -rf "$d"' EXIT
cd "$d" || exit 1
cat "$ROOT"/README.md "$ROOT"/src/inference/*.h > corpus.txt
"$TTT" tokenizer train --input corpus.txt --vocab-size 320 --character-coverage 0.98 --out tok > /dev/null 2>&1 || { echo "FAIL: tokenizer train"; exit 1; }
cat > cfg.json <<'JSON'
{"vocab_size": 320, "hidden_size": 16, "num_hidden_layers": 3, "num_attention_heads": 2,
 "intermediate_size": 24, "seq_modeling_block": "SWA", "sliding_window_size": 6,
 "mini_batch_size": 4, "prime": true, "suffix_len": 2, "rope_theta": 10000,
 "bos_token_id": 0, "initializer_range": 0.2}
JSON
"$TTT" init --config cfg.json --seed 3 --out model > /dev/null || { echo "FAIL: init"; exit 1; }
cp tok.model model/tokenizer.model
ulimit -n 4096 2>/dev/null || true
timeout 600 python3 "$ROOT/tests/server_hostile_e2e.py" "$TTT" "$d/model" "$d"
