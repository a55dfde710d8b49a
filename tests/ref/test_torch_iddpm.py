#!/usr/bin/env python3
"""Improved DDPM's U-Net (diffuse_net_create_iddpm) against a PyTorch twin of
improved-diffusion's UNetModel written here from the paper and the public
description of the architecture (modules registered so that state_dict()
has UNetModel's names and order), in float64: random weights exported from
torch (every zero-initialized conv made non-zero), loaded into the C net
through diffuse_net_set_params in the documented order (state_dict order
without label_emb, then the class table [K + 1][E]), and forward outputs
compared to 1e-5 of the output scale, for several configurations; then the
gradients of one training step (MSE) against autograd to 1e-5 of the largest
gradient and the loss to 1e-6 (observed: 1e-6 and 4e-7, 1e-8).  The twin was
checked once against improved-diffusion's own UNetModel (load_state_dict
strict, outputs equal to 3e-8), which is not shipped here.

Run: LIBDIFFUSE_PATH=out/libdiffuse.so.1 /usr/bin/python3 tests/ref/test_torch_iddpm.py
Prints "ok"/"FAIL"/"skip" lines and "N passed, M failed, K skipped"; skips,
saying so, when torch or numpy is absent.
"""
import ctypes
import math
import os

from _report import finish, report, results

try:
    import numpy as np
    import torch
    import torch.nn as nn
    import torch.nn.functional as F
except ImportError as e:
    print(f"skip test_torch_iddpm: {e.name} is not installed (apt-get install python3-torch python3-numpy)")
    results["skipped"] += 1
    finish()

from _torchnet import timestep_embedding, trainer_grads  # noqa: E402

torch.set_num_threads(1)
lib = ctypes.CDLL(os.environ.get("LIBDIFFUSE_PATH", "out/libdiffuse.so.1"))
if not hasattr(lib, "diffuse_net_create_iddpm"):
    report("torch_iddpm", False, "the library has no diffuse_net_create_iddpm")
    finish()
c_float_p = ctypes.POINTER(ctypes.c_float)
c_i32_p = ctypes.POINTER(ctypes.c_int32)
lib.diffuse_net_create_iddpm.argtypes = [ctypes.POINTER(ctypes.c_void_p), ctypes.c_size_t,
                                         ctypes.c_size_t, ctypes.c_size_t, ctypes.c_size_t,
                                         ctypes.c_char_p, ctypes.c_int, ctypes.c_int,
                                         ctypes.c_size_t, ctypes.c_uint64]
lib.diffuse_net_free.argtypes = [ctypes.c_void_p]
lib.diffuse_net_param_count.argtypes = [ctypes.c_void_p]
lib.diffuse_net_param_count.restype = ctypes.c_size_t
lib.diffuse_net_set_params.argtypes = [ctypes.c_void_p, ctypes.c_int, c_float_p, ctypes.c_size_t]
lib.diffuse_net_forward_cond.argtypes = [ctypes.c_void_p, ctypes.c_int, c_float_p, c_i32_p,
                                         c_i32_p, ctypes.c_size_t, c_float_p]
lib.diffuse_last_error.restype = ctypes.c_char_p
lib.diffuse_net_get_params.argtypes = [ctypes.c_void_p, ctypes.c_int, c_float_p, ctypes.c_size_t]


def gn(ch, groups):
    return nn.GroupNorm(groups, ch)


class ResBlock(nn.Module):
    """in_layers (GN, SiLU, conv3), emb_layers (SiLU, linear), out_layers
    (GN, SiLU, dropout, conv3), skip_connection (1x1 conv when the channel
    count changes)."""

    def __init__(self, ci, co, E, groups, scale_shift):
        super().__init__()
        self.scale_shift = scale_shift
        self.in_layers = nn.Sequential(gn(ci, groups), nn.SiLU(), nn.Conv2d(ci, co, 3, padding=1))
        self.emb_layers = nn.Sequential(nn.SiLU(), nn.Linear(E, 2 * co if scale_shift else co))
        self.out_layers = nn.Sequential(gn(co, groups), nn.SiLU(), nn.Dropout(0.0),
                                        nn.Conv2d(co, co, 3, padding=1))
        self.skip_connection = nn.Identity() if ci == co else nn.Conv2d(ci, co, 1)

    def forward(self, x, emb):
        h = self.in_layers(x)
        e = self.emb_layers(emb)[:, :, None, None]
        if self.scale_shift:
            scale, shift = e.chunk(2, dim=1)
            h = self.out_layers[0](h) * (1 + scale) + shift
            h = self.out_layers[3](self.out_layers[2](self.out_layers[1](h)))
        else:
            h = self.out_layers(h + e)
        return self.skip_connection(x) + h


