"""Shared pieces of the remote tests: a store with a remote on the test cluster.

The cluster is the ctest fixture's (tests/ceph/cluster.sh): PSTORE_CEPH_CONF
names its conf and PSTORE_CEPH_POOL its pool. Each test works in a namespace
of its own, so tests sharing the pool never see each other's objects.
"""

import os
import signal
import struct
import subprocess
import time
import uuid

from harness import Failure, Skip, Store, check, make_model, popen


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


def packs(ns):
    """The pack objects (k.<id>) in the namespace: where pushes put chunks."""
    return {o for o in objects(ns) if o.startswith("k.")}


def index_keys(ns):
    """The chunk keys in the remote's chunk index (omap keys of i.<2 hex>)."""
    keys = set()
    for o in objects(ns):
        if o.startswith("i.") and len(o) == 4:
            keys |= set(rados(ns, "listomapkeys", o).stdout.decode().split())
    return keys


def remote_names(store, remote="fleet"):
    j = store.ok("ls", "--remote", remote, json_out=True).json()
    check(j.get("ok") is True, f"ls --remote --json says not ok: {j}")
    return {m["model"]: m["digest"] for m in j["models"]}



def objects_settled(ns, prefix="", quiet=1.0, timeout=120):
    """The objects in the namespace (those starting with prefix) once the
    listing has stayed the same for `quiet` seconds: operations a killed or
    stopped process had sent may still land on the OSD."""
    t0 = time.monotonic()
    last, since = None, time.monotonic()
    while True:
        now = {o for o in objects(ns) if o.startswith(prefix)}
        if now != last:
            last, since = now, time.monotonic()
        elif time.monotonic() - since >= quiet:
            return now
        check(time.monotonic() - t0 < timeout, f"the objects of {ns} kept changing for {timeout} s")
        time.sleep(0.2)


class Paused:
    """A pstore process started with pause points (point -> file prefix)."""

    def __init__(self, store, work, tag, points, *args, json_out=False):
        self.files = {pt: os.path.join(work, f"{tag}-{pt}") for pt in points}
        env = dict(os.environ)
        env["PSTORE_TEST_PAUSE"] = ",".join(f"{pt}={f}" for pt, f in self.files.items())
        self.argv = store.argv(*args, json_out=json_out)
        self.p = popen(self.argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, text=True, env=env)

    def wait_paused(self, point, timeout=300):
        t0 = time.monotonic()
        while not os.path.exists(self.files[point] + ".paused"):
            if self.p.poll() is not None:
                out, err = self.p.communicate()
                check(False, f"`{' '.join(self.argv)}` ended (rc {self.p.returncode}) before "
                      f"reaching {point}: {out[-300:]} {err[-500:]}")
            check(time.monotonic() - t0 < timeout, f"{point} not reached in {timeout} s")
            time.sleep(0.02)

    def go(self, point):
        open(self.files[point] + ".go", "w").close()

    def finish(self, what):
        out, err = self.p.communicate(timeout=600)
        check(self.p.returncode == 0, f"{what}: `{' '.join(self.argv)}` failed with rc "
              f"{self.p.returncode}: {out[-300:]} {err[-800:]}")
        return out




def stop_daemon(pid, timeout=10.0):
    """SIGSTOPs pid and waits until every one of its threads has stopped:
    kill() returns first, and a thread still running on another core could
    answer one more request."""
    os.kill(pid, signal.SIGSTOP)
    until = time.monotonic() + timeout
    while time.monotonic() < until:
        states = []
        for tid in os.listdir(f"/proc/{pid}/task"):
            try:
                with open(f"/proc/{pid}/task/{tid}/stat") as f:
                    states.append(f.read().rpartition(")")[2].split()[0])
            except (FileNotFoundError, IndexError):
                pass  # the thread ended
        if states and all(s == "T" for s in states):
            return
        time.sleep(0.005)
    raise Failure(f"process {pid} did not stop within {timeout} s")


def pushed_model(work, ns, store_dir, model_file, ref, mb, seed, tensors):
    """A store in work/store_dir with a remote on namespace ns, and a model
    written to work/model_file, imported as ref and pushed. Returns the store
    and the model file."""
    store = store_with_remote(os.path.join(work, store_dir), ns)
    f = make_model(os.path.join(work, model_file), mb, seed=seed, tensors=tensors)
    store.ok("import", f, ref)
    store.ok("push", ref)
    return store, f


def read_locations(ns, digest):
    """The entries of the locations object l.<digest> (docs/format.md):
    [(key hex, pack object or None for an own object, offset, length)]."""
    loc = rados(ns, "get", f"l.{digest}", "-").stdout
    check(loc[:8] == b"pstloc1\n", "the locations object has the wrong magic")
    npacks = struct.unpack_from("<I", loc, 8)[0]
    ids = [loc[12 + 16 * i:28 + 16 * i].hex() for i in range(npacks)]
    at = 12 + 16 * npacks
    n = struct.unpack_from("<I", loc, at)[0]
    at += 4
    out = []
    for j in range(n):
        key, pack, off, length = struct.unpack_from("<16sIQI", loc, at + 32 * j)
        out.append((key.hex(), None if pack == 0xffffffff else f"k.{ids[pack]}", off, length))
    return out


def to_old_layout(ns, digest):
    """Rewrites a remote holding one model pushed with packs into the layout
    of a pstore from before packs: one object c.<key> per chunk, no packs,
    index or locations, and no layout mark on the names object. Returns the
    number of chunks."""
    entries = read_locations(ns, digest)
    pack_bytes = {p: rados(ns, "get", p, "-").stdout for p in {e[1] for e in entries}}
    for key, pack, off, length in entries:
        rados(ns, "put", f"c.{key}", "-", data=pack_bytes[pack][off:off + length])
    for o in objects(ns):
        if o.startswith(("k.", "l.")) or (o.startswith("i.") and len(o) == 4):
            rados(ns, "rm", o)
    rados(ns, "rmxattr", "pstore.names", "pstore.layout")
    return len(entries)
