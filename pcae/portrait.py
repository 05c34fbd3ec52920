"""Portraits of one person from one photo: a Gated PixelCNN conditioned on FaceNet embeddings [1, 3.3].

The paper trains a conditional PixelCNN p(face | e) where e is the embedding of the face by a
network trained with a triplet loss (FaceNet [2]), frozen. Given the embedding of a face it never
saw, the decoder draws new portraits of that person: other poses, expressions and lighting.
Linear interpolation between two embeddings morphs one face into the other.

Three steps, each a public function:

1. `prepare_faces(source, cache, encoder, image_size)` runs MTCNN once over a folder of photos
   (or an HDF5 images file), keeps the largest face of each photo, and writes an HDF5 face cache:
   the FaceNet crop (160x160), the PixelCNN's training image (the crop resized to image_size) and
   the frozen FaceNet embedding of every face. Photos without a face or unreadable files are
   skipped, counted and named. A second run with the same photos reuses the detections; a new
   image_size or other FaceNet weights are derived from the stored crops without detecting again.
2. Training goes through the generic loop (`pcae.train.train`) with `PortraitSpec` /
   `PortraitTask`: the cache doubles as an `h5:` data source whose labels are row numbers, and the
   task looks each row's embedding up in the cache's table. Checkpoints are of kind "portrait" and
   carry the FaceNet weights and config, so `pcae portrait` needs nothing else.
3. `draw_portraits(checkpoint, photo, n)` detects and embeds the face of one photo, draws n
   portraits in one batch and scores them; `interpolate(checkpoint, a, b, steps)` walks between two
   embeddings with the same noise along each row.

Face cache (HDF5, attrs `format` = "pcae-images/1" so `h5:CACHE` is a data source, and
`faces_format` = CACHE_FORMAT): `images` uint8 (N, 3, S, S), `labels` int64 (N,) = row number,
`split` uint8 (N,) (0 train, 1 test), `crops` uint8 (N, 3, 160, 160), `embeddings` float32
(N, 512), `probs` float32 (N,), `files` str (N,); attrs `source`, `origin`, `image_size`, `facenet`
(config JSON), `preprocessing` (JSON), `random_weights`, `weights_fingerprint` (sha1 of the
FaceNet state dict), `listing` (sha1 of the photos' names, sizes and mtimes), `skipped` (JSON).

Splits follow pcae.data: a photo of a folder is in test when sha1 of its relative path is divisible
by 10; rows of an HDF5 file by its `split` dataset, else every 10th row. When that leaves the test
split empty (folders of fewer than ~10 photos) the last face goes to test, so the loop can evaluate.

Scores (`PortraitResult`):
    identity similarity   mean cosine between FaceNet(sample) and the conditioning embedding
                          FaceNet(source crop); samples are upsampled from S x S to 160 x 160 by the
                          encoder. `source_similarity` is the same score for the source crop itself
                          downscaled to S x S: the ceiling that resolution allows.
    diversity             mean pairwise L2 distance between the samples' FaceNet embeddings (unit
                          vectors, so in [0, 2]); `pixel_diversity`: mean pairwise root-mean-square
                          difference between the samples, in levels (0..255).
With `--facenet-weights random` none of these say anything about identity; every output says so.

References:
    [1] van den Oord et al., "Conditional Image Generation with PixelCNN Decoders", 2016,
        arXiv:1606.05328.
    [2] Schroff et al., "FaceNet: A Unified Embedding for Face Recognition and Clustering", 2015,
        arXiv:1503.03832 (facenet-pytorch's InceptionResnetV1 and MTCNN, see encoders/facenet.py).

Known limits: MTCNN runs on the CPU one photo at a time (~0.1-0.5 s per photo), so preparing
CelebA's 200k photos takes hours; a killed preparation starts over. Only the largest face of each
photo is used. Interpolated embeddings are renormalised to unit length (FaceNet's outputs are unit
vectors; the straight line between two of them is not), a departure from plain linear interpolation.
Checkpoints carry FaceNet's ~94 MB of weights.
Under torchrun every rank prepares the faces itself (the same cache, written atomically by each);
run train-portraits once on one process first, and the ranks then only check the cache.

Shapes: n samples, C = 3 channels, S image_size, F = 160 FaceNet crop size, D = 512.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from pcae.checkpoint import load_checkpoint
from pcae.data import IMAGE_SUFFIXES, TEST_EVERY, convert_images
from pcae.images import save_grid
from pcae.data import is_test_path  # the folder split rule, so splits agree with pcae.data
from pcae.kinds import task_from_checkpoint
from pcae.train import Task, TrainConfig, resolve_device
from pcae.utils import PcaeError, atomic_path, cache_root, first_line

CACHE_FORMAT = "pcae-faces/1"
RANDOM_WARNING = ("FaceNet weights are random (NOT pretrained): embeddings carry no identity, "
                  "so the portraits and scores say nothing about the person")
CHUNK = 64  # faces embedded and written per step
Progress = Callable[[int, int], None]  # (photos done, photos in all)


# ---------------------------------------------------------------------------------------------
# FaceNet


FACE_ENCODERS = {"facenet": 512, "dlib": 128}  # the face encoders a portrait model can be conditioned on: dim


def build_face_encoder(name: str = "facenet", weights: str = "vggface2", crop_size: int = 160):
    """The frozen face encoder a portrait model is conditioned on: FaceNet (the paper's; `weights`,
    `crop_size` as for build_facenet) or dlib's pretrained ResNet (pcae[faces]; no options)."""
    if name == "facenet":
        return build_facenet(weights, crop_size)
    if name == "dlib":
        from encoders import build_encoder

        return build_encoder("dlib")
    raise PcaeError(f"portraits are conditioned on a face encoder: {', '.join(FACE_ENCODERS)}; got {name!r}")


