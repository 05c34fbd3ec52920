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

from pcae.files import SOFTWARE, atomic_path


def save_grid(images: torch.Tensor, nrow: int, path: str | os.PathLike, text: dict | None = None) -> Path:
    """Write (N, C, H, W) uint8 images as one PNG grid, atomically; `text` becomes PNG text chunks
    (values that are not strings as JSON), e.g. the scores of the portraits in it."""
    from PIL import Image
    from PIL.PngImagePlugin import PngInfo
    from torchvision.utils import make_grid

    grid = make_grid(images.detach().float().cpu() / 255.0, nrow=nrow, padding=2, pad_value=0.5)
    array = (grid * 255).round().clamp(0, 255).to(torch.uint8).permute(1, 2, 0).numpy()
    info = PngInfo()
    info.add_text("Software", SOFTWARE)
    for key, value in (text or {}).items():
        info.add_text(key, value if isinstance(value, str) else json.dumps(value))
    path = Path(path)
    with atomic_path(path, suffix=".png") as tmp:
        Image.fromarray(array[:, :, 0] if array.shape[2] == 1 else array).save(tmp, format="png",
                                                                              pnginfo=info)
    return path


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
