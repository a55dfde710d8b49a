#!/usr/bin/env python3
"""Independent reference test for libdiffuse's elementwise VLB terms.

Run with Debian's interpreter, which has numpy (and python3-mpmath):

    LIBDIFFUSE_PATH=out/libdiffuse.so.1 /usr/bin/python3 tests/ref/test_vlb_terms.py

Functions under test (include/diffuse.h, "Variational bound: elementwise
terms"; docs NUMERICS.md section 5 and delicate spot 4):

    diffuse_normal_kl
    diffuse_standard_normal_cdf                  (DIFFUSE_CDF_TANH, DIFFUSE_CDF_EXACT)
    diffuse_discretized_gaussian_log_likelihood  (both modes)

The claim checked is "every VLB function matches an independent float64
computation to 1e-12 relative".  Two kinds of reference, neither mirroring
lib/vlb_terms.c:

1. The truth, with mpmath (50 significant digits, raised where a formula
   cancels): each definition is evaluated literally from the exact double
   inputs, e.g. KL = 1/2 (-1 + lv2 - lv1 + exp(lv1 - lv2) + (m1 - m2)^2
   exp(-lv2)) at 50 + 2 log10(1/|lv1 - lv2|) digits, and the tanh CDF
   1/2 (1 + tanh(y)) at 50 + 2|y|/ln 10 digits, so that the result is
   correct to far more than 1e-12 relative even where the value is 1e-300 or
   the log-likelihood is -1e-30.  Bin masses are formed from the two tail
   masses below a and above b (Phi(-z) = 1 - Phi(z) holds exactly for both
   CDFs), the log of a mass close to 1 as log1p(-tails), and the 1e-12
   probability floor is decided on the exact mass.  Without mpmath these
   cases print a "skip" line.

2. Parity with Improved DDPM's losses.py transcribed to numpy float64, on
   the whole input grids but only where that naive formula is well
   conditioned (its rounding error bound is below 1e-13 relative), to show
   that libdiffuse computes the same function as the reference code there.

Tolerance: |lib - ref| <= 1e-12 * max(|ref|, DBL_MIN) for every value (for
the log-likelihood, on the log value itself).  DBL_MIN (2.2e-308) in the
denominator only matters for results in the subnormal range, which no double
can carry to 12 digits; a reference beyond DBL_MAX must be +inf in the
library, a NaN input must give NaN, equal distributions must give exactly 0,
and a log-likelihood whose exact probability is below 1e-12 must be exactly
log(1e-12) (the double nearest ln(1e-12 as a double)).

Errors: a NULL array with n > 0 and an unknown mode give DIFFUSE_EINVAL (-1)
and write nothing; n = 0 with NULL arrays is OK; the output may alias any
input.

Information (lines starting with '#', not assertions): the worst relative
error of each function, and how far Improved DDPM's float32 computation
(numpy float32 transcription) is from the library and from the truth.

Output: one line per case, "ok   NAME", "FAIL NAME" with indented detail
lines, or "skip NAME: REASON"; the last line is "N passed, M failed, K
skipped".  Exit status 1 if any case failed, else 0.

Environment: LIBDIFFUSE_PATH (required, path of libdiffuse.so.1),
LIBDIFFUSE_TEST_SEED (optional, seed of the random inputs; printed),
LIBDIFFUSE_TEST_QUICK=1 (optional: only about half of the log-likelihood grid
against mpmath instead of all of it; about 2x faster than the default, which
takes ~10 s).
"""

import math
import os
import sys
import time
from ctypes import POINTER, c_double, c_int, c_size_t

import _ctcase
from _ctcase import last_error


def _skip_all(reason):
    print(f"skip test_vlb_terms: {reason}")
    print("0 passed, 0 failed, 1 skipped")
    sys.exit(0)


try:
    import numpy as np
except ImportError:
    _skip_all("numpy not installed")

try:
    import mpmath
    from mpmath import mp, mpf
    HAVE_MP = True
except ImportError:  # the high-precision cases are skipped
    HAVE_MP = False

RTOL = 1e-12
DIFFUSE_OK = 0
DIFFUSE_EINVAL = -1
CDF_TANH, CDF_EXACT = 0, 1
MODE_NAMES = {CDF_TANH: "tanh", CDF_EXACT: "exact"}
DBL_MIN = 2.2250738585072014e-308
LOG_FLOOR = math.log(1e-12)  # checked against mpmath in case_floor_constant
BIN_EDGES = (-0.999, 0.999)  # x below / above: the edge bins (header)
MP_DPS = 50

# ---------------------------------------------------------------------------
# Output bookkeeping
# ---------------------------------------------------------------------------

INFO = []  # '#' lines printed before the summary
WORST = {}  # function -> (rel, description), over every comparison made against mpmath


def run_case(name, fn, *args, needs_mp=False):
    _ctcase.run_case(name, fn, *args, skip_reason=None if HAVE_MP or not needs_mp else
                     "mpmath not installed (apt-get install python3-mpmath); "
                     "no high-precision reference")


def finish():
    _ctcase.finish([f"# worst relative error vs mpmath, {func}: {_fmt(rel)} ({where}); "
                    f"tolerance {RTOL:g}" for func, (rel, where) in sorted(WORST.items())] + INFO)


def _fmt(x):
    return f"{x:.3e}" if np.isfinite(x) else str(x)


# ---------------------------------------------------------------------------
# The library through ctypes
# ---------------------------------------------------------------------------

lib = None
PD = POINTER(c_double)


def load_library(case):
    global lib
    lib = _ctcase.load_library(case, {
        "diffuse_normal_kl": (c_int, [PD, PD, PD, PD, c_size_t, PD]),
        "diffuse_standard_normal_cdf": (c_int, [PD, c_size_t, c_int, PD]),
        "diffuse_discretized_gaussian_log_likelihood": (
            c_int, [PD, PD, PD, c_size_t, c_int, PD]),
    })


def dptr(a):
    return None if a is None else a.ctypes.data_as(PD)


def f64(a):
    """A fresh C-contiguous float64 copy."""
    return np.array(a, dtype=np.float64, order="C", copy=True).reshape(-1)


def lib_kl(m1, lv1, m2, lv2):
    m1, lv1, m2, lv2 = f64(m1), f64(lv1), f64(m2), f64(lv2)
    out = np.full(m1.size, -7.0)
    rc = lib.diffuse_normal_kl(dptr(m1), dptr(lv1), dptr(m2), dptr(lv2), m1.size, dptr(out))
    return rc, out


def lib_cdf(x, mode):
    x = f64(x)
    out = np.full(x.size, -7.0)
    rc = lib.diffuse_standard_normal_cdf(dptr(x), x.size, mode, dptr(out))
    return rc, out


def lib_dgll(x, mean, log_scale, mode):
    x, mean, log_scale = f64(x), f64(mean), f64(log_scale)
    out = np.full(x.size, -7.0)
    rc = lib.diffuse_discretized_gaussian_log_likelihood(dptr(x), dptr(mean), dptr(log_scale),
                                                         x.size, mode, dptr(out))
    return rc, out


def must_ok(case, rc, what):
    if not case.rc(rc, DIFFUSE_OK, what):
        raise _Abort()


class _Abort(Exception):
    """Stops a case after a failure already recorded."""


def guarded(fn):
    def wrapper(case, *args):
        try:
            fn(case, *args)
        except _Abort:
            pass
    return wrapper


