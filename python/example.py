#!/usr/bin/env python3
"""Sample a 2-D Gaussian mixture with libdiffuse's DDIM sampler and an exact
numpy denoiser.

The "model" is the closed-form noise predictor of a mixture of isotropic
Gaussians, so no training is needed: for data x0 ~ sum_k w_k N(mu_k, s^2 I)
and x_t = sqrt(abar) x0 + sqrt(1 - abar) eps,

    E[eps | x_t] = sqrt(1 - abar) * sum_k r_k(x_t) (x_t - sqrt(abar) mu_k) / D,
    D = abar s^2 + 1 - abar,   r_k ∝ w_k N(x_t; sqrt(abar) mu_k, D I).

libdiffuse calls it through the binding (python/libdiffuse/) with numpy
views of x_t [batch][2] and of the original training timesteps t [batch].
The program prints an ASCII density of the samples and how many fell near
each component, and ends with "ok" when the proportions match the weights.

With --train N the model is instead the library's reference MLP
(ld.Net.mlp), trained for N steps on draws from the mixture (ld.Trainer);
the samples come from the EMA of its weights (net.model("ema")), and
--checkpoint PATH saves the net and trainer (ld.checkpoint_save) and samples
from the reloaded copy (ld.checkpoint_load).

    python3 python/example.py                 # 4000 samples, 50 DDIM steps
    python3 python/example.py --steps 10 --eta 1.0 --sampler ddim
    python3 python/example.py --train 2000 --checkpoint /tmp/mix.ckpt
    LIBDIFFUSE_PATH=out/libdiffuse.so.1 python3 python/example.py --help
"""

import argparse
import math
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

try:
    import numpy as np
except ImportError:
    sys.exit("example.py needs numpy (Debian: apt-get install python3-numpy)")

import libdiffuse as ld

MEANS = np.array([[0.0, 2.0], [-1.7320508, -1.0], [1.7320508, -1.0]])
WEIGHTS = np.array([0.5, 0.3, 0.2])
SD = 0.3


def mixture_eps(abar_table):
    """The exact noise predictor, as a model callback f(x_t, t) -> eps."""
    log_w = np.log(WEIGHTS)

    def eps_model(x, t):
        a = abar_table[t][:, None]                           # [batch, 1]
        d = a * SD * SD + (1.0 - a)                          # variance of x_t given k
        diff = x[:, None, :] - np.sqrt(a)[:, :, None] * MEANS[None]   # [batch, K, 2]
        logp = log_w[None] - 0.5 * (diff ** 2).sum(-1) / d   # same D for every k
        logp -= logp.max(axis=1, keepdims=True)
        r = np.exp(logp)
        r /= r.sum(axis=1, keepdims=True)
        return np.sqrt(1.0 - a) * (r[:, :, None] * diff).sum(1) / d

    return eps_model


def mixture_draw(rng, n):
    """n draws from the mixture, float32 [n][2]."""
    k = rng.choice(len(WEIGHTS), size=n, p=WEIGHTS)
    return (MEANS[k] + SD * rng.standard_normal((n, 2))).astype(np.float32)


def train_mlp(base, args, batch):
    """Train the reference MLP on the mixture; returns its EMA model."""
    net = ld.Net.mlp(2, width=64, depth=2, emb_dim=16, max_batch=batch, seed=args.seed)
    rng = np.random.default_rng(args.seed)
    with ld.Trainer(net, base, min(batch, 256)) as tr:
        tr.lr = 3e-3
        tr.ema_decay = 0.99
        t0 = time.perf_counter()
        losses = [tr.step(mixture_draw(rng, tr.max_batch), seed=args.seed)
                  for _ in range(args.train)]
        print(f"trained {net.param_count} parameters for {tr.step_count} steps of batch "
              f"{tr.max_batch}: {time.perf_counter() - t0:.2f} s, loss "
              f"{np.mean(losses[:20]):.3f} -> {np.mean(losses[-20:]):.3f}")
        if args.checkpoint:
            ld.checkpoint_save(args.checkpoint, net, tr)
            net.close()
            net, tr2 = ld.checkpoint_load(args.checkpoint, batch, base, tr.max_batch)
            print(f"saved and reloaded {args.checkpoint} (format "
                  f"{ld.checkpoint_format_version()}, step {tr2.step_count})")
            tr2.close()
    with net:
        return net.model("ema")  # keeps the C net alive by itself


