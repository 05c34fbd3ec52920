"""Portraits drawn with guidance: train-portraits --h-drop teaches the decoder p(face | h = 0) too,
and a portrait model draws at its own temperature and guidance (its config's) unless told.

FaceNet runs with random weights, as in test_portrait.py (whose photos this file reuses)."""
from __future__ import annotations

import pytest
import torch
from helpers import run_pcae
from test_portrait import CROP, S, make_photos

from pcae.checkpoint import load_checkpoint


@pytest.fixture(scope="module")
def run(tmp_path_factory, one_thread):
    """A 2-step portrait run with --h-drop 0.5; (photos folder, run folder)."""
    from typer.testing import CliRunner

    from pcae.cli import app

    tmp = tmp_path_factory.mktemp("guided")
    photos = make_photos(tmp / "photos")
    out = tmp / "run"
    result = CliRunner().invoke(app, [
        "train-portraits", "--data", f"folder:{photos}", "--out", str(out), "--cache", str(tmp / "faces.h5"),
        "--image-size", str(S), "--facenet-weights", "random", "--facenet-crop-size", str(CROP),
        "--steps", "2", "--batch-size", "2", "--channels", "6", "--n-layers", "1", "--first-kernel-size", "3",
        "--n-samples", "2", "--eval-every", "0", "--checkpoint-every", "0", "--h-drop", "0.5"])
    assert result.exit_code == 0, (result.output, result.exception)
    return photos, out


def test_h_drop_is_stored_and_zeroes_h_for_that_share_of_the_faces(run, monkeypatch):
    from pcae.tasks.portrait import PortraitTask

    checkpoint = load_checkpoint(run[1] / "last.pt")
    recipe = checkpoint["configs"]["portrait"]
    assert recipe["h_drop"] == 0.5
    assert recipe["sampling"] == {"temperature": 1.0, "guidance": 0.0}
    task = PortraitTask.from_checkpoint(checkpoint)
    assert task.h_drop == 0.5
    seen = []
    monkeypatch.setattr(task.model, "forward_float", lambda x, h: seen.append(h) or torch.zeros(
        len(x), task.config.levels, *x.shape[1:], requires_grad=True))
    rows = torch.zeros(400, dtype=torch.long)  # the first cached face, 400 times
    C, H, W = task.config.image_channels, *task.config.image_size
    torch.manual_seed(0)
    task.loss(torch.zeros(len(rows), C, H, W, dtype=torch.long), rows)
    zero = (seen[0] == 0).all(dim=1)
    assert 0.4 < zero.float().mean() < 0.6, "about h_drop of the faces get h = 0"
    assert not (seen[0][~zero] == 0).any(dim=1).all(), "the other faces keep their h"
    task.h_drop = 0.0
    task.loss(torch.zeros(len(rows), C, H, W, dtype=torch.long), rows)
    assert not (seen[1] == 0).all(dim=1).any()


def test_portraits_are_drawn_with_the_models_sampling_unless_told(run):
    from pcae.portrait import draw_portraits, load_portrait

    photos, out = run
    model = load_portrait(out / "last.pt")
    assert model.sampling == {"temperature": 1.0, "guidance": 0.0}
    photo = photos / "astronaut.jpg"
    model.sampling = {"temperature": 0.0, "guidance": 2.0}
    by_model = draw_portraits(model, photo, 2)
    assert (by_model.temperature, by_model.guidance) == (0.0, 2.0)
    told = draw_portraits(model, photo, 2, temperature=0.0, guidance=2.0)
    assert torch.equal(by_model.samples, told.samples)
    unguided = draw_portraits(model, photo, 2, guidance=0.0)
    assert unguided.guidance == 0.0 and unguided.temperature == 0.0
    assert not torch.equal(unguided.samples, told.samples), "guidance 2 changed no pixel"


def test_portrait_cli_takes_guidance_and_refuses_a_bad_one(run, monkeypatch, capsys, tmp_path):
    photos, out = run
    code, text, err = run_pcae(monkeypatch, capsys, "portrait", photos / "camera.jpg", "--n", 2, "--checkpoint",
                               out / "last.pt", "--out", tmp_path / "grid.png", "--guidance", "1.5")
    assert code == 0, err
    assert "temperature 1, guidance 1.5)" in text
    code, _, err = run_pcae(monkeypatch, capsys, "portrait", photos / "camera.jpg", "--checkpoint", out / "last.pt",
                            "--out", tmp_path / "bad.png", "--guidance", "-1")
    assert code == 2 and "--guidance" in err and "guidance must be finite and >= 0" in err
    assert not (tmp_path / "bad.png").exists()


@pytest.mark.parametrize("bad", ["1", "-0.1"])
def test_train_portraits_refuses_an_h_drop_outside_0_to_1(bad, monkeypatch, capsys, tmp_path):
    code, _, err = run_pcae(monkeypatch, capsys, "train-portraits", "--out", tmp_path / "run", "--h-drop", bad)
    assert code == 2 and "--h-drop" in err
    assert not (tmp_path / "run").exists()
