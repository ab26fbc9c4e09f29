#!/usr/bin/env python3
"""push and pull against a real Ceph cluster, with real pstore processes:
remote add/ls/rm (no credentials in pstore's files or output), a round trip
push -> pull into a second store with byte-identical export, a re-push of a
changed version uploading only its new chunks (counted from the cluster's
packs and chunk index), ls/rm --remote, a pack overwritten with `rados put`
(pull names model, tensor, chunk and the pack's byte range and stores
nothing) or removed (a push again uploads its chunks), a remote in the layout
of a pstore from before packs (pulls, dedup, gc), and an unreachable cluster
(an error within the timeout, local store unchanged)."""

import glob
import json
import os
import time

from harness import (EXIT_CORRUPT, EXIT_ERROR, EXIT_EXISTS, EXIT_NOT_FOUND, Store, check, log,
                     make_model, run_test, tree_sha256)
from remote_harness import (cluster, index_keys, namespace, objects, packs, rados, remote_names,
                            store_with_remote, to_old_layout)


def remote_config(work):
    conf, pool = cluster()
    a = Store(os.path.join(work, "cfg"))
    ns = namespace("cfg")
    a.ok("remote", "add", "fleet", f"rados:{pool}", "--conf", conf, "--namespace", ns)
    r = a.run("remote", "add", "fleet", f"rados:{pool}")
    check(r.rc == EXIT_EXISTS, "a second remote of one name must be refused: " + r.describe())
    r = a.run("remote", "add", "bad", "s3:bucket")
    check(r.rc != 0 and "rados:POOL" in r.err, "a bad URL must say the form: " + r.describe())
    a.ok("remote", "add", "other", f"rados:{pool}", "--conf", conf, "--id", "admin")
    j = a.ok("remote", "ls", json_out=True).json()
    got = {x["name"]: x for x in j["remotes"]}
    check(set(got) == {"fleet", "other"}, f"remote ls lists {set(got)}")
    check(got["fleet"]["namespace"] == ns and got["fleet"]["conf"] == conf, f"remote ls: {got}")
    # No credentials anywhere pstore writes or prints.
    keyring_text = open(os.path.join(os.path.dirname(conf), "keyring")).read()
    keys = [ln.split("=", 1)[1].strip() for ln in keyring_text.splitlines() if "key" in ln and "=" in ln]
    check(keys, "the test keyring holds no key to look for")
    outputs = j and json.dumps(j) + a.ok("remote", "ls").out
    files = ""
    for f in glob.glob(os.path.join(a.root, "*")):
        if os.path.isfile(f):
            files += open(f, errors="replace").read()
    for k in keys:
        check(k not in outputs and k not in files, "a Ceph key appears in pstore's files or output")
    # With two remotes, push without --remote must ask which.
    make_model(os.path.join(work, "m.safetensors"), 1, seed=9, tensors=4)
    a.ok("import", os.path.join(work, "m.safetensors"), "m:1")
    r = a.run("push", "m:1")
    check(r.rc != 0 and "--remote" in r.err, "push with two remotes must ask: " + r.describe())
    a.ok("remote", "rm", "other")
    r = a.run("remote", "rm", "other")
    check(r.rc == EXIT_NOT_FOUND, "removing a missing remote: " + r.describe())
    cfg = json.load(open(os.path.join(a.root, "config.json")))
    check(set(cfg.get("remotes", {})) == {"fleet"}, f"config.json remotes: {cfg.get('remotes')}")
    # Another setting changed later keeps the remotes.
    a.ok("config", "--zstd-level", "5")
    check(set(json.load(open(os.path.join(a.root, "config.json")))["remotes"]) == {"fleet"},
          "config changes must keep the remotes")


def two_versions(work, store, name, mb, seed, tensors, change, change_seed):
    """Two versions of a model, the second with a share `change` of its
    tensors new, imported into store as NAME:1 and NAME:2. Returns their
    files."""
    v1 = make_model(os.path.join(work, f"{name}1.safetensors"), mb, seed=seed, tensors=tensors)
    v2 = make_model(os.path.join(work, f"{name}2.safetensors"), mb, seed=seed, tensors=tensors,
                    change=change, change_seed=change_seed)
    store.ok("import", v1, f"{name}:1")
    store.ok("import", v2, f"{name}:2")
    return v1, v2