# ---------------------------------------------------------------------------
# High-precision references (mpmath)
# ---------------------------------------------------------------------------
#
# Every reference takes the double inputs, converts them exactly (mpf(float)
# is exact) and evaluates the mathematical definition.  They return an mpf,
# None where the result is NaN, or FLOOR for a probability below 1e-12.

FLOOR = "floor"
if HAVE_MP:
    mp.dps = MP_DPS
    SQRT_2_OVER_PI = mp.sqrt(2 / mp.pi)
    GELU_C = mpf("0.044715")  # the decimal constant of the formula
    SQRT2 = mp.sqrt(2)
    HALF_BIN = mpf(1) / 255   # exact 1/255, the bin half-width
    P_FLOOR = mpf(1e-12)      # the double 1e-12, exactly
    LN10 = mp.log(10)


def mp_kl(m1, lv1, m2, lv2):
    """0.5 (-1 + lv2 - lv1 + exp(lv1 - lv2) + (m1 - m2)^2 exp(-lv2)), literally.

    -1 + lv2 - lv1 + exp(lv1 - lv2) = d^2/2 + ... for d = lv1 - lv2 -> 0: the
    sum cancels 2 log10(1/|d|) digits, so it runs at 60 + that many digits.
    Every other term is >= 0 (no cancellation between them)."""
    if any(math.isnan(v) for v in (m1, lv1, m2, lv2)):
        return None
    with mp.workdps(60):
        d = mpf(lv1) - mpf(lv2)
        extra = 0 if d == 0 else max(0, int(-2 * mp.log10(abs(d)))) + 10
    with mp.workdps(60 + extra):
        M1, L1, M2, L2 = mpf(m1), mpf(lv1), mpf(m2), mpf(lv2)
        var_part = -1 + L2 - L1 + mp.exp(L1 - L2)
        mean_part = (M1 - M2) ** 2 * mp.exp(-L2)
        return (var_part + mean_part) / 2


def mp_upper_tail(z, mode):
    """Q(z) = 1 - cdf(z) = cdf(-z), to ~50 significant digits, or 0 when it is
    below ~1e-400 (far beneath the smallest double)."""
    if mode == CDF_EXACT:
        # mpmath's erfc keeps its relative precision for large arguments
        # (erfc(5000) ~ 1e-10857000 is still computed to 50 digits).
        return mp.erfc(z / SQRT2) / 2
    # tanh: 1 - cdf(z) = 1/2 (1 + tanh(-y)), y = sqrt(2/pi) (z + 0.044715 z^3).
    y = -SQRT_2_OVER_PI * (z + GELU_C * z ** 3)
    if y >= 0:
        return (1 + mp.tanh(y)) / 2
    # 1 + tanh(y) ~ 2 exp(2y): 2|y| / ln 10 digits cancel.
    lost = -2 * y / LN10
    if lost > 400:
        return mpf(0)
    with mp.workdps(MP_DPS + int(lost) + 10):
        z2 = mpf(z)
        y = -SQRT_2_OVER_PI * (z2 + GELU_C * z2 ** 3)
        v = (1 + mp.tanh(y)) / 2
    return +v


def mp_cdf(x, mode):
    """The standard normal CDF of the double x in the given mode."""
    if math.isnan(x):
        return None
    if math.isinf(x):
        return mpf(1) if x > 0 else mpf(0)
    return mp_upper_tail(-mpf(x), mode)


def mp_dgll(x, mean, log_scale, mode):
    """log P(bin of x) under N(mean, exp(log_scale)^2) with the mode's CDF, or FLOOR.

    With a = (x - mean - 1/255) / sigma and b = (x - mean + 1/255) / sigma
    (exact), the mass is taken from the tails: with Q the upper tail,
      a >= 0:         Q(a) - Q(b)            (both small: relative error of
      b <= 0:         Q(-b) - Q(-a)           each term is 1e-50, mass >= 1e-12)
      a < 0 < b:      1 - (Q(-a) + Q(b)),    log as log1p(-(Q(-a) + Q(b)))
    and a lowest bin (x < -0.999) has no lower tail removed (a = -inf), the
    highest (x > 0.999) no upper tail (b = +inf)."""
    if any(math.isnan(v) for v in (x, mean, log_scale)):
        return None
    X, M, S = mpf(x), mpf(mean), mpf(log_scale)
    inv = mp.exp(-S)
    a = (X - M - HALF_BIN) * inv
    b = (X - M + HALF_BIN) * inv
    lowest, highest = x < BIN_EDGES[0], x > BIN_EDGES[1]
    Q = mp_upper_tail
    tails = None
    if lowest:
        if b > 0:
            tails = Q(b, mode)
        else:
            mass = Q(-b, mode)
    elif highest:
        if a < 0:
            tails = Q(-a, mode)
        else:
            mass = Q(a, mode)
    elif a >= 0:
        mass = Q(a, mode) - Q(b, mode)
    elif b <= 0:
        mass = Q(-b, mode) - Q(-a, mode)
    else:
        tails = Q(-a, mode) + Q(b, mode)
    if tails is not None:
        mass = 1 - tails
    if mass < P_FLOOR:
        return FLOOR
    if tails is not None:
        return mp.log1p(-tails)
    return mp.log(mass)


def to_double(v):
    if v is None:
        return math.nan
    if v == FLOOR:
        return LOG_FLOOR
    return float(v)  # correctly rounded; +-inf beyond the double range


class Compare:
    """Accumulates lib-vs-reference comparisons for one function over many points."""

    def __init__(self, case, func, what):
        self.case, self.func, self.what = case, func, what
        self.n = 0
        self.bad = []  # (rel, label, lib, ref_double, ref_mp)
        self.worst = (-1.0, None)
        self.floors = 0

    def add(self, lib_val, ref, label, exact_floor=True):
        """ref: mpf, None (NaN expected) or FLOOR."""
        self.n += 1
        lib_val = float(lib_val)
        if ref is None:
            if not math.isnan(lib_val):
                self.bad.append((math.inf, label, lib_val, math.nan, "NaN"))
            return
        if ref == FLOOR and exact_floor:
            self.floors += 1
            if lib_val != LOG_FLOOR:
                rel = (abs(lib_val - LOG_FLOOR) / abs(LOG_FLOOR)
                       if not math.isnan(lib_val) else math.inf)
                self.bad.append((max(rel, 1e-300), label, lib_val, LOG_FLOOR,
                                 "probability < 1e-12: exactly log(1e-12) expected"))
            return
        r = to_double(ref)
        if math.isinf(r):
            rel = 0.0 if lib_val == r else math.inf
        elif math.isnan(lib_val) or math.isinf(lib_val):
            rel = math.inf
        else:
            rel = abs(lib_val - r) / max(abs(r), DBL_MIN)
        if rel > self.worst[0]:
            self.worst = (rel, label, lib_val, r)
        if not rel <= RTOL:
            self.bad.append((rel, label, lib_val, r, ref))

    def done(self, max_show=4):
        if max_show is None:
            max_show = len(self.bad)
        key = f"{self.func} [{self.case.name}]"
        if self.worst[1] is not None:
            rel, label, lv, r = self.worst
            desc = f"{self.what}: {label}, lib {lv!r} ref {r!r}"
            if key not in WORST or rel > WORST[key][0]:
                WORST[key] = (rel, desc)
        if not self.bad:
            return True
        self.bad.sort(key=lambda t: -t[0] if not math.isnan(t[0]) else -math.inf)
        self.case.fail(f"{self.what}: {len(self.bad)} of {self.n} values off "
                       f"(tolerance {RTOL:g} relative); worst first:")
        for rel, label, lv, r, ref in self.bad[:max_show]:
            extra = ""
            if isinstance(ref, str):
                extra = f" [{ref}]"
            elif not (math.isinf(r) or math.isnan(lv) or math.isinf(lv)):
                extra = f" lib-ref {lv - r:.3e}"
            self.case.fail(f"  {label}: lib {lv!r} ref {r!r} rel {_fmt(rel)}{extra}")
        return False


