#!/usr/bin/env python3
"""Tests of the Python binding python/libdiffuse/.

Two ways to run it:

    /usr/bin/python3 -m pytest -q tests/python
    LIBDIFFUSE_PATH=out/libdiffuse.so.1 /usr/bin/python3 tests/python/test_binding.py

The second prints the format of tests/run.sh: one line per test, "ok   NAME",
"FAIL NAME" followed by indented detail lines, or "skip NAME: REASON"; lines
starting with '#' are information; the last line is
"N passed, M failed, K skipped".  Exit status 1 if a test failed.

Environment:
  LIBDIFFUSE_PATH      the library to test (file or directory); without it the
                       binding's own search applies (in-tree out/, build/, then
                       libdiffuse.so.1 by SONAME).
  LIBDIFFUSE_NO_NUMPY  set to 1 to run as if numpy were absent: the binding
                       takes its standard-library paths and the numpy-only
                       tests skip, saying so.

The standard-library paths are also tested while numpy is installed, by
setting the binding's numpy reference to None (no_numpy() below).

Every random test uses a fixed seed and names it in its failure message.
Statistical bounds are 5 standard errors (a false failure rate below 1e-6 per
check), stated next to each check.
"""

import array
import contextlib
import ctypes
import ctypes.util
import gc
import math
import os
import pathlib
import random
import re
import signal
import struct
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
import traceback
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
PYDIR = os.path.join(ROOT, "python")
HEADER = os.path.join(ROOT, "include", "diffuse.h")
SYMBOLS = os.path.join(ROOT, "tests", "abi", "symbols.txt")
EXAMPLE = os.path.join(PYDIR, "example.py")
if PYDIR not in sys.path:
    sys.path.insert(0, PYDIR)

try:
    import libdiffuse as ld
except ImportError as _e:
    if __name__ == "__main__":
        print("FAIL import_libdiffuse")
        print(f"    {_e}")
        print("0 passed, 1 failed, 0 skipped")
        sys.exit(1)
    raise

HAVE_NUMPY = ld._np is not None
if HAVE_NUMPY:
    import numpy as np
NO_NUMPY_REASON = ("numpy is not installed (or LIBDIFFUSE_NO_NUMPY is set): "
                   "the numpy path is not tested here")
needs_numpy = unittest.skipUnless(HAVE_NUMPY, NO_NUMPY_REASON)
LN2 = math.log(2.0)


@contextlib.contextmanager
def no_numpy():
    """Run the binding as if numpy were absent (its standard-library paths)."""
    saved = ld._np
    ld._np = None
    try:
        yield
    finally:
        ld._np = saved


def f32(x):
    """x rounded to float32."""
    return struct.unpack("f", struct.pack("f", x))[0]


def np_or_list(x):
    """x as something that multiplies elementwise: a numpy view, or the
    standard-library path's list of rows as a flat list of zeros' shape."""
    if HAVE_NUMPY:
        return x
    return _Zeros(x)


class _Zeros(list):
    def __init__(self, rows):
        super().__init__(rows)

    def __rmul__(self, k):
        return [[k * v for v in row] for row in self]


def flat(x):
    """Any result (numpy array, array.array, nested lists) as a flat list of floats."""
    if HAVE_NUMPY and isinstance(x, np.ndarray):
        return [float(v) for v in x.reshape(-1)]
    out = []
    for v in x:
        if isinstance(v, (list, tuple, array.array)):
            out.extend(flat(v))
        else:
            out.append(float(v))
    return out


def linear_reference_abar(T=1000, beta_start=1e-4, beta_end=0.02):
    """alphas_cumprod of Improved DDPM's linear schedule, computed here in
    double from numpy.linspace's definition (not from the library)."""
    k = 1000.0 / T
    lo, hi = k * beta_start, k * beta_end
    step = (hi - lo) / (T - 1)
    betas = [lo + i * step for i in range(T - 1)] + [hi]
    abar, acc = [], 0.0
    for b in betas:
        acc += math.log1p(-b)
        abar.append(math.exp(acc))
    return betas, abar


def iddpm_space_timesteps(T, spec):
    """Improved DDPM's space_timesteps(), as published, for comparison."""
    if spec.startswith("ddim"):
        want = int(spec[len("ddim"):])
        for i in range(1, T):
            if len(range(0, T, i)) == want:
                return sorted(range(0, T, i))
        raise ValueError(spec)
    counts = [int(x) for x in spec.split(",")]
    size_per, extra = T // len(counts), T % len(counts)
    start, steps = 0, []
    for i, count in enumerate(counts):
        size = size_per + (1 if i < extra else 0)
        stride = 1 if count <= 1 else (size - 1) / (count - 1)
        cur = 0.0
        for _ in range(count):
            steps.append(start + round(cur))
            cur += stride
        start += size
    return sorted(set(steps))


