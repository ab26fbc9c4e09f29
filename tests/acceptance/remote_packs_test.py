#!/usr/bin/env python3
"""Damage and repair of the pack layout on a real Ceph cluster, with real
pstore and C API processes: a host with two remotes holding one model in
different layouts (packs on one, one object per chunk on the other) reads each
by that remote's own locations; a model pushed before packs opens lazily; a
host whose cached locations are lost or damaged fetches them again; a
model cached by the previous pstore opens from its spool without the network;
a host whose lazy/ disk is full still reads by locations it cannot cache; a
model cached as without locations finds its packs; a pull
reads a chunk whose frame in its pack is damaged from the good copy the chunk
index names, and otherwise fails naming the pack's byte range; a damaged
locations object, or one giving a chunk a frame longer than its chunk
encodes to, is an error naming the model and the remedy for pull and lazy
open (and, damaged, for gc, which deletes nothing); gc reports a name whose locations name a
missing pack and deletes nothing because of it; gc removes index entries
naming a missing pack from a shard longer than a page."""

import contextlib
import json
import os
import re
import shutil
import struct
import subprocess
import sys

from harness import EXIT_CORRUPT, check, env_path, log, run_cmd, run_test, tree_sha256
from remote_harness import (cluster, namespace, objects, pushed_model, rados, read_locations,
                            store_with_remote, to_old_layout)


def add_remote(store, name, ns):
    conf, pool = cluster()
    store.ok("remote", "add", name, f"rados:{pool}", "--conf", conf, "--namespace", ns,
             "--timeout", 20)


def load(store, ref, src, remote=None, *mode):
    """Runs pager_worker (every tensor acquired and checked against src)
    with PSTORE_REMOTE=remote; returns (ok, output)."""
    old = os.environ.get("PSTORE_REMOTE")
    if remote:
        os.environ["PSTORE_REMOTE"] = remote
    try:
        p = run_cmd([env_path("PAGER_WORKER"), store.root, ref, src] + list(mode or ["load"]),
                    timeout=300)
    finally:
        if old is None:
            os.environ.pop("PSTORE_REMOTE", None)
        else:
            os.environ["PSTORE_REMOTE"] = old
    last = p.stdout.replace(" ", "").strip().splitlines()[-1:] or [""]
    ok = (p.returncode == 0 and '"mismatches":0' in last[0] and
          ('"errors":' not in last[0] or '"errors":0' in last[0]))
    return ok, p.stdout + p.stderr


def clear_spool(store):
    """Drops what the host fetched (the spool, and the shared memory of
    models no process maps), so the next load reads from the remote."""
    shutil.rmtree(os.path.join(store.root, "lazy", "spool"), ignore_errors=True)
    store.ok("ps", "--gc-all")


def spooled(store):
    d = os.path.join(store.root, "lazy", "spool")
    return len(os.listdir(d)) if os.path.isdir(d) else 0


def cached_locations(store, remote, digest):
    path = os.path.join(store.root, "lazy", "locations", remote, digest)
    return open(path, "rb").read() if os.path.exists(path) else None


def two_remotes(work, a, src, digest, ns1):
    """One model on two remotes: packs on the first, chunk objects of a
    pstore from before packs on the second. A host that opened it from one
    reads it from the other by that remote's own locations (or their lack)."""
    ns2 = namespace("packs-old")
    add_remote(a, "second", ns2)
    a.ok("push", "m:1", "--remote", "second")
    n = to_old_layout(ns2, digest)
    check(n > 0 and not any(o.startswith("k.") for o in objects(ns2)), "ns2 is not in the old layout")
    h = store_with_remote(os.path.join(work, "h"), ns1, name="first")
    add_remote(h, "second", ns2)
    # Opened from the old remote first: a model without locations there...
    ok, out = load(h, "m:1", src, "second", "scan")
    check(ok and spooled(h) == n, f"opening from the second remote (no packs): {out[-800:]}")
    check(cached_locations(h, "second", digest) == b"none\n",
          "the second remote's lack of locations must be cached as the marker")
    check(cached_locations(h, "first", digest) is None, "nothing is cached for the first remote")
    # ... is not taken for one without locations on the first remote, which
    # holds it in packs only.
    clear_spool(h)
    ok, out = load(h, "m:1", src, "first", "scan")
    check(ok and spooled(h) == n, f"the same model from the first remote (packs) with the "
                                  f"second's lack of locations cached: {out[-800:]}")
    check(cached_locations(h, "first", digest)[:8] == b"pstloc1\n",
          "the first remote's locations must be cached under its name")
    # And the first's locations are not used on the second.
    clear_spool(h)
    ok, out = load(h, "m:1", src, "second", "scan")
    check(ok and spooled(h) == n, f"the second remote again: {out[-800:]}")
    # A host that only knows the old remote opens the model lazily.
    g = store_with_remote(os.path.join(work, "g"), ns2)
    ok, out = load(g, "m:1", src)
    check(ok, f"a model pushed before packs, opened lazily: {out[-800:]}")
    check(len(os.listdir(os.path.join(g.root, "lazy", "spool"))) == n,
          "every chunk object must be spooled once")
    log(f"two remotes: packs on one, {n} chunk objects on the other, each read by its own layout")
    return h


