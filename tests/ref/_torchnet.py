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


def declare_trainer(lib):
    """argtypes of the schedule, trainer and noise calls trainer_grads makes."""
    c_i32_p = ctypes.POINTER(ctypes.c_int32)
    lib.diffuse_last_error.restype = ctypes.c_char_p
    lib.diffuse_schedule_create_betas.argtypes = [ctypes.POINTER(ctypes.c_void_p),
                                                  ctypes.POINTER(ctypes.c_double), ctypes.c_size_t]
    lib.diffuse_schedule_free.argtypes = [ctypes.c_void_p]
    lib.diffuse_trainer_create.argtypes = [ctypes.POINTER(ctypes.c_void_p), ctypes.c_void_p,
                                           ctypes.c_void_p, ctypes.c_size_t]
    lib.diffuse_trainer_free.argtypes = [ctypes.c_void_p]
    lib.diffuse_trainer_set.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_double]
    lib.diffuse_trainer_compute_grads.argtypes = [ctypes.c_void_p, c_float_p, c_i32_p,
                                                  ctypes.c_size_t, ctypes.c_uint64,
                                                  ctypes.c_uint64, ctypes.c_size_t,
                                                  ctypes.POINTER(ctypes.c_double)]
    lib.diffuse_trainer_grads.argtypes = [ctypes.c_void_p, ctypes.POINTER(c_float_p),
                                          ctypes.POINTER(ctypes.c_size_t)]
    lib.diffuse_trainer_records.argtypes = [ctypes.c_void_p, ctypes.POINTER(ctypes.c_double),
                                            ctypes.c_size_t]
    lib.diffuse_normal_fill.argtypes = [ctypes.c_uint64, ctypes.c_uint64, ctypes.c_uint32,
                                        c_float_p, ctypes.c_size_t]


def trainer_grads(lib, net, betas, x0, labels, seed):
    """One training step's gradients (MSE on eps) of the whole batch x0
    [batch, dim] on a schedule of the given betas, read from the trainer's
    gradient buffer after diffuse_trainer_compute_grads (what
    diffuse_trainer_step applies).  Returns (gradients as float64, the loss,
    each row's timestep index from diffuse_trainer_records, x_t [batch, dim]
    as float64 of the float32 the net saw, the noise as float64).  The noise
    is the trainer's documented stream (diffuse_normal_fill with sample
    step 2^32 + b = b at step 0, stream 0xFFFFFFFE) and x_t = sqrt(abar_t) x0
    + sqrt(1 - abar_t) z in double, rounded once, as the trainer forms it.
    Raises RuntimeError with the library's message on any failure."""
    def ok(rc, what):
        if rc != 0:
            raise RuntimeError(what + ": " + lib.diffuse_last_error().decode())

    declare_trainer(lib)
    sched, tr = ctypes.c_void_p(), ctypes.c_void_p()
    b_arr = (ctypes.c_double * len(betas))(*betas)
    batch, dim = x0.shape
    ok(lib.diffuse_schedule_create_betas(ctypes.byref(sched), b_arr, len(betas)),
       "diffuse_schedule_create_betas")
    try:
        ok(lib.diffuse_trainer_create(ctypes.byref(tr), net, sched, batch),
           "diffuse_trainer_create")
        ok(lib.diffuse_trainer_set(tr, 9, 0), "DIFFUSE_TRAINER_LOSS")  # MSE
        loss = ctypes.c_double()
        lab = None if labels is None else labels.ctypes.data_as(ctypes.POINTER(ctypes.c_int32))
        ok(lib.diffuse_trainer_compute_grads(tr, x0.ctypes.data_as(c_float_p), lab, batch,
                                             seed, 0, batch, ctypes.byref(loss)),
           "diffuse_trainer_compute_grads")
        gp, gn = c_float_p(), ctypes.c_size_t()
        ok(lib.diffuse_trainer_grads(tr, ctypes.byref(gp), ctypes.byref(gn)),
           "diffuse_trainer_grads")
        g = np.ctypeslib.as_array(gp, shape=(gn.value,)).astype(np.float64)
        rec = np.empty((batch, 4), dtype=np.float64)
        ok(lib.diffuse_trainer_records(tr, rec.ctypes.data_as(ctypes.POINTER(ctypes.c_double)),
                                       batch), "diffuse_trainer_records")
        t = rec[:, 0].astype(np.int64)
        z = np.empty((batch, dim), dtype=np.float32)
        for b in range(batch):
            lib.diffuse_normal_fill(seed, b, 0xFFFFFFFE, z[b].ctypes.data_as(c_float_p), dim)
        abar = np.cumprod(1.0 - np.asarray(betas, dtype=np.float64))
        sa, s1m = np.sqrt(abar[t])[:, None], np.sqrt(1.0 - abar[t])[:, None]
        xt = (sa * x0.astype(np.float64) + s1m * z.astype(np.float64)).astype(np.float32)
        return g, loss.value, t, xt.astype(np.float64), z.astype(np.float64)
    finally:
        if tr:
            lib.diffuse_trainer_free(tr)
        lib.diffuse_schedule_free(sched)
