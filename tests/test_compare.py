"""`pcae compare-decoders --quick` end to end through the CLI: report keys, every number finite and
in range, the images; reusing checkpoints; one-line errors for a taken --out and wrong checkpoints."""
from __future__ import annotations

import json
import math

import pytest
from helpers import grid_px
from PIL import Image
from typer.testing import CliRunner

from pcae.cli import app

M = 3  # one small bottleneck keeps the test short
ROW_KEYS = {"bottleneck", "model", "checkpoint", "bits_per_dim", "bits_per_image", "shuffled_gain",
            "zero_gain", "probe_accuracy", "knn_accuracy", "active_dims", "participation_ratio",
            "h_variance", "reconstruction_mse", "reconstruction_psnr", "sample_mse", "sample_psnr",
            "gaussian_bits_per_dim", "bits_saved_vs_unconditional"}


def invoke(*args):
    return CliRunner().invoke(app, ["compare-decoders", *map(str, args)])


QUICK = ("--quick", "--steps", 10, "--eval-images", 48, "--probe-images", 128)


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    mp = pytest.MonkeyPatch()
    mp.setenv("PCAE_DATA_BUNDLED", "1")  # conftest's autouse fixture is function-scoped
    out = tmp_path_factory.mktemp("compare") / "report"
    result = invoke("--bottleneck", M, "--out", out, *QUICK)
    mp.undo()
    return out, result


def finite(value):
    return isinstance(value, (int, float)) and math.isfinite(value)


def test_quick_run_writes_a_complete_report(quick_run):
    out, result = quick_run
    assert result.exit_code == 0, result.output
    assert "Traceback" not in result.output
    report = json.loads((out / "report.json").read_text())
    assert {"config", "data", "rows", "figures", "plot", "eval_images", "probe_images"} <= set(report)
    assert report["config"]["quick"] and report["config"]["steps"] == 10
    assert report["eval_images"] == 48 and report["probe_images"] == 128
    rows = {row["model"]: row for row in report["rows"]}
    assert set(rows) == {"pixelcnn-ae", "deconv-ae", "pixelcnn (unconditional)"}
    dims = 28 * 28
    for name in ("pixelcnn-ae", "deconv-ae"):
        row = rows[name]
        assert ROW_KEYS <= set(row) and row["bottleneck"] == M
        assert 0 < row["bits_per_dim"] < 9 and row["bits_per_image"] == pytest.approx(row["bits_per_dim"] * dims)
        for key in ("shuffled_gain", "zero_gain", "bits_saved_vs_unconditional", "participation_ratio"):
            assert finite(row[key]), (name, key)
        assert 0 <= row["probe_accuracy"] <= 1 and 0 <= row["knn_accuracy"] <= 1
        assert 0 <= row["active_dims"] <= M and 0 <= row["participation_ratio"] <= M + 1e-9
        assert len(row["h_variance"]) == M and all(v >= 0 for v in row["h_variance"])
    pix, dec = rows["pixelcnn-ae"], rows["deconv-ae"]
    # the sample judge scored both: samples given h (2 per source, so a diversity) and reconstructions
    assert 0 < report["judge"]["accuracy"] <= 1
    for row in (pix, dec):
        assert 0 <= row["class_agreement"] <= 1 and row["judge_accuracy"] == report["judge"]["accuracy"]
        assert 0 <= row["ink"] <= 1 and row["ink_ratio"] == pytest.approx(row["ink"] / row["source_ink"])
    assert pix["diversity_rms"] > 0 and dec["diversity_rms"] is None
    assert "class kept (judge)" in (out / "report.md").read_text()
    assert 0 < pix["sample_mse"] <= 1 and finite(pix["sample_psnr"]) and pix["sample_psnr"] > 0
    assert 0 < dec["reconstruction_mse"] <= 1 and dec["reconstruction_psnr"] > 0
    assert 0 < dec["gaussian_bits_per_dim"] < 9
    assert pix["reconstruction_mse"] is None and dec["sample_mse"] is None
    ref = rows["pixelcnn (unconditional)"]
    assert ref["bottleneck"] is None and 0 < ref["bits_per_dim"] < 9
    assert pix["bits_saved_vs_unconditional"] == pytest.approx(ref["bits_per_image"] - pix["bits_per_image"])

    # every number anywhere in the report is finite (json.loads would accept NaN/Infinity)
    def walk(value):
        if isinstance(value, dict):
            for v in value.values():
                walk(v)
        elif isinstance(value, list):
            for v in value:
                walk(v)
        elif isinstance(value, float):
            assert math.isfinite(value)
    walk(report)

    figure = Image.open(out / f"figure_m{M}.png")
    n_rows, per_row = 2, 2 + 2  # quick: 2 images, each: original, reconstruction, 2 samples
    assert figure.size == grid_px(per_row * (28 + 2) + 2, n_rows * (28 + 2) + 2, gap=8)  # upscaled, a gutter
    assert Image.open(out / "summary.png").size[0] > 300
    md = (out / "report.md").read_text()
    assert "| m | model | bits/dim" in md and f"| {M} | pixelcnn-ae |" in md and f"figure_m{M}.png" in md
    for name in ("pixelcnn-unconditional", f"pixelcnn-ae-m{M}", f"deconv-ae-m{M}", f"deconv-head-m{M}"):
        assert (out / "runs" / name / "last.pt").exists()


