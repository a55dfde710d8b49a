#!/bin/sh
# diffuse-mpi under mpiexec (Open MPI): sharded sampling and bits/dim on 1, 2
# and 3 ranks are bit-identical to one process; 200 training steps on 2 and 3
# ranks repeat bit for bit from launch to launch and stay within 1e-5
# (max |w - w1| / max |w1|, weights and EMA weights) of the one-process run;
# a checkpoint resumes on another rank count (bit for bit on the same count);
# a rank killed with SIGKILL mid-run leaves a checkpoint that loads and
# resumes.
#
# Run from the repository root: sh tests/mpi/test_mpi.sh (O: make build
# directory, default out).  Skips, saying why, without mpicc's build or mpiexec.
set -u
O=${O:-out}
BIN=$O/mpi/diffuse-mpi
passed=0 failed=0 skipped=0

ok() { echo "ok   $1"; passed=$((passed + 1)); }
fail() { echo "FAIL $1"; [ -n "${2:-}" ] && echo "$2" | sed 's/^/    /'; failed=$((failed + 1)); }
skip() { echo "skip $1: $2"; skipped=$((skipped + 1)); }
finish() { echo "$passed passed, $failed failed, $skipped skipped"; [ "$failed" -eq 0 ]; exit; }

if ! command -v mpiexec >/dev/null 2>&1; then
    skip "diffuse-mpi" "mpiexec not found (apt-get install openmpi-bin libopenmpi-dev)"
    finish
fi
if [ ! -x "$BIN" ]; then
    skip "diffuse-mpi" "$BIN not built: mpicc not found when make ran"
    finish
fi

# Root in containers and CI; more ranks than cores on small machines; ranks
# yield the core while they wait; one OpenMP thread per rank.
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMP_NUM_THREADS=1
export OMPI_MCA_mpi_yield_when_idle=1 OMPI_MCA_rmaps_base_oversubscribe=1
# containers often forbid the cross-memory attach of the shared-memory transport
export OMPI_MCA_btl_vader_single_copy_mechanism=none
MPIEXEC="mpiexec --oversubscribe --bind-to none"

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT INT TERM

run() { # run R ARGS...: diffuse-mpi on R ranks, output to $tmp/log
    r=$1
    shift
    $MPIEXEC -n "$r" "$BIN" "$@" >"$tmp/log" 2>&1
}

# --poll-us 50: ranks sleep while they wait (the test machine may have fewer
# free cores than ranks; MPI_Wait spins and slows such a run 10-fold).
TRAIN="--batch 24 --steps 200 --lr 2e-3 --poll-us 50"

# --- training -------------------------------------------------------------
if run 1 train $TRAIN --checkpoint "$tmp/one.ckpt"; then
    ok "train: 1 rank, 200 steps"
else
    fail "train: 1 rank, 200 steps" "$(cat "$tmp/log")"
    finish
fi
for r in 2 3; do
    # the second launch sums through rank 0 (gather, add, broadcast) instead of
    # an all-gather: the same bits
    if run "$r" train $TRAIN --checkpoint "$tmp/r$r.a.ckpt" --reduce allgather &&
        run "$r" train $TRAIN --checkpoint "$tmp/r$r.b.ckpt" --reduce gather; then
        if cmp -s "$tmp/r$r.a.ckpt" "$tmp/r$r.b.ckpt"; then
            ok "train: $r ranks, two launches (all-gather; gather + broadcast) give the same checkpoint, bit for bit"
        else
            fail "train: $r ranks, two launches give the same checkpoint, bit for bit"
        fi
        if "$BIN" diff "$tmp/r$r.a.ckpt" "$tmp/one.ckpt" --tol 1e-5 >"$tmp/log" 2>&1; then
            ok "train: $r ranks within 1e-5 of one process ($(cat "$tmp/log"))"
        else
            fail "train: $r ranks within 1e-5 of one process" "$(cat "$tmp/log")"
        fi
        if cmp -s "$tmp/r$r.a.ckpt" "$tmp/one.ckpt"; then
            fail "train: $r ranks differ from one process in rounding only" \
                "the checkpoints are identical: the comparison cannot fail"
        fi
    else
        fail "train: $r ranks" "$(cat "$tmp/log")"
    fi
done

# Resume: 100 steps on 1 rank, then to 200 on 1 rank (bit for bit the
# straight run) and on 3 ranks (within the tolerance).
if run 1 train --batch 24 --steps 100 --lr 2e-3 --poll-us 50 --checkpoint "$tmp/half.ckpt" &&
    cp "$tmp/half.ckpt" "$tmp/half3.ckpt" &&
    run 1 train $TRAIN --checkpoint "$tmp/half.ckpt" --resume &&
    grep -q "resuming at step 100" "$tmp/log" &&
    run 3 train $TRAIN --checkpoint "$tmp/half3.ckpt" --resume &&
    grep -q "resuming at step 100 on 3" "$tmp/log"; then
    if cmp -s "$tmp/half.ckpt" "$tmp/one.ckpt"; then
        ok "train: resumed at step 100 on 1 rank = the straight run, bit for bit"
    else
        fail "train: resumed at step 100 on 1 rank = the straight run, bit for bit"
    fi
    if "$BIN" diff "$tmp/half3.ckpt" "$tmp/one.ckpt" --tol 1e-5 >"$tmp/log" 2>&1; then
        ok "train: resumed at step 100 on 3 ranks, within 1e-5 of one process"
    else
        fail "train: resumed at step 100 on 3 ranks, within 1e-5 of one process" \
            "$(cat "$tmp/log")"
    fi
