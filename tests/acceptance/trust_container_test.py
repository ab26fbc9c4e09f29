#!/usr/bin/env python3
"""A reader in a container shares the host's copy of a model.

A container runtime gives a service its own mount (and pid) namespace; the
supported way to share a store with it is to mount the store's folder
read-only and the host's /dev/shm (docs/operations.md, "Containers"). Here
`unshare --mount --pid --fork` makes the namespaces, the store is bind-mounted
read-only at another path inside, and /dev/shm is the host's.

1. A host reader (pager_worker, C API) opens a:v1 and holds every tensor.
2. The container reader opens a:v1 from the read-only mount: its bytes are
   right and it loads no chunk (it maps the host's copy); `pstore ps` on the
   host counts both processes on a's segment as alive.
3. The container reader opens b:v1, which nobody loaded yet: it reads the
   chunks from the read-only generation, and a host reader then maps the
   container's copy without loading anything.
4. A container reader that opened the store before c:v1 was imported opens
   c:v1 afterwards and gets its bytes.
5. Inside, the store really is read-only (a write fails), and readers change
   nothing in the store's folder.
6. After the container readers ran, `pstore ps --orphans` on the host finds
   nothing: a reader of a read-only store folder does not record its own
   path as the store's folder.
7. A store opened through a bind mount that is then unmounted: its recorded
   folder is gone, but a process still has the store open, so `pstore ps
   --orphans --gc` leaves its shared memory alone (and says it is in use).

Environment: PSTORE_BIN, MAKE_MODEL, PAGER_WORKER.
"""
import glob
import json
import os
import shlex
import subprocess

from harness import Skip, Store, check, env_path, log, make_model, run_test
from pager_harness import Worker


def tree_state(root):
    out = {}
    for dirpath, dirs, files in os.walk(root):
        for name in dirs + files:
            p = os.path.join(dirpath, name)
            st = os.lstat(p)
            out[os.path.relpath(p, root)] = (st.st_mode, st.st_size, st.st_mtime_ns)
    return out


class ContainerWorker(Worker):
    """A pager_worker in new mount and pid namespaces that sees the store
    read-only at view."""

    def __init__(self, store_root, view, ref, source, mode):
        inner = (f"mount --bind {shlex.quote(store_root)} {shlex.quote(view)} && "
                 f"mount -o remount,bind,ro {shlex.quote(view)} && "
                 f"if touch {shlex.quote(view)}/probe 2>/dev/null; then echo WRITABLE >&2; exit 3; fi && "
                 f"exec {shlex.quote(env_path('PAGER_WORKER'))} {shlex.quote(view)} {ref} "
                 f"{shlex.quote(source)} {mode}")
        self.argv = ["unshare", "--mount", "--pid", "--fork", "--propagation", "private",
                     "/bin/sh", "-c", inner]
        self.proc = subprocess.Popen(self.argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True)
        self.lines = []


def live_processes(store, digest):
    j = store.ok("ps", json_out=True).json()
    for s in j.get("segments", []):
        if s.get("digest") == digest:
            return sum(1 for p in s.get("processes", []) if p.get("alive"))
    return 0


