"""Precomputed embeddings looked up by row number: h for data whose encoder ran beforehand.

A portrait model trains on a face cache (pcae/faces.py) that holds the frozen face encoder's
embedding of every face; running FaceNet again at every step would give the same vectors, slower.
`EmbeddingTable` follows the encoder contract (encoders/__init__.py) with row numbers as its
input: `table(rows)` -> the stored embeddings of those rows. It is not in the registry (it has no
options to build it from: its table comes from a file), and it has no trainable weights.

Shapes: N rows, D = dim.
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import nn


class EmbeddingTable(nn.Module):
    """Row numbers (B,) -> rows of a fixed (N, D) float32 table, read on first use."""

    input = "labels"

    def __init__(self, dim: int, load: Callable[[], torch.Tensor] | None = None,
                 table: torch.Tensor | None = None):
        super().__init__()
        if table is None and load is None:
            raise ValueError("EmbeddingTable needs a table or a function that loads one")
        self.dim, self.trainable = dim, False
        self._load, self._table = load, table
        self._on_device: dict[str, torch.Tensor] = {}  # one copy per device, made once

    def table(self, device="cpu") -> torch.Tensor:
        """The whole (N, D) table on `device`."""
        if self._table is None:
            self._table = self._load()
            if self._table.dim() != 2 or self._table.shape[1] != self.dim:
                raise ValueError(f"the embedding table must be (N, {self.dim}), got {tuple(self._table.shape)}")
        key = str(device)
        if key not in self._on_device:
            self._on_device[key] = self._table.to(device)
        return self._on_device[key]

    @property
    def config(self) -> dict:
        return {"name": "table", "dim": self.dim}

    @property
    def preprocessing(self) -> dict:
        return {"input": "labels", "dtype": "row numbers of the embedding table", "shape": "(B,)"}

    def forward(self, rows: torch.Tensor) -> torch.Tensor:
        """(B,) integer row numbers -> (B, D) float32."""
        return self.table(rows.device)[rows]
