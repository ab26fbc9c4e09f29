#!/usr/bin/env python3
"""SIGKILL of push and pull at random moments, with real processes on a real
cluster.

push: 30 trials, each pushing a new version (a new name) and killing the push
at a random moment of its run, then running `remote gc --grace 0` (which
withdraws the killed push's claim and deletes what it uploaded). After every
kill and gc, every name the remote lists must pull whole into a fresh store
(its manifest and every chunk are on the cluster, checked against their
keys), and a rerun of the push completes. At the end the namespace holds no
pack, manifest or locations object that no name needs.

pull: 12 trials, each pulling into a fresh store and killing the pull at a
random moment between a tenth and nine tenths of a pull's time, and one kill placed
at the pause point pull-kept, after a flush of part of what the pull fetched
and before its commit (where random kills fall depends on the machine's
speed). After every kill the store verifies clean and lists the model only if
it is whole (its export is byte-identical); a rerun completes, fetching
exactly the chunks the killed pull had not stored (counted on a copy
of the store, whose `compact` removes them)."""

import os
import random
import shutil
import signal
import time

from harness import Store, check, log, make_model, run_test, tree_sha256
from remote_harness import Paused, namespace, remote_names, store_with_remote

PUSH_TRIALS = 30
PULL_TRIALS = 12


def kill_at(store, delay, *args):
    p = store.popen(*args)
    time.sleep(delay)
    killed = p.poll() is None
    if killed:
        p.send_signal(signal.SIGKILL)
    out, err = p.communicate(timeout=120)
    return killed, p.returncode, err


def push_kills(work, rng):
    ns = namespace("kpush")
    src = store_with_remote(os.path.join(work, "src"), ns)
    base = os.path.join(work, "base.safetensors")
    make_model(base, 12, seed=11, tensors=24)
    src.ok("import", base, "m:v0")
    files = {}
    for i in range(1, PUSH_TRIALS + 1):
        f = os.path.join(work, f"v{i}.safetensors")
        make_model(f, 12, seed=11, tensors=24, change=0.3, change_seed=i)
        src.ok("import", f, f"m:v{i}")
        files[f"m:v{i}"] = f
    src.ok("push", "m:v0")
    # What a trial's push takes: versions sharing most chunks with those
    # pushed (pushed under names of their own, then left for the gcs); the
    # median of three, so that one stalled probe does not set kills past
    # the pushes' end.
    times = []
    for n in range(3):
        probe = os.path.join(work, f"probe{n}.safetensors")
        make_model(probe, 12, seed=11, tensors=24, change=0.3, change_seed=PUSH_TRIALS + 1 + n)
        src.ok("import", probe, f"m:probe{n}")
        t0 = time.monotonic()
        src.ok("push", f"m:probe{n}")
        times.append(time.monotonic() - t0)
        src.ok("rm", "--remote", "fleet", f"m:probe{n}")
    full = sorted(times)[1]
    probes = ", ".join(f"{t:.2f}" for t in times)
    log(f"a push of a changed version takes {full:.2f} s (probes {probes})")
    killed_count = gc_deleted = 0
    for i in range(1, PUSH_TRIALS + 1):
        ref = f"m:v{i}"
        killed, rc, err = kill_at(src, rng.uniform(0, full * 0.8), "push", ref)
        killed_count += killed
        check(killed or rc == 0, f"push of {ref} failed without a kill: {err}")
        # A gc between trials: the killed push's claim is older than a grace
        # of 0 once a second has passed, so what it uploaded goes.
        time.sleep(1.05)
        j = src.ok("remote", "gc", "fleet", "--grace", "0", "--force", json_out=True).json()
        check(all(c["withdrawn"] for c in j["claims"]), f"gc left a dead push's claim: {j}")
        gc_deleted += j["deleted_packs"]
        names = remote_names(src)
        if ref in names:
            # Listed: it must be whole on the cluster.
            chk = store_with_remote(os.path.join(work, f"check{i}"), ns)
            chk.ok("pull", ref)
            chk.export_matches(ref, tree_sha256(files[ref]), work)
        src.ok("push", ref)
        check(ref in remote_names(src), f"the rerun of push {ref} did not publish it")
    # Kills fall in the first four fifths of a probe's time; a trial push
    # that runs much faster than the probes ends before some of them.
    check(killed_count >= PUSH_TRIALS // 3,
          f"only {killed_count} of {PUSH_TRIALS} pushes were killed before they finished")
    final = src.ok("remote", "gc", "fleet", "--dry-run", json_out=True).json()
    check(final["dead_packs"] == 0 and final["dead_locations"] == 0 and final["dead_manifests"] == 0
          and final["chunk_objects"] == 0,
          f"after the trials the remote holds packs no name needs: {final}")
    log(f"push: {killed_count} of {PUSH_TRIALS} killed mid-run, gc after each deleted "
        f"{gc_deleted} packs in all; the remote stayed whole")


