#!/usr/bin/env bash
# Runs the codec libFuzzer target for a bounded time, e.g. in CI:
#
#   tests/run_codec_fuzz.sh BUILD/tests/codec_fuzz [SECONDS] [WORKDIR]
#
# Seeds (real frames of every dtype and profile; also of the corpus named by
# PSTORE_CODEC_CORPUS, if set) are written to WORKDIR/seeds on first use; new
# inputs that libFuzzer finds go to WORKDIR/corpus and crashes to WORKDIR/.
# Exits non-zero if the fuzzer finds a crash, a leak or a sanitizer error.
set -euo pipefail
bin=$(realpath "${1:?usage: run_codec_fuzz.sh CODEC_FUZZ_BINARY [SECONDS] [WORKDIR]}")
seconds=${2:-60}
work=${3:-${TMPDIR:-/tmp}/pstore-codec-fuzz}
mkdir -p "$work/seeds" "$work/corpus"
if [ -z "$(ls -A "$work/seeds")" ]; then
  PSTORE_FUZZ_WRITE_SEEDS="$work/seeds" "$bin"
fi
cd "$work"
exec "$bin" -max_total_time="$seconds" -max_len=300000 -rss_limit_mb=4096 \
  -timeout=20 -print_final_stats=1 "$work/corpus" "$work/seeds"
