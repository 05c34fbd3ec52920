"""Portraits of one person from one photo: a Gated PixelCNN conditioned on FaceNet embeddings [1, 3.3].

The paper trains a conditional PixelCNN p(face | e) where e is the embedding of the face by a
network trained with a triplet loss (FaceNet [2]), frozen. Given the embedding of a face it never
saw, the decoder draws new portraits of that person: other poses, expressions and lighting.
Linear interpolation between two embeddings morphs one face into the other.

Three steps, each a public function:

1. `pcae.faces.prepare_faces` turns photos into a face cache (crops, training images, the frozen
   encoder's embeddings; see pcae/faces.py): `PortraitSpec.prepare` calls it.
2. Training goes through the generic loop, `pcae.train.train(config, PortraitSpec(...))` with
   `PortraitTask`: the cache doubles as an `h5:` data source whose labels are row numbers, and the
   task's encoder (encoders.lookup) maps each row number to its embedding. Checkpoints are of
   kind "portrait" and carry the face encoder's weights and config, so `pcae portrait` needs
   nothing else.
3. `draw_portraits(checkpoint, photo, n)` detects and embeds the face of one photo, draws n
   portraits in one batch and scores them (eval.faces.portrait_scores); `interpolate(checkpoint,
   a, b, steps)` walks between two embeddings with the same noise along each row.

Scores (`PortraitResult`): identity similarity to the source face, its ceiling at the portraits'
size, diversity, the independent judge's verdict, pose and lighting, all computed by
eval.faces.portrait_scores (its docstring defines each). With `--facenet-weights random` none of
them say anything about identity; every output says so.

References:
    [1] van den Oord et al., "Conditional Image Generation with PixelCNN Decoders", 2016,
        arXiv:1606.05328.
    [2] Schroff et al., "FaceNet: A Unified Embedding for Face Recognition and Clustering", 2015,
        arXiv:1503.03832 (facenet-pytorch's InceptionResnetV1 and MTCNN, see encoders/facenet.py).

Known limits: see pcae/faces.py for the face cache's. Interpolated embeddings are renormalised to unit length (FaceNet's outputs are unit
vectors; the straight line between two of them is not), a departure from plain linear interpolation.
Checkpoints carry FaceNet's ~94 MB of weights.
Under torchrun every rank prepares the faces itself (the same cache, written atomically by each);
run train-portraits once on one process first, and the ranks then only check the cache.

Shapes: n samples, C = 3 channels, S image_size, F = 160 FaceNet crop size, D = 512.
"""
from __future__ import annotations

import dataclasses
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

from encoders.lookup import EmbeddingTable
from pcae.checkpoint import load_checkpoint
from pcae.data import convert_images
from pcae.faces import (DEFAULT_FACE_SIZE, FACE_ENCODERS, Progress, build_face_encoder, cache_variant,
                        default_cache_path, encoder_weights, load_embeddings, prepare_faces, sibling_caches)
from pcae.images import save_grid
from pcae.kinds import task_from_checkpoint
from pcae.resume import UNUSED, stored_values
from pcae.train import Task, TrainConfig, resolve_device
from pcae.utils import SOFTWARE, PcaeError, atomic_path, written_by_pcae

RANDOM_WARNING = ("FaceNet weights are random (NOT pretrained): embeddings carry no identity, "
                  "so the portraits and scores say nothing about the person")


# ---------------------------------------------------------------------------------------------
# Training: the task and its spec for pcae.train


