#!/bin/sh
# The exported ABI of each build against tests/abi/symbols.txt.
#
# Run from the repository root: sh tests/abi/check_symbols.sh
# Environment: O (make build directory, may be empty), MESON_BUILD (meson build
# directory, may be empty), OPENMP (1 or empty).
#
# Checks, for each build present: the exported symbols with their version node
# equal symbols.txt; every export starts with diffuse_; the SONAME and the file
# name follow the header's version, with both symlinks; NEEDED lists only libc,
# libm and the dynamic loader (and libgomp exactly in an OpenMP build); every
# defined global of libdiffuse.a is an export or a diffuse__ internal.  Then:
# make and meson export the same list, and lib/libdiffuse.map and the
# DIFFUSE_API declarations of include/diffuse.h name the same functions as
# symbols.txt.
. tests/abi/common.sh

O=${O:-}
MESON_BUILD=${MESON_BUILD:-}
OPENMP=${OPENMP:-}
[ "$OPENMP" = 0 ] && OPENMP=

header=include/diffuse.h
symbols=tests/abi/symbols.txt
map=lib/libdiffuse.map

hver() { sed -n "s/^#define DIFFUSE_VERSION_$1 \([0-9][0-9]*\).*/\1/p" "$header"; }
major=$(hver MAJOR)
version=$major.$(hver MINOR).$(hver PATCH)
soname=libdiffuse.so.$major
real=libdiffuse.so.$version

for tool in objdump readelf nm; do
    if ! command -v "$tool" >/dev/null 2>&1; then
        skip "symbols" "$tool not installed (binutils)"
        finish
    fi
done

# The checked-in list, without comments and blank lines.
grep -v -e '^#' -e '^[[:space:]]*$' "$symbols" > "$tmp/expected"
sort "$tmp/expected" > "$tmp/expected.sorted"
cut -d' ' -f2 "$tmp/expected.sorted" | sort > "$tmp/expected.names"

bad=$(grep -v -E '^DIFFUSE_[0-9]+\.[0-9]+ diffuse_[a-z0-9_]+$' "$tmp/expected")
if [ -n "$bad" ]; then
    fail "symbols.txt: well-formed lines 'DIFFUSE_M.N diffuse_name'" "$bad"
elif ! cmp -s "$tmp/expected" "$tmp/expected.sorted"; then
    fail "symbols.txt: sorted (LC_ALL=C sort)" "$(diff "$tmp/expected" "$tmp/expected.sorted")"
elif [ -n "$(uniq -d "$tmp/expected.names")" ]; then
    fail "symbols.txt: no name twice" "$(uniq -d "$tmp/expected.names")"
else
    ok "symbols.txt: well-formed, sorted, $(wc -l < "$tmp/expected" | tr -d ' ') symbols"
fi

# Defined dynamic symbols as "NODE name", without the *ABS* node entries.
exports() {
    objdump -T "$1" | awk '
        /^[0-9a-f]+ / && !/\*UND\*/ && !(/\*ABS\*/ && $(NF-1) == $NF) { print $(NF-1), $NF }
    ' | sort
}

# The dynamic loader is NEEDED by any library with thread-local storage
# (__tls_get_addr); it is part of glibc like libc and libm.
is_loader() {
    case $1 in ld-linux*.so.* | ld64.so.* | ld.so.*) return 0 ;; esac
    return 1
}

# meson's value of the openmp option: enabled, disabled or auto.
meson_openmp() {
    f=$MESON_BUILD/meson-info/intro-buildoptions.json
    [ -f "$f" ] || return 0
    tr '{' '\n' < "$f" | grep '"name": *"openmp"' |
        sed -n 's/.*"value": *"\([a-z]*\)".*/\1/p' | head -n 1
}

