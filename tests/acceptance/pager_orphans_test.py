#!/usr/bin/env python3
"""Shared memory of a store whose folder was deleted, and the budget object.

  - After `rm -rf` of a store's folder, `pstore ps --orphans` (no store
    needed) lists its shared memory with the folder and the reason; `--gc`
    removes every segment and the budget object nobody uses, and leaves all
    of it alone while a live process has the store open (it maps one of the
    segments), until that process is gone.
  - A folder that now holds another store: the old store's objects are
    orphans, the new store's are not.
  - A store that exists is never touched: its objects stay.
  - `ps --gc-all` in a store removes the budget object too once no segment
    and no process uses it, and not while a process has the store open.

Only stores under this test's scratch folder are collected (`--under`).

Environment: PSTORE_BIN, MAKE_MODEL, PAGER_WORKER.
"""
import glob
import os
import shutil

from harness import EXIT_NOT_FOUND, Store, at_exit, check, log, make_model, run_test
from pager_harness import Worker


def objects(store_id):
    return sorted(os.path.basename(p) for p in glob.glob(f"/dev/shm/pstore-{store_id}-*"))


def store_id(store):
    with open(os.path.join(store.root, "ID")) as f:
        return f.read().strip()


def unlink_objects(store_id):
    for p in glob.glob(f"/dev/shm/pstore-{store_id}-*"):
        try:
            os.unlink(p)
        except OSError:
            pass


def orphans(work, gc=False):
    args = ["ps", "--orphans", "--under", work] + (["--gc"] if gc else [])
    j = Store(os.path.join(work, "nowhere")).ok(*args, json_out=True).json()
    check(j.get("ok") is True, f"ps --orphans not ok: {j}")
    return {o["store_id"]: o for o in j["orphans"]}


def body(work):
    src = make_model(os.path.join(work, "m.safetensors"), 2, seed=5, tensors=6)

    # --- a deleted store, one of its segments still mapped ---------------------
    a = Store(os.path.join(work, "a"))
    a.ok("import", src, "m:v1")
    src2 = make_model(os.path.join(work, "m2.safetensors"), 2, seed=6, tensors=6)
    a.ok("import", src2, "m:v2")
    a.ok("warm", "m:v1")
    holder = Worker(a.root, "m:v2", src2, "all")
    at_exit(holder.kill)
    holder.wait_for("ready")
    a_id = store_id(a)
    at_exit(lambda: unlink_objects(a_id))  # the folder goes: the harness cannot find them
    check(f"pstore-{a_id}-budget" in objects(a_id), f"no budget object: {objects(a_id)}")
    check(len(objects(a_id)) == 3, f"expected 2 segments and the budget object: {objects(a_id)}")
    check(a_id not in orphans(work), "a store that exists was listed as an orphan")

    shutil.rmtree(a.root)
    r = a.run("ps", "--gc")
    check(r.rc == EXIT_NOT_FOUND, "ps --gc on a deleted store: " + r.describe())
    found = orphans(work)
    check(a_id in found and found[a_id]["folder"] == os.path.realpath(work) + "/a" and
          "gone" in found[a_id]["reason"] and found[a_id]["segments"] == 2,
          f"ps --orphans should list the deleted store: {found}")
    text = Store(work).ok("ps", "--orphans", "--under", work).out
    check(a_id in text and "gone" in text, f"ps --orphans prints: {text!r}")

    found = orphans(work, gc=True)
    check(found[a_id]["segments_removed"] == 0 and found[a_id]["store_in_use"] and
          not found[a_id]["budget_object_removed"],
          f"--gc should remove nothing of a store a process has open: {found}")
    check(len(objects(a_id)) == 3, f"expected both segments and the budget: {objects(a_id)}")
    holder.kill()
    found = orphans(work, gc=True)
    check(found[a_id]["segments_removed"] == 2 and found[a_id]["budget_object_removed"],
          f"--gc once the process is gone should remove it all: {found}")
    check(objects(a_id) == [], f"objects left after --gc: {objects(a_id)}")
    check(a_id not in orphans(work), "a collected store is still listed")

    # --- a folder that holds another store now ---------------------------------
    b = Store(os.path.join(work, "b"))
    b.ok("import", src, "m:v1")
    b.ok("warm", "m:v1")
    old_id = store_id(b)
    at_exit(lambda: unlink_objects(old_id))
    shutil.rmtree(b.root)
    b.ok("import", src, "m:v1")
    b.ok("warm", "m:v1")
    new_id = store_id(b)
    check(new_id != old_id, "the new store has the old one's id")
    found = orphans(work, gc=True)
    check(old_id in found and "another store" in found[old_id]["reason"] and
          new_id not in found, f"only the old store is an orphan: {found}")
    check(objects(old_id) == [], f"the old store's objects are left: {objects(old_id)}")
    check(len(objects(new_id)) == 2, f"the new store's objects were touched: {objects(new_id)}")

    # --- ps --gc-all removes the budget object when nothing uses it -------------
    user = Worker(b.root, "m:v1", src, "all")
    at_exit(user.kill)
    user.wait_for("ready")
    user.finish()
    opener = Worker(b.root, "m:v1", src, "later", "m:v1")
    at_exit(opener.kill)
    opener.wait_for("ready")
    b.ok("ps", "--gc-all")
    check(objects(new_id) == [f"pstore-{new_id}-budget"],
          f"with a process holding the store open, the budget object must stay: {objects(new_id)}")
    opener.kill()
    j = b.ok("ps", "--gc-all", json_out=True).json()
    check(j.get("budget_object_removed") is True and objects(new_id) == [],
          f"ps --gc-all should remove the unused budget object: {j} {objects(new_id)}")
    # The store still works: a new budget object is made.
    b.ok("warm", "m:v1")
    check(f"pstore-{new_id}-budget" in objects(new_id), "no budget object after warm")
    b.ok("ps", "--gc-all")
    log("orphans found and collected; existing stores left alone")


if __name__ == "__main__":
    run_test("pager_orphans", body)
