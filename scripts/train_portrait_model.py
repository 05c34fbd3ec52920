"""Make the portrait model shipped with pcae (pcae/data/portrait): train, measure, export, describe.

A maintainer script: one recorded command from the photos to the shipped folder. It

1. lays out the photos: every photo of LFW-a (`--lfw`, one folder per person; read in place,
   never copied: the tree holds links) and of pcae's 55 bundled people, in --photos;
2. trains with `pcae train-portraits` (the recipe below; `--resume` goes on after a stop), holding
   out 10 % of the people with 5 photos or more (by a hash of the name) from training and test;
3. measures the run on the held-out people (eval.unseen: the identity judge's features and dlib,
   among the held-out people, against each person's other photos), on the bundled people's test
   photos (the identity judge of known people) and how often an unseen person is called a known
   one; writes OUT/results.json and OUT/results.md;
4. exports best.pt to pcae/data/portrait (model.safetensors + config.json) and writes the README's
   figure of 8 held-out people (docs/portrait-unseen.png).

    .venv/bin/python scripts/train_portrait_model.py --lfw ../shared/faces-lfw [--steps N] [--resume]
    .venv/bin/python scripts/train_portrait_model.py --lfw ../shared/faces-lfw --skip-training   # 3 and 4

LFW: Huang, Ramesh, Berg, Learned-Miller, "Labeled Faces in the Wild", UMass Amherst TR 07-49, 2007;
LFW-a: Wolf, Hassner, Taigman, TPAMI 33(10), 2011. The photos stay where they are; only weights ship.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
SHIPPED = ROOT / "pcae" / "data" / "portrait"
FIGURE = ROOT / "docs" / "portrait-unseen.png"

# how the shipped model may draw, (temperature, guidance): the identity judge picks the one whose
# portraits of the held-out people it names right most often, among those that keep the variety
# targets (`varied`); the second judge and dlib, which play no part in the choice, check it
SAMPLING = [(0.8, 0.0), (0.8, 0.5), (0.8, 1.0), (0.8, 1.5)]

# the recipe: 32x32 grey faces, dlib-conditioned, a wider and deeper decoder than the default; the
# bundled people (3 % of the faces) 4 times an epoch, so that the model knows them as well as it must
RECIPE = ["--encoder", "dlib", "--image-size", "32", "--holdout-people", "0.1", "--channels", "48",
          "--n-layers", "5", "--spatial-channels", "32", "--h-noise", "0.5", "--h-drop", "0.1",
          "--oversample", "orl/*,yale/*:4", "--batch-size", "32", "--lr", "0.003", "--lr-schedule", "cosine", "--warmup-steps", "200",
          "--eval-every", "1000", "--eval-images", "500", "--checkpoint-every", "250",
          "--judge-images", "100", "--precision", "auto"]


def _second_judge():
    from eval.identity import IdentityConfig

    return IdentityConfig(channels=32, seed=1)  # wider, another seed: a differently trained judge


def photo_tree(lfw: Path, tree: Path) -> Path:
    """A link in `tree` to every photo of LFW-a and of the bundled people, one folder per person."""
    from pcae.data import BUNDLED_FACES, image_files

    for src in (lfw.resolve(), BUNDLED_FACES):
        for path in image_files(src):
            link = tree / path.relative_to(src)
            if not link.is_symlink():
                link.parent.mkdir(parents=True, exist_ok=True)
                os.symlink(path, link)
    return tree


def train(tree: Path, run: Path, steps: int, resume: bool) -> float:
    command = [sys.executable, "-m", "pcae", "train-portraits", "--data", f"folder:{tree}", "--out", str(run),
               "--steps", str(steps), *RECIPE] + (["--resume"] if resume else [])
    print("$", " ".join(command), flush=True)
    start = time.time()
    subprocess.run(command, check=True)
    return time.time() - start


@torch.no_grad()
def known_faces_named(model, cache, second=None, prefixes=("orl/", "yale/"), per: int = 4, seed: int = 0) -> dict:
    """The identity judge on `per` portraits of each test photo of the bundled people (known to the
    model), drawn as the model draws (its `sampling`): the fraction named as the photo's person,
    and the judge's own rate on those photos; the same from the `second` judge when given."""
    import h5py

    from pcae.data import convert_images
    from pcae.sampling import sample

    with h5py.File(cache, "r") as f:
        persons, split = f["persons"].asstr()[:], f["split"][:]
        rows = [k for k in range(len(split)) if split[k] == 1 and persons[k].startswith(prefixes)]
        embeddings = torch.from_numpy(f["embeddings"][rows])
        images = convert_images(torch.from_numpy(f["images"][rows]), model.image_shape[0])
    h = model.condition(embeddings).repeat_interleave(per, 0)
    temperature, guidance = model.draw_settings()
    x = sample(model.decoder, len(h), model.image_shape, h, temperature, torch.Generator().manual_seed(seed),
               guidance=guidance)
    truth = [persons[k] for k in rows for _ in range(per)]
    out = {"photos": len(rows), "portraits": len(x), "people": len({persons[k] for k in rows})}
    for key, judge in (("", model.identity), ("second_", second)):
        if judge is not None:
            names, real = judge.name(x.to(torch.uint8)), judge.name(images)
            out[f"{key}named"] = sum(a == b for a, b in zip(names, truth)) / len(names)
            out[f"{key}judge_real"] = sum(a == persons[k] for a, k in zip(real, rows)) / len(rows)
    return out