# ---------------------------------------------------------------------------
# numpy references (Improved DDPM's losses.py, float64 and float32)
# ---------------------------------------------------------------------------

def np_normal_kl(m1, lv1, m2, lv2):
    # losses.normal_kl, in float64
    return 0.5 * (-1.0 + lv2 - lv1 + np.exp(lv1 - lv2) + ((m1 - m2) ** 2) * np.exp(-lv2))


def np_approx_cdf(x):
    # losses.approx_standard_normal_cdf; the dtype follows x (python scalars
    # do not promote a float32 array in numpy)
    return 0.5 * (1.0 + np.tanh(np.sqrt(2.0 / np.pi).astype(x.dtype) * (x + 0.044715 * x ** 3)))


_ERFC = np.vectorize(math.erfc, otypes=[np.float64])


def np_exact_cdf(x):
    return 0.5 * _ERFC(-x / math.sqrt(2.0))


def np_dgll(x, means, log_scales, cdf, floor=1e-12):
    """losses.discretized_gaussian_log_likelihood, transcribed; returns the
    log-probabilities and the probabilities before the floor."""
    centered_x = x - means
    inv_stdv = np.exp(-log_scales)
    plus_in = inv_stdv * (centered_x + 1.0 / 255.0)
    cdf_plus = cdf(plus_in)
    min_in = inv_stdv * (centered_x - 1.0 / 255.0)
    cdf_min = cdf(min_in)
    one_minus_cdf_min = 1.0 - cdf_min
    cdf_delta = cdf_plus - cdf_min
    fl = np.asarray(floor, dtype=x.dtype)
    with np.errstate(divide="ignore"):
        log_cdf_plus = np.log(np.maximum(cdf_plus, fl))
        log_one_minus_cdf_min = np.log(np.maximum(one_minus_cdf_min, fl))
        log_probs = np.where(
            x < -0.999, log_cdf_plus,
            np.where(x > 0.999, log_one_minus_cdf_min, np.log(np.maximum(cdf_delta, fl))))
    prob = np.where(x < -0.999, cdf_plus, np.where(x > 0.999, one_minus_cdf_min, cdf_delta))
    return log_probs, prob


# ---------------------------------------------------------------------------
# Input grids
# ---------------------------------------------------------------------------

def grid_x():
    return np.arange(256, dtype=np.float64) / 127.5 - 1.0  # k = 0 .. 255


GRID_MEANS = [-1.5, -1.0, -0.5, -0.25, 0.0, 0.25, 0.5, 1.0, 1.5,
              -0.7331234567, 0.2718281828, 0.9960784313725490,  # ~ off-grid and near x=1
              1.0 - 1.0 / 255.0, -1.0 + 1.0 / 255.0]           # on the edges of the edge bins
GRID_LOG_SCALES = [-8.0, -7.0, -6.0, -5.5413, -5.0, -4.6052, -4.0, -3.0, -2.0, -1.0,
                   0.0, 1.0, 2.0, 3.0]  # -5.54 ~ sigma = 1/255, -4.61 ~ sigma = 0.01


def dgll_grid():
    x = grid_x()
    X, M, S = np.meshgrid(x, np.array(GRID_MEANS), np.array(GRID_LOG_SCALES), indexing="ij")
    K = np.broadcast_to(np.arange(256)[:, None, None], X.shape)
    return X.reshape(-1), M.reshape(-1), S.reshape(-1), K.reshape(-1)


def dgll_sample(n, rng, full):
    """Indices of the grid points checked against mpmath: all of them, or with
    LIBDIFFUSE_TEST_QUICK=1 every point with k in {0, 1, 2, 127, 128,
    253, 254, 255} (edge bins and their neighbours, the centre) and a random
    half of the others."""
    if full:
        return np.arange(n)
    _, _, _, K = dgll_grid()
    special = np.isin(K, [0, 1, 2, 127, 128, 253, 254, 255])
    pick = special | (rng.random(n) < 0.5)
    return np.flatnonzero(pick)


def _lbl_dgll(k, x, m, s):
    kk = f"k={int(k)} " if k is not None and k >= 0 else ""
    return f"{kk}x={x!r} mean={m!r} log_scale={s!r}"


# ---------------------------------------------------------------------------
# Self-check of the references
# ---------------------------------------------------------------------------

def case_reference_self_check(case, rng):
    """The mpmath references above avoid cancellation by rearranging; check them
    against the plain definitions evaluated at 320-700 digits, where no
    rearrangement is needed (to 1e-30 relative; values below 1e-280, which
    the plain form cannot resolve at that precision, only absolutely)."""
    def close(a, b):
        return abs(a - b) <= mpf("1e-30") * abs(b) + mpf("1e-280")

    # normal_kl: the literal formula at 700 digits
    rows = kl_adversarial_inputs()[:60] + list(zip(*kl_random_inputs(rng, 40)))
    for r in rows:
        ref = mp_kl(*r)
        with mp.workdps(700):
            m1, lv1, m2, lv2 = (mpf(v) for v in r)
            direct = 0.5 * (-1 + lv2 - lv1 + mp.exp(lv1 - lv2) + (m1 - m2) ** 2 * mp.exp(-lv2))
            case.check(close(ref, direct), f"mp_kl{r}: {ref} vs 700 digits {direct}")
    # the two CDFs: 0.5 (1 + tanh(y)) and 0.5 erfc(-x / sqrt 2) at 400 digits
    for x in list(rng.uniform(-25.0, 25.0, 40)) + [-21.0, -12.5, -3.0, 0.0, 7.0]:
        for mode in (CDF_TANH, CDF_EXACT):
            ref = mp_cdf(float(x), mode)
            with mp.workdps(400):
                X = mpf(float(x))
                if mode == CDF_TANH:
                    direct = 0.5 * (1 + mp.tanh(mp.sqrt(2 / mp.pi) * (X + mpf("0.044715") * X ** 3)))
                else:
                    direct = 0.5 * mp.erfc(-X / mp.sqrt(2))
                case.check(close(ref, direct), f"mp_cdf({x!r}, {mode}): {ref} vs {direct}")
    # the log-likelihood: losses.py's formula, literally, at 320 digits
    X, M, S, K = dgll_grid()
    pick = rng.choice(X.size, 120, replace=False)
    for i in pick:
        x, m, s = float(X[i]), float(M[i]), float(S[i])
        for mode in (CDF_TANH, CDF_EXACT):
            ref = mp_dgll(x, m, s, mode)
            with mp.workdps(320):
                if mode == CDF_TANH:
                    cdf = lambda z: 0.5 * (1 + mp.tanh(mp.sqrt(2 / mp.pi) *
                                                       (z + mpf("0.044715") * z ** 3)))
                else:
                    cdf = lambda z: 0.5 * mp.erfc(-z / mp.sqrt(2))
                inv = mp.exp(-mpf(s))
                cp = cdf(inv * (mpf(x) - mpf(m) + mpf(1) / 255))
                cm = cdf(inv * (mpf(x) - mpf(m) - mpf(1) / 255))
                p = cp if x < -0.999 else (1 - cm) if x > 0.999 else cp - cm
                if p < mpf(1e-12):
                    case.check(ref == FLOOR, f"mp_dgll{(x, m, s, mode)}: {ref}, direct p {p}")
                else:
                    case.check(ref != FLOOR and close(ref, mp.log(p)),
                               f"mp_dgll{(x, m, s, mode)}: {ref} vs {mp.log(p)}")