check_build() { # NAME DIR OMP(1, empty, or "any")
    b=$1 dir=$2 omp=$3
    so=$dir/$real

    # File name, symlinks, SONAME.
    if [ ! -f "$so" ] || [ -L "$so" ]; then
        fail "$b: $real is a regular file (the header says $version)" \
            "$(ls -l "$dir"/libdiffuse.so* 2>&1)"
        return
    fi
    target=$(readlink -f "$so")
    detail=
    for link in "$soname" libdiffuse.so; do
        if [ ! -L "$dir/$link" ]; then
            detail="$detail$link is not a symlink
"
        elif [ "$(readlink -f "$dir/$link")" != "$target" ]; then
            detail="$detail$link -> $(readlink "$dir/$link") does not lead to $real
"
        fi
    done
    if [ -z "$detail" ]; then
        ok "$b: $real with symlinks $soname and libdiffuse.so"
    else
        fail "$b: $real with symlinks $soname and libdiffuse.so" "$detail"
    fi

    got=$(readelf -d "$so" | sed -n 's/.*(SONAME).*\[\(.*\)\].*/\1/p')
    if [ "$got" = "$soname" ]; then
        ok "$b: SONAME $soname"
    else
        fail "$b: SONAME $soname" "readelf -d $so: SONAME '$got'"
    fi

    # Exported symbols with their version nodes.
    exports "$so" > "$tmp/$b.exports"
    if cmp -s "$tmp/$b.exports" "$tmp/expected.sorted"; then
        ok "$b: exported symbols and version nodes equal symbols.txt"
    else
        fail "$b: exported symbols and version nodes equal symbols.txt" \
            "$(diff "$tmp/expected.sorted" "$tmp/$b.exports" | grep '^[<>]' |
               sed -e 's/^</only in symbols.txt:/' -e 's/^>/only in the library:/')"
    fi

    bad=$(cut -d' ' -f2 "$tmp/$b.exports" | grep -v '^diffuse_[a-z0-9]' || true)
    if [ -z "$bad" ]; then
        ok "$b: every export starts with diffuse_"
    else
        fail "$b: every export starts with diffuse_" "$bad"
    fi

    # NEEDED.
    readelf -d "$so" | sed -n 's/.*(NEEDED).*\[\(.*\)\].*/\1/p' > "$tmp/$b.needed"
    detail=
    while read -r lib; do
        case $lib in
            libc.so.6 | libm.so.6) ;;
            libgomp.so.1)
                [ "$omp" = "" ] && detail="${detail}libgomp.so.1 in a build without OpenMP
" ;;
            *) is_loader "$lib" || detail="${detail}unexpected: $lib
" ;;
        esac
    done < "$tmp/$b.needed"
    grep -qx 'libc.so.6' "$tmp/$b.needed" || detail="${detail}libc.so.6 missing
"
    if [ "$omp" = 1 ] && ! grep -qx 'libgomp.so.1' "$tmp/$b.needed"; then
        detail="${detail}libgomp.so.1 missing in an OpenMP build
"
    fi
    what="libc, libm"
    [ "$omp" = 1 ] && what="$what, libgomp"
    if [ -z "$detail" ]; then
        ok "$b: NEEDED only $what ($(tr '\n' ' ' < "$tmp/$b.needed" | sed 's/ $//'))"
    else
        fail "$b: NEEDED only $what" "$detail"
    fi

    # The static archive: exports, or hidden diffuse__ internals.
    a=$dir/libdiffuse.a
    if [ ! -f "$a" ]; then
        fail "$b: libdiffuse.a" "$a missing"
        return
    fi
    nm -g --defined-only "$a" | awk 'NF == 3 { print $3 }' | sort -u > "$tmp/$b.archive"
    detail=$(
        grep -v '^diffuse__' "$tmp/$b.archive" | comm -23 - "$tmp/expected.names" |
            sed 's/^/not an export and not diffuse__*: /'
        comm -13 "$tmp/$b.archive" "$tmp/expected.names" | sed 's/^/export missing: /'
    )
    if [ -z "$detail" ]; then
        ok "$b: libdiffuse.a defines the exports and only diffuse__ internals besides"
    else
        fail "$b: libdiffuse.a defines the exports and only diffuse__ internals besides" "$detail"
    fi
}

make_ok=
if [ -z "$O" ]; then
    skip "make build" "O is empty (no make build to check)"
elif [ ! -e "$O/$soname" ] && [ ! -e "$O/libdiffuse.a" ] && [ ! -e "$O/$real" ]; then
    skip "make build" "no library in $O (run make)"
else
    check_build make "$O" "$OPENMP"
    [ -f "$tmp/make.exports" ] && make_ok=1
fi

meson_ok=
if [ -z "$MESON_BUILD" ]; then
    skip "meson build" "MESON_BUILD is empty (meson not installed?)"
elif [ ! -f "$MESON_BUILD/build.ninja" ]; then
    skip "meson build" "no meson build in $MESON_BUILD"
else
    mo=$(meson_openmp)
    case $mo in
        enabled) momp=1 ;;
        disabled) momp= ;;
        *) momp=any ;;
    esac
    if [ -n "$O" ] && [ "$momp" != any ]; then
        if [ "$momp" = "$OPENMP" ]; then
            ok "meson: -Dopenmp=$mo matches OPENMP=$OPENMP"
        else
            fail "meson: -Dopenmp=$mo matches OPENMP=$OPENMP" \
                "$MESON_BUILD was configured with -Dopenmp=$mo; reconfigure it or remove it"
        fi
    fi
    check_build meson "$MESON_BUILD" "$momp"
    [ -f "$tmp/meson.exports" ] && meson_ok=1
