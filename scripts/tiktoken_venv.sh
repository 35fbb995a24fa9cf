#!/usr/bin/env bash
# Creates (or reuses) a Python venv with the reference tokenizers from PyPI: tiktoken, tokenizers
# and llama-models (installed without its dependencies: only its Llama 3 tokenizer.model and
# tokenizer.py, which needs tiktoken alone, are used). For tests/tiktoken_compare_test.sh and
# scripts/bench_tokenizer.sh.
#
#   scripts/tiktoken_venv.sh VENV_DIR
#
# Exit 0: VENV_DIR/bin/python is ready. Exit 77: PyPI cannot be reached (a "SKIP: ..." line says
# so; callers pass 77 on, which ctest reports as skipped). Anything else is a real failure.
set -euo pipefail

venv="${1:?usage: scripts/tiktoken_venv.sh VENV_DIR}"
packages=(tiktoken tokenizers)
nodeps=(llama-models)
stamp="$venv/.ttt-ready"
want="${packages[*]} + ${nodeps[*]} (no deps)"

if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && "$venv/bin/python" -c "import tiktoken, tokenizers, llama_models" 2>/dev/null; then
  exit 0
fi

rm -rf "$venv"
if ! python3 -m venv "$venv" >/dev/null 2>&1; then
  echo "tiktoken_venv: python3 -m venv failed (install python3-venv: scripts/install-deps.sh)" >&2
  exit 1
fi
log="$venv/pip.log"
pip=("$venv/bin/python" -m pip install --disable-pip-version-check --no-input --timeout 30 --retries 2)
if "${pip[@]}" "${packages[@]}" >"$log" 2>&1 && "${pip[@]}" --no-deps "${nodeps[@]}" >>"$log" 2>&1; then
  echo "$want" >"$stamp"
  exit 0
fi
# Only a network failure is a skip; anything else (a package that does not build, a full disk)
# fails loudly.
network='NewConnectionError|Failed to establish a new connection|Temporary failure in name resolution|Name or service not known|Network is unreachable|No route to host|Connection refused|ConnectTimeout|Read timed out|ProxyError|SSLError|Max retries exceeded|Could not fetch URL'
if grep -qE "$network" "$log"; then
  reason="$(grep -m1 -oE "$network" "$log" | head -n1)"
  rm -rf "$venv"
  echo "SKIP: PyPI is unreachable (pip: $reason); cannot install ${packages[*]} ${nodeps[*]}"
  exit 77
fi
echo "tiktoken_venv: pip install failed:" >&2
tail -n 20 "$log" >&2
exit 1
