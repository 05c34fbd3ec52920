"""Batches for the loop: the training data in a fixed order, evaluation batches, the device, and
this process's place in a torchrun job.

The data order is a pure function of (seed, epoch): epoch e is the permutation drawn from a
generator seeded with (seed, e) (of the images, each as often as the task's `repeats` says), so a
checkpoint need only store (epoch, batches consumed in it) for a resumed run to see the same
batches in the same order (pcae/train.py's exact resume).
Data that fits is kept on the device and batches are gathered there; otherwise a DataLoader with
workers, pinned memory and non-blocking copies. Under torchrun each rank takes its own slice of
every global batch (the DistributedSampler idea without its padding).
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Iterator

import torch
import torch.distributed as tdist

from pcae.errors import PcaeError
from pcae.options import check_device


def data_order(seed: int, epoch: int, n: int) -> torch.Tensor:
    """The permutation of n training images used in `epoch`: a pure function of (seed, epoch)."""
    generator = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    return torch.randperm(n, generator=generator)

class _IndexBatches(torch.utils.data.Sampler):
    """This rank's index lists for every batch of one epoch, from batch `start` on."""

    def __init__(self, order, start, per_epoch, batch_size, rank, world):
        self.order, self.start, self.per_epoch = order, start, per_epoch
        self.batch_size, self.rank, self.world = batch_size, rank, world

    def __len__(self):
        return self.per_epoch - self.start

    def __iter__(self):
        G, B = self.batch_size * self.world, self.batch_size
        for p in range(self.start, self.per_epoch):
            lo = p * G + self.rank * B
            yield self.order[lo:lo + B].tolist()

