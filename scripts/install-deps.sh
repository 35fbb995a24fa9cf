#!/usr/bin/env bash
# Installs the Debian packages the project builds and runs with. Safe to re-run: it only calls
# apt-get when something is missing.
set -euo pipefail

PACKAGES=(
  build-essential cmake ninja-build pkg-config
  ccache                                 # scripts/build.sh and `pip install .`: the Python build reuses build/'s engine objects
  libopenblas0-pthread libopenblas-dev   # GEMM (loaded at run time, AVX-512 kernels chosen by the engine)
  libgtest-dev libbenchmark-dev          # tests and benchmarks
  libcli11-dev nlohmann-json3-dev        # command line, JSON
  libcairo2-dev fonts-dejavu-core        # charts, PNG and SVG (src/report); the labels' font
  libsentencepiece-dev                   # tokenizer (src/data/tokenizer.cpp)
  libpcre2-dev                           # byte-level BPE pre-tokenizer regex (src/data/bpe_tokenizer.cpp)
  python3-venv                           # tests/tiktoken_compare_test.sh: reference tokenizers from PyPI in a venv
  python3-dev                            # `pip install .`: the headers the Python module (nanobind) builds against
  libsqlite3-dev                         # `ttt serve`: session catalogue (src/server)
  libopenmpi-dev openmpi-bin             # data-parallel training: `mpirun -np N ttt train` (src/dist)
  ccache                                 # test.sh's CUDA build (build-cuda) reuses the release build's objects
)
# --data: also the corpus of the default data recipe (`ttt data build --linux`): the Debian
# kernel source tarball, /usr/src/linux-source-6.1.tar.xz. Not needed by the build or the tests.
# --import: also the Python environment `ttt import` reads official checkpoints with
# (scripts/import-env.sh: .venv-import with tensorstore and numpy from PyPI).
want_import=0
for arg in "$@"; do
  case "$arg" in
    --data) PACKAGES+=(linux-source-6.1) ;;
    --import) want_import=1; PACKAGES+=(python3-venv) ;;
    *) echo "install-deps: unknown option $arg (known: --data, --import)" >&2; exit 2 ;;
  esac
done
finish() { if [ "$want_import" = 1 ]; then "$(dirname "$0")/import-env.sh"; fi; }

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  finish
  exit 0
fi
echo "install-deps: installing ${missing[*]}"
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
finish
