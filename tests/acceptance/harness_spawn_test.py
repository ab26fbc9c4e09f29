#!/usr/bin/env python3
"""The harness starts processes on a machine that refuses new ones for a
moment: fork giving EAGAIN (as it does on a loaded machine, or at a process
limit) is retried until a process can be had, instead of failing the test.

The refusal is real: the check runs as user nobody (setpriv) under an
RLIMIT_NPROC of 3 (itself, a thread reaping its one child `sleep 1`, and that
child), so a plain subprocess.Popen fails with EAGAIN until the sleep ends,
and harness.run_cmd must succeed after it. Needs root (to change user) and
setpriv (util-linux); SKIPPED otherwise.
"""
import os
import shutil
import subprocess
import sys
import tempfile

from harness import Skip, check, log, run_test

CHILD = r'''
import resource, subprocess, sys, threading, time
sys.path.insert(0, sys.argv[1])
import harness
first = subprocess.Popen(["sleep", "1"])
threading.Thread(target=first.wait).start()
resource.setrlimit(resource.RLIMIT_NPROC, (3, 3))
try:
    subprocess.Popen(["true"]).wait()
    print("PLAIN-STARTED")
except BlockingIOError:
    print("PLAIN-EAGAIN")
sys.stdout.flush()
p = harness.run_cmd(["echo", "RETRIED-STARTED"])
print(p.stdout.strip())
'''


def body(work):
    if os.geteuid() != 0:
        raise Skip("needs root to run the check as another user")
    setpriv = shutil.which("setpriv")
    if not setpriv:
        raise Skip("setpriv (util-linux) is not installed")
    # A folder user nobody can read, holding a copy of the harness and the check.
    d = tempfile.mkdtemp(prefix="spawn-", dir=work)
    os.chmod(work, 0o755)
    os.chmod(d, 0o755)
    shutil.copy(os.path.join(os.path.dirname(os.path.abspath(__file__)), "harness.py"), d)
    with open(os.path.join(d, "check.py"), "w") as f:
        f.write(CHILD)
    for name in os.listdir(d):
        os.chmod(os.path.join(d, name), 0o644)
    p = subprocess.run([setpriv, "--reuid=65534", "--regid=65534", "--clear-groups",
                        sys.executable, os.path.join(d, "check.py"), d],
                       capture_output=True, text=True, timeout=300, cwd=d)
    log(p.stdout.strip())
    check("PLAIN-EAGAIN" in p.stdout,
          f"the process limit did not refuse a plain Popen, so nothing was tested: "
          f"{p.stdout!r} {p.stderr[-800:]!r}")
    check(p.returncode == 0 and "RETRIED-STARTED" in p.stdout,
          f"harness.run_cmd did not start its process once the limit allowed it "
          f"(exit {p.returncode}): {p.stdout!r} {p.stderr[-800:]!r}")


if __name__ == "__main__":
    run_test("harness_spawn", body)
