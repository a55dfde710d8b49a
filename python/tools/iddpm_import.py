#!/usr/bin/env python3
"""Bring an Improved DDPM model (openai/improved-diffusion) into libdiffuse,
and back.

  iddpm_import.py MODEL.pt OUT.ckpt [improved-diffusion's model and diffusion
      flags: --image_size 32 --num_channels 128 --num_res_blocks 3
      --learn_sigma True --diffusion_steps 4000 --noise_schedule cosine ...]
  iddpm_import.py --export IN.ckpt MODEL.pt

Import reads a UNetModel state dict (torch.load; a dict of tensors, as
improved-diffusion's scripts save it), checks every name and shape against
the model the flags describe, refusing the first tensor that differs (by
name), and writes a libdiffuse checkpoint (diffuse_checkpoint_save) holding
the net (diffuse_net_create_iddpm with the same options, weights = EMA =
the state dict) and, as trainer state, the diffusion it was trained with
(its betas: --noise_schedule, --diffusion_steps; with --rescale_timesteps
the net's time_scale is 1000 / diffusion_steps).  The flags and defaults are
those of improved-diffusion's script_util.py (in_channels 3 unless
--in_channels; channel_mult from --image_size unless --channel_mult).

Export writes the state dict of a libdiffuse Improved DDPM net (its
weights, or --ema) with UNetModel's names, which UNetModel.load_state_dict
accepts; the "no label" class row that libdiffuse adds is left out.

Needs torch and numpy, and libdiffuse (python/libdiffuse; LIBDIFFUSE_PATH
to pick the library).
"""
import argparse
import ctypes
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import libdiffuse as ld  # noqa: E402

NUM_CLASSES = 1000  # improved-diffusion's class_cond models (ImageNet)


def str2bool(v):
    if isinstance(v, bool):
        return v
    if v.lower() in ("yes", "true", "t", "y", "1"):
        return True
    if v.lower() in ("no", "false", "f", "n", "0"):
        return False
    raise argparse.ArgumentTypeError("boolean value expected")


def channel_mult_for(image_size):
    table = {256: (1, 1, 2, 2, 4, 4), 64: (1, 2, 3, 4), 32: (1, 2, 2, 2)}
    if image_size not in table:
        raise ValueError(f"no default channel_mult for image size {image_size}: "
                         "give --channel_mult")
    return table[image_size]


def expected_tensors(in_ch, mc, out_ch, nrb, attn_ds, mult, use_ss, conv_resample, classes):
    """[(name, shape)] of UNetModel's state dict, in its order."""
    E = 4 * mc
    out = []

    def lin(name, i, o):
        out.extend([(name + ".weight", (o, i)), (name + ".bias", (o,))])

    def conv(name, i, o, k, dims=2):
        out.extend([(name + ".weight", (o, i) + (k,) * dims), (name + ".bias", (o,))])

    def norm(name, c):
        out.extend([(name + ".weight", (c,)), (name + ".bias", (c,))])

    def res(p, ci, co):
        norm(p + ".in_layers.0", ci)
        conv(p + ".in_layers.2", ci, co, 3)
        lin(p + ".emb_layers.1", E, 2 * co if use_ss else co)
        norm(p + ".out_layers.0", co)
        conv(p + ".out_layers.3", co, co, 3)
        if ci != co:
            conv(p + ".skip_connection", ci, co, 1)

    def attn(p, c):
        norm(p + ".norm", c)
        conv(p + ".qkv", c, 3 * c, 1, dims=1)
        conv(p + ".proj_out", c, c, 1, dims=1)

    lin("time_embed.0", mc, E)
    lin("time_embed.2", E, E)
    if classes:
        out.append(("label_emb.weight", (classes, E)))
    conv("input_blocks.0.0", in_ch, mc, 3)
    chans, ch, ds, i = [mc], mc, 1, 1
    for level, m in enumerate(mult):
        for _ in range(nrb):
            res(f"input_blocks.{i}.0", ch, m * mc)
            ch = m * mc
            if ds in attn_ds:
                attn(f"input_blocks.{i}.1", ch)
            chans.append(ch)
            i += 1
        if level != len(mult) - 1:
            if conv_resample:
                conv(f"input_blocks.{i}.0.op", ch, ch, 3)
            chans.append(ch)
            ds *= 2
            i += 1
    res("middle_block.0", ch, ch)
    attn("middle_block.1", ch)
    res("middle_block.2", ch, ch)
    i = 0
    for level, m in list(enumerate(mult))[::-1]:
        for k in range(nrb + 1):
            res(f"output_blocks.{i}.0", ch + chans.pop(), mc * m)
            ch = mc * m
            j = 1
            if ds in attn_ds:
                attn(f"output_blocks.{i}.1", ch)
                j = 2
            if level and k == nrb:
                if conv_resample:
                    conv(f"output_blocks.{i}.{j}.conv", ch, ch, 3)
                ds //= 2
            i += 1
    norm("out.0", ch)
    conv("out.2", mc, out_ch, 3)
    return out


