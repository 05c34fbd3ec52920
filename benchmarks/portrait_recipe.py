"""Which recipe makes `pcae portrait PHOTO` draw the person in the photo, in varied poses and light?

Trains every variant below through pcae.train's loop (the same code as `pcae train-portraits`) on
the bundled real faces (55 people), all with the same steps, batch, seed and photos, one after the
other in this process, and prints one table of the figures the end of a portrait run reports over
every test face (eval.faces.judge_test_faces): how often the identity judge (a pixel-space
classifier of the 55 people, eval/identity.py) names the source's person, dlib's distance to the
photo and the fraction under 0.6, the smallest pixel RMS between two portraits of one photo and
the near-copies, and the portraits' pose and lighting spread over that of the person's photos.

    python benchmarks/portrait_recipe.py                     # every variant
    python benchmarks/portrait_recipe.py --only default --holdout 5   # + 5 people never trained on
    python benchmarks/portrait_recipe.py --figures docs      # the README's figures, a second judge
    python benchmarks/portrait_recipe.py --reuse             # go on after an interrupted run

--holdout K trains the default recipe on the photos of all people but K (chosen with --seed) and
reports the same figures over every photo of those K people, judged by an identity judge that
knows all 55 (trained on the training photos of everyone; the portrait model never saw the K).

Writes OUT/<variant>/ (run folders), OUT/results.json and OUT/results.md.
"""
from __future__ import annotations

import argparse
import json
import random
import time
from pathlib import Path

import numpy as np
import torch

from pcae.machine import cpu_description
from pcae.portrait import PortraitSpec
from pcae.train import TrainConfig, train

# name -> (what changed, PortraitSpec options, TrainConfig options)
VARIANTS = {
    "default": ("the defaults: 32x32 grey, 24 ch x 2 gated layers, global h + 32-ch m(h), noise 0.5 on h",
                {}, {}),
    "no noise": ("default without noise on h", dict(h_noise=0.0), {}),
    "noise 1.0": ("default with twice the noise on h", dict(h_noise=1.0), {}),
    "identity swap": ("no noise; half the faces conditioned on another photo of their person",
                      dict(h_noise=0.0, identity_swap=0.5), {}),
    "global h": ("default without the location-dependent m(h)", dict(spatial_channels=0), {}),
    "1 layer": ("default with 1 gated layer (the auto-encoder's depth)", dict(n_layers=1), {}),
    "raw weights": ("default without the weight average", {}, dict(ema=0.0)),
}


def finished_summary(config: TrainConfig) -> dict | None:
    """The summary of a finished run in config.out with the same steps, batch and seed, or None."""
    path = Path(config.out) / "summary.json"
    if not path.exists():
        return None
    summary = json.loads(path.read_text())
    stored = summary.get("config", {})
    same = all(stored.get(k) == getattr(config, k) for k in ("steps", "batch_size", "seed", "ema", "precision"))
    return summary if same and summary.get("steps") == config.steps else None


def train_variant(name: str, args, out: Path, data: str = "faces", **spec_options) -> tuple[dict, float, Path]:
    what, model, train_options = VARIANTS[name]
    config = TrainConfig(data=data, out=str(out), steps=args.steps, batch_size=args.batch_size,
                         seed=args.seed, eval_every=0, eval_images=0, judge_images=args.judge_images,
                         checkpoint_every=0, precision=args.precision, **train_options)
    summary = finished_summary(config) if args.reuse else None
    if summary is not None:
        print(f"{name}: reusing the finished run in {config.out}", flush=True)
        return summary, summary["wall_seconds"], out
    start = time.perf_counter()
    summary = train(config, PortraitSpec(**model, **spec_options), force=out.exists()).summary
    return summary, time.perf_counter() - start, out


def row_of(name: str, summary: dict, wall: float) -> dict:
    m = dict(summary.get("semantics") or {})
    ratios = [f["ratios"] for f in m.get("faces", []) if f.get("ratios")]
    for key in ("pose_ratio", "light_ratio"):  # the median over faces (runs that stored the mean)
        values = [r[key] for r in ratios if r.get(key) is not None]
        if values:
            m[key] = float(np.median(values))
    keys = ("named", "judge_accuracy", "dlib_distance", "dlib_same_person", "dlib_ceiling_distance",
            "rms_mean", "rms_min", "near_copies", "pose_ratio", "light_ratio", "varied_faces", "test_faces")
    return {"variant": name, "what": VARIANTS.get(name, ("",))[0], "bpd": summary["final_test_bpd"],
            **{k: m.get(k) for k in keys}, "images_per_s": summary["images_per_s"], "wall_seconds": wall,
            "parameters": summary["parameters"], "grid": str(Path(summary["out"]) / "samples.png")}


