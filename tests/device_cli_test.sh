#!/usr/bin/env bash
# Whole commands on the second backend (`--device cpu-checked`: the CPU kernels over guarded,
# poisoned memory reached only through host copies) give the CPU's bytes: eval NLLs, grad,
# seeded generate with its state file, and a 3-step train. Bad --device values are one-line errors.
set -u
TTT="$1"
source "$(dirname "$0")/cli_lib.sh"
fail() { echo "FAIL: $*" >&2; exit 1; }
# expect_error WHAT CMD...: CMD fails with exactly one line on stderr.
expect_error() {
  local what="$1"; shift
  local err; err=$("$@" 2>&1 >/dev/null) && fail "$what: succeeded"
  [ "$(printf '%s\n' "$err" | wc -l)" = 1 ] || fail "$what: not one line: $err"
}
work=$(mktemp -d); trap 'rm -rf "$work"' EXIT; cd "$work"
ids=(); for i in $(seq 0 64); do ids+=($(( i % 20 ? (i * 7 + 3) % 40 : 0 ))); done
write_tokens tok.bin "${ids[@]}"
echo '{"vocab_size": 40, "hidden_size": 16, "num_hidden_layers": 4, "num_attention_heads": 2, "intermediate_size": 24, "rope_theta": 10000, "bos_token_id": 0, "initializer_range": 0.2, "seq_modeling_block": "SWA", "sliding_window_size": 6, "full_attention_every": 2, "mini_batch_size": 4, "prime": true, "suffix_len": 2}' > c.json
"$TTT" init --config c.json --seed 5 --out m > /dev/null || fail "init"
for d in cpu cpu-checked; do
  "$TTT" eval --device $d --model m --tokens tok.bin --nll-out nll_$d > /dev/null || fail "eval --device $d"
  "$TTT" grad --device $d --model m --tokens tok.bin --out g_$d > /dev/null || fail "grad --device $d"
  "$TTT" generate --device $d --model m --prompt "1 2 3 4 5 6 7 8 9" --max-new-tokens 12 --temperature 0.8 --seed 4 \
    --state-out s_$d > gen_$d 2>/dev/null || fail "generate --device $d"
  "$TTT" train --device $d --model m --tokens tok.bin --steps 3 --seq-len 16 --batch 2 --val-fraction 0.25 \
    --val-every 0 --out t_$d > /dev/null 2>&1 || fail "train --device $d"
done
for f in nll g gen s; do cmp -s ${f}_cpu ${f}_cpu-checked || fail "cpu-checked differs from cpu: $f"; done
cmp -s t_cpu/model.safetensors t_cpu-checked/model.safetensors || fail "cpu-checked differs from cpu: train"
expect_error "unknown device" "$TTT" eval --device gpu7 --model m --tokens tok.bin
expect_error "not built" "$TTT" eval --device cuda --model m --tokens tok.bin
expect_error "cpu device only" "$TTT" bench profile --device cpu-checked
echo "device_cli: cpu-checked equals cpu byte for byte (eval, grad, generate, state, train); bad devices refused"
