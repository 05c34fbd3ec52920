"""Auto-encoders: an encoder makes h, a decoder models x given h [1, section 3.4].

    Autoencoder(encoder, GatedPixelCNN(cond_dim=encoder.dim))   the PixelCNN auto-encoder: loss is
        the NLL in bits/dim of p(x | h); `sample` draws new images given h (varied images with the
        same content, not copies of the input).
    Autoencoder(encoder, DeconvDecoder(cond_dim=encoder.dim))   the baseline: loss is the MSE
        ("mse" output, with an estimated bits/dim) or the factorised NLL ("categorical" output);
        `reconstruct` decodes h to one image.

The encoder is any registered encoder (`encoders.ENCODER_NAMES`); it reads images (conv, facenet) or
labels (onehot). End-to-end training updates encoder and decoder together; `freeze_encoder()` stops
the encoder's gradients (and keeps it in eval mode) so its weights stay bit-identical.

`config_dict()` is what a checkpoint stores; `build_autoencoder(config, state_dict)` rebuilds the
model from it. `AutoencoderTask` / `AutoencoderSpec` plug the model into pcae.train's loop
(`pcae train-ae`, checkpoint kind "autoencoder"); `reconstruct_checkpoint` draws the paper-style grid
(each original, then samples given its h) from a checkpoint (`pcae reconstruct`).

References:
    [1] van den Oord et al., "Conditional Image Generation with PixelCNN Decoders", 2016,
        arXiv:1606.05328.

One face path: AutoencoderSpec trains conv- and onehot-encoded auto-encoders; a face encoder's
PixelCNN is a portrait model (pcae.portrait: MTCNN once into the face cache, faceless photos
skipped and named in train.log, checkpoint kind "portrait"), which `pcae train-ae --encoder
facenet` and `pcae train-portraits` both run. An `Autoencoder` built by hand around any encoder
(facenet included) still works, and so do checkpoints of one. Known limits: the "mse"
deconv's bits/dim is an estimate: sigma is fitted to each batch's own MSE. Checkpoints of kind
"autoencoder" are rebuilt through pcae.kinds (`AutoencoderTask.from_checkpoint`, `model_from_checkpoint`).

Shapes: B batch, C image channels, H, W image size, K levels, D = encoder.dim, n per-input samples.
"""
from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import asdict, dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from encoders import build_encoder, load_encoder
from pcae.checkpoint import load_checkpoint, run_kind
from pcae.deconv import DeconvConfig, DeconvDecoder, expected_levels, gaussian_bits_per_dim
from pcae.pixelcnn import GatedPixelCNN, PixelCNNConfig, bits_per_dim
from pcae.kinds import task_from_checkpoint
from pcae.train import Task
from pcae.utils import PcaeError, first_line

# decoder kind -> (class, config class)
DECODERS = {
    "pixelcnn": (GatedPixelCNN, PixelCNNConfig),
    "deconv": (DeconvDecoder, DeconvConfig),
}


def decoder_kind(decoder: nn.Module) -> str:
    """The DECODERS name of a decoder instance."""
    for kind, (cls, _) in DECODERS.items():
        if isinstance(decoder, cls):
            return kind
    raise ValueError(f"decoder must be a GatedPixelCNN or a DeconvDecoder, got {type(decoder).__name__}")


