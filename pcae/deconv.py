"""The deconvolutional decoder: the baseline the PixelCNN auto-encoder is compared with [1, section 3.4].

h (B, D) -> Linear -> coarse map -> stride-2 4x4 transposed convs (ReLU) -> crop to (H, W) -> 3x3 conv.
The number of upsampling steps mirrors `encoders.conv.ConvEncoder` (double until the image size is
reached from a map whose longer side is <= 8), so any (H, W) works.

Two outputs:
    "mse"          sigmoid -> (B, C, H, W) floats in [0, 1], trained with the mean squared error
                   against x / (levels - 1), as in [1]. Its bits/dim can only be estimated:
                   `gaussian_bits_per_dim` scores x under a discretised Gaussian N(mean, sigma^2)
                   per sub-pixel, with sigma fitted to the mean squared error.
    "categorical"  (B, K, C, H, W) logits: a factorised 256-way distribution per sub-pixel (every
                   sub-pixel independent given h), trained on the NLL so its bits/dim sits on the
                   same scale as the PixelCNN's (`pcae.pixelcnn.bits_per_dim`).

References:
    [1] van den Oord et al., "Conditional Image Generation with PixelCNN Decoders", 2016,
        arXiv:1606.05328.

Shapes: B batch, C image channels, H, W image size, K levels (256), D cond dim.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from encoders.conv import down_steps

OUTPUTS = ("mse", "categorical")


@dataclass(frozen=True)
class DeconvConfig:
    """Architecture of a `DeconvDecoder`. `channels` is the width at full resolution; it doubles
    at each coarser scale, up to 8x."""

    cond_dim: int = 10
    image_channels: int = 1
    image_size: tuple[int, int] = (28, 28)
    channels: int = 32
    output: str = "mse"
    levels: int = 256

    def __post_init__(self):
        object.__setattr__(self, "image_size", tuple(int(s) for s in self.image_size))
        checks = [
            ("cond_dim", self.cond_dim >= 1, ">= 1"),
            ("image_channels", self.image_channels >= 1, ">= 1"),
            ("image_size", len(self.image_size) == 2 and min(self.image_size) >= 1,
             "(H, W) with H, W >= 1"),
            ("channels", self.channels >= 1, ">= 1"),
            ("output", self.output in OUTPUTS, f"one of {', '.join(OUTPUTS)}"),
            ("levels", self.levels >= 2, ">= 2"),
        ]
        for name, ok, rule in checks:
            if not ok:
                raise ValueError(f"{name} must be {rule}, got {getattr(self, name)!r}")


def up_steps(image_size: tuple[int, int], target: int = 8) -> int:
    """How many stride-2 upsamplings reach (H, W) from a map whose longer side is <= target."""
    return down_steps(image_size, target)


class DeconvDecoder(nn.Module):
    """h -> image. `decoder(h)` -> (B, C, H, W) in [0, 1] ("mse") or logits (B, K, C, H, W)."""

    def __init__(self, config: DeconvConfig):
        super().__init__()
        self.config = config
        H, W = config.image_size
        steps = up_steps(config.image_size)
        self.base = (math.ceil(H / 2 ** steps), math.ceil(W / 2 ** steps))
        widths = [min(config.channels * 2 ** k, 8 * config.channels) for k in range(steps + 1)]
        self.base_width = widths[-1]
        self.fc = nn.Linear(config.cond_dim, self.base_width * self.base[0] * self.base[1])
        layers = []
        for k in reversed(range(steps)):
            layers += [nn.ReLU(), nn.ConvTranspose2d(widths[k + 1], widths[k], 4, stride=2, padding=1)]
        self.up = nn.Sequential(*layers, nn.ReLU())
        C, K = config.image_channels, config.levels
        out_channels = C if config.output == "mse" else C * K  # categorical: ordered (C, K)
        self.out = nn.Conv2d(config.channels, out_channels, 3, padding=1)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        """Args:
            h: (B, cond_dim) float.
        Returns:
            "mse": (B, C, H, W) in [0, 1]; "categorical": logits (B, K, C, H, W).
        """
        cfg = self.config
        if h.dim() != 2 or h.shape[1] != cfg.cond_dim:
            raise ValueError(f"h must have shape (B, {cfg.cond_dim}), got {tuple(h.shape)}")
        B = h.shape[0]
        x = self.fc(h.to(self.fc.weight.dtype)).view(B, self.base_width, *self.base)
        x = self.up(x)  # (B, channels, base*2^steps...)
        H, W = cfg.image_size
        out = self.out(x[:, :, :H, :W])  # (B, C or C*K, H, W)
        if cfg.output == "mse":
            return torch.sigmoid(out)
        return out.view(B, cfg.image_channels, cfg.levels, H, W).transpose(1, 2)

    def to_levels(self, out: torch.Tensor) -> torch.Tensor:
        """Decoder output -> (B, C, H, W) long levels: the rounded mean ("mse") or the most
        likely level per sub-pixel ("categorical")."""
        if self.config.output == "mse":
            return (out * (self.config.levels - 1)).round().long().clamp(0, self.config.levels - 1)
        return out.argmax(dim=1)

    def scale(self, x: torch.Tensor) -> torch.Tensor:
        """Integer levels -> floats in [0, 1], the "mse" output's scale."""
        return x.to(self.fc.weight.dtype) / (self.config.levels - 1)


