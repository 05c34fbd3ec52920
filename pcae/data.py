"""Image datasets: one registry of sources, fixed train/test splits, uint8 images (C, H, W).

`load_dataset(source, split)` returns an `ImageDataset` whose items are `(image, label)`: a uint8
tensor (C, H, W) of levels in [0, 256) and an int class index (-1 for unlabelled data). Every
source can be converted on load to `channels` (1 or 3) and a square `image_size` (resize the
shorter side, bilinear with antialiasing, then centre crop). `import_dataset` writes any source
to pcae's HDF5 format. The file formats themselves (idx, CIFAR batches, the torchvision layout,
pcae's HDF5 file) are read and written in pcae.formats; this module decides which to open.

Sources (`SOURCES`, the one registry; `pcae data info SOURCE` describes any of them):
  fashion-mnist  the default. In order: a torchvision root given as data_root
                 (DATA_ROOT/FashionMNIST/raw/*-ubyte[.gz]); Debian's dataset-fashion-mnist
                 (/usr/share/datasets/fashion-mnist, the full 60000/10000); else the real subset
                 bundled in pcae/data/ (first 1000 train + first 200 test images of each class,
                 MIT licence notice beside it; scripts/build_bundled_subset.py rebuilds it).
                 PCAE_DATA_BUNDLED=1 (or bundled=True) forces the bundled subset, so results do
                 not depend on what the machine has installed.
  mnist          torchvision layout under data_root: DATA_ROOT/MNIST/raw/*-ubyte[.gz].
  cifar10        torchvision layout under data_root: DATA_ROOT/cifar-10-batches-py/.
                 For both, data_root defaults to $PCAE_DATA_ROOT; when the files are missing and a
                 root was given, torchvision's download is tried once; otherwise one PcaeError.
  folder:PATH    image files; class sub-folders give labels (sorted names), a flat folder gives
                 none. Default conversion: 3 channels, and the images' own size when they all
                 share one, else 32. Unreadable images are skipped and listed in info["skipped"].
  h5:PATH        pcae's HDF5 format (pcae.formats), e.g. written by `import_dataset`.
  faces          the real face photos bundled in pcae/data/faces/ (ORL and Yale, 480 photos of
                 55 people, one folder each; credits in its SOURCES.md); the label is the
                 person (the photo's folder) and the split is by photo within each person
                 (`person_split`), so every person has photos in both splits.

Splits are fixed. The datasets with official splits keep them. A folder puts a file in the
test split when sha1(its path relative to the folder, '/'-separated) read as an integer is
divisible by 10 (about 10%), so the split never depends on the listing order or on other
files. An HDF5 file without a `split` dataset puts every 10th row (row % 10 == 9) in test.
Folder and h5 datasets with file names expose them as `ImageDataset.files`.

References: [1] Xiao, Rasul, Vollgraf 2017, "Fashion-MNIST: a Novel Image Dataset for
Benchmarking Machine Learning Algorithms", arXiv 1708.07747 (MIT licence). [2] LeCun et al.
1998, MNIST. [3] Krizhevsky 2009, "Learning Multiple Layers of Features from Tiny Images" (CIFAR-10).

Known limits: folder and torchvision-layout sources are read into memory (after conversion);
HDF5 files larger than IN_MEMORY_LIMIT are read lazily, row by row.
"""
from __future__ import annotations

import collections
import hashlib
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from pcae.errors import PcaeError, first_line
from pcae.files import refuse_existing, register_heif, upright_8bit, upright_size
from pcae.formats import (
    TEST_EVERY,
    Split,
    array_split,
    cifar_split,
    h5_split,
    has_cifar,
    has_idx,
    idx_split,
    torchvision_root,
    write_h5,
)
from pcae.machine import check_fits
from pcae.options import SPLITS, check_split, check_suffix

