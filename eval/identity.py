"""Who is in a portrait: a small pixel-space classifier of the people a portrait model knows.

Portraits are drawn given a face network's embedding (dlib's or FaceNet's), so that network cannot
be their judge: it would score its own conditioning. This judge never sees an embedding. It is a
small CNN trained on the face cache's training faces, at the portraits' size and channels, with
each face's person as its class (the photo's folder, pcae.data.person_of), and tested on the
cache's test faces: every person has faces in both splits (pcae.data.person_split). Its accuracy
there is the ceiling of every figure it gives. It is the face counterpart of the Fashion-MNIST
sample judge (eval/judge.py) and is trained the same way, with the augmentations a face needs
(shifts of a few pixels, mirror images, brightness and contrast) because a person has ~8 photos.

    IdentityJudge          the trained net, the people (class names) and its test accuracy
    train_identity_judge   trains one on images and person names (tens of seconds on 2 cores)
    identity_judge_of_cache  the judge of a face cache, trained once and cached on disk

It knows the people with at least MIN_FACES training faces (a class of one or two photos teaches a
classifier nothing and has no test face to measure it on; every person, in a folder where fewer
than two people have that many): the bundled 55 people all, of LFW's
5,719 the ~400 with 5 photos or more. Its penultimate layer (`features`) is also the embedding
that eval.unseen compares portraits of people it never saw with their other photos.

Known limits: it only knows the people of its training faces; a face of anyone else is still
named as one of them (so the figure "named the source's person" is only given for known people).
With ~8 photos a person its accuracy varies by a few points between seeds.

Shapes: B faces, C channels (1 or 3), S the portraits' side, P people.
"""
from __future__ import annotations

import collections
import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from pcae.data import convert_images
from pcae.files import atomic_path, cache_root

IDENTITY_FORMAT = 1  # bump when the network or its training changes: old cache entries are ignored
MIN_FACES = 4  # training faces a person needs to be one of the judge's classes


@dataclass(frozen=True)
class IdentityConfig:
    """The identity judge's network and training."""

    channels: int = 24
    epochs: int = 40
    batch_size: int = 32
    lr: float = 3e-3
    weight_decay: float = 0.05
    dropout: float = 0.3
    shift: int = 2  # pixels of random shift
    seed: int = 0


