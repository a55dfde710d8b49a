#!/usr/bin/env python3
"""MLP: training steps and DDIM-50 sampling, libdiffuse against PyTorch CPU
and ONNX Runtime (npm onnxruntime-node, the model exported from PyTorch),
at one and two threads, in one go.

Usage: /usr/bin/python3 bench/bench_mlp.py [THREADS...]      (default: 1 2)
Every side is pinned to the thread count, each peer at its best; see
bench/_peers.py for the environment and the libraries used.

The workload: the reference 2-D MLP (width 256, 4 residual blocks, time
embedding 64), training batch 1024 (Adam, MSE on eps; libdiffuse also
updates its EMA, PyTorch does not); sampling: DDIM (eta 0) on 50 respaced
steps of a 1000-step cosine schedule, 1024 samples.  Figures are medians
over alternating rounds; ratios > 1 mean libdiffuse is faster.
"""
import math
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _peers  # noqa: E402


class Workload:
    title = ("MLP dim 2, width 256, depth 4, emb 64; train batch 1024, "
             "DDIM-50 sampling of 1024")
    T, steps, dim, shape = 1000, 50, 2, (2,)
    train_batch = sample_batch = 1024
    rounds, train_reps, unit = 7, 10, "samples"

    @staticmethod
    def make_net(lib, out):
        _peers.ok(lib, lib.diffuse_net_create_mlp(out, 2, 256, 4, 64, 0, 0, 1024, 1))

    @staticmethod
    def torch_model(torch):
        class TorchMLP(torch.nn.Module):
            def __init__(self):
                super().__init__()
                L = torch.nn.Linear
                self.t1, self.t2, self.inp = L(64, 256), L(256, 256), L(2, 256)
                self.blocks = torch.nn.ModuleList(
                    torch.nn.ModuleList([L(256, 256), L(256, 256)]) for _ in range(4))
                self.out = L(256, 2)
                self.register_buffer(
                    "freqs", torch.exp(-math.log(10000.0) * torch.arange(32) / 32))

            def forward(self, x, t):
                silu = torch.nn.functional.silu
                a = t[:, None].float() * self.freqs[None]
                e = self.t2(silu(self.t1(torch.cat([torch.cos(a), torch.sin(a)], -1))))
                h = self.inp(x) + e
                for l1, l2 in self.blocks:
                    h = h + l2(silu(l1(silu(h))))
                return self.out(silu(h))

        return TorchMLP()


if __name__ == "__main__":
    _peers.main(Workload)
