#!/usr/bin/env bash
# Configures and builds one build directory. Usage: scripts/build.sh [release|sanitize|cuda|cuda-ci]
#   cuda     build-cuda: the release engine with the CUDA backend (-DTTT_CUDA=ON) and its tests
#            (what scripts/device_check.sh runs on a GPU machine); needs nvcc. Also copies the
#            shared libraries the two binaries need beyond the C/C++ runtime and the CUDA toolkit
#            into build-cuda/lib (about 15 MB), for a GPU machine whose image lacks them: carry
#            build-cuda/ttt, build-cuda/tests/ttt_tests and build-cuda/lib there
#   cuda-ci  the same directory, the ttt binary only (compile and link check, test.sh)
set -euo pipefail
cd "$(dirname "$0")/.."
mode="${1:-release}"
case "$mode" in
  release)  dir=build;          flags=(-DCMAKE_BUILD_TYPE=Release) ;;
  sanitize) dir=build-sanitize; flags=(-DCMAKE_BUILD_TYPE=RelWithDebInfo -DTTT_SANITIZE=ON -DTTT_BUILD_BENCH=OFF) ;;
  cuda|cuda-ci) dir=build-cuda; flags=(-DCMAKE_BUILD_TYPE=Release -DTTT_CUDA=ON -DTTT_BUILD_BENCH=OFF) ;;
  *) echo "build.sh: unknown mode '$mode' (release, sanitize, cuda or cuda-ci)" >&2; exit 2 ;;
esac
# ccache, when installed, makes rebuilds (and builds of other checkouts of this tree) cheap.
if command -v ccache >/dev/null; then
  flags+=(-DCMAKE_CXX_COMPILER_LAUNCHER=ccache)
  case "$mode" in cuda*) flags+=(-DCMAKE_CUDA_COMPILER_LAUNCHER=ccache) ;; esac
  export CCACHE_BASEDIR="$PWD"
fi
cmake -S . -B "$dir" -G Ninja "${flags[@]}" >/dev/null
targets=()
[ "$mode" = cuda-ci ] && targets=(--target ttt)
cmake --build "$dir" -j "$(nproc)" "${targets[@]}"
if [ "$mode" = cuda ]; then
  mkdir -p "$dir/lib"
  for bin in "$dir/ttt" "$dir/tests/ttt_tests"; do ldd "$bin"; done | awk '$3 ~ /^\// {print $1, $3}' | sort -u |
    grep -vE '^(libc|libm|libstdc\+\+|libgcc_s|libpthread|libdl|librt|ld-linux[^ ]*)\.so|/usr/local/cuda|libcuda\.so' |
    while read -r soname path; do cp -L "$path" "$dir/lib/$soname"; done
  echo "build.sh: $(ls "$dir/lib" | wc -l) shared libraries for a GPU machine in $dir/lib ($(du -sh "$dir/lib" | cut -f1))"
fi
