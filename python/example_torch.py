#!/usr/bin/env python3
"""Drive a PyTorch model with libdiffuse's diffusers-style Scheduler.

The model is a torch module: the closed-form noise predictor of 1-D Gaussian
data N(mu, s^2), written with torch operations on tensors (so no training
is needed and the answer is known).  The loop is the one of a diffusers
pipeline: the caller owns the model call, the library owns the step.

    E[eps | x_t] = sqrt(1 - abar) (x_t - sqrt(abar) mu) / (abar s^2 + 1 - abar)

The scheduler is built from a diffusers scheduler_config.json dict; the
program prints the sample mean and standard deviation against mu and s and
ends with "ok" when they agree.

    python3 python/example_torch.py                       # DPM-Solver++(2M), 20 steps
    python3 python/example_torch.py --scheduler EulerDiscreteScheduler --karras
    LIBDIFFUSE_PATH=out/libdiffuse.so.1 python3 python/example_torch.py --help
"""

import argparse
import math
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

try:
    import torch
except ImportError:
    sys.exit("example_torch.py needs PyTorch (Debian: apt-get install python3-torch)")

from libdiffuse import Scheduler  # noqa: E402

MU, S = 0.4, 0.3


class GaussianEps(torch.nn.Module):
    """The exact eps-predictor of N(MU, S^2) data for a linear beta chain."""

    def __init__(self, T=1000, beta_start=1e-4, beta_end=0.02):
        super().__init__()
        betas = torch.linspace(beta_start, beta_end, T, dtype=torch.float64)
        self.register_buffer("log_sigma", 0.5 * torch.log((1 - torch.cumprod(1 - betas, 0))
                                                          / torch.cumprod(1 - betas, 0)))

    def forward(self, x, t):
        # t may be fractional (sigma-space schedulers): log sigma is linear in t
        t = torch.as_tensor(t, dtype=torch.float64).clamp(0, len(self.log_sigma) - 1)
        lo = t.floor().long().clamp(max=len(self.log_sigma) - 2)
        w = t - lo
        sig = torch.exp((1 - w) * self.log_sigma[lo] + w * self.log_sigma[lo + 1])
        ab = 1 / (1 + sig * sig)
        d = ab * S * S + 1 - ab
        return (torch.sqrt(1 - ab) * (x.double() - torch.sqrt(ab) * MU) / d).float()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--scheduler", default="DPMSolverMultistepScheduler",
                    help="a diffusers class name (default: DPMSolverMultistepScheduler)")
    ap.add_argument("--steps", type=int, default=20, help="inference steps (default: 20)")
    ap.add_argument("--karras", action="store_true", help="use_karras_sigmas (Euler, Heun)")
    ap.add_argument("--samples", type=int, default=4096, help="batch size (default: 4096)")
    args = ap.parse_args()
    config = {"_class_name": args.scheduler, "num_train_timesteps": 1000,
              "beta_schedule": "linear", "beta_start": 1e-4, "beta_end": 0.02,
              "prediction_type": "epsilon", "timestep_spacing": "trailing"}
    if args.karras:
        config["use_karras_sigmas"] = True
    model = GaussianEps()
    with Scheduler.from_config(config, seed=0) as sched, torch.no_grad():
        sched.set_timesteps(args.steps)
        x = torch.from_numpy(sched.init_noise(args.samples, (1,)))
        for i, t in enumerate(sched.timesteps):
            eps = model(sched.scale_model_input(x, t), float(t))
            x, x0 = sched.step(eps, t, x)
            print(f"\rstep {i + 1}/{len(sched.timesteps)}", end="", file=sys.stderr)
        print(file=sys.stderr)
    mean, std = float(x.mean()), float(x.std())
    print(f"{args.scheduler}, {args.steps} steps: mean {mean:.4f} (data {MU}), "
          f"std {std:.4f} (data {S})")
    tol = 5 * S / math.sqrt(args.samples) + 0.02  # sampling error + discretization
    ok = abs(mean - MU) < tol and abs(std - S) < 3 * tol
    print("ok" if ok else "FAILED: moments off")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
