"""The training commands: `pcae train` (a Gated PixelCNN), `pcae train-ae` (an auto-encoder) and
`pcae train-portraits` (a PixelCNN of faces given their face embedding).

Each builds a TrainConfig from the shared training options (`training_options`, declared once) and
a task spec from its model options (train-ae: pcae.kinds.autoencoder_spec decides which), then
makes one call, pcae.train.train (pcae.cli.progress shows it). Every default is the library's, read
by import from torch-free dataclasses: the shared options take TrainConfig's (pcae.config), the
model options their settings' (pcae.settings: those of PixelCNNSpec, AutoencoderSpec, PortraitSpec).
"""
from __future__ import annotations

import copy
import functools
import inspect
import typing
from pathlib import Path
from typing import Annotated

import typer

from encoders import ENCODER_NAMES
from pcae.cli.common import (
    DEVICE_HELP,
    TRAIN,
    Data,
    DataRoot,
    Device,
    Force,
    ImageChannels,
    ImageSize,
    Precision,
    Seed,
    text,
)
from pcae.cli.progress import run_training
from pcae.config import TrainConfig
from pcae.settings import CONDITIONS, AutoencoderSettings, PixelCNNSettings, PortraitSettings, defaults
from pcae.settings import DEFAULT_FACE_SIZE as FACE_SIZE

PIXELCNN, AUTOENCODER = defaults(PixelCNNSettings), defaults(AutoencoderSettings)
PORTRAIT = defaults(PortraitSettings)

_JUDGE_HELP = ("At the end, score samples given the h of this many test images with a classifier "
               "trained on the data's labels (eval.judge; cached per data source); 0: off.")
_EMA_HELP = ("Decay of the moving average of the weights that is evaluated, sampled from and saved "
             "(ramped up as min(EMA, (1+t)/(10+t))); 0: the raw weights.")

# The options every training command shares, declared once: TrainConfig field (or resume/force)
# -> its option. Defaults are TrainConfig's (steps/epochs: None, "TrainConfig decides");
# `training_options` appends them to a command.
TRAINING_OPTIONS = {
    "batch_size": Annotated[int, typer.Option("--batch-size", min=1, help="Images per step (per rank).")],
    "lr": Annotated[float, typer.Option("--lr", help="AdamW learning rate.")],
    "lr_schedule": Annotated[str, typer.Option("--lr-schedule", help="constant or cosine (to lr/10).")],
    "warmup_steps": Annotated[int, typer.Option("--warmup-steps", min=0,
                                                help="Linear learning-rate warm-up steps.")],
    "ema": Annotated[float, typer.Option("--ema", min=0, help=_EMA_HELP)],
    "grad_clip": Annotated[float, typer.Option("--grad-clip", min=0, help="Max gradient norm (0: off).")],
    "steps": Annotated[int | None, typer.Option(
        "--steps", min=1, help=f"Optimizer steps (default {TrainConfig.DEFAULT_STEPS}; with --resume, "
        "the stored total).")],
    "epochs": Annotated[int | None, typer.Option("--epochs", min=1, help="Epochs instead of --steps.")],
    "seed": Seed,
    "device": Device,
    "precision": Precision,
    "compile": Annotated[bool, typer.Option("--compile", help="torch.compile the loss computation.")],
    "channels_last": Annotated[bool, typer.Option("--channels-last", help="channels_last memory format.")],
    "num_workers": Annotated[int, typer.Option("--num-workers", min=0,
                                               help="DataLoader workers (data not in memory).")],
    "log_every": Annotated[int, typer.Option("--log-every", min=1, help="Steps between train metrics.")],
    "eval_every": Annotated[int, typer.Option("--eval-every", min=0,
                                              help="Steps between test evaluations (0: end).")],
    "eval_images": Annotated[int, typer.Option("--eval-images", min=0,
                                               help="Test images per evaluation (0: all).")],
    "sample_every": Annotated[int, typer.Option("--sample-every", min=0,
                                                help="Steps between sample grids (0: end).")],
    "n_samples": Annotated[int, typer.Option("--n-samples", min=0, help="Images per sample grid.")],
    "judge_images": Annotated[int, typer.Option("--judge-images", min=0, help=_JUDGE_HELP)],
    "checkpoint_every": Annotated[int, typer.Option("--checkpoint-every", min=0,
                                                    help="Steps between checkpoints.")],
    "checkpoint_seconds": Annotated[float, typer.Option(
        "--checkpoint-seconds", min=0, help="Also checkpoint after this many seconds (0: off).")],
    "tensorboard": Annotated[bool, typer.Option("--tensorboard", help="Also log the scalars and sample "
                                                "grids to OUT/tensorboard (tensorboard --logdir OUT; "
                                                "pip install 'pcae\\[tensorboard]').")],
    "resume": Annotated[bool, typer.Option("--resume", help="Continue --out from its last.pt.")],
    "force": Force,
}
_TRAINING_DEFAULTS = {**TRAIN, "steps": None, "epochs": None, "resume": False, "force": False}


