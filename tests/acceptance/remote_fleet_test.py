#!/usr/bin/env python3
"""A fleet simulated on one machine: eight stores stand for eight hosts (each
its own folder, so its own shared-memory segments), four reader processes
each, all started at once; every reader gets one model from the remote as a
host would today, `pstore pull --wait` then `pstore warm` (which opens the
model through the pager and pages every tensor in).

What it checks, from the cluster's own counters (the OSD's `op_out_bytes`,
the bytes it sent to clients, read over its admin socket before and after):
the fleet read about one copy of the model's stored bytes per host (8 copies,
within 10% below and 25% above, which covers the names and manifest reads of
32 processes), not one per process (32). Each host fetched the chunks once:
exactly one of its four pulls moved chunks, and its model exports
byte-identical.

Environment: PSTORE_BIN, MAKE_MODEL, PSTORE_CEPH_CONF, PSTORE_CEPH_POOL.
"""
import json
import os
import shlex
import subprocess

from harness import Failure, check, log, make_model, popen, run_test, tree_sha256
from remote_harness import cluster, namespace, store_with_remote

HOSTS = 8
READERS = 4


def osd_out_bytes():
    """Bytes the OSD has sent to clients (its perf counter op_out_bytes)."""
    conf, _ = cluster()
    sock = os.path.join(os.path.dirname(conf), "run", "osd.0.asok")
    env = dict(os.environ)
    for v in ("CEPH_KEYRING", "CEPH_ARGS", "CEPH_CONF"):
        env.pop(v, None)
    p = subprocess.run(["ceph", "--admin-daemon", sock, "perf", "dump"], capture_output=True,
                       text=True, env=env, timeout=60)
    if p.returncode != 0:
        raise Failure(f"cannot read the OSD's counters from {sock}: {p.stderr.strip()[-300:]}")
    return int(json.loads(p.stdout)["osd"]["op_out_bytes"])


def body(work):
    ns = namespace("fleet")
    src = store_with_remote(os.path.join(work, "src"), ns)
    f = make_model(os.path.join(work, "model.safetensors"), 16, seed=81, tensors=24)
    src.ok("import", f, "llm:1")
    stored = src.ok("push", "llm:1", json_out=True).json()["moved_bytes"]
    check(stored > 8 << 20, f"push moved only {stored} bytes of a 16 MB model")
    want = tree_sha256(f)
    hosts = [store_with_remote(os.path.join(work, f"host{h}"), ns) for h in range(HOSTS)]

    before = osd_out_bytes()
    procs = []
    for h, host in enumerate(hosts):
        for r in range(READERS):
            script = (shlex.join(host.argv("pull", "--wait", "llm:1", json_out=True)) + " && " +
                      shlex.join(host.argv("warm", "llm:1")) + " >/dev/null")
            procs.append((h, r, popen(["sh", "-c", script], stdin=subprocess.DEVNULL,
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)))
    fetched = [0] * HOSTS
    for h, r, p in procs:
        out, err = p.communicate(timeout=600)
        check(p.returncode == 0, f"host {h} reader {r}: pull then warm exited {p.returncode}: "
                                 f"{err[-500:]!r}")
        j = json.loads(out)
        if j["moved_chunks"] > 0:
            fetched[h] += 1
    read = osd_out_bytes() - before
    copies = read / stored
    log(f"{HOSTS} hosts x {READERS} readers: the OSD sent {read} bytes = {copies:.2f} copies of "
        f"the model's {stored} stored bytes; pulls that fetched chunks per host: {fetched}")
    check(all(n == 1 for n in fetched),
          f"on each host exactly one pull must fetch the chunks, the others none: {fetched}")
    check(0.9 * HOSTS <= copies <= 1.25 * HOSTS,
          f"the fleet read {copies:.2f} copies of the model, want about {HOSTS} (one per host, "
          f"not {HOSTS * READERS}, one per process)")
    for h in (0, HOSTS - 1):
        hosts[h].export_matches("llm:1", want, work)


if __name__ == "__main__":
    run_test("remote_fleet", body)