def figure(unseen: dict, path: Path, people: int = 8, per: int = 8) -> None:
    """Rows of: a held-out person's source photo (at the portraits' size), then `per` portraits."""
    from pcae.images import save_grid

    picked, seen = [], set()
    for k, item in enumerate(unseen["per_source"]):  # each person's first source
        if item["person"] not in seen and len(picked) < people:
            seen.add(item["person"])
            picked.append(k)
    tiles = torch.cat([torch.cat([unseen["source_images"][k][None], unseen["portrait_images"][k][:per]])
                       for k in picked])
    rows = [unseen["per_source"][k]["person"] for k in picked]
    save_grid(tiles, per + 1, path, {"pcae": "portraits of people never trained on: the source photo | "
                                     f"{per} portraits", "rows": rows}, gap=8)


def pct(v) -> str:
    return "-" if v is None else f"{100 * v:.1f} %"


def model_card(r: dict) -> str:
    """MODEL_CARD.md of the shipped folder, from the results of measure_and_ship."""
    u, k, b, f = r["unseen"], r["known_person"], r["bundled_people"], r["faces"]
    took = f"{r['train_seconds'] / 60:.0f} min" if r.get("train_seconds") else "(time not recorded)"
    return f"""# pcae's portrait model

What `pcae portrait photo.jpg` and `pcae interpolate a.jpg b.jpg` draw with when you have no portrait
run of your own (a run under `runs/` or `--checkpoint` takes precedence; every output names the model).

## What it is
A conditional Gated PixelCNN p(face | h) of **32x32 grey faces**, h = the 128-d descriptor of dlib's
ResNet face model (face-recognition-models, installed with pcae; not part of these files), frozen:
48 channels, a 7x7 first layer and 5 gated 3x3 layers, h added globally and as a 32-channel map
m(h), Gaussian noise of 0.5 standard deviations on h while training and h = 0 (no one in
particular) for 10 % of the faces, so that it can draw with guidance. Beside the decoder:
the identity judge ({r['identity_judge']['people']} people, a pixel-space classifier), the
{len_people(r)} people it knows (their names and mean descriptors) and the distance under which
a photo is called one of them ({k['threshold']:.3f}, calibrated so that at most 5 % of the held-out
people's photos are called a known person).

## What it was trained on
- **Labeled Faces in the Wild, aligned (LFW-a)**: news photos of public figures, about 2002-2004.
  Gary B. Huang, Manu Ramesh, Tamara Berg, Erik Learned-Miller, "Labeled Faces in the Wild: A
  Database for Studying Face Recognition in Unconstrained Environments", University of
  Massachusetts Amherst, Technical Report 07-49, 2007; Lior Wolf, Tal Hassner, Yaniv Taigman,
  "Effective Unconstrained Face Recognition by Combining Multiple Descriptors and Learned
  Background Statistics", IEEE TPAMI 33(10), 2011. The photos' copyright stays with the
  photographers; none of them is in pcae, only these weights.
- pcae's 480 bundled photos of 55 people (the ORL and Yale faces: pcae/data/faces/SOURCES.md), each
  of their training faces shown 4 times an epoch (`--oversample 'orl/*,yale/*:4'`): without it they
  are 3 % of the faces, and the model drew them poorly.
- {f['photos']} photos, {f['faces']} faces found by dlib's HOG detector ({len(r['skipped'])} photos without a
  face skipped); {f['train']} faces trained on, {f['test']} test faces of the same people, and
  **{f['held_out']} faces of {u['people']} people held out entirely** (10 % of the people with 5
  photos or more, chosen by a hash of the name): the figures below are on them.

## How it was made
`python scripts/train_portrait_model.py --lfw ../shared/faces-lfw --steps {r['step']}` (one
command: the photos, `pcae train-portraits` with the recipe, the measures, this folder):
{r['step']} steps of 32 faces (AdamW, learning rate 3e-3 after 200 warm-up steps, cosine to 3e-4),
{took} of training on {r['machine']} (bf16 autocast), test bits/dim {r['test_bpd']:.3f}.

## How it draws
Unless told otherwise (`--temperature`, `--guidance`), at temperature {r['sampling']['temperature']:g} and
guidance {r['sampling']['guidance']:g}. The identity judge chose it among these settings: the one whose
portraits of the held-out people it names right most often, among those that keep the variety targets
(no near-copies, 90 % of the sources reaching half their person's pose or lighting spread). The second
judge and dlib played no part in the choice.

| temperature | guidance | identity judge | second judge | dlib | pose | lighting | sources varied | near-copies |
|---:|---:|---:|---:|---:|---:|---:|---:|---:|
{tried_rows(r['sampling_tried'])}

Guidance draws each level from l(x | h) + w (l(x | h) - l(x | 0)): a second batch given h = 0, so a
guided portrait takes twice the time.

## Measured on people it never saw
{u['people']} held-out people, {u['sources']} source photos (2 a person), 8 portraits each. Who does a
portrait show, among the {u['people']} held-out people, compared with each person's **other** photos
(never the source)? Chance is {pct(u['chance'])}.

| judge | portraits named right | the real source photo at 32x32 (ceiling) | portraits / ceiling |
|---|---:|---:|---:|
{table_rows(u)}

Portraits of one photo differ by {u['rms_mean']:.1f} levels RMS on average; {u['near_copies']} of {u['pairs']} pairs
are near-copies and {u['copies_of_source']} of {u['portraits']} portraits copy their source. Pose and
lighting spread of a photo's 8 portraits over that of the person's real photos (median over sources):
pose {ratio(u['pose_ratio'])}, lighting {ratio(u['light_ratio'])}; {pct(u['varied_sources'])} of the sources reach half
the real spread in one of them.

Known people: portraits of the bundled people's {b['photos']} test photos (4 each) are named as their
person by the identity judge {pct(b['named'])} of the time (its rate on the photos themselves: {pct(b['judge_real'])});
by the second judge {pct(b.get('second_named'))} (on the photos: {pct(b.get('second_judge_real'))}).
`pcae portrait` calls {pct(k['unseen_called_known'])} of the {k['unseen_photos']} held-out photos a known
person (set to at most 5 % on these photos) and names {pct(k['known_named_right'])} of the known
people's {k['known_photos']} test photos right.

## Limits
Grey and small (32x32): a face's identity at this size is coarse, and the judges' own ceilings say
how coarse. News photos of public figures from 2002-2004: mostly adults, mostly men, mostly
light-skinned, frontal or near-frontal (what dlib's HOG detector finds); it draws people outside
that range less well. It is not a face-recognition system: the names it prints are the nearest
of the people it knows, given only when the match is closer than the calibrated threshold.
"""