def encoder_weights(encoder) -> str:
    """What an encoder's embeddings come from, for notes: FaceNet's weights, or dlib's model."""
    return getattr(encoder, "weights", None) or encoder.config["name"]


def build_facenet(weights: str = "vggface2", crop_size: int = 160):
    """The frozen FaceNet encoder ("random" weights come from a fixed seed: reproducible caches).

    crop_size: the MTCNN crop and FaceNet input side (FaceNet's own is 160; smaller is faster).
    """
    from encoders.facenet import FaceNetEncoder

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
    test: bool
    load: Callable[[], Any]  # -> PIL image


def _open_photo(path: Path):
    from pcae.utils import open_image

    return open_image(path, "RGB")


def list_photos(source: str, max_photos: int | None = None) -> tuple[list[_Photo], str, str]:
    """The photos of `source` ("folder:PATH" or "h5:PATH"), sorted, with their split.

    Returns:
        (photos, origin, listing): listing is a sha1 of names, sizes and mtimes, so a cache can
        tell whether the photos changed.
    """
    if max_photos is not None and max_photos < 1:
        raise ValueError(f"max_photos must be >= 1, got {max_photos}")
    kind, _, arg = source.partition(":")
    if kind == "folder" and arg:
        root = Path(arg).expanduser().resolve()
        if not root.is_dir():
            raise PcaeError(f"{root}: not a folder")
        files = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES
                       and not any(s.startswith(".") for s in p.relative_to(root).parts) and p.is_file())
        if not files:
            raise PcaeError(f"{root}: no image files found (searched sub-folders too)")
        files = files[:max_photos]
        digest = hashlib.sha1()
        photos = []
        for p in files:
            rel = p.relative_to(root).as_posix()
            st = p.stat()
            digest.update(f"{rel}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
            photos.append(_Photo(rel, is_test_path(rel), lambda p=p: _open_photo(p)))
        return photos, str(root), digest.hexdigest()
    if kind == "h5" and arg:
        return _list_h5_photos(Path(arg).expanduser().resolve(), max_photos)
    hint = f" (did you mean folder:{source}?)" if Path(source).is_dir() else ""
    raise PcaeError(f"portrait data must be folder:PATH or h5:PATH, got {source!r}{hint}")


def _list_h5_photos(path: Path, max_photos: int | None):
    import h5py
    from PIL import Image

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
    listing = hashlib.sha1(f"{path}\0{st.st_size}\0{st.st_mtime_ns}\0{n}".encode()).hexdigest()

    handle = {}  # one open file for the whole pass

    def load(row):
        if "f" not in handle:
            handle["f"] = h5py.File(path, "r")
        a = handle["f"]["images"][row]  # (C, H, W)
        return Image.fromarray(a[0] if a.shape[0] == 1 else a.transpose(1, 2, 0)).convert("RGB")

    photos = [_Photo(f"{path.name}[{i}]", bool(test[i]), lambda i=i: load(i)) for i in range(n)]
    return photos, str(path), listing


def default_cache_path(source: str, encoder: str = "facenet") -> Path:
    """Where a source's face cache goes without --cache: $PCAE_CACHE_DIR, else ~/.cache/pcae; one
    per source and face encoder (FaceNet's keeps the name it always had)."""
    path = Path(source.partition(":")[2] or source).expanduser().resolve()
    key = hashlib.sha1(str(path).encode()).hexdigest()[:12]
    suffix = "" if encoder == "facenet" else f"-{encoder}"
    return cache_root() / "faces" / f"{path.name or 'photos'}-{key}{suffix}.h5"


# ---------------------------------------------------------------------------------------------
# The face cache


class _CacheWriter:
    """Appends faces (crop, prob, name, split) to a new cache file, embedding them in chunks."""

    def __init__(self, f, encoder, image_size: int):
        import h5py

        self.f, self.encoder, self.S = f, encoder, image_size
        S, P, D = image_size, encoder.image_size, encoder.dim
        grow = lambda name, shape, dtype, rows, **kw: f.create_dataset(
            name, (0, *shape), dtype, maxshape=(None, *shape), chunks=(rows, *shape), **kw)
        self.images = grow("images", (3, S, S), np.uint8, max(1, min(256, (1 << 20) // (3 * S * S))),
                           compression="gzip", compression_opts=4)
        self.crops = grow("crops", (3, P, P), np.uint8, 8, compression="gzip", compression_opts=4)
        self.embeddings = grow("embeddings", (D,), np.float32, 256)
        self.labels = grow("labels", (), np.int64, 4096)
        self.split = grow("split", (), np.uint8, 4096)
        self.probs = grow("probs", (), np.float32, 4096)
        self.files = grow("files", (), h5py.string_dtype(), 4096)
        self.n = 0
        self.pending: list[tuple] = []

    def add(self, crop: torch.Tensor, prob: float, name: str, test: bool,
            embedding: torch.Tensor | None = None) -> None:
        self.pending.append((crop, prob, name, test, embedding))
        if len(self.pending) >= CHUNK:
            self.flush()

    def flush(self) -> None:
        if not self.pending:
            return
        crops = torch.stack([p[0] for p in self.pending])  # (b, 3, F, F) uint8
        if all(p[4] is not None for p in self.pending):
            emb = torch.stack([p[4] for p in self.pending])
        else:
            device = next(self.encoder.parameters(), torch.empty(0)).device
            emb = self.encoder(crops.to(device)).cpu()  # (b, D)
        k, n = len(crops), self.n
        columns = {
            self.images: convert_images(crops, 3, self.S).numpy(),
            self.crops: crops.numpy(),
            self.embeddings: emb.numpy().astype(np.float32),
            self.labels: np.arange(n, n + k, dtype=np.int64),
            self.split: np.array([p[3] for p in self.pending], np.uint8),
            self.probs: np.array([p[1] for p in self.pending], np.float32),
            self.files: np.array([p[2] for p in self.pending], dtype=object),
        }
        for ds, values in columns.items():
            ds.resize(n + k, axis=0)
            ds[n:n + k] = values
        self.n += k
        self.pending = []


def _cache_attrs(path: Path) -> dict | None:
    """A face cache's attrs; None when there is no file; PcaeError when it is something else."""
    import h5py

    if not path.exists():
        return None
    if path.is_dir() or not h5py.is_hdf5(path):
        raise PcaeError(f"{path}: exists and is not a pcae face cache; pass another --cache or remove it")
    try:
        with h5py.File(path, "r") as f:
            attrs = {k: (v.decode() if isinstance(v, bytes) else v) for k, v in f.attrs.items()}
    except OSError as e:
        raise PcaeError(f"{path}: cannot read the face cache ({first_line(e, with_type=True)})") from None
    if attrs.get("faces_format") != CACHE_FORMAT:
        raise PcaeError(f"{path}: exists and is not a pcae face cache; pass another --cache or remove it")
    return attrs


def _detection_config(encoder) -> str:
    if encoder.config["name"] == "dlib":
        return json.dumps({"detector": "dlib HOG", "upsample": encoder.upsample,
                           "padding": encoder.padding, "crop_size": encoder.image_size,
                           "face": "largest"}, sort_keys=True)
    return json.dumps({"crop_size": encoder.image_size, "margin": encoder.margin,
                       "min_face_size": encoder.min_face_size, "face": "largest"}, sort_keys=True)


def prepare_faces(source: str, cache: str | os.PathLike, encoder, image_size: int = 32, *,
                  max_photos: int | None = None, progress: Progress | None = None) -> dict:
    """Detect, crop and embed the largest face of every photo once; write (or reuse) the face cache.

    Args:
        source: "folder:PATH" (searched recursively) or "h5:PATH" (an images file).
        cache: the HDF5 face cache to write or reuse (see the module docstring).
        encoder: a FaceNetEncoder (`build_facenet`); put it on the device to embed on.
        image_size: S, the side of the PixelCNN's training images.
        max_photos: use only the first N photos (sorted by path).
        progress: called with (photos done, photos) while detecting.
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
    same_photos = old is not None and old.get("listing") == listing and old.get("detection") == detection
    same_weights = same_photos and old.get("weights_fingerprint") == fingerprint
    if same_weights and old.get("image_size") == image_size and old.get("facenet") == json.dumps(encoder.config):
        return _cache_info(cache, "all")

    with atomic_path(cache, suffix=".h5") as tmp:
        with h5py.File(tmp, "w") as f:
            writer = _CacheWriter(f, encoder, image_size)
            if same_photos:  # new image size or weights: derive them from the stored crops
                skipped = json.loads(old["skipped"])
                with h5py.File(cache, "r") as src:
                    for lo in range(0, src["crops"].shape[0], CHUNK):
                        hi = lo + CHUNK
                        crops = torch.from_numpy(src["crops"][lo:hi])
                        emb = torch.from_numpy(src["embeddings"][lo:hi]) if same_weights else None
                        for k, (name, test, prob) in enumerate(zip(
                                src["files"].asstr()[lo:hi], src["split"][lo:hi], src["probs"][lo:hi])):
                            writer.add(crops[k], float(prob), name, bool(test),
                                       None if emb is None else emb[k])
                        writer.flush()
            else:
                skipped = _detect_all(photos, encoder, writer, progress)
            writer.flush()
            if writer.n == 0:
                raise PcaeError(f"{origin}: no face found in any of its {len(photos)} photos "
                                f"({len(skipped)} skipped; first: {skipped[0]['file']}: "
                                f"{skipped[0]['reason']})")
            split = f["split"][:]
            if not split.any() and writer.n >= 2:  # tiny folders: keep one face for evaluation
                f["split"][writer.n - 1] = 1
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
    return _cache_info(cache, "detections" if same_photos else "none")


def _detect_all(photos: list[_Photo], encoder, writer: _CacheWriter, progress) -> list[dict]:
    skipped = []
    for k, photo in enumerate(photos):
        try:
            image = photo.load()
        except Exception as e:  # PIL raises many types for broken files
            skipped.append({"file": photo.name, "reason": f"unreadable ({first_line(e, with_type=True)})"})
        else:
            try:
                crop, prob = encoder.detect(image)
            except Exception as e:  # e.g. a photo too small for MTCNN's pyramid
                crop, prob = None, None
                skipped.append({"file": photo.name, "reason": f"detection failed ({first_line(e, with_type=True)})"})
            if crop is not None:
                writer.add(crop, prob, photo.name, photo.test)
            elif prob is not None:
                skipped.append({"file": photo.name, "reason": f"no face ({encoder.miss_note(prob)})"})
        if progress is not None:
            progress(k + 1, len(photos))
    return skipped


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
        }


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
        return torch.from_numpy(f["embeddings"][:])


# ---------------------------------------------------------------------------------------------
# Training: the task and its spec for pcae.train


class PortraitTask(Task):
    """p(face | FaceNet embedding): a conditional Gated PixelCNN over the face cache's images.

    The loop's labels are cache row numbers; `h(labels)` looks their embeddings up.
    """

    kind = "portrait"
    metric = "bpd"

    def __init__(self, config, facenet, faces: dict, embeddings: torch.Tensor | None = None):
        from pcae.pixelcnn import GatedPixelCNN

        if config.cond_dim != facenet.dim:
            raise ValueError(f"config.cond_dim must equal the face encoder's dim {facenet.dim}, "
                             f"got {config.cond_dim}")
        self.config, self.facenet, self.faces = config, facenet, dict(faces)
        self.model = GatedPixelCNN(config)
        self._table = embeddings  # (N, D) on the CPU, read from the cache on first use
        self._on_device: dict[str, torch.Tensor] = {}

    def embeddings(self, device) -> torch.Tensor:
        if self._table is None:
            self._table = load_embeddings(self.faces["cache"], self.faces.get("weights_fingerprint"),
                                          self.faces.get("listing"))
        key = str(device)
        if key not in self._on_device:
            self._on_device[key] = self._table.to(device)
        return self._on_device[key]

    def h(self, labels: torch.Tensor) -> torch.Tensor:
        return self.embeddings(labels.device)[labels]  # (B, D)

    def configs(self):
        return {"model": dataclasses.asdict(self.config), "facenet": self.facenet.config,
                "facenet_preprocessing": self.facenet.preprocessing, "faces": self.faces}

    def loss(self, images, labels):
        from pcae.pixelcnn import bits_per_dim

        logits = self.model.forward_float(self.model.scale(images), self.h(labels))
        return {"bpd": bits_per_dim(logits, images)}

    @torch.no_grad()
    def evaluate(self, batches):
        """Mean test bits/dim over faces, and how many faces."""
        total, n = 0.0, 0
        for images, labels in batches:
            total += float(self.loss(images, labels)["bpd"]) * len(images)
            n += len(images)
        return {"bpd": total / n, "images": n} if n else {}

    def sample_grid(self, examples, n, generator, temperature):
        """Rows of: a test face, then 4 portraits given its embedding."""
        from pcae.sampling import sample

        images, labels = examples
        per_row = min(4, n)
        rows = min(len(images), math.ceil(n / per_row))
        h = self.h(labels[:rows]).repeat_interleave(per_row, dim=0)
        x = sample(self.model, rows * per_row, tuple(images.shape[1:]), h, temperature, generator)
        x = x.to(torch.uint8).view(rows, per_row, *images.shape[1:])
        return torch.cat([images[:rows, None], x], dim=1).flatten(0, 1), per_row + 1

    def check_data(self, dataset):
        if tuple(dataset.shape) != (3, *self.config.image_size):
            raise PcaeError(f"data {dataset.info.get('source')!r} has images of shape "
                            f"{tuple(dataset.shape)}, the portrait model expects "
                            f"(3, {self.config.image_size[0]}, {self.config.image_size[1]})")
        labels = getattr(dataset, "labels", None)
        n = len(self.embeddings("cpu"))
        if labels is not None and len(labels) and not (0 <= int(labels.min()) and int(labels.max()) < n):
            raise PcaeError(f"data {dataset.info.get('source')!r} is not the face cache this model "
                            f"was built for (row numbers beyond its {n} embeddings)")

    def state_dicts(self):
        return {"model": self.model.state_dict(), "facenet": self.facenet.state_dict()}

    def load_state_dicts(self, state_dicts):
        self.model.load_state_dict(state_dicts["model"])
        self.facenet.load_state_dict(state_dicts["facenet"])

    @classmethod
    def from_checkpoint(cls, checkpoint: dict) -> "PortraitTask":
        from encoders import load_encoder
        from pcae.pixelcnn import PixelCNNConfig

        configs, states = checkpoint["configs"], checkpoint["state_dicts"]
        facenet = load_encoder(configs["facenet"], states["facenet"])
        task = cls(PixelCNNConfig(**configs["model"]), facenet, configs["faces"])
        task.model.load_state_dict(states["model"])
        return task


@dataclass(frozen=True)
class PortraitSpec:
    """Model options for `pcae train-portraits`; the image size comes from the face cache."""

    kind: ClassVar[str] = "portrait"
    faces: dict = field(default_factory=dict)  # prepare_faces' info
    facenet: Any = field(default=None, repr=False, compare=False)
    channels: int = 48  # divisible by 3: one feature group per colour
    n_layers: int = 5
    kernel_size: int = 3
    first_kernel_size: int = 7
    head_channels: int = 0

    def config(self, image_shape: tuple[int, int, int], cond_dim: int):
        """The decoder's PixelCNNConfig; PcaeError for bad model options."""
        from pcae.pixelcnn import PixelCNNConfig

        C, H, W = image_shape
        try:
            return PixelCNNConfig(image_channels=C, channels=self.channels, n_layers=self.n_layers,
                                  kernel_size=self.kernel_size, first_kernel_size=self.first_kernel_size,
                                  head_channels=self.head_channels, cond_dim=cond_dim, image_size=(H, W))
        except ValueError as e:
            raise PcaeError(f"model options: {e}") from None

    def build(self, dataset) -> PortraitTask:
        if self.facenet is None:
            raise ValueError("PortraitSpec.build needs the facenet encoder that made the cache")
        return PortraitTask(self.config(dataset.shape, self.facenet.dim), self.facenet, self.faces)

    def restore(self, checkpoint: dict) -> PortraitTask:
        return PortraitTask.from_checkpoint(checkpoint)


def prepare_portrait_run(config: TrainConfig, source: str | None, *, image_size: int = 32,
                         facenet_weights: str | None = None, facenet_crop_size: int | None = None,
                         cache: str | os.PathLike | None = None,
                         max_photos: int | None = None, resume: bool = False, force: bool = False,
                         progress: Progress | None = None, encoder: str = "facenet", **model_options):
    """Everything `pcae.train.train` needs for a portrait run: faces prepared, config pointed at them.

    Args:
        config: the TrainConfig; its data is replaced by "h5:CACHE".
        source: the photos ("folder:PATH" or "h5:PATH"); unused with resume (the run's cache is used).
        image_size, max_photos, progress: as for `prepare_faces`.
        facenet_weights: "vggface2" (None: that), "casia-webface", a file, or "random".
        facenet_crop_size: MTCNN crop / FaceNet input side (None: 160, FaceNet's).
        encoder: the face encoder to condition on, "facenet" (the paper's) or "dlib" (pretrained,
            offline; the facenet options do not apply to it).
        cache: the face cache (default: `default_cache_path(source)`).
        resume, force: as for `train`; checked before any detection runs.
        model_options: PortraitSpec fields (channels, n_layers, kernel_size, ...).
    Returns:
        (config, spec, faces info or None when resuming).
    """
    from pcae.train import prepare_out

    prepare_out(Path(config.out), resume, force)
    spec = PortraitSpec(**model_options)
    if resume:
        return config, spec, None
    if source is None:
        raise ValueError("source is required unless resuming")
    if encoder not in FACE_ENCODERS:
        raise PcaeError(f"portraits are conditioned on a face encoder: {', '.join(FACE_ENCODERS)}; "
                        f"got {encoder!r}")
    if encoder != "facenet" and (facenet_weights is not None or facenet_crop_size is not None):
        raise PcaeError(f"--facenet-weights and --facenet-crop-size go with --encoder facenet, not {encoder}")
    spec.config((3, image_size, image_size), FACE_ENCODERS[encoder])  # bad options fail before detection
    cache = Path(cache).expanduser() if cache is not None else default_cache_path(source, encoder)
    encoder = build_face_encoder(encoder, facenet_weights or "vggface2", facenet_crop_size or 160)
    device = resolve_device(config.device)
    encoder.to(device)
    faces = prepare_faces(source, cache, encoder, image_size, max_photos=max_photos, progress=progress)
    encoder.cpu()
    config = dataclasses.replace(config, data=f"h5:{faces['cache']}", image_size=None,
                                 image_channels=None)
    return config, dataclasses.replace(spec, faces=faces, facenet=encoder), faces


def train_portraits(config: TrainConfig, source: str | None, *, resume: bool = False,
                    force: bool = False, callback=None, **options):
    """prepare_portrait_run, then pcae.train.train. Returns (TrainResult, faces info or None)."""
    from pcae.train import train

    config, spec, faces = prepare_portrait_run(config, source, resume=resume, force=force, **options)
    return train(config, spec, resume=resume, force=force, callback=callback), faces


# ---------------------------------------------------------------------------------------------
# Using a trained portrait model


class PortraitModel(nn.Module):
    """A trained portrait checkpoint: the decoder, its FaceNet, and what they were trained on."""

    def __init__(self, decoder, facenet, faces: dict):
        super().__init__()
        self.decoder, self.facenet, self.faces = decoder, facenet, faces

    @property
    def image_shape(self) -> tuple[int, int, int]:
        cfg = self.decoder.config
        return (cfg.image_channels, *cfg.image_size)

    @property
    def random_weights(self) -> bool:
        return getattr(self.facenet, "weights", None) == "random"

    @property
    def encoder_name(self) -> str:
        return self.facenet.config["name"]

    def embed(self, crops: torch.Tensor) -> torch.Tensor:
        """uint8 crops (B, 3, H, W) of any size -> (B, D) unit vectors on the decoder's device."""
        device = next(self.decoder.parameters()).device
        return self.facenet(crops.to(device)).to(device)

    def shrink(self, crop: torch.Tensor) -> torch.Tensor:
        """A FaceNet crop (3, F, F) -> the decoder's image size (1, 3, S, S) uint8."""
        return convert_images(crop[None].cpu(), 3, self.image_shape[1])


def build_portrait(checkpoint: dict) -> PortraitModel:
    """The bare model of a "portrait" checkpoint (pcae.kinds)."""
    task = PortraitTask.from_checkpoint(checkpoint)
    return PortraitModel(task.model, task.facenet, task.faces)




def load_portrait(path: str | os.PathLike | PortraitModel, device: str = "cpu") -> PortraitModel:
    """A portrait checkpoint as a PortraitModel on `device`, eval mode; PcaeError for other files.

    A PortraitModel passes through (moved to `device`), so callers can load once and draw often.
    """
    if isinstance(path, PortraitModel):
        return path.eval().to(resolve_device(device))
    checkpoint = load_checkpoint(path, kind="portrait")
    task = task_from_checkpoint(checkpoint, path)
    model = PortraitModel(task.model, task.facenet, task.faces).float().eval()
    return model.to(resolve_device(device))


def _sampler(sampler: str | None) -> str:
    from pcae.sampling import check_sampler

    if sampler is None:
        return "cached"
    check_sampler(sampler)
    return sampler


def _check_photo(path) -> Path:
    """Fail fast (before loading a model) on a missing, non-image or unreadable photo."""
    from pcae.utils import open_image

    open_image(path)
    return Path(path)


@dataclass
class PortraitResult:
    """What `draw_portraits` returns. Images are uint8 (N, 3, S, S)."""

    photo: str
    probability: float  # MTCNN's detection probability of the face used
    source: torch.Tensor  # (1, 3, S, S) the face crop at the decoder's size
    samples: torch.Tensor  # (n, 3, S, S)
    identity_similarity: float  # mean cosine FaceNet(sample) vs FaceNet(source crop)
    similarities: list[float]  # per sample
    source_similarity: float  # FaceNet(source at S x S) vs FaceNet(source crop): the ceiling
    diversity: float | None  # mean pairwise L2 between sample embeddings, [0, 2]; None when n = 1
    pixel_diversity: float | None  # mean pairwise RMS difference in levels; None when n = 1
    random_weights: bool
    facenet_weights: str
    sampler: str
    seed: int
    temperature: float
    identity_judge: dict | None = None  # eval.faces.judge_identity by dlib, when installed
    pose_light: dict | None = None  # eval.faces.spread of the portraits' pose and lighting
    reference_pose_light: dict | None = None  # the same over real photos given as the reference

    @property
    def grid(self) -> torch.Tensor:
        """The source crop first, then the samples: (n + 1, 3, S, S)."""
        return torch.cat([self.source, self.samples])

    def scores(self) -> dict:
        keys = ("photo", "probability", "identity_similarity", "source_similarity", "diversity",
                "pixel_diversity", "random_weights", "facenet_weights", "sampler", "seed", "temperature",
                "identity_judge", "pose_light", "reference_pose_light")
        return {k: getattr(self, k) for k in keys} | {"n": len(self.samples)}


def _mean_pairwise(x: torch.Tensor, rms: bool = False) -> float | None:
    """Mean distance over the n(n-1)/2 pairs of rows of x (n, d); RMS per coordinate if asked."""
    n = len(x)
    if n < 2:
        return None
    d = torch.cdist(x.double(), x.double())
    if rms:
        d = d / math.sqrt(x.shape[1])
    return float(d.triu(1).sum() / (n * (n - 1) / 2))


PORTRAITS_OUT = Path("portraits")  # where `pcae portrait PHOTO` writes PHOTO-NAME.png when not told


def default_portrait_paths(photo, checkpoint=None, out=None) -> tuple[Path, Path, str]:
    """(checkpoint, out, note) for `pcae portrait`: the newest finished portrait run's checkpoint
    under runs/ when none is given (one-line error saying how to train one when there is none),
    PORTRAITS_OUT/<photo's name>.png when no output is; the note says what was chosen ("" if nothing)."""
    from pcae.runs import require_newest_run

    note = ""
    if checkpoint is None:
        run = require_newest_run("portrait", "portrait model",
                                 "pcae train-portraits --data folder:PHOTOS")
        checkpoint, note = run.checkpoint, f"{run.checkpoint} (the newest portrait run)"
    if out is None:
        out = PORTRAITS_OUT / f"{Path(photo).stem}.png"
    return Path(checkpoint), Path(out), note


@torch.no_grad()
def draw_portraits(checkpoint: str | os.PathLike | PortraitModel, photo: str | os.PathLike, n: int = 16, *,
                   face_index: int | None = None, sampler: str | None = None, seed: int = 0,
                   temperature: float = 1.0, device: str = "cpu",
                   progress: Callable[[int, int], None] | None = None,
                   references: list | tuple = ()) -> PortraitResult:
    """Draw n portraits of the person in `photo` in one batch, and score them.

    Args:
        checkpoint: a "portrait" checkpoint (pcae train-portraits), or a loaded PortraitModel.
        photo: an image file; its largest face is used, or face `face_index` (largest first).
        n: number of portraits.
        sampler: a name in pcae.sampling.SAMPLERS (default "cached").
        seed, temperature: for the sampler (temperature 0 = argmax).
        device: "cpu" or "cuda" (MTCNN detection always runs on the CPU).
        progress: called with (rows done, rows) while sampling.
        references: real photos of the same person: their pose and lighting spread is the
            reference the portraits' is read against (needs the dlib judge).
    Returns:
        PortraitResult (see the module docstring for the scores). With dlib installed it also
        holds the independent identity judgement and the pose / lighting spread (eval.faces).
    """
    from pcae.sampling import sample

    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0, got {temperature}")
    method = _sampler(sampler)
    photo = _check_photo(photo)
    model = load_portrait(checkpoint, device)
    crop, prob = model.facenet.detect_file(photo, face_index)  # (3, F, F) uint8
    source = model.shrink(crop)  # (1, 3, S, S)
    h = model.embed(crop[None])  # (1, D)
    target = next(model.decoder.parameters()).device
    generator = torch.Generator(target).manual_seed(seed)
    samples = sample(model.decoder, n, model.image_shape, h.expand(n, -1), temperature, generator,
                     method=method, progress=progress).to(torch.uint8).cpu()
    e = model.embed(samples)  # (n, D)
    unit = lambda v: F.normalize(v, dim=-1)  # FaceNet's are unit vectors already, dlib's nearly
    similarities = (unit(e) @ unit(h[0])).cpu()
    source_similarity = float(unit(model.embed(source)[0]) @ unit(h[0]))
    from eval import faces as judges
    from eval.faces import pose_and_light, spread

    # the independent judge: dlib for a FaceNet-conditioned model, FaceNet (pretrained weights on
    # this machine) for a dlib-conditioned one; dlib measures pose and lighting either way
    verdict = pose = reference = None
    if model.encoder_name == "facenet":
        judge = judges.identity_judge()
        if judge is not None:
            verdict = judges.judge_identity(judge, crop, source, samples)
        has_dlib = judge is not None
    else:
        judge, has_dlib = judges.facenet_judge(), True
        if judge is not None:
            verdict = judges.judge_identity_facenet(judge, crop, source, samples)
    if has_dlib:
        pose = spread(pose_and_light(samples))
        if references:  # detect_file gives the one-line errors of a missing or broken photo
            faces = torch.cat([model.shrink(model.facenet.detect_file(r)[0]) for r in references])
            reference = spread(pose_and_light(faces))
    return PortraitResult(
        photo=str(photo), probability=prob, source=source, samples=samples,
        identity_similarity=float(similarities.mean()), similarities=similarities.tolist(),
        source_similarity=source_similarity, diversity=_mean_pairwise(e.cpu()),
        pixel_diversity=_mean_pairwise(samples.flatten(1).float(), rms=True),
        random_weights=model.random_weights, facenet_weights=encoder_weights(model.facenet),
        sampler=method, seed=seed, temperature=temperature, identity_judge=verdict,
        pose_light=pose, reference_pose_light=reference)


@dataclass
class Interpolation:
    """What `interpolate` returns: rows of (face a, steps samples, face b), uint8 (3, S, S) each."""

    images: torch.Tensor  # (rows * (steps + 2), 3, S, S)
    nrow: int  # steps + 2
    weights: list[float]  # t of each step, 0 = a, 1 = b
    cosine: float  # between the two faces' embeddings
    random_weights: bool
    facenet_weights: str
    judged: list[dict] | None = None  # per step of row 0: dlib's distance to face a and to face b


@torch.no_grad()
def interpolate(checkpoint: str | os.PathLike | PortraitModel, a: str | os.PathLike, b: str | os.PathLike,
                steps: int = 8, *, rows: int = 1, seed: int = 0, temperature: float = 1.0,
                sampler: str | None = None, face_index: tuple[int | None, int | None] = (None, None),
                device: str = "cpu") -> Interpolation:
    """Portraits along the line from the embedding of face a to that of face b.

    Step k uses h = normalise((1 - t_k) e_a + t_k e_b), t_k = k / (steps - 1). Every step is drawn
    with a generator seeded `seed`, so row r gets the same noise at every step and what changes
    along a row is the embedding's doing; rows differ in their noise.

    Returns:
        Interpolation; images are rows of (crop a, the steps samples, crop b).
    """
    from pcae.sampling import sample

    if steps < 2:
        raise ValueError(f"steps must be >= 2, got {steps}")
    if rows < 1:
        raise ValueError(f"rows must be >= 1, got {rows}")
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0, got {temperature}")
    method = _sampler(sampler)
    a, b = _check_photo(a), _check_photo(b)
    model = load_portrait(checkpoint, device)
    crops = [model.facenet.detect_file(p, i)[0] for p, i in zip((a, b), face_index)]
    e_a, e_b = model.embed(torch.stack(crops))  # (D,) each
    target = next(model.decoder.parameters()).device
    ts = torch.linspace(0, 1, steps).tolist()
    columns = []
    for t in ts:
        h = (1 - t) * e_a + t * e_b
        if model.encoder_name == "facenet":  # FaceNet's embeddings live on the unit sphere
            h = F.normalize(h, dim=0)
        generator = torch.Generator(target).manual_seed(seed)
        x = sample(model.decoder, rows, model.image_shape, h.expand(rows, -1), temperature,
                   generator, method=method)
        columns.append(x.to(torch.uint8).cpu())
    ends = [model.shrink(c).expand(rows, -1, -1, -1) for c in crops]
    grid = torch.stack([ends[0], *columns, ends[1]], dim=1).flatten(0, 1)  # row-major
    from eval.faces import aligned_chips, identity_judge

    judge, judged = identity_judge() if model.encoder_name == "facenet" else None, None
    if judge is not None:  # does the morph move from a's identity to b's, by a network not used?
        ref_a, ref_b = judge(aligned_chips(judge, torch.stack(crops))[0])
        chips, _ = aligned_chips(judge, torch.cat([c[:1] for c in columns]))
        e = judge(chips)
        judged = [{"t": t, "to_a": float((v - ref_a).norm()), "to_b": float((v - ref_b).norm())}
                  for t, v in zip(ts, e)]
    return Interpolation(images=grid, nrow=steps + 2, weights=ts, cosine=float(e_a @ e_b),
                         random_weights=model.random_weights,
                         facenet_weights=encoder_weights(model.facenet), judged=judged)


# ---------------------------------------------------------------------------------------------
# Writing results


save_png_grid = save_grid  # the portrait grids: pcae.images.save_grid with their scores as text


def facenet_note(random_weights: bool, weights: str) -> str:
    if weights == "dlib":
        return "face encoder: dlib's pretrained ResNet (face-recognition-models)"
    return RANDOM_WARNING if random_weights else f"FaceNet weights: {weights}"


def save_samples(result: PortraitResult, path: str | os.PathLike, checkpoint: str = "") -> Path:
    """The samples as PNGs in a folder (sample_000.png, ...) or as one HDF5 file (path ending .h5).

    HDF5: `images` uint8 (n, 3, S, S) (pcae-images/1, so `h5:PATH` reads it), `similarities`
    float32 (n,), `source` uint8 (1, 3, S, S); attrs with the scores and the FaceNet weights.
    """
    import h5py
    from PIL import Image

    path = Path(path)
    meta = {"pcae": "portrait samples", "checkpoint": str(checkpoint), **result.scores(),
            "note": facenet_note(result.random_weights, result.facenet_weights)}
    if path.suffix.lower() in (".h5", ".hdf5"):
        with atomic_path(path, suffix=".h5") as tmp:
            with h5py.File(tmp, "w") as f:
                f.create_dataset("images", data=result.samples.numpy())
                f.create_dataset("source", data=result.source.numpy())
                f.create_dataset("similarities", data=np.asarray(result.similarities, np.float32))
                f.attrs["format"] = "pcae-images/1"
                f.attrs["source"] = f"portraits of {result.photo}"
                for key, value in meta.items():
                    f.attrs[key] = json.dumps(value) if not isinstance(value, (str, bool, int, float)) else value
        return path
    path.mkdir(parents=True, exist_ok=True)
    for k, image in enumerate(result.samples):
        with atomic_path(path / f"sample_{k:03d}.png", suffix=".png") as tmp:
            Image.fromarray(image.permute(1, 2, 0).numpy()).save(tmp, format="png")
    with atomic_path(path / "scores.json") as tmp:
        tmp.write_text(json.dumps({**meta, "similarities": result.similarities}, indent=2) + "\n")
    return path