def config_from_args(a):
    mult = (tuple(int(v) for v in a.channel_mult.split(",")) if a.channel_mult
            else channel_mult_for(a.image_size))
    attn_ds = tuple(a.image_size // int(r) for r in a.attention_resolutions.split(",") if r)
    classes = NUM_CLASSES if a.class_cond else 0
    if a.num_classes is not None:
        classes = a.num_classes if a.class_cond else 0
    out_ch = 2 * a.in_channels if a.learn_sigma else a.in_channels
    heads_up = a.num_heads if a.num_heads_upsample == -1 else a.num_heads_upsample
    options = (f"num_res_blocks={a.num_res_blocks} channel_mult={','.join(map(str, mult))} "
               f"attention_resolutions={','.join(map(str, attn_ds))} num_heads={a.num_heads} "
               f"num_heads_upsample={heads_up} "
               f"use_scale_shift_norm={int(a.use_scale_shift_norm)} dropout={a.dropout!r} "
               f"conv_resample=1 num_classes={classes}")
    if a.rescale_timesteps:
        options += f" time_scale={1000.0 / a.diffusion_steps!r}"
    tensors = expected_tensors(a.in_channels, a.num_channels, out_ch, a.num_res_blocks, attn_ds,
                               mult, a.use_scale_shift_norm, True, classes)
    return options, tensors, classes


def check_state_dict(sd, tensors):
    """The first mismatch of names or shapes, as a sentence, or None."""
    names = list(sd.keys())
    for k, (name, shape) in enumerate(tensors):
        if k >= len(names):
            return f"tensor '{name}' {tuple(shape)} is missing (the state dict ends)"
        if names[k] != name:
            if name not in sd:
                return f"tensor '{name}' {tuple(shape)} is missing (found '{names[k]}' there)"
            return f"tensor '{names[k]}' is not expected at position {k} (expected '{name}')"
        got = tuple(sd[name].shape)
        if got != tuple(shape):
            return f"tensor '{name}' has shape {got}, the flags give {tuple(shape)}"
    if len(names) > len(tensors):
        return f"tensor '{names[len(tensors)]}' is not part of the model the flags describe"
    return None


def flatten(sd, tensors, classes, E):
    import numpy as np
    parts = [sd[n].detach().cpu().double().numpy().ravel() for n, _ in tensors
             if n != "label_emb.weight"]
    if classes:
        parts.append(sd["label_emb.weight"].detach().cpu().double().numpy().ravel())
        parts.append(np.zeros(E))  # the "no label" row
    return np.concatenate(parts).astype(np.float32)


def schedule_for(a):
    if a.noise_schedule == "linear":
        return ld.Schedule.linear(a.diffusion_steps)
    if a.noise_schedule == "cosine":
        return ld.Schedule.cosine(a.diffusion_steps)
    raise ValueError(f"unknown noise schedule {a.noise_schedule}")


def do_import(a):
    import torch
    sd = torch.load(a.src, map_location="cpu")
    if isinstance(sd, dict) and "state_dict" in sd and not hasattr(sd["state_dict"], "shape"):
        sd = sd["state_dict"]
    options, tensors, classes = config_from_args(a)
    bad = check_state_dict(sd, tensors)
    if bad:
        raise SystemExit(f"iddpm_import: {a.src}: {bad}")
    variance = ("learned_range" if a.learn_sigma else
                "fixed_small" if a.sigma_small else "fixed_large")
    pred = "x0" if a.predict_xstart else "eps"
    net = ld.Net.iddpm(a.in_channels, a.image_size, a.image_size, a.num_channels, options,
                       prediction=pred, variance=variance, max_batch=1)
    flat = flatten(sd, tensors, classes, 4 * a.num_channels)
    net.set_params(flat)
    net.set_params(flat, "ema")
    with schedule_for(a) as s:
        tr = ld.Trainer(net, s, 1)
        ld.checkpoint_save(a.dst, net, tr)
        tr.close()
    net.close()
    print(f"iddpm_import: {a.src} -> {a.dst}: {len(tensors)} tensors, {flat.size} values")


def do_export(a):
    import numpy as np
    import torch
    net, _ = ld.checkpoint_load(a.src, 1)
    if net.kind != "iddpm":
        raise SystemExit(f"iddpm_import: {a.src} holds a {net.kind} net, not an Improved DDPM "
                         "U-Net")
    get = ld._f("diffuse_net_get")

    def val(key):
        v = ctypes.c_double()
        ld._check(get(net._handle(), key, ctypes.byref(v)))
        return v.value

    L = int(val(ld.NET_LEVELS))
    mult = tuple(int(val(32 + lv)) for lv in range(L))  # DIFFUSE_NET_CHANNEL_MULT(l)
    attn_ds = tuple(2 ** lv for lv in range(L) if val(40 + lv) == 1.0)  # _ATTENTION(l)
    classes = net.classes
    tensors = expected_tensors(net.channels, net.model_channels, net.output_dim // (
        net.height * net.width_pixels), net.num_res_blocks, attn_ds, mult,
        bool(net.use_scale_shift_norm), bool(net.conv_resample), classes)
    flat = np.asarray(net.get_params("ema" if a.ema else "weights"), dtype=np.float32).ravel()
    E = 4 * net.model_channels
    sd, at = {}, 0
    label = None
    for name, shape in tensors:
        if name == "label_emb.weight":
            label = shape
            continue
        n = int(np.prod(shape))
        sd[name] = torch.from_numpy(flat[at:at + n].reshape(shape).copy())
        at += n
    if label is not None:
        rows = flat[at:at + label[0] * E].reshape(label).copy()
        at += (label[0] + 1) * E
        # label_emb sits after time_embed in UNetModel's order
        items = list(sd.items())
        sd = dict(items[:4] + [("label_emb.weight", torch.from_numpy(rows))] + items[4:])
    if at != flat.size:
        raise SystemExit(f"iddpm_import: {a.src}: {flat.size} parameters, the architecture "
                         f"takes {at}")
    torch.save(sd, a.dst)
    net.close()
    print(f"iddpm_import: {a.src} -> {a.dst}: {len(sd)} tensors")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("src")
    p.add_argument("dst")
    p.add_argument("--export", action="store_true",
                   help="libdiffuse checkpoint SRC -> state dict DST")
    p.add_argument("--ema", action="store_true", help="export the EMA weights")
    p.add_argument("--image_size", type=int, default=64)
    p.add_argument("--in_channels", type=int, default=3)
    p.add_argument("--num_channels", type=int, default=128)
    p.add_argument("--num_res_blocks", type=int, default=2)
    p.add_argument("--num_heads", type=int, default=4)
    p.add_argument("--num_heads_upsample", type=int, default=-1)
    p.add_argument("--attention_resolutions", default="16,8")
    p.add_argument("--channel_mult", default="")
    p.add_argument("--dropout", type=float, default=0.0)
    p.add_argument("--learn_sigma", type=str2bool, default=False)
    p.add_argument("--sigma_small", type=str2bool, default=False)
    p.add_argument("--class_cond", type=str2bool, default=False)
    p.add_argument("--num_classes", type=int, default=None)
    p.add_argument("--diffusion_steps", type=int, default=1000)
    p.add_argument("--noise_schedule", default="linear")
    p.add_argument("--timestep_respacing", default="")
    p.add_argument("--use_kl", type=str2bool, default=False)
    p.add_argument("--predict_xstart", type=str2bool, default=False)
    p.add_argument("--rescale_timesteps", type=str2bool, default=True)
    p.add_argument("--rescale_learned_sigmas", type=str2bool, default=True)
    p.add_argument("--use_checkpoint", type=str2bool, default=False)
    p.add_argument("--use_scale_shift_norm", type=str2bool, default=True)
    a = p.parse_args(argv)
    if a.export:
        do_export(a)
    else:
        do_import(a)


if __name__ == "__main__":
    main()