def training_options(**help_overrides: str):
    """Decorator: append the shared training options (TRAINING_OPTIONS) to a typer command, which
    receives them in its **train. help_overrides: a command's own wording of an option's help."""
    def decorate(fn):
        own = [p for p in inspect.signature(fn, eval_str=True).parameters.values()
               if p.kind is not inspect.Parameter.VAR_KEYWORD]
        clash = {p.name for p in own} & set(TRAINING_OPTIONS)
        if clash:
            raise TypeError(f"{fn.__name__} declares shared training options itself: {sorted(clash)}")
        shared = []
        for name, annotation in TRAINING_OPTIONS.items():
            if name in help_overrides:
                kind, option = typing.get_args(annotation)
                option = copy.copy(option)
                option.help = help_overrides[name]
                annotation = Annotated[kind, option]
            shared.append(inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY,
                                            default=_TRAINING_DEFAULTS[name], annotation=annotation))

        @functools.wraps(fn)
        def command(**kwargs):
            return fn(**kwargs)

        params = [p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in own] + shared
        command.__signature__ = inspect.Signature(params)
        command.__annotations__ = {p.name: p.annotation for p in params}
        return command

    return decorate


def _train_config(ctx: typer.Context | None, train: dict, **fields):
    """A training command's TrainConfig (bad values: a usage error), and the names of the options
    its command line set (what `pcae.train.train(given=...)` keeps or checks on --resume).

    train: the shared training options as given (`training_options`), resume and force included.
    fields: the command's other TrainConfig fields (data, out, ...).
    """
    train = {k: v for k, v in train.items() if k not in ("resume", "force")}
    steps, epochs = train.pop("steps"), train.pop("epochs")  # None: not given
    try:
        config = TrainConfig(steps=steps or 0, epochs=epochs or 0, **train, **fields)
    except ValueError as e:
        raise typer.BadParameter(str(e)) from None
    return config, _given_options(ctx)


def _given_options(ctx: typer.Context | None) -> set[str]:
    """The options this command line set explicitly (not left at their defaults)."""
    if ctx is None:
        return set()
    sources = {name: ctx.get_parameter_source(name) for name in ctx.params}
    return {name for name, source in sources.items()
            if source is not None and source.name in ("COMMANDLINE", "ENVIRONMENT")}


def _given(ctx: typer.Context, **options) -> dict:
    """Those of `options` that this command line set: what a command passes on to a spec builder
    that supplies the defaults itself."""
    given = _given_options(ctx)
    return {name: value for name, value in options.items() if name in given}


def _check_condition(value: str) -> str:
    """--condition's callback: PixelCNNSpec checks it only in build(), once the data is read."""
    if value not in CONDITIONS:
        raise typer.BadParameter(f"must be {' or '.join(CONDITIONS)}, got {value!r}")
    return value


RunFolder = Annotated[Path, typer.Option("--out", help="Run folder (refused if it exists, unless "
                                         "--resume or --force).")]
KernelSize = Annotated[int, typer.Option("--kernel-size", min=3, help="PixelCNN: gated layers' kernel "
                                         "(odd).")]
FirstKernelSize = Annotated[int, typer.Option("--first-kernel-size", min=3, help="PixelCNN: first "
                                              "layer's kernel (odd).")]
HeadChannels = Annotated[int, typer.Option("--head-channels", min=0, help="PixelCNN: output head width "
                                           "(0: --channels).")]
FacenetWeights = Annotated[str | None, typer.Option(
    "--facenet-weights", help="FaceNet's weights: vggface2 (the default, from $TORCH_HOME/checkpoints), "
    "casia-webface, a state-dict FILE, or random (untrained: for dry runs only).")]
