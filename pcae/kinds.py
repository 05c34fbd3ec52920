"""The model kinds pcae knows: one table, filled in one place.

A checkpoint's `kind` says how to rebuild what it holds. Each kind has two functions of a loaded
checkpoint (pcae.checkpoint.load_checkpoint's dict):

    task(checkpoint)   the training task with its weights (pcae.train.Task): what evaluating,
                       sampling and resuming use
    model(checkpoint)  the nn.Module alone: what pcae.checkpoint.load_model returns

pcae's own kinds are registered by `_register_pcae_kinds`, below, the first time the table is read:
that is the whole list, in one function (torchvision's model registry is the same idea). Another
package adds a kind with `register_kind`. This module imports no torch until the table is read.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from pcae.utils import PcaeError, first_line


@dataclass(frozen=True)
class Kind:
    name: str
    task: Callable[[dict], Any]  # checkpoint -> pcae.train.Task with weights loaded
    model: Callable[[dict], Any]  # checkpoint -> nn.Module with weights loaded


_KINDS: dict[str, Kind] = {}
_filled = False


def register_kind(name: str, task: Callable[[dict], Any], model: Callable[[dict], Any]) -> None:
    """Make checkpoints of kind `name` loadable, evaluable and resumable."""
    _KINDS[name] = Kind(name, task, model)


def _register_pcae_kinds() -> None:
    from pcae import autoencoder, pixelcnn_task, portrait

    register_kind("pixelcnn", pixelcnn_task.PixelCNNTask.from_checkpoint, pixelcnn_task.build_pixelcnn)
    register_kind("autoencoder", autoencoder.AutoencoderTask.from_checkpoint,
                  autoencoder.model_from_checkpoint)
    register_kind("portrait", portrait.PortraitTask.from_checkpoint, portrait.build_portrait)


def kinds() -> dict[str, Kind]:
    """Every registered kind by name (pcae's own registered on first use)."""
    global _filled
    if not _filled:
        _filled = True
        _register_pcae_kinds()
    return _KINDS


def get_kind(name: str, path="checkpoint") -> Kind:
    """The kind `name`; PcaeError naming the file and the known kinds otherwise."""
    known = kinds()
    if name not in known:
        raise PcaeError(f"{path}: checkpoint kind {name!r} is not known to this pcae "
                        f"(known: {', '.join(sorted(known))})")
    return known[name]


def _rebuild(fn: Callable[[dict], Any], checkpoint: dict, path) -> Any:
    try:
        return fn(checkpoint)
    except (TypeError, ValueError, KeyError, RuntimeError) as e:
        raise PcaeError(f"{path}: cannot rebuild the model from this checkpoint ({first_line(e)})") from None


def task_from_checkpoint(checkpoint: dict, path="checkpoint"):
    """The task (model + weights) of a loaded checkpoint, whatever its kind."""
    return _rebuild(get_kind(checkpoint["kind"], path).task, checkpoint, path)


def model_from_checkpoint(checkpoint: dict, path="checkpoint"):
    """The nn.Module (with weights) of a loaded checkpoint, whatever its kind."""
    return _rebuild(get_kind(checkpoint["kind"], path).model, checkpoint, path)
