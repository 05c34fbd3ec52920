"""The paper's claims about PixelCNNs, measured at small scale: a ladder of models on Fashion-MNIST.

    1. one masked stack, ReLU    the original PixelCNN, with its blind spot (PixelCNNSpec stacks=1, gated=False)
    2. two stacks, ReLU          the vertical and horizontal stacks, no gates (gated=False)
    3. the Gated PixelCNN        two stacks with gates: pcae's model
    4. gated, class-conditional  h = the one-hot class in every layer (condition="label")
    5. the same, location-dependent  h and a 12-channel map m(h) of the image's size (the paper's
                                 section 2.3), 28 channels to keep the parameters within ~10 %
                                 (an 8-channel map with 30 channels scored 65.6 % against 68.1 %)

Every rung has the same depth (a 7x7 first layer and 5 gated 3x3 layers), about the same number of
parameters (the ReLU rungs get 45 channels to the gated ones' 32, since a gate doubles the
pre-activations: 132 016, 132 016, 130 816, 139 264 and 144 428 parameters), and the same data, steps, batch,
learning rate and seed, trained through pcae.train's loop one after the other. It measures:

- test bits/dim of each over all 10 000 test images, with the gap to the rung before;
- conditioning: 100 samples per class from rungs 4 and 5, judged by the sample judge (eval/judge.py, a
  classifier of the data's classes), per class and overall, against the judge's accuracy on the
  real test images; and, as the reference of how often any sample looks like a class, the classes
  the judge sees in 1000 samples of rung 3; the better conditional rung's samples again by a
  second, differently trained judge;
- the receptive field of the middle pixel (eval.metrics.receptive_field) of rungs 1 and 3, side by
  side: rung 1's blind spot, the wedge up and to the right, is zero;
- a grid of each conditional rung's samples, one row per class (OUT/<rung>/class_samples.png; the
  better one also as OUT/class_samples.png).

    python benchmarks/paper.py                   # full Fashion-MNIST when installed, 1 epoch a rung
    python benchmarks/paper.py --reuse           # go on after an interrupted run
    python benchmarks/paper.py --steps 50 --bundled --out runs/paper-quick   # the pipeline, minutes

Writes OUT/<rung>/ (run folders), OUT/report.json, OUT/report.md, OUT/receptive_field.png and
OUT/class_samples.png.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import time
from pathlib import Path

import numpy as np
import torch

from eval.judge import JudgeConfig, class_accuracy, load_judge
from eval.metrics import receptive_field
from pcae.data import load_dataset
from pcae.images import save_figure, save_grid
from pcae.inference import evaluate_checkpoint, sample_checkpoint
from pcae.kinds import load_model
from pcae.machine import cpu_description
from pcae.tasks.pixelcnn import PixelCNNSpec
from pcae.train import TrainConfig, train

DEPTH = dict(n_layers=5, first_kernel_size=7, kernel_size=3)
RUNGS = {  # name -> PixelCNNSpec options
    "1-one-stack-relu": dict(DEPTH, channels=45, gated=False, stacks=1),
    "2-two-stacks-relu": dict(DEPTH, channels=45, gated=False),
    "3-gated": dict(DEPTH, channels=32),
    "4-gated-conditional": dict(DEPTH, channels=32, condition="label"),
    "5-gated-conditional-map": dict(DEPTH, channels=28, condition="label", spatial_channels=12),
}
CONDITIONAL = ("4-gated-conditional", "5-gated-conditional-map")
RUNG_NUMBERS = {name: k + 1 for k, name in enumerate(RUNGS)}
TITLES = {"1-one-stack-relu": "PixelCNN, one masked stack, ReLU", "2-two-stacks-relu": "two stacks, ReLU",
          "3-gated": "Gated PixelCNN", "4-gated-conditional": "Gated PixelCNN, class-conditional",
          "5-gated-conditional-map": "Gated PixelCNN, class-conditional, location-dependent m(h)"}
PER_CLASS = 100  # samples per class judged
# the check of the winner with a differently trained judge: twice the width, other features, seed,
# learning rate and all 60 000 training images
SECOND_JUDGE = JudgeConfig(channels=32, features=64, epochs=3, lr=2e-3, seed=1, max_train_images=60000)


def train_rung(name: str, args) -> Path:
    out = Path(args.out) / name
    config = TrainConfig(data="fashion-mnist", out=str(out), steps=args.steps, batch_size=args.batch_size,
                         lr=args.lr, seed=args.seed, eval_every=0, eval_images=1000, n_samples=16,
                         judge_images=0, checkpoint_every=250, precision=args.precision)
    summary = out / "summary.json"
    if args.reuse and summary.exists() and json.loads(summary.read_text()).get("steps") == args.steps:
        print(f"{name}: reusing {out}", flush=True)
        return out / "last.pt"
    resume = args.reuse and (out / "last.pt").exists()
    start = time.perf_counter()
    result = train(config, PixelCNNSpec(**RUNGS[name]), resume=resume, force=out.exists() and not resume)
    print(f"{name}: trained in {time.perf_counter() - start:.0f} s, {result.summary['images_per_s']:.0f} "
          f"images/s", flush=True)
    return out / "last.pt"


def measure(name: str, path: Path, args, judge) -> dict:
    """Bits/dim over every test image; for rungs 3 and 4, what the judge makes of their samples."""
    cached = path.parent / "paper.json"
    if args.reuse and cached.exists():
        return json.loads(cached.read_text())
    model, checkpoint = load_model(path)
    row = {"rung": name, "title": TITLES[name], "parameters": sum(p.numel() for p in model.parameters()),
           "steps": checkpoint["step"], "epochs": round(checkpoint["step"] * args.batch_size / 60000, 2),
           **evaluate_checkpoint(path, limit=0, precision="fp32")}
    if name in CONDITIONAL:
        images, _ = sample_checkpoint(path, n=PER_CLASS * 10, seed=args.seed)  # one run of PER_CLASS per class
        labels = torch.arange(10).repeat_interleave(PER_CLASS)
        row["samples"] = class_accuracy(judge, images, labels)
        save_grid(images.view(10, PER_CLASS, *images.shape[1:])[:, :10].flatten(0, 1), 10,
                  path.parent / "class_samples.png", {"rows": judge.classes})
    if name == "3-gated":
        images, _ = sample_checkpoint(path, n=PER_CLASS * 10, seed=args.seed)
        seen = torch.bincount(judge.predict(images), minlength=10).float() / len(images)
        row["samples"] = {"judged_as": dict(zip(judge.classes, seen.tolist())), "samples": len(images)}
    cached.write_text(json.dumps(row, indent=2, default=str) + "\n")
    return row


def second_judge(path: Path, args) -> dict:
    """Rung 4's samples (the same seed: the same images) scored by SECOND_JUDGE; cached beside them."""
    cached = path.parent / "second_judge.json"
    if args.reuse and cached.exists():
        return json.loads(cached.read_text())
    judge = load_judge("fashion-mnist", config=SECOND_JUDGE)
    images, _ = sample_checkpoint(path, n=PER_CLASS * 10, seed=args.seed)
    result = {**class_accuracy(judge, images, torch.arange(10).repeat_interleave(PER_CLASS)),
              "config": dataclasses.asdict(SECOND_JUDGE)}
    cached.write_text(json.dumps(result, indent=2, default=str) + "\n")
    return result