def elf_exported_functions(path):
    """The diffuse_* names that a little-endian ELF64 shared library defines
    in its dynamic symbol table (global or weak, default visibility), or None
    if the file is not one."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError:
        return None
    if data[:4] != b"\x7fELF" or data[4] != 2 or data[5] != 1:  # ELFCLASS64, little-endian
        return None
    shoff, = struct.unpack_from("<Q", data, 0x28)
    shentsize, shnum = struct.unpack_from("<HH", data, 0x3A)
    sections = [struct.unpack_from("<IIQQQQIIQQ", data, shoff + i * shentsize)
                for i in range(shnum)]
    names = set()
    for sh in sections:
        if sh[1] != 11:  # SHT_DYNSYM
            continue
        offset, size, link, entsize = sh[4], sh[5], sh[6], sh[9] or 24
        stroff = sections[link][4]
        for k in range(size // entsize):
            st_name, st_info, st_other, st_shndx = struct.unpack_from("<IBBH", data,
                                                                      offset + k * entsize)
            if st_shndx == 0 or st_shndx >= 0xFF00 or (st_info >> 4) not in (1, 2) \
                    or st_other & 3:
                continue  # undefined, absolute (version nodes), local or hidden
            end = data.index(b"\0", stroff + st_name)
            name = data[stroff + st_name:end].decode()
            if name.startswith("diffuse_"):
                names.add(name)
    return names


class GaussianOracle:
    """Data x0 ~ N(mu, sd^2) per dimension.  The exact noise predictor at the
    original training index t is
        eps_hat = sqrt(1 - abar) (x - sqrt(abar) mu) / (abar sd^2 + 1 - abar),
    with abar from linear_reference_abar() (independent of the library)."""

    def __init__(self, mu, sd, abar):
        self.mu, self.sd, self.abar = list(mu), list(sd), abar
        self.calls = 0
        self.seen_t = []
        if HAVE_NUMPY:
            self.np_mu = np.array(self.mu)
            self.np_sd2 = np.array(self.sd) * np.array(self.sd)
            self.np_abar = np.array(abar)

    def numpy_fn(self, x, t):
        self.calls += 1
        self.seen_t.append(int(t[0]))
        a = self.np_abar[t][:, None]
        return np.sqrt(1.0 - a) * (x - np.sqrt(a) * self.np_mu) / (a * self.np_sd2 + (1.0 - a))

    def list_fn(self, x, t):
        self.calls += 1
        self.seen_t.append(int(t[0]))
        out = []
        for row, tb in zip(x, t):
            a = self.abar[tb]
            out.append([math.sqrt(1.0 - a) * (v - math.sqrt(a) * m) / (a * (s * s) + (1.0 - a))
                        for v, m, s in zip(row, self.mu, self.sd)])
        return out

    def chain(self, kept, eta_or_ddpm):
        """The per-dimension affine law of a DDIM (eta = 0) chain, or the
        Gaussian law of a DDPM chain with the posterior variance, over the
        kept original steps: returns [(A, B, V)] with x0 = A x_T + B + noise
        of variance V."""
        res = []
        for m, s in zip(self.mu, self.sd):
            A, B, V = 1.0, 0.0, 0.0
            for i in range(len(kept) - 1, -1, -1):
                a = self.abar[kept[i]]
                ap = self.abar[kept[i - 1]] if i > 0 else 1.0
                c = math.sqrt(1.0 - a) / (a * s * s + 1.0 - a)
                # eps_hat = c x - c sqrt(a) m;  x0_hat = (x - sqrt(1 - a) eps_hat) / sqrt(a)
                e_x, e_c = c, -c * math.sqrt(a) * m
                h_x = (1.0 - math.sqrt(1.0 - a) * e_x) / math.sqrt(a)
                h_c = -math.sqrt(1.0 - a) * e_c / math.sqrt(a)
                if eta_or_ddpm == "ddpm":
                    beta = 1.0 - a / ap
                    c1 = beta * math.sqrt(ap) / (1.0 - a)
                    c2 = (1.0 - ap) * math.sqrt(1.0 - beta) / (1.0 - a)
                    n_x, n_c = c1 * h_x + c2, c1 * h_c
                    var = beta * (1.0 - ap) / (1.0 - a) if i > 0 else 0.0
                else:
                    n_x = math.sqrt(ap) * h_x + math.sqrt(1.0 - ap) * e_x
                    n_c = math.sqrt(ap) * h_c + math.sqrt(1.0 - ap) * e_c
                    var = 0.0
                A, B, V = n_x * A, n_x * B + n_c, n_x * n_x * V + var
            res.append((A, B, V))
        return res

    def invert_chain(self, kept):
        """The per-dimension affine map (A, B) of DDIM inversion over the kept
        original steps: x_{k+1} = sqrt(abar') x0_hat + sqrt(1 - abar') eps_hat
        with x0_hat and eps_hat at step k, for k = 0 .. len(kept) - 2."""
        res = []
        for m, s in zip(self.mu, self.sd):
            A, B = 1.0, 0.0
            for k in range(len(kept) - 1):
                a, an = self.abar[kept[k]], self.abar[kept[k + 1]]
                c = math.sqrt(1.0 - a) / (a * s * s + 1.0 - a)
                e_x, e_c = c, -c * math.sqrt(a) * m
                h_x = (1.0 - math.sqrt(1.0 - a) * e_x) / math.sqrt(a)
                h_c = -math.sqrt(1.0 - a) * e_c / math.sqrt(a)
                n_x = math.sqrt(an) * h_x + math.sqrt(1.0 - an) * e_x
                n_c = math.sqrt(an) * h_c + math.sqrt(1.0 - an) * e_c
                A, B = n_x * A, n_x * B + n_c
            res.append((A, B))
        return res


class Base(unittest.TestCase):
    maxDiff = 2000

    def assertDiffuseError(self, status, fn, *args, contains=None, **kw):
        """fn(*args) raises DiffuseError with this status and a message."""
        with self.assertRaises(ld.DiffuseError) as cm:
            fn(*args, **kw)
        e = cm.exception
        self.assertEqual(e.status, status, f"status {e.status} ({e.name}): {e.message}")
        self.assertEqual(e.name, ld.strerror(status))
        self.assertTrue(e.message.startswith("diffuse_"), f"message {e.message!r}")
        if contains is not None:
            self.assertIn(contains, e.message)
        return e

    def assertClose(self, got, want, rtol=0.0, atol=0.0, what=""):
        got, want = flat(got), flat(want)
        self.assertEqual(len(got), len(want), f"{what}: lengths {len(got)} != {len(want)}")
        for i, (g, w) in enumerate(zip(got, want)):
            if not abs(g - w) <= atol + rtol * abs(w):
                self.fail(f"{what}[{i}]: got {g!r}, want {w!r} (rtol {rtol}, atol {atol})")


# ---------------------------------------------------------------------------
# The module: declarations, loading, version, constants
# ---------------------------------------------------------------------------

class ModuleTest(Base):

    @staticmethod
    def _symbols_txt():
        names = set()
        with open(SYMBOLS) as f:
            for line in f:
                if line.strip() and not line.startswith("#"):
                    names.add(line.split()[1])
        return names

    def test_signatures_equal_symbols_txt(self):
        # _SIGNATURES names every exported function but the deliberately
        # unwrapped one.  The list of exports is tests/abi/symbols.txt; where
        # it differs from what the library under test exports (symbols.txt
        # not regenerated yet after an ABI change), the library's own dynamic
        # symbol table is the reference, and
        # test_symbols_txt_matches_the_library says so.
        if not os.path.exists(SYMBOLS):
            self.skipTest(f"{SYMBOLS} not found (not a source tree)")
        names = self._symbols_txt()
        exported = elf_exported_functions(ld._path)
        if exported is not None and exported != names:
            names = exported
        unwrapped = {"diffuse_set_allocator"}  # deliberately unwrapped: see the binding
        self.assertEqual(set(ld.DELIBERATELY_UNWRAPPED), unwrapped)
        self.assertTrue(unwrapped <= names)
        want = names - unwrapped
        got = set(ld._SIGNATURES)
        self.assertEqual(sorted(want - got), [], "exported but not in _SIGNATURES")
        self.assertEqual(sorted(got - want), [], "in _SIGNATURES but not exported")

    def test_symbols_txt_matches_the_library(self):
        if not os.path.exists(SYMBOLS):
            self.skipTest(f"{SYMBOLS} not found (not a source tree)")
        exported = elf_exported_functions(ld._path)
        if exported is None:
            self.skipTest(f"cannot read the dynamic symbols of {ld._path} (not ELF64)")
        listed = self._symbols_txt()
        self.assertTrue(exported, "no diffuse_* symbol found: the ELF reader is broken")
        self.assertIn("diffuse_version", exported)
        if exported != listed:
            self.skipTest(
                f"tests/abi/symbols.txt differs from {ld._path} (regenerate it after a "
                f"deliberate ABI change; tests/abi/check_symbols.sh checks it): exported "
                f"but not listed: {', '.join(sorted(exported - listed)) or 'none'}; listed "
                f"but not exported: {', '.join(sorted(listed - exported)) or 'none'}")

    def test_every_declared_function_is_bound(self):
        self.assertEqual(ld.UNAVAILABLE, ())
        for name in ld._SIGNATURES:
            self.assertTrue(ld.available(name), name)
        self.assertTrue(ld.available("sampler_run"))
        self.assertFalse(ld.available("diffuse_no_such_function"))

    def test_missing_function_is_reported_unavailable_not_an_error(self):
        funcs, missing = ld._bind(ld._lib, {"diffuse_no_such_function_v9": ([], ctypes.c_int),
                                            "diffuse_version": ([], ctypes.c_int)})
        self.assertEqual(missing, ["diffuse_no_such_function_v9"])
        self.assertEqual(list(funcs), ["diffuse_version"])
        saved = ld._funcs.pop("diffuse_sampler_invert")
        try:
            self.assertFalse(ld.available("diffuse_sampler_invert"))
            with self.assertRaises(NotImplementedError) as cm:
                ld._f("diffuse_sampler_invert")
            self.assertIn("diffuse_sampler_invert", str(cm.exception))
        finally:
            ld._funcs["diffuse_sampler_invert"] = saved

    def test_set_allocator_is_deliberately_unwrapped(self):
        self.assertNotIn("diffuse_set_allocator", ld._SIGNATURES)
        self.assertFalse(hasattr(ld, "set_allocator"))
        self.assertTrue(hasattr(ld._lib, "diffuse_set_allocator"), "the library exports it")
        with open(ld.__file__) as f:
            self.assertIn("Not wrapped: diffuse_set_allocator()", f.read())

    def test_version_functions(self):
        v = ld.version()
        self.assertEqual(v, ld.VERSION_NUMBER)
        self.assertEqual(v // 10000, 1)
        self.assertEqual(ld.version_string(),
                         f"{v // 10000}.{v // 100 % 100}.{v % 100}")
        self.assertEqual((ld.VERSION_MAJOR, ld.VERSION_MINOR, ld.VERSION_PATCH),
                         (v // 10000, v // 100 % 100, v % 100))
        self.assertEqual(ld.VERSION_STRING, ld.version_string())
        self.assertIn(ld.has_openmp(), (True, False))
        self.assertEqual(ld.rng_version(), 1)
        self.assertEqual(ld.RNG_VERSION, ld.rng_version())

    def test_version_check_refuses_another_major(self):
        ld._check_version(10000, "x")
        ld._check_version(19999, "x")
        for bad in (20000, 9999, 0):
            with self.assertRaises(ImportError) as cm:
                ld._check_version(bad, "/some/libdiffuse.so.1")
            self.assertIn("needs major version 1", str(cm.exception))
            self.assertIn("/some/libdiffuse.so.1", str(cm.exception))

    def test_constants_match_header(self):
        if not os.path.exists(HEADER):
            self.skipTest(f"{HEADER} not found (not a source tree)")
        with open(HEADER) as f:
            text = f.read()
        defines = {}
        for m in re.finditer(r"^#define DIFFUSE_(\w+)\s+(0x[0-9A-Fa-f]+|\d+)[uU]?\b", text, re.M):
            defines[m.group(1)] = int(m.group(2), 0)
        status = {m.group(1): int(m.group(2))
                  for m in re.finditer(r"X\((\w+),\s*(-?\d+),", text)}
        self.assertEqual(status["OK"], 0)
        for name, value in status.items():
            self.assertEqual(getattr(ld, "DIFFUSE_" + name), value, name)
        # Every header constant is a module attribute of the same value, except
        # the header's own machinery (API/NODISCARD/STRINGIFY macros have no
        # numeric value and are not matched above).
        missing = []
        for name, value in sorted(defines.items()):
            if hasattr(ld, name):
                self.assertEqual(getattr(ld, name), value, f"DIFFUSE_{name}")
            else:
                missing.append("DIFFUSE_" + name)
        self.assertEqual(missing, [], "header constants missing from the binding")
        self.assertGreaterEqual(len(defines), 60)
        for prefix in ("NET_", "TRAINER_", "LOSS_", "TIMESTEPS_"):
            self.assertTrue(any(n.startswith(prefix) for n in defines), prefix)

    def test_strerror(self):
        self.assertEqual(ld.strerror(ld.DIFFUSE_OK), "success")
        self.assertEqual(ld.strerror(ld.DIFFUSE_EINVAL), "invalid argument")
        for code in range(-7, 0):
            self.assertNotEqual(ld.strerror(code), "unknown status", code)
        self.assertEqual(ld.strerror(12345), "unknown status")
        self.assertEqual(ld.strerror(-8), "unknown status")

    def test_last_error_is_kept_until_the_next_failure(self):
        with self.assertRaises(ld.DiffuseError):
            ld.Schedule.linear(0)
        msg = ld.last_error()
        self.assertTrue(msg.startswith("diffuse_schedule_create_linear:"), msg)
        ld.strerror(-1)
        ld.normal_fill(1, 2, 3, 4)  # a successful call does not clear it
        self.assertEqual(ld.last_error(), msg)

    def test_last_error_is_per_thread(self):
        with self.assertRaises(ld.DiffuseError):
            ld.Schedule.cosine(0)
        mine = ld.last_error()
        seen = []

        def other():
            seen.append(ld.last_error())
            try:
                ld.timesteps_spacing(10, 20, "leading")
            except ld.DiffuseError as e:
                seen.append(e.message)

        th = threading.Thread(target=other)
        th.start()
        th.join()
        self.assertEqual(seen[0], "")
        self.assertTrue(seen[1].startswith("diffuse_timesteps_spacing"), seen)
        self.assertEqual(ld.last_error(), mine)

    # Loading, in subprocesses.
    def _import_in_subprocess(self, env_path):
        env = dict(os.environ)
        if env_path is None:
            env.pop("LIBDIFFUSE_PATH", None)
        else:
            env["LIBDIFFUSE_PATH"] = env_path
        code = ("import sys; sys.path.insert(0, sys.argv[1])\n"
                "try:\n"
                "    import libdiffuse as ld\n"
                "except ImportError as e:\n"
                "    print('ImportError:', e); sys.exit(3)\n"
                "print(ld._path)\n")
        p = subprocess.run([sys.executable, "-c", code, PYDIR], env=env, capture_output=True,
                           text=True, timeout=60)
        return p.returncode, (p.stdout + p.stderr).strip()

    def test_loader_env_file_and_directory(self):
        rc, out = self._import_in_subprocess(ld._path)
        self.assertEqual((rc, out), (0, ld._path))
        rc, out = self._import_in_subprocess(os.path.dirname(ld._path))
        self.assertEqual(rc, 0, out)
        self.assertEqual(os.path.basename(out), "libdiffuse.so.1")
        self.assertEqual(os.path.realpath(out), os.path.realpath(ld._path))

    def test_loader_errors_are_clear_import_errors(self):
        rc, out = self._import_in_subprocess("/nonexistent/libdiffuse.so.1")
        self.assertEqual(rc, 3, out)
        self.assertIn("does not exist", out)
        dev = os.path.join(os.path.dirname(ld._path), "libdiffuse.so")
        rc, out = self._import_in_subprocess(dev)
        self.assertEqual(rc, 3, out)
        self.assertIn("unversioned", out)
        libm = ctypes.util.find_library("m") if hasattr(ctypes, "util") else None
        for cand in ("/lib/x86_64-linux-gnu/libm.so.6", "/usr/lib/x86_64-linux-gnu/libm.so.6",
                     "/lib/aarch64-linux-gnu/libm.so.6", "/lib64/libm.so.6"):
            if os.path.exists(cand):
                libm = cand
                break
        if libm and os.sep in libm:
            rc, out = self._import_in_subprocess(libm)
            self.assertEqual(rc, 3, out)
            self.assertIn("does not export diffuse_version", out)

    def test_loader_search_order_and_never_unversioned(self):
        cands = ld._candidates(env="")
        paths = [p for p, _ in cands]
        self.assertEqual(paths[0], os.path.join(ld._TREE, "out", "libdiffuse.so.1"))
        self.assertEqual(paths[1], os.path.join(ld._TREE, "build", "libdiffuse.so.1"))
        self.assertEqual(paths[2], "libdiffuse.so.1")
        self.assertFalse(any(os.path.basename(p) == "libdiffuse.so" for p in paths))
        self.assertEqual(ld._candidates(env="/x/y.so.1"), [("/x/y.so.1", True)])


# ---------------------------------------------------------------------------
# DiffuseError and callback-status plumbing
# ---------------------------------------------------------------------------

class ErrorTest(Base):

    def test_diffuse_error_fields(self):
        e = self.assertDiffuseError(ld.DIFFUSE_EINVAL, ld.Schedule.linear, 0,
                                    contains="T = 0")
        self.assertIsInstance(e, Exception)
        self.assertEqual(e.name, "invalid argument")
        self.assertEqual(e.args, (e.status, e.name, e.message))
        self.assertIn(e.message, str(e))
        self.assertIn("status -1", str(e))
        self.assertEqual(e.message, ld.last_error())

    def test_python_side_checks_raise_before_calling(self):
        with ld.Schedule.cosine(10) as s:
            with self.assertRaises(ValueError):
                ld.normal_fill(-1, 0, 0, 3)          # seed outside uint64
            with self.assertRaises(ValueError):
                ld.normal_fill(0, 1 << 64, 0, 3)
            with self.assertRaises(ValueError):
                ld.normal_fill(0, 0, 1 << 32, 3)     # step outside uint32
            with self.assertRaises(ValueError):
                ld.q_sample(s, [0.0] * 6, [1, 2], [0.0] * 5)  # noise size
            with self.assertRaises(ValueError):
                ld.q_sample(s, [0.0] * 5, [1, 2], [0.0] * 5)  # not batch * dim
            with self.assertRaises(TypeError):
                ld.q_sample(s, [0.0] * 4, [1.5, 2], [0.0] * 4)  # float timesteps
            with self.assertRaises(ValueError):
                ld.q_sample(s, [0.0] * 4, [1, 1 << 40], [0.0] * 4)  # int32 overflow
            with self.assertRaises(ValueError):
                s.table("no_such_table")
            with self.assertRaises(ValueError):
                ld.timesteps_from_spec(10, "5\0,5")

    def test_raw_model_status_gives_emodel(self):
        # The binding's trampolines return non-zero only for an exception,
        # which is re-raised; the EMODEL path is checked on the raw function.
        rc_box = []
        cb = ld._MODEL_FN(lambda user, x, t, b, d, out: 3)
        m, s, smp = ctypes.c_void_p(), ctypes.c_void_p(), ctypes.c_void_p()
        self.assertEqual(ld._f("diffuse_model_create")(ctypes.byref(m), cb, None, 2, 0, 0), 0)
        self.assertEqual(ld._f("diffuse_schedule_create_cosine")(ctypes.byref(s), 10, 0.008,
                                                                 0.999), 0)
        try:
            self.assertEqual(ld._f("diffuse_sampler_create")(ctypes.byref(smp), s, m, 1, 2), 0)
            out = (ctypes.c_float * 4)()
            rc_box.append(ld._f("diffuse_sampler_run")(smp, None, 1, 0, 2, out))
            self.assertEqual(rc_box[0], ld.DIFFUSE_EMODEL)
            self.assertIn("model callback returned 3", ld.last_error())
            # *out is NULL after a failed create
            bad = ctypes.c_void_p(12345)
            self.assertEqual(ld._f("diffuse_sampler_create")(ctypes.byref(bad), s, m, 9, 2),
                             ld.DIFFUSE_EINVAL)
            self.assertIsNone(bad.value)
        finally:
            ld._f("diffuse_sampler_free")(smp)
            ld._f("diffuse_schedule_free")(s)
            ld._f("diffuse_model_free")(m)

    def test_exception_propagates_in_preference_to_emodel(self):
        class Boom(Exception):
            pass

        def fn(x, t):
            raise Boom("from the model")

        with ld.Schedule.cosine(10) as s, ld.Model(fn, 2) as m, \
                ld.Sampler(s, m, "ddpm", 1) as smp:
            try:
                smp.run(seed=1)
            except Boom as e:
                caught = e
            else:
                self.fail("Boom was not raised")
            self.assertEqual(str(caught), "from the model")
            # The library did stop with EMODEL and the trampoline's code.
            self.assertIn(f"model callback returned {ld.CALLBACK_EXCEPTION}", ld.last_error())
            if hasattr(caught, "add_note"):
                notes = getattr(caught, "__notes__", [])
                self.assertTrue(any("diffuse_sampler_run" in n for n in notes), notes)
            tb = "".join(traceback.format_exception(type(caught), caught, caught.__traceback__))
            self.assertIn("in fn", tb)  # the user's own frame is in the traceback
            self.assertIn("in run", tb)


# ---------------------------------------------------------------------------
# Schedules
# ---------------------------------------------------------------------------

class ScheduleTest(Base):

    def test_constructors(self):
        betas_ref, abar_ref = linear_reference_abar()
        with ld.Schedule.linear(1000) as s:
            self.assertEqual((s.length, s.base_length, len(s)), (1000, 1000, 1000))
            self.assertClose(s.table("betas"), betas_ref, rtol=1e-15, what="linear betas")
            self.assertClose(s.table(ld.TABLE_ALPHAS_CUMPROD), abar_ref, rtol=1e-12,
                             what="linear abar")
        with ld.Schedule.cosine(100) as s:
            abar = flat(s.table("alphas_cumprod"))
            f = [math.cos((i / 100 + 0.008) / 1.008 * math.pi / 2) ** 2 for i in range(101)]
            # The last beta is clipped at max_beta = 0.999: compare the others.
            self.assertClose(abar[:99], [f[i + 1] / f[0] for i in range(99)], rtol=1e-9,
                             what="cosine abar")
        with ld.Schedule.scaled_linear(10, 0.00085, 0.012) as s:
            lo, hi = math.sqrt(0.00085), math.sqrt(0.012)
            want = [(lo + i * (hi - lo) / 9) ** 2 for i in range(10)]
            self.assertClose(s.table("betas"), want, rtol=1e-14, what="scaled_linear")
        with ld.Schedule.sigmoid(50) as s:
            b = flat(s.table("betas"))
            self.assertEqual(len(b), 50)
            self.assertTrue(all(0 < v <= 0.999 for v in b))
            self.assertEqual(b[-1], 0.999)  # the last beta is clipped
        betas = [0.1, 0.2, 0.5, 1.0]
        with ld.Schedule.from_betas(betas) as s:
            self.assertEqual(flat(s.table("betas")), betas)
            self.assertEqual(flat(s.table("alphas_cumprod"))[-1], 0.0)
            self.assertEqual(flat(s.timesteps()), [0, 1, 2, 3])

    def test_constructor_errors(self):
        E = ld.DIFFUSE_EINVAL
        self.assertDiffuseError(E, ld.Schedule.linear, 0, contains="T = 0")
        self.assertDiffuseError(E, ld.Schedule.linear, 10, 0.0, 0.02)
        self.assertDiffuseError(E, ld.Schedule.linear, ld.MAX_STEPS + 1)
        self.assertDiffuseError(E, ld.Schedule.cosine, 10, -1.0)
        self.assertDiffuseError(E, ld.Schedule.cosine, 10, 0.008, 1.5)
        self.assertDiffuseError(E, ld.Schedule.scaled_linear, 10, 0.1, 0.01)
        self.assertDiffuseError(E, ld.Schedule.sigmoid, 10, 3.0, -3.0)
        self.assertDiffuseError(E, ld.Schedule.sigmoid, 10, -3, 3, 0.0)
        self.assertDiffuseError(E, ld.Schedule.from_betas, [0.1, 0.0, 0.2])
        self.assertDiffuseError(E, ld.Schedule.from_betas, [0.1, 1.0, 0.2])
        self.assertDiffuseError(E, ld.Schedule.from_betas, [0.1, float("nan")])
        self.assertDiffuseError(E, ld.Schedule.from_betas, [])
        with self.assertRaises(ValueError):
            ld.Schedule.linear(-1)
        with self.assertRaises(ValueError):
            ld.Schedule(None)

    def test_tables_by_name_and_id(self):
        with ld.Schedule.linear(20) as s:
            for name, tid in ld._TABLE_NAMES.items():
                self.assertEqual(flat(s.table(name)), flat(s.table(tid)), name)
                self.assertEqual(flat(s.table(name.upper())), flat(s.table(tid)), name)
            b = flat(s.table("betas"))
            a = flat(s.table("alphas"))
            self.assertClose(a, [1 - v for v in b], rtol=1e-15, what="alphas")
            self.assertDiffuseError(ld.DIFFUSE_EINVAL, s.table, ld.TABLE_COUNT_V1,
                                    contains="table")
            self.assertDiffuseError(ld.DIFFUSE_EINVAL, s.table, -1)

    def test_respace(self):
        with ld.Schedule.linear(1000) as base:
            abar = flat(base.table("alphas_cumprod"))
            kept = [999, 0, 500, 250]
            with base.respace(kept) as r:
                self.assertEqual((r.length, r.base_length), (4, 1000))
                self.assertEqual(flat(r.timesteps()), sorted(kept))
                self.assertClose(r.table("alphas_cumprod"), [abar[k] for k in sorted(kept)],
                                 rtol=1e-12, what="respaced abar")
                with r.respace([1, 3]) as rr:  # indices into r
                    self.assertEqual(flat(rr.timesteps()), [250, 999])
                    self.assertEqual(rr.base_length, 1000)
            with base.respace("ddim50") as r:
                self.assertEqual(flat(r.timesteps()), iddpm_space_timesteps(1000, "ddim50"))
            E = ld.DIFFUSE_EINVAL
            self.assertDiffuseError(E, base.respace, [1, 1], contains="twice")
            self.assertDiffuseError(E, base.respace, [1000])
            self.assertDiffuseError(E, base.respace, [-1])
            self.assertDiffuseError(E, base.respace, [])

    def test_rescale_zero_snr(self):
        with ld.Schedule.linear(1000) as base, base.rescale_zero_snr() as z:
            a0, az = flat(base.table("alphas_cumprod")), flat(z.table("alphas_cumprod"))
            self.assertEqual(az[-1], 0.0)
            self.assertClose([az[0]], [a0[0]], rtol=1e-12, what="first abar kept")
            self.assertEqual(flat(z.table("betas"))[-1], 1.0)
            self.assertEqual(flat(z.table("sqrt_recip_alphas_cumprod"))[-1], math.inf)
            with base.respace([0, 10]) as r:
                self.assertDiffuseError(ld.DIFFUSE_EINVAL, r.rescale_zero_snr)
        with ld.Schedule.from_betas([0.5]) as one:
            self.assertDiffuseError(ld.DIFFUSE_EINVAL, one.rescale_zero_snr)

    def test_close_context_manager_and_del(self):
        s = ld.Schedule.cosine(10)
        self.assertFalse(s.closed)
        self.assertIn("T=10", repr(s))
        with s:
            pass
        self.assertTrue(s.closed)
        self.assertIn("closed", repr(s))
        s.close()  # idempotent
        with self.assertRaises(ValueError):
            s.length
        t = ld.Schedule.cosine(10)
        del t
        gc.collect()  # __del__ closes it


# ---------------------------------------------------------------------------
# Timestep lists
# ---------------------------------------------------------------------------

class TimestepsTest(Base):

    def test_from_spec(self):
        for T, spec in ((1000, "ddim50"), (1000, "10,15,20"), (1000, "250"), (250, "ddim25"),
                        (100, "0,10,3"), (4000, "100")):
            self.assertEqual(flat(ld.timesteps_from_spec(T, spec)),
                             iddpm_space_timesteps(T, spec), f"T={T} spec={spec}")
        self.assertEqual(flat(ld.timesteps_from_spec(100, " 5 , 5 ")),
                         iddpm_space_timesteps(100, "5,5"))
        self.assertEqual(flat(ld.timesteps_from_spec(10, b"ddim5")), [0, 2, 4, 6, 8])

    def test_from_spec_errors(self):
        E = ld.DIFFUSE_EINVAL
        self.assertDiffuseError(E, ld.timesteps_from_spec, 100, "abc", contains="malformed")
        self.assertDiffuseError(E, ld.timesteps_from_spec, 100, "ddim1")
        self.assertDiffuseError(E, ld.timesteps_from_spec, 10, "11")
        self.assertDiffuseError(E, ld.timesteps_from_spec, 10, "0")
        self.assertDiffuseError(E, ld.timesteps_from_spec, 0, "1")
        with self.assertRaises(TypeError):
            ld.timesteps_from_spec(10, 5)

    def test_spacing(self):
        self.assertEqual(flat(ld.timesteps_spacing(1000, 10, ld.SPACING_LEADING)),
                         list(range(0, 1000, 100)))
        self.assertEqual(flat(ld.timesteps_spacing(1000, 10, "leading", 1)),
                         list(range(1, 1000, 100)))
        self.assertEqual(flat(ld.timesteps_spacing(1000, 10, "trailing")),
                         list(range(99, 1000, 100)))
        self.assertEqual(flat(ld.timesteps_spacing(1000, 10, "linspace")),
                         list(range(0, 1000, 111)))
        if HAVE_NUMPY:
            T, N = 1000, 7
            self.assertEqual(flat(ld.timesteps_spacing(T, N, "linspace")),
                             sorted(np.linspace(0, T - 1, N).round().astype(int).tolist()))
            self.assertEqual(flat(ld.timesteps_spacing(T, N, "trailing")),
                             sorted((np.round(np.arange(T, 0, -T / N)).astype(np.int64) - 1)
                                    .tolist()))
            self.assertEqual(flat(ld.timesteps_spacing(T, N, "leading")),
                             sorted((np.arange(0, N) * (T // N)).round().tolist()))
        E = ld.DIFFUSE_EINVAL
        self.assertDiffuseError(E, ld.timesteps_spacing, 10, 20, "leading")
        self.assertDiffuseError(E, ld.timesteps_spacing, 10, 0, "leading")
        self.assertDiffuseError(E, ld.timesteps_spacing, 10, 5, 7, contains="unknown spacing 7")
        self.assertDiffuseError(E, ld.timesteps_spacing, 10, 5, "trailing", 1)  # step 10 > 9
        with self.assertRaises(ValueError):
            ld.timesteps_spacing(10, 5, "sideways")

    def test_rescale(self):
        self.assertClose(ld.timesteps_rescale([0, 1, 49], 50), [0.0, 20.0, 980.0],
                         what="rescale")
        self.assertClose(ld.timesteps_rescale([3], 4000), [f32(0.75)], what="rescale")
        self.assertEqual(flat(ld.timesteps_rescale([], 10)), [])
        self.assertDiffuseError(ld.DIFFUSE_EINVAL, ld.timesteps_rescale, [1], 0,
                                contains="base_T")


# ---------------------------------------------------------------------------
# Randomness
# ---------------------------------------------------------------------------

class RandomTest(Base):

    def test_normal_fill_known_answer(self):
        # Random123 kat_vectors: philox4x32 10, counter 0, key 0 ->
        # 6627e8d5 e169c58d bc57ac4c 9b00dbd8; the header's Box-Muller.
        w = [0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8]
        want = []
        for w1, w2 in ((w[0], w[1]), (w[2], w[3])):
            u1, u2 = (w1 + 0.5) * 2.0 ** -32, w2 * 2.0 ** -32
            r = math.sqrt(-2.0 * math.log(u1))
            want += [f32(r * math.cos(2 * math.pi * u2)), f32(r * math.sin(2 * math.pi * u2))]
        self.assertClose(ld.normal_fill(0, 0, 0, 4), want, rtol=2e-7, what="philox KAT")

    def test_normal_fill_properties(self):
        a = flat(ld.normal_fill(7, 3, 11, 10))
        self.assertEqual(a, flat(ld.normal_fill(7, 3, 11, 10)))
        self.assertEqual(a[:5], flat(ld.normal_fill(7, 3, 11, 5)))  # prefix property
        self.assertNotEqual(a, flat(ld.normal_fill(8, 3, 11, 10)))
        self.assertNotEqual(a, flat(ld.normal_fill(7, 4, 11, 10)))
        self.assertNotEqual(a, flat(ld.normal_fill(7, 3, 12, 10)))
        self.assertEqual(flat(ld.normal_fill(1, 2, 3, 0)), [])
        self.assertEqual(len(ld.normal_fill((1 << 64) - 1, (1 << 64) - 1, (1 << 32) - 1, 3)), 3)
        rc = ld._f("diffuse_normal_fill")(0, 0, 0, None, 3)
        self.assertEqual(rc, ld.DIFFUSE_EINVAL)

    @needs_numpy
    def test_normal_fill_moments(self):
        seed = 20240601
        n = 200000
        z = ld.normal_fill(seed, 0, 0, n).astype(np.float64)
        # 5 standard errors: mean SE 1/sqrt(n); variance SE sqrt(2/n).
        self.assertLess(abs(z.mean()), 5 / math.sqrt(n), f"seed {seed}")
        self.assertLess(abs(z.var() - 1), 5 * math.sqrt(2 / n), f"seed {seed}")


# ---------------------------------------------------------------------------
# Forward process, posterior, conversions
# ---------------------------------------------------------------------------

class ForwardTest(Base):

    def setUp(self):
        self.s = ld.Schedule.linear(1000)
        self.sa = flat(self.s.table("sqrt_alphas_cumprod"))
        self.s1m = flat(self.s.table("sqrt_one_minus_alphas_cumprod"))

    def tearDown(self):
        self.s.close()

    def _q_sample_check(self, x0, t, noise, got, dim):
        x0, noise, got = flat(x0), flat(noise), flat(got)
        for b, tb in enumerate(t):
            for i in range(b * dim, (b + 1) * dim):
                self.assertEqual(got[i], f32(self.sa[tb] * x0[i] + self.s1m[tb] * noise[i]))

    @needs_numpy
    def test_q_sample_numpy(self):
        rng = np.random.default_rng(1)
        x0 = rng.standard_normal((3, 2, 4)).astype(np.float32)
        noise = rng.standard_normal((3, 8))
        t = np.array([0, 500, 999])
        xt = ld.q_sample(self.s, x0, t, noise)
        self.assertIsInstance(xt, np.ndarray)
        self.assertEqual((xt.shape, xt.dtype), ((3, 2, 4), np.float32))
        self._q_sample_check(x0, t, noise.astype(np.float32), xt, 8)
        self.assertDiffuseError(ld.DIFFUSE_EINVAL, ld.q_sample, self.s, x0, [0, 1, 1000], noise,
                                contains="out of range")
        self.assertDiffuseError(ld.DIFFUSE_EINVAL, ld.q_sample, self.s, x0[:0], [], noise[:0],
                                contains="batch = 0")
        with self.assertRaises(TypeError):
            ld.q_sample(self.s, x0, np.array([0.0, 1.0, 2.0]), noise)

    @needs_numpy
    def test_numpy_inputs_pass_without_copy(self):
        a = np.zeros((4, 3), dtype=np.float32)
        conv = ld._arr(a, "f", "x")
        self.assertIs(conv.keep, a)
        self.assertEqual(ctypes.cast(conv.ptr, ctypes.c_void_p).value, a.ctypes.data)
        self.assertIsNot(ld._arr(a.astype(np.float64), "f", "x").keep, a)
        strided = np.zeros((4, 6), dtype=np.float32)[:, ::2]
        c = ld._arr(strided, "f", "x")
        self.assertTrue(c.keep.flags.c_contiguous)
        self.assertEqual(c.shape, (4, 3))
        t = np.arange(3, dtype=np.int32)
        self.assertIs(ld._arr(t, "i", "t").keep, t)
        d = np.zeros(5)
        self.assertIs(ld._arr(d, "d", "x").keep, d)

    @needs_numpy
    def test_scalar_t_broadcasts(self):
        x0 = np.ones((3, 2), np.float32)
        a = ld.q_sample(self.s, x0, 10, np.zeros((3, 2)))
        b = ld.q_sample(self.s, x0, [10, 10, 10], np.zeros((3, 2)))
        self.assertTrue(np.array_equal(a, b))

    @needs_numpy
    def test_q_sample_seeded(self):
        seed, first, step, dim = 99, 5, 17, 6
        x0 = np.linspace(-1, 1, 4 * dim, dtype=np.float32).reshape(4, dim)
        t = [3, 0, 999, 500]
        xt, noise = ld.q_sample_seeded(self.s, x0, t, seed, first, step)
        for b in range(4):
            self.assertTrue(np.array_equal(noise[b], ld.normal_fill(seed, first + b, step, dim)))
        self._q_sample_check(x0, t, noise, xt, dim)
        xt1, _ = ld.q_sample_seeded(self.s, x0[2:3], [999], seed, first + 2, step)
        self.assertTrue(np.array_equal(xt1[0], xt[2]), "batch invariance")
        self.assertDiffuseError(ld.DIFFUSE_EINVAL, ld.q_sample_seeded, self.s, x0, t, seed,
                                (1 << 64) - 2, step, contains="overflow")

    @needs_numpy
    def test_q_mean_variance_and_posterior(self):
        x0 = np.array([[0.5, -0.25], [1.0, 2.0]], np.float32)
        xt = np.array([[0.1, 0.2], [-0.3, 0.4]], np.float32)
        t = [0, 700]
        mean, var, logvar = ld.q_mean_variance(self.s, x0, t)
        om = self.s.table("one_minus_alphas_cumprod")
        for b, tb in enumerate(t):
            self.assertTrue(np.array_equal(mean[b], (self.sa[tb] * x0[b].astype(np.float64))
                                           .astype(np.float32)))
            self.assertEqual(var[b], om[tb])
            self.assertEqual(logvar[b], self.s.table("log_one_minus_alphas_cumprod")[tb])
        pm, pv, plv = ld.q_posterior(self.s, x0, xt, t)
        c1, c2 = self.s.table("posterior_mean_coef1"), self.s.table("posterior_mean_coef2")
        for b, tb in enumerate(t):
            want = (c1[tb] * x0[b].astype(np.float64) + c2[tb] * xt[b]).astype(np.float32)
            self.assertTrue(np.array_equal(pm[b], want))
        self.assertEqual(pv[0], 0.0)
        self.assertEqual(plv[1], self.s.table("posterior_log_variance_clipped")[700])
        with self.assertRaises(ValueError):
            ld.q_posterior(self.s, x0, xt[:1], t)

    @needs_numpy
    def test_predict_convert(self):
        rng = np.random.default_rng(2)
        x0 = rng.uniform(-1, 1, (5, 3)).astype(np.float32)
        eps = rng.standard_normal((5, 3)).astype(np.float32)
        t = [0, 1, 400, 900, 999]
        xt = ld.q_sample(self.s, x0, t, eps)
        got_x0 = ld.predict_convert(self.s, "eps", "x0", xt, t, eps)
        self.assertTrue(np.allclose(got_x0, x0, atol=2e-3), np.abs(got_x0 - x0).max())
        v = ld.predict_convert(self.s, ld.PRED_EPS, ld.PRED_V, xt, t, eps)
        back = ld.predict_convert(self.s, "v", "eps", xt, t, v)
        self.assertTrue(np.allclose(back, eps, atol=1e-5))
        same = ld.predict_convert(self.s, "x0", "x0", xt, t, x0)
        self.assertTrue(np.array_equal(same, x0))
        self.assertDiffuseError(ld.DIFFUSE_EINVAL, ld.predict_convert, self.s, 9, 0, xt, t, eps,
                                contains="unknown prediction kind 9")
        with self.s.rescale_zero_snr() as z:
            self.assertDiffuseError(ld.DIFFUSE_EINVAL, ld.predict_convert, z, "eps", "x0",
                                    xt[:1], [999], eps[:1], contains="undefined")
            ld.predict_convert(z, "v", "x0", xt[:1], [999], eps[:1])  # defined


# ---------------------------------------------------------------------------
# Elementwise VLB terms and the prior
# ---------------------------------------------------------------------------

class ElementwiseTest(Base):

    def test_normal_kl(self):
        self.assertClose(ld.normal_kl(0.0, 0.0, 1.0, 0.0), [0.5], rtol=1e-15, what="kl")
        self.assertClose(ld.normal_kl([0.3, -2], [0.1, 1.5], [0.3, -2], [0.1, 1.5]), [0, 0],
                         what="kl of equal")
        m1, l1, m2, l2 = 0.2, math.log(0.5), -0.4, math.log(2.0)
        want = 0.5 * (-1 + l2 - l1 + math.exp(l1 - l2) + (m1 - m2) ** 2 * math.exp(-l2))
        self.assertClose(ld.normal_kl([m1], [l1], [m2], [l2]), [want], rtol=1e-14, what="kl")
        self.assertEqual(flat(ld.normal_kl([], [], [], [])), [])
        if HAVE_NUMPY:
            out = ld.normal_kl(np.zeros((2, 3)), 0.0, 1.0, 0.0)  # broadcast
            self.assertEqual(out.shape, (2, 3))
            self.assertTrue(np.all(out == 0.5))
        rc = ld._f("diffuse_normal_kl")(None, None, None, None, 2, None)
        self.assertEqual(rc, ld.DIFFUSE_EINVAL)
        self.assertIn("NULL", ld.last_error())

    def test_standard_normal_cdf(self):
        xs = [-40.0, -8.0, -1.0, 0.0, 0.5, 3.0, 9.0]
        exact = [0.5 * math.erfc(-x / math.sqrt(2)) for x in xs]
        self.assertClose(ld.standard_normal_cdf(xs, ld.CDF_EXACT), exact, rtol=1e-13,
                         what="exact cdf")
        self.assertClose(ld.standard_normal_cdf(xs, "exact"), exact, rtol=1e-13,
                         what="exact cdf")
        self.assertClose(ld.standard_normal_cdf(xs[2:6]), exact[2:6], atol=1.8e-4,
                         what="tanh cdf")
        self.assertEqual(flat(ld.standard_normal_cdf([0.0], "tanh")), [0.5])
        self.assertDiffuseError(ld.DIFFUSE_EINVAL, ld.standard_normal_cdf, [0.0], 5)

    def test_discretized_gaussian_log_likelihood(self):
        grid = [i / 127.5 - 1.0 for i in range(256)]
        for mode in ("exact", "tanh"):
            ll = flat(ld.discretized_gaussian_log_likelihood(grid, 0.1, math.log(0.3), mode))
            total = math.fsum(math.exp(v) for v in ll)
            # The bins partition the real line: masses sum to 1 (floors aside).
            self.assertLess(abs(total - 1.0), 1e-9, f"{mode}: sum of bin masses {total}")
        ll = flat(ld.discretized_gaussian_log_likelihood([0.0], [0.0], [math.log(0.5)], "exact"))
        h = 1 / 255
        want = math.log(0.5 * math.erfc(-h / 0.5 / math.sqrt(2))
                        - 0.5 * math.erfc(h / 0.5 / math.sqrt(2)))
        self.assertClose(ll, [want], rtol=1e-9, what="middle bin")
        self.assertDiffuseError(ld.DIFFUSE_EINVAL, ld.discretized_gaussian_log_likelihood,
                                [0.0], [0.0], [0.0], 2)

    def test_prior_bpd(self):
        with ld.Schedule.linear(1000) as s:
            a = flat(s.table("alphas_cumprod"))[-1]
            x0 = [[0.5, -1.0, 0.0], [1.0, 1.0, 1.0]]
            got = flat(ld.prior_bpd(s, x0))
            for b, row in enumerate(x0):
                kl = [0.5 * (-1 + 0 - math.log(1 - a) + (1 - a) + a * v * v) for v in row]
                self.assertClose([got[b]], [sum(kl) / 3 / LN2], rtol=1e-9, what="prior")
            self.assertEqual(len(ld.prior_bpd(s, [0.0] * 6, batch=2)), 2)
            self.assertEqual(len(ld.prior_bpd(s, [0.0] * 6)), 1)
            self.assertDiffuseError(ld.DIFFUSE_EINVAL, ld.prior_bpd, s, [], batch=1)


# ---------------------------------------------------------------------------
# Models and p(x_{t-1} | x_t)
# ---------------------------------------------------------------------------

class ModelTest(Base):

    def test_model_create_and_parameters(self):
        with ld.Model(lambda x, t: x, 3) as m:
            self.assertEqual((m.dim, m.output_dim), (3, 3))
            self.assertIn("dim=3", repr(m))
            defaults = {"clip_x0": 0.0, "clip_min": -1.0, "clip_max": 1.0,
                        "threshold_percentile": 0.0, "threshold_max": 1.0}
            for name, value in defaults.items():
                self.assertEqual(m.get(name), value, name)
            m.set("clip_x0", 1)
            m.set(ld.MODEL_CLIP_MIN, -2.5)
            m.set("CLIP_MAX", 3.0)
            m.set(ld.MODEL_THRESHOLD_PERCENTILE, 0.9)
            m.set("threshold_max", 4)
            self.assertEqual([m.get(i) for i in range(1, 6)], [1.0, -2.5, 3.0, 0.9, 4.0])
            E = ld.DIFFUSE_EINVAL
            self.assertDiffuseError(E, m.set, 99, 1.0, contains="unknown parameter 99")
            self.assertDiffuseError(E, m.get, 99, contains="unknown parameter 99")
            self.assertDiffuseError(E, m.set, "clip_x0", 0.5)
            self.assertDiffuseError(E, m.set, "clip_min", 5.0)  # above CLIP_MAX
            self.assertDiffuseError(E, m.set, "clip_max", float("nan"))
            self.assertEqual(m.get("clip_min"), -2.5, "unchanged after the failures")
        with ld.Model(lambda x, t: x, 3, "v", "learned_range") as m:
            self.assertEqual((m.output_dim, m.prediction, m.variance), (6, ld.PRED_V, 3))
        E = ld.DIFFUSE_EINVAL
        self.assertDiffuseError(E, ld.Model, lambda x, t: x, 0, contains="dim")
        self.assertDiffuseError(E, ld.Model, lambda x, t: x, 2, 7, contains="prediction kind 7")
        self.assertDiffuseError(E, ld.Model, lambda x, t: x, 2, 0, 9, contains="variance type 9")
        with self.assertRaises(TypeError):
            ld.Model(None, 2)
        with self.assertRaises(ValueError):
            ld.Model(lambda x, t: x, 2, "epsilons")

    def test_p_mean_variance(self):
        with ld.Schedule.linear(1000) as s, ld.Model(lambda x, t: x, 2, "x0") as m:
            xt = [[0.5, -0.5], [2.0, 0.25]]
            mo = [[0.75, -3.0], [0.1, 0.2]]
            t = [10, 0]
            mean, logvar, x0 = (flat(a) for a in ld.p_mean_variance(m, s, xt, t, mo))
            self.assertEqual(x0, [0.75, -3.0, f32(0.1), f32(0.2)])
            c1, c2 = flat(s.table("posterior_mean_coef1")), flat(s.table("posterior_mean_coef2"))
            lv = flat(s.table("posterior_log_variance_clipped"))
            fx, fm = flat(xt), flat(mo)
            for i in range(4):
                tb = t[i // 2]
                self.assertEqual(mean[i], f32(c1[tb] * f32(fm[i]) + c2[tb] * f32(fx[i])))
                self.assertEqual(logvar[i], f32(lv[tb]))
            m.set("clip_x0", 1)
            _, _, x0c = ld.p_mean_variance(m, s, xt, t, mo)
            self.assertEqual(flat(x0c), [0.75, -1.0, f32(0.1), f32(0.2)])
            self.assertDiffuseError(ld.DIFFUSE_ENUMERIC, ld.p_mean_variance, m, s, xt, t,
                                    [[0.0, float("nan")], [0.0, 0.0]], contains="sample 0")
            self.assertDiffuseError(ld.DIFFUSE_EINVAL, ld.p_mean_variance, m, s, xt, [1000, 0],
                                    mo)
            with self.assertRaises(ValueError):
                ld.p_mean_variance(m, s, xt, t, [0.0] * 3)
            with self.assertRaises(ValueError):
                ld.p_mean_variance(m, s, [0.0] * 6, t, mo)  # rows of 3, model dim 2


# ---------------------------------------------------------------------------
# Samplers
# ---------------------------------------------------------------------------

class SamplerTest(Base):
    MU = [0.5, -1.0, 2.0]
    SD = [0.6, 1.0, 1.5]

    @classmethod
    def setUpClass(cls):
        cls.betas, cls.abar = linear_reference_abar()

    def oracle(self):
        return GaussianOracle(self.MU, self.SD, self.abar)

    def _affine_map_check(self):
        # With x_T given and eta = 0, DDIM is deterministic and, under the
        # Gaussian oracle, affine per dimension: x0 = A x_T + B, with A and
        # B from GaussianOracle.chain in double.  Tolerance 2e-5 (1 + |x|):
        # 50 float32 steps.
        o = self.oracle()
        fn = o.numpy_fn if ld._np is not None else o.list_fn
        with ld.Schedule.linear(1000) as base, base.respace("ddim50") as s, \
                ld.Model(fn, 3) as m, ld.Sampler(s, m, "ddim", 64) as smp:
            kept = [int(v) for v in s.timesteps()]
            x_T = [[-3.0 + 6.0 * (3 * b + d) / 191 for d in range(3)] for b in range(64)]
            x0 = smp.run(x_T, seed=5)
            if ld._np is not None:
                self.assertEqual((x0.shape, x0.dtype), ((64, 3), np.float32))
            else:
                self.assertEqual((type(x0), len(x0)), (array.array, 64 * 3))
            x0 = flat(x0)
            self.assertEqual(o.calls, 50)
            self.assertEqual(o.seen_t, kept[::-1], "the model sees original indices")
            for d, (A, B, V) in enumerate(o.chain(kept, "ddim")):
                for b in range(64):
                    want = A * f32(x_T[b][d]) + B
                    self.assertLess(abs(x0[3 * b + d] - want), 2e-5 * (1 + abs(want)),
                                    f"dim {d} row {b}")

    @needs_numpy
    def test_ddim_gaussian_oracle_is_the_exact_affine_map(self):
        self._affine_map_check()

    def test_ddim_gaussian_oracle_is_the_exact_affine_map_without_numpy(self):
        with no_numpy():
            self._affine_map_check()

    def test_thread_count_does_not_change_results(self):
        # batch * dim >= 4096 takes the parallel loops of an OpenMP build;
        # results must be bit-identical for 1 and 3 threads (and without
        # OpenMP the setting is accepted and has no effect).
        o = self.oracle()
        fn = o.numpy_fn if HAVE_NUMPY else o.list_fn
        with ld.Schedule.linear(1000) as base, base.respace("ddim5") as s, \
                ld.Model(fn, 3) as m, ld.Sampler(s, m, "ddpm", 2000) as smp:
            smp.set("num_threads", 1)
            one = flat(smp.run(seed=6, batch=2000))
            smp.set("num_threads", 3)
            three = flat(smp.run(seed=6, batch=2000))
            self.assertEqual(one, three, f"OpenMP: {ld.has_openmp()}")

    @needs_numpy
    def test_ddim_gaussian_oracle_sample_moments(self):
        # Noise from the generator (x_T = None).  The samples of dimension d
        # are N(B_d, A_d^2): mean within 5 SE = 5 A / sqrt(n), variance ratio
        # within 5 sqrt(2 / (n - 1)).  The chain's own bias is checked
        # against the data law separately: at 50 DDIM steps of this schedule
        # A / sd is within 6% of 1 and |B - mu| < 0.03 sd (derived, in double).
        seed, n = 12345, 4096
        o = self.oracle()
        with ld.Schedule.linear(1000) as base, base.respace("ddim50") as s, \
                ld.Model(o.numpy_fn, 3) as m, ld.Sampler(s, m, ld.SAMPLER_DDIM, n) as smp:
            kept = [int(v) for v in s.timesteps()]
            x0 = smp.run(seed=seed, batch=n).astype(np.float64)
            for d, (A, B, V) in enumerate(o.chain(kept, "ddim")):
                sd, mu = self.SD[d], self.MU[d]
                self.assertLess(abs(A / sd - 1), 0.06, f"dim {d}: A {A} sd {sd}")
                self.assertLess(abs(B - mu), 0.03 * sd, f"dim {d}: B {B} mu {mu}")
                mean, var = x0[:, d].mean(), x0[:, d].var(ddof=1)
                self.assertLess(abs(mean - B), 5 * abs(A) / math.sqrt(n),
                                f"seed {seed} dim {d}: mean {mean}, expected {B}")
                self.assertLess(abs(var / (A * A) - 1), 5 * math.sqrt(2 / (n - 1)),
                                f"seed {seed} dim {d}: var {var}, expected {A * A}")

    @needs_numpy
    def test_ddpm_gaussian_oracle_sample_moments(self):
        # DDPM with the posterior variance: x0 ~ N(B, A^2 + V) per dimension.
        seed, n = 777, 4096
        o = self.oracle()
        with ld.Schedule.linear(1000) as base, base.respace("100") as s, \
                ld.Model(o.numpy_fn, 3) as m, ld.Sampler(s, m, "ddpm", n) as smp:
            kept = [int(v) for v in s.timesteps()]
            x0 = smp.run(seed=seed, batch=n).astype(np.float64)
            for d, (A, B, V) in enumerate(o.chain(kept, "ddpm")):
                tot = A * A + V
                mean, var = x0[:, d].mean(), x0[:, d].var(ddof=1)
                self.assertLess(abs(mean - B), 5 * math.sqrt(tot / n),
                                f"seed {seed} dim {d}: mean {mean}, expected {B}")
                self.assertLess(abs(var / tot - 1), 5 * math.sqrt(2 / (n - 1)),
                                f"seed {seed} dim {d}: var {var}, expected {tot}")

    def test_run_reproducible_and_batch_invariant(self):
        o = self.oracle()
        fn = o.numpy_fn if HAVE_NUMPY else o.list_fn
        with ld.Schedule.linear(1000) as base, base.respace("ddim10") as s, \
                ld.Model(fn, 3) as m, ld.Sampler(s, m, "ddpm", 4) as smp:
            a = flat(smp.run(seed=3, first_sample=10, batch=4))
            self.assertEqual(a, flat(smp.run(seed=3, first_sample=10, batch=4)))
            row2 = flat(smp.run(seed=3, first_sample=12, batch=1))
            self.assertEqual(row2, a[6:9])
            self.assertNotEqual(a, flat(smp.run(seed=4, first_sample=10, batch=4)))
            E = ld.DIFFUSE_EINVAL
            self.assertDiffuseError(E, smp.run, seed=1, batch=5, contains="max_batch")
            self.assertDiffuseError(E, smp.run, seed=1, batch=0)
            self.assertDiffuseError(E, smp.run, seed=1, first_sample=(1 << 64) - 1, batch=2,
                                    contains="overflow")
            with self.assertRaises(ValueError):
                smp.run([0.0] * 7)  # not rows of dim 3
            with self.assertRaises(ValueError):
                smp.run([0.0] * 6, batch=3)

    def test_step_matches_run(self):
        o = self.oracle()
        fn = o.numpy_fn if HAVE_NUMPY else o.list_fn
        with ld.Schedule.linear(1000) as base, base.respace([0, 400, 999]) as s, \
                ld.Model(fn, 3) as m, ld.Sampler(s, m, "ddpm", 2) as smp:
            x_T = [[0.3, -0.2, 1.5], [2.0, 0.0, -1.0]]
            full = flat(smp.run(x_T, seed=8, first_sample=4))
            x = x_T
            for t in (2, 1, 0):
                x = smp.step(x, t, seed=8, first_sample=4)
            self.assertEqual(flat(x), full)
            self.assertDiffuseError(ld.DIFFUSE_EINVAL, smp.step, x_T, 3, contains="t = 3")
            self.assertDiffuseError(ld.DIFFUSE_EINVAL, smp.step, x_T, -1)

    @needs_numpy
    def test_invert_is_the_exact_affine_map_and_round_trips(self):
        o = self.oracle()
        with ld.Schedule.linear(1000) as base, base.respace("ddim100") as s, \
                ld.Model(o.numpy_fn, 3) as m, ld.Sampler(s, m, "ddim", 8) as smp:
            kept = [int(v) for v in s.timesteps()]
            calls = []
            smp.set_progress(lambda step, total: calls.append((step, total)))
            x0 = np.array(self.MU, np.float32) + np.linspace(-1, 1, 24, dtype=np.float32) \
                .reshape(8, 3) * np.array(self.SD, np.float32)
            x_T = smp.invert(x0)
            self.assertEqual(calls, [(k, 99) for k in range(1, 100)])
            self.assertEqual(o.seen_t, kept[:-1], "inversion visits steps 0 .. T-2")
            # Tolerance 2e-5 (1 + |x|): 99 float32 steps of an affine map.
            for d, (A, B) in enumerate(o.invert_chain(kept)):
                want = A * x0[:, d].astype(np.float64) + B
                err = np.abs(x_T[:, d] - want).max()
                self.assertLess(err, 2e-5 * (1 + np.abs(want).max()), f"dim {d}")
            back = smp.run(x_T)
            # Sampling the inverted noise returns x0 up to the discretization
            # mismatch of the two first-order chains: 0.1 at 100 steps (the
            # exact maps give 0.047 here).
            self.assertLess(np.abs(back - x0).max(), 0.1)

    def test_parameters(self):
        with ld.Schedule.cosine(10) as s, ld.Model(lambda x, t: x, 2) as m:
            with ld.Sampler(s, m, "ddim", 1) as smp:
                self.assertEqual(smp.get("eta"), 0.0)
                smp.set("eta", 0.5)
                self.assertEqual(smp.get(ld.SAMPLER_ETA), 0.5)
                smp.set(ld.SAMPLER_NUM_THREADS, 2)
                self.assertEqual(smp.get("num_threads"), 2.0)
                E = ld.DIFFUSE_EINVAL
                self.assertDiffuseError(E, smp.set, "eta", 1.5, contains="ETA")
                self.assertDiffuseError(E, smp.set, "num_threads", 1.5)
                self.assertDiffuseError(E, smp.set, 77, 0, contains="unknown parameter 77")
                self.assertDiffuseError(E, smp.get, 77, contains="unknown parameter 77")
                self.assertGreater(smp.memory, 0)
            with ld.Sampler(s, m, ld.SAMPLER_DDPM, 1) as smp:
                self.assertDiffuseError(ld.DIFFUSE_EINVAL, smp.set, "eta", 0.5,
                                        contains="DDIM")
                self.assertDiffuseError(ld.DIFFUSE_EINVAL, smp.set, "lambda_min", -5.1,
                                        contains="DPM-Solver++")
            with ld.Sampler(s, m, "dpmpp_2m", 1) as smp:
                self.assertEqual(smp.kind, ld.SAMPLER_DPMPP_2M)
                self.assertEqual(smp.get("lambda_min"), float("-inf"))
                smp.set("lambda_min", -5.1)
                self.assertEqual(smp.get(ld.SAMPLER_LAMBDA_MIN), -5.1)
                self.assertDiffuseError(ld.DIFFUSE_EINVAL, smp.set, "lambda_min", float("nan"))
                self.assertDiffuseError(ld.DIFFUSE_EINVAL, smp.step, [0.0, 0.0], 3, seed=1,
                                        contains="multistep")
            self.assertDiffuseError(ld.DIFFUSE_EINVAL, ld.Sampler, s, m, 99, 1,
                                    contains="unknown sampler kind 99")
            self.assertDiffuseError(ld.DIFFUSE_EINVAL, ld.Sampler, s, m, "ddim", 0)
            with self.assertRaises(ValueError):
                ld.Sampler(s, m, "euler_x", 1)
        with ld.Schedule.cosine(10) as s, s.rescale_zero_snr() as z, \
                ld.Model(lambda x, t: x, 2) as m:
            self.assertDiffuseError(ld.DIFFUSE_EINVAL, ld.Sampler, z, m, "ddim", 1)

    def test_progress_callback_and_cancel(self):
        with ld.Schedule.linear(1000) as base, base.respace("ddim10") as s, \
                ld.Model(lambda x, t: [[0.0] * 2 for _ in range(len(x))], 2) as m, \
                ld.Sampler(s, m, "ddim", 2) as smp:
            calls = []
            smp.set_progress(lambda step, total: calls.append((step, total)))
            smp.run(seed=1, batch=2)
            self.assertEqual(calls, [(k, 10) for k in range(1, 11)])
            for ret, code in ((True, 1), (5, 5), (-3, -3)):
                smp.set_progress(lambda step, total, r=ret: r if step == 4 else None)
                e = self.assertDiffuseError(ld.DIFFUSE_ECANCELED, smp.run, seed=1, batch=2,
                                            contains=f"returned {code}")
                self.assertIn("step 4 of 10", e.message)
            smp.set_progress(lambda step, total: False)
            smp.run(seed=1, batch=2)
            smp.set_progress(lambda step, total: "stop")
            with self.assertRaises(TypeError):
                smp.run(seed=1, batch=2)
            smp.set_progress(None)
            smp.run(seed=1, batch=2)
            with self.assertRaises(TypeError):
                smp.set_progress(5)

    def test_progress_exception_propagates(self):
        class Stop(BaseException):  # not an Exception: BaseException is caught too
            pass

        with ld.Schedule.linear(1000) as base, base.respace("ddim10") as s, \
                ld.Model(lambda x, t: [[0.0] * 2 for _ in range(len(x))], 2) as m, \
                ld.Sampler(s, m, "ddim", 2) as smp:
            def progress(step, total):
                if step == 3:
                    raise Stop(step)
            smp.set_progress(progress)
            with self.assertRaises(Stop) as cm:
                smp.run(seed=1, batch=2)
            self.assertEqual(cm.exception.args, (3,))
            self.assertIn(f"returned {ld.CALLBACK_EXCEPTION}", ld.last_error())
            smp.set_progress(None)
            smp.run(seed=1, batch=2)  # usable afterwards

    def test_model_exception_propagates_and_sampler_recovers(self):
        class ModelFailure(Exception):
            pass

        state = {"n": 0, "fail_at": 3}

        def fn(x, t):
            state["n"] += 1
            if state["n"] == state["fail_at"]:
                raise ModelFailure(f"call {state['n']}")
            return [[0.0] * 2 for _ in range(len(x))]

        with ld.Schedule.linear(1000) as base, base.respace("ddim10") as s, \
                ld.Model(fn, 2) as m, ld.Sampler(s, m, "ddim", 2) as smp:
            with self.assertRaises(ModelFailure) as cm:
                smp.run(seed=1, batch=2)
            self.assertEqual(str(cm.exception), "call 3")
            self.assertEqual(state["n"], 3, "the run stopped at the failing call")
            state["fail_at"] = -1
            smp.run(seed=1, batch=2)
            with self.assertRaises(ZeroDivisionError):
                ld.Sampler(s, ld.Model(lambda x, t: 1 / 0, 2), "ddpm", 1).step([0.0, 0.0], 5)

    def test_keyboard_interrupt_in_model_propagates(self):
        def fn(x, t):
            local_marker = "kept"  # noqa: F841 -- the user's frame keeps its locals
            raise KeyboardInterrupt

        with ld.Schedule.cosine(10) as s, ld.Model(fn, 2) as m, \
                ld.Sampler(s, m, "ddim", 1) as smp:
            try:
                smp.run(seed=1)
            except KeyboardInterrupt as e:
                caught = e
            else:
                self.fail("KeyboardInterrupt was not raised")
        names, user_locals = [], None
        tb = caught.__traceback__
        while tb is not None:
            code = tb.tb_frame.f_code.co_name
            names.append(code)
            if code == "_model_call":
                self.assertEqual(tb.tb_frame.f_locals, {}, "views of library memory dropped")
            if code == "fn":
                user_locals = dict(tb.tb_frame.f_locals)
            tb = tb.tb_next
        self.assertIn("_model_call", names)
        self.assertEqual(user_locals.get("local_marker"), "kept")

    @unittest.skipUnless(hasattr(os, "kill") and hasattr(signal, "SIGINT"), "needs os.kill")
    def test_ctrl_c_during_a_run_raises_keyboard_interrupt(self):
        # In a subprocess: SIGINT arrives while the library computes (large
        # dim, numpy) or while the Python model runs (sleep).  Without the
        # binding's deferral, a signal handled at a trampoline's first
        # bytecode is printed as "Exception ignored on calling ctypes callback
        # function" and lost.
        code = textwrap.dedent("""
            import os, signal, sys, threading, time
            # a shell's background job inherits SIGINT ignored: start from
            # Python's own handler, as an interactive program has it
            signal.signal(signal.SIGINT, signal.default_int_handler)
            sys.path.insert(0, sys.argv[1])
            import libdiffuse as ld
            heavy = ld._np is not None
            def fn(x, t):
                if heavy:
                    return ld._np.zeros_like(x)
                time.sleep(0.0005)
                return [[0.0] * len(x[0]) for _ in x]
            dim = 20000 if heavy else 2
            s = ld.Schedule.cosine(1000)
            smp = ld.Sampler(s, ld.Model(fn, dim), "ddpm", 16)
            res = []
            for delay in (0.05, 0.1, 0.15):
                threading.Timer(delay, lambda: os.kill(os.getpid(), signal.SIGINT)).start()
                try:
                    smp.run(seed=1, batch=16)
                    res.append("finished")
                except KeyboardInterrupt:
                    res.append("KeyboardInterrupt")
                time.sleep(0.05)
            print(res, signal.getsignal(signal.SIGINT) is signal.default_int_handler)
        """)
        env = dict(os.environ, LIBDIFFUSE_PATH=ld._path)
        p = subprocess.run([sys.executable, "-c", code, PYDIR], env=env, capture_output=True,
                           text=True, timeout=120)
        self.assertEqual(p.returncode, 0, p.stdout + p.stderr)
        self.assertEqual(p.stdout.strip(), str(["KeyboardInterrupt"] * 3) + " True",
                         p.stdout + p.stderr)
        self.assertNotIn("Exception ignored", p.stderr)

    def test_model_output_checks(self):
        with ld.Schedule.cosine(10) as s:
            with ld.Model(lambda x, t: [0.0], 2) as m, ld.Sampler(s, m, "ddpm", 2) as smp:
                with self.assertRaises(ValueError) as cm:
                    smp.run(seed=1, batch=2)
                self.assertIn("shape (1,); expected (2, 2) (batch, output_dim)",
                              str(cm.exception))
            nan = [[float("nan"), 0.0]]
            with ld.Model(lambda x, t: nan, 2) as m, ld.Sampler(s, m, "ddpm", 1) as smp:
                e = self.assertDiffuseError(ld.DIFFUSE_ENUMERIC, smp.run, seed=1,
                                            contains="element 0")
                self.assertIn("step 1 of 10", e.message)

    def test_learned_variance_output(self):
        def fn(x, t):  # eps = 0, log-variance = log(beta)-ish constant
            return [[0.0] * 2 + [-5.0] * 2 for _ in range(len(x))]

        with ld.Schedule.cosine(10) as s, ld.Model(fn, 2, "eps", "learned") as m, \
                ld.Sampler(s, m, "ddpm", 3) as smp:
            self.assertEqual(m.output_dim, 4)
            self.assertEqual(len(flat(smp.run(seed=2, batch=3))), 6)

    @needs_numpy
    def test_callback_sees_read_only_views(self):
        seen = {}

        def fn(x, t):
            seen.update(shape=x.shape, dtype=x.dtype, tdtype=t.dtype, writeable=x.flags.writeable,
                        twriteable=t.flags.writeable, t=t.copy())
            return np.zeros_like(x)

        with ld.Schedule.linear(1000) as base, base.respace([7, 999]) as s, \
                ld.Model(fn, 5) as m, ld.Sampler(s, m, "ddim", 3) as smp:
            smp.step(np.zeros((3, 5), np.float32), 0)
        self.assertEqual((seen["shape"], seen["dtype"], seen["tdtype"]),
                         ((3, 5), np.float32, np.int32))
        self.assertFalse(seen["writeable"])
        self.assertFalse(seen["twriteable"])
        self.assertEqual(seen["t"].tolist(), [7, 7, 7], "original training index")

    def test_reentrant_call_from_callback_is_refused(self):
        holder = {}

        def fn(x, t):
            holder["smp"].run(seed=1)  # same sampler: the library refuses
            return [[0.0] * 2]

        with ld.Schedule.cosine(10) as s, ld.Model(fn, 2) as m, \
                ld.Sampler(s, m, "ddpm", 1) as smp:
            holder["smp"] = smp
            self.assertDiffuseError(ld.DIFFUSE_EINVAL, smp.run, seed=1,
                                    contains="from inside one of this handle's callbacks")

    def test_other_handle_from_callback_is_allowed(self):
        with ld.Schedule.cosine(10) as s, \
                ld.Model(lambda x, t: [[0.0] * 2 for _ in x], 2) as inner_m, \
                ld.Sampler(s, inner_m, "ddpm", 1) as inner:
            def fn(x, t):
                inner.run(seed=9)
                return [[0.0] * 2 for _ in x]

            with ld.Model(fn, 2) as m, ld.Sampler(s, m, "ddpm", 1) as smp:
                smp.run(seed=1)

    def test_close_from_inside_callback_is_refused(self):
        holder = {}

        def progress(step, total):
            holder["smp"].close()

        with ld.Schedule.cosine(10) as s, ld.Model(lambda x, t: [[0.0] * 2], 2) as m, \
                ld.Sampler(s, m, "ddpm", 1) as smp:
            holder["smp"] = smp
            smp.set_progress(progress)
            with self.assertRaises(RuntimeError):
                smp.run(seed=1)
            self.assertFalse(smp.closed)

    def test_changing_the_sampler_inside_its_own_callback_is_refused(self):
        # The library refuses diffuse_sampler_set and _set_progress from
        # inside one of the sampler's own callbacks (the header says so): the
        # DiffuseError raised in the callback stops the run and is re-raised,
        # and the callback registered before stays registered and alive.
        seen, meddle = [], {"set_progress": True, "set": True}
        with ld.Schedule.cosine(10) as s, ld.Model(lambda x, t: [[0.0] * 2], 2) as m, \
                ld.Sampler(s, m, "ddim", 1) as smp:
            def first(step, total):
                seen.append(step)
                if step == 2 and meddle["set_progress"]:
                    meddle["set_progress"] = False
                    smp.set_progress(lambda st, to: None)
                if step == 3 and meddle["set"]:
                    meddle["set"] = False
                    smp.set("eta", 1.0)

            smp.set_progress(first)
            self.assertDiffuseError(ld.DIFFUSE_EINVAL, smp.run, seed=1,
                                    contains="from inside one of this handle's callbacks")
            self.assertEqual(seen, [1, 2])
            gc.collect()  # the registered CFUNCTYPE must survive the refused replacement
            e = self.assertDiffuseError(ld.DIFFUSE_EINVAL, smp.run, seed=1,
                                        contains="from inside one of this handle's callbacks")
            self.assertTrue(e.message.startswith("diffuse_sampler_set:"), e.message)
            self.assertEqual(smp.get("eta"), 0.0, "unchanged")
            smp.run(seed=1)
            self.assertEqual(seen, [1, 2, 1, 2, 3] + list(range(1, 11)))

    def test_no_free_ordering(self):
        # The sampler copies the schedule and model; the binding keeps the
        # callback alive, so both may go first.
        calls = []

        def fn(x, t):
            calls.append(1)
            return [[0.0] * 2 for _ in x]

        s = ld.Schedule.cosine(10)
        m = ld.Model(fn, 2)
        smp = ld.Sampler(s, m, "ddim", 2)
        s.close()
        del m, fn
        gc.collect()
        out = flat(smp.run(seed=1, batch=2))
        self.assertEqual(len(out), 4)
        self.assertEqual(len(calls), 10)
        smp.close()
        with self.assertRaises(ValueError):
            smp.run(seed=1)

    def test_threads_share_a_model(self):
        # One Model, two samplers used from two threads: each run gets its
        # own result, and an exception in one thread stays in that thread.
        class Odd(Exception):
            pass

        def fn(x, t):
            if threading.current_thread().name == "failing":
                raise Odd()
            return [[0.0] * 2 for _ in x]

        results = {}
        with ld.Schedule.linear(50) as s, ld.Model(fn, 2) as m:
            samplers = {"ok": ld.Sampler(s, m, "ddpm", 1), "failing": ld.Sampler(s, m, "ddpm", 1)}

            def work(name):
                try:
                    for _ in range(20):
                        samplers[name].run(seed=1)
                    results[name] = "done"
                except Odd:
                    results[name] = "Odd"

            ths = [threading.Thread(target=work, args=(n,), name=n) for n in samplers]
            for th in ths:
                th.start()
            for th in ths:
                th.join()
            for smp in samplers.values():
                smp.close()
        self.assertEqual(results, {"ok": "done", "failing": "Odd"})


# ---------------------------------------------------------------------------
# Variational bound
# ---------------------------------------------------------------------------

class VlbTest(Base):

    def _perfect_x0_model(self, x0_rows):
        """An x0-predicting model that knows the data (rows in order)."""
        def fn(x, t):
            return x0_rows[:len(x)]
        return fn

    def test_vlb_run_with_a_perfect_x0_model(self):
        x0 = [[-1.0, 1.0, 0.0 + 1 / 127.5], [0.5 + 0.5 / 127.5, -0.2 + 0.2 / 127.5, 1.0]]
        x0 = [[f32(round((v + 1) * 127.5) / 127.5 - 1) for v in row] for row in x0]
        with ld.Schedule.linear(1000) as base, base.respace("ddim20") as s, \
                ld.Model(self._perfect_x0_model(x0), 3, "x0") as m, \
                ld.Vlb(s, m, 2) as v:
            r = v.run(x0, seed=4)
            T = 20
            total, prior = flat(r.total), flat(r.prior)
            terms, x0_mse = flat(r.terms), flat(r.x0_mse)
            self.assertEqual((len(total), len(prior), len(terms), len(x0_mse), len(flat(r.eps_mse))),
                             (2, 2, 2 * T, 2 * T, 2 * T))
            if HAVE_NUMPY:
                self.assertEqual(r.terms.shape, (2, T))
                self.assertEqual(r.total.shape, (2,))
            self.assertClose(prior, ld.prior_bpd(s, x0), rtol=1e-12, what="prior")
            for b in range(2):
                row = terms[b * T:(b + 1) * T]
                self.assertClose([total[b]], [math.fsum(row) + prior[b]], rtol=1e-12,
                                 what="total")
                # KL terms vanish for the exact posterior mean (float32 x0 only).
                self.assertLess(max(abs(v) for v in row[1:]), 1e-6, row)
                self.assertGreater(row[0], 0.0)  # the decoder NLL
                self.assertEqual(max(x0_mse[b * T:(b + 1) * T]), 0.0)

    def test_vlb_parameters_progress_and_errors(self):
        zeros = lambda x, t: [[0.0] * 2 for _ in x]  # noqa: E731
        with ld.Schedule.linear(1000) as base, base.respace("ddim10") as s, \
                ld.Model(zeros, 2) as m, ld.Vlb(s, m, 2) as v:
            self.assertEqual(v.get("cdf"), ld.CDF_TANH)
            v.set("cdf", ld.CDF_EXACT)
            self.assertEqual(v.get(ld.VLB_CDF), 1.0)
            v.set("num_threads", 1)
            self.assertEqual(v.get(ld.VLB_NUM_THREADS), 1.0)
            E = ld.DIFFUSE_EINVAL
            self.assertDiffuseError(E, v.set, "cdf", 3)
            self.assertDiffuseError(E, v.set, 42, 0, contains="unknown parameter 42")
            self.assertDiffuseError(E, v.get, 42)
            x0 = [[0.0, 0.0]]
            calls = []
            v.set_progress(lambda step, total: calls.append(step) or step == 2)
            self.assertDiffuseError(ld.DIFFUSE_ECANCELED, v.run, x0, contains="returned 1")
            self.assertEqual(calls, [1, 2])
            v.set_progress(lambda step, total: 1 / 0)
            with self.assertRaises(ZeroDivisionError):
                v.run(x0)
            v.set_progress(None)
            r = v.run(x0, seed=1, first_sample=3)
            self.assertEqual(flat(r.total), flat(v.run(x0, seed=1, first_sample=3).total))
            self.assertDiffuseError(E, v.run, [[0.0, 0.0]] * 3, contains="max_batch")
            with self.assertRaises(ValueError):
                v.run([0.0] * 3)
        self.assertDiffuseError(ld.DIFFUSE_EINVAL, ld.Vlb, ld.Schedule.cosine(10),
                                ld.Model(zeros, 2), 0)

    def test_vlb_model_exception(self):
        class Bad(Exception):
            pass

        def fn(x, t):
            raise Bad("vlb")

        with ld.Schedule.cosine(10) as s, ld.Model(fn, 2) as m, ld.Vlb(s, m, 1) as v:
            with self.assertRaises(Bad):
                v.run([[0.0, 0.0]])


# ---------------------------------------------------------------------------
# Reference nets, training and checkpoints
# ---------------------------------------------------------------------------

MIX_MEANS = [(0.0, 2.0), (-1.7320508, -1.0), (1.7320508, -1.0)]
MIX_SD = 0.2


def mixture_batch(rng, n):
    """n rows of a 2-D mixture of three equally weighted N(mean, 0.2^2 I),
    drawn with the random.Random rng: a float32 array with numpy, rows without."""
    rows = []
    for _ in range(n):
        mx, my = MIX_MEANS[rng.randrange(3)]
        rows.append([mx + MIX_SD * rng.gauss(0.0, 1.0), my + MIX_SD * rng.gauss(0.0, 1.0)])
    return np.array(rows, np.float32) if ld._np is not None else rows


def same_bits(a, b):
    """Equal as float32 bit patterns (numpy: array_equal and the same bytes)."""
    if ld._np is not None and HAVE_NUMPY:
        a, b = np.asarray(a, np.float32), np.asarray(b, np.float32)
        return bool(np.array_equal(a, b)) and a.tobytes() == b.tobytes()
    return array.array("f", flat(a)).tobytes() == array.array("f", flat(b)).tobytes()


def mlp_reference(params, x, t, dim, width, depth, emb_dim, out_dim):
    """The header's MLP in float64 numpy from a flat parameter vector in the
    documented order, with Improved DDPM's timestep_embedding."""
    P = np.asarray(params, np.float64)
    pos = [0]

    def linear(n_in, n_out):
        w = P[pos[0]:pos[0] + n_in * n_out].reshape(n_out, n_in)
        b = P[pos[0] + n_in * n_out:pos[0] + n_in * n_out + n_out]
        pos[0] += n_in * n_out + n_out
        return lambda v: v @ w.T + b

    silu = lambda v: v / (1.0 + np.exp(-v))  # noqa: E731
    t1, t2, lin_in = linear(emb_dim, width), linear(width, width), linear(dim, width)
    blocks = [(linear(width, width), linear(width, width)) for _ in range(depth)]
    lin_out = linear(width, out_dim)
    assert pos[0] == P.size, (pos[0], P.size)
    half = emb_dim // 2
    freqs = np.exp(-math.log(10000.0) * np.arange(half) / half)
    args = np.asarray(t, np.float64)[:, None] * freqs[None]
    emb = np.concatenate([np.cos(args), np.sin(args)], axis=1)
    if emb_dim % 2:
        emb = np.concatenate([emb, np.zeros((len(t), 1))], axis=1)
    h = lin_in(np.asarray(x, np.float64)) + t2(silu(t1(emb)))
    for a, b in blocks:
        h = h + b(silu(a(silu(h))))
    return lin_out(silu(h))


