#!/usr/bin/env python3
"""The Python package installs with pip and works against the built library.

A fresh virtual environment (python3 -m venv --system-site-packages, no
network: pip install --no-index --no-build-isolation --no-deps) receives a
copy of python/; the installed package (not the source tree) is imported
from another directory and finds the library once through LIBDIFFUSE_PATH
and once through the dynamic loader (LD_LIBRARY_PATH, by SONAME), then
samples, checks shapes and reads its version.  Skips, saying why, where
venv or pip is missing.

Prints "ok"/"FAIL"/"skip" lines and "N passed, N failed, N skipped".
"""
import os
import shutil
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
LIB = os.environ.get("LIBDIFFUSE_PATH") or os.path.join(ROOT, "out", "libdiffuse.so.1")

SCRIPT = r"""
import os, sys
import libdiffuse as ld
here = os.path.dirname(ld.__file__)
assert here.startswith(sys.prefix), (here, sys.prefix)
assert "site-packages" in here, here
from importlib.metadata import version
assert version("libdiffuse") == ld.version_string(), (version("libdiffuse"), ld.version_string())
with ld.Schedule.cosine(20) as s, ld.Model(lambda x, t: [[0.0] * 2 for _ in x], 2) as m, \
        ld.Sampler(s, m, "ddim") as smp:
    out = smp.run(seed=1, batch=3)
    assert smp.max_batch == 3
    try:
        smp.step([[0.0] * 4] * 3, 1)
    except ValueError as e:
        assert "dim is 2" in str(e)
    else:
        raise AssertionError("a [3][4] input was accepted for dim 2")
print("loaded", ld._path, ld.version_string())
"""


def main():
    passed = failed = skipped = 0
    tmp = tempfile.mkdtemp(prefix="libdiffuse-pkg-")
    try:
        venv = os.path.join(tmp, "venv")
        p = subprocess.run([sys.executable, "-m", "venv", "--system-site-packages",
                            "--without-pip", venv], capture_output=True, text=True)
        py = os.path.join(venv, "bin", "python")
        if p.returncode != 0:
            print(f"skip package: python3 -m venv failed: {p.stderr.strip()[-300:]}")
            print("0 passed, 0 failed, 1 skipped")
            return 0
        q = subprocess.run([py, "-m", "pip", "--version"], capture_output=True, text=True)
        if q.returncode != 0:
            print("skip package: pip is not installed for this Python (apt-get install "
                  "python3-pip)")
            print("0 passed, 0 failed, 1 skipped")
            return 0
        src = os.path.join(tmp, "src")
        shutil.copytree(os.path.join(ROOT, "python"), src,
                        ignore=shutil.ignore_patterns("__pycache__", "build", "*.egg-info"))
        r = subprocess.run([py, "-m", "pip", "install", "--no-index", "--no-build-isolation",
                            "--no-deps", "--disable-pip-version-check", src],
                           capture_output=True, text=True, timeout=300)
        if r.returncode != 0:
            print("FAIL pip install ./python into a fresh venv")
            print("    " + (r.stdout + r.stderr).strip().replace("\n", "\n    "))
            failed += 1
            print(f"{passed} passed, {failed} failed, {skipped} skipped")
            return 1
        print("ok   pip install ./python into a fresh venv (offline)")
        passed += 1
        work = os.path.join(tmp, "elsewhere")
        os.makedirs(work)
        base = {k: v for k, v in os.environ.items()
                if k not in ("LIBDIFFUSE_PATH", "PYTHONPATH", "LD_LIBRARY_PATH")}
        for label, env in (
                ("LIBDIFFUSE_PATH", dict(base, LIBDIFFUSE_PATH=os.path.abspath(LIB))),
                ("the dynamic loader (LD_LIBRARY_PATH)",
                 dict(base, LD_LIBRARY_PATH=os.path.dirname(os.path.abspath(LIB))))):
            s = subprocess.run([py, "-c", SCRIPT], cwd=work, env=env, capture_output=True,
                               text=True, timeout=120)
            if s.returncode == 0 and s.stdout.startswith("loaded"):
                print(f"ok   the installed package finds the library through {label}: "
                      f"{s.stdout.strip()}")
                passed += 1
            else:
                print(f"FAIL the installed package through {label}")
                print("    " + (s.stdout + s.stderr).strip().replace("\n", "\n    "))
                failed += 1
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"{passed} passed, {failed} failed, {skipped} skipped")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