class IdentityNet(nn.Module):
    """Five 3x3 conv-BatchNorm-ReLU blocks (two 2x2 max-pools), global average pooling, dropout, Linear."""

    def __init__(self, in_channels: int, people: int, config: IdentityConfig):
        super().__init__()
        c = config.channels

        def block(i, o):
            return [nn.Conv2d(i, o, 3, padding=1, bias=False), nn.BatchNorm2d(o), nn.ReLU()]

        self.body = nn.Sequential(*block(in_channels, c), *block(c, c), nn.MaxPool2d(2),
                                  *block(c, 2 * c), *block(2 * c, 2 * c), nn.MaxPool2d(2),
                                  *block(2 * c, 4 * c), nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.classify = nn.Sequential(nn.Dropout(config.dropout), nn.Linear(4 * c, people))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """(B, C, S, S) levels (float or integer) -> (B, P) logits."""
        return self.classify(self.body(images.float() / 255.0 - 0.5))


def _augment(x: torch.Tensor, shift: int, generator: torch.Generator) -> torch.Tensor:
    """A batch of float levels (B, C, S, S), shifted, maybe mirrored, brightness and contrast jittered."""
    B, _, H, W = x.shape
    padded = F.pad(x, (shift,) * 4, mode="replicate")
    dy, dx = torch.randint(0, 2 * shift + 1, (2,), generator=generator).tolist()
    x = padded[..., dy:dy + H, dx:dx + W]
    if torch.rand((), generator=generator) < 0.5:
        x = x.flip(-1)
    contrast = 1 + 0.6 * (torch.rand(B, 1, 1, 1, generator=generator) - 0.5)
    brightness = 80 * (torch.rand(B, 1, 1, 1, generator=generator) - 0.5)
    return ((x - 128) * contrast + 128 + brightness).clamp(0, 255)


class IdentityJudge:
    """A trained IdentityNet, the people it knows and its accuracy on real test faces."""

    def __init__(self, net: IdentityNet, people: list[str], accuracy: float, config: IdentityConfig):
        self.net, self.people, self.accuracy, self.config = net.eval(), list(people), float(accuracy), config

    @torch.no_grad()
    def predict(self, images: torch.Tensor) -> torch.Tensor:
        """(B, C, S, S) levels -> (B,) indices into `people`."""
        parts = [self.net(images[i:i + 256].cpu()).argmax(1) for i in range(0, len(images), 256)]
        return torch.cat(parts) if parts else torch.zeros(0, dtype=torch.long)

    @torch.no_grad()
    def features(self, images: torch.Tensor) -> torch.Tensor:
        """(B, C, S, S) levels -> (B, F) unit-length features of the penultimate layer."""
        parts = [self.net.body(images[i:i + 256].cpu().float() / 255.0 - 0.5) for i in range(0, len(images), 256)]
        return F.normalize(torch.cat(parts), dim=1) if parts else torch.zeros(0, self.net.classify[-1].in_features)

    def name(self, images: torch.Tensor) -> list[str]:
        """The person the judge sees in each image."""
        return [self.people[k] for k in self.predict(images).tolist()]

    def state(self) -> dict:
        """What a checkpoint stores: plain values and tensors (torch.load(weights_only=True) reads them)."""
        return {"people": self.people, "accuracy": self.accuracy, "config": asdict(self.config),
                "in_channels": self.net.body[0].in_channels, "state_dict": self.net.state_dict()}

    @classmethod
    def from_state(cls, state: dict) -> "IdentityJudge":
        config = IdentityConfig(**state["config"])
        net = IdentityNet(state["in_channels"], len(state["people"]), config)
        net.load_state_dict(state["state_dict"])
        return cls(net, state["people"], state["accuracy"], config)


def train_identity_judge(images: torch.Tensor, persons: list[str], test_images: torch.Tensor,
                         test_persons: list[str], config: IdentityConfig = IdentityConfig()) -> IdentityJudge:
    """Train the judge on faces and their person names; its accuracy is measured on the test faces.

    Args:
        images: (B, C, S, S) uint8 training faces; persons: their person names.
        test_images, test_persons: the held-out faces of the same people (others are ignored).
    """
    people = sorted(set(persons))
    index = {p: k for k, p in enumerate(people)}
    labels = torch.tensor([index[p] for p in persons])
    generator = torch.Generator().manual_seed(config.seed)
    with torch.random.fork_rng(devices=[]):  # the judge never moves the caller's RNG
        torch.manual_seed(config.seed)
        net = IdentityNet(images.shape[1], len(people), config)
        batch = min(config.batch_size, len(images))
        steps = config.epochs * max(1, len(images) // batch)
        optimizer = torch.optim.AdamW(net.parameters(), lr=config.lr, weight_decay=config.weight_decay)
        schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, config.lr, total_steps=steps)
        net.train()
        for step in range(steps):
            if step % max(1, len(images) // batch) == 0:
                order = torch.randperm(len(images), generator=generator)
            lo = (step % max(1, len(images) // batch)) * batch
            rows = order[lo:lo + batch]
            loss = F.cross_entropy(net(_augment(images[rows].float(), config.shift, generator)), labels[rows])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if step < steps - 1:
                schedule.step()
    judge = IdentityJudge(net, people, 0.0, config)
    known = [k for k, p in enumerate(test_persons) if p in index]
    if known:
        truth = torch.tensor([index[test_persons[k]] for k in known])
        judge.accuracy = float((judge.predict(test_images[known]) == truth).float().mean())
    return judge


def faces_of_cache(cache: str | Path, channels: int) -> dict:
    """A face cache's faces with a person, by split: {"train": (images, persons), "test": (...)};
    images (B, channels, S, S) uint8."""
    import h5py


    with h5py.File(cache, "r") as f:
        persons = f["persons"].asstr()[:] if "persons" in f else []
        split = f["split"][:]
        rows = [k for k, p in enumerate(persons) if p]
        images = torch.from_numpy(f["images"][sorted(rows)]) if rows else torch.zeros(0, 3, 1, 1, dtype=torch.uint8)
    images = convert_images(images, channels)
    out = {}
    for name, flag in (("train", 0), ("test", 1)):
        keep = [i for i, k in enumerate(rows) if split[k] == flag]
        out[name] = (images[keep], [persons[rows[i]] for i in keep])
    return out


def identity_judge_of_cache(cache: str | Path, channels: int, config: IdentityConfig = IdentityConfig(),
                            listing: str = "") -> IdentityJudge | None:
    """The identity judge of a face cache's people at `channels`: read from pcae's cache folder
    (cache_root()/judges), or trained and stored there. None when fewer than two people have faces."""
    faces = faces_of_cache(cache, channels)
    counts = collections.Counter(faces["train"][1])
    least = MIN_FACES if sum(n >= MIN_FACES for n in counts.values()) >= 2 else 1  # tiny folders: all
    for split, (images, persons) in faces.items():
        keep = [k for k, p in enumerate(persons) if counts[p] >= least]
        faces[split] = (images[keep], [persons[k] for k in keep])
    images, persons = faces["train"]
    if len(set(persons)) < 2:
        return None
    key = hashlib.sha1(json.dumps([IDENTITY_FORMAT, str(cache), listing, list(images.shape), persons,
                                   faces["test"][1], asdict(config)], sort_keys=True).encode()).hexdigest()[:16]
    path = cache_root() / "judges" / f"identity-{key}.pt"
    if path.is_file():
        try:
            return IdentityJudge.from_state(torch.load(path, map_location="cpu", weights_only=True))
        except Exception:  # a torn or foreign file: train anew and replace it
            pass
    judge = train_identity_judge(images, persons, *faces["test"], config=config)
    try:
        with atomic_path(path) as tmp:
            torch.save(judge.state(), tmp)
    except OSError:  # a read-only cache only costs the next run the training
        pass
    return judge