FacenetCropSize = Annotated[int | None, typer.Option(
    "--facenet-crop-size", min=75, help="MTCNN crop and FaceNet input side (FaceNet's is 160, the "
    "default; 75..159 is faster, less exact).")]
FaceCache = Annotated[Path | None, typer.Option(
    "--cache", help="Face cache HDF5 (default: one per source under $PCAE_CACHE_DIR or "
    "~/.cache/pcae/faces).")]


@training_options()
def train_cmd(
    ctx: typer.Context,
    data: Data = TRAIN["data"],
    out: RunFolder = Path(TRAIN["out"]),
    condition: str = typer.Option(PIXELCNN["condition"], "--condition", callback=_check_condition,
                                  help="none, or label (one-hot class h)."),
    channels: int = typer.Option(PIXELCNN["channels"], "--channels", min=1,
                                 help="Feature maps per stack (p)."),
    n_layers: int = typer.Option(PIXELCNN["n_layers"], "--n-layers", min=0,
                                 help="Gated layers after the first."),
    kernel_size: KernelSize = PIXELCNN["kernel_size"],
    first_kernel_size: FirstKernelSize = PIXELCNN["first_kernel_size"],
    head_channels: HeadChannels = PIXELCNN["head_channels"],
    gated: bool = typer.Option(PIXELCNN["gated"], "--gated/--relu", help="Gated units, or ReLU units "
                               "as in the original PixelCNN (for the paper's comparison)."),
    stacks: int = typer.Option(PIXELCNN["stacks"], "--stacks", min=1, max=2, help="2: vertical and "
                               "horizontal stacks; 1: the original PixelCNN's one masked stack, with "
                               "its blind spot (sampled by the naive sampler)."),
    spatial_channels: int = typer.Option(PIXELCNN["spatial_channels"], "--spatial-channels", min=0,
                                         help="With --condition label: 0 conditions every layer on h "
                                         "alone; c > 0 also on a c-channel map m(h) of the image's size "
                                         "(location-dependent)."),
    image_channels: ImageChannels = None,
    image_size: ImageSize = None,
    data_root: DataRoot = None,
    **train,
):
    """Train a Gated PixelCNN (unconditional, or class-conditional with --condition label).

    Writes OUT/last.pt, best.pt, metrics.jsonl, samples.png, summary.json, curve.png, train.log.
    Data-parallel: torchrun --standalone --nproc_per_node=N -m pcae train ...
    """
    from pcae.tasks.pixelcnn import PixelCNNSpec

    config, given = _train_config(ctx, train, data=data, out=str(out), data_root=text(data_root),
                                  image_channels=image_channels, image_size=image_size)
    spec = PixelCNNSpec(channels=channels, n_layers=n_layers, kernel_size=kernel_size,
                        first_kernel_size=first_kernel_size, head_channels=head_channels,
                        condition=condition, gated=gated, stacks=stacks,
                        spatial_channels=spatial_channels)  # checked in build()
    run_training(config, spec, train["resume"], train["force"], given)


