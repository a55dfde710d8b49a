#!/usr/bin/env python3
"""End-to-end tests of the diffuse command-line program.

The program under test is $DIFFUSE_CLI (default out/bin/diffuse); the
library is $LIBDIFFUSE_PATH, loaded through the Python binding for the
independent checks: `diffuse schedule` against the library's own tables,
`diffuse bpd` against the binding's VLB on the same rows and seed, `diffuse
info` against the loaded net.  Training is a few hundred steps of a small
MLP on a 2-D set; resuming must give the uninterrupted run's checkpoint byte
for byte, and sample shards must concatenate to one run's samples byte for
byte.  Every error case must exit non-zero with exactly one line on stderr.

Prints "ok"/"FAIL"/"skip" lines and "N passed, N failed, N skipped".
"""
import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import traceback
import zlib

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(ROOT, "python"))
CLI = os.environ.get("DIFFUSE_CLI") or os.path.join(ROOT, "out", "bin", "diffuse")

try:
    import numpy as np
except ImportError:  # pragma: no cover
    np = None
try:
    import libdiffuse as ld
except Exception as e:  # pragma: no cover
    ld = None
    LD_ERROR = str(e)

results = {"passed": 0, "failed": 0, "skipped": 0}


class Skip(Exception):
    pass


def run(*args, ok=True, cwd=None):
    p = subprocess.run([CLI] + [str(a) for a in args], capture_output=True, text=True,
                       cwd=cwd, timeout=300)
    if ok and p.returncode != 0:
        raise AssertionError(f"diffuse {' '.join(map(str, args))} failed ({p.returncode}): "
                             f"{p.stderr.strip()}")
    return p


def fails(*args, want, cwd=None):
    """The command fails with one line on stderr containing want."""
    p = run(*args, ok=False, cwd=cwd)
    lines = [l for l in p.stderr.splitlines() if l.strip()]
    assert p.returncode != 0, f"{args}: exit status 0, wanted a failure"
    assert len(lines) == 1, f"{args}: {len(lines)} lines on stderr: {p.stderr!r}"
    assert want in lines[0], f"{args}: {lines[0]!r} lacks {want!r}"
    assert lines[0].startswith("diffuse"), lines[0]
    return lines[0]


def test(fn):
    name = fn.__name__
    try:
        fn()
    except Skip as s:
        print(f"skip {name}: {s}")
        results["skipped"] += 1
    except Exception:
        print(f"FAIL {name}")
        for line in traceback.format_exc().splitlines():
            print(f"    {line}")
        results["failed"] += 1
    else:
        print(f"ok   {name}")
        results["passed"] += 1
    sys.stdout.flush()


def need_numpy():
    if np is None:
        raise Skip("numpy is not installed")


def need_binding():
    if ld is None:
        raise Skip(f"the Python binding does not load: {LD_ERROR}")


TMP = tempfile.mkdtemp(prefix="diffuse-cli-test-")


def tmp(name):
    return os.path.join(TMP, name)


# A small, fast 2-D model shared by the tests (trained once).
TRAIN = ["--data", "gmm", "--batch", "64", "--width", "32", "--depth", "1", "--emb-dim", "16",
         "--seed", "5", "--quiet"]


def trained():
    path = tmp("full.ckpt")
    if not os.path.exists(path):
        run("train", *TRAIN, "--steps", "300", "--output", path)
    return path


# ---------------------------------------------------------------------------

SCHEDULES = [
    (["--schedule", "linear"], lambda: ld.Schedule.linear(1000)),
    (["--schedule", "cosine", "--timesteps", "500"], lambda: ld.Schedule.cosine(500)),
    (["--schedule", "scaled_linear"], lambda: ld.Schedule.scaled_linear(1000, 0.00085, 0.012)),
    (["--schedule", "sigmoid", "--timesteps", "300"], lambda: ld.Schedule.sigmoid(300)),
    (["--schedule", "linear", "--zero-snr"],
     lambda: ld.Schedule.linear(1000).rescale_zero_snr()),
    (["--schedule", "cosine", "--respace", "ddim25"],
     lambda: ld.Schedule.cosine(1000).respace("ddim25")),
    (["--schedule", "linear", "--spacing", "trailing", "--steps", "10"],
     lambda: ld.Schedule.linear(1000).respace(
         ld.timesteps_spacing(1000, 10, ld.SPACING_TRAILING))),
]


