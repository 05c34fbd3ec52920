"""Using a trained checkpoint: `evaluate_checkpoint` (any kind, `pcae evaluate`),
`sample_checkpoint` (a PixelCNN, `pcae sample`), `reconstruct_checkpoint` (an auto-encoder,
`pcae reconstruct`). Portraits are drawn by pcae.portrait.

The checkpoint's kind (pcae.kinds) rebuilds its task; the task evaluates, samples or draws its grid.
"""
from __future__ import annotations

import json
import math
import os

import torch

from eval.judge import judge_run
from pcae.batches import eval_batches, first_examples, resolve_device
from pcae.checkpoint import load_checkpoint
from pcae.data import load_dataset
from pcae.errors import PcaeError
from pcae.kinds import task_from_checkpoint
from pcae.options import check_device, check_precision, check_split, check_temperature
from pcae.precision import choose, time_it
from pcae.sampling import check_sample_memory, check_sampler, sample


def checkpoint_data(checkpoint: dict, path, data: str | None, split: str, data_root: str | None = None):
    """The data a checkpoint is used on: `data`, else the source it was trained on, read with the
    run's own channel, size and root options. Returns (ImageDataset, source name)."""

    train_config = checkpoint["configs"].get("train", {})
    source = data or train_config.get("data")
    if source is None:
        raise PcaeError(f"{path}: the checkpoint names no data source; pass --data")
    dataset = load_dataset(source, split=split, channels=train_config.get("image_channels"),
                           image_size=train_config.get("image_size"),
                           data_root=data_root or train_config.get("data_root"))
    return dataset, source


def evaluate_checkpoint(path: str | os.PathLike, data: str | None = None, split: str = "test",
                        data_root: str | None = None, device: str = "cpu", batch_size: int = 64,
                        limit: int = 0, precision: str = "auto") -> dict:
    """Test metrics of a checkpoint on a data source (by default the one it was trained on).

    Returns:
        {"checkpoint", "kind", "data", "split", "images", <metric>, <metric>_per_class, ...}.
    """
    check_split(split), check_precision(precision), check_device(device)
    checkpoint = load_checkpoint(path)
    task = task_from_checkpoint(checkpoint, path)
    dataset, source = checkpoint_data(checkpoint, path, data, split, data_root)
    task.check_data(dataset)
    task.use_classes(dataset)  # per-class figures under the evaluated data's own class names
    target = resolve_device(device)
    task.model.to(target).eval()

    first = next(eval_batches(dataset, min(batch_size, limit or batch_size), batch_size, target))

    def measure(p):  # one batch's evaluation, forward only: nothing changes
        with torch.autocast(target.type, dtype=torch.bfloat16, enabled=p == "bf16"):
            return time_it(lambda: task.evaluate([first]))

    chosen = choose(precision, target, measure,
                    json.dumps(["evaluate", task.kind, task.configs(), batch_size], default=str))
    with torch.autocast(target.type, dtype=torch.bfloat16, enabled=chosen["used"] == "bf16"):
        metrics = task.evaluate(eval_batches(dataset, limit, batch_size, target))
    metric = getattr(task, "metric", None)
    if metric in metrics and not math.isfinite(metrics[metric]):
        raise PcaeError(f"{path}: its test {metric} on {source} is {metrics[metric]}: the model gives "
                        "NaN or inf probabilities (diverged weights?)")
    return {"checkpoint": str(path), "kind": task.kind, "step": checkpoint.get("step"),
            "data": source, "split": split, "precision": chosen, **metrics}