def table(rows: list[dict]) -> str:
    fmt = lambda v, f: "-" if v is None else format(v, f)  # noqa: E731
    lines = ["| variant | test bits/dim | named (judge) | dlib < 0.6 | dlib distance (ceiling) | RMS mean / min "
             "| near-copies | pose / light spread | faces varied | images/s | wall s |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['variant']} | {fmt(r['bpd'], '.3f')} | {fmt(r['named'], '.1%')} "
                     f"({fmt(r['judge_accuracy'], '.0%')}) | {fmt(r['dlib_same_person'], '.1%')} | "
                     f"{fmt(r['dlib_distance'], '.3f')} ({fmt(r['dlib_ceiling_distance'], '.3f')}) | "
                     f"{fmt(r['rms_mean'], '.1f')} / {fmt(r['rms_min'], '.1f')} | {fmt(r['near_copies'], 'd')} | "
                     f"{fmt(r['pose_ratio'], '.2f')} / {fmt(r['light_ratio'], '.2f')} | "
                     f"{fmt(r['varied_faces'], '.0%')} | {fmt(r['images_per_s'], '.0f')} | "
                     f"{fmt(r['wall_seconds'], '.0f')} |")
    return "\n".join(lines)


def holdout(args, out: Path) -> dict:
    """The default recipe trained without K people, judged on every photo of those K."""
    import h5py
    import numpy as np

    from eval.faces import judge_test_faces
    from pcae.checkpoint import load_checkpoint
    from pcae.data import BUNDLED_FACES
    from pcae.faces import load_persons
    from pcae.kinds import task_from_checkpoint
    from pcae.tasks.portrait import _identity_and_people

    people = sorted({p.parent.relative_to(BUNDLED_FACES).as_posix() for p in BUNDLED_FACES.rglob("*.png")})
    held = sorted(random.Random(args.seed).sample(people, args.holdout))
    folder = out / "photos"  # every person but the held-out ones, as links to the bundled photos
    for photo in sorted(BUNDLED_FACES.rglob("*.png")):
        link = folder / photo.relative_to(BUNDLED_FACES)
        if link.parent.relative_to(folder).as_posix() not in held and not link.exists():
            link.parent.mkdir(parents=True, exist_ok=True)
            link.symlink_to(photo)
    summary, wall, run = train_variant("default", args, out / "run", data=f"folder:{folder}")
    # the judge and people of all 55 (the full run's cache: the same photos, the same split)
    full = json.loads((out.parent / "default" / "summary.json").read_text())["model"]["faces"]
    task = task_from_checkpoint(load_checkpoint(run / "last.pt"))
    task.model.eval()
    channels = task.config.image_channels
    task.identity, task.people = _identity_and_people(full, channels, task.facenet)
    task.faces = full  # its rows: the held-out people's faces are among them
    persons, split = load_persons(full["cache"])
    rows = [k for k, p in enumerate(persons) if p in held]  # every photo: none was trained on

    class HeldOut:  # the full cache's faces of the held-out people, as (image, row) items
        def __init__(self):
            with h5py.File(full["cache"], "r") as f:
                from pcae.data import convert_images
                self.images = convert_images(torch.from_numpy(f["images"][:]), channels)

        def __len__(self):
            return len(rows)

        def __getitem__(self, i):
            return self.images[rows[i]], rows[i]

    with h5py.File(full["cache"], "r") as f:  # h of every row of the full cache
        table = torch.from_numpy(np.asarray(f["embeddings"][:]))
    from encoders.lookup import EmbeddingTable
    task.encoder = EmbeddingTable(table.shape[1], table=table)
    generator = torch.Generator().manual_seed(args.seed)
    figures = judge_test_faces(task, HeldOut(), len(rows), 4, generator)
    return {"held_out": held, "photos": len(rows), "train_summary": row_of("default", summary, wall),
            **{k: v for k, v in figures.items() if k != "faces"}}


def figures(run: Path, folder: Path, seed: int = 0) -> list[Path]:
    """The README's figures from a portrait run: 3 ORL and 3 Yale test photos (never trained on),
    each followed by 8 portraits (docs/portraits.png), and an interpolation strip between two
    people (docs/interpolation.png), upscaled so that a face can be seen."""
    import h5py

    from pcae.images import save_grid
    from pcae.portrait import draw_portraits, interpolate, load_portrait

    model = load_portrait(run / "best.pt")
    with h5py.File(model.faces["cache"], "r") as f:
        tests = [(name, person) for name, person, split in zip(f["files"].asstr()[:], f["persons"].asstr()[:],
                                                               f["split"][:]) if split == 1]
    origin = Path(model.faces["origin"])
    chosen = [t for t in tests if t[1].startswith("orl/")][::13][:3] + [t for t in tests if t[1].startswith("yale/")][::5][:3]
    rows, named = [], []
    for name, person in chosen:
        r = draw_portraits(model, origin / name, 8, seed=seed)
        rows.append(torch.cat([r.source, r.samples]))
        named.append({"photo": name, "person": person, "named": r.scores["identity"]["named"],
                      "dlib_same_person": r.scores["dlib"]["same_person"]})
        print(f"{name}: named {named[-1]['named']:.0%}, dlib < 0.6 {named[-1]['dlib_same_person']:.0%}", flush=True)
    folder.mkdir(parents=True, exist_ok=True)
    grid = save_grid(torch.cat(rows), 9, folder / "portraits.png",
                     {"pcae": "test photo, then 8 portraits given its embedding", "rows": named},
                     min_width=1024, gap=12)
    (a, _), (b, _) = chosen[0], chosen[3]
    strip = interpolate(model, origin / a, origin / b, 8, rows=2, seed=seed)
    morph = save_grid(strip.images, strip.nrow, folder / "interpolation.png",
                      {"pcae": f"interpolation {a} -> {b}", "named": strip.named}, min_width=1024)
    print(f"interpolation {a} -> {b}: identity judge along row 1: {', '.join(strip.named or [])}", flush=True)
    return [grid, morph]


