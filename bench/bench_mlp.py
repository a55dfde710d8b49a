#!/usr/bin/env python3
"""MLP training steps and DDIM sampling: libdiffuse against PyTorch CPU in
the same process, the same architecture, batch and thread count.

Usage (one thread count per run, every side pinned to it):
  env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE OMP_NUM_THREADS=N OPENBLAS_NUM_THREADS=N \
      /usr/bin/python3 bench/bench_mlp.py N
(`make bench` does this for N = 1 and 2.)  libdiffuse is loaded from LIBDIFFUSE_PATH (for
more than one thread, point it at an OpenMP build: make OPENMP=1 O=out-omp).

Training: one step = timestep and noise draw, forward, MSE loss on eps,
backward, Adam update (libdiffuse also updates its EMA; torch does not).
Sampling: DDIM (eta 0) on 50 respaced steps of a 1000-step cosine schedule,
batch 1024, the 2-D MLP; torch runs the same loop with its own tensors.
Figures are medians over interleaved rounds; ratios > 1 mean libdiffuse is
faster.
"""
import ctypes
import math
import os
import sys
import time

try:
    import numpy as np
    import torch
except ImportError as e:
    print(f"skip: {e.name} is not installed (apt-get install python3-torch python3-numpy)")
    sys.exit(0)

lib = ctypes.CDLL(os.environ.get("LIBDIFFUSE_PATH", "out/libdiffuse.so.1"))
vp = ctypes.c_void_p
P = ctypes.POINTER
f32p = P(ctypes.c_float)
lib.diffuse_last_error.restype = ctypes.c_char_p
lib.diffuse_has_openmp.restype = ctypes.c_int
for name, args in {
    "diffuse_schedule_create_cosine": [P(vp), ctypes.c_size_t, ctypes.c_double, ctypes.c_double],
    "diffuse_timesteps_from_spec": [ctypes.c_size_t, ctypes.c_char_p, P(ctypes.c_int32),
                                    ctypes.c_size_t, P(ctypes.c_size_t)],
    "diffuse_schedule_respace": [P(vp), vp, P(ctypes.c_int32), ctypes.c_size_t],
    "diffuse_net_create_mlp": [P(vp), ctypes.c_size_t, ctypes.c_size_t, ctypes.c_size_t,
                               ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_size_t,
                               ctypes.c_uint64],
    "diffuse_net_set": [vp, ctypes.c_int, ctypes.c_double],
    "diffuse_net_model": [vp, ctypes.c_int, P(vp)],
    "diffuse_trainer_create": [P(vp), vp, vp, ctypes.c_size_t],
    "diffuse_trainer_set": [vp, ctypes.c_int, ctypes.c_double],
    "diffuse_trainer_step": [vp, f32p, ctypes.c_size_t, ctypes.c_uint64, P(ctypes.c_double)],
    "diffuse_sampler_create": [P(vp), vp, vp, ctypes.c_int, ctypes.c_size_t],
    "diffuse_sampler_set": [vp, ctypes.c_int, ctypes.c_double],
    "diffuse_sampler_run": [vp, f32p, ctypes.c_uint64, ctypes.c_uint64, ctypes.c_size_t, f32p],
}.items():
    getattr(lib, name).argtypes = args
    getattr(lib, name).restype = ctypes.c_int


def ok(rc):
    if rc != 0:
        raise RuntimeError(lib.diffuse_last_error().decode())


DIM, WIDTH, DEPTH, EMB, T = 2, 256, 4, 64, 1000
TRAIN_BATCH, SAMPLE_BATCH, STEPS = 1024, 1024, 50
ROUNDS = 7


class TorchMLP(torch.nn.Module):
    def __init__(self):
        super().__init__()
        L = torch.nn.Linear
        self.t1, self.t2, self.inp = L(EMB, WIDTH), L(WIDTH, WIDTH), L(DIM, WIDTH)
        self.blocks = torch.nn.ModuleList(
            torch.nn.ModuleList([L(WIDTH, WIDTH), L(WIDTH, WIDTH)]) for _ in range(DEPTH))
        self.out = L(WIDTH, DIM)
        half = EMB // 2
        self.register_buffer("freqs", torch.exp(-math.log(10000.0) * torch.arange(half) / half))

    def forward(self, x, t):
        silu = torch.nn.functional.silu
        a = t[:, None].float() * self.freqs[None]
        e = self.t2(silu(self.t1(torch.cat([torch.cos(a), torch.sin(a)], -1))))
        h = self.inp(x) + e
        for l1, l2 in self.blocks:
            h = h + l2(silu(l1(silu(h))))
        return self.out(silu(h))


def cosine_abar():
    s = 0.008
    f = [math.cos((i / T + s) / (1 + s) * math.pi / 2) ** 2 for i in range(T + 1)]
    betas = [min(1 - f[i + 1] / f[i], 0.999) for i in range(T)]
    return torch.tensor(np.cumprod(1 - np.array(betas)), dtype=torch.float32)


