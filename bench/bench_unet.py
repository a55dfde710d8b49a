#!/usr/bin/env python3
"""Conv U-Nets: training steps and DDIM sampling, libdiffuse against
PyTorch CPU and ONNX Runtime (npm onnxruntime-node, the model exported from
PyTorch), at one and two threads, in one go, for both reference U-Nets.

Usage: /usr/bin/python3 bench/bench_unet.py [THREADS...]     (default: 1 2)
       BENCH_UNET=small|iddpm|both (default both) picks the workloads.
Every side is pinned to the thread count, each peer at its best; see
bench/_peers.py for the environment and the libraries used.

Workload "small": diffuse_net_create_unet's architecture on 1 x 14 x 14 images
(the digits example's size), c = 32, 8 groups; training batch 64 (Adam, MSE
on eps); sampling: DDIM (eta 0) on 50 respaced steps of a 1000-step cosine
schedule, 160 images.  The PyTorch side is the same architecture
(tests/ref/test_torch_unet.py's module).  Figures are medians over
alternating rounds; ratios > 1 mean libdiffuse is faster.

Workload "iddpm": diffuse_net_create_iddpm with the digits example's
28x28 configuration (model_channels 32, channel_mult 1,2,2, num_res_blocks
2, attention at downsample rate 4 (7x7) with 4 heads, scale-shift norm, 32
groups); training batch 64; DDIM on 10 respaced steps, 64 images (fewer
steps than the small net's 50 only to keep a round short).  The PyTorch
side is a float32 twin of improved-diffusion's UNetModel for that
configuration written here (tests/ref/test_torch_iddpm.py checks the C net
against such a twin).
"""
import ctypes
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


IH = 28
IDDPM_OPTS = b"channel_mult=1,2,2 num_res_blocks=2 attention_resolutions=4 num_heads=4"


