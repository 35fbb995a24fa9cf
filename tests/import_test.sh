#!/usr/bin/env bash
# `ttt import` on checkpoints written by orbax itself (PyPI orbax-checkpoint) in the official
# layout (tests/orbax_write_checkpoint.py): the imported tensors equal the originals bit for bit
# and evaluate identically, --from takes the root, a step directory or the item directory, and a
# missing or unexpected array, a wrong suffix length or a non-checkpoint is a one-line error that
# writes nothing. Needs PyPI once (a venv under the build directory); without it: skipped (77).
set -euo pipefail
TTT="$(realpath "$1")"
HERE="$(cd "$(dirname "$0")" && pwd)"
VENV="$(dirname "$TTT")/import-test-venv"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }
source "$HERE/cli_lib.sh"

if ! "$VENV/bin/python3" -c "import orbax.checkpoint, tensorstore, numpy" 2>/dev/null; then
  rm -rf "$VENV"
  if ! { python3 -m venv "$VENV" && "$VENV/bin/python3" -m pip install -q --disable-pip-version-check \
           "orbax-checkpoint>=0.11" numpy; } > "$work/pip.log" 2>&1; then
    echo "SKIP: cannot install orbax-checkpoint from PyPI: $(tail -1 "$work/pip.log")"
    exit 77
  fi
fi
PY="$VENV/bin/python3"

# A tiny TTT-E2E model (BOS 1, untouched by the importer) in our layout, written as an official checkpoint.
cat > "$work/cfg.json" <<'JSON'
{"vocab_size": 40, "hidden_size": 16, "num_hidden_layers": 4, "num_attention_heads": 2,
 "intermediate_size": 24, "seq_modeling_block": "SWA", "sliding_window_size": 6,
 "mini_batch_size": 4, "prime": true, "suffix_len": 2, "rope_theta": 500000,
 "bos_token_id": 1, "initializer_range": 0.3}
JSON
"$TTT" init --config "$work/cfg.json" --seed 4 --out "$work/orig" > /dev/null
"$PY" "$HERE/orbax_write_checkpoint.py" "$work/orig" "$work/ckpt" 5 2> "$work/orbax.log" || fail "orbax save: $(tail -3 "$work/orbax.log")"
"$PY" "$HERE/orbax_write_checkpoint.py" "$work/orig" "$work/ckpt" 9 2>> "$work/orbax.log" || fail "orbax save (step 9)"
[ -f "$work/ckpt/9/model_weights/manifest.ocdbt" ] || fail "orbax wrote no OCDBT item: $(ls -R "$work/ckpt" | head)"

ids=(); for i in $(seq 0 32); do ids+=($(( i % 11 ? (i * 7 + 3) % 40 : 1 ))); done
write_tokens "$work/tok.bin" "${ids[@]}"
want=$("$TTT" eval --model "$work/orig" --tokens "$work/tok.bin")
for from in "$work/ckpt" "$work/ckpt/9" "$work/ckpt/9/model_weights"; do
  rm -rf "$work/imp"
  "$TTT" import --from "$from" --config "$work/cfg.json" --out "$work/imp" --python "$PY" > /dev/null 2>&1 \
    || fail "import --from $from: $("$TTT" import --from "$from" --config "$work/cfg.json" --out "$work/imp2" --python "$PY" 2>&1 | tail -1)"
  cmp -s "$work/orig/model.safetensors" "$work/imp/model.safetensors" || fail "--from $from: tensors differ from the original"
  got=$("$TTT" eval --model "$work/imp" --tokens "$work/tok.bin")
  [ "$got" = "$want" ] || fail "--from $from: eval '$got', original '$want'"
done
echo "ok: root, step and item directories import bit for bit ($want)"

expect_error() {  # expect_error WHAT PATTERN ARGS...: one-line error matching PATTERN, nothing written
  local what="$1" pat="$2"; shift 2
  rm -rf "$work/bad"
  set +e; err=$("$TTT" import "$@" --out "$work/bad" --python "$PY" 2>&1 >/dev/null | grep -v '^import: '); set -e
  [ "$(printf '%s\n' "$err" | wc -l)" = 1 ] || fail "$what: not one line: $err"
  grep -q -- "$pat" <<<"$err" || fail "$what: '$err' does not name '$pat'"
  [ ! -e "$work/bad/model.safetensors" ] || fail "$what: a model was written"
  echo "ok: $what -> $err"
}
"$PY" "$HERE/orbax_write_checkpoint.py" "$work/orig" "$work/extra" 1 --extra surprise 2>/dev/null
expect_error "unexpected array" "language_model.model.h.blocks.surprise.weight" --from "$work/extra" --config "$work/cfg.json"
"$PY" "$HERE/orbax_write_checkpoint.py" "$work/orig" "$work/drop" 1 --drop ffn_norm 2>/dev/null
expect_error "missing array" "missing array language_model.model.h.blocks.ffn_norm.weight" --from "$work/drop" --config "$work/cfg.json"
sed 's/"suffix_len": 2/"suffix_len": 1/' "$work/cfg.json" > "$work/cfg_s1.json"
expect_error "wrong suffix length" "leading axis of 1" --from "$work/ckpt" --config "$work/cfg_s1.json"
sed 's/"hidden_size": 16/"hidden_size": 32/' "$work/cfg.json" > "$work/cfg_d.json"
expect_error "wrong width" "shape" --from "$work/ckpt" --config "$work/cfg_d.json"
expect_error "not a checkpoint" "not an orbax checkpoint" --from "$work" --config "$work/cfg.json"
expect_error "unknown size" "official sizes" --from "$work/ckpt" --size 7b
mkdir -p "$work/exists" && cp "$work/orig/model.safetensors" "$work/exists/"
set +e; err=$("$TTT" import --from "$work/ckpt" --config "$work/cfg.json" --out "$work/exists" --python "$PY" 2>&1); set -e
grep -q "already holds a model" <<<"$err" && cmp -s "$work/orig/model.safetensors" "$work/exists/model.safetensors" \
  || fail "import over an existing model: $err"
echo "ok: an existing model is never overwritten"
