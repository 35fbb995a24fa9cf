#!/usr/bin/env bash
# Hostile input and faults through the real `ttt` binary (issue 9): crafted corpus indexes,
# training state, weights and session files; FIFOs and devices where files are expected; links
# and device nodes as outputs; non-finite numbers; leftovers of killed runs. Every case must end
# in a one-line `ttt: error:` and a clean exit code 1 (no signal, no hang), or in correct output.
set -euo pipefail
TTT="$1"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }
T() { timeout 60 "$TTT" "$@"; }  # a hang is a failure, not a stalled suite

source "$(dirname "$0")/cli_lib.sh"
header_len() { od -An -tu8 -N8 "$1" | tr -d ' '; }

expect_error() {
  local what="$1" want="$2"; shift 2
  set +e
  err=$("$@" 2>&1 >/dev/null); rc=$?
  set -e
  [ $rc -eq 1 ] || fail "$what: exit code $rc (124: hang, >128: signal); output: $err"
  [ "$(printf '%s\n' "$err" | wc -l)" = 1 ] || fail "$what: message is not one line: $err"
  [[ "$err" == "ttt: error: "* ]] || fail "$what: not a ttt error: $err"
  [[ "$err" == *"$want"* ]] || fail "$what: message lacks '$want': $err"
  echo "ok: $what -> $err"
}

write_tiny_config "$work/cfg.json"
T init --config "$work/cfg.json" --seed 3 --out "$work/model" > /dev/null
ids=(); for i in $(seq 0 16); do ids+=($(( (i * 7 + 3) % 40 ))); done
write_tokens "$work/tok.bin" "${ids[@]}"
train_ids=(); for i in $(seq 0 599); do train_ids+=($(( i % 60 == 0 ? 0 : 1 + (i * 7) % 39 ))); done
write_tokens "$work/train.bin" "${train_ids[@]}"

# 1. Corpus index: overflowing document bounds, wrapped shard sizes, truncated vocab, float version.
mkdir -p "$work/corpus"
write_tokens "$work/corpus/train-00000.bin" 0 1 2 3 4 5 6 7
cp "$work/corpus/train-00000.bin" "$work/corpus/val-00000.bin"
cp "$work/corpus/train-00000.bin" "$work/corpus/val-long-00000.bin"
corpus_index() {  # $1: train document entry, $2: train shard tokens, $3: vocab, $4: version
  local split='"shards":[{"file":"%s-00000.bin","tokens":8,"checksum":"0000000000000000"}],"tokens":8,"documents":[["d",0,0,8,1]]'
  printf '{"format":"ttt-corpus","version":%s,"tokenizer":{"vocab_size":%s,"bos_id":0},"splits":{' "$4" "$3"
  printf '"train":{"shards":[{"file":"train-00000.bin","tokens":%s,"checksum":"0000000000000000"}],"tokens":%s,"documents":[%s]},' "$2" "$2" "$1"
  printf "\"val\":{$split},\"val-long\":{$split}}}" val val-long
}
corpus_index '["d",0,0,8,1]' 8 40 1 > "$work/corpus/index.json"
T data info "$work/corpus" --no-verify > /dev/null || fail "the hand-made corpus does not open"
corpus_index '["d",0,4,9223372036854775807,1]' 8 40 1 > "$work/corpus/index.json"
expect_error "document offset + length overflows int64" "length" T data info "$work/corpus" --no-verify
corpus_index '["d",0,9223372036854775800,20,1]' 8 40 1 > "$work/corpus/index.json"
expect_error "document offset near int64 max" "offset" T data info "$work/corpus" --no-verify
cp -r "$work/corpus" "$work/corpus1" && write_tokens "$work/corpus1/train-00000.bin" 0  # 4 bytes = (2^62 + 1) x 4 mod 2^64
corpus_index '["d",0,0,8,1]' 4611686018427387905 40 1 > "$work/corpus1/index.json"
expect_error "shard token count whose byte size wraps" "out of range" T data info "$work/corpus1" --no-verify
corpus_index '["d",0,0,8,1]' 8 1099511628288 1 > "$work/corpus/index.json"
expect_error "vocab_size 2^40 + 512" "vocab_size" T data info "$work/corpus" --no-verify
corpus_index '["d",0,0,8,1]' 8 40 1e30 > "$work/corpus/index.json"
expect_error "version 1e30" "format version" T data info "$work/corpus" --no-verify
corpus_index '["evil\nname\u001b[2J",0,4,8,1]' 8 40 1 > "$work/corpus/index.json"
expect_error "control characters in a document name" "evil name" T data info "$work/corpus" --no-verify
corpus_index '["d",0,0,8,1]' 8 40 1 > "$work/corpus/index.json"
rm "$work/corpus/val-00000.bin" && mkfifo "$work/corpus/val-00000.bin"
expect_error "a FIFO as a shard" "not a regular file" T data info "$work/corpus" --no-verify

