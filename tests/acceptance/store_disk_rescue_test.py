#!/usr/bin/env python3
"""A store that fills its own disk is rescued with pstore commands alone.

On a small tmpfs that holds the store and nothing else:
  1. A model imports; the store sets space aside (STORE/RESERVE).
  2. A model larger than the free space: import exits 7, saying nothing was
     imported; without any compact the store's chunks are the first model's
     again and its disk use is back within 1 MB; no OPTIONS-*.dbtmp file is
     left in db/.
  3. Models imported with the raw profile fill the disk, smaller and
     smaller, until less than 16 kB is free or 40 were tried (each import
     that does not fit must be refused and cleaned up; a smaller one is
     tried next); less than 256 kB must be left.
  4. On that full disk: import exits 7 with a message that names `pstore rm`
     and `pstore compact`, and leaves no chunk behind (stat's chunks and
     stored bytes unchanged); `tag` leaves the reserve as it was; with the
     reserve deleted (less than 8 MB free, too little to set it aside again),
     an import that would fit in its space exits 7 with that message before
     writing a chunk; `rm` of the biggest model works, `compact` frees its
     space, the reserve is back, a new import works, every model left
     verifies and exports byte-identical.
Needs root to mount the tmpfs (FAILS otherwise, as store_full_disk does).

Environment: PSTORE_BIN, MAKE_MODEL.
"""
import glob
import os

from harness import EXIT_NO_SPACE, Store, check, log, make_model, run_test, tree_sha256
from store_full_disk_test import free_bytes, mount_tmpfs

SIZE_MB = 40


