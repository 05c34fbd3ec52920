"""The file formats behind pcae's data sources: MNIST's idx files, CIFAR-10's pickled batches, the
torchvision layout (found under a root, or downloaded there once) and pcae's own HDF5 images file,
which is both read and written here.

Every reader returns a `Split`: one split of one source as native-format chunks (uint8
(n, C, H, W) images, int64 (n,) labels) plus what a dataset's `info` needs. pcae.data's registry
opens each source through these readers, and `load_dataset`, `describe_source` and
`import_dataset` all consume a Split, so an import streams chunk by chunk through the same code
that loads.

HDF5 format (format attr "pcae-images/1"): `images` uint8 (N, C, H, W), chunked and
gzip-compressed; optional `labels` int64 (N,) (-1 = none); optional `split` uint8 (N,) with
0 = train, 1 = test, 2 = held out (in neither: a face cache's people never trained on); optional `files` (N,) strings, each row's file (imported from a folder);
attrs `source`, `origin`, `classes` (JSON list or absent). A file without a `split` dataset puts
every 10th row (row % 10 == 9) in test.

References: [1] LeCun et al. 1998, MNIST (the idx format). [2] Krizhevsky 2009, "Learning Multiple
Layers of Features from Tiny Images" (CIFAR-10's python batches).

Known limits: idx files and CIFAR batches are read whole. CIFAR pickles are read with an
unpickler that only rebuilds numpy arrays, so a tampered file cannot run code.
"""
from __future__ import annotations

import gzip
import json
import os
import pickle
import socket
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from pcae.errors import PcaeError, deferred_interrupt, first_line
from pcae.files import atomic_path, ensure_space, refuse_special
from pcae.options import SPLITS

TEST_EVERY = 10                       # ~1 in 10 items of a folder / split-less HDF5 go to test
HELD_OUT = 2                          # `split` code of rows in neither split (people kept for unseen-face measures)
H5_FORMAT = "pcae-images/1"
IDX_FILES = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
             "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}


# ----------------------------------------------------------------------------- a split

@dataclass
class Split:
    """One split of a source as the readers deliver it: native-format chunks plus its info."""
    origin: str
    shape: tuple[int, int, int]                                  # native (C, H, W) of the chunks
    classes: list[str] | None
    chunks: Callable[[int], Iterator[tuple[np.ndarray, np.ndarray]]]   # (n,C,H,W) u8, (n,) i64
    count: int                                                   # exact, or an upper bound
    exact: bool = True                                           # False: decoding may skip some
    skipped: list[dict] = field(default_factory=list)            # filled while chunks run
    reader: Callable | None = None  # random access (lazy HDF5): i -> ((C, H, W) uint8 array, label)
    nbytes: int = 0
    names: list[str] | None = None  # each decoded item's file (relative path), filled while chunks run


def name_bytes(name: str) -> bytes:
    """A file name as HDF5 stores it: its own bytes, also those that are not UTF-8 (Python names such
    a file with surrogates: a Latin-1 name, or any non-ASCII one under LC_ALL=C with PYTHONUTF8=0)."""
    return os.fsencode(name)


def name_text(value) -> str:
    """A stored file name back as Python names that file here (the inverse of `name_bytes`)."""
    return os.fsdecode(value) if isinstance(value, bytes) else str(value)


def array_split(origin, images: np.ndarray, labels: np.ndarray, classes) -> Split:
    """A Split of arrays held in memory: images (N, C, H, W) uint8, labels (N,) int64."""
    def chunks(size):
        for s in range(0, len(images), size):
            yield images[s:s + size], labels[s:s + size]
    return Split(origin, tuple(images.shape[1:]), classes, chunks, len(images))


# ----------------------------------------------------------------------------- idx (MNIST)