def parse_csv(text):
    lines = text.strip().splitlines()
    head = lines[0].split(",")
    cols = {h: [] for h in head}
    for line in lines[1:]:
        for h, v in zip(head, line.split(",")):
            cols[h].append(float(v))
    return cols


def test_schedule_tables_equal_the_library_csv_and_json():
    need_binding()
    names = ["betas", "alphas", "alphas_cumprod", "alphas_cumprod_prev", "alphas_cumprod_next",
             "one_minus_alphas_cumprod", "sqrt_alphas_cumprod", "sqrt_one_minus_alphas_cumprod",
             "log_one_minus_alphas_cumprod", "sqrt_recip_alphas_cumprod",
             "sqrt_recipm1_alphas_cumprod", "posterior_variance",
             "posterior_log_variance_clipped", "posterior_mean_coef1", "posterior_mean_coef2"]
    for args, make in SCHEDULES:
        s = make()
        csv = parse_csv(run("schedule", *args).stdout)
        js = json.loads(run("schedule", *args, "--format", "json").stdout)
        assert js["length"] == s.length and js["base_timesteps"] == s.base_length, args
        assert [int(t) for t in csv["timestep"]] == list(s.timesteps()), args
        assert js["timesteps"] == list(s.timesteps()), args
        for name in names:
            want = list(s.table(name))
            # 17 significant digits read back to the same doubles, bit for bit
            assert csv[name] == want, f"{args} {name}: CSV differs from the library"
            assert js[name] == want, f"{args} {name}: JSON differs from the library"
    # a selection of tables, and a file output
    out = tmp("sched.csv")
    run("schedule", "--tables", "betas,alphas_cumprod", "--output", out)
    with open(out) as f:
        assert f.readline().strip() == "index,timestep,betas,alphas_cumprod"


def test_train_resume_is_bit_identical():
    full = trained()
    part = tmp("part.ckpt")
    run("train", *TRAIN, "--steps", "120", "--save-every", "50", "--output", part)
    info = run("info", part).stdout
    assert "step: 120" in info, info
    run("train", "--resume", part, "--steps", "300", "--quiet", "--save-every", "100")
    with open(part, "rb") as a, open(full, "rb") as b:
        assert a.read() == b.read(), "resumed checkpoint differs from the uninterrupted run"
    # a save in between is the state of that step: resume from 200 as well
    mid = tmp("mid.ckpt")
    run("train", *TRAIN, "--steps", "200", "--output", mid)
    run("train", "--resume", mid, "--steps", "300", "--quiet")
    with open(mid, "rb") as a, open(full, "rb") as b:
        assert a.read() == b.read()