def pull_kills(work, rng):
    ns = namespace("kpull")
    src = store_with_remote(os.path.join(work, "psrc"), ns)
    f = os.path.join(work, "pull.safetensors")
    make_model(f, 96, seed=21, tensors=96)  # long enough for a background flush mid-pull
    src.ok("import", f, "big:1")
    src.ok("push", "big:1")
    want = tree_sha256(f)
    # The shorter of two pulls (the first warms the OSD's cache, and later
    # ones can be much faster): kills must fall inside the pulls they meet.
    times = []
    for n in range(2):
        probe = store_with_remote(os.path.join(work, f"probe{n}"), ns)
        t0 = time.monotonic()
        probe.ok("pull", "big:1")
        times.append(time.monotonic() - t0)
    full = min(times)
    log(f"a full pull takes {full:.2f} s ({times[0]:.2f} s the first time)")
    killed_count = partial_reruns = committed_after_kill = 0
    # A pull keeps what it fetched once its background flush ran (every 64 MiB
    # or 100 ms): a kill early in a short pull often leaves nothing, and one
    # late may find it committed. Whatever a kill left, the rerun must fetch
    # exactly what the store lacks.
    for i in range(PULL_TRIALS):
        dst = store_with_remote(os.path.join(work, f"dst{i}"), ns)
        killed, rc, err = kill_at(dst, rng.uniform(0.1 * full, 0.9 * full), "pull", "big:1")
        killed_count += killed
        check(killed or rc == 0, f"pull failed without a kill: {err}")
        left, committed = killed_pull_left(dst, work, f"trial {i}", want)
        committed_after_kill += committed
        moved, chunks = rerun(dst, left, work, want, f"trial {i}")
        if killed and 0 < moved < chunks:
            partial_reruns += 1
    check(killed_count >= PULL_TRIALS // 3,
          f"only {killed_count} of {PULL_TRIALS} pulls were killed mid-run")
    # Where random kills fall depends on the machine's speed; one kill is
    # placed: at the pause point pull-kept (store/remote/test_pause.h), after a
    # flush of part of what the pull fetched and before its commit.
    dst = store_with_remote(os.path.join(work, "dst-kept"), ns)
    pull = Paused(dst, work, "kept", ["pull-kept"], "pull", "big:1")
    try:
        pull.wait_paused("pull-kept")
    finally:
        pull.p.kill()  # paused, or stuck before it: never left behind
        pull.p.communicate(timeout=120)
    left, committed = killed_pull_left(dst, work, "the placed kill", want)
    check(not committed and left is not None and left > 0,
          f"a pull killed after its flush and before its commit kept {left} chunks"
          f"{' and committed the model' if committed else ''}")
    moved, chunks = rerun(dst, left, work, want, "the placed kill")
    check(0 < moved < chunks, f"the rerun after the placed kill fetched {moved} of {chunks} chunks")
    log(f"pull: {killed_count} of {PULL_TRIALS} killed at random; {partial_reruns} of their reruns "
        f"fetched only what was missing; {committed_after_kill} killed after their commit; the "
        f"placed kill kept {left} of {chunks} chunks and its rerun fetched the other {moved}")


def killed_pull_left(dst, work, what, want):
    """After a pull into dst was killed: checks the store, and returns (the
    number of chunks the killed pull stored, or None if the model is listed
    whole, and whether it was committed only as the writer reopened)."""
    dst.verify_ok(f"after a pull killed in {what}")
    if "big:1" in dst.ls():
        dst.export_matches("big:1", want, work)
        return None, False
    # What the killed pull stored: a copy's compact removes exactly that.
    copy = os.path.join(work, "copy")
    shutil.copytree(dst.root, copy, symlinks=True)
    try:
        left = Store(copy).ok("compact", json_out=True).json()["chunks_removed"]
        # A pull killed right after its commit: the writer's reopen lists the
        # model whole, and the rerun has nothing to fetch.
        if "big:1" in Store(copy).ls():
            Store(copy).export_matches("big:1", want, work)
            return None, True
        return left, False
    finally:
        shutil.rmtree(copy)


def rerun(dst, left, work, want, what):
    """Pulls again into dst, which the killed pull left holding `left` chunks
    (None: unknown); returns (chunks moved, chunks of the model)."""
    r = dst.ok("pull", "big:1", json_out=True).json()
    if left is not None:
        check(r["moved_chunks"] == r["chunks"] - left,
              f"the rerun after {what} fetched {r['moved_chunks']} of {r['chunks']} chunks, but "
              f"the killed pull had stored {left}: it must fetch exactly what it lacks")
    dst.export_matches("big:1", want, work)
    dst.verify_ok(f"after the rerun of {what}")
    return r["moved_chunks"], r["chunks"]


def body(work):
    seed = int(os.environ.get("PSTORE_TEST_SEED", time.time()))
    log(f"seed {seed} (PSTORE_TEST_SEED repeats a run)")
    rng = random.Random(seed)
    push_kills(work, rng)
    pull_kills(work, rng)


if __name__ == "__main__":
    run_test("remote_kill", body)