class NetTest(Base):

    def test_create_attributes_and_params(self):
        with ld.Net.mlp(3, width=16, depth=1, emb_dim=8, max_batch=5, seed=7) as net:
            self.assertEqual((net.dim, net.output_dim, net.width, net.depth, net.emb_dim,
                              net.max_batch), (3, 3, 16, 1, 8, 5))
            self.assertEqual((net.prediction, net.variance), (ld.PRED_EPS, ld.VAR_FIXED_SMALL))
            W, E, D = 16, 8, 3
            P = W * E + W + W * W + W + W * D + W + 2 * (W * W + W) + D * W + D
            self.assertEqual(net.param_count, P)
            self.assertIn(f"params={P}", repr(net))
            w = net.get_params()
            ema = net.get_params(ld.NET_EMA)
            self.assertEqual(len(w), P)
            if HAVE_NUMPY:
                self.assertEqual((w.dtype, w.shape), (np.float32, (P,)))
            self.assertTrue(same_bits(w, ema), "the EMA starts as a copy of the weights")
            self.assertTrue(same_bits(w, net.get_params("weights")))
            vals = flat(w)
            # PyTorch's Linear initialization: U(+-1/sqrt(in)); the first
            # Linear (time embedding, in = emb_dim) is first, weight then bias.
            first = vals[:W * E + W]
            self.assertLessEqual(max(abs(v) for v in first), 1 / math.sqrt(E))
            self.assertGreater(max(abs(v) for v in first), 0.9 / math.sqrt(E))
            second = vals[W * E + W:W * E + W + W * W + W]
            self.assertLessEqual(max(abs(v) for v in second), 1 / math.sqrt(W))
            with ld.Net.mlp(3, width=16, depth=1, emb_dim=8, max_batch=5, seed=7) as again, \
                    ld.Net.mlp(3, width=16, depth=1, emb_dim=8, max_batch=5, seed=8) as other:
                self.assertTrue(same_bits(again.get_params(), w), "same seed, same weights")
                self.assertFalse(same_bits(other.get_params(), w))
            # set_params: lists or arrays; the EMA separately
            new = [0.001 * (i % 17) for i in range(P)]
            net.set_params(new)
            self.assertTrue(same_bits(net.get_params(), array.array("f", new)))
            self.assertTrue(same_bits(net.get_params("ema"), ema), "EMA untouched")
            net.set_params(w, "ema")
            net.set_params(array.array("f", flat(w)), ld.NET_WEIGHTS)
            self.assertTrue(same_bits(net.get_params(), net.get_params("ema")))
            net.set("num_threads", 1)
            net.set(ld.NET_NUM_THREADS, 0)
        with ld.Net.mlp(2, prediction="v", variance="learned_range", max_batch=1) as net:
            self.assertEqual((net.output_dim, net.prediction, net.variance), (4, ld.PRED_V, 3))
        self.assertIn("closed", repr(net))
        with self.assertRaises(ValueError):
            net.param_count
        with self.assertRaises(ValueError):
            ld.Net(None)

    def test_create_and_parameter_errors(self):
        E = ld.DIFFUSE_EINVAL
        self.assertDiffuseError(E, ld.Net.mlp, 0, contains="need dim")
        self.assertDiffuseError(E, ld.Net.mlp, 2, width=0)
        self.assertDiffuseError(E, ld.Net.mlp, 2, emb_dim=1, contains="emb_dim >= 2")
        self.assertDiffuseError(E, ld.Net.mlp, 2, depth=5000)
        self.assertDiffuseError(E, ld.Net.mlp, 2, prediction=7, contains="prediction kind 7")
        self.assertDiffuseError(E, ld.Net.mlp, 2, variance=9, contains="variance type 9")
        self.assertDiffuseError(E, ld.Net.mlp, 2, max_batch=0, contains="max_batch = 0")
        with self.assertRaises(ValueError):
            ld.Net.mlp(-1)
        with self.assertRaises(ValueError):
            ld.Net.mlp(2, prediction="noise")
        with ld.Net.mlp(2, width=8, depth=0, emb_dim=4, max_batch=3) as net:
            P = net.param_count
            before = flat(net.get_params())
            self.assertDiffuseError(E, net.get_params, 5, contains="unknown weights 5")
            self.assertDiffuseError(E, net.set_params, before, 2, contains="unknown weights 2")
            bad = list(before)
            bad[3] = float("nan")
            self.assertDiffuseError(E, net.set_params, bad, contains="parameter 3 is nan")
            bad[3] = float("inf")
            self.assertDiffuseError(E, net.set_params, bad, "ema", contains="parameter 3")
            self.assertEqual(flat(net.get_params()), before, "nothing changed")
            self.assertDiffuseError(E, net.set, 2, 1.0, contains="parameter 2 describes the net")
            self.assertDiffuseError(E, net.set, 99, 1.0, contains="unknown parameter 99")
            self.assertDiffuseError(E, net.set, "num_threads", 1.5, contains="NUM_THREADS")
            self.assertDiffuseError(E, net.set, "num_threads", -1)
            with self.assertRaises(ValueError):
                net.set_params(before[:-1])  # Python checks the size first
            with self.assertRaises(ValueError):
                net.set("threads", 1)
            # the C size check, reached only without the binding's own
            buf = (ctypes.c_float * P)()
            self.assertEqual(ld._f("diffuse_net_get_params")(net._h, 0, buf, P - 1), E)
            self.assertIn(f"but the net has {P} parameters", ld.last_error())
            self.assertEqual(ld._f("diffuse_net_set_params")(net._h, 0, buf, P + 1), E)
            self.assertEqual(ld._f("diffuse_net_param_count")(None), 0)

    def test_forward(self):
        with ld.Net.mlp(2, width=8, depth=1, emb_dim=6, max_batch=4, seed=3) as net:
            x = [[0.5, -1.0], [0.0, 0.25], [2.0, 1.0]]
            t = [0, 17, 999]
            out = net.forward(x, t)
            self.assertEqual(len(flat(out)), 6)
            if HAVE_NUMPY:
                self.assertEqual((out.shape, out.dtype), ((3, 2), np.float32))
                ref = mlp_reference(net.get_params(), x, t, 2, 8, 1, 6, 2)
                # float32 layers against float64: 1e-5 relative to the scale
                self.assertLess(np.abs(out - ref).max(), 1e-5 * (1 + np.abs(ref).max()),
                                (out, ref))
            self.assertEqual(flat(net.forward(x[1:2], 17)), flat(out)[2:4], "row independent")
            # float timesteps: integer values give the int32 forward's bits,
            # fractional ones the net at that real t (numpy, float64)
            self.assertEqual(flat(net.forward(x, [0.0, 17.0, 999.0])), flat(out))
            tf = [0.5, 17.25, 998.75]
            outf = net.forward(x, tf)
            self.assertNotEqual(flat(outf), flat(out))
            if HAVE_NUMPY:
                ref = mlp_reference(net.get_params(), x, tf, 2, 8, 1, 6, 2)
                self.assertLess(np.abs(outf - ref).max(), 1e-5 * (1 + np.abs(ref).max()),
                                (outf, ref))
                self.assertEqual(flat(net.forward(x, np.asarray(tf, np.float32))), flat(outf))
            self.assertEqual(flat(net.forward(x[1:2], 17.25)), flat(outf)[2:4])
            self.assertDiffuseError(ld.DIFFUSE_EINVAL, net.forward, x, [0.5, float("nan"), 1.0],
                                    contains="t[1] = nan")
            self.assertEqual(flat(net.forward(x, t, "ema")), flat(out), "EMA = weights at first")
            E = ld.DIFFUSE_EINVAL
            self.assertDiffuseError(E, net.forward, [[0.0, 0.0]] * 5, [1] * 5,
                                    contains="max_batch = 4")
            self.assertDiffuseError(E, net.forward, x, t, 3, contains="unknown weights 3")
            with self.assertRaises(ValueError):
                net.forward([0.0] * 3, [1])  # not rows of dim 2
            with self.assertRaises(ValueError):
                net.forward(x, [1, 2])  # t is not batch long
            out_ptr = (ctypes.c_float * 2)()
            xs = (ctypes.c_float * 2)()
            ts = (ctypes.c_int32 * 1)()
            self.assertEqual(ld._f("diffuse_net_forward")(net._h, 0, xs, ts, 0, out_ptr), E)
            self.assertIn("batch = 0", ld.last_error())
        with ld.Net.mlp(2, width=8, depth=1, emb_dim=7, variance="learned", max_batch=2,
                        seed=4) as net:
            out = net.forward([[0.1, 0.2], [0.3, 0.4]], [5, 6])
            self.assertEqual(len(flat(out)), 8)
            if HAVE_NUMPY:
                self.assertEqual(out.shape, (2, 4))
                ref = mlp_reference(net.get_params(), [[0.1, 0.2], [0.3, 0.4]], [5, 6], 2, 8,
                                    1, 7, 4)
                self.assertLess(np.abs(out - ref).max(), 1e-5 * (1 + np.abs(ref).max()))

    def test_model_runs_the_net_and_outlives_it(self):
        with ld.Schedule.linear(100) as base, base.respace("ddim10") as s:
            net = ld.Net.mlp(2, width=8, depth=1, emb_dim=4, max_batch=4, seed=5)
            # make the EMA differ from the weights
            net.set_params([0.5 * v for v in flat(net.get_params())], "ema")
            m = net.model("ema")
            self.assertEqual((m.dim, m.output_dim, m.prediction, m.variance, m.fn),
                             (2, 2, ld.PRED_EPS, ld.VAR_FIXED_SMALL, None))
            x_T = [[0.3, -0.2], [1.5, 2.0], [0.0, 0.1]]
            with ld.Model(lambda x, t, f=net.forward: f(x, t, "ema"), 2) as py_m, \
                    ld.Sampler(s, py_m, "ddim", 4) as smp:
                want = flat(smp.run(x_T, seed=2))
            with ld.Model(lambda x, t, f=net.forward: f(x, t), 2) as py_w, \
                    ld.Sampler(s, py_w, "ddim", 4) as smp:
                weights = flat(smp.run(x_T, seed=2))
            self.assertNotEqual(want, weights)
            # The model keeps the net alive: close and drop the Net object.
            net.close()
            del net, py_m, py_w
            gc.collect()
            with ld.Sampler(s, m, "ddim", 4) as smp:
                self.assertEqual(flat(smp.run(x_T, seed=2)), want, "the EMA weights, in C")
                m.close()  # and the sampler keeps its copy of the model
                gc.collect()
                self.assertEqual(flat(smp.run(x_T, seed=2)), want)
            with ld.Net.mlp(2, max_batch=2) as n2:
                self.assertDiffuseError(ld.DIFFUSE_EINVAL, n2.model, 2,
                                        contains="unknown weights 2")
                with n2.model() as m2, ld.Vlb(s, m2, 2) as v:
                    self.assertEqual(len(v.run([[0.0, 0.0]] * 2).total), 2)
                    with self.assertRaises(ValueError):
                        v.run([[0.0, 0.0]] * 3)

    def test_sampler_above_the_nets_max_batch_in_c(self):
        # A sampler or VLB evaluator may not take batches the net cannot.
        with ld.Schedule.cosine(10) as s, ld.Net.mlp(2, max_batch=2) as net, \
                net.model() as m:
            for make in (lambda: ld.Sampler(s, m, "ddpm", 4), lambda: ld.Vlb(s, m, 3)):
                self.assertDiffuseError(ld.DIFFUSE_EINVAL, make,
                                        contains="exceeds the 2 rows the model's net accepts")