IN_MEMORY_LIMIT = 2 * 1024 ** 3       # bytes of converted uint8 images kept in memory
CHUNK = 512                           # images per decode / write step
MAX_IMAGE_SIZE = 9459                 # the side of PIL's largest image (Image.MAX_IMAGE_PIXELS, 89 478 485)
BUNDLED_DIR = Path(__file__).parent / "data"
BUNDLED_FILE = BUNDLED_DIR / "fashion-mnist-subset.npz"
BUNDLED_FACES = BUNDLED_DIR / "faces"  # 480 real photos of 55 people, one folder each (SOURCES.md)
SHIPPED_PORTRAIT = BUNDLED_DIR / "portrait"  # the portrait model shipped with pcae (its MODEL_CARD.md)
DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm",
                  ".heic", ".heif"}

FASHION_MNIST_CLASSES = (BUNDLED_DIR / "fashion-mnist-classes.txt").read_text().splitlines()
MNIST_CLASSES = [str(i) for i in range(10)]
CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer",
                   "dog", "frog", "horse", "ship", "truck"]


# ----------------------------------------------------------------------------- the dataset

class ImageDataset:
    """A map-style dataset (DataLoader-compatible) of uint8 images (C, H, W) and int labels.

    In-memory sources expose `images` (N, C, H, W) uint8 and `labels` (N,) long tensors; lazily
    read ones (large HDF5 files) have `images = labels = None` and read one row per item.
    """

    def __init__(self, *, shape: tuple[int, int, int], classes: list[str] | None, info: dict,
                 images=None, labels=None, reader: Callable | None = None, count: int | None = None,
                 files: list[str] | None = None):
        if (images is None) == (reader is None):
            raise ValueError("ImageDataset needs exactly one of images= or reader=")
        self.images, self.labels, self._reader = images, labels, reader
        self._count = len(images) if images is not None else int(count)
        self.shape = tuple(shape)
        self.classes = classes
        self.info = info
        if files is not None and len(files) != self._count:
            raise ValueError(f"files must name all {self._count} items, got {len(files)}")
        self.files = files  # each item's file, relative to its folder (folder and h5 sources), or None

    @property
    def num_classes(self) -> int:
        return len(self.classes) if self.classes else 0

    def __len__(self) -> int:
        return self._count

    def __getitem__(self, i: int):
        if self.images is not None:
            return self.images[i], int(self.labels[i])
        if not -self._count <= i < self._count:
            raise IndexError(f"index {i} out of range for {self._count} images")
        return self._reader(i % self._count)

    def first(self, n: int):
        """The first n (at least 1, at most all) images and labels: (n, C, H, W) uint8, (n,) long."""
        import torch  # here: pcae.data stays torch-free to import (`pcae --help` reads its names)

        n = min(max(n, 1), len(self))
        if self.images is not None:
            return self.images[:n], self.labels[:n].long()
        items = [self[i] for i in range(n)]
        return (torch.stack([torch.as_tensor(x) for x, _ in items]),
                torch.tensor([int(y) for _, y in items], dtype=torch.long))

    def __repr__(self) -> str:
        return (f"ImageDataset({self.info['source']!r}, split={self.info['split']!r}, "
                f"count={len(self)}, shape={self.shape}, classes={self.num_classes})")


# ----------------------------------------------------------------------------- conversion