def read_png_size(path):
    with open(path, "rb") as f:
        b = f.read()
    assert b[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    w, h = struct.unpack(">II", b[16:24])
    # every chunk's CRC holds
    pos = 8
    while pos < len(b):
        n = struct.unpack(">I", b[pos:pos + 4])[0]
        body = b[pos + 4:pos + 8 + n]
        assert struct.unpack(">I", b[pos + 8 + n:pos + 12 + n])[0] == zlib.crc32(body)
        pos += 12 + n
    return w, h


def test_sample_npy_png_and_shards_concatenate():
    need_numpy()
    ck = trained()
    one = tmp("one.npy")
    run("sample", ck, "--count", "50", "--steps", "20", "--output", one, "--png",
        tmp("one.png"), "--quiet")
    a = np.load(one)
    assert a.shape == (50, 2) and a.dtype == np.float32
    assert np.all(np.isfinite(a)) and np.abs(a).max() <= 1.5 + 1e-6
    assert read_png_size(tmp("one.png")) == (512, 512)
    # shards with other batch sizes: the same bytes
    parts = []
    for first, count, batch in ((0, 7, 3), (7, 30, 16), (37, 13, 13)):
        p = tmp(f"shard{first}.npy")
        run("sample", ck, "--first", first, "--count", count, "--batch", batch, "--steps", "20",
            "--output", p, "--quiet")
        parts.append(np.load(p))
    assert np.concatenate(parts).tobytes() == a.tobytes(), "shards differ from one run"
    # another seed gives other samples; DDPM and DPM-Solver++ run too
    b = tmp("seed2.npy")
    run("sample", ck, "--count", "50", "--steps", "20", "--seed", "2", "--output", b, "--quiet")
    assert np.load(b).tobytes() != a.tobytes()
    for sampler in ("ddpm", "dpmpp_2m"):
        run("sample", ck, "--count", "8", "--steps", "10", "--sampler", sampler, "--output",
            tmp(sampler + ".npy"), "--quiet")
        assert np.all(np.isfinite(np.load(tmp(sampler + ".npy"))))


def test_bpd_matches_the_binding():
    need_numpy()
    need_binding()
    ck = trained()
    out = tmp("bpd.csv")
    p = run("bpd", ck, "--count", "20", "--first", "3", "--batch", "8", "--seed", "9",
            "--output", out, "--quiet")
    rows = np.loadtxt(out, delimiter=",", skiprows=1)
    assert rows.shape == (20, 3) and list(rows[:, 0]) == list(range(3, 23))
    mean = float(p.stdout.split()[1])
    assert abs(mean - rows[:, 1].mean()) < 1e-6 * abs(mean), (mean, rows[:, 1].mean())
    # the same bound through the binding, on rows from a file: the same
    # rows, noise seed and sample indices, the recorded clip range
    net, _ = ld.checkpoint_load(ck, 20)
    sched = ld.Schedule.cosine(1000)
    model = net.model(ld.NET_EMA)
    model.set("clip_x0", 1)
    model.set("clip_min", -1.5)
    model.set("clip_max", 1.5)
    data = np.random.default_rng(0).normal(0, 0.5, (40, 2)).astype(np.float32)
    np.save(tmp("rows.npy"), data)
    out2 = tmp("bpd2.csv")
    run("bpd", ck, "--data", tmp("rows.npy"), "--count", "20", "--first", "3", "--batch", "8",
        "--seed", "9", "--output", out2, "--quiet")
    got = np.loadtxt(out2, delimiter=",", skiprows=1)[:, 1]
    with ld.Vlb(sched, model, 20) as v:
        res = v.run(data[3:23], seed=9, first_sample=3)
    want = np.asarray(res.total)
    assert np.allclose(got, want, rtol=1e-12, atol=0), (got[:3], want[:3])
    net.close()


def test_info_describes_the_checkpoint():
    need_binding()
    ck = trained()
    out = run("info", ck).stdout
    net, _ = ld.checkpoint_load(ck, 1)
    for want in ("net: mlp", "shape: 2", "width: 32", "depth: 1", "embedding: 16",
                 f"parameters: {net.param_count}", "prediction: eps", "variance: fixed_small",
                 "classes: none", "schedule: cosine, T 1000", "step: 300", "seed: 5",
                 "data: gmm"):
        assert want in out, f"{want!r} not in:\n{out}"
    net.close()


def test_labels_npy_data_and_guidance():
    need_numpy()
    rng = np.random.default_rng(1)
    lab = rng.integers(0, 3, 600)
    centres = np.array([[-0.8, 0.0], [0.8, 0.0], [0.0, 0.8]], dtype=np.float32)
    x = (centres[lab] + 0.05 * rng.standard_normal((600, 2))).astype(np.float32)
    np.save(tmp("pts.npy"), x)
    np.save(tmp("lab.npy"), lab.astype(np.int64))
    ck = tmp("cond.ckpt")
    run("train", "--data", tmp("pts.npy"), "--labels", tmp("lab.npy"), "--steps", "300",
        "--batch", "64", "--width", "32", "--depth", "1", "--lr", "3e-3", "--output", ck,
        "--quiet")
    assert "classes: 3" in run("info", ck).stdout
    run("sample", ck, "--count", "16", "--label", "1", "--guidance", "2", "--steps", "20",
        "--output", tmp("c1.npy"), "--quiet")
    s = np.load(tmp("c1.npy"))
    assert s.shape == (16, 2) and np.all(np.isfinite(s))
    # the recorded clip range is the data's, widened
    assert np.abs(s).max() <= 1.2
    fails("sample", ck, "--count", "4", "--label", "7", "--output", tmp("c2.npy"),
          want="--label needs an integer in [0, 2]")


def make_png(path, pixels):
    """An 8-bit gray PNG, zlib-compressed (dynamic Huffman), filter 1 rows."""
    h, w = len(pixels), len(pixels[0])
    raw = b""
    for row in pixels:
        prev = 0
        out = []
        for v in row:
            out.append((v - prev) & 255)
            prev = v
        raw += bytes([1]) + bytes(out)

    def chunk(t, d):
        return struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d))

    with open(path, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0))
                + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b""))


