"""Portraits of one person from one photo: a Gated PixelCNN conditioned on face embeddings [1, 3.3].

The paper trains a conditional PixelCNN p(face | e) where e is the embedding of the face by a
frozen network trained with a triplet loss (FaceNet [2]). Given the embedding of a face, the
decoder draws new portraits of that person: other poses, expressions and lighting. Linear
interpolation between two embeddings morphs one face into the other. pcae conditions on FaceNet
when its pretrained weights are on the machine, else on dlib's ResNet descriptors (installs
offline; encoders/dlib.py); `--encoder` chooses.

Three steps, each a public function:

1. `PortraitSpec.prepare` turns photos into a face cache (pcae/faces.py: aligned crops, training
   images, the frozen encoder's embeddings, the person of each photo) and trains the identity
   judge on it (eval/identity.py).
2. Training goes through the generic loop, `pcae.train.train(config, PortraitSpec(...))` with
   `PortraitTask`: the cache doubles as an `h5:` data source whose labels are row numbers; the
   task maps each row to its embedding (encoders.lookup). Checkpoints are of kind "portrait" and
   carry the face encoder's config (FaceNet's weights too), the identity judge and, per person,
   the mean embedding and the pose and lighting spread of their photos: `pcae portrait` needs
   nothing else.
3. `pcae.portrait.draw_portraits(checkpoint, photo, n)` detects and embeds the face of one photo,
   draws n portraits in one batch and scores them (eval.faces.portrait_scores);
   `pcae.portrait.interpolate(checkpoint, a, b, steps)` walks between two embeddings.

This module holds steps 1 and 2 and the model a checkpoint rebuilds (`PortraitModel`).

The recipe (`benchmarks/portrait_recipe.py` measures it): faces are dlib-aligned chips at 32x32,
one channel when every photo is grey; h enters every layer globally and through the
location-dependent map m(h) (as in the auto-encoder recipe); and, a departure from the paper made
for a small corpus, each training face is conditioned with probability `identity_swap` on the
embedding of another training photo of the same person. Without the swap the decoder learns to
redraw the one photo each embedding came from (at ~8 photos a person it can), and its portraits of
one photo are near-copies; with it, h can only say who, and the decoder draws the person's poses
and lighting.

References:
    [1] van den Oord et al., "Conditional Image Generation with PixelCNN Decoders", 2016,
        arXiv:1606.05328.
    [2] Schroff et al., "FaceNet: A Unified Embedding for Face Recognition and Clustering", 2015,
        arXiv:1503.03832 (facenet-pytorch's InceptionResnetV1 and MTCNN, see encoders/facenet.py).

Known limits: with 55 people the decoder knows faces of those people; a person it never saw is
drawn as a blend of similar known faces (benchmarks/portrait_recipe.py --holdout measures it).
Interpolated FaceNet embeddings are renormalised to unit length. Checkpoints of FaceNet-conditioned
models carry its ~94 MB of weights. Under torchrun every rank prepares the faces itself; run
train-portraits once on one process first, and the ranks then only check the cache.

Shapes: n samples, C channels (1 or 3), S image side, F encoder crop side, D embedding dim, P people.
"""
from __future__ import annotations

import dataclasses
import fnmatch
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import h5py
import torch
from torch import nn

from encoders import load_encoder
from encoders.facenet import PRETRAINED_FILES, pretrained_path
from encoders.lookup import EmbeddingTable
from eval.faces import face_measures, judge_test_faces, spread
from eval.identity import IdentityJudge, identity_judge_of_cache
from pcae.batches import resolve_device
from pcae.data import BUNDLED_FACES, convert_images, image_files
from pcae.formats import HELD_OUT
from pcae.settings import PortraitSettings
from pcae.errors import PcaeError
from pcae.faces import (
    DEFAULT_FACE_SIZE,
    FACE_ENCODERS,
    Progress,
    build_face_encoder,
    cache_variant,
    default_cache_path,
    load_embeddings,
    load_persons,
    prepare_faces,
    sibling_caches,
)
from pcae.machine import check_fits
from pcae.pixelcnn import GatedPixelCNN, PixelCNNConfig, bits_per_dim
from pcae.resume import UNUSED, stored_values
from pcae.sampling import sample
from pcae.task import Task
from pcae.train import TrainConfig

