"""The portrait model shipped with pcae (pcae/data/portrait): the card's `pcae portrait photo.jpg`
and `pcae interpolate a.jpg b.jpg` work with no run of one's own, say which model drew, and a
damaged install is one line saying how to mend it."""
import json
import shutil

import pytest
from helpers import run_pcae
from PIL import Image

import pcae.checkpoint
import pcae.portrait
from pcae.data import BUNDLED_FACES, SHIPPED_PORTRAIT

pytestmark = pytest.mark.skipif(not (SHIPPED_PORTRAIT / "model.safetensors").is_file(),
                                reason="no shipped portrait model in this checkout (scripts/train_portrait_model.py)")


@pytest.fixture
def photo(tmp_path):
    """A bundled Yale face, upscaled 3x as a phone would store it larger."""
    image = Image.open(sorted((BUNDLED_FACES / "yale").rglob("*.png"))[0])
    path = tmp_path / "photo.jpg"
    image.resize((image.width * 3, image.height * 3)).convert("RGB").save(path, quality=95)
    return path


def test_the_card_command_draws_with_the_shipped_model_in_an_empty_folder(photo, tmp_path, monkeypatch, capsys):
    work = tmp_path / "empty"
    work.mkdir()
    monkeypatch.chdir(work)
    code, out, err = run_pcae(monkeypatch, capsys, "portrait", photo, "--n", "4", "--samples-out", "drawn",
                              "--out", "grid.png")
    assert code == 0, err
    assert "the model shipped with pcae" in out.splitlines()[0]
    assert "dlib distance to the photo's face" in out and "diversity" in out
    assert sorted(p.name for p in (work / "drawn").iterdir()) == [f"sample_00{k}.png" for k in range(4)] + [
        "scores.json"]
    scores = json.loads((work / "drawn" / "scores.json").read_text())
    assert scores["checkpoint"] == str(SHIPPED_PORTRAIT) and len(scores["dlib"]["distances"]) == 4
    assert Image.open(work / "grid.png").size[0] >= 512


def test_interpolate_needs_no_checkpoint_and_no_out(photo, tmp_path, monkeypatch, capsys):
    other = tmp_path / "other.png"
    shutil.copy(sorted((BUNDLED_FACES / "yale").rglob("*.png"))[-1], other)
    monkeypatch.chdir(tmp_path)
    code, out, err = run_pcae(monkeypatch, capsys, "interpolate", photo, other, "--steps", "3")
    assert code == 0, err
    assert "shipped with pcae" in out and (tmp_path / "portraits" / "photo-other.png").is_file()


@pytest.mark.parametrize("damage", ["truncated weights", "config not JSON", "weights missing"])
def test_a_damaged_shipped_model_is_one_line_saying_to_reinstall(photo, tmp_path, monkeypatch, capsys, damage):
    copy = tmp_path / "portrait"
    shutil.copytree(SHIPPED_PORTRAIT, copy)
    weights, config = copy / "model.safetensors", copy / "config.json"
    if damage == "truncated weights":
        weights.write_bytes(weights.read_bytes()[:1000])
    elif damage == "config not JSON":
        config.write_text(config.read_text()[:500])
    else:
        weights.unlink()
    monkeypatch.setattr(pcae.checkpoint, "SHIPPED_PORTRAIT", copy)
    monkeypatch.setattr(pcae.portrait, "SHIPPED_PORTRAIT", copy)
    monkeypatch.chdir(tmp_path)
    code, out, err = run_pcae(monkeypatch, capsys, "portrait", photo, "--n", "2")
    assert code == 1
    line = err.strip()
    assert "\n" not in line and "reinstall pcae" in line
    assert ("config.json" if damage == "config not JSON" else "model.safetensors") in line
    assert not (tmp_path / "portraits").exists()
