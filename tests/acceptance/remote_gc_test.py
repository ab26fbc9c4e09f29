#!/usr/bin/env python3
"""`pstore remote gc` against a real Ceph cluster, with real pstore processes.

- exact: after `rm --remote`, a gc leaves exactly the manifests and locations
  that pushing the remaining name alone creates (compared with `rados ls`
  against a second namespace) and the packs it uses: a pack no name uses
  goes with its index entries (and no others), a pack partly used stays whole
  with its unused bytes reported; --dry-run counts the same and deletes
  nothing; objects that are not pstore's stay.
- a killed push (SIGKILL just before it publishes): its claim and what it uploaded stay while the claim is
  fresh, and go with a gc whose grace it outlived; the push then reruns.
- a stopped push (SIGSTOP just before it publishes): a gc keeps its chunks while its
  claim is fresh, and the push completes; a gc with a short grace withdraws
  the claim and deletes its chunks, and the push, continued, fails with exit
  6 and publishes nothing; its rerun completes.
- two stores ("hosts") pushing the same and overlapping models at once,
  round after round with the names removed in between, while each host runs
  `remote gc` in a loop: every push succeeds, and every name pulls
  byte-identical into a fresh store after every round. (Whether a gc and a
  push meet at a dangerous moment here is chance: remote_gc_race_test.py
  makes each such moment happen.)"""

import os
import signal
import threading
import time

from harness import EXIT_BUSY, Store, check, log, make_model, run_test, tree_sha256
from remote_harness import (Paused, index_keys, namespace, objects, objects_settled, packs, rados,
                            remote_names, store_with_remote)


def gc(store, *args, remote="fleet"):
    j = store.ok("remote", "gc", remote, *args, json_out=True).json()
    check(j.get("ok") is True, f"remote gc --json says not ok: {j}")
    return j


def pstore_objects(ns):
    """The namespace's objects but the chunk index's shards (which stay once
    made; their entries are checked by index_keys)."""
    return {o for o in objects(ns) if not (o.startswith("i.") and len(o) == 4)}


