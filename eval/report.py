"""Writing a compare-decoders report: report.json, report.md, the paper-style figure and a plot.

    write_json(report, path)       the whole report; non-finite floats become null (strict JSON).
    markdown_table(rows)           one row per model: bits, conditioning gains, probes, pixels, dims.
    write_markdown(report, path)   the table plus the command's settings, in Markdown.
    write_figure(orig, recon, samples, path)
                                   rows: original | deconv reconstruction | PixelCNN samples given
                                   the same h, as in [1, figure 4] (torchvision make_grid).
    write_plot(rows, path)         probe and k-NN accuracy, and bits per image, per model (matplotlib
                                   Agg, imported on use).

References:
    [1] van den Oord et al., "Conditional Image Generation with PixelCNN Decoders", 2016,
        arXiv:1606.05328.
"""
from __future__ import annotations

import json
import math
import os
from pathlib import Path

import torch

from pcae.files import atomic_path
from pcae.images import save_figure, save_grid

# (key, header, format) of the Markdown table, in order
COLUMNS = (
    ("bottleneck", "m", "{}"),
    ("model", "model", "{}"),
    ("bits_per_dim", "bits/dim", "{:.3f}"),
    ("bits_per_image", "bits/image", "{:.0f}"),
    ("gaussian_bits_per_dim", "bits/dim (Gaussian)", "{:.3f}"),
    ("shuffled_gain", "gain, h shuffled (bits)", "{:.1f}"),
    ("zero_gain", "gain, h = 0 (bits)", "{:.1f}"),
    ("probe_accuracy", "linear probe", "{:.1%}"),
    ("knn_accuracy", "k-NN (k=20)", "{:.1%}"),
    ("reconstruction_psnr", "recon. PSNR (dB)", "{:.2f}"),
    ("sample_psnr", "sample PSNR (dB)", "{:.2f}"),
    ("class_agreement", "class kept (judge)", "{:.1%}"),
    ("ink_ratio", "ink / source's", "{:.2f}"),
    ("diversity_rms", "sample diversity (RMS)", "{:.3f}"),
    ("active_dims", "active dims", "{}"),
    ("participation_ratio", "effective dims", "{:.1f}"),
)


def finite_or_none(value):
    """Floats that JSON cannot hold (nan, inf) -> None, recursively through dicts and lists."""
    if isinstance(value, dict):
        return {k: finite_or_none(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite_or_none(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def write_json(report: dict, path: str | os.PathLike) -> Path:
    path = Path(path)
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(finite_or_none(report), indent=2, allow_nan=False) + "\n")
    return path


def _cell(value, fmt: str) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "–"
    return fmt.format(value)


def markdown_table(rows: list[dict]) -> str:
    """A Markdown table of report rows (missing values as an en dash)."""
    lines = ["| " + " | ".join(header for _, header, _ in COLUMNS) + " |",
             "|" + "|".join("---" if k in ("bottleneck", "model") else "---:" for k, _, _ in COLUMNS) + "|"]
    for row in rows:
        lines.append("| " + " | ".join(_cell(row.get(k), fmt) for k, _, fmt in COLUMNS) + " |")
    return "\n".join(lines)


def write_markdown(report: dict, path: str | os.PathLike) -> Path:
    config, data = report["config"], report["data"]
    text = [
        "# compare-decoders",
        "",
        f"Data: {data['source']} ({data['origin']}); {report['eval_images']} test images for "
        f"likelihoods, gains and probes, {report['probe_images']} train images as the probe's "
        f"training set and the k-NN database. Budget: {config['steps']} steps of batch "
        f"{config['batch_size']} per model, seed {config['seed']}, device {config['device']}"
        + (" (quick mode)" if config.get("quick") else "") + ".",
        "",
        markdown_table(report["rows"]),
        "",
        "bits/dim, bits/image: test NLL (the deconv-AE's under a factorised 256-way head fitted on "
        "its frozen h; `bits/dim (Gaussian)`: under a discretised Gaussian with the train MSE as "
        "variance). Gains: NLL(x | h shuffled across the batch) - NLL(x | h) and NLL(x | h = 0) - "
        "NLL(x | h), bits per image. Probes: accuracy on the test labels from frozen h. PSNR: deconv "
        "reconstructions, and PixelCNN samples given h, against the originals. Class kept: the "
        "fraction of PixelCNN samples given h (2 per source) or of deconv reconstructions that the "
        "sample judge (eval.judge, a classifier trained on the labels) puts in their source's class"
        + (f"; the judge itself scores {report['judge']['accuracy']:.1%} on the real test images"
           if report.get("judge") else "") + ". Ink: mean intensity against the sources'. Sample "
        "diversity: pixel RMS between two samples given the same h.",
        "",
    ]
    for name, figure in report.get("figures", {}).items():
        text.append(f"![{name}]({Path(figure).name})")
    path = Path(path)
    with atomic_path(path) as tmp:
        tmp.write_text("\n".join(text) + "\n")
    return path


def write_figure(originals: torch.Tensor, reconstructions: torch.Tensor, samples: torch.Tensor,
                 path: str | os.PathLike) -> Path:
    """One row per image: original | deconv reconstruction | n PixelCNN samples given its h, upscaled
    (pcae.images.save_grid) so that 28x28 images stay legible.

    Args:
        originals, reconstructions: (B, C, H, W) levels. samples: (B, n, C, H, W) levels.
    """

    B = len(originals)
    if reconstructions.shape != originals.shape or samples.shape[0] != B or samples.shape[2:] != originals.shape[1:]:
        raise ValueError(f"originals {tuple(originals.shape)}, reconstructions {tuple(reconstructions.shape)} "
                         f"and samples {tuple(samples.shape)} do not match")
    rows = torch.cat([originals[:, None].long().cpu(), reconstructions[:, None].long().cpu(),
                      samples.long().cpu()], 1)  # (B, 2 + n, C, H, W)
    return save_grid(rows.flatten(0, 1).to(torch.uint8), rows.shape[1], path, gap=8)


def write_plot(rows: list[dict], path: str | os.PathLike) -> Path:
    """Two panels per model row: probe / k-NN accuracy, and test bits per image."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [row["model"].replace(" ", "\n") if row.get("bottleneck") is None
              else f"{row['model']}\nm={row['bottleneck']}" for row in rows]
    x = list(range(len(rows)))
    nan = lambda v: math.nan if v is None else v
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4), dpi=100)
    w = 0.38
    left.bar([i - w / 2 for i in x], [nan(r.get("probe_accuracy")) for r in rows], w, label="linear probe")
    left.bar([i + w / 2 for i in x], [nan(r.get("knn_accuracy")) for r in rows], w, label="k-NN (k=20)")
    left.set_ylim(0, 1.15)
    left.set_ylabel("test accuracy from h")
    left.legend(loc="upper left", ncol=2)
    right.bar(x, [nan(r.get("bits_per_image")) for r in rows], 0.6, color="tab:gray")
    right.set_ylabel("test NLL (bits per image)")
    for ax in (left, right):
        ax.set_xticks(x, labels, fontsize=8)
        ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()

    return save_figure(fig, path)
