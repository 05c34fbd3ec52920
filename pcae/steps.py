"""The pieces of a training step the loop (pcae/train.py) is made of: the loss as one module (what
DDP and torch.compile wrap), the learning rate at a step, the moving average of the weights that a
run evaluates, samples from and saves, and Ctrl-C between steps instead of inside one.
"""
from __future__ import annotations

import math
from contextlib import contextmanager

import torch
from torch import nn

from pcae.config import LR_SCHEDULES, TrainConfig
from pcae.errors import PcaeError, deferred_interrupt
from pcae.task import Task


class Objective(nn.Module):
    """task.loss as a module, so DDP and torch.compile wrap the whole loss computation."""

    def __init__(self, task: Task):
        super().__init__()
        self.model = task.model  # registers the parameters for DDP
        self.task = [task]  # a list: not a submodule

    def forward(self, images, labels):
        return self.task[0].loss(images, labels)

def learning_rate(config: TrainConfig, step: int, total: int) -> float:
    """The learning rate at `step` (a pure function, so resuming needs no scheduler state)."""
    warm = min(1.0, (step + 1) / config.warmup_steps) if config.warmup_steps else 1.0
    if config.lr_schedule == "constant":
        return config.lr * warm
    if config.lr_schedule == "cosine":
        t = min(step / max(total, 1), 1.0)
        return config.lr * warm * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * t)))
    raise ValueError(f"lr_schedule must be one of {LR_SCHEDULES}, got {config.lr_schedule!r}")

class WeightAverage:
    """An exponential moving average of a model's trained weights (Polyak averaging [1]).

    The average is what a run evaluates, samples from and saves as the model's weights; the raw
    weights the optimiser works on travel beside it in the checkpoint ("training_weights"), so a
    resumed run continues exactly. The decay ramps up with the step, min(decay, (1+t)/(10+t)) as
    in TensorFlow's ExponentialMovingAverage, so a short run is not dominated by its first steps:
    at 300 steps it averages over roughly the last 30. Averaged: every parameter that trains and
    every floating buffer (e.g. BatchNorm running statistics); the rest is shared, not copied.

    Why: with Adam at a high learning rate the raw weights of a short run jitter from step to step;
    their average is a smoother model whose samples given h follow h far more often (measured in
    benchmarks/ae_recipe.py), at an equal or lower test bits/dim.

    [1] Polyak and Juditsky, "Acceleration of stochastic approximation by averaging", 1992.
    """

    def __init__(self, model: nn.Module, decay: float):
        self.model, self.decay = model, decay
        self.names = [n for n, p in model.named_parameters() if p.requires_grad]
        self.names += [n for n, b in model.named_buffers() if b.is_floating_point()]
        self.average = {n: t.detach().clone() for n, t in self._tensors().items()}
        # the same tensors every step (weights change in place): the lists update() works on
        self._live = [t.detach() for t in self._tensors().values()]

    def _tensors(self) -> dict[str, torch.Tensor]:
        tensors = {**dict(self.model.named_parameters()), **dict(self.model.named_buffers())}
        return {n: tensors[n] for n in self.names}

    @torch.no_grad()
    def update(self, step: int) -> None:
        """Fold in the weights after optimiser step `step` (1-based)."""
        decay = min(self.decay, (1 + step) / (10 + step))
        torch._foreach_lerp_([self.average[n] for n in self.names], self._live, 1.0 - decay)

    @torch.no_grad()
    def swap(self) -> None:
        """Exchange the model's weights and the average (twice restores both exactly)."""
        for n, t in self._tensors().items():
            kept = t.detach().clone()
            t.copy_(self.average[n])
            self.average[n] = kept

    @contextmanager
    def averaged(self):
        """A context in which the model holds the averaged weights."""
        self.swap()
        try:
            yield
        finally:
            self.swap()

    def training_weights(self) -> dict[str, torch.Tensor]:
        """The raw weights while the model holds the average (call inside `averaged()`)."""
        return {n: t.detach().clone() for n, t in self.average.items()}

    @torch.no_grad()
    def restore(self, training_weights: dict[str, torch.Tensor]) -> None:
        """Resume: the model holds the stored average; load it as the average, then put the raw
        weights back into the model."""
        missing = set(self.names) - set(training_weights)
        if missing:
            raise ValueError(f"training weights lack {sorted(missing)[:3]}")
        current = self._tensors()
        for n in self.names:
            self.average[n] = current[n].detach().clone()
            current[n].copy_(training_weights[n])

class Interrupt(deferred_interrupt):
    """The training loop's Ctrl-C (pcae.errors.deferred_interrupt): a flag the loop checks between
    steps, where it saves and stops, instead of a KeyboardInterrupt raised mid-step.

    Once the steps are done (`steps_done()`), Ctrl-C raises KeyboardInterrupt at once: the final
    checkpoint is written, and what is left (samples, the judge, the summary) `--resume` redoes."""

    immediate = False

    def steps_done(self) -> None:
        """From now on Ctrl-C interrupts at once (raises now if it came during the last step)."""
        self.immediate = True
        self.check()

    def _handle(self, signum, frame):
        if self.immediate:  # no steps left: stop now
            raise KeyboardInterrupt
        super()._handle(signum, frame)

class NonFiniteLoss(PcaeError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""