def expected_levels(logits: torch.Tensor) -> torch.Tensor:
    """Mean level under categorical logits (B, K, C, H, W) -> (B, C, H, W) float."""
    levels = torch.arange(logits.shape[1], device=logits.device, dtype=torch.float32)
    return torch.einsum("bkchw,k->bchw", logits.float().softmax(dim=1), levels)


def gaussian_bits_per_dim(mean: torch.Tensor, x: torch.Tensor, sigma: float | torch.Tensor,
                          levels: int = 256) -> torch.Tensor:
    """Bits/dim of integer images x under a discretised Gaussian per sub-pixel.

    P(x) = Phi((x + 1/2 - mu) / s) - Phi((x - 1/2 - mu) / s) in level units, with the two edge bins
    stretched to -inf and +inf so the probabilities of the `levels` values sum to 1.

    Args:
        mean: (B, C, H, W) predicted means on the [0, 1] scale (the "mse" decoder's output).
        x: (B, C, H, W) integer levels.
        sigma: standard deviation on the [0, 1] scale, e.g. sqrt(MSE) (the maximum-likelihood fit).
    Returns:
        scalar bits per sub-pixel, averaged over the batch.
    """
    if mean.shape != x.shape:
        raise ValueError(f"mean and x must have the same shape, got {tuple(mean.shape)} vs {tuple(x.shape)}")
    scale = levels - 1
    s = (torch.as_tensor(sigma, dtype=torch.float64) * scale).clamp_min(1e-6)
    mu = mean.double() * scale
    xf = x.double()
    upper = torch.where(xf >= scale, torch.full_like(xf, math.inf), (xf + 0.5 - mu) / s)
    lower = torch.where(xf <= 0, torch.full_like(xf, -math.inf), (xf - 0.5 - mu) / s)
    # log(Phi(b) - Phi(a)); in the upper tail use the mirror Phi(-a) - Phi(-b) to keep precision
    mirror = (upper + lower) > 0
    a = torch.where(mirror, -upper, lower)
    b = torch.where(mirror, -lower, upper)
    log_b = torch.special.log_ndtr(b)
    log_p = log_b + torch.log1p(-torch.exp(torch.special.log_ndtr(a) - log_b).clamp(max=1 - 1e-15))
    nats = -log_p.flatten(1).sum(1)
    return (nats.mean() / (x[0].numel() * math.log(2))).float()