class Autoencoder(nn.Module):
    """An encoder and a decoder conditioned on its output h.

    Args:
        encoder: a registered encoder (see `encoders`).
        decoder: a conditional GatedPixelCNN or a DeconvDecoder whose cond_dim equals encoder.dim.
    """

    def __init__(self, encoder: nn.Module, decoder: nn.Module):
        super().__init__()
        self.kind = decoder_kind(decoder)
        cond_dim = decoder.config.cond_dim
        if cond_dim != encoder.dim:
            raise ValueError(f"decoder cond_dim must equal the encoder's dim {encoder.dim}, got {cond_dim}")
        self.encoder, self.decoder = encoder, decoder
        self.encoder_frozen = False

    # -- training ----------------------------------------------------------------------------------

    def freeze_encoder(self) -> "Autoencoder":
        """Stop training the encoder: no gradients, eval mode, `trainable` False."""
        self.encoder.requires_grad_(False)
        self.encoder.trainable = False
        self.encoder_frozen = True
        self.encoder.eval()
        return self

    def train(self, mode: bool = True) -> "Autoencoder":
        super().train(mode)
        if not self.encoder.trainable:
            self.encoder.eval()
        return self

    def trainable_parameters(self) -> list[nn.Parameter]:
        """The parameters an optimiser should update (the encoder's only when it is trainable)."""
        return [p for p in self.parameters() if p.requires_grad]

    def encoder_batch(self, images: torch.Tensor | None, labels: torch.Tensor | None) -> torch.Tensor:
        """What the encoder reads: the images, or the labels for a label encoder."""
        if self.encoder.input == "labels":
            if labels is None:
                raise ValueError(f"labels are required: the {self.encoder.config['name']} encoder "
                                 "reads class labels")
            return labels
        if images is None:
            raise ValueError("images are required: the encoder reads images")
        return images

    def encode(self, batch: torch.Tensor) -> torch.Tensor:
        """Args:
            batch: what the encoder reads (images (B, C, H, W) levels, or labels (B,)).
        Returns:
            h (B, D) float (without a graph when the encoder is not trainable).
        """
        if self.encoder.trainable and torch.is_grad_enabled():
            return self.encoder(batch)
        with torch.no_grad():
            return self.encoder(batch)

    def loss(self, images: torch.Tensor, labels: torch.Tensor | None = None):
        """The training loss of a batch. Checks shapes only, never values, so it makes no host sync
        (it runs inside the training loop, under autocast, DDP and torch.compile).

        Args:
            images: (B, C, H, W) integer levels.
            labels: (B,) integer, needed by label encoders only.
        Returns:
            (loss, metrics): loss a scalar to minimise (bits/dim for the PixelCNN and the categorical
            deconv, MSE on the [0, 1] scale for the "mse" deconv); metrics a dict of detached scalar
            tensors: "bits_per_dim" always (estimated through a discretised Gaussian with sigma
            fitted to the batch's MSE for the "mse" deconv), and "mse" for deconv decoders.
        """
        self.check_images(images)
        h = self.encode(self.encoder_batch(images, labels))
        if self.kind == "pixelcnn":
            logits = self.decoder.forward_float(self.decoder.scale(images), h)  # (B, K, C, H, W)
            bpd = bits_per_dim(logits, images)
            return bpd, {"bits_per_dim": bpd.detach()}
        out = self.decoder(h)
        target = self.decoder.scale(images)
        if self.decoder.config.output == "mse":
            mse = F.mse_loss(out.float(), target.float())
            bpd = gaussian_bits_per_dim(out.detach(), images, mse.detach().sqrt(),
                                        self.decoder.config.levels)
            return mse, {"mse": mse.detach(), "bits_per_dim": bpd}
        bpd = bits_per_dim(out, images)
        mean = expected_levels(out.detach()) / (self.decoder.config.levels - 1)
        return bpd, {"bits_per_dim": bpd.detach(), "mse": F.mse_loss(mean, target.float()).detach()}

    def check_images(self, images: torch.Tensor) -> None:
        """ValueError unless images are (B, C, H, W) integer levels of the decoder's channels (and
        size, for decoders tied to one: deconv, spatial conditioning)."""
        cfg = self.decoder.config
        if images.dim() != 4 or images.shape[1] != cfg.image_channels:
            raise ValueError(f"images must have shape (B, {cfg.image_channels}, H, W), "
                             f"got {tuple(images.shape)}")
        fixed = self.kind == "deconv" or cfg.spatial_cond
        if fixed and tuple(images.shape[2:]) != tuple(cfg.image_size):
            raise ValueError(f"images must be {cfg.image_size[0]}x{cfg.image_size[1]} for this "
                             f"decoder, got {images.shape[2]}x{images.shape[3]}")
        if images.is_floating_point() or images.is_complex():
            raise ValueError(f"images must hold integer levels, got dtype {images.dtype}")

    # -- inference ---------------------------------------------------------------------------------

    @torch.no_grad()
    def reconstruct(self, images: torch.Tensor | None = None, labels: torch.Tensor | None = None
                    ) -> torch.Tensor:
        """Deconv decoders only: decode h(x) to one image per input.

        Returns:
            (B, C, H, W) long levels: the rounded mean ("mse") or the per-sub-pixel mode
            ("categorical").
        """
        if self.kind != "deconv":
            raise ValueError("reconstruct needs a deconv decoder; a PixelCNN decoder samples: use sample()")
        return self.decoder.to_levels(self.decoder(self.encode(self.encoder_batch(images, labels))))

    @torch.no_grad()
    def sample(self, source: torch.Tensor, n_per: int = 1, *, temperature: float = 1.0,
               generator: torch.Generator | None = None, method: str | None = None,
               progress=None) -> torch.Tensor:
        """PixelCNN decoders only: draw n_per images from p(x | h) for each input.

        Args:
            source: h (B, D) float, or what the encoder reads (images (B, C, H, W) / labels (B,),
                integer), which is encoded first.
            n_per: samples per input.
            temperature, generator, progress: as in `pcae.sampling.sample`.
            method: a sampler name in `pcae.sampling.SAMPLERS`; None = sample()'s default.
        Returns:
            (B, n_per, C, H, W) long levels. Images come out at the decoder's image_size (or the
            input images' size when images are given).
        """
        from pcae.sampling import sample

        if self.kind != "pixelcnn":
            raise ValueError("sample needs a PixelCNN decoder; a deconv decoder reconstructs: use reconstruct()")
        if n_per < 1:
            raise ValueError(f"n_per must be >= 1, got {n_per}")
        cfg = self.decoder.config
        size = cfg.image_size
        if source.is_floating_point():
            h = source
        else:
            if self.encoder.input == "images":
                size = tuple(source.shape[2:])
            h = self.encode(source)
        if h.dim() != 2 or h.shape[1] != cfg.cond_dim:
            raise ValueError(f"h must have shape (B, {cfg.cond_dim}), got {tuple(h.shape)}")
        B = h.shape[0]
        options = {} if method is None else {"method": method}
        x = sample(self.decoder, B * n_per, (cfg.image_channels, *size), h.repeat_interleave(n_per, 0),
                   temperature=temperature, generator=generator, progress=progress, **options)
        return x.view(B, n_per, cfg.image_channels, *size)

    # -- configs -----------------------------------------------------------------------------------

    def config_dict(self) -> dict:
        """Plain dicts a checkpoint can store: encoder config, decoder kind and config, frozen flag."""
        return {"encoder": dict(self.encoder.config),
                "decoder": {"kind": self.kind, "config": asdict(self.decoder.config)},
                "encoder_frozen": self.encoder_frozen}