def lost_locations(h, src, digest):
    """The host's cached locations gone (a power loss, or a cache an older
    pstore wrote) or damaged: fetched again, never read as 'no packs'."""
    path = os.path.join(h.root, "lazy", "locations", "first", digest)
    want = open(path, "rb").read()
    os.unlink(path)
    clear_spool(h)
    ok, out = load(h, "m:1", src, "first")
    check(ok and spooled(h) > 0, f"a cached manifest whose locations are gone: {out[-800:]}")
    check(cached_locations(h, "first", digest) == want, "the locations must be cached again")
    bad = bytearray(want)
    bad[len(bad) // 2] ^= 0x01
    with open(path, "wb") as f:
        f.write(bytes(bad))
    clear_spool(h)
    ok, out = load(h, "m:1", src, "first")
    check(ok and spooled(h) > 0, f"cached locations that do not parse: {out[-800:]}")
    check(cached_locations(h, "first", digest) == want, "damaged locations must be fetched again")
    log("lost and damaged cached locations: fetched again")


@contextlib.contextmanager
def unreachable(store, remote, work):
    """The store's remote `remote` pointed at a monitor nobody listens on,
    with a short timeout, for the block."""
    cfg = os.path.join(store.root, "config.json")
    saved = open(cfg, "rb").read()
    conf = os.path.join(work, "unreachable.conf")
    with open(cluster()[0]) as f:
        text = re.sub(r"(?m)^mon_host = .*$", "mon_host = v2:127.0.0.1:1", f.read())
    with open(conf, "w") as f:
        f.write(text)
    j = json.loads(saved)
    j["remotes"][remote].update(conf=conf, timeout_seconds=3)
    with open(cfg, "w") as f:
        json.dump(j, f)
    try:
        yield
    finally:
        with open(cfg, "wb") as f:
            f.write(saved)


def older_cache(work, h, src, digest):
    """A model cached by the previous pstore (manifest and name, no
    locations for the remote) whose chunks are spooled opens and loads with
    the remote unreachable; its locations are read on the first read that
    goes to the remote."""
    path = os.path.join(h.root, "lazy", "locations", "first", digest)
    want = open(path, "rb").read()
    clear_spool(h)
    ok, out = load(h, "m:1", src, "first")
    check(ok and spooled(h) > 0, f"spooling the model: {out[-800:]}")
    os.unlink(path)
    h.ok("ps", "--gc-all")  # loads read the spool
    with unreachable(h, "first", work):
        ok, out = load(h, "m:1", src, "first")
    check(ok, f"a model cached by the previous pstore, spooled, with the remote unreachable: "
              f"{out[-800:]}")
    check(cached_locations(h, "first", digest) is None, "nothing was read from the remote")
    clear_spool(h)
    ok, out = load(h, "m:1", src, "first")
    check(ok and spooled(h) > 0, f"the same model read from the remote: {out[-800:]}")
    check(cached_locations(h, "first", digest) == want,
          "its locations must be cached on the first read from the remote")
    log("a model cached by the previous pstore opened from its spool without the network")


def full_cache_disk(work, h, src, digest):
    """A host whose lazy/ disk is full still reads a model whose locations
    it must fetch: they are kept in memory, caching them is best effort."""
    lazy = os.path.join(h.root, "lazy")
    saved = os.path.join(work, "lazy-saved")
    clear_spool(h)
    os.unlink(os.path.join(lazy, "locations", "first", digest))
    os.rename(lazy, saved)
    os.makedirs(lazy)
    p = run_cmd(["mount", "-t", "tmpfs", "-o", "size=2m,mode=0755", "tmpfs", lazy], timeout=60)
    check(p.returncode == 0, f"cannot mount a tmpfs at {lazy} (this test needs root and a "
                             f"system that allows mounting): {p.stderr.strip()}")
    try:
        for d in ("manifests", "names"):
            shutil.copytree(os.path.join(saved, d), os.path.join(lazy, d))
        with open(os.path.join(lazy, "filler"), "wb") as f:
            try:
                while True:
                    f.write(b"\0" * 65536)
                    f.flush()
            except OSError:
                pass
        ok, out = load(h, "m:1", src, "first")
        check(ok, f"a read that fetches locations onto a full lazy/ disk: {out[-800:]}")
        check(cached_locations(h, "first", digest) is None, "the disk was full: nothing cached")
    finally:
        run_cmd(["umount", lazy], timeout=60)
        os.rmdir(lazy)
        os.rename(saved, lazy)
    log("lazy/ full: locations fetched, read from memory, not cached; the model loaded")


def none_marker(h, ns, src, digest):
    """A model cached as having no locations (the marker) whose chunks are
    not where that says reads l.<digest> once more: a model pushed again
    into packs heals without removing lazy/ by hand."""
    path = os.path.join(h.root, "lazy", "locations", "first", digest)
    want = rados(ns, "get", f"l.{digest}", "-").stdout
    # The model gone from the remote (its locations and a pack removed, as
    # by `pstore rm --remote` and gc): a read finds neither, and must not
    # cache the marker over the locations.
    clear_spool(h)
    ok, out = load(h, "m:1", src, "first")
    check(ok and cached_locations(h, "first", digest) == want, f"cached again: {out[-800:]}")
    pack = sorted({e[1] for e in read_locations(ns, digest)})[0]
    pack_bytes = rados(ns, "get", pack, "-").stdout
    rados(ns, "rm", pack)
    rados(ns, "rm", f"l.{digest}")
    try:
        clear_spool(h)
        ok, out = load(h, "m:1", src, "first")
        check(not ok and pack in out, f"a read of a removed pack must fail naming it: {out[-800:]}")
        check(cached_locations(h, "first", digest) == want,
              "a read that finds no l.<digest> must leave the cached locations as they were")
    finally:
        rados(ns, "put", pack, "-", data=pack_bytes)
        rados(ns, "put", f"l.{digest}", "-", data=want)
    # A model cached as without locations (by a pstore that wrote the
    # marker on such a read) that is in packs.
    with open(path, "wb") as f:
        f.write(b"none\n")
    clear_spool(h)
    ok, out = load(h, "m:1", src, "first")
    check(ok and spooled(h) > 0, f"cached as none, stored in packs: {out[-800:]}")
    check(cached_locations(h, "first", digest) == want, "the marker must give way to locations")
    log("a model cached as without locations found its packs")


def index_value(pack, off, length):
    return bytes.fromhex(pack[2:]) + struct.pack("<QI", off, length)


def damaged_frame(work, ns, src, digest):
    """A frame in a pack overwritten: a pull fails naming the pack's byte
    range; with the chunk index naming a good copy elsewhere, it reads that
    (still checked) and stores the model."""
    key, pack, off, length = max(read_locations(ns, digest), key=lambda e: e[3])
    good = rados(ns, "get", pack, "-").stdout
    bad = bytearray(good)
    bad[off + length // 2] ^= 0x10
    rados(ns, "put", pack, "-", data=bytes(bad))
    copy = "k." + "ab" * 16
    shard = f"i.{key[:2]}"
    ivfile = os.path.join(work, "index-value")
    try:
        b = store_with_remote(os.path.join(work, "b"), ns)
        r = b.run("pull", "m:1")
        msg = r.out + r.err
        check(r.rc == EXIT_CORRUPT, f"a pull of a damaged pack must fail (exit 5): {r.describe()}")
        for word in ("m:1", "tensor", f"{pack} bytes {off}-{off + length}", "nothing was stored"):
            check(word in msg, f"the error must say {word!r}: {msg[-800:]}")
        check("m:1" not in b.ls(), "nothing may be stored")
        # A good copy of the chunk elsewhere, named by the index.
        rados(ns, "put", copy, "-", data=good)
        with open(ivfile, "wb") as f:
            f.write(index_value(copy, off, length))
        rados(ns, "setomapval", shard, key, "--input-file", ivfile)
        b.ok("pull", "m:1")
        b.export_matches("m:1", tree_sha256(src), work)
    finally:
        rados(ns, "put", pack, "-", data=good)
        with open(ivfile, "wb") as f:
            f.write(index_value(pack, off, length))
        rados(ns, "setomapval", shard, key, "--input-file", ivfile)
        rados(ns, "rm", copy, check_rc=False)
    log(f"damaged frame in {pack}: pull failed naming its range, then read the index's good copy")


def damaged_locations(work, ns, a, src, digest):
    """l.<digest> that fails its check: pull, lazy open and gc say the
    model and the remedy; gc deletes nothing; a push replaces it."""
    oid = f"l.{digest}"
    good = rados(ns, "get", oid, "-").stdout
    bad = bytearray(good)
    bad[len(bad) // 2] ^= 0x01
    rados(ns, "put", oid, "-", data=bytes(bad))
    c = store_with_remote(os.path.join(work, "c"), ns)
    r = c.run("pull", "m:1")
    msg = r.out + r.err
    check(r.rc == EXIT_CORRUPT, f"a pull with damaged locations: {r.describe()}")
    for word in ("m:1", oid, "nothing was stored", "pstore push"):
        check(word in msg, f"pull's error must say {word!r}: {msg[-800:]}")
    ok, out = load(c, "m:1", src)
    check(not ok, "a lazy open with damaged locations must fail")
    for word in ("m:1", oid, "pstore push"):
        check(word in out, f"lazy open's error must say {word!r}: {out[-800:]}")
    before = objects(ns)
    r = a.run("remote", "gc", "fleet")
    msg = r.out + r.err
    check(r.rc == EXIT_CORRUPT, f"gc with damaged locations: {r.describe()}")
    for word in ("m:1", oid, "nothing was deleted", "pstore push"):
        check(word in msg, f"gc's error must say {word!r}: {msg[-800:]}")
    check(objects(ns) == before, "gc must delete nothing")
    a.ok("push", "m:1", "--remote", "fleet")
    check(rados(ns, "get", oid, "-").stdout == good, "a push must replace damaged locations")
    c.ok("pull", "m:1")
    c.export_matches("m:1", tree_sha256(src), work)
    log("damaged l.<digest>: pull, lazy open and gc name the model and the remedy; push repairs")


def lying_lengths(work, ns, src, digest):
    """l.<digest> with a matching check digest that gives a chunk a frame far
    longer than its chunk can encode to (a buggy or hostile pusher): pull
    and a lazy read refuse it, naming the model, the tensor, the chunk and
    l.<digest>, before reading anything of that size."""
    oid = f"l.{digest}"
    good = rados(ns, "get", oid, "-").stdout
    key, pack, off, length = max(read_locations(ns, digest), key=lambda e: e[3])
    p = subprocess.run([env_path("LOCATIONS_EDIT"), key, str(64 << 20)], input=good,
                       capture_output=True, timeout=60)
    check(p.returncode == 0, f"locations_edit: {p.stderr[-800:]}")
    rados(ns, "put", oid, "-", data=p.stdout)
    try:
        d = store_with_remote(os.path.join(work, "d"), ns)
        r = d.run("pull", "m:1")
        msg = r.out + r.err
        check(r.rc == EXIT_CORRUPT, f"a pull with a lying frame length: {r.describe()}")
        for word in ("m:1", oid, "tensor", key, "longer than any frame", "nothing was stored",
                     "pstore push"):
            check(word in msg, f"pull's error must say {word!r}: {msg[-800:]}")
        check("m:1" not in d.ls(), "nothing may be stored")
        for attempt in (1, 2):
            ok, out = load(d, "m:1", src)
            check(not ok, f"a lazy open with a lying frame length must fail (attempt {attempt})")
            for word in ("m:1", oid, "tensor", "longer than any frame", "pstore push"):
                check(word in out, f"lazy open's error must say {word!r}: {out[-800:]}")
            # Refused before anything was kept: no manifest, locations or
            # name of the model in the host's lazy cache.
            kept = [os.path.join(dp, f) for dp, _, fs in os.walk(os.path.join(d.root, "lazy"))
                    for f in fs if f.startswith(digest) or "names" in dp]
            check(not kept, f"a refused lazy open kept {kept}")
    finally:
        rados(ns, "put", oid, "-", data=good)
    log("a lying frame length in l.<digest>: pull and lazy open refuse it, naming the chunk")


def missing_pack(work, ns, a, digest):
    """A pack removed by hand: gc reports the name whose locations name it,
    deletes nothing because of it; a push repairs it and the report goes."""
    packs_named = sorted({e[1] for e in read_locations(ns, digest)})
    gone = packs_named[0]
    rados(ns, "rm", gone)
    before = objects(ns)
    j = a.ok("remote", "gc", "fleet", "--dry-run", json_out=True).json()
    check(j["names_missing_packs"].get("m:1") == [gone], f"gc --dry-run must report m:1: {j}")
    j = a.ok("remote", "gc", "fleet", json_out=True).json()
    check(j["names_missing_packs"].get("m:1") == [gone], f"gc must report m:1: {j}")
    check(f"l.{digest}" in objects(ns) and f"m.{digest}" in objects(ns),
          "gc must keep the damaged model's objects")
    check(all(p in objects(ns) for p in packs_named[1:]), "gc must keep the model's other packs")
    text = a.ok("remote", "gc", "fleet").out
    check("m:1" in text and gone in text and "push" in text and "nothing was deleted" in text,
          f"gc's report must name the model, the pack and the remedy: {text}")
    lost = before - objects(ns)
    check(not lost, f"gc must delete nothing because of the missing pack; it deleted {lost}")
    a.ok("push", "m:1", "--remote", "fleet")
    j = a.ok("remote", "gc", "fleet", json_out=True).json()
    check(not j["names_missing_packs"], f"after the push gc reports nothing: {j}")
    log(f"missing pack {gone}: gc reported m:1 and deleted nothing because of it")


def index_pages(a, ns):
    """gc reads a shard of the chunk index past its first page: 5000
    entries naming a missing pack in one shard (more than a page of 4096,
    and than the OSD's cap on entries a request returns) are all removed,
    and the shard's other entries stay."""
    conf, pool = cluster()
    shard = "i.ff"
    kept = set(rados(ns, "listomapkeys", shard, check_rc=False).stdout.decode().split())
    keys = [f"ff{i:030x}" for i in range(5000)]
    value = index_value("k." + "cd" * 16, 0, 100)
    # One write of every entry, through librados' Python binding
    # (python3-rados, scripts/setup.sh: Debian's Python has it).
    script = (
        "import rados, sys\n"
        "conf, pool, ns, shard, value, n = sys.argv[1:]\n"
        "keys = tuple(f'ff{i:030x}' for i in range(int(n)))\n"
        "with rados.Rados(conffile=conf) as cl, cl.open_ioctx(pool) as io:\n"
        "    io.set_namespace(ns)\n"
        "    with rados.WriteOpCtx() as op:\n"
        "        io.set_omap(op, keys, tuple([bytes.fromhex(value)] * len(keys)))\n"
        "        io.operate_write_op(op, shard)\n")
    python = "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else sys.executable
    p = run_cmd([python, "-c", script, conf, pool, ns, shard, value.hex(), str(len(keys))],
                timeout=120)
    check(p.returncode == 0, f"writing index entries: {p.stderr[-800:]}")
    j = a.ok("remote", "gc", "fleet", json_out=True).json()
    left = set(rados(ns, "listomapkeys", shard, check_rc=False).stdout.decode().split())
    check(j["index_entries_removed"] >= len(keys), f"gc must remove the 5000 entries: {j}")
    check(left == kept, f"gc must remove the entries naming a missing pack, to the last page, and "
                        f"keep the others: {len(left - kept)} left, {len(kept - left)} lost")
    log(f"gc removed {len(keys)} entries of one index shard, past its first page")


def body(work):
    ns = namespace("packs")
    a, src = pushed_model(work, ns, "a", "m.safetensors", "m:1", 8, seed=21, tensors=12)
    digest = a.ok("push", "m:1", json_out=True).json()["digest"]
    h = two_remotes(work, a, src, digest, ns)
    lost_locations(h, src, digest)
    older_cache(work, h, src, digest)
    full_cache_disk(work, h, src, digest)
    none_marker(h, ns, src, digest)
    damaged_frame(work, ns, src, digest)
    damaged_locations(work, ns, a, src, digest)
    lying_lengths(work, ns, src, digest)
    missing_pack(work, ns, a, digest)
    index_pages(a, ns)


if __name__ == "__main__":
    run_test("remote_packs", body)
