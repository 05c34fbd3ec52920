"""Sample semantics: does a sample given h keep its source image's content?

Bits/dim says how well a decoder models x given h under teacher forcing; it does not say whether the
images it *draws* given h look like the image h came from (a decoder can use h to lower its NLL and
still sample blank images). This module measures that with an independent judge:

    Judge            a small CNN classifier trained on the data's own labels (train split), its
                     accuracy on the real test images stored beside it as the ceiling of every figure.
    load_judge       the judge of a data source, trained once and cached on disk per source (key: the
                     source, its split sizes, image shape, classes and the judge's config).
    sample_semantics for samples drawn given the h of source images: the fraction judged to be their
                     source's class, mean ink (mean intensity on [0, 1]) against the sources', and
                     the diversity among the samples of one h (pixel RMS and judge-feature distance).
                     Deconv reconstructions (one per source) get the same figures, diversity aside.
    class_accuracy   for class-conditional samples: overall and per-class fraction judged to be the
                     class they were drawn for.

Known limits: the judge is only as good as its ceiling (0.83 on the bundled Fashion-MNIST subset,
trained in about 15 s on two CPU cores); it judges the class, not the identity of the source image.
Data without labels gets no judge (`load_judge` raises PcaeError).

Shapes: B sources, n samples per source, C image channels, H, W image size, F judge features.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from eval.metrics import mean_pairwise_distance
from pcae.data import load_dataset
from pcae.errors import PcaeError
from pcae.files import atomic_path, cache_root

JUDGE_FORMAT = 1  # bump when the network or its training changes: old cache entries are ignored


@dataclass(frozen=True)
class JudgeConfig:
    """The judge's network and training. Small on purpose: it trains in seconds on two CPU cores."""

    channels: int = 16
    features: int = 128
    epochs: int = 4
    batch_size: int = 64
    lr: float = 4e-3
    seed: int = 0
    max_train_images: int = 20000  # the first ones of a larger train split


class JudgeNet(nn.Module):
    """Two conv blocks (conv, ReLU, conv, ReLU, 2x2 max-pool), global pooling to 4x4, an MLP."""

    def __init__(self, in_channels: int, num_classes: int, config: JudgeConfig):
        super().__init__()
        c = config.channels
        self.body = nn.Sequential(
            nn.Conv2d(in_channels, c, 3, padding=1), nn.ReLU(),
            nn.Conv2d(c, c, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(c, 2 * c, 3, padding=1), nn.ReLU(),
            nn.Conv2d(2 * c, 2 * c, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.AdaptiveAvgPool2d(4), nn.Flatten(),
            nn.Linear(2 * c * 16, config.features), nn.ReLU(),
        )
        self.classify = nn.Linear(config.features, num_classes)

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) integer levels -> (B, F) penultimate features."""
        x = images.float() / 255.0 - 0.5
        return self.body(x)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.classify(self.features(images))


class Judge:
    """A trained JudgeNet, its classes and its accuracy on the real test images (the ceiling)."""

    def __init__(self, net: JudgeNet, classes: list[str], accuracy: float, info: dict):
        self.net = net.eval()
        self.classes = list(classes)
        self.accuracy = float(accuracy)
        self.info = dict(info)

    @torch.no_grad()
    def _map(self, fn, images: torch.Tensor, batch: int = 512) -> torch.Tensor:
        device = next(self.net.parameters()).device
        parts = [fn(images[i:i + batch].to(device)).cpu() for i in range(0, len(images), batch)]
        return torch.cat(parts) if parts else torch.empty(0)

    def predict(self, images: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) levels -> (B,) predicted class indices."""
        return self._map(lambda x: self.net(x).argmax(1), images).long()

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) levels -> (B, F) features (the distance space of the diversity figure)."""
        return self._map(self.net.features, images)


def _check_labelled(dataset, what: str) -> None:
    if not dataset.num_classes or dataset.labels is None:
        raise PcaeError(f"data {dataset.info.get('source')!r} has no labels: the sample judge "
                        f"needs a labelled source ({what})")


def train_judge(train_ds, test_ds, config: JudgeConfig = JudgeConfig(), device="cpu") -> Judge:
    """Train a JudgeNet on `train_ds` and measure its accuracy on all of `test_ds`.

    Args:
        train_ds, test_ds: labelled in-memory ImageDatasets (pcae.data) of the same shape.
    Returns:
        the Judge (on the CPU).
    """
    _check_labelled(train_ds, "train split")
    _check_labelled(test_ds, "test split")
    C = train_ds.shape[0]
    generator = torch.Generator().manual_seed(config.seed)
    with torch.random.fork_rng(devices=[]):  # the judge never moves the caller's RNG
        torch.manual_seed(config.seed)
        net = JudgeNet(C, train_ds.num_classes, config).to(device)
    images = train_ds.images[:config.max_train_images]
    labels = train_ds.labels[:config.max_train_images].long()
    optimizer = torch.optim.AdamW(net.parameters(), lr=config.lr)
    steps = config.epochs * max(1, len(images) // config.batch_size)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, config.lr, total_steps=steps)
    net.train()
    step = 0
    for _ in range(config.epochs):
        order = torch.randperm(len(images), generator=generator)
        for lo in range(0, len(images) - config.batch_size + 1, config.batch_size):
            idx = order[lo:lo + config.batch_size]
            x, y = images[idx].to(device), labels[idx].to(device)
            if torch.rand((), generator=generator) < 0.5:  # flips: garments, faces, digits... mostly
                x = x.flip(-1)                              # symmetric; makes the judge less brittle
            loss = F.cross_entropy(net(x), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if step < steps - 1:
                schedule.step()
            step += 1
    judge = Judge(net.cpu(), train_ds.classes, 0.0, {})
    accuracy = (judge.predict(test_ds.images) == test_ds.labels.long()).float().mean().item()
    judge.accuracy = accuracy
    return judge


def judge_key(train_ds, test_ds, config: JudgeConfig) -> str:
    """The cache key of a data source's judge: what it was trained and tested on, and how."""
    identity = {"format": JUDGE_FORMAT, "source": train_ds.info.get("source"),
                "origin": train_ds.info.get("origin"), "shape": list(train_ds.shape),
                "train": len(train_ds), "test": len(test_ds), "classes": list(train_ds.classes),
                "config": asdict(config)}
    return hashlib.sha1(json.dumps(identity, sort_keys=True, default=str).encode()).hexdigest()[:16]


