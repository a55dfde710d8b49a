"""Case bookkeeping and the ctypes binding shared by the reference tests that
call the C functions directly (test_schedules.py, test_vlb_terms.py).

A test is a function fn(case, ...) run by run_case(); it records problems
with case.fail()/case.check()/case.rc() and may raise Skip.  load_library()
binds the functions a test needs (from LIBDIFFUSE_PATH, the path of
libdiffuse.so.1) plus diffuse_strerror and diffuse_last_error, which Case.rc
uses to explain a status.  finish() prints the runner's summary line
("N passed, M failed, K skipped", tests/run.sh reads it) and exits.
"""
import ctypes
import os
import sys
import traceback
from ctypes import c_char_p, c_int

COUNTS = {"passed": 0, "failed": 0, "skipped": 0}
_LIB = [None]  # the handle bound by load_library()


class Skip(Exception):
    pass


def strerror(rc):
    lib = _LIB[0]
    if lib is None:
        return "?"
    s = lib.diffuse_strerror(rc)
    return s.decode() if s else "NULL"


def last_error():
    lib = _LIB[0]
    if lib is None:
        return ""
    s = lib.diffuse_last_error()
    return s.decode(errors="replace") if s is not None else None


class Case:
    """Collects the problems of one test case."""

    def __init__(self, name):
        self.name = name
        self.problems = []

    def fail(self, msg):
        self.problems.append(msg)

    def check(self, cond, msg):
        if not cond:
            self.fail(msg)
        return bool(cond)

    def rc(self, got, want, what):
        if got != want:
            self.fail(f"{what}: status {got} ({strerror(got)}), expected {want} "
                      f"({strerror(want)}); last error: {last_error()!r}")
            return False
        return True


def load_library(case, sigs):
    """The library with sigs ({name: (restype, argtypes)}) and the two error
    functions bound, or None after case.fail() saying why."""
    path = os.environ.get("LIBDIFFUSE_PATH")
    if not path:
        case.fail("LIBDIFFUSE_PATH is not set (path of libdiffuse.so.1)")
        return None
    try:
        handle = ctypes.CDLL(path)
    except OSError as e:
        case.fail(f"cannot load {path}: {e}")
        return None
    sigs = dict(sigs)
    sigs["diffuse_last_error"] = (c_char_p, [])
    sigs["diffuse_strerror"] = (c_char_p, [c_int])
    missing = []
    for name, (res, args) in sigs.items():
        try:
            f = getattr(handle, name)
        except AttributeError:
            missing.append(name)
            continue
        f.restype = res
        f.argtypes = args
    if missing:
        case.fail(f"{path} lacks: {', '.join(missing)}")
        return None
    _LIB[0] = handle
    return handle


def run_case(name, fn, *args, case_class=Case, skip_reason=None):
    """Run fn(case, *args) as one case and print its line; skip_reason, when
    given, skips it without running."""
    if skip_reason is not None:
        COUNTS["skipped"] += 1
        print(f"skip {name}: {skip_reason}")
        return
    case = case_class(name)
    try:
        fn(case, *args)
    except Skip as e:
        COUNTS["skipped"] += 1
        print(f"skip {name}: {e}")
        return
    except Exception:  # a crash in the test counts as a failure with its traceback
        tb = traceback.format_exc().rstrip().splitlines()
        case.fail("exception: " + " | ".join(tb[-3:]))
    if case.problems:
        COUNTS["failed"] += 1
        print(f"FAIL {name}")
        for p in case.problems:
            print(f"    {p}")
    else:
        COUNTS["passed"] += 1
        print(f"ok   {name}")
    sys.stdout.flush()


def finish(lines=()):
    """Print lines, then the summary; exit 1 if any case failed."""
    for line in lines:
        print(line)
    print(f"{COUNTS['passed']} passed, {COUNTS['failed']} failed, {COUNTS['skipped']} skipped")
    sys.exit(1 if COUNTS["failed"] else 0)
