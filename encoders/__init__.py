"""Pluggable encoders: one contract, one registry.

An encoder turns a batch into the vector h that conditions a decoder. Every encoder is a
`torch.nn.Module` with:

    dim             int, the size of h
    trainable       bool, whether an optimiser should update it (False for one-hot and FaceNet,
                    and for any encoder after `Autoencoder.freeze_encoder()`)
    input           "images" (integer levels (B, C, H, W)) or "labels" (integer (B,))
    config          plain dict with "name" and every constructor option: `load_encoder` rebuilds it
    preprocessing   plain dict describing the input it expects (stored with checkpoints and latents)
    forward(batch)  -> (B, dim) float32

Registered names (`ENCODER_NAMES`, also what `pcae train-ae --help` lists):
    conv     strided convs -> Linear -> bottleneck m              (encoders/conv.py)
    onehot   integer labels -> one-hot vectors                    (encoders/onehot.py)
    facenet  MTCNN face crop + InceptionResnetV1, 512-d, frozen   (encoders/facenet.py)
    dlib     HOG face + 5-point alignment + dlib ResNet, 128-d    (encoders/dlib.py)

Face encoders (facenet, dlib) also have `detects_faces = True` and `detect(pil_image)` /
`detect_file(path)`, which cut the face crop their forward() reads.

This module imports no torch: `ENCODER_NAMES` is a tuple, and `ENCODERS` (name -> class) is built
on first access, so the CLI can list the names in `--help` without importing torch.
"""
from __future__ import annotations

import importlib

# name -> (module, class); the order is the order `--help` lists them in
_REGISTRY = {
    "conv": ("encoders.conv", "ConvEncoder"),
    "onehot": ("encoders.onehot", "OneHotEncoder"),
    "facenet": ("encoders.facenet", "FaceNetEncoder"),
    "dlib": ("encoders.dlib", "DlibFaceEncoder"),
}
ENCODER_NAMES = tuple(_REGISTRY)


def get_encoder_class(name: str):
    """The encoder class registered under `name`; ValueError naming the known ones otherwise."""
    if name not in _REGISTRY:
        raise ValueError(f"encoder must be one of {', '.join(ENCODER_NAMES)}, got {name!r}")
    module, cls = _REGISTRY[name]
    return getattr(importlib.import_module(module), cls)


def __getattr__(attr):  # PEP 562: ENCODERS imports torch, so build it only when asked for
    if attr == "ENCODERS":
        return {name: get_encoder_class(name) for name in ENCODER_NAMES}
    raise AttributeError(f"module 'encoders' has no attribute {attr!r}")


def build_encoder(name: str, **options):
    """A fresh encoder: `build_encoder("conv", in_channels=1, image_size=(28, 28), bottleneck=10)`."""
    return get_encoder_class(name)(**options)


def load_encoder(config: dict, state_dict: dict | None = None):
    """Rebuild an encoder from its stored `config` (and weights, when given).

    With a state dict no pretrained file is read: FaceNet is built with random weights and then
    loaded, so a checkpoint works on a machine without `$TORCH_HOME/checkpoints`.
    """
    if not isinstance(config, dict) or "name" not in config:
        raise ValueError(f"config must be a dict with a 'name', got {config!r}")
    cls = get_encoder_class(config["name"])
    options = {k: v for k, v in config.items() if k != "name"}
    encoder = cls.from_config(options, state_dict)
    if state_dict is not None:
        encoder.load_state_dict(state_dict)
    return encoder


__all__ = ["ENCODER_NAMES", "ENCODERS", "build_encoder", "get_encoder_class", "load_encoder"]