def read_idx(path: Path) -> np.ndarray:
    """Read one idx file (MNIST's format: magic, big-endian dims, uint8 data), gzipped or not."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            raw = f.read()
        if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
            raise ValueError("not an idx file of uint8")
        ndim = raw[3]
        dims = tuple(int(d) for d in np.frombuffer(raw[4:4 + 4 * ndim], ">i4"))
        data = np.frombuffer(raw[4 + 4 * ndim:], np.uint8)
        return data.reshape(dims)
    except (OSError, ValueError, EOFError, zlib.error) as e:
        raise PcaeError(f"{path}: cannot read idx file ({first_line(e, with_type=True)})") from None


def find_idx(folder: Path, stem: str) -> Path | None:
    """The idx file `stem` in `folder`, gzipped or not; None when neither is there."""
    for name in (stem, stem + ".gz"):
        if (folder / name).is_file():
            return folder / name
    return None


def idx_split(folder: Path, split: str, classes, origin: str) -> Split:
    """Read one split of the idx files in `folder` (MNIST's and Fashion-MNIST's file names)."""
    img_path, lab_path = (find_idx(folder, s) for s in IDX_FILES[split])
    images, labels = read_idx(img_path), read_idx(lab_path)
    if images.ndim != 3 or labels.shape != images.shape[:1]:
        raise PcaeError(f"{img_path}: {images.shape} images do not match {labels.shape} labels")
    return array_split(origin, images[:, None], labels.astype(np.int64), classes)


def has_idx(folder: Path) -> bool:
    """Whether `folder` holds the idx files of both splits."""
    return all(find_idx(folder, s) for pair in IDX_FILES.values() for s in pair)


# ----------------------------------------------------------------------------- torchvision layout

def torchvision_root(name: str, data_root: str | None, subdir: str, check: Callable[[Path], bool],
                     how: str) -> Path:
    """The folder holding `name`'s files under a torchvision root, downloading once if allowed."""
    root = data_root or os.environ.get("PCAE_DATA_ROOT")
    if root is not None and check(Path(root) / subdir):
        return Path(root) / subdir
    hint = (f"{name}: data not found; pass --data-root DIR with the torchvision layout "
            f"({how}) or, with network access, a --data-root to download into")
    if root is None:
        raise PcaeError(hint)
    import torchvision.datasets as tvd
    cls = {"mnist": tvd.MNIST, "fashion-mnist": tvd.FashionMNIST, "cifar10": tvd.CIFAR10}[name]
    old = socket.getdefaulttimeout()
    socket.setdefaulttimeout(20)
    try:
        for train in (True, False):
            cls(root, train=train, download=True)
    except Exception as e:  # no network, disk full, bad mirror: all end the same way for the user
        first = (str(e).splitlines() or [type(e).__name__])[0][:120]
        raise PcaeError(f"{hint}; download into {root} failed: {first}") from None
    finally:
        socket.setdefaulttimeout(old)
    if not check(Path(root) / subdir):
        raise PcaeError(hint)
    return Path(root) / subdir


# ----------------------------------------------------------------------------- CIFAR-10 batches

class _ArrayUnpickler(pickle.Unpickler):
    """Unpickles CIFAR's batches (dicts, lists, numpy arrays) and refuses every other global."""
    _ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
                ("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode"),
                ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer")}

    def find_class(self, module, name):
        if (module, name) in self._ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}")


def _cifar_batches(split: str) -> list[str]:
    return [f"data_batch_{i}" for i in range(1, 6)] if split == "train" else ["test_batch"]


def has_cifar(folder: Path) -> bool:
    """Whether `folder` holds the CIFAR-10 batches of both splits."""
    return all((folder / b).is_file() for s in SPLITS for b in _cifar_batches(s))


def cifar_split(folder: Path, split: str, classes) -> Split:
    """Read one split of CIFAR-10's python batches in `folder`."""
    images, labels = [], []
    for name in _cifar_batches(split):
        try:
            with open(folder / name, "rb") as f:
                batch = _ArrayUnpickler(f, encoding="latin1").load()
            images.append(np.asarray(batch["data"], np.uint8).reshape(-1, 3, 32, 32))
            labels.append(np.asarray(batch["labels"], np.int64))
        except Exception as e:
            raise PcaeError(f"{folder / name}: not a CIFAR-10 batch ({e})") from None
    return array_split(str(folder), np.concatenate(images), np.concatenate(labels), classes)