JUDGED_PER_FACE = 4  # portraits drawn per test face for the figures at the end of a run

def choose_encoder(name: str) -> tuple[str, str]:
    """("facenet" | "dlib", why) for --encoder auto: FaceNet when its pretrained weights are
    on this machine (facenet-pytorch would download them otherwise), else dlib, which installs offline."""
    if name != "auto":
        return name, ""

    if pretrained_path("vggface2").is_file():
        return "facenet", "FaceNet's pretrained VGGFace2 weights are on this machine"
    return "dlib", f"FaceNet's pretrained weights are not on this machine ({pretrained_path('vggface2')})"

class Standardize(nn.Module):
    """h = (embedding - mean) / std per dimension, with the training faces' mean and std: a face
    encoder's dimensions are small (dlib's ~0.05), and the decoder's conditioning trains faster on
    unit-scale inputs (the conv encoder's BatchNorm does the same for the auto-encoder)."""

    def __init__(self, dim: int, embeddings: torch.Tensor | None = None):
        super().__init__()
        mean = torch.zeros(dim) if embeddings is None else embeddings.mean(0)
        std = torch.ones(dim) if embeddings is None or len(embeddings) < 2 else embeddings.std(0)
        self.register_buffer("mean", mean)
        self.register_buffer("std", std.clamp_min(1e-6))  # a constant dimension stays 0, not inf

    def forward(self, embeddings: torch.Tensor) -> torch.Tensor:
        return (embeddings - self.mean) / self.std

