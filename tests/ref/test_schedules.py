#!/usr/bin/env python3
"""Independent float64 reference test for libdiffuse's schedules.

Run with Debian's interpreter, which has numpy:

    LIBDIFFUSE_PATH=out/libdiffuse.so.1 /usr/bin/python3 tests/ref/test_schedules.py

The library is loaded with ctypes.  Every reference value below is computed
here, in numpy float64, from the mathematical definitions in
include/diffuse.h and docs NUMERICS.md sections 1, 2 and 4; nothing mirrors
lib/schedule.c.  Where the obvious float64 formula loses digits (cancellation,
or the log of a number close to 1), the reference uses an equivalent form that
keeps full relative accuracy, so that each reference value is within a few
units in the last place of the exact value.  The error analysis is next to
each formula.

Tolerance: every table entry must satisfy |lib - ref| <= 1e-12 * |ref|; where
the reference is exactly 0 or infinite, the library must be equal.

Timestep lists (improved-diffusion's space_timesteps and diffusers'
spacings) are compared exactly, integer for integer.

Output: one line per case, "ok   NAME", "FAIL NAME" with indented detail
lines, or "skip NAME: REASON"; lines starting with '#' are information; the
last line is "N passed, M failed, K skipped".  Exit status 1 if any case
failed, else 0.

Environment: LIBDIFFUSE_PATH (required, path of libdiffuse.so.1),
LIBDIFFUSE_TEST_SEED (optional, seed of the random betas; printed).
"""

import math
import os
import sys
from ctypes import POINTER, byref, c_char_p, c_double, c_int, c_int32, c_size_t, c_void_p

import _ctcase
from _ctcase import last_error, strerror


def _skip_all(reason):
    print(f"skip test_schedules: {reason}")
    print("0 passed, 0 failed, 1 skipped")
    sys.exit(0)


try:
    import numpy as np
except ImportError:
    _skip_all("numpy not installed")

RTOL = 1e-12
DIFFUSE_OK = 0
DIFFUSE_EINVAL = -1
MAX_STEPS = 16777216

TABLE_NAMES = [
    "BETAS",
    "ALPHAS",
    "ALPHAS_CUMPROD",
    "ALPHAS_CUMPROD_PREV",
    "ALPHAS_CUMPROD_NEXT",
    "ONE_MINUS_ALPHAS_CUMPROD",
    "SQRT_ALPHAS_CUMPROD",
    "SQRT_ONE_MINUS_ALPHAS_CUMPROD",
    "LOG_ONE_MINUS_ALPHAS_CUMPROD",
    "SQRT_RECIP_ALPHAS_CUMPROD",
    "SQRT_RECIPM1_ALPHAS_CUMPROD",
    "POSTERIOR_VARIANCE",
    "POSTERIOR_LOG_VARIANCE_CLIPPED",
    "POSTERIOR_MEAN_COEF1",
    "POSTERIOR_MEAN_COEF2",
]
TABLE_COUNT = len(TABLE_NAMES)  # DIFFUSE_TABLE_COUNT_V1

SPACING_LEADING, SPACING_TRAILING, SPACING_LINSPACE = 0, 1, 2

# ---------------------------------------------------------------------------
# Output bookkeeping
# ---------------------------------------------------------------------------

INFO = []  # '#' lines printed before the summary
WORST = {"rel": 0.0, "where": "none"}  # largest relative error seen in a passing comparison


class Case(_ctcase.Case):
    """A case with the comparisons of schedule tables and timestep lists."""

    def ints(self, got, want, what):
        got = [int(v) for v in got]
        want = [int(v) for v in want]
        if got == want:
            return True
        if len(got) != len(want):
            self.fail(f"{what}: length {len(got)} != reference {len(want)}; "
                      f"lib {_abbrev(got)} ref {_abbrev(want)}")
            return False
        idx = [i for i in range(len(got)) if got[i] != want[i]]
        self.fail(f"{what}: {len(idx)} of {len(want)} differ; first at [{idx[0]}]: "
                  f"lib {got[idx[0]]} ref {want[idx[0]]}; lib {_abbrev(got)} ref {_abbrev(want)}")
        return False

    def table(self, what, lib_vals, ref_vals, rtol=RTOL):
        """|lib - ref| <= rtol * |ref|; exact equality where ref is 0 or +-inf."""
        c = np.asarray(lib_vals, dtype=np.float64)
        r = np.asarray(ref_vals, dtype=np.float64)
        if c.shape != r.shape:
            self.fail(f"{what}: shape {c.shape} != reference {r.shape}")
            return False
        if np.isnan(r).any():
            i = int(np.flatnonzero(np.isnan(r))[0])
            self.fail(f"{what}: REFERENCE has NaN at t={i} (bug in the test)")
            return False
        exact = (r == 0) | np.isinf(r)
        with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
            absd = np.abs(c - r)
            rel = np.where(exact, np.where(c == r, 0.0, np.inf), absd / np.abs(r))
        rel = np.where(np.isnan(c), np.inf, rel)
        bad = rel > rtol
        if bad.any():
            idx = np.flatnonzero(bad)
            w = int(idx[np.argmax(rel[idx])]) if np.isfinite(rel[idx]).any() else int(idx[0])
            finite = np.isfinite(absd) & ~exact
            self.fail(
                f"{what}: {idx.size} of {r.size} entries off (first t={int(idx[0])}); "
                f"max rel err {_fmt(rel[w])} at t={w}, max abs err "
                f"{_fmt(absd[finite].max() if finite.any() else 0.0)}: "
                f"lib {c[w]!r} ref {r[w]!r}")
            return False
        if r.size:
            m = int(np.argmax(rel))
            if rel[m] > WORST["rel"]:
                WORST["rel"] = float(rel[m])
                WORST["where"] = f"{self.name} {what} t={m}"
        return True


def _fmt(x):
    return f"{x:.3e}" if np.isfinite(x) else str(x)


def _abbrev(seq, k=8):
    seq = list(seq)
    if len(seq) <= 2 * k:
        return str(seq)
    return f"[{', '.join(map(str, seq[:k]))}, ..., {', '.join(map(str, seq[-k:]))}] (n={len(seq)})"


def run_case(name, fn, *args):
    _ctcase.run_case(name, fn, *args, case_class=Case)


def finish():
    _ctcase.finish(INFO + [f"# largest relative error among passing table comparisons: "
                           f"{WORST['rel']:.3e} ({WORST['where']}); tolerance {RTOL:g}"])


# ---------------------------------------------------------------------------
# The library through ctypes
# ---------------------------------------------------------------------------

lib = None
PD = POINTER(c_double)
PI32 = POINTER(c_int32)


