#!/bin/sh
# Data-parallel training throughput of diffuse-mpi: samples/s at 1 and 2 MPI
# ranks, one OpenMP thread per rank (OMP_NUM_THREADS=1, --threads 1), on the
# built-in 2-D data with the MLP of bench/bench_mlp.py (width 256, depth 4),
# global batch 1024; and, for scale, 1 rank with 2 OpenMP threads when the
# library of $O was built with OpenMP (make OPENMP=1 O=out-omp).
#
# Usage: sh bench/bench_mpi.sh [steps] (O: make build directory, default out;
# ROUNDS: interleaved rounds, default 3; the median is printed).
set -u
O=${O:-out}
BIN=$O/mpi/diffuse-mpi
STEPS=${1:-100}
ROUNDS=${ROUNDS:-3}
if ! command -v mpiexec >/dev/null 2>&1 || [ ! -x "$BIN" ]; then
    echo "skip: mpiexec or $BIN missing (apt-get install openmpi-bin libopenmpi-dev; make mpi)"
    exit 0
fi
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_btl_vader_single_copy_mechanism=none
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT INT TERM
ARGS="train --width 256 --depth 4 --batch 1024 --steps $STEPS --poll-us ${POLL_US:-50}"

one() { # one LABEL RANKS THREADS
    OMP_NUM_THREADS=$3 mpiexec --oversubscribe --bind-to none -n "$2" "$BIN" $ARGS \
        --threads "$3" 2>&1 | sed -n 's/.*, \([0-9.]*\) samples\/s$/\1/p' >> "$tmp/$1"
}
omp=$(nm -D "$O/libdiffuse.so.1" 2>/dev/null | grep -c GOMP_ || true)
r=0
while [ "$r" -lt "$ROUNDS" ]; do
    one r1t1 1 1
    one r2t1 2 1
    [ "$omp" -gt 0 ] && one r1t2 1 2
    r=$((r + 1))
done
median() { sort -n "$tmp/$1" | awk '{ v[NR] = $1 } END { if (NR) print v[int((NR + 1) / 2)]; else print "n/a" }'; }
echo "diffuse-mpi train: MLP width 256 depth 4, global batch 1024, $STEPS steps, median of $ROUNDS"
echo "  1 rank  x 1 OpenMP thread : $(median r1t1) samples/s"
echo "  2 ranks x 1 OpenMP thread : $(median r2t1) samples/s"
if [ "$omp" -gt 0 ]; then
    echo "  1 rank  x 2 OpenMP threads: $(median r1t2) samples/s"
else
    echo "  1 rank  x 2 OpenMP threads: not measured ($O is not an OpenMP build)"
fi
