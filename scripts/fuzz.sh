#!/usr/bin/env bash
# Builds the codec's libFuzzer target with clang-14 (address and undefined-
# behaviour sanitizers) in build-fuzz/ and runs it for SECONDS (default 60):
# a crash, a sanitizer report or a leak fails the script. Part of
# scripts/test.sh, so CI runs it on every submission.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-60}
cmake -S . -B build-fuzz -DCMAKE_BUILD_TYPE=Asan -DCMAKE_C_COMPILER=clang-14 \
  -DCMAKE_CXX_COMPILER=clang++-14 -DPSTORE_BUILD_FUZZERS=ON -DPSTORE_BUILD_BENCH=OFF >/dev/null
cmake --build build-fuzz -j2 --target codec_fuzz
tests/run_codec_fuzz.sh build-fuzz/tests/codec_fuzz "$seconds" "$PWD/build-fuzz/fuzz-work"