def load_library(case):
    global lib
    P = POINTER(c_void_p)
    lib = _ctcase.load_library(case, {
        "diffuse_schedule_create_linear": (c_int, [P, c_size_t, c_double, c_double]),
        "diffuse_schedule_create_cosine": (c_int, [P, c_size_t, c_double, c_double]),
        "diffuse_schedule_create_scaled_linear": (c_int, [P, c_size_t, c_double, c_double]),
        "diffuse_schedule_create_sigmoid": (
            c_int, [P, c_size_t, c_double, c_double, c_double, c_double]),
        "diffuse_schedule_create_betas": (c_int, [P, PD, c_size_t]),
        "diffuse_schedule_rescale_zero_snr": (c_int, [P, c_void_p]),
        "diffuse_schedule_respace": (c_int, [P, c_void_p, PI32, c_size_t]),
        "diffuse_schedule_free": (None, [c_void_p]),
        "diffuse_schedule_length": (c_size_t, [c_void_p]),
        "diffuse_schedule_base_length": (c_size_t, [c_void_p]),
        "diffuse_schedule_timesteps": (c_int, [c_void_p, PI32, c_size_t]),
        "diffuse_schedule_table": (c_int, [c_void_p, c_int, PD, c_size_t]),
        "diffuse_timesteps_from_spec": (
            c_int, [c_size_t, c_char_p, PI32, c_size_t, POINTER(c_size_t)]),
        "diffuse_timesteps_spacing": (
            c_int, [c_size_t, c_size_t, c_int, c_int32, PI32, c_size_t]),
    })


def dptr(a):
    return None if a is None else a.ctypes.data_as(PD)


def iptr(a):
    return None if a is None else a.ctypes.data_as(PI32)


class Sched:
    """An owned schedule handle (freed by close() or the with block)."""

    def __init__(self, ptr):
        self.ptr = ptr

    def close(self):
        if self.ptr:
            lib.diffuse_schedule_free(self.ptr)
            self.ptr = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def length(self):
        return int(lib.diffuse_schedule_length(self.ptr))

    def base_length(self):
        return int(lib.diffuse_schedule_base_length(self.ptr))

    def timesteps(self, n=None):
        n = self.length() if n is None else n
        out = np.full(n, -7, dtype=np.int32)
        rc = lib.diffuse_schedule_timesteps(self.ptr, iptr(out), n)
        return rc, out

    def table(self, tid, n=None):
        n = self.length() if n is None else n
        out = np.full(n, -7.0)
        rc = lib.diffuse_schedule_table(self.ptr, tid, dptr(out), n)
        return rc, out


def create(case, what, fname, *args):
    """Call a constructor that should succeed; returns Sched or raises."""
    out = c_void_p()
    rc = getattr(lib, fname)(byref(out), *args)
    if rc != DIFFUSE_OK or not out.value:
        case.fail(f"{what}: status {rc} ({strerror(rc)}), handle {out.value}; "
                  f"last error: {last_error()!r}")
        raise _Abort()
    return Sched(out.value)


def create_expect_error(case, what, fname, *args):
    """Call a constructor that should fail with DIFFUSE_EINVAL and give NULL."""
    out = c_void_p()
    rc = getattr(lib, fname)(byref(out), *args)
    ok = case.rc(rc, DIFFUSE_EINVAL, what)
    if out.value:
        case.fail(f"{what}: *out is {out.value:#x}, expected NULL after a failure")
        if rc == DIFFUSE_OK:
            lib.diffuse_schedule_free(out.value)
    if ok:
        msg = last_error()
        case.check(msg, f"{what}: diffuse_last_error() is empty after a failure")
    return rc


def betas_array(betas):
    """A fresh C-contiguous float64 copy (never the caller's array)."""
    return np.array(betas, dtype=np.float64, order="C", copy=True)


class _Abort(Exception):
    """Stops a case after a failure already recorded (no further checks make sense)."""


def guarded(fn):
    def wrapper(case, *args):
        try:
            fn(case, *args)
        except _Abort:
            pass
    return wrapper


# ---------------------------------------------------------------------------
# Reference schedules (numpy float64)
# ---------------------------------------------------------------------------
#
# A reference schedule is a dict with four arrays, each accurate to a few ulp
# relative to its exact value: beta, alpha (= 1 - beta), abar (alphas_cumprod)
# and om (= 1 - abar).  derive_tables() turns it into the 15 tables.

def ref_linear(T, b0, b1):
    # Improved DDPM, gaussian_diffusion.get_named_beta_schedule("linear").
    scale = 1000 / T
    return np.linspace(scale * b0, scale * b1, T, dtype=np.float64)


def ref_scaled_linear(T, b0, b1):
    # diffusers "scaled_linear", in float64.
    return np.linspace(np.sqrt(b0), np.sqrt(b1), T, dtype=np.float64) ** 2


def ref_cosine(T, s, max_beta):
    """beta_i = min(1 - cos^2(b)/cos^2(a), max_beta), a = u_i pi/2, b = u_{i+1} pi/2,
    u_i = (i/T + s)/(1 + s).

    beta = 1 - r^2 = (1 - r)(1 + r) with r = cos b / cos a and
    1 - r = (cos a - cos b)/cos a = 2 sin((a+b)/2) sin((b-a)/2) / cos a.

    The angles are NOT formed as rounded numbers near pi/2 and then
    subtracted or fed to cos: an absolute rounding error of 2.2e-16 in an
    angle near pi/2 is a relative error of up to 1e-12 in cos (T = 4000,
    pi/2 - b = 3.9e-4) and in b - a.  Instead every quantity is an exact
    rational function of (i, T, s) times pi/2 before the one sin() call:
      cos a = sin(pi/2 - a) = sin(pi/2 * (T - i)     / (T (1 + s)))
      cos b =                 sin(pi/2 * (T - i - 1) / (T (1 + s)))
      b - a = pi/2 / (T (1 + s))
      (a + b)/2 = pi/2 * ((2i + 1)/(2T) + s) / (1 + s)
    so each factor has a relative error of a few ulp, and beta too (checked
    against an 80-bit long double evaluation while writing this test:
    <= 9e-16 relative for T <= 4000, whereas the route with rounded angles is
    off by up to 1.0e-12 at T = 4000).
    """
    i = np.arange(T, dtype=np.float64)
    hp = np.pi / 2
    opsT = T * (1.0 + s)
    cos_a = np.sin(hp * ((T - i) / opsT))
    cos_b = np.sin(hp * ((T - i - 1) / opsT))
    half_diff = hp / (2.0 * opsT)
    mid = hp * (((2 * i + 1) / (2.0 * T) + s) / (1.0 + s))
    one_minus_r = 2.0 * np.sin(mid) * np.sin(half_diff) / cos_a
    r = cos_b / cos_a
    beta = one_minus_r * (1.0 + r)
    return np.minimum(beta, max_beta)


def _logistic(x):
    return 1.0 / (1.0 + np.exp(-x))


