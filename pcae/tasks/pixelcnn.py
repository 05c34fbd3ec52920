"""The PixelCNN alone, as a training task: `pcae train`, `pcae sample`, kind "pixelcnn".

`PixelCNNSpec` (the model options of `pcae train`: pcae.settings; image shape and class count
come from the data) builds a `PixelCNNTask`: a Gated PixelCNN (pcae/pixelcnn.py) trained on the NLL, unconditional or
given a class label. The label's h comes from the one-hot encoder (encoders/onehot.py), as every
h in pcae comes from an encoder. `sample_checkpoint` draws from a trained one; `build_pixelcnn`
rebuilds the bare model (pcae.kinds).
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import ClassVar

import torch

from encoders import build_encoder
from eval.judge import class_accuracy
from pcae.errors import PcaeError
from pcae.pixelcnn import GatedPixelCNN, PixelCNNConfig, bits_per_dim, nll_bits
from pcae.resume import stored_values
from pcae.sampling import sample
from pcae.settings import CONDITIONS, PixelCNNSettings
from pcae.task import Task


class PixelCNNTask(Task):
    """A Gated PixelCNN trained on the NLL, unconditional or given a one-hot class label."""

    kind = "pixelcnn"
    metric = "bpd"

    def __init__(self, config, condition: str = "none", classes: list[str] | None = None):
        if condition not in CONDITIONS:
            raise ValueError(f"condition must be one of {CONDITIONS}, got {condition!r}")
        if (condition == "label") != (config.cond_dim > 0):
            raise ValueError(f"condition {condition!r} does not match cond_dim={config.cond_dim}")
        self.config, self.condition = config, condition
        self.classes = list(classes) if classes else [str(k) for k in range(config.cond_dim)]
        self.model = GatedPixelCNN(config)
        self.encoder = build_encoder("onehot", num_classes=config.cond_dim) if condition == "label" else None

    def configs(self):
        return {"model": dataclasses.asdict(self.config),
                "task": {"condition": self.condition, "classes": self.classes}}

    def h(self, labels: torch.Tensor) -> torch.Tensor | None:
        """The label's one-hot h (B, D), None when unconditional; unlabelled (-1) rows get class 0."""
        if self.encoder is None:
            return None
        return self.encoder(labels.clamp(min=0))

    def loss(self, images, labels):
        logits = self.model.forward_float(self.model.scale(images), self.h(labels))
        return {"bpd": bits_per_dim(logits, images)}  # fp32 cross-entropy, also under bf16 autocast

    @torch.no_grad()
    def evaluate(self, batches):
        bits, all_labels = [], []
        for images, labels in batches:
            logits = self.model.forward_float(self.model.scale(images), self.h(labels))
            bits.append((nll_bits(logits, images) / images[0].numel()).cpu())
            all_labels.append(labels.cpu())
        if not bits:
            return {}
        bits, labels = torch.cat(bits), torch.cat(all_labels)
        metrics = {"bpd": bits.mean().item(), "images": len(bits)}
        if (labels >= 0).all():
            names = self.classes
            per_class = {}
            for k in labels.unique().tolist():
                name = names[k] if k < len(names) else str(k)
                per_class[name] = bits[labels == k].mean().item()
            metrics["bpd_per_class"] = per_class
        return metrics

    def use_classes(self, dataset):
        stored, names = list(self.classes), list(dataset.classes or [])
        if self.condition == "label" and names and names != stored:
            raise PcaeError(f"data {dataset.info.get('source')!r} has the classes {names[:4]}..., the "
                            f"model was trained on {stored[:4]}...: its labels would mean other classes")
        self.classes = names

    @property
    def judgeable(self):
        return self.condition == "label"

    def judged(self, judge, images, labels, generator, temperature):
        """Label-conditional: one sample per test label, judged against the label it was drawn for."""

        x = sample(self.model, len(labels), tuple(images.shape[1:]), self.h(labels), temperature,
                   generator)
        return {**class_accuracy(judge, x, labels), "source_ink": images.float().mean().item() / 255,
                "temperature": temperature}

    def sample_grid(self, examples, n, generator, temperature):
        cfg = self.config
        shape = (cfg.image_channels, *examples[0].shape[2:])
        device = next(self.model.parameters()).device
        if self.condition == "label":
            per_class = max(1, math.ceil(n / cfg.cond_dim))
            labels = torch.arange(cfg.cond_dim, device=device).repeat_interleave(per_class)
            x = sample(self.model, len(labels), shape, self.h(labels), temperature, generator)
            return x.to(torch.uint8), per_class  # one row per class
        x = sample(self.model, n, shape, None, temperature, generator)
        return x.to(torch.uint8), max(1, math.ceil(math.sqrt(n)))

    def grid_caption(self, examples, n):
        return {"rows": self.classes} if self.condition == "label" else {}

    @classmethod
    def from_checkpoint(cls, checkpoint: dict) -> "PixelCNNTask":
        configs = checkpoint["configs"]
        task_config = configs.get("task", {})
        task = cls(PixelCNNConfig(**configs["model"]), task_config.get("condition", "none"),
                   task_config.get("classes"))
        task.load_state_dicts(checkpoint["state_dicts"])
        return task

    def check_data(self, dataset):
        C = dataset.shape[0]
        if C != self.config.image_channels:
            raise PcaeError(f"data {dataset.info.get('source')!r} has {C}-channel images, the model "
                            f"expects {self.config.image_channels}")
        if self.config.spatial_cond and tuple(dataset.shape[1:]) != tuple(self.config.image_size):
            raise PcaeError(f"data images are {dataset.shape[1]}x{dataset.shape[2]}, the model "
                            f"expects {self.config.image_size[0]}x{self.config.image_size[1]}")
        if self.condition == "label":
            if not dataset.num_classes:
                raise PcaeError(f"data {dataset.info.get('source')!r} has no labels; "
                                "--condition label needs a labelled source")
            if dataset.num_classes != self.config.cond_dim:
                raise PcaeError(f"data {dataset.info.get('source')!r} has {dataset.num_classes} "
                                f"classes, the model was built for {self.config.cond_dim}")