class PortraitTask(Task):
    """p(face | face embedding): a conditional Gated PixelCNN over the face cache's images.

    The loop's labels are cache row numbers; `h(rows)` is their embeddings (encoders.lookup).
    """

    kind = "portrait"
    metric = "bpd"

    def __init__(self, config, facenet, faces: dict, embeddings: torch.Tensor | None = None,
                 identity=None, people: dict | None = None, identity_swap: float = 0.0,
                 h_noise: float = 0.0, h_drop: float = 0.0, norm: Standardize | None = None,
                 sampling: dict | None = None, oversample: str | None = None):
        if config.cond_dim != facenet.dim:
            raise ValueError(f"config.cond_dim must equal the face encoder's dim {facenet.dim}, "
                             f"got {config.cond_dim}")
        if not 0 <= identity_swap <= 1:
            raise ValueError(f"identity_swap must be in [0, 1], got {identity_swap}")
        if not h_noise >= 0:
            raise ValueError(f"h_noise must be >= 0, got {h_noise}")
        if not 0 <= h_drop < 1:
            raise ValueError(f"h_drop must be in [0, 1), got {h_drop}")
        self.h_noise, self.h_drop = float(h_noise), float(h_drop)
        self.oversample = oversample
        parse_oversample(oversample)
        self.sampling = sampling_defaults(sampling)
        self.norm = norm if norm is not None else Standardize(facenet.dim)  # identity until loaded
        self.config, self.facenet, self.faces = config, facenet, dict(faces)
        self.identity, self.people, self.identity_swap = identity, people, float(identity_swap)
        self.model = GatedPixelCNN(config)
        # h of a face = its embedding in the cache, by row: the loop's labels are row numbers
        self.encoder = EmbeddingTable(facenet.dim, table=embeddings, load=lambda: load_embeddings(
            self.faces["cache"], self.faces.get("weights_fingerprint"), self.faces.get("listing")))
        self._partners: tuple[torch.Tensor, torch.Tensor] | None = None

    def h(self, rows: torch.Tensor) -> torch.Tensor:
        """The decoder's h of cache rows: their embeddings, standardised. (B,) -> (B, D)"""
        return self.norm.to(rows.device)(self.encoder(rows))

    def _swapped(self, rows: torch.Tensor) -> torch.Tensor:
        """Each row, or with probability identity_swap a random training face of the same person."""
        if self._partners is None:  # (N, K) same-person training rows of each row, and their count
            persons, split = load_persons(self.faces["cache"])
            groups: dict[str, list[int]] = {}
            for k, (p, s) in enumerate(zip(persons, split)):
                if p and s == 0:
                    groups.setdefault(p, []).append(k)
            lists = [groups.get(p, [k]) if p else [k] for k, p in enumerate(persons)]
            table = torch.zeros(len(lists), max(map(len, lists)), dtype=torch.long)
            for k, rows_k in enumerate(lists):
                table[k, :len(rows_k)] = torch.tensor(rows_k)
            self._partners = table, torch.tensor([len(r) for r in lists])
        table, count = (t.to(rows.device) for t in self._partners)
        pick = (torch.rand(rows.shape, device=rows.device) * count[rows]).long()
        swap = torch.rand(rows.shape, device=rows.device) < self.identity_swap
        return torch.where(swap, table[rows, pick], rows)

    def configs(self):
        out = {"model": dataclasses.asdict(self.config), "facenet": self.facenet.config,
               "facenet_preprocessing": self.facenet.preprocessing, "faces": self.faces,
               "portrait": {"identity_swap": self.identity_swap, "h_noise": self.h_noise,
                            "h_drop": self.h_drop, "sampling": self.sampling, "oversample": self.oversample}}
        if self.identity is not None:
            out["identity"] = {k: v for k, v in self.identity.state().items() if k != "state_dict"}
        if self.people is not None:
            out["people"] = {"names": self.people["names"], "pose_light": self.people["pose_light"],
                             "threshold": self.people.get("threshold")}
        return out

    def repeats(self, dataset):
        """K for each training face of the people --oversample names (by their name's patterns), else 1."""
        patterns, k = parse_oversample(self.oversample)
        if not patterns:
            return None
        persons, _ = load_persons(self.faces["cache"])
        rows = dataset.labels if dataset.labels is not None else [dataset[i][1] for i in range(len(dataset))]
        named = torch.tensor([any(fnmatch.fnmatchcase(persons[int(r)], g) for g in patterns) for r in rows])
        if not named.any():
            raise PcaeError(f"--oversample {self.oversample}: no training face's person matches "
                            f"{', '.join(patterns)} (people are named by their folder, e.g. "
                            f"{persons[int(rows[0])] or '(none)'})")
        return torch.where(named, k, 1)

    def loss(self, images, labels):
        rows = self._swapped(labels) if self.identity_swap else labels
        h = self.h(rows)
        if self.h_noise:  # h is standardised: h_noise standard deviations of each dimension
            h = h + self.h_noise * torch.randn_like(h)
        if self.h_drop:  # h = 0, the mean face's: the decoder learns p(face) too (for guidance)
            h = h.masked_fill(torch.rand(len(h), 1, device=h.device) < self.h_drop, 0.0)
        logits = self.model.forward_float(self.model.scale(images), h)
        return {"bpd": bits_per_dim(logits, images)}

    @torch.no_grad()
    def evaluate(self, batches):
        """Mean test bits/dim over faces given their own embedding, and how many faces."""

        total, n = 0.0, 0
        for images, labels in batches:
            logits = self.model.forward_float(self.model.scale(images), self.h(labels))
            total += float(bits_per_dim(logits, images)) * len(images)
            n += len(images)
        return {"bpd": total / n, "images": n} if n else {}

    def sample_grid(self, examples, n, generator, temperature):
        """Rows of: a test face, then 4 portraits given its embedding."""

        images, labels = examples
        per_row = min(4, n)
        rows = min(len(images), math.ceil(n / per_row))
        h = self.h(labels[:rows]).repeat_interleave(per_row, dim=0)
        x = sample(self.model, rows * per_row, tuple(images.shape[1:]), h, temperature, generator)
        x = x.to(torch.uint8).view(rows, per_row, *images.shape[1:])
        return torch.cat([images[:rows, None], x], dim=1).flatten(0, 1), per_row + 1

    def grid_caption(self, examples, n):
        persons, _ = load_persons(self.faces["cache"])
        rows = examples[1][:min(len(examples[1]), math.ceil(n / min(4, n)))].tolist()
        return {"rows": [persons[r] or "-" for r in rows], "sources_first": True}

    def judge_run(self, test_ds, n: int, generator, temperature: float) -> dict:
        """The portrait figures over the first n test faces, JUDGED_PER_FACE portraits each
        (eval.faces.judge_test_faces)."""

        return judge_test_faces(self, test_ds, n, JUDGED_PER_FACE, generator, temperature)

    def check_data(self, dataset):
        C = self.config.image_channels
        if tuple(dataset.shape) != (C, *self.config.image_size):
            raise PcaeError(f"data {dataset.info.get('source')!r} has images of shape "
                            f"{tuple(dataset.shape)}, the portrait model expects "
                            f"({C}, {self.config.image_size[0]}, {self.config.image_size[1]})")
        labels = getattr(dataset, "labels", None)
        n = len(self.encoder.table("cpu"))
        if labels is not None and len(labels) and not (0 <= int(labels.min()) and int(labels.max()) < n):
            raise PcaeError(f"data {dataset.info.get('source')!r} is not the face cache this model "
                            f"was built for (row numbers beyond its {n} embeddings)")

    def state_dicts(self):
        out = {"model": self.model.state_dict(), "facenet": self.facenet.state_dict(),
               "h_norm": self.norm.state_dict()}
        if self.identity is not None:
            out["identity"] = self.identity.net.state_dict()
        if self.people is not None:
            out["people"] = {"embeddings": self.people["embeddings"]}
        return out

    def load_state_dicts(self, state_dicts):
        self.model.load_state_dict(state_dicts["model"])
        self.facenet.load_state_dict(state_dicts["facenet"])

    @classmethod
    def from_checkpoint(cls, checkpoint: dict) -> "PortraitTask":
        configs, states = checkpoint["configs"], checkpoint["state_dicts"]
        facenet = load_encoder(configs["facenet"], states.get("facenet"))  # an export may omit it
        identity = people = None
        if "identity" in configs and "identity" in states:  # runs before the judge have none
            identity = IdentityJudge.from_state({**configs["identity"], "state_dict": states["identity"]})
        if "people" in configs and "people" in states:
            people = {**configs["people"], "embeddings": states["people"]["embeddings"]}
        recipe = configs.get("portrait", {})
        task = cls(PixelCNNConfig(**configs["model"]), facenet, configs["faces"], identity=identity,
                   people=people, identity_swap=recipe.get("identity_swap", 0.0),
                   h_noise=recipe.get("h_noise", 0.0), h_drop=recipe.get("h_drop", 0.0),
                   sampling=recipe.get("sampling"), oversample=recipe.get("oversample"))
        task.model.load_state_dict(states["model"])
        if "h_norm" in states:  # runs before it conditioned on the raw embeddings
            task.norm.load_state_dict(states["h_norm"])
        return task