def ref_sigmoid(T, start, end, temp, max_beta):
    """lucidrains' sigmoid_beta_schedule, exactly: with x_k = ((k/T)(end-start)+start)/temp,
    beta_k = 1 - abar_{k+1}/abar_k = (sg(x_{k+1}) - sg(x_k)) / (sg(end/temp) - sg(x_k)).

    Differences of logistic values without cancellation:
      sg(b) - sg(a) = -exp(-a) expm1(-(b - a)) sg(a) sg(b).
    As for the cosine, the argument differences are formed exactly, not from
    rounded x's (whose 4.4e-16 absolute error would be 3e-13 relative in
    b - a = 6/T at T = 4000):
      x_{k+1} - x_k = (end - start)/(T temp),  end/temp - x_k = ((T-k)/T)(end - start)/temp.
    """
    k = np.arange(T, dtype=np.float64)
    x = ((k / T) * (end - start) + start) / temp
    x1 = (((k + 1) / T) * (end - start) + start) / temp
    E = end / temp
    h = (end - start) / (T * temp)
    g = ((T - k) / T) * (end - start) / temp
    num = -np.exp(-x) * np.expm1(-h) * _logistic(x) * _logistic(x1)
    den = -np.exp(-x) * np.expm1(-g) * _logistic(x) * _logistic(E)
    return np.minimum(num / den, max_beta)


def ref_from_betas(beta):
    """Base schedule from betas.

    alpha = 1 - beta (the ALPHAS table's definition; for beta >= 0.5 the
    subtraction is exact, otherwise correctly rounded).
    abar = cumprod(alpha): each product rounds once, each alpha once, so the
    relative error is at most ~1.5 t u (u = 1.1e-16), a worst case of 6.7e-13
    at t = 4000 that needs every rounding to go the same way; measured
    against an 80-bit evaluation it is <= 6e-15 for the schedules here.
    om (1 - abar): see _one_minus().
    """
    beta = np.asarray(beta, dtype=np.float64)
    alpha = 1.0 - beta
    abar = np.cumprod(alpha)
    return {"beta": beta, "alpha": alpha, "abar": abar, "om": _one_minus(beta, abar)}


def _one_minus(beta, abar):
    """1 - abar_t without cancellation.

    Telescoping: 1 - prod_{s<=t}(1 - beta_s) = sum_{s<=t} beta_s abar_{s-1},
    abar_{-1} = 1, a sum of positive terms; its relative error is bounded by
    (t + 3) u (the cumsum of positive terms, plus one rounding per term and
    the error of abar_{s-1}), in practice ~1e-15.  Where abar < 0.5 the plain
    1 - abar is just as good (relative error <= u + rel(abar)) and gives the
    exact 1 at abar = 0 (a beta of 1), so that one is used there.
    """
    abar_prev = np.concatenate(([1.0], abar[:-1]))
    tele = np.cumsum(beta * abar_prev)
    return np.where(abar < 0.5, 1.0 - abar, tele)


def derive_tables(ref):
    """The 15 tables of include/diffuse.h from an accurate (beta, alpha, abar, om)."""
    beta, alpha, abar, om = ref["beta"], ref["alpha"], ref["abar"], ref["om"]
    T = beta.size
    abar_prev = np.concatenate(([1.0], abar[:-1]))
    abar_next = np.concatenate((abar[1:], [0.0]))
    om_prev = np.concatenate(([0.0], om[:-1]))  # 1 - abar_{t-1}, exactly 0 at t = 0
    with np.errstate(divide="ignore", over="ignore"):
        # log(1 - abar): log1p(-abar) where abar < 0.5, log(om) elsewhere; either
        # way the relative condition number is <= 1.45, so the result keeps the
        # few-ulp accuracy of abar / om.  (log(om) alone would be off by up to
        # u/abar relative where abar is small: 2.8e-12 at abar = 4e-5.)
        log_om = np.where(abar < 0.5, np.log1p(-abar), np.log(om))
        sqrt_recip = 1.0 / np.sqrt(abar)  # +inf where abar = 0
        sqrt_recipm1 = np.sqrt(om / abar)  # sqrt(1/abar - 1) = sqrt((1 - abar)/abar)
        # log(beta): log1p(-alpha) where beta > 0.5 (alpha accurate, small).
        log_beta = np.where(beta <= 0.5, np.log(beta), np.log1p(-alpha))
    var = beta * om_prev / om
    # log posterior variance = log(beta) + log(1 - abar_{t-1}) - log(1 - abar_t), t >= 1.
    # All terms are <= 0 except the last, and log(om_prev) - log(om) only
    # cancels where both are tiny, so the sum keeps a relative error of a few
    # ulp, also where var is close to 1 (the last step of a zero-terminal-SNR
    # schedule: var = 1 - abar_{T-2}, where log(var) of the rounded var would be
    # off by u/abar_{T-2} relative).
    logvar = np.empty(T)
    if T >= 2:
        logvar[1:] = log_beta[1:] + log_om[:-1] - log_om[1:]
        logvar[0] = logvar[1]  # Improved DDPM: t = 0 takes t = 1's value
    else:
        logvar[0] = log_beta[0]  # documented library choice for T = 1
    coef1 = beta * np.sqrt(abar_prev) / om
    coef2 = om_prev * np.sqrt(alpha) / om
    tables = [
        beta,
        alpha,
        abar,
        abar_prev,
        abar_next,
        om,
        np.sqrt(abar),
        np.sqrt(om),
        log_om,
        sqrt_recip,
        sqrt_recipm1,
        var,
        logvar,
        coef1,
        coef2,
    ]
    assert len(tables) == TABLE_COUNT
    return tables


def ref_zero_snr(base):
    """Lin et al. 2023 Algorithm 1 on a reference base schedule.

    s = sqrt(abar), s' = (s - s_last) s_0/(s_0 - s_last), abar' = s'^2.
    With d_i = s_i - s_{i+1} = s_i (1 - sqrt(1 - beta_{i+1}))
                             = s_i * (-expm1(0.5 log1p(-beta_{i+1}))) > 0,
    D_i = s_i - s_last = sum_{j>=i} d_j is a sum of positive terms (no
    cancellation), s'_i = D_i s_0/D_0, and
      beta'_0 = 1 - s_0^2 = base beta_0 (= base 1 - abar_0),
      beta'_i = 1 - (D_i/D_{i-1})^2 = (1 - r)(1 + r), r = D_i/D_{i-1},
                1 - r = d_{i-1}/D_{i-1};
      alpha'_i = r^2 (accurate also where beta' is close to 1).
    The last D is 0: r = 0, beta' = 1 exactly, abar' = 0 exactly.
    """
    beta, abar = base["beta"], base["abar"]
    s = np.sqrt(abar)
    d = s[:-1] * (-np.expm1(0.5 * np.log1p(-beta[1:])))
    D = np.concatenate((np.cumsum(d[::-1])[::-1], [0.0]))
    s_new = D * (s[0] / D[0])
    abar_new = s_new * s_new
    r = D[1:] / D[:-1]
    one_minus_r = d / D[:-1]
    beta_new = np.concatenate(([beta[0]], one_minus_r * (1.0 + r)))
    alpha_new = np.concatenate(([1.0 - beta[0]], r * r))
    beta_new[alpha_new == 0] = 1.0
    return {"beta": beta_new, "alpha": alpha_new, "abar": abar_new,
            "om": _one_minus(beta_new, abar_new)}


