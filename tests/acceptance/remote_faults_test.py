#!/usr/bin/env python3
"""Faults of the remote tier, with real processes on the fixture's cluster.

The OSD stopped in the middle of a pull (tests/ceph/cluster.sh stop-osd, the
mon still up, while the pull waits at a test pause point after writing its
first batch of chunks): the pull fails with exit 1 within the bound its --timeout
sets, with a message saying what to check; the local store is unchanged
(verify clean, no new model listed, no chunk left behind); push and remote gc
fail the same way and change nothing; once the OSD is back (start-osd) the
same pull completes byte-identical.

This test stops the shared cluster's OSD, so ctest runs it alone (RUN_SERIAL).
"""

import os
import subprocess
import time

from harness import EXIT_ERROR, Failure, check, log, make_model, run_test, tree_sha256
from remote_harness import (Paused, cluster, namespace, pushed_model, remote_names,
                            store_with_remote)

TIMEOUT = 5  # the remote's timeout, seconds
BOUND = 3 * TIMEOUT + 10  # what "within the timeout" is allowed on a loaded machine


def cluster_sh(cmd):
    conf, _ = cluster()
    script = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "ceph", "cluster.sh")
    p = subprocess.run([script, cmd, os.path.dirname(conf)], capture_output=True, text=True,
                       timeout=300)
    if p.returncode != 0:
        raise Failure(f"cluster.sh {cmd} failed: {p.stderr[-800:]}")


def osd_down_mid_pull(work):
    ns = namespace("osd")
    src, f = pushed_model(work, ns, "src", "big.safetensors", "big:1", 64, seed=31, tensors=64)
    chunks = src.stat()["chunks"]
    check(chunks > 2 * 32, f"big:1 has {chunks} chunks: too few for a pull of more than one "
          "batch, so the OSD cannot be stopped in its middle")
    # The store that will see the fault holds another model already.
    dst = store_with_remote(os.path.join(work, "dst"), ns, timeout=TIMEOUT)
    other = make_model(os.path.join(work, "other.safetensors"), 2, seed=32, tensors=4)
    dst.ok("import", other, "other:1")
    before_ls, before_stat = dst.ls(), dst.stat()
    stopped = False
    try:
        # The pull stops after writing its first batch of chunks (a test
        # pause point); the OSD is stopped there, then the pull goes on.
        pull = Paused(dst, work, "pull", ["pull-written"], "pull", "big:1")
        pull.wait_paused("pull-written")
        p = pull.p
        stopped = True
        cluster_sh("stop-osd")
        t_stop = time.monotonic()
        pull.go("pull-written")
        out, err = p.communicate(timeout=BOUND + 60)
        took = time.monotonic() - t_stop
        log(f"pull with the OSD stopped: exit {p.returncode} after {took:.1f} s: {err.strip()[-300:]}")
        check(p.returncode == EXIT_ERROR, f"a pull with the OSD down must fail with exit 1, not "
              f"{p.returncode}: {err[-400:]}")
        check(took <= BOUND, f"the pull took {took:.1f} s to fail with a {TIMEOUT} s timeout")
        check("timeout" in err and "big:1" in err and "as it was" in err,
              f"the error must name the model, the timeout and that nothing changed: {err}")
        check(dst.ls() == before_ls, "a pull that failed changed the local list of models")
        after = dst.stat()
        check(after["chunks"] == before_stat["chunks"],
              f"a failed pull left chunks behind: {before_stat['chunks']} -> {after['chunks']}")
        dst.verify_ok("after a pull cut off by the OSD")
        # push and gc against the stopped OSD: bounded errors, nothing changed.
        src.ok("import", make_model(os.path.join(work, "n.safetensors"), 2, seed=33, tensors=4),
               "new:1")
        for cmd in (["push", "new:1", "--timeout", str(TIMEOUT)],
                    ["remote", "gc", "fleet", "--timeout", str(TIMEOUT)]):
            t0 = time.monotonic()
            r = src.run(*cmd, timeout=BOUND + 60)
            took = time.monotonic() - t0
            check(r.rc == EXIT_ERROR and "timeout" in r.err,
                  f"{cmd} with the OSD down: " + r.describe())
            check(took <= BOUND, f"{cmd} took {took:.1f} s to fail with a {TIMEOUT} s timeout")
    finally:
        if stopped:
            cluster_sh("start-osd")
    log("the OSD is back")
    check("new:1" not in remote_names(src), "a push that failed with the OSD down published")
    # The OSD is serving again (start-osd probed it), but may be slow to
    # catch up on a loaded machine: a generous timeout here.
    dst.ok("pull", "big:1", "--timeout", "300")
    dst.export_matches("big:1", tree_sha256(f), work)
    dst.verify_ok("after the pull once the OSD was back")
    src.ok("push", "new:1", "--timeout", "300")


def body(work):
    osd_down_mid_pull(work)


if __name__ == "__main__":
    run_test("remote_faults", body)