SECOND_JUDGE = dict(channels=16, epochs=60, dropout=0.2, shift=3, seed=1)  # trained otherwise


def second_judge(run: Path, judge_images: int = 200, seed: int = 0) -> dict:
    """The default variant's figures again, with the portraits named by a second identity judge,
    trained differently (SECOND_JUDGE: narrower, longer, another seed and augmentation): the same
    portraits (same checkpoint, same sampler seed as the run's own end-of-run figures)."""
    from eval.faces import judge_test_faces
    from eval.identity import IdentityConfig, identity_judge_of_cache
    from pcae.checkpoint import load_checkpoint
    from pcae.data import load_dataset
    from pcae.kinds import task_from_checkpoint

    checkpoint = load_checkpoint(run / "best.pt")
    task = task_from_checkpoint(checkpoint)
    task.model.eval()
    train_config = checkpoint["configs"]["train"]
    test_ds = load_dataset(train_config["data"], "test", channels=train_config["image_channels"],
                           image_size=train_config["image_size"])
    task.identity = identity_judge_of_cache(task.faces["cache"], train_config["image_channels"],
                                            IdentityConfig(**SECOND_JUDGE), listing=task.faces["listing"])
    figures = judge_test_faces(task, test_ds, judge_images, 4, torch.Generator().manual_seed(seed))
    return {k: v for k, v in figures.items() if k != "faces"}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=TrainConfig.DEFAULT_STEPS)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--judge-images", type=int, default=200, help="test faces judged (4 portraits each)")
    ap.add_argument("--precision", default="fp32")
    ap.add_argument("--out", default="runs/portrait-recipe")
    ap.add_argument("--only", action="append", choices=list(VARIANTS), help="run only these")
    ap.add_argument("--holdout", type=int, default=0, help="also train without this many people")
    ap.add_argument("--reuse", action="store_true", help="read back finished variants")
    ap.add_argument("--figures", type=Path, help="write the README's figures of the default variant here")
    args = ap.parse_args()
    out = Path(args.out)
    if args.figures:  # of a finished default variant: nothing is trained
        second = second_judge(out / "default", args.judge_images, args.seed)
        print(f"default, judged by a second identity judge ({SECOND_JUDGE}): named {second['named']:.1%} "
              f"(that judge: {second['judge_accuracy']:.1%} on the real test faces)", flush=True)
        (out / "second_judge.json").write_text(json.dumps({"config": SECOND_JUDGE, **second}, indent=2) + "\n")
        for path in figures(out / "default", args.figures, args.seed):
            print(f"wrote {path}")
        return
    names = args.only or list(VARIANTS)
    where = f"{cpu_description()}; torch threads: {torch.get_num_threads()}"
    print(f"{len(names)} variants x {args.steps} steps of {args.batch_size} faces, seed {args.seed}, on {where}",
          flush=True)
    rows = []
    for name in names:
        summary, wall, _ = train_variant(name, args, out / name.replace(" ", "-"))
        rows.append(row_of(name, summary, wall))
        print(table(rows[-1:]).splitlines()[-1], flush=True)
    result = {"device": where, "args": vars(args), "rows": rows}
    text = table(rows)
    if args.holdout:
        result["holdout"] = h = holdout(args, out / f"holdout-{args.holdout}")
        text += (f"\n\nHeld out of training: {', '.join(h['held_out'])} ({h['photos']} photos, 4 portraits "
                 f"each, judged by an identity judge of all 55 people):\n\n" + table([{**h, "variant": "held out",
                  "bpd": None, "images_per_s": None, "wall_seconds": None}]))
    print(text)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(result, indent=2, default=str) + "\n")
    (out / "results.md").write_text(f"{args.steps} steps of {args.batch_size} faces on {where}\n\n{text}\n")



if __name__ == "__main__":
    main()