else
    fail "train: resume" "$(cat "$tmp/log")"
fi

# --- sampling and bits/dim ---------------------------------------------------
for r in 1 2 3; do
    if ! run "$r" sample --checkpoint "$tmp/one.ckpt" --n 50 --sampler ddpm \
        --sample-steps 10 --seed 5 --out "$tmp/s$r.f32"; then
        fail "sample: $r ranks" "$(cat "$tmp/log")"
    fi
    if run "$r" bpd --checkpoint "$tmp/one.ckpt" --n 20 --seed 5 --out "$tmp/b$r.f64"; then
        sed -n 's/.*total \([^ ]*\) .*/\1/p' "$tmp/log" > "$tmp/b$r.total"
    else
        fail "bpd: $r ranks" "$(cat "$tmp/log")"
    fi
done
if [ -s "$tmp/s1.f32" ] && [ "$(wc -c < "$tmp/s1.f32")" -eq 400 ]; then
    for r in 2 3; do
        if cmp -s "$tmp/s1.f32" "$tmp/s$r.f32"; then
            ok "sample: 50 DDPM samples on $r ranks = 1 rank, bit for bit"
        else
            fail "sample: 50 DDPM samples on $r ranks = 1 rank, bit for bit"
        fi
    done
else
    fail "sample: 1 rank wrote 50 samples of 2 floats"
fi
if [ -s "$tmp/b1.total" ] && [ "$(wc -c < "$tmp/b1.f64")" -eq 160 ]; then
    for r in 2 3; do
        if cmp -s "$tmp/b1.f64" "$tmp/b$r.f64" && cmp -s "$tmp/b1.total" "$tmp/b$r.total"; then
            ok "bpd: per-sample and total bits/dim on $r ranks = 1 rank, bit for bit (total $(cat "$tmp/b1.total"))"
        else
            fail "bpd: per-sample and total bits/dim on $r ranks = 1 rank, bit for bit" \
                "$(cat "$tmp/b1.total" "$tmp/b$r.total")"
        fi
    done
else
    fail "bpd: 1 rank wrote 20 values and a total"
fi

# Sharding without MPI communication: a job on the range --first 23 --n 27
# (samples) or --first 9 --n 11 (bits/dim) writes the tail of the
# one-process output, so consecutive ranges concatenate to it.
if run 1 sample --checkpoint "$tmp/one.ckpt" --first 23 --n 27 --sampler ddpm \
        --sample-steps 10 --seed 5 --out "$tmp/p1.f32" &&
    run 2 bpd --checkpoint "$tmp/one.ckpt" --first 9 --n 11 --seed 5 --out "$tmp/q1.f64"; then
    tail -c $((27 * 2 * 4)) "$tmp/s1.f32" > "$tmp/p.f32"
    tail -c $((11 * 8)) "$tmp/b1.f64" > "$tmp/q.f64"
    if cmp -s "$tmp/p.f32" "$tmp/p1.f32" && cmp -s "$tmp/q.f64" "$tmp/q1.f64"; then
        ok "shards: the ranges --first 23 --n 27 (samples) and --first 9 --n 11 (bits/dim) are the one-process tails"
    else
        fail "shards: --first ranges are the one-process tails"
    fi
else
    fail "shards: --first ranges" "$(cat "$tmp/log")"
fi

# --- a rank killed mid-run ------------------------------------------------------
mkdir "$tmp/pids"
$MPIEXEC -n 2 "$BIN" train --batch 24 --steps 100000000 --every 25 --poll-us 50 \
    --checkpoint "$tmp/kill.ckpt" --pid-dir "$tmp/pids" >"$tmp/kill.log" 2>&1 &
job=$!
i=0
while [ ! -f "$tmp/kill.ckpt" ] || [ ! -f "$tmp/pids/rank1.pid" ]; do
    i=$((i + 1))
    if [ "$i" -gt 300 ] || ! kill -0 "$job" 2>/dev/null; then
        break
    fi
    sleep 0.1
done
if [ -f "$tmp/kill.ckpt" ] && [ -f "$tmp/pids/rank1.pid" ]; then
    sleep 0.3 # let it overwrite the checkpoint a few times
    kill -KILL "$(cat "$tmp/pids/rank1.pid")" 2>/dev/null
    i=0
    while kill -0 "$job" 2>/dev/null && [ "$i" -lt 100 ]; do
        sleep 0.1
        i=$((i + 1))
    done
    if kill -0 "$job" 2>/dev/null; then
        kill -TERM "$job" 2>/dev/null
        fail "kill: mpiexec ends the job when a rank is killed"
    fi
    wait "$job" 2>/dev/null
    # --steps 1 is below the saved step: nothing to train, the whole state loads
    if "$BIN" diff "$tmp/kill.ckpt" "$tmp/kill.ckpt" >"$tmp/log" 2>&1 &&
        run 1 train --batch 24 --steps 1 --checkpoint "$tmp/kill.ckpt" --resume &&
        grep -q "resuming at step" "$tmp/log"; then
        ok "kill: rank 1 killed with SIGKILL mid-run; the last checkpoint loads ($(cat "$tmp/log"))"
    else
        fail "kill: the last checkpoint loads after a SIGKILL" "$(cat "$tmp/log")"
    fi
    left=$(ls "$tmp" | grep -c '^kill\.ckpt\..' || true)
    echo "   # temporary files left beside the checkpoint by the killed writer: $left"
else
    kill -TERM "$job" 2>/dev/null
    wait "$job" 2>/dev/null
    fail "kill: the run wrote a checkpoint within 30 s" "$(cat "$tmp/kill.log")"
fi

finish
