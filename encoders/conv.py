"""The convolutional bottleneck encoder of the PixelCNN auto-encoder [1, section 3.4].

x (B, C, H, W) integer levels -> 3x3 conv -> stride-2 4x4 convs (ReLU) -> flatten -> Linear -> h (B, m).
The number of stride-2 convs follows the image size: halve until the longer side is <= 8
(28x28 -> 7x7, 32x32 -> 8x8, 64x64 -> 8x8), so one class serves every size the data layer produces.
h is linear, as the bottleneck of [1], then (by default) standardised per dimension by a BatchNorm
without affine parameters. Without it, end-to-end training with Adam pushes h along one direction
that is common to the whole batch until |h| ~ 1000 within a few dozen steps: the decoder's gates
saturate and it learns to ignore h (seen on Fashion-MNIST, bottleneck 10 and 100). Standardising
removes that common direction and fixes the scale while keeping every dimension's content.

References:
    [1] van den Oord et al., "Conditional Image Generation with PixelCNN Decoders", 2016,
        arXiv:1606.05328.

Shapes: B batch, C image channels, H, W image size, m bottleneck.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from pcae.machine import check_fits

NORMALIZATIONS = ("batchnorm", "none")  # what `normalize` may be


def down_steps(image_size: tuple[int, int], target: int = 8) -> int:
    """How many stride-2 convs take (H, W) to a longer side <= target (never below 2 pixels)."""
    h, w = image_size
    steps = 0
    while max(h, w) > target and min(h, w) >= 4:
        h, w, steps = h // 2, w // 2, steps + 1
    return steps


class ConvEncoder(nn.Module):
    """Strided convolutions -> Linear -> bottleneck h of size `bottleneck`.

    Args:
        in_channels: image channels C (1 or 3).
        image_size: (H, W) of the images it will see.
        bottleneck: m, the size of h.
        channels: width of the first conv; it doubles at each stride-2 conv, up to 8x.
        levels: number of intensity levels of the input (256 for 8-bit images).
        normalize: "batchnorm" (standardise each dimension of h; the default) or "none".
    """

    input = "images"

    def __init__(self, in_channels: int = 1, image_size=(28, 28), bottleneck: int = 10,
                 channels: int = 32, levels: int = 256, normalize: str = "batchnorm"):
        super().__init__()
        image_size = tuple(int(s) for s in image_size)
        if bottleneck < 1:
            raise ValueError(f"bottleneck must be >= 1, got {bottleneck}")
        if in_channels < 1:
            raise ValueError(f"in_channels must be >= 1, got {in_channels}")
        if len(image_size) != 2 or min(image_size) < 1:
            raise ValueError(f"image_size must be (H, W) with H, W >= 1, got {image_size}")
        if channels < 1:
            raise ValueError(f"channels must be >= 1, got {channels}")
        if levels < 2:
            raise ValueError(f"levels must be >= 2, got {levels}")
        if normalize not in NORMALIZATIONS:
            raise ValueError(f"normalize must be 'batchnorm' or 'none', got {normalize!r}")
        self.in_channels, self.image_size, self.levels = in_channels, image_size, levels
        self.channels, self.dim = channels, bottleneck
        self.trainable = True

        layers = [nn.Conv2d(in_channels, channels, 3, padding=1), nn.ReLU()]
        width, (h, w) = channels, image_size
        for _ in range(down_steps(image_size)):
            out = min(2 * width, 8 * channels)
            layers += [nn.Conv2d(width, out, 4, stride=2, padding=1), nn.ReLU()]  # halves H, W
            width, h, w = out, h // 2, w // 2
        flat = width * h * w  # the features' size, without running them on a dummy image

        # weights, gradients and two Adam moments of the Linear, in fp32, before allocating it
        check_fits(16.0 * flat * bottleneck, f"the conv encoder (--bottleneck {bottleneck}, "
                   f"{image_size[0]}x{image_size[1]} images, {channels} channels)")
        self.features = nn.Sequential(*layers)
        self.fc = nn.Linear(flat, bottleneck)
        self.normalize = normalize
        self.norm = nn.BatchNorm1d(bottleneck, affine=False) if normalize == "batchnorm" else nn.Identity()

    @classmethod
    def from_config(cls, options: dict, state_dict=None) -> "ConvEncoder":
        options = dict(options)
        options.setdefault("normalize", "none")  # configs written before the option had no norm
        return cls(**options)

    @property
    def config(self) -> dict:
        return {"name": "conv", "in_channels": self.in_channels, "image_size": list(self.image_size),
                "bottleneck": self.dim, "channels": self.channels, "levels": self.levels,
                "normalize": self.normalize}

    @property
    def preprocessing(self) -> dict:
        H, W = self.image_size
        return {"input": "images", "dtype": f"integer levels in [0, {self.levels})",
                "shape": f"(B, {self.in_channels}, {H}, {W})",
                "scaling": f"x * 2 / {self.levels - 1} - 1, done inside the encoder"}

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Args:
            images: (B, C, H, W) integer levels in [0, levels).
        Returns:
            h (B, m) float.
        """
        expected = (self.in_channels, *self.image_size)
        if images.dim() != 4 or tuple(images.shape[1:]) != expected:
            raise ValueError(f"images must have shape (B, {', '.join(map(str, expected))}), "
                             f"got {tuple(images.shape)}")
        if images.is_floating_point() or images.is_complex():
            raise ValueError(f"images must hold integer levels, got dtype {images.dtype}")
        x = images.to(self.fc.weight.dtype) * (2.0 / (self.levels - 1)) - 1.0
        h = self.fc(self.features(x).flatten(1))  # (B, m)
        if self.normalize == "batchnorm" and self.training and h.shape[0] == 1:
            # One image has no batch statistics: standardise it with the running ones instead.
            return F.batch_norm(h, self.norm.running_mean, self.norm.running_var, training=False,
                                eps=self.norm.eps)
        return self.norm(h)