def ref_respace(base, kept):
    """Improved DDPM's SpacedDiffusion on a reference base, kept = original indices.

    beta'_i = 1 - abar_{k_i}/abar_{k_{i-1}} = sum_{s in (k_{i-1}, k_i]} beta_s abar_{s-1}
              / abar_{k_{i-1}}  (telescoping, positive terms, no cancellation);
    alpha'_i = abar_{k_i}/abar_{k_{i-1}} (a ratio: accurate also where beta' ~ 1);
    abar'_i = abar_{k_i}; 1 - abar'_i = (1 - abar)_{k_i}.
    """
    kept = np.sort(np.asarray(kept, dtype=np.int64))
    beta, abar, om = base["beta"], base["abar"], base["om"]
    abar_prev = np.concatenate(([1.0], abar[:-1]))
    terms = beta * abar_prev
    starts = np.concatenate(([0], kept[:-1] + 1))
    seg = np.add.reduceat(terms[: kept[-1] + 1], starts)
    ap = np.concatenate(([1.0], abar[kept[:-1]]))
    beta_new = seg / ap
    alpha_new = abar[kept] / ap
    beta_new[alpha_new == 0] = 1.0
    return {"beta": beta_new, "alpha": alpha_new, "abar": abar[kept].copy(),
            "om": om[kept].copy()}


# ---------------------------------------------------------------------------
# Schedule checks
# ---------------------------------------------------------------------------

def check_schedule(case, sch, ref, timesteps=None, base_length=None, label=""):
    T = ref["beta"].size
    pre = f"{label}: " if label else ""
    n = sch.length()
    if not case.check(n == T, f"{pre}diffuse_schedule_length = {n}, expected {T}"):
        return
    bl = sch.base_length()
    want_bl = T if base_length is None else base_length
    case.check(bl == want_bl, f"{pre}diffuse_schedule_base_length = {bl}, expected {want_bl}")
    rc, ts = sch.timesteps()
    if case.rc(rc, DIFFUSE_OK, f"{pre}diffuse_schedule_timesteps"):
        case.ints(ts, range(T) if timesteps is None else timesteps, f"{pre}timesteps")
    tables = derive_tables(ref)
    for tid, (name, want) in enumerate(zip(TABLE_NAMES, tables)):
        rc, got = sch.table(tid)
        if case.rc(rc, DIFFUSE_OK, f"{pre}diffuse_schedule_table({name})"):
            case.table(pre + name, got, want)


def lib_betas(sch):
    rc, b = sch.table(0)
    if rc != DIFFUSE_OK:
        raise RuntimeError(f"table BETAS: status {rc}")
    return b


@guarded
def case_named(case, kind, T, params):
    fname = {"linear": "diffuse_schedule_create_linear",
             "cosine": "diffuse_schedule_create_cosine",
             "scaled_linear": "diffuse_schedule_create_scaled_linear",
             "sigmoid": "diffuse_schedule_create_sigmoid"}[kind]
    reff = {"linear": ref_linear, "cosine": ref_cosine,
            "scaled_linear": ref_scaled_linear, "sigmoid": ref_sigmoid}[kind]
    with create(case, f"{fname}(T={T}, {params})", fname, T, *params) as sch:
        check_schedule(case, sch, ref_from_betas(reff(T, *params)))


@guarded
def case_betas(case, betas):
    b = betas_array(betas)
    with create(case, f"diffuse_schedule_create_betas(T={b.size})",
                "diffuse_schedule_create_betas", dptr(b), b.size) as sch:
        b[:] = 0.5  # the library must have copied the array
        check_schedule(case, sch, ref_from_betas(betas_array(betas)))


@guarded
def case_zero_snr(case, kind, T, params):
    fname = {"linear": "diffuse_schedule_create_linear",
             "cosine": "diffuse_schedule_create_cosine"}[kind]
    reff = {"linear": ref_linear, "cosine": ref_cosine}[kind]
    with create(case, f"{fname}(T={T})", fname, T, *params) as base:
        zs = create(case, "diffuse_schedule_rescale_zero_snr",
                    "diffuse_schedule_rescale_zero_snr", base.ptr)
    # base is freed: the result must be independent of it.
    with zs:
        ref = ref_zero_snr(ref_from_betas(reff(T, *params)))
        check_schedule(case, zs, ref)
        tabs = {tid: zs.table(tid)[1] for tid in (0, 2, 9, 10)}
        case.check(tabs[0][-1] == 1.0, f"last beta is {tabs[0][-1]!r}, expected exactly 1")
        case.check(tabs[2][-1] == 0.0,
                   f"last alphas_cumprod is {tabs[2][-1]!r}, expected exactly 0")
        case.check(np.isposinf(tabs[9][-1]) and np.isposinf(tabs[10][-1]),
                   f"SQRT_RECIP / SQRT_RECIPM1 at the last step are {tabs[9][-1]!r}, "
                   f"{tabs[10][-1]!r}, expected +inf")
        case.check(np.isfinite(tabs[9][:-1]).all() and np.isfinite(tabs[10][:-1]).all(),
                   "SQRT_RECIP / SQRT_RECIPM1 infinite before the last step")


def _base(case, kind, T, params):
    fname = {"linear": "diffuse_schedule_create_linear",
             "cosine": "diffuse_schedule_create_cosine"}[kind]
    reff = {"linear": ref_linear, "cosine": ref_cosine}[kind]
    sch = create(case, f"{fname}(T={T})", fname, T, *params)
    return sch, ref_from_betas(reff(T, *params))


def _respace(case, base, idx, what):
    arr = np.ascontiguousarray(idx, dtype=np.int32)
    out = c_void_p()
    rc = lib.diffuse_schedule_respace(byref(out), base.ptr, iptr(arr), arr.size)
    if rc != DIFFUSE_OK or not out.value:
        case.fail(f"{what}: status {rc} ({strerror(rc)}); last error: {last_error()!r}")
        raise _Abort()
    return Sched(out.value)


@guarded
def case_respace(case, kind, T, params, kept, shuffle_seed=None, zero_snr=False):
    base, ref_base = _base(case, kind, T, params)
    if zero_snr:
        with base:
            base = create(case, "rescale_zero_snr", "diffuse_schedule_rescale_zero_snr",
                          base.ptr)
        ref_base = ref_zero_snr(ref_base)
    with base:
        kept = sorted(int(k) for k in kept)
        passed = np.array(kept, dtype=np.int32)
        if shuffle_seed is not None:
            np.random.default_rng(shuffle_seed).shuffle(passed)
        sp = _respace(case, base, passed, f"respace(n={len(kept)})")
    with sp:
        check_schedule(case, sp, ref_respace(ref_base, kept), timesteps=kept, base_length=T)
        # Respacing to every step gives the base schedule back.
        if len(kept) == T:
            case.table("BETAS vs base betas (identity respace)", lib_betas(sp), ref_base["beta"],
                       rtol=4e-16)


@guarded
def case_respace_twice(case):
    T = 1000
    base, ref_base = _base(case, "linear", T, (1e-4, 0.02))
    with base:
        k1 = iddpm_space_timesteps(T, "250")
        s1 = _respace(case, base, k1, "respace(250)")
    with s1:
        sel = sorted(set(range(0, 250, 5)) | {249, 1, 2, 3, 248})
        s2 = _respace(case, s1, sel, "respace(respaced)")
    with s2:
        composed = [k1[j] for j in sel]
        check_schedule(case, s2, ref_respace(ref_base, composed), timesteps=composed,
                       base_length=T)
        # A respaced schedule cannot be rescaled to zero terminal SNR.
        create_expect_error(case, "rescale_zero_snr(respaced)",
                            "diffuse_schedule_rescale_zero_snr", s2.ptr)


