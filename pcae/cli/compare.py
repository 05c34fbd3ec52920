"""`pcae compare-decoders`: what the bottleneck h keeps under a PixelCNN decoder and under a deconv
one (eval/compare.py). The options not given take CompareConfig's defaults (or --quick's)."""
from __future__ import annotations

from pathlib import Path

import typer

from eval.compare_config import QUICK as COMPARE_QUICK  # --quick's settings
from eval.compare_config import CompareConfig
from pcae.cli.common import TRAIN, Data, DataRoot, Device, Force, Seed, text
from pcae.settings import defaults

COMPARE = defaults(CompareConfig)


def _default(field: str) -> str:
    """The help's "(default N; M with --quick)" for a CompareConfig field."""
    quick = f"; {COMPARE_QUICK[field]} with --quick" if field in COMPARE_QUICK else ""
    return f"(default {COMPARE[field]}{quick})"


def compare_decoders_cmd(
    bottleneck: list[int] = typer.Option([], "--bottleneck", min=1, help="Bottleneck m (repeat: "
                                         "--bottleneck 10 --bottleneck 100) (default: 10, or the "
                                         "checkpoints' dims)."),
    data: Data = COMPARE["data"],
    out: Path = typer.Option(Path(COMPARE["out"]), "--out", help="Report folder (refused if it exists, "
                             "unless --force)."),
    steps: int | None = typer.Option(None, "--steps", min=1, help="Optimizer steps per model "
                                        + _default("steps") + "."),
    batch_size: int | None = typer.Option(None, "--batch-size", min=1, help="Images per step "
                                             + _default("batch_size") + "."),
    lr: float | None = typer.Option(None, "--lr", help="AdamW learning rate " + _default("lr") + "."),
    eval_images: int | None = typer.Option(None, "--eval-images", min=0, help="Test images measured "
                                              + _default("eval_images") + "; 0: all."),
    probe_images: int | None = typer.Option(None, "--probe-images", min=0, help="Train images for "
                                               "the probe and the k-NN database "
                                               + _default("probe_images") + "; 0: all."),
    channels: int | None = typer.Option(None, "--channels", min=1, help="PixelCNN feature maps per "
                                           "stack, decoders and reference alike " + _default("channels")
                                           + "."),
    n_layers: int | None = typer.Option(None, "--n-layers", min=0, help="PixelCNN gated layers after "
                                           "the first " + _default("n_layers") + "."),
    global_h: bool = typer.Option(COMPARE["global_pixelcnn"], "--global-h", help="Also train a PixelCNN-AE "
                                  "with global conditioning only (no location-dependent m(h)), a third "
                                  "decoder."),
    judge_images: int | None = typer.Option(None, "--judge-images", min=0, help="Test images whose "
                                               "samples (2 each) and reconstructions the sample judge "
                                               "scores " + _default("judge_images") + "; 0: off."),
    quick: bool = typer.Option(False, "--quick", help="Tiny models, few steps, small subsets (~1 min on a CPU)."),
    pixelcnn: list[Path] = typer.Option([], "--pixelcnn", help="PixelCNN-AE checkpoint instead of "
                                        "training (one per --bottleneck, in order)."),
    deconv: list[Path] = typer.Option([], "--deconv", help="Deconv-AE checkpoint instead of training "
                                      "(one per --bottleneck, in order)."),
    unconditional: Path | None = typer.Option(None, "--unconditional", help="Unconditional "
                                                 "PixelCNN checkpoint (the reference) instead of training."),
    seed: Seed = COMPARE["seed"],
    data_root: DataRoot = None,
    device: Device = TRAIN["device"],
    force: Force = False,
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
                                  "global_pixelcnn": global_h, "data_root": text(data_root)})
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
