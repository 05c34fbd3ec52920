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

from dataclasses import asdict

import torch
import torch.nn.functional as F
from torch import nn

from encoders import load_encoder
from pcae.deconv import (
    DeconvConfig,
    DeconvDecoder,
    expected_levels,
    gaussian_bits_per_dim,
)
from pcae.pixelcnn import GatedPixelCNN, PixelCNNConfig, bits_per_dim
from pcae.sampling import sample

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


