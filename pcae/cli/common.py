"""The options several commands share, declared once, and the library defaults the options show.

A shared option is an Annotated type, used as `force: Force = False`: typer reads its flag, help
and check from the type. The checks are pcae.options' (a bad value is a usage error, exit 2), the
same functions the library runs.

Defaults live in the library's configs and specs. TrainConfig is torch-free (pcae.config) and is
read directly; the task specs (PixelCNNSpec, AutoencoderSpec, PortraitSpec), CompareConfig and a
few constants sit in modules that import torch, which `pcae --help` must not, so
`literal_defaults` reads their values from the source. tests/test_cli_defaults.py checks what it
reads against the classes themselves.

Help strings go through rich markup: a literal "[" is written "\\[" (pip install 'pcae\\[faces]').
"""
from __future__ import annotations

import ast
import dataclasses
import functools
import importlib.util
from pathlib import Path
from typing import Annotated, Any

import typer

from pcae.config import TrainConfig
from pcae.data import source_names
from pcae.options import (
    check_device,
    check_png_path,
    check_precision,
    check_seed,
    check_split,
    check_temperature,
    cli_callback,
)


def literal_defaults(module: str, owner: str | None = None) -> dict[str, Any]:
    """The literal values assigned at the top level of `module` (owner None) or in the body of its
    class `owner` (a dataclass: its fields' defaults), read from the source without importing it.

    `dict(name=literal, ...)` counts as a literal, and so does in a class body the name of one
    assigned at the module's top level; any other expression (field(...)) is skipped.
    """
    tree = _tree(module)
    names = {} if owner is None else literal_defaults(module)
    body = tree.body if owner is None else next(
        node.body for node in tree.body if isinstance(node, ast.ClassDef) and node.name == owner)
    values = {}
    for node in body:
        if isinstance(node, ast.AnnAssign) and node.value is not None:
            targets, value = [node.target], node.value
        elif isinstance(node, ast.Assign):
            targets, value = node.targets, node.value
        else:
            continue
        try:
            literal = _literal(value, names)
        except (ValueError, TypeError, SyntaxError):
            continue
        values.update({t.id: literal for t in targets if isinstance(t, ast.Name)})
    return values


@functools.lru_cache(maxsize=None)
def _tree(module: str) -> ast.Module:
    return ast.parse(Path(importlib.util.find_spec(module).origin).read_text())


def _literal(node: ast.expr, names: dict[str, Any]) -> Any:
    if isinstance(node, ast.Name) and node.id in names:
        return names[node.id]
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "dict" \
            and not node.args:
        return {k.arg: ast.literal_eval(k.value) for k in node.keywords}
    return ast.literal_eval(node)


TRAIN = {f.name: f.default for f in dataclasses.fields(TrainConfig)}  # TrainConfig's defaults


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
Temperature = Annotated[float, typer.Option("--temperature", callback=cli_callback(check_temperature),
                                            help="Divides the logits; 0 = argmax.")]
Force = Annotated[bool, typer.Option("--force", help="Replace existing outputs (only what pcae wrote; "
                                     "anything else is refused).")]
PngOut = Annotated[Path, typer.Option("--out", callback=cli_callback(check_png_path), help="PNG grid to write.")]
