"""Class labels as one-hot vectors: the class-conditional PixelCNN of [1, section 3.2].

With h one-hot, the PixelCNN's per-layer projection V h is a class-dependent bias in every layer.
No parameters; `dim` is the number of classes, read from the data.

References:
    [1] van den Oord et al., "Conditional Image Generation with PixelCNN Decoders", 2016,
        arXiv:1606.05328.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class OneHotEncoder(nn.Module):
    """Integer labels (B,) -> one-hot (B, num_classes) float32."""

    input = "labels"

    def __init__(self, num_classes: int = 10):
        super().__init__()
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        self.dim = num_classes
        self.trainable = False

    @classmethod
    def from_config(cls, options: dict, state_dict=None) -> "OneHotEncoder":
        return cls(**options)

    @property
    def config(self) -> dict:
        return {"name": "onehot", "num_classes": self.dim}

    @property
    def preprocessing(self) -> dict:
        return {"input": "labels", "dtype": f"integer class labels in [0, {self.dim})",
                "shape": "(B,)"}

    def forward(self, labels: torch.Tensor) -> torch.Tensor:
        """Args:
            labels: (B,) integer class indices in [0, num_classes).
        Returns:
            (B, num_classes) float32 one-hot rows.
        """
        if labels.dim() != 1:
            raise ValueError(f"labels must have shape (B,), got {tuple(labels.shape)}")
        if labels.is_floating_point() or labels.is_complex():
            raise ValueError(f"labels must be integers, got dtype {labels.dtype}")
        # the range check reads values: only on the CPU, so a GPU training step makes no host sync
        # (one_hot itself fails there on a bad label), and not while torch.compile traces it
        if labels.device.type == "cpu" and labels.numel() and not torch.compiler.is_compiling() and (
                int(labels.min()) < 0 or int(labels.max()) >= self.dim):
            raise ValueError(f"labels must lie in [0, {self.dim}), got range "
                             f"[{int(labels.min())}, {int(labels.max())}]")
        return F.one_hot(labels.long(), self.dim).float()