def convert_images(images, channels: int | None = None, image_size: int | None = None):
    """Convert a batch of uint8 images to `channels` and a square `image_size`.

    Grey -> RGB repeats the plane; RGB -> grey uses ITU-R 601 luma (0.299, 0.587, 0.114).
    Resizing scales the shorter side to `image_size` (bilinear, antialiased) and centre-crops.

    Args:
        images: uint8 tensor (N, C, H, W), C in {1, 3}.
        channels: 1, 3 or None (keep).
        image_size: side S >= 1 or None (keep).
    Returns:
        uint8 tensor (N, channels, S, S); the input itself when nothing changes.
    """
    import torch
    import torch.nn.functional as F

    if images.dtype != torch.uint8 or images.ndim != 4:
        raise ValueError(f"images must be uint8 (N, C, H, W), "
                         f"got {images.dtype} {tuple(images.shape)}")
    if channels not in (None, 1, 3):
        raise ValueError(f"channels must be 1 or 3, got {channels}")
    if image_size is not None and not 1 <= image_size <= MAX_IMAGE_SIZE:
        raise ValueError(f"image_size must be between 1 and {MAX_IMAGE_SIZE} (the side of PIL's "
                         f"largest image), got {image_size}")
    if channels == 3 and images.shape[1] == 1 and image_size is not None:  # resize 1 plane, copy it
        return convert_images(convert_images(images, None, image_size), 3, None)
    n, c, h, w = images.shape
    if channels is not None and channels != c:
        if c == 1:
            images = images.expand(n, 3, h, w).contiguous()
        elif c == 3:
            luma = torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)
            images = (images.float() * luma).sum(1, keepdim=True).round().clamp(0, 255).to(torch.uint8)
        else:
            raise ValueError(f"cannot convert {c}-channel images to {channels} channels")
    if image_size is not None and (h, w) != (image_size, image_size):
        scale = image_size / min(h, w)
        size = (max(image_size, round(h * scale)), max(image_size, round(w * scale)))
        x = F.interpolate(images.float(), size=size, mode="bilinear", antialias=True,
                          align_corners=False)
        top, left = (size[0] - image_size) // 2, (size[1] - image_size) // 2
        x = x[:, :, top:top + image_size, left:left + image_size]
        images = x.round().clamp(0, 255).to(torch.uint8).contiguous()
    return images


# ----------------------------------------------------------------------------- splits

def is_test_path(rel: str) -> bool:
    """Whether a folder's file, by its '/'-separated path relative to the folder, is in test."""
    return int(hashlib.sha1(_path_bytes(rel)).hexdigest(), 16) % TEST_EVERY == 0


def _path_bytes(rel: str) -> bytes:
    """A file name's bytes, also when they are not valid UTF-8 (Python keeps those as surrogates)."""
    return rel.encode("utf-8", "surrogateescape")


def person_of(rel: str) -> str | None:
    """The person of a photo in a folder of people: its folder relative to the root ("orl/s01");
    None for a photo at the root."""
    return rel.rpartition("/")[0] or None


def person_split(rels: list[str], persons: list[str | None]) -> list[bool]:
    """Which photos go to test, by photo within each person, so every person with two photos or
    more has photos in both splits: of n photos, the max(1, round(n / 10)) whose sha1(path) is
    smallest. A person's only photo stays in train; photos of no person follow is_test_path."""
    groups: dict[str, list[int]] = {}
    for i, person in enumerate(persons):
        if person is not None:
            groups.setdefault(person, []).append(i)
    test = [person is None and is_test_path(rel) for rel, person in zip(rels, persons)]
    for rows in groups.values():
        if len(rows) >= 2:
            rows = sorted(rows, key=lambda i: hashlib.sha1(_path_bytes(rels[i])).hexdigest())
            for i in rows[:max(1, round(len(rows) / TEST_EVERY))]:
                test[i] = True
    return test


HOLDOUT_MIN_PHOTOS = 5  # only people with this many photos are held out: each leaves a source and a gallery


def held_out_people(persons: list[str | None], fraction: float) -> set[str]:
    """The people kept out of training entirely, for measures on people a model never saw: of the
    people with HOLDOUT_MIN_PHOTOS photos or more, those whose sha1(name) falls in the first
    `fraction` of its range (stable: the same person is held out whatever else the folder holds)."""
    if not 0 <= fraction < 1:
        raise ValueError(f"fraction must be in [0, 1), got {fraction}")
    counts = collections.Counter(p for p in persons if p is not None)
    return {p for p, n in counts.items() if n >= HOLDOUT_MIN_PHOTOS
            and int(hashlib.sha1(_path_bytes(p)).hexdigest()[:8], 16) < fraction * 2 ** 32}


def _is_image_file(p: Path, root: Path) -> bool:
    hidden = any(part.startswith(".") for part in p.relative_to(root).parts)
    return not hidden and p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()


