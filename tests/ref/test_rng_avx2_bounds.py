"""Checks the numbers lib/rng_avx2.h's error bound rests on, in 60-digit
arithmetic (mpmath): the polynomials' relative errors against 2 atanh(s),
sin and cos with the coefficients as the doubles the C source holds, on
10^4 points of each interval (the ends included); the constants' parts; the
least |y| of the angle's reduction.  Run by `make check` (tests/run.sh), or
/usr/bin/python3 tests/ref/test_rng_avx2_bounds.py (seconds); prints log2 of
each bound and one ok/FAIL line per bound the source comment states (the
runner's format, tests/ref/_report.py); skips, saying so, without mpmath."""
import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import finish, report, skip  # noqa: E402

try:
    import mpmath as mp
except ImportError:
    skip("test_rng_avx2_bounds", "mpmath is not installed (Debian: python3-mpmath)")
    finish()

mp.mp.dps = 60
SRC = (Path(__file__).resolve().parents[2] / "lib" / "rng_avx2.h").read_text()


def const(name):
    m = re.search(r"#define %s (\S+)" % name, SRC)
    return mp.mpf(float.fromhex(m.group(1)) if "0x" in m.group(1) else float(m.group(1)))


L = [const("RNG4_L%d" % i) for i in range(6)]
S = [const("RNG4_S%d" % i) for i in range(5)]
C = [const("RNG4_C%d" % i) for i in range(5)]


def horner(c, z):
    p = mp.mpf(0)
    for x in reversed(c):
        p = p * z + x
    return p


def worst(f, lo, hi, n=10000):
    return max(f(lo + (hi - lo) * i / n) for i in range(1, n + 1))


def log2(x):
    return float(mp.log(x, 2))


# |s| for m in [sqrt(1/2) as a double, sqrt(2))
smax = (1 - mp.mpf(0.7071067811865476)) / (1 + mp.mpf(0.7071067811865476))
smax = max(smax, (mp.sqrt(2) - 1) / (mp.sqrt(2) + 1)) * (1 + mp.mpf(2) ** -40)
elog = worst(lambda s: abs(2 * s + s**3 * horner(L, s * s) - 2 * mp.atanh(s)) / (2 * mp.atanh(s)),
             0, smax)
ymax = mp.pi / 4 * (1 + mp.mpf(2) ** -40)
esin = worst(lambda y: abs(y + y**3 * horner(S, y * y) - mp.sin(y)) / mp.sin(y), 0, ymax)
ecos = worst(lambda y: abs(1 - y * y / 2 + y**4 * horner(C, y * y) - mp.cos(y)) / mp.cos(y), 0, ymax)
print("|s| <= %.6f, s^2 <= %.6f" % (float(smax), float(smax**2)))
print("log: 2^%.2f  sin: 2^%.2f  cos: 2^%.2f" % (log2(elog), log2(esin), log2(ecos)))
p3 = mp.pi / 2 - const("RNG4_PIO2_1") - const("RNG4_PIO2_2") - const("RNG4_PIO2_3")
l2 = -2 * mp.log(2) - mp.mpf(-2.0 * float.fromhex("0x1.62e42fefa39efp-1")) - mp.mpf(
    -2.0 * float.fromhex("0x1.abc9e3b39803fp-56"))
print("pi/2 - parts: 2^%.1f  -2 ln 2 - parts: 2^%.1f" % (log2(abs(p3)), log2(abs(l2))))
p2 = mp.pi / 2 - const("RNG4_PIO2_1") - const("RNG4_PIO2_2")  # the reduction's two parts
two_pi = mp.mpf(6.283185307179586476925286766559)
edrop = 0
for w in (1 << 30, 2 << 30, 3 << 30):
    theta = mp.mpf(float(two_pi * w * mp.mpf(2) ** -32))  # one rounding, as RN(2 pi_d u2)
    y = abs(theta - (w >> 30) * mp.pi / 2)
    edrop = max(edrop, (w >> 30) * abs(p2) / y)
    print("w = %d 2^30: |y| = %.3g" % (w >> 30, float(y)))
print("pi/2 - two parts: 2^%.2f; k times it over those |y|: 2^%.2f" % (log2(abs(p2)), log2(edrop)))
report("log polynomial within 2^-50 of 2 atanh(s)", elog < mp.mpf(2) ** -50, "2^%.2f" % log2(elog))
report("sin polynomial within 2^-45.4", esin < mp.mpf(2) ** -45.4, "2^%.2f" % log2(esin))
report("cos polynomial within 2^-49.5", ecos < mp.mpf(2) ** -49.5, "2^%.2f" % log2(ecos))
report("pi/2 in three parts within 2^-150", abs(p3) < mp.mpf(2) ** -150, "2^%.1f" % log2(abs(p3)))
report("k (pi/2 - two parts) within 2^-53.5 of the least |y|", edrop < mp.mpf(2) ** -53.5,
       "2^%.2f" % log2(edrop))
report("-2 ln 2 in two parts within 2^-100", abs(l2) < mp.mpf(2) ** -100, "2^%.1f" % log2(abs(l2)))
finish()
