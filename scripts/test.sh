#!/usr/bin/env bash
# The README's test command: installs what is missing, checks the formatting,
# builds (warnings are errors), checks the thread-safety annotations with
# clang, runs every test (unit tests, then the multi-process, crash and
# corpus tests), runs the unit tests and the C API check again under
# AddressSanitizer + UBSan and under ThreadSanitizer, then fuzzes the chunk
# decoder for a minute. PSTORE_SANITIZE lists the sanitizer runs (default
# "asan tsan"; "" for none).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
# Every C and C++ file conforms to .clang-format.
scripts/check_format.sh
scripts/build.sh -DPSTORE_WERROR=ON
# The thread-safety annotations, checked by clang (GCC ignores them).
scripts/check_thread_safety.sh
ctest --test-dir build --output-on-failure --timeout 1800 "$@"
for kind in ${PSTORE_SANITIZE-asan tsan}; do
  scripts/sanitize.sh "$kind"
done
# The chunk decoder under libFuzzer, for a bounded time (PSTORE_FUZZ_SECONDS).
scripts/fuzz.sh "${PSTORE_FUZZ_SECONDS:-60}"