# 2 and 6. trainer.json: deep nesting, steps out of range.
T train --model "$work/model" --tokens "$work/train.bin" --out "$work/run" --steps 4 --seq-len 8 \
  --val-every 0 --stop-after 2 --quiet > /dev/null
cp "$work/run/checkpoint/trainer.json" "$work/trainer.good"
# The nesting sits in "batch", the first option compared (the old check dumped it recursively).
{ printf '{"format":"ttt-train-checkpoint","version":1,"step":1,"optimizer_steps":1,"data_state":"0 1","options":{"batch":'
  head -c 300000 /dev/zero | tr '\0' '['; head -c 300000 /dev/zero | tr '\0' ']'; printf '}}'; } > "$work/run/checkpoint/trainer.json"
expect_error "deeply nested trainer.json" "nested deeper" T train --model "$work/model" --tokens "$work/train.bin" \
  --out "$work/run" --steps 4 --seq-len 8 --val-every 0 --resume --quiet
sed 's/"step": 2/"step": -5/' "$work/trainer.good" > "$work/run/checkpoint/trainer.json"
expect_error "trainer.json step -5" "out of range [0, 4]" T train --model "$work/model" --tokens "$work/train.bin" \
  --out "$work/run" --steps 4 --seq-len 8 --val-every 0 --resume --quiet
sed 's/"step": 2/"step": 1000000000000/' "$work/trainer.good" > "$work/run/checkpoint/trainer.json"
expect_error "trainer.json step 10^12" "out of range [0, 4]" T train --model "$work/model" --tokens "$work/train.bin" \
  --out "$work/run" --steps 4 --seq-len 8 --val-every 0 --resume --quiet
cp "$work/trainer.good" "$work/run/checkpoint/trainer.json"

# 3. A config nested 100,000 deep is refused quickly.
{ printf '{"vocab_size":'; head -c 100000 /dev/zero | tr '\0' '['; head -c 100000 /dev/zero | tr '\0' ']'; printf '}'; } > "$work/deep.json"
expect_error "deeply nested config" "nested deeper" T init --config "$work/deep.json" --seed 1 --out "$work/deep"

# 4. FIFOs and endless devices where files are expected.
mkfifo "$work/fifo"
expect_error "FIFO as token file" "FIFO" T eval --model "$work/model" --tokens "$work/fifo"
expect_error "/dev/zero as token file" "character device" T eval --model "$work/model" --tokens /dev/zero
expect_error "/dev/zero as config" "character device" T init --config /dev/zero --seed 1 --out "$work/z"
cp -r "$work/model" "$work/fifomodel" && rm "$work/fifomodel/model.safetensors" && mkfifo "$work/fifomodel/model.safetensors"
expect_error "FIFO as model weights" "FIFO" T eval --model "$work/fifomodel" --tokens "$work/tok.bin"
expect_error "FIFO as session state" "FIFO" T generate --model "$work/model" --prompt "1 2" --state-in "$work/fifo"

