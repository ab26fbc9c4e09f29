#!/usr/bin/env python3
"""`pstore remote gc` racing a push, with the moments of the race chosen
exactly: the gc and the push are real processes that stop at named points
(PSTORE_TEST_PAUSE, store/remote/test_pause.h) while the other runs a whole
step, so each interleaving is tested every run rather than by chance.

- published during the check: a gc lists a dead model's chunks as garbage; a
  push of that model claims them and waits before publishing; the gc marks
  them and reads the claims; the push publishes (and drops its claim's
  manifest copy); the gc goes on. The pushed name must pull byte-identical.
- retained after the mark: a gc marks a dead model's chunks and reads the
  claims and names (none); a push of that model then retains them and
  publishes; the gc goes on. Only the cleared marks save the chunks: they
  must stay, and the name pull byte-identical.
- withdrawn before its locations: a push stops after writing and retaining
  its packs, right before its locations object; a gc with a short grace
  withdraws its claim and deletes those packs; another push of the model
  publishes it; the first goes on. It must fail (exit 6) and leave the
  published model's locations alone: the name pulls byte-identical, also
  after another gc.
- killed after its sweep: a gc deletes a dead model's locations and manifest
  before its packs, and is killed after deleting the packs, before cleaning
  the chunk index; the next gc removes the index entries naming the missing
  packs, and a push of the model uploads it again."""

import json
import os
import time

from harness import EXIT_BUSY, check, log, make_model, run_test, tree_sha256
from remote_harness import Paused, index_keys, namespace, objects, pushed_model, remote_names, store_with_remote


def tagged_model(work, tag, seed, mb=2, tensors=6):
    """A store with a remote of its own namespace and one model, m:1, pushed."""
    ns = namespace(tag)
    a, f = pushed_model(work, ns, tag, f"{tag}.safetensors", "m:1", mb, seed=seed, tensors=tensors)
    return a, ns, f


def dead_model(work, tag, seed):
    """A store with a model pushed and its name removed again: every chunk
    of it is garbage on the remote."""
    a, ns, f = tagged_model(work, tag, seed, mb=4, tensors=12)
    chunks = {o for o in objects(ns) if o.startswith("k.")}
    check(chunks, "the push uploaded no pack")
    a.ok("rm", "--remote", "fleet", "m:1")
    return a, ns, f, chunks


def kept_and_pulls(work, ns, chunks, f, tag, what):
    """Every chunk of m:1 is still there, and m:1 pulls byte-identical."""
    missing = chunks - objects(ns)
    check(not missing, f"the gc deleted {len(missing)} of the {len(chunks)} packs of m:1, "
          f"which a push {what}")
    pulls_identical(work, ns, "m:1", f, tag)


def pulls_identical(work, ns, ref, f, tag):
    fresh = store_with_remote(os.path.join(work, f"fresh-{tag}"), ns)
    fresh.ok("pull", ref)
    fresh.export_matches(ref, tree_sha256(f), work)


def published_during_check(work):
    a, ns, f, chunks = dead_model(work, "pub", 71)
    g = Paused(a, work, "pub-gc", ["gc-marking", "gc-claims"], "remote", "gc", "fleet")
    g.wait_paused("gc-marking")  # step 1 found the chunks dead
    p = Paused(a, work, "pub-push", ["push-publish"], "push", "m:1")
    p.wait_paused("push-publish")  # claimed, retained every chunk, manifest up
    g.go("gc-marking")
    g.wait_paused("gc-claims")  # marked them again, read the push's claim
    p.go("push-publish")
    p.finish("the push published while a gc checked")
    check("m:1" in remote_names(a), "the push did not publish m:1")
    check(not any(o.startswith("p.") for o in objects(ns)),
          "the push left its claim's manifest copy behind")
    g.go("gc-claims")
    g.finish("a gc that a push published during")
    kept_and_pulls(work, ns, chunks, f, "pub", "published while the gc checked")
    log(f"published during the check: all {len(chunks)} chunks kept, m:1 pulls byte-identical")


def retained_after_mark(work):
    a, ns, f, chunks = dead_model(work, "ret", 72)
    g = Paused(a, work, "ret-gc", ["gc-names"], "remote", "gc", "fleet", json_out=True)
    g.wait_paused("gc-names")  # marked every chunk, read the claims and names (none)
    a.ok("push", "m:1")  # retains them (clearing the marks) and publishes
    g.go("gc-names")
    out = g.finish("a gc that a push retained chunks during")
    j = json.loads(out)
    check(j["kept"] >= len(chunks) and j["deleted_packs"] == 0,
          f"the gc should have kept the {len(chunks)} packs by their cleared marks: {j}")
    kept_and_pulls(work, ns, chunks, f, "ret", "retained after they were marked")
    log(f"retained after the mark: all {len(chunks)} chunks kept, m:1 pulls byte-identical")