# ----------------------------------------------------------------------------- pcae's HDF5 file

def _h5_classes(f) -> list[str] | None:
    raw = f.attrs.get("classes")
    if raw is None:
        return None
    if isinstance(raw, bytes):
        raw = raw.decode()
    if isinstance(raw, str):
        return list(json.loads(raw)) or None
    return [x.decode() if isinstance(x, bytes) else str(x) for x in raw] or None


def h5_split(path: Path, split: str) -> Split:
    """Open one split of a pcae HDF5 file: its rows in chunks, or one at a time through
    `Split.reader` (which load_dataset uses for files too large to hold in memory)."""
    import h5py

    refuse_special(path, "an HDF5 file")
    if not path.is_file():
        raise PcaeError(f"{path}: file not found")
    if not h5py.is_hdf5(path):
        raise PcaeError(f"{path}: not an HDF5 file")
    try:
        with h5py.File(path, "r") as f:
            if "images" not in f or not isinstance(f["images"], h5py.Dataset):
                raise PcaeError(f"{path}: no 'images' dataset "
                                f"(pcae expects images uint8 (N, C, H, W))")
            ds = f["images"]
            if ds.dtype != np.uint8 or ds.ndim != 4 or ds.shape[1] not in (1, 3):
                raise PcaeError(f"{path}: 'images' is {ds.dtype} {ds.shape}, "
                                f"expected uint8 (N, 1|3, H, W)")
            n = ds.shape[0]
            shape = tuple(ds.shape[1:])
            if "split" in f:
                which = f["split"][:]
                if which.shape != (n,):
                    raise PcaeError(f"{path}: 'split' has shape {which.shape}, expected ({n},)")
                bad = np.setdiff1d(np.unique(which), [0, 1, HELD_OUT])
                if bad.size:  # a row in neither split would silently vanish
                    raise PcaeError(f"{path}: 'split' holds {bad[:3].tolist()}, expected only "
                                    f"0 (train), 1 (test) and {HELD_OUT} (held out)")
                rows = np.flatnonzero(which == SPLITS.index(split))
            else:
                test = np.arange(n) % TEST_EVERY == TEST_EVERY - 1
                rows = np.flatnonzero(test if split == "test" else ~test)
            has_labels = "labels" in f
            if has_labels and f["labels"].shape != (n,):
                raise PcaeError(f"{path}: 'labels' has shape {f['labels'].shape}, expected ({n},)")
            classes = _h5_classes(f)
            names = None
            if "files" in f:  # written by import_dataset from a folder: each row's file
                if f["files"].shape != (n,):
                    raise PcaeError(f"{path}: 'files' has shape {f['files'].shape}, expected ({n},)")
                names = [name_text(v) for v in f["files"][rows]]
            if has_labels and f["labels"].shape[0]:
                labels = f["labels"][:]
                top = int(labels.max())
                if int(labels.min()) < -1 or (classes and top >= len(classes)):
                    raise PcaeError(f"{path}: 'labels' range [{int(labels.min())}, {top}] does not fit "
                                    f"its {len(classes) if classes else 0} classes (-1 = no label)")
            origin = str(path)
            if "origin" in f.attrs:
                origin += f" (imported from {f.attrs['origin']})"
    except PcaeError:
        raise
    except Exception as e:
        raise PcaeError(f"{path}: cannot read HDF5 file ({first_line(e, with_type=True)})") from None

    def read(f, sel):
        imgs = f["images"][sel]
        labs = f["labels"][sel].astype(np.int64) if has_labels else np.full(len(imgs), -1, np.int64)
        return imgs, labs

    def chunks(size):
        with h5py.File(path, "r") as f:
            for s in range(0, len(rows), size):
                r = rows[s:s + size]
                span = int(r[-1] - r[0]) + 1
                try:
                    if span <= 2 * len(r):                 # one sliced read beats fancy indexing
                        imgs, labs = read(f, slice(int(r[0]), int(r[0]) + span))
                        imgs, labs = imgs[r - r[0]], labs[r - r[0]]
                    else:
                        imgs, labs = read(f, r)
                except (OSError, ValueError) as e:        # a damaged chunk deep inside the file
                    raise PcaeError(f"{path}: cannot read rows {r[0]}..{r[-1]} "
                                    f"({first_line(e, with_type=True)})") from None
                yield imgs, labs

    handle = {}                                            # one open file per process (workers fork)

    def reader(i):
        pid = os.getpid()
        if handle.get("pid") != pid:
            handle.update(pid=pid, f=h5py.File(path, "r"))
        f, row = handle["f"], int(rows[i])
        return f["images"][row], int(f["labels"][row]) if has_labels else -1

    return Split(origin, shape, classes, chunks, len(rows), reader=reader,
                 nbytes=len(rows) * int(np.prod(shape)), names=names)


