#!/usr/bin/env python3
"""diffuse__sgemm against numpy's float32 matmul (OpenBLAS) on the same shapes.

Run from the repository root as

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE /usr/bin/python3 bench/bench_gemm.py

Options: --threads 1,2 (the thread counts to compare; default 1,2), --rounds R
(default 5), --quick (fewer shapes, no 2048), --no-build (reuse the binary),
--group square,mlp,net (which shapes: the squares, the MLP's, the U-Nets'
products; default all).  The "net" group and its shares of each U-Net
step's multiply-adds are described in bench/bench_gemm.c (net_shapes).

What it does:
  * builds the library with OpenMP into out/bench_gemm/ (make O=out/bench_gemm
    OPENMP=1) and the C benchmark bench/bench_gemm.c against its static
    archive;
  * for each round and each thread count T, runs the C benchmark (one round:
    the FMA peak on T threads, then every shape) and a numpy worker (one
    round of the same shapes), each as a subprocess with OMP_NUM_THREADS =
    OPENBLAS_NUM_THREADS = T, alternating which goes first; both sides are
    interleaved this way because the machine is shared and noisy;
  * prints, per thread count, medians over the rounds: GFLOP/s of libdiffuse,
    its % of the FMA peak, numpy's GFLOP/s and the median of the per-round
    ratios libdiffuse / numpy.  Each side's value in a round is itself the
    median of 9 batches of calls of about 2 ms, timed in the thread's CPU time
    at one thread and in wall-clock time at two (so that rare stalls of many
    milliseconds, when another process takes the core of one of the threads,
    do not dominate; they hit 2-thread runs far more than 1-thread ones).

OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE are removed from the subprocesses'
environment (this machine sets them, and they make OpenBLAS about 2x slower);
the script says so when it finds them.  numpy uses whatever libblas.so.3 the
Debian alternatives select; if that is the reference BLAS rather than
OpenBLAS (apt-get install -y libopenblas0-pthread), the output says so, since
the reference BLAS is some 30x slower.
"""
import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TUNING_VARS = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")


# --------------------------------------------------------------------------
# numpy worker (runs in a subprocess whose environment fixes the threads)
# --------------------------------------------------------------------------

def blas_report():
    """Which BLAS library numpy really loaded, read from /proc/self/maps."""
    import ctypes
    lines = []
    try:
        import threadpoolctl  # optional
        for info in threadpoolctl.threadpool_info():
            lines.append("threadpoolctl: %s %s (%s), %s threads, %s" % (
                info.get("internal_api"), info.get("version"), info.get("architecture"),
                info.get("num_threads"), info.get("filepath")))
        return lines
    except ImportError:
        pass
    paths = set()
    try:
        with open("/proc/self/maps") as f:
            for line in f:
                p = line.split()[-1]
                base = os.path.basename(p)
                if "blas" in base:
                    paths.add(p)
    except OSError:
        return ["could not read /proc/self/maps"]
    if not paths:
        return ["no BLAS library found in /proc/self/maps"]
    for p in sorted(paths):
        real = os.path.realpath(p)
        note = ""
        if "openblas" in real:
            try:
                lib = ctypes.CDLL(p)
                lib.openblas_get_config.restype = ctypes.c_char_p
                lib.openblas_get_corename.restype = ctypes.c_char_p
                note = " [OpenBLAS: %s; core %s; %d threads]" % (
                    lib.openblas_get_config().decode(), lib.openblas_get_corename().decode(),
                    lib.openblas_get_num_threads())
            except (OSError, AttributeError):
                note = " [OpenBLAS]"
        elif "/blas/" in real:
            note = (" [the REFERENCE BLAS, about 30x slower than OpenBLAS: "
                    "apt-get install -y libopenblas0-pthread]")
        lines.append("%s -> %s%s" % (p, real, note))
    return lines


