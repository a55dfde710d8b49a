#!/bin/sh
# The ABI against its checked-in baseline, tests/abi/libdiffuse.abi (written
# by abidw from a debug build: `make abi-baseline`).  A debug copy of the
# library is built with the make build, then abidiff compares the baseline
# with it, public headers only: removed or changed functions and types fail;
# added functions (in DIFFUSE_1.0 before the release, in a new version node
# after it) pass.  A second case checks that the comparison can fail: a
# baseline with one function taken out must be reported as a removal.
#
# Run from the repository root: sh tests/abi/check_abi.sh
# Environment: MAKE, CC.  Skips when abigail-tools (abidw, abidiff) is absent.
. tests/abi/common.sh

MAKE=${MAKE:-make}
CC=${CC:-cc}
baseline=tests/abi/libdiffuse.abi

if ! command -v abidiff > /dev/null 2>&1 || ! command -v abidw > /dev/null 2>&1; then
    skip "abi_baseline" "abigail-tools (abidw, abidiff) not installed"
    finish
fi
if [ ! -f "$baseline" ]; then
    fail "abi_baseline" "$baseline missing: write it with make abi-baseline"
    finish
fi

if ! $MAKE --no-print-directory -s lib O="$tmp/build" CC="$CC" CFLAGS="-g -Og" OPENMP= \
        > "$tmp/build.log" 2>&1; then
    fail "abi_debug_build" "$(cat "$tmp/build.log")"
    finish
fi
lib=$(ls "$tmp"/build/libdiffuse.so.*.*.* | head -n 1)

# The whole report is kept; changes other than additions fail.  abidiff's
# status is a bit set: 1 error, 2 usage, 4 some change, 8 incompatible.
abidiff --no-added-syms --headers-dir2 include "$baseline" "$lib" > "$tmp/diff" 2>&1
status=$?
if [ "$status" -eq 0 ]; then
    added=$(abidiff --headers-dir2 include "$baseline" "$lib" 2>&1 |
            sed -n 's/^Functions changes summary: .* \([0-9][0-9]*\) Added.*/\1/p')
    ok "abi_baseline (no removed or changed function or type; ${added:-0} added)"
else
    fail "abi_baseline (abidiff status $status; if the change is intended before the 1.0 release, run make abi-baseline)" \
        "$(cat "$tmp/diff")"
fi

# The comparison can fail: drop diffuse_net_param_count from a copy of the
# baseline, and the fresh library compared with it has to show a removal.
sed -e "/<elf-symbol name='diffuse_net_param_count'/d" \
    -e "/<function-decl name='diffuse_net_param_count'/,/<\/function-decl>/d" \
    "$baseline" > "$tmp/less.abi"
abidiff --headers-dir1 include "$lib" "$tmp/less.abi" > "$tmp/diff2" 2>&1
status=$?
if [ "$status" -ne 0 ] &&
        grep -q "^ *\[D\] 'function size_t diffuse_net_param_count(" "$tmp/diff2"; then
    ok "abi_removal_detected"
else
    fail "abi_removal_detected (abidiff status $status)" "$(cat "$tmp/diff2")"
fi
finish