def _class_folders(root: Path, skipped: list[dict]) -> list[Path]:
    """The class sub-folders of a folder source, sorted. One that cannot be listed, or a link to
    nothing, is reported in `skipped` (never dropped without a word); a link to the folder itself
    or above it is a loop, not a class, and is left out."""
    here, folders = root.resolve(), []
    for d in sorted(root.iterdir()):
        if d.name.startswith("."):
            continue
        if d.is_symlink() and not d.exists():
            skipped.append({"file": d.name, "reason": "a link to nothing"})
        elif d.is_dir() and not here.is_relative_to(d.resolve()):
            try:
                with os.scandir(d):
                    folders.append(d)
            except OSError as e:
                skipped.append({"file": f"{d.name}/", "reason": f"class folder cannot be read ({e.strerror})"})
    return folders


def image_files(root: Path) -> list[Path]:
    """Every image file under `root`, sub-folders included, hidden ones skipped; sorted."""
    return sorted(p for p in root.rglob("*") if _is_image_file(p, root))


# ----------------------------------------------------------------------------- sources
# Each opener returns a pcae.formats.Split: native-format chunks plus what info needs.
# load_dataset and import_dataset share it, so an import streams chunk by chunk through the
# same code.

def _bundled_split(split: str) -> Split:
    with np.load(BUNDLED_FILE) as z:
        images, labels = z[f"{split}_images"], z[f"{split}_labels"]
        n_train, n_test = len(z["train_labels"]), len(z["test_labels"])
    origin = f"bundled subset ({n_train} train / {n_test} test)"
    return array_split(origin, images[:, None], labels.astype(np.int64), FASHION_MNIST_CLASSES)


def _open_fashion_mnist(arg, split, data_root, channels, image_size, bundled=None) -> Split:
    if data_root is not None:
        folder = torchvision_root("fashion-mnist", data_root, "FashionMNIST/raw", has_idx,
                                  "DIR/FashionMNIST/raw/*-ubyte[.gz]")
        return idx_split(folder, split, FASHION_MNIST_CLASSES, str(folder))
    if bundled is None:
        bundled = os.environ.get("PCAE_DATA_BUNDLED", "") not in ("", "0")
    if not bundled and has_idx(DEBIAN_FASHION_MNIST):
        return idx_split(DEBIAN_FASHION_MNIST, split, FASHION_MNIST_CLASSES,
                         f"{DEBIAN_FASHION_MNIST} (full set)")
    return _bundled_split(split)


def _open_mnist(arg, split, data_root, channels, image_size, bundled=None) -> Split:
    folder = torchvision_root("mnist", data_root, "MNIST/raw", has_idx,
                              "DIR/MNIST/raw/*-ubyte[.gz]")
    return idx_split(folder, split, MNIST_CLASSES, str(folder))


def _open_cifar10(arg, split, data_root, channels, image_size, bundled=None) -> Split:
    folder = torchvision_root("cifar10", data_root, "cifar-10-batches-py", has_cifar,
                              "DIR/cifar-10-batches-py/data_batch_1..5, test_batch")
    return cifar_split(folder, split, CIFAR10_CLASSES)


def _open_faces(arg, split, data_root, channels, image_size, bundled=None) -> Split:
    return _open_folder(str(BUNDLED_FACES), split, data_root, channels, image_size, by_person=True)