def len_people(r: dict) -> str:
    return f"{r['known_people']:,}"


def tried_rows(tried: list) -> str:
    return "\n".join(
        f"| {u['temperature']:g} | {u['guidance']:g} | {pct(u['judge']['portraits'])} | "
        f"{pct(u['second_judge']['portraits'])} | {pct(u['dlib']['portraits'])} | {ratio(u['pose_ratio'])} | "
        f"{ratio(u['light_ratio'])} | {pct(u['varied_sources'])} | {u['near_copies']} |" for u in tried)


def ratio(v) -> str:
    return "-" if v is None else f"{v:.2f}x"


def table_rows(u: dict) -> str:
    rows = []
    for key, name in (("judge", "identity judge's features (pixel space; never sees h)"),
                      ("second_judge", "a second judge (wider, another seed)"),
                      ("dlib", "dlib's descriptors (the conditioning network)")):
        v = u.get(key) or {}
        if v.get("portraits") is not None:
            share = v["portraits"] / v["real"] if v.get("real") else None
            rows.append(f"| {name} | {pct(v['portraits'])} | {pct(v['real'])} | {ratio(share)} |")
    return "\n".join(rows)


def varied(u: dict) -> bool:
    """The issue's variety targets: no near-copies, no copy of the source, and 90 % of the sources
    reach half their person's pose or lighting spread."""
    return u["near_copies"] == 0 and u["copies_of_source"] == 0 and (u["varied_sources"] or 0) >= 0.9


