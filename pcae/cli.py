"""The `pcae` command line: options -> one library call -> a short summary.

Thin on purpose: every command imports its library function inside its body, so `pcae --help`
does not import torch. Library code raises PcaeError for problems the user can fix; `main()` turns
it into one red line on stderr and exit code 1 (usage errors exit 2, typer's convention).
"""
from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Optional

import typer

from pcae import __version__
from pcae.errors import DiskFull, Interrupted, PcaeError, first_line, is_disk_full
from pcae.files import refuse_existing
from pcae.options import (
    check_device,
    check_precision,
    check_split,
    check_temperature,
    cli_callback,
)

# the shared option values, checked in one place (pcae/options.py)
_DEVICE, _SPLIT = cli_callback(check_device), cli_callback(check_split)
_PRECISION, _TEMPERATURE = cli_callback(check_precision), cli_callback(check_temperature)

app = typer.Typer(
    name="pcae",
    help="Representation learning with conditional Gated PixelCNN decoders.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _version(value: bool):
    if value:
        typer.echo(f"pcae {__version__}")
        raise typer.Exit()


@app.callback()
def _root(version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                       help="Print the version and exit.")):
    """Representation learning with conditional Gated PixelCNN decoders."""


# --- data: `pcae data info SOURCE`, `pcae data import SOURCE OUT.h5` ---------------------------
from pcae.data import source_names as _data_source_names  # noqa: E402  (torch-free module)

data_app = typer.Typer(help="Datasets: describe a source, import one into pcae's HDF5 format.",
                       no_args_is_help=True)
app.add_typer(data_app, name="data")
_DATA_SOURCE_HELP = "Data source: " + ", ".join(_data_source_names()) + "."


def _check_channels(channels, option="--image-channels"):
    if channels not in (None, 1, 3):
        raise typer.BadParameter(f"must be 1 or 3, got {channels}", param_hint=option)


@data_app.command("info")
def data_info(
    source: str = typer.Argument("fashion-mnist", help=_DATA_SOURCE_HELP),
    data_root: Optional[Path] = typer.Option(None, "--data-root", help="torchvision data root."),
    channels: Optional[int] = typer.Option(None, "--channels", help="Convert to 1 or 3 channels."),
    image_size: Optional[int] = typer.Option(None, "--image-size", min=1,
                                             help="Resize the shorter side + centre crop."),
    as_json: bool = typer.Option(False, "--json", help="Print the description as JSON."),
):
    """Print counts per split, image shape, classes and where the data comes from."""
    import json

    _check_channels(channels, "--channels")
    from pcae.data import describe_source
    d = describe_source(source, channels=channels, image_size=image_size, data_root=data_root)
    if as_json:
        typer.echo(json.dumps(d, indent=2))
        return
    classes = d["classes"]
    typer.echo(f"source   {d['source']}")
    typer.echo(f"origin   {d['origin']}")
    typer.echo(f"shape    {' x '.join(map(str, d['shape']))}  (C x H x W, uint8)")
    for split, n in d["counts"].items():
        typer.echo(f"{split:<8} {n} images")
    typer.echo(f"classes  {len(classes)}: {', '.join(classes)}" if classes
               else "classes  none (unlabelled)")
    if d["skipped"]:
        typer.echo(f"skipped  {len(d['skipped'])} unreadable files:")
        for s in d["skipped"]:
            typer.echo(f"  {s['file']}: {s['reason']}")


@data_app.command("import")
def data_import(
    source: str = typer.Argument(..., help=_DATA_SOURCE_HELP),
    out: Path = typer.Argument(..., help="HDF5 file to write (images, labels, split)."),
    data_root: Optional[Path] = typer.Option(None, "--data-root", help="torchvision data root."),
    channels: Optional[int] = typer.Option(None, "--channels", help="Convert to 1 or 3 channels."),
    image_size: Optional[int] = typer.Option(None, "--image-size", min=1,
                                             help="Resize the shorter side + centre crop."),
    force: bool = typer.Option(False, "--force", help="Replace an existing OUT."),
):
    """Write both splits of SOURCE to one HDF5 file, streaming chunk by chunk."""
    _check_channels(channels, "--channels")
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    from pcae.data import import_dataset
    with Progress(SpinnerColumn(), TextColumn("importing {task.completed} images"),
                  TimeElapsedColumn(), transient=True) as bar:
        task = bar.add_task("import", total=None)
        s = import_dataset(source, out, channels=channels, image_size=image_size,
                           data_root=data_root, force=force,
                           progress=lambda n: bar.update(task, completed=n))
    counts = ", ".join(f"{k} {v}" for k, v in s["counts"].items())
    typer.echo(f"wrote {out}: {counts} images of {' x '.join(map(str, s['shape']))}, "
               f"{len(s['classes'] or [])} classes, {len(s['skipped'])} files skipped")
    for k in s["skipped"]:
        typer.echo(f"  skipped {k['file']}: {k['reason']}")


# --- latents: `pcae embed`, `pcae search`, `pcae index merge|describe` (embeddings/) -------------
from encoders import ENCODER_NAMES as _ENCODER_NAMES  # noqa: E402  (torch-free registry names)

index_app = typer.Typer(help="Latent indexes: merge shard parts, describe a latents folder.",
                        no_args_is_help=True)
app.add_typer(index_app, name="index")


@app.command("embed")
def embed_cmd(
    encoder: Optional[str] = typer.Option(None, "--encoder", help="Encoder: " + ", ".join(_ENCODER_NAMES)
                                          + " [default: the checkpoint's]."),
    checkpoint: Optional[Path] = typer.Option(None, "--checkpoint", help="Checkpoint holding the encoder "
                                              "(needed for conv; optional for onehot, facenet and dlib) "
                                              "[default without --encoder: the newest finished "
                                              "auto-encoder run's best.pt under runs/]."),
    data: Optional[str] = typer.Option(None, "--data", help=_DATA_SOURCE_HELP + " [default: the data "
                                       "the checkpoint's run trained on, else fashion-mnist]"),
    out: Path = typer.Option(Path("latents"), "--out", help="Latents folder: latents.h5, index.faiss, "
                             "index_infos.json."),
    split: str = typer.Option("train", "--split", callback=_SPLIT, help="train or test."),
    index: Optional[str] = typer.Option(None, "--index", help="faiss.index_factory string, e.g. Flat, "
                                        "IVF1024,Flat, HNSW32,Flat (default: Flat for small N, IVF above)."),
    metric: Optional[str] = typer.Option(None, "--metric", help="l2 or cosine (default l2)."),
    append: bool = typer.Option(False, "--append", help="Add to the folder's latents and index."),
    shard: Optional[str] = typer.Option(None, "--shard", help="i/n: embed the i-th of n slices into "
                                        "OUT/part-i-of-n/ (then `pcae index merge`)."),
    force: bool = typer.Option(False, "--force", help="Replace the folder's latents and index."),
    batch_size: int = typer.Option(256, "--batch-size", min=1),
    limit: Optional[int] = typer.Option(None, "--limit", min=1, help="Embed only the first N items."),
    data_root: Optional[Path] = typer.Option(None, "--data-root", help="torchvision data root."),
    facenet_weights: Optional[str] = typer.Option(None, "--facenet-weights", help="facenet without "
                                                  "--checkpoint: vggface2 (default), casia-webface, FILE "
                                                  "or random."),
):
    """Stream a data source through an encoder into latents.h5 and a FAISS index."""
    import time

    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
    )

    from embeddings.embed import embed, embed_inputs, parse_shard

    chosen = embed_inputs(encoder, checkpoint, data, data_root)  # embed() keeps these as given
    if chosen.note:
        typer.echo(f"embedding with {chosen.note}", err=True)
    with Progress(TextColumn("embed"), BarColumn(), MofNCompleteColumn(),
                  TextColumn("{task.fields[rate]} images/s"), TimeRemainingColumn(), transient=True) as bar:
        task = bar.add_task("embed", total=None, rate="-")
        start = time.perf_counter()

        def progress(done, total):
            rate = done / max(time.perf_counter() - start, 1e-9)
            bar.update(task, completed=done, total=total, rate=f"{rate:.0f}")

        infos = embed(encoder, chosen.checkpoint, chosen.source, out, split=split, index_string=index, metric=metric,
                      append=append, shard=parse_shard(shard), force=force, batch_size=batch_size,
                      data_root=chosen.data_root, limit=limit, facenet_weights=facenet_weights,
                      progress=progress)
    recall = infos["recall_at_10"]
    typer.echo(f"wrote {infos['out']}: {infos['count']} latents of d={infos['d']} ({infos['encoder']}), "
               f"index {infos['index_string']} {infos['metric']}, recall@10 "
               f"{'-' if recall is None else f'{recall:.3f}'}, {infos['images_per_s']:.0f} images/s"
               + (f", {infos['skipped']} skipped" if infos["skipped"] else ""))
    if infos["random_weights"]:
        from pcae.portrait import RANDOM_WARNING
        typer.echo(f"warning: {RANDOM_WARNING}")


