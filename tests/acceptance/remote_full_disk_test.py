#!/usr/bin/env python3
"""pull onto a full disk: a store on a 40 MB tmpfs, with a remote on the test
cluster.

  1. A 48 MB model is pushed from a store on the ordinary disk; an 8 MB one
     is imported into the store on the tmpfs.
  2. pull of the 48 MB model cannot fit: it exits 7 (no space) with a message
     that says so and what to do; the store lists only the first model, which
     verifies and exports byte-identical; and the space the failed pull took
     is back at once (the store's disk use within 1 MB of what it was, with
     no `compact`), as after a failed import.
  3. A small model then pulls and exports byte-identical.
The test needs root to mount the tmpfs; where mounting is not allowed it
FAILS, as the check it stands for was not made.

Environment: PSTORE_BIN, MAKE_MODEL, PSTORE_CEPH_CONF, PSTORE_CEPH_POOL.
"""
import os

from harness import EXIT_NO_SPACE, check, log, make_model, run_test, tree_sha256
from remote_harness import namespace, store_with_remote
from store_full_disk_test import free_bytes, intact, mount_tmpfs


def body(work):
    ns = namespace("full")
    src = store_with_remote(os.path.join(work, "src"), ns)
    models = {}
    for ref, mb, seed in (("big:1", 48, 71), ("small:1", 3, 72)):
        path = make_model(os.path.join(work, ref.replace(":", "-") + ".safetensors"), mb,
                          seed=seed, tensors=16)
        src.ok("import", path, ref)
        src.ok("push", ref)
        models[ref] = tree_sha256(path)
        os.unlink(path)

    mnt = os.path.join(work, "mnt")
    mount_tmpfs(mnt)
    dst = store_with_remote(os.path.join(mnt, "store"), ns)
    first = make_model(os.path.join(work, "first.safetensors"), 8, seed=73, tensors=8)
    dst.ok("import", first, "first:1")
    kept = {"first:1": tree_sha256(first)}
    out = os.path.join(work, "out")
    os.makedirs(out)

    before = dst.stat()
    log(f"first model: {before['disk_bytes']} bytes on disk, {free_bytes(mnt)} free")
    r = dst.run("pull", "big:1")
    check(r.rc == EXIT_NO_SPACE, "pull of 48 MB into 40 MB: want exit 7 (no space); " +
          r.describe())
    check("full" in r.err and "pstore compact" in r.err,
          f"the message must say the disk is full and what to do: {r.err!r}")
    log(f"pull of 48 MB into 40 MB: exit {r.rc}: {r.err.strip()[:300]}")
    intact(dst, kept, out, "after the failed pull")
    after = dst.stat()
    check((after["chunks"], after["stored_bytes"]) == (before["chunks"], before["stored_bytes"]),
          f"the failed pull left chunks behind: {after} vs {before}")
    check(abs(after["disk_bytes"] - before["disk_bytes"]) <= 1 << 20,
          f"the failed pull still takes disk space: {after['disk_bytes']} bytes on disk, "
          f"{before['disk_bytes']} before it (a failed import gives its space back at once)")

    dst.ok("pull", "small:1")
    kept["small:1"] = models["small:1"]
    intact(dst, kept, out, "after pulling a small model")


if __name__ == "__main__":
    run_test("remote_full_disk", body)
