"""Pieces shared by the pager's acceptance tests: pager_worker processes
(tests/tools/pager_worker.cc, an inference-like process on the C API) and
reading a process's memory figures. Builds on harness.py.
"""

import json
import os
import select
import signal
import subprocess
import time

from harness import Failure, check, env_path, log, popen


def rollup_of(pid, field):
    """One figure of a live process's /proc/PID/smaps_rollup (e.g. "Pss"), in bytes."""
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise Failure(f"no {field} line for pid {pid}")


def pss_of(pid):
    """Proportional set size of a live process, in bytes."""
    return rollup_of(pid, "Pss")


def anonymous_of(pid):
    """Anonymous memory of a live process (its heap, stacks, private maps), in bytes."""
    return rollup_of(pid, "Anonymous")


def settled_pss(pids, seconds=1.0, figure=pss_of):
    """PSS (or another figure) of each process once it has settled: a loader
    gives its scratch memory back 50 ms after its last load, so this samples
    for a while and keeps each process's lowest figure (all processes stay
    alive meanwhile)."""
    best = [None] * len(pids)
    deadline = time.monotonic() + seconds
    while True:
        for i, pid in enumerate(pids):
            v = figure(pid)
            best[i] = v if best[i] is None else min(best[i], v)
        if time.monotonic() >= deadline:
            return best
        time.sleep(0.1)


class Worker:
    """A running pager_worker; its stdout is JSON lines."""

    def __init__(self, store_root, ref, source, mode, arg=None, budget=None, seconds=None,
                 loader_threads=None):
        argv = [env_path("PAGER_WORKER"), store_root, ref, source, mode]
        if arg is not None:
            argv.append(str(arg))
        if budget is not None:
            argv += ["--budget", str(budget)]
        if seconds is not None:
            argv += ["--seconds", str(seconds)]
        if loader_threads is not None:
            argv += ["--loader-threads", str(loader_threads)]
        self.argv = argv
        self.started = time.monotonic()
        self.proc = popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True)
        self.lines = []

    @property
    def pid(self):
        return self.proc.pid

    def read_line(self, timeout=60):
        """The next JSON line (a dict), or a Failure after timeout seconds."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise Failure(f"{' '.join(self.argv)} printed nothing for {timeout} s")
            r, _, _ = select.select([self.proc.stdout], [], [], left)
            if not r:
                continue
            line = self.proc.stdout.readline()
            if not line:
                err = self.proc.stderr.read()
                raise Failure(f"{' '.join(self.argv)} ended early (rc {self.proc.wait()}): {err[-800:]}")
            j = json.loads(line)
            self.lines.append(j)
            return j

    def wait_for(self, key, timeout=60):
        while True:
            j = self.read_line(timeout)
            if j.get(key):
                return j

    def send(self, text="go\n"):
        self.proc.stdin.write(text)
        self.proc.stdin.flush()

    def finish(self, timeout=120):
        """Closes stdin, waits, and returns the final JSON line; fails on a bad exit."""
        try:
            self.proc.stdin.close()
        except BrokenPipeError:
            pass
        done = self.wait_for("done", timeout)
        rc = self.proc.wait(timeout)
        err = self.proc.stderr.read()
        check(rc == 0 and done.get("ok") is True,
              f"{' '.join(self.argv)} failed (rc {rc}): {done} {err[-800:]}")
        return done

    def kill(self):
        try:
            os.kill(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait()


def drop_segments(store):
    """Removes every shared-memory segment of the store nobody uses."""
    store.ok("ps", "--gc-all")


def ps(store):
    j = store.ok("ps", json_out=True).json()
    check(j.get("ok") is True, f"ps --json not ok: {j}")
    return j