def _open_folder(arg, split, data_root, channels, image_size, bundled=None, by_person=False) -> Split:
    from PIL import Image

    root = Path(arg).expanduser()
    if not root.is_dir():
        raise PcaeError(f"{root}: not a folder")
    skipped: list[dict] = []  # this split's files, and class folders that cannot be read
    if by_person:  # a label per photo's folder (person_of), split within each person
        rels = [p.relative_to(root).as_posix() for p in image_files(root)]
        persons = [person_of(rel) for rel in rels]
        people = sorted({person for person in persons if person is not None})
        labelled = [(name, [root / rel for rel, person in zip(rels, persons) if person == name])
                    for name in people]
        tests = {rel for rel, test in zip(rels, person_split(rels, persons)) if test}
        is_test = tests.__contains__
    else:
        labelled = [(d.name, sorted(p for p in d.rglob("*") if _is_image_file(p, root)))
                    for d in _class_folders(root, skipped)]
        is_test = is_test_path
    labelled = [(name, files) for name, files in labelled if files]

    def in_split(rel: str) -> bool:
        return is_test(rel) == (split == "test")

    top = [p for p in sorted(root.iterdir()) if _is_image_file(p, root)]
    if labelled:
        classes = [name for name, _ in labelled]
        files = [(p, k) for k, (_, ps) in enumerate(labelled) for p in ps]
        skipped += [{"file": p.name, "reason": "not inside a class folder"} for p in top
                    if in_split(p.name)]
    else:
        classes = None
        files = [(p, -1) for p in top]
    if not files:
        raise PcaeError(f"{root}: no images found "
                        f"(expected image files, or class sub-folders of them)")

    channels = channels or 3
    sizes, readable = set(), []
    register_heif()
    for p, k in files:                                    # headers only: cheap, finds junk early
        rel = p.relative_to(root).as_posix()
        try:
            with warnings.catch_warnings():  # a decompression bomb is skipped, never decoded
                warnings.simplefilter("error", Image.DecompressionBombWarning)
                with Image.open(p) as im:
                    sizes.add(upright_size(im))
            readable.append((p, rel, k))
        except Exception as e:
            if in_split(rel):
                skipped.append({"file": rel, "reason": first_line(e, with_type=True)})
    if not readable:
        raise PcaeError(f"{root}: none of its {len(files)} image files could be read")
    if image_size is None and len(sizes) == 1:
        (w, h), = sizes
    else:
        h = w = image_size or 32
    mine = [(p, rel, k) for p, rel, k in readable if in_split(rel)]

    mode = {1: "L", 3: "RGB"}[channels]

    def decode(p: Path) -> np.ndarray:
        with Image.open(p) as im:
            im = upright_8bit(im, mode)
            if im.size != (w, h):
                scale = max(w / im.width, h / im.height)
                size = (max(w, round(im.width * scale)), max(h, round(im.height * scale)))
                im = im.resize(size, Image.BILINEAR)
                left, top = (size[0] - w) // 2, (size[1] - h) // 2
                im = im.crop((left, top, left + w, top + h))
            a = np.asarray(im, np.uint8)
        return a[None] if a.ndim == 2 else a.transpose(2, 0, 1)

    names: list[str] = []

    def chunks(size):
        del skipped[len(header_skipped):]                 # a second pass re-reports, not doubles
        names.clear()
        for s in range(0, len(mine), size):
            imgs, labs = [], []
            for p, rel, k in mine[s:s + size]:
                try:
                    imgs.append(decode(p))
                    labs.append(k)
                    names.append(rel)
                except MemoryError:
                    raise
                except Exception as e:
                    skipped.append({"file": rel, "reason": first_line(e, with_type=True)})
            if imgs:
                yield np.stack(imgs), np.asarray(labs, np.int64)

    header_skipped = list(skipped)
    return Split(str(root), (channels, h, w), classes, chunks, len(mine), exact=False,
                 skipped=skipped, names=names)


def _open_h5(arg, split, data_root, channels, image_size, bundled=None) -> Split:
    return h5_split(Path(arg).expanduser(), split)


# ----------------------------------------------------------------------------- the registry

@dataclass(frozen=True)
class Source:
    """One registry entry: how to open a split, and a line for --help."""
    open: Callable[..., Split]
    help: str
    takes_path: bool = False


