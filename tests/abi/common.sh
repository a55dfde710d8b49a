# Shared by the tests/abi/check_*.sh scripts (sourced from the repository
# root): the runner's output format (ok / FAIL / skip lines and the closing
# "N passed, N failed, N skipped") and a temporary directory removed on exit.
set -u
LC_ALL=C
export LC_ALL

passed=0 failed=0 skipped=0
ok() { passed=$((passed + 1)); printf 'ok   %s\n' "$1"; }
skip() { skipped=$((skipped + 1)); printf 'skip %s: %s\n' "$1" "$2"; }
# fail NAME [DETAIL]: DETAIL may span lines; it is indented (first 40 lines).
fail() {
    failed=$((failed + 1))
    printf 'FAIL %s\n' "$1"
    if [ $# -gt 1 ] && [ -n "$2" ]; then
        printf '%s\n' "$2" | sed '/^[[:space:]]*$/d' | sed -n '1,40s/^/    /p'
    fi
}
finish() {
    printf '%d passed, %d failed, %d skipped\n' "$passed" "$failed" "$skipped"
    [ "$failed" -eq 0 ] || exit 1
    exit 0
}

tmp=$(mktemp -d "${TMPDIR:-/tmp}/diffuse-abi.XXXXXX") || exit 1
trap 'rm -rf "$tmp"' EXIT
trap 'exit 130' INT TERM
