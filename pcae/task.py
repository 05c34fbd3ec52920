"""The interface a model kind plugs into pcae.train's loop: a `Task` and the `TaskSpec` that makes one.

A *task* tells the loop what to train: the module, the loss of a batch, how to evaluate and draw a
sample grid, and what goes into the checkpoint. A *spec* (a dataclass of model options) builds a
fresh task from the training data or restores one from a checkpoint. pcae's kinds are in
pcae/tasks/ (pixelcnn, autoencoder, portrait); pcae.kinds is the table that rebuilds any kind's
task from a checkpoint.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, ClassVar, Protocol

import torch
from torch import nn


class Task:
    """What the loop needs to know about one kind of model.

    Subclasses set `kind` and `metric` and fill `model` (one nn.Module holding everything that is
    saved; parameters with requires_grad=False are not optimised).
    """

    kind: ClassVar[str] = ""
    metric: ClassVar[str] = "bpd"  # the loss metric shown, evaluated and tracked by best.pt; lower is better
    model: nn.Module

    def configs(self) -> dict[str, Any]:
        """Plain dicts stored under checkpoint["configs"] (next to "train"); `restore` reads them."""
        raise NotImplementedError

    def loss(self, images: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
        """Scalar tensors for one batch: `metric`, maybe more; the loop minimises "loss" when the
        dict has one, else `metric`.

        images: (B, C, H, W) uint8 on the model's device; labels: (B,) long, -1 when unlabelled.
        Runs inside autocast, DDP and torch.compile: no host syncs, no Python branching on values.
        """
        raise NotImplementedError

    @torch.no_grad()
    def evaluate(self, batches) -> dict[str, Any]:
        """Metrics over an iterable of (images, labels) batches; the default averages `loss()`."""
        totals, n = {}, 0
        for images, labels in batches:
            out = self.loss(images, labels)
            for k, v in out.items():
                totals[k] = totals.get(k, 0.0) + float(v) * len(images)
            n += len(images)
        return {k: v / max(n, 1) for k, v in totals.items()}

    def sample_grid(self, examples: tuple[torch.Tensor, torch.Tensor], n: int,
                    generator: torch.Generator, temperature: float) -> tuple[torch.Tensor, int]:
        """A grid to look at: (N, C, H, W) uint8 images and the number per row.

        `examples` are the first test images and labels, on the model's device (an auto-encoder
        shows each one followed by samples given its code).
        """
        raise NotImplementedError

    def grid_caption(self, examples: tuple[torch.Tensor, torch.Tensor], n: int) -> dict:
        """What `sample_grid`'s rows show, for the grid's PNG text: {"rows": [a name per row]} (the
        class drawn, the source's class, the person), and "sources_first": True when each row
        starts with a source image (then set apart by a gutter)."""
        return {}

    def repeats(self, dataset) -> torch.Tensor | None:
        """How many times each training image of `dataset` appears in an epoch (N,) long, to
        oversample some; None: each once."""
        return None

    def check_data(self, dataset) -> None:
        """Raise PcaeError when `dataset` does not fit this task (shape, labels)."""

    def use_classes(self, dataset) -> None:
        """Before evaluating on `dataset`: name per-class figures by its classes, or raise
        PcaeError when its labels would mean other classes than the model's."""

    @property
    def judgeable(self) -> bool:
        """Whether its samples have a class to keep, so `judged` has something to say."""
        return False

    def judged(self, judge, images: torch.Tensor, labels: torch.Tensor,
               generator: torch.Generator | None, temperature: float) -> dict:
        """Sample-semantics figures (eval.judge) given test images and their labels."""
        raise NotImplementedError

    def state_dicts(self) -> dict[str, dict]:
        return {"model": self.model.state_dict()}

    def load_state_dicts(self, state_dicts: dict[str, dict]) -> None:
        self.model.load_state_dict(state_dicts["model"])

class TaskSpec(Protocol):
    """Makes a task: fresh from the training data, or restored from a checkpoint of its kind.

    A spec is a dataclass of model options. Optional methods:
    `stored(configs) -> {field: value}`, the fields' values in a checkpoint's configs, which
    `train(resume=True)` checks given fields against (fields it lacks cannot be given again), and
    `prepare(config, progress) -> (config, spec, info)`, run once before a new run opens its data
    (the portrait spec builds its face cache there and points `config.data` at it; its
    `stored_source(configs)` names the photos, which a resume accepts as --data again).
    """

    kind: ClassVar[str]

    def build(self, dataset) -> Task: ...

    def restore(self, checkpoint: dict) -> Task: ...

@dataclass
class TrainResult:
    """What `train` returns: the run's summary, the trained task, and how it ended."""

    summary: dict
    task: Task  # its model holds the weights saved as the model's: the average when ema > 0
    status: str  # "finished" | "interrupted"
    out: Path

Callback = Callable[[str, dict], None]  # (event, info): "start", "train", "eval", "sample", "checkpoint", "end"
