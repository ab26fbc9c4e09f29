#!/usr/bin/env python3
"""Group mode works end to end, and a reader that checks cannot be poisoned.

Users without accounts: a member (uid 54321, gid 54322), a second member
(uid 54325, gid 54322) and an outsider (uid 54323, gid 54324), run through
`setpriv`. Every process runs with umask 077, the least helpful one.

1. A store made owner-only: its folder is 0700 and a member cannot open it.
   The owner reads model a, so a budget file and a segment exist (0600).
2. `pstore config --group 54322`: every folder of the store is 02750 and
   every file 0640, all of group 54322; the existing budget file and segment
   are 0660 of that group. A file someone else put in the store's folder is
   left alone.
3. The member opens a and gets the right bytes (pager_worker checks each one);
   a model imported later (a new generation, by an import that also makes
   LOCK again after it was deleted) is readable by the member too,
   and the member's `pstore verify` passes, saying that it could not check
   db/ (whose new files are the writer's alone).
4. With no shared memory left, the member is the first to open the store:
   the budget file and segment it creates are 0660 of the group, and the
   second member and the owner use them. A member that opens the store while
   another has just created the budget file (0600 until it sets the group's
   mode) waits for the mode instead of failing.
5. The outsider cannot open the store; the member cannot write into its folder.
6. The member overwrites bytes of a's segment (it may write segments). A
   reader without checking gets wrong bytes (what group mode trusts); a
   reader with check_shared gets no wrong byte: acquires fail with a
   corruption naming the tensor and the segment, and copies come out right
   (decoded from the store). After `pstore ps --gc-all` the checking reader
   gets every tensor again.
7. A checking reader acquires and releases every tensor, the member XORs the
   segment's bytes, the reader acquires again with the same handle: the
   acquires fail (the check runs whenever this process's hold on a tensor
   starts, not only the first time), nothing wrong is handed out.
8. A checking reader has model c (one tensor of several chunks) open; the
   member copies the tensor's second chunk over its first in the segment and
   the second chunk's key over the first's in the manifest copy kept in the
   segment. A second open of c in the same process uses the manifest checked
   when the segment was attached, so acquires fail and copies come out right;
   so again after the member sets the header's manifest length far past the
   segment's end.

Environment: PSTORE_BIN, MAKE_MODEL, PAGER_WORKER.
"""
import glob
import json
import os
import stat
import subprocess
import time

from harness import Skip, Store, check, env_path, log, make_model, run_test

GID = 54322
MEMBER = ["setpriv", "--reuid=54321", f"--regid={GID}", "--clear-groups", "--"]
MEMBER2 = ["setpriv", "--reuid=54325", f"--regid={GID}", "--clear-groups", "--"]
OUTSIDER = ["setpriv", "--reuid=54323", "--regid=54324", "--clear-groups", "--"]


def worker(store, ref, source, mode, as_user=(), check_shared=False):
    argv = list(as_user) + [env_path("PAGER_WORKER"), store.root, ref, source, mode]
    if check_shared:
        argv.append("--check")
    p = subprocess.run(argv, capture_output=True, text=True, timeout=300)
    lines = [l for l in p.stdout.splitlines() if l.startswith("{")]
    last = json.loads(lines[-1]) if lines else {}
    return p.returncode, last, p.stderr


class Rounds:
    """pager_worker in `rounds` mode: one scan per line sent."""

    def __init__(self, store, ref, source, how, as_user=()):
        argv = list(as_user) + [env_path("PAGER_WORKER"), store.root, ref, source, "rounds",
                                how, "--check"]
        self.p = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True)

    def result(self):
        while True:
            line = self.p.stdout.readline()
            if not line:
                err = self.p.stderr.read()
                check(False, f"pager_worker rounds ended: rc {self.p.wait()} {err[-800:]}")
            if line.startswith("{"):
                return json.loads(line)

    def next(self):
        self.p.stdin.write("go\n")
        self.p.stdin.flush()
        return self.result()

    def close(self):
        self.p.stdin.close()
        self.p.stdout.read()
        err = self.p.stderr.read()
        return self.p.wait(timeout=120), err


# SegmentHeader (pager/segment.h): manifest_off and manifest_len at byte 88,
# data_off and data_bytes at byte 200.
XOR_DATA = (
    "import os, struct, sys\n"
    "fd = os.open(sys.argv[1], os.O_RDWR)\n"
    "data_off, data_bytes = struct.unpack_from('<QQ', os.pread(fd, 224, 0), 200)\n"
    "buf = bytearray(os.pread(fd, data_bytes, data_off))\n"
    "for i in range(0, len(buf), 256): buf[i] ^= 0x5a\n"
    "os.pwrite(fd, bytes(buf), data_off)\n")

