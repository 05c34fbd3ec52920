"""Using a trained checkpoint: `pcae sample` (a grid of samples), `pcae evaluate` (test bits/dim as
JSON) and `pcae reconstruct` (images followed by samples given their h), over pcae/inference.py."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from pcae.cli.common import (
    DATA_SOURCE_HELP,
    TRAIN,
    DataRoot,
    Device,
    Force,
    PngOut,
    Precision,
    Sampler,
    Seed,
    Split,
    Temperature,
    text,
)
from pcae.cli.progress import semantics_line

TrainingData = Annotated[str | None, typer.Option("--data", help="Default: the training data. "
                                                     + DATA_SOURCE_HELP)]


def sample_cmd(
    checkpoint: Path = typer.Argument(..., help="A PixelCNN checkpoint (e.g. runs/pixelcnn/last.pt)."),
    out: PngOut = ...,
    n: int = typer.Option(16, "--n", min=1, help="Images (per class when conditional and no --label)."),
    label: int | None = typer.Option(None, "--label", min=0, help="Class index (label-conditional models)."),
    temperature: Temperature = 1.0,
    seed: Seed = 0,
    sampler: Sampler = None,
    device: Device = TRAIN["device"],
    force: Force = False,
):
    """Draw a grid of samples from a trained PixelCNN."""
    import time

    from pcae.files import refuse_existing
    from pcae.images import save_grid
    from pcae.inference import sample_checkpoint

    refuse_existing(out, force)
    start = time.perf_counter()
    images, nrow = sample_checkpoint(checkpoint, n=n, label=label, temperature=temperature, seed=seed,
                                     sampler=sampler, device=device)
    save_grid(images, nrow, out)
    typer.echo(f"wrote {out}: {len(images)} samples of {' x '.join(map(str, images.shape[1:]))} "
               f"in {time.perf_counter() - start:.1f} s")


def evaluate_cmd(
    checkpoint: Path = typer.Argument(..., help="A checkpoint written by a training command."),
    data: TrainingData = None,
    split: Split = "test",
    data_root: DataRoot = None,
    limit: int = typer.Option(0, "--limit", min=0, help="Only the first N images (0: all)."),
    batch_size: int = typer.Option(64, "--batch-size", min=1),
    device: Device = TRAIN["device"],
    precision: Precision = TRAIN["precision"],
):
    """Print test bits/dim (per class for labelled data) of a checkpoint as JSON."""
    import json

    from pcae.inference import evaluate_checkpoint

    result = evaluate_checkpoint(checkpoint, data=data, split=split, data_root=text(data_root),
                                 device=device, batch_size=batch_size, limit=limit, precision=precision)
    typer.echo(json.dumps(result, indent=2))


def reconstruct_cmd(
    checkpoint: Path = typer.Argument(..., help="An auto-encoder checkpoint (e.g. runs/autoencoder/last.pt)."),
    out: PngOut = ...,
    data: TrainingData = None,
    split: Split = "test",
    n: int = typer.Option(8, "--n", min=1, help="Originals (one per row)."),
    samples: int = typer.Option(4, "--samples", min=1, help="PixelCNN samples per original."),
    temperature: Temperature = 1.0,
    seed: Seed = 0,
    sampler: Sampler = None,
    data_root: DataRoot = None,
    device: Device = TRAIN["device"],
    judge_images: int = typer.Option(200, "--judge-images", min=0, help="Score samples given the h of "
                                     "this many test images (2 each; deconv: the reconstructions) "
                                     "with the data's sample judge (eval.judge); 0: off."),
    force: Force = False,
):
    """Each of the first N images, followed by PixelCNN samples given its h (deconv: its reconstruction)."""
    import time

    from pcae.files import refuse_existing
    from pcae.images import save_captioned
    from pcae.inference import reconstruct_checkpoint

    refuse_existing(out, force)
    start = time.perf_counter()
    grid, nrow, info = reconstruct_checkpoint(checkpoint, data=data, split=split, n=n, samples=samples,
                                              temperature=temperature, seed=seed, sampler=sampler,
                                              data_root=text(data_root), device=device,
                                              judge_images=judge_images)
    save_captioned(grid, nrow, out, info["caption"])
    made = "reconstruction" if info["decoder"] == "deconv" else f"{nrow - 1} samples"
    scores = ", ".join(f"{k} {info[k]:.4f}" for k in ("bpd", "mse") if k in info)
    typer.echo(f"wrote {out}: {len(grid) // nrow} {info['split']} images of {info['data']}, each + {made}; "
               f"{scores} over them; {time.perf_counter() - start:.1f} s")
    if info.get("semantics"):
        typer.echo(semantics_line(info["semantics"]))


def export_cmd(
    checkpoint: Path = typer.Argument(..., help="A checkpoint written by a training command (best.pt, last.pt)."),
    folder: Path = typer.Argument(..., help="Folder to write model.safetensors and config.json into."),
    force: Force = False,
):
    """Export a checkpoint's model as safetensors + config.json, for use without the training code.

    Every command that takes a checkpoint (sample, evaluate, reconstruct, embed, portrait,
    interpolate) takes such a folder too, and Python's pcae.load_pretrained(FOLDER) rebuilds the
    model from it; neither unpickles anything. --resume needs the training checkpoint.
    """
    from pcae.checkpoint import export_pretrained, load_checkpoint

    checkpoint_dict = load_checkpoint(checkpoint)
    export_pretrained(checkpoint_dict, folder, force=force)
    typer.echo(f"wrote {folder}: model.safetensors, config.json ({checkpoint_dict['kind']} model, step "
               f"{checkpoint_dict.get('step', 0)})")