def unet_reference(params, x, t, C, H, W, c, G, out_C):
    """The header's U-Net in float64 numpy from a flat parameter vector in
    the documented order: x [batch][C][H][W], t [batch]."""
    P = np.asarray(params, np.float64)
    pos = [0]
    E = 4 * c

    def take(*shape):
        n = int(np.prod(shape))
        v = P[pos[0]:pos[0] + n].reshape(shape)
        pos[0] += n
        return v

    def linear(n_in, n_out):
        w, b = take(n_out, n_in), take(n_out)
        return lambda v: v @ w.T + b

    def conv(n_in, n_out, stride=1):
        w, b = take(n_out, n_in, 3, 3), take(n_out)

        def f(v):
            B, _, h, wd = v.shape
            ho, wo = (h - 1) // stride + 1, (wd - 1) // stride + 1
            vp = np.pad(v, ((0, 0), (0, 0), (1, 1), (1, 1)))
            out = np.zeros((B, n_out, ho, wo)) + b[None, :, None, None]
            for ky in range(3):
                for kx in range(3):
                    patch = vp[:, :, ky:ky + stride * ho:stride, kx:kx + stride * wo:stride]
                    out += np.einsum("oc,bcij->boij", w[:, :, ky, kx], patch)
            return out
        return f

    def groupnorm(k):
        g, b = take(k), take(k)

        def f(v):
            B = v.shape[0]
            r = v.reshape(B, G, -1)
            r = (r - r.mean(axis=2, keepdims=True)) / np.sqrt(r.var(axis=2, keepdims=True) + 1e-5)
            return r.reshape(v.shape) * g[None, :, None, None] + b[None, :, None, None]
        return f

    silu = lambda v: v / (1.0 + np.exp(-v))  # noqa: E731

    def resblock(k):
        gn1, c1, lin, gn2, c2 = groupnorm(k), conv(k, k), linear(E, k), groupnorm(k), conv(k, k)

        def f(h, se):
            r = c1(silu(gn1(h))) + lin(se)[:, :, None, None]
            return h + c2(silu(gn2(r)))
        return f

    t1, t2 = linear(c, E), linear(E, E)
    inp, blk1, down = conv(C, c), resblock(c), conv(c, 2 * c, 2)
    blk2, up, blk3 = resblock(2 * c), conv(2 * c, c), resblock(c)
    out_gn, out = groupnorm(c), conv(c, out_C)
    assert pos[0] == P.size, (pos[0], P.size)
    half = c // 2
    freqs = np.exp(-math.log(10000.0) * np.arange(half) / half)
    args = np.asarray(t, np.float64)[:, None] * freqs[None]
    emb = np.concatenate([np.cos(args), np.sin(args)], axis=1)
    if c % 2:
        emb = np.concatenate([emb, np.zeros((len(t), 1))], axis=1)
    se = silu(t2(silu(t1(emb))))
    x = np.asarray(x, np.float64).reshape(-1, C, H, W)
    h1 = blk1(inp(x), se)
    h2 = blk2(down(h1), se)
    s_ = up(np.repeat(np.repeat(h2, 2, axis=2), 2, axis=3)) + h1
    return out(silu(out_gn(blk3(s_, se)))).reshape(x.shape[0], -1)