class Feeder:
    """Batches of (images uint8, labels long) on `device`, in the order fixed by (seed, epoch).

    In-memory data is held on the device when it fits (a quarter of its memory at most) and
    gathered there; otherwise batches come through a DataLoader (workers, pinned memory).
    """

    def __init__(self, dataset, batch_size: int, seed: int, rank: int, world: int,
                 device: torch.device, num_workers: int, channels_last: bool = False,
                 repeats: torch.Tensor | None = None):
        self.dataset, self.batch_size, self.seed = dataset, batch_size, seed
        self.rank, self.world, self.device = rank, world, device
        self.num_workers, self.channels_last = num_workers, channels_last
        # an epoch holds image k repeats[k] times (oversampling; the task's `repeats`), else once
        self.pool = None if repeats is None else torch.repeat_interleave(torch.arange(len(dataset)), repeats)
        self.n = len(dataset) if self.pool is None else len(self.pool)
        self.global_batch = batch_size * world
        self.per_epoch = self.n // self.global_batch
        if self.per_epoch == 0:
            raise PcaeError(f"data {dataset.info.get('source')!r}: {self.n} training images are fewer "
                            f"than one batch ({batch_size} x {world} ranks); lower --batch-size")
        self.images = self.labels = None
        if getattr(dataset, "images", None) is not None:
            images, labels = dataset.images, dataset.labels
            if labels is None:
                labels = torch.full((self.n,), -1, dtype=torch.long)
            self.on_device = not (device.type == "cuda" and images.numel() >
                                  torch.cuda.get_device_properties(device).total_memory // 4)
            if self.on_device:
                self.images, self.labels = images.to(device), labels.long().to(device)
            else:  # gathered on the host, then copied
                self.images, self.labels = images, labels.long()
        self.where = ("DataLoader" if self.images is None
                      else "device memory" if self.on_device else "host memory")

    def _finish(self, images, labels):
        images = images.to(self.device, non_blocking=True)
        labels = labels.to(self.device, non_blocking=True)
        if self.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        return images, labels

    def batches(self, epoch: int, position: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Endless batches from batch `position` of `epoch` on."""
        while True:
            order = data_order(self.seed, epoch, self.n)
            if self.pool is not None:
                order = self.pool[order]
            if self.images is not None:
                order = order.to(self.images.device)
                pin = not self.on_device and self.device.type == "cuda"
                G, B = self.global_batch, self.batch_size
                for p in range(position, self.per_epoch):
                    idx = order[p * G + self.rank * B:p * G + (self.rank + 1) * B]
                    images, labels = self.images[idx], self.labels[idx]
                    if pin:
                        images, labels = images.pin_memory(), labels.pin_memory()
                    yield self._finish(images, labels)
            else:
                sampler = _IndexBatches(order, position, self.per_epoch, self.batch_size, self.rank,
                                        self.world)
                loader = torch.utils.data.DataLoader(
                    self.dataset, batch_sampler=sampler, num_workers=self.num_workers,
                    pin_memory=self.device.type == "cuda", collate_fn=_collate)
                for images, labels in loader:
                    yield self._finish(images, labels)
            epoch, position = epoch + 1, 0

def _collate(items):
    images = torch.stack([torch.as_tensor(x) for x, _ in items])
    labels = torch.tensor([int(y) for _, y in items], dtype=torch.long)
    return images, labels

def eval_batches(dataset, limit: int, batch_size: int, device: torch.device, num_workers: int = 0):
    """The first `limit` images of `dataset` (all when 0) in order, as batches on `device`."""
    n = len(dataset) if limit == 0 else min(limit, len(dataset))
    if getattr(dataset, "images", None) is not None:
        labels = dataset.labels if dataset.labels is not None else torch.full((len(dataset),), -1)
        for lo in range(0, n, batch_size):
            hi = min(lo + batch_size, n)
            yield dataset.images[lo:hi].to(device), labels[lo:hi].long().to(device)
        return
    subset = torch.utils.data.Subset(dataset, range(n))
    loader = torch.utils.data.DataLoader(subset, batch_size=batch_size, num_workers=num_workers,
                                         collate_fn=_collate, pin_memory=device.type == "cuda")
    for images, labels in loader:
        yield images.to(device, non_blocking=True), labels.to(device, non_blocking=True)

def first_examples(dataset, n: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    """The first n images and labels of `dataset` on `device` (for grids)."""
    return tuple(t.to(device) for t in dataset.first(n))

def resolve_device(device: str) -> torch.device:
    """"cpu", "cuda" or "cuda:N" -> a torch.device; PcaeError when that CUDA device is absent."""
    try:
        check_device(device)
    except ValueError as e:
        raise PcaeError(f"--device: {e}") from None
    if device == "cpu":
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise PcaeError(f"--device {device}: no CUDA device is available here (use --device cpu)")
    index = int(device.split(":")[1]) if ":" in device else torch.cuda.current_device()
    if index >= torch.cuda.device_count():
        raise PcaeError(f"--device {device}: this machine has {torch.cuda.device_count()} CUDA "
                        f"device(s), numbered from 0")
    return torch.device("cuda", index)

@dataclass
class Distributed:
    """This process's place in a torchrun job (world 1 when run alone)."""

    rank: int = 0
    world: int = 1
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    owns_group: bool = False

    @classmethod
    def setup(cls, device: str) -> "Distributed":
        resolve_device(device)
        world = int(os.environ.get("WORLD_SIZE", "1"))
        if world <= 1:
            return cls(device=resolve_device(device))
        local = int(os.environ.get("LOCAL_RANK", "0"))
        target = torch.device(f"cuda:{local}" if device.startswith("cuda") else "cpu")
        if target.type == "cuda":
            torch.cuda.set_device(target)
        owns = not tdist.is_initialized()
        if owns:
            tdist.init_process_group("nccl" if target.type == "cuda" else "gloo")
        return cls(tdist.get_rank(), tdist.get_world_size(), target, owns)

    @property
    def main(self) -> bool:
        return self.rank == 0

    def barrier(self):
        if self.world > 1:
            tdist.barrier()

    def close(self):
        if self.owns_group:
            tdist.destroy_process_group()
