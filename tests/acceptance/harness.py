"""Shared pieces of pstore's acceptance tests: real `pstore` processes against
a store in a scratch folder.

Each test script imports this module, writes its checks with `check`, and runs
its body with `run_test`, which makes a scratch folder under /tmp (removed at
the end, also on SIGTERM/SIGINT), prints PASS or FAIL with the reason, and
exits 0, 1, or SKIP_CODE. The binaries come from the environment:
PSTORE_BIN (the pstore command) and MAKE_MODEL (tests/tools/make_model).

Python 3 standard library only.
"""

import errno
import glob
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback

SKIP_CODE = 77  # registered as the tests' SKIP_RETURN_CODE in CMake

# Exit codes of the pstore command (tools/cli_util.h).
EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_NOT_FOUND, EXIT_INVALID = 0, 1, 2, 3, 4
EXIT_CORRUPT, EXIT_BUSY, EXIT_NO_SPACE, EXIT_EXISTS, EXIT_INTERRUPTED = 5, 6, 7, 8, 9


class Failure(Exception):
    """A failed check: the message says what was expected and what was seen."""


class Skip(Exception):
    """The test cannot run here (and must say so, not pass)."""


def check(cond, msg):
    if not cond:
        raise Failure(msg)


def log(msg):
    print(msg, flush=True)


def env_path(var):
    p = os.environ.get(var)
    if not p:
        raise Failure(f"${var} is not set (ctest passes it; to run by hand, export {var}=path)")
    if not os.access(p, os.X_OK):
        raise Failure(f"${var}={p} is not an executable")
    return p


# How long spawning a process may keep failing for lack of resources (fork or
# clone giving EAGAIN or ENOMEM on a loaded machine) before a test gives up.
SPAWN_RETRY_SECONDS = 120


def popen(argv, **kwargs):
    """subprocess.Popen(argv, **kwargs), retried with a growing pause while the
    system refuses a new process for the moment (EAGAIN, ENOMEM): on a busy
    machine, with other tests running, fork can fail where the test did not."""
    t0 = time.monotonic()
    pause, failures = 0.05, 0
    while True:
        try:
            p = subprocess.Popen(argv, **kwargs)
            if failures:
                log(f"started {argv[0]} after {failures} attempts refused for lack of resources "
                    f"({time.monotonic() - t0:.1f} s)")
            return p
        except OSError as e:
            if e.errno not in (errno.EAGAIN, errno.ENOMEM):
                raise
            if time.monotonic() - t0 >= SPAWN_RETRY_SECONDS:
                raise Failure(f"could not start {argv[0]} for {SPAWN_RETRY_SECONDS} s: "
                              f"{os.strerror(e.errno)} (too many processes or too little memory "
                              "on this machine?)")
            if failures == 0:
                log(f"starting {argv[0]} failed ({os.strerror(e.errno)}); retrying")
            failures += 1
            time.sleep(pause)
            pause = min(pause * 2, 2.0)


def log_stacks(pid, argv):
    """Logs every thread's stack of process pid (argv), to tell where a
    command that did not finish waits; nothing without gdb."""
    gdb = shutil.which("gdb")
    if gdb is None:
        return
    try:
        g = subprocess.run([gdb, "-batch", "-p", str(pid), "-ex", "thread apply all bt"],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                           timeout=20)
        log(f"stacks of `{' '.join(map(str, argv))}` (pid {pid}):\n{g.stdout[-20000:]}")
    except (OSError, subprocess.TimeoutExpired) as e:
        log(f"could not read the stacks of pid {pid}: {e}")


def run_cmd(argv, timeout=None, input=None, capture=True, env=None):
    """Runs argv to the end (like subprocess.run with text output), starting it
    through popen (with env as its environment when given); returns a
    subprocess.CompletedProcess. On timeout the
    process's threads' stacks are logged (when gdb is installed), the process
    is killed and subprocess.TimeoutExpired raised."""
    out = subprocess.PIPE if capture else None
    p = popen(argv, stdin=subprocess.PIPE if input is not None else subprocess.DEVNULL,
              stdout=out, stderr=out, text=True, env=env)
    try:
        o, e = p.communicate(input=input, timeout=timeout)
    except subprocess.TimeoutExpired:
        log_stacks(p.pid, argv)
        p.kill()
        o, e = p.communicate()
        if e:
            log(f"{argv[0]} wrote to stderr before it was killed:\n{e[-4000:]}")
        raise
    return subprocess.CompletedProcess(argv, p.returncode, o, e)


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            b = f.read(1 << 20)
            if not b:
                break
            h.update(b)
    return h.hexdigest()


def tree_sha256(path):
    """{relative file name: sha256} of a file (key "") or of every file in a folder."""
    if os.path.isfile(path):
        return {"": sha256(path)}
    out = {}
    for dirpath, _, files in os.walk(path):
        for name in files:
            full = os.path.join(dirpath, name)
            out[os.path.relpath(full, path)] = sha256(full)
    return out


def du_bytes(path):
    """Bytes allocated on disk under path, hard links counted once (as `pstore stat`)."""
    seen, total = set(), 0
    for dirpath, _, files in os.walk(path):
        for name in files:
            try:
                st = os.lstat(os.path.join(dirpath, name))
            except FileNotFoundError:
                continue
            if (st.st_dev, st.st_ino) in seen:
                continue
            seen.add((st.st_dev, st.st_ino))
            total += st.st_blocks * 512
    return total