def unet_param_count(C, c, out_C):
    """The U-Net's parameter count from the header's list."""
    E = 4 * c

    def block(k):
        return 2 * k + (9 * k * k + k) + (E * k + k) + 2 * k + (9 * k * k + k)
    return ((c * E + E) + (E * E + E) + (9 * C * c + c) + block(c) + (9 * c * 2 * c + 2 * c) +
            block(2 * c) + (9 * 2 * c * c + c) + block(c) + 2 * c + (9 * c * out_C + out_C))


class UNetTest(Base):

    def test_create_attributes_and_params(self):
        with ld.Net.unet(2, 6, 4, base_channels=8, groups=4, max_batch=3, seed=5) as net:
            self.assertEqual(net.kind, "unet")
            self.assertEqual((net.channels, net.height, net.width_pixels, net.base_channels,
                              net.groups, net.dim, net.output_dim, net.emb_dim, net.max_batch),
                             (2, 6, 4, 8, 4, 48, 48, 8, 3))
            self.assertEqual((net.prediction, net.variance), (ld.PRED_EPS, ld.VAR_FIXED_SMALL))
            self.assertIsNone(net.width)
            self.assertIsNone(net.depth)
            P = unet_param_count(2, 8, 2)
            self.assertEqual(net.param_count, P)
            self.assertIn(f"params={P}", repr(net))
            self.assertIn("U-Net 2x6x4", repr(net))
            w = net.get_params()
            self.assertEqual(len(w), P)
            self.assertTrue(same_bits(w, net.get_params("ema")))
            vals = flat(w)
            # the first Linear (c -> 4c): U(+-1/sqrt(c)); then the second
            first = vals[:8 * 32 + 32]
            self.assertLessEqual(max(abs(v) for v in first), 1 / math.sqrt(8))
            self.assertGreater(max(abs(v) for v in first), 0.9 / math.sqrt(8))
            # the input conv (2 -> 8 channels): U(+-1/sqrt(18)); the first
            # ResBlock's GN gamma 1, beta 0
            at = 8 * 32 + 32 + 32 * 32 + 32
            conv_in = vals[at:at + 8 * 2 * 9 + 8]
            self.assertLessEqual(max(abs(v) for v in conv_in), 1 / math.sqrt(18))
            at += 8 * 2 * 9 + 8
            self.assertEqual(vals[at:at + 16], [1.0] * 8 + [0.0] * 8)
            with ld.Net.unet(2, 6, 4, base_channels=8, groups=4, max_batch=1, seed=5) as again:
                self.assertTrue(same_bits(again.get_params(), w), "same seed, same weights")
            with self.assertRaises(ld.DiffuseError):
                net.set(ld.NET_CHANNELS, 2)
            net.set("num_threads", 1)
        with ld.Net.unet(1, 4, 4, 4, 2, prediction="v", variance="learned_range",
                         max_batch=1) as net:
            self.assertEqual((net.output_dim, net.prediction, net.variance), (32, ld.PRED_V, 3))
            self.assertEqual(net.param_count, unet_param_count(1, 4, 2))
        with ld.Net.mlp(2, max_batch=1) as mlp:
            self.assertEqual(mlp.kind, "mlp")
            self.assertIsNone(mlp.channels)
            self.assertIsNone(mlp.groups)

    def test_iddpm_create_and_forward(self):
        opts = {"num_res_blocks": 1, "channel_mult": (1, 2), "attention_resolutions": (2,),
                "num_heads": 2, "groups": 4, "num_classes": 3, "time_scale": 0.25}
        with ld.Net.iddpm(1, 8, 8, 8, opts, variance="learned_range", max_batch=2,
                          seed=3) as net:
            self.assertEqual(net.kind, "iddpm")
            self.assertEqual((net.channels, net.model_channels, net.levels, net.num_heads,
                              net.num_heads_upsample, net.use_scale_shift_norm,
                              net.output_dim, net.classes),
                             (1, 8, 2, 2, 2, 1, 128, 3))
            self.assertIn("Improved DDPM U-Net 1x8x8", repr(net))
            out = net.forward([0.5] * 128, [3, 7])
            self.assertTrue(all(v == 0.0 for v in flat(out)), "zero-initialized output conv")
        self.assertDiffuseError(ld.DIFFUSE_EINVAL, ld.Net.iddpm, 1, 8, 8, 48,
                                contains="not divisible by")
        self.assertDiffuseError(ld.DIFFUSE_EINVAL, ld.Net.iddpm, 1, 8, 8, 32, "nope=1",
                                contains="unknown option 'nope'")

    def test_create_errors(self):
        E = ld.DIFFUSE_EINVAL
        self.assertDiffuseError(E, ld.Net.unet, 1, 5, 4, contains="even height and width")
        self.assertDiffuseError(E, ld.Net.unet, 0, 4, 4, contains="channels >= 1")
        self.assertDiffuseError(E, ld.Net.unet, 1, 4, 4, base_channels=6, groups=4,
                                contains="does not divide")
        self.assertDiffuseError(E, ld.Net.unet, 1, 4, 4, base_channels=0)
        self.assertDiffuseError(E, ld.Net.unet, 1, 4, 4, 4, 2, prediction=5,
                                contains="prediction kind 5")
        self.assertDiffuseError(E, ld.Net.unet, 1, 4, 4, 4, 2, variance=7,
                                contains="variance type 7")
        self.assertDiffuseError(E, ld.Net.unet, 1, 4, 4, 4, 2, max_batch=0)
        self.assertDiffuseError(E, ld.Net.unet, 1, 8192, 8192, 4, 2, contains="2^24")
        with self.assertRaises(ValueError):
            ld.Net.unet(1, -4, 4)
        with self.assertRaises(ValueError):
            ld.Net.unet(1, 4, 4, prediction="noise")
        with ld.Net.unet(1, 4, 4, 4, 2, max_batch=2) as net:
            value = ctypes.c_double()
            self.assertEqual(ld._f("diffuse_net_get")(net._h, ld.NET_WIDTH, ctypes.byref(value)),
                             E)
            self.assertIn("does not describe a U-Net", ld.last_error())
            self.assertDiffuseError(E, net.forward, [0.0] * 48, [1] * 3, contains="max_batch")
            with self.assertRaises(ValueError):
                net.forward([0.0] * 15, [1])  # not rows of dim 16

    def test_forward(self):
        with ld.Net.unet(1, 4, 6, 4, 2, variance="learned", max_batch=3, seed=2) as net:
            x = [[0.01 * ((7 * i) % 13) - 0.05 for i in range(24)],
                 [0.02 * ((5 * i) % 11) - 0.1 for i in range(24)]]
            out = net.forward(x, [3, 700])
            self.assertEqual(len(flat(out)), 2 * 48)
            self.assertEqual(flat(net.forward(x[1:], 700)), flat(out)[48:], "row independent")
            if HAVE_NUMPY:
                self.assertEqual((out.shape, out.dtype), ((2, 48), np.float32))
                ref = unet_reference(net.get_params(), x, [3, 700], 1, 4, 6, 4, 2, 2)
                # float32 layers against float64: 1e-5 of the output scale
                self.assertLess(np.abs(out - ref).max(), 1e-5 * np.abs(ref).max(), (out, ref))
                # images [batch][C][H][W] are rows of dim values
                img = np.asarray(x, np.float32).reshape(2, 1, 4, 6)
                self.assertTrue(same_bits(net.forward(img, [3, 700]), out))

    @needs_numpy
    def test_forward_matches_numpy_reference(self):
        rng = np.random.default_rng(11)
        with ld.Net.unet(3, 8, 6, 8, 4, prediction="x0", max_batch=4, seed=9) as net:
            # GN gamma and beta away from 1 and 0 (they start there)
            P = net.get_params().astype(np.float64)
            P += rng.uniform(-0.3, 0.3, P.size)
            net.set_params(P.astype(np.float32))
            x = rng.standard_normal((4, 3, 8, 6)).astype(np.float32)
            t = [0, 1, 500, 999]
            out = net.forward(x, t)
            ref = unet_reference(net.get_params(), x, t, 3, 8, 6, 8, 4, 3)
            self.assertLess(np.abs(out - ref).max(), 1e-5 * np.abs(ref).max())

    def test_model_trainer_and_checkpoint(self):
        # Train, save with the trainer, load: the same kind, sizes and
        # weights; training continues bit for bit; the loaded net samples.
        rng = random.Random(3)

        def batch():
            return [[1.0 if (i % 4) == k else -1.0 for i in range(16)]
                    for k in (rng.randrange(4) for _ in range(4))]

        data = [batch() for _ in range(10)]
        with tempfile.TemporaryDirectory() as tmp, ld.Schedule.cosine(20) as s:
            path = os.path.join(tmp, "unet.ckpt")
            net = ld.Net.unet(1, 4, 4, 4, 2, prediction="v", variance="learned_range",
                              max_batch=4, seed=1)
            tr = ld.Trainer(net, s)
            tr.loss = "hybrid"
            loss_a = [tr.step(x, seed=5) for x in data[:6]]
            self.assertTrue(all(math.isfinite(v) for v in loss_a))
            ld.checkpoint_save(path, net, tr)
            net2, tr2 = ld.checkpoint_load(path, 4, s)
            with net2, tr2:
                self.assertEqual(net2.kind, "unet")
                for name in ("dim", "output_dim", "channels", "height", "width_pixels",
                             "base_channels", "groups", "prediction", "variance", "emb_dim"):
                    self.assertEqual(getattr(net2, name), getattr(net, name), name)
                self.assertIsNone(net2.width)
                self.assertEqual(tr2.dim, 16)
                for which in ("weights", "ema"):
                    self.assertTrue(same_bits(net2.get_params(which), net.get_params(which)))
                self.assertEqual([tr2.step(x, seed=5) for x in data[6:]],
                                 [tr.step(x, seed=5) for x in data[6:]])
                self.assertTrue(same_bits(net2.get_params("ema"), net.get_params("ema")))
                with net2.model("ema") as m, ld.Sampler(s, m, "ddim", 4) as smp:
                    out = flat(smp.run(seed=2, batch=3))
                    self.assertEqual(len(out), 3 * 16)
                    self.assertTrue(all(math.isfinite(v) for v in out))
            tr.close()
            net.close()


