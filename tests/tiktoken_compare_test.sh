#!/usr/bin/env bash
# End-to-end agreement with tiktoken on Meta's Llama 3 tokenizer.model (tests/tiktoken_compare.py):
# `ttt tokenize`/`detokenize` with the tiktoken rank file and with its tokenizer.json conversion,
# on a large varied text, against tiktoken's ids. The reference tokenizers come from PyPI into a
# venv under the build directory (scripts/tiktoken_venv.sh, reused between runs).
#
#   tests/tiktoken_compare_test.sh TTT BUILD_DIR
#
# Exit 0: no mismatch. Exit 77 (ctest SKIP_RETURN_CODE): PyPI unreachable, with a SKIP line.
set -euo pipefail
TTT="$1"
BUILD_DIR="$2"
root="$(cd "$(dirname "$0")/.." && pwd)"
venv="$BUILD_DIR/tiktoken-venv"

rc=0
"$root/scripts/tiktoken_venv.sh" "$venv" || rc=$?
[ "$rc" -eq 0 ] || exit "$rc"   # 77: the SKIP line is already printed

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
"$venv/bin/python" "$root/tests/tiktoken_compare.py" --ttt "$TTT" --root "$root" --work "$work"