class Result:
    def __init__(self, args, rc, out, err, seconds):
        self.args, self.rc, self.out, self.err, self.seconds = args, rc, out, err, seconds

    def json(self):
        try:
            return json.loads(self.out)
        except ValueError as e:
            raise Failure(f"`{' '.join(self.args)}` printed no valid JSON ({e}): {self.out[:500]!r}"
                          f" stderr {self.err[:500]!r}")

    def describe(self):
        return (f"`{' '.join(self.args)}` exited {self.rc}; stdout {self.out[-800:]!r}; "
                f"stderr {self.err[-800:]!r}")


class Store:
    """A pstore store at root, driven through the pstore command."""

    def __init__(self, root, pstore=None):
        self.root = root
        self.pstore = pstore or env_path("PSTORE_BIN")

    def argv(self, *args, json_out=False):
        a = [self.pstore, "--store", self.root]
        if json_out:
            a.append("--json")
        return a + [str(x) for x in args]

    # Less than the acceptance tests' own limit (300 s), so that a command that
    # does not finish is named, with its stacks, before the test is killed.
    def run(self, *args, json_out=False, timeout=240):
        argv = self.argv(*args, json_out=json_out)
        t0 = time.monotonic()
        try:
            p = run_cmd(argv, timeout=timeout)
        except subprocess.TimeoutExpired:
            raise Failure(f"`{' '.join(argv)}` did not finish in {timeout} s")
        return Result(argv, p.returncode, p.stdout, p.stderr, time.monotonic() - t0)

    def ok(self, *args, json_out=False, timeout=240):
        r = self.run(*args, json_out=json_out, timeout=timeout)
        check(r.rc == 0, "expected success: " + r.describe())
        return r

    def popen(self, *args, json_out=False):
        return popen(self.argv(*args, json_out=json_out), stdin=subprocess.DEVNULL,
                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    # --- reads, checked -------------------------------------------------------

    def ls(self):
        """{name:tag: entry} from `pstore ls --json`."""
        j = self.ok("ls", json_out=True).json()
        check(j.get("ok") is True, f"ls --json says not ok: {j}")
        return {m["model"]: m for m in j["models"]}

    def stat(self):
        j = self.ok("stat", json_out=True).json()
        check(j.get("ok") is True, f"stat --json says not ok: {j}")
        return j

    def info(self, ref):
        j = self.ok("info", ref, "--all", json_out=True).json()
        check(j.get("ok") is True, f"info --json {ref} says not ok: {j}")
        return j

    def verify_ok(self, context=""):
        r = self.run("verify", json_out=True)
        where = f" ({context})" if context else ""
        check(r.rc == 0, f"pstore verify failed{where}: " + r.describe())
        j = r.json()
        check(j.get("ok") is True and not j.get("problems"), f"verify reports problems{where}: {j}")
        return j

    def export_matches(self, ref, expected, scratch):
        """Exports ref to a fresh path under scratch and checks every file's
        sha256 against expected (tree_sha256 of the source)."""
        out = os.path.join(scratch, "export-" + ref.replace(":", "_").replace("/", "_"))
        if os.path.isdir(out):
            shutil.rmtree(out)
        elif os.path.exists(out):
            os.unlink(out)
        self.ok("export", ref, out)
        got = tree_sha256(out)
        check(got == expected, f"export of {ref} differs from its source: got {got}, want {expected}")
        if os.path.isdir(out):
            shutil.rmtree(out)
        else:
            os.unlink(out)


def make_model(out, mb, seed, tensors=16, dtype="mixed", change=None, change_seed=None,
               shards=None):
    argv = [env_path("MAKE_MODEL"), out, "--mb", str(mb), "--tensors", str(tensors),
            "--dtype", dtype, "--seed", str(seed)]
    if change is not None:
        argv += ["--change", str(change), "--change-seed", str(change_seed or 1)]
    if shards:
        argv += ["--shards", str(shards)]
    p = run_cmd(argv, timeout=600)
    check(p.returncode == 0, f"make_model failed: {argv} -> {p.returncode} {p.stderr}")
    return out


_cleanups = []


def at_exit(fn):
    """Runs fn when the test ends, however it ends (before the scratch folder goes)."""
    _cleanups.append(fn)


def _on_signal(signum, _frame):
    raise SystemExit(f"stopped by signal {signum}")


def _remove_shared_memory(work):
    """Unlinks /dev/shm objects of the stores made under work (segments and budget
    files outlive their processes by design; the test's stores do not)."""
    ids = set()
    for dirpath, _dirs, files in os.walk(work):
        if "ID" in files:
            try:
                with open(os.path.join(dirpath, "ID")) as f:
                    ids.add(f.read().strip())
            except OSError:
                pass
    for store_id in ids:
        if not store_id:
            continue
        for name in glob.glob(f"/dev/shm/pstore-{store_id}-*"):
            try:
                os.unlink(name)
            except OSError:
                pass


def run_test(name, body):
    """Runs body(work_dir); prints the verdict and exits with the test's code."""
    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    work = tempfile.mkdtemp(prefix=f"pstore-{name}-", dir="/tmp")
    t0 = time.monotonic()
    code = 1
    try:
        body(work)
        log(f"PASS {name} ({time.monotonic() - t0:.1f} s)")
        code = 0
    except Skip as e:
        log(f"SKIPPED {name}: {e}")
        code = SKIP_CODE
    except Failure as e:
        log(f"FAIL {name}: {e}")
    except BaseException:
        log(f"FAIL {name}: unexpected error\n{traceback.format_exc()}")
    finally:
        for fn in reversed(_cleanups):
            try:
                fn()
            except BaseException:
                log(f"cleanup step failed:\n{traceback.format_exc()}")
        _remove_shared_memory(work)
        shutil.rmtree(work, ignore_errors=True)
    sys.stdout.flush()
    os._exit(code)
