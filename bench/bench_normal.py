#!/usr/bin/env python3
"""Throughput of diffuse_normal_fill against numpy's generators, same process.

Usage: LIBDIFFUSE_PATH=out/libdiffuse.so.1 /usr/bin/python3 bench/bench_normal.py
Both sides run on one thread.  Prints million normals per second and the
ratio libdiffuse / numpy for numpy's Philox and PCG64 bit generators (numpy
uses the ziggurat method, libdiffuse Box-Muller in double, frozen for
reproducibility).
"""
import ctypes
import os
import sys
import time

try:
    import numpy as np
except ImportError:
    print("skip: numpy is not installed")
    sys.exit(0)

lib = ctypes.CDLL(os.environ.get("LIBDIFFUSE_PATH", "out/libdiffuse.so.1"))
fill = lib.diffuse_normal_fill
fill.argtypes = [ctypes.c_uint64, ctypes.c_uint64, ctypes.c_uint32,
                 ctypes.POINTER(ctypes.c_float), ctypes.c_size_t]
fill.restype = ctypes.c_int

N = 1 << 22
ROUNDS = 9
buf = np.empty(N, dtype=np.float32)
ptr = buf.ctypes.data_as(ctypes.POINTER(ctypes.c_float))


def ours(i):
    if fill(1234, i, 0, ptr, N) != 0:
        raise RuntimeError("diffuse_normal_fill failed")


gens = {name: np.random.Generator(getattr(np.random, name)(1234)) for name in ("Philox", "PCG64")}
sides = {"libdiffuse": ours}
for name, gen in gens.items():
    sides[name] = (lambda g: (lambda i: g.standard_normal(out=buf, dtype=np.float32)))(gen)

# Interleave the sides in every round so that machine noise hits all of them;
# report each side's median rate and the median of the per-round ratios.
times = {k: [] for k in sides}
for r in range(ROUNDS):
    for k, fn in sides.items():
        t0 = time.perf_counter()
        fn(r)
        times[k].append(time.perf_counter() - t0)


def median(v):
    v = sorted(v)
    return v[len(v) // 2]


print("threads: 1 per side (libdiffuse built without OpenMP; numpy generators are single-threaded)")
print(f"elements per call: {N}, {ROUNDS} interleaved rounds, medians")
print(f"libdiffuse Philox4x32-10 + Box-Muller: {N / median(times['libdiffuse']) / 1e6:8.1f} M normals/s")
for name in gens:
    ratio = median([times[name][r] / times["libdiffuse"][r] for r in range(ROUNDS)])
    print(f"numpy {name:6s} + ziggurat:            {N / median(times[name]) / 1e6:8.1f} M normals/s"
          f"   ratio libdiffuse/numpy = {ratio:.2f}")
