"""Users' files keep working: outputs written by pcae of 2026-12-02 (tests/data/v1, made by its
make.sh) load, evaluate, sample, embed and search with today's code. The folder is never
regenerated: these are the old files."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from helpers import run_pcae
from PIL import Image

V1 = Path(__file__).parent / "data" / "v1"


@pytest.fixture
def v1(tmp_path):
    """A copy (commands may recover or write beside their inputs; the originals stay pristine)."""
    shutil.copytree(V1, tmp_path / "v1")
    return tmp_path / "v1"


def ok(result):
    code, out, err = result
    assert code == 0 and "Traceback" not in err, err
    return out, err


def test_old_pixelcnn_checkpoint_evaluates_and_samples(v1, tmp_path, monkeypatch, capsys):
    out, _ = ok(run_pcae(monkeypatch, capsys, "evaluate", v1 / "pixelcnn.pt", "--limit", 32))
    report = json.loads(out)
    assert report["kind"] == "pixelcnn" and report["step"] == 3
    assert 0 < report["bpd"] < 8.5 and len(report["bpd_per_class"]) == 10
    out, _ = ok(run_pcae(monkeypatch, capsys, "sample", v1 / "pixelcnn.pt", "--n", 4,
                         "--out", tmp_path / "s.png"))
    assert Image.open(tmp_path / "s.png").size[0] > 8


def test_old_autoencoder_checkpoint_reconstructs_and_embeds(v1, tmp_path, monkeypatch, capsys):
    out, _ = ok(run_pcae(monkeypatch, capsys, "reconstruct", v1 / "autoencoder.pt", "--n", 2,
                         "--samples", 2, "--judge-images", 0, "--out", tmp_path / "r.png"))
    assert "2 test images of fashion-mnist, each + 2 samples; bpd" in out and (tmp_path / "r.png").is_file()
    out, _ = ok(run_pcae(monkeypatch, capsys, "evaluate", v1 / "autoencoder.pt", "--limit", 16))
    assert json.loads(out)["kind"] == "autoencoder"
    out, _ = ok(run_pcae(monkeypatch, capsys, "embed", "--checkpoint", v1 / "autoencoder.pt",
                         "--limit", 10, "--out", tmp_path / "lat"))
    assert "10 latents (10 train added) of d=4 (conv)" in out


def test_old_latents_folder_searches_by_id_and_image(v1, tmp_path, monkeypatch, capsys):
    folder = v1 / "latents"
    out, _ = ok(run_pcae(monkeypatch, capsys, "search", folder, "id:0", "--json", "-k", 5))
    result = json.loads(out)
    assert len(result["neighbours"]) == 5 and all(n["id"] != 0 for n in result["neighbours"])
    with h5py.File(folder / "latents.h5", "r") as f:
        x = f["latents"][:]
    d = ((x - x[0]) ** 2).sum(1)
    d[0] = np.inf
    assert result["neighbours"][0]["distance"] == pytest.approx(d.min(), rel=1e-4, abs=1e-6)
    # by image: the encoder checkpoint the latents record lived on the machine that made them;
    # the query is refused in one line until --checkpoint says where it is now (sha256 checked)
    from pcae.data import load_dataset
    image = load_dataset("fashion-mnist", "train").images[0, 0].numpy()
    Image.fromarray(image).save(tmp_path / "q.png")
    code, _, err = run_pcae(monkeypatch, capsys, "search", folder, tmp_path / "q.png")
    assert code == 1 and "Traceback" not in err and err.strip().count("\n") == 0, err
    assert "is missing; an image query needs it (pass --checkpoint" in err
    out, _ = ok(run_pcae(monkeypatch, capsys, "search", folder, tmp_path / "q.png", "--json", "-k", 3,
                         "--checkpoint", v1 / "autoencoder.pt"))
    found = json.loads(out)["neighbours"]
    assert found[0]["id"] == 0 and found[0]["distance"] < 1e-4  # the same image, embedded again
    code, _, err = run_pcae(monkeypatch, capsys, "search", folder, tmp_path / "q.png",
                            "--checkpoint", v1 / "pixelcnn.pt")
    assert code == 1 and "is not the checkpoint the latents were made with" in err, err
    out, _ = ok(run_pcae(monkeypatch, capsys, "index", "describe", folder))
    assert "40" in out


def test_old_face_cache_reads_as_data_and_embeddings(v1, monkeypatch, capsys):
    from pcae.data import load_dataset
    from pcae.faces import load_embeddings

    cache = v1 / "faces.h5"
    embeddings = load_embeddings(cache)
    assert embeddings.shape == (4, 512) and torch.isfinite(embeddings).all()
    ds = load_dataset(f"h5:{cache}", "train")
    assert ds.images.shape[1:] == (3, 8, 8) and len(ds) == 3
    out, _ = ok(run_pcae(monkeypatch, capsys, "data", "info", f"h5:{cache}"))
    assert "8" in out
