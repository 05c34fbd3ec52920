"""The options several commands share, declared once, and the library defaults the options show.

A shared option is an Annotated type, used as `force: Force = False`: typer reads its flag, help
and check from the type. The checks are pcae.options' (a bad value is a usage error, exit 2), the
same functions the library runs.

Defaults live in the library's torch-free dataclasses and are read by import: TrainConfig
(pcae.config), the models' settings (pcae.settings) and CompareConfig (eval.compare_config).

Help strings go through rich markup: a literal "[" is written "\\[" (pip install 'pcae\\[faces]').
"""
from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from pcae.config import TrainConfig
from pcae.data import source_names
from pcae.options import (
    check_device,
    check_guidance,
    check_png_path,
    check_precision,
    check_seed,
    check_split,
    check_temperature,
    cli_callback,
)
from pcae.settings import defaults


TRAIN = defaults(TrainConfig)


def text(path: Path | None) -> str | None:
    """A path option as the configs store it (plain str; None stays None)."""
    return None if path is None else str(path)


def check_image_channels(value: int | None) -> int | None:
    """The callback of the options converting data to 1 or 3 channels."""
    if value not in (None, 1, 3):
        raise typer.BadParameter(f"must be 1 or 3, got {value}")
    return value


DATA_SOURCE_HELP = "Data source: " + ", ".join(source_names()) + "."
DEVICE_HELP = "cpu, cuda or cuda:N."
PRECISION_HELP = ("auto (bf16 autocast where this machine runs the model measurably faster in it, "
                  "else fp32), fp32 or bf16; the loss and its softmax stay fp32.")

Data = Annotated[str, typer.Option("--data", help=DATA_SOURCE_HELP)]
DataRoot = Annotated[Path | None, typer.Option("--data-root", help="torchvision data root.")]
Split = Annotated[str, typer.Option("--split", callback=cli_callback(check_split), help="train or test.")]
ImageChannels = Annotated[int | None, typer.Option("--image-channels", callback=check_image_channels,
                                                      help="Convert the data to 1 or 3 channels.")]
ImageSize = Annotated[int | None, typer.Option("--image-size", min=1,
                                                  help="Resize the shorter side + centre crop.")]
Device = Annotated[str, typer.Option("--device", callback=cli_callback(check_device), help=DEVICE_HELP)]
Precision = Annotated[str, typer.Option("--precision", callback=cli_callback(check_precision),
                                        help=PRECISION_HELP)]
Seed = Annotated[int, typer.Option("--seed", callback=cli_callback(check_seed), help="Random seed (0 to 2**32 - 1).")]
Sampler = Annotated[str | None, typer.Option("--sampler", help="cached (the default, fast) or naive (the reference).")]
Temperature = Annotated[float | None, typer.Option(
    "--temperature", callback=cli_callback(check_temperature),
    help="Divides the logits; 0 = argmax (a portrait model's default is its own: 1 unless its config "
         "says otherwise).")]
Guidance = Annotated[float | None, typer.Option(
    "--guidance", callback=cli_callback(check_guidance),
    help="w >= 0: push each draw away from 'no one in particular' by w times (needs a model trained "
         "with --h-drop; twice the time; default: the model's, 0 unless its config says otherwise).")]
Force = Annotated[bool, typer.Option("--force", help="Replace existing outputs (only what pcae wrote; "
                                     "anything else is refused).")]
PngOut = Annotated[Path, typer.Option("--out", callback=cli_callback(check_png_path), help="PNG grid to write.")]
