#!/bin/sh
# Install each build into a staging directory and use it as a user would
# (after lz4's test_install.sh): examples/quickstart.c compiled with nothing but
# `pkg-config --cflags --libs libdiffuse` and run; the same linked statically
# with `pkg-config --static --libs` (which must list -lm, and -fopenmp in an
# OpenMP build); a C++11 program through pkg-config; then, for the make build,
# `make uninstall` must leave no file behind.
#
# Run from the repository root: sh tests/abi/check_install.sh
# Environment: O (make build directory, may be empty), MESON_BUILD (meson build
# directory, may be empty), CC, CXX, OPENMP (1 or empty), MAKE.
. tests/abi/common.sh

O=${O:-}
MESON_BUILD=${MESON_BUILD:-}
CC=${CC:-cc}
CXX=${CXX:-c++}
OPENMP=${OPENMP:-}
[ "$OPENMP" = 0 ] && OPENMP=
MAKE=${MAKE:-make}
top=$(pwd)
quickstart=$top/examples/quickstart.c

hver() { sed -n "s/^#define DIFFUSE_VERSION_$1 \([0-9][0-9]*\).*/\1/p" include/diffuse.h; }
major=$(hver MAJOR)
version=$major.$(hver MINOR).$(hver PATCH)

if ! command -v pkg-config > /dev/null 2>&1; then
    skip "install" "pkg-config not installed"
    finish
fi

cat > "$tmp/cxx.cpp" <<'EOF'
#include <diffuse.h>

#include <cstdio>
#include <cstring>

int main()
{
    const char *msg = diffuse_strerror(DIFFUSE_EINVAL);
    if (diffuse_version() != DIFFUSE_VERSION_NUMBER || msg == NULL || std::strlen(msg) == 0) {
        std::printf("version %d, header %d, strerror \"%s\"\n", diffuse_version(),
                    DIFFUSE_VERSION_NUMBER, msg ? msg : "(null)");
        return 1;
    }
    std::printf("libdiffuse %s from C++: %s\n", diffuse_version_string(), msg);
    return 0;
}
EOF

# pc STAGE PCDIR ARGS...: pkg-config confined to the staged copy.
pc() {
    stage=$1 pcdir=$2
    shift 2
    PKG_CONFIG_SYSROOT_DIR=$stage PKG_CONFIG_LIBDIR=$pcdir PKG_CONFIG_PATH=$pcdir \
        PKG_CONFIG_ALLOW_SYSTEM_CFLAGS=1 PKG_CONFIG_ALLOW_SYSTEM_LIBS=1 pkg-config "$@"
}

