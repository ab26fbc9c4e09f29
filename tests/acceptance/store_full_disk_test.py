#!/usr/bin/env python3
"""Full disk: a store on a 40 MB tmpfs.

  1. A 12 MB model fits and imports.
  2. A 48 MB model cannot fit: import exits 7 (no space) with a message that
     says so; the store lists only the first model, which verifies and
     exports byte-identical (to a folder off the tmpfs).
  3. compact removes whatever the failed import left: the chunk count and
     stored bytes are the first model's again, the disk use within 1 MB of
     what it was before the failed import; a small import then succeeds.
  4. A model sized from the measured free space and compression ratio to fill
     the disk to about 90% imports; with the disk that full, compact still
     works (it must not need free space the size of the store when there is
     nothing to rewrite), another oversized import fails with exit 7 and
     leaves the store intact, and removing the big model and compacting frees
     its space on the full disk, after which imports work again.
The test needs root to mount the tmpfs; where mounting is not allowed it
FAILS, as the check it stands for was not made.

Environment: PSTORE_BIN, MAKE_MODEL.
"""
import os
import subprocess

from harness import (EXIT_NO_SPACE, Failure, Store, at_exit, check, log, make_model, run_cmd,
                     run_test, tree_sha256)

SIZE_MB = 40


def free_bytes(path):
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


def used_fraction(path):
    st = os.statvfs(path)
    return 1 - st.f_bavail / st.f_blocks


def mount_tmpfs(mnt):
    os.makedirs(mnt)
    p = run_cmd(["mount", "-t", "tmpfs", "-o", f"size={SIZE_MB}m,mode=0700", "tmpfs", mnt],
                timeout=60)
    if p.returncode != 0:
        raise Failure(f"cannot mount a {SIZE_MB} MB tmpfs at {mnt} (exit {p.returncode}: "
                      f"{p.stderr.strip()}); this test needs root and a system that allows "
                      "mounting, and FAILS rather than pass without checking a full disk")

    def unmount():
        try:
            if run_cmd(["umount", mnt], timeout=60).returncode == 0:
                return
        except subprocess.TimeoutExpired:
            pass
        run_cmd(["umount", "-l", mnt], timeout=60)
    at_exit(unmount)


def intact(store, models, out, what):
    """The store lists exactly `models` (ref -> sha256), verifies, and exports
    each byte-identical into `out`."""
    check(sorted(store.ls()) == sorted(models), f"{what}: store lists {sorted(store.ls())}, "
                                                f"want {sorted(models)}")
    store.verify_ok(what)
    for ref, want in models.items():
        store.export_matches(ref, want, out)


def expect_no_space(store, src, ref, what):
    r = store.run("import", src, ref)
    check(r.rc == EXIT_NO_SPACE, f"{what}: want exit {EXIT_NO_SPACE} (no space); " + r.describe())
    check("space" in r.err.lower(), f"{what}: the message does not say the disk is full: {r.err!r}")
    log(f"{what}: exit {r.rc}: {r.err.strip()[:200]}")


def body(work):
    mnt = os.path.join(work, "mnt")
    mount_tmpfs(mnt)
    store = Store(os.path.join(mnt, "store"))
    out = os.path.join(work, "out")
    os.makedirs(out)
    models = {}

    def imported(ref, src):
        store.ok("import", src, ref)
        models[ref] = tree_sha256(src)
        os.unlink(src)

    def intact_now(what):
        intact(store, models, out, what)

    # 1. A model that fits.
    imported("first:v1", make_model(os.path.join(work, "first.safetensors"), 12, seed=61,
                                    tensors=16))
    s1 = store.stat()
    log(f"first model: {s1['stored_bytes']} stored, {s1['disk_bytes']} on disk, "
        f"{free_bytes(mnt)} free")

    # 2. One that cannot fit.
    big = make_model(os.path.join(work, "big.safetensors"), 48, seed=62, tensors=16)
    expect_no_space(store, big, "big:v1", "import of 48 MB into 40 MB")
    intact_now("after the failed import")

    # 3. compact clears the failed attempt's leftovers; imports work again.
    store.ok("compact")
    s2 = store.stat()
    check((s2["chunks"], s2["stored_bytes"]) == (s1["chunks"], s1["stored_bytes"]),
          f"after compact the store holds other chunks than the first model's: {s2} vs {s1}")
    check(abs(s2["disk_bytes"] - s1["disk_bytes"]) <= 1 << 20,
          f"after compact the store takes {s2['disk_bytes']} bytes, {s1['disk_bytes']} before "
          "the failed import")
    imported("small:v1", make_model(os.path.join(work, "small.safetensors"), 3, seed=63,
                                    tensors=8))
    intact_now("after the small import")

    # 4. Fill the disk to about 90%; compact, fail, remove, compact, import.
    s3 = store.stat()
    ratio = s3["stored_bytes"] / s3["unique_bytes"]
    target = 0.90 * SIZE_MB * (1 << 20) - (SIZE_MB * (1 << 20) - free_bytes(mnt))
    mb = target / ratio / 1e6
    imported("filler:v1", make_model(os.path.join(work, "filler.safetensors"), round(mb, 1),
                                      seed=64, tensors=16))
    full = used_fraction(mnt)
    log(f"filler of {mb:.1f} MB imported: disk {100 * full:.0f}% used, {free_bytes(mnt)} free")
    check(full > 0.8, f"the disk is only {100 * full:.0f}% used; the filler missed its target")
    r = store.run("compact", json_out=True)
    check(r.rc == 0, "compact on a nearly full disk with nothing to rewrite failed: " + r.describe())
    expect_no_space(store, make_model(os.path.join(work, "big2.safetensors"), 24, seed=65),
                    "big2:v1", f"import of 24 MB into a {100 * full:.0f}% full disk")
    intact_now("after the failed import on a nearly full disk")
    store.ok("rm", "filler:v1")
    models.pop("filler:v1")
    r = store.run("compact", json_out=True)
    check(r.rc == 0, "compact after removing the filler on a nearly full disk failed: " +
          r.describe())
    log(f"removed the filler and compacted: disk {100 * used_fraction(mnt):.0f}% used")
    s4 = store.stat()
    check(abs(s4["disk_bytes"] - s3["disk_bytes"]) <= 1 << 20,
          f"compact did not free the removed model's space: {s4['disk_bytes']} bytes on disk, "
          f"{s3['disk_bytes']} before it was imported")
    imported("after:v1", make_model(os.path.join(work, "after.safetensors"), 8, seed=66,
                                    tensors=8))
    intact_now("at the end")


if __name__ == "__main__":
    run_test("store_full_disk", body)
