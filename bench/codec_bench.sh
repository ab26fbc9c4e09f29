#!/usr/bin/env bash
# Runs the codec benchmarks that docs/benchmarks.md quotes:
#
#   bench/codec_bench.sh BUILD_DIR CORPUS_ROOT [OUT_DIR]
#
# BUILD_DIR: a Release build with codec_corpus and codec_micro built;
# CORPUS_ROOT: holds f/ and bf16/ (shared/corpus/fetch.sh). Single thread; each
# figure is the median of 5 (codec_corpus) or 3 (codec_micro) runs. The load
# average is printed before and after: quote runs made on a quiet machine.
set -euo pipefail
build=${1:?usage: codec_bench.sh BUILD_DIR CORPUS_ROOT [OUT_DIR]}
corpus=${2:?usage: codec_bench.sh BUILD_DIR CORPUS_ROOT [OUT_DIR]}
out=${3:-.}
mkdir -p "$out"
uptime | tee "$out/uptime-before.txt"
for set in f bf16; do
  for kib in 1024 256; do
    echo "== codec_corpus $set, $kib KiB chunks"
    "$build/bench/codec_corpus" --chunk "$kib" --runs 5 "$corpus/$set" | tee "$out/corpus-$set-$kib.txt"
  done
  echo "== codec_micro $set, 1 MiB chunks"
  "$build/bench/codec_micro" --corpus="$corpus/$set" \
    --benchmark_filter='^(Encode|Decode|DecodeUnchecked|ZSTD|LZ4)' \
    --benchmark_repetitions=3 --benchmark_report_aggregates_only=true \
    --benchmark_out="$out/micro-$set.json" --benchmark_out_format=json | tee "$out/micro-$set.txt"
done
uptime | tee "$out/uptime-after.txt"