class IddpmWorkload:
    title = (f"Improved DDPM U-Net 1x{IH}x{IH}, model_channels 32, channel_mult 1,2,2, "
             "2 res blocks, attention at 7x7; train batch 64, DDIM-10 sampling of 64")
    T, steps, dim, shape = 1000, 10, IH * IH, (1, IH, IH)
    train_batch, sample_batch = 64, 64
    rounds, train_reps, unit = 3, 2, "images"

    @staticmethod
    def make_net(lib, out):
        lib.diffuse_net_create_iddpm.argtypes = [
            ctypes.POINTER(ctypes.c_void_p), ctypes.c_size_t, ctypes.c_size_t, ctypes.c_size_t,
            ctypes.c_size_t, ctypes.c_char_p, ctypes.c_int, ctypes.c_int, ctypes.c_size_t,
            ctypes.c_uint64]
        _peers.ok(lib, lib.diffuse_net_create_iddpm(out, 1, IH, IH, 32, IDDPM_OPTS, 0, 0, 64, 1))

    @staticmethod
    def torch_model(torch):
        nn, F = torch.nn, torch.nn.functional
        mc, E, G = 32, 128, 32

        class Res(nn.Module):
            def __init__(self, ci, co):
                super().__init__()
                self.gn1, self.c1 = nn.GroupNorm(G, ci), nn.Conv2d(ci, co, 3, padding=1)
                self.emb = nn.Linear(E, 2 * co)
                self.gn2, self.c2 = nn.GroupNorm(G, co), nn.Conv2d(co, co, 3, padding=1)
                self.skip = nn.Identity() if ci == co else nn.Conv2d(ci, co, 1)

            def forward(self, x, emb):
                h = self.c1(F.silu(self.gn1(x)))
                scale, shift = self.emb(F.silu(emb))[:, :, None, None].chunk(2, dim=1)
                h = self.c2(F.silu(self.gn2(h) * (1 + scale) + shift))
                return self.skip(x) + h

        class Attn(nn.Module):
            def __init__(self, ch, heads=4):
                super().__init__()
                self.heads, self.norm = heads, nn.GroupNorm(G, ch)
                self.qkv, self.proj = nn.Conv1d(ch, 3 * ch, 1), nn.Conv1d(ch, ch, 1)

            def forward(self, x, emb):
                b, c, hh, ww = x.shape
                x = x.reshape(b, c, -1)
                d = c // self.heads
                qkv = self.qkv(self.norm(x)).reshape(b * self.heads, 3 * d, -1)
                q, k, v = qkv[:, :d], qkv[:, d:2 * d], qkv[:, 2 * d:]
                w = torch.softmax(torch.einsum("bct,bcs->bts", q, k) / math.sqrt(d), dim=-1)
                a = torch.einsum("bts,bcs->bct", w, v).reshape(b, c, -1)
                return (x + self.proj(a)).reshape(b, c, hh, ww)

        class Down(nn.Module):
            def __init__(self, ch):
                super().__init__()
                self.op = nn.Conv2d(ch, ch, 3, stride=2, padding=1)

            def forward(self, x, emb):
                return self.op(x)

        class Up(nn.Module):
            def __init__(self, ch):
                super().__init__()
                self.conv = nn.Conv2d(ch, ch, 3, padding=1)

            def forward(self, x, emb):
                return self.conv(F.interpolate(x, scale_factor=2, mode="nearest"))

        class UNet(nn.Module):
            def __init__(self, mult=(1, 2, 2), nrb=2, attn_ds=(4,)):
                super().__init__()
                self.t1, self.t2 = nn.Linear(mc, E), nn.Linear(E, E)
                self.inp = nn.Conv2d(1, mc, 3, padding=1)
                self.down, chans, ch, ds = nn.ModuleList(), [mc], mc, 1
                for level, m in enumerate(mult):
                    for _ in range(nrb):
                        blk = [Res(ch, m * mc)]
                        ch = m * mc
                        if ds in attn_ds:
                            blk.append(Attn(ch))
                        self.down.append(nn.ModuleList(blk))
                        chans.append(ch)
                    if level != len(mult) - 1:
                        self.down.append(nn.ModuleList([Down(ch)]))
                        chans.append(ch)
                        ds *= 2
                self.mid = nn.ModuleList([Res(ch, ch), Attn(ch), Res(ch, ch)])
                self.up = nn.ModuleList()
                for level, m in list(enumerate(mult))[::-1]:
                    for i in range(nrb + 1):
                        blk = [Res(ch + chans.pop(), mc * m)]
                        ch = mc * m
                        if ds in attn_ds:
                            blk.append(Attn(ch))
                        if level and i == nrb:
                            blk.append(Up(ch))
                            ds //= 2
                        self.up.append(nn.ModuleList(blk))
                self.out_gn, self.out = nn.GroupNorm(G, ch), nn.Conv2d(ch, 1, 3, padding=1)
                half = mc // 2
                self.register_buffer(
                    "freqs", torch.exp(-math.log(10000.0) * torch.arange(half) / half))

            def forward(self, x, t):
                a = t[:, None].float() * self.freqs[None]
                emb = self.t2(F.silu(self.t1(torch.cat([torch.cos(a), torch.sin(a)], -1))))
                h, hs = self.inp(x), []
                hs.append(h)
                for blk in self.down:
                    for m in blk:
                        h = m(h, emb)
                    hs.append(h)
                for m in self.mid:
                    h = m(h, emb)
                for blk in self.up:
                    h = torch.cat([h, hs.pop()], dim=1)
                    for m in blk:
                        h = m(h, emb)
                return self.out(F.silu(self.out_gn(h)))

        return UNet()


WORKLOADS = {"small": Workload, "iddpm": IddpmWorkload}


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[1] in ("--child", "--torch-worker"):
        _peers.main(WORKLOADS[os.environ.get("BENCH_UNET_WORKLOAD", "small")])
    else:
        pick = os.environ.get("BENCH_UNET", "both")
        for name in (("small", "iddpm") if pick == "both" else (pick,)):
            os.environ["BENCH_UNET_WORKLOAD"] = name
            _peers.main(WORKLOADS[name])