@dataclass(frozen=True)
class PortraitSpec(PortraitSettings):
    """A portrait run: its options (pcae.settings.PortraitSettings) and what `prepare` finds.

    `pcae.train.train(TrainConfig(data="faces", ...), PortraitSpec(...))` is the whole job
    (`pcae train-portraits` makes that call): a new run's `prepare` step detects and embeds the
    faces (the face cache, pcae.faces), trains the identity judge, and points the config's data
    at the cache.
    """

    kind: ClassVar[str] = "portrait"
    # set by prepare: the cache's info, the encoder that embedded it, the judge (not options)
    faces: dict = field(default_factory=dict, metadata={"option": False})
    facenet: Any = field(default=None, repr=False, compare=False, metadata={"option": False})
    identity: Any = field(default=None, repr=False, compare=False, metadata={"option": False})
    people: Any = field(default=None, repr=False, compare=False, metadata={"option": False})

    def __post_init__(self):
        if self.cache is not None:  # as the face cache's info stores it, so that a resume can compare
            object.__setattr__(self, "cache", str(Path(self.cache).expanduser().resolve()))

        if self.facenet_weights not in (None, "random", *PRETRAINED_FILES):  # a file, as FaceNet stores it
            object.__setattr__(self, "facenet_weights", str(Path(self.facenet_weights).expanduser().resolve()))
        if self.max_photos is not None and not (isinstance(self.max_photos, int) and self.max_photos >= 1):
            raise PcaeError(f"--max-photos must be >= 1, got {self.max_photos!r}")
        if self.facenet_crop_size is not None and not (isinstance(self.facenet_crop_size, int)
                                                       and self.facenet_crop_size >= 75):
            raise PcaeError(f"--facenet-crop-size must be >= 75 (InceptionResnetV1's smallest input), got "
                            f"{self.facenet_crop_size!r}")
        if not self.h_noise >= 0:
            raise PcaeError(f"--h-noise must be >= 0, got {self.h_noise!r}")
        if not 0 <= self.h_drop < 1:
            raise PcaeError(f"--h-drop must be in [0, 1), got {self.h_drop!r}")
        parse_oversample(self.oversample)
        if not 0 <= self.identity_swap <= 1:
            raise PcaeError(f"--identity-swap must be in [0, 1], got {self.identity_swap!r}")
        if not 0 <= self.holdout < 1:
            raise PcaeError(f"--holdout-people must be in [0, 1), got {self.holdout!r}")
        if self.spatial_channels < 0:
            raise PcaeError(f"--spatial-channels must be >= 0, got {self.spatial_channels!r}")
        facenet_options = self.facenet_weights is not None or self.facenet_crop_size is not None
        if self.encoder == "auto" and facenet_options:  # FaceNet's options mean FaceNet
            object.__setattr__(self, "encoder", "facenet")
        if self.encoder not in ("auto", *FACE_ENCODERS):
            raise PcaeError(f"portraits are conditioned on a face encoder: auto, {', '.join(FACE_ENCODERS)}; "
                            f"got {self.encoder!r}")
        if self.encoder == "dlib" and facenet_options:
            raise PcaeError("--facenet-weights and --facenet-crop-size go with --encoder facenet, not dlib")

    def config(self, image_shape: tuple[int, int, int], cond_dim: int):
        """The decoder's PixelCNNConfig; PcaeError for bad model options."""

        C, H, W = image_shape
        try:
            return PixelCNNConfig(image_channels=C, channels=self.channels, n_layers=self.n_layers,
                                  kernel_size=self.kernel_size, first_kernel_size=self.first_kernel_size,
                                  head_channels=self.head_channels, cond_dim=cond_dim, image_size=(H, W),
                                  spatial_cond=self.spatial_channels > 0,
                                  spatial_channels=max(1, self.spatial_channels))
        except ValueError as e:
            raise PcaeError(f"model options: {e}") from None

    def prepare(self, config: TrainConfig, progress: Progress | None = None):
        """Faces of `config.data`'s photos in the face cache (made or reused) and the identity
        judge of their people; returns the config pointed at the cache ("h5:CACHE" at the faces'
        side and channels), this spec with the faces, encoder, judge and people, and the faces'
        info. Bad options fail before any detection runs."""
        source = config.data or "faces"
        kind, _, path = source.partition(":")
        if source != "faces" and (kind not in ("folder", "h5") or not path):
            hint = f"; did you mean folder:{source}?" if Path(source).is_dir() else ""
            raise PcaeError(f"portraits need photos: faces (the bundled ones), folder:PATH or h5:PATH, "
                            f"got --data {source!r}{hint}")
        if config.image_channels not in (None, 1, 3):
            raise PcaeError(f"--image-channels must be 1 or 3 for faces, got {config.image_channels}")
        name, why = choose_encoder(self.encoder)
        size = config.image_size or DEFAULT_FACE_SIZE
        self.config((config.image_channels or 1, size, size), FACE_ENCODERS[name])  # fail before detection
        if kind != "h5":  # the face cache holds every photo's face at size x size, in colour
            photos = len(image_files(Path(path).expanduser() if path else BUNDLED_FACES))
            photos = min(photos, self.max_photos or photos)
            check_fits(3.0 * photos * size * size, f"--image-size {size}: {photos} faces of {size}x{size}")
        encoder = build_face_encoder(name, self.facenet_weights or "vggface2", self.facenet_crop_size or 160)
        reuse = ()
        if self.cache is not None:
            cache = Path(self.cache).expanduser()
        else:  # one default cache per source and options: no run rewrites the cache another trains on
            cache = default_cache_path(source, name, cache_variant(encoder, size, self.max_photos, self.holdout))
            reuse = sibling_caches(cache)
        encoder.to(resolve_device(config.device))
        faces = prepare_faces(source, cache, encoder, size, max_photos=self.max_photos, progress=progress,
                              reuse=reuse, holdout=self.holdout)
        encoder.cpu()
        if faces["test"] == 0:  # split_faces keeps a person's only photo in training
            raise PcaeError(f"{faces['origin']}: no face is left for testing without dropping a person "
                            f"({faces['train']} faces, each person's only one): add a second photo of someone")
        channels = config.image_channels or (1 if faces["grey"] else 3)
        self.config((channels, size, size), encoder.dim)
        identity, people = _identity_and_people(faces, channels, encoder)
        faces = {**faces, "encoder_choice": why} if why else faces
        config = dataclasses.replace(config, data=f"h5:{faces['cache']}", image_size=size,
                                     image_channels=channels)
        spec = dataclasses.replace(self, encoder=name, faces=faces, facenet=encoder, identity=identity,
                                   people=people)
        return config, spec, faces

    def stored(self, configs: dict) -> dict:
        """The options as a stored run has them; max_photos is UNUSED (the run keeps its faces)."""
        paths = {name: ("model", name) for name in ("channels", "n_layers", "kernel_size",
                                                     "first_kernel_size", "head_channels")}
        paths |= {"encoder": ("facenet", "name"), "cache": ("faces", "cache"), "holdout": ("faces", "holdout"),
                  "identity_swap": ("portrait", "identity_swap"), "h_noise": ("portrait", "h_noise"),
                  "h_drop": ("portrait", "h_drop"), "oversample": ("portrait", "oversample")}
        values = stored_values(configs, paths)
        model = configs.get("model", {}) if isinstance(configs.get("model"), dict) else {}
        values["spatial_channels"] = model.get("spatial_channels", 0) if model.get("spatial_cond") else 0
        values.setdefault("identity_swap", 0.0)
        values.setdefault("h_noise", 0.0)
        values.setdefault("h_drop", 0.0)
        values.setdefault("oversample", None)
        values.setdefault("holdout", 0.0)
        if values.get("encoder") == "facenet":
            values |= stored_values(configs, {"facenet_weights": ("facenet", "weights"),
                                              "facenet_crop_size": ("facenet", "image_size")})
        return {"max_photos": UNUSED, **values}

    def stored_source(self, configs: dict) -> str | None:
        """The photos a stored run's face cache was made from: given again as --data, they are
        the run's data (its config's data is the cache)."""
        return stored_values(configs, {"source": ("faces", "source")}).get("source")

    def build(self, dataset) -> PortraitTask:
        if self.facenet is None:
            raise ValueError("PortraitSpec.build needs the face encoder that made the cache (prepare)")
        table = load_embeddings(self.faces["cache"], self.faces.get("weights_fingerprint"))
        _, split = load_persons(self.faces["cache"])
        norm = Standardize(self.facenet.dim, table[torch.from_numpy(split == 0)])
        return PortraitTask(self.config(dataset.shape, self.facenet.dim), self.facenet, self.faces,
                            embeddings=table, identity=self.identity, people=self.people,
                            identity_swap=self.identity_swap, h_noise=self.h_noise, h_drop=self.h_drop,
                            norm=norm, oversample=self.oversample)

    def restore(self, checkpoint: dict) -> PortraitTask:
        return PortraitTask.from_checkpoint(checkpoint)