def round_trip_and_dedup(work):
    ns = namespace("rt")
    a = store_with_remote(os.path.join(work, "a"), ns)
    b = store_with_remote(os.path.join(work, "b"), ns)
    v1, v2 = two_versions(work, a, "llm", 24, seed=1, tensors=40, change=0.1, change_seed=3)
    r1 = a.ok("push", "llm:1", json_out=True).json()
    check(r1["moved_chunks"] == r1["chunks"] and r1["moved_bytes"] > 0, f"first push: {r1}")
    objs1 = objects(ns)
    packs1 = packs(ns)
    keys1 = index_keys(ns)
    check(not any(o.startswith("c.") for o in objs1), "a push wrote chunk objects, not packs")
    check(len(keys1) == r1["chunks"], f"{len(keys1)} index entries for {r1['chunks']} chunks")
    # 16 MiB packs: the model's frames need this many and no more.
    check(len(packs1) == (r1["moved_bytes"] + (16 << 20) - 1) // (16 << 20),
          f"{len(packs1)} packs for {r1['moved_bytes']} bytes of frames")
    check(sum(int(rados(ns, "stat", k).stdout.split()[-1]) for k in packs1) == r1["moved_bytes"],
          "the packs do not hold exactly the uploaded frames")
    check({f"m.{r1['digest']}", f"l.{r1['digest']}", "pstore.names"} <= objs1,
          f"objects: {sorted(objs1)[:5]}")
    # Re-push: nothing moves.
    again = a.ok("push", "llm:1", json_out=True).json()
    check(again["unchanged"] and again["moved_chunks"] == 0, f"re-push of v1: {again}")
    # A version with 10% of its tensors changed uploads only the new chunks.
    r2 = a.ok("push", "llm:2", json_out=True).json()
    new_objects = len(index_keys(ns) - keys1)
    check(new_objects == r2["moved_chunks"], f"{new_objects} new index entries, push says {r2}")
    new_packs = packs(ns) - packs1
    check(len(new_packs) == 1 and
          int(rados(ns, "stat", min(new_packs)).stdout.split()[-1]) == r2["moved_bytes"],
          f"v2's new chunks must be one new pack of {r2['moved_bytes']} bytes: {new_packs}")
    check(r2["moved_bytes"] <= 0.2 * r1["moved_bytes"],
          f"v2 uploaded {r2['moved_bytes']} bytes, v1 {r1['moved_bytes']}: not only new chunks")
    log(f"dedup: v1 {r1['moved_bytes']} B in {r1['chunks']} chunks; v2 {r2['moved_bytes']} B "
        f"({new_objects} new objects)")
    check(remote_names(b) == {"llm:1": r1["digest"], "llm:2": r2["digest"]},
          f"ls --remote: {remote_names(b)}")
    # Pull into a second store: byte-identical export, verify clean.
    p1 = b.ok("pull", "llm:1", json_out=True).json()
    check(p1["moved_chunks"] == p1["chunks"], f"first pull: {p1}")
    p2 = b.ok("pull", "llm:2", json_out=True).json()
    check(p2["moved_chunks"] == r2["moved_chunks"], f"second pull fetched {p2}, pushed {r2}")
    b.export_matches("llm:1", tree_sha256(v1), work)
    b.export_matches("llm:2", tree_sha256(v2), work)
    b.verify_ok("after pulls")
    p3 = b.ok("pull", "llm:1", json_out=True).json()
    check(p3["unchanged"] and p3["moved_chunks"] == 0, f"pull again: {p3}")
    r = b.run("pull", "llm:9")
    check(r.rc == EXIT_NOT_FOUND and "llm:9" in r.err, "pull of a missing name: " + r.describe())
    # rm --remote removes the name only.
    a.ok("rm", "--remote", "fleet", "llm:1")
    check(set(remote_names(a)) == {"llm:2"}, f"after rm --remote: {remote_names(a)}")
    r = a.run("rm", "--remote", "fleet", "llm:1")
    check(r.rc == EXIT_NOT_FOUND, "rm --remote of a missing name: " + r.describe())
    check("llm:1" in a.ls(), "rm --remote must not touch the local store")
    # A name taken on the remote needs --force.
    a.ok("tag", "llm:1", "llm:2b")
    a.ok("push", "llm:2b")
    a.ok("tag", "llm:2", "llm:2b", "--force")
    r = a.run("push", "llm:2b")
    check(r.rc == EXIT_EXISTS and "--force" in r.err, "a taken remote name: " + r.describe())
    a.ok("push", "llm:2b", "--force")
    check(remote_names(a)["llm:2b"] == r2["digest"], "push --force moves the name")


