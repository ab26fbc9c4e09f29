#!/usr/bin/env bash
# tests/ceph/cluster.sh's promises that the remote tests rely on:
#  - a start that fails (here: the mon's port is taken) exits non-zero
#    and leaves no daemon and no folder behind;
#  - stop of a folder without a cluster, and a second stop, succeed;
#  - start refuses a folder that already holds a cluster.
# Needs the Ceph packages (scripts/setup.sh); picks its own mon port.
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

# A failed start cleans up after itself. The failure: the mon's port is
# taken (by a listener of this script), whatever the machine's speed. The
# listener takes a port the kernel picks: a fixed one may still be held in
# TIME_WAIT, or by an outgoing connection when it lies in the ephemeral range.
/usr/bin/python3 -c '
import socket, sys, time
s = socket.socket()
s.bind(("127.0.0.1", 0))
s.listen()
with open(sys.argv[1] + ".tmp", "w") as f:
    f.write(str(s.getsockname()[1]))
import os
os.rename(sys.argv[1] + ".tmp", sys.argv[1])
time.sleep(900)' "$work/held" &
holder=$!
for _ in $(seq 1 100); do [ -e "$work/held" ] && break; sleep 0.1; done
[ -e "$work/held" ] || { kill "$holder"; fail "could not take a port for the test"; }
port=$(cat "$work/held")
export PSTORE_CEPH_PORT=$port
if PSTORE_CEPH_TIMEOUT=20 "$cluster" start "$dir" 2>"$work/start.err"; then
  kill "$holder"
  fail "start with the mon's port taken succeeded"
fi
kill "$holder"
wait "$holder" 2>/dev/null || true
grep -q "start failed" "$work/start.err" || fail "no failure message: $(cat "$work/start.err")"
[ -z "$(daemons)" ] || fail "daemons left after a failed start: $(daemons)"
[ ! -e "$dir" ] || fail "$dir left after a failed start"

# Stop is idempotent.
"$cluster" stop "$dir" || fail "stop of a missing cluster failed"
"$cluster" stop "$dir" || fail "second stop failed"

# start refuses a folder that holds a cluster (a conf is enough to refuse).
mkdir -p "$dir" && touch "$dir/ceph.conf"
if "$cluster" start "$dir" 2>"$work/start2.err"; then fail "start over an existing cluster succeeded"; fi
grep -q "already holds a cluster" "$work/start2.err" || fail "no refusal message: $(cat "$work/start2.err")"
echo "cluster.sh: failed start cleans up, stop is idempotent, start refuses a used folder"