@app.command("search")
def search_cmd(
    folder: Path = typer.Argument(..., help="Latents folder written by `pcae embed`."),
    query: str = typer.Argument(..., help="An image file, or id:N for a stored item."),
    k: int = typer.Option(10, "-k", "--k", min=1, help="Neighbours to return."),
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON."),
    out: Optional[Path] = typer.Option(None, "--out", help="Draw the query and its neighbours to this PNG."),
    checkpoint: Optional[Path] = typer.Option(None, "--checkpoint", help="The encoder checkpoint the "
                                              "latents were made with, where it is now (an image "
                                              "query, when it has moved; its sha256 is checked)."),
    force: bool = typer.Option(False, "--force", help="Replace an existing --out file."),
):
    """Print the k stored items nearest to QUERY (ids, distances, labels)."""
    import json

    from embeddings.embed import draw_neighbours, search_folder

    refuse_existing(out, force)
    result = search_folder(folder, query, k, checkpoint)
    if out is not None:
        draw_neighbours(folder, result, out, None if query.startswith("id:") else query)
    if as_json:
        typer.echo(json.dumps(result, indent=2))
        return
    score = "cosine" if result["metric"] == "cosine" else "l2^2"
    named = any(n.get("file") for n in result["neighbours"])
    typer.echo(f"{'rank':>4}  {'id':>8}  {score:>10}  label" + ("  file" if named else ""))
    for n in result["neighbours"]:
        label = "-" if n["label"] < 0 else f"{n['label']}" + (f" {n['class']}" if n["class"] else "")
        typer.echo(f"{n['rank']:>4}  {n['id']:>8}  {n['distance']:>10.4g}  {label}"
                   + (f"  {n.get('file') or '-'}" if named else ""))
    if out is not None:
        typer.echo(f"wrote {out}")


@index_app.command("merge")
def index_merge(
    parts: list[Path] = typer.Argument(..., help="Part folders from `pcae embed --shard i/n`."),
    out: Path = typer.Option(..., "--out", help="Latents folder to write."),
    force: bool = typer.Option(False, "--force", help="Replace the folder's latents and index."),
):
    """Merge shard parts into one latents folder (FAISS IVF merge, else re-adding the latents)."""
    from embeddings.embed import merge_parts

    infos = merge_parts(parts, out, force=force)
    typer.echo(f"wrote {infos['out']}: {infos['count']} latents from {len(parts)} parts ({infos['merge']}), "
               f"index {infos['index_string']}, recall@10 {infos['recall_at_10']}")


@index_app.command("describe")
def index_describe(folder: Path = typer.Argument(..., help="Latents folder.")):
    """Print a latents folder's index infos and encoder metadata as JSON."""
    import json

    from embeddings.embed import describe_folder

    typer.echo(json.dumps(describe_folder(folder), indent=2))


# --- training: `pcae train`, `pcae sample`, `pcae evaluate` (pcae/train.py) --------------------
def _train_config(ctx: typer.Context | None, train: dict, **fields):
    """A training command's TrainConfig (bad values: a usage error), and the names of the options
    its command line set (what `pcae.train.train(given=...)` keeps or checks on --resume).

    train: the shared training options as given (`training_options`), resume and force included;
        steps/epochs None: not given (the default length is TrainConfig.DEFAULT_STEPS).
    fields: the command's other TrainConfig fields (data, out, ...).
    """
    from pcae.config import TrainConfig

    train = dict(train)
    resume, force = train.pop("resume"), train.pop("force")
    steps, epochs = train.pop("steps"), train.pop("epochs")
    if resume and force:
        raise typer.BadParameter("--resume and --force exclude each other", param_hint="--resume")
    if steps is not None and epochs is not None:
        raise typer.BadParameter("give --steps or --epochs, not both", param_hint="--epochs")
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