def corrupted_chunk(work):
    ns = namespace("bad")
    a = store_with_remote(os.path.join(work, "ca"), ns)
    b = store_with_remote(os.path.join(work, "cb"), ns)
    src = make_model(os.path.join(work, "c.safetensors"), 4, seed=5, tensors=8)
    a.ok("import", src, "victim:1")
    a.ok("push", "victim:1")
    (chunk,) = packs(ns)  # one pack holds the model
    good = rados(ns, "get", chunk, "-").stdout
    bad = bytearray(good)
    bad[len(bad) // 2] ^= 0x10
    # Another chunk's (valid) frame where one was: a byte range of the pack
    # moved over the one after it.
    third = len(good) // 3
    shifted = good[:third] + good[third + 4096:] + good[third:third + 4096]
    before = b.ls()
    # A flipped bit; frames moved; a truncated and an empty pack.
    for what, data in (("a flipped bit", bytes(bad)), ("frames moved", shifted),
                       ("a truncated pack", good[:third]), ("an empty object", b"")):
        rados(ns, "put", chunk, "-", data=data)
        r = b.run("pull", "victim:1")
        check(r.rc == EXIT_CORRUPT,
              f"a remote chunk with {what} must be a corruption error: " + r.describe())
        for word in ("victim:1", "tensor", "chunk", chunk):
            check(word in r.err, f"the error for {what} must name {word!r}: {r.err}")
        check(what == "an empty object" or ("the remote's copy of this chunk is damaged" in r.err
                                            and "pstore verify" not in r.err),
              f"the error for {what} must say the remote's copy is damaged: {r.err}")
        check(what == "an empty object" or ("do not remove the pack alone" in r.err
                                            and "every model that uses it" in r.err),
              f"the error for {what} must not advise removing a shared pack alone: {r.err}")
        check(b.ls() == before, f"a pull refused for {what} changed the local store")
        comp = b.ok("compact", json_out=True).json()
        check(comp["chunks_removed"] == 0, f"a pull refused for {what} must take out the chunks "
              f"it wrote, yet compact removed some: {comp}")
        b.verify_ok(f"after a pull refused for {what}")
    # A pack removed (the model using it then pushed again): the pull names it as
    # missing; a push again uploads the chunks into a new pack, replaces
    # their index entries and locations, and the pull then works.
    rados(ns, "rm", chunk)
    r = b.run("pull", "victim:1")
    check(r.rc == EXIT_CORRUPT and "lacks" in r.err and chunk in r.err and "push" in r.err,
          "a pull from a missing pack: " + r.describe())
    check(b.ls() == before, "a pull from a missing pack changed the local store")
    again = a.ok("push", "victim:1", json_out=True).json()
    check(again["moved_chunks"] == again["chunks"] and chunk not in packs(ns) and len(packs(ns)) == 1,
          f"a push after its pack was removed must upload it again into a new pack: {again}")
    b.ok("pull", "victim:1")
    b.export_matches("victim:1", tree_sha256(src), work)


def old_remote(work):
    """A remote written by a pstore from before packs: its models pull, a
    push dedups against its chunk objects (uploading only the new chunks, in a
    pack), and gc keeps the chunk objects a name needs through its
    locations."""
    ns = namespace("old")
    a = store_with_remote(os.path.join(work, "oa"), ns)
    v1, v2 = two_versions(work, a, "old", 8, seed=81, tensors=16, change=0.25, change_seed=2)
    r1 = a.ok("push", "old:1", json_out=True).json()
    n = to_old_layout(ns, r1["digest"])
    check(n == r1["chunks"], f"{n} located chunks, the push says {r1['chunks']}")
    chunk_objects = {o for o in objects(ns) if o.startswith("c.")}
    check(len(chunk_objects) == n and not packs(ns), "the remote is not in the old layout")
    b = store_with_remote(os.path.join(work, "ob"), ns)
    b.ok("pull", "old:1")
    b.export_matches("old:1", tree_sha256(v1), work)
    # A push of a version sharing most chunks uploads only its new ones.
    r2 = a.ok("push", "old:2", json_out=True).json()
    check(0 < r2["moved_chunks"] < r2["chunks"] and len(index_keys(ns)) == r2["moved_chunks"],
          f"a push into an old remote must dedup against its chunk objects: {r2}, "
          f"{len(index_keys(ns))} index entries")
    check({o for o in objects(ns) if o.startswith("c.")} == chunk_objects and len(packs(ns)) == 1,
          "the push wrote chunk objects, or more than one pack")
    # A gc keeps every chunk object old:2 uses (its locations name them).
    a.ok("rm", "--remote", "fleet", "old:1")
    j = a.ok("remote", "gc", "fleet", json_out=True).json()
    reused = r2["chunks"] - r2["moved_chunks"]
    left = {o for o in objects(ns) if o.startswith("c.")}
    check(len(left) == reused and j["deleted_chunks"] == n - reused and j["deleted_packs"] == 0,
          f"gc after old:1 was removed: {len(left)} chunk objects left, old:2 uses {reused}: {j}")
    c = store_with_remote(os.path.join(work, "oc"), ns)
    c.ok("pull", "old:2")
    c.export_matches("old:2", tree_sha256(v2), work)
    log(f"old remote: {n} chunk objects; a push of a changed version uploaded "
        f"{r2['moved_chunks']} of {r2['chunks']} chunks into a pack and reused the rest")


def unreachable(work):
    conf, pool = cluster()
    dead = os.path.join(work, "dead.conf")
    keyring = os.path.join(os.path.dirname(conf), "keyring")
    with open(dead, "w") as f:
        f.write(f"[global]\nmon_host = 127.0.0.1:1\nkeyring = {keyring}\n")
    s = Store(os.path.join(work, "u"))
    src = make_model(os.path.join(work, "u.safetensors"), 1, seed=7, tensors=4)
    s.ok("import", src, "u:1")
    s.ok("remote", "add", "gone", f"rados:{pool}", "--conf", dead, "--timeout", "3")
    before = s.ls()
    for cmd in (["push", "u:1"], ["pull", "u:2"], ["ls", "--remote", "gone"]):
        t0 = time.monotonic()
        r = s.run(*cmd, timeout=60)
        took = time.monotonic() - t0
        check(r.rc == EXIT_ERROR, f"{cmd} against a dead cluster: " + r.describe())
        check(took < 20, f"{cmd} took {took:.1f} s with a 3 s timeout")
        check("timeout" in r.err or "reachable" in r.err or "mon" in r.err,
              f"{cmd}: the error must say what to check: {r.err}")
    check(s.ls() == before, "failed remote commands must not change the local store")
    s.verify_ok("after failed remote commands")


def shared_pack_removed(work):
    """A pack removed and one model using it pushed again: another model
    whose locations still name the removed pack reads those chunks from
    where the chunk index now says they are."""
    ns = namespace("shr")
    a = store_with_remote(os.path.join(work, "shr"), ns)
    v1, v2 = two_versions(work, a, "shr", 4, seed=5, tensors=12, change=0.25, change_seed=6)
    a.ok("push", "shr:1")
    first = packs(ns)
    a.ok("push", "shr:2")
    for k in first:
        rados(ns, "rm", k)
    a.ok("push", "shr:1")
    fresh = store_with_remote(os.path.join(work, "shr-fresh"), ns)
    fresh.ok("pull", "shr:2")
    fresh.export_matches("shr:2", tree_sha256(v2), work)
    fresh.ok("pull", "shr:1")
    fresh.export_matches("shr:1", tree_sha256(v1), work)
    log(f"{len(first)} shared pack(s) removed and shr:1 pushed again: shr:2 still pulls")


def body(work):
    remote_config(work)
    round_trip_and_dedup(work)
    corrupted_chunk(work)
    old_remote(work)
    shared_pack_removed(work)
    unreachable(work)


if __name__ == "__main__":
    run_test("remote_push_pull", body)
