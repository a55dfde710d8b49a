#!/usr/bin/env python3
"""DPM-Solver++(2M) with 15 model calls against DDIM with 50, on the same
trained model, in the same process: samples per second and sample quality.

The model is libdiffuse's MLP (width 128, depth 3) trained for 3000 steps on
a mixture of 8 Gaussians on a circle (the test suite's toy), cosine schedule,
T = 1000.  DPM-Solver++ runs 16 trailing steps with the log-SNR clip -5.1,
which drops step 999: 15 calls; DDIM (eta 0) runs 50 trailing steps.  Speed:
batch 1024, medians of interleaved rounds.  Quality: the energy distance of
2000 samples to fresh data, against the data-vs-data distance (the
estimator's floor), mean over 3 seed sets.

Usage: env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE OMP_NUM_THREADS=1 \\
           LIBDIFFUSE_PATH=out/libdiffuse.so.1 /usr/bin/python3 bench/bench_samplers.py
"""
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "python"))
try:
    import numpy as np
except ImportError:
    print("skip: numpy is not installed (apt-get install python3-numpy)")
    sys.exit(0)
import libdiffuse as ld  # noqa: E402

T, BATCH, N_EVAL = 1000, 1024, 2000


def mixture(rng, n):
    k = rng.integers(0, 8, n)
    ang = k * np.pi / 4
    pts = np.stack([0.8 * np.cos(ang), 0.8 * np.sin(ang)], 1)
    return (pts + 0.08 * rng.standard_normal((n, 2))).astype(np.float32)


def energy_distance(a, b):
    def mean_dist(x, y):
        return np.sqrt(((x[:, None, :] - y[None, :, :]) ** 2).sum(-1)).mean()
    a, b = a.astype(np.float64), b.astype(np.float64)
    return 2 * mean_dist(a, b) - mean_dist(a, a) - mean_dist(b, b)


def main():
    threads = int(os.environ.get("OMP_NUM_THREADS", "1"))
    print(f"libdiffuse {ld.version_string()}, OpenMP {ld.has_openmp()}, "
          f"OMP_NUM_THREADS={threads}")
    rng = np.random.default_rng(1)
    base = ld.Schedule.cosine(T)
    net = ld.Net.mlp(2, width=128, depth=3, emb_dim=32, max_batch=max(BATCH, N_EVAL), seed=1)
    tr = ld.Trainer(net, base, 256)
    tr.lr, tr.ema_decay, tr.grad_clip = 2e-3, 0.995, 1.0
    t0 = time.perf_counter()
    for _ in range(3000):
        tr.step(mixture(rng, 256), seed=1)
    print(f"trained the MLP ({net.param_count} parameters) for 3000 steps: "
          f"{time.perf_counter() - t0:.1f} s")
    model = net.model("ema")
    model.set("clip_x0", 1)
    model.set("clip_min", -1.5)
    model.set("clip_max", 1.5)
    samplers = {}
    for name, kind, n in (("DPM-Solver++ 15 calls", "dpmpp_2m", 16), ("DDIM 50 calls", "ddim", 50)):
        s = base.respace(ld.timesteps_spacing(T, n, "trailing"))
        smp = ld.Sampler(s, model, kind, max_batch=max(BATCH, N_EVAL))
        if kind == "dpmpp_2m":
            smp.set("lambda_min", -5.1)
        smp.set("num_threads", threads)
        samplers[name] = smp
    quality = {name: [] for name in samplers}
    floor = []
    for seed in (11, 12, 13):
        fresh, other = mixture(rng, N_EVAL), mixture(rng, N_EVAL)
        floor.append(energy_distance(other, fresh))
        for name, smp in samplers.items():
            quality[name].append(energy_distance(smp.run(seed=seed, batch=N_EVAL), fresh))
    times = {name: [] for name in samplers}
    for r in range(7):
        for name, smp in samplers.items():
            t0 = time.perf_counter()
            smp.run(seed=100 + r, batch=BATCH)
            times[name].append(time.perf_counter() - t0)
    print(f"{'sampler':<24}{'samples/s':>12}{'energy distance':>18}")
    rates = {}
    for name in samplers:
        rates[name] = BATCH / statistics.median(times[name])
        print(f"{name:<24}{rates[name]:>12.0f}{np.mean(quality[name]):>18.5f}")
    print(f"{'data vs data (floor)':<24}{'':>12}{np.mean(floor):>18.5f}")
    names = list(samplers)
    print(f"speed ratio {names[0]} / {names[1]}: {rates[names[0]] / rates[names[1]]:.2f}")


if __name__ == "__main__":
    main()
