#!/usr/bin/env python3
"""Runs the example programs with small settings and checks what they
produce: exit status and --help, the PNG (decoded with Python's zlib: the
signature, chunk CRCs, IHDR size, the image data), the checkpoint (loaded back
through the library), and the numbers printed (in range).

The examples are found next to the library in LIBDIFFUSE_PATH: the make build
keeps them in <dir>/examples/, meson in <dir>/.
"""
import ctypes
import os
import re
import struct
import subprocess
import tempfile
import zlib

from _report import finish, report, results

libpath = os.environ.get("LIBDIFFUSE_PATH", "out/libdiffuse.so.1")
libdir = os.path.dirname(os.path.abspath(libpath))


def find(name):
    for cand in (os.path.join(libdir, "examples", name), os.path.join(libdir, name)):
        if os.access(cand, os.X_OK):
            return cand
    return None


def run(args, timeout=300):
    env = dict(os.environ, OMP_NUM_THREADS="2")
    return subprocess.run(args, capture_output=True, text=True, timeout=timeout, env=env)


def read_png(path):
    """(width, height, rows) of an 8-bit RGB PNG, checking every CRC."""
    data = open(path, "rb").read()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "bad signature"
    pos, idat, ihdr = 8, b"", None
    while pos < len(data):
        n, = struct.unpack(">I", data[pos:pos + 4])
        kind, body = data[pos + 4:pos + 8], data[pos + 8:pos + 8 + n]
        crc, = struct.unpack(">I", data[pos + 8 + n:pos + 12 + n])
        assert zlib.crc32(kind + body) & 0xFFFFFFFF == crc, f"bad CRC in {kind}"
        if kind == b"IHDR":
            ihdr = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            idat += body
        pos += 12 + n
    w, h, depth, color = ihdr[:4]
    assert depth == 8 and color == 2, "not 8-bit RGB"
    raw = zlib.decompress(idat)
    assert len(raw) == h * (1 + 3 * w), "image data has the wrong size"
    return w, h, raw


def test_quickstart():
    exe = find("quickstart")
    if exe is None:
        results["skipped"] += 1
        print("skip example_quickstart: not built")
        return
    h = run([exe, "--help"])
    p = run([exe])
    ok = h.returncode == 0 and "usage" in h.stdout and p.returncode == 0 and \
        "respaced \"ddim50\": 50 steps" in p.stdout
    report("example_quickstart", ok, p.stdout + p.stderr)


def test_quickstart_cpp():
    exe = find("quickstart_cpp")
    if exe is None:
        results["skipped"] += 1
        print("skip example_quickstart_cpp: not built")
        return
    h = run([exe, "--help"])
    p = run([exe])
    m = re.search(r"sample mean ([-\d.]+) \(data 0.5\), variance ([\d.]+)", p.stdout)
    ok = h.returncode == 0 and "usage" in h.stdout and p.returncode == 0 and m is not None \
        and abs(float(m.group(1)) - 0.5) < 0.1 and 0.7 < float(m.group(2)) < 1.2
    report("example_quickstart_cpp", ok, p.stdout + p.stderr)


def test_toy2d():
    exe = find("toy2d")
    if exe is None:
        results["skipped"] += 1
        print("skip example_toy2d: not built")
        return
    h = run([exe, "--help"])
    report("example_toy2d_help", h.returncode == 0 and "--dist" in h.stdout, h.stdout + h.stderr)
    bad = run([exe, "--dist", "nonsense"])
    report("example_toy2d_bad_option", bad.returncode != 0 and "unknown distribution" in bad.stderr,
           bad.stderr)
    with tempfile.TemporaryDirectory() as tmp:
        png, ckpt = os.path.join(tmp, "t.png"), os.path.join(tmp, "t.ckpt")
        p = run([exe, "--dist", "gmm", "--steps", "400", "--batch", "128", "--width", "64",
                 "--depth", "2", "--samples", "300", "--ddpm-steps", "100", "--ddim-steps", "20",
                 "--png", png, "--checkpoint", ckpt])
        out = p.stdout + p.stderr
        report("example_toy2d_runs", p.returncode == 0 and "step   400/400" in p.stdout, out)
        try:
            w, h_, raw = read_png(png)
            # three 320 x 320 panels; some pixels of each panel's colour
            ok = (w, h_) == (960, 320) and b"\x1e\x50\xc8" in raw and b"\xc8\x28\x28" in raw \
                and b"\x14\x8c\x3c" in raw
            report("example_toy2d_png", ok, f"size {w}x{h_}")
        except Exception as e:  # noqa: BLE001 - reported as a failure
            report("example_toy2d_png", False, repr(e))
        m = re.search(r"energy distance to fresh data \(\d+ points\): DDPM ([\d.]+), DDIM ([\d.]+) "
                      r"\(data vs data ([\d.]+)\)", p.stdout)
        if m is None:
            report("example_toy2d_numbers", False, out)
        else:
            ddpm, ddim, dd = map(float, m.groups())
            # 400 short steps learn the rough shape: far better than the
            # prior (energy distance ~0.3 for N(0, I) against this mixture)
            ok = 0 <= dd < 0.02 and 0 <= ddpm < 0.1 and 0 <= ddim < 0.1
            report("example_toy2d_numbers", ok, m.group(0))
        lib = ctypes.CDLL(libpath)
        net = ctypes.c_void_p()
        lib.diffuse_checkpoint_load.argtypes = [ctypes.c_char_p, ctypes.c_size_t,
                                                ctypes.POINTER(ctypes.c_void_p), ctypes.c_void_p,
                                                ctypes.c_size_t, ctypes.c_void_p]
        lib.diffuse_net_param_count.argtypes = [ctypes.c_void_p]
        lib.diffuse_net_param_count.restype = ctypes.c_size_t
        lib.diffuse_net_free.argtypes = [ctypes.c_void_p]
        rc = lib.diffuse_checkpoint_load(ckpt.encode(), 4, ctypes.byref(net), None, 0, None)
        count = lib.diffuse_net_param_count(net) if rc == 0 else 0
        report("example_toy2d_checkpoint_loads", rc == 0 and count > 0 and
               f"({count} parameters" in p.stdout, f"status {rc}, {count} parameters")
        if rc == 0:
            lib.diffuse_net_free(net)


test_quickstart()
test_quickstart_cpp()
test_toy2d()
finish()