# 5. A tensor name with a newline and escape codes.
cp -r "$work/model" "$work/evil"
n=$(header_len "$work/model/model.safetensors")
head -c $((8 + n)) "$work/model/model.safetensors" | tail -c "$n" > "$work/header.json"
extra='"evil\nname\u001b[31m":{"dtype":"F32","shape":[0],"data_offsets":[0,0]},'
new_header="{${extra}$(tail -c +2 "$work/header.json")"
{ le64 ${#new_header}; printf '%s' "$new_header"; tail -c +$((9 + n)) "$work/model/model.safetensors"; } > "$work/evil/model.safetensors"
expect_error "newline in a tensor name" "evil name" T eval --model "$work/evil" --tokens "$work/tok.bin"

# 7. Non-finite numbers: NaN weights, NaN/inf options.
cp -r "$work/model" "$work/nan"
{ head -c $((8 + n)) "$work/model/model.safetensors"; printf '\x00\x00\xc0\x7f'; tail -c +$((13 + n)) "$work/model/model.safetensors"; } > "$work/nan/model.safetensors"
expect_error "eval with a NaN weight" "not finite" T eval --model "$work/nan" --tokens "$work/tok.bin"
expect_error "eval --stream with a NaN weight" "not finite" T eval --model "$work/nan" --tokens "$work/tok.bin" --stream
expect_error "grad with a NaN weight" "not finite" T grad --model "$work/nan" --tokens "$work/tok.bin" --out "$work/g.st"
[ ! -e "$work/g.st" ] || fail "grad wrote a gradient of a NaN model"
expect_error "grad --inner-lr nan" "inner learning rate" T grad --model "$work/model" --tokens "$work/tok.bin" --out "$work/g.st" --inner-lr nan
expect_error "grad --inner-lr inf" "inner learning rate" T grad --model "$work/model" --tokens "$work/tok.bin" --out "$work/g.st" --inner-lr inf
expect_error "train --clip nan" "--clip" T train --model "$work/model" --tokens "$work/train.bin" --out "$work/clip" --steps 2 --seq-len 8 --clip nan
expect_error "train from NaN weights" "not finite" T train --model "$work/nan" --tokens "$work/train.bin" --out "$work/nanrun" --steps 2 --seq-len 8 --quiet

# 8. Outputs that are links or device nodes are never replaced.
echo precious > "$work/victim"
ln -s "$work/victim" "$work/link"
expect_error "--nll-out through a symlink" "symbolic link" T eval --model "$work/model" --tokens "$work/tok.bin" --nll-out "$work/link"
[ "$(cat "$work/victim")" = precious ] && [ -L "$work/link" ] || fail "the link or its target changed"
for k in 0 1 2 3; do ln -s "$work/victim" "$work/nll.bin.tmp.$$.$k"; done  # the old predictable temp names
T eval --model "$work/model" --tokens "$work/tok.bin" --nll-out "$work/nll.bin" > /dev/null
[ "$(cat "$work/victim")" = precious ] || fail "a planted temp-name link was written through"
[ "$(stat -c %s "$work/nll.bin")" = 64 ] || fail "--nll-out wrote the wrong size"
if [ "$(id -u)" = 0 ] && mknod "$work/null" c 1 3 2>/dev/null; then
  T eval --model "$work/model" --tokens "$work/tok.bin" --nll-out "$work/null" > /dev/null
  [ -c "$work/null" ] || fail "--nll-out replaced a device node with a regular file"
  echo "ok: --nll-out to a device node writes into it"
fi
expect_error "--nll-out to a FIFO without a reader" "FIFO with no reader" T eval --model "$work/model" --tokens "$work/tok.bin" --nll-out "$work/fifo"

# 9. Leftovers of a killed run are removed; its metrics lines are not duplicated.
dead=4194000; while kill -0 $dead 2>/dev/null; do dead=$((dead - 1)); done
mkdir -p "$work/k/checkpoint.tmp-$dead" && echo partial > "$work/k/checkpoint.tmp-$dead/model.safetensors"
echo partial > "$work/k/model.safetensors.tmp.$dead.0123456789abcdef"
printf '{"step":1,"loss":9.0}\n{"step":2,"loss":9.0}\n{"step":3,"lo' > "$work/k/metrics.jsonl"
T train --model "$work/model" --tokens "$work/train.bin" --out "$work/k" --steps 2 --seq-len 8 --val-every 0 --quiet > /dev/null
[ ! -e "$work/k/checkpoint.tmp-$dead" ] || fail "a dead run's temporary checkpoint was left"
[ ! -e "$work/k/model.safetensors.tmp.$dead.0123456789abcdef" ] || fail "a dead run's temporary file was left"
[ "$(wc -l < "$work/k/metrics.jsonl")" = 2 ] && ! grep -q '"loss":9.0' "$work/k/metrics.jsonl" \
  || fail "metrics.jsonl kept the killed run's lines: $(cat "$work/k/metrics.jsonl")"

# 10. Session state with pending token ids out of the vocabulary.
T generate --model "$work/model" --prompt "1 2 3 4 5 6" --max-new-tokens 1 --state-out "$work/s.state" > /dev/null
for bad in 99999 1180591620717411303424; do
  # Only the first pending id changes, so the counts stay consistent and the id itself is at fault.
  sn=$(header_len "$work/s.state")
  head -c $((8 + sn)) "$work/s.state" | tail -c "$sn" > "$work/sh.json"
  orig=$(grep -o '"pending_tokens":"[0-9 ]*"' "$work/sh.json")
  rest=${orig#*\"pending_tokens\":\"}; rest=${rest#* }
  sed "s/$orig/\"pending_tokens\":\"$bad $rest/" "$work/sh.json" > "$work/sh2.json"
  { le64 "$(stat -c %s "$work/sh2.json")"; cat "$work/sh2.json"; tail -c +$((9 + sn)) "$work/s.state"; } > "$work/bad.state"
  expect_error "pending token id $bad" "pending" T generate --model "$work/model" --prompt "1" --max-new-tokens 1 --state-in "$work/bad.state"
done
echo "hostile_cli_test: all checks passed"
