"""The auto-encoder as a task for pcae.train's loop: `pcae train-ae`, checkpoint kind "autoencoder".

`AutoencoderSpec` (the model options of `pcae train-ae`: pcae.settings; image shape and class
count come from the data) builds an `AutoencoderTask` around an `Autoencoder` (pcae/autoencoder.py): a conv or
one-hot encoder and a PixelCNN or deconv decoder. A face encoder's PixelCNN is a portrait model
(pcae/tasks/portrait.py); `pcae.kinds.autoencoder_spec` chooses which spec `train-ae` means.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from encoders import ENCODER_NAMES, build_encoder, load_encoder
from encoders.conv import NORMALIZATIONS
from eval.judge import judge_autoencoder
from pcae.autoencoder import DECODERS, Autoencoder, build_autoencoder
from pcae.checkpoint import load_checkpoint
from pcae.deconv import DeconvConfig, DeconvDecoder
from pcae.errors import PcaeError, first_line
from pcae.pixelcnn import GatedPixelCNN, PixelCNNConfig
from pcae.resume import UNUSED, stored_values
from pcae.settings import AutoencoderSettings
from pcae.task import Task

GRID_SAMPLES = 4  # PixelCNN samples per original in a training grid

class AutoencoderTask(Task):
    """An Autoencoder trained by pcae.train's loop. Tracked metric: "bpd" (PixelCNN, categorical
    deconv) or "mse" (the MSE deconv, whose "bpd" is the discretised-Gaussian estimate)."""

    kind = "autoencoder"

    def __init__(self, model: Autoencoder, classes: list[str] | None = None):
        self.model = model
        self.classes = list(classes or [])
        mse = model.kind == "deconv" and model.decoder.config.output == "mse"
        self.metric = "mse" if mse else "bpd"

    def configs(self):
        return {"model": self.model.config_dict(), "task": {"classes": self.classes}}

    def loss(self, images, labels):
        loss, metrics = self.model.loss(images, labels)
        out = {("bpd" if k == "bits_per_dim" else k): v for k, v in metrics.items()}
        out[self.metric] = loss  # the tensor the loop back-propagates
        return out

    @torch.no_grad()
    def evaluate(self, batches):
        """Image-weighted means of loss()'s metrics over the batches, plus "images"."""
        totals, n = {}, 0
        for images, labels in batches:
            for k, v in self.loss(images, labels).items():
                totals[k] = totals.get(k, 0.0) + float(v) * len(images)
            n += len(images)
        return {**{k: v / n for k, v in totals.items()}, "images": n} if n else {}

    def grid(self, images: torch.Tensor, labels: torch.Tensor, per: int, generator=None,
             temperature: float = 1.0, method: str | None = None) -> tuple[torch.Tensor, int]:
        """Each original followed by `per` PixelCNN samples given its h (or by its deconv
        reconstruction). Returns ((N, C, H, W) uint8, images per row)."""
        model = self.model
        was_training = model.training
        model.eval()
        try:
            if model.kind == "deconv":
                rec = model.reconstruct(images, labels)
                rows = torch.stack([images.long(), rec], 1)  # (B, 2, C, H, W)
            else:
                source = labels if model.encoder.input == "labels" else images
                drawn = model.sample(source, per, temperature=temperature, generator=generator,
                                     method=method)  # (B, per, C, H, W)
                rows = torch.cat([images[:, None].long(), drawn], 1)
        finally:
            model.train(was_training)
        return rows.flatten(0, 1).to(torch.uint8), rows.shape[1]

    judgeable = True

    def judged(self, judge, images, labels, generator, temperature):
        """eval.judge.judge_autoencoder: samples given h (deconv: reconstructions), judged."""

        return judge_autoencoder(self.model, judge, images, labels, generator=generator,
                                 temperature=temperature)

    def sample_grid(self, examples, n, generator, temperature):
        images, labels = examples
        if self.model.kind == "deconv":  # n (original, reconstruction) pairs, 4 pairs a row
            k = max(1, min(len(images), n))
            grid, _ = self.grid(images[:k], labels[:k], 1)
            return grid, 2 * min(4, k)
        rows = max(1, min(len(images), math.ceil(n / GRID_SAMPLES)))
        return self.grid(images[:rows], labels[:rows], GRID_SAMPLES, generator, temperature)

    def grid_caption(self, examples, n):
        labels = examples[1].tolist()
        if self.model.kind == "deconv":  # pairs of (original, reconstruction), 4 a row
            k = max(1, min(len(labels), n))
            rows = [labels[r:r + 4] for r in range(0, k, 4)]
        else:
            rows = [[label] for label in labels[:max(1, min(len(labels), math.ceil(n / GRID_SAMPLES)))]]
        names = [", ".join(self.classes[y] if 0 <= y < len(self.classes) else "-" for y in row) for row in rows]
        return {"rows": names, "sources_first": self.model.kind != "deconv"}

    def check_data(self, dataset):
        source, (C, H, W) = dataset.info.get("source"), tuple(dataset.shape)
        encoder, decoder = self.model.encoder, self.model.decoder.config
        enc = encoder.config
        shapes = [(decoder.image_channels, None)]  # (channels, (H, W) or None = any size)
        if self.model.kind == "deconv" or decoder.spatial_cond:
            shapes.append((decoder.image_channels, tuple(decoder.image_size)))
        if enc["name"] == "conv":
            shapes.append((enc["in_channels"], tuple(enc["image_size"])))
        for channels, size in shapes:
            if C != channels or (size is not None and (H, W) != size):
                want = f"{channels}-channel" + ("" if size is None else f" {size[0]}x{size[1]}")
                raise PcaeError(f"data {source!r} has {C}-channel {H}x{W} images, the model "
                                f"expects {want} images")
        if encoder.input == "labels":
            if not dataset.num_classes:
                raise PcaeError(f"data {source!r} has no labels; the {enc['name']} encoder needs "
                                "a labelled source")
            if dataset.num_classes != encoder.dim:
                raise PcaeError(f"data {source!r} has {dataset.num_classes} classes, the "
                                f"{enc['name']} encoder was built for {encoder.dim}")

    @classmethod
    def from_checkpoint(cls, checkpoint: dict) -> "AutoencoderTask":
        configs = checkpoint["configs"]
        model = build_autoencoder(configs["model"], checkpoint["state_dicts"]["model"])
        return cls(model, configs.get("task", {}).get("classes"))