def _run_training(config, spec, resume: bool, force: bool, given: set[str]):
    """Run pcae.train.train with a rich progress bar; print the summary; exit 130 on Ctrl-C.

    Shared by every training command (train, train-ae, train-portraits): they differ only in
    config and spec. A portrait spec's face step shows on the bar, then a faces summary.
    """
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    from pcae.train import train

    console = Console()
    bar = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                   TextColumn("train {task.fields[metric]} {task.fields[value]}"),
                   TextColumn("{task.fields[rate]} images/s"), TimeElapsedColumn(),
                   TimeRemainingColumn(), console=console, transient=False)
    state = {}

    def show():  # the bar starts with the first progress: an error before that prints one line only
        if not state.get("shown"):
            bar.start()
            state["shown"] = True

    def callback(event, info):
        if event in ("prepare", "start"):
            show()
        if event == "prepare":  # a portrait run's face step: its own line on the bar until done
            if "faces" not in state:
                state["faces"] = bar.add_task("faces", total=None, metric="", value="", rate="-")
            bar.update(state["faces"], completed=info["done"], total=info["total"])
        elif event == "prepared":
            if "faces" in state:
                bar.remove_task(state.pop("faces"))
            _print_faces(info, config.out)
        elif event == "start":
            if info["kept"]:
                console.print(f"resuming {info['out']} with its stored run options: "
                              f"{', '.join(info['kept'])} (give an option again to change it)",
                              highlight=False, soft_wrap=True)
            state["metric"] = info["metric"]
            console.print(f"{info['kind']} run {info['out']}: steps {info['step']} -> {info['total']} "
                          f"on {info['device']}" + (f" x {info['world']} ranks" if info["world"] > 1 else "")
                          + f"; data {info['data'].get('source')} ({info['data'].get('origin')}), "
                          f"batches from {info['feeding']}; precision {_precision_text(info['precision'])}")
            state["bar"] = bar.add_task("step", total=info["total"], completed=info["step"],
                                        metric=info["metric"], value="-", rate="-")
        elif event == "train":
            bar.update(state["bar"], completed=info["step"],
                       value=f"{info.get(state['metric'], float('nan')):.4f}",
                       rate=f"{info['images_per_s']:.0f}")
        elif event == "eval":
            metric = state["metric"]
            bar.console.print(f"step {info['step']}: test {metric} {info.get(metric, float('nan')):.4f}"
                              f" ({info.get('images', '?')} images)")

    try:
        result = train(config, spec, resume=resume, force=force, callback=callback, given=given)
    except KeyboardInterrupt:  # after the steps (final evaluation, samples): last.pt is written
        last = Path(config.out) / "last.pt"
        if last.is_file():
            raise Interrupted(f"interrupted: the last checkpoint is {last}; finish the run with "
                              f"--resume --out {config.out}") from None
        raise
    finally:
        if state.get("shown"):
            bar.stop()
    out = result.out
    if result.status == "interrupted":
        raise Interrupted(f"interrupted at step {result.summary['steps']}: saved {out / 'last.pt'}; "
                          f"continue with --resume --out {out}")
    s = result.summary
    metric = s["metric"]
    final, best = s[f"final_test_{metric}"], s[f"best_test_{metric}"]
    fmt = lambda v: "-" if v is None else f"{v:.4f}"
    typer.echo(f"done: {s['steps']} steps ({s['epochs']:.2f} epochs) in {s['wall_seconds']:.0f} s, "
               f"{s['images_per_s']:.0f} images/s; test {metric} {fmt(final)} (best {fmt(best)} at "
               f"step {s['best_step']}, {s['test_images']} test images)")
    if s.get("semantics"):
        typer.echo(semantics_line(s["semantics"]))
    for line in s.get("warnings", ()):
        typer.secho(f"warning: {line}", fg=typer.colors.YELLOW, err=True)
    typer.echo(f"wrote {out}/: last.pt, samples.png, summary.json, curve.png, metrics.jsonl")


def _precision_text(p: dict) -> str:
    return p["used"] if p["asked"] != "auto" else f"{p['used']} (auto: {p['why']})"


def semantics_line(m: dict) -> str:
    """One line for eval.judge's figures (sample_semantics, class_accuracy, or skipped)."""
    if "skipped" in m:
        return f"sample judge skipped: {m['skipped']}"
    if "test_faces" in m:  # portraits: eval.faces.judge_test_faces
        pct = lambda v: "-" if v is None else f"{v:.0%}"  # noqa: E731
        num = lambda v: "-" if v is None else f"{v:.2f}"  # noqa: E731
        return (f"portraits of {m['test_faces']} test faces ({m['portraits_per_face']} each): identity "
                f"judge names the person in {pct(m['named'])} (judge {pct(m['judge_accuracy'])} on real "
                f"test faces, chance {1 / m['people']:.0%}); dlib distance to the photo {num(m['dlib_distance'])}, "
                f"{pct(m['dlib_same_person'])} under 0.6 (the photo at the portraits' size: "
                f"{num(m['dlib_ceiling_distance'])}); pixel RMS between portraits {num(m['rms_mean'])} "
                f"(smallest {num(m['rms_min'])}, {m['near_copies']} near-copies); pose spread "
                f"{num(m['pose_ratio'])}x and lighting spread {num(m['light_ratio'])}x the person's "
                f"photos' ({pct(m['varied_faces'])} of faces at 0.5x or more)")
    ceiling = f"judge {m['judge_accuracy']:.1%} on real test images"
    if "class_accuracy" in m:
        return (f"sample judge: {m['class_accuracy']:.1%} of {m['samples']} class-conditional "
                f"samples are judged their class ({ceiling}); ink {m['ink']:.3f} vs data "
                f"{m['source_ink']:.3f}")
    what = "reconstructions" if m.get("decoder") == "deconv" else "samples given h"
    line = (f"sample judge: {m['class_agreement']:.1%} of {m['samples']} {what} are judged their "
            f"source's class ({ceiling}, {m['source_accuracy']:.1%} on these sources); ink "
            f"{m['ink']:.3f} vs sources {m['source_ink']:.3f}")
    if m.get("diversity_rms") is not None:
        line += (f"; diversity: pixel RMS {m['diversity_rms']:.3f}, judge features "
                 f"{m['diversity_features']:.1f} (between sources {m['diversity_features_between']:.1f})")
    return line


_DEVICE_HELP = "cpu, cuda or cuda:N."
_JUDGE_HELP = ("At the end, score samples given the h of this many test images with a classifier "
               "trained on the data's labels (eval.judge; cached per data source); 0: off.")
_EMA_HELP = ("Decay of the moving average of the weights that is evaluated, sampled from and saved "
             "(ramped up as min(EMA, (1+t)/(10+t))); 0: the raw weights.")
_PRECISION_HELP = ("auto (bf16 autocast where this machine runs the model measurably faster in it, "
                   "else fp32), fp32 or bf16; the loss and its softmax stay fp32.")


# The options every training command shares, declared once: TrainConfig field (or resume/force)
# -> (type, typer.Option keywords). Defaults come from TrainConfig itself (steps/epochs: None, i.e.
# "TrainConfig decides"); `training_options` appends them to a command.
_TRAINING_OPTIONS = {
    "batch_size": (int, dict(min=1, help="Images per step (per rank).")),
    "lr": (float, dict(help="AdamW learning rate.")),
    "lr_schedule": (str, dict(help="constant or cosine (to lr/10).")),
    "warmup_steps": (int, dict(min=0, help="Linear learning-rate warm-up steps.")),
    "ema": (float, dict(min=0, help=_EMA_HELP)),
    "grad_clip": (float, dict(min=0, help="Max gradient norm (0: off).")),
    "steps": (Optional[int], dict(min=1, help="Optimizer steps (default 800; with --resume, the "
                                              "stored total).")),
    "epochs": (Optional[int], dict(min=1, help="Epochs instead of --steps.")),
    "seed": (int, dict()),
    "device": (str, dict(callback=_DEVICE, help=_DEVICE_HELP)),
    "precision": (str, dict(callback=_PRECISION, help=_PRECISION_HELP)),
    "compile": (bool, dict(help="torch.compile the loss computation.")),
    "channels_last": (bool, dict(help="channels_last memory format.")),
    "num_workers": (int, dict(min=0, help="DataLoader workers (data not in memory).")),
    "log_every": (int, dict(min=1, help="Steps between train metrics.")),
    "eval_every": (int, dict(min=0, help="Steps between test evaluations (0: end).")),
    "eval_images": (int, dict(min=0, help="Test images per evaluation (0: all).")),
    "sample_every": (int, dict(min=0, help="Steps between sample grids (0: end).")),
    "n_samples": (int, dict(min=0, help="Images per sample grid.")),
    "judge_images": (int, dict(min=0, help=_JUDGE_HELP)),
    "checkpoint_every": (int, dict(min=0, help="Steps between checkpoints.")),
    "checkpoint_seconds": (float, dict(min=0, help="Also checkpoint after this many seconds (0: off).")),
    "resume": (bool, dict(help="Continue --out from its last.pt.")),
    "force": (bool, dict(help="Replace an existing --out.")),
}