def ascii_density(x, width=48, height=20, lim=3.2):
    shades = " .:-=+*#%@"
    h, _, _ = np.histogram2d(x[:, 1], x[:, 0], bins=(height, width),
                             range=((-lim, lim), (-lim, lim)))
    h = h[::-1]
    top = h.max() or 1.0
    rows = []
    for row in h:
        rows.append("".join(shades[min(len(shades) - 1, int(math.ceil(v / top * 9)))]
                            for v in row))
    return "\n".join("|" + r + "|" for r in rows)


def main(argv=None):
    p = argparse.ArgumentParser(
        description="Sample a 2-D Gaussian mixture with libdiffuse's DDIM (or DDPM) "
                    "sampler, using an exact numpy noise predictor as the model.")
    p.add_argument("--samples", type=int, default=4000, help="number of samples (default 4000)")
    p.add_argument("--steps", type=int, default=50, help="sampling steps (default 50)")
    p.add_argument("--train-steps", type=int, default=1000,
                   help="steps of the training chain T (default 1000)")
    p.add_argument("--schedule", choices=("cosine", "linear"), default="cosine",
                   help="noise schedule (default cosine)")
    p.add_argument("--sampler", choices=("ddim", "ddpm"), default="ddim",
                   help="sampler kind (default ddim)")
    p.add_argument("--eta", type=float, default=0.0, help="DDIM eta in [0, 1] (default 0)")
    p.add_argument("--seed", type=int, default=1, help="generator seed (default 1)")
    p.add_argument("--batch", type=int, default=1024, help="rows per library call (default 1024)")
    p.add_argument("--quiet", action="store_true", help="no density plot")
    p.add_argument("--train", type=int, default=0, metavar="N",
                   help="train the reference MLP for N steps and sample its EMA weights "
                        "instead of the exact denoiser")
    p.add_argument("--checkpoint", metavar="PATH",
                   help="with --train: save the net and trainer there, then sample the "
                        "reloaded net")
    args = p.parse_args(argv)

    print(f"libdiffuse {ld.version_string()} ({ld._path}), OpenMP {ld.has_openmp()}")
    batch = max(1, min(args.batch, args.samples))
    with getattr(ld.Schedule, args.schedule)(args.train_steps) as base:
        abar = base.table("alphas_cumprod")
        spec = f"ddim{args.steps}" if args.sampler == "ddim" else str(args.steps)
        try:
            s = base.respace(spec)
        except ld.DiffuseError:  # no integer stride gives that many steps
            s = base.respace(str(args.steps))
        if args.train > 0:
            model = train_mlp(base, args, batch)
        else:
            model = ld.Model(mixture_eps(abar), dim=2, prediction="eps")
    done = []
    with s, model, ld.Sampler(s, model, args.sampler, max_batch=batch) as sampler:
        if args.sampler == "ddim":
            sampler.set("eta", args.eta)
        sampler.set_progress(lambda step, total: done.append(step) and None)
        t0 = time.perf_counter()
        parts, first = [], 0
        while first < args.samples:
            n = min(batch, args.samples - first)
            parts.append(sampler.run(seed=args.seed, first_sample=first, batch=n))
            first += n
        elapsed = time.perf_counter() - t0
        x = np.concatenate(parts).astype(np.float64)
        print(f"{args.samples} samples, {s.length} {args.sampler} steps of a {args.schedule} "
              f"schedule (T = {args.train_steps}), eta {args.eta}: {elapsed:.2f} s, "
              f"{len(done)} progress calls")

    if not args.quiet:
        print(ascii_density(x))
    nearest = np.argmin(((x[:, None, :] - MEANS[None]) ** 2).sum(-1), axis=1)
    frac = np.bincount(nearest, minlength=len(WEIGHTS)) / len(x)
    worst = 0.0
    for k in range(len(WEIGHTS)):
        pts = x[nearest == k]
        spread = pts.std(axis=0).mean() if len(pts) > 1 else float("nan")
        worst = max(worst, abs(frac[k] - WEIGHTS[k]))
        print(f"component {k}: mean {MEANS[k].round(2).tolist()}, weight {WEIGHTS[k]:.2f}, "
              f"sampled {frac[k]:.3f}, spread {spread:.3f} (data {SD})")
    # The proportions' standard error is at most 0.5 / sqrt(n); the allowance
    # adds the discretization error of a few-step sampler, and for a trained
    # net (an approximate denoiser) a further 0.05.
    tol = 5 * 0.5 / math.sqrt(len(x)) + 0.03 + (0.05 if args.train > 0 else 0.0)
    if worst <= tol:
        print(f"ok: proportions within {tol:.3f} of the weights")
        return 0
    print(f"proportions off by {worst:.3f} (> {tol:.3f}): try more --steps")
    return 1


if __name__ == "__main__":
    sys.exit(main())