# Copies the one tensor's chunk 1 over its chunk 0, in the data and in the
# manifest's chunk keys (the last 16 bytes per chunk of the manifest).
# argv: segment, source safetensors file.
FORGE_CHUNK = (
    "import json, os, struct, sys\n"
    "fd = os.open(sys.argv[1], os.O_RDWR)\n"
    "hdr = os.pread(fd, 224, 0)\n"
    "moff, mlen = struct.unpack_from('<QQ', hdr, 88)\n"
    "data_off, data_bytes = struct.unpack_from('<QQ', hdr, 200)\n"
    "man = os.pread(fd, mlen, moff)\n"
    "cs, shift, i = 0, 0, 6\n"
    "while True:\n"
    "    b = man[i]; cs |= (b & 0x7f) << shift; shift += 7; i += 1\n"
    "    if b < 0x80: break\n"
    "src = open(sys.argv[2], 'rb').read()\n"
    "n = struct.unpack_from('<Q', src, 0)[0]\n"
    "(t,) = [v for k, v in json.loads(src[8:8 + n]).items() if k != '__metadata__']\n"
    "size = t['data_offsets'][1] - t['data_offsets'][0]\n"
    "body = src[8 + n + t['data_offsets'][0]:][:size]\n"
    "nchunks = (size + cs - 1) // cs\n"
    "assert nchunks >= 2, (size, cs)\n"
    "data = os.pread(fd, data_bytes, data_off)\n"
    "at = data.find(body[:cs])\n"
    "assert at >= 0, 'tensor not found in the segment'\n"
    "os.pwrite(fd, data[at + cs:at + 2 * cs], data_off + at)\n"
    "keys = moff + mlen - 16 * nchunks\n"
    "os.pwrite(fd, os.pread(fd, 16, keys + 16), keys)\n")

BIG_MANIFEST = (
    "import os, struct, sys\n"
    "fd = os.open(sys.argv[1], os.O_RDWR)\n"
    "os.pwrite(fd, struct.pack('<Q', 1 << 40), 96)\n")


def as_member(script, *args):
    p = subprocess.run(MEMBER + ["/usr/bin/python3", "-c", script] + list(args),
                       capture_output=True, text=True)
    check(p.returncode == 0, f"the member's script failed: {p.stderr[-800:]}")


def shm_objects(store):
    with open(os.path.join(store.root, "ID")) as f:
        sid = f.read().strip()
    return sorted(glob.glob(f"/dev/shm/pstore-{sid}-*"))


def check_modes(store, what):
    bad = []
    for dirpath, dirs, files in os.walk(store.root):
        # db/ is the writer's alone (readers open generations): RocksDB
        # makes its files with the umask; a generation that links them
        # gives them the group's mode.
        if os.path.relpath(dirpath, store.root).split(os.sep)[0] == "db":
            files = []
        for name in [dirpath] + [os.path.join(dirpath, f) for f in files]:
            st = os.lstat(name)
            want = 0o2750 if stat.S_ISDIR(st.st_mode) else 0o640
            if stat.S_IMODE(st.st_mode) != want or st.st_gid != GID:
                bad.append(f"{name} {oct(stat.S_IMODE(st.st_mode))} gid {st.st_gid}")
    check(not bad, f"{what}: files not {{02750, 0640}} of group {GID}: {bad[:10]}")
    objs = shm_objects(store)
    check(objs, f"{what}: no shared memory objects")
    for o in objs:
        st = os.stat(o)
        check(stat.S_IMODE(st.st_mode) == 0o660 and st.st_gid == GID,
              f"{what}: {o} is {oct(stat.S_IMODE(st.st_mode))} of gid {st.st_gid}, want 0660 of {GID}")