def _identity_and_people(faces: dict, channels: int, encoder):
    """The identity judge of the cache's people (eval.identity) and the people the model knows:
    every person with a training face, with their mean training embedding, the pose and lighting
    spread of all their faces (dlib's landmarks; None without dlib) and the distance under which
    a photo is called theirs (`known_threshold`). (None, None) when the photos have no people."""
    identity = identity_judge_of_cache(faces["cache"], channels, listing=faces["listing"])
    if identity is None:
        return None, None
    with h5py.File(faces["cache"], "r") as f:
        persons, split = f["persons"].asstr()[:], f["split"][:]
        embeddings = torch.from_numpy(f["embeddings"][:])
        images = convert_images(torch.from_numpy(f["images"][:]), channels)
    rows: dict[str, list[int]] = {}
    for k, (p, s) in enumerate(zip(persons, split)):
        if p and s == 0:
            rows.setdefault(p, []).append(k)
    names = sorted(rows)
    means = torch.stack([embeddings[rows[name]].mean(0) for name in names])
    measures = face_measures(images)  # None without dlib
    pose_light = None
    if measures is not None:
        by_person: dict[str, list] = {}
        for m, p in zip(measures, persons):
            by_person.setdefault(p, []).append(m)
        pose_light = {name: spread(by_person[name]) for name in names}
    unseen = embeddings[torch.from_numpy(split == HELD_OUT)]
    return identity, {"names": names, "embeddings": means, "pose_light": pose_light,
                      "threshold": known_threshold(means, unseen, encoder.same_person)}


