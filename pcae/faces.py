"""Faces as a data source: photos -> the face cache a portrait model trains on (HDF5).

`prepare_faces(source, cache, encoder, image_size)` runs the face encoder's detector (MTCNN for
FaceNet, HOG + alignment for dlib) once over a folder of photos (or an HDF5 images file), keeps the
largest face of each photo, and writes an HDF5 face cache: the encoder's crop, the PixelCNN's
training image (the crop resized to image_size) and the frozen embedding of every face. Photos
without a face or unreadable files are skipped, counted and named. A second run with the same
photos reuses the detections; a new image_size or other FaceNet weights are derived from the stored
crops without detecting again; a cache is never rebuilt from another source. `load_embeddings`
reads the embedding table back (the portrait task's h, by row), checking which weights made it.

Face cache (HDF5, attrs `format` = "pcae-images/1" so `h5:CACHE` is a pcae.data source whose
labels are row numbers, and `faces_format` = CACHE_FORMAT): `images` uint8 (N, 3, S, S), `labels`
int64 (N,) = row number, `split` uint8 (N,) (0 train, 1 test, 2 held out), `crops` uint8 (N, 3, F, F),
`embeddings` float32 (N, D), `probs` float32 (N,), `files` str (N,); attrs `source`, `origin`,
`image_size`, `facenet` (encoder config JSON), `preprocessing` (JSON), `random_weights`,
`weights_fingerprint` (sha1 of the encoder's state dict), `listing` (sha1 of the photos' names
and contents), `skipped` (JSON).

Splits follow pcae.data: a photo of a folder is in test when sha1 of its relative path is divisible
by 10; rows of an HDF5 file by its `split` dataset, else every 10th row. When that leaves the test
split empty (folders of fewer than ~10 photos) the last face goes to test, so the loop can evaluate.
With `holdout` > 0, whole people are held out (split 2: neither trained on nor tested by the loop;
pcae.data.held_out_people): the people that measures of unseen faces are made on.

Detection and embedding run in one worker process per core (pcae/face_workers.py) (dlib's HOG and ResNet, ~9 photos a
second a core on LFW's 250x250 photos). Faces are written to CACHE.partial.h5 as they come, with
how many photos are done: a preparation stopped by Ctrl-C or a kill goes on from there when run
again with the same photos, and the finished cache replaces the partial file in one rename.

Known limits: MTCNN and dlib run on the CPU (~0.1-0.5 s per photo), so preparing CelebA's 200k
photos takes hours. Only the largest face of each photo is used.

Shapes: N faces, S image_size, F the encoder's crop side (FaceNet 160, dlib 150), D its dim.
"""
from __future__ import annotations

import collections
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from PIL import Image
from torch import nn

from encoders import build_encoder
from encoders.facenet import FaceNetEncoder
from pcae.data import (
    BUNDLED_FACES,
    TEST_EVERY,
    convert_images,
    held_out_people,
    image_files,
    person_of,
    person_split,
)
from pcae.formats import HELD_OUT
from pcae.errors import PcaeError, first_line
from pcae.face_workers import detections
from pcae.files import atomic_path, cache_root, ensure_space, open_image, storable
from pcae.settings import DEFAULT_FACE_SIZE

CACHE_FORMAT = "pcae-faces/2"  # /2 added persons, people and grey; /1 caches still load
READABLE_FORMATS = ("pcae-faces/1", CACHE_FORMAT)
CHUNK = 64  # faces embedded and written per step
Progress = Callable[[int, int], None]  # (photos done, photos in all)


# ---------------------------------------------------------------------------------------------
# FaceNet


FACE_ENCODERS = {"facenet": 512, "dlib": 128}  # the face encoders a portrait model can be conditioned on: dim