def median(v):
    v = sorted(v)
    return v[len(v) // 2]


def bench(threads):
    torch.set_num_threads(threads)
    print(f"threads {threads}: torch.get_num_threads() = {torch.get_num_threads()}, "
          f"libdiffuse NUM_THREADS = {threads}")
    sched, fast, net, tr, model, smp = (vp() for _ in range(6))
    ok(lib.diffuse_schedule_create_cosine(ctypes.byref(sched), T, 0.008, 0.999))
    keep = (ctypes.c_int32 * T)()
    n = ctypes.c_size_t()
    ok(lib.diffuse_timesteps_from_spec(T, b"ddim50", keep, T, ctypes.byref(n)))
    ok(lib.diffuse_schedule_respace(ctypes.byref(fast), sched, keep, n.value))
    ok(lib.diffuse_net_create_mlp(ctypes.byref(net), DIM, WIDTH, DEPTH, EMB, 0, 0,
                                  max(TRAIN_BATCH, SAMPLE_BATCH), 1))
    ok(lib.diffuse_net_set(net, 1, threads))
    ok(lib.diffuse_trainer_create(ctypes.byref(tr), net, sched, TRAIN_BATCH))
    ok(lib.diffuse_trainer_set(tr, 12, threads))
    ok(lib.diffuse_net_model(net, 0, ctypes.byref(model)))
    ok(lib.diffuse_sampler_create(ctypes.byref(smp), fast, model, 1, SAMPLE_BATCH))
    ok(lib.diffuse_sampler_set(smp, 2, threads))

    tm = TorchMLP()
    opt = torch.optim.Adam(tm.parameters(), lr=1e-3)
    abar = cosine_abar()
    kept = torch.tensor(list(keep)[: n.value], dtype=torch.long)
    abar_k = abar[kept]
    x0 = np.random.default_rng(0).standard_normal((TRAIN_BATCH, DIM)).astype(np.float32)
    x0t = torch.from_numpy(x0)
    loss = ctypes.c_double()
    out = np.empty((SAMPLE_BATCH, DIM), dtype=np.float32)

    def ours_train(r):
        ok(lib.diffuse_trainer_step(tr, x0.ctypes.data_as(f32p), TRAIN_BATCH, r, ctypes.byref(loss)))

    def torch_train(r):
        t = torch.randint(0, T, (TRAIN_BATCH,))
        eps = torch.randn_like(x0t)
        a = abar[t][:, None]
        xt = a.sqrt() * x0t + (1 - a).sqrt() * eps
        opt.zero_grad(set_to_none=True)
        l = torch.nn.functional.mse_loss(tm(xt, t), eps)
        l.backward()
        opt.step()

    def ours_sample(r):
        ok(lib.diffuse_sampler_run(smp, None, r, 0, SAMPLE_BATCH, out.ctypes.data_as(f32p)))

    @torch.no_grad()
    def torch_sample(r):
        x = torch.randn(SAMPLE_BATCH, DIM)
        for i in range(len(kept) - 1, -1, -1):
            a = abar_k[i]
            ap = abar_k[i - 1] if i > 0 else torch.tensor(1.0)
            eps = tm(x, kept[i].expand(SAMPLE_BATCH))
            x0 = ((x - (1 - a).sqrt() * eps) / a.sqrt()).clamp(-1, 1)
            eps = (x - a.sqrt() * x0) / (1 - a).sqrt()
            x = ap.sqrt() * x0 + (1 - ap).sqrt() * eps
        return x

    for fn in (ours_train, torch_train, ours_sample, torch_sample):  # warm-up
        fn(0)
    res = {k: [] for k in ("ours_train", "torch_train", "ours_sample", "torch_sample")}
    for r in range(ROUNDS):
        for k, fn in (("ours_train", ours_train), ("torch_train", torch_train),
                      ("ours_sample", ours_sample), ("torch_sample", torch_sample)):
            reps = 10 if "train" in k else 1
            t0 = time.perf_counter()
            for _ in range(reps):
                fn(r + 1)
            res[k].append((time.perf_counter() - t0) / reps)
    tr_ratio = median([res["torch_train"][i] / res["ours_train"][i] for i in range(ROUNDS)])
    sa_ratio = median([res["torch_sample"][i] / res["ours_sample"][i] for i in range(ROUNDS)])
    print(f"threads {threads}: training  libdiffuse {1 / median(res['ours_train']):8.1f} steps/s, "
          f"torch {1 / median(res['torch_train']):8.1f} steps/s, ratio {tr_ratio:.2f}")
    print(f"threads {threads}: sampling  libdiffuse {SAMPLE_BATCH / median(res['ours_sample']):8.0f} "
          f"samples/s, torch {SAMPLE_BATCH / median(res['torch_sample']):8.0f} samples/s, "
          f"ratio {sa_ratio:.2f}")
    for h in (smp, model, tr, net, fast, sched):
        pass
    return tr_ratio, sa_ratio


if __name__ == "__main__":
    counts = [int(a) for a in sys.argv[1:]] or [1]
    print(f"MLP dim {DIM}, width {WIDTH}, depth {DEPTH}, emb {EMB}; train batch {TRAIN_BATCH}, "
          f"sample batch {SAMPLE_BATCH}, DDIM {STEPS} steps; torch {torch.__version__}; "
          f"libdiffuse OpenMP: {bool(lib.diffuse_has_openmp())}; OMP_NUM_THREADS="
          f"{os.environ.get('OMP_NUM_THREADS', 'unset')}, OPENBLAS_NUM_THREADS="
          f"{os.environ.get('OPENBLAS_NUM_THREADS', 'unset')}")
    for c in counts:
        if c > 1 and not lib.diffuse_has_openmp():
            print(f"threads {c}: skipped, libdiffuse built without OpenMP")
            continue
        bench(c)