def parse_oversample(text: str | None) -> tuple[list[str], int]:
    """--oversample "PATTERN[,PATTERN...]:K" -> (the patterns, K); ([], 1) for None; PcaeError if malformed."""
    if text is None:
        return [], 1
    patterns, _, k = text.rpartition(":")
    if not patterns or not k.isdigit() or int(k) < 1:
        raise PcaeError(f"--oversample must be PATTERN[,PATTERN...]:K (K >= 1; e.g. 'orl/*,yale/*:4'), "
                        f"got {text!r}")
    return patterns.split(","), int(k)


KNOWN_FALSE_RATE = 0.05  # at most this fraction of unseen people's photos is called a known person


def known_threshold(means: torch.Tensor, unseen: torch.Tensor, same_person: float) -> float:
    """The embedding distance under which a photo is called a known person: the encoder's
    same-person distance, lowered until at most KNOWN_FALSE_RATE of the photos of people the model
    never saw (`unseen` (U, D)) are that near some known person's mean (`means` (P, D)); with
    many people some mean is always near. The encoder's distance when there are no unseen photos."""
    if len(unseen) == 0 or len(means) == 0:
        return float(same_person)
    nearest = torch.cdist(unseen.double(), means.double()).min(dim=1).values
    return float(min(same_person, torch.quantile(nearest, KNOWN_FALSE_RATE, interpolation="lower")))


