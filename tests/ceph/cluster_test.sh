#!/usr/bin/env bash
# tests/ceph/cluster.sh's promises that the remote tests rely on:
#  - a start that fails (here: health not reached within 1 s) exits non-zero
#    and leaves no daemon and no folder behind;
#  - stop of a folder without a cluster, and a second stop, succeed;
#  - start refuses a folder that already holds a cluster.
# Needs the Ceph packages (scripts/setup.sh); uses PSTORE_CEPH_PORT.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
cluster="$here/cluster.sh"
work=$(mktemp -d /tmp/pstore-cluster-test-XXXXXX)
dir="$work/c"
trap '"$cluster" stop "$dir" >/dev/null 2>&1 || true; rm -rf "$work"' EXIT

daemons() {  # pids of processes whose command line names the cluster's conf
  local p
  for p in /proc/[0-9]*; do
    { tr '\0' ' ' <"$p/cmdline"; } 2>/dev/null | grep -qF -- "-c $dir/ceph.conf " && echo "${p#/proc/}"
  done
  return 0
}
fail() { echo "FAIL: $*" >&2; exit 1; }

# A failed start cleans up after itself.
if PSTORE_CEPH_TIMEOUT=1 "$cluster" start "$dir" 2>"$work/start.err"; then
  fail "start with a 1 s health timeout succeeded"
fi
grep -q "not healthy after 1 s" "$work/start.err" || fail "no timeout message: $(cat "$work/start.err")"
[ -z "$(daemons)" ] || fail "daemons left after a failed start: $(daemons)"
[ ! -e "$dir" ] || fail "$dir left after a failed start"

# stop without a cluster, twice.
"$cluster" stop "$dir" || fail "stop of a missing cluster failed"
"$cluster" stop "$dir" || fail "second stop failed"

# start refuses a folder that holds a cluster (a conf is enough to refuse).
mkdir -p "$dir" && touch "$dir/ceph.conf"
if "$cluster" start "$dir" 2>"$work/start2.err"; then fail "start over an existing cluster succeeded"; fi
grep -q "already holds a cluster" "$work/start2.err" || fail "no refusal message: $(cat "$work/start2.err")"
echo "cluster.sh: failed start cleans up, stop is idempotent, start refuses a used folder"
