#!/usr/bin/env python3
"""toy2d at its defaults reproduces the structure of the mixture of 8
Gaussians and of the checkerboard (make check-toy2d; a minute or two, so not
part of make check).

For each, out/examples/toy2d --dist NAME --check must exit 0 and print PASS
for both samplers: gmm, at least 90% of the samples within 3 sigma of a
centre and 8/8 modes covered; checkerboard, at least 75% of the samples
inside the filled cells and 8/8 cells covered (examples/toy2d.c, quality()).

Environment: TOY2D (the example binary, default out/examples/toy2d),
TOY2D_ARGS (extra arguments).
"""
import os
import shlex
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "ref"))
from _report import finish, report  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
exe = os.environ.get("TOY2D") or os.path.join(ROOT, "out", "examples", "toy2d")
extra = shlex.split(os.environ.get("TOY2D_ARGS", ""))
with tempfile.TemporaryDirectory() as tmp:
    for dist in ("gmm", "checkerboard"):
        p = subprocess.run([exe, "--dist", dist, "--check", "--png",
                            os.path.join(tmp, dist + ".png"), "--checkpoint", "-"] + extra,
                           capture_output=True, text=True, timeout=1800)
        lines = [l for l in p.stdout.splitlines() if l.startswith("quality")]
        print("\n".join("# " + l for l in lines))
        report(f"toy2d_{dist}_defaults_reproduce_the_structure",
               p.returncode == 0 and len(lines) == 2 and all(l.endswith("PASS") for l in lines),
               p.stdout[-2000:] + p.stderr)
finish()
