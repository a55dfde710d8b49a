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

# The tests run in parallel, TEST_JOBS at a time (default: the number of
# online CPUs, divided in the OpenMP build by the threads each test starts,
# OMP_NUM_THREADS or one per CPU, so that tests x threads <= CPUs: with more
# threads than cores a test's barriers wait on descheduled threads: on two
# busy cores, the OpenMP build's test_dpmsolver (2 threads) run twice at once
# had not finished after 12 minutes, and alone took 2 minutes; TEST_JOBS=1
# runs them one after another).  Each
# test's output goes to its own file and is printed, as one block, in the
# order the tests were queued, whatever order they finish in; the counts do
# not depend on the job count.  Every test writes its scratch files under a
# mkstemp/mkdtemp name of its own, so two tests (or one test against both
# builds) never share a path.
ncpu=$(getconf _NPROCESSORS_ONLN 2>/dev/null || echo 1)
case $ncpu in '' | *[!0-9]* | 0) ncpu=1 ;; esac
if [ -n "${TEST_JOBS:-}" ]; then
    JOBS=$TEST_JOBS
elif [ "$OPENMP" = 1 ]; then
    threads=${OMP_NUM_THREADS:-$ncpu}
    threads=${threads%%,*}
    case $threads in '' | *[!0-9]* | 0) threads=$ncpu ;; esac
    JOBS=$((ncpu / threads))
else
    JOBS=$ncpu
fi
case $JOBS in '' | *[!0-9]* | 0) JOBS=1 ;; esac
work=$(mktemp -d "${TMPDIR:-/tmp}/diffuse-run.XXXXXX") || exit 1
trap 'rm -rf "$work"' EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
n=0

# queue LABEL COMMAND...: add one test to the queue (run later by run_queue).
queue() {
    n=$((n + 1))
    printf '%s\n' "$1" >"$work/$n.label"
    printf '%s %s\n' "$n" "$1" >>"$work/labels"
    shift
    {
        printf 'exec'
        for a in "$@"; do
            printf " '%s'" "$(printf '%s' "$a" | sed "s/'/'\\\\''/g")"
        done
        printf '\n'
    } >"$work/$n.cmd"
}

# The runner of one queued test, called by xargs: its output, exit status,
# wall time (date +%s.%N) and CPU time (the shell's `times`: user and system
# time of its children, i.e. the test and every process it waited for).
cat >"$work/one.sh" <<'ONE'
d=$1 i=$2
s=$(date +%s.%N)
sh "$d/$i.cmd" >"$d/$i.log" 2>&1 </dev/null
rc=$?
e=$(date +%s.%N)
times >"$d/$i.times"
echo "$rc $s $e" >"$d/$i.rc.tmp"
mv "$d/$i.rc.tmp" "$d/$i.rc"
ONE

# Tests that take the longest start first (CPU time on two AVX2 cores, most
# first: make check, then make check-valgrind), so that the last ones to
# finish are short; the rest start in queue order.
FIRST="test_vlb_terms.py check_abi.sh check_fresh_machine.sh test_iddpm test_dpmsolver
test_oracle test_binding.py test_scheduler.py test_torch_iddpm.py test_examples.py
test_iddpm_import.py test_gemm test_mlp test_net_float_time test_layers test_train_split"

# run_queue: run every queued test, TEST_JOBS at a time, and print each
# one's block (in queue order, as soon as it and every test before it are
# done) under the header "== LABEL (W s, CPU C s)", adding its counts.
run_queue() {
    [ "$n" -gt 0 ] || return 0
    awk -v first="$FIRST" 'BEGIN { nf = split(first, f) }
        { id[NR] = $1; name[NR] = $NF }
        END {
            for (k = 1; k <= nf; k++)
                for (r = 1; r <= NR; r++)
                    if (!(r in done) && name[r] == f[k]) { print id[r]; done[r] = 1 }
            for (r = 1; r <= NR; r++) if (!(r in done)) print id[r]
        }' "$work/labels" >"$work/order"
    xargs -P "$JOBS" -n 1 sh "$work/one.sh" "$work" <"$work/order" &
    xpid=$!
    i=1
    while [ "$i" -le "$n" ]; do
        while [ ! -f "$work/$i.rc" ] && kill -0 "$xpid" 2>/dev/null; do
            sleep 0.1 2>/dev/null || sleep 1
        done
        report "$i"
        i=$((i + 1))
    done
    wait "$xpid"
}

# report I: the block and counts of queued test I.
report() {
    label=$(cat "$work/$1.label")
    log=$work/$1.log
    if [ -f "$work/$1.rc" ]; then
        read -r rc s e <"$work/$1.rc"
        cpu=$(tail -n 1 "$work/$1.times" | awk '{ t = 0; for (k = 1; k <= 2; k++) {
            split($k, a, "m"); sub("s", "", a[2]); t += a[1] * 60 + a[2] }; printf "%.1f", t }')
        wall=$(echo "$s $e" | awk '{ printf "%.1f", $2 - $1 }')
        echo "== $label ($wall s, CPU $cpu s)"
    else
        rc="(none: the runner stopped)"
        echo "== $label"
        : >>"$log"
    fi
    sed 's/^/   /' "$log"
    line=$(tail -n 1 "$log")
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
        queue "$name: $(basename "$t")" "$t"
    done
    if [ -z "$HAVE_PYTHON" ]; then
        echo "== $name: Python tests"
        echo "   skip the Python tests (tests/ref, tests/python): $PYTHON is not installed"
        skipped=$((skipped + 1))
        return
    fi
    for py in tests/ref/test_*.py tests/python/test_*.py; do
        [ -f "$py" ] || continue
        queue "$name: $(basename "$py")" env LIBDIFFUSE_PATH="$dir/libdiffuse.so.1" \
            "$PYTHON" "$py"
    done
    for py in tests/cli/test_*.py; do
        [ -f "$py" ] || continue
        queue "$name: $(basename "$py")" env LIBDIFFUSE_PATH="$dir/libdiffuse.so.1" \
            DIFFUSE_CLI="$cli" "$PYTHON" "$py"
    done
    if [ -f tests/python/test_binding.py ]; then
        queue "$name: test_binding.py without numpy" env LIBDIFFUSE_NO_NUMPY=1 \
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
        # shellcheck disable=SC2086
        queue "$tlabel: $(basename "$t")" $wrapper "$t"
    done
    run_queue
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
    queue "$(basename "$script")" sh "$script"
done

for script in tests/abi/check_*.sh; do
    [ -f "$script" ] || continue
    queue "$(basename "$script")" sh "$script"
done

run_queue
[ -n "$failures" ] && echo "failed:$failures"
echo "$passed passed, $failed failed, $skipped skipped"
[ "$failed" -eq 0 ]