class TrainerTest(Base):

    def test_split_step(self):
        # compute_grads + apply over the whole batch is step(), bit for bit; two
        # half slices with summed gradients and concatenated records give the same
        # loss and, within float rounding, the same weights
        data = [[[0.1 * i - 0.3, 0.2 - 0.05 * i] for i in range(8)] for _ in range(3)]
        with ld.Schedule.linear(100) as s:
            nets = [ld.Net.mlp(2, width=8, max_batch=8, seed=4) for _ in range(4)]
            trs = [ld.Trainer(n, s) for n in nets]
            try:
                for x in data:
                    want = trs[0].step(x, seed=9)
                    trs[1].compute_grads(x, 9, 0, 8)
                    self.assertEqual(trs[1].apply(8), want)
                    parts = [trs[2 + q].compute_grads(x[4 * q:4 * q + 4], 9, 4 * q, 8)
                             for q in range(2)]
                    self.assertAlmostEqual(sum(parts), want, delta=1e-12 * abs(want))
                    recs = [flat(trs[2 + q].records(4)) for q in range(2)]
                    g = [a + b for a, b in zip(flat(trs[2].get_grads()), flat(trs[3].get_grads()))]
                    for q in range(2):
                        trs[2 + q].set_grads(g)
                    got = [trs[2 + q].apply(8, list(recs[0]) + list(recs[1])) for q in range(2)]
                    self.assertEqual(got[0], got[1])
                    self.assertAlmostEqual(got[0], want, delta=1e-3 * abs(want))
                self.assertTrue(same_bits(nets[1].get_params("weights"),
                                          nets[0].get_params("weights")))
                self.assertTrue(same_bits(nets[2].get_params("weights"),
                                          nets[3].get_params("weights")))
                w0, w2 = flat(nets[0].get_params("weights")), flat(nets[2].get_params("weights"))
                self.assertLessEqual(max(abs(a - b) for a, b in zip(w0, w2)),
                                     1e-5 * max(abs(a) for a in w0))
                with self.assertRaises(ld.DiffuseError):
                    trs[1].apply(8)  # nothing pending
                with self.assertRaises(ValueError):
                    trs[1].apply(8, [0.0] * 3)
            finally:
                for t in trs:
                    t.close()
                for n in nets:
                    n.close()

    def test_parameters_by_name_id_and_property(self):
        with ld.Schedule.linear(100) as s, ld.Net.mlp(2, width=8, max_batch=8) as net, \
                ld.Trainer(net, s) as tr:
            self.assertEqual((tr.dim, tr.max_batch), (2, 8))
            defaults = {"lr": 1e-3, "beta1": 0.9, "beta2": 0.999, "eps": 1e-8,
                        "weight_decay": 0.0, "adamw": 1.0, "grad_clip": 0.0, "ema_decay": 0.999,
                        "loss": ld.LOSS_MSE, "min_snr_gamma": 0.0,
                        "timesteps": ld.TIMESTEPS_UNIFORM, "num_threads": 0.0, "step": 0.0}
            for name, value in defaults.items():
                self.assertEqual(tr.get(name), value, name)
                self.assertEqual(tr.get(ld._TRAINER_PARAMS[name]), value, name)
            self.assertEqual((tr.lr, tr.adamw, tr.loss, tr.step_count), (1e-3, True, 0, 0))
            tr.set("lr", 2e-3)
            tr.set(ld.TRAINER_BETA1, 0.8)
            tr.set("BETA2", 0.99)
            tr.eps = 1e-6
            tr.weight_decay = 0.01
            tr.adamw = False
            tr.grad_clip = 1.0
            tr.ema_decay = 0.9
            tr.loss = "kl"
            tr.min_snr_gamma = 5
            tr.timesteps = "loss_second_moment"
            tr.num_threads = 1
            self.assertEqual([tr.get(i) for i in range(1, 14)],
                             [2e-3, 0.8, 0.99, 1e-6, 0.01, 0.0, 1.0, 0.9, 2.0, 5.0, 1.0, 1.0, 0.0])
            self.assertEqual((tr.adamw, tr.loss, tr.timesteps), (False, ld.LOSS_KL,
                                                                ld.TIMESTEPS_LOSS_SECOND_MOMENT))
            tr.set("loss", ld.LOSS_MSE)
            tr.set("timesteps", "uniform")
            E = ld.DIFFUSE_EINVAL
            self.assertDiffuseError(E, tr.set, "step", 5, contains="STEP is read-only")
            self.assertDiffuseError(E, tr.set, ld.TRAINER_STEP, 0, contains="read-only")
            self.assertDiffuseError(E, tr.set, 99, 0, contains="unknown parameter 99")
            self.assertDiffuseError(E, tr.get, 99, contains="unknown parameter 99")
            self.assertDiffuseError(E, tr.set, "loss", "hybrid",
                                    contains="needs a learned variance")
            self.assertDiffuseError(E, tr.set, "loss", 7, contains="unknown loss 7")
            self.assertDiffuseError(E, tr.set, "timesteps", 5, contains="unknown timestep")
            self.assertDiffuseError(E, tr.set, "lr", -1.0)
            self.assertDiffuseError(E, tr.set, "beta1", 1.0)
            self.assertDiffuseError(E, tr.set, "adamw", 0.5)
            self.assertDiffuseError(E, tr.set, "ema_decay", 1.5)
            self.assertDiffuseError(E, tr.set, "lr", float("nan"), contains="not finite")
            self.assertEqual(tr.lr, 2e-3, "unchanged after the failures")
            with self.assertRaises(AttributeError):
                tr.step_count = 3
            with self.assertRaises(ValueError):
                tr.set("loss", "l1")
            with self.assertRaises(TypeError):
                tr.set("lr", "fast")
            with self.assertRaises(ValueError):
                tr.get("momentum")

    def test_create_and_step_errors(self):
        E = ld.DIFFUSE_EINVAL
        with ld.Schedule.linear(100) as s, ld.Net.mlp(2, width=8, max_batch=4) as net:
            self.assertDiffuseError(E, ld.Trainer, net, s, 5, contains="the net's 4")
            self.assertDiffuseError(E, ld.Trainer, net, s, 0)
            with s.rescale_zero_snr() as z:
                self.assertDiffuseError(E, ld.Trainer, net, z, contains="zero terminal SNR")
                with ld.Net.mlp(2, prediction="v", max_batch=1) as vnet:
                    ld.Trainer(vnet, z).close()
            with ld.Trainer(net, s, 3) as tr:
                x = [[0.0, 1.0]] * 4
                self.assertDiffuseError(E, tr.step, x, contains="max_batch = 3")
                with self.assertRaises(ValueError):
                    tr.step([0.0] * 5)
                with self.assertRaises(ValueError):
                    tr.step(x[:2], seed=-1)
                before = flat(net.get_params())
                e = self.assertDiffuseError(ld.DIFFUSE_ENUMERIC, tr.step,
                                            [[float("nan"), 0.0]], contains="weights unchanged")
                self.assertIn("loss is not finite at step 0", e.message)
                self.assertEqual(flat(net.get_params()), before)
                self.assertEqual(tr.step_count, 0)
                loss = tr.step(x[:2], seed=1)
                self.assertIsInstance(loss, float)
                self.assertTrue(math.isfinite(loss) and loss > 0)
                self.assertEqual(tr.step_count, 1)
                self.assertNotEqual(flat(net.get_params()), before)

    def test_training_a_gaussian_mixture_lowers_the_loss_and_samples_it(self):
        # 400 steps of batch 256 on three equally weighted N(mean, 0.2^2 I)
        # in 2-D (seed 2024), MLP width 64, depth 2.  The loss is noisy from
        # batch to batch; the mean of the last 20 steps must be below 70% of
        # the first 20's (measured: about 36%).
        rng = random.Random(2024)
        with ld.Schedule.linear(100) as s, \
                ld.Net.mlp(2, width=64, depth=2, emb_dim=16, max_batch=512, seed=1) as net, \
                ld.Trainer(net, s, 256) as tr:
            tr.lr = 3e-3
            tr.ema_decay = 0.98
            losses = [tr.step(mixture_batch(rng, 256), seed=5) for _ in range(400)]
            self.assertEqual(tr.step_count, 400)
            first, last = sum(losses[:20]) / 20, sum(losses[-20:]) / 20
            self.assertLess(last, 0.7 * first, f"seed 2024: loss {first:.4f} -> {last:.4f}")
            self.assertFalse(same_bits(net.get_params(), net.get_params("ema")))
            # Sample with the EMA model: 512 DDPM samples over the 100 steps.
            # Loose bounds for an approximately trained model (measured: 96%
            # within 0.6 of a mean, shares 0.32 .. 0.35): at least 80% within
            # 0.6 of a mean, each component's share in [0.2, 0.47].  N(0, I)
            # noise would put about 25% there.
            with net.model("ema") as m, ld.Sampler(s, m, "ddpm", 512) as smp:
                x = flat(smp.run(seed=9, batch=512))
            near, counts = 0, [0, 0, 0]
            for b in range(512):
                d = [math.hypot(x[2 * b] - mx, x[2 * b + 1] - my) for mx, my in MIX_MEANS]
                k = d.index(min(d))
                counts[k] += 1
                near += d[k] < 0.6
            self.assertGreater(near / 512, 0.8, f"seed 9: {near} of 512 near a mean")
            for k in range(3):
                self.assertTrue(0.2 <= counts[k] / 512 <= 0.47, f"seed 9: shares {counts}")

    def test_thread_count_does_not_change_the_weights(self):
        rng = random.Random(5)
        data = [mixture_batch(rng, 64) for _ in range(4)]
        results = []
        for threads in (1, 3):
            with ld.Schedule.linear(50) as s, \
                    ld.Net.mlp(2, width=128, depth=2, max_batch=64, seed=2) as net, \
                    ld.Trainer(net, s) as tr:
                tr.num_threads = threads
                net.set("num_threads", threads)
                for x in data:
                    tr.step(x, seed=3)
                results.append(net.get_params())
        self.assertTrue(same_bits(*results), f"OpenMP: {ld.has_openmp()}")

    def test_learned_variance_losses(self):
        rng = random.Random(11)
        with ld.Schedule.cosine(50) as s, \
                ld.Net.mlp(2, width=16, variance="learned_range", max_batch=32) as net, \
                ld.Trainer(net, s) as tr:
            for loss in ("hybrid", "kl", "mse"):
                tr.loss = loss
                self.assertTrue(math.isfinite(tr.step(mixture_batch(rng, 32), seed=1)), loss)
            with net.model() as m, ld.Sampler(s, m, "ddpm", 4) as smp:
                self.assertEqual(m.output_dim, 4)
                self.assertEqual(len(flat(smp.run(seed=1, batch=4))), 8)

    def test_trainer_keeps_the_net_alive(self):
        with ld.Schedule.cosine(20) as s:
            net = ld.Net.mlp(2, width=8, max_batch=4)
            tr = ld.Trainer(net, s)
            net.close()
            del net
            gc.collect()
            self.assertTrue(math.isfinite(tr.step([[0.0, 1.0]] * 4, seed=1)))
            self.assertTrue(tr.net.closed)
            tr.close()
            self.assertIn("closed", repr(tr))
            with self.assertRaises(ValueError):
                tr.step([[0.0, 1.0]])


# ---------------------------------------------------------------------------
# Handles across threads: close() while other threads are inside calls
# ---------------------------------------------------------------------------

_HAMMER = r"""
import sys, threading, time
sys.path.insert(0, sys.argv[1])
import libdiffuse as ld

# Each handle class: threads call the handle in a loop while the main thread
# closes it (one thread for the handles that one thread at a time may use:
# Net, Sampler, Vlb, Trainer; three for Schedule and Model).  Large tables
# and nets (their memory is unmapped when freed), so that a call on a freed
# handle would crash.  A call must either give the
# right answer or raise ValueError("... is closed"); close must return.
def flat(a):  # numpy array or (without numpy) flat list -> list of floats
    return [float(v) for v in (a.ravel() if hasattr(a, "ravel") else a)]

T = 60000
ref_sched = ld.Schedule.cosine(T)
ref_table = list(ref_sched.table("alphas_cumprod"))
ref_sched.close()
results = {}

def hammer(name, make, use, check, threads=3, rounds=4):
    done = bad = 0
    for r in range(rounds):
        obj, extra = make()
        errors = []
        started = threading.Barrier(threads + 1)
        def worker():
            nonlocal done
            started.wait()
            while True:
                try:
                    out = use(obj)
                except ValueError as e:
                    if "closed" not in str(e):
                        errors.append(repr(e))
                    return
                except BaseException as e:
                    errors.append(repr(e))
                    return
                if not check(out):
                    errors.append("wrong result")
                    return
                done += 1
        ts = [threading.Thread(target=worker) for _ in range(threads)]
        for t in ts:
            t.start()
        started.wait()
        time.sleep(0.02 * (r + 1))
        obj.close()
        for t in ts:
            t.join(30)
            if t.is_alive():
                errors.append("a thread did not finish")
        for e in extra:
            e.close()
        if errors:
            bad += 1
            print(name, "round", r, errors[:3])
    results[name] = (done, bad)

def make_sched():
    return ld.Schedule.cosine(T), ()
hammer("Schedule", make_sched, lambda s: s.table("alphas_cumprod"),
       lambda out: list(out) == ref_table)

def make_model():
    return ld.Model(lambda x, t: x, 2), ()
hammer("Model", make_model, lambda m: m.output_dim, lambda out: out == 2)

small = ld.Schedule.linear(20, 1e-4, 0.005)
def make_net():
    return ld.Net.mlp(2, width=512, depth=4, emb_dim=16, max_batch=8, seed=3), ()
x = [[0.5, -0.5]] * 8
with ld.Net.mlp(2, width=512, depth=4, emb_dim=16, max_batch=8, seed=3) as n0:
    ref_fwd = flat(n0.forward(x, 5))
hammer("Net", make_net, lambda n: n.forward(x, 5),
       lambda out: flat(out) == ref_fwd, threads=1)

def make_sampler():
    net = ld.Net.mlp(2, width=256, depth=2, emb_dim=16, max_batch=8, seed=4)
    m = net.model()
    return ld.Sampler(small, m, "ddim", 8), (m, net)
with ld.Net.mlp(2, width=256, depth=2, emb_dim=16, max_batch=8, seed=4) as n1, \
        n1.model() as m1, ld.Sampler(small, m1, "ddim", 8) as s1:
    ref_run = flat(s1.run(batch=8, seed=9))
hammer("Sampler", make_sampler, lambda s: s.run(batch=8, seed=9),
       lambda out: flat(out) == ref_run, threads=1)

def make_vlb():
    net = ld.Net.mlp(2, width=256, depth=2, emb_dim=16, max_batch=8, seed=4)
    m = net.model()
    return ld.Vlb(small, m, 8), (m, net)
hammer("Vlb", make_vlb, lambda v: v.run(x, seed=1).total,
       lambda out: all(b == b for b in flat(out)), threads=1)

def make_trainer():
    net = ld.Net.mlp(2, width=256, depth=2, emb_dim=16, max_batch=8, seed=4)
    return ld.Trainer(net, small, 8), (net,)
hammer("Trainer", make_trainer, lambda tr: tr.step(x, seed=1), lambda out: out == out, threads=1)
small.close()
for name, (done, bad) in results.items():
    print(name, done, bad)
sys.exit(1 if any(bad for done, bad in results.values()) else 0)
"""


class ThreadCloseTest(Base):
    """close() of any handle while other threads are inside calls that use it
    (issue 12): the interpreter used to die with SIGSEGV.  Run in a child
    process, so that a crash is reported as one failed test."""

    def test_close_while_other_threads_call_every_handle_class(self):
        env = dict(os.environ)
        p = subprocess.run([sys.executable, "-c", _HAMMER, PYDIR], env=env,
                           capture_output=True, text=True, timeout=120)
        out = (p.stdout + p.stderr).strip()
        self.assertEqual(p.returncode, 0, f"exit status {p.returncode} (negative: a "
                         f"signal, -11 SIGSEGV):\n{out[-3000:]}")
        counts = {}
        for line in p.stdout.splitlines():
            parts = line.split()
            if len(parts) == 3 and parts[1].isdigit():
                counts[parts[0]] = int(parts[1])
        self.assertEqual(sorted(counts), ["Model", "Net", "Sampler", "Schedule", "Trainer",
                                          "Vlb"], out)
        for name, done in counts.items():
            self.assertGreater(done, 0, f"{name}: no call completed before the close")

    def test_close_waits_for_a_call_in_flight(self):
        # A sampler run whose Python model sleeps: close() from another thread
        # returns only after the run has ended, and the run's result is whole.
        entered = threading.Event()
        order = []

        def slow(x_t, t):
            entered.set()
            time.sleep(0.05)
            return [[0.0] * 2 for _ in range(len(x_t))]

        with ld.Schedule.linear(50) as s, ld.Model(slow, 2) as m:
            smp = ld.Sampler(s, m, "ddim", 2)
            result = []

            def run():
                result.append(smp.run(batch=2, seed=3))
                order.append("run")

            t = threading.Thread(target=run)
            t.start()
            self.assertTrue(entered.wait(10))
            smp.close()
            order.append("close")
            t.join(10)
            self.assertEqual(order, ["run", "close"])
            self.assertTrue(smp.closed)
            self.assertEqual(len(result), 1)
            with self.assertRaises(ValueError) as cm:
                smp.run(batch=2)
            self.assertIn("closed", str(cm.exception))

    def test_close_from_inside_a_call_that_uses_it_raises(self):
        # From a callback of a call on the same handle, close would wait for
        # itself: it raises RuntimeError and the handle stays open.
        with ld.Schedule.linear(50) as s:
            box = {}

            def model(x_t, t):
                try:
                    box["net"].close()
                except RuntimeError as e:
                    box["err"] = str(e)
                return [[0.0] * 2 for _ in range(len(x_t))]

            with ld.Model(model, 2) as m, ld.Sampler(s, m, "ddim", 2) as smp:
                box["net"] = smp
                smp.run(batch=2)
                self.assertIn("from inside", box["err"])
                self.assertFalse(smp.closed)


