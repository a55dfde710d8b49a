#!/usr/bin/env python3
"""Conv U-Net: training steps and DDIM-50 sampling, libdiffuse against
PyTorch CPU and ONNX Runtime (npm onnxruntime-node, the model exported from
PyTorch), at one and two threads, in one go.

Usage: /usr/bin/python3 bench/bench_unet.py [THREADS...]     (default: 1 2)
Every side is pinned to the thread count, each peer at its best; see
bench/_peers.py for the environment and the libraries used.

The workload: diffuse_net_create_unet's architecture on 1 x 14 x 14 images
(the digits example's size), c = 32, 8 groups; training batch 64 (Adam, MSE
on eps); sampling: DDIM (eta 0) on 50 respaced steps of a 1000-step cosine
schedule, 160 images.  The PyTorch side is the same architecture
(tests/ref/test_torch_unet.py's module).  Figures are medians over
alternating rounds; ratios > 1 mean libdiffuse is faster.
"""
import math
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _peers  # noqa: E402

C, H, W, BASE, GROUPS = 1, 14, 14, 32, 8


class Workload:
    title = (f"U-Net {C}x{H}x{W}, c = {BASE}, {GROUPS} groups; train batch 64, "
             "DDIM-50 sampling of 160")
    T, steps, dim, shape = 1000, 50, C * H * W, (C, H, W)
    train_batch, sample_batch = 64, 160
    rounds, train_reps, unit = 5, 5, "images"

    @staticmethod
    def make_net(lib, out):
        _peers.ok(lib, lib.diffuse_net_create_unet(out, C, H, W, BASE, GROUPS, 0, 0, 160, 1))

    @staticmethod
    def torch_model(torch):
        silu = torch.nn.functional.silu

        class ResBlock(torch.nn.Module):
            def __init__(self, k, temb):
                super().__init__()
                self.gn1 = torch.nn.GroupNorm(GROUPS, k)
                self.conv1 = torch.nn.Conv2d(k, k, 3, padding=1)
                self.emb = torch.nn.Linear(temb, k)
                self.gn2 = torch.nn.GroupNorm(GROUPS, k)
                self.conv2 = torch.nn.Conv2d(k, k, 3, padding=1)

            def forward(self, h, se):
                r = self.conv1(silu(self.gn1(h))) + self.emb(se)[:, :, None, None]
                return h + self.conv2(silu(self.gn2(r)))

        class TorchUNet(torch.nn.Module):
            def __init__(self):
                super().__init__()
                c, E = BASE, 4 * BASE
                self.t1, self.t2 = torch.nn.Linear(c, E), torch.nn.Linear(E, E)
                self.inp = torch.nn.Conv2d(C, c, 3, padding=1)
                self.block1 = ResBlock(c, E)
                self.down = torch.nn.Conv2d(c, 2 * c, 3, stride=2, padding=1)
                self.block2 = ResBlock(2 * c, E)
                self.up = torch.nn.Conv2d(2 * c, c, 3, padding=1)
                self.block3 = ResBlock(c, E)
                self.out_gn = torch.nn.GroupNorm(GROUPS, c)
                self.out = torch.nn.Conv2d(c, C, 3, padding=1)
                half = c // 2
                self.register_buffer(
                    "freqs", torch.exp(-math.log(10000.0) * torch.arange(half) / half))

            def forward(self, x, t):
                a = t[:, None].float() * self.freqs[None]
                se = silu(self.t2(silu(self.t1(torch.cat([torch.cos(a), torch.sin(a)], -1)))))
                h1 = self.block1(self.inp(x), se)
                h2 = self.block2(self.down(h1), se)
                s = self.up(torch.nn.functional.interpolate(h2, scale_factor=2,
                                                            mode="nearest")) + h1
                return self.out(silu(self.out_gn(self.block3(s, se))))

        return TorchUNet()


if __name__ == "__main__":
    _peers.main(Workload)