def model_from_checkpoint(checkpoint: dict) -> Autoencoder:
    """The bare model of an "autoencoder" checkpoint (pcae.kinds)."""
    return build_autoencoder(checkpoint["configs"]["model"], checkpoint["state_dicts"]["model"])

def encoder_from_checkpoint(path) -> nn.Module:
    """The encoder of an auto-encoder checkpoint, with its weights (for --encoder-checkpoint)."""
    checkpoint = load_checkpoint(path, kind="autoencoder")
    config = checkpoint["configs"]["model"]["encoder"]
    state = {k[len("encoder."):]: v for k, v in checkpoint["state_dicts"]["model"].items()
             if k.startswith("encoder.")}
    try:
        return load_encoder(config, state)
    except (ValueError, RuntimeError, KeyError) as e:
        raise PcaeError(f"{path}: cannot rebuild its encoder ({first_line(e)})") from None

@dataclass(frozen=True)
class AutoencoderSpec(AutoencoderSettings):
    """`pcae train-ae`'s model (its options and their meaning: pcae.settings.AutoencoderSettings),
    built from the data. A face encoder's PixelCNN is a portrait model: pcae.tasks.portrait.PortraitSpec
    (`pcae.kinds.autoencoder_spec` chooses it for `pcae train-ae --encoder facenet`)."""

    kind: ClassVar[str] = "autoencoder"

    def __post_init__(self):
        if self.encoder is not None and self.encoder not in ENCODER_NAMES:
            raise ValueError(f"encoder must be one of {', '.join(ENCODER_NAMES)}, got {self.encoder!r}")
        if self.encoder in ("facenet", "dlib"):
            raise ValueError(f"a {self.encoder}-conditioned PixelCNN is a portrait model: train it with "
                             "pcae.tasks.portrait.PortraitSpec (or autoencoder_spec), or `pcae train-ae "
                             f"--encoder {self.encoder}` / `pcae train-portraits`")
        if self.bottleneck is not None and self.bottleneck < 1:
            raise ValueError(f"bottleneck must be >= 1, got {self.bottleneck}")
        if self.encoder_norm not in NORMALIZATIONS:
            raise ValueError(f"encoder_norm must be batchnorm or none, got {self.encoder_norm!r}")
        if self.decoder not in DECODERS:
            raise ValueError(f"decoder must be one of {', '.join(DECODERS)}, got {self.decoder!r}")
        if self.bottleneck is not None and self.encoder == "onehot" and not self.encoder_checkpoint:
            raise ValueError(f"bottleneck applies to the conv encoder; the {self.encoder} encoder's "
                             "dim is fixed")

    def make_encoder(self, dataset) -> nn.Module:
        if self.encoder_checkpoint:
            encoder = encoder_from_checkpoint(self.encoder_checkpoint)
            name = encoder.config["name"]
            if self.encoder is not None and self.encoder != name:
                raise PcaeError(f"{self.encoder_checkpoint}: holds a {name} encoder, not {self.encoder}")
            if self.bottleneck is not None and self.bottleneck != encoder.dim:
                raise PcaeError(f"{self.encoder_checkpoint}: its {name} encoder has dim {encoder.dim}, "
                                f"but --bottleneck is {self.bottleneck}")
            return encoder
        name = self.encoder or "conv"
        C, H, W = dataset.shape
        if name == "conv":
            return build_encoder("conv", in_channels=C, image_size=(H, W),
                                 bottleneck=self.bottleneck or 10, channels=self.encoder_channels,
                                 normalize=self.encoder_norm)
        if name == "onehot":
            if not dataset.num_classes:
                raise PcaeError(f"data {dataset.info.get('source')!r} has no labels; --encoder "
                                "onehot needs a labelled source")
            return build_encoder("onehot", num_classes=dataset.num_classes)
        raise ValueError(f"encoder must be one of the registered names, got {name!r}")

    def build(self, dataset) -> AutoencoderTask:
        C, H, W = dataset.shape
        encoder = self.make_encoder(dataset)
        try:
            if self.decoder == "pixelcnn":
                decoder = GatedPixelCNN(PixelCNNConfig(
                    image_channels=C, channels=self.channels, n_layers=self.n_layers,
                    kernel_size=self.kernel_size, first_kernel_size=self.first_kernel_size,
                    head_channels=self.head_channels, cond_dim=encoder.dim,
                    spatial_cond=self.spatial_cond, spatial_channels=self.spatial_channels,
                    image_size=(H, W)))
            else:
                decoder = DeconvDecoder(DeconvConfig(
                    cond_dim=encoder.dim, image_channels=C, image_size=(H, W),
                    channels=self.deconv_channels, output=self.deconv_output))
        except ValueError as e:
            raise PcaeError(f"model options: {e}") from None
        model = Autoencoder(encoder, decoder)
        if self.freeze_encoder:
            model.freeze_encoder()
        return AutoencoderTask(model, list(dataset.classes or []))

    def stored(self, configs: dict) -> dict:
        """The options as a stored run has them; those of the decoder it does not have, and the
        checkpoint its encoder started from, are UNUSED (ignored when given again)."""

        enc, dec = ("model", "encoder"), ("model", "decoder", "config")
        paths = {"encoder": enc + ("name",), "bottleneck": enc + ("bottleneck",),
                 "encoder_channels": enc + ("channels",), "encoder_norm": enc + ("normalize",),
                 "decoder": ("model", "decoder", "kind"), "freeze_encoder": ("model", "encoder_frozen")}
        pixelcnn = {name: dec + (name,) for name in ("channels", "n_layers", "spatial_cond", "spatial_channels",
                                                     "kernel_size", "first_kernel_size", "head_channels")}
        deconv = {"deconv_output": dec + ("output",), "deconv_channels": dec + ("channels",)}
        has, lacks = ((pixelcnn, deconv) if stored_values(configs, {"k": ("model", "decoder", "kind")}).get("k")
                      == "pixelcnn" else (deconv, pixelcnn))
        return {"encoder_checkpoint": UNUSED, **dict.fromkeys(lacks, UNUSED),
                **stored_values(configs, paths | has)}

    def restore(self, checkpoint: dict) -> AutoencoderTask:
        return AutoencoderTask.from_checkpoint(checkpoint)