def body(work):
    mnt = os.path.join(work, "mnt")
    mount_tmpfs(mnt)
    store = Store(os.path.join(mnt, "store"))
    out = os.path.join(work, "out")
    os.makedirs(out)
    models = {}

    def make(name, mb, seed):
        return make_model(os.path.join(work, name + ".safetensors"), mb, seed=seed, tensors=8)

    def imported(ref, src, *extra):
        r = store.run("import", src, ref, *extra)
        if r.rc == 0:
            models[ref] = tree_sha256(src)
        os.unlink(src)
        return r

    def no_dbtmp(what):
        left = glob.glob(os.path.join(store.root, "db", "OPTIONS-*.dbtmp"))
        check(not left, f"{what}: leftover {left}")

    def intact(what):
        check(sorted(store.ls()) == sorted(models), f"{what}: store lists {sorted(store.ls())}, "
                                                    f"want {sorted(models)}")
        store.verify_ok(what)
        for ref, want in models.items():
            store.export_matches(ref, want, out)

    # 1.
    r = imported("first:v1", make("first", 4, 71))
    check(r.rc == 0, "first import: " + r.describe())
    reserve = os.path.join(store.root, "RESERVE")
    check(os.path.isfile(reserve), "the store set no space aside (no RESERVE file)")
    s1 = store.stat()

    # 2.
    r = imported("big:v1", make("big", 48, 72), "--profile", "raw")
    check(r.rc == EXIT_NO_SPACE and "not imported" in r.err, "oversized import: " + r.describe())
    s2 = store.stat()
    check((s2["chunks"], s2["stored_bytes"]) == (s1["chunks"], s1["stored_bytes"]),
          f"the failed import left chunks behind: {s2} vs {s1}")
    check(abs(s2["disk_bytes"] - s1["disk_bytes"]) <= 1 << 20,
          f"the failed import left {s2['disk_bytes'] - s1['disk_bytes']} bytes behind")
    check(os.path.isfile(reserve), "the reserve is gone after the failed import")
    no_dbtmp("after the failed import")
    intact("after the failed import")

    # 3. Fill the disk with the store alone.
    seed, n, sizes, scale = 80, 0, {}, 0.8
    def refusing():  # the reserve spent and no room to set it aside: imports refuse to start
        return not os.path.isfile(reserve) and free_bytes(mnt) < 8 << 20

    while free_bytes(mnt) >= 16 << 10 and n < 40 and not refusing():
        free = free_bytes(mnt)
        mb = max(0.004, free * scale / 1e6)
        r = imported(f"fill{n}:v1", make(f"fill{n}", round(mb, 3), seed), "--profile", "raw")
        check(r.rc in (0, EXIT_NO_SPACE), "filling import: " + r.describe())
        if r.rc == 0:
            sizes[f"fill{n}:v1"] = mb
        else:
            scale /= 2
            if "was imported" in r.err:  # committed, but not published
                models[f"fill{n}:v1"] = None
        seed += 1
        n += 1
    log(f"{n} filling imports; {free_bytes(mnt)} bytes free, {len(models)} models")
    # Full: no room left, or (when a failed import spent the reserve) too
    # little to set the reserve aside again, so that no import can start.
    check(free_bytes(mnt) < 256 << 10 or refusing(),
          f"could not fill the disk: {free_bytes(mnt)} bytes free")
    biggest = max(sizes, key=lambda m: sizes[m])

    # 4. Rescue. (An import that runs out of space part-way once filled the
    # disk to the last byte with its chunks, and then no command could open
    # the store.)
    full = store.stat()
    r = imported("late:v1", make("late", 2, 99), "--profile", "raw")
    check(r.rc == EXIT_NO_SPACE, "import on a full disk: " + r.describe())
    check("pstore rm" in r.err and "pstore compact" in r.err,
          "the message should say how to rescue the store: " + r.describe())
    s = store.stat()
    check((s["chunks"], s["stored_bytes"]) == (full["chunks"], full["stored_bytes"]),
          f"the import on a full disk left chunks behind: {s} vs {full}")
    no_dbtmp("after the import on a full disk")
    # tag frees nothing: it must leave the reserve (it once released it).
    had_reserve = os.path.isfile(reserve)
    r = store.run("tag", "first:v1", "first:alias")
    check(r.rc in (0, EXIT_NO_SPACE), "tag on a full disk: " + r.describe())
    if r.rc == 0:
        models["first:alias"] = models["first:v1"]
    check(os.path.isfile(reserve) == had_reserve, "tag released the reserve")
    log(f"full disk: reserve {'kept' if had_reserve else 'gone'}, tag exited {r.rc}")
    # The reserve gone (as tag once released it) and too little room to set
    # it aside again: an import that would fit in the reserve's space refuses
    # to start, so rm and compact keep room to run.
    if had_reserve:
        os.unlink(reserve)
    check(free_bytes(mnt) < 8 << 20, f"{free_bytes(mnt)} bytes free: the reserve would fit")
    free = free_bytes(mnt)
    r = imported("late:v1", make("late", 2, 99), "--profile", "raw")
    check(r.rc == EXIT_NO_SPACE and "pstore rm" in r.err and "pstore compact" in r.err,
          "import with the reserve gone: " + r.describe())
    s = store.stat()
    check((s["chunks"], s["stored_bytes"]) == (full["chunks"], full["stored_bytes"]),
          f"the import with the reserve gone wrote chunks: {s} vs {full}")
    check(free_bytes(mnt) >= free - (256 << 10),
          f"the import with the reserve gone took {free - free_bytes(mnt)} bytes")
    check(not os.path.isfile(reserve), "a reserve appeared without room for it")
    store.ok("rm", biggest)
    models.pop(biggest)
    store.ok("compact")
    log(f"after rm {biggest} and compact: {free_bytes(mnt)} bytes free")
    check(os.path.isfile(reserve), "the reserve was not set aside again after compact")
    no_dbtmp("after compact")
    r = imported("late:v1", make("late", 1, 99))
    check(r.rc == 0, "import after the rescue: " + r.describe())
    intact("after the rescue")


if __name__ == "__main__":
    run_test("store_disk_rescue", body)
