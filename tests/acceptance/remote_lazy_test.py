#!/usr/bin/env python3
"""Lazy opening from a remote, against a real Ceph cluster, with real processes
using the C API: a model pushed from store A is opened in store B, which does
not have it; acquiring one tensor fetches only that tensor's chunks (counted
in B's spool and in the OSD's read counter); another process and a restart
fetch nothing more; every byte equals the source file; `pstore remote ingest`
then makes it a local model. Faults: readers killed with SIGKILL while
fetching (the store verifies, lists no partial model, a peer loading the same
chunks goes on, a rerun completes), the OSD stopped during an acquire (an
error within the timeout, nothing local changed, works again once it is
back), and a pack overwritten with `rados put` (the error names model,
tensor, chunk and the pack's byte range and says the remote's copy is damaged and what to do;
the wrong bytes are neither returned nor kept), and a host whose cached
locations name packs removed since (the model pushed again into new packs):
it reads the locations again and loads every byte."""

import json
import os
import random
import signal
import subprocess
import time

from harness import at_exit, check, env_path, log, popen, run_cmd, run_test, tree_sha256
from remote_harness import (cluster, namespace, objects, packs, pushed_model, rados, read_locations,
                            stop_daemon, store_with_remote)


def worker(store, ref, src, *mode):
    return [env_path("PAGER_WORKER"), store.root, ref, src] + [str(m) for m in mode]


def run_worker(store, ref, src, *mode, timeout=300):
    p = run_cmd(worker(store, ref, src, *mode), timeout=timeout)
    lines = [ln for ln in p.stdout.splitlines() if ln.startswith("{")]
    try:
        last = json.loads(lines[-1]) if lines else {}
    except ValueError:  # an error message with quotes in it: not JSON, and not ok
        last = {"ok": False, "error": lines[-1]}
    return p, last


def spool(store):
    d = os.path.join(store.root, "lazy", "spool")
    return set(os.listdir(d)) if os.path.isdir(d) else set()


def osd_reads():
    """The OSD's count of read operations (its own perf counter)."""
    conf, _ = cluster()
    env = {k: v for k, v in os.environ.items() if k not in ("CEPH_KEYRING", "CEPH_ARGS", "CEPH_CONF")}
    p = subprocess.run(["ceph", "-c", conf, "daemon", "osd.0", "perf", "dump"], capture_output=True,
                       text=True, env=env, timeout=60)
    check(p.returncode == 0, f"ceph daemon osd.0 perf dump failed: {p.stderr[-400:]}")
    return json.loads(p.stdout)["osd"]["op_r"]


def tensor_chunks(store, ref):
    """{tensor name: number of chunks} from `pstore info --all --json` of a store that has ref."""
    return {t["name"]: t["chunks"] for t in store.info(ref)["tensors"]}


