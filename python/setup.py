"""Builds the pstore Python package with libpstore.so inside it.

The library comes from $PSTORE_BUILD_DIR, else the repository's build/ folder
(scripts/build.sh makes it); the package then loads its own copy, so the
environment it is installed into needs nothing else from the build.
"""

import glob
import os
import shutil

from setuptools import setup
from setuptools.command.build_py import build_py

HERE = os.path.dirname(os.path.abspath(__file__))


class BuildPyWithLibrary(build_py):
    def run(self):
        super().run()
        build_dir = os.environ.get("PSTORE_BUILD_DIR") or os.path.join(HERE, "..", "build")
        libs = sorted(p for p in glob.glob(os.path.join(build_dir, "libpstore.so.*.*.*"))
                      if not os.path.islink(p))
        if not libs:
            raise SystemExit(f"pstore: no libpstore.so.X.Y.Z in {os.path.abspath(build_dir)}; run "
                             "scripts/build.sh first, or set PSTORE_BUILD_DIR to the build folder")
        dest = os.path.join(self.build_lib, "pstore", "libpstore.so.0")
        shutil.copyfile(libs[-1], dest)


setup(cmdclass={"build_py": BuildPyWithLibrary})