def exact(work):
    ns, ns_alone = namespace("gc"), namespace("gcalone")
    a = store_with_remote(os.path.join(work, "a"), ns)
    alone = store_with_remote(os.path.join(work, "alone"), ns_alone)
    files = {
        "m:a": make_model(os.path.join(work, "a.safetensors"), 6, seed=1, tensors=12),
        "m:b": make_model(os.path.join(work, "b.safetensors"), 6, seed=1, tensors=12,
                          change=0.5, change_seed=2),
        "n:c": make_model(os.path.join(work, "c.safetensors"), 4, seed=3, tensors=8),
    }
    packs_of = {}
    for ref, f in files.items():
        a.ok("import", f, ref)
        seen = packs(ns)
        a.ok("push", ref)
        packs_of[ref] = packs(ns) - seen
    check(all(packs_of.values()), f"each push must have written a pack: {packs_of}")
    # Nothing to collect yet.
    j = gc(a)
    check(j["deleted_packs"] == 0 and j["deleted_manifests"] == 0 and j["partly_dead_packs"] == 0,
          f"a gc with every model named deleted something: {j}")
    rados(ns, "put", "not-pstores", "-", data=b"someone else's object")
    # Named like pstore's objects but with uppercase hex: not pstore's either.
    upper = ["c." + "AB" * 16, "k." + "AB" * 16]
    for o in upper:
        rados(ns, "put", o, "-", data=b"someone else's object")
    a.ok("rm", "--remote", "fleet", "m:a", "n:c")
    # The same remaining name pushed alone into another namespace: the
    # manifest and locations that must stay (packs have random names).
    alone.ok("import", files["m:b"], "m:b")
    alone.ok("push", "m:b")
    keep = ({o for o in objects(ns_alone) if o.startswith(("m.", "l.")) or o == "pstore.names"}
            | {"not-pstores"} | set(upper) | packs_of["m:a"] | packs_of["m:b"])
    before = pstore_objects(ns)
    keys_before = index_keys(ns)
    dead = before - keep
    dead_packs = {o for o in dead if o.startswith("k.")}
    dead_meta = {o for o in dead if o.startswith(("m.", "l."))}
    # n:c shares nothing: its packs are dead; m:a's pack holds chunks m:b
    # uses, so it is kept whole.
    check(dead == dead_packs | dead_meta and dead_packs == packs_of["n:c"] and len(dead_meta) == 4,
          f"unexpected objects to collect: {sorted(dead)[:6]}")
    r = a.run("remote", "gc", "fleet", "--grace", "5")
    check(r.rc == 4 and "--force" in r.err and "running" in r.err,
          f"a --grace below 60 s without --force must be refused (exit 4): {r.describe()}")
    check(pstore_objects(ns) == before, "a refused gc changed the remote")
    d = gc(a, "--dry-run")
    check(d["dry_run"] and d["dead_packs"] == len(dead_packs) and d["dead_manifests"] == 2
          and d["dead_locations"] == 2 and d["deleted_packs"] == 0,
          f"dry run: {d}, expected {len(dead_packs)} packs")
    check(d["other_objects"] == 3,
          f"dry run counted the 3 foreign objects as {d['other_objects']}")
    check(pstore_objects(ns) == before and index_keys(ns) == keys_before, "--dry-run changed the remote")
    j = gc(a)
    check(j["deleted_packs"] == len(dead_packs) and j["deleted_manifests"] == 2
          and j["deleted_locations"] == 2,
          f"gc deleted {j['deleted_packs']} packs, {j['deleted_manifests']} manifests; "
          f"expected {len(dead_packs)} and 2")
    after = pstore_objects(ns)
    check(after == keep, f"after gc the namespace holds {len(after)} objects, expected "
          f"{len(keep)}: extra {sorted(after - keep)[:4]}, missing {sorted(keep - after)[:4]}")
    # The dead pack's index entries went with it, and no other.
    removed = keys_before - index_keys(ns)
    check(removed and j["index_entries_removed"] == len(removed) and not index_keys(ns) - keys_before,
          f"gc removed {len(removed)} index entries, says {j['index_entries_removed']}")
    # The partly dead pack is kept whole and its unused bytes reported.
    check(j["partly_dead_packs"] == 1 and j["live_packs_dead_bytes"] > 0,
          f"m:a's pack, half of it used by m:b, must be reported partly dead: {j}")
    log(f"gc: deleted {len(dead)} of {len(before)} objects and {len(removed)} index entries; "
        f"kept m:a's pack whole with {j['live_packs_dead_bytes']} unused bytes")
    again = gc(a)
    check(again["deleted_packs"] == 0 and again["dead_packs"] == 0
          and again["index_entries_removed"] == 0, f"a second gc: {again}")
    fresh = store_with_remote(os.path.join(work, "fresh"), ns)
    fresh.ok("pull", "m:b")
    fresh.export_matches("m:b", tree_sha256(files["m:b"]), work)
    # n:c pushed again reuses nothing of the deleted pack: it uploads it all.
    r = a.ok("push", "n:c", json_out=True).json()
    check(r["moved_chunks"] == r["chunks"], f"n:c pushed after its pack was collected: {r}")
    fresh.ok("pull", "n:c")
    fresh.export_matches("n:c", tree_sha256(files["n:c"]), work)
    a.ok("rm", "--remote", "fleet", "n:c")
    gc(a)
    check(pstore_objects(ns) == keep, "n:c's second push was not collected whole")
    # Text output, for people.
    r = a.ok("remote", "gc", "fleet")
    check("deleted 0 packs" in r.out and "not pstore's" in r.out and "not rewritten" in r.out,
          f"gc's text output: {r.out}")
    return a, ns, keep


def interrupted_push(store, ns, ref, stop, work):
    """A push of ref killed, or stopped (SIGSTOP), once it has uploaded every
    chunk and its manifest, just before it publishes (its push-publish pause
    point, so the moment does not depend on the machine's speed). Returns
    the process and the packs it uploaded; a stopped one continues
    on SIGCONT."""
    base = objects_settled(ns, "k.")
    p = Paused(store, work, "push-" + ref.replace(":", "-"), ["push-publish"], "push", ref,
               "--timeout", "300")
    p.wait_paused("push-publish")
    p.p.send_signal(signal.SIGSTOP if stop else signal.SIGKILL)
    if stop:
        p.go("push-publish")  # seen once it is continued
    else:
        p.p.communicate()
    uploaded = objects_settled(ns, "k.") - base
    check(uploaded and ref not in remote_names(store),
          f"the interrupted push of {ref} uploaded {len(uploaded)} chunks and published: "
          f"{ref in remote_names(store)}")
    return p.p, uploaded