def body(work):
    if os.geteuid() != 0:
        raise Skip("needs root (unshare --mount)")
    p = subprocess.run(["unshare", "--mount", "--pid", "--fork", "true"], capture_output=True)
    if p.returncode != 0:
        raise Skip(f"cannot make namespaces here: {p.stderr.decode()[-300:]}")
    store = Store(os.path.join(work, "store"))
    view = os.path.join(work, "view")
    os.mkdir(view)
    a_src = make_model(os.path.join(work, "a.safetensors"), 3, seed=21)
    b_src = make_model(os.path.join(work, "b.safetensors"), 2, seed=22)
    store.ok("import", a_src, "a:v1")
    store.ok("import", b_src, "b:v1")
    ls = store.ls()
    a_digest, b_digest = ls["a:v1"]["digest"], ls["b:v1"]["digest"]

    host = Worker(store.root, "a:v1", a_src, "all")
    workers = [host]
    try:
        h = host.wait_for("ready", 120)
        check(h.get("mismatches") == 0, f"host reader: {h}")
        before = tree_state(store.root)

        inside = ContainerWorker(store.root, view, "a:v1", a_src, "all")
        workers.append(inside)
        c = inside.wait_for("ready", 120)
        check(c.get("mismatches") == 0, f"container reader got wrong bytes: {c}")
        check(c.get("chunk_loads") == 0 and c.get("bytes_read") == 0,
              f"the container reader loaded chunks instead of mapping the host's copy: {c}")
        n = live_processes(store, a_digest)
        check(n == 2, f"pstore ps counts {n} live processes on a's segment, want 2 (host + container)")
        log("container reader maps the host's copy of a:v1; ps counts both")

        inside_b = ContainerWorker(store.root, view, "b:v1", b_src, "load")
        workers.append(inside_b)
        cb = inside_b.finish(120)
        check(cb.get("chunk_loads", 0) > 0, f"the container reader of b loaded nothing: {cb}")
        host_b = Worker(store.root, "b:v1", b_src, "load")
        workers.append(host_b)
        hb = host_b.finish(120)
        check(hb.get("chunk_loads") == 0, f"the host reader of b did not map the container's copy: {hb}")
        log("container reader loads b:v1 from the read-only store; the host maps its copy")

        mid = tree_state(store.root)
        check(mid == before, "the store's folder changed while only readers used it: "
              f"{sorted(k for k in set(mid) | set(before) if mid.get(k) != before.get(k))[:10]}")
        # A model imported after the container opened the store.
        c_src = make_model(os.path.join(work, "c.safetensors"), 1, seed=23)
        later = ContainerWorker(store.root, view, "a:v1", c_src, "later c:v1")
        workers.append(later)
        later.wait_for("ready", 120)
        store.ok("import", c_src, "c:v1")
        before = tree_state(store.root)  # the import changed it; readers must not
        later.send("go\n")
        lc = later.finish(120)
        check(lc.get("mismatches") == 0, f"the container reader of c:v1: {lc}")
        log("container reader opens a model imported after it opened the store")
        j = store.ok("ps", "--orphans", "--under", work, json_out=True).json()
        check(j.get("orphans") == [],
              f"after container readers, the host's store looks orphaned: {j.get('orphans')}")

        inside.finish(60)
        host.finish(60)
        after = tree_state(store.root)
        changed = {k for k in set(before) | set(after) if before.get(k) != after.get(k)}
        check(not changed, f"the store's folder changed while only readers used it: {sorted(changed)[:10]}")
    finally:
        for w in workers:
            if w.proc.poll() is None:
                w.kill()

    # 7. Through a bind mount, then unmounted while a process has the store open.
    store2 = Store(os.path.join(work, "store2"))
    store2.ok("import", a_src, "a:v1")
    with open(os.path.join(store2.root, "ID")) as f:
        sid2 = f.read().strip()
    view2 = os.path.join(work, "view2")
    os.mkdir(view2)
    subprocess.run(["mount", "--bind", store2.root, view2], check=True)
    mounted = True
    holder = None
    try:
        Worker(view2, "a:v1", a_src, "load").finish(120)  # a stays resident, unattached
        holder = Worker(view2, "a:v1", a_src, "later", "a:v1")  # the store open, no model
        holder.wait_for("ready", 120)
        subprocess.run(["umount", "-l", view2], check=True)
        mounted = False
        segs = sorted(glob.glob(f"/dev/shm/pstore-{sid2}-*"))
        check(len(segs) == 2, f"want a's segment and the budget object of store2: {segs}")
        p = store.run("ps", "--orphans", "--gc", "--under", work, json_out=True)
        check(p.rc == 0, f"ps --orphans --gc: {p.describe()}")
        left = sorted(glob.glob(f"/dev/shm/pstore-{sid2}-*"))
        check(left == segs, f"ps --orphans --gc removed shared memory of a store in use: {segs} -> {left}")
        o = [x for x in p.json().get("orphans", []) if x.get("store_id") == sid2]
        check(len(o) == 1 and o[0].get("store_in_use") is True,
              f"ps --orphans should list store2 as in use: {p.json()}")
        log("a store opened through an unmounted bind mount is in use: ps --orphans --gc leaves it")
        holder.kill()
        holder.proc.wait(60)
        holder = None
        p = store.run("ps", "--orphans", "--gc", "--under", work, json_out=True)
        check(p.rc == 0 and not glob.glob(f"/dev/shm/pstore-{sid2}-*"),
              f"once nobody has store2 open, ps --orphans --gc removes it: {p.describe()}")
    finally:
        if holder is not None and holder.proc.poll() is None:
            holder.kill()
        if mounted:
            subprocess.run(["umount", "-l", view2])


run_test("trust_container", body)