class CheckpointTest(Base):

    def setUp(self):
        self._tmp = tempfile.TemporaryDirectory(prefix="libdiffuse-test-")
        self.dir = pathlib.Path(self._tmp.name)

    def tearDown(self):
        self._tmp.cleanup()

    def test_format_version(self):
        self.assertEqual(ld.checkpoint_format_version(), 1)

    def test_max_workspace_limit(self):
        # A 1 x 64 x 64 U-Net with c = 8 needs megabytes of workspace per row:
        # refused under a 1 MiB limit, loaded under the default one; the
        # limit of one call does not outlive it.
        path = self.dir / "unet.ckpt"
        with ld.Net.unet(1, 64, 64, 8, 4, max_batch=2) as net:
            ld.checkpoint_save(path, net)
        with self.assertRaises(ld.DiffuseError) as cm:
            ld.checkpoint_load(path, 4, max_workspace=1 << 20)
        self.assertEqual(cm.exception.status, ld.DIFFUSE_EFORMAT)
        self.assertIn("diffuse_checkpoint_load_limit: the U-Net", str(cm.exception))
        self.assertIn("above the limit of 1048576 bytes", str(cm.exception))
        with self.assertRaises(ValueError):
            ld.checkpoint_load(path, 4, max_workspace=0)
        with self.assertRaises(ValueError):
            ld.checkpoint_load(path, 4, max_workspace=(1 << 62) + 1)
        with self.assertRaises(TypeError):
            ld.checkpoint_load(path, 4, max_workspace=1e9)
        net, _ = ld.checkpoint_load(path, 4, max_workspace=1 << 26)
        net.close()
        net, _ = ld.checkpoint_load(path, 4)
        net.close()

    def test_meta_text_round_trip(self):
        # checkpoint_save(meta=) and checkpoint_read_meta(): the text comes
        # back as it went in; a plain checkpoint has ""; bad texts refused.
        net = ld.Net.mlp(2, width=8, depth=1, emb_dim=4, max_batch=2, seed=1)
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "m.ckpt")
            ld.checkpoint_save(path, net)
            self.assertEqual(ld.checkpoint_read_meta(path), "")
            for text in ("", "k=v", "schedule=cosine\ntimesteps=1000\n", "\u00e9t\u00e9=1"):
                ld.checkpoint_save(path, net, meta=text)
                self.assertEqual(ld.checkpoint_read_meta(path), text)
            with self.assertRaises(TypeError):
                ld.checkpoint_save(path, net, meta=b"x")
            with self.assertRaises(ValueError):
                ld.checkpoint_save(path, net, meta="a\0b")
            with self.assertRaises(ld.DiffuseError) as cm:
                ld.checkpoint_save(path, net, meta="x" * (ld.CHECKPOINT_META_MAX + 1))
            self.assertEqual(cm.exception.status, ld.DIFFUSE_EINVAL)
            with self.assertRaises(ld.DiffuseError) as cm:
                ld.checkpoint_read_meta(os.path.join(tmp, "missing.ckpt"))
            self.assertEqual(cm.exception.status, ld.DIFFUSE_EIO)
        net.close()

    def _trainer(self, s, seed=1):
        net = ld.Net.mlp(2, width=32, depth=1, emb_dim=8, max_batch=64, seed=seed)
        tr = ld.Trainer(net, s, 64)
        tr.lr = 2e-3
        tr.ema_decay = 0.95
        tr.grad_clip = 0.5
        tr.weight_decay = 1e-3
        tr.adamw = False
        tr.min_snr_gamma = 5.0
        tr.timesteps = "loss_second_moment"  # its loss history is part of the state
        return net, tr

    def test_round_trip_and_bit_identical_continued_training(self):
        # Trainer A runs 60 steps; trainer B runs 30, is saved, loaded, and
        # the loaded one runs the other 30 on the same batches and seed.  With
        # T = 20 the importance sampler's history fills up before the save.
        rng = random.Random(77)
        data = [mixture_batch(rng, 64) for _ in range(60)]
        path = self.dir / "mid.ckpt"
        with ld.Schedule.cosine(20) as s:
            net_a, tr_a = self._trainer(s)
            net_b, tr_b = self._trainer(s)
            loss_a = [tr_a.step(x, seed=42) for x in data]
            loss_b = [tr_b.step(x, seed=42) for x in data[:30]]
            self.assertEqual(loss_b, loss_a[:30])
            ld.checkpoint_save(path, net_b, tr_b)
            self.assertTrue(path.exists())
            self.assertEqual(sorted(p.name for p in self.dir.iterdir()), ["mid.ckpt"],
                             "no temporary file left")
            net_c, tr_c = ld.checkpoint_load(path, 64, s)
            with net_c, tr_c:
                self.assertEqual((net_c.dim, net_c.width, net_c.depth, net_c.emb_dim,
                                  net_c.max_batch, net_c.output_dim),
                                 (2, 32, 1, 8, 64, 2))
                self.assertEqual((net_c.prediction, net_c.variance), (0, 0))
                self.assertEqual((tr_c.max_batch, tr_c.dim), (64, 2))
                for which in ("weights", "ema"):
                    got, want = net_c.get_params(which), net_b.get_params(which)
                    if HAVE_NUMPY:
                        self.assertTrue(np.array_equal(got, want), which)
                    self.assertTrue(same_bits(got, want), which)
                for code in range(1, 14):
                    self.assertEqual(tr_c.get(code), tr_b.get(code), f"trainer parameter {code}")
                self.assertEqual(tr_c.step_count, 30)
                loss_c = [tr_c.step(x, seed=42) for x in data[30:]]
                loss_b += [tr_b.step(x, seed=42) for x in data[30:]]  # saving changed nothing
                self.assertEqual(loss_c, loss_a[30:])
                self.assertEqual(loss_b, loss_a)
                for which in ("weights", "ema"):
                    a, c = net_a.get_params(which), net_c.get_params(which)
                    if HAVE_NUMPY:
                        self.assertTrue(np.array_equal(a, c), which)
                    self.assertTrue(same_bits(a, c), f"{which}: continued training differs")
                    self.assertTrue(same_bits(a, net_b.get_params(which)), which)
                self.assertEqual(tr_c.step_count, 60)
            for h in (tr_a, tr_b, net_a, net_b):
                h.close()

    def test_net_only_checkpoint_and_paths(self):
        with ld.Net.mlp(3, width=8, depth=2, emb_dim=5, prediction="x0", variance="learned",
                        max_batch=2, seed=3) as net:
            net.set_params([0.25 * v for v in flat(net.get_params())], "ema")
            for path in (str(self.dir / "a.ckpt"), self.dir / "b.ckpt",
                         os.fsencode(self.dir / "c.ckpt"), self.dir / "d\u00e9j\u00e0.ckpt"):
                ld.checkpoint_save(path, net)
                loaded, tr = ld.checkpoint_load(path, 5)
                self.assertIsNone(tr)
                with loaded:
                    self.assertEqual((loaded.dim, loaded.width, loaded.depth, loaded.emb_dim,
                                      loaded.prediction, loaded.variance, loaded.output_dim,
                                      loaded.max_batch), (3, 8, 2, 5, 1, 2, 6, 5))
                    for which in ("weights", "ema"):
                        self.assertTrue(same_bits(loaded.get_params(which),
                                                  net.get_params(which)), f"{path}: {which}")
                    x = [[0.1, 0.2, 0.3]] * 2
                    self.assertEqual(flat(loaded.forward(x, [3, 4], "ema")),
                                     flat(net.forward(x, [3, 4], "ema")))
            # overwriting keeps a valid file
            ld.checkpoint_save(self.dir / "a.ckpt", net)
            ld.checkpoint_load(self.dir / "a.ckpt", 1)[0].close()
            with self.assertRaises(ValueError):
                ld.checkpoint_save(str(self.dir / "x\0y"), net)
            with self.assertRaises(TypeError):
                ld.checkpoint_save(5, net)

    def test_loaded_net_reports_its_architecture(self):
        # diffuse_net_get gives a loaded net's sizes back.
        path = self.dir / "arch.ckpt"
        with ld.Schedule.cosine(20) as s:
            net, tr = self._trainer(s)
            ld.checkpoint_save(path, net, tr)
            loaded, _ = ld.checkpoint_load(path, 3)
            for name in ("dim", "output_dim", "width", "depth", "emb_dim", "prediction",
                         "variance"):
                self.assertEqual(getattr(loaded, name), getattr(net, name), name)
            self.assertEqual((loaded.dim, loaded.width, loaded.depth, loaded.emb_dim,
                              loaded.max_batch), (2, 32, 1, 8, 3))
            loaded.close()
            tr.close()
            net.close()

    def test_errors(self):
        E, EIO, EFORMAT = ld.DIFFUSE_EINVAL, ld.DIFFUSE_EIO, ld.DIFFUSE_EFORMAT
        good = self.dir / "good.ckpt"
        with ld.Schedule.cosine(20) as s, ld.Schedule.cosine(20, 0.01) as other:
            net, tr = self._trainer(s)
            tr.step(mixture_batch(random.Random(1), 8), seed=1)
            ld.checkpoint_save(good, net, tr)
            # missing file, directory, missing directory
            e = self.assertDiffuseError(EIO, ld.checkpoint_load, self.dir / "missing.ckpt", 4,
                                        contains="cannot open")
            self.assertIn("missing.ckpt", e.message)
            self.assertDiffuseError(EIO, ld.checkpoint_load, self.dir, 4)
            self.assertDiffuseError(EIO, ld.checkpoint_save, self.dir / "no" / "x.ckpt", net,
                                    contains="cannot create a temporary file")
            # corrupted, truncated, not a checkpoint, newer format
            data = good.read_bytes()
            cases = {
                "flipped.ckpt": (data[:-5] + bytes([data[-5] ^ 0x10]) + data[-4:], "CRC mismatch"),
                "truncated.ckpt": (data[:len(data) // 2], "truncated or padded"),
                "padded.ckpt": (data + b"\0", "truncated or padded"),
                "text.ckpt": (b"hello, world\n", "no \"DIFFCKPT\" magic"),
                "empty.ckpt": (b"", "magic"),
                "newer.ckpt": (data[:8] + struct.pack("<I", 2) + data[12:], "newer libdiffuse"),
            }
            for name, (content, why) in cases.items():
                (self.dir / name).write_bytes(content)
                self.assertDiffuseError(EFORMAT, ld.checkpoint_load, self.dir / name, 4,
                                        contains=why)
                self.assertDiffuseError(EFORMAT, ld.checkpoint_load, self.dir / name, 4, s)
            # arguments
            self.assertDiffuseError(E, ld.checkpoint_load, good, 0, contains="max_batch = 0 is outside")
            self.assertDiffuseError(E, ld.checkpoint_load, good, 4, s, 5,
                                    contains="trainer_batch = 5")
            self.assertDiffuseError(E, ld.checkpoint_load, good, 4, other,
                                    contains="differs from the checkpoint")
            with ld.Schedule.cosine(30) as longer:
                self.assertDiffuseError(E, ld.checkpoint_load, good, 4, longer,
                                        contains="30 steps")
            with self.assertRaises(ValueError):
                ld.checkpoint_load(good, 4, trainer_batch=2)  # no schedule: no trainer
            net_only = self.dir / "net.ckpt"
            ld.checkpoint_save(net_only, net)
            self.assertDiffuseError(E, ld.checkpoint_load, net_only, 4, s,
                                    contains="no trainer state")
            with ld.Net.mlp(2, width=32, depth=1, emb_dim=8, max_batch=64) as stranger:
                self.assertDiffuseError(E, ld.checkpoint_save, self.dir / "s.ckpt", stranger, tr,
                                        contains="another net")
            self.assertFalse((self.dir / "s.ckpt").exists())
            # the failed saves left the good file as it was
            self.assertEqual(good.read_bytes(), data)
            loaded, ltr = ld.checkpoint_load(good, 8, s, 2)
            self.assertEqual((loaded.max_batch, ltr.max_batch, ltr.step_count), (8, 2, 1))
            self.assertDiffuseError(E, ltr.step, [[0.0, 0.0]] * 3, contains="max_batch = 2")
            for h in (ltr, loaded, tr, net):
                h.close()


# ---------------------------------------------------------------------------
# The standard-library paths (numpy absent, simulated)
# ---------------------------------------------------------------------------

class NoNumpyTest(Base):

    def test_flag_gives_array_results(self):
        with no_numpy():
            z = ld.normal_fill(1, 2, 3, 5)
            self.assertIsInstance(z, array.array)
            self.assertEqual(z.typecode, "f")
            with ld.Schedule.cosine(10) as s:
                tab = s.table("betas")
                ts = s.timesteps()
            self.assertEqual((tab.typecode, len(tab)), ("d", 10))
            self.assertEqual(ts.itemsize, 4)
            self.assertEqual(list(ts), list(range(10)))
            spec = ld.timesteps_from_spec(100, "ddim10")
            self.assertEqual(list(spec), list(range(0, 100, 10)))
        if HAVE_NUMPY:
            self.assertEqual(flat(z), flat(ld.normal_fill(1, 2, 3, 5)))

    def test_array_array_input_is_not_copied(self):
        with no_numpy():
            a = array.array("f", [1.0, 2.0, 3.0])
            conv = ld._arr(a, "f", "x")
            self.assertIs(conv.keep, a)
            self.assertEqual(ctypes.addressof(conv.ptr), a.buffer_info()[0])
            del conv
            a.append(4.0)  # the export was released
            self.assertIsNot(ld._arr(array.array("d", [1.0]), "f", "x").keep, a)

    def test_forward_with_lists(self):
        with no_numpy(), ld.Schedule.linear(1000) as s:
            sa, s1m = flat(s.table("sqrt_alphas_cumprod")), flat(s.table("sqrt_one_minus_alphas_cumprod"))
            x0 = [[0.5, -0.5], [1.0, 0.25]]
            noise = array.array("f", [0.1, 0.2, -0.3, 0.4])
            t = [10, 999]
            xt = ld.q_sample(s, x0, t, noise)
            self.assertIsInstance(xt, array.array)
            want = [f32(sa[t[i // 2]] * f32(v) + s1m[t[i // 2]] * f32(n))
                    for i, (v, n) in enumerate(zip(flat(x0[0] + x0[1]), noise))]
            self.assertEqual(list(xt), want)
            xs, ns = ld.q_sample_seeded(s, x0, t, 5)
            self.assertEqual(list(ns[2:4]), list(ld.normal_fill(5, 1, 0, 2)))
            mean, var, logvar = ld.q_mean_variance(s, x0, t)
            self.assertEqual((len(mean), len(var), len(logvar)), (4, 2, 2))
            pm, pv, plv = ld.q_posterior(s, x0, xt, t)
            self.assertEqual(len(pm), 4)
            conv = ld.predict_convert(s, "eps", "v", xt, t, noise)
            self.assertEqual(len(conv), 4)
            self.assertEqual(list(ld.timesteps_rescale([1, 2], 10)), [100.0, 200.0])
            self.assertEqual(len(ld.timesteps_spacing(100, 5, "trailing")), 5)
            with self.assertRaises(ValueError):
                ld.q_sample(s, [[0.0, 1.0], [2.0]], t, noise)  # ragged
            with self.assertRaises(TypeError):
                ld.q_sample(s, x0, [1.0, 2.0], noise)

    def test_elementwise_with_lists(self):
        with no_numpy():
            self.assertEqual(list(ld.normal_kl(0.0, 0.0, [1.0, 0.0], 0.0)), [0.5, 0.0])
            self.assertEqual(list(ld.standard_normal_cdf(0.0, "exact")), [0.5])
            ll = ld.discretized_gaussian_log_likelihood([0.0, 1.0], 0.0, 0.0, "exact")
            self.assertEqual(len(ll), 2)
            with self.assertRaises(ValueError):
                ld.normal_kl([0.0, 1.0], [0.0, 1.0, 2.0], 0.0, 0.0)
            with ld.Schedule.cosine(10) as s:
                self.assertEqual(len(ld.prior_bpd(s, [[0.0, 1.0], [1.0, 0.0]])), 2)

    def test_net_and_trainer_with_lists_match_numpy(self):
        rng = random.Random(3)
        with no_numpy():
            data = [mixture_batch(rng, 8) for _ in range(3)]
        results = []
        for use_numpy in ((False, True) if HAVE_NUMPY else (False,)):
            ctx = contextlib.nullcontext() if use_numpy else no_numpy()
            with ctx, ld.Schedule.cosine(20) as s, \
                    ld.Net.mlp(2, width=8, variance="learned", max_batch=8, seed=4) as net, \
                    ld.Trainer(net, s) as tr:
                p = net.get_params()
                out = net.forward(data[0][:3], [1, 2, 3], "ema")
                if not use_numpy:
                    self.assertEqual((type(p), p.typecode, len(p)), (array.array, "f",
                                                                     net.param_count))
                    self.assertEqual((type(out), len(out)), (array.array, 3 * 4))
                    net.set_params(list(p), "ema")
                    net.set_params(p)
                losses = [tr.step(x, seed=8) for x in data]
                results.append((flat(out), losses, flat(net.get_params()),
                                flat(net.get_params("ema"))))
        if len(results) == 2:
            self.assertEqual(results[0], results[1], "lists vs numpy")

    def test_model_callback_with_lists_matches_numpy(self):
        betas, abar = linear_reference_abar()
        o = GaussianOracle([0.5, -1.0], [0.6, 1.0], abar)
        seen = {}

        def list_fn(x, t):
            seen.setdefault("types", (type(x).__name__, type(x[0]).__name__, type(t).__name__))
            return o.list_fn(x, t)

        with no_numpy(), ld.Schedule.linear(1000) as base, base.respace("ddim20") as s, \
                ld.Model(list_fn, 2) as m, ld.Sampler(s, m, "ddim", 4) as smp:
            got = smp.run(seed=11, batch=4)
            self.assertIsInstance(got, array.array)
            self.assertEqual(len(got), 8)
            self.assertEqual(seen["types"], ("list", "list", "list"))
            inv = smp.invert(got)
            self.assertEqual(len(inv), 8)
            with ld.Vlb(s, m, 4) as v:
                r = v.run([0.0] * 8)
                self.assertEqual((len(r.total), len(r.terms)), (4, 4 * 20))
        if HAVE_NUMPY:
            o2 = GaussianOracle([0.5, -1.0], [0.6, 1.0], abar)
            with ld.Schedule.linear(1000) as base, base.respace("ddim20") as s, \
                    ld.Model(o2.numpy_fn, 2) as m, ld.Sampler(s, m, "ddim", 4) as smp:
                want = smp.run(seed=11, batch=4)
            self.assertClose(got, want, atol=1e-5, what="list vs numpy callback")


# ---------------------------------------------------------------------------
# Every declared function is called through the binding
# ---------------------------------------------------------------------------

class ConditionalTest(Base):
    """Labels and classifier-free guidance through the binding: the labels reach
    the Python model, guidance calls it once on 2 x batch rows, and the label
    errors come back as DiffuseError."""

    def test_labels_guidance_and_errors(self):
        calls = []

        def fn(x, t, labels):
            calls.append(list(labels))
            # the prediction depends on the label: its value, or 0 for none
            return [[float(max(lab, 0))] * 2 for lab in labels]

        with ld.Schedule.cosine(10) as s, s.respace("5") as r, \
                ld.Model(fn, 2, classes=3) as m:
            self.assertEqual(m.get("classes"), 3.0)
            self.assertEqual(m.get(ld.MODEL_UNCONDITIONAL), 0.0)
            with ld.Sampler(r, m, "dpmpp_2m", 2) as smp:
                out = smp.run(seed=1, batch=2, labels=[2, 1])
                self.assertEqual(len(calls), 5)
                self.assertEqual(calls[0], [2, 1])
                self.assertDiffuseError(ld.DIFFUSE_EINVAL, smp.run, seed=1, batch=2,
                                        labels=[3, 0], contains="outside [0, 3)")
                self.assertDiffuseError(ld.DIFFUSE_EINVAL, smp.run, seed=1, batch=2,
                                        contains="no unconditional training")
                smp.set("guidance", 2.5)
                self.assertDiffuseError(ld.DIFFUSE_EINVAL, smp.run, seed=1, batch=2,
                                        labels=[0, 1], contains="unconditional model")
                self.assertDiffuseError(ld.DIFFUSE_EINVAL, smp.set, "guidance", -1.0,
                                        contains="finite and >= 0")
                with self.assertRaises(ValueError):
                    smp.run(seed=1, batch=2, labels=[0])
            self.assertEqual(out.size if hasattr(out, "size") else len(out), 4)
            m.set("unconditional", 1)
            calls.clear()
            with ld.Sampler(r, m, "ddim", 2) as smp:
                smp.set("guidance", 2.5)
                smp.set("guidance_rescale", 0.5)
                self.assertEqual(smp.get("guidance"), 2.5)
                smp.run(seed=1, batch=2, labels=[2, ld.LABEL_NONE])
                self.assertEqual(len(calls), 5)
                self.assertEqual(calls[0], [2, ld.LABEL_NONE, ld.LABEL_NONE, ld.LABEL_NONE])
            with ld.Vlb(r, m, 2) as v:
                res = v.run([[0.0, 0.5], [0.5, 0.0]], labels=[0, 2])
                self.assertEqual(len(res.total), 2)
        with ld.Model(lambda x, t: x, 2) as plain, ld.Schedule.cosine(10) as s:
            self.assertEqual(plain.get("classes"), 0.0)
            self.assertDiffuseError(ld.DIFFUSE_EINVAL, plain.set, "unconditional", 0)
            with ld.Sampler(s, plain, "ddim", 1) as smp:
                self.assertDiffuseError(ld.DIFFUSE_EINVAL, smp.run, seed=1, batch=1,
                                        labels=[0], contains="no classes")
                self.assertDiffuseError(ld.DIFFUSE_EINVAL, smp.set, "guidance", 2.0,
                                        contains="conditional model")
        self.assertDiffuseError(ld.DIFFUSE_EINVAL, ld.Model, lambda x, t, lab: x, 2, classes=0)


class ConditionalNetTest(Base):
    """A net with classes through the binding: the class table, labels in
    forward and training, dropped labels counted, the conditional model, and
    a checkpoint round trip."""

    def test_conditional_net(self):
        with ld.Schedule.cosine(20) as s, ld.Net.mlp(2, width=8, depth=1, max_batch=4) as net, \
                tempfile.TemporaryDirectory() as tmp:
            plain_count = net.param_count
            self.assertEqual(net.classes, 0)
            net.set("classes", 3)
            self.assertEqual(net.classes, 3)
            self.assertEqual(net.param_count, plain_count + 4 * 8)
            x, t = [[0.1, -0.2], [0.3, 0.4]], [5, 6]
            a = net.forward(x, t, labels=[0, 2])
            b = net.forward(x, t)  # no labels: LABEL_NONE; rows start equal (zero table)
            self.assertEqual(list(a.ravel() if hasattr(a, "ravel") else a),
                             list(b.ravel() if hasattr(b, "ravel") else b))
            self.assertDiffuseError(ld.DIFFUSE_EINVAL, net.forward, x, t, labels=[0, 3],
                                    contains="outside [0, 3)")
            with ld.Trainer(net, s, 4) as tr:
                self.assertDiffuseError(ld.DIFFUSE_EINVAL, net.set, "classes", 5,
                                        contains="holds the net")
                tr.label_dropout = 0.5
                for k in range(20):
                    tr.step([[0.5, 0.5], [-0.5, -0.5], [0.5, -0.5], [-0.5, 0.5]], seed=3,
                            labels=[0, 1, 2, 0])
                dropped = net.uncond_rows
                self.assertTrue(10 < dropped < 70, dropped)  # 80 rows at p = 0.5
                with net.model("ema") as m:
                    self.assertEqual(m.get("classes"), 3.0)
                    self.assertEqual(m.get("unconditional"), 1.0)
                path = os.path.join(tmp, "c.ckpt")
                ld.checkpoint_save(path, net, tr)
                net2, tr2 = ld.checkpoint_load(path, 4, s, 4)
                with net2, tr2:
                    self.assertEqual(net2.classes, 3)
                    self.assertEqual(net2.uncond_rows, dropped)
                    self.assertEqual(tr2.label_dropout, 0.5)
                    got = net2.forward(x, t, labels=[1, 2], which="ema")
                    want = net.forward(x, t, labels=[1, 2], which="ema")
                    self.assertEqual(list(got.ravel() if hasattr(got, "ravel") else got),
                                     list(want.ravel() if hasattr(want, "ravel") else want))


class ShapeAndPackageTest(Base):
    """Shape checks, max_batch from the first run, timesteps as a property,
    progress callbacks on long calls and the ready-made ProgressBar."""

    def test_input_rows_must_have_dim_values(self):
        with ld.Schedule.cosine(10) as s, ld.Model(lambda x, t: 0 * np_or_list(x), 2) as m, \
                ld.Sampler(s, m, "ddim", 4) as smp:
            # 3 rows of 4 values: 12 elements, a multiple of dim 2, still refused
            with self.assertRaises(ValueError) as cm:
                smp.step([[0.0] * 4] * 3, 5)
            self.assertIn("rows of 4 values, but the model's dim is 2", str(cm.exception))
            with self.assertRaises(TypeError) as cm:
                smp.step(None, 5)
            self.assertIn("x_t must be an array, not None", str(cm.exception))
            with self.assertRaises(TypeError):
                smp.invert(None)
            # flat input of whole rows is still taken
            self.assertEqual(len(flat(smp.step([0.0] * 4, 5))), 4)

    def test_model_output_shape_is_checked(self):
        def transposed(x, t):
            return [[0.0] * len(x) for _ in range(2)]  # (dim, batch)

        with ld.Schedule.cosine(10) as s:
            with ld.Model(transposed, 2) as m, ld.Sampler(s, m, "ddim", 3) as smp:
                with self.assertRaises(ValueError) as cm:
                    smp.run(seed=1, batch=3)
                self.assertIn("shape (2, 3); expected (3, 2) (batch, output_dim)",
                              str(cm.exception))
            with ld.Model(lambda x, t: None, 2) as m, ld.Sampler(s, m, "ddim", 3) as smp:
                with self.assertRaises(TypeError) as cm:
                    smp.run(seed=1, batch=3)
                self.assertIn("the model returned None", str(cm.exception))

    def test_sampler_and_vlb_take_max_batch_from_the_first_run(self):
        def model(x, t):
            return [[0.1 * v for v in row] for row in x]

        with ld.Schedule.cosine(20) as s, ld.Model(model, 2) as m:
            with ld.Sampler(s, m, "ddim") as auto, ld.Sampler(s, m, "ddim", 5) as fixed:
                auto.set("eta", 0.5)
                fixed.set("eta", 0.5)
                a = flat(auto.run(seed=3, batch=5))
                self.assertEqual(auto.max_batch, 5)
                self.assertEqual(auto.get("eta"), 0.5)
                self.assertEqual(a, flat(fixed.run(seed=3, batch=5)))
                self.assertEqual(len(flat(auto.run(seed=3, batch=2))), 4)
                self.assertDiffuseError(ld.DIFFUSE_EINVAL, auto.run, seed=3, batch=6)
            with ld.Vlb(s, m) as v:
                r = v.run([[0.1, -0.2]] * 3, seed=1)
                self.assertEqual(len(flat(r.total)), 3)
                self.assertEqual(v.max_batch, 3)

    def test_timesteps_and_length_are_properties(self):
        with ld.Schedule.linear(100) as base, base.respace("ddim10") as s:
            self.assertEqual(s.length, 10)
            self.assertEqual(flat(s.timesteps), flat(s.timesteps()))
            self.assertEqual(flat(s.timesteps)[:3], [0, 10, 20])
            self.assertEqual(len(s.timesteps), s.length)

    def test_progress_on_long_calls_and_progress_bar(self):
        import io
        calls = []
        with ld.Schedule.cosine(8) as s, ld.Model(lambda x, t: 0 * np_or_list(x), 2) as m, \
                ld.Sampler(s, m, "ddim", 2) as smp, ld.Vlb(s, m, 2) as v:
            smp.run(seed=1, batch=2, progress=lambda k, n: calls.append((k, n)))
            self.assertEqual(calls, [(k, 8) for k in range(1, 9)])
            calls.clear()
            smp.run(seed=1, batch=2)  # only for that call
            self.assertEqual(calls, [])
            smp.invert([[0.0, 0.0]] * 2, progress=lambda k, n: calls.append((k, n)))
            self.assertEqual(calls[-1], (7, 7))
            calls.clear()
            v.run([[0.0, 0.0]] * 2, progress=lambda k, n: calls.append((k, n)))
            self.assertEqual(calls[-1], (8, 8))
            out = io.StringIO()
            smp.run(seed=1, batch=2, progress=ld.ProgressBar("sample", file=out))
            lines = out.getvalue().splitlines()
            self.assertTrue(lines and lines[-1].startswith("sample [####"), lines)
            self.assertIn("8/8", lines[-1])
            self.assertIn("ETA", lines[-1])
            with self.assertRaises(ld.DiffuseError) as cm:
                smp.run(seed=1, batch=2, progress=lambda k, n: k == 3)
            self.assertEqual(cm.exception.status, ld.DIFFUSE_ECANCELED)


def _flat(a):
    """The values of a numpy array, a flat array.array or a list of rows."""
    if hasattr(a, "ravel"):
        return [float(v) for v in a.ravel()]
    return [float(v) for row in a for v in (row if hasattr(row, "__iter__") else [row])]


class CallerDrivenTest(Base):
    """diffuse_sampler_step_output through the binding: the caller-driven loop
    gives the run()'s samples bit for bit; float-timestep models see the
    listed times (rescaled with rescale_timesteps)."""

    def _loop(self, smp, model_fn, x, seed):
        for k, t in enumerate(smp.timesteps()):
            x, x0 = smp.step_output(k, x, model_fn(x, float(t)), seed=seed)
        return x, x0

    def test_step_output_equals_run(self):
        def eps(x, t):  # a smooth stand-in network: any deterministic f(x, t)
            return [0.5 * v * (1.0 + t / 1000.0) for v in _flat(x)]
        with ld.Schedule.linear(1000) as s, s.respace([0, 250, 500, 750, 999]) as r:
            for kind in ("ddpm", "ddim", "dpmpp_2m", "euler", "euler_ancestral", "heun"):
                def rows(x, t):  # the model's result as [batch][3] rows
                    v = eps(x, float(t[0]))
                    return [v[i:i + 3] for i in range(0, len(v), 3)]
                with ld.Model(rows, 3, float_timesteps=True) as m, \
                        ld.Model.external(3) as em, ld.Sampler(r, m, kind, 2) as smp, \
                        ld.Sampler(r, em, kind, 2) as ext:
                    ref = smp.run(seed=4, batch=2)
                    xT = [[ld.normal_fill(4, b, ld.RNG_STEP_INITIAL, 3)[i] for i in range(3)]
                          for b in range(2)]
                    got, x0 = self._loop(ext, eps, xT, 4)
                    self.assertEqual(_flat(got), _flat(ref), kind)
                    self.assertEqual(len(_flat(x0)), 6)
                    with self.assertRaises(ld.DiffuseError):
                        ext.run(seed=4, batch=2)

    def test_float_model_times_and_rescale(self):
        seen = []

        def f(x, t):
            seen.append([float(v) for v in t])
            return [[0.0] * 2 for _ in x]
        with ld.Schedule.linear(4000) as s, s.respace([0, 1000, 3999]) as r, \
                ld.Model(f, 2, float_timesteps=True) as m:
            m.set("rescale_timesteps", 1)
            self.assertEqual(m.get("float_timesteps"), 1.0)
            with ld.Sampler(r, m, "ddim", 1) as smp:
                self.assertEqual([float(v) for v in smp.timesteps()], [999.75, 250.0, 0.0])
                smp.run(seed=1, batch=1)
        self.assertEqual([v[0] for v in seen], [999.75, 250.0, 0.0])


class CoverageTest(Base):

    def test_every_declared_function_is_called_through_the_binding(self):
        counts = {name: 0 for name in ld._funcs}
        saved = dict(ld._funcs)

        def counting(name, f):
            def call(*args):
                counts[name] += 1
                return f(*args)
            return call

        for name, f in saved.items():
            ld._funcs[name] = counting(name, f)
        try:
            self._tour()
        finally:
            ld._funcs.clear()
            ld._funcs.update(saved)
        self.assertEqual(sorted(n for n, c in counts.items() if c == 0), [],
                         "declared but never called through the binding")

    def _tour(self):
        ld.version(), ld.version_string(), ld.has_openmp(), ld.rng_version()
        ld.strerror(-1)
        ld.last_error()
        ld.normal_fill(1, 2, 3, 4)
        for mk in (lambda: ld.Schedule.cosine(10), lambda: ld.Schedule.cosine(10),
                   lambda: ld.Schedule.scaled_linear(10), lambda: ld.Schedule.sigmoid(10),
                   lambda: ld.Schedule.from_betas([0.1, 0.2])):
            with mk() as s:
                s.length, s.base_length, s.timesteps(), s.table("betas")
        with ld.Schedule.linear(100) as s, s.respace("ddim10") as r, s.rescale_zero_snr() as z:
            z.length
            ld.timesteps_spacing(100, 10, "leading")
            ld.timesteps_rescale([1, 2], 100)
            x0, t = [[0.1, 0.2], [0.3, 0.4]], [1, 2]
            ld.q_sample(s, x0, t, x0)
            ld.q_sample_seeded(s, x0, t, 1)
            ld.q_mean_variance(s, x0, t)
            ld.q_posterior(s, x0, x0, t)
            ld.predict_convert(s, "eps", "x0", x0, t, x0)
            ld.normal_kl(0.0, 0.0, 0.0, 0.0)
            ld.standard_normal_cdf(0.0)
            ld.discretized_gaussian_log_likelihood(0.0, 0.0, 0.0)
            ld.prior_bpd(s, x0)
            with ld.Model(lambda x, t: [[0.0] * 2 for _ in x], 2) as m:
                m.output_dim
                m.set("clip_x0", 0)
                m.get("clip_x0")
                ld.p_mean_variance(m, s, x0, t, x0)
                with ld.Sampler(r, m, "ddim", 2) as smp:
                    smp.set("eta", 0)
                    smp.get("eta")
                    smp.set_progress(lambda a, b: None)
                    smp.memory
                    smp.run(seed=1, batch=2)
                    smp.step(x0, 1)
                    smp.invert(x0)
                with ld.Vlb(r, m, 2) as v:
                    v.set("cdf", 0)
                    v.get("cdf")
                    v.set_progress(None)
                    v.run(x0)
            with ld.Model(lambda x, t, lab: [[0.0] * 2 for _ in x], 2, classes=3,
                          unconditional=True) as cm:
                with ld.Sampler(r, cm, "ddim", 2) as smp:
                    smp.set("guidance", 2.0)
                    smp.run(seed=1, batch=2, labels=[0, ld.LABEL_NONE])
                    smp.step(x0, 1, labels=[2, 1])
                with ld.Vlb(r, cm, 2) as v:
                    v.run(x0, labels=[1, 2])
            with ld.Model(lambda x, t, lab: [[0.0] * 2 for _ in x], 2, classes=3,
                          float_timesteps=True) as fm, ld.Sampler(r, fm, "ddim", 2) as smp:
                smp.run(seed=1, batch=2, labels=[0, 1])
            with ld.Model(lambda x, t: [[0.0] * 2 for _ in x], 2, float_timesteps=True) as fm, \
                    ld.Model.external(2) as em, ld.Sampler(r, em, "dpmpp_2m", 2) as smp:
                fm.set("rescale_timesteps", 1)
                smp.timesteps()
                smp.reset()
                smp.step_output(0, x0, x0)
            ld.timesteps_from_spec(100, "10")
        ld.Net.unet(1, 2, 2, 2, 1, max_batch=1).close()
        ld.Net.iddpm(1, 2, 2, 4, "channel_mult=1 attention_resolutions= groups=2 num_heads=1",
                     max_batch=1).close()
        with ld.Schedule.cosine(10) as s, ld.Net.mlp(2, width=4, depth=1, max_batch=2) as net, \
                tempfile.TemporaryDirectory() as tmp:
            net.param_count
            net.set("num_threads", 0)
            net.set_params(net.get_params("ema"), "weights")
            net.forward([[0.0, 0.0]], [1])
            net.forward([[0.0, 0.0]], [1.5])
            with net.model("ema") as m, ld.Sampler(s, m, "ddim", 2) as smp:
                smp.run(seed=1, batch=2)
            with ld.Net.mlp(2, width=4, depth=1, max_batch=2) as cnet:
                cnet.set("classes", 2)
                cnet.forward([[0.0, 0.0]], [1], labels=[1])
                with ld.Trainer(cnet, s, 2) as ctr:
                    ctr.step([[0.0, 1.0], [1.0, 0.0]], seed=1, labels=[0, ld.LABEL_NONE])
            with ld.Trainer(net, s, 2) as tr:
                tr.set("lr", 1e-3)
                tr.get("step")
                tr.step([[0.0, 1.0], [1.0, 0.0]], seed=1)
                tr.compute_grads([[0.0, 1.0]], 1, 1, 2)
                rec = tr.records(1)
                tr.set_grads(tr.get_grads())
                tr.apply(2, list(flat(rec)) * 2)
                ld.checkpoint_format_version()
                path = os.path.join(tmp, "c.ckpt")
                ld.checkpoint_save(path, net, tr)
                net2, tr2 = ld.checkpoint_load(path, 2, s)
                tr2.close()
                net2.close()
                net2, tr2 = ld.checkpoint_load(path, 2, s, max_workspace=1 << 30)
                tr2.close()
                net2.close()
                ld.checkpoint_save(path, net, tr, meta="a=1")
                ld.checkpoint_read_meta(path)


# ---------------------------------------------------------------------------
# The example program
# ---------------------------------------------------------------------------

class ExampleTest(Base):

    def _run(self, *args):
        env = dict(os.environ)
        env.setdefault("LIBDIFFUSE_PATH", ld._path)
        return subprocess.run([sys.executable, EXAMPLE, *args], env=env, capture_output=True,
                              text=True, timeout=120)

    @needs_numpy
    def test_example_help_and_run(self):
        if not os.path.exists(EXAMPLE):
            self.skipTest("python/example.py not present")
        p = self._run("--help")
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertIn("usage", p.stdout)
        p = self._run("--samples", "2000", "--steps", "25")
        self.assertEqual(p.returncode, 0, p.stdout + p.stderr)
        self.assertIn("ok", p.stdout.splitlines()[-1])

    @needs_numpy
    def test_example_trains_saves_and_samples(self):
        if not os.path.exists(EXAMPLE):
            self.skipTest("python/example.py not present")
        with tempfile.TemporaryDirectory() as tmp:
            ckpt = os.path.join(tmp, "mix.ckpt")
            p = self._run("--train", "600", "--samples", "2000", "--quiet", "--checkpoint", ckpt)
            self.assertEqual(p.returncode, 0, p.stdout + p.stderr)
            self.assertIn("for 600 steps", p.stdout)
            self.assertIn("step 600", p.stdout)
            self.assertTrue(os.path.exists(ckpt))
            self.assertIn("ok", p.stdout.splitlines()[-1])


# ---------------------------------------------------------------------------
# Our runner's output format
# ---------------------------------------------------------------------------

class _RunnerResult(unittest.TestResult):
    """Prints "ok   NAME" / "FAIL NAME" (+ indented detail) / "skip NAME: REASON"."""

    def __init__(self):
        super().__init__()
        self.n_pass = self.n_fail = self.n_skip = 0

    @staticmethod
    def _name(test):
        method = getattr(test, "_testMethodName", None)
        return f"{type(test).__name__}.{method}" if method else str(test)

    def _out(self, line):
        sys.stdout.write(line + "\n")
        sys.stdout.flush()

    def addSuccess(self, test):
        super().addSuccess(test)
        self.n_pass += 1
        self._out(f"ok   {self._name(test)}")

    def _fail(self, name, err, test):
        self.n_fail += 1
        self._out(f"FAIL {name}")
        # unittest's own formatting, which leaves out its internal frames
        detail = self._exc_info_to_string(err, test).rstrip().splitlines()
        for line in detail[-30:]:
            self._out(f"    {line}")

    def addFailure(self, test, err):
        super().addFailure(test, err)
        self._fail(self._name(test), err, test)

    def addError(self, test, err):
        super().addError(test, err)
        self._fail(self._name(test), err, test)

    def addSubTest(self, test, subtest, err):
        super().addSubTest(test, subtest, err)
        if err is not None:
            self._fail(f"{self._name(test)} {subtest._subDescription()}", err, test)

    def addSkip(self, test, reason):
        super().addSkip(test, reason)
        self.n_skip += 1
        self._out(f"skip {self._name(test)}: {reason}")

    def addExpectedFailure(self, test, err):
        super().addExpectedFailure(test, err)
        self.n_pass += 1
        self._out(f"ok   {self._name(test)} (expected failure)")

    def addUnexpectedSuccess(self, test):
        super().addUnexpectedSuccess(test)
        self.n_fail += 1
        self._out(f"FAIL {self._name(test)}: unexpected success")


def main():
    print(f"# library {ld._path} (libdiffuse {ld.version_string()}, "
          f"OpenMP {'yes' if ld.has_openmp() else 'no'})")
    print(f"# numpy: {np.__version__ if HAVE_NUMPY else 'not used (' + NO_NUMPY_REASON + ')'}")
    suite = unittest.defaultTestLoader.loadTestsFromModule(sys.modules[__name__])
    result = _RunnerResult()
    suite.run(result)
    gc.collect()
    print(f"{result.n_pass} passed, {result.n_fail} failed, {result.n_skip} skipped")
    sys.stdout.flush()
    sys.exit(1 if result.n_fail else 0)


if __name__ == "__main__":
    main()
