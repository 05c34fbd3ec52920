"""Sampling from a GatedPixelCNN, one sub-pixel at a time.

`sample()` draws C*H*W values in raster order (rows, then columns, then R -> G -> B inside a pixel).
`method="naive"` reruns the whole network on the whole image at every step: simple, obviously
correct, and the reference that faster samplers are tested against.

Every sampler draws through `draw()`, which turns logits into levels with the Gumbel-max trick on
uniform noise taken from `generator` in a fixed order, so two samplers that compute the same logits
return the same images for the same seed.
"""
from __future__ import annotations

from typing import Callable

import torch

from pcae.pixelcnn import GatedPixelCNN

Progress = Callable[[int, int], None]  # (rows done, rows in all)


def draw(logits: torch.Tensor, temperature: float, generator: torch.Generator | None) -> torch.Tensor:
    """Sample levels from logits (B, K) at `temperature`; 0 means argmax. Returns (B,) long."""
    if temperature == 0:
        return logits.argmax(dim=1)
    u = torch.rand(logits.shape, generator=generator, device=logits.device, dtype=torch.float64)
    gumbel = -torch.log(-torch.log(u.clamp_(1e-300, 1.0 - 1e-16)))
    return (logits.double() / temperature + gumbel).argmax(dim=1)


def check_sample_args(model: GatedPixelCNN, n: int, image_shape, h, temperature) -> tuple[int, int, int]:
    """Validate sample() arguments before any compute; returns (C, H, W)."""
    cfg = model.config
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0, got {temperature}")
    if len(image_shape) != 3 or image_shape[0] != cfg.image_channels or min(image_shape) < 1:
        raise ValueError(f"image_shape must be ({cfg.image_channels}, H, W), got {tuple(image_shape)}")
    if cfg.spatial_cond and tuple(image_shape[1:]) != cfg.image_size:
        raise ValueError(f"image_shape must end in {cfg.image_size} for a model with spatial_cond, "
                         f"got {tuple(image_shape)}")
    if cfg.cond_dim and (h is None or h.shape != (n, cfg.cond_dim)):
        got = None if h is None else tuple(h.shape)
        raise ValueError(f"h must have shape ({n}, {cfg.cond_dim}), got {got}")
    if not cfg.cond_dim and h is not None:
        raise ValueError("h must be None for an unconditional model (cond_dim=0)")
    return tuple(int(s) for s in image_shape)


@torch.no_grad()
def sample_naive(model, n, image_shape, h=None, temperature=1.0, generator=None,
                 progress: Progress | None = None) -> torch.Tensor:
    """The reference sampler: one full forward pass per sub-pixel."""
    C, H, W = image_shape
    device = next(model.parameters()).device
    x = torch.zeros(n, C, H, W, dtype=torch.long, device=device)
    for i in range(H):
        for j in range(W):
            for c in range(C):
                logits = model(x, h)[:, :, c, i, j]  # (n, K)
                x[:, c, i, j] = draw(logits, temperature, generator)
        if progress is not None:
            progress(i + 1, H)
    return x


SAMPLERS = {"naive": sample_naive}


@torch.no_grad()
def sample(model: GatedPixelCNN, n: int, image_shape, h: torch.Tensor | None = None,
           temperature: float = 1.0, generator: torch.Generator | None = None,
           method: str = "naive", progress: Progress | None = None) -> torch.Tensor:
    """Draw n images from p(x | h).

    Args:
        model: a GatedPixelCNN (put it on the device you want to sample on).
        n: number of images.
        image_shape: (C, H, W).
        h: (n, cond_dim) float for a conditional model, else None. Each row conditions one image.
        temperature: divides the logits; 0 gives the argmax path.
        generator: a torch.Generator on the model's device, for reproducible samples.
        method: a name in SAMPLERS.
        progress: called with (rows done, rows) after each finished row.
    Returns:
        (n, C, H, W) long levels in [0, levels).
    """
    image_shape = check_sample_args(model, n, image_shape, h, temperature)
    if method not in SAMPLERS:
        raise ValueError(f"method must be one of {sorted(SAMPLERS)}, got {method!r}")
    was_training = model.training
    model.eval()
    try:
        if h is not None:
            h = h.to(next(model.parameters()).device)
        return SAMPLERS[method](model, n, image_shape, h, temperature, generator, progress)
    finally:
        model.train(was_training)
