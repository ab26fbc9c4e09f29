"""Shared pieces of the remote tests: a store with a remote on the test cluster.

The cluster is the ctest fixture's (tests/ceph/cluster.sh): PSTORE_CEPH_CONF
names its conf and PSTORE_CEPH_POOL its pool. Each test works in a namespace
of its own, so tests sharing the pool never see each other's objects.
"""

import os
import subprocess
import uuid

from harness import Failure, Skip, Store, check


def cluster():
    conf = os.environ.get("PSTORE_CEPH_CONF")
    pool = os.environ.get("PSTORE_CEPH_POOL", "pstore")
    if not conf:
        raise Failure("$PSTORE_CEPH_CONF is not set (ctest's ceph fixture sets it)")
    if not os.path.exists(conf):
        raise Skip(f"no cluster: {conf} does not exist (the ceph fixture did not start)")
    return conf, pool


def namespace(prefix):
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def store_with_remote(root, ns, name="fleet", timeout=20):
    conf, pool = cluster()
    s = Store(root)
    s.ok("remote", "add", name, f"rados:{pool}", "--conf", conf, "--namespace", ns,
         "--timeout", timeout)
    return s


def rados(ns, *args, check_rc=True, data=None):
    """Runs the `rados` command on the test pool and namespace."""
    conf, pool = cluster()
    env = dict(os.environ)
    for v in ("CEPH_KEYRING", "CEPH_ARGS", "CEPH_CONF"):
        env.pop(v, None)
    argv = ["rados", "-c", conf, "-p", pool, "-N", ns] + [str(a) for a in args]
    p = subprocess.run(argv, capture_output=True, input=data, env=env, timeout=120)
    if check_rc:
        check(p.returncode == 0, f"`{' '.join(argv)}` failed: {p.stderr.decode()[-500:]}")
    return p


def objects(ns):
    """The object names in the namespace."""
    out = rados(ns, "ls").stdout.decode().split()
    return set(out)


def remote_names(store, remote="fleet"):
    j = store.ok("ls", "--remote", remote, json_out=True).json()
    check(j.get("ok") is True, f"ls --remote --json says not ok: {j}")
    return {m["model"]: m["digest"] for m in j["models"]}