def write_h5(out_path: Path, source: str, splits: dict[str, Split], shape: tuple[int, int, int],
             convert: Callable[[np.ndarray], np.ndarray], chunk_size: int,
             progress: Callable[[int], None] | None) -> dict:
    """Write every split to a pcae HDF5 file at out_path, chunk by chunk, atomically.

    Args:
        out_path, source, chunk_size, progress: as for `pcae.data.import_dataset`.
        splits: the source's splits by name, in SPLITS order.
        shape: (C, H, W) of every converted image.
        convert: native chunk (n, C', H', W') uint8 -> converted (n, C, H, W) uint8.
    Returns:
        A summary dict: path, source, origin, counts per split, shape, classes, skipped.
    """
    import h5py

    summary = {"path": str(out_path), "source": source, "origin": splits["train"].origin,
               "counts": {}, "shape": list(shape), "classes": splits["train"].classes, "skipped": []}
    rows_per_chunk = max(1, min(256, (1 << 20) // int(np.prod(shape))))   # ~1 MB HDF5 chunks
    try:                                                   # disk full, no permission, ...
        with atomic_path(out_path, suffix=".h5") as tmp, deferred_interrupt() as interrupt:
            with h5py.File(tmp, "w") as f:
                images = f.create_dataset("images", (0, *shape), np.uint8, maxshape=(None, *shape),
                                          chunks=(rows_per_chunk, *shape), compression="gzip",
                                          compression_opts=4)
                labels = f.create_dataset("labels", (0,), np.int64, maxshape=(None,), chunks=(4096,),
                                          compression="gzip")
                which = f.create_dataset("split", (0,), np.uint8, maxshape=(None,), chunks=(4096,),
                                         compression="gzip")
                files = []  # each row's file, when the source names them (folders)
                n = 0
                for code, (name, sp) in enumerate(splits.items()):
                    start = n
                    for imgs, labs in sp.chunks(chunk_size):
                        interrupt.check()
                        imgs = convert(imgs)
                        k = len(imgs)
                        ensure_space(tmp, imgs.size + 9 * k)
                        for ds in (images, labels, which):
                            ds.resize(n + k, axis=0)
                        images[n:n + k] = imgs
                        labels[n:n + k] = labs
                        which[n:n + k] = code
                        n += k
                        if progress is not None:
                            progress(n)
                    summary["counts"][name] = n - start
                    summary["skipped"].extend(sp.skipped)
                    if files is not None and sp.names is not None and len(sp.names) == n - start:
                        files.extend(sp.names)
                    else:
                        files = None
                interrupt.check()  # the last moment before the file replaces the old one
                if files:
                    names = np.array([name_bytes(name) for name in files], dtype=object)  # any file name
                    f.create_dataset("files", data=names, dtype=h5py.string_dtype())
                f.attrs["format"] = H5_FORMAT
                f.attrs["source"] = source
                f.attrs["origin"] = summary["origin"]
                if summary["classes"]:
                    f.attrs["classes"] = json.dumps(summary["classes"])
                f.attrs["skipped"] = json.dumps(summary["skipped"])
    except OSError as e:
        raise PcaeError(f"{out_path}: cannot write ({first_line(e, with_type=True)})") from None
    return summary

