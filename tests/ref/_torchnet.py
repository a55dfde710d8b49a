"""Pieces shared by the PyTorch twins of the reference nets
(test_torch_mlp.py, test_torch_unet.py, test_torch_iddpm.py); import it only
after torch and numpy imported.
"""
import ctypes
import math

import numpy as np
import torch

from _report import report

c_float_p = ctypes.POINTER(ctypes.c_float)


def timestep_embedding(t, dim, float32=False):
    """Improved DDPM's timestep_embedding of size dim, [cos, sin] with a zero
    column if dim is odd, evaluated in float64 and rounded once to float32,
    as libdiffuse does.  float32=True evaluates it in float32 as torch code
    usually does: for t ~ 1000, t * freq then carries ~6e-5 rad of rounding,
    which would dominate the comparisons (the tests report it apart)."""
    half = dim // 2
    dtype = torch.float32 if float32 else torch.float64
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, dtype=dtype) / half)
    args = t[:, None].to(dtype) * freqs[None]
    e = torch.cat([torch.cos(args), torch.sin(args)], dim=-1).float()
    if dim % 2:
        e = torch.cat([e, torch.zeros_like(e[:, :1])], dim=-1)
    return e


def compare_forward(lib, name, net, model, x, t, out_shape, what):
    """Our forward of net on (x, int32 t) against model(x, t), whose
    float32_embedding attribute selects timestep_embedding's precision:
    passes within 1e-5 of the output scale (float32 rounding at every layer:
    what sums up to is what), and prints the error with torch's float32
    embedding beside it.  lib.diffuse_net_forward's argtypes must be set."""
    ours = np.empty(out_shape, dtype=np.float32)
    rc = lib.diffuse_net_forward(net, 0, x.ctypes.data_as(c_float_p),
                                 t.ctypes.data_as(ctypes.POINTER(ctypes.c_int32)), x.shape[0],
                                 ours.ctypes.data_as(c_float_p))
    if rc != 0:
        report(name, False, f"forward failed: {lib.diffuse_last_error().decode()}")
        return
    errs = []
    for f32 in (False, True):
        model.float32_embedding = f32
        with torch.no_grad():
            ref = model(torch.from_numpy(x), torch.from_numpy(t.astype(np.int64))).numpy()
        if not f32:
            scale = np.max(np.abs(ref))
        errs.append(np.max(np.abs(ours - ref)) / scale)
    model.float32_embedding = False
    report(name, errs[0] < 1e-5 and np.all(np.isfinite(ours)),
           f"max |difference| / max |output| = {errs[0]:.3g} (float32 sums of {what})")
    print(f"# {name}: max |difference| / max |output| = {errs[0]:.3g} "
          f"(torch with a float32 embedding: {errs[1]:.3g})")