def one_tensor_then_share(work, ns, a, src):
    b = store_with_remote(os.path.join(work, "b"), ns)
    chunks = tensor_chunks(a, "m:1")
    name = sorted(chunks)[len(chunks) // 2]
    before = osd_reads()
    p, last = run_worker(b, "m:1", src, "one", name)
    check(p.returncode == 0 and last.get("ok") is True,
          f"lazy open + acquire of {name} failed: rc {p.returncode} {p.stdout[-600:]} {p.stderr[-600:]}")
    got = spool(b)
    check(len(got) == chunks[name],
          f"acquiring {name} ({chunks[name]} chunks) spooled {len(got)} chunks")
    reads = osd_reads() - before
    # The name, the manifest, the locations, and the tensor's chunks: one
    # read of coalesced byte ranges per pack they are in (the mgr may read a
    # little too).
    held_in = len(packs(ns))
    check(3 < reads <= 3 + min(held_in, chunks[name]) + 8,
          f"acquiring {name} ({chunks[name]} chunks in at most {held_in} packs) made {reads} "
          "reads on the OSD")
    log(f"acquiring {name}: {len(got)} chunks spooled, {reads} reads on the OSD")
    check("m:1" not in b.ls(), "a lazily opened model must not be listed as a local model")
    # Another process, then the same again (a restart): nothing more is fetched.
    before = osd_reads()
    for _ in range(2):
        p, last = run_worker(b, "m:1", src, "one", name)
        check(p.returncode == 0 and last.get("ok") is True, f"second open failed: {p.stderr[-600:]}")
    check(osd_reads() == before, "a second process or a restart fetched from the remote again")
    check(spool(b) == got, "the spool changed without a fetch")
    # Every byte of every tensor equals the source, through the C API.
    p, last = run_worker(b, "m:1", src, "load")
    check(p.returncode == 0 and last.get("ok") is True and last.get("mismatches") == 0,
          f"loading the whole lazily opened model: {p.stdout[-600:]} {p.stderr[-600:]}")
    b.verify_ok("with a lazily opened model")
    # The writer makes it a local model, all at once, now that every chunk is here.
    j = b.ok("remote", "ingest", json_out=True).json()
    check(j["published"] == ["m:1"], f"remote ingest: {j}")
    check("m:1" in b.ls() and not spool(b), "after ingest the model is local and the spool empty")
    b.verify_ok("after ingest")
    b.export_matches("m:1", tree_sha256(src), work)


def killed_readers(work, ns, src):
    rng = random.Random(int(os.environ.get("PSTORE_TEST_SEED", "0")) or None)
    for trial in range(5):
        k = store_with_remote(os.path.join(work, f"k{trial}"), ns)
        # Two readers load the whole model at once; one is killed part-way.
        victim = popen(worker(k, "m:1", src, "load"), stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, text=True)
        peer = popen(worker(k, "m:1", src, "load"), stdout=subprocess.PIPE,
                     stderr=subprocess.PIPE, text=True)
        time.sleep(rng.uniform(0.2, 2.0))
        victim.send_signal(signal.SIGKILL)
        victim.communicate()
        out, err = peer.communicate(timeout=300)
        check(peer.returncode == 0, f"trial {trial}: the peer of a killed reader failed: {out[-500:]} {err[-500:]}")
        check("m:1" not in k.ls(), f"trial {trial}: a partial model is listed")
        k.verify_ok(f"trial {trial}, after a reader was killed")
        p, last = run_worker(k, "m:1", src, "load")
        check(p.returncode == 0 and last.get("ok") is True,
              f"trial {trial}: rerun after the kill: {p.stdout[-600:]} {p.stderr[-600:]}")
    log("5 killed lazy readers: peers went on, stores verify, reruns complete")


def osd_pid():
    conf, _ = cluster()
    with open(os.path.join(os.path.dirname(conf), "run", "osd.0.pid")) as f:
        return int(f.read().strip())


def acquire_with_osd_stopped(s, src, name, what):
    """Acquires name in store s with the OSD stopped (SIGSTOP); checks the
    error comes within the timeout (5 s) and says so, and nothing local changed."""
    pid = osd_pid()
    before = (s.ls(), spool(s))
    at_exit(lambda: os.kill(pid, signal.SIGCONT))
    stop_daemon(pid)
    try:
        t0 = time.monotonic()
        p, last = run_worker(s, "m:1", src, "one", name, timeout=120)
        took = time.monotonic() - t0
    finally:
        os.kill(pid, signal.SIGCONT)
    check(p.returncode != 0, f"{what} with the OSD stopped must fail")
    check(took < 40, f"{what}: with a 5 s timeout it took {took:.1f} s")
    msg = json.dumps(last) + p.stderr
    check("timed out" in msg and "timeout" in msg,
          f"{what}: the error must say it timed out and what to do: {msg[-600:]}")
    log(f"OSD stopped, {what}: failed in {took:.1f} s: {msg.strip()[-300:]}")
    check((s.ls(), spool(s)) == before, f"{what}: nothing local may change")
    s.verify_ok(f"after {what} with the OSD stopped")


def osd_stopped(work, ns, src, first, second):
    s = store_with_remote(os.path.join(work, "o"), ns, timeout=5)
    # Opening (name and manifest from the remote) ...
    acquire_with_osd_stopped(s, src, first, "a lazy open")
    p, last = run_worker(s, "m:1", src, "one", first)
    check(p.returncode == 0 and last.get("ok") is True, f"with the OSD back: {p.stderr[-600:]}")
    # ... and acquiring a tensor of a model opened before (chunks from the remote).
    acquire_with_osd_stopped(s, src, second, "a lazy acquire")
    p, last = run_worker(s, "m:1", src, "one", second)
    check(p.returncode == 0 and last.get("ok") is True, f"with the OSD back: {p.stderr[-600:]}")


def wrong_object(work, ns, src):
    w = store_with_remote(os.path.join(work, "w"), ns)
    chunk = sorted(o for o in objects(ns) if o.startswith("k."))[0]  # a pack
    good = rados(ns, "get", chunk, "-").stdout
    bad = bytearray(good)
    flipped = len(bad) // 2
    bad[flipped] ^= 0x10  # one chunk's byte range
    # That chunk, from the model's locations.
    digest = next(o for o in objects(ns) if o.startswith("l."))[2:]
    wrong = [k for k, pack, off, length in read_locations(ns, digest)
             if pack == chunk and off <= flipped < off + length]
    check(len(wrong) == 1, f"one chunk of {chunk} holds byte {flipped}: {wrong}")
    rados(ns, "put", chunk, "-", data=bytes(bad))
    try:
        p, last = run_worker(w, "m:1", src, "load")
    finally:
        rados(ns, "put", chunk, "-", data=good)
    check(p.returncode != 0 and last.get("ok") is False,
          "a model with an overwritten chunk object must not be read whole")
    check("MISMATCH" not in p.stderr, "wrong bytes were handed out")
    msg = p.stdout + p.stderr
    for word in ("m:1", "tensor", "chunk", f"object {chunk}", "the remote's copy of this chunk is "
                 f"damaged (this host's store is not)", f"rados rm {chunk}",
                 "do not remove the pack alone", "pstore push"):
        check(word in msg, f"the error must say {word!r}: {msg[-800:]}")
    check("pstore verify" not in msg and "compact" not in msg,
          f"the error gives the advice for a damaged local store: {msg[-800:]}")
    check(wrong[0] not in spool(w), f"the wrong frame of chunk {wrong[0]} was spooled")
    log(f"overwritten object: {msg.strip()[-300:]}")
    w.verify_ok("after a wrong remote frame")
    p, last = run_worker(w, "m:1", src, "load")
    check(p.returncode == 0 and last.get("ok") is True,
          f"with the object put right: {p.stdout[-600:]} {p.stderr[-600:]}")


def stale_locations(work, ns, a, src):
    """A host that opened the model keeps its locations; the packs are then
    removed and the model pushed again (the remedy for a damaged pack), so
    its chunks are in new packs: the host's reader finds the old ones gone,
    finds the chunks where the remote's chunk index says they are now, and
    loads every byte right."""
    h = store_with_remote(os.path.join(work, "h"), ns)
    chunks = tensor_chunks(a, "m:1")
    p, last = run_worker(h, "m:1", src, "one", sorted(chunks)[0])
    check(p.returncode == 0 and last.get("ok") is True, f"opening on h: {p.stderr[-600:]}")
    cached = os.path.join(h.root, "lazy", "locations", "fleet")
    before = {f: open(os.path.join(cached, f), "rb").read() for f in os.listdir(cached)}
    check(len(before) == 1, f"h must keep the model's locations: {sorted(before)}")
    old = packs(ns)
    for k in old:
        rados(ns, "rm", k)
    r = a.ok("push", "m:1", json_out=True).json()
    check(r["moved_chunks"] == r["chunks"] and not (packs(ns) & old),
          f"the push after the packs were removed must upload into new packs: {r}")
    p, last = run_worker(h, "m:1", src, "load")
    check(p.returncode == 0 and last.get("ok") is True and last.get("mismatches") == 0,
          f"a reader with stale locations: {p.stdout[-600:]} {p.stderr[-600:]}")
    after = {f: open(os.path.join(cached, f), "rb").read() for f in os.listdir(cached)}
    check(after.keys() == before.keys(), f"h's cached locations: {sorted(after)}")
    log("stale locations: chunks found through the index, every byte loaded")


def body(work):
    ns = namespace("lazy")
    a, src = pushed_model(work, ns, "a", "m.safetensors", "m:1", 24, seed=11, tensors=30)
    one_tensor_then_share(work, ns, a, src)
    chunks = tensor_chunks(a, "m:1")
    wrong_object(work, ns, src)
    killed_readers(work, ns, src)
    osd_stopped(work, ns, src, sorted(chunks)[0], sorted(chunks)[1])
    stale_locations(work, ns, a, src)


if __name__ == "__main__":
    run_test("remote_lazy", body)