def sample_checkpoint(path: str | os.PathLike, n: int = 16, label: int | None = None,
                      temperature: float = 1.0, seed: int = 0, sampler: str | None = None,
                      device: str = "cpu") -> tuple[torch.Tensor, int]:
    """Draw from a PixelCNN checkpoint. Returns ((N, C, H, W) uint8 images, images per row).

    An unconditional model gives n images; a label-conditional one n images of class `label`, or
    without a label, one row of ceil(n / classes) images per class.
    """

    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    check_temperature(temperature), check_device(device)
    checkpoint = load_checkpoint(path, kind="pixelcnn")
    task = task_from_checkpoint(checkpoint, path)
    check_sampler(sampler)
    target = resolve_device(device)
    task.model.to(target).eval()
    cfg = task.config
    shape = (cfg.image_channels, *cfg.image_size)
    total = n if task.condition == "none" or label is not None else math.ceil(n / cfg.cond_dim) * cfg.cond_dim
    check_sample_memory(task.model, total, shape)  # before the labels of n images are made
    generator = torch.Generator(target).manual_seed(seed)
    kwargs = {} if sampler is None else {"method": sampler}
    if task.condition == "none":
        if label is not None:
            raise PcaeError(f"{path}: the model is unconditional; --label needs a model trained "
                            "with --condition label")
        images = sample(task.model, n, shape, None, temperature, generator, **kwargs)
        return images.to(torch.uint8), max(1, math.ceil(math.sqrt(n)))
    if label is None:
        per_class = max(1, math.ceil(n / cfg.cond_dim))
        labels = torch.arange(cfg.cond_dim).repeat_interleave(per_class)
        nrow = per_class
    else:
        if not 0 <= label < cfg.cond_dim:
            names = ", ".join(f"{k}={name}" for k, name in enumerate(task.classes))
            raise PcaeError(f"--label must be in [0, {cfg.cond_dim}), got {label} ({names})")
        labels = torch.full((n,), label)
        nrow = max(1, math.ceil(math.sqrt(n)))
    labels = labels.to(target)
    images = sample(task.model, len(labels), shape, task.h(labels), temperature, generator, **kwargs)
    return images.to(torch.uint8), nrow


def reconstruct_checkpoint(path, data: str | None = None, split: str = "test", n: int = 8,
                           samples: int = 4, temperature: float = 1.0, seed: int = 0,
                           sampler: str | None = None, data_root: str | None = None,
                           device: str = "cpu", judge_images: int = 200
                           ) -> tuple[torch.Tensor, int, dict]:
    """The first n images of a data split, each followed by what an auto-encoder makes of its h.

    A PixelCNN decoder draws `samples` images given each h; a deconv decoder gives its one
    reconstruction (`samples` is then ignored). With judge_images > 0, the sample judge
    (eval.judge) scores samples given the h of the first `judge_images` images of the split
    (2 each; deconv: the reconstructions): info["semantics"].

    Returns:
        (grid (N, C, H, W) uint8, images per row, info {checkpoint, data, split, images, decoder,
        encoder, <metric> over the n images, ...}).
    """


    check_split(split), check_temperature(temperature), check_device(device)
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    if samples < 1:
        raise ValueError(f"samples must be >= 1, got {samples}")
    check_sampler(sampler)
    checkpoint = load_checkpoint(path, kind="autoencoder")
    task = task_from_checkpoint(checkpoint, path)
    dataset, source = checkpoint_data(checkpoint, path, data, split, data_root)
    task.check_data(dataset)
    target = resolve_device(device)
    task.model.to(target).eval()
    images, labels = first_examples(dataset, n, target)
    metrics = task.evaluate([(images, labels)])
    generator = torch.Generator(target).manual_seed(seed)
    grid, nrow = task.grid(images, labels, samples, generator, temperature, sampler)
    caption = {"rows": [task.classes[y] if 0 <= y < len(task.classes) else "-" for y in labels.tolist()],
               "sources_first": task.model.kind != "deconv"}
    info = {"checkpoint": str(path), "step": checkpoint.get("step"), "data": source, "split": split,
            "decoder": task.model.kind, "encoder": task.model.encoder.config["name"],
            "samples_per_image": nrow - 1, "caption": caption, **metrics}
    if judge_images:
        train_config = checkpoint["configs"].get("train", {})
        judge_source = dict(source=source, channels=train_config.get("image_channels"),
                            image_size=train_config.get("image_size"),
                            data_root=data_root or train_config.get("data_root"))
        info["semantics"] = judge_run(task, judge_source, dataset, judge_images,
                                      torch.Generator(target).manual_seed(seed), temperature)
    return grid, nrow, info