@training_options(n_samples="Images per grid (4 samples per original).")
def train_ae_cmd(
    ctx: typer.Context,
    data: Data = TRAIN["data"],
    out: RunFolder = Path("runs/autoencoder"),
    encoder: str | None = typer.Option(None, "--encoder", help="Encoder: " + ", ".join(ENCODER_NAMES)
                                          + " (default: conv, or the --encoder-checkpoint's)."),
    bottleneck: int | None = typer.Option(None, "--bottleneck", help="Size m of the conv encoder's h "
                                             "(default: 10, or the --encoder-checkpoint's)."),
    decoder: str = typer.Option(AUTOENCODER["decoder"], "--decoder", help="pixelcnn (samples given h) or "
                                "deconv (the MSE baseline)."),
    deconv_output: str = typer.Option(AUTOENCODER["deconv_output"], "--deconv-output", help="deconv: mse, "
                                      "or categorical (256-way per sub-pixel, NLL in bits/dim)."),
    spatial_cond: bool | None = typer.Option(
        None, "--spatial-cond/--global-cond", help="pixelcnn: condition on h globally and through a "
        "deconv map m(h) (location-dependent), or globally only (default: "
        + ("--spatial-cond" if AUTOENCODER["spatial_cond"] else "--global-cond")
        + "; facenet, dlib: --global-cond)."),
    spatial_channels: int = typer.Option(AUTOENCODER["spatial_channels"], "--spatial-channels", min=1,
                                         help="pixelcnn: channels of the map m(h) with --spatial-cond."),
    freeze_encoder: bool = typer.Option(AUTOENCODER["freeze_encoder"], "--freeze-encoder",
                                        help="Train the decoder only."),
    encoder_checkpoint: Path | None = typer.Option(None, "--encoder-checkpoint", help="Start the "
                                                      "encoder from this auto-encoder checkpoint."),
    facenet_weights: FacenetWeights = None,
    facenet_crop_size: FacenetCropSize = None,
    cache: FaceCache = None,
    encoder_channels: int = typer.Option(AUTOENCODER["encoder_channels"], "--encoder-channels", min=1,
                                         help="conv encoder width."),
    encoder_norm: str = typer.Option(AUTOENCODER["encoder_norm"], "--encoder-norm", help="conv encoder: "
                                     "batchnorm (standardise each dim of h) or none (the raw linear h)."),
    channels: int | None = typer.Option(
        None, "--channels", min=1, help=f"pixelcnn: feature maps per stack (p) (default: "
        f"{AUTOENCODER['channels']}; facenet, dlib: {PORTRAIT['channels']}, divisible by 3)."),
    n_layers: int | None = typer.Option(
        None, "--n-layers", min=0, help=f"pixelcnn: gated layers after the first (default: "
        f"{AUTOENCODER['n_layers']}; facenet, dlib: {PORTRAIT['n_layers']})."),
    kernel_size: KernelSize = AUTOENCODER["kernel_size"],
    first_kernel_size: FirstKernelSize = AUTOENCODER["first_kernel_size"],
    head_channels: HeadChannels = AUTOENCODER["head_channels"],
    deconv_channels: int = typer.Option(AUTOENCODER["deconv_channels"], "--deconv-channels", min=1,
                                        help="deconv: width at full size."),
    image_channels: ImageChannels = None,
    image_size: int | None = typer.Option(None, "--image-size", min=1, help="Resize + centre crop "
                                             f"(facenet, dlib: side of the face images, default {FACE_SIZE})."),
    data_root: DataRoot = None,
    **train,
):
    """Train an auto-encoder: an encoder makes h, a conditional PixelCNN (or deconv net) decodes x.

    Grids show each test image followed by samples given its h (deconv: its reconstruction).
    Same run folder, resume, DDP and metrics as `pcae train`.

    --encoder facenet (or dlib) trains the face-conditioned PixelCNN exactly as `pcae train-portraits`:
    --data must be photos (folder:PATH or h5:PATH); MTCNN finds the largest face of each photo
    once (--cache), photos without a face are skipped, counted and named (on screen and in
    OUT/train.log), and the PixelCNN is conditioned on the frozen FaceNet's 512-d embeddings.
    The checkpoint is of kind "portrait": draw with `pcae portrait` / `pcae interpolate`.
    --resume of such a run needs no --encoder. Not with --decoder deconv, --freeze-encoder,
    --encoder-checkpoint, --spatial-cond or --bottleneck; the auto-encoder's other widths
    (--encoder-channels, --deconv-channels, ...) do not apply to it. What runs is decided by
    pcae.kinds.autoencoder_spec, the same call from Python.
    """
    from pcae.kinds import autoencoder_spec

    config, given = _train_config(ctx, train, data=data, out=str(out), image_channels=image_channels,
                                  image_size=image_size, data_root=text(data_root))
    # the spec decides what runs (a face encoder: the portrait pipeline); options not given take its defaults
    spec = autoencoder_spec(resuming=out if train["resume"] else None, **_given(
        ctx, encoder=encoder, bottleneck=bottleneck, decoder=decoder, deconv_output=deconv_output,
        spatial_cond=spatial_cond, spatial_channels=spatial_channels, freeze_encoder=freeze_encoder,
        encoder_checkpoint=text(encoder_checkpoint), facenet_weights=facenet_weights,
        facenet_crop_size=facenet_crop_size, cache=text(cache), encoder_channels=encoder_channels,
        encoder_norm=encoder_norm, channels=channels, n_layers=n_layers, kernel_size=kernel_size,
        first_kernel_size=first_kernel_size, head_channels=head_channels,
        deconv_channels=deconv_channels))
    run_training(config, spec, train["resume"], train["force"], given)


@training_options(eval_images="Test faces per evaluation (0: all).",
                  n_samples="Portraits per grid (4 per test face).",
                  device=DEVICE_HELP + " FaceNet embeds there too.")