def training_options(**help_overrides: str):
    """Decorator: append the shared training options (_TRAINING_OPTIONS) to a typer command, which
    receives them in its **train. help_overrides: a command's own wording of an option's help."""
    import dataclasses
    import functools
    import inspect

    from pcae.config import TrainConfig

    defaults = {f.name: f.default for f in dataclasses.fields(TrainConfig)}
    defaults.update(steps=None, epochs=None, resume=False, force=False)

    def decorate(fn):
        own = [p for p in inspect.signature(fn, eval_str=True).parameters.values()
               if p.kind is not inspect.Parameter.VAR_KEYWORD]
        clash = {p.name for p in own} & set(_TRAINING_OPTIONS)
        if clash:
            raise TypeError(f"{fn.__name__} declares shared training options itself: {sorted(clash)}")
        shared = []
        for name, (kind, extra) in _TRAINING_OPTIONS.items():
            extra = {**extra, **({"help": help_overrides[name]} if name in help_overrides else {})}
            option = typer.Option(defaults[name], "--" + name.replace("_", "-"), **extra)
            shared.append(inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=option,
                                            annotation=kind))

        @functools.wraps(fn)
        def command(**kwargs):
            return fn(**kwargs)

        params = [p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in own] + shared
        command.__signature__ = inspect.Signature(params)
        command.__annotations__ = {p.name: p.annotation for p in params}
        return command

    return decorate


@app.command("train")
@training_options()
def train_cmd(
    ctx: typer.Context,
    data: str = typer.Option("fashion-mnist", "--data", help=_DATA_SOURCE_HELP),
    out: Path = typer.Option(Path("runs/pixelcnn"), "--out", help="Run folder (refused if it exists, "
                             "unless --resume or --force)."),
    condition: str = typer.Option("none", "--condition", help="none, or label (one-hot class h)."),
    channels: int = typer.Option(32, "--channels", min=1, help="Feature maps per stack (p)."),
    n_layers: int = typer.Option(5, "--n-layers", min=0, help="Gated layers after the first."),
    kernel_size: int = typer.Option(3, "--kernel-size", min=3, help="Gated layers' kernel (odd)."),
    first_kernel_size: int = typer.Option(7, "--first-kernel-size", min=3, help="First layer's kernel (odd)."),
    head_channels: int = typer.Option(0, "--head-channels", min=0, help="Output head width (0: --channels)."),
    image_channels: Optional[int] = typer.Option(None, "--image-channels", help="Convert the data to 1 or 3."),
    image_size: Optional[int] = typer.Option(None, "--image-size", min=1, help="Resize + centre crop."),
    data_root: Optional[Path] = typer.Option(None, "--data-root", help="torchvision data root."),
    **train,
):
    """Train a Gated PixelCNN (unconditional, or class-conditional with --condition label).

    Writes OUT/last.pt, best.pt, metrics.jsonl, samples.png, summary.json, curve.png, train.log.
    Data-parallel: torchrun --standalone --nproc_per_node=N -m pcae train ...
    """
    _check_channels(image_channels)
    from pcae.tasks.pixelcnn import PixelCNNSpec

    resume, force = train["resume"], train["force"]
    config, given = _train_config(
        ctx, train, data=data, out=str(out), data_root=None if data_root is None else str(data_root),
        image_channels=image_channels, image_size=image_size)
    if condition not in ("none", "label"):
        raise typer.BadParameter(f"must be none or label, got {condition!r}", param_hint="--condition")
    spec = PixelCNNSpec(channels=channels, n_layers=n_layers, kernel_size=kernel_size,
                        first_kernel_size=first_kernel_size, head_channels=head_channels,
                        condition=condition)  # a plain dataclass: the model is checked in build()
    _run_training(config, spec, resume, force, given)


@app.command("sample")
def sample_cmd(
    checkpoint: Path = typer.Argument(..., help="A PixelCNN checkpoint (e.g. runs/pixelcnn/last.pt)."),
    out: Path = typer.Option(..., "--out", help="PNG grid to write."),
    n: int = typer.Option(16, "--n", min=1, help="Images (per class when conditional and no --label)."),
    label: Optional[int] = typer.Option(None, "--label", min=0, help="Class index (label-conditional models)."),
    temperature: float = typer.Option(1.0, "--temperature", callback=_TEMPERATURE, help="Divides the logits; 0 = argmax."),
    seed: int = typer.Option(0, "--seed"),
    sampler: Optional[str] = typer.Option(None, "--sampler", help="cached or naive (default: pcae's default)."),
    device: str = typer.Option("cpu", "--device", callback=_DEVICE, help=_DEVICE_HELP),
    force: bool = typer.Option(False, "--force", help="Replace an existing --out."),
):
    """Draw a grid of samples from a trained PixelCNN."""
    refuse_existing(out, force)
    import time

    from pcae.images import save_grid
    from pcae.inference import sample_checkpoint

    start = time.perf_counter()
    images, nrow = sample_checkpoint(checkpoint, n=n, label=label, temperature=temperature, seed=seed,
                                     sampler=sampler, device=device)
    save_grid(images, nrow, out)
    typer.echo(f"wrote {out}: {len(images)} samples of {' x '.join(map(str, images.shape[1:]))} "
               f"in {time.perf_counter() - start:.1f} s")


@app.command("evaluate")
def evaluate_cmd(
    checkpoint: Path = typer.Argument(..., help="A checkpoint written by a training command."),
    data: Optional[str] = typer.Option(None, "--data", help="Default: the training data. "
                                       + _DATA_SOURCE_HELP),
    split: str = typer.Option("test", "--split", callback=_SPLIT, help="train or test."),
    data_root: Optional[Path] = typer.Option(None, "--data-root", help="torchvision data root."),
    limit: int = typer.Option(0, "--limit", min=0, help="Only the first N images (0: all)."),
    batch_size: int = typer.Option(64, "--batch-size", min=1),
    device: str = typer.Option("cpu", "--device", callback=_DEVICE, help=_DEVICE_HELP),
    precision: str = typer.Option("auto", "--precision", callback=_PRECISION, help=_PRECISION_HELP),
):
    """Print test bits/dim (per class for labelled data) of a checkpoint as JSON."""
    import json

    from pcae.inference import evaluate_checkpoint

    result = evaluate_checkpoint(checkpoint, data=data, split=split,
                                 data_root=None if data_root is None else str(data_root),
                                 device=device, batch_size=batch_size, limit=limit, precision=precision)
    typer.echo(json.dumps(result, indent=2))


# --- portraits: `pcae train-portraits`, `pcae portrait`, `pcae interpolate` (pcae/portrait.py) --
@app.command("train-portraits")
@training_options(eval_images="Test faces per evaluation (0: all).",
                  n_samples="Portraits per grid (4 per test face).",
                  device=_DEVICE_HELP + " FaceNet embeds there too.")