# ---------------------------------------------------------------------------
# Cases: normal_kl
# ---------------------------------------------------------------------------

def kl_random_inputs(rng, n=3000):
    scale = rng.choice([1e-3, 1.0, 30.0], size=n)
    m1 = rng.standard_normal(n) * scale
    m2 = rng.standard_normal(n) * scale
    lv1 = rng.uniform(-25.0, 8.0, n)
    lv2 = rng.uniform(-25.0, 8.0, n)
    # a third with log-variances close to each other, as in late diffusion steps
    close = rng.random(n) < 0.33
    lv1[close] = lv2[close] + rng.standard_normal(close.sum()) * 10.0 ** rng.uniform(-12, 0,
                                                                                  close.sum())
    return m1, lv1, m2, lv2


def kl_adversarial_inputs():
    rows = []
    # equal distributions (checked for exact 0 separately too)
    for m, lv in [(0.0, 0.0), (1.5, -3.0), (-1e300, 700.0), (5e-324, -700.0), (0.3, 1e-300)]:
        rows.append((m, lv, m, lv))
    # lv1 - lv2 tiny: the variance part is ~ d^2/2
    for lv2 in (0.0, -7.0, -20.0, 3.0, 650.0):
        for d in (1e-8, -1e-8, 1e-12, -3e-15, 2.0 ** -40, 1e-4, -0.4999999, 0.5000001,
                  -0.5, 0.5, 0.49999999999, -0.50000000001):
            rows.append((0.0, lv2 + d, 0.0, lv2))
            rows.append((0.25, lv2 + d, 0.25 + 1e-9, lv2))
    rows.append((0.0, 1e-300, 0.0, 0.0))
    rows.append((0.0, 5e-324, 0.0, 0.0))
    rows.append((0.0, 0.0, 0.0, -1e-200))
    rows.append((0.0, 1.0 + 2.0 ** -52, 0.0, 1.0))
    # means equal to a few ulps, log-variances equal
    rows.append((1.0, -5.0, 1.0 + 2.0 ** -52, -5.0))
    rows.append((1e-170, 0.0, 0.0, 0.0))  # (m1-m2)^2 = 1e-340: subnormal/zero KL
    # large mean differences
    for dm in (1e3, 1e8, 1e50, 1e150, -1e154, 1e154, 3e154):
        rows.append((dm, 0.0, 0.0, 0.0))
        rows.append((dm, -2.0, 0.0, -10.0))
    rows.append((1e160, 0.0, -1e160, 0.0))   # true KL ~ 2e320: +inf
    # large |logvar|
    for lv1, lv2 in [(700.0, 0.0), (0.0, 700.0), (-700.0, 0.0), (0.0, -700.0), (-700.0, -700.0),
                     (700.0, 700.0), (709.0, 0.0), (-745.0, 0.0), (0.0, 745.0), (1400.0, 0.0),
                     (-1e300, 0.0), (0.0, 1e300), (350.0, -350.0), (0.0, -709.0),
                     (-20.0, 20.0), (20.0, -20.0)]:
        rows.append((0.0, lv1, 0.0, lv2))
        rows.append((1.0, lv1, -1.0, lv2))
    return [tuple(map(float, r)) for r in rows]


def kl_extreme_scaling_inputs():
    """Inputs whose obvious evaluation over- or underflows in an intermediate
    although the exact KL is an ordinary number (or +inf): (m1 - m2)^2 beyond
    the double range while exp(-lv2) brings it back, or below it while
    exp(-lv2) lifts it; exp(lv1 - lv2) just above DBL_MAX while half of it is
    not; exp(-lv2) = inf (lv2 < -709.78) times (m1 - m2)^2 = 0."""
    return [
        (1e200, 0.0, 0.0, 700.0),        # 1e400 * e^-700 / 2 = 4.9e95 (variance part ~700)
        (1e160, -3.0, 0.0, 400.0),       # 1e320 * e^-400 / 2 = 9.6e145
        (1e-170, -700.0, 0.0, -700.0),   # 1e-340 * e^700 / 2 = 5.1e-37 (variance part 0)
        (3e-200, -600.0, 0.0, -600.0),   # 9e-400 * e^600 / 2 = 1.7e-139
        (0.0, 710.0, 0.0, 0.0),          # (e^710 - 711) / 2 = 1.1e308 < DBL_MAX
        (5e-324, -745.0, 5e-324, -745.0),  # equal distributions: exactly 0
        (0.0, 0.0, 0.0, -745.0),         # (e^745 - 746) / 2: +inf
    ]


@guarded
def case_kl_mp(case, label, rows, exact_zero_rows=()):
    m1, lv1, m2, lv2 = (np.array(c, dtype=np.float64) for c in zip(*rows))
    rc, out = lib_kl(m1, lv1, m2, lv2)
    must_ok(case, rc, "diffuse_normal_kl")
    cmp_ = Compare(case, "normal_kl", label)
    for i in range(len(rows)):
        ref = mp_kl(m1[i], lv1[i], m2[i], lv2[i])
        cmp_.add(out[i], ref, f"m1={m1[i]!r} lv1={lv1[i]!r} m2={m2[i]!r} lv2={lv2[i]!r}")
    cmp_.done()
    for i, r in enumerate(rows):
        if r[0] == r[2] and r[1] == r[3]:
            case.check(out[i] == 0.0 and not math.copysign(1.0, out[i]) < 0,
                       f"equal distributions m={r[0]!r} lv={r[1]!r}: {out[i]!r}, expected +0.0")


@guarded
def case_kl_naive_parity(case, rng):
    """losses.normal_kl in float64 where it is well conditioned: its rounding
    error is below ~4 eps times (1 + |lv1| + |lv2| + e^d (1 + |d|) + dm^2 e^-lv2),
    so points whose ratio of that sum to the result is <= 100 are kept
    (error <= 1e-13 relative)."""
    m1, lv1, m2, lv2 = kl_random_inputs(rng, 20000)
    d = lv1 - lv2
    with np.errstate(over="ignore"):
        naive = np_normal_kl(m1, lv1, m2, lv2)
        size = 1 + np.abs(lv1) + np.abs(lv2) + np.exp(d) * (1 + np.abs(d)) + \
            (m1 - m2) ** 2 * np.exp(-lv2)
    good = np.isfinite(naive) & (naive > 0) & (size <= 100 * 2 * naive)
    rc, out = lib_kl(m1, lv1, m2, lv2)
    must_ok(case, rc, "diffuse_normal_kl")
    rel = np.abs(out[good] - naive[good]) / np.abs(naive[good])
    case.check(good.sum() > 5000, f"only {good.sum()} well-conditioned points (test bug)")
    w = int(np.argmax(rel))
    idx = np.flatnonzero(good)[w]
    INFO.append(f"# normal_kl vs losses.py in float64 on {good.sum()} of {m1.size} random points "
                f"where it is well conditioned: max rel diff {_fmt(rel[w])}")
    case.check(rel[w] <= RTOL,
               f"{(rel > RTOL).sum()} points differ; worst m1={m1[idx]!r} lv1={lv1[idx]!r} "
               f"m2={m2[idx]!r} lv2={lv2[idx]!r}: lib {out[idx]!r} naive {naive[idx]!r} "
               f"rel {_fmt(rel[w])}")


