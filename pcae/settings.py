"""What a model of each training command is made of: its settings, as plain dataclasses, torch-free.

`pcae train`, `pcae train-ae` and `pcae train-portraits` each build a model from one of these
(with the image shape and classes that the data gives). The tasks' specs (pcae.tasks.pixelcnn's
PixelCNNSpec, pcae.tasks.autoencoder's AutoencoderSpec, pcae.tasks.portrait's PortraitSpec) are
these classes with the methods that build, check and restore the model; the command line reads the
same fields for its options' defaults, by import, and so never waits for torch (`pcae --help`).
How to train (data, optimiser, hardware) is pcae.config's TrainConfig; the comparison of decoders
is eval.compare_config's CompareConfig.

Adding a model option: a field here (its default is the CLI's), the option in pcae/cli/training.py,
its use in the task's `build`.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

CONDITIONS = ("none", "label")  # what a PixelCNN alone is conditioned on
DEFAULT_FACE_SIZE = 32  # side of the faces a portrait PixelCNN models, when not given


@dataclass(frozen=True)
class PixelCNNSettings:
    """Model options of `pcae train`; the image shape and class count come from the data."""

    channels: int = 32
    n_layers: int = 5
    kernel_size: int = 3
    first_kernel_size: int = 7
    head_channels: int = 0
    condition: str = "none"  # one of CONDITIONS
    gated: bool = True  # False: ReLU units (the original PixelCNN's), for the paper's comparison
    stacks: int = 2  # 1: one masked stack, with the blind spot (the original PixelCNN's)
    spatial_channels: int = 0  # with condition "label": 0 global h only; c > 0 also a c-channel map m(h)


@dataclass(frozen=True)
class AutoencoderSettings:
    """Model options of `pcae train-ae`; image shape and class count come from the data.

    encoder: "conv" or "onehot" (None: "conv", or the --encoder-checkpoint's). A face encoder
        (facenet, dlib) makes a portrait model, which has one path: PortraitSettings
        (pcae.kinds.autoencoder_spec chooses it for `pcae train-ae --encoder facenet`).
    bottleneck: the conv encoder's m (None: 10, or the checkpoint encoder's dim, which it must match).
    decoder: "pixelcnn" or "deconv" (with `deconv_output` "mse" or "categorical").
    freeze_encoder: train the decoder only; the encoder's weights stay bit-identical.
    encoder_checkpoint: an auto-encoder checkpoint whose encoder (and weights) to start from.
    encoder_norm: the conv encoder's normalisation of h, "batchnorm" (default) or "none".
    spatial_cond: condition the PixelCNN on h globally *and* through the location-dependent map
        m(h) (the default), or globally only (False). The deconv decoder ignores it.
    spatial_channels: channels c of the map s = m(h) (B, c, H, W).

    The PixelCNN defaults (location-dependent h with a 32-channel map, 24 channels, one gated layer
    after the 7x7 first one) are the measured recipe of benchmarks/ae_recipe.py: with global h only
    the decoder's samples given h ignore h (the stack cannot tell where in the image it is, so h
    cannot say where to put ink), and a shallow stack has to take the image's layout from m(h)
    instead of from its own context, which is also cheaper per step.
    """

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


@dataclass(frozen=True)
class PortraitSettings:
    """Model options of `pcae train-portraits`: the face encoder, the face cache and the decoder.

    The run's image_size (TrainConfig) is the faces' side (None: DEFAULT_FACE_SIZE) and its
    image_channels (None: 1 when every face is grey, else 3).

    encoder: "auto" (FaceNet when its pretrained weights are on this machine, else dlib),
        "facenet" (the paper's) or "dlib" (pretrained, offline; no facenet options).
    facenet_weights: "vggface2" (None: that), "casia-webface", a file, or "random".
    facenet_crop_size: MTCNN crop / FaceNet input side (None: 160, FaceNet's).
    cache: the face cache (None: pcae.faces.default_cache_path(photos, encoder, variant)).
    max_photos: use only the first N photos (sorted by path).
    spatial_channels: channels of the location-dependent map m(h); 0 = global h only.
    identity_swap: probability that a training face is conditioned on the embedding of another
        training photo of the same person (pcae/tasks/portrait.py's docstring says why).
    h_noise: standard deviation of the Gaussian noise added to h while training.
    h_drop: probability that a training face's h is 0 (the mean training face's embedding, h
        being standardised): the decoder also learns p(face) of no one in particular, which
        portraits drawn with guidance (pcae.sampling, `--guidance`) push away from.
    oversample: "PATTERN[,PATTERN...]:K": each training face of a person whose name (their
        folder, e.g. orl/s1) matches a pattern (fnmatch) appears K times an epoch; None: once.
    holdout: the fraction of people (of those with 5 photos or more) kept out of training and
        test entirely, by a hash of their name (pcae.data.held_out_people): the people that
        eval.unseen measures portraits of people never seen on.
    """

    channels: int = 24  # divisible by the image channels (3 for colour faces)
    n_layers: int = 2
    kernel_size: int = 3
    first_kernel_size: int = 7
    head_channels: int = 0
    spatial_channels: int = 32
    identity_swap: float = 0.0
    h_noise: float = 0.5
    h_drop: float = 0.0
    oversample: str | None = None
    encoder: str = "auto"
    facenet_weights: str | None = None
    facenet_crop_size: int | None = None
    cache: str | None = None
    max_photos: int | None = None
    holdout: float = 0.0


def defaults(settings: type) -> dict:
    """{field: default} of a settings dataclass (what the command line's options default to)."""
    return {f.name: f.default for f in dataclasses.fields(settings)}
