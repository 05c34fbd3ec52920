"""Image files pcae writes: sample grids (with optional PNG text chunks) and training curves.

Every writer goes through pcae.files.atomic_path, so a reader never sees half a PNG and a killed
writer leaves the previous file in place. Grids take uint8 images (N, C, H, W) in levels 0..255,
tiled `nrow` per row with a 2-pixel grey border.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import torch

from pcae.files import SOFTWARE, atomic_path, storable

MIN_WIDTH = 512  # pixels: a grid of small images is upscaled to at least this width, to be seen


def save_grid(images: torch.Tensor, nrow: int, path: str | os.PathLike, text: dict | None = None, *,
              min_width: int = MIN_WIDTH, gap: int = 0) -> Path:
    """Write (N, C, H, W) uint8 images as one PNG grid, atomically; `text` becomes PNG text chunks
    (values that are not strings as JSON), e.g. the scores of the portraits in it.

    min_width: upscale the tiles by the smallest whole factor (nearest neighbour: every pixel
        stays a visible square) that makes the grid at least this wide; 0 keeps the native size.
    gap: a wider white gutter of this many pixels after each row's first image (a source, then
        what was drawn from it).
    """
    from PIL import Image
    from PIL.PngImagePlugin import PngInfo
    from torchvision.utils import make_grid

    images = images.detach().cpu()
    width = nrow * (images.shape[-1] + 2) + 2
    scale = max(1, -(-min_width // width)) if min_width else 1
    if scale > 1:
        images = images.repeat_interleave(scale, dim=-1).repeat_interleave(scale, dim=-2)
    grid = make_grid(images.float() / 255.0, nrow=nrow, padding=2 * scale, pad_value=0.5)
    if gap:  # split off the first column with a white gutter
        first = 2 * scale + images.shape[-1] + 2 * scale
        white = torch.ones(grid.shape[0], grid.shape[1], gap)
        grid = torch.cat([grid[:, :, :first], white, grid[:, :, first:]], dim=2)
    array = (grid * 255).round().clamp(0, 255).to(torch.uint8).permute(1, 2, 0).numpy()
    info = PngInfo()
    info.add_text("Software", SOFTWARE)
    for key, value in (text or {}).items():
        info.add_text(key, storable(value if isinstance(value, str) else json.dumps(value)))
    path = Path(path)
    with atomic_path(path, suffix=".png") as tmp:
        Image.fromarray(array[:, :, 0] if array.shape[2] == 1 else array).save(tmp, format="png",
                                                                              pnginfo=info)
    return path


def save_captioned(images: torch.Tensor, nrow: int, path, caption: dict) -> Path:
    """`save_grid` of a task's grid with its caption (Task.grid_caption): the rows' names as PNG
    text, and a gutter after the first column when each row starts with a source."""
    text = {"rows": caption["rows"]} if caption.get("rows") else None
    return save_grid(images, nrow, path, text, gap=8 if caption.get("sources_first") else 0)


def plot_curve(rows: list[dict], metric: str, path: str | os.PathLike) -> Path:
    """Train and test `metric` against step (rows of metrics.jsonl), as a PNG."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
    for split, style in (("train", "-"), ("test", "o-")):
        points = [(r["step"], r[metric]) for r in rows if r.get("split") == split and metric in r]
        if points:
            ax.plot(*zip(*points), style, label=f"{split} {metric}", markersize=3)
    ax.set_xlabel("step")
    ax.set_ylabel("bits/dim" if metric == "bpd" else metric)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    return save_figure(fig, path)


def save_figure(fig, path: str | os.PathLike) -> Path:
    """A matplotlib figure as a PNG, atomically; the figure is closed."""
    import matplotlib.pyplot as plt

    path = Path(path)
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, format="png", metadata={"Software": SOFTWARE})
    plt.close(fig)
    return path