@guarded
def case_kl_nan(case):
    base = [0.3, -1.0, -0.2, -2.0]
    rows = []
    for j in range(4):
        r = list(base)
        r[j] = math.nan
        rows.append(r)
    rows.append([math.nan] * 4)
    rows.append([0.0, math.nan, 0.0, math.nan])
    m1, lv1, m2, lv2 = (np.array(c) for c in zip(*rows))
    rc, out = lib_kl(m1, lv1, m2, lv2)
    must_ok(case, rc, "diffuse_normal_kl")
    for i, r in enumerate(rows):
        case.check(math.isnan(out[i]), f"inputs {r}: {out[i]!r}, expected NaN")


# ---------------------------------------------------------------------------
# Cases: standard_normal_cdf
# ---------------------------------------------------------------------------

def cdf_inputs(rng):
    x = np.concatenate([
        np.linspace(-40.0, 40.0, 8001),
        rng.uniform(-40.0, 40.0, 2000),
        np.linspace(-22.0, -18.0, 401),   # tanh mode crosses 1e-300 .. 1e-330 here
        np.linspace(-38.6, -36.9, 171),   # exact mode crosses 1e-300 .. 1e-330 here
        [0.0, -0.0, 5e-324, -5e-324, 1e-300, -1e-300, 1e-8, -1e-8, 2.5899, -2.5899],
    ])
    return x


@guarded
def case_cdf_mp(case, mode, rng):
    x = cdf_inputs(rng)
    rc, out = lib_cdf(x, mode)
    must_ok(case, rc, f"diffuse_standard_normal_cdf mode {mode}")
    cmp_ = Compare(case, f"standard_normal_cdf[{MODE_NAMES[mode]}]", "x in [-40, 40]")
    tiny = 0
    sub = [0, 0.0]  # results below DBL_MIN: count, max |lib - ref| in units of 2^-1074
    for i in range(x.size):
        ref = mp_cdf(float(x[i]), mode)
        if 0 < ref < mpf("1e-290"):
            tiny += 1
        if 0 < ref < DBL_MIN:
            sub[0] += 1
            sub[1] = max(sub[1], float(abs(mpf(float(out[i])) - ref) / mpf(2) ** -1074))
        cmp_.add(out[i], ref, f"x={x[i]!r}")
    cmp_.done()
    INFO.append(f"# cdf[{MODE_NAMES[mode]}]: {sub[0]} exact values below DBL_MIN (subnormal or 0 "
                f"in double, held to |lib - ref| <= 1e-12 DBL_MIN): max |lib - ref| "
                f"{sub[1]:.3g} x 2^-1074")
    # information: the deepest value still in the normal range
    normal = [(xi, o) for xi, o in zip(x, out) if DBL_MIN <= o < 1e-290]
    if normal:
        xi, o = min(normal, key=lambda t: t[1])
        INFO.append(f"# cdf[{MODE_NAMES[mode]}]: {tiny} inputs with value < 1e-290, e.g. "
                    f"x={xi!r}: lib {o!r}, mpmath {mpmath.nstr(mp_cdf(float(xi), mode), 17)}")


@guarded
def case_cdf_extremes(case):
    """Beyond [-40, 40]: +-inf and huge x have the limits 0 and 1 exactly (the
    tanh form's x^3 overflows to +-inf for |x| > 1.7e102), and the tanh form's
    own error, 1.79e-4 at x ~ 2.59 (NUMERICS.md spot 4), is reproduced."""
    x = np.array([-math.inf, math.inf, -1e10, 1e10, -1e200, 1e200, -1e308, 1e308])
    for mode in (CDF_TANH, CDF_EXACT):
        rc, out = lib_cdf(x, mode)
        must_ok(case, rc, f"cdf mode {mode}")
        want = np.where(x > 0, 1.0, 0.0)
        case.check(np.array_equal(out, want),
                   f"mode {mode}: x={x.tolist()} gave {out.tolist()}, expected {want.tolist()}")
    xs = np.linspace(2.4, 2.8, 4001)
    _, t = lib_cdf(xs, CDF_TANH)
    _, e = lib_cdf(xs, CDF_EXACT)
    i = int(np.argmax(np.abs(t - e)))
    err = abs(t[i] - e[i])
    INFO.append(f"# tanh CDF max |tanh - exact| near x=2.59: {err:.4e} at x={xs[i]:.4f}")
    case.check(1.78e-4 < err < 1.80e-4 and 2.5 < xs[i] < 2.7,
               f"tanh CDF error {err:.4e} at x={xs[i]:.4f}, expected 1.79e-4 near 2.59")


@guarded
def case_cdf_naive_parity(case, rng):
    """losses.approx_standard_normal_cdf in float64 where 1 + tanh(y) does not
    cancel (x >= -0.5), and 0.5 (1 + erf(x / sqrt 2)) for the exact mode where
    that does not cancel (x >= -1)."""
    x = np.concatenate([np.linspace(-0.5, 40.0, 20001), rng.uniform(-0.5, 8.0, 5000)])
    rc, out = lib_cdf(x, CDF_TANH)
    must_ok(case, rc, "cdf tanh")
    ref = np_approx_cdf(x)
    rel = np.abs(out - ref) / ref
    w = int(np.argmax(rel))
    case.check(rel[w] <= RTOL, f"tanh: worst x={x[w]!r}: lib {out[w]!r} losses.py {ref[w]!r} "
                               f"rel {_fmt(rel[w])}")
    x2 = x + (-0.5)  # x >= -1
    rc, out2 = lib_cdf(x2, CDF_EXACT)
    must_ok(case, rc, "cdf exact")
    ref2 = 0.5 * (1.0 + np.vectorize(math.erf)(x2 / math.sqrt(2.0)))
    rel2 = np.abs(out2 - ref2) / ref2
    w2 = int(np.argmax(rel2))
    case.check(rel2[w2] <= RTOL, f"exact: worst x={x2[w2]!r}: lib {out2[w2]!r} "
                                 f"0.5(1+erf) {ref2[w2]!r} rel {_fmt(rel2[w2])}")
    INFO.append(f"# cdf vs float64 formulas where well conditioned: tanh (losses.py, "
                f"x >= -0.5) max rel {_fmt(rel[w])}; exact (0.5(1+erf), x >= -1) "
                f"max rel {_fmt(rel2[w2])}")


@guarded
def case_cdf_nan(case):
    x = np.array([math.nan, -math.nan, 0.0])
    for mode in (CDF_TANH, CDF_EXACT):
        rc, out = lib_cdf(x, mode)
        must_ok(case, rc, f"cdf mode {mode}")
        case.check(math.isnan(out[0]) and math.isnan(out[1]) and out[2] == 0.5,
                   f"mode {mode}: [nan, -nan, 0] gave {out.tolist()}")


# ---------------------------------------------------------------------------
# Cases: discretized_gaussian_log_likelihood
# ---------------------------------------------------------------------------

def case_floor_constant(case):
    want = float(mp.log(mpf(1e-12)))
    case.check(LOG_FLOOR == want, f"math.log(1e-12) = {LOG_FLOOR!r} but the correctly "
                                  f"rounded ln(1e-12) is {want!r}")