# use BUILD STAGE PCDIR OMP: the programs against a staged installation.
use() {
    b=$1 stage=$2 pcdir=$3 omp=$4
    libdir=$(dirname "$(find "$stage" -name "libdiffuse.so.$major" | head -n 1)")
    flags=$(pc "$stage" "$pcdir" --cflags --libs libdiffuse 2>&1) || {
        fail "$b: pkg-config --cflags --libs libdiffuse" "$flags"
        return
    }

    name="$b: quickstart built with pkg-config --cflags --libs, run"
    if [ ! -f "$quickstart" ]; then
        fail "$name" "examples/quickstart.c missing"
    elif ! $CC "$quickstart" -o "$tmp/qs" $flags > "$tmp/log" 2>&1; then
        fail "$name" "$CC examples/quickstart.c -o qs $flags
$(cat "$tmp/log")"
    else
        LD_LIBRARY_PATH=$libdir "$tmp/qs" > "$tmp/log" 2>&1
        rc=$?
        if [ $rc -ne 0 ]; then
            fail "$name" "exit status $rc with LD_LIBRARY_PATH=$libdir
$(cat "$tmp/log")"
        elif ! LD_LIBRARY_PATH=$libdir ldd "$tmp/qs" 2>&1 |
                grep -F -q "$libdir/libdiffuse.so.$major"; then
            fail "$name" "it did not load the staged library:
$(LD_LIBRARY_PATH=$libdir ldd "$tmp/qs" 2>&1)"
        else
            ok "$name"
        fi
    fi

    static=$(pc "$stage" "$pcdir" --static --libs libdiffuse 2>&1 | sed 's/ *$//')
    detail=
    case " $static " in *" -lm "*) ;; *) detail="no -lm. " ;; esac
    case " $static " in
        *" -fopenmp "*) [ "$omp" = 1 ] || detail="$detail-fopenmp in a build without OpenMP." ;;
        *) [ "$omp" = 1 ] && detail="$detail-fopenmp missing in an OpenMP build." ;;
    esac
    if [ -z "$detail" ]; then
        ok "$b: pkg-config --static --libs: $(printf '%s' "$static" | sed "s|$stage|<stage>|g")"
    else
        fail "$b: pkg-config --static --libs lists -lm${omp:+ and -fopenmp}" "$static: $detail"
    fi

    # Static: the archive in place of -ldiffuse, everything else as listed.
    name="$b: quickstart linked statically with pkg-config --static --libs, run"
    cflags=$(pc "$stage" "$pcdir" --cflags libdiffuse)
    slibs=
    for w in $static; do
        [ "$w" = -ldiffuse ] && w=-l:libdiffuse.a
        slibs="$slibs $w"
    done
    if [ ! -f "$quickstart" ]; then
        fail "$name" "examples/quickstart.c missing"
    elif ! $CC "$quickstart" -o "$tmp/qs_static" $cflags $slibs > "$tmp/log" 2>&1; then
        fail "$name" "$CC examples/quickstart.c -o qs_static $cflags$slibs
$(cat "$tmp/log")"
    elif readelf -d "$tmp/qs_static" 2>/dev/null | grep -q 'NEEDED.*libdiffuse'; then
        fail "$name" "the program still needs the shared libdiffuse"
    else
        "$tmp/qs_static" > "$tmp/log" 2>&1
        rc=$?
        if [ $rc -ne 0 ]; then
            fail "$name" "exit status $rc
$(cat "$tmp/log")"
        else
            ok "$name"
        fi
    fi

    name="$b: C++11 program with pkg-config (-pedantic -Wall -Wextra -Werror), run"
    if ! command -v "$(set -- $CXX; echo "$1")" > /dev/null 2>&1; then
        skip "$name" "no C++ compiler ($CXX)"
    elif ! $CXX -std=c++11 -pedantic -Wall -Wextra -Werror "$tmp/cxx.cpp" -o "$tmp/cxx" \
            $flags > "$tmp/log" 2>&1; then
        fail "$name" "$CXX -std=c++11 -pedantic -Wall -Wextra -Werror cxx.cpp -o cxx $flags
$(cat "$tmp/log")"
    else
        LD_LIBRARY_PATH=$libdir "$tmp/cxx" > "$tmp/log" 2>&1
        rc=$?
        if [ $rc -ne 0 ]; then
            fail "$name" "exit status $rc
$(cat "$tmp/log")"
        else
            ok "$name"
        fi
    fi
}

# staged STAGE: the files under STAGE, relative, sorted.
staged() { (cd "$1" && find . ! -type d | sed 's|^\./||' | sort); }

# ---- make
if [ -z "$O" ]; then
    skip "make install" "O is empty (no make build to check)"
elif [ ! -e "$O/libdiffuse.so" ]; then
    skip "make install" "no library in $O (run make)"
else
    stage=$tmp/stage
    mflags="prefix=/usr O=$O OPENMP=$OPENMP"
    if ! $MAKE --no-print-directory install DESTDIR="$stage" $mflags > "$tmp/make.log" 2>&1; then
        fail "make install DESTDIR=... $mflags" "$(cat "$tmp/make.log")"
    else
        staged "$stage" > "$tmp/files"
        cat > "$tmp/want" <<EOF
