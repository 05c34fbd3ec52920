"""The card's commands as a user types them, one after another in a fresh folder.

`pcae train-ae --bottleneck 10`, then `pcae embed` (the newest auto-encoder run's checkpoint, the
data it trained on, out latents/), then `pcae search latents id:0`; `pcae portrait photo.jpg --n N`
finds the newest portrait run and writes portraits/photo.png. Only the training budget is cut
(--steps and friends), so the suite stays fast; every other option is the default.
"""
from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import h5py
from helpers import run_pcae

DATA = Path(__file__).parent / "data"
SHORT = ("--steps", 3, "--batch-size", 8, "--eval-images", 32, "--judge-images", 0,
         "--n-samples", 0, "--checkpoint-every", 0)


def one_line_error(code, err, *words):
    """Exit 1 and one error line, the last (a line saying what was chosen may come before it)."""
    lines = err.strip().splitlines()
    assert code == 1 and "Traceback" not in err and lines[-1].startswith("error: "), err
    assert sum(line.startswith("error") for line in lines) == 1 and len(lines) <= 2, err
    for word in words:
        assert word in lines[-1], (word, err)


def test_train_ae_then_embed_then_search_with_no_options(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    code, _, err = run_pcae(monkeypatch, capsys, "embed")
    one_line_error(code, err, "no auto-encoder run under runs/", "pcae train-ae --bottleneck 10")

    code, out, err = run_pcae(monkeypatch, capsys, "train-ae", "--bottleneck", 10, *SHORT)
    assert code == 0, err
    assert (tmp_path / "runs/autoencoder/best.pt").is_file()

    code, out, err = run_pcae(monkeypatch, capsys, "embed")
    assert code == 0, err
    assert "embedding with checkpoint runs/autoencoder/best.pt (the newest auto-encoder run)" in err
    assert "data fashion-mnist (what the run trained on)" in err
    with h5py.File(tmp_path / "latents/latents.h5", "r") as f:
        meta = json.loads(f.attrs["meta"]) if "meta" in f.attrs else dict(f.attrs)
        assert f["latents"].shape == (12000, 10)  # the bundled train and test splits, through the run's encoder
    assert str(meta.get("checkpoint", "")).endswith("runs/autoencoder/best.pt")
    assert "wrote latents: 12000 latents (10000 train + 2000 test added) of d=10 (conv)" in out

    code, out, err = run_pcae(monkeypatch, capsys, "search", "latents", "id:0")
    assert code == 0, err
    rows = [line.split() for line in out.splitlines()[1:]]
    assert len(rows) == 10 and [r[0] for r in rows] == [str(i) for i in range(1, 11)]
    distances = [float(r[2]) for r in rows]
    ids = [int(r[1]) for r in rows]
    assert distances == sorted(distances) and 0 not in ids and all(0 < i < 12000 for i in ids)
    with h5py.File(tmp_path / "latents/latents.h5", "r") as f:  # the nearest, found by brute force
        x = f["latents"][:]
    d = ((x - x[0]) ** 2).sum(1)
    d[0] = float("inf")
    assert abs(distances[0] - d.min()) < 1e-3 * max(1.0, d.min()), (distances[0], d.min())


def test_embed_takes_the_newest_finished_run_and_the_checkpoints_encoder(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    for name, m in (("older", 4), ("newer", 6)):
        code, _, err = run_pcae(monkeypatch, capsys, "train-ae", "--bottleneck", m, *SHORT,
                                "--out", f"runs/{name}")
        assert code == 0, err
        time.sleep(0.05)  # distinct summary.json times
    os.utime(tmp_path / "runs/older/summary.json")  # touched last: now the newest
    (tmp_path / "runs/unfinished").mkdir()  # no summary.json: not a candidate
    (tmp_path / "runs/unfinished/last.pt").write_bytes(b"partial")

    code, out, err = run_pcae(monkeypatch, capsys, "embed", "--limit", 20)
    assert code == 0, err
    assert "runs/older/best.pt" in err and "d=4 (conv)" in out
    # a checkpoint given without --encoder: the encoder it holds
    code, out, err = run_pcae(monkeypatch, capsys, "embed", "--checkpoint", "runs/newer/best.pt",
                              "--limit", 20, "--out", "other")
    assert code == 0, err
    assert "d=6 (conv)" in out and "the newest" not in err
    code, _, err = run_pcae(monkeypatch, capsys, "embed", "--checkpoint", "runs/newer/best.pt",
                            "--encoder", "onehot", "--out", "x")
    one_line_error(code, err, "holds a conv encoder, not onehot")
    code, _, err = run_pcae(monkeypatch, capsys, "embed", "--checkpoint", "runs/nowhere.pt")
    one_line_error(code, err, "runs/nowhere.pt: no such checkpoint file")


def test_portrait_without_a_checkpoint_uses_the_newest_portrait_run(tmp_path, monkeypatch, capsys):
    import pcae.portrait

    monkeypatch.chdir(tmp_path)
    photo = tmp_path / "me.jpg"
    shutil.copy(DATA / "astronaut.jpg", photo)
    shipped = pcae.portrait.SHIPPED_PORTRAIT
    monkeypatch.setattr(pcae.portrait, "SHIPPED_PORTRAIT", tmp_path / "no-shipped-model")
    code, _, err = run_pcae(monkeypatch, capsys, "portrait", photo, "--n", 2)  # no run, no shipped model
    one_line_error(code, err, "no portrait model under runs/", "pcae train-portraits")
    monkeypatch.setattr(pcae.portrait, "SHIPPED_PORTRAIT", shipped)  # a run of one's own comes first

    from test_portrait import make_photos

    photos = make_photos(tmp_path / "photos")
    code, _, err = run_pcae(monkeypatch, capsys, "train-portraits", "--data", f"folder:{photos}",
                            "--image-size", 8, "--facenet-weights", "random", "--facenet-crop-size", 80,
                            "--steps", 2, "--batch-size", 2, "--channels", 6, "--n-layers", 1,
                            "--first-kernel-size", 3, "--n-samples", 0, "--eval-every", 0,
                            "--checkpoint-every", 0)
    assert code == 0, err
    assert (tmp_path / "runs/portraits/summary.json").is_file()

    code, out, err = run_pcae(monkeypatch, capsys, "portrait", photo, "--n", 2)
    assert code == 0, err
    assert out.startswith("model: runs/portraits/best.pt (the newest portrait run under runs/)")
    assert "wrote portraits/me.png" in out and (tmp_path / "portraits/me.png").is_file()
    code, _, err = run_pcae(monkeypatch, capsys, "portrait", photo, "--n", 2)
    one_line_error(code, err, "portraits/me.png: already exists")