DGLL_CATEGORIES = {}  # (mode, category) -> [count, failures, worst rel]


def _dgll_category(k, x, ref):
    if ref == FLOOR:
        return "floored (p < 1e-12)"
    where = "lowest bin" if x < -0.999 else "highest bin" if x > 0.999 else "interior bin"
    if ref is None:
        return "NaN"
    lp = float(ref)
    band = ("log p > -1e-3" if lp > -1e-3 else "log p in [-5, -1e-3]" if lp >= -5
            else "log p < -5")
    return f"{where}, {band}"


@guarded
def case_dgll_mp(case, mode, idx):
    X, M, S, K = dgll_grid()
    rc, out = lib_dgll(X, M, S, mode)
    must_ok(case, rc, f"dgll mode {mode}")
    name = MODE_NAMES[mode]
    cmp_ = Compare(case, f"discretized_log_likelihood[{name}]",
                   f"grid {len(idx)} of {X.size} points (x = k/127.5 - 1, "
                   f"{len(GRID_MEANS)} means, {len(GRID_LOG_SCALES)} log-scales)")
    cats = {}
    for i in idx:
        x, m, s = float(X[i]), float(M[i]), float(S[i])
        ref = mp_dgll(x, m, s, mode)
        nb = len(cmp_.bad)
        cmp_.add(out[i], ref, _lbl_dgll(K[i], x, m, s))
        cat = _dgll_category(K[i], x, ref)
        c = cats.setdefault(cat, [0, 0, 0.0, None])
        c[0] += 1
        if len(cmp_.bad) > nb:
            c[1] += 1
            if cmp_.bad[-1][0] > c[2]:
                c[2] = cmp_.bad[-1][0]
                r = to_double(ref)
                c[3] = (f"{_lbl_dgll(K[i], x, m, s)}: lib {out[i]!r} ref {r!r}, "
                        f"lib-ref {out[i] - r:.4g}")
    ok = cmp_.done()
    if not ok:
        case.fail("  failures by category (points, failed, worst rel, worst example):")
        for cat, (n, nf, w, ex) in sorted(cats.items()):
            case.fail(f"    {cat}: {n} points, {nf} failed" +
                      (f", worst rel {_fmt(w)}: {ex}" if nf else ""))
    INFO.append(f"# dgll[{name}] vs mpmath: {len(idx)} grid points, {cmp_.floors} with "
                f"probability < 1e-12 (exact floor required)")


@guarded
def case_dgll_offgrid_mp(case):
    """Off-grid inputs (accepted and binned by the same thresholds) and
    individually chosen adversarial points."""
    rows = [(-0.9995, 0.0, -2.0), (-0.9985, -1.0, -5.0), (0.9985, 1.0, -5.0), (0.9995, 0.2, 0.0),
            (1.2, 1.0, -1.0), (-3.0, -2.9, 0.5), (3.0, 0.0, 0.0), (0.123456789, 0.1234, -8.0),
            (0.5, 0.5 + 1.0 / 255.0, -8.0),   # bin edge at the mean, narrow Gaussian
            (-1.0, -1.0 + 1.0 / 255.0, -8.0), (1.0, 1.0 - 1.0 / 255.0, -8.0),
            (0.0, 0.0, -8.5), (0.0, 0.0, -9.0), (0.0, 0.0, -12.0), (0.0, 0.0, -40.0),
            (1.0, 1.0, -40.0), (-1.0, -1.0, -40.0), (0.0, 0.0, 10.0), (0.0, 0.0, 30.0),
            (-1.0, 1.0, 40.0), (1.0, -1.0, 40.0)]
    # probability close to 1 (log p small): lowest bin with b = z, highest with
    # a = -z (sigma = e^-3), and an interior bin centred on the mean with
    # half-width z standard deviations
    for z in (3.0, 4.0, 5.0, 7.0, 9.0):
        rows.append((-1.0, -1.0 + 1.0 / 255.0 - z * math.exp(-3.0), -3.0))
        rows.append((1.0, 1.0 - 1.0 / 255.0 + z * math.exp(-3.0), -3.0))
        rows.append((0.0, 0.0, -math.log(255.0 * z)))
    for mode in (CDF_TANH, CDF_EXACT):
        x, m, s = (np.array(c) for c in zip(*rows))
        rc, out = lib_dgll(x, m, s, mode)
        must_ok(case, rc, f"dgll mode {mode}")
        cmp_ = Compare(case, f"discretized_log_likelihood[{MODE_NAMES[mode]}]",
                       f"mode {mode} off-grid/adversarial points")
        for i, r in enumerate(rows):
            cmp_.add(out[i], mp_dgll(*r, mode), _lbl_dgll(None, *r))
        cmp_.done(max_show=None)


@guarded
def case_dgll_extreme_mp(case):
    """The full finite range (issue 12): log_scale from -1e308 to 1e308 and
    |x - mean| up to ~1e308, in both modes, against mpmath (whose exponent
    range is unbounded, so e^-log_scale is exact there).  Every result must
    be finite and within the usual tolerance; before 1.1 the tanh mode gave
    NaN for x = 0.5, mean = 0, log_scale <= -240."""
    xs = [-1.0, 1.0 / 127.5 - 1.0, -0.5, 0.0, 0.5, 1.0 - 1.0 / 127.5, 1.0]
    # means whose bin edges fall exactly on x - mean +- 1/255 in double but
    # not in exact arithmetic are left out: they are decided by rounding
    means = [-1e308, -1e200, -3.0, -1.0, -0.5, -0.3, 0.0, 0.001, 0.5,
             0.7, 1.0, 3.0, 1e200, 1e308]
    # mpmath needs exp(-log_scale) as a number: up to |log_scale| = 1e5 here;
    # the C test checks +-1e308 against the closed-form limits
    log_scales = [-1e5, -745.0, -709.5, -700.5, -500.0, -240.0, -100.0,
                  -30.0, 30.0, 100.0, 240.0, 500.0, 700.5, 709.5, 745.0, 1e5]
    rows = [(x, m, ls) for x in xs for m in means for ls in log_scales]
    for mode in (CDF_TANH, CDF_EXACT):  # finiteness alone at +-1e308
        far = [(x, m, ls) for x in xs for m in means for ls in (-1e308, 1e308)]
        x, m, s = (np.array(c) for c in zip(*far))
        rc, out = lib_dgll(x, m, s, mode)
        must_ok(case, rc, f"dgll mode {mode}")
        case.check(all(math.isfinite(v) for v in out),
                   f"mode {mode}: a non-finite result at log_scale = +-1e308")
    for mode in (CDF_TANH, CDF_EXACT):
        x, m, s = (np.array(c) for c in zip(*rows))
        rc, out = lib_dgll(x, m, s, mode)
        must_ok(case, rc, f"dgll mode {mode}")
        bad = [i for i in range(len(rows)) if not math.isfinite(out[i])]
        case.check(not bad, f"mode {mode}: {len(bad)} non-finite results, first "
                            f"{rows[bad[0]] if bad else None} -> {out[bad[0]] if bad else None}")
        cmp_ = Compare(case, f"discretized_log_likelihood[{MODE_NAMES[mode]}]",
                       f"mode {mode} extreme scales and means")
        beyond = 0
        for i, r in enumerate(rows):
            try:
                ref = mp_dgll(*r, mode)
            except OverflowError:  # an edge beyond what mpmath's erfc evaluates
                beyond += 1
                continue
            cmp_.add(out[i], ref, _lbl_dgll(None, *r))
        cmp_.done(max_show=6)
        INFO.append(f"# dgll[{MODE_NAMES[mode]}] extreme range: {len(rows) - beyond} of "
                    f"{len(rows)} points against mpmath ({beyond} beyond its erfc)")