def sampling_defaults(sampling: dict | None) -> dict:
    """How a portrait model draws when not told: {"temperature", "guidance"} (pcae.sampling.sample),
    1 and 0 unless its config says otherwise (the shipped model's were chosen by measuring)."""
    return {"temperature": 1.0, "guidance": 0.0, **(sampling or {})}


class PortraitModel(nn.Module):
    """A trained portrait checkpoint: the decoder, its face encoder, what they were trained on,
    the identity judge and the people it knows (both None for runs made before them), and how it
    draws when not told (`sampling`: temperature and guidance)."""

    def __init__(self, decoder, facenet, faces: dict, identity=None, people: dict | None = None,
                 norm: Standardize | None = None, sampling: dict | None = None):
        super().__init__()
        self.decoder, self.facenet, self.faces = decoder, facenet, faces
        self.identity, self.people = identity, people
        self.norm = norm if norm is not None else Standardize(facenet.dim)
        self.sampling = sampling_defaults(sampling)

    def draw_settings(self, temperature: float | None = None, guidance: float | None = None) -> tuple[float, float]:
        """The temperature and guidance to draw with: those given, else the model's `sampling`."""
        return (self.sampling["temperature"] if temperature is None else temperature,
                self.sampling["guidance"] if guidance is None else guidance)

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

    def condition(self, embeddings: torch.Tensor) -> torch.Tensor:
        """Embeddings (B, D) -> the decoder's h (standardised as in training)."""
        return self.norm(embeddings)

    def embed(self, crops: torch.Tensor) -> torch.Tensor:
        """uint8 crops (B, C, H, W) of any size -> (B, D) embeddings on the decoder's device."""
        device = next(self.decoder.parameters()).device
        return self.facenet(crops.to(device).expand(-1, 3, -1, -1)).to(device)

    def shrink(self, crop: torch.Tensor) -> torch.Tensor:
        """An encoder crop (3, F, F) -> the decoder's image (1, C, S, S) uint8."""
        C, S, _ = self.image_shape
        return convert_images(crop[None].cpu(), C, S)

    def person_of(self, h: torch.Tensor) -> tuple[str | None, float | None]:
        """The known person nearest to embedding h (D,) and the distance to their mean training
        embedding; (None, distance) when even the nearest is farther than the encoder's
        known_threshold (calibrated on people it never saw); (None, None) when it knows no people."""
        if self.people is None:
            return None, None
        distances = (self.people["embeddings"].to(h.device) - h).norm(dim=1)
        k = int(distances.argmin())
        d = float(distances[k])
        return (self.people["names"][k] if d < self.known_threshold else None), d

    @property
    def known_threshold(self) -> float:
        """The distance under which a photo is called a known person (known_threshold)."""
        return float((self.people or {}).get("threshold") or self.facenet.same_person)

def build_portrait(checkpoint: dict) -> PortraitModel:
    """The bare model of a "portrait" checkpoint (pcae.kinds)."""
    task = PortraitTask.from_checkpoint(checkpoint)
    return PortraitModel(task.model, task.facenet, task.faces, task.identity, task.people, task.norm,
                         task.sampling)
