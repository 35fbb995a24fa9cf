#!/usr/bin/env bash
# The test suite: installs what is missing, then builds and runs it under ctest, optimized and
# with AddressSanitizer + UndefinedBehaviorSanitizer; between them the CUDA backend's compile
# check, the Python package (pytest in a fresh venv) and the server under ThreadSanitizer.
set -euo pipefail
cd "$(dirname "$0")"
scripts/install-deps.sh
jobs="$(nproc)"

echo "== release build"
scripts/build.sh release
ctest --test-dir build --output-on-failure -j "$jobs"

# The CUDA backend, compile and link only (no GPU here; scripts/device_check.sh runs it on one),
# so that it cannot rot. Skipped where the CUDA toolkit is absent.
if command -v nvcc >/dev/null || [ -x /usr/local/cuda/bin/nvcc ]; then
  echo "== CUDA build (compile and link only)"
  scripts/build.sh cuda-ci
  build-cuda/ttt info | grep -qE '^backend +cuda +built' || { echo "CUDA build: ttt info does not list the cuda backend as built" >&2; exit 1; }
fi

echo "== Python package (pip install . in a fresh venv, pytest tests/python)"
scripts/python_test.sh

echo "== ThreadSanitizer: the server's end-to-end tests (deletes, forks, restores racing on sessions)"
scripts/tsan_server_e2e.sh --full

echo "== ASan + UBSan build"
scripts/build.sh sanitize
# The pool would hide use-after-free from ASan (backend/cpu/pool.cpp); OpenBLAS leaks by design.
TTT_NO_POOL=1 ASAN_OPTIONS=detect_leaks=0 UBSAN_OPTIONS=print_stacktrace=1 \
  ctest --test-dir build-sanitize --output-on-failure -j "$jobs"
