"""The model kinds pcae knows: one table, filled in one place.

A checkpoint's `kind` says how to rebuild what it holds. Each kind has two functions of a loaded
checkpoint (pcae.checkpoint.load_checkpoint's dict):

    task(checkpoint)   the training task with its weights (pcae.train.Task): what evaluating,
                       sampling and resuming use
    model(checkpoint)  the nn.Module alone: what `load_model` returns

pcae's own kinds are registered below, the whole list in one place (torchvision's model registry is
the same idea); another package adds a kind with `register_kind`. This module imports the tasks
(pcae/tasks/), which never import it. It also says what a training command means:
`autoencoder_spec` (an auto-encoder, or for a face encoder the portrait model), and rebuilds any
checkpoint's model (`load_model`).
"""
from __future__ import annotations

import dataclasses
import os
import re
from dataclasses import dataclass
from typing import Any, Callable

from pcae.checkpoint import load_checkpoint, run_kind
from pcae.errors import PcaeError, first_line
from pcae.faces import FACE_ENCODERS
from pcae.tasks import autoencoder, pixelcnn, portrait
from pcae.tasks.autoencoder import AutoencoderSpec
from pcae.tasks.portrait import PortraitSpec


@dataclass(frozen=True)
class Kind:
    name: str
    task: Callable[[dict], Any]  # checkpoint -> pcae.train.Task with weights loaded
    model: Callable[[dict], Any]  # checkpoint -> nn.Module with weights loaded


_KINDS: dict[str, Kind] = {}


def register_kind(name: str, task: Callable[[dict], Any], model: Callable[[dict], Any]) -> None:
    """Make checkpoints of kind `name` loadable, evaluable and resumable."""
    _KINDS[name] = Kind(name, task, model)


register_kind("pixelcnn", pixelcnn.PixelCNNTask.from_checkpoint, pixelcnn.build_pixelcnn)
register_kind("autoencoder", autoencoder.AutoencoderTask.from_checkpoint, autoencoder.model_from_checkpoint)
register_kind("portrait", portrait.PortraitTask.from_checkpoint, portrait.build_portrait)


def kinds() -> dict[str, Kind]:
    """Every registered kind by name."""
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
    except PcaeError as e:  # a size the machine cannot hold: the file's fields, not the command's options
        model = checkpoint["configs"].get("model") if isinstance(checkpoint["configs"].get("model"), dict) else {}
        fields = ", ".join(f"{k} {model[k]}" for k in ("channels", "n_layers", "image_size") if k in model)
        why = re.sub(r" \(--[\w-]+(?:, --[\w-]+)*\)", "", str(e))
        raise PcaeError(f"{path}: the model its stored config describes ({fields}) cannot be made here: {why}") from None


def task_from_checkpoint(checkpoint: dict, path="checkpoint"):
    """The task (model + weights) of a loaded checkpoint, whatever its kind."""
    return _rebuild(get_kind(checkpoint["kind"], path).task, checkpoint, path)


def model_from_checkpoint(checkpoint: dict, path="checkpoint"):
    """The nn.Module (with weights) of a loaded checkpoint, whatever its kind."""
    return _rebuild(get_kind(checkpoint["kind"], path).model, checkpoint, path)


def load_model(path: str | os.PathLike, kind: str | None = None):
    """Rebuild the model stored in a checkpoint, on CPU in float32, in eval mode.

    Returns:
        (model, checkpoint dict).
    """
    checkpoint = load_checkpoint(path, kind)
    model = model_from_checkpoint(checkpoint, path)
    return model.float().eval(), checkpoint


FACE_ENCODER_NAMES = ("facenet", "dlib")

FACE_OPTIONS = ("facenet_weights", "facenet_crop_size", "cache", "max_photos")  # PortraitSpec's own

def autoencoder_spec(resuming: str | os.PathLike | None = None, **options):
    """What an auto-encoder run trains, from `pcae train-ae`'s model options (the fields of
    AutoencoderSpec, and PortraitSpec's face options): an AutoencoderSpec, or for a face encoder
    (facenet, dlib) a PortraitSpec, the portrait pipeline's one path. Resuming (`resuming`: the
    run folder) a portrait run with no encoder given stays a portrait run.

    options: only those the caller set (the CLI passes the options on its command line); the
        rest take the chosen spec's defaults. One the chosen model has no use for: PcaeError.
    """
    encoder = options.get("encoder")
    face = encoder in FACE_ENCODER_NAMES or (
        encoder is None and resuming is not None and run_kind(resuming) == "portrait")
    if not face:
        for name in FACE_OPTIONS:
            if options.get(name) is not None:
                raise PcaeError(f"--{name.replace('_', '-')} goes with a face encoder "
                                f"({', '.join(FACE_ENCODER_NAMES)}), not {encoder or 'conv'}")
        if options.get("decoder") == "deconv" and options.get("spatial_cond"):
            raise PcaeError("--spatial-cond needs --decoder pixelcnn (the deconv decoder has no PixelCNN "
                            "to condition)")
        try:
            return AutoencoderSpec(**options)
        except ValueError as e:  # the caller's option values
            raise PcaeError(str(e)) from None

    encoder = encoder or "facenet"
    name = {"facenet": "FaceNet", "dlib": "dlib"}[encoder]
    why = {"decoder": (options.get("decoder", "pixelcnn") != "pixelcnn",
                       "it trains the face-conditioned PixelCNN"),
           "freeze_encoder": (options.get("freeze_encoder"), f"{name} is always frozen"),
           "encoder_checkpoint": (options.get("encoder_checkpoint") is not None, f"{name}'s weights come from "
                                  + ("--facenet-weights" if encoder == "facenet" else "face-recognition-models")),
           "spatial_cond": (options.get("spatial_cond"), "the PixelCNN is conditioned on the embedding globally"),
           "bottleneck": (options.get("bottleneck") is not None, f"h is {name}'s {FACE_ENCODERS[encoder]}-d "
                          "embedding")}
    for option, (refused, reason) in why.items():
        if refused:
            shown = f" {options[option]}" if option == "decoder" else ""
            raise PcaeError(f"--{option.replace('_', '-')}{shown} does not go with --encoder {encoder} "
                            f"({reason})")
    # the other widths (encoder, deconv, m(h)) are the auto-encoder's: like the deconv decoder's
    # options on a PixelCNN auto-encoder, they do not apply here
    portrait_fields = {f.name for f in dataclasses.fields(PortraitSpec)}
    return PortraitSpec(**{**{k: v for k, v in options.items() if k in portrait_fields},
                           "encoder": encoder})
