#!/usr/bin/env python3
"""A full /dev/shm during a bulk load: `pstore warm` of a 48 MB model of 400
tensors in a mount namespace whose /dev/shm is a 24 MB tmpfs. A bulk load's
first batch, in file order, reserves most of the model's 2 MiB memory units
at once, and they cannot all fit: warm
exits 7 (no space) with a message naming /dev/shm, and the store is
untouched: outside that namespace the same model then warms and exports
byte-identical. The test needs root and unshare(1) (util-linux); without
them it is skipped.

Environment: PSTORE_BIN, MAKE_MODEL.
"""
import os
import shutil
import subprocess

from harness import EXIT_NO_SPACE, Skip, Store, check, log, make_model, run_test, sha256
from pager_harness import drop_segments


def body(work):
    if os.geteuid() != 0 or not shutil.which("unshare"):
        raise Skip("needs root and unshare(1) to mount a small tmpfs over /dev/shm")
    store = Store(os.path.join(work, "store"))
    src = make_model(os.path.join(work, "m.safetensors"), mb=48, seed=4, tensors=400)
    store.ok("import", src, "m:1")
    shell = 'mount -t tmpfs -o size=24m tmpfs /dev/shm && exec "$@"'
    argv = ["unshare", "-m", "--propagation", "private", "sh", "-c", shell, "sh",
            *store.argv("warm", "m:1")]
    p = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    if p.returncode != EXIT_NO_SPACE and "mount" in p.stderr:
        raise Skip(f"cannot mount a tmpfs over /dev/shm here: {p.stderr.strip()[-300:]}")
    check(p.returncode == EXIT_NO_SPACE,
          f"warm with /dev/shm full: want exit {EXIT_NO_SPACE}, got {p.returncode}: "
          f"{p.stdout[-500:]} {p.stderr[-500:]}")
    check("/dev/shm" in p.stderr, f"the message does not name /dev/shm: {p.stderr!r}")
    log(f"warm with /dev/shm full: exit {p.returncode}: {p.stderr.strip()[:200]}")
    # Nothing lost: the model loads in full where there is room.
    drop_segments(store)
    store.ok("warm", "m:1")
    out = os.path.join(work, "out.safetensors")
    store.ok("export", "m:1", out)
    check(sha256(out) == sha256(src), "the exported model differs from its source")
    drop_segments(store)


run_test("pager_full_shm", body)