SOURCES: dict[str, Source] = {
    "fashion-mnist": Source(_open_fashion_mnist, "Fashion-MNIST (default; full set if installed, "
                            "else the bundled subset)"),
    "mnist": Source(_open_mnist, "MNIST from a torchvision --data-root"),
    "cifar10": Source(_open_cifar10, "CIFAR-10 from a torchvision --data-root"),
    "faces": Source(_open_faces, "real face photos shipped with pcae: 480 of 55 people (ORL, Yale; "
                    "the person as label; the portraits' default)"),
    "folder": Source(_open_folder, "folder:PATH, image files (class sub-folders give labels)", True),
    "h5": Source(_open_h5, "h5:PATH, pcae's HDF5 images file (see `pcae data import`)", True),
}
DEFAULT_SOURCE = "fashion-mnist"


def source_names() -> list[str]:
    """The names users type: 'fashion-mnist', ..., 'folder:PATH', 'h5:PATH'."""
    return [f"{k}:PATH" if s.takes_path else k for k, s in SOURCES.items()]


def _resolve(source: str) -> tuple[Source, str | None]:
    name, sep, arg = source.partition(":")
    entry = SOURCES.get(name)
    if entry is not None and entry.takes_path and not arg:
        raise PcaeError(f"data source {name!r} needs a path: {name}:PATH")
    if entry is not None and not entry.takes_path and sep:
        raise PcaeError(f"data source {name!r} takes no path; use --data-root for its files")
    if entry is None:
        hint = ""
        if Path(source).is_dir():
            hint = f" (did you mean folder:{source}?)"
        elif Path(source).is_file() and source.endswith((".h5", ".hdf5")):
            hint = f" (did you mean h5:{source}?)"
        raise PcaeError(f"unknown data source {source!r}{hint}; known: {', '.join(source_names())}")
    return entry, arg or None


def _open(source, split, data_root, channels, image_size, bundled) -> Split:
    check_split(split)
    if channels not in (None, 1, 3):
        raise ValueError(f"channels must be 1 or 3, got {channels}")
    if image_size is not None and not 1 <= image_size <= MAX_IMAGE_SIZE:
        raise ValueError(f"image_size must be between 1 and {MAX_IMAGE_SIZE} (the side of PIL's "
                         f"largest image), got {image_size}")
    entry, arg = _resolve(source)
    return entry.open(arg, split, None if data_root is None else str(data_root), channels,
                      image_size, bundled=bundled)


def _out_shape(native: tuple[int, int, int], channels, image_size) -> tuple[int, int, int]:
    c, h, w = native
    return (channels or c, image_size or h, image_size or w)


# ----------------------------------------------------------------------------- public API

def load_dataset(source: str = DEFAULT_SOURCE, split: str = "train", *, channels: int | None = None,
                 image_size: int | None = None, data_root: str | os.PathLike | None = None,
                 bundled: bool | None = None, empty_ok: bool = False) -> ImageDataset:
    """Open one split of a registered source as an ImageDataset.

    Args:
        source: a name from `source_names()`, e.g. "fashion-mnist" or "folder:photos/".
        split: "train" or "test" (fixed; see the module docstring).
        channels: 1 or 3 to convert, None to keep (folders default to 3).
        image_size: square side S to resize + centre-crop to, None to keep.
        data_root: torchvision root for fashion-mnist / mnist / cifar10.
        bundled: fashion-mnist only: True forces the bundled subset; None reads PCAE_DATA_BUNDLED.
        empty_ok: return an empty split (else PcaeError: a split with no image cannot train).
    Returns:
        ImageDataset; items (uint8 (C, H, W), int label or -1); `info` says where the data came from.
    """
    import torch

    sp = _open(source, split, data_root, channels, image_size, bundled)
    shape = _out_shape(sp.shape, channels, image_size)
    info = {"source": source, "origin": sp.origin, "split": split, "count": sp.count,
            "shape": list(shape), "classes": sp.classes, "skipped": sp.skipped}
    if sp.reader is not None and sp.nbytes * np.prod(shape) / np.prod(sp.shape) > IN_MEMORY_LIMIT:
        def reader(i, _read=sp.reader):
            img, lab = _read(i)
            return convert_images(torch.from_numpy(img)[None], channels, image_size)[0], lab
        if sp.count:
            return ImageDataset(shape=shape, classes=sp.classes, info=info, reader=reader,
                                count=sp.count, files=sp.names)

    check_fits(float(sp.count) * float(np.prod(shape)),
               f"{source} ({split}): {sp.count} images of {'x'.join(map(str, shape))} in memory"
               + (f" (--image-size {image_size})" if image_size else ""))
    images, labels = [], []
    for imgs, labs in sp.chunks(4 * CHUNK) if sp.count else ():
        images.append(convert_images(torch.from_numpy(np.array(imgs)), channels, image_size))
        labels.append(torch.from_numpy(np.array(labs, np.int64)))
    images = torch.cat(images) if images else torch.empty((0, *shape), dtype=torch.uint8)
    labels = torch.cat(labels) if labels else torch.empty(0, dtype=torch.long)
    info["count"] = len(images)
    if not len(images) and not empty_ok:                   # also: every file of it unreadable
        rule = (f"; about 1 in {TEST_EVERY} files go to test, by a hash of the file path"
                if source.startswith("folder:") else "")
        raise PcaeError(f"{sp.origin}: no images in the {split} split{rule}")
    files = list(sp.names) if sp.names is not None and len(sp.names) == len(images) else None
    return ImageDataset(shape=shape, classes=sp.classes, info=info, images=images, labels=labels,
                        files=files)