@guarded
def case_dgll_naive_parity(case, mode):
    """losses.discretized_gaussian_log_likelihood in float64 over the whole grid,
    where it is well conditioned: each CDF value has an absolute error of a few
    1e-16, so log p is good to ~5e-16 / (p |log p|) relative; points with
    p |log p| >= 0.02 (p in [0.0035, 0.98]) are kept (<= 3e-14)."""
    X, M, S, K = dgll_grid()
    cdf = np_approx_cdf if mode == CDF_TANH else np_exact_cdf
    naive, p = np_dgll(X, M, S, cdf)
    with np.errstate(divide="ignore", invalid="ignore"):
        good = (p > 0) & (p < 1) & (p * np.abs(np.log(p)) >= 0.02)
    rc, out = lib_dgll(X, M, S, mode)
    must_ok(case, rc, f"dgll mode {mode}")
    rel = np.abs(out[good] - naive[good]) / np.abs(naive[good])
    bad = rel > RTOL
    w = int(np.argmax(rel))
    i = np.flatnonzero(good)[w]
    INFO.append(f"# dgll[{MODE_NAMES[mode]}] vs losses.py in float64 on {good.sum()} "
                f"well-conditioned grid points: max rel diff {_fmt(rel[w])}")
    if bad.any():
        bi = np.flatnonzero(good)[bad]
        diffs = out[bi] - naive[bi]
        edge = (X[bi] < -0.999) | (X[bi] > 0.999)
        case.fail(f"{bad.sum()} of {good.sum()} points differ ({edge.sum()} in edge bins); "
                  f"lib - losses.py ranges over [{diffs.min():.6g}, {diffs.max():.6g}] "
                  f"(ln 2 = {math.log(2):.6g}); worst "
                  f"{_lbl_dgll(K[i], X[i], M[i], S[i])}: lib {out[i]!r} losses.py "
                  f"{naive[i]!r} rel {_fmt(rel[w])}")


@guarded
def case_dgll_nan(case):
    rows = [(math.nan, 0.0, 0.0)]
    for x in (-1.0, 0.0, 1.0):
        rows += [(x, math.nan, 0.0), (x, 0.0, math.nan), (x, math.nan, math.nan)]
    x, m, s = (np.array(c) for c in zip(*rows))
    for mode in (CDF_TANH, CDF_EXACT):
        rc, out = lib_dgll(x, m, s, mode)
        must_ok(case, rc, f"dgll mode {mode}")
        for i, r in enumerate(rows):
            case.check(math.isnan(out[i]), f"mode {mode} inputs {r}: {out[i]!r}, expected NaN")


def info_float32():
    """Improved DDPM runs losses.py in float32; how much does that lose?"""
    X, M, S, K = dgll_grid()
    rc, out = lib_dgll(X, M, S, CDF_TANH)
    if rc != DIFFUSE_OK:
        INFO.append(f"# float32 comparison not available: status {rc}")
        return
    f32, _ = np_dgll(X.astype(np.float32), M.astype(np.float32), S.astype(np.float32),
                     np_approx_cdf, floor=np.float32(1e-12))
    f32 = f32.astype(np.float64)
    f64ref, _ = np_dgll(X, M, S, np_approx_cdf)
    d = np.abs(out - f32)
    i = int(np.argmax(d))
    INFO.append(f"# float32 losses.py vs library (tanh mode), {X.size} grid points: max |diff| "
                f"{d[i]:.4g} nats at {_lbl_dgll(K[i], X[i], M[i], S[i])} "
                f"(lib {out[i]:.10g}, float32 {f32[i]:.10g}); mean |diff| {d.mean():.4g}")
    floored32 = (f32 <= np.float32(LOG_FLOOR) + 1e-5) & (out > LOG_FLOOR + 1e-3)
    INFO.append(f"# float32 losses.py hits the log(1e-12) floor at {floored32.sum()} grid points "
                f"where the library does not")
    d64 = np.abs(f64ref - f32)
    j = int(np.argmax(d64))
    INFO.append(f"# float32 vs float64 losses.py (same formula): max |diff| {d64[j]:.4g} nats at "
                f"{_lbl_dgll(K[j], X[j], M[j], S[j])}")
    if HAVE_MP:
        # against the truth on a subsample of the non-floored points
        rng = np.random.default_rng(7)
        cand = np.flatnonzero(out > LOG_FLOOR + 1e-6)
        pick = rng.choice(cand, size=min(1500, cand.size), replace=False)
        worst = (0.0, None)
        refs = []
        for i in pick:
            ref = mp_dgll(float(X[i]), float(M[i]), float(S[i]), CDF_TANH)
            refs.append(to_double(ref))
            e = abs(f32[i] - to_double(ref))
            if e > worst[0]:
                worst = (e, i, to_double(ref))
        far = [(abs(f32[i] - r), i, r) for i, r in zip(pick, refs) if r >= -10.0]
        if far:
            e, i, r = max(far)
            INFO.append(f"# float32 losses.py vs mpmath truth (tanh mode) where the truth is "
                        f">= -10 nats ({len(far)} points): max |diff| {e:.4g} nats at "
                        f"{_lbl_dgll(K[i], X[i], M[i], S[i])} (truth {r:.10g}, float32 "
                        f"{f32[i]:.10g})")
        if worst[1] is not None:
            e, i, r = worst
            INFO.append(f"# float32 losses.py vs mpmath truth (tanh mode), {pick.size} random "
                        f"non-floored grid points: max |diff| {e:.4g} nats at "
                        f"{_lbl_dgll(K[i], X[i], M[i], S[i])} (truth {r:.10g}, float32 "
                        f"{f32[i]:.10g})")


# ---------------------------------------------------------------------------
# Cases: argument errors and aliasing
# ---------------------------------------------------------------------------

SENTINEL = -7.25


