#!/bin/sh
# The test runner of `make check` (and, with SANITIZE=1, of make
# check-sanitize, check-tsan and check-valgrind).  It runs every test program
# and script against the make build ($O) and, when meson is installed, the
# meson build ($O/meson), and ends with one line: "N passed, N failed, N skipped".
#
# With SANITIZE=1 it runs only the C test programs $O/tests/test_*, each
# prefixed by the command in TEST_WRAPPER when that is set (make
# check-valgrind: "valgrind -q --error-exitcode=99 ..."), under the label
# TEST_LABEL (default "sanitize").
#
# Each test program or script prints "ok"/"FAIL"/"skip" lines and, last, its
# own "N passed, N failed, N skipped"; this script adds those up.  A program
# that crashes or prints no summary counts as one failure.
set -u
O=${O:-out}
MB=$O/meson
# The interpreter of the Python tests: $PYTHON when set, else Debian's
# /usr/bin/python3 (its numpy and torch), else python3 on PATH.  Without one
# (a machine with gcc and make only) they are skipped with one line.
if [ -n "${PYTHON:-}" ]; then :; elif [ -x /usr/bin/python3 ]; then PYTHON=/usr/bin/python3
else PYTHON=python3; fi
if command -v "$PYTHON" >/dev/null 2>&1; then HAVE_PYTHON=1; else HAVE_PYTHON=; fi
# RUN_TESTS: when set, a space-separated list of test program names: only
# those C programs run (tests/abi/check_fresh_machine.sh keeps its nested run
# short with it); the Python tests and ABI scripts run as always.
RUN_TESTS=${RUN_TESTS:-}
export O CC="${CC:-cc}" CXX="${CXX:-c++}" OPENMP="${OPENMP:-}" MAKE="${MAKE:-make}"

passed=0 failed=0 skipped=0 failures=""

# run_one LABEL COMMAND...: run, echo its output under a header, add counts.
run_one() {
    label=$1
    shift
    log=$(mktemp)
    "$@" >"$log" 2>&1
    rc=$?
    echo "== $label"
    sed 's/^/   /' "$log"
    line=$(tail -n 1 "$log")
    rm -f "$log"
    p=$(echo "$line" | sed -n 's/^\([0-9][0-9]*\) passed, \([0-9][0-9]*\) failed\(, \([0-9][0-9]*\) skipped\)\{0,1\}$/\1/p')
    if [ -z "$p" ]; then
        echo "   (exit status $rc and no summary line: counted as one failure)"
        failed=$((failed + 1))
        failures="$failures $label"
        return
    fi
    f=$(echo "$line" | sed -n 's/^[0-9]* passed, \([0-9]*\) failed.*/\1/p')
    s=$(echo "$line" | sed -n 's/.* failed, \([0-9]*\) skipped$/\1/p')
    s=${s:-0}
    if [ "$rc" -ne 0 ] && [ "$f" -eq 0 ]; then
        echo "   (exit status $rc after a clean summary: counted as one failure)"
        f=1
    fi
    passed=$((passed + p))
    failed=$((failed + f))
    skipped=$((skipped + s))
    [ "$f" -ne 0 ] && failures="$failures $label"
    return 0
}

# run_build NAME LIBDIR TESTDIR CLI: every test program of one build (in
# TESTDIR), the Python tests against its shared library (in LIBDIR), and
# the end-to-end tests of its diffuse program (CLI).
run_build() {
    name=$1
    dir=$2
    cli=$4
    for t in $(find "$3" -maxdepth 1 -type f -name 'test_*' -perm -u+x | sort); do
        if [ -n "$RUN_TESTS" ]; then
            case " $RUN_TESTS " in *" $(basename "$t") "*) ;; *) continue ;; esac
        fi
        run_one "$name: $(basename "$t")" "$t"
    done
    if [ -z "$HAVE_PYTHON" ]; then
        echo "== $name: Python tests"
        echo "   skip the Python tests (tests/ref, tests/python): $PYTHON is not installed"
        skipped=$((skipped + 1))
        return
    fi
    for py in tests/ref/test_*.py tests/python/test_*.py; do
        [ -f "$py" ] || continue
        run_one "$name: $(basename "$py")" env LIBDIFFUSE_PATH="$dir/libdiffuse.so.1" \
            "$PYTHON" "$py"
    done
    for py in tests/cli/test_*.py; do
        [ -f "$py" ] || continue
        run_one "$name: $(basename "$py")" env LIBDIFFUSE_PATH="$dir/libdiffuse.so.1" \
            DIFFUSE_CLI="$cli" "$PYTHON" "$py"
    done
    if [ -f tests/python/test_binding.py ]; then
        run_one "$name: test_binding.py without numpy" env LIBDIFFUSE_NO_NUMPY=1 \
            LIBDIFFUSE_PATH="$dir/libdiffuse.so.1" "$PYTHON" tests/python/test_binding.py
    fi
}

if [ "${SANITIZE:-}" = 1 ]; then
    # make check-sanitize, check-tsan: the C test programs of the sanitizer
    # build only; make check-valgrind: those of the default build, each run
    # by the wrapper (split into words: a command and its options), with its
    # time.
    tlabel=${TEST_LABEL:-sanitize}
    wrapper=${TEST_WRAPPER:-}
    for t in $(find "$O/tests" -maxdepth 1 -type f -name 'test_*' -perm -u+x | sort); do
        start=$(date +%s)
        # shellcheck disable=SC2086
        run_one "$tlabel: $(basename "$t")" $wrapper "$t"
        if [ -n "$wrapper" ]; then echo "   ($(($(date +%s) - start)) s)"; fi
    done
    [ -n "$failures" ] && echo "failed:$failures"
    echo "$passed passed, $failed failed, $skipped skipped"
    [ "$failed" -eq 0 ]
    exit
fi

run_build make "$O" "$O/tests" "$O/bin/diffuse"
if [ -f "$MB/build.ninja" ]; then
    MESON_BUILD=$MB
    run_build meson "$MB" "$MB" "$MB/diffuse"
else
    MESON_BUILD=
    echo "== meson"
    echo "   skip meson build: meson is not installed, so only the make build was tested"
    skipped=$((skipped + 1))
fi
export MESON_BUILD

# diffuse-mpi under mpiexec (make build only; each script skips, saying
# why, when mpicc or mpiexec is missing).
for script in tests/mpi/test_*.sh; do
    [ -f "$script" ] || continue
    run_one "$(basename "$script")" sh "$script"
done

for script in tests/abi/check_*.sh; do
    [ -f "$script" ] || continue
    run_one "$(basename "$script")" sh "$script"
done

[ -n "$failures" ] && echo "failed:$failures"
echo "$passed passed, $failed failed, $skipped skipped"
[ "$failed" -eq 0 ]