@dataclass(frozen=True)
class PixelCNNSpec(PixelCNNSettings):
    """`pcae train`'s model (its options: pcae.settings.PixelCNNSettings), built from the data."""

    kind: ClassVar[str] = "pixelcnn"

    def build(self, dataset) -> PixelCNNTask:
        if self.condition not in CONDITIONS:
            raise ValueError(f"condition must be one of {CONDITIONS}, got {self.condition!r}")
        C, H, W = dataset.shape
        cond_dim = (dataset.num_classes or 0) if self.condition == "label" else 0
        if self.condition == "label" and not cond_dim:
            raise PcaeError(f"data {dataset.info.get('source')!r} has no labels; "
                            "--condition label needs a labelled source")
        try:
            config = PixelCNNConfig(image_channels=C, channels=self.channels, n_layers=self.n_layers,
                                    kernel_size=self.kernel_size,
                                    first_kernel_size=self.first_kernel_size,
                                    head_channels=self.head_channels, cond_dim=cond_dim,
                                    image_size=(H, W), gated=self.gated, stacks=self.stacks,
                                    spatial_cond=bool(cond_dim and self.spatial_channels),
                                    spatial_channels=self.spatial_channels or 16)
        except ValueError as e:
            raise PcaeError(f"model options: {e}") from None
        return PixelCNNTask(config, self.condition, list(dataset.classes or []))

    def stored(self, configs: dict) -> dict:
        return stored_values(configs, {"channels": ("model", "channels"), "n_layers": ("model", "n_layers"),
                                       "kernel_size": ("model", "kernel_size"),
                                       "first_kernel_size": ("model", "first_kernel_size"),
                                       "head_channels": ("model", "head_channels"),
                                       "gated": ("model", "gated"), "stacks": ("model", "stacks"),
                                       "condition": ("task", "condition")}) | {
            "spatial_channels": configs["model"].get("spatial_channels", 16)
            if configs["model"].get("spatial_cond") else 0}

    def restore(self, checkpoint: dict) -> PixelCNNTask:
        return PixelCNNTask.from_checkpoint(checkpoint)


def build_pixelcnn(checkpoint: dict) -> torch.nn.Module:
    """The bare model of a "pixelcnn" checkpoint: GatedPixelCNN(PixelCNNConfig(**configs["model"]))."""

    model = GatedPixelCNN(PixelCNNConfig(**checkpoint["configs"]["model"]))
    model.load_state_dict(checkpoint["state_dicts"]["model"])
    return model


