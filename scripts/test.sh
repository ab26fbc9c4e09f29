#!/usr/bin/env bash
# The README's test command: installs what is missing, builds (warnings are
# errors), runs every test (unit tests, then the multi-process, crash and
# corpus tests), runs the unit tests and the C API check again under
# AddressSanitizer + UBSan, then fuzzes the chunk decoder for a minute.
# Set PSTORE_SANITIZE to a space-separated list of asan/tsan ("" for none;
# default "asan").
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
scripts/build.sh -DPSTORE_WERROR=ON
ctest --test-dir build --output-on-failure --timeout 1800 "$@"
for kind in ${PSTORE_SANITIZE-asan}; do
  scripts/sanitize.sh "$kind"
done
# The chunk decoder under libFuzzer, for a bounded time (PSTORE_FUZZ_SECONDS).
scripts/fuzz.sh "${PSTORE_FUZZ_SECONDS:-60}"
