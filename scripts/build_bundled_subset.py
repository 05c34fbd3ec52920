"""Rebuild pcae/data/fashion-mnist-subset.npz, the real Fashion-MNIST subset bundled with pcae.

A maintainer script, not part of the library: pcae only reads the file it writes. It reads the
full idx files (by default Debian's dataset-fashion-mnist, /usr/share/datasets/fashion-mnist)
and keeps the first 1000 train and the first 200 test images of each class, in their original
order and with their original row numbers, so a test can check the subset against the full set:
`{split}_images` uint8 (N, 28, 28), `{split}_labels` uint8 (N,), `{split}_index` int32 (N,).

    .venv/bin/python scripts/build_bundled_subset.py [--src DIR] [--out FILE] [--per-class 1000 200]

Reference: [1] Xiao, Rasul, Vollgraf 2017, "Fashion-MNIST: a Novel Image Dataset for Benchmarking
Machine Learning Algorithms", arXiv 1708.07747 (MIT licence; the notice is
pcae/data/LICENSE.fashion-mnist).
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from pcae.data import BUNDLED_FILE, DEBIAN_FASHION_MNIST
from pcae.formats import IDX_FILES, find_idx, has_idx, read_idx
from pcae.options import SPLITS


def build_bundled_subset(src: Path = DEBIAN_FASHION_MNIST, out: Path = BUNDLED_FILE,
                         per_class: tuple[int, int] = (1000, 200)) -> None:
    """Write the first `per_class` (train, test) images of each class of the idx files in `src`."""
    arrays = {}
    for split, k in zip(SPLITS, per_class):
        images, labels = (read_idx(find_idx(src, s)) for s in IDX_FILES[split])
        rows = np.sort(np.concatenate([np.flatnonzero(labels == c)[:k] for c in range(10)]))
        arrays.update({f"{split}_images": images[rows], f"{split}_labels": labels[rows],
                       f"{split}_index": rows.astype(np.int32)})
    np.savez_compressed(out, **arrays)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--src", type=Path, default=DEBIAN_FASHION_MNIST,
                        help="folder of the full idx files, gzipped or not (default: %(default)s)")
    parser.add_argument("--out", type=Path, default=BUNDLED_FILE, help="default: %(default)s")
    parser.add_argument("--per-class", type=int, nargs=2, default=(1000, 200), metavar=("TRAIN", "TEST"),
                        help="images kept per class in each split (default: 1000 200)")
    args = parser.parse_args()
    if not has_idx(args.src):
        parser.error(f"{args.src}: no Fashion-MNIST idx files (apt install dataset-fashion-mnist)")
    build_bundled_subset(args.src, args.out, tuple(args.per_class))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