def build_autoencoder(config: dict, state_dict: dict | None = None) -> Autoencoder:
    """Rebuild an Autoencoder from `Autoencoder.config_dict()` (and load its weights, when given).

    With a state dict the encoder is rebuilt from it too, so no pretrained file is read.
    """
    try:
        kind, decoder_config = config["decoder"]["kind"], config["decoder"]["config"]
        encoder_config = config["encoder"]
    except (KeyError, TypeError):
        raise ValueError("config must be a dict with 'encoder' and 'decoder': {'kind', 'config'}, "
                         f"got {config!r}") from None
    if kind not in DECODERS:
        raise ValueError(f"decoder kind must be one of {', '.join(DECODERS)}, got {kind!r}")
    encoder_state = None
    if state_dict is not None:
        encoder_state = {k[len("encoder."):]: v for k, v in state_dict.items() if k.startswith("encoder.")}
    encoder = load_encoder(encoder_config, encoder_state)
    decoder_cls, config_cls = DECODERS[kind]
    model = Autoencoder(encoder, decoder_cls(config_cls(**decoder_config)))
    if config.get("encoder_frozen"):
        model.freeze_encoder()
    if state_dict is not None:
        model.load_state_dict(state_dict)
    return model


# ---------------------------------------------------------------------------------------------
# Training (`pcae train-ae`) and use (`pcae reconstruct`): a task for the loop in pcae/train.py


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
        from eval.judge import judge_autoencoder

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
class AutoencoderSpec:
    """Model options for `pcae train-ae`; image shape and class count come from the data.

    encoder: "conv" or "onehot" (None: "conv", or the --encoder-checkpoint's). A face encoder
        (facenet, dlib) makes a portrait model, which has one path: pcae.portrait.PortraitSpec
        (`autoencoder_spec` below chooses it for `pcae train-ae --encoder facenet`).
    bottleneck: the conv encoder's m (None: 10, or the checkpoint encoder's dim, which it must match).
    decoder: "pixelcnn" or "deconv" (with `deconv_output` "mse" or "categorical").
    freeze_encoder: train the decoder only; the encoder's weights stay bit-identical.
    encoder_checkpoint: an auto-encoder checkpoint whose encoder (and weights) to start from.
    encoder_norm: the conv encoder's normalisation of h, "batchnorm" (default) or "none".
    spatial_cond: condition the PixelCNN on h globally *and* through the location-dependent map
        m(h) (the default), or globally only (False). The deconv decoder ignores it.
    spatial_channels: channels c of the map s = m(h) (B, c, H, W).

    The PixelCNN defaults (location-dependent h with a 32-channel map, 24 channels, one gated layer
    after the 7x7 first one) are the measured recipe of benchmarks/ae_recipe.py: with global h only the decoder's
    samples given h ignore h (the stack cannot tell where in the image it is, so h cannot say
    where to put ink), and a shallow stack has to take the image's layout from m(h) instead of
    from its own context, which is also cheaper per step.
    """

    kind: ClassVar[str] = "autoencoder"
    encoder: str | None = None
    bottleneck: int | None = None
    encoder_channels: int = 32
    encoder_norm: str = "batchnorm"
    decoder: str = "pixelcnn"
    channels: int = 24
    n_layers: int = 1
    kernel_size: int = 3
    first_kernel_size: int = 7
    head_channels: int = 0
    spatial_cond: bool = True
    spatial_channels: int = 32
    deconv_output: str = "mse"
    deconv_channels: int = 32
    freeze_encoder: bool = False
    encoder_checkpoint: str | None = None

    def __post_init__(self):
        from encoders import ENCODER_NAMES
        from encoders.conv import NORMALIZATIONS

        if self.encoder is not None and self.encoder not in ENCODER_NAMES:
            raise ValueError(f"encoder must be one of {', '.join(ENCODER_NAMES)}, got {self.encoder!r}")
        if self.encoder in ("facenet", "dlib"):
            raise ValueError(f"a {self.encoder}-conditioned PixelCNN is a portrait model: train it with "
                             "pcae.portrait.PortraitSpec (or autoencoder_spec), or `pcae train-ae "
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
        from pcae.resume import UNUSED, stored_values

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
    from pcae.faces import FACE_ENCODERS
    from pcae.portrait import PortraitSpec

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


def reconstruct_checkpoint(path, data: str | None = None, split: str = "test", n: int = 8,
                           samples: int = 4, temperature: float = 1.0, seed: int = 0,
                           sampler: str | None = None, data_root: str | None = None,
                           device: str = "cpu", judge_images: int = 200
                           ) -> tuple[torch.Tensor, int, dict]:
    """The first n images of a data split, each followed by what an auto-encoder makes of its h.

    A PixelCNN decoder draws `samples` images given each h; a deconv decoder gives its one
    reconstruction (`samples` is then ignored). With judge_images > 0, the sample judge
    (eval.judge) scores samples given the h of the first `judge_images` images of the split
    (2 each; deconv: the reconstructions): info["semantics"].

    Returns:
        (grid (N, C, H, W) uint8, images per row, info {checkpoint, data, split, images, decoder,
        encoder, <metric> over the n images, ...}).
    """
    from pcae.inference import checkpoint_data
    from pcae.sampling import check_sampler
    from pcae.train import first_examples, resolve_device

    from pcae.options import check_device, check_split, check_temperature

    check_split(split), check_temperature(temperature), check_device(device)
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    if samples < 1:
        raise ValueError(f"samples must be >= 1, got {samples}")
    check_sampler(sampler)
    checkpoint = load_checkpoint(path, kind="autoencoder")
    task = task_from_checkpoint(checkpoint, path)
    dataset, source = checkpoint_data(checkpoint, path, data, split, data_root)
    task.check_data(dataset)
    target = resolve_device(device)
    task.model.to(target).eval()
    images, labels = first_examples(dataset, n, target)
    metrics = task.evaluate([(images, labels)])
    generator = torch.Generator(target).manual_seed(seed)
    grid, nrow = task.grid(images, labels, samples, generator, temperature, sampler)
    info = {"checkpoint": str(path), "step": checkpoint.get("step"), "data": source, "split": split,
            "decoder": task.model.kind, "encoder": task.model.encoder.config["name"],
            "samples_per_image": nrow - 1, **metrics}
    if judge_images:
        from eval.judge import judge_run

        train_config = checkpoint["configs"].get("train", {})
        judge_source = dict(source=source, channels=train_config.get("image_channels"),
                            image_size=train_config.get("image_size"),
                            data_root=data_root or train_config.get("data_root"))
        info["semantics"] = judge_run(task, judge_source, dataset, judge_images,
                                      torch.Generator(target).manual_seed(seed), temperature)
    return grid, nrow, info
