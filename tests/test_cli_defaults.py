"""The CLI's training options default to the library's values: one source of truth per default."""
from __future__ import annotations

import dataclasses

import pytest

from pcae.tasks.autoencoder import AutoencoderSpec
from pcae.cli import app
from pcae.tasks.pixelcnn import PixelCNNSpec
from pcae.train import TrainConfig


def command(name):
    import typer.main

    group = typer.main.get_command(app)
    return group.commands[name]


def defaults(name) -> dict:
    return {p.name: p.default for p in command(name).params}


TRAIN_FIELDS = {f.name: f.default for f in dataclasses.fields(TrainConfig)}
SHARED = ("batch_size", "lr", "lr_schedule", "warmup_steps", "ema", "grad_clip", "seed", "device",
          "precision", "compile", "log_every", "eval_every", "eval_images", "sample_every",
          "n_samples", "checkpoint_every")


@pytest.mark.parametrize("name", ["train", "train-ae", "train-portraits"])
def test_training_options_default_to_train_config(name):
    options = defaults(name)
    for field in SHARED:
        assert options[field] == TRAIN_FIELDS[field], (name, field)
    assert options["steps"] is None and options["epochs"] is None  # None: TrainConfig decides
    assert TrainConfig().steps == TrainConfig.DEFAULT_STEPS and TrainConfig().epochs == 0
    for field in ("judge_images", "num_workers", "checkpoint_seconds", "channels_last"):
        assert options[field] == TRAIN_FIELDS[field], (name, field)


def test_every_training_command_has_the_same_shared_options():
    """Declared once (pcae.cli._TRAINING_OPTIONS): the same names, flags and defaults everywhere."""
    from pcae.cli import _TRAINING_OPTIONS

    flags = {}
    for name in ("train", "train-ae", "train-portraits"):
        params = {p.name: p for p in command(name).params}
        assert set(_TRAINING_OPTIONS) <= set(params), (name, set(_TRAINING_OPTIONS) - set(params))
        flags[name] = {k: (tuple(params[k].opts), params[k].default) for k in _TRAINING_OPTIONS}
    assert flags["train"] == flags["train-ae"] == flags["train-portraits"]
    for field, (_, default) in flags["train"].items():
        if field in TRAIN_FIELDS and field not in ("steps", "epochs"):
            assert default == TRAIN_FIELDS[field], field


def test_train_ae_model_options_default_to_the_spec():
    options, spec = defaults("train-ae"), AutoencoderSpec()
    # None means "the spec's default" (the facenet path has its own); the rest are spelled out
    assert options["channels"] is None and options["n_layers"] is None
    assert options["spatial_cond"] is None and spec.spatial_cond
    for field in ("encoder_channels", "encoder_norm", "decoder", "deconv_output", "deconv_channels",
                  "spatial_channels", "kernel_size", "first_kernel_size", "head_channels"):
        assert options[field] == getattr(spec, field), field


def test_train_model_options_default_to_the_spec():
    options, spec = defaults("train"), PixelCNNSpec()
    for field in ("channels", "n_layers", "kernel_size", "first_kernel_size", "head_channels",
                  "condition"):
        assert options[field] == getattr(spec, field), field


def test_train_config_defaults_build():
    config = TrainConfig()
    assert config.steps == 800 and config.lr == 4e-3 and config.ema == 0.999
    assert TrainConfig(epochs=2).steps == 0
    with pytest.raises(ValueError, match="not both"):
        TrainConfig(steps=3, epochs=2)


def test_the_cli_reads_its_defaults_without_importing_torch():
    """`pcae --help` stays fast: the CLI module and TrainConfig (pcae.config) are torch-free."""
    import subprocess
    import sys

    code = "import sys, pcae.cli; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_train_portraits_model_options_default_to_the_spec():
    from pcae.portrait import PortraitSpec

    options, spec = defaults("train-portraits"), PortraitSpec()
    for field in ("channels", "n_layers", "kernel_size", "first_kernel_size", "head_channels", "encoder",
                  "facenet_weights", "facenet_crop_size", "cache", "max_photos", "spatial_channels",
                  "identity_swap", "h_noise"):
        assert options[field] == getattr(spec, field), field
    assert options["image_size"] is None  # None: the faces' default side, pcae.faces.DEFAULT_FACE_SIZE