@guarded
def case_errors(case):
    n = 3
    a = [f64([0.1, -0.2, 0.3]) for _ in range(5)]
    a[3] = f64([-1.0, 0.0, 1.0])  # valid as log-scales / x too

    def expect(what, got, out=None):
        if case.rc(got, DIFFUSE_EINVAL, what):
            msg = last_error()
            case.check(msg, f"{what}: diffuse_last_error() empty after a failure")
            if out is not None:
                case.check((out == SENTINEL).all(), f"{what}: output written on failure: "
                                                    f"{out.tolist()}")

    # normal_kl: each of the five arrays NULL with n > 0
    for j in range(5):
        args = [dptr(v) for v in a[:4]]
        out = np.full(n, SENTINEL)
        outp = dptr(out)
        if j < 4:
            args[j] = None
        else:
            outp = None
        expect(f"normal_kl array {j} NULL, n={n}", lib.diffuse_normal_kl(*args, n, outp),
               out if j < 4 else None)
    case.rc(lib.diffuse_normal_kl(None, None, None, None, 0, None), DIFFUSE_OK,
            "normal_kl all NULL, n=0")

    # standard_normal_cdf
    for mode in (CDF_TANH, CDF_EXACT):
        out = np.full(n, SENTINEL)
        expect(f"cdf mode {mode} x NULL", lib.diffuse_standard_normal_cdf(None, n, mode,
                                                                          dptr(out)), out)
        expect(f"cdf mode {mode} out NULL",
               lib.diffuse_standard_normal_cdf(dptr(a[0]), n, mode, None))
        case.rc(lib.diffuse_standard_normal_cdf(None, 0, mode, None), DIFFUSE_OK,
                f"cdf mode {mode} NULL, n=0")
    for mode in (2, -1, 3, 1 << 30):
        out = np.full(n, SENTINEL)
        expect(f"cdf unknown mode {mode}",
               lib.diffuse_standard_normal_cdf(dptr(a[0]), n, mode, dptr(out)), out)
        expect(f"cdf unknown mode {mode}, n=0 NULL",
               lib.diffuse_standard_normal_cdf(None, 0, mode, None))

    # discretized log-likelihood
    f = lib.diffuse_discretized_gaussian_log_likelihood
    for mode in (CDF_TANH, CDF_EXACT):
        for j in range(4):
            args = [dptr(a[3]), dptr(a[0]), dptr(a[1])]
            out = np.full(n, SENTINEL)
            outp = dptr(out)
            if j < 3:
                args[j] = None
            else:
                outp = None
            expect(f"dgll mode {mode} array {j} NULL", f(*args, n, mode, outp),
                   out if j < 3 else None)
        case.rc(f(None, None, None, 0, mode, None), DIFFUSE_OK, f"dgll mode {mode} NULL, n=0")
    for mode in (2, -1, 3):
        out = np.full(n, SENTINEL)
        expect(f"dgll unknown mode {mode}",
               f(dptr(a[3]), dptr(a[0]), dptr(a[1]), n, mode, dptr(out)), out)
        expect(f"dgll unknown mode {mode}, n=0 NULL", f(None, None, None, 0, mode, None))


@guarded
def case_aliasing(case, rng):
    n = 64
    m1, m2 = rng.standard_normal(n), rng.standard_normal(n)
    lv1, lv2 = rng.uniform(-10, 2, n), rng.uniform(-10, 2, n)
    rc, want = lib_kl(m1, lv1, m2, lv2)
    must_ok(case, rc, "normal_kl")
    for j in range(4):
        arrs = [f64(v) for v in (m1, lv1, m2, lv2)]
        rc = lib.diffuse_normal_kl(*[dptr(v) for v in arrs], n, dptr(arrs[j]))
        if case.rc(rc, DIFFUSE_OK, f"normal_kl out = input {j}"):
            case.check(np.array_equal(arrs[j], want), f"normal_kl out = input {j}: differs")
    x = rng.uniform(-6, 6, n)
    for mode in (CDF_TANH, CDF_EXACT):
        rc, want = lib_cdf(x, mode)
        must_ok(case, rc, "cdf")
        xi = f64(x)
        rc = lib.diffuse_standard_normal_cdf(dptr(xi), n, mode, dptr(xi))
        if case.rc(rc, DIFFUSE_OK, f"cdf mode {mode} in place"):
            case.check(np.array_equal(xi, want), f"cdf mode {mode} in place: differs")
    k = rng.integers(0, 256, n)
    k[:4] = [0, 255, 1, 254]
    xd = k / 127.5 - 1.0
    mean = rng.uniform(-1.5, 1.5, n)
    ls = rng.uniform(-8, 3, n)
    f = lib.diffuse_discretized_gaussian_log_likelihood
    for mode in (CDF_TANH, CDF_EXACT):
        rc, want = lib_dgll(xd, mean, ls, mode)
        must_ok(case, rc, "dgll")
        for j in range(3):
            arrs = [f64(v) for v in (xd, mean, ls)]
            rc = f(*[dptr(v) for v in arrs], n, mode, dptr(arrs[j]))
            if case.rc(rc, DIFFUSE_OK, f"dgll mode {mode} out = input {j}"):
                case.check(np.array_equal(arrs[j], want), f"dgll mode {mode} out = input {j}: "
                                                          f"differs")
        # all three inputs and the output the same array
        same = f64(xd)
        rc = f(dptr(same), dptr(same), dptr(same), n, mode, dptr(same))
        rc2, want2 = lib_dgll(xd, xd, xd, mode)
        if case.rc(rc, DIFFUSE_OK, f"dgll mode {mode} all aliased") and rc2 == DIFFUSE_OK:
            case.check(np.array_equal(same, want2, equal_nan=True),
                       f"dgll mode {mode} all aliased: differs")


# ---------------------------------------------------------------------------
# Main
# ---------------------------------------------------------------------------

def main():
    t0 = time.time()
    seed = int(os.environ.get("LIBDIFFUSE_TEST_SEED", "20240602"))
    full = os.environ.get("LIBDIFFUSE_TEST_QUICK", "") != "1"
    mpv = f"mpmath {mpmath.__version__} at {MP_DPS} digits" if HAVE_MP else "no mpmath"
    print(f"# test_vlb_terms: seed {seed} (set LIBDIFFUSE_TEST_SEED to change); "
          f"numpy {np.__version__}; {mpv}")
    run_case("load_library", load_library)
    if lib is None:
        finish()
    rng = np.random.default_rng(seed)
    run_case("reference_self_check_mpmath", case_reference_self_check,
             np.random.default_rng(seed + 1), needs_mp=True)

    run_case("normal_kl_random_mpmath", case_kl_mp, "random",
             list(zip(*kl_random_inputs(rng))), needs_mp=True)
    run_case("normal_kl_adversarial_mpmath", case_kl_mp, "adversarial",
             kl_adversarial_inputs(), needs_mp=True)
    run_case("normal_kl_intermediate_overflow_mpmath", case_kl_mp, "intermediate over/underflow",
             kl_extreme_scaling_inputs(), needs_mp=True)
    run_case("normal_kl_vs_losses_py_float64", case_kl_naive_parity, rng)
    run_case("normal_kl_nan", case_kl_nan)

    run_case("cdf_tanh_mpmath", case_cdf_mp, CDF_TANH, rng, needs_mp=True)
    run_case("cdf_exact_mpmath", case_cdf_mp, CDF_EXACT, rng, needs_mp=True)
    run_case("cdf_extremes", case_cdf_extremes)
    run_case("cdf_vs_float64_formulas", case_cdf_naive_parity, rng)
    run_case("cdf_nan", case_cdf_nan)

    run_case("dgll_floor_constant", case_floor_constant, needs_mp=True)
    idx = dgll_sample(dgll_grid()[0].size, rng, full)
    for mode in (CDF_TANH, CDF_EXACT):
        run_case(f"dgll_{MODE_NAMES[mode]}_grid_mpmath", case_dgll_mp, mode, idx, needs_mp=True)
    run_case("dgll_offgrid_adversarial_mpmath", case_dgll_offgrid_mp, needs_mp=True)
    run_case("dgll_extreme_range_mpmath", case_dgll_extreme_mp, needs_mp=True)
    for mode in (CDF_TANH, CDF_EXACT):
        run_case(f"dgll_{MODE_NAMES[mode]}_vs_losses_py_float64", case_dgll_naive_parity, mode)
    run_case("dgll_nan", case_dgll_nan)

    run_case("argument_errors", case_errors)
    run_case("aliasing", case_aliasing, rng)

    try:
        info_float32()
    except Exception as e:  # information only
        INFO.append(f"# float32 comparison not available: {e!r}")
    INFO.append(f"# runtime {time.time() - t0:.1f} s")
    finish()


if __name__ == "__main__":
    main()
