#!/bin/sh
# include/diffuse.h as a user's compiler sees it (after xkbcommon's
# headers-compatibility test): it includes only <stddef.h> and <stdint.h>; it
# compiles without a warning as C99, C11 and C++11 with gcc and clang, alone
# (self-contained), twice (idempotent) and in use; and in C++ every exported
# function has C linkage.
#
# Run from the repository root: sh tests/abi/check_headers.sh
# Environment: CC, CXX (the compilers to test besides clang and clang++).
. tests/abi/common.sh

CC=${CC:-cc}
CXX=${CXX:-c++}
inc=$(pwd)/include
header=include/diffuse.h
symbols=tests/abi/symbols.txt

# Includes.
bad=$(sed -n 's/^[[:space:]]*#[[:space:]]*include[[:space:]]*//p' "$header" |
      grep -v -x -e '<stddef.h>' -e '<stdint.h>')
if [ -z "$bad" ]; then
    ok "diffuse.h includes only <stddef.h> and <stdint.h>"
else
    fail "diffuse.h includes only <stddef.h> and <stdint.h>" "$bad"
fi

names=$(grep -v -e '^#' -e '^[[:space:]]*$' "$symbols" | cut -d' ' -f2)

# The translation units.  alone: the header first and alone.  twice: included
# twice.  use: every function's address, the version and status macros.
printf '#include "diffuse.h"\n' > "$tmp/alone.c"
printf '#include "diffuse.h"\n#include "diffuse.h"\nint diffuse_twice_;\n' > "$tmp/twice.c"
{
    echo '#include "diffuse.h"'
    echo 'typedef void (*diffuse_any_fn)(void);'
    echo 'diffuse_any_fn diffuse_use_fns[] = {'
    for n in $names; do echo "    (diffuse_any_fn)$n,"; done
    echo '};'
    echo 'int diffuse_use(void);'
    echo 'int diffuse_use(void)'
    echo '{'
    echo '    const char *v = DIFFUSE_VERSION_STRING;'
    echo '    diffuse_schedule *s = NULL;'
    echo '    diffuse_schedule_free(s);'
    echo '    return (diffuse_version() == DIFFUSE_VERSION_NUMBER && v[0] != 0 &&'
    echo '            diffuse_strerror(DIFFUSE_EINVAL) != NULL) ? DIFFUSE_OK : DIFFUSE_EINVAL;'
    echo '}'
} > "$tmp/use.c"
for f in alone twice use; do cp "$tmp/$f.c" "$tmp/$f.cpp"; done
# C++: the casts as C++ spells them.
sed 's/(diffuse_any_fn)\(diffuse_[a-z0-9_]*\),/reinterpret_cast<diffuse_any_fn>(\&\1),/' \
    "$tmp/use.c" > "$tmp/use.cpp"

# compile LABEL COMPILER-AND-FLAGS EXT: the three units, as one check.
compile() {
    label=$1 cmd=$2 ext=$3
    detail=
    for f in alone twice use; do
        if ! $cmd -I"$inc" -c "$tmp/$f.$ext" -o "$tmp/$f.o" > "$tmp/cc.log" 2>&1; then
            detail="$detail$f.$ext:
$(cat "$tmp/cc.log")
"
        fi
    done
    if [ -z "$detail" ]; then
        ok "$label: diffuse.h alone, twice and in use"
        return 0
    fi
    fail "$label: diffuse.h alone, twice and in use" "$detail"
    return 1
}

# linkage LABEL: after compile() of use.cpp, every function is referenced
# by its C name.
linkage() {
    label=$1
    if ! command -v nm > /dev/null 2>&1; then
        skip "$label: C linkage" "nm not installed"
        return
    fi
    nm -u "$tmp/use.o" | awk '{ print $NF }' | sort > "$tmp/undef"
    missing=$(for n in $names; do grep -qx "$n" "$tmp/undef" || echo "$n"; done)
    if [ -z "$missing" ]; then
        ok "$label: every exported function has C linkage"
    else
        fail "$label: every exported function has C linkage" \
            "$(echo "$missing" | wc -l | tr -d ' ') not referenced by their C names, e.g. $(echo "$missing" | head -n 3 | tr '\n' ' ')
the object refers to: $(head -n 3 "$tmp/undef" | tr '\n' ' ')..."
    fi
}

have() { command -v "$1" > /dev/null 2>&1; }
first_word() { set -- $1; echo "$1"; }

cflags='-pedantic -Wall -Wextra -Werror -Wstrict-prototypes'
cxxflags='-pedantic -Wall -Wextra -Werror'

c_compilers=$CC
have clang && [ "$(first_word "$CC")" != clang ] && c_compilers="$c_compilers|clang"
cxx_compilers=$CXX
have clang++ && [ "$(first_word "$CXX")" != clang++ ] && cxx_compilers="$cxx_compilers|clang++"

saved_ifs=$IFS
IFS='|'
set -- $c_compilers
IFS=$saved_ifs
for c in "$@"; do
    if ! have "$(first_word "$c")"; then
        skip "$c" "not installed"
        continue
    fi
    for std in c99 c11; do
        compile "$c -std=$std" "$c -std=$std $cflags" c
    done
done
have clang || skip "clang" "not installed"

IFS='|'
set -- $cxx_compilers
IFS=$saved_ifs
for c in "$@"; do
    if ! have "$(first_word "$c")"; then
        skip "$c" "not installed"
        continue
    fi
    if compile "$c -std=c++11" "$c -std=c++11 $cxxflags" cpp; then
        linkage "$c -std=c++11"
    else
        skip "$c -std=c++11: C linkage" "the header did not compile"
    fi
done
have clang++ || skip "clang++" "not installed"

finish
