#!/usr/bin/env bash
# A real single-node Ceph cluster for pstore's remote tests and benchmarks:
# one mon, one mgr and one OSD (BlueStore on a sparse file), bound to
# 127.0.0.1 only, with everything (conf, keyring, data, logs, sockets, pid
# files) under one work folder.
#
#   tests/ceph/cluster.sh start  DIR   installs what is missing, starts the
#                                      daemons, waits (bounded) until the OSD
#                                      is up and the pool's placement groups
#                                      are active+clean, creates the pool
#   tests/ceph/cluster.sh stop   DIR   stops every daemon of DIR's cluster and
#                                      removes DIR; works after a failed start
#   tests/ceph/cluster.sh status DIR   "ceph -s" of DIR's cluster
#   tests/ceph/cluster.sh stop-osd DIR  stops the OSD daemon at once (SIGKILL,
#                                      as a crash would) and marks it down:
#                                      the fault tests' "OSD down" with the
#                                      mon still up
#   tests/ceph/cluster.sh start-osd DIR starts it again and waits (bounded)
#                                      until it is up in a map newer than
#                                      before, active+clean, and a probe
#                                      object (namespace cluster-probe) can
#                                      be written and read
#
# Environment: PSTORE_CEPH_PORT (default 16700, below the ephemeral ports) is the mon's port; the OSD and
# mgr bind to PORT+1..PORT+99, so two clusters on one machine need ports 100
# apart. PSTORE_CEPH_POOL (default "pstore") is the pool created.
# PSTORE_CEPH_TIMEOUT (default 120) bounds the wait for health, in seconds.
# Clients use DIR/ceph.conf, which names DIR/keyring (client.admin).
set -euo pipefail

# These override the keyring and conf of every daemon started below (the OSD
# then fails with handle_auth_bad_method): the cluster uses only its own.
unset CEPH_KEYRING CEPH_ARGS CEPH_CONF

cmd=${1:-}
dir=${2:-}
if [ -z "$cmd" ] || [ -z "$dir" ]; then
  echo "usage: $0 start|stop|status|stop-osd|start-osd DIR" >&2
  exit 2
fi
port=${PSTORE_CEPH_PORT:-16700}
pool=${PSTORE_CEPH_POOL:-pstore}
timeout=${PSTORE_CEPH_TIMEOUT:-120}
[ -d "$dir" ] && dir=$(cd "$dir" && pwd)

log() { echo "cluster.sh: $*" >&2; }

install_missing() {
  local pkgs=(ceph-mon ceph-osd ceph-mgr ceph-common librados-dev libradospp-dev) missing=() p
  for p in "${pkgs[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  if [ "$(id -u)" -ne 0 ]; then
    log "missing packages ${missing[*]}: run scripts/setup.sh as root"
    return 1
  fi
  log "installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  local i
  for i in $(seq 1 30); do  # the dpkg lock may be held by another apt-get
    if apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null; then return 0; fi
    apt-get update -qq >/dev/null 2>&1 || true
    sleep 5
  done
  log "could not install ${missing[*]}"
  return 1
}

# The pids of the daemons of this cluster: those whose command line names its
# conf (only this cluster's daemons do), plus what the pid files say.
cluster_pids() {
  local conf="$dir/ceph.conf" p
  for p in /proc/[0-9]*; do
    if { tr '\0' ' ' <"$p/cmdline"; } 2>/dev/null | grep -qF -- "-c $conf "; then
      echo "${p#/proc/}"
    fi
  done | sort -u
}

do_stop() {
  [ -d "$dir" ] || return 0
  local pids p i
  pids=$(cluster_pids)
  # SIGCONT first: a test may have stopped a daemon with SIGSTOP.
  for p in $pids; do kill -CONT "$p" 2>/dev/null || true; kill -TERM "$p" 2>/dev/null || true; done
  for i in $(seq 1 100); do  # up to 10 s, then SIGKILL
    pids=$(cluster_pids)
    [ -z "$pids" ] && break
    sleep 0.1
  done
  for p in $pids; do kill -KILL "$p" 2>/dev/null || true; done
  for i in $(seq 1 50); do
    [ -z "$(cluster_pids)" ] && break
    sleep 0.1
  done
  if [ -n "$(cluster_pids)" ]; then
    log "daemons still running: $(cluster_pids | tr '\n' ' ')"
    return 1
  fi
  rm -rf "$dir"
}

ceph_cli() { timeout 30 ceph -c "$dir/ceph.conf" --connect-timeout 10 "$@"; }