def removed_during_check(work):
    a, ns, _ = tagged_model(work, "rmd", 73)
    g = Paused(a, work, "rmd-gc", ["gc-find-names"], "remote", "gc", "fleet", json_out=True)
    g.wait_paused("gc-find-names")  # read m:1 among the names
    a.ok("rm", "--remote", "fleet", "m:1")
    j = json.loads(a.ok("remote", "gc", "fleet", json_out=True).out)
    check(j["deleted_manifests"] == 1, f"a second gc should have deleted m:1's manifest: {j}")
    g.go("gc-find-names")
    g.finish("a gc whose name was removed and collected by another gc meanwhile")
    check(not any(o.startswith(("c.", "k.", "l.", "m.")) for o in objects(ns)),
          "a pack, locations or manifest of the removed model is left")
    log("removed during the check: the gc skipped the removed name, no error")


def removed_during_unchanged_push(work):
    a, ns, f = tagged_model(work, "rmu", 74)
    p = Paused(a, work, "rmu-push", ["push-publish"], "push", "m:1")
    p.wait_paused("push-publish")  # found m:1 already naming the model
    a.ok("rm", "--remote", "fleet", "m:1")
    p.go("push-publish")
    out, err = p.p.communicate(timeout=300)
    check(p.p.returncode == EXIT_BUSY and "again" in err,
          f"a push finding its name unchanged, removed before it finished, must fail with "
          f"exit 6 and say to run it again: rc {p.p.returncode}: {out[-200:]} {err[-400:]}")
    check("m:1" not in remote_names(a), "the name came back without a push saying so")
    a.ok("push", "m:1")
    pulls_identical(work, ns, "m:1", f, "rmu")
    log("removed during an unchanged push: exit 6, the rerun pushes it")


def withdrawn_before_locations(work):
    ns = namespace("wdr")
    a = store_with_remote(os.path.join(work, "wdr"), ns)
    f = make_model(os.path.join(work, "wdr.safetensors"), 2, seed=75, tensors=6)
    a.ok("import", f, "m:1")
    p = Paused(a, work, "wdr-push", ["push-locations"], "push", "m:1")
    p.wait_paused("push-locations")  # packs written and retained, claim renewed
    time.sleep(3)  # the claim is older than the gc's grace
    j = json.loads(a.ok("remote", "gc", "fleet", "--grace", "1", "--force", json_out=True).out)
    check(j["deleted_packs"] >= 1, f"the gc should have deleted the stopped push's packs: {j}")
    a.ok("push", "m:1")  # writes packs again, the locations and the name
    p.go("push-locations")
    out, err = p.p.communicate(timeout=300)
    check(p.p.returncode == EXIT_BUSY and "again" in err,
          f"a push whose claim a gc withdrew must fail with exit 6 and say to run it again: "
          f"rc {p.p.returncode}: {out[-200:]} {err[-400:]}")
    pulls_identical(work, ns, "m:1", f, "wdr")
    a.ok("remote", "gc", "fleet", "--grace", "1", "--force")
    pulls_identical(work, ns, "m:1", f, "wdr2")
    log("withdrawn before its locations: exit 6, the published model's locations kept")


def killed_after_sweep(work):
    a, ns, f, packs = dead_model(work, "swp", 76)
    keys = index_keys(ns)
    check(keys, "the push set no index entries")
    g = Paused(a, work, "swp-gc", ["gc-sweeping", "gc-swept"], "remote", "gc", "fleet")
    g.wait_paused("gc-sweeping")
    left = objects(ns)
    check(not any(o.startswith(("l.", "m.")) for o in left) and packs <= left,
          f"the gc must delete the dead model's locations and manifest before its packs: "
          f"{sorted(o for o in left if o[:2] in ('l.', 'm.', 'k.'))}")
    g.go("gc-sweeping")
    g.wait_paused("gc-swept")
    g.p.kill()
    g.p.communicate(timeout=60)
    check(not packs & objects(ns), "the gc stopped before deleting the dead packs")
    check(index_keys(ns) == keys, "the killed gc removed index entries after all")
    j = json.loads(a.ok("remote", "gc", "fleet", json_out=True).out)
    check(j["index_entries_removed"] == len(keys) and not index_keys(ns),
          f"the next gc must remove the {len(keys)} entries naming the deleted packs: "
          f"{j['index_entries_removed']} removed, {len(index_keys(ns))} left")
    r = a.ok("push", "m:1", json_out=True).json()
    check(r["moved_chunks"] == r["chunks"], f"m:1 pushed after its packs went: {r}")
    pulls_identical(work, ns, "m:1", f, "swp")
    log(f"killed after its sweep: locations and manifest went first, the next gc removed "
        f"{len(keys)} leaked index entries")


def body(work):
    published_during_check(work)
    retained_after_mark(work)
    removed_during_check(work)
    removed_during_unchanged_push(work)
    withdrawn_before_locations(work)
    killed_after_sweep(work)


if __name__ == "__main__":
    run_test("remote_gc_race", body)
