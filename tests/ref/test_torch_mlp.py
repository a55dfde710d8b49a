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

from _torchnet import c_float_p, compare_forward, timestep_embedding  # noqa: E402

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
        return timestep_embedding(t, self.emb, self.float32_embedding)

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


def check_forward(name, dim, width, depth, emb, variance, batch):
    net = ctypes.c_void_p()
    rc = lib.diffuse_net_create_mlp(ctypes.byref(net), dim, width, depth, emb, 0, variance,
                                    batch, 42)
    if rc != 0:
        report(name, False, f"create failed: {lib.diffuse_last_error().decode()}")
        return
    try:
        count = lib.diffuse_net_param_count(net)
        flat = np.empty(count, dtype=np.float32)
        lib.diffuse_net_get_params(net, 0, flat.ctypes.data_as(c_float_p), count)
        out_dim = 2 * dim if variance >= 2 else dim
        model = TorchMLP(dim, width, depth, emb, out_dim)
        model.load_flat(flat)
        rng = np.random.default_rng(7)
        x = rng.standard_normal((batch, dim)).astype(np.float32)
        t = rng.integers(0, 1000, batch).astype(np.int32)
        compare_forward(lib, name, net, model, x, t, (batch, out_dim), "up to width terms")
    finally:
        lib.diffuse_net_free(net)


check_forward("torch_mlp_forward_small", 2, 32, 2, 16, 0, 7)
check_forward("torch_mlp_forward_learned", 3, 64, 3, 33, 3, 64)
check_forward("torch_mlp_forward_wide", 16, 256, 4, 64, 0, 256)
finish()
