#!/usr/bin/env bash
# The pstore command without the remote tier: `pstore` does not load librados;
# its remote commands run in pstore-remote beside it (the same process, by
# exec), with their full usage, JSON, exit codes and signal handling; without
# pstore-remote they fail saying what is missing. No cluster is needed.
# Usage: cli_split_test.sh PSTORE_BIN MAKE_MODEL
set -u
pstore=$1 make_model=$2
dir=$(mktemp -d /tmp/pstore-cli-split-XXXXXX)
trap 'rm -rf "$dir"' EXIT
fail=0
bad() { echo "FAILED: $*"; fail=1; }
"$make_model" "$dir/m.safetensors" --mb 1 --tensors 3 --seed 1 >/dev/null || exit 1
"$pstore" --store "$dir/s" import "$dir/m.safetensors" m:1 >/dev/null || exit 1

libs=$(ldd "$pstore")
[[ $libs != *librados* ]] || bad "pstore links librados: $libs"
[[ $(ldd "$(dirname "$pstore")/pstore-remote") == *librados* ]] || bad "pstore-remote lacks librados"

help=$("$pstore" --help)
for c in remote push pull; do
  grep -Eq "^  $c +[A-Z]" <<<"$help" || bad "pstore --help does not list $c"
done
# Usage comes from pstore-remote, which knows the options.
out=$("$pstore" push --help) || bad "pstore push --help exited $?"
[[ $out == *--remote* && $out == *NAME:TAG* ]] || bad "pstore push --help: $out"
out=$("$pstore" --json --store "$dir/s" remote ls) || bad "remote ls exited $?"
[[ $out == *'"ok": true'* && $out == *'"remotes": []'* ]] || bad "remote ls --json: $out"
"$pstore" --store "$dir/s" pull >/dev/null 2>&1
rc=$?
[ "$rc" -eq 2 ] || bad "pull without a model exited $rc, expected 2 (usage)"
# Errors of the remote tier itself come from pstore-remote.
err=$("$pstore" --store "$dir/s" ls --remote nosuch 2>&1 >/dev/null)
rc=$?
[ "$rc" -eq 3 ] || bad "ls --remote of an unknown remote exited $rc, expected 3 (not found)"
[[ $err == *"no remote called nosuch"* ]] || bad "ls --remote nosuch said: $err"
err=$("$pstore" --store "$dir/s" rm --remote nosuch a:1 2>&1 >/dev/null)
rc=$?
[ "$rc" -eq 3 ] || bad "rm --remote of an unknown remote exited $rc, expected 3 (not found)"
[[ $err == *"no remote called nosuch"* ]] || bad "rm --remote nosuch said: $err"

# SIGTERM once pstore has its handler, before or after it hands over to
# pstore-remote: exit 9, never killed by the signal. The remote's monitor
# does not answer, so each command waits out its 1 s timeout.
printf '[global]\nmon_host = 127.0.0.1:1\n' >"$dir/none.conf"
"$pstore" --store "$dir/s" remote add r rados:none --conf "$dir/none.conf" --timeout 1 >/dev/null \
  || bad "remote add failed"
catches_term() { # pid runs pstore or pstore-remote, whose SigCgt has SIGTERM (15)
  local exe mask
  # The forked shell catches SIGTERM too (this script's trap) until it execs.
  exe=$(readlink "/proc/$1/exe" 2>/dev/null) || return 1
  [[ $exe == */pstore || $exe == */pstore-remote ]] || return 1
  mask=$(awk '/^SigCgt:/ {print $2}' "/proc/$1/status" 2>/dev/null) || return 1
  [ -n "$mask" ] && (( (16#$mask >> 14) & 1 ))
}
for i in 1 2 3 4 5 6; do
  "$pstore" --store "$dir/s" ls --remote r >/dev/null 2>&1 &
  pid=$!
  seen=0
  for _ in $(seq 2000); do catches_term "$pid" && { seen=1; break; }; done
  [ "$seen" -eq 1 ] || bad "run $i: pstore never showed its SIGTERM handler"
  # A few runs wait a little, so the signal lands around the exec.
  [ $((i % 2)) -eq 0 ] && sleep "0.00$i"
  kill -TERM "$pid" 2>/dev/null
  wait "$pid"
  rc=$?
  [ "$rc" -eq 9 ] || bad "ls --remote stopped by SIGTERM (run $i) exited $rc, expected 9"
done

# Without pstore-remote beside it.
mkdir "$dir/alone"
cp "$pstore" "$dir/alone/pstore"
for args in "push a:1" "remote ls" "ls --remote r"; do
  # shellcheck disable=SC2086
  err=$("$dir/alone/pstore" --store "$dir/s" $args 2>&1 >/dev/null)
  rc=$?
  [ "$rc" -eq 1 ] || bad "$args without pstore-remote exited $rc, expected 1"
  [[ $err == *"$dir/alone/pstore-remote"*"could not be started"* ]] || bad "$args said: $err"
done
# --json after the command still reports as JSON.
out=$("$dir/alone/pstore" --store "$dir/s" push a:1 --json 2>/dev/null)
[[ $out == *'"ok":false'* && $out == *'could not be started'* ]] || bad "push --json without pstore-remote: $out"
# Local commands do not need it.
"$dir/alone/pstore" --store "$dir/s" ls >/dev/null || bad "ls without pstore-remote failed"
exit $fail
