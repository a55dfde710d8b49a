#!/usr/bin/env python3
"""The U-Net denoiser against the same architecture in PyTorch (Debian's
python3-torch), loaded with our flat parameters: forward outputs to float32
tolerance (1e-5 of the output scale), and, as a check of the documented
parameter order and initialization, PyTorch's own parameter shapes and
fan-in bounds.

Run: LIBDIFFUSE_PATH=out/libdiffuse.so.1 /usr/bin/python3 tests/ref/test_torch_unet.py
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
except ImportError as e:
    print(f"skip test_torch_unet: {e.name} is not installed (apt-get install python3-torch python3-numpy)")
    results["skipped"] += 1
    finish()

from _torchnet import c_float_p, compare_forward, timestep_embedding  # noqa: E402

torch.set_num_threads(1)
lib = ctypes.CDLL(os.environ.get("LIBDIFFUSE_PATH", "out/libdiffuse.so.1"))
lib.diffuse_net_create_unet.argtypes = [ctypes.POINTER(ctypes.c_void_p), ctypes.c_size_t,
                                        ctypes.c_size_t, ctypes.c_size_t, ctypes.c_size_t,
                                        ctypes.c_size_t, ctypes.c_int, ctypes.c_int,
                                        ctypes.c_size_t, ctypes.c_uint64]
lib.diffuse_net_free.argtypes = [ctypes.c_void_p]
lib.diffuse_net_param_count.argtypes = [ctypes.c_void_p]
lib.diffuse_net_param_count.restype = ctypes.c_size_t
lib.diffuse_net_get_params.argtypes = [ctypes.c_void_p, ctypes.c_int, c_float_p, ctypes.c_size_t]
lib.diffuse_net_forward.argtypes = [ctypes.c_void_p, ctypes.c_int, c_float_p,
                                    ctypes.POINTER(ctypes.c_int32), ctypes.c_size_t, c_float_p]
lib.diffuse_last_error.restype = ctypes.c_char_p


class ResBlock(torch.nn.Module):
    """r = Conv(SiLU(GN(h))) + Linear(SiLU(e)) per channel;
    r = Conv(SiLU(GN(r))); h + r."""

    def __init__(self, k, groups, temb):
        super().__init__()
        self.gn1 = torch.nn.GroupNorm(groups, k)
        self.conv1 = torch.nn.Conv2d(k, k, 3, padding=1)
        self.emb = torch.nn.Linear(temb, k)
        self.gn2 = torch.nn.GroupNorm(groups, k)
        self.conv2 = torch.nn.Conv2d(k, k, 3, padding=1)

    def forward(self, h, se):
        silu = torch.nn.functional.silu
        r = self.conv1(silu(self.gn1(h))) + self.emb(se)[:, :, None, None]
        r = self.conv2(silu(self.gn2(r)))
        return h + r


class TorchUNet(torch.nn.Module):
    """The architecture documented for diffuse_net_create_unet(); the
    modules are registered in the documented parameter order."""

    def __init__(self, C, c, groups, out_C):
        super().__init__()
        E = 4 * c
        self.c = c
        self.float32_embedding = False
        self.t1 = torch.nn.Linear(c, E)
        self.t2 = torch.nn.Linear(E, E)
        self.inp = torch.nn.Conv2d(C, c, 3, padding=1)
        self.block1 = ResBlock(c, groups, E)
        self.down = torch.nn.Conv2d(c, 2 * c, 3, stride=2, padding=1)
        self.block2 = ResBlock(2 * c, groups, E)
        self.up = torch.nn.Conv2d(2 * c, c, 3, padding=1)
        self.block3 = ResBlock(c, groups, E)
        self.out_gn = torch.nn.GroupNorm(groups, c)
        self.out = torch.nn.Conv2d(c, out_C, 3, padding=1)

    def embed(self, t):
        return timestep_embedding(t, self.c, self.float32_embedding)

    def forward(self, x, t):
        silu = torch.nn.functional.silu
        se = silu(self.t2(silu(self.t1(self.embed(t)))))
        h1 = self.block1(self.inp(x), se)
        h2 = self.block2(self.down(h1), se)
        s = self.up(torch.nn.functional.interpolate(h2, scale_factor=2, mode="nearest")) + h1
        h3 = self.block3(s, se)
        return self.out(silu(self.out_gn(h3)))

    def load_flat(self, flat):
        params = list(self.parameters())  # registration order = documented order
        i = 0
        with torch.no_grad():
            for p in params:
                n = p.numel()
                p.copy_(torch.from_numpy(flat[i:i + n].reshape(p.shape)))
                i += n
        assert i == len(flat), (i, len(flat))


def create(C, H, W, c, G, pred, var, batch, seed):
    net = ctypes.c_void_p()
    rc = lib.diffuse_net_create_unet(ctypes.byref(net), C, H, W, c, G, pred, var, batch, seed)
    if rc != 0:
        raise RuntimeError(f"create failed: {lib.diffuse_last_error().decode()}")
    count = lib.diffuse_net_param_count(net)
    flat = np.empty(count, dtype=np.float32)
    lib.diffuse_net_get_params(net, 0, flat.ctypes.data_as(c_float_p), count)
    return net, flat


def check_forward(name, C, H, W, c, G, variance, batch, same_t=False):
    try:
        net, flat = create(C, H, W, c, G, 0, variance, batch, 42)
    except RuntimeError as e:
        report(name, False, str(e))
        return
    try:
        out_C = 2 * C if variance >= 2 else C
        model = TorchUNet(C, c, G, out_C)
        n_torch = sum(p.numel() for p in model.parameters())
        if n_torch != len(flat):
            report(name, False, f"{len(flat)} parameters, torch's module has {n_torch}")
            return
        model.load_flat(flat)
        rng = np.random.default_rng(7)
        # GN outputs are O(1) whatever the parameters: perturb gamma and
        # beta away from 1 and 0 so that the affine part is exercised too.
        with torch.no_grad():
            for m in model.modules():
                if isinstance(m, torch.nn.GroupNorm):
                    m.weight.add_(torch.from_numpy(
                        rng.uniform(-0.5, 0.5, m.weight.shape).astype(np.float32)))
                    m.bias.add_(torch.from_numpy(
                        rng.uniform(-0.5, 0.5, m.bias.shape).astype(np.float32)))
        flat2 = np.concatenate([p.detach().numpy().ravel() for p in model.parameters()])
        x = rng.standard_normal((batch, C, H, W)).astype(np.float32)
        if same_t:
            t = np.full(batch, int(rng.integers(0, 1000)), dtype=np.int32)
        else:
            t = rng.integers(0, 1000, batch).astype(np.int32)
        set_params = lib.diffuse_net_set_params
        set_params.argtypes = [ctypes.c_void_p, ctypes.c_int, c_float_p, ctypes.c_size_t]
        flat2 = np.ascontiguousarray(flat2, dtype=np.float32)
        if set_params(net, 0, flat2.ctypes.data_as(c_float_p), len(flat2)) != 0:
            report(name, False, f"set_params failed: {lib.diffuse_last_error().decode()}")
            return
        compare_forward(lib, name, net, model, x, t, (batch, out_C, H, W),
                        "up to 9 x 2c terms per conv output")
    finally:
        lib.diffuse_net_free(net)


def check_initialization(name, C, H, W, c, G):
    """Our initial weights, viewed through torch's modules: every Conv2d and
    Linear weight and bias in +-1/sqrt(fan_in) (torch's default bounds, with
    fan_in from torch's own shapes), reaching 0.8 of it in tensors of 64
    values or more; GN 1 and 0."""
    net, flat = create(C, H, W, c, G, 0, 0, 1, 3)
    try:
        model = TorchUNet(C, c, G, C)
        model.load_flat(flat)
        bad = []
        for mname, m in model.named_modules():
            if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear)):
                fan_in = m.weight[0].numel()
                bound = 1 / math.sqrt(fan_in)
                for p in (m.weight, m.bias):
                    a = p.detach().abs().max().item()
                    # the largest of n uniform draws is below 0.8 of the
                    # bound with probability 0.8^n: checked from n = 64 on
                    low = 0.8 * bound if p.numel() >= 64 else 0.0
                    if not (low < a <= bound * (1 + 1e-6)):
                        bad.append(f"{mname}: max |value| {a:.4g}, bound {bound:.4g}")
            elif isinstance(m, torch.nn.GroupNorm):
                if not (torch.all(m.weight == 1) and torch.all(m.bias == 0)):
                    bad.append(f"{mname}: gamma/beta not 1/0")
        report(name, not bad, "; ".join(bad[:4]))
    finally:
        lib.diffuse_net_free(net)


check_initialization("torch_unet_initialization", 3, 8, 6, 8, 4)
check_forward("torch_unet_forward_tiny", 1, 4, 6, 4, 2, 0, 2)
check_forward("torch_unet_forward_learned", 2, 8, 10, 8, 4, 3, 3)
check_forward("torch_unet_forward_same_t", 1, 8, 8, 8, 2, 0, 4, same_t=True)
check_forward("torch_unet_forward_digits", 1, 28, 28, 32, 8, 2, 4)
finish()