# ---------------------------------------------------------------------------
# Error cases of the schedule API
# ---------------------------------------------------------------------------

def case_create_errors(case):
    nan, inf = float("nan"), float("inf")
    L, C, S, G, B = ("diffuse_schedule_create_linear", "diffuse_schedule_create_cosine",
                     "diffuse_schedule_create_scaled_linear",
                     "diffuse_schedule_create_sigmoid", "diffuse_schedule_create_betas")
    for args in [(0, 1e-4, 0.02), (MAX_STEPS + 1, 1e-4, 0.02), (1000, 0.0, 0.02),
                 (1000, -1e-4, 0.02), (1000, nan, 0.02), (1000, inf, 0.02),
                 (1000, 1e-4, nan), (1000, 0.02, 1e-4),
                 (10, 1e-4, 0.02),    # scaled beta_end = 2 > 1
                 (2, 1e-4, 0.0021)]:  # scaled beta_end = 1.05 > 1
        create_expect_error(case, f"linear{args}", L, *args)
    rc = lib.diffuse_schedule_create_linear(None, 10, 1e-4, 1e-3)
    case.rc(rc, DIFFUSE_EINVAL, "linear(out=NULL)")
    for args in [(0, 0.008, 0.999), (100, -0.01, 0.999), (100, nan, 0.999),
                 (100, inf, 0.999), (100, 0.008, 0.0), (100, 0.008, 1.5), (100, 0.008, nan),
                 (100, 0.008, -0.5)]:
        create_expect_error(case, f"cosine{args}", C, *args)
    for args in [(0, 0.00085, 0.012), (100, 0.0, 0.012), (100, 0.012, 0.00085),
                 (100, 0.00085, 1.5), (100, nan, 0.012), (100, 0.00085, inf)]:
        create_expect_error(case, f"scaled_linear{args}", S, *args)
    for args in [(0, -3.0, 3.0, 1.0, 0.999), (100, 3.0, 3.0, 1.0, 0.999),
                 (100, 3.0, -3.0, 1.0, 0.999), (100, -3.0, 3.0, 0.0, 0.999),
                 (100, -3.0, 3.0, -1.0, 0.999), (100, -3.0, 3.0, 1.0, 0.0),
                 (100, -3.0, 3.0, 1.0, 1.5), (100, nan, 3.0, 1.0, 0.999),
                 (100, -3.0, inf, 1.0, 0.999)]:
        create_expect_error(case, f"sigmoid{args}", G, *args)
    bad_betas = [
        ([0.1, 0.2, 0.0, 0.3], 2),
        ([0.1, -0.2, 0.3], 1),
        ([0.1, 0.2, 1.5], 2),
        ([0.1, nan, 0.3], 1),
        ([0.1, 0.2, inf], 2),
        ([0.1, 1.0, 0.2], 1),     # beta = 1 before the last step
        ([0.1, 0.2, 1e-17], 2),   # 1 - beta rounds to 1: abar not strictly decreasing
    ]
    for betas, index in bad_betas:
        b = betas_array(betas)
        rc = create_expect_error(case, f"betas{betas}", B, dptr(b), b.size)
        if rc == DIFFUSE_EINVAL:
            msg = last_error() or ""
            case.check(str(index) in msg,
                       f"betas{betas}: message {msg!r} does not name the index {index}")
    b = betas_array([0.1])
    create_expect_error(case, "betas(T=0)", B, dptr(b), 0)
    create_expect_error(case, "betas(NULL, T=3)", B, None, 3)


@guarded
def case_zero_snr_errors(case):
    create_expect_error(case, "rescale_zero_snr(NULL)", "diffuse_schedule_rescale_zero_snr", None)
    with create(case, "linear T=1", "diffuse_schedule_create_linear", 1, 1e-4, 1e-3) as one:
        create_expect_error(case, "rescale_zero_snr(T=1)", "diffuse_schedule_rescale_zero_snr",
                            one.ptr)
    with create(case, "linear T=10", "diffuse_schedule_create_linear", 10, 1e-4, 1e-3) as b:
        rc = lib.diffuse_schedule_rescale_zero_snr(None, b.ptr)
        case.rc(rc, DIFFUSE_EINVAL, "rescale_zero_snr(out=NULL)")
        k = np.array([0, 3, 9], dtype=np.int32)
        sp = _respace(case, b, k, "respace")
        with sp:
            create_expect_error(case, "rescale_zero_snr(respaced base)",
                                "diffuse_schedule_rescale_zero_snr", sp.ptr)


@guarded
def case_respace_errors(case):
    with create(case, "linear T=10", "diffuse_schedule_create_linear", 10, 1e-4, 1e-3) as b:
        R = "diffuse_schedule_respace"
        for what, idx in [("duplicate", [1, 3, 3]), ("index T", [0, 10]), ("index -1", [-1, 4]),
                          ("index huge", [0, 2**31 - 1]), ("duplicate unsorted", [5, 2, 5])]:
            a = np.array(idx, dtype=np.int32)
            create_expect_error(case, f"respace {what} {idx}", R, b.ptr, iptr(a), a.size)
        a = np.array([1, 2], dtype=np.int32)
        create_expect_error(case, "respace n=0", R, b.ptr, iptr(a), 0)
        create_expect_error(case, "respace timesteps NULL", R, b.ptr, None, 2)
        create_expect_error(case, "respace base NULL", R, None, iptr(a), 2)
        case.rc(lib.diffuse_schedule_respace(None, b.ptr, iptr(a), 2), DIFFUSE_EINVAL,
                "respace out NULL")
        # The caller's array is copied, not kept: and not modified (sorting is internal).
        a = np.array([7, 0, 3], dtype=np.int32)
        sp = _respace(case, b, a, "respace [7,0,3]")
        with sp:
            case.ints(a, [7, 0, 3], "caller's timesteps array after respace")
            a[:] = 1
            case.ints(sp.timesteps()[1], [0, 3, 7], "timesteps of respace [7,0,3]")