def train_portraits_cmd(
    ctx: typer.Context,
    data: Optional[str] = typer.Option(None, "--data", help="Photos: faces (480 real photos of 55 people "
                                       "shipped with pcae) [default], or folder:PATH (searched "
                                       "recursively; one sub-folder per person keeps the person) or h5:PATH."),
    out: Path = typer.Option(Path("runs/portraits"), "--out", help="Run folder (refused if it exists, "
                             "unless --resume or --force)."),
    image_size: Optional[int] = typer.Option(None, "--image-size", min=1, help="Side of the face images the "
                                             "PixelCNN models (default: 32)."),
    encoder: str = typer.Option("auto", "--encoder", help="The face encoder to condition on: auto (facenet "
                                "when its pretrained weights are on this machine, else dlib), facenet "
                                "(the paper's) or dlib (pretrained, installs offline; no --facenet-* "
                                "options)."),
    facenet_weights: Optional[str] = typer.Option(None, "--facenet-weights", help="vggface2 [default] (from "
                                        "$TORCH_HOME/checkpoints), casia-webface, a state-dict FILE, or "
                                        "random (untrained: for dry runs only)."),
    facenet_crop_size: Optional[int] = typer.Option(None, "--facenet-crop-size", min=75, help="MTCNN crop "
                                                    "and FaceNet input side (FaceNet's is 160 [default]; "
                                                    "75..159 is faster, less exact)."),
    cache: Optional[Path] = typer.Option(None, "--cache", help="Face cache HDF5 (default: one per source "
                                         "under $PCAE_CACHE_DIR or ~/.cache/pcae/faces)."),
    max_photos: Optional[int] = typer.Option(None, "--max-photos", min=1, help="Use only the first N photos."),
    channels: int = typer.Option(24, "--channels", min=1, help="Feature maps per stack (p); divisible by 3 "
                                 "for colour faces."),
    n_layers: int = typer.Option(2, "--n-layers", min=0, help="Gated layers after the first."),
    spatial_channels: int = typer.Option(32, "--spatial-channels", min=0, help="Channels of the "
                                         "location-dependent map m(h); 0: global h only."),
    identity_swap: float = typer.Option(0.0, "--identity-swap", min=0, max=1, help="Probability of "
                                        "conditioning a training face on another photo of the same person."),
    h_noise: float = typer.Option(0.5, "--h-noise", min=0, help="Gaussian noise added to h while training, "
                                  "in standard deviations of each embedding dimension."),
    kernel_size: int = typer.Option(3, "--kernel-size", min=3, help="Gated layers' kernel (odd)."),
    first_kernel_size: int = typer.Option(7, "--first-kernel-size", min=3, help="First layer's kernel (odd)."),
    head_channels: int = typer.Option(0, "--head-channels", min=0, help="Output head width (0: --channels)."),
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

    resume, force = train["resume"], train["force"]
    config, given = _train_config(ctx, train, data=data or "faces", out=str(out), image_size=image_size)
    spec = PortraitSpec(**_given(  # the options not given: PortraitSpec's defaults
        ctx, encoder=encoder, facenet_weights=facenet_weights, facenet_crop_size=facenet_crop_size,
        cache=None if cache is None else str(cache), max_photos=max_photos, channels=channels,
        n_layers=n_layers, kernel_size=kernel_size, first_kernel_size=first_kernel_size,
        head_channels=head_channels, spatial_channels=spatial_channels, identity_swap=identity_swap,
        h_noise=h_noise))
    _run_training(config, spec, resume, force, given)


def _print_faces(faces: dict, out) -> None:
    """The face step's summary: faces found, skipped photos (the first 10 named), the cache, and
    what the encoder's weights mean for the portraits."""
    from pcae.portrait import facenet_note

    how = {"all": "reused", "detections": "reused detections, re-derived", "none": "detected"}
    name = faces["facenet"]["name"]
    if faces.get("encoder_choice"):
        typer.echo(f"face encoder: {name} ({faces['encoder_choice']})")
    people = f" of {faces['people']} people" if faces.get("people") else ""
    typer.echo(f"faces: {faces['faces']}{people} in {faces['photos']} photos ({faces['train']} train, "
               f"{faces['test']} test), {len(faces['skipped'])} skipped; {faces['image_size']}x"
               f"{faces['image_size']}{', grey' if faces.get('grey') else ''}; cache {faces['cache']} "
               f"({how[faces['reused']]})")
    for s in faces["skipped"][:10]:
        typer.echo(f"  skipped {s['file']}: {s['reason']}")
    if len(faces["skipped"]) > 10:
        typer.echo(f"  ... {len(faces['skipped']) - 10} more (all listed in {out}/train.log)")
    if not faces.get("encoder_choice"):
        typer.echo(("warning: " if faces["random_weights"] else "")
                   + facenet_note(faces["random_weights"], faces["facenet"].get("weights") or name))


def _spread_text(spread: dict) -> str:
    parts = []
    for key, name, unit in (("yaw", "yaw", ""), ("pitch", "pitch", ""), ("roll", "roll", " deg"),
                            ("luminance", "luminance", ""), ("left_right", "left/right", "")):
        v = spread.get(key) or {}
        if v.get("mean") is not None:
            parts.append(f"{name} {v['mean']:.2f} +- {v['std']:.2f}{unit}")
    return ", ".join(parts)


@app.command("portrait")
def portrait_cmd(
    photo: Path = typer.Argument(..., help="A photo with a face."),
    checkpoint: Optional[Path] = typer.Option(None, "--checkpoint", help="A portrait checkpoint (pcae "
                                              "train-portraits) [default: the newest finished portrait "
                                              "run's best.pt under runs/]."),
    out: Optional[Path] = typer.Option(None, "--out", help="PNG grid to write: the source crop, then the "
                                       "portraits [default: portraits/PHOTO-NAME.png]."),
    n: int = typer.Option(16, "--n", help="Portraits to draw (one batch)."),
    face_index: Optional[int] = typer.Option(None, "--face-index", help="Which face, largest first "
                                             "(default: the largest)."),
    samples_out: Optional[Path] = typer.Option(None, "--samples-out", help="Also write the portraits: "
                                               "a folder of PNGs, or an .h5 file."),
    sampler: Optional[str] = typer.Option(None, "--sampler", help="cached (default) or naive."),
    temperature: float = typer.Option(1.0, "--temperature", callback=_TEMPERATURE, help="Divides the logits; 0 = argmax."),
    seed: int = typer.Option(0, "--seed"),
    device: str = typer.Option("cpu", "--device", callback=_DEVICE, help=_DEVICE_HELP),
    reference: list[Path] = typer.Option([], "--reference", help="A real photo of the same person "
                                         "(repeat): their pose and lighting spread is printed as "
                                         "the reference for the portraits' (needs pcae[faces])."),
    force: bool = typer.Option(False, "--force", help="Replace existing outputs."),
):
    """Draw n new portraits of the person in PHOTO and print identity similarity and diversity.

    With dlib installed (pcae[faces]) the portraits are also judged by that independent network
    (distance to the photo's face, fraction judged the same person, the source face at the
    portraits' size as the ceiling), and their spread of head pose and lighting is measured.
    """
    if n < 1:
        raise PcaeError(f"--n must be >= 1, got {n}")
    if face_index is not None and face_index < 0:
        raise PcaeError(f"--face-index must be >= 0, got {face_index}")
    from pcae.portrait import default_portrait_paths

    checkpoint, out, chosen = default_portrait_paths(photo, checkpoint, out)
    if chosen:
        typer.echo(f"drawing with {chosen}", err=True)
    refuse_existing(out, force)
    refuse_existing(samples_out, force)
    import math
    import time

    from pcae.portrait import draw_portraits, facenet_note, save_png_grid, save_samples

    start = time.perf_counter()
    r = draw_portraits(checkpoint, photo, n, face_index=face_index, sampler=sampler, seed=seed,
                       temperature=temperature, device=device, references=reference)
    note = facenet_note(r.random_weights, r.facenet_weights)
    save_png_grid(r.grid, max(1, math.ceil(math.sqrt(len(r.grid)))), out,
                  {"pcae": "portrait grid: source crop, then samples", "checkpoint": str(checkpoint),
                   **r.summary(), "note": note})
    if samples_out is not None:
        save_samples(r, samples_out, str(checkpoint))
    S = r.samples.shape[-1]
    which = (f"; {r.faces_found} faces found, used face {r.face_index} (largest first; --face-index "
             "picks another)") if r.faces_found > 1 else ""
    typer.echo(f"face in {photo} (detector score {r.probability:.2f}{which}): {n} portraits of {S}x{S} "
               f"in {time.perf_counter() - start:.1f} s ({r.sampler} sampler, seed {seed})")
    for line in portrait_lines(r.scores, S):
        typer.echo(line)
    typer.echo(f"wrote {out}" + (f" and {samples_out}" if samples_out is not None else ""))
    typer.echo(("warning: " if r.random_weights else "") + note)


def portrait_lines(m: dict, S: int) -> list[str]:
    """What `pcae portrait` prints of eval.faces.portrait_scores."""
    lines = []
    if m["person"] is not None:
        lines.append(f"person: {m['person']} (a person the model knows: embedding distance "
                     f"{m['person_distance']:.2f} to their photos' mean)")
    elif m["person_distance"] is not None:
        lines.append(f"person: not one the model knows (nearest is {m['person_distance']:.2f} away)")
    j = m["identity"]
    if j is None:
        lines.append("identity judge: none in this checkpoint (its photos had no person folders, or it "
                     "was trained before pcae had one)")
    else:
        names = ", ".join(f"{name} x{j['names'].count(name)}" for name in sorted(set(j["names"]),
                                                                                  key=j["names"].count,
                                                                                  reverse=True)[:3])
        named = "" if j["named"] is None else f"{j['named']:.0%} named as {m['person']}; "
        lines.append(f"identity judge ({j['people']} people, {j['judge_accuracy']:.0%} on real test "
                     f"faces): {named}it sees {names}")
    d = m["dlib"]
    if d is None:
        lines.append("dlib distance: not measured (pip install 'pcae[faces]' for dlib)")
    else:
        lines.append(f"dlib distance to the photo's face: mean {d['distance']:.2f}, {d['same_person']:.0%} "
                     f"under {d['threshold']} (the same person); the photo at {S}x{S}: {d['ceiling_distance']:.2f}")
    v = m["diversity"]
    if v["pairs"]:
        lines.append(f"diversity: pixel RMS between portraits mean {v['rms_mean']:.1f}, smallest "
                     f"{v['rms_min']:.1f} levels; {v['near_copies']} of {v['pairs']} pairs are near-copies")
    for label, spread in (("portraits", m["pose_light"]), ("the person's photos", m["reference_pose_light"])):
        if spread:
            lines.append(f"pose and lighting, {label} ({spread['faces']}): " + _spread_text(spread))
    if m["ratios"]:
        r = m["ratios"]
        fmt = lambda v: "-" if v is None else f"{v:.2f}x"  # noqa: E731
        lines.append(f"spread against the person's photos: pose {fmt(r['pose_ratio'])}, lighting "
                     f"{fmt(r['light_ratio'])}")
    return lines


@app.command("interpolate")
def interpolate_cmd(
    a: Path = typer.Argument(..., help="Photo of the first face."),
    b: Path = typer.Argument(..., help="Photo of the second face."),
    checkpoint: Path = typer.Option(..., "--checkpoint", help="A portrait checkpoint."),
    out: Path = typer.Option(..., "--out", help="PNG grid: each row face a, the steps, face b."),
    steps: int = typer.Option(8, "--steps", help="Portraits along the line (>= 2)."),
    rows: int = typer.Option(1, "--rows", help="Rows, each with its own noise (the same along a row)."),
    sampler: Optional[str] = typer.Option(None, "--sampler", help="cached (default) or naive."),
    temperature: float = typer.Option(1.0, "--temperature", callback=_TEMPERATURE, help="Divides the logits; 0 = argmax."),
    seed: int = typer.Option(0, "--seed"),
    device: str = typer.Option("cpu", "--device", callback=_DEVICE, help=_DEVICE_HELP),
    force: bool = typer.Option(False, "--force", help="Replace an existing --out."),
):
    """Morph face A into face B: portraits along the line between their FaceNet embeddings."""
    if steps < 2:
        raise PcaeError(f"--steps must be >= 2, got {steps}")
    if rows < 1:
        raise PcaeError(f"--rows must be >= 1, got {rows}")
    refuse_existing(out, force)
    from pcae.portrait import facenet_note, interpolate, save_png_grid

    r = interpolate(checkpoint, a, b, steps, rows=rows, seed=seed, temperature=temperature,
                    sampler=sampler, device=device)
    note = facenet_note(r.random_weights, r.facenet_weights)
    save_png_grid(r.images, r.nrow, out, {"pcae": f"interpolation {a} -> {b}", "checkpoint": str(checkpoint),
                                          "steps": steps, "rows": rows, "seed": seed, "note": note})
    typer.echo(f"wrote {out}: {rows} row(s) of {a.name}, {steps} portraits, {b.name}; "
               f"embedding distance between the two faces {r.distance:.3f}")
    if r.named:
        typer.echo(f"identity judge along row 1 ({r.persons[0] or 'a'} -> {r.persons[1] or 'b'}): "
                   + ", ".join(r.named))
    typer.echo(("warning: " if r.random_weights else "") + note)


# --- auto-encoders: `pcae train-ae`, `pcae reconstruct` (pcae/autoencoder.py) -----------------
@app.command("train-ae")
@training_options(n_samples="Images per grid (4 samples per original).")
def train_ae_cmd(
    ctx: typer.Context,
    data: str = typer.Option("fashion-mnist", "--data", help=_DATA_SOURCE_HELP),
    out: Path = typer.Option(Path("runs/autoencoder"), "--out", help="Run folder (refused if it "
                             "exists, unless --resume or --force)."),
    encoder: Optional[str] = typer.Option(None, "--encoder", help="Encoder: " + ", ".join(_ENCODER_NAMES)
                                          + " (default: conv, or the --encoder-checkpoint's)."),
    bottleneck: Optional[int] = typer.Option(None, "--bottleneck", help="Size m of the conv encoder's h "
                                             "(default: 10)."),
    decoder: str = typer.Option("pixelcnn", "--decoder", help="pixelcnn (samples given h) or deconv "
                                "(the MSE baseline)."),
    deconv_output: str = typer.Option("mse", "--deconv-output", help="deconv: mse, or categorical "
                                      "(256-way per sub-pixel, NLL in bits/dim)."),
    spatial_cond: Optional[bool] = typer.Option(None, "--spatial-cond/--global-cond", help="pixelcnn: "
                                                "condition on h globally and through a deconv map m(h) "
                                                "(location-dependent), or globally only [default: "
                                                "--spatial-cond; facenet: --global-cond]."),
    spatial_channels: int = typer.Option(32, "--spatial-channels", min=1, help="pixelcnn: channels "
                                         "of the map m(h) with --spatial-cond."),
    freeze_encoder: bool = typer.Option(False, "--freeze-encoder", help="Train the decoder only."),
    encoder_checkpoint: Optional[Path] = typer.Option(None, "--encoder-checkpoint", help="Start the "
                                                      "encoder from this auto-encoder checkpoint."),
    facenet_weights: Optional[str] = typer.Option(None, "--facenet-weights", help="facenet: vggface2 "
                                                  "(default, from $TORCH_HOME/checkpoints), casia-webface, "
                                                  "FILE, or random (untrained: for dry runs only)."),
    facenet_crop_size: Optional[int] = typer.Option(None, "--facenet-crop-size", min=75, help="facenet: MTCNN crop "
                                          "and FaceNet input side (FaceNet's is 160)."),
    cache: Optional[Path] = typer.Option(None, "--cache", help="facenet: face cache HDF5 (default: one "
                                         "per source under $PCAE_CACHE_DIR or ~/.cache/pcae/faces)."),
    encoder_channels: int = typer.Option(32, "--encoder-channels", min=1, help="conv encoder width."),
    encoder_norm: str = typer.Option("batchnorm", "--encoder-norm", help="conv encoder: batchnorm "
                                     "(standardise each dim of h) or none (the raw linear h)."),
    channels: Optional[int] = typer.Option(None, "--channels", min=1, help="pixelcnn: feature maps per "
                                           "stack (p) (default: 24; facenet: 48, divisible by 3)."),
    n_layers: Optional[int] = typer.Option(None, "--n-layers", min=0, help="pixelcnn: gated layers after "
                                           "the first (default: 1; facenet: 5)."),
    kernel_size: int = typer.Option(3, "--kernel-size", min=3, help="pixelcnn: gated layers' kernel (odd)."),
    first_kernel_size: int = typer.Option(7, "--first-kernel-size", min=3, help="pixelcnn: first layer's "
                                          "kernel (odd)."),
    head_channels: int = typer.Option(0, "--head-channels", min=0, help="pixelcnn: output head width "
                                      "(0: --channels)."),
    deconv_channels: int = typer.Option(32, "--deconv-channels", min=1, help="deconv: width at full size."),
    image_channels: Optional[int] = typer.Option(None, "--image-channels", help="Convert the data to 1 or 3."),
    image_size: Optional[int] = typer.Option(None, "--image-size", min=1, help="Resize + centre crop "
                                             "(facenet: side of the face images, default 32)."),
    data_root: Optional[Path] = typer.Option(None, "--data-root", help="torchvision data root."),
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
    _check_channels(image_channels)
    from pcae.kinds import autoencoder_spec

    resume, force = train["resume"], train["force"]
    config, given = _train_config(ctx, train, data=data, out=str(out), image_channels=image_channels,
                                  image_size=image_size, data_root=None if data_root is None else str(data_root))
    # the spec decides what runs (a face encoder: the portrait pipeline); options not given take its defaults
    spec = autoencoder_spec(resuming=out if resume else None, **_given(
        ctx, encoder=encoder, bottleneck=bottleneck, decoder=decoder, deconv_output=deconv_output,
        spatial_cond=spatial_cond, spatial_channels=spatial_channels, freeze_encoder=freeze_encoder,
        encoder_checkpoint=None if encoder_checkpoint is None else str(encoder_checkpoint),
        facenet_weights=facenet_weights, facenet_crop_size=facenet_crop_size,
        cache=None if cache is None else str(cache), encoder_channels=encoder_channels,
        encoder_norm=encoder_norm, channels=channels, n_layers=n_layers, kernel_size=kernel_size,
        first_kernel_size=first_kernel_size, head_channels=head_channels,
        deconv_channels=deconv_channels))
    _run_training(config, spec, resume, force, given)


@app.command("reconstruct")
def reconstruct_cmd(
    checkpoint: Path = typer.Argument(..., help="An auto-encoder checkpoint (e.g. runs/autoencoder/last.pt)."),
    out: Path = typer.Option(..., "--out", help="PNG grid to write."),
    data: Optional[str] = typer.Option(None, "--data", help="Default: the training data. "
                                       + _DATA_SOURCE_HELP),
    split: str = typer.Option("test", "--split", callback=_SPLIT, help="train or test."),
    n: int = typer.Option(8, "--n", min=1, help="Originals (one per row)."),
    samples: int = typer.Option(4, "--samples", min=1, help="PixelCNN samples per original."),
    temperature: float = typer.Option(1.0, "--temperature", callback=_TEMPERATURE, help="Divides the logits; 0 = argmax."),
    seed: int = typer.Option(0, "--seed"),
    sampler: Optional[str] = typer.Option(None, "--sampler", help="cached or naive (default: pcae's default)."),
    data_root: Optional[Path] = typer.Option(None, "--data-root", help="torchvision data root."),
    device: str = typer.Option("cpu", "--device", callback=_DEVICE, help=_DEVICE_HELP),
    judge_images: int = typer.Option(200, "--judge-images", min=0, help="Score samples given the h of "
                                     "this many test images (2 each; deconv: the reconstructions) "
                                     "with the data's sample judge (eval.judge); 0: off."),
    force: bool = typer.Option(False, "--force", help="Replace an existing --out."),
):
    """Each of the first N images, followed by PixelCNN samples given its h (deconv: its reconstruction)."""
    refuse_existing(out, force)
    import time

    from pcae.images import save_grid
    from pcae.inference import reconstruct_checkpoint

    start = time.perf_counter()
    grid, nrow, info = reconstruct_checkpoint(checkpoint, data=data, split=split, n=n, samples=samples,
                                              temperature=temperature, seed=seed, sampler=sampler,
                                              data_root=None if data_root is None else str(data_root),
                                              device=device, judge_images=judge_images)
    save_grid(grid, nrow, out)
    made = "reconstruction" if info["decoder"] == "deconv" else f"{nrow - 1} samples"
    scores = ", ".join(f"{k} {info[k]:.4f}" for k in ("bpd", "mse") if k in info)
    typer.echo(f"wrote {out}: {len(grid) // nrow} {info['split']} images of {info['data']}, each + {made}; "
               f"{scores} over them; {time.perf_counter() - start:.1f} s")
    if info.get("semantics"):
        typer.echo(semantics_line(info["semantics"]))


# --- evaluation: `pcae compare-decoders` (eval/compare.py) -------------------------------------
@app.command("compare-decoders")
def compare_decoders_cmd(
    bottleneck: list[int] = typer.Option([], "--bottleneck", min=1, help="Bottleneck m (repeat: "
                                         "--bottleneck 10 --bottleneck 100) [default: 10, or the "
                                         "checkpoints' dims]."),
    data: str = typer.Option("fashion-mnist", "--data", help=_DATA_SOURCE_HELP),
    out: Path = typer.Option(Path("reports/compare-decoders"), "--out", help="Report folder (refused "
                             "if it exists, unless --force)."),
    steps: Optional[int] = typer.Option(None, "--steps", min=1, help="Optimizer steps per model "
                                        "(default 2000; 20 with --quick)."),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", min=1, help="Images per step (default 32)."),
    lr: Optional[float] = typer.Option(None, "--lr", help="AdamW learning rate (default 4e-3)."),
    eval_images: Optional[int] = typer.Option(None, "--eval-images", min=0, help="Test images measured "
                                              "(default 2000; 0: all)."),
    probe_images: Optional[int] = typer.Option(None, "--probe-images", min=0, help="Train images for "
                                               "the probe and the k-NN database (default 10000; 0: all)."),
    channels: Optional[int] = typer.Option(None, "--channels", min=1, help="PixelCNN feature maps per "
                                           "stack, decoders and reference alike (default 24)."),
    n_layers: Optional[int] = typer.Option(None, "--n-layers", min=0, help="PixelCNN gated layers after "
                                           "the first (default 1)."),
    global_h: bool = typer.Option(False, "--global-h", help="Also train a PixelCNN-AE with global "
                                  "conditioning only (no location-dependent m(h)), a third decoder."),
    judge_images: Optional[int] = typer.Option(None, "--judge-images", min=0, help="Test images whose "
                                               "samples (2 each) and reconstructions the sample judge "
                                               "scores (default 200; 0: off)."),
    quick: bool = typer.Option(False, "--quick", help="Tiny models, few steps, small subsets (~1 min on a CPU)."),
    pixelcnn: list[Path] = typer.Option([], "--pixelcnn", help="PixelCNN-AE checkpoint instead of "
                                        "training (one per --bottleneck, in order)."),
    deconv: list[Path] = typer.Option([], "--deconv", help="Deconv-AE checkpoint instead of training "
                                      "(one per --bottleneck, in order)."),
    unconditional: Optional[Path] = typer.Option(None, "--unconditional", help="Unconditional "
                                                 "PixelCNN checkpoint (the reference) instead of training."),
    seed: int = typer.Option(0, "--seed"),
    data_root: Optional[Path] = typer.Option(None, "--data-root", help="torchvision data root."),
    device: str = typer.Option("cpu", "--device", callback=_DEVICE, help=_DEVICE_HELP),
    force: bool = typer.Option(False, "--force", help="Replace the report in an existing --out."),
):
    """Train (or load) a PixelCNN-AE and a deconv-AE per bottleneck and measure what h keeps.

    Writes OUT/report.json, report.md, summary.png, figure_m{M}.png (rows: original, deconv
    reconstruction, PixelCNN samples given the same h) and the training runs under OUT/runs/.
    Every model's samples (deconv: reconstructions) are scored by the sample judge (eval.judge).
    """
    from eval.compare import QUICK, CompareConfig, compare_decoders

    if not bottleneck and not pixelcnn and not deconv:
        bottleneck = [10]
    options = {k: v for k, v in dict(steps=steps, batch_size=batch_size, lr=lr,
                                     eval_images=eval_images, probe_images=probe_images,
                                     channels=channels, n_layers=n_layers,
                                     judge_images=judge_images).items() if v is not None}
    try:
        config = CompareConfig(**{**(QUICK if quick else {}), **options, "bottlenecks": tuple(bottleneck),
                                  "data": data, "out": str(out), "seed": seed, "device": device,
                                  "global_pixelcnn": global_h,
                                  "data_root": None if data_root is None else str(data_root)})
    except ValueError as e:
        raise typer.BadParameter(str(e)) from None
    report = compare_decoders(config, pixelcnn=pixelcnn, deconv=deconv, unconditional=unconditional,
                              force=force, progress=lambda line: typer.echo(line, err=True))
    for row in report["rows"]:
        m = "-" if row["bottleneck"] is None else row["bottleneck"]
        probe = row.get("probe_accuracy")
        kept = row.get("class_agreement")
        typer.echo(f"m={m:<4} {row['model']:<25} {row['bits_per_dim']:.3f} bits/dim"
                   + ("" if probe is None else f", gain (h shuffled) {row['shuffled_gain']:.1f} bits, "
                      f"probe {probe:.1%}, k-NN {row['knn_accuracy']:.1%}")
                   + ("" if kept is None else f", class kept {kept:.1%} (judge "
                      f"{row['judge_accuracy']:.1%}), ink {row['ink']:.3f}/{row['source_ink']:.3f}"))
    typer.echo(f"wrote {out}/report.md ({report['wall_seconds']:.0f} s)")


def os_error_line(e: OSError) -> str:
    """One line for an OSError: the disk is full, a folder is read-only, a path is a folder...
    Outputs are written through temp files and renames, so what was there before is intact."""
    import errno

    where = e.filename or ""
    if is_disk_full(e):
        return str(DiskFull(where or None))
    if e.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return f"{where or 'a file'}: cannot be written here ({e.strerror}); choose another place"
    if e.errno == errno.EISDIR:
        return f"{where}: is a folder, a file was expected"
    if e.errno == errno.ENOTDIR:
        return f"{where}: a part of this path is a file, a folder was expected"
    return f"{where + ': ' if where else ''}{e.strerror or first_line(e)}"


def _exit_now(code: int) -> None:
    """Leave without exit handlers: after a write that failed for want of space the HDF5 library
    crashes (segfault) in its own exit handler. Everything pcae writes is already closed or discarded."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def main():
    try:
        code = app(standalone_mode=False)  # a command's typer.Exit(n) comes back as n here
        if code == 130 and not isinstance(code, bool):  # typer's answer to Ctrl-C: say so
            typer.secho("interrupted", fg=typer.colors.RED, err=True)
        if isinstance(code, int) and not isinstance(code, bool) and code:
            sys.exit(code)
    except DiskFull as e:
        typer.secho(f"error: {e}", fg=typer.colors.RED, err=True)
        _exit_now(1)
    except Interrupted as e:
        typer.secho(str(e), fg=typer.colors.RED, err=True)  # the message says what was saved
        sys.exit(130)
    except PcaeError as e:
        typer.secho(f"error: {e}", fg=typer.colors.RED, err=True)
        sys.exit(1)
    except OSError as e:  # the machine's doing (disk full, permissions, a path that is a folder)
        typer.secho(f"error: {os_error_line(e)}", fg=typer.colors.RED, err=True)
        if is_disk_full(e):
            _exit_now(1)
        sys.exit(1)
    except KeyboardInterrupt:
        typer.secho("interrupted", fg=typer.colors.RED, err=True)
        sys.exit(130)
    except typer.Exit as e:
        sys.exit(e.exit_code)
    except typer.Abort:
        sys.exit(1)
    except Exception as e:  # click's usage errors (typer 0.2x vendors click as typer._click)
        if hasattr(e, "show") and hasattr(e, "exit_code"):
            e.show()
            sys.exit(e.exit_code)
        raise


if __name__ == "__main__":
    main()
