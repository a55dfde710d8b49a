#!/usr/bin/env python3
"""python/tools/iddpm_import.py: an Improved DDPM state dict (random values
with UNetModel's names and shapes for the flags given) imported into a
libdiffuse checkpoint and exported back gives the same tensors bit for bit,
names and order included, for a class-conditional learned-sigma model
(the flags of improved-diffusion's CIFAR-10 run at reduced width) and an
MNIST-like one; the imported checkpoint has the flags' options, time_scale
1000 / T and the schedule's betas; a state dict with one wrong shape, a
missing tensor or an extra one is refused naming that tensor.

Run: LIBDIFFUSE_PATH=out/libdiffuse.so.1 /usr/bin/python3 tests/ref/test_iddpm_import.py
Skips, saying so, when torch or numpy is absent.
"""
import ctypes
import os
import sys
import tempfile

from _report import finish, report, results

try:
    import numpy as np
    import torch
except ImportError as e:
    print(f"skip test_iddpm_import: {e.name} is not installed (apt-get install python3-torch python3-numpy)")
    results["skipped"] += 1
    finish()

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "..", "python", "tools"))
sys.path.insert(0, os.path.join(HERE, "..", "..", "python"))
import iddpm_import  # noqa: E402
import libdiffuse as ld  # noqa: E402

torch.set_num_threads(1)


def random_state_dict(flags, seed):
    parser_args = iddpm_import_args(["x", "y"] + flags)
    _, tensors, _ = iddpm_import.config_from_args(parser_args)
    g = torch.Generator().manual_seed(seed)
    return {name: torch.randn(shape, generator=g) for name, shape in tensors}


def iddpm_import_args(argv):
    """The tool's parsed flags (its argparse, without running it)."""
    captured = {}
    orig_import, orig_export = iddpm_import.do_import, iddpm_import.do_export
    iddpm_import.do_import = iddpm_import.do_export = lambda a: captured.setdefault("a", a)
    try:
        iddpm_import.main(argv)
    finally:
        iddpm_import.do_import, iddpm_import.do_export = orig_import, orig_export
    return captured["a"]


def roundtrip(name, flags, T, time_scale):
    with tempfile.TemporaryDirectory() as tmp:
        src, ck, back = (os.path.join(tmp, f) for f in ("m.pt", "m.ckpt", "back.pt"))
        sd = random_state_dict(flags, 5)
        torch.save(sd, src)
        iddpm_import.main([src, ck] + flags)
        iddpm_import.main(["--export", ck, back])
        got = torch.load(back)
        same = list(got.keys()) == list(sd.keys()) and all(
            got[k].shape == sd[k].shape and torch.equal(got[k], sd[k]) for k in sd)
        net, _ = ld.checkpoint_load(ck, 1)
        ok_opts = net.kind == "iddpm"
        v = ctypes.c_double()
        ld._check(ld._f("diffuse_net_get")(net._handle(), ld.NET_TIME_SCALE, ctypes.byref(v)))
        ts = v.value
        ok_opts = ok_opts and ts == time_scale
        ema = np.asarray(net.get_params("ema")).ravel()
        w = np.asarray(net.get_params()).ravel()
        ok_opts = ok_opts and np.array_equal(ema, w)
        net.close()
        # the schedule travels as the trainer state: loading with the
        # matching schedule succeeds (betas compared bit for bit)
        with ld.Schedule.cosine(T) as s:
            net2, tr = ld.checkpoint_load(ck, 1, s)
            ok_sched = tr is not None
            tr.close()
            net2.close()
        report(name, same and ok_opts and ok_sched,
               f"tensors equal: {same}, options: {ok_opts}, schedule: {ok_sched}")


def refusal(name, flags, mutate, want):
    with tempfile.TemporaryDirectory() as tmp:
        src, ck = os.path.join(tmp, "m.pt"), os.path.join(tmp, "m.ckpt")
        sd = random_state_dict(flags, 6)
        mutate(sd)
        torch.save(sd, src)
        try:
            iddpm_import.main([src, ck] + flags)
            report(name, False, "accepted")
        except SystemExit as e:
            msg = str(e)
            report(name, want in msg and not os.path.exists(ck), msg)


CIFAR = ["--image_size", "32", "--num_channels", "32", "--num_res_blocks", "3",
         "--learn_sigma", "True", "--class_cond", "True", "--num_classes", "10",
         "--dropout", "0.3", "--diffusion_steps", "4000", "--noise_schedule", "cosine"]
DIGITS = ["--image_size", "28", "--in_channels", "1", "--num_channels", "32",
          "--channel_mult", "1,2,2", "--attention_resolutions", "7", "--diffusion_steps",
          "1000", "--noise_schedule", "cosine", "--use_scale_shift_norm", "False"]

roundtrip("iddpm_import_roundtrip_cifar_like", CIFAR, 4000, 0.25)
roundtrip("iddpm_import_roundtrip_digits", DIGITS, 1000, 1.0)


def wrong_shape(sd):
    sd["input_blocks.1.0.in_layers.2.weight"] = torch.zeros(32, 32, 3, 1)


def missing(sd):
    del sd["middle_block.1.qkv.bias"]


def extra(sd):
    sd["out.3.weight"] = torch.zeros(1)


refusal("iddpm_import_refuses_wrong_shape", CIFAR, wrong_shape,
        "input_blocks.1.0.in_layers.2.weight")
refusal("iddpm_import_refuses_missing", CIFAR, missing, "middle_block.1.qkv.bias")
refusal("iddpm_import_refuses_extra", CIFAR, extra, "out.3.weight")
# flags that do not match the file: 64 channels for a 32-channel model
with tempfile.TemporaryDirectory() as tmp:
    src, ck = os.path.join(tmp, "m.pt"), os.path.join(tmp, "m.ckpt")
    torch.save(random_state_dict(CIFAR, 7), src)
    flags = list(CIFAR)
    flags[flags.index("--num_channels") + 1] = "64"
    try:
        iddpm_import.main([src, ck] + flags)
        report("iddpm_import_refuses_other_flags", False, "accepted")
    except SystemExit as e:
        report("iddpm_import_refuses_other_flags", "time_embed.0.weight" in str(e), str(e))
finish()