class AttentionBlock(nn.Module):
    """norm, qkv (1x1 conv1d to 3 ch), heads reading 3 ch/heads channels each
    (q, k, v in turn), softmax of q.k / sqrt(ch/heads), proj_out."""

    def __init__(self, ch, heads, groups):
        super().__init__()
        self.heads = heads
        self.norm = gn(ch, groups)
        self.qkv = nn.Conv1d(ch, 3 * ch, 1)
        self.proj_out = nn.Conv1d(ch, ch, 1)

    def forward(self, x):
        b, c, hh, ww = x.shape
        x = x.reshape(b, c, -1)
        qkv = self.qkv(self.norm(x)).reshape(b * self.heads, 3 * c // self.heads, -1)
        d = c // self.heads
        q, k, v = qkv[:, :d], qkv[:, d:2 * d], qkv[:, 2 * d:]
        w = torch.softmax(torch.einsum("bct,bcs->bts", q, k) / math.sqrt(d), dim=-1)
        a = torch.einsum("bts,bcs->bct", w, v).reshape(b, c, -1)
        return (x + self.proj_out(a)).reshape(b, c, hh, ww)


class Resample(nn.Module):
    def __init__(self, ch, conv, down):
        super().__init__()
        self.down = down
        self.use_conv = conv
        if conv and down:
            self.op = nn.Conv2d(ch, ch, 3, stride=2, padding=1)
        elif conv:
            self.conv = nn.Conv2d(ch, ch, 3, padding=1)

    def forward(self, x):
        if self.down:
            return self.op(x) if self.use_conv else F.avg_pool2d(x, 2)
        x = F.interpolate(x, scale_factor=2, mode="nearest")
        return self.conv(x) if self.use_conv else x


class Seq(nn.ModuleList):
    def forward(self, x, emb):
        for m in self:
            x = m(x, emb) if isinstance(m, ResBlock) else m(x)
        return x


class UNet(nn.Module):
    def __init__(self, C, mc, out_C, nrb, attn_ds, mult, heads, heads_up, scale_shift,
                 conv_resample, classes, groups=32):
        super().__init__()
        E = 4 * mc
        self.mc = mc
        self.time_embed = nn.Sequential(nn.Linear(mc, E), nn.SiLU(), nn.Linear(E, E))
        if classes:
            self.label_emb = nn.Embedding(classes + 1, E)  # the last row: no label
        self.input_blocks = nn.ModuleList([Seq([nn.Conv2d(C, mc, 3, padding=1)])])
        chans, ch, ds = [mc], mc, 1
        for level, m in enumerate(mult):
            for _ in range(nrb):
                layers = [ResBlock(ch, m * mc, E, groups, scale_shift)]
                ch = m * mc
                if ds in attn_ds:
                    layers.append(AttentionBlock(ch, heads, groups))
                self.input_blocks.append(Seq(layers))
                chans.append(ch)
            if level != len(mult) - 1:
                self.input_blocks.append(Seq([Resample(ch, conv_resample, True)]))
                chans.append(ch)
                ds *= 2
        self.middle_block = Seq([ResBlock(ch, ch, E, groups, scale_shift),
                                 AttentionBlock(ch, heads, groups),
                                 ResBlock(ch, ch, E, groups, scale_shift)])
        self.output_blocks = nn.ModuleList()
        for level, m in list(enumerate(mult))[::-1]:
            for i in range(nrb + 1):
                layers = [ResBlock(ch + chans.pop(), mc * m, E, groups, scale_shift)]
                ch = mc * m
                if ds in attn_ds:
                    layers.append(AttentionBlock(ch, heads_up, groups))
                if level and i == nrb:
                    layers.append(Resample(ch, conv_resample, False))
                    ds //= 2
                self.output_blocks.append(Seq(layers))
        self.out = nn.Sequential(gn(ch, groups), nn.SiLU(), nn.Conv2d(ch, out_C, 3, padding=1))

    def forward(self, x, t, y=None):
        temb = timestep_embedding(t, self.mc).to(x.dtype)
        emb = self.time_embed(temb)
        if y is not None:
            emb = emb + self.label_emb(y)
        hs, h = [], x
        for m in self.input_blocks:
            h = m(h, emb)
            hs.append(h)
        h = self.middle_block(h, emb)
        for m in self.output_blocks:
            h = m(torch.cat([h, hs.pop()], dim=1), emb)
        return self.out(h)

    def flat(self):
        """The documented order: state_dict without label_emb, then its rows."""
        sd = self.state_dict()
        parts = [v.reshape(-1) for k, v in sd.items() if k != "label_emb.weight"]
        if "label_emb.weight" in sd:
            parts.append(sd["label_emb.weight"].reshape(-1))
        return torch.cat(parts)


def check(name, C, H, W, mc, batch, nrb, mult, attn_ds, heads, heads_up=-1, scale_shift=1,
          conv_resample=1, classes=0, learned=True, time_scale=1.0, groups=32, grad=True):
    opts = (f"num_res_blocks={nrb} channel_mult={','.join(map(str, mult))} "
            f"attention_resolutions={','.join(map(str, attn_ds))} num_heads={heads} "
            f"num_heads_upsample={heads_up} use_scale_shift_norm={scale_shift} "
            f"conv_resample={conv_resample} num_classes={classes} groups={groups} "
            f"time_scale={time_scale!r}")
    out_C = 2 * C if learned else C
    net = ctypes.c_void_p()
    rc = lib.diffuse_net_create_iddpm(ctypes.byref(net), C, H, W, mc, opts.encode(), 0,
                                      3 if learned else 0, batch, 1)
    if rc != 0:
        report(name, False, f"create failed: {lib.diffuse_last_error().decode()}")
        return
    try:
        torch.manual_seed(len(name))
        model = UNet(C, mc, out_C, nrb, attn_ds, mult, heads, heads if heads_up < 0 else heads_up,
                     scale_shift, conv_resample, classes, groups).double()
        with torch.no_grad():
            for k, p in model.named_parameters():
                # torch's default init, but nothing zero and norms away from 1, 0
                if k.endswith("weight") and p.dim() == 1:
                    p.copy_(1 + 0.3 * torch.randn_like(p))
                elif p.dim() == 1:
                    p.copy_(0.3 * torch.randn_like(p))
                elif "label_emb" in k:
                    p.copy_(0.5 * torch.randn_like(p))
                else:
                    fan_in = p[0].numel()
                    p.uniform_(-1 / math.sqrt(fan_in), 1 / math.sqrt(fan_in))
            # round every weight to float32: both sides use the same values
            for p in model.parameters():
                p.copy_(p.float().double())
        flat = model.flat().float().numpy()
        count = lib.diffuse_net_param_count(net)
        if count != flat.size:
            report(name, False, f"the C net has {count} parameters, the twin {flat.size}")
            return
        flat = np.ascontiguousarray(flat)
        if lib.diffuse_net_set_params(net, 0, flat.ctypes.data_as(c_float_p), count) != 0:
            report(name, False, f"set_params: {lib.diffuse_last_error().decode()}")
            return
        rng = np.random.default_rng(3)
        x = rng.standard_normal((batch, C, H, W)).astype(np.float32)
        t = rng.integers(0, 4000, batch).astype(np.int32)
        lab = (rng.integers(-1, classes, batch) if classes else np.full(batch, -1)).astype(np.int32)
        ours = np.empty((batch, out_C, H, W), dtype=np.float32)
        rc = lib.diffuse_net_forward_cond(net, 0, x.ctypes.data_as(c_float_p),
                                          t.ctypes.data_as(c_i32_p),
                                          lab.ctypes.data_as(c_i32_p) if classes else None,
                                          batch, ours.ctypes.data_as(c_float_p))
        if rc != 0:
            report(name, False, f"forward: {lib.diffuse_last_error().decode()}")
            return
        tt = torch.from_numpy(t.astype(np.float64)) * time_scale
        # the C net rounds t * time_scale to float before embedding it
        tt = tt.float().double()
        y = torch.from_numpy(np.where(lab < 0, classes, lab).astype(np.int64)) if classes else None
        with torch.no_grad():
            ref = model(torch.from_numpy(x).double(), tt, y).numpy()
        scale = np.max(np.abs(ref))
        err = np.max(np.abs(ours - ref)) / scale
        report(name, bool(err < 1e-5 and np.all(np.isfinite(ours))),
               f"max |difference| / max |output| = {err:.3g}")
        print(f"# {name}: {count} parameters, max |difference| / max |output| = {err:.3g}")
        if grad:
            check_grad(name + "_gradients", net, model, flat, C, H, W, batch, classes,
                       time_scale, learned)
    finally:
        lib.diffuse_net_free(net)


def check_grad(name, net, model, flat, C, H, W, batch, classes, time_scale, learned):
    """The gradients of one training step (MSE on eps) against autograd
    (_torchnet.trainer_grads); a one-step schedule (beta 0.5) fixes t = 0."""
    dim = C * H * W
    rng = np.random.default_rng(11)
    x0 = rng.uniform(-1, 1, (batch, C, H, W)).astype(np.float32)
    lab = (rng.integers(0, classes, batch) if classes else np.full(batch, -1)).astype(np.int32)
    try:
        g_c, loss, _, xt, eps = trainer_grads(lib, net, [0.5], x0.reshape(batch, dim),
                                              lab if classes else None, 21)
    except RuntimeError as e:
        report(name, False, str(e))
        return
    if g_c.size != flat.size:
        report(name, False, f"{g_c.size} gradients for {flat.size} parameters")
        return
    y = torch.from_numpy(lab.astype(np.int64)) if classes else None
    model.zero_grad()
    out = model(torch.from_numpy(xt.reshape(batch, C, H, W)),
                torch.zeros(batch, dtype=torch.float64), y)
    lt = ((out[:, :C] - torch.from_numpy(eps).reshape(batch, C, H, W)) ** 2).mean()
    lt.backward()
    named = dict(model.named_parameters())
    keys = [k for k in model.state_dict() if k != "label_emb.weight"]
    if classes:
        keys.append("label_emb.weight")
    g_t = torch.cat([named[k].grad.reshape(-1) for k in keys]).numpy()
    gs = np.max(np.abs(g_t))
    err = np.max(np.abs(g_c - g_t)) / gs
    lerr = abs(loss - lt.item()) / lt.item()
    report(name, bool(err < 1e-5 and lerr < 1e-6),
           f"max |difference| / max |gradient| = {err:.3g}, loss {lerr:.3g}")
    print(f"# {name}: max |difference| / max |gradient| = {err:.3g}, "
          f"loss relative difference {lerr:.3g}")


# CIFAR-10's flags at reduced width: 32x32, 3 res blocks, learned sigma,
# attention at 16 and 8 (rates 2, 4), 4 heads.
check("torch_iddpm_cifar_like", 3, 32, 32, 32, 2, 3, (1, 2, 2, 2), (2, 4), 4)
# class-conditional (labels and the "no label" row), time_scale 1000 / 4000
check("torch_iddpm_class_cond", 3, 16, 16, 32, 3, 1, (1, 2), (2,), 2, classes=5,
      time_scale=0.25)
# without scale-shift norm, pooled resampling, attention at the top level,
# num_heads_upsample of its own, fixed variance
check("torch_iddpm_plain", 1, 16, 16, 32, 2, 1, (1, 1, 2), (1, 4), 2, heads_up=4,
      scale_shift=0, conv_resample=0, learned=False)
# an ImageNet-64-like channel_mult (1, 2, 3, 4) at reduced width and size
check("torch_iddpm_mult_1234", 3, 16, 16, 32, 2, 1, (1, 2, 3, 4), (4, 8), 4)
# MNIST-like: 28x28, channel_mult 1, 2, 2, attention at 7x7
check("torch_iddpm_digits", 1, 28, 28, 32, 2, 2, (1, 2, 2), (4,), 4)
finish()