# Waits (up to $timeout s) until the OSD is up and every placement group is
# active+clean.
wait_healthy() {
  local deadline=$(( $(date +%s) + timeout )) state
  while :; do
    state=$(ceph_cli pg stat 2>/dev/null || true)
    if echo "$state" | grep -qE '^[0-9]+ pgs: [0-9]+ active\+clean;' &&
       ceph_cli osd stat 2>/dev/null | grep -q '1 up'; then
      return 0
    fi
    if [ "$(date +%s)" -ge "$deadline" ]; then
      log "not healthy after ${timeout} s: $state (logs in $dir/log)"
      return 1
    fi
    sleep 1
  done
}

# The OSD daemon's pid, if it runs: from its pid file (quick), checked
# against its command line.
osd_pid() {
  local p
  p=$(cat "$dir/run/osd.0.pid" 2>/dev/null || true)
  [ -n "$p" ] || return 0
  if { tr '\0' ' ' <"/proc/$p/cmdline"; } 2>/dev/null | grep -qF -- "-c $dir/ceph.conf -i 0 "; then
    echo "$p"
  fi
}

do_stop_osd() {
  [ -e "$dir/ceph.conf" ] || { log "no cluster in $dir"; return 1; }
  local p i
  p=$(osd_pid)
  [ -n "$p" ] || { log "the OSD of $dir is not running"; return 0; }
  # SIGKILL: it stops serving at once, as a crashed host would (on SIGTERM
  # it goes on serving until the mon has marked it down).
  kill -KILL "$p"
  for i in $(seq 1 100); do
    if [ -z "$(osd_pid)" ]; then
      # Marked down at once, not after the mon's heartbeat grace: clients
      # then see the stopped OSD within a second even on a loaded machine.
      ceph_cli osd down 0 >/dev/null 2>&1 || log "could not mark osd.0 down (the mon will)"
      log "OSD stopped"
      return 0
    fi
    sleep 0.1
  done
  log "the OSD (pid $p) did not stop"
  return 1
}

# The OSD map's epoch, and the epoch osd.0 last came up in (0 if unknown).
osd_epoch() { ceph_cli osd dump 2>/dev/null | awk '/^epoch /{print $2; exit}'; }
osd_up_from() {
  ceph_cli osd dump 2>/dev/null |
    awk '/^osd\.0 up /{for (i = 1; i < NF; i++) if ($i == "up_from") print $(i + 1); exit}'
}

# True once a client can write and read an object of the pool.
probe_io() {
  local r
  r=$(printf probe | timeout 30 rados -c "$dir/ceph.conf" -p "$pool" -N cluster-probe \
        put probe - 2>/dev/null &&
      timeout 30 rados -c "$dir/ceph.conf" -p "$pool" -N cluster-probe get probe - 2>/dev/null)
  [ "$r" = probe ]
}

do_start_osd() {
  [ -e "$dir/ceph.conf" ] || { log "no cluster in $dir"; return 1; }
  local before deadline up
  before=$(osd_epoch)
  if [ -z "$(osd_pid)" ]; then ceph-osd -c "$dir/ceph.conf" -i 0; fi
  # Up again in a newer map than the one before the start (a stale
  # "active+clean" from before the stop proves nothing), healthy, and
  # serving a client.
  deadline=$(( $(date +%s) + timeout ))
  while :; do
    up=$(osd_up_from)
    if [ -n "$up" ] && [ -n "$before" ] && [ "$up" -gt "$before" ]; then break; fi
    if [ "$(date +%s)" -ge "$deadline" ]; then
      log "osd.0 not up after ${timeout} s (map epoch before the start ${before:-?}, up_from ${up:-none}; logs in $dir/log)"
      return 1
    fi
    sleep 0.5
  done
  wait_healthy || return 1
  while ! probe_io; do
    if [ "$(date +%s)" -ge "$deadline" ]; then
      log "osd.0 is up but a client cannot write and read after ${timeout} s (logs in $dir/log)"
      return 1
    fi
    sleep 1
  done
  log "OSD up"
}