fi

if [ -n "$make_ok" ] && [ -n "$meson_ok" ]; then
    if cmp -s "$tmp/make.exports" "$tmp/meson.exports"; then
        ok "make and meson export the same symbols and nodes"
    else
        fail "make and meson export the same symbols and nodes" \
            "$(diff "$tmp/make.exports" "$tmp/meson.exports" | grep '^[<>]' |
               sed -e 's/^</make only:/' -e 's/^>/meson only:/')"
    fi
else
    skip "make and meson export the same symbols and nodes" "needs both builds"
fi

# lib/libdiffuse.map as "NODE name" pairs: C comments and # comments removed,
# then the global: names of each node.
awk '
{
    line = $0; out = ""
    while (line != "") {
        if (incomment) {
            i = index(line, "*/")
            if (i == 0) { line = ""; break }
            line = substr(line, i + 2); incomment = 0
        } else {
            i = index(line, "/*")
            if (i == 0) { out = out line; line = ""; break }
            out = out substr(line, 1, i - 1) " "; line = substr(line, i + 2); incomment = 1
        }
    }
    sub(/#.*/, "", out)
    gsub(/[{};]/, " & ", out)
    gsub(/:/, ": ", out)
    n = split(out, tok, /[ \t]+/)
    for (k = 1; k <= n; k++) {
        t = tok[k]
        if (t == "") continue
        if (t == "{") { if (depth == 0) node = prev; depth++; mode = ""; continue }
        if (t == "}") { depth--; continue }
        if (t == ";") continue
        if (t == "global:" || t == "local:") { mode = t; continue }
        if (depth == 1 && mode == "global:") print node, t
        prev = t
    }
}' "$map" | sort > "$tmp/map"
if cmp -s "$tmp/map" "$tmp/expected.sorted"; then
    ok "lib/libdiffuse.map names the same symbols and nodes as symbols.txt"
else
    fail "lib/libdiffuse.map names the same symbols and nodes as symbols.txt" \
        "$(diff "$tmp/expected.sorted" "$tmp/map" | grep '^[<>]' |
           sed -e 's/^</only in symbols.txt:/' -e 's/^>/only in the map:/')"
fi

# The functions include/diffuse.h declares DIFFUSE_API: comments and
# preprocessor lines (with continuations) removed, then in each declaration
# the first identifier followed by "(" after DIFFUSE_API.
awk '
{
    line = $0; out = ""
    if (!incomment && (cont || line ~ /^[ \t]*#/)) { cont = (line ~ /\\$/); next }
    while (line != "") {
        if (incomment) {
            i = index(line, "*/")
            if (i == 0) { line = ""; break }
            line = substr(line, i + 2); incomment = 0
        } else {
            i = index(line, "/*"); j = index(line, "//")
            if (j > 0 && (i == 0 || j < i)) { out = out substr(line, 1, j - 1); line = ""; break }
            if (i == 0) { out = out line; line = ""; break }
            out = out substr(line, 1, i - 1) " "; line = substr(line, i + 2); incomment = 1
        }
    }
    text = text " " out
}
END {
    n = split(text, decl, /;/)
    for (k = 1; k <= n; k++) {
        d = decl[k]
        d = " " d " "
        if (!match(d, /[^A-Za-z0-9_]DIFFUSE_API[^A-Za-z0-9_]/)) continue
        d = substr(d, RSTART + RLENGTH)
        if (match(d, /[A-Za-z_][A-Za-z0-9_]*[ \t]*\(/)) {
            name = substr(d, RSTART, RLENGTH)
            sub(/[ \t]*\($/, "", name)
            print name
        }
    }
}' "$header" | sort > "$tmp/header"
if [ ! -s "$tmp/header" ]; then
    fail "include/diffuse.h declares the functions of symbols.txt" "no DIFFUSE_API declaration found"
elif cmp -s "$tmp/header" "$tmp/expected.names"; then
    ok "include/diffuse.h declares DIFFUSE_API exactly the functions of symbols.txt"
else
    fail "include/diffuse.h declares DIFFUSE_API exactly the functions of symbols.txt" \
        "$(diff "$tmp/expected.names" "$tmp/header" | grep '^[<>]' |
           sed -e 's/^</only in symbols.txt:/' -e 's/^>/only in the header:/')"
fi

finish