def cache_dir() -> Path:
    """Where judges are cached: pcae.files.cache_root()/judges."""
    return cache_root() / "judges"


def load_judge(source: str = "fashion-mnist", *, channels: int | None = None,
               image_size: int | None = None, data_root: str | None = None,
               config: JudgeConfig = JudgeConfig(), cache: bool = True) -> Judge:
    """The judge of a data source: read from the cache, or trained (seconds) and cached.

    Args:
        source, channels, image_size, data_root: as in `pcae.data.load_dataset`; the judge sees
            the images exactly as the models do.
        cache: read and write the on-disk cache (cache_dir()).
    Raises:
        PcaeError when the source has no labels.
    """

    kwargs = dict(channels=channels, image_size=image_size, data_root=data_root)
    train_ds = load_dataset(source, split="train", **kwargs)
    test_ds = load_dataset(source, split="test", **kwargs)
    _check_labelled(train_ds, "train split")
    if train_ds.images is None or test_ds.images is None:
        raise PcaeError(f"data {source!r} is too large to hold in memory; the sample judge needs "
                        "an in-memory source")
    key = judge_key(train_ds, test_ds, config)
    path = cache_dir() / f"{key}.pt"
    info = {"source": source, "key": key, "train_images": min(len(train_ds), config.max_train_images),
            "test_images": len(test_ds), "config": asdict(config)}
    if cache and path.is_file():
        try:
            stored = torch.load(path, map_location="cpu", weights_only=True)
            net = JudgeNet(train_ds.shape[0], train_ds.num_classes, config)
            net.load_state_dict(stored["state_dict"])
            return Judge(net, stored["classes"], stored["accuracy"], {**info, "cached": str(path)})
        except Exception:  # a torn or foreign file: train anew and replace it
            pass
    judge = train_judge(train_ds, test_ds, config)
    judge.info = {**info, "cached": str(path) if cache else None}
    if cache:
        try:
            with atomic_path(path) as tmp:
                torch.save({"format": JUDGE_FORMAT, "state_dict": judge.net.state_dict(),
                            "classes": judge.classes, "accuracy": judge.accuracy}, tmp)
        except OSError:  # a read-only cache only costs the next run a few seconds
            pass
    return judge