usr/bin/diffuse
usr/include/diffuse.h
usr/lib/libdiffuse.a
usr/lib/libdiffuse.so
usr/lib/libdiffuse.so.$major
usr/lib/libdiffuse.so.$version
usr/lib/pkgconfig/libdiffuse.pc
usr/share/man/man1/diffuse.1
EOF
        if cmp -s "$tmp/files" "$tmp/want"; then
            ok "make install DESTDIR=... $mflags: the eight expected files"
        else
            fail "make install DESTDIR=... $mflags: the eight expected files" \
                "$(diff "$tmp/want" "$tmp/files" | grep '^[<>]' |
                   sed -e 's/^</missing:/' -e 's/^>/unexpected:/')"
        fi
        # Built by the runner with these flags: install only copies.
        if grep -E -q -e ' -c | -shared |^ar ' "$tmp/make.log"; then
            fail "make install rebuilt nothing" "$(cat "$tmp/make.log")"
        else
            ok "make install rebuilt nothing"
        fi
        use make "$stage" "$stage/usr/lib/pkgconfig" "$OPENMP"
        # The installed program runs against the installed library.
        if out=$(LD_LIBRARY_PATH="$stage/usr/lib" "$stage/usr/bin/diffuse" --version 2>&1) &&
                [ "${out#diffuse $version}" != "$out" ]; then
            ok "make install: the installed diffuse runs ($out)"
        else
            fail "make install: the installed diffuse runs" "$out"
        fi

        if ! $MAKE --no-print-directory uninstall DESTDIR="$stage" $mflags \
                > "$tmp/make.log" 2>&1; then
            fail "make uninstall leaves no file" "$(cat "$tmp/make.log")"
        else
            left=$(staged "$stage")
            if [ -z "$left" ]; then
                ok "make uninstall leaves no file"
            else
                fail "make uninstall leaves no file" "$left"
            fi
        fi
    fi
fi

# ---- meson
if [ -z "$MESON_BUILD" ]; then
    skip "meson install" "MESON_BUILD is empty (meson not installed?)"
elif [ ! -f "$MESON_BUILD/build.ninja" ]; then
    skip "meson install" "no meson build in $MESON_BUILD"
elif ! command -v meson > /dev/null 2>&1; then
    skip "meson install" "meson not installed"
else
    stage=$tmp/mstage
    # --no-rebuild: the runner built it already, and a meson test may be running.
    if ! meson install -C "$MESON_BUILD" --no-rebuild --destdir "$stage" > "$tmp/meson.log" 2>&1; then
        fail "meson install --destdir ..." "$(cat "$tmp/meson.log")"
    else
        pcfile=$(find "$stage" -name libdiffuse.pc | head -n 1)
        staged "$stage" | sed 's|^.*/||' | sort > "$tmp/files"
        cat > "$tmp/want" <<EOF
diffuse
diffuse.1
diffuse.h
libdiffuse.a
libdiffuse.pc
libdiffuse.so
libdiffuse.so.$major
libdiffuse.so.$version
EOF
        if cmp -s "$tmp/files" "$tmp/want" && [ -n "$pcfile" ] &&
                [ "$(basename "$(dirname "$pcfile")")" = pkgconfig ]; then
            ok "meson install --destdir ...: the eight expected files"
        else
            fail "meson install --destdir ...: the eight expected files" "$(staged "$stage")"
        fi
        if [ -z "$pcfile" ]; then
            fail "meson: libdiffuse.pc installed" "no libdiffuse.pc under the stage"
        else
            # The meson build's own OpenMP setting.
            momp=
            opts=$MESON_BUILD/meson-info/intro-buildoptions.json
            mo=$(tr '{' '\n' < "$opts" | grep '"name": *"openmp"' |
                 sed -n 's/.*"value": *"\([a-z]*\)".*/\1/p' | head -n 1)
            case $mo in
                enabled) momp=1 ;;
                disabled) ;;
                *) grep -q '^Libs.private:.*-fopenmp' "$pcfile" && momp=1 ;;
            esac
            use meson "$stage" "$(dirname "$pcfile")" "$momp"
        fi
    fi
fi

finish