@guarded
def case_accessor_errors(case):
    with create(case, "linear T=10", "diffuse_schedule_create_linear", 10, 1e-4, 1e-3) as s:
        for tid in (-1, TABLE_COUNT, 1000):
            rc, out = s.table(tid)
            case.rc(rc, DIFFUSE_EINVAL, f"table id {tid}")
            case.check((out == -7.0).all(), f"table id {tid}: output written on failure")
        for n in (0, 9, 11):
            out = np.full(max(n, 1), -7.0)
            rc = lib.diffuse_schedule_table(s.ptr, 0, dptr(out), n)
            case.rc(rc, DIFFUSE_EINVAL, f"table n={n} (T=10)")
            case.check((out == -7.0).all(), f"table n={n}: output written on failure")
            outi = np.full(max(n, 1), -7, dtype=np.int32)
            rc = lib.diffuse_schedule_timesteps(s.ptr, iptr(outi), n)
            case.rc(rc, DIFFUSE_EINVAL, f"timesteps n={n} (T=10)")
            case.check((outi == -7).all(), f"timesteps n={n}: output written on failure")
        case.rc(lib.diffuse_schedule_table(s.ptr, 0, None, 10), DIFFUSE_EINVAL, "table out NULL")
        case.rc(lib.diffuse_schedule_timesteps(s.ptr, None, 10), DIFFUSE_EINVAL,
                "timesteps out NULL")
    out = np.zeros(10)
    case.rc(lib.diffuse_schedule_table(None, 0, dptr(out), 10), DIFFUSE_EINVAL, "table NULL")
    outi = np.zeros(10, dtype=np.int32)
    case.rc(lib.diffuse_schedule_timesteps(None, iptr(outi), 10), DIFFUSE_EINVAL,
            "timesteps NULL")
    case.check(lib.diffuse_schedule_length(None) == 0, "length(NULL) != 0")
    case.check(lib.diffuse_schedule_base_length(None) == 0, "base_length(NULL) != 0")
    lib.diffuse_schedule_free(None)
    case.check(strerror(0) == "success" and strerror(-1) == "invalid argument",
               f"strerror(0)={strerror(0)!r}, strerror(-1)={strerror(-1)!r}")


# ---------------------------------------------------------------------------
# Information only: library cosine betas against Improved DDPM's naive formula
# ---------------------------------------------------------------------------

def info_cosine_naive():
    for T in (1000, 4000):
        def abar(t):
            return math.cos((t + 0.008) / 1.008 * math.pi / 2) ** 2
        naive = np.array([min(1 - abar((i + 1) / T) / abar(i / T), 0.999) for i in range(T)])
        out = c_void_p()
        rc = lib.diffuse_schedule_create_cosine(byref(out), T, 0.008, 0.999)
        if rc != DIFFUSE_OK:
            INFO.append(f"# cosine T={T}: could not create ({rc})")
            continue
        s = Sched(out.value)
        with s:
            b = lib_betas(s)
        rel = np.abs(b - naive) / naive
        i = int(np.argmax(rel))
        accurate = ref_cosine(T, 0.008, 0.999)
        rel2 = np.abs(naive - accurate) / accurate
        INFO.append(f"# cosine T={T}: max rel diff library betas vs Improved DDPM's naive "
                    f"1 - abar(t2)/abar(t1): {rel[i]:.3e} at i={i} (lib {b[i]!r}, "
                    f"naive {naive[i]!r}); naive vs this reference: {rel2.max():.3e}")


# ---------------------------------------------------------------------------
# Timestep lists: Improved DDPM space_timesteps and diffusers spacings
# ---------------------------------------------------------------------------

