"""The README's install command, scripts/python_venv.sh DIR, makes a virtual
environment in which Debian's numpy and torch and the pstore package (with its
own copy of libpstore.so) import, and a model reads right."""

import os
import subprocess

from conftest import REPO, SafetensorsFile


def test_documented_venv_command_installs_a_working_package(small_model, scratch):
    root, ref, src = small_model
    venv = os.path.join(scratch, "venv")
    env = {k: v for k, v in os.environ.items() if k not in ("PSTORE_LIB", "PYTHONPATH")}
    p = subprocess.run([os.path.join(REPO, "scripts", "python_venv.sh"), venv],
                       capture_output=True, text=True, timeout=600, env=env)
    assert p.returncode == 0, p.stdout + p.stderr
    code = ("import sys, hashlib, pstore, torch\n"
            "m = pstore.Store(sys.argv[1]).open(sys.argv[2])\n"
            "print(pstore.lib_path)\n"
            "print(hashlib.sha256(m.numpy('layers.0.f32').tobytes()).hexdigest())\n"
            "print(m.torch('layers.2.bf16').dtype)\n")
    # Run from / so the source tree's python/ cannot be what gets imported.
    p = subprocess.run([os.path.join(venv, "bin", "python"), "-c", code, root, ref],
                       capture_output=True, text=True, timeout=300, env=env, cwd="/")
    assert p.returncode == 0, p.stdout + p.stderr
    lib_path, digest, dtype = p.stdout.split()
    assert lib_path.startswith(os.path.realpath(venv)) or lib_path.startswith(venv), lib_path
    import hashlib
    assert digest == hashlib.sha256(SafetensorsFile(src).raw("layers.0.f32")).hexdigest()
    assert dtype == "torch.bfloat16"