def killed_push(work, a, ns, keep):
    f = make_model(os.path.join(work, "k.safetensors"), 32, seed=41, tensors=32)
    a.ok("import", f, "k:1")
    p, uploaded = interrupted_push(a, ns, "k:1", False, work)
    j = gc(a)
    check(len(j["claims"]) == 1 and not j["claims"][0]["withdrawn"],
          f"a fresh claim of a killed push must be kept: {j['claims']}")
    objs = objects(ns)
    check(uploaded <= objs and j["deleted_packs"] == 0,
          f"gc deleted chunks of a push whose claim is fresh: {j}")
    check(any(o.startswith("p.") for o in objs), "the killed push's claim object is missing")
    time.sleep(1.1)
    j = gc(a, "--grace", "0", "--force")
    check(len(j["claims"]) == 1 and j["claims"][0]["withdrawn"],
          f"a claim older than the grace must be withdrawn: {j['claims']}")
    check(j["deleted_packs"] == len(uploaded) and j["deleted_claim_objects"] == 1,
          f"gc after the grace deleted {j['deleted_packs']} packs, the push uploaded "
          f"{len(uploaded)}: {j}")
    check(pstore_objects(ns) == keep, "after the killed push's claim went, the namespace must hold "
          "exactly what the names need")
    a.ok("push", "k:1")
    fresh = store_with_remote(os.path.join(work, "fresh-k"), ns)
    fresh.ok("pull", "k:1")
    fresh.export_matches("k:1", tree_sha256(f), work)
    log(f"killed push: its {len(uploaded)} packs kept while its claim was fresh, deleted after")


def stopped_push(work, a, ns):
    # Fresh claim: a gc keeps what the stopped push uploaded; it then completes.
    f1 = make_model(os.path.join(work, "s1.safetensors"), 32, seed=51, tensors=32)
    a.ok("import", f1, "s:1")
    p, uploaded = interrupted_push(a, ns, "s:1", True, work)
    try:
        j = gc(a)
        check(any(not c["withdrawn"] for c in j["claims"]), f"claims: {j['claims']}")
        check(uploaded <= objects(ns), "a gc deleted packs a stopped push with a fresh claim "
              "had uploaded")
    finally:
        p.send_signal(signal.SIGCONT)
    out, err = p.communicate(timeout=300)
    check(p.returncode == 0, f"the push continued after a gc failed: rc {p.returncode}: {out} {err[-400:]}")
    fresh = store_with_remote(os.path.join(work, "fresh-s1"), ns)
    fresh.ok("pull", "s:1")
    fresh.export_matches("s:1", tree_sha256(f1), work)
    # Withdrawn claim: the gc deletes its chunks, the push cannot publish.
    f2 = make_model(os.path.join(work, "s2.safetensors"), 32, seed=52, tensors=32)
    a.ok("import", f2, "s:2")
    p, uploaded = interrupted_push(a, ns, "s:2", True, work)
    try:
        time.sleep(2.1)
        j = gc(a, "--grace", "1", "--force")
        check(any(c["withdrawn"] for c in j["claims"]), f"claims: {j['claims']}")
        check(j["deleted_packs"] >= len(uploaded),
              f"a gc that withdrew the claim deleted {j['deleted_packs']} packs, the push had "
              f"uploaded {len(uploaded)}")
    finally:
        p.send_signal(signal.SIGCONT)
    out, err = p.communicate(timeout=300)
    check(p.returncode == EXIT_BUSY and "withdrew" in err and "again" in err,
          f"a push whose claim was withdrawn must fail with exit 6 and say to rerun: "
          f"rc {p.returncode}: {err[-400:]}")
    check("s:2" not in remote_names(a), "a push whose claim was withdrawn published its name")
    a.ok("push", "s:2")
    fresh.ok("pull", "s:2")
    fresh.export_matches("s:2", tree_sha256(f2), work)
    log(f"stopped push: kept with a fresh claim; withdrawn after the grace, exit 6, rerun ok")


