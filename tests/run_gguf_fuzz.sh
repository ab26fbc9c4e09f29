#!/usr/bin/env bash
# Runs the GGUF header reader's libFuzzer target for a bounded time, e.g. in CI:
#
#   tests/run_gguf_fuzz.sh BUILD/tests/gguf_fuzz [SECONDS] [WORKDIR]
#
# Seeds (tests/tools/make_bad_gguf.py's valid file and malformed cases) are
# written to WORKDIR/seeds on first use; new inputs go to WORKDIR/corpus and
# crashes to WORKDIR/. Exits non-zero on a crash, a leak or a sanitizer error.
set -euo pipefail
bin=$(realpath "${1:?usage: run_gguf_fuzz.sh GGUF_FUZZ_BINARY [SECONDS] [WORKDIR]}")
seconds=${2:-30}
work=${3:-${TMPDIR:-/tmp}/pstore-gguf-fuzz}
here=$(cd "$(dirname "$0")" && pwd)
mkdir -p "$work/seeds" "$work/corpus"
if [ -z "$(ls -A "$work/seeds")" ]; then
  gen=$(mktemp -d)
  python3 "$here/tools/make_bad_gguf.py" "$gen" >/dev/null
  find "$gen" -name '*.gguf' | while read -r f; do
    cp "$f" "$work/seeds/$(echo "${f#"$gen"/}" | tr / _)"
  done
  rm -rf "$gen"
fi
cd "$work"
exec "$bin" -max_total_time="$seconds" -max_len=65536 -rss_limit_mb=4096 \
  -timeout=20 -print_final_stats=1 "$work/corpus" "$work/seeds"