@torch.no_grad()
def sample_semantics(judge: Judge, sources: torch.Tensor, labels: torch.Tensor,
                     samples: torch.Tensor) -> dict:
    """How well samples (or reconstructions) given the h of `sources` keep their content.

    Args:
        sources: (B, C, H, W) levels, the images whose h the samples were drawn given.
        labels: (B,) their true classes.
        samples: (B, n, C, H, W) levels (n = 1 for a deconv reconstruction).
    Returns:
        {"class_agreement": fraction of samples the judge puts in their source's class,
         "judge_accuracy": the judge's accuracy on all real test images (the ceiling),
         "source_accuracy": its accuracy on these sources, "ink": mean intensity of the samples
         on [0, 1], "source_ink": the sources', "ink_ratio": ink / source_ink,
         "diversity_rms": mean pixel RMS (on [0, 1]) between two samples of one h,
         "diversity_features": mean judge-feature distance between two samples of one h, with
         "diversity_features_between": the same between sources (its scale), "samples", "sources"}.
         The diversity figures are None when n = 1.
    """
    if samples.dim() != 5 or samples.shape[0] != len(sources) or samples.shape[2:] != sources.shape[1:]:
        raise ValueError(f"samples must be (B, n, C, H, W) for sources {tuple(sources.shape)}, "
                         f"got {tuple(samples.shape)}")
    if labels.shape != (len(sources),):
        raise ValueError(f"labels must be ({len(sources)},), got {tuple(labels.shape)}")
    B, n = samples.shape[:2]
    flat = samples.flatten(0, 1).cpu()
    predicted = judge.predict(flat).view(B, n)
    agree = (predicted == labels.cpu().long()[:, None]).float().mean().item()
    ink = flat.float().mean().item() / 255.0
    source_ink = sources.float().mean().item() / 255.0
    out = {"class_agreement": agree, "judge_accuracy": judge.accuracy,
           "source_accuracy": (judge.predict(sources.cpu()) == labels.cpu().long()).float().mean().item(),
           "ink": ink, "source_ink": source_ink,
           "ink_ratio": ink / source_ink if source_ink > 0 else None,
           "diversity_rms": None, "diversity_features": None, "diversity_features_between": None,
           "samples": B * n, "sources": B}
    if n > 1:
        pixels = flat.float().view(B, n, -1) / 255.0
        out["diversity_rms"] = (mean_pairwise_distance(pixels) / pixels.shape[-1] ** 0.5).mean().item()
        feats = judge.features(flat).view(B, n, -1)
        out["diversity_features"] = mean_pairwise_distance(feats).mean().item()
    if B > 1:
        out["diversity_features_between"] = mean_pairwise_distance(judge.features(sources.cpu())[None]).item()
    return out


@torch.no_grad()
def class_accuracy(judge: Judge, samples: torch.Tensor, labels: torch.Tensor) -> dict:
    """Class-conditional samples: the fraction the judge puts in the class they were drawn for.

    Args:
        samples: (N, C, H, W) levels; labels: (N,) the classes they were drawn given.
    Returns:
        {"class_accuracy", "per_class": {name: fraction}, "judge_accuracy", "ink", "samples"}.
    """
    if labels.shape != (len(samples),):
        raise ValueError(f"labels must be ({len(samples)},), got {tuple(labels.shape)}")
    predicted = judge.predict(samples.cpu())
    labels = labels.cpu().long()
    right = (predicted == labels).float()
    per_class = {}
    for k in labels.unique().tolist():
        name = judge.classes[k] if k < len(judge.classes) else str(k)
        per_class[name] = right[labels == k].mean().item()
    return {"class_accuracy": right.mean().item(), "per_class": per_class,
            "judge_accuracy": judge.accuracy, "ink": samples.float().mean().item() / 255.0,
            "samples": len(samples)}


# ---------------------------------------------------------------------------------------------
# Judging trained models (the end of a training run, `pcae reconstruct`, compare-decoders)

SAMPLES_PER_SOURCE = 2  # the fewest that give a diversity figure


@torch.no_grad()
def judge_autoencoder(model, judge: Judge, images: torch.Tensor, labels: torch.Tensor,
                      per: int = SAMPLES_PER_SOURCE, generator: torch.Generator | None = None,
                      temperature: float = 1.0) -> dict:
    """sample_semantics of an Autoencoder (pcae.autoencoder) on source images.

    A PixelCNN decoder draws `per` samples given each source's h; a deconv decoder gives its one
    reconstruction. images: (B, C, H, W) levels on the model's device; labels: (B,) classes.
    """
    was_training = model.training
    model.eval()
    try:
        if model.kind == "deconv":
            samples = model.reconstruct(images, labels)[:, None]  # (B, 1, C, H, W)
        else:
            source = labels if model.encoder.input == "labels" else images
            samples = model.sample(source, per, generator=generator, temperature=temperature)
    finally:
        model.train(was_training)
    return {**sample_semantics(judge, images.cpu(), labels.cpu(), samples.cpu()),
            "decoder": model.kind, "temperature": temperature}


def judge_run(task, source: dict, test_ds, n: int, generator: torch.Generator | None = None,
              temperature: float = 1.0) -> dict:
    """The sample-semantics figures of a trained task on the first n test images of its data.

    Args:
        task: a pcae.train Task with a `judged(judge, images, labels, generator, temperature)`
            method (auto-encoders, class-conditional PixelCNNs).
        source: load_judge's keyword arguments (source, channels, image_size, data_root).
    Returns:
        the task's figures, or {"skipped": why} when the data has no labels.
    """
    try:
        judge = load_judge(**source)
    except PcaeError as e:
        return {"skipped": str(e)}
    device = next(task.model.parameters()).device
    images, labels = (t.to(device) for t in test_ds.first(n))
    if (labels < 0).any():
        return {"skipped": "the test images have no labels"}
    return task.judged(judge, images, labels, generator, temperature)
