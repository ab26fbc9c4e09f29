"""examples/functional_call.py runs: a torch module evaluated with
functional_call on pstore's zero-copy state_dict gives exactly the output of
the same module loaded from the safetensors file."""

import os
import subprocess
import sys

from conftest import REPO


def test_functional_call_example(scratch):
    env = dict(os.environ)
    env["PYTHONPATH"] = os.path.join(REPO, "python")
    p = subprocess.run([sys.executable, os.path.join(REPO, "examples", "functional_call.py"),
                        os.path.join(scratch, "example")], capture_output=True, text=True,
                       timeout=300, env=env)
    assert p.returncode == 0, p.stdout + p.stderr
    assert "zero-copy" in p.stdout and "max difference to the safetensors-loaded module 0.0" \
        in p.stdout, p.stdout
