#!/usr/bin/env python3
"""Publishing on a full disk: the flush before each generation's checkpoint.

A generation must hold no WAL with anything in it (each reader would replay
it into memory of its own), so the writer flushes before it checkpoints; on
a full disk that flush fails, and RocksDB then refuses every write until it
is resumed. On a 40 MB tmpfs, for each amount of free space from 0 to 12
pages (a filler file takes the rest; the store's reserve stays):
  1. `tag` of an imported model either works or exits 7 (no space); whatever
     it did, the store lists what it says and verifies. A tag that exits 7
     after committing its change says that it is recorded and that readers
     see it after the next writer command that succeeds.
  2. With the disk still full, `rm` of the model's first name (which may use
     the reserve) works: it publishes a generation that lists the tag when
     the tag committed, and that generation holds no WAL with anything in
     it. (`rm` is a new process: opening the store replays the tag's WAL and
     flushes it, so this checks that a change whose publish failed reaches
     readers with the next writer command, not the publish retried within
     one process after a failed flush: tests/store_test.cc's
     FullDiskPublishTest does that.)
  3. With the filler gone, another tag works and its generation holds no WAL
     either.
Needs root to mount the tmpfs (FAILS otherwise, as store_full_disk does).

Environment: PSTORE_BIN, MAKE_MODEL.
"""
import glob
import os
import shutil

from harness import EXIT_NO_SPACE, Store, check, log, make_model, run_test
from store_full_disk_test import free_bytes, mount_tmpfs

PAGE = 4096
RECORDED = ("is recorded in the store, but readers see it only after the next writer "
            "command that succeeds")


def wal_bytes(store):
    """The bytes of the WAL files of the store's current generation."""
    with open(os.path.join(store.root, "CURRENT")) as f:
        gen = os.path.join(store.root, "gen", "%010d" % int(f.read()))
    return {os.path.basename(p): os.path.getsize(p) for p in glob.glob(os.path.join(gen, "*.log"))}


def body(work):
    mnt = os.path.join(work, "mnt")
    mount_tmpfs(mnt)
    src = make_model(os.path.join(work, "a.safetensors"), 2, seed=91, tensors=400)
    filler = os.path.join(mnt, "filler")
    outcomes = {}
    for pages in range(13):
        store = Store(os.path.join(mnt, f"s{pages}"))
        store.ok("import", src, "a:1")
        with open(filler, "wb") as f:
            os.posix_fallocate(f.fileno(), 0, max(PAGE, free_bytes(mnt) - pages * PAGE))
        what = f"{pages} pages free"
        r = store.run("tag", "a:1", "a:2")
        check(r.rc in (0, EXIT_NO_SPACE), f"tag with {what}: " + r.describe())
        names = sorted(store.ls())
        check(names == (["a:1", "a:2"] if r.rc == 0 else ["a:1"]),
              f"tag with {what} exited {r.rc}; the store lists {names}")
        store.verify_ok(f"after the tag with {what}")
        r2 = store.run("rm", "a:1")
        check(r2.rc == 0, f"rm on the full disk ({what}) after the tag: " + r2.describe())
        names = sorted(store.ls())
        # A tag that failed after its commit is published by the next writer,
        # as its message says; one that failed before it is not.
        recorded = r.rc == 0 or RECORDED in r.err
        check(names == (["a:2"] if recorded else []),
              f"after the tag (exit {r.rc}, {r.err.strip()!r}) and rm with {what}, "
              f"the store lists {names}")
        wal = wal_bytes(store)
        check(not any(wal.values()), f"the generation rm published with {what} holds a WAL: {wal}")
        store.verify_ok(f"after the rm with {what}")
        os.unlink(filler)
        if not names:
            store.ok("import", src, "a:1")
        store.ok("tag", names[0] if names else "a:1", "b:1")
        wal = wal_bytes(store)
        check(not any(wal.values()), f"the generation of a tag with room holds a WAL: {wal}")
        outcomes[pages] = (r.rc, recorded, names)
        shutil.rmtree(store.root)
    log("tag exit code, whether it was recorded, and names after rm, by free pages: " +
        ", ".join(f"{k}: {v[0]} {v[1]} {v[2]}" for k, v in outcomes.items()))
    check(any(rc == EXIT_NO_SPACE for rc, _, _ in outcomes.values()) and
          any(rc == 0 for rc, _, _ in outcomes.values()),
          f"the sweep never made the tag fail and succeed: {outcomes}")


if __name__ == "__main__":
    run_test("store_full_publish", body)
