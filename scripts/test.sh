#!/usr/bin/env bash
# The README's test command: installs what is missing, builds, runs every
# test (unit tests, then the multi-process, crash and corpus tests), then
# fuzzes the chunk decoder for a minute.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
scripts/build.sh
ctest --test-dir build --output-on-failure --timeout 1800 "$@"
# The chunk decoder under libFuzzer, for a bounded time (PSTORE_FUZZ_SECONDS).
scripts/fuzz.sh "${PSTORE_FUZZ_SECONDS:-60}"