def build_face_encoder(name: str = "facenet", weights: str = "vggface2", crop_size: int = 160):
    """The frozen face encoder a portrait model is conditioned on: FaceNet (the paper's; `weights`,
    `crop_size` as for build_facenet) or dlib's pretrained ResNet (no options)."""
    if name == "facenet":
        return build_facenet(weights, crop_size)
    if name == "dlib":
        return build_encoder("dlib")
    raise PcaeError(f"portraits are conditioned on a face encoder: {', '.join(FACE_ENCODERS)}; got {name!r}")


def encoder_weights(encoder) -> str:
    """What an encoder's embeddings come from, for notes: FaceNet's weights, or dlib's model."""
    return getattr(encoder, "weights", None) or encoder.config["name"]


def build_facenet(weights: str = "vggface2", crop_size: int = 160):
    """The frozen FaceNet encoder ("random" weights come from a fixed seed: reproducible caches).

    crop_size: the MTCNN crop and FaceNet input side (FaceNet's own is 160; smaller is faster).
    """

    return FaceNetEncoder(weights, image_size=crop_size)


def weights_fingerprint(module: nn.Module) -> str:
    """sha1 of a module's state dict (names and bytes): which weights made an embedding."""
    digest = hashlib.sha1()
    if not module.state_dict():  # no torch weights (dlib): its config names the model and its sha1
        digest.update(json.dumps(module.config, sort_keys=True).encode())
    for name, value in module.state_dict().items():
        digest.update(name.encode())
        digest.update(value.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


# ---------------------------------------------------------------------------------------------
# Photos


@dataclass
class _Photo:
    name: str
    person: str | None  # the photo's folder in a folder of people (pcae.data.person_of)
    test: bool | None  # an HDF5 file's own split; None: decided over the faces found (split_faces)
    load: Callable[[], Any]  # -> PIL image


def _open_photo(path: Path):
    return open_image(path, "RGB")


def photos_folder(source: str) -> Path | None:
    """The folder of a "faces" (the bundled photos) or "folder:PATH" source, else None."""
    kind, _, arg = source.partition(":")
    if source == "faces":
        return BUNDLED_FACES
    return Path(arg).expanduser().resolve() if kind == "folder" and arg else None


def list_photos(source: str, max_photos: int | None = None) -> tuple[list[_Photo], str, str]:
    """The photos of `source` ("faces", "folder:PATH" or "h5:PATH"), sorted, with their person.

    Returns:
        (photos, origin, listing): for a folder, listing is a sha1 of the photos' names and
        contents (not their times: a copy made without them is the same photos), so a cache can
        tell whether the photos changed; an HDF5 file's names its path, size, time and rows.
    """
    if max_photos is not None and max_photos < 1:
        raise ValueError(f"max_photos must be >= 1, got {max_photos}")
    kind, _, arg = source.partition(":")
    root = photos_folder(source)
    if root is not None:
        if not root.is_dir():
            raise PcaeError(f"{root}: not a folder")
        files = image_files(root)
        if not files:
            raise PcaeError(f"{root}: no image files found (searched sub-folders too)")
        files = files[:max_photos]
        digest = hashlib.sha1()
        photos = []
        for p in files:
            rel = p.relative_to(root).as_posix()  # names and contents, not times: a copy is the same
            try:
                content = hashlib.sha1(p.read_bytes()).hexdigest()
            except OSError as e:  # unreadable: skipped with its reason when its face is looked for
                content = f"unreadable: {e.strerror}"
            digest.update(f"{rel}\0{content}\n".encode("utf-8", "surrogateescape"))
            name = storable(rel)  # the cache's names are text: a name's bytes that are not UTF-8 as escapes
            photos.append(_Photo(name, person_of(name), None, lambda p=p: _open_photo(p)))
        return photos, str(root), digest.hexdigest()
    if kind == "h5" and arg:
        return _list_h5_photos(Path(arg).expanduser().resolve(), max_photos)
    hint = f" (did you mean folder:{source}?)" if Path(source).is_dir() else ""
    raise PcaeError(f"portrait data must be faces (the bundled photos), folder:PATH or h5:PATH, got "
                    f"{source!r}{hint}")


def _list_h5_photos(path: Path, max_photos: int | None):
    import h5py

    if not path.is_file() or not h5py.is_hdf5(path):
        raise PcaeError(f"{path}: not an HDF5 file")
    with h5py.File(path, "r") as f:
        ds = f.get("images")
        if not isinstance(ds, h5py.Dataset) or ds.dtype != np.uint8 or ds.ndim != 4 or ds.shape[1] not in (1, 3):
            raise PcaeError(f"{path}: no 'images' uint8 (N, 1|3, H, W) dataset")
        n = ds.shape[0] if max_photos is None else min(max_photos, ds.shape[0])
        test = (f["split"][:n] == 1) if "split" in f else (np.arange(n) % TEST_EVERY == TEST_EVERY - 1)
    if n == 0:
        raise PcaeError(f"{path}: holds no images")
    st = path.stat()
    listing = f"{path}\0{st.st_size}\0{st.st_mtime_ns}\0{n}"
    listing = hashlib.sha1(listing.encode("utf-8", "surrogateescape")).hexdigest()

    handle = {}  # one open file for the whole pass

    def load(row):
        if "f" not in handle:
            handle["f"] = h5py.File(path, "r")
        a = handle["f"]["images"][row]  # (C, H, W)
        return Image.fromarray(a[0] if a.shape[0] == 1 else a.transpose(1, 2, 0)).convert("RGB")

    photos = [_Photo(f"{path.name}[{i}]", None, bool(test[i]), lambda i=i: load(i)) for i in range(n)]
    return photos, str(path), listing


def default_cache_path(source: str, encoder: str = "facenet", variant: str | None = None) -> Path:
    """Where a source's face cache goes without --cache: $PCAE_CACHE_DIR, else ~/.cache/pcae; one
    per source, face encoder and `variant` (`cache_variant`: what else changes its contents), so
    that a run with other options writes its own cache instead of rewriting one another run
    trains on. Without a variant: the name caches had before (FaceNet's: no encoder suffix)."""
    path = photos_folder(source) or Path(source.partition(":")[2] or source).expanduser().resolve()
    key = hashlib.sha1(str(path).encode("utf-8", "surrogateescape")).hexdigest()[:12]
    suffix = ("" if encoder == "facenet" else f"-{encoder}") + (f"-{variant}" if variant else "")
    return cache_root() / "faces" / f"{path.name or 'photos'}-{key}{suffix}.h5"


def cache_variant(encoder, image_size: int, max_photos: int | None, holdout: float = 0.0) -> str:
    """A short key of what besides the photos decides a face cache's rows and contents: the
    encoder's weights and config, the faces' side, --max-photos and the held-out fraction."""
    parts = [weights_fingerprint(encoder), encoder.config, image_size, max_photos] + ([holdout] if holdout else [])
    return hashlib.sha1(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:8]


def sibling_caches(cache: Path) -> list[Path]:
    """The other default caches of the same source (any variant): where detections can be reused."""
    stem = cache.stem.rsplit("-", 1)[0]
    return sorted(p for p in cache.parent.glob(f"{stem}*.h5") if p != cache)


# ---------------------------------------------------------------------------------------------
# The face cache


class _CacheWriter:
    """Appends faces (crop, prob, photo) to a new cache file, embedding them in chunks; `finish`
    writes the split, decided over the faces found (split_faces)."""

    def __init__(self, f, encoder, image_size: int, holdout: float = 0.0):
        import h5py

        self.f, self.encoder, self.S, self.holdout = f, encoder, image_size, holdout
        S, P, D = image_size, encoder.image_size, encoder.dim
        grow = lambda name, shape, dtype, rows, **kw: f[name] if name in f else f.create_dataset(  # noqa: E731
            name, (0, *shape), dtype, maxshape=(None, *shape), chunks=(rows, *shape), **kw)
        self.images = grow("images", (3, S, S), np.uint8, max(1, min(256, (1 << 20) // (3 * S * S))),
                           compression="gzip", compression_opts=4)
        self.crops = grow("crops", (3, P, P), np.uint8, 8, compression="gzip", compression_opts=4)
        self.embeddings = grow("embeddings", (D,), np.float32, 256)
        self.labels = grow("labels", (), np.int64, 4096)
        self.split = grow("split", (), np.uint8, 4096)
        self.probs = grow("probs", (), np.float32, 4096)
        self.files = grow("files", (), h5py.string_dtype(), 4096)
        self.persons = grow("persons", (), h5py.string_dtype(), 4096)  # "" = no person
        self.n = 0
        self.photos: list[_Photo] = []
        self.grey = True  # every face so far has R = G = B
        self.pending: list[tuple] = []

    def resume(self, photos: list[_Photo]) -> None:
        """Go on after the rows a stopped preparation wrote (their photos, in order): rows past
        the last recorded ones (a kill between the writes) are cut."""
        rows = int(self.f.attrs["rows"])
        for ds in (self.images, self.crops, self.embeddings, self.labels, self.split, self.probs,
                   self.files, self.persons):
            ds.resize(rows, axis=0)
        by_name = {photo.name: photo for photo in photos}
        self.photos = [by_name[name] for name in self.files.asstr()[:]]
        self.n = rows
        self.grey = bool(self.f.attrs["grey_so_far"])

    def add(self, crop: torch.Tensor, prob: float, photo: _Photo,
            embedding: torch.Tensor | None = None) -> None:
        self.pending.append((crop, prob, photo, embedding))
        if len(self.pending) >= CHUNK:
            self.flush()

    def flush(self) -> None:
        if not self.pending:
            return
        crops = torch.stack([p[0] for p in self.pending])  # (b, 3, F, F) uint8
        self.grey = self.grey and bool((crops[:, 0] == crops[:, 1]).all() and (crops[:, 1] == crops[:, 2]).all())
        if all(p[3] is not None for p in self.pending):
            emb = torch.stack([p[3] for p in self.pending])
        else:
            device = next(self.encoder.parameters(), torch.empty(0)).device
            emb = self.encoder(crops.to(device)).cpu()  # (b, D)
        k, n = len(crops), self.n
        columns = {
            self.images: convert_images(crops, 3, self.S).numpy(),
            self.crops: crops.numpy(),
            self.embeddings: emb.numpy().astype(np.float32),
            self.labels: np.arange(n, n + k, dtype=np.int64),
            self.split: np.zeros(k, np.uint8),  # finish() decides
            self.probs: np.array([p[1] for p in self.pending], np.float32),
            self.files: np.array([p[2].name for p in self.pending], dtype=object),
            self.persons: np.array([p[2].person or "" for p in self.pending], dtype=object),
        }
        ensure_space(self.f.filename, sum(v.nbytes for v in columns.values()))
        for ds, values in columns.items():
            ds.resize(n + k, axis=0)
            ds[n:n + k] = values
        self.n += k
        self.photos += [p[2] for p in self.pending]
        self.pending = []

    def finish(self) -> None:
        """The split of the faces written (split_faces), and the people among them."""
        self.flush()
        if self.n:
            self.split[:] = np.asarray(split_faces(self.photos, self.holdout), np.uint8)
        self.f.attrs["people"] = json.dumps(sorted({p.person for p in self.photos if p.person is not None}))
        self.f.attrs["grey"] = self.grey  # every face grey: a 1-channel model suffices


def split_faces(photos: list[_Photo], holdout: float = 0.0) -> list[int]:
    """Each face's split code: HELD_OUT for the people `held_out_people(holdout)` keeps out, else
    1 (test) or 0 (train) by photo within each person (pcae.data.person_split: every person with
    two faces or more has faces in both splits), an HDF5 file's own split, else ~1 in 10
    (pcae.data.is_test_path); when that leaves no test face, the last face that is neither a
    person's only one nor the only face left to train on."""
    persons = [p.person for p in photos]
    held = held_out_people(persons, holdout) if holdout else set()
    by_person = person_split([p.name for p in photos], persons)
    test = [p.test if p.test is not None else t for p, t in zip(photos, by_person)]
    codes = [HELD_OUT if p in held else int(t) for p, t in zip(persons, test)]
    if 1 not in codes:  # tiny folders: one test face, but never a person's only one
        counts = collections.Counter(persons)
        spare = [k for k, c in enumerate(codes) if c == 0 and (persons[k] is None or counts[persons[k]] >= 2)]
        if len(spare) >= 2 or (spare and len(codes) > len(spare)):
            codes[spare[-1]] = 1
    return codes


def _cache_attrs(path: Path) -> dict | None:
    """A face cache's attrs; None when there is no file; PcaeError when it is something else."""
    import h5py

    if not path.exists():
        return None
    if not path.is_file() or not h5py.is_hdf5(path):  # a folder, a pipe or a device too
        raise PcaeError(f"{path}: exists and is not a pcae face cache; pass another --cache or remove it")
    try:
        with h5py.File(path, "r") as f:
            attrs = {k: (v.decode() if isinstance(v, bytes) else v) for k, v in f.attrs.items()}
    except OSError as e:
        raise PcaeError(f"{path}: cannot read the face cache ({first_line(e, with_type=True)})") from None
    if attrs.get("faces_format") not in READABLE_FORMATS:
        raise PcaeError(f"{path}: exists and is not a pcae face cache; pass another --cache or remove it")
    return attrs


def _detection_config(encoder) -> str:
    if encoder.config["name"] == "dlib":
        return json.dumps({"detector": "dlib HOG", "upsample": encoder.upsample,
                           "padding": encoder.padding, "crop_size": encoder.image_size,
                           "face": "largest"}, sort_keys=True)
    return json.dumps({"crop_size": encoder.image_size, "margin": encoder.margin,
                       "min_face_size": encoder.min_face_size, "face": "largest"}, sort_keys=True)


def prepare_faces(source: str, cache: str | os.PathLike, encoder, image_size: int = DEFAULT_FACE_SIZE, *,
                  max_photos: int | None = None, progress: Progress | None = None,
                  reuse: list | tuple = (), holdout: float = 0.0, workers: int | None = None) -> dict:
    """Detect, crop and embed the largest face of every photo once; write (or reuse) the face cache.

    Args:
        source: "folder:PATH" (searched recursively) or "h5:PATH" (an images file).
        cache: the HDF5 face cache to write or reuse (see the module docstring).
        encoder: a FaceNetEncoder (`build_facenet`); put it on the device to embed on.
        image_size: S, the side of the PixelCNN's training images.
        max_photos: use only the first N photos (sorted by path).
        progress: called with (photos done, photos) while detecting.
        reuse: other caches whose detections may be reused when `cache` has none of these photos
            (the same photos and detector): their crops are re-derived, not detected again.
        holdout: the fraction of people (with 5 photos or more) held out of both splits
            (pcae.data.held_out_people).
        workers: detection processes (None: one per core; 1: in this process).
    Returns:
        info dict: cache, source, origin, photos, faces, train, test, skipped [{file, reason}],
        reused ("all", "detections" or "none"), image_size, facenet config, weights_fingerprint,
        random_weights.
    Raises:
        PcaeError when the source has no usable photo or the cache path holds something else.
    """
    import h5py

    if image_size < 1:
        raise ValueError(f"image_size must be >= 1, got {image_size}")
    cache = Path(cache).expanduser().resolve()
    photos, origin, listing = list_photos(source, max_photos)
    fingerprint = weights_fingerprint(encoder)
    detection = _detection_config(encoder)
    old = _cache_attrs(cache)
    if old is not None and old.get("origin") not in (None, origin):
        raise PcaeError(f"{cache}: holds the faces of {old['origin']}, not of {origin}; give this "
                        "source its own --cache (the default is one cache per source)")
    same = lambda attrs: (attrs is not None and attrs.get("listing") == listing  # noqa: E731
                          and attrs.get("detection") == detection)
    source_cache = cache
    if not same(old):
        for other in reuse:
            try:
                attrs = _cache_attrs(Path(other))
            except PcaeError:  # not a cache: nothing to reuse there
                continue
            if same(attrs) and attrs.get("origin") == origin:
                source_cache, old = Path(other), attrs
                break
    same_photos = same(old)
    same_weights = same_photos and old.get("weights_fingerprint") == fingerprint
    if (source_cache == cache and same_weights and old.get("image_size") == image_size
            and old.get("facenet") == json.dumps(encoder.config) and old.get("faces_format") == CACHE_FORMAT
            and float(old.get("holdout", 0.0)) == holdout):
        return _cache_info(cache, "all")
    if not same_photos:
        _detect_into_partial(photos, cache, encoder, image_size, listing, detection, fingerprint,
                             progress, workers)
        source_cache, old, same_weights = _partial_path(cache), _cache_attrs(_partial_path(cache)), True

    with atomic_path(cache, suffix=".h5") as tmp:
        with h5py.File(tmp, "w") as f:
            writer = _CacheWriter(f, encoder, image_size, holdout)
            # the cache from stored crops: new detections, another image size, weights or split
            skipped = json.loads(old["skipped"])
            by_name = {photo.name: photo for photo in photos}  # the same photos: same listing
            with h5py.File(source_cache, "r") as src:
                for lo in range(0, src["crops"].shape[0], CHUNK):
                    hi = lo + CHUNK
                    crops = torch.from_numpy(src["crops"][lo:hi])
                    emb = torch.from_numpy(src["embeddings"][lo:hi]) if same_weights else None
                    for k, (name, prob) in enumerate(zip(src["files"].asstr()[lo:hi], src["probs"][lo:hi])):
                        writer.add(crops[k], float(prob), by_name[name], None if emb is None else emb[k])
                    writer.flush()
            writer.finish()
            if writer.n == 0:
                raise PcaeError(f"{origin}: no face found in any of its {len(photos)} photos "
                                f"({len(skipped)} skipped; first: {skipped[0]['file']}: "
                                f"{skipped[0]['reason']})")
            a = f.attrs
            a["format"] = "pcae-images/1"
            a["faces_format"] = CACHE_FORMAT
            a["source"], a["origin"], a["listing"], a["detection"] = source, origin, listing, detection
            a["photos"] = len(photos)
            a["image_size"] = image_size
            a["facenet"] = json.dumps(encoder.config)
            a["preprocessing"] = json.dumps(encoder.preprocessing)
            a["random_weights"] = getattr(encoder, "weights", None) == "random"
            a["weights_fingerprint"] = fingerprint
            a["skipped"] = json.dumps(skipped)
            a["holdout"] = holdout
    _partial_path(cache).unlink(missing_ok=True)
    return _cache_info(cache, "detections" if same_photos else "none")


def _partial_path(cache: Path) -> Path:
    return cache.with_name(cache.stem + ".partial.h5")


def _detect_into_partial(photos, cache: Path, encoder, image_size: int, listing: str, detection: str,
                         fingerprint: str, progress, workers: int | None) -> None:
    """Detect and embed every photo's face into CACHE.partial.h5, going on from where a stopped
    preparation of the same photos left it; the rows are in photo order whatever the workers."""
    import h5py

    partial = _partial_path(cache)
    attrs = None
    try:
        attrs = _cache_attrs(partial)
    except PcaeError:  # torn by a kill mid-write: start over
        pass
    same = attrs is not None and all(attrs.get(k) == v for k, v in (
        ("listing", listing), ("detection", detection), ("weights_fingerprint", fingerprint)))
    if not same:
        partial.unlink(missing_ok=True)
    partial.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(partial, "a" if same else "w") as f:
        writer = _CacheWriter(f, encoder, image_size)
        done, skipped = 0, []
        if same:
            writer.resume(photos)
            done, skipped = int(f.attrs["done"]), json.loads(f.attrs["skipped"])
        else:
            a = f.attrs
            a["faces_format"], a["origin"], a["photos"] = CACHE_FORMAT, "", len(photos)
            a["listing"], a["detection"], a["weights_fingerprint"] = listing, detection, fingerprint

        def checkpoint(k):  # photos done and rows written, recorded together after the rows
            writer.flush()
            f.attrs["rows"], f.attrs["done"], f.attrs["grey_so_far"] = writer.n, k, writer.grey
            f.attrs["skipped"] = json.dumps(skipped)
            f.flush()

        checkpoint(done)
        for k, (crop, prob, embedding, reason) in enumerate(detections(photos, done, encoder, workers), done):
            if crop is not None:
                writer.add(torch.from_numpy(crop), prob, photos[k], torch.from_numpy(embedding))
            else:
                skipped.append({"file": photos[k].name, "reason": reason})
            if (k + 1) % CHUNK == 0 or k + 1 == len(photos):
                checkpoint(k + 1)
            if progress is not None:
                progress(k + 1, len(photos))
        checkpoint(len(photos))
        f.attrs["skipped"] = json.dumps(skipped)
        f.attrs["image_size"], f.attrs["facenet"] = image_size, json.dumps(encoder.config)


def _cache_info(cache: Path, reused: str) -> dict:
    import h5py

    with h5py.File(cache, "r") as f:
        a = f.attrs
        split = f["split"][:]
        return {
            "cache": str(cache), "source": str(a["source"]), "origin": str(a["origin"]),
            "photos": int(a["photos"]), "faces": int(len(split)),
            "train": int((split == 0).sum()), "test": int((split == 1).sum()),
            "skipped": json.loads(a["skipped"]), "reused": reused,
            "image_size": int(a["image_size"]), "facenet": json.loads(a["facenet"]),
            "weights_fingerprint": str(a["weights_fingerprint"]),
            "random_weights": bool(a["random_weights"]), "listing": str(a["listing"]),
            "people": len(json.loads(a.get("people", "[]"))), "grey": bool(a.get("grey", False)),
            "held_out": int((split == HELD_OUT).sum()), "holdout": float(a.get("holdout", 0.0)),
        }


def load_persons(cache: str | os.PathLike) -> tuple[list[str], np.ndarray]:
    """The person of each cache row ("" for none; caches made before people have none) and the
    rows' split (0 train, 1 test)."""
    import h5py

    with h5py.File(cache, "r") as f:
        split = f["split"][:]
        persons = list(f["persons"].asstr()[:]) if "persons" in f else [""] * len(split)
    return persons, split


def load_embeddings(cache: str | os.PathLike, fingerprint: str | None = None,
                    listing: str | None = None) -> torch.Tensor:
    """The cache's embedding table (N, D) float32.

    PcaeError if the cache is missing, or was rebuilt since a run used it: from other FaceNet
    weights (`fingerprint`) or other photos (`listing`), either of which would change what a row means.
    """
    import h5py

    cache = Path(cache)
    attrs = _cache_attrs(cache)
    if attrs is None:
        raise PcaeError(f"{cache}: face cache not found (rerun train-portraits with --data to rebuild it)")
    if fingerprint is not None and attrs.get("weights_fingerprint") != fingerprint:
        raise PcaeError(f"{cache}: its embeddings come from other FaceNet weights than this run's; "
                        "the cache was rebuilt since (use one --cache per FaceNet weights)")
    if listing is not None and attrs.get("listing") != listing:
        raise PcaeError(f"{cache}: rebuilt from other photos since this run used it; "
                        "use one --cache per run you want to resume")
    with h5py.File(cache, "r") as f:
        table = torch.from_numpy(f["embeddings"][:])
    if not table.is_floating_point() or not bool(torch.isfinite(table).all()):
        raise PcaeError(f"{cache}: its embeddings are not finite floats; remove the cache (or pass "
                        "another --cache) so that it is rebuilt")
    return table