def test_existing_out_needs_force(quick_run):
    out, _ = quick_run
    before = (out / "report.json").read_bytes()
    result = invoke("--bottleneck", M, "--out", out, *QUICK)
    assert result.exit_code == 1
    assert "already exists; pass --force" in str(result.exception)
    assert "Traceback" not in result.output
    assert (out / "report.json").read_bytes() == before


def test_given_checkpoints_are_measured_not_retrained(quick_run, tmp_path):
    out, _ = quick_run
    runs = out / "runs"
    new = tmp_path / "again"
    result = invoke("--out", new, *QUICK, "--pixelcnn", runs / f"pixelcnn-ae-m{M}" / "last.pt",
                    "--deconv", runs / f"deconv-ae-m{M}" / "last.pt",
                    "--unconditional", runs / "pixelcnn-unconditional" / "last.pt")
    assert result.exit_code == 0, result.output
    report = json.loads((new / "report.json").read_text())
    first = json.loads((out / "report.json").read_text())
    assert [r["bottleneck"] for r in report["rows"]] == [M, M, None]  # read from the checkpoints
    # same models, same data subsets, same seed: the same likelihoods and probes
    for a, b in zip(report["rows"], first["rows"]):
        for key in ("bits_per_dim", "probe_accuracy", "knn_accuracy"):
            if b.get(key) is None:
                assert a.get(key) is None
            else:
                assert a.get(key) == pytest.approx(b[key], rel=1e-6), key
    assert sorted(p.name for p in (new / "runs").iterdir()) == [f"deconv-head-m{M}"]


@pytest.mark.parametrize("case, message", [
    ("swapped", "holds a deconv auto-encoder, expected a pixelcnn one"),
    ("unpaired", "give --pixelcnn and --deconv in pairs"),
    ("count", "1 checkpoint pairs for 2 bottlenecks"),
    ("missing", "no such checkpoint file"),
])
def test_bad_checkpoints_are_one_line_errors(quick_run, tmp_path, case, message):
    runs = quick_run[0] / "runs"
    p, d = runs / f"pixelcnn-ae-m{M}" / "last.pt", runs / f"deconv-ae-m{M}" / "last.pt"
    args = {"swapped": ["--pixelcnn", d, "--deconv", p],
            "unpaired": ["--pixelcnn", p],
            "count": ["--bottleneck", 3, "--bottleneck", 5, "--pixelcnn", p, "--deconv", d],
            "missing": ["--pixelcnn", tmp_path / "nope.pt", "--deconv", d]}[case]
    result = invoke("--out", tmp_path / "out", *QUICK, *args)
    assert result.exit_code == 1
    assert message in str(result.exception)
    assert "Traceback" not in result.output
    assert not (tmp_path / "out").exists()


