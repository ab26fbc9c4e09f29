#!/usr/bin/env bash
# Builds the codec's and the GGUF reader's libFuzzer targets with clang-14
# (address and undefined-behaviour sanitizers) in build-fuzz/ and runs the
# codec's for SECONDS (default 60), the GGUF reader's for
# PSTORE_GGUF_FUZZ_SECONDS (default 30): a crash, a sanitizer report or a leak
# fails the script. Part of
# scripts/test.sh, so CI runs it on every submission.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-60}
cmake -S . -B build-fuzz -DCMAKE_BUILD_TYPE=Asan -DCMAKE_C_COMPILER=clang-14 \
  -DCMAKE_CXX_COMPILER=clang++-14 -DPSTORE_BUILD_FUZZERS=ON -DPSTORE_BUILD_BENCH=OFF >/dev/null
cmake --build build-fuzz -j2 --target codec_fuzz gguf_fuzz
tests/run_codec_fuzz.sh build-fuzz/tests/codec_fuzz "$seconds" "$PWD/build-fuzz/fuzz-work"
# The GGUF header reader, for PSTORE_GGUF_FUZZ_SECONDS (default 30).
tests/run_gguf_fuzz.sh build-fuzz/tests/gguf_fuzz "${PSTORE_GGUF_FUZZ_SECONDS:-30}" \
  "$PWD/build-fuzz/gguf-fuzz-work"