def body(work):
    if os.geteuid() != 0:
        raise Skip("needs root (to act as other users with setpriv)")
    os.umask(0o077)
    os.chmod(work, 0o755)
    store = Store(os.path.join(work, "store"))
    a_src = make_model(os.path.join(work, "a.safetensors"), 3, seed=11)
    b_src = make_model(os.path.join(work, "b.safetensors"), 2, seed=12)
    for f in (a_src, b_src):
        os.chmod(f, 0o644)
    store.ok("import", a_src, "a:v1")

    # 1. Owner only.
    check(stat.S_IMODE(os.stat(store.root).st_mode) == 0o700,
          f"a new store's folder is {oct(os.stat(store.root).st_mode)}, want 0700")
    rc, last, err = worker(store, "a:v1", a_src, "load")
    check(rc == 0 and last.get("ok"), f"the owner's reader failed: {last} {err[-500:]}")
    for o in shm_objects(store):
        check(stat.S_IMODE(os.stat(o).st_mode) == 0o600, f"{o} is not 0600 before group mode")
    rc, last, err = worker(store, "a:v1", a_src, "load", MEMBER)
    check(rc != 0, "a member opened an owner-only store")

    # 2. Group mode, on what exists (and only on what is pstore's).
    foreign = os.path.join(store.root, "notes.txt")
    with open(foreign, "w") as f:
        f.write("someone else's file\n")
    os.chmod(foreign, 0o604)
    store.ok("config", "--group", str(GID))
    check(stat.S_IMODE(os.stat(foreign).st_mode) == 0o604,
          f"config --group changed a file that is not pstore's: {oct(os.stat(foreign).st_mode)}")
    os.unlink(foreign)
    check_modes(store, "after config --group")

    # 3. Members read.
    rc, last, err = worker(store, "a:v1", a_src, "load", MEMBER)
    check(rc == 0 and last.get("ok") and last.get("mismatches") == 0,
          f"a member could not read a:v1 in group mode: {last} {err[-800:]}")
    os.unlink(os.path.join(store.root, "LOCK"))  # made again by the import: the group's mode
    store.ok("import", b_src, "b:v1")
    rc, last, err = worker(store, "b:v1", b_src, "load", MEMBER)
    check(rc == 0 and last.get("ok"), f"a member could not read a model imported later: {last} {err[-800:]}")
    check_modes(store, "after a later import")
    # A member's verify after an import (db/'s new files are the writer's
    # alone, umask 077): the generations are checked, db/ is not, and it says so.
    p = subprocess.run(MEMBER + store.argv("verify", json_out=True), capture_output=True,
                       text=True, timeout=300)
    j = json.loads(p.stdout) if p.stdout.strip().startswith("{") else {}
    check(p.returncode == 0 and j.get("ok") and j.get("db_checked") is False and
          j.get("db_not_checked_reason"),
          f"a member's verify --json: rc {p.returncode} {p.stdout[-500:]} {p.stderr[-500:]}")
    p = subprocess.run(MEMBER + store.argv("verify"), capture_output=True, text=True, timeout=300)
    check(p.returncode == 0 and "notice: the writer's database (db/) was not checked" in p.stdout,
          f"a member's verify: rc {p.returncode} {p.stdout[-500:]} {p.stderr[-500:]}")

    # 4. A member creates the shared memory; others use it.
    store.ok("ps", "--gc-all")
    for o in shm_objects(store):
        os.unlink(o)  # the budget file too: nobody has the store open
    rc, last, err = worker(store, "a:v1", a_src, "load", MEMBER)
    check(rc == 0 and last.get("ok"), f"the first member failed: {last} {err[-800:]}")
    check(last.get("chunk_loads", 0) > 0, f"the member did not load a:v1 itself: {last}")
    check_modes(store, "shared memory made by a member")
    rc, last, err = worker(store, "a:v1", a_src, "load", MEMBER2)
    check(rc == 0 and last.get("ok") and last.get("chunk_loads") == 0,
          f"the second member could not use the first one's shared memory: {last} {err[-800:]}")
    rc, last, err = worker(store, "a:v1", a_src, "load")
    check(rc == 0 and last.get("ok"), f"the owner could not use a member's shared memory: {last}")

    # 4b. The window in which a member has just created the budget object
    # (still of its umask's mode, 0600) before giving it the group's mode: a
    # second member opening then waits for it instead of failing.
    store.ok("ps", "--gc-all")
    for o in shm_objects(store):
        os.unlink(o)
    with open(os.path.join(store.root, "ID")) as f:
        budget = f"/dev/shm/pstore-{f.read().strip()}-budget"
    subprocess.run(MEMBER + ["/usr/bin/python3", "-c",
                             f"import os; os.close(os.open({budget!r}, os.O_CREAT | os.O_RDWR, 0o600))"],
                   check=True)
    second = subprocess.Popen(MEMBER2 + [env_path("PAGER_WORKER"), store.root, "a:v1", a_src, "load"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(0.5)
    os.chown(budget, -1, GID)
    os.chmod(budget, 0o660)
    out, err = second.communicate(timeout=300)
    check(second.returncode == 0,
          f"a member opening while another had just created the budget object failed: {out[-300:]} {err[-500:]}")
    log("a member waits for a just-created budget object to get the group's mode")

    # 5. Outsiders stay out; members do not write the store.
    rc, last, err = worker(store, "a:v1", a_src, "load", OUTSIDER)
    check(rc != 0 and "ermission denied" in (str(last) + err),
          f"an outsider: want a permission error, got rc {rc}: {last} {err[-500:]}")
    p = subprocess.run(MEMBER + ["/bin/sh", "-c", f"touch {store.root}/x || touch {store.root}/gen/x"],
                       capture_output=True, text=True)
    check(p.returncode != 0, "a member could create a file in the store's folder")

    # 6. A member writes into a's segment.
    segs = [o for o in shm_objects(store) if not o.endswith("-budget")]
    a_digest = store.ls()["a:v1"]["digest"]
    seg = [s for s in segs if a_digest in s]
    check(len(seg) == 1, f"no single segment of a:v1 among {segs}")
    poison = (
        "import os, struct, sys\n"
        "fd = os.open(sys.argv[1], os.O_RDWR)\n"
        "data_off, data_bytes = struct.unpack_from('<QQ', os.pread(fd, 224, 0), 200)\n"
        "buf = bytearray(os.pread(fd, data_bytes, data_off))\n"
        "for i in range(0, len(buf), 256): buf[i] ^= 0x5a\n"
        "os.pwrite(fd, bytes(buf), data_off)\n")
    p = subprocess.run(MEMBER + ["/usr/bin/python3", "-c", poison, seg[0]], capture_output=True,
                       text=True)
    check(p.returncode == 0, f"the member could not write the segment: {p.stderr[-500:]}")
    rc, last, err = worker(store, "a:v1", a_src, "scan")
    check(last.get("mismatches", 0) > 0,
          f"a reader without checking should have read the member's bytes: {last}")
    log(f"without checking: {last.get('mismatches')} tensors with wrong bytes (what group mode trusts)")
    rc, last, err = worker(store, "a:v1", a_src, "scan", check_shared=True)
    check(last.get("mismatches") == 0 and last.get("errors", 0) > 0,
          f"a checking reader: want errors and no wrong bytes, got {last} {err[-500:]}")
    check("does not match its key" in err and os.path.basename(seg[0]) in err,
          f"the checking reader's error does not name the segment: {err[-800:]}")
    rc, last, err = worker(store, "a:v1", a_src, "copy", check_shared=True)
    check(rc == 0 and last.get("mismatches") == 0 and last.get("errors") == 0,
          f"checked copies should come out right (decoded from the store): {last} {err[-500:]}")
    store.ok("ps", "--gc-all")
    rc, last, err = worker(store, "a:v1", a_src, "scan", check_shared=True)
    check(rc == 0 and last.get("mismatches") == 0 and last.get("errors") == 0,
          f"after ps --gc-all the checking reader still fails: {last} {err[-500:]}")

    # 7. Acquire, release, the member changes the bytes, acquire again.
    r = Rounds(store, "a:v1", a_src, "same")
    first = r.result()
    check(first["mismatches"] == 0 and first["errors"] == 0, f"round 0: {first}")
    seg = [o for o in shm_objects(store) if a_digest in o]
    check(len(seg) == 1, f"no single segment of a:v1: {seg}")
    as_member(XOR_DATA, seg[0])
    again = r.next()
    rc, err = r.close()
    check(again["mismatches"] == 0 and again["errors"] > 0,
          f"acquiring again after the member changed the bytes: want errors and no wrong "
          f"bytes, got {again} {err[-800:]}")
    store.ok("ps", "--gc-all")

    # 8. The manifest copy in the segment forged, then its length.
    c_src = make_model(os.path.join(work, "c.safetensors"), 4, seed=13, tensors=1, dtype="F16")
    os.chmod(c_src, 0o644)
    store.ok("import", c_src, "c:v1")
    c_digest = store.ls()["c:v1"]["digest"]
    r = Rounds(store, "c:v1", c_src, "new")
    first = r.result()
    check(first["mismatches"] == 0 and first["errors"] == 0, f"c, round 0: {first}")
    seg = [o for o in shm_objects(store) if c_digest in o]
    check(len(seg) == 1, f"no single segment of c:v1: {seg}")
    as_member(FORGE_CHUNK, seg[0], c_src)
    forged = r.next()
    check(forged["mismatches"] == 0 and forged["errors"] > 0,
          f"a second open after the member forged the manifest copy: want errors and no "
          f"wrong bytes, got {forged}")
    as_member(BIG_MANIFEST, seg[0])
    big = r.next()
    rc, err = r.close()
    check(big["mismatches"] == 0 and big["errors"] > 0 and rc == 0,
          f"a third open after the member set a huge manifest length: {big} rc {rc} {err[-800:]}")
    log(f"forged manifest copy: {forged['errors']} failed acquires, no wrong bytes")
    store.run("ps", "--gc-all")
    for o in shm_objects(store):
        os.unlink(o)  # a segment too damaged to inspect; nobody has the store open


run_test("trust_group", body)
