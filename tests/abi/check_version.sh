#!/bin/sh
# One version everywhere (after libsodium): the header's macros, the running
# library's diffuse_version() and diffuse_version_string() in each build,
# meson's project version, pkg-config --modversion of both .pc files, and the
# first "## " heading of CHANGELOG.md.
#
# Run from the repository root: sh tests/abi/check_version.sh
# Environment: O (make build directory, may be empty), MESON_BUILD (meson build
# directory, may be empty), CC.
. tests/abi/common.sh

O=${O:-}
MESON_BUILD=${MESON_BUILD:-}
CC=${CC:-cc}
top=$(pwd)
header=include/diffuse.h

hver() { sed -n "s/^#define DIFFUSE_VERSION_$1 \([0-9][0-9]*\).*/\1/p" "$header"; }
major=$(hver MAJOR) minor=$(hver MINOR) patch=$(hver PATCH)
version=$major.$minor.$patch
case $version in
    [0-9]*.[0-9]*.[0-9]*) ;;
    *)
        fail "header: DIFFUSE_VERSION_MAJOR/MINOR/PATCH" "read '$version' from $header"
        finish ;;
esac
number=$((major * 10000 + minor * 100 + patch))

# The macros as the compiler sees them, and the library's answers.
cat > "$tmp/version.c" <<'EOF'
#include <stdio.h>
#include "diffuse.h"

int main(int argc, char **argv)
{
    (void)argv;
    printf("%d.%d.%d %d %s\n", DIFFUSE_VERSION_MAJOR, DIFFUSE_VERSION_MINOR,
           DIFFUSE_VERSION_PATCH, DIFFUSE_VERSION_NUMBER, DIFFUSE_VERSION_STRING);
#ifndef HEADER_ONLY
    if (argc > 1)
        printf("%d %s\n", diffuse_version(), diffuse_version_string());
#endif
    return 0;
}
EOF

expect_header="$version $number $version"
if ! $CC -std=c99 -DHEADER_ONLY -I"$top/include" "$tmp/version.c" -o "$tmp/header" \
        > "$tmp/cc.log" 2>&1; then
    fail "header: the version macros compile" "$(cat "$tmp/cc.log")"
else
    got=$("$tmp/header")
    if [ "$got" = "$expect_header" ]; then
        ok "header: MAJOR.MINOR.PATCH, NUMBER and STRING agree ($version, $number)"
    else
        fail "header: MAJOR.MINOR.PATCH, NUMBER and STRING agree" \
            "expected '$expect_header' (MAJOR.MINOR.PATCH NUMBER STRING), got '$got'"
    fi
fi

# library BUILD DIR: diffuse_version() and diffuse_version_string().
library() {
    b=$1 dir=$2
    if ! $CC -std=c99 -I"$top/include" "$tmp/version.c" -o "$tmp/$b" -L"$dir" -ldiffuse \
            > "$tmp/cc.log" 2>&1; then
        fail "$b: diffuse_version() and diffuse_version_string()" "$(cat "$tmp/cc.log")"
        return
    fi
    got=$(LD_LIBRARY_PATH=$dir${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH} "$tmp/$b" run 2>&1 |
          sed -n 2p)
    if [ "$got" = "$number $version" ]; then
        ok "$b: diffuse_version() = $number, diffuse_version_string() = \"$version\""
    else
        fail "$b: diffuse_version() and diffuse_version_string()" \
            "expected '$number $version', got '$got'"
    fi
}

# modversion BUILD DIR: pkg-config --modversion of DIR/libdiffuse.pc.
modversion() {
    b=$1 dir=$2
    if ! command -v pkg-config > /dev/null 2>&1; then
        skip "$b: pkg-config --modversion" "pkg-config not installed"
        return
    fi
    if [ ! -f "$dir/libdiffuse.pc" ]; then
        fail "$b: pkg-config --modversion" "$dir/libdiffuse.pc missing"
        return
    fi
    got=$(PKG_CONFIG_LIBDIR=$dir PKG_CONFIG_PATH=$dir pkg-config --modversion libdiffuse 2>&1)
    if [ "$got" = "$version" ]; then
        ok "$b: pkg-config --modversion = $version"
    else
        fail "$b: pkg-config --modversion" "expected '$version', got '$got'"
    fi
}

if [ -z "$O" ]; then
    skip "make build" "O is empty (no make build to check)"
elif [ ! -e "$O/libdiffuse.so" ]; then
    skip "make build" "no library in $O (run make)"
else
    dir=$(cd "$O" && pwd)
    library make "$dir"
    modversion make "$dir"
fi

if [ -z "$MESON_BUILD" ]; then
    skip "meson build" "MESON_BUILD is empty (meson not installed?)"
elif [ ! -f "$MESON_BUILD/build.ninja" ]; then
    skip "meson build" "no meson build in $MESON_BUILD"
else
    dir=$(cd "$MESON_BUILD" && pwd)
    info=$dir/meson-info/intro-projectinfo.json
    got=$(sed -n 's/^{"version": *"\([^"]*\)".*/\1/p' "$info" 2>/dev/null)
    if [ -z "$got" ] && command -v meson > /dev/null 2>&1; then
        got=$(meson introspect --projectinfo "$dir" | sed -n 's/^{"version": *"\([^"]*\)".*/\1/p')
    fi
    if [ "$got" = "$version" ]; then
        ok "meson: project version $version"
    else
        fail "meson: project version" "expected '$version', got '$got' (from $info)"
    fi
    library meson "$dir"
    modversion meson "$dir"
fi

# CHANGELOG.md: the first X.Y.Z in the first "## " heading, as in
# "## Unreleased (1.0.0)" or "## 1.0.0 (2025-01-31)".
if [ ! -f CHANGELOG.md ]; then
    fail "CHANGELOG.md: top heading names $version" "CHANGELOG.md missing"
else
    heading=$(sed -n '/^## /{p;q;}' CHANGELOG.md)
    got=$(printf '%s\n' "$heading" |
          awk 'match($0, /[0-9]+\.[0-9]+\.[0-9]+/) { print substr($0, RSTART, RLENGTH) }')
    if [ "$got" = "$version" ]; then
        ok "CHANGELOG.md: top heading names $version"
    else
        fail "CHANGELOG.md: top heading names $version" "first heading: '$heading'"
    fi
fi

finish
