#!/usr/bin/env python3
"""A generation's NAMES file is checked before anyone trusts it.

Inference processes (the C API) resolve names from STORE/gen/N/NAMES without
opening the database, so a damaged NAMES file must never be believed. Two
models "a:v1" and "b:v1" with different bytes are imported. Then, each time
on a fresh copy of the good NAMES file:
  - one flipped bit in a digest: the C API's model open fails with
    PSTORE_ERR_CORRUPTION naming the file (it said NOT_FOUND before), and
    `pstore verify` exits 5 with a problem naming the file;
  - a's digest replaced by b's (the checksum left as it was): the C API
    refuses to open a:v1 (before, it opened b's bytes under a's name), and
    verify reports it;
  - the same with the checksum recomputed (a file that passes its own check
    but disagrees with the database; only someone who can write the store's
    files can make one, and readers then believe it): verify reports that
    NAMES points a:v1 at b's digest while the database points it at a's;
  - a file of the old form (no checksum line) that points a:v1 at b: readers
    do not use it, so the C API opens a's true bytes; a writing command
    (`pstore compact`) then publishes a checked NAMES file.
After each damage, `pstore compact` publishes a good file and a reader gets
a's bytes again. Last, CURRENT is made to name a generation that does not
exist: readers and verify fail with a corruption naming CURRENT (not a
"busy" retry error), and compact publishes a new generation. The reader is tests/tools/pager_worker, which checks every
byte it gets against the model's source file.

Environment: PSTORE_BIN, MAKE_MODEL, PAGER_WORKER.
"""
import glob
import os

from harness import EXIT_CORRUPT, Store, check, env_path, log, make_model, run_cmd, run_test


def current_names(store):
    with open(os.path.join(store.root, "CURRENT")) as f:
        n = int(f.read().strip())
    return os.path.join(store.root, "gen", f"{n:010d}", "NAMES")


def reader(store, ref, source):
    """Runs a C API reader of ref; returns (ok, its last JSON line as text)."""
    p = run_cmd([env_path("PAGER_WORKER"), store.root, ref, source, "load"], timeout=120)
    last = p.stdout.strip().splitlines()[-1] if p.stdout.strip() else p.stderr
    return p.returncode == 0 and '"ok": true' in last, last


def verify_problems(store):
    r = store.run("verify", json_out=True)
    return r.rc, r.json().get("problems", [])


def body(work):
    store = Store(os.path.join(work, "store"))
    a_src = make_model(os.path.join(work, "a.safetensors"), 2, seed=1)
    b_src = make_model(os.path.join(work, "b.safetensors"), 2, seed=2)
    store.ok("import", a_src, "a:v1")
    store.ok("import", b_src, "b:v1")
    names = store.ls()
    a_digest, b_digest = names["a:v1"]["digest"], names["b:v1"]["digest"]
    ok, out = reader(store, "a:v1", a_src)
    check(ok, f"a healthy store's reader failed: {out}")
    store.verify_ok("healthy store")

    path = current_names(store)
    with open(path, "rb") as f:
        good = f.read()
    check(good.startswith(b"PSTNAMES 1 "), f"{path} has no checksum line: {good[:80]!r}")

    def damage_then(new_bytes, what, reader_ok, verify_words):
        p = current_names(store)
        with open(p, "wb") as f:
            f.write(new_bytes)
        log(f"NAMES: {what}")
        ok, out = reader(store, "a:v1", a_src)
        if reader_ok is None:
            pass  # a forged file that passes its checksum: see the docstring
        elif reader_ok:
            check(ok, f"{what}: the reader should use the database and get a's bytes: {out}")
        else:
            check(not ok and "corruption" in out.lower() and p in out,
                  f"{what}: the reader should fail with a corruption naming {p}: {out}")
        rc, problems = verify_problems(store)
        if verify_words:
            check(rc == EXIT_CORRUPT, f"{what}: verify exited {rc}, want {EXIT_CORRUPT}")
            hit = [q for q in problems if q.get("file") == p
                   and all(w in q.get("error", "") for w in verify_words)]
            check(hit, f"{what}: verify names no problem in {p} with {verify_words}: {problems}")
        else:
            check(rc == 0 and not problems, f"{what}: verify reports {rc} {problems}")
        ls = store.ls()
        check(ls["a:v1"]["digest"] == a_digest, f"{what}: ls changed: {ls}")
        # A writing command publishes a good file from the database.
        store.ok("compact")
        p = current_names(store)
        with open(p, "rb") as f:
            check(f.read() == good, f"{what}: compact did not publish a good NAMES file")
        ok, out = reader(store, "a:v1", a_src)
        check(ok, f"{what}: after compact the reader still fails: {out}")
        store.verify_ok(f"{what}, after compact")

    # One flipped bit in a's digest (the first hex digit of its line).
    at = good.index(a_digest.encode())
    flipped = bytearray(good)
    flipped[at] ^= 0x01
    damage_then(bytes(flipped), "one flipped bit", False, ["checksum"])

    # a pointed at b's digest, the checksum as it was.
    swapped = good.replace(("a:v1\t" + a_digest).encode(), ("a:v1\t" + b_digest).encode())
    check(swapped != good, "could not find a's line in NAMES")
    damage_then(swapped, "a pointed at b", False, ["checksum"])

    # The same with a checksum that matches: only the database can tell.
    # pstore writes such a file itself for a store where a:v1 is b's model:
    other = Store(os.path.join(work, "other"))
    other.ok("import", b_src, "a:v1")
    other.ok("import", b_src, "b:v1")
    with open(current_names(other), "rb") as f:
        forged = f.read()
    check(("a:v1\t" + b_digest).encode() in forged, f"unexpected NAMES in the second store: {forged!r}")
    damage_then(forged, "a pointed at b with a matching checksum", None, [a_digest, b_digest])

    # The old form: no checksum line, a:v1 pointed at b. Not trusted.
    old = "".join(f"{n}\t{d}\n" for n, d in sorted({"a:v1": b_digest, "b:v1": b_digest}.items()))
    damage_then(old.encode(), "old form without a checksum", True, None)


    # CURRENT naming a generation that does not exist (a flipped digit).
    cur = os.path.join(store.root, "CURRENT")
    with open(cur) as f:
        n = int(f.read().strip())
    with open(cur, "w") as f:
        f.write(f"{n + 40}\n")
    ok, out = reader(store, "a:v1", a_src)
    check(not ok and "corruption" in out.lower() and cur in out,
          f"CURRENT naming a missing generation: want a corruption naming {cur}: {out}")
    r = store.run("verify")
    check(r.rc == EXIT_CORRUPT and cur in r.err, f"verify with a bad CURRENT: {r.describe()}")
    store.ok("compact")
    ok, out = reader(store, "a:v1", a_src)
    check(ok, f"after compact the reader still fails: {out}")
    store.verify_ok("after compact republished CURRENT")


run_test("trust_names", body)
