"""Using a trained checkpoint of any kind: `evaluate_checkpoint` (`pcae evaluate`).

The checkpoint's kind (pcae.kinds) rebuilds its task; the task evaluates. Kind-specific uses live
with their kind: `pcae.pixelcnn_task.sample_checkpoint`, `pcae.autoencoder.reconstruct_checkpoint`,
`pcae.portrait.draw_portraits`.
"""
from __future__ import annotations

import json
import math
import os

import torch

from pcae.checkpoint import load_checkpoint
from pcae.kinds import task_from_checkpoint
from pcae.options import check_device, check_precision, check_split
from pcae.train import eval_batches, resolve_device
from pcae.utils import PcaeError


def checkpoint_data(checkpoint: dict, path, data: str | None, split: str, data_root: str | None = None):
    """The data a checkpoint is used on: `data`, else the source it was trained on, read with the
    run's own channel, size and root options. Returns (ImageDataset, source name)."""
    from pcae.data import load_dataset

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
    from pcae.precision import choose, time_it

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