def receptive_figure(paths: dict, out: Path) -> Path:
    """|d logits(middle pixel) / d input| of rungs 1 and 3 side by side, on a log scale."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(9, 4.4), dpi=110)
    for ax, name in zip(axes, ("1-one-stack-relu", "3-gated")):
        model, _ = load_model(paths[name])
        H, W = model.config.image_size
        i, j = H // 2, W // 2
        field = receptive_field(model, (i, j)).numpy()
        shown = np.where(field > 0, np.log10(np.maximum(field, 1e-30)), np.nan)
        ax.imshow(shown, cmap="viridis")
        ax.add_patch(plt.Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, edgecolor="red", linewidth=2))
        seen = field > 0
        rows, cols = np.nonzero(seen)
        earlier = np.arange(H)[:, None] * W + np.arange(W)[None] < i * W + j
        box = np.zeros_like(seen)
        box[rows.min():i + 1, cols.min():cols.max() + 1] = True  # the extent it reaches
        blind = int((~seen & earlier & box).sum())
        ax.set_title(f"{TITLES[name]}\n{blind} earlier pixels within its reach unseen (white)", fontsize=10)
        ax.set_xticks([]), ax.set_yticks([])
    fig.suptitle("log10 |gradient| of the middle pixel's logits w.r.t. each input pixel (red)", fontsize=10)
    fig.tight_layout()
    return save_figure(fig, out)


def report(rows: list[dict], judge, where: str, args, best: str, second: dict) -> str:
    lines = [f"Fashion-MNIST ({rows[0]['origin']}), {args.steps} steps of {args.batch_size} "
             f"images a rung (~{rows[0]['epochs']} epoch), AdamW {args.lr:g}, seed {args.seed}, {args.precision}; "
             f"on {where}", "",
             f"| rung | model | parameters | test bits/dim ({rows[0]['images']:,} images) | gap to the rung before |",
             "|---|---|---:|---:|---:|"]
    for k, r in enumerate(rows):
        gap = "" if k == 0 else f"{r['bpd'] - rows[k - 1]['bpd']:+.4f}"
        lines.append(f"| {k + 1} | {r['title']} | {r['parameters']:,} | {r['bpd']:.4f} | {gap} |")
    gated = next(r for r in rows if r["rung"] == "3-gated")
    conditional = [r for r in rows if r["rung"] in CONDITIONAL]
    lines.append("")
    for r in conditional:
        s = r["samples"]
        lines.append(f"- {r['title']}: samples judged their class **{s['class_accuracy']:.1%}** of {s['samples']} "
                     f"(the judge on the real test images: {judge.accuracy:.1%}; ratio "
                     f"{s['class_accuracy'] / judge.accuracy:.0%}); test bits/dim {r['bpd'] - gated['bpd']:+.4f} "
                     "against the unconditional Gated PixelCNN.")
    lines += ["", f"The better one ({TITLES[best]}) checked by a second, differently trained judge "
              f"({second['judge_accuracy']:.1%} on the real test images): {second['class_accuracy']:.1%} of the "
              f"same samples in their class (ratio {second['class_accuracy'] / second['judge_accuracy']:.0%}).", "",
              "| class | " + " | ".join(f"rung {RUNG_NUMBERS[r['rung']]} samples judged it" for r in conditional)
              + " | unconditional samples judged it |", "|---|" + "---:|" * (len(conditional) + 1)]
    for name in judge.classes:
        cells = [f"{r['samples']['per_class'].get(name, 0):.0%}" for r in conditional]
        lines.append(f"| {name} | {' | '.join(cells)} | {gated['samples']['judged_as'][name]:.1%} |")
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=60000 // 32, help="default: one epoch of the full set")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--lr", type=float, default=TrainConfig.lr)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--precision", default="fp32")
    ap.add_argument("--out", default="runs/paper")
    ap.add_argument("--bundled", action="store_true", help="the bundled subset even when the full set is installed")
    ap.add_argument("--reuse", action="store_true", help="reuse finished rungs and their measures")
    args = ap.parse_args()
    if args.bundled:
        os.environ["PCAE_DATA_BUNDLED"] = "1"
    where = f"{cpu_description()}; torch threads: {torch.get_num_threads()}"
    origin = load_dataset("fashion-mnist", "test").info["origin"]
    print(f"{len(RUNGS)} rungs x {args.steps} steps of {args.batch_size}, data {origin}, on {where}", flush=True)
    paths = {name: train_rung(name, args) for name in RUNGS}
    judge = load_judge("fashion-mnist")
    print(f"sample judge: {judge.accuracy:.1%} on the real test images", flush=True)
    rows = []
    for name, path in paths.items():
        rows.append({**measure(name, path, args, judge), "origin": origin})
        print(f"{name}: test bits/dim {rows[-1]['bpd']:.4f}", flush=True)
    best = max(CONDITIONAL, key=lambda name: next(r for r in rows if r["rung"] == name)["samples"]["class_accuracy"])
    shutil.copyfile(paths[best].parent / "class_samples.png", Path(args.out) / "class_samples.png")
    second = second_judge(paths[best], args)
    print(f"second judge: {second['class_accuracy']:.1%} of {best}'s samples in their class "
          f"(its accuracy on the real test images {second['judge_accuracy']:.1%})", flush=True)
    figure = receptive_figure(paths, Path(args.out) / "receptive_field.png")
    text = report(rows, judge, where, args, best, second)
    print(text)
    out = Path(args.out)
    (out / "report.json").write_text(json.dumps({"device": where, "args": vars(args), "judge_accuracy": judge.accuracy,
                                                 "best_conditional": best, "second_judge": second, "rows": rows, "figures": [str(figure), str(out / "class_samples.png")]},
                                                indent=2, default=str) + "\n")
    (out / "report.md").write_text(text + "\n")


if __name__ == "__main__":
    main()
