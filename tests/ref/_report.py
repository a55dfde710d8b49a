"""The output format the test runner (tests/run.sh) reads, for the Python
reference tests: one "ok"/"FAIL"/"skip" line per case and a closing
"N passed, M failed, K skipped"; the exit status is 1 if anything failed."""
import sys

results = {"passed": 0, "failed": 0, "skipped": 0}


def report(name, ok, detail=""):
    """Record one case; detail (possibly several lines) is printed indented on failure."""
    results["passed" if ok else "failed"] += 1
    print(("ok   " if ok else "FAIL ") + name)
    if not ok and detail:
        for line in str(detail).splitlines()[-15:]:
            print("    " + line)


def skip(name, reason):
    results["skipped"] += 1
    print(f"skip {name}: {reason}")


def finish():
    """Print the summary line and exit."""
    print(f"{results['passed']} passed, {results['failed']} failed, {results['skipped']} skipped")
    sys.exit(1 if results["failed"] else 0)