class PortraitTask(Task):
    """p(face | FaceNet embedding): a conditional Gated PixelCNN over the face cache's images.

    The loop's labels are cache row numbers; `h(labels)` is their embeddings (encoders.lookup).
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
        # h of a face = its embedding in the cache, by row: the loop's labels are row numbers
        self.encoder = EmbeddingTable(facenet.dim, table=embeddings, load=lambda: load_embeddings(
            self.faces["cache"], self.faces.get("weights_fingerprint"), self.faces.get("listing")))

    def h(self, labels: torch.Tensor) -> torch.Tensor:
        return self.encoder(labels)  # (B, D)

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
        n = len(self.encoder.table("cpu"))
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
    """A portrait run: the face encoder and face cache options, and the PixelCNN's model options.

    `pcae.train.train(TrainConfig(data="folder:PHOTOS", ...), PortraitSpec(...))` is the whole job
    (`pcae train-portraits` and `pcae train-ae --encoder facenet` make that call): a new run's
    `prepare` step detects and embeds the faces (the face cache, pcae.faces) and points the
    config's data at the cache; the config's image_size is the faces' side (None: 32).

    encoder: the face encoder to condition on, "facenet" (the paper's) or "dlib" (pretrained,
        offline; the facenet options do not apply to it).
    facenet_weights: "vggface2" (None: that), "casia-webface", a file, or "random".
    facenet_crop_size: MTCNN crop / FaceNet input side (None: 160, FaceNet's).
    cache: the face cache (None: `default_cache_path(photos, encoder, variant)`, one per source
        and set of options, reusing the detections of the source's other caches).
    max_photos: use only the first N photos (sorted by path).
    """

    kind: ClassVar[str] = "portrait"
    channels: int = 48  # divisible by 3: one feature group per colour
    n_layers: int = 5
    kernel_size: int = 3
    first_kernel_size: int = 7
    head_channels: int = 0
    encoder: str = "facenet"
    facenet_weights: str | None = None
    facenet_crop_size: int | None = None
    cache: str | None = None
    max_photos: int | None = None
    # set by prepare: the cache's info and the encoder that embedded it (not options)
    faces: dict = field(default_factory=dict, metadata={"option": False})
    facenet: Any = field(default=None, repr=False, compare=False, metadata={"option": False})

    def __post_init__(self):
        if self.cache is not None:  # as the face cache's info stores it, so that a resume can compare
            object.__setattr__(self, "cache", str(Path(self.cache).expanduser().resolve()))
        from encoders.facenet import PRETRAINED_FILES

        if self.facenet_weights not in (None, "random", *PRETRAINED_FILES):  # a file, as FaceNet stores it
            object.__setattr__(self, "facenet_weights", str(Path(self.facenet_weights).expanduser().resolve()))
        if self.max_photos is not None and not (isinstance(self.max_photos, int) and self.max_photos >= 1):
            raise PcaeError(f"--max-photos must be >= 1, got {self.max_photos!r}")
        if self.facenet_crop_size is not None and not (isinstance(self.facenet_crop_size, int)
                                                       and self.facenet_crop_size >= 75):
            raise PcaeError(f"--facenet-crop-size must be >= 75 (InceptionResnetV1's smallest input), got "
                            f"{self.facenet_crop_size!r}")
        if self.encoder not in FACE_ENCODERS:
            raise PcaeError(f"portraits are conditioned on a face encoder: {', '.join(FACE_ENCODERS)}; "
                            f"got {self.encoder!r}")
        if self.encoder != "facenet" and (self.facenet_weights is not None
                                          or self.facenet_crop_size is not None):
            raise PcaeError("--facenet-weights and --facenet-crop-size go with --encoder facenet, "
                            f"not {self.encoder}")

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

    def prepare(self, config: TrainConfig, progress: Progress | None = None):
        """Faces of `config.data`'s photos in the face cache (made or reused); returns the config
        pointed at the cache ("h5:CACHE", RGB at the faces' side), this spec with the faces and
        the encoder, and prepare_faces' info. Bad options fail before any detection runs."""
        source = config.data
        kind, _, path = source.partition(":")
        if kind not in ("folder", "h5") or not path:
            hint = f"; did you mean folder:{source}?" if Path(source).is_dir() else ""
            detector = "MTCNN" if self.encoder == "facenet" else "dlib's detector"
            raise PcaeError(f"--encoder {self.encoder} needs photos as folder:PATH or h5:PATH ({detector} "
                            f"finds the faces), got --data {source!r}{hint}")
        if config.image_channels not in (None, 3):
            raise PcaeError(f"--image-channels {config.image_channels} does not go with --encoder "
                            f"{self.encoder} (faces are RGB)")
        size = config.image_size or DEFAULT_FACE_SIZE
        self.config((3, size, size), FACE_ENCODERS[self.encoder])  # bad options fail before detection
        encoder = build_face_encoder(self.encoder, self.facenet_weights or "vggface2",
                                     self.facenet_crop_size or 160)
        reuse = ()
        if self.cache is not None:
            cache = Path(self.cache).expanduser()
        else:  # one default cache per source and options: no run rewrites the cache another trains on
            cache = default_cache_path(source, self.encoder, cache_variant(encoder, size, self.max_photos))
            reuse = sibling_caches(cache)
        encoder.to(resolve_device(config.device))
        faces = prepare_faces(source, cache, encoder, size, max_photos=self.max_photos, progress=progress,
                              reuse=reuse)
        encoder.cpu()
        config = dataclasses.replace(config, data=f"h5:{faces['cache']}", image_size=size,
                                     image_channels=3)
        return config, dataclasses.replace(self, faces=faces, facenet=encoder), faces

    def stored(self, configs: dict) -> dict:
        """The options as a stored run has them; max_photos is UNUSED (the run keeps its faces)."""
        paths = {name: ("model", name) for name in ("channels", "n_layers", "kernel_size",
                                                     "first_kernel_size", "head_channels")}
        paths |= {"encoder": ("facenet", "name"), "cache": ("faces", "cache")}
        if stored_values(configs, {"name": ("facenet", "name")}).get("name") == "facenet":
            paths |= {"facenet_weights": ("facenet", "weights"), "facenet_crop_size": ("facenet", "image_size")}
        return {"max_photos": UNUSED, **stored_values(configs, paths)}

    def stored_source(self, configs: dict) -> str | None:
        """The photos a stored run's face cache was made from: given again as --data, they are
        the run's data (its config's data is the cache)."""
        return stored_values(configs, {"source": ("faces", "source")}).get("source")

    def build(self, dataset) -> PortraitTask:
        if self.facenet is None:
            raise ValueError("PortraitSpec.build needs the face encoder that made the cache (prepare)")
        return PortraitTask(self.config(dataset.shape, self.facenet.dim), self.facenet, self.faces)

    def restore(self, checkpoint: dict) -> PortraitTask:
        return PortraitTask.from_checkpoint(checkpoint)


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
        PortraitResult (the scores: eval.faces.portrait_scores). With dlib installed it also
        holds the independent identity judgement and the pose / lighting spread.
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
    from eval.faces import portrait_scores

    scores = portrait_scores(model, crop, source, samples, h, references)
    return PortraitResult(photo=str(photo), probability=prob, source=source, samples=samples,
                          random_weights=model.random_weights,
                          facenet_weights=encoder_weights(model.facenet), sampler=method, seed=seed,
                          temperature=temperature, **scores)


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
        if getattr(model.facenet, "unit_norm", False):  # keep h where the encoder's embeddings lie
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


def _pcae_png():
    """PNG text chunks that mark a file as pcae's (what --force may replace)."""
    from PIL.PngImagePlugin import PngInfo

    info = PngInfo()
    info.add_text("Software", SOFTWARE)
    return info


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
    written = set()
    for k, image in enumerate(result.samples):
        with atomic_path(path / f"sample_{k:03d}.png", suffix=".png") as tmp:
            Image.fromarray(image.permute(1, 2, 0).numpy()).save(tmp, format="png", pnginfo=_pcae_png())
        written.add(f"sample_{k:03d}.png")
    for older in path.glob("sample_*.png"):  # a replaced set's extra samples (pcae's own) go too
        if older.name not in written and written_by_pcae(older):
            older.unlink()
    with atomic_path(path / "scores.json") as tmp:
        tmp.write_text(json.dumps({**meta, "similarities": result.similarities}, indent=2) + "\n")
    return path