def iddpm_space_timesteps(T, spec):
    """improved_diffusion/respace.py space_timesteps, transcribed; returns a sorted
    list, raises ValueError where the reference does."""
    if spec.startswith("ddim"):
        want = int(spec[4:])
        for stride in range(1, T):
            if -(-T // stride) == want:  # len(range(0, T, stride))
                return list(range(0, T, stride))
        raise ValueError("no integer stride")
    counts = [int(x) for x in spec.split(",")]
    size_per, extra = divmod(T, len(counts))
    start = 0
    kept = set()
    for j, count in enumerate(counts):
        size = size_per + (1 if j < extra else 0)
        if size < count:
            raise ValueError("section too small")
        stride = 1 if count <= 1 else (size - 1) / (count - 1)
        cur = 0.0
        for _ in range(count):
            kept.add(start + round(cur))  # Python round: half to even
            cur += stride
        start += size
    return sorted(kept)


def _ddim_table(T):
    """N -> smallest stride with ceil(T/stride) == N, for all N at once."""
    best = {}
    for stride in range(1, T):
        best.setdefault(-(-T // stride), stride)
    return best


def lib_from_spec(case, T, spec, expect):
    """Check diffuse_timesteps_from_spec(T, spec) against expect (a list, or None
    for an error).  Returns the rc of the query call (cap 0, out NULL)."""
    bspec = spec.encode()
    n_out = c_size_t(987654321)
    rc_q = lib.diffuse_timesteps_from_spec(T, bspec, None, 0, byref(n_out))
    tag = f"T={T} spec={spec!r}"
    if expect is None:
        case.check(rc_q == DIFFUSE_EINVAL,
                   f"{tag}: reference refuses it, query call returned {rc_q} "
                   f"(n_out={n_out.value})")
        cap = T + 8
        buf = np.full(cap, -7, dtype=np.int32)
        rc = lib.diffuse_timesteps_from_spec(T, bspec, iptr(buf), cap, byref(n_out))
        if case.check(rc == DIFFUSE_EINVAL,
                      f"{tag}: reference refuses it, call with cap {cap} returned {rc} "
                      f"(n_out={n_out.value}, list {_abbrev(buf[:min(n_out.value, cap)])})"):
            case.check((buf == -7).all(), f"{tag}: output written on failure")
        return rc_q
    n = len(expect)
    if not case.check(rc_q in (DIFFUSE_OK, DIFFUSE_EINVAL) and n_out.value == n,
                      f"{tag}: query call returned {rc_q}, n_out={n_out.value}, expected n={n}; "
                      f"last error {last_error()!r}"):
        return rc_q
    buf = np.full(n + 2, -7, dtype=np.int32)
    n_out = c_size_t(987654321)
    rc = lib.diffuse_timesteps_from_spec(T, bspec, iptr(buf), n, byref(n_out))
    if case.rc(rc, DIFFUSE_OK, f"{tag} (cap {n})"):
        case.check(n_out.value == n, f"{tag}: n_out={n_out.value}, expected {n}")
        case.ints(buf[:n], expect, tag)
        case.check((buf[n:] == -7).all(), f"{tag}: wrote past n")
    if n >= 2:
        small = np.full(n - 1, -7, dtype=np.int32)
        n_out = c_size_t(987654321)
        rc = lib.diffuse_timesteps_from_spec(T, bspec, iptr(small), n - 1, byref(n_out))
        case.check(rc == DIFFUSE_EINVAL and n_out.value == n and (small == -7).all(),
                   f"{tag}: cap {n - 1} (too small) gave rc {rc}, n_out={n_out.value} "
                   f"(want EINVAL, {n}), output untouched: {(small == -7).all()}")
    return rc_q


QUERY_RCS = {}


def _n_grid(T):
    ns = set(range(1, min(T, 60) + 1)) | {n for n in (100, 250, 500, 999, 1000) if n <= T}
    if T <= 250:
        ns |= set(range(1, T + 1))
    else:
        ns |= set(range(61, T + 1, 37)) | {T - 1, T}
    return sorted(ns)


def case_spec_T(case, T):
    """All spec forms for one T: "N" over the N grid, "ddimN" for every N in
    0..T+1, multi-section specs, and malformed specs."""
    specs = []
    for N in _n_grid(T) + [0, T + 1]:
        specs.append(str(N))
    ddim = _ddim_table(T)
    for N in range(0, T + 2):
        specs.append(f"ddim{N}")
    specs += ["10,15,20", "1,2,3", "0,5", "5,0", "1,1", "2,3", "3, 4", " 7 ", "1,0,1",
              "0", "0,0", "2,2,2,2", "100,200,300,400", "1," * 9 + "1"]
    if T >= 4:
        q = T // 4
        specs.append(f"{q},{q},{q},{q}")       # every section kept whole
        specs.append(f"{q + 1},1,1,1")         # first section too small unless T % 4 > 0
    specs += ["", "abc", "10,", ",10", "1.5", "10,,5", "ddim", "ddimx", "x10", "10 5", "ddim1.5"]
    valid = 0
    for spec in specs:
        try:
            want = iddpm_space_timesteps(T, spec)
        except ValueError:
            want = None
        if want is not None and len(want) == 0:
            want = None  # an empty result is an error in the library
        if spec.startswith("ddim") and want is not None:
            # cross-check of the transcription with the precomputed table
            assert want == list(range(0, T, ddim[int(spec[4:])]))
        valid += want is not None
        rc_q = lib_from_spec(case, T, spec, want)
        if want is not None:
            QUERY_RCS[rc_q] = QUERY_RCS.get(rc_q, 0) + 1
    case.check(valid > 0, "no valid spec (test bug)")


def case_spec_T1000_N21(case):
    T, N = 1000, 21
    want = iddpm_space_timesteps(T, "21")
    lin = np.linspace(0, T - 1, N).round().astype(np.int64).tolist()
    diff = [(i, a, b) for i, (a, b) in enumerate(zip(want, lin)) if a != b]
    case.check(diff == [(10, 499, 500)],
               f"reference check: iDDPM '21' vs linspace differ at {diff}, expected [(10, 499, 500)]")
    buf = np.zeros(N, dtype=np.int32)
    n_out = c_size_t(0)
    rc = lib.diffuse_timesteps_from_spec(T, b"21", iptr(buf), N, byref(n_out))
    if case.rc(rc, DIFFUSE_OK, "from_spec(1000, '21')"):
        case.ints(buf, want, "from_spec(1000, '21')")
        case.check(buf[10] == 499, f"from_spec(1000, '21')[10] = {buf[10]}, expected 499")
    buf2 = np.zeros(N, dtype=np.int32)
    rc = lib.diffuse_timesteps_spacing(T, N, SPACING_LINSPACE, 0, iptr(buf2), N)
    if case.rc(rc, DIFFUSE_OK, "spacing(1000, 21, LINSPACE)"):
        case.ints(buf2, lin, "spacing(1000, 21, LINSPACE)")
        case.check(buf2[10] == 500, f"linspace[10] = {buf2[10]}, expected 500")
    # NUMERICS.md section 4 examples.
    checks = [("ddim50", list(range(0, 1000, 20))), ("ddim3", [0, 334, 668]),
              ("50", np.linspace(0, 999, 50).round().astype(int).tolist())]
    for spec, exp in checks:
        ref = iddpm_space_timesteps(1000, spec)
        case.check(ref == exp, f"reference check {spec}: {_abbrev(ref)}")
        buf = np.zeros(len(exp), dtype=np.int32)
        rc = lib.diffuse_timesteps_from_spec(1000, spec.encode(), iptr(buf), len(exp),
                                             byref(n_out))
        if case.rc(rc, DIFFUSE_OK, f"from_spec(1000, {spec!r})"):
            case.ints(buf, exp, f"from_spec(1000, {spec!r})")
    valid_ddim = sorted(_ddim_table(1000))
    case.check(len(valid_ddim) == 62, f"reference check: {len(valid_ddim)} valid ddimN for "
                                      f"T=1000, NUMERICS.md says 62")


def spacing_ref(T, N, kind, offset):
    """numpy itself, as diffusers computes it; ascending; unshifted list for trailing
    may have a length other than N (numpy arange)."""
    if kind == SPACING_LEADING:
        ts = np.arange(0, N) * (T // N)
    elif kind == SPACING_LINSPACE:
        ts = np.linspace(0, T - 1, N).round()
    else:
        ts = np.round(np.arange(T, 0, -T / N)) - 1
    ts = np.sort(ts.astype(np.int64)) + offset
    return ts.tolist()


TRAILING_ODD = []  # (T, N, numpy length, what the library did)


def case_spacing(case, kind, offset):
    name = {0: "LEADING", 1: "TRAILING", 2: "LINSPACE"}[kind]
    for T in (1, 2, 3, 10, 100, 250, 1000, 4000):
        for N in _n_grid(T):
            want = spacing_ref(T, N, kind, offset)
            cap = N + 2
            buf = np.full(cap, -7, dtype=np.int32)
            rc = lib.diffuse_timesteps_spacing(T, N, kind, offset, iptr(buf), cap)
            tag = f"{name} T={T} N={N} offset={offset}"
            if len(want) != N:
                # numpy's arange returned N+1 (or N-1) elements; the library must
                # refuse, or give the first N of numpy's descending list.
                first_n = sorted(sorted(want, reverse=True)[:N])
                if rc == DIFFUSE_EINVAL:
                    TRAILING_ODD.append((T, N, len(want), "error"))
                    case.check((buf == -7).all(), f"{tag}: output written on failure")
                elif rc == DIFFUSE_OK and buf[:N].tolist() == first_n:
                    TRAILING_ODD.append((T, N, len(want), "first N"))
                else:
                    case.fail(f"{tag}: numpy arange gives {len(want)} steps {_abbrev(want)}; "
                              f"library rc {rc}, list {_abbrev(buf[:N])}")
                continue
            in_range = all(0 <= v <= T - 1 for v in want) and len(set(want)) == N
            if not in_range:
                if case.rc(rc, DIFFUSE_EINVAL, f"{tag} (reference {_abbrev(want)} out of range)"):
                    case.check((buf == -7).all(), f"{tag}: output written on failure")
                continue
            if case.rc(rc, DIFFUSE_OK, tag):
                case.ints(buf[:N], want, tag)
                case.check((buf[N:] == -7).all(), f"{tag}: wrote past N")


def case_spacing_errors(case):
    S = lib.diffuse_timesteps_spacing

    def expect_err(what, T, N, kind, off, cap, use_null=False):
        buf = np.full(max(cap, 1), -7, dtype=np.int32)
        rc = S(T, N, kind, off, None if use_null else iptr(buf), cap)
        if case.rc(rc, DIFFUSE_EINVAL, what):
            case.check((buf == -7).all(), f"{what}: output written on failure")

    expect_err("N=0", 1000, 0, SPACING_LEADING, 0, 10)
    expect_err("N>T", 10, 11, SPACING_LEADING, 0, 20)
    expect_err("unknown spacing 3", 1000, 10, 3, 0, 10)
    expect_err("unknown spacing -1", 1000, 10, -1, 0, 10)
    expect_err("n<N", 1000, 10, SPACING_LINSPACE, 0, 9)
    expect_err("out NULL", 1000, 10, SPACING_TRAILING, 0, 10, use_null=True)
    for T in (1, 2, 10, 1000):
        expect_err(f"LEADING T={T} N=T offset 1 (step T)", T, T, SPACING_LEADING, 1, T)
        expect_err(f"LEADING T={T} offset -1", T, 1, SPACING_LEADING, -1, 1)
        expect_err(f"LINSPACE T={T} offset 1 (T-1 -> T)", T, min(T, 5), SPACING_LINSPACE, 1, 5)
        expect_err(f"TRAILING T={T} offset 1 (T-1 -> T)", T, min(T, 5), SPACING_TRAILING, 1, 5)
        expect_err(f"TRAILING T={T} offset -1 (0 -> -1)", T, T, SPACING_TRAILING, -1, T)
    # Offsets that stay in range are applied to every spacing.
    for kind, T, N, off in [(SPACING_LINSPACE, 1000, 10, -1), (SPACING_TRAILING, 1000, 10, -5),
                            (SPACING_LEADING, 1000, 10, 99), (SPACING_LEADING, 1000, 10, 7)]:
        want = spacing_ref(T, N, kind, off)
        buf = np.zeros(N, dtype=np.int32)
        rc = S(T, N, kind, off, iptr(buf), N)
        if all(0 <= v < T for v in want):
            if case.rc(rc, DIFFUSE_OK, f"spacing {kind} T={T} N={N} offset={off}"):
                case.ints(buf, want, f"spacing {kind} T={T} N={N} offset={off}")
        else:
            case.rc(rc, DIFFUSE_EINVAL, f"spacing {kind} T={T} N={N} offset={off} out of range")


# ---------------------------------------------------------------------------
# Main
# ---------------------------------------------------------------------------

def main():
    seed = int(os.environ.get("LIBDIFFUSE_TEST_SEED", "20240601"))
    print(f"# test_schedules: seed {seed} (set LIBDIFFUSE_TEST_SEED to change); "
          f"numpy {np.__version__}")
    run_case("load_library", load_library)
    if lib is None:
        finish()

    Ts = (1, 2, 10, 1000, 4000)
    for T in (1000, 4000):
        run_case(f"linear_iddpm_T{T}", case_named, "linear", T, (1e-4, 0.02))
    for T in (1, 2, 10):
        run_case(f"linear_small_T{T}", case_named, "linear", T, (1e-4, 1e-3))
    for T in Ts:
        run_case(f"cosine_T{T}", case_named, "cosine", T, (0.008, 0.999))
    for T in Ts:
        run_case(f"scaled_linear_T{T}", case_named, "scaled_linear", T, (0.00085, 0.012))
    for T in Ts:
        run_case(f"sigmoid_T{T}", case_named, "sigmoid", T, (-3.0, 3.0, 1.0, 0.999))
    rng = np.random.default_rng(seed)
    for T in Ts:
        betas = np.sort(rng.uniform(1e-5, 0.02, T))
        run_case(f"betas_random_T{T}", case_betas, betas)
    betas = np.concatenate((np.sort(rng.uniform(1e-4, 0.3, 9)), [1.0]))
    run_case("betas_random_last_one_T10", case_betas, betas)

    for T in (2, 10):
        run_case(f"zero_snr_linear_T{T}", case_zero_snr, "linear", T, (1e-4, 1e-3))
    for T in (1000, 4000):
        run_case(f"zero_snr_linear_T{T}", case_zero_snr, "linear", T, (1e-4, 0.02))
    for T in (2, 10, 1000, 4000):
        run_case(f"zero_snr_cosine_T{T}", case_zero_snr, "cosine", T, (0.008, 0.999))

    lin = ("linear", 1000, (1e-4, 0.02))
    cos1k = ("cosine", 1000, (0.008, 0.999))
    run_case("respace_linear_T1000_ddim50", case_respace, *lin,
             iddpm_space_timesteps(1000, "ddim50"))
    run_case("respace_linear_T1000_sections_10_15_20", case_respace, *lin,
             iddpm_space_timesteps(1000, "10,15,20"))
    run_case("respace_linear_T1000_identity", case_respace, *lin, list(range(1000)))
    run_case("respace_linear_T1000_single_steps", case_single_steps)
    sub = sorted(set(np.random.default_rng(seed + 1).choice(1000, 40, replace=False).tolist())
                 | {999})
    run_case("respace_cosine_T1000_random_unsorted", case_respace, *cos1k, sub, seed + 2)
    run_case("respace_cosine_T4000_spec100", case_respace, "cosine", 4000, (0.008, 0.999),
             iddpm_space_timesteps(4000, "100"))
    run_case("respace_zero_snr_cosine_T1000_spec50", case_respace, *cos1k,
             iddpm_space_timesteps(1000, "50"), None, True)
    run_case("respace_twice_linear_T1000", case_respace_twice)

    run_case("create_errors", case_create_errors)
    run_case("zero_snr_errors", case_zero_snr_errors)
    run_case("respace_errors", case_respace_errors)
    run_case("accessor_errors", case_accessor_errors)

    for T in (1, 2, 3, 10, 100, 250, 1000, 4000):
        run_case(f"from_spec_T{T}", case_spec_T, T)
    run_case("from_spec_T1000_N21_vs_linspace", case_spec_T1000_N21)
    run_case("spacing_leading_offset0", case_spacing, SPACING_LEADING, 0)
    run_case("spacing_leading_offset1", case_spacing, SPACING_LEADING, 1)
    run_case("spacing_linspace", case_spacing, SPACING_LINSPACE, 0)
    run_case("spacing_trailing", case_spacing, SPACING_TRAILING, 0)
    run_case("spacing_errors", case_spacing_errors)

    try:
        info_cosine_naive()
    except Exception as e:  # information only
        INFO.append(f"# cosine naive comparison not available: {e}")
    if QUERY_RCS:
        INFO.append("# from_spec query mode (cap 0, out NULL) on valid specs returned: "
                    + ", ".join(f"{rc} ({strerror(rc)}) x{n}" for rc, n in sorted(QUERY_RCS.items())))
    if TRAILING_ODD:
        kinds = {}
        for t in TRAILING_ODD:
            kinds[t[3]] = kinds.get(t[3], 0) + 1
        ex = ", ".join(f"T={t[0]} N={t[1]} (numpy {t[2]})" for t in TRAILING_ODD[:4])
        INFO.append(f"# trailing: numpy arange(T, 0, -T/N) has a length other than N for "
                    f"{len(TRAILING_ODD)} grid points ({ex}, ...); library: "
                    + ", ".join(f"{k} x{v}" for k, v in kinds.items()))
    finish()


@guarded
def case_single_steps(case):
    base, ref_base = _base(case, "linear", 1000, (1e-4, 0.02))
    with base:
        for kept in ([999], [0], [500], [0, 999], [998, 999]):
            sp = _respace(case, base, kept, f"respace {kept}")
            with sp:
                check_schedule(case, sp, ref_respace(ref_base, kept), timesteps=kept,
                               base_length=1000, label=f"kept {kept}")


if __name__ == "__main__":
    main()