def test_png_folder_and_idx_train_a_unet():
    need_numpy()
    folder = tmp("pngs")
    os.makedirs(folder, exist_ok=True)
    rng = np.random.default_rng(3)
    imgs = rng.integers(0, 256, (6, 8, 8))
    for i, im in enumerate(imgs):
        make_png(os.path.join(folder, f"im{i}.png"), im.tolist())
    ck = tmp("unet.ckpt")
    run("train", "--data", folder, "--steps", "3", "--batch", "4", "--base-channels", "8",
        "--groups", "2", "--timesteps", "50", "--output", ck, "--quiet")
    info = run("info", ck).stdout
    assert "net: unet" in info and "shape: 1 x 8 x 8" in info, info
    run("sample", ck, "--count", "5", "--steps", "5", "--output", tmp("u.npy"), "--png",
        tmp("u.png"), "--quiet")
    u = np.load(tmp("u.npy"))
    assert u.shape == (5, 1, 8, 8) and np.abs(u).max() <= 1.0
    assert read_png_size(tmp("u.png"))[0] > 16
    # bpd on the training images: on the 8-bit grid, no note
    p = run("bpd", ck, "--count", "6", "--quiet")
    assert p.stdout.startswith("bpd ") and "not on the 8-bit grid" not in p.stdout
    # the PNG reader decoded exactly: the same images as IDX give the same bpd
    idx = tmp("imgs.idx")
    with open(idx, "wb") as f:
        f.write(bytes([0, 0, 8, 3]) + struct.pack(">III", 6, 8, 8) +
                imgs.astype(np.uint8).tobytes())
    q = run("bpd", ck, "--data", idx, "--count", "6", "--quiet")
    assert p.stdout == q.stdout, (p.stdout, q.stdout)
    # mismatched sizes are refused, naming both files
    make_png(os.path.join(folder, "zz.png"), [[0] * 4] * 4)
    fails("train", "--data", folder, "--output", tmp("x.ckpt"), want="zz.png")


IDDPM = ["--net", "iddpm", "--num-channels", "32", "--channel-mult", "1,2",
         "--num-res-blocks", "1", "--attention-resolutions", "4", "--num-heads", "2",
         "--dropout", "0.1", "--learn-sigma", "--timesteps", "50", "--batch", "4", "--quiet"]


