"""Drawing from a portrait model (pcae/portrait.py): `pcae portrait` (new portraits of the person in
a photo, with how well they keep the identity and how varied they are) and `pcae interpolate` (a
morph from one face to another along the line between their embeddings)."""
from __future__ import annotations

from pathlib import Path

import typer

from pcae.cli.common import TRAIN, Device, Force, Guidance, Sampler, Seed, Temperature
from pcae.options import check_png_path, cli_callback


def portrait_cmd(
    photo: Path = typer.Argument(..., help="A photo with a face."),
    checkpoint: Path | None = typer.Option(None, "--checkpoint", help="A portrait checkpoint (pcae "
                                              "train-portraits) or exported folder (default: the newest "
                                              "finished portrait run's best.pt under runs/, else the "
                                              "model shipped with pcae)."),
    out: Path | None = typer.Option(None, "--out", callback=cli_callback(check_png_path), help="PNG grid to write: the source crop, then the "
                                       "portraits (default: portraits/PHOTO-NAME.png)."),
    n: int = typer.Option(16, "--n", help="Portraits to draw (one batch)."),
    face_index: int | None = typer.Option(None, "--face-index", help="Which face, largest first "
                                             "(default: the largest)."),
    samples_out: Path | None = typer.Option(None, "--samples-out", help="Also write the portraits: "
                                               "a folder of PNGs, or an .h5 file."),
    sampler: Sampler = None,
    temperature: Temperature = None,
    guidance: Guidance = None,
    seed: Seed = 0,
    device: Device = TRAIN["device"],
    reference: list[Path] = typer.Option([], "--reference", help="A real photo of the same person "
                                         "(repeat): their pose and lighting spread is printed as "
                                         "the reference for the portraits' (default: the person's photos the model knows)."),
    force: Force = False,
):
    """Draw n new portraits of the person in PHOTO and say who they show, how close and how varied.

    The person is the known one nearest the photo's embedding; the identity judge (a pixel-space
    classifier of the training people) names each portrait; dlib measures the distance to the
    photo's face (with the photo at the portraits' size as the ceiling) and the pose and lighting
    spread, read against the person's own photos.
    """
    import time

    from pcae.files import refuse_existing
    from pcae.portrait import default_portrait_paths, draw_portraits, facenet_note, save_png_grid, save_samples

    checkpoint, out, chosen = default_portrait_paths(photo, checkpoint, out)
    typer.echo(f"model: {chosen or checkpoint}")
    refuse_existing(out, force)
    refuse_existing(samples_out, force)
    start = time.perf_counter()
    r = draw_portraits(checkpoint, photo, n, face_index=face_index, sampler=sampler, seed=seed,
                       temperature=temperature, guidance=guidance, device=device, references=reference)
    note = facenet_note(r.random_weights, r.facenet_weights)
    tiles, nrow = r.layout()
    save_png_grid(tiles, nrow, out, {"pcae": "portrait grid: the source crop | the samples",
                                     "checkpoint": str(checkpoint), **r.summary(), "note": note}, gap=8)
    if samples_out is not None:
        save_samples(r, samples_out, str(checkpoint), force=force)
    S = r.samples.shape[-1]
    which = (f"; {r.faces_found} faces found, used face {r.face_index} (largest first; --face-index "
             "picks another)") if r.faces_found > 1 else ""
    typer.echo(f"face in {photo} (detector score {r.probability:.2f}{which}): {n} portraits of {S}x{S} "
               f"in {time.perf_counter() - start:.1f} s ({r.sampler} sampler, seed {seed}, temperature "
               f"{r.temperature:g}, guidance {r.guidance:g})")
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
        judge = f"identity judge ({j['people']} people, {j['judge_accuracy']:.0%} on real test faces)"
        if j["named"] is None:  # it can only name the people it was trained on
            lines.append(f"{judge}: the photo's person is not one of them; the portraits look most like {names}")
        else:
            lines.append(f"{judge}: {j['named']:.0%} named as {m['person']}; it sees {names}")
    d = m["dlib"]
    if d is None:
        lines.append("dlib distance: not measured (dlib is not installed: pip install dlib-bin face-recognition-models)")
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


def _spread_text(spread: dict) -> str:
    parts = []
    for key, name, unit in (("yaw", "yaw", ""), ("pitch", "pitch", ""), ("roll", "roll", " deg"),
                            ("luminance", "luminance", ""), ("left_right", "left/right", "")):
        v = spread.get(key) or {}
        if v.get("mean") is not None:
            parts.append(f"{name} {v['mean']:.2f} +- {v['std']:.2f}{unit}")
    return ", ".join(parts)


def interpolate_cmd(
    a: Path = typer.Argument(..., help="Photo of the first face."),
    b: Path = typer.Argument(..., help="Photo of the second face."),
    checkpoint: Path | None = typer.Option(None, "--checkpoint", help="A portrait checkpoint or exported "
                                              "folder (default: as for `pcae portrait`)."),
    out: Path | None = typer.Option(None, "--out", callback=cli_callback(check_png_path), help="PNG grid: each "
                                    "row face a, the steps, face b (default: portraits/A-NAME-B-NAME.png)."),
    steps: int = typer.Option(8, "--steps", help="Portraits along the line (2 to 64)."),
    rows: int = typer.Option(1, "--rows", help="Rows, each with its own noise (the same along a row; "
                             "at most 64)."),
    sampler: Sampler = None,
    temperature: Temperature = None,
    guidance: Guidance = None,
    seed: Seed = 0,
    device: Device = TRAIN["device"],
    force: Force = False,
):
    """Morph face A into face B: portraits along the line between their FaceNet embeddings."""
    from pcae.files import refuse_existing
    from pcae.portrait import PORTRAITS_OUT, default_portrait_model, facenet_note, interpolate, save_png_grid

    out = out or PORTRAITS_OUT / f"{a.stem}-{b.stem}.png"
    chosen = ""
    if checkpoint is None:
        checkpoint, chosen = default_portrait_model()
    typer.echo(f"model: {chosen or checkpoint}")
    refuse_existing(out, force)
    r = interpolate(checkpoint, a, b, steps, rows=rows, seed=seed, temperature=temperature,
                    guidance=guidance, sampler=sampler, device=device)
    note = facenet_note(r.random_weights, r.facenet_weights)
    save_png_grid(r.images, r.nrow, out, {"pcae": f"interpolation {a} -> {b}", "checkpoint": str(checkpoint),
                                          "steps": steps, "rows": rows, "seed": seed, "note": note})
    typer.echo(f"wrote {out}: {rows} row(s) of {a.name}, {steps} portraits, {b.name}; "
               f"embedding distance between the two faces {r.distance:.3f}")
    if r.named:
        typer.echo(f"identity judge along row 1 ({r.persons[0] or 'a'} -> {r.persons[1] or 'b'}): "
                   + ", ".join(r.named))
    typer.echo(("warning: " if r.random_weights else "") + note)
