#!/bin/sh
# `make check` on the README's fresh machine: gcc, make and git, but no C++
# compiler, meson, pkg-config or python3 (issue 12).  It must succeed and
# say, one line each, what it skipped for want of which tool.
#
# The run: `make check` in a separate build directory, from an environment
# holding only PATH, HOME and TMPDIR, where PATH is a directory of links to
# every program of this machine's PATH except the C++ compilers, clang,
# meson, ninja, pkg-config, abigail-tools and python (so make's default CXX,
# g++, is missing) and PYTHON=python3 (this machine's /usr/bin/python3
# would be found by its absolute path).  To keep it short the library and
# the test programs are copied from $O with their times (make rebuilds
# nothing of them; the examples are built afresh) and RUN_TESTS limits the
# C test programs to one; the Python tests and the ABI scripts run as always.
#
# Run from the repository root: sh tests/abi/check_fresh_machine.sh
# Environment: O (the make build directory), OPENMP, WERROR.
. tests/abi/common.sh

O=${O:-}
MAKE=${MAKE:-make}

if [ -n "${DIFFUSE_FRESH_MACHINE_NESTED:-}" ]; then
    skip "fresh machine" "already inside its nested make check"
    finish
fi
if [ -z "$O" ] || [ ! -f "$O/libdiffuse.a" ] || [ ! -x "$O/tests/test_status" ]; then
    skip "fresh machine" "no make build with test programs in '$O' (run make check)"
    finish
fi
make_path=$(command -v "$(set -- $MAKE; echo "$1")") || {
    skip "fresh machine" "$MAKE not found"
    finish
}

# The tools of a machine with gcc, make and git only.
bin=$tmp/bin
mkdir -p "$bin"
old_ifs=$IFS
IFS=:
for d in $PATH; do
    [ -d "$d" ] || continue
    IFS=$old_ifs
    # ln keeps the first link of a name (PATH order) and complains of the rest
    ln -s "$d"/* "$bin"/ 2>/dev/null
    IFS=:
done
IFS=$old_ifs
find "$bin" \( -name '*g++*' -o -name '*c++*' -o -name 'clang*' -o -name 'meson*' \
    -o -name 'ninja*' -o -name '*pkg-config*' -o -name 'pkgconf*' -o -name 'abi*' \
    -o -name 'python*' -o -name 'pydoc*' \) -exec rm -f {} +
missing=
for tool in gcc cc make sh sed; do
    [ -e "$bin/$tool" ] || missing="$missing $tool"
done
if [ -n "$missing" ]; then
    skip "fresh machine" "this machine lacks:$missing"
    finish
fi
for tool in g++ c++ meson pkg-config python3; do
    if PATH=$bin command -v "$tool" > /dev/null 2>&1; then
        fail "fresh machine: $tool hidden" "PATH=$bin still finds it"
        finish
    fi
done

# The build: the library, its objects and the test programs, times kept.
fo=$tmp/out
mkdir -p "$fo"
cp -pPR "$O/obj" "$O/tests" "$fo"/ &&
    cp -pP "$O"/libdiffuse.so* "$O"/libdiffuse.a "$O"/libdiffuse.pc "$fo"/ || {
    fail "fresh machine: copy the build from $O"
    finish
}

start=$(date +%s)
env -i PATH="$bin" HOME="${HOME:-/tmp}" TMPDIR="${TMPDIR:-/tmp}" PYTHON=python3 \
    RUN_TESTS=test_status DIFFUSE_FRESH_MACHINE_NESTED=1 \
    "$make_path" --no-print-directory O="$fo" OPENMP="${OPENMP:-}" WERROR="${WERROR:-}" \
    check > "$tmp/log" 2>&1
rc=$?
secs=$(($(date +%s) - start))
summary=$(grep -E '^[0-9]+ passed, [0-9]+ failed, [0-9]+ skipped$' "$tmp/log" | tail -n 1)
if [ "$rc" -eq 0 ] && [ -n "$summary" ] && echo "$summary" | grep -q ' 0 failed'; then
    ok "make check without g++, meson, pkg-config, python3: exit 0, $summary (${secs} s)"
else
    fail "make check without g++, meson, pkg-config, python3 (exit $rc)" \
        "$(grep -E 'FAIL|Error|error|No such file|not found' "$tmp/log" | head -n 20)
$(tail -n 15 "$tmp/log")"
fi
if [ -x "$fo/examples/quickstart" ] && [ -x "$fo/examples/toy2d" ]; then
    ok "the C examples were built"
else
    fail "the C examples were built" "$(ls "$fo/examples" 2>&1)"
fi
# expect NAME PATTERN: one line of the log matches PATTERN (grep -E).
expect() {
    n=$(grep -c -E "$2" "$tmp/log")
    if [ "$n" -ge 1 ]; then
        ok "$1: $(grep -E "$2" "$tmp/log" | head -n 1 | sed 's/^ *//')"
    else
        fail "$1" "no line matches '$2'"
    fi
}
expect "g++ named for the C++ example" 'skip .*quickstart_cpp: no C\+\+ compiler \(g\+\+ not found\)'
expect "meson named for the meson build" 'meson not installed: the meson build will be skipped'
expect "meson named by the runner" 'skip meson build: meson is not installed'
expect "python3 named for the Python tests" 'skip the Python tests .*python3 is not installed'
expect "pkg-config named for the install check" 'skip install: pkg-config not installed'
expect "g++ named for the C++ header check" 'skip g\+\+: not installed'
finish
