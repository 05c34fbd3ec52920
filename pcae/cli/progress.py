"""What the training commands show: a progress bar while pcae.train.train runs, its events as lines
(the face step of a portrait run, the run's start, test evaluations), then the run's summary and
the sample judge's figures (`semantics_line`, also printed by `pcae reconstruct`)."""
from __future__ import annotations

import time
from pathlib import Path

import typer

from pcae.errors import Interrupted


def run_training(config, spec, resume: bool, force: bool, given: set[str]) -> None:
    """Run pcae.train.train with a rich progress bar; print the summary; Ctrl-C: Interrupted.

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
            now = time.monotonic()  # a log file sees no bar: a line each half minute instead
            if not console.is_terminal and (now - state.get("said", 0) >= 30 or info["done"] == info["total"]):
                state["said"] = now
                console.print(f"faces: {info['done']} of {info['total']} photos", highlight=False)
        elif event == "prepared":
            if "faces" in state:
                bar.remove_task(state.pop("faces"))
            print_faces(info, config.out)
        elif event == "start":
            if info["kept"]:
                console.print(f"resuming {info['out']} with its stored run options: "
                              f"{', '.join(info['kept'])} (give an option again to change it)",
                              highlight=False, markup=False, soft_wrap=True)
            state["metric"] = info["metric"]
            console.print(f"{info['kind']} run {info['out']}: steps {info['step']} -> {info['total']} "
                          f"on {info['device']}" + (f" x {info['world']} ranks" if info["world"] > 1 else "")
                          + f"; data {info['data'].get('source')} ({info['data'].get('origin')}), "
                          f"batches from {info['feeding']}; precision {_precision_text(info['precision'])}",
                          markup=False)
            state["bar"] = bar.add_task("step", total=info["total"], completed=info["step"],
                                        metric=info["metric"], value="-", rate="-")
        elif event == "train":
            bar.update(state["bar"], completed=info["step"],
                       value=f"{info.get(state['metric'], float('nan')):.4f}",
                       rate=f"{info['images_per_s']:.0f}")
        elif event == "eval":
            metric = state["metric"]
            bar.console.print(f"step {info['step']}: test {metric} {info.get(metric, float('nan')):.4f}"
                              f" ({info.get('images', '?')} images)", markup=False)

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


def print_faces(faces: dict, out) -> None:
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
                f"(smallest {num(m['rms_min'])}, {m['near_copies']} near-copies); median pose spread "
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