def describe_source(source: str = DEFAULT_SOURCE, *, channels: int | None = None,
                    image_size: int | None = None, data_root: str | os.PathLike | None = None,
                    bundled: bool | None = None) -> dict:
    """Counts per split, shape, classes, origin and skipped files of a source, as a JSON-able dict."""
    out = {"source": source, "counts": {}, "skipped": []}
    for split in SPLITS:
        sp = _open(source, split, data_root, channels, image_size, bundled)
        # exact counts need no pixels; a folder's count is known only once every file decoded
        count = sp.count if sp.exact else sum(len(labs) for _, labs in sp.chunks(CHUNK))
        out.update(origin=sp.origin, shape=list(_out_shape(sp.shape, channels, image_size)),
                   classes=sp.classes)
        out["counts"][split] = count
        out["skipped"].extend(sp.skipped)
    return out


def import_dataset(source: str, out_path: str | os.PathLike, *, channels: int | None = None,
                   image_size: int | None = None, data_root: str | os.PathLike | None = None,
                   bundled: bool | None = None, force: bool = False, chunk_size: int = CHUNK,
                   progress: Callable[[int], None] | None = None) -> dict:
    """Write both splits of `source` to a pcae HDF5 file, chunk by chunk, atomically.

    Memory stays at about one chunk of images (plus what the source itself holds), whatever N is.

    Args:
        source, channels, image_size, data_root, bundled: as for `load_dataset`.
        out_path: the .h5 file to write; an existing one is replaced only with force=True.
        chunk_size: images decoded and written per step.
        progress: called with the number of images written after each chunk.
    Returns:
        A summary dict: path, source, origin, counts per split, shape, classes, skipped.
    """
    import torch

    out_path = Path(out_path)
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    if out_path.is_dir():
        raise PcaeError(f"{out_path}: is a folder, expected an .h5 file path")
    check_suffix(out_path, (".h5", ".hdf5"), "an HDF5 file")
    refuse_existing(out_path, force)  # --force replaces a pcae images file, never a user's file
    splits = {s: _open(source, s, data_root, channels, image_size, bundled) for s in SPLITS}
    shape = _out_shape(splits["train"].shape, channels, image_size)
    test_shape = _out_shape(splits["test"].shape, channels, image_size)
    if test_shape != shape:
        raise PcaeError(f"{source}: train images are {shape} but test images {test_shape}; "
                        f"pass --image-size to make them one size")

    def convert(imgs: np.ndarray) -> np.ndarray:
        return convert_images(torch.from_numpy(np.array(imgs)), channels, image_size).numpy()

    return write_h5(out_path, source, splits, shape, convert, chunk_size, progress)