def numpy_worker(shapes, rounds, threads):
    try:
        import numpy as np
    except ImportError:
        print("SKIP numpy is not installed")
        return
    # as bench_gemm.c: one thread in its CPU time (OpenBLAS then computes in
    # the calling thread), several in wall-clock time
    clock = time.thread_time if threads == 1 else time.perf_counter
    rng = np.random.default_rng(12345)
    arrays = []
    for ta, tb, M, N, K in shapes:
        a = rng.random((K, M) if ta else (M, K), dtype=np.float32) - 0.5
        b = rng.random((N, K) if tb else (K, N), dtype=np.float32) - 0.5
        c = np.empty((M, N), dtype=np.float32)
        arrays.append((a.T if ta else a, b.T if tb else b, c))
    print("INFO numpy %s" % np.__version__)
    np.matmul(arrays[0][0], arrays[0][1], out=arrays[0][2])
    for line in blas_report():
        print("INFO BLAS " + line)
    for r in range(rounds):
        for (ta, tb, M, N, K), (a, b, c) in zip(shapes, arrays):
            # As bench_gemm.c: the median of 9 batches of about 2 ms.
            flops = 2.0 * M * N * K
            reps = int(4e8 / flops) + 1
            np.matmul(a, b, out=c)
            rates = []
            for _ in range(9):
                t0 = clock()
                for _ in range(reps):
                    np.matmul(a, b, out=c)
                rates.append(flops * reps / (clock() - t0) / 1e9)
            print("RESULT shape %d %d %d %d %d %d %.3f" % (r, ta, tb, M, N, K,
                                                         statistics.median(rates)))
    sys.stdout.flush()


# --------------------------------------------------------------------------
# driver
# --------------------------------------------------------------------------

def run(cmd, env=None, cwd=ROOT):
    p = subprocess.run(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, universal_newlines=True)
    if p.returncode != 0:
        sys.stdout.write(p.stdout)
        raise SystemExit("command failed (%d): %s" % (p.returncode, " ".join(cmd)))
    return p.stdout


def build(build_dir, cc):
    out = os.path.join(build_dir, "bench_gemm")
    make = shutil.which("make") or "make"
    lib = os.path.join(build_dir, "libdiffuse.a")
    run([make, "-s", "O=" + build_dir, "OPENMP=1", lib])
    run([cc, "-O2", "-std=c11", "-Iinclude", "-Ilib", "-fopenmp", "bench/bench_gemm.c", lib,
         "-lm", "-o", out])
    return out


def parse(text):
    """RESULT lines -> (info dict, peaks {round: x}, shapes {key: {round: x}})."""
    info, peaks, res = {}, {}, {}
    for line in text.splitlines():
        f = line.split()
        if not f or f[0] not in ("RESULT", "INFO", "SKIP"):
            continue
        if f[0] == "SKIP":
            info["skip"] = line[5:]
        elif f[0] == "INFO":
            info.setdefault("lines", []).append(line[5:])
        elif f[1] == "kernel":
            info.update(kernel=f[2], threads=int(f[4]), openmp=f[6])
        elif f[1] == "peak":
            peaks[int(f[2])] = float(f[3])
        elif f[1] == "shape":
            key = tuple(int(x) for x in f[3:8])
            res.setdefault(key, []).append(float(f[8]))
            if len(f) > 9:  # --list: the shape's label
                info.setdefault("labels", {})[key] = " ".join(f[9:])
    return info, peaks, res


NAMES = {(0, 0): "A B", (0, 1): "A B^T", (1, 0): "A^T B", (1, 1): "A^T B^T"}