def test_iddpm_net_trains_resumes_samples_and_describes_itself():
    """--net iddpm: a tiny class-conditional Improved DDPM U-Net (dropout, learned
    sigma, attention at 4x4) on 8x8 uint8 images; resuming at step 2 gives the
    uninterrupted 4-step checkpoint byte for byte; info shows the configuration,
    checked against the loaded net through the binding."""
    need_numpy()
    rng = np.random.default_rng(11)
    x, y = tmp("id_x.npy"), tmp("id_y.npy")
    np.save(x, rng.integers(0, 256, (10, 1, 8, 8)).astype(np.uint8))
    np.save(y, (np.arange(10) % 3).astype(np.int64))
    full, part = tmp("id_full.ckpt"), tmp("id_part.ckpt")
    run("train", "--data", x, "--labels", y, *IDDPM, "--steps", "4", "--output", full)
    run("train", "--data", x, "--labels", y, *IDDPM, "--steps", "2", "--output", part)
    run("train", "--resume", part, "--steps", "4", "--quiet")
    with open(part, "rb") as a, open(full, "rb") as b:
        assert a.read() == b.read(), "resumed iddpm checkpoint differs from the full run"
    info = run("info", full).stdout
    for line in ("net: iddpm", "shape: 1 x 8 x 8", "model channels: 32", "channel mult: 1,2",
                 "res blocks: 1", "attention resolutions: 4", "heads: 2 (upsample 2)",
                 "scale-shift norm: 1", "dropout: 0.1", "time scale: 20\n",
                 "variance: learned_range", "loss: hybrid", "classes: 3", "step: 4"):
        assert line in info, (line, info)
    if ld is not None:
        net = ld.checkpoint_load(full, 1)[0]
        try:
            assert net.kind == "iddpm" and net.model_channels == 32 and net.num_heads == 2
            assert net.num_res_blocks == 1 and net.levels == 2 and net.groups == 32
            import ctypes

            def get(key):
                v = ctypes.c_double()
                assert ld._f("diffuse_net_get")(net._h, key, ctypes.byref(v)) == 0
                return v.value
            assert get(25) == 1000 / 50 and abs(get(23) - 0.1) < 1e-12  # TIME_SCALE, DROPOUT
            assert net.param_count == int(info.split("parameters: ")[1].split()[0])
        finally:
            net.close()
    run("sample", full, "--count", "3", "--steps", "5", "--label", "1", "--output",
        tmp("id_s.npy"), "--png", tmp("id_s.png"), "--quiet")
    smp = np.load(tmp("id_s.npy"))
    assert smp.shape == (3, 1, 8, 8) and np.all(np.isfinite(smp)) and np.abs(smp).max() <= 1.0
    assert read_png_size(tmp("id_s.png"))[0] > 16
    p = run("bpd", full, "--count", "4", "--quiet")
    assert p.stdout.startswith("bpd "), p.stdout
    # iddpm options on another net, and bad values, are one clear line
    fails("train", "--data", x, "--num-heads", "2", "--output", tmp("e.ckpt"),
          want="--num-heads is an option of --net iddpm")
    fails("train", "--data", x, "--net", "iddpm", "--attention-resolutions", "3", "--output",
          tmp("e.ckpt"), want="--attention-resolutions: 3")
    fails("train", "--data", x, "--net", "iddpm", "--num-channels", "48", "--output",
          tmp("e.ckpt"), want="divisible")
    fails("train", "--resume", full, "--dropout", "0.2", want="--dropout is recorded")


def test_old_checkpoint_needs_schedule_flags():
    need_binding()
    need_numpy()
    net = ld.Net.mlp(2, width=8, depth=1, emb_dim=4, max_batch=4, seed=1)
    old = tmp("old.ckpt")
    ld.checkpoint_save(old, net)
    net.close()
    fails("sample", old, "--count", "2", "--output", tmp("o.npy"), want="records no schedule")
    run("sample", old, "--schedule", "linear", "--timesteps", "100", "--count", "2", "--steps",
        "5", "--output", tmp("o.npy"), "--quiet")
    assert np.load(tmp("o.npy")).shape == (2, 2)
    assert "schedule: not recorded" in run("info", old).stdout