do_start() {
  install_missing
  if [ -e "$dir/ceph.conf" ]; then
    log "$dir already holds a cluster: run '$0 stop $dir' first"
    return 1
  fi
  local t0 fsid osd_uuid
  t0=$(date +%s.%N)
  mkdir -p "$dir"
  dir=$(cd "$dir" && pwd)
  chmod 0700 "$dir"
  mkdir -p "$dir"/{run,log,mon/ceph-a,mgr/ceph-x,osd/ceph-0}
  fsid=$(cat /proc/sys/kernel/random/uuid)
  cat >"$dir/ceph.conf" <<CONF
[global]
fsid = $fsid
mon_host = v2:127.0.0.1:$port
public_addr = 127.0.0.1
public_network = 127.0.0.1/32
cluster_network = 127.0.0.1/32
ms_bind_ipv4 = true
ms_bind_ipv6 = false
ms_bind_msgr1 = false
ms_bind_port_min = $((port + 1))
ms_bind_port_max = $((port + 99))
auth_cluster_required = cephx
auth_service_required = cephx
auth_client_required = cephx
run_dir = $dir/run
admin_socket = $dir/run/\$name.asok
pid_file = $dir/run/\$name.pid
log_file = $dir/log/\$name.log
mon_cluster_log_file = $dir/log/cluster.log
crash_dir = $dir/crash
exporter_sock_dir = $dir/run
osd_pool_default_size = 1
osd_pool_default_min_size = 1
mon_allow_pool_size_one = true
mon_warn_on_pool_no_redundancy = false
mon_allow_pool_delete = true
osd_pool_default_pg_num = 8
osd_pool_default_pgp_num = 8
osd_pool_default_pg_autoscale_mode = off
osd_crush_chooseleaf_type = 0
auth_allow_insecure_global_id_reclaim = false
mon_data_avail_warn = 2
mon_data_avail_crit = 1
[mon]
mon_data = $dir/mon/\$cluster-\$id
[mgr]
mgr_data = $dir/mgr/\$cluster-\$id
[osd]
osd_data = $dir/osd/\$cluster-\$id
osd_objectstore = bluestore
bluestore_block_path = $dir/osd/\$cluster-\$id/block.file
bluestore_block_create = true
bluestore_block_size = 21474836480
bluestore_cache_autotune = false
bluestore_cache_size = 268435456
osd_memory_target = 939524096
osd_max_object_size = 134217728
[client]
keyring = $dir/keyring
# No admin socket for clients: they would all share one path, and a client
# started while the socket's owner is stopped (SIGSTOP) waits 10 s on it,
# after which the owner dies of SIGPIPE answering it.
admin_socket =
CONF
  local conf="$dir/ceph.conf"
  ceph-authtool --create-keyring "$dir/mon.keyring" --gen-key -n mon. --cap mon 'allow *' >/dev/null
  ceph-authtool --create-keyring "$dir/keyring" --gen-key -n client.admin \
    --cap mon 'allow *' --cap osd 'allow *' --cap mgr 'allow *' --cap mds 'allow *' >/dev/null
  ceph-authtool "$dir/mon.keyring" --import-keyring "$dir/keyring" >/dev/null
  monmaptool --create --addv a "[v2:127.0.0.1:$port]" --fsid "$fsid" "$dir/monmap" >/dev/null
  ceph-mon -c "$conf" --mkfs -i a --monmap "$dir/monmap" --keyring "$dir/mon.keyring"
  ceph-mon -c "$conf" -i a
  # The mgr's key.
  ceph_cli auth get-or-create mgr.x mon 'allow profile mgr' osd 'allow *' mds 'allow *' \
    -o "$dir/mgr/ceph-x/keyring"
  ceph-mgr -c "$conf" -i x
  # The OSD: its key first (it fetches its config from the mon while making
  # its BlueStore), then its id, then BlueStore on a sparse file.
  osd_uuid=$(cat /proc/sys/kernel/random/uuid)
  local id key
  key=$(ceph-authtool --gen-print-key)
  ceph-authtool --create-keyring "$dir/osd/ceph-0/keyring" -n osd.0 --add-key "$key" >/dev/null
  printf '{"cephx_secret": "%s"}\n' "$key" >"$dir/osd-secret.json"
  id=$(ceph_cli osd new "$osd_uuid" -i "$dir/osd-secret.json")
  rm -f "$dir/osd-secret.json"
  [ "$id" = 0 ] || { log "expected osd id 0, got '$id'"; return 1; }
  ceph-osd -c "$conf" -i 0 --mkfs --osd-uuid "$osd_uuid" >"$dir/log/osd-mkfs.out" 2>&1 \
    || { cat "$dir/log/osd-mkfs.out" >&2; return 1; }
  ceph-osd -c "$conf" -i 0
  # The pool, then wait until its placement groups are active+clean.
  ceph_cli osd pool create "$pool" 8 8 >/dev/null 2>&1
  ceph_cli osd pool application enable "$pool" pstore >/dev/null 2>&1
  wait_healthy || return 1
  local t1
  t1=$(date +%s.%N)
  log "ready in $(awk -v a="$t0" -v b="$t1" 'BEGIN{printf "%.1f", b-a}') s: conf $conf, pool $pool"
}

case "$cmd" in
  start)
    if ! do_start; then
      log "start failed; the daemons' last log lines:"
      tail -n 5 "$dir"/log/*.log >&2 2>/dev/null || true
      log "stopping what was started"
      do_stop || true
      exit 1
    fi
    ;;
  stop) do_stop ;;
  status)
    [ -e "$dir/ceph.conf" ] || { echo "no cluster in $dir"; exit 1; }
    ceph_cli -s
    ;;
  stop-osd) do_stop_osd ;;
  start-osd) do_start_osd ;;
  *)
    echo "usage: $0 start|stop|status|stop-osd|start-osd DIR" >&2
    exit 2
    ;;
esac