def measure_and_ship(run: Path, out: Path) -> dict:
    """Steps 3 and 4 of the module docstring; returns the results."""
    from eval.identity import identity_judge_of_cache
    from eval.unseen import judge_unseen, known_person_rates
    from pcae.checkpoint import export_pretrained, load_checkpoint
    from pcae.machine import cpu_description
    from pcae.portrait import load_portrait

    checkpoint = run / "best.pt" if (run / "best.pt").is_file() else run / "last.pt"
    model = load_portrait(checkpoint)
    cache = model.faces["cache"]
    start = time.time()
    second = identity_judge_of_cache(cache, model.image_shape[0], _second_judge(), listing=model.faces["listing"])
    tried = []
    for temperature, guidance in SAMPLING:
        tried.append(judge_unseen(model, cache, n=8, sources=2, second=second, temperature=temperature,
                                  guidance=guidance))
        print(f"unseen, temperature {temperature}, guidance {guidance}: {summary_line(tried[-1])}", flush=True)
    unseen = max([u for u in tried if varied(u)] or tried, key=lambda u: u["judge"]["portraits"])
    model.sampling = {"temperature": unseen["temperature"], "guidance": unseen["guidance"]}
    print(f"unseen people measured in {time.time() - start:.0f} s; the model draws at {model.sampling}", flush=True)
    summary = json.loads((run / "summary.json").read_text()) if (run / "summary.json").is_file() else {}
    strip = lambda u: {k: v for k, v in u.items() if k not in ("portrait_images", "source_images")}  # noqa: E731
    results = {
        "checkpoint": str(checkpoint), "step": load_checkpoint(checkpoint, lazy=True).get("step"),
        "train_seconds": summary.get("wall_seconds"), "machine": cpu_description(),
        "test_bpd": summary.get("final_test_bpd"), "faces": {k: v for k, v in model.faces.items() if k != "skipped"},
        "sampling": model.sampling, "unseen": strip(unseen),
        "sampling_tried": [{k: v for k, v in strip(u).items() if k != "per_source"} for u in tried],
        "known_person": known_person_rates(model, cache),
        "bundled_people": known_faces_named(model, cache, second),
        "identity_judge": {"people": len(model.identity.people), "accuracy": model.identity.accuracy},
        "second_judge": {"people": len(second.people), "accuracy": second.accuracy, "config": str(_second_judge())},
        "recipe": RECIPE, "known_people": len(model.people["names"]), "skipped": model.faces.get("skipped", []),
    }
    (out / "results.json").write_text(json.dumps(results, indent=2, default=str) + "\n")
    figure(unseen, FIGURE)
    shipped = load_checkpoint(checkpoint)
    shipped["configs"]["portrait"]["sampling"] = model.sampling  # how `pcae portrait` draws unless told
    export_pretrained(shipped, SHIPPED, force=True)
    (SHIPPED / "MODEL_CARD.md").write_text(model_card(results))
    print(json.dumps({k: v for k, v in results.items() if k not in ("unseen", "faces", "sampling_tried")},
                     indent=1, default=str))
    print(f"unseen: {unseen['people']} people, {unseen['sources']} sources, {unseen['portraits']} portraits; "
          f"{summary_line(unseen)}; chance {unseen['chance']:.1%}")
    return results


def summary_line(u: dict) -> str:
    return (f"judge {u['judge']['portraits']:.1%} (real photos {u['judge']['real']:.1%}), second judge "
            f"{u['second_judge']['portraits']:.1%} (real {u['second_judge']['real']:.1%}), dlib "
            f"{u['dlib']['portraits']:.1%} (real {u['dlib']['real']:.1%}); pose {ratio(u['pose_ratio'])}, "
            f"light {ratio(u['light_ratio'])}, {pct(u['varied_sources'])} of sources varied, "
            f"{u['near_copies']} near-copies")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--lfw", type=Path, default=ROOT.parent / "shared" / "faces-lfw")
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "shipped-portrait")
    parser.add_argument("--photos", type=Path, default=ROOT / "runs" / "photos-lfw-bundled",
                        help="where the tree of links to the photos goes (its path keys the face cache)")
    parser.add_argument("--steps", type=int, default=10000)  # the shipped model's
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--skip-training", action="store_true")
    args = parser.parse_args()
    if not args.lfw.is_dir():
        sys.exit(f"{args.lfw}: not a folder (LFW-a, one folder per person)")
    run = args.out / "run"
    tree = photo_tree(args.lfw, args.photos)
    if not args.skip_training:
        train(tree, run, args.steps, args.resume)
    measure_and_ship(run, args.out)


if __name__ == "__main__":
    main()