def test_errors_are_one_clear_line():
    ck = trained()
    fails("train", "--bogus", want="unknown option '--bogus'")
    fails("sample", ck, "--output", tmp("e.npy"), "--stepz", "3", want="unknown option '--stepz'")
    fails("frobnicate", want="unknown command 'frobnicate'")
    fails("train", "--data", "gmm", "--steps", want="needs a value")
    fails("train", "--data", "gmm", "--steps", "ten", "--output", tmp("e.ckpt"),
          want="--steps needs an integer")
    fails("schedule", "--schedule", "cosin", want="unknown schedule 'cosin'")
    fails("sample", ck, "--sampler", "euler", "--output", tmp("e.npy"),
          want="unknown sampler 'euler'")
    # output paths are checked before the work, and named
    fails("train", "--data", "gmm", "--output", "/nonexistent-dir/x.ckpt",
          want="'/nonexistent-dir/x.ckpt'")
    fails("sample", ck, "--output", tmp("nodir/x.npy"), want="nodir/x.npy")
    fails("sample", ck, "--output", TMP, want="is a directory")
    # bad files, named
    with open(tmp("junk.npy"), "wb") as f:
        f.write(b"\x93NUMPY\x01\x00\x10\x00{'descr': '<f4'}  ")
    fails("train", "--data", tmp("junk.npy"), "--output", tmp("e.ckpt"), want="junk.npy")
    with open(tmp("text.txt"), "w") as f:
        f.write("hello\n")
    fails("train", "--data", tmp("text.txt"), "--output", tmp("e.ckpt"),
          want="neither a .npy nor an IDX file")
    fails("info", tmp("text.txt"), want="not a libdiffuse checkpoint")
    with open(ck, "rb") as f:
        b = bytearray(f.read())
    b[len(b) // 2] ^= 0xFF
    with open(tmp("corrupt.ckpt"), "wb") as f:
        f.write(b)
    fails("sample", tmp("corrupt.ckpt"), "--output", tmp("e.npy"), want="CRC mismatch")
    fails("info", tmp("missing.ckpt"), want="cannot open")
    fails("train", "--data", "nowhere.npy", "--output", tmp("e.ckpt"), want="nowhere.npy")
    fails("train", "--resume", ck, "--lr", "0.1", want="--lr is recorded")
    fails("train", "--resume", ck, "--steps", "10", "--output", tmp("e.ckpt"),
          want="past --steps 10")
    assert not os.path.exists(tmp("e.ckpt")) and not os.path.exists(tmp("e.npy"))
    # --help and --version succeed
    assert run("sample", "--help").stdout.startswith("usage: diffuse sample")
    assert run("--version").stdout.startswith("diffuse ")


def test_progress_lines_when_not_a_terminal():
    p = run("train", "--data", "moons", "--steps", "30", "--batch", "8", "--width", "8",
            "--depth", "0", "--progress-every", "10", "--output", tmp("p.ckpt"))
    lines = [l for l in p.stderr.splitlines() if l.startswith("train ")]
    assert [l.split()[1] for l in lines] == ["10/30", "20/30", "30/30"], p.stderr
    assert "/s" in lines[0] and "ETA" in lines[0]
    q = run("train", "--data", "moons", "--steps", "30", "--batch", "8", "--width", "8",
            "--depth", "0", "--quiet", "--output", tmp("p.ckpt"))
    assert q.stderr == ""


def test_man_page_renders():
    page = os.path.join(ROOT, "doc", "diffuse.1")
    groff = shutil.which("groff")
    if groff is None:
        raise Skip("groff is not installed")
    p = subprocess.run([groff, "-man", "-Tutf8", "-ww", page], capture_output=True, text=True)
    assert p.returncode == 0 and p.stderr == "", p.stderr
    for cmd in ("diffuse schedule", "diffuse train", "diffuse sample", "diffuse bpd",
                "diffuse info"):
        assert cmd in p.stdout, cmd


def main():
    if not os.access(CLI, os.X_OK):
        print(f"FAIL the program {CLI} is not built")
        print("0 passed, 1 failed, 0 skipped")
        return 1
    print(f"# program {CLI}")
    for fn in (test_schedule_tables_equal_the_library_csv_and_json,
               test_train_resume_is_bit_identical,
               test_sample_npy_png_and_shards_concatenate,
               test_bpd_matches_the_binding,
               test_info_describes_the_checkpoint,
               test_labels_npy_data_and_guidance,
               test_png_folder_and_idx_train_a_unet,
               test_iddpm_net_trains_resumes_samples_and_describes_itself,
               test_old_checkpoint_needs_schedule_flags,
               test_errors_are_one_clear_line,
               test_progress_lines_when_not_a_terminal,
               test_man_page_renders):
        test(fn)
    shutil.rmtree(TMP, ignore_errors=True)
    print(f"{results['passed']} passed, {results['failed']} failed, "
          f"{results['skipped']} skipped")
    return 1 if results["failed"] else 0


if __name__ == "__main__":
    sys.exit(main())