def test_force_checks_everything_before_it_replaces_anything(quick_run, tmp_path, monkeypatch):
    """Audit: --force deleted the old report before a later check (--unconditional not fitting the
    data) failed, and replaced files under pcae's names that pcae had not written."""
    import shutil

    from pcae.tasks.pixelcnn import PixelCNNSpec
    from pcae.train import TrainConfig, train

    monkeypatch.setenv("PCAE_DATA_BUNDLED", "1")
    out = tmp_path / "report"
    shutil.copytree(quick_run[0], out)
    files = lambda: {p: p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}  # noqa: E731
    before = files()
    small = tmp_path / "small"  # an unconditional PixelCNN of RGB images: does not fit grey data
    train(TrainConfig(out=str(small), steps=1, batch_size=8, image_size=8, image_channels=3, eval_images=8, n_samples=0,
                      judge_images=0), PixelCNNSpec(channels=9, n_layers=1))
    result = invoke("--bottleneck", M, "--out", out, *QUICK, "--unconditional", small / "last.pt", "--force")
    assert result.exit_code == 1 and "does not fit the data" in str(result.exception)
    assert files() == before

    (out / "report.md").write_text("my own write-up\n")
    result = invoke("--bottleneck", M, "--out", out, *QUICK, "--force")
    assert result.exit_code == 1 and "report.md: is not a file pcae wrote" in str(result.exception)
    assert (out / "report.md").read_text() == "my own write-up\n"
    (out / "report.md").write_bytes(before[out / "report.md"])
    (out / "runs" / f"deconv-ae-m{M}" / "train.log").write_text("mine\n")
    result = invoke("--bottleneck", M, "--out", out, *QUICK, "--force")
    assert result.exit_code == 1 and "train.log: is not a file pcae wrote" in str(result.exception)
    assert (out / "report.json").read_bytes() == before[out / "report.json"]
    for path in [out / name for name in ("report.json", "report.md", "summary.png")] + list(out.glob("figure_m*.png")):
        path.unlink()  # as a run that stopped (disk full, killed) before its report leaves it
    result = invoke("--bottleneck", M, "--out", out, *QUICK)
    assert result.exit_code == 1 and "unfinished comparison" in str(result.exception)


def test_force_keeps_the_previous_comparison_until_its_report_is_written(quick_run, tmp_path, monkeypatch):
    """Audit: Ctrl-C or kill -9 during `compare-decoders --force` lost the previous report."""
    import os
    import shutil

    import eval.compare as C
    from pcae.outputs import set_aside

    monkeypatch.setenv("PCAE_DATA_BUNDLED", "1")
    out = tmp_path / "report"
    shutil.copytree(quick_run[0], out)
    files = lambda: {p.relative_to(out): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}  # noqa: E731
    before = files()
    original, calls = C._train_run, []

    def stopped_after_one(*args, **kwargs):  # Ctrl-C while the second model trains
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return original(*args, **kwargs)

    monkeypatch.setattr(C, "_train_run", stopped_after_one)
    with pytest.raises(C.Interrupted, match="holds the comparison --force was replacing"):
        C.compare_decoders(C.CompareConfig(**{**C.QUICK, "out": str(out), "bottlenecks": (M,), "steps": 10,
                                              "eval_images": 48, "probe_images": 128}), force=True)
    assert len(calls) == 2 and files() == before and not list(out.glob(".pcae-replaced.*"))
    monkeypatch.undo()
    monkeypatch.setenv("PCAE_DATA_BUNDLED", "1")

    # killed (SIGKILL) after setting the old comparison aside, with a new run half trained
    moving = [out / name for name in ("report.json", "report.md", "summary.png", f"figure_m{M}.png", "runs")]
    aside = set_aside(out, moving)
    (out / "runs" / "pixelcnn-unconditional").mkdir(parents=True)
    (out / "runs" / "pixelcnn-unconditional" / "train.log").write_text("2026-12-03 10:00:00 new run in x\n")
    os.rename(aside, out / ".pcae-replaced.pid999999999.z")
    result = invoke("--bottleneck", M, "--out", out, *QUICK)
    assert result.exit_code == 1 and "already exists" in str(result.exception)
    assert files() == before and not list(out.glob(".pcae-replaced.*"))

    # a user's file in a run folder would go with the runs: refused before anything moves
    (out / "runs" / f"deconv-ae-m{M}" / "notes.txt").write_text("mine")
    result = invoke("--bottleneck", M, "--out", out, *QUICK, "--force")
    assert result.exit_code == 1 and "notes.txt: is not a file pcae wrote" in str(result.exception)