def describe(key, labels):
    if key in labels:
        return labels[key]
    ta, tb, M, N, K = key
    if M == N == K:
        return "square " + NAMES[(ta, tb)]
    if (ta, tb) == (0, 1):
        return "mlp fwd X W^T"
    if (ta, tb) == (0, 0):
        return "mlp dX = dY W"
    if (ta, tb) == (1, 0):
        return "mlp dW = dY^T X"
    return NAMES[(ta, tb)]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--group", default="square,mlp,net",
                    help="shape groups: square, mlp, net (the U-Nets'); default all")
    ap.add_argument("--no-build", action="store_true")
    ap.add_argument("--build-dir", default=os.path.join("out", "bench_gemm"))
    ap.add_argument("--cc", default=os.environ.get("CC", "cc"))
    ap.add_argument("--numpy-worker", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--shapes", help=argparse.SUPPRESS)
    args = ap.parse_args()

    if args.numpy_worker is not None:
        numpy_worker([tuple(s) for s in json.loads(args.shapes)], args.rounds, args.numpy_worker)
        return

    env = dict(os.environ)
    removed = ["%s=%s" % (v, env.pop(v)) for v in TUNING_VARS if v in env]
    if removed:
        print("note: removed %s from the benchmark's environment (they slow OpenBLAS down);"
              % ", ".join(removed))
        print("      run as: env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE /usr/bin/python3 "
              "bench/bench_gemm.py")
    threads = [int(t) for t in args.threads.split(",")]
    binary = os.path.join(args.build_dir, "bench_gemm")
    if not args.no_build:
        binary = build(args.build_dir, args.cc)
    extra = (["--quick"] if args.quick else []) + ["--group", args.group]
    print("cpu: %s, %d cpus online" % (cpu_name(), os.cpu_count() or 0))

    # First call: the shape list (from the C side, so both sides agree).
    probe = run([binary, "--list"] + extra, env=env)
    probe_info, _, shape_res = parse(probe)
    shapes = list(shape_res.keys())
    labels = probe_info.get("labels", {})

    ours = {t: {} for t in threads}
    peaks = {t: [] for t in threads}
    theirs = {t: {} for t in threads}
    infos = {}
    for r in range(args.rounds):
        for t in threads:
            tenv = dict(env, OMP_NUM_THREADS=str(t), OPENBLAS_NUM_THREADS=str(t))
            c_cmd = [binary, str(t), "--rounds", "1", "--machine"] + extra
            np_cmd = [sys.executable, os.path.abspath(__file__), "--numpy-worker", str(t),
                      "--rounds", "1", "--shapes", json.dumps(shapes)]
            order = [("c", c_cmd), ("np", np_cmd)]
            if r % 2:
                order.reverse()
            for side, cmd in order:
                info, pk, res = parse(run(cmd, env=tenv))
                if side == "c":
                    infos[("c", t)] = info
                    peaks[t].extend(pk.values())
                    for k, v in res.items():
                        ours[t].setdefault(k, []).extend(v)
                else:
                    infos[("np", t)] = info
                    for k, v in res.items():
                        theirs[t].setdefault(k, []).extend(v)
        sys.stderr.write("round %d/%d done\n" % (r + 1, args.rounds))

    for t in threads:
        ci, ni = infos[("c", t)], infos[("np", t)]
        pk = statistics.median(peaks[t]) if peaks[t] else 0.0
        print()
        print("== threads: %d (OMP_NUM_THREADS=%d, OPENBLAS_NUM_THREADS=%d for both sides)"
              % (t, t, t))
        print("libdiffuse: kernel %s, OpenMP %s; FMA peak on %d thread%s at once: %.1f GFLOP/s "
              "(median of %d)" % (ci.get("kernel"), ci.get("openmp"), t, "s" if t > 1 else "",
                                  pk, len(peaks[t])))
        if "skip" in ni:
            print("numpy: " + ni["skip"])
        for line in ni.get("lines", []):
            print(line)
        print("%-24s %5s %5s %5s %3s %3s %10s %7s %10s %8s" % (
            "shape", "M", "N", "K", "tA", "tB", "ours GF/s", "% peak", "numpy GF/s",
            "ours/np"))
        for key in shapes:
            ta, tb, M, N, K = key
            o = ours[t].get(key, [])
            n = theirs[t].get(key, [])
            om = statistics.median(o) if o else float("nan")
            nm = statistics.median(n) if n else float("nan")
            ratio = (statistics.median([a / b for a, b in zip(o, n)])
                     if o and n else float("nan"))
            print("%-24s %5d %5d %5d %3d %3d %10.1f %6.1f%% %10.1f %8.2f" % (
                describe(key, labels), M, N, K, ta, tb, om, 100.0 * om / pk if pk else 0.0, nm, ratio))
    print()
    print("medians over %d interleaved rounds (each the median of 9 batches of ~2 ms; one "
          "thread in its CPU time, two in wall-clock time); ours/np is the median of "
          "per-round ratios" % args.rounds)
    if any("conv dW" in v or "[i]" in v for v in labels.values()):
        print("net shapes: 'conv dW' is timed as the U-Nets run it (conv.c's implicit GEMM, "
              "diffuse__conv3x3_backward_f, against OpenBLAS's A B^T of the same M, N, K); "
              "shapes marked [i] (winograd.c's 16 micro-kernel products per conv) are timed "
              "as the public diffuse__sgemm of the same M, N, K and transposes "
              "(bench_gemm.c's net_shapes says more)")


def cpu_name():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown"


if __name__ == "__main__":
    main()
