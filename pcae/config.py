"""TrainConfig: how to train (data, optimisation, hardware, bookkeeping), torch-free.

It lives apart from the loop (pcae/train.py) so that the CLI can read its defaults, which every
training command's options take (pcae.cli.training.TRAINING_OPTIONS), without importing torch: `pcae
--help` stays fast.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import ClassVar

from pcae.options import PRECISIONS, SEED_MAX, check_device, check_precision, check_seed, check_temperature

LR_SCHEDULES = ("constant", "cosine")


def _valid(check, value) -> bool:
    try:
        check(value)
    except ValueError:
        return False
    return True


@dataclass(frozen=True)
class TrainConfig:
    """How to train: data, optimisation, hardware and bookkeeping. Model options live in the spec.

    The run's length is `steps` or `epochs`, not both; with neither it is DEFAULT_STEPS steps.
    Every `*_every` counts optimizer steps; 0 means "only at the end". `batch_size` is per rank.
    The defaults are the recipe measured in benchmarks/ae_recipe.py: AdamW at 4e-3, and the moving
    average of the weights (`ema`) evaluated, sampled from and saved.
    """

    data: str = "fashion-mnist"
    out: str = "runs/pixelcnn"
    data_root: str | None = None
    image_channels: int | None = None  # convert the data to 1 or 3 channels; None keeps the source's
    image_size: int | None = None  # resize + centre-crop; None keeps the source's
    steps: int = 0  # 0 and epochs 0: DEFAULT_STEPS
    epochs: int = 0
    batch_size: int = 32
    lr: float = 4e-3
    lr_schedule: str = "constant"
    warmup_steps: int = 0  # linear learning-rate warm-up over this many steps
    ema: float = 0.999  # decay of the weights' moving average used to evaluate and sample; 0 = off
    weight_decay: float = 0.0
    grad_clip: float = 0.0  # max gradient norm; 0 = no clipping
    seed: int = 0
    device: str = "cpu"
    precision: str = "auto"  # auto: bf16 autocast where measured faster here (pcae.precision)
    compile: bool = False
    channels_last: bool = False
    num_workers: int = 2  # DataLoader workers, used only for data that is not held in memory
    log_every: int = 10
    eval_every: int = 100
    eval_images: int = 1000  # test images per evaluation (the first ones); 0 = the whole test split
    sample_every: int = 0
    n_samples: int = 16
    judge_images: int = 200  # test images whose samples the sample judge scores at the end; 0 = off
    temperature: float = 1.0
    checkpoint_every: int = 100
    checkpoint_seconds: float = 600.0  # also checkpoint when this much time passed; 0 = off
    keep_best: bool = True
    tensorboard: bool = False  # also log scalars and sample grids to OUT/tensorboard (pcae[tensorboard])

    DEFAULT_STEPS: ClassVar[int] = 800
    # Fields a resumed run takes from the new command; the rest come from the checkpoint.
    RUN_FIELDS: ClassVar[tuple[str, ...]] = (
        "steps", "epochs", "device", "precision", "compile", "channels_last", "num_workers",
        "log_every", "eval_every", "eval_images", "sample_every", "n_samples", "judge_images",
        "temperature",
        "checkpoint_every", "checkpoint_seconds", "keep_best", "data_root", "tensorboard")

    def __post_init__(self):
        checks = [
            ("steps", self.steps >= 0, ">= 0"),
            ("epochs", self.epochs >= 0, ">= 0"),
            ("batch_size", self.batch_size >= 1, ">= 1"),
            ("lr", self.lr > 0 and math.isfinite(self.lr), "> 0 and finite"),
            ("lr_schedule", self.lr_schedule in LR_SCHEDULES, f"one of {LR_SCHEDULES}"),
            ("warmup_steps", self.warmup_steps >= 0, ">= 0"),
            ("ema", 0 <= self.ema < 1, "in [0, 1)"),
            ("weight_decay", self.weight_decay >= 0, ">= 0"),
            ("grad_clip", self.grad_clip >= 0, ">= 0"),
            ("device", _valid(check_device, self.device), "cpu, cuda or cuda:N"),
            ("precision", _valid(check_precision, self.precision), f"one of {PRECISIONS}"),
            ("num_workers", self.num_workers >= 0, ">= 0"),
            ("log_every", self.log_every >= 1, ">= 1"),
            ("eval_every", self.eval_every >= 0, ">= 0"),
            ("eval_images", self.eval_images >= 0, ">= 0"),
            ("sample_every", self.sample_every >= 0, ">= 0"),
            ("n_samples", self.n_samples >= 0, ">= 0"),
            ("judge_images", self.judge_images >= 0, ">= 0"),
            ("temperature", _valid(check_temperature, self.temperature), "finite and >= 0"),
            ("checkpoint_every", self.checkpoint_every >= 0, ">= 0"),
            ("checkpoint_seconds", self.checkpoint_seconds >= 0, ">= 0"),
            ("seed", _valid(check_seed, self.seed), f"a whole number from 0 to {SEED_MAX}"),
        ]
        for name, ok, rule in checks:
            if not ok:
                raise ValueError(f"{name} must be {rule}, got {getattr(self, name)!r}")
        if self.steps > 0 and self.epochs > 0:
            raise ValueError(f"give steps or epochs, not both: got steps={self.steps}, "
                             f"epochs={self.epochs}")
        if self.steps == 0 and self.epochs == 0:
            object.__setattr__(self, "steps", self.DEFAULT_STEPS)

    def resumed_with(self, new: "TrainConfig", fields=None) -> "TrainConfig":
        """This (stored) config with `fields` (default RUN_FIELDS) taken from `new`."""
        fields = self.RUN_FIELDS if fields is None else fields
        unknown = set(fields) - set(self.RUN_FIELDS)
        if unknown:
            raise ValueError(f"fields must be among TrainConfig.RUN_FIELDS, got {sorted(unknown)}")
        return dataclasses.replace(self, **{k: getattr(new, k) for k in fields})