def train_portraits_cmd(
    ctx: typer.Context,
    data: str = typer.Option("faces", "--data", help="Photos: faces (480 real photos of 55 people "
                             "shipped with pcae), or folder:PATH (searched recursively; one sub-folder "
                             "per person keeps the person) or h5:PATH."),
    out: RunFolder = Path("runs/portraits"),
    image_size: int | None = typer.Option(None, "--image-size", min=1, help="Side of the face images "
                                             f"the PixelCNN models (default: {FACE_SIZE})."),
    encoder: str = typer.Option(PORTRAIT["encoder"], "--encoder", help="The face encoder to condition on: "
                                "auto (facenet when its pretrained weights are on this machine, else "
                                "dlib), facenet (the paper's) or dlib (pretrained, installs offline; no "
                                "--facenet-* options)."),
    facenet_weights: FacenetWeights = PORTRAIT["facenet_weights"],
    facenet_crop_size: FacenetCropSize = PORTRAIT["facenet_crop_size"],
    cache: FaceCache = PORTRAIT["cache"],
    max_photos: int | None = typer.Option(PORTRAIT["max_photos"], "--max-photos", min=1,
                                             help="Use only the first N photos."),
    holdout: float = typer.Option(PORTRAIT["holdout"], "--holdout-people", min=0, max=0.99,
                                  help="Fraction of the people with 5 photos or more kept out of "
                                  "training and test entirely (chosen by a hash of the name): "
                                  "the people that portraits of unseen faces are measured on."),
    channels: int = typer.Option(PORTRAIT["channels"], "--channels", min=1, help="Feature maps per "
                                 "stack (p); divisible by 3 for colour faces."),
    n_layers: int = typer.Option(PORTRAIT["n_layers"], "--n-layers", min=0,
                                 help="Gated layers after the first."),
    spatial_channels: int = typer.Option(PORTRAIT["spatial_channels"], "--spatial-channels", min=0,
                                         help="Channels of the location-dependent map m(h); 0: global "
                                         "h only."),
    identity_swap: float = typer.Option(PORTRAIT["identity_swap"], "--identity-swap", min=0, max=1,
                                        help="Probability of conditioning a training face on another "
                                        "photo of the same person."),
    h_noise: float = typer.Option(PORTRAIT["h_noise"], "--h-noise", min=0, help="Gaussian noise added "
                                  "to h while training, in standard deviations of each embedding "
                                  "dimension."),
    h_drop: float = typer.Option(PORTRAIT["h_drop"], "--h-drop", min=0, max=0.99, help="Probability that "
                                 "a training face's h is 0 (no one in particular), so that portraits can "
                                 "be drawn with --guidance."),
    oversample: str = typer.Option(None, "--oversample", metavar="PATTERN[,PATTERN...]:K", help="Show each "
                                   "training face of the people whose name (folder) matches a pattern K "
                                   "times an epoch, e.g. 'orl/*,yale/*:4'."),
    kernel_size: KernelSize = PORTRAIT["kernel_size"],
    first_kernel_size: FirstKernelSize = PORTRAIT["first_kernel_size"],
    head_channels: HeadChannels = PORTRAIT["head_channels"],
    **train,
):
    """Train a PixelCNN of faces given their face embedding (portraits from one photo).

    Detects the largest face of every photo once (cached in --cache), embeds it with the frozen
    face encoder, trains the identity judge on the people, then trains like `pcae train`:
    OUT/last.pt (kind "portrait"), best.pt, samples.png (rows: a test face, then 4 portraits given
    its embedding), metrics.jsonl, summary.json, curve.png, train.log (skipped photos included),
    and ends with the portraits' figures over the test faces.
    """
    from pcae.portrait import PortraitSpec

    config, given = _train_config(ctx, train, data=data, out=str(out), image_size=image_size)
    spec = PortraitSpec(encoder=encoder, facenet_weights=facenet_weights,
                        facenet_crop_size=facenet_crop_size, cache=text(cache), max_photos=max_photos,
                        channels=channels, n_layers=n_layers, kernel_size=kernel_size,
                        first_kernel_size=first_kernel_size, head_channels=head_channels,
                        spatial_channels=spatial_channels, identity_swap=identity_swap, h_noise=h_noise,
                        h_drop=h_drop, oversample=oversample, holdout=holdout)
    run_training(config, spec, train["resume"], train["force"], given)
