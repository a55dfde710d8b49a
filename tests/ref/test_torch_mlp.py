#!/usr/bin/env python3
"""The MLP denoiser against the same architecture in PyTorch (Debian's
python3-torch), given the same weights: forward outputs to float32
tolerance, and one training step's gradients of the simple MSE loss.

Run: LIBDIFFUSE_PATH=out/libdiffuse.so.1 /usr/bin/python3 tests/ref/test_torch_mlp.py
Prints "ok"/"FAIL"/"skip" lines and "N passed, M failed, K skipped"; skips,
saying so, when torch or numpy is absent.
"""
import ctypes
import os

from _report import finish, report, results

try:
    import numpy as np
    import torch
except ImportError as e:
    print(f"skip test_torch_mlp: {e.name} is not installed (apt-get install python3-torch python3-numpy)")
    results["skipped"] += 1
    finish()

from _torchnet import c_float_p, compare_forward, timestep_embedding, trainer_grads  # noqa: E402

torch.set_num_threads(1)
lib = ctypes.CDLL(os.environ.get("LIBDIFFUSE_PATH", "out/libdiffuse.so.1"))
lib.diffuse_net_create_mlp.argtypes = [ctypes.POINTER(ctypes.c_void_p), ctypes.c_size_t,
                                       ctypes.c_size_t, ctypes.c_size_t, ctypes.c_size_t,
                                       ctypes.c_int, ctypes.c_int, ctypes.c_size_t, ctypes.c_uint64]
lib.diffuse_net_free.argtypes = [ctypes.c_void_p]
lib.diffuse_net_param_count.argtypes = [ctypes.c_void_p]
lib.diffuse_net_param_count.restype = ctypes.c_size_t
lib.diffuse_net_get_params.argtypes = [ctypes.c_void_p, ctypes.c_int, c_float_p, ctypes.c_size_t]
lib.diffuse_net_forward.argtypes = [ctypes.c_void_p, ctypes.c_int, c_float_p,
                                    ctypes.POINTER(ctypes.c_int32), ctypes.c_size_t, c_float_p]
lib.diffuse_last_error.restype = ctypes.c_char_p


class TorchMLP(torch.nn.Module):
    """The architecture documented for diffuse_net_create_mlp()."""

    def __init__(self, dim, width, depth, emb, out_dim):
        super().__init__()
        self.emb = emb
        self.float32_embedding = False
        self.t1 = torch.nn.Linear(emb, width)
        self.t2 = torch.nn.Linear(width, width)
        self.inp = torch.nn.Linear(dim, width)
        self.blocks = torch.nn.ModuleList(
            torch.nn.ModuleList([torch.nn.Linear(width, width), torch.nn.Linear(width, width)])
            for _ in range(depth))
        self.out = torch.nn.Linear(width, out_dim)

    def embed(self, t):
        # float32 values (as libdiffuse's), in the twin's own precision
        return timestep_embedding(t, self.emb, self.float32_embedding).to(self.t1.weight.dtype)

    def forward(self, x, t):
        silu = torch.nn.functional.silu
        e = self.t2(silu(self.t1(self.embed(t))))
        h = self.inp(x) + e
        for l1, l2 in self.blocks:
            h = h + l2(silu(l1(silu(h))))
        return self.out(silu(h))

    def load_flat(self, flat):
        i = 0
        with torch.no_grad():
            layers = [self.t1, self.t2, self.inp] + [l for b in self.blocks for l in b] + [self.out]
            for lin in layers:
                for p in (lin.weight, lin.bias):
                    n = p.numel()
                    p.copy_(torch.from_numpy(flat[i:i + n].reshape(p.shape)))
                    i += n
        assert i == len(flat)


def create_net(name, dim, width, depth, emb, variance, batch):
    """The C net (seed 42) and its initial weights; (None, None) after
    reporting the failure."""
    net = ctypes.c_void_p()
    rc = lib.diffuse_net_create_mlp(ctypes.byref(net), dim, width, depth, emb, 0, variance,
                                    batch, 42)
    if rc != 0:
        report(name, False, f"create failed: {lib.diffuse_last_error().decode()}")
        return None, None
    count = lib.diffuse_net_param_count(net)
    flat = np.empty(count, dtype=np.float32)
    lib.diffuse_net_get_params(net, 0, flat.ctypes.data_as(c_float_p), count)
    return net, flat


def check_forward(name, dim, width, depth, emb, variance, batch):
    net, flat = create_net(name, dim, width, depth, emb, variance, batch)
    if net is None:
        return
    try:
        out_dim = 2 * dim if variance >= 2 else dim
        model = TorchMLP(dim, width, depth, emb, out_dim)
        model.load_flat(flat)
        rng = np.random.default_rng(7)
        x = rng.standard_normal((batch, dim)).astype(np.float32)
        t = rng.integers(0, 1000, batch).astype(np.int32)
        compare_forward(lib, name, net, model, x, t, (batch, out_dim), "up to width terms")
    finally:
        lib.diffuse_net_free(net)


def check_grad(name, dim, width, depth, emb, batch, T):
    """One training step's gradients (MSE on eps, _torchnet.trainer_grads)
    against autograd on a float64 twin, to 1e-5 of the largest gradient, and
    the loss to 1e-6.  A schedule of T steps with T well below the batch
    makes rows share timesteps (asserted), which the net's time branch runs
    once per distinct value."""
    net, flat = create_net(name, dim, width, depth, emb, 0, batch)
    if net is None:
        return
    try:
        count = flat.size
        rng = np.random.default_rng(5)
        x0 = rng.uniform(-1, 1, (batch, dim)).astype(np.float32)
        betas = list(np.linspace(1e-4, min(0.3, 20.0 / T), T))
        try:
            g_c, loss, t, xt, eps = trainer_grads(lib, net, betas, x0, None, 33)
        except RuntimeError as e:
            report(name, False, str(e))
            return
        distinct = len(np.unique(t))
        if distinct >= batch or g_c.size != count:
            report(name, False, f"{distinct} distinct timesteps in {batch} rows, "
                   f"{g_c.size} gradients for {count} parameters")
            return
        model = TorchMLP(dim, width, depth, emb, dim).double()
        model.load_flat(flat.astype(np.float64))
        out = model(torch.from_numpy(xt), torch.from_numpy(t))
        lt = ((out - torch.from_numpy(eps)) ** 2).mean()
        lt.backward()
        layers = [model.t1, model.t2, model.inp] + [l for b in model.blocks for l in b] + [model.out]
        g_t = torch.cat([p.grad.reshape(-1) for lin in layers
                         for p in (lin.weight, lin.bias)]).numpy()
        err = np.max(np.abs(g_c - g_t)) / np.max(np.abs(g_t))
        lerr = abs(loss - lt.item()) / lt.item()
        report(name, bool(err < 1e-5 and lerr < 1e-6),
               f"max |difference| / max |gradient| = {err:.3g}, loss {lerr:.3g}")
        print(f"# {name}: {distinct} distinct timesteps in {batch} rows, max |difference| / "
              f"max |gradient| = {err:.3g}, loss relative difference {lerr:.3g}")
    finally:
        lib.diffuse_net_free(net)


check_forward("torch_mlp_forward_small", 2, 32, 2, 16, 0, 7)
check_forward("torch_mlp_forward_learned", 3, 64, 3, 33, 3, 64)
check_forward("torch_mlp_forward_wide", 16, 256, 4, 64, 0, 256)
check_grad("torch_mlp_gradients_shared_t", 2, 64, 2, 16, 96, 20)
check_grad("torch_mlp_gradients_wide", 3, 256, 4, 64, 300, 1000)
finish()
