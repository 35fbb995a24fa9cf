#!/usr/bin/env bash
# The Python package's tests (tests/python, pytest): `pip install .` into a fresh venv, then
# pytest against the CLI of build/ (scripts/build.sh release first). torch is used only when the
# Python running this already has it (never downloaded): then the venv sees system packages.
# Usage: scripts/python_test.sh [pytest args...]
set -euo pipefail
cd "$(dirname "$0")/.."
py="${PYTHON:-python3}"
venv=build/python-venv
[ -x build/ttt ] || { echo "python_test: build/ttt is missing (run scripts/build.sh release)" >&2; exit 1; }
rm -rf "$venv" build-python
venv_flags=()
if "$py" -c "import torch" 2>/dev/null; then venv_flags+=(--system-site-packages); fi
"$py" -m venv "${venv_flags[@]}" "$venv"
# The compiler of build/: ccache then serves the engine's objects compiled there (same flags,
# same compiler name), and the build compiles little more than the module.
cxx="$(sed -n 's/^CMAKE_CXX_COMPILER:FILEPATH=//p' build/CMakeCache.txt)"
start=$SECONDS
CXX="${CXX:-$cxx}" "$venv/bin/pip" install -q . 
echo "pip install . took $((SECONDS - start)) s"
"$venv/bin/pip" install -q pytest numpy
# From the tests' directory, so that `import ttt` is the installed package, not python/ttt.
cd tests/python
TTT_CLI="$PWD/../../build/ttt" "../../$venv/bin/python" -m pytest -q "$@"