def two_hosts(work):
    ns = namespace("gc2")
    h = [store_with_remote(os.path.join(work, f"host{i}"), ns) for i in (1, 2)]
    base = make_model(os.path.join(work, "base.safetensors"), 6, seed=61, tensors=16)
    files = {"base": base}
    for i in range(1, 5):
        files[f"v{i}"] = make_model(os.path.join(work, f"v{i}.safetensors"), 6, seed=61,
                                    tensors=16, change=0.3, change_seed=i)
    # Host 1: base, v1, v2, v3; host 2: base, v2, v3 and v4 (the same bytes as
    # host 1's where the names match); both push base also as "shared:1".
    plan = {0: ["base", "v1", "v2", "v3"], 1: ["base", "v2", "v3", "v4"]}
    refs = {}
    for i, models in plan.items():
        for m in models:
            h[i].ok("import", files[m], f"h{i}/{m}:1")
            refs[f"h{i}/{m}:1"] = files[m]
        h[i].ok("tag", f"h{i}/base:1", "shared:1")
    refs["shared:1"] = base
    stop = threading.Event()
    gc_runs, gc_deleted, gc_kept, gc_errors = [0], [0], [0], []

    def gc_loop(store):
        while not stop.is_set():
            r = store.run("remote", "gc", "fleet", json_out=True)
            if r.rc != 0:
                gc_errors.append(r.describe())
                return
            j = r.json()
            gc_runs[0] += 1
            gc_deleted[0] += j["deleted_packs"]
            gc_kept[0] += j["kept"]

    push_errors = []

    def pusher(i, names):
        for ref in names:
            for _ in range(5):
                r = h[i].run("push", ref, json_out=True)
                if r.rc == 0:
                    break
                if r.rc == EXIT_BUSY and ref == "shared:1":
                    continue  # the other host set it at the same moment
                push_errors.append(r.describe())
                return

    loops = [threading.Thread(target=gc_loop, args=(s,)) for s in h]
    for t in loops:
        t.start()
    try:
        rounds = 4
        for rnd in range(rounds):
            names = {i: [f"h{i}/{m}:1" for m in plan[i]] + ["shared:1"] for i in plan}
            ts = [threading.Thread(target=pusher, args=(i, names[i])) for i in plan]
            for t in ts:
                t.start()
            for t in ts:
                t.join()
            check(not push_errors, f"a push failed in round {rnd}: {push_errors[:2]}")
            listed = remote_names(h[0])
            check(set(refs) <= set(listed), f"round {rnd}: the remote lists {sorted(listed)}")
            # Every name, every round, while the gcs go on: a chunk deleted
            # under a name shows here.
            fresh = store_with_remote(os.path.join(work, f"fresh-2-{rnd}"), ns)
            for ref, f in sorted(refs.items()):
                fresh.ok("pull", ref)
                fresh.export_matches(ref, tree_sha256(f), work)
            if rnd < rounds - 1:
                # Make everything garbage, so the next round's pushes find
                # chunks a gc is about to delete.
                h[0].ok("rm", "--remote", "fleet", *sorted(listed))
    finally:
        stop.set()
        for t in loops:
            t.join()
    check(not gc_errors, f"a gc failed while pushes ran: {gc_errors[:2]}")
    check(gc_runs[0] >= 4 and gc_deleted[0] > 0,
          f"the gc loops ran {gc_runs[0]} times and deleted {gc_deleted[0]} packs: the race "
          "was not exercised")
    gc(h[0])
    fresh = store_with_remote(os.path.join(work, "fresh-2"), ns)
    for ref, f in sorted(refs.items()):
        fresh.ok("pull", ref)
        fresh.export_matches(ref, tree_sha256(f), work)
    fresh.verify_ok("after pulling every name")
    log(f"two hosts: 4 rounds of pushes, {gc_runs[0]} gc runs deleting {gc_deleted[0]} packs "
        f"and keeping {gc_kept[0]} a push needed; every name pulls byte-identical")


def body(work):
    a, ns, keep = exact(work)
    killed_push(work, a, ns, keep)
    stopped_push(work, a, ns)
    two_hosts(work)


if __name__ == "__main__":
    run_test("remote_gc", body)
