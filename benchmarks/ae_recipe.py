"""Which training recipe makes a PixelCNN auto-encoder's samples given h keep their image's content?

Trains every variant below through pcae.train's loop (the same code as `pcae train-ae`), all with
the same number of steps, batch, seed and data, one after the other in this process, and prints
one table: test bits/dim, the sample judge's class agreement (eval.judge: the fraction of samples
given h that a classifier trained on the labels puts in their source's class, beside its accuracy
on real test images), mean ink against the sources', diversity among the samples of one h,
training images/s and wall-clock. The variants go from the defaults before this recipe ("old") to
the defaults now ("new", what `pcae train-ae --bottleneck 10` runs), one change at a time, plus
the ones that were tried and not kept.

    python benchmarks/ae_recipe.py                          # bundled data, 800 steps, every variant
    python benchmarks/ae_recipe.py --steps 300 --only old --only new
    python benchmarks/ae_recipe.py --full                   # the full Fashion-MNIST when installed
    python benchmarks/ae_recipe.py --reuse                  # go on after an interrupted run

Writes OUT/<variant>/ (run folders), OUT/results.json and OUT/results.md.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import time
from pathlib import Path

import torch

from pcae.machine import cpu_description
from pcae.tasks.autoencoder import AutoencoderSpec
from pcae.train import TrainConfig, train

OLD_MODEL = dict(channels=32, n_layers=5, spatial_cond=False)  # AutoencoderSpec before the recipe
OLD_TRAIN = dict(lr=2e-3, ema=0.0)

# name -> (what changed, AutoencoderSpec options, TrainConfig options)
VARIANTS = {
    "old": ("defaults before: global h only, 32 ch x 5 layers, lr 2e-3, raw weights",
            OLD_MODEL, OLD_TRAIN),
    "old+ema": ("+ weight average (ema 0.999, ramped)", OLD_MODEL, dict(OLD_TRAIN, ema=0.999)),
    "old+spatial": ("+ location-dependent h (m(h), 16 channels, in every layer)",
                    dict(OLD_MODEL, spatial_cond=True, spatial_channels=16), OLD_TRAIN),
    "spatial+ema": ("both", dict(OLD_MODEL, spatial_cond=True, spatial_channels=16),
                    dict(OLD_TRAIN, ema=0.999)),
    "spatial+ema+lr4e-3": ("and lr 4e-3", dict(OLD_MODEL, spatial_cond=True, spatial_channels=16),
                           dict(lr=4e-3, ema=0.999)),
    "new": ("defaults now: that, 24 ch x 1 layer, 32-channel m(h)", {}, {}),
    "new,16-ch m(h)": ("new with the old map width", dict(spatial_channels=16), {}),
    "new,2 layers": ("new one layer deeper", dict(n_layers=2), {}),
    "new,global h": ("new without location-dependent h", dict(spatial_cond=False), {}),
    "new+warmup": ("new + 30 warm-up steps (not kept)", {}, dict(warmup_steps=30)),
}


def cpu_or_gpu(device: str) -> str:
    if device == "cuda":
        return torch.cuda.get_device_name()
    return f"{cpu_description()}; torch threads: {torch.get_num_threads()}"


def finished_summary(config: TrainConfig, spec: AutoencoderSpec) -> dict | None:
    """The summary of a finished run of exactly this config and decoder in config.out, or None."""
    path = Path(config.out) / "summary.json"
    if not path.exists():
        return None
    summary = json.loads(path.read_text())
    stored = summary.get("config", {})
    mine = dataclasses.asdict(config)
    same = all(stored.get(k) == mine[k] for k in ("steps", "batch_size", "seed", "lr", "ema",
                                                    "warmup_steps", "eval_images", "judge_images",
                                                    "precision"))
    decoder = summary.get("model", {}).get("model", {}).get("decoder", {}).get("config", {})
    same = same and all(decoder.get(k) == getattr(spec, k) for k in ("channels", "n_layers", "spatial_cond"))
    same = same and (not spec.spatial_cond or decoder.get("spatial_channels") == spec.spatial_channels)
    return summary if same and summary.get("steps") == config.steps else None


def run_variant(name: str, args, out: Path) -> dict:
    what, model, train_options = VARIANTS[name]
    config = TrainConfig(out=str(out / name.replace(",", "-").replace(" ", "")), steps=args.steps,
                         batch_size=args.batch_size, seed=args.seed, device=args.device,
                         eval_every=0, eval_images=args.eval_images, judge_images=args.judge_images,
                         checkpoint_every=0, n_samples=16, precision=args.precision, **train_options)
    spec = AutoencoderSpec(bottleneck=args.bottleneck, **model)
    s = finished_summary(config, spec) if args.reuse else None
    if s is not None:
        wall = s["wall_seconds"]
        print(f"{name}: reusing the finished run in {config.out}", flush=True)
    else:
        start = time.perf_counter()
        s = train(config, spec, force=Path(config.out).exists()).summary
        wall = time.perf_counter() - start
    m = s.get("semantics") or {}
    return {"variant": name, "what": what, "bpd": s["final_test_bpd"],
            "class_agreement": m.get("class_agreement"), "judge_accuracy": m.get("judge_accuracy"),
            "ink": m.get("ink"), "source_ink": m.get("source_ink"), "ink_ratio": m.get("ink_ratio"),
            "diversity_rms": m.get("diversity_rms"), "diversity_features": m.get("diversity_features"),
            "images_per_s": s["images_per_s"], "wall_seconds": wall, "parameters": s["parameters"],
            "grid": str(Path(config.out) / "samples.png"), "config": s["config"],
            "model": dataclasses.asdict(spec)}


def table(rows: list[dict]) -> str:
    head = ("| variant | test bits/dim | class agreement (judge) | ink / sources' | diversity RMS "
            "| diversity features | images/s | wall s |\n|---|---:|---:|---:|---:|---:|---:|---:|")
    fmt = lambda v, f: "-" if v is None else format(v, f)
    lines = [head]
    for r in rows:
        lines.append(f"| {r['variant']} | {fmt(r['bpd'], '.4f')} | {fmt(r['class_agreement'], '.1%')} "
                     f"({fmt(r['judge_accuracy'], '.1%')}) | {fmt(r['ink'], '.3f')} / "
                     f"{fmt(r['source_ink'], '.3f')} | {fmt(r['diversity_rms'], '.3f')} | "
                     f"{fmt(r['diversity_features'], '.1f')} | {fmt(r['images_per_s'], '.0f')} | "
                     f"{fmt(r['wall_seconds'], '.0f')} |")
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=TrainConfig.DEFAULT_STEPS)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--bottleneck", type=int, default=10)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--eval-images", type=int, default=1000)
    ap.add_argument("--judge-images", type=int, default=200, help="sources, 2 samples each")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--precision", default="fp32", help="every variant's (default fp32, so that the "
                    "variants differ in their recipe only; auto: what pcae train-ae picks here)")
    ap.add_argument("--out", default="runs/ae-recipe")
    ap.add_argument("--only", action="append", choices=list(VARIANTS), help="run only these")
    ap.add_argument("--full", action="store_true", help="use the full Fashion-MNIST when installed "
                    "(default: the bundled subset, PCAE_DATA_BUNDLED=1)")
    ap.add_argument("--reuse", action="store_true", help="read back variants whose run folder holds "
                    "a finished run of the same steps, batch, seed and recipe instead of retraining "
                    "them (a benchmark cut short goes on where it stopped)")
    args = ap.parse_args()
    if not args.full:
        os.environ["PCAE_DATA_BUNDLED"] = "1"
    out = Path(args.out)
    names = args.only or list(VARIANTS)
    where = cpu_or_gpu(args.device)
    print(f"{len(names)} variants x {args.steps} steps of {args.batch_size} images, bottleneck "
          f"{args.bottleneck}, seed {args.seed}, on {where}", flush=True)
    rows = []
    for name in names:
        row = run_variant(name, args, out)
        rows.append(row)
        print(f"{name}: bpd {row['bpd']:.4f}, class agreement {row['class_agreement']:.1%} "
              f"(judge {row['judge_accuracy']:.1%}), ink {row['ink']:.3f} vs {row['source_ink']:.3f}, "
              f"{row['images_per_s']:.0f} images/s, {row['wall_seconds']:.0f} s", flush=True)
    text = table(rows)
    print(text)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps({"device": where, "args": vars(args), "rows": rows},
                                                 indent=2, default=str) + "\n")
    (out / "results.md").write_text(f"{args.steps} steps of {args.batch_size} images on {where}\n\n"
                                    + text + "\n")


if __name__ == "__main__":
    main()
