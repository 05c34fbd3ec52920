"""Portraits: face cache, train-portraits, portrait and interpolate, end to end on the bundled photos.

FaceNet runs with (seeded) random weights and 80x80 crops, the PixelCNN is tiny and works at 8x8;
FaceNet forwards (~0.2 s of CPU per crop) dominate, so the tests embed as few crops as they can. One training run (module fixture) serves every
test that needs a checkpoint.
"""
from __future__ import annotations

import json
import os
import re
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from helpers import grid_px, run_pcae
from PIL import Image, ImageOps
from typer.testing import CliRunner

from pcae.checkpoint import load_checkpoint, save_checkpoint
from pcae.cli import app

DATA = Path(__file__).parent / "data"
S, CROP = 8, 80  # PixelCNN image side, FaceNet crop side (InceptionResnetV1 needs >= 75)


def shrink(image: Image.Image, side: int = 128) -> Image.Image:
    scale = side / max(image.size)
    return image.resize((round(image.width * scale), round(image.height * scale)), Image.BILINEAR)


def make_photos(folder: Path) -> Path:
    """6 face photos (astronaut, camera, their mirror images and crops), 1 without a face, 1 junk.

    At 128 px (longest side) MTCNN still finds both faces and runs ~2x faster than at 192.
    """
    folder.mkdir(parents=True)
    a, c, coffee = (shrink(Image.open(DATA / f"{name}.jpg")) for name in ("astronaut", "camera", "coffee"))
    photos = {"astronaut": a, "camera": c, "astronaut_flip": ImageOps.mirror(a),
              "camera_flip": ImageOps.mirror(c), "astronaut_crop": a.crop((20, 0, a.width, a.height - 20)),
              "camera_crop": c.crop((0, 0, c.width - 20, c.height - 10))}
    for name, image in photos.items():
        image.save(folder / f"{name}.jpg")
    coffee.save(folder / "coffee.jpg")
    (folder / "broken.jpg").write_text("not an image")
    return folder


@pytest.fixture(scope="module")
def run(tmp_path_factory, one_thread):
    """train-portraits on the photos for 3 steps; (folder, run folder, cache, CLI output)."""
    tmp = tmp_path_factory.mktemp("portraits")
    photos = make_photos(tmp / "photos")
    out, cache = tmp / "run", tmp / "faces.h5"
    result = CliRunner().invoke(app, [
        "train-portraits", "--data", f"folder:{photos}", "--out", str(out), "--cache", str(cache),
        "--image-size", str(S), "--facenet-weights", "random", "--facenet-crop-size", str(CROP),
        "--steps", "3", "--batch-size", "2", "--channels", "6", "--n-layers", "1",
        "--first-kernel-size", "3", "--n-samples", "2", "--eval-every", "0", "--checkpoint-every", "0"])
    assert result.exit_code == 0, (result.output, result.exception)
    return photos, out, cache, result.output


@pytest.fixture(scope="module")
def model(run):
    from pcae.portrait import load_portrait
    return load_portrait(run[1] / "last.pt")


@pytest.fixture(scope="module")
def facenet():
    from pcae.faces import build_facenet
    return build_facenet("random", CROP)


# ----------------------------------------------------------------------------- train-portraits

def test_train_portraits_counts_faces_and_writes_a_portrait_run(run):
    photos, out, cache, output = run
    assert "faces: 6 in 8 photos (5 train, 1 test), 2 skipped" in output
    assert re.search(r"skipped coffee\.jpg: no face \(best probability 0\.\d{3}\)", output)
    assert "skipped broken.jpg: unreadable" in output
    assert "FaceNet weights are random (NOT pretrained)" in output
    for name in ("last.pt", "best.pt", "samples.png", "summary.json", "train.log"):
        assert (out / name).exists(), name
    assert "coffee.jpg" in (out / "train.log").read_text()  # skipped files are named in the log

    ckpt = load_checkpoint(out / "last.pt", kind="portrait")
    assert ckpt["configs"]["facenet"] == {"name": "facenet", "weights": "random", "image_size": CROP,
                                          "margin": 0, "min_face_size": 20}
    assert ckpt["configs"]["facenet_preprocessing"]["random_weights"] is True
    assert ckpt["configs"]["model"]["cond_dim"] == 512 and ckpt["configs"]["model"]["image_channels"] == 3
    assert "last_linear.weight" in "".join(ckpt["state_dicts"]["facenet"])  # FaceNet travels along
    summary = json.loads((out / "summary.json").read_text())
    assert summary["kind"] == "portrait" and np.isfinite(summary["final_test_bpd"])
    assert summary["test_images"] == 1
    # the training grid: 1 test face, then 2 portraits of it
    samples = Image.open(out / "samples.png")
    assert samples.size == grid_px(3 * (S + 2) + 2, S + 4, gap=8)  # a face | 2 portraits
    assert len(json.loads(samples.text["rows"])) == 1  # the test face's person


def test_train_portraits_resumes(run, tmp_path):
    import shutil

    out = tmp_path / "run"
    shutil.copytree(run[1], out)
    result = CliRunner().invoke(app, ["train-portraits", "--resume", "--out", str(out), "--steps", "4"])
    assert result.exit_code == 0, (result.output, result.exception)
    ckpt = load_checkpoint(out / "last.pt", kind="portrait")
    assert ckpt["step"] == 4 and ckpt["configs"]["faces"]["cache"] == str(run[2])
    before = load_checkpoint(run[1] / "last.pt")["state_dicts"]
    assert all(torch.equal(v, ckpt["state_dicts"]["facenet"][k]) for k, v in before["facenet"].items())
    assert not all(torch.equal(v, ckpt["state_dicts"]["model"][k]) for k, v in before["model"].items())


def test_face_cache_layout(run, facenet):
    from pcae.faces import weights_fingerprint

    _, _, cache, _ = run
    with h5py.File(cache, "r") as f:
        assert f["images"].shape == (6, 3, S, S) and f["images"].dtype == np.uint8
        assert f["crops"].shape == (6, 3, CROP, CROP)
        assert list(f["labels"][:]) == list(range(6))
        assert sorted(f["files"].asstr()[:]) == sorted(
            f"{n}{s}.jpg" for n in ("astronaut", "camera") for s in ("", "_flip", "_crop"))
        assert f.attrs["random_weights"] and f.attrs["image_size"] == S
        # astronaut.jpg falls in test by pcae.data's path-hash rule
        assert [n for n, s in zip(f["files"].asstr()[:], f["split"][:]) if s] == ["astronaut.jpg"]
        emb = torch.from_numpy(f["embeddings"][:])
        assert torch.allclose(emb.norm(dim=1), torch.ones(6), atol=1e-4)
        # the embeddings are FaceNet's of the stored crops, by weights the seed reproduces
        assert f.attrs["weights_fingerprint"] == weights_fingerprint(facenet)
        assert torch.allclose(facenet(torch.from_numpy(f["crops"][:1])), emb[:1], atol=1e-5)


def test_face_cache_is_reused_without_detecting_again(run, facenet, monkeypatch, tmp_path):
    from encoders.facenet import FaceNetEncoder
    from pcae.faces import prepare_faces

    photos, _, cache, _ = run
    copy = tmp_path / "faces.h5"
    copy.write_bytes(cache.read_bytes())
    before = copy.stat().st_mtime_ns

    def no_detection(*args, **kwargs):
        raise AssertionError("detection ran again")
    monkeypatch.setattr(FaceNetEncoder, "detect", no_detection)

    info = prepare_faces(f"folder:{photos}", copy, facenet, S)
    assert info["reused"] == "all" and info["faces"] == 6 and len(info["skipped"]) == 2
    assert copy.stat().st_mtime_ns == before  # not even rewritten

    with h5py.File(copy, "r") as f:
        emb_before = f["embeddings"][:]
    info = prepare_faces(f"folder:{photos}", copy, facenet, 4)  # another size: from the stored crops
    assert info["reused"] == "detections" and info["image_size"] == 4
    with h5py.File(copy, "r") as f:
        assert f["images"].shape == (6, 3, 4, 4)
        assert np.array_equal(f["embeddings"][:], emb_before)


def test_face_cache_is_redone_when_the_photos_change(run, facenet, tmp_path):
    from pcae.errors import PcaeError
    from pcae.faces import load_embeddings, prepare_faces

    photos, _, cache, _ = run
    with h5py.File(cache, "r") as f:
        listing = f.attrs["listing"]
    # the same folder with a photo fewer: the cache is redone from its photos
    folder = tmp_path / "photos"
    folder.mkdir()
    for p in photos.iterdir():
        (folder / p.name).write_bytes(p.read_bytes())
    first = tmp_path / "first.h5"
    prepare_faces(f"folder:{folder}", first, facenet, S)
    with h5py.File(first, "r") as f:
        listing = f.attrs["listing"]
    for p in folder.iterdir():  # the same photos with other times (a copy without them): reused
        os.utime(p, ns=(10**18, 10**18))
    assert prepare_faces(f"folder:{folder}", first, facenet, S)["reused"] == "all"
    data = bytearray((folder / "camera_flip.jpg").read_bytes())  # another photo of the same size: redone
    data[-100] ^= 0xFF
    (folder / "camera_flip.jpg").write_bytes(bytes(data))
    assert prepare_faces(f"folder:{folder}", first, facenet, S)["reused"] == "none"
    with h5py.File(first, "r") as f:
        listing = f.attrs["listing"]
    (folder / "camera_crop.jpg").unlink()
    info = prepare_faces(f"folder:{folder}", first, facenet, S)
    assert info["reused"] == "none" and info["photos"] == len(list(photos.iterdir())) - 1
    with pytest.raises(PcaeError, match="rebuilt from other photos"):  # a run on the old cache stops
        load_embeddings(first, listing=listing)
    # another folder never touches a cache built from this one (issue 17: it was rebuilt)
    other = tmp_path / "other"
    other.mkdir()
    (other / "camera.jpg").write_bytes((photos / "camera.jpg").read_bytes())
    copy = tmp_path / "faces.h5"
    copy.write_bytes(cache.read_bytes())
    with pytest.raises(PcaeError, match=r"faces.h5: holds the faces of .*photos, not of .*other; give "
                                        r"this source its own --cache"):
        prepare_faces(f"folder:{other}", copy, facenet, S)
    assert copy.read_bytes() == cache.read_bytes()


def test_faces_from_an_hdf5_images_file(facenet, tmp_path):
    from pcae.faces import prepare_faces

    a, c = (np.asarray(shrink(Image.open(DATA / f"{n}.jpg").convert("RGB")).resize((128, 128)))
            for n in ("astronaut", "camera"))
    images = tmp_path / "photos.h5"
    with h5py.File(images, "w") as f:
        f["images"] = np.stack([a, np.zeros_like(a), c]).transpose(0, 3, 1, 2)  # row 1: no face
        f["split"] = np.array([0, 0, 1], np.uint8)
    info = prepare_faces(f"h5:{images}", tmp_path / "faces.h5", facenet, S)
    assert (info["photos"], info["faces"], info["train"], info["test"]) == (3, 2, 1, 1)
    assert [s["file"] for s in info["skipped"]] == ["photos.h5[1]"]


def test_facenet_weights_file_and_missing_pretrained_weights(run, facenet, tmp_path, monkeypatch, capsys):
    from pcae.faces import build_facenet, prepare_faces

    photos, _, cache, _ = run
    # a weights FILE holding the same weights: embeddings are reused, the cache now names the file
    weights = tmp_path / "facenet.pt"
    torch.save(facenet.net.state_dict(), weights)
    copy = tmp_path / "faces.h5"
    copy.write_bytes(cache.read_bytes())
    info = prepare_faces(f"folder:{photos}", copy, build_facenet(str(weights), CROP), S)
    assert info["reused"] == "detections" and not info["random_weights"]
    assert info["facenet"]["weights"] == str(weights.resolve())

    # vggface2 without the file in TORCH_HOME: one line saying where to put it, before any detection
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    code, out, err = run_pcae(monkeypatch, capsys, "train-portraits", "--data", f"folder:{photos}",
                              "--out", tmp_path / "run", "--cache", tmp_path / "c.h5", "--encoder", "facenet")
    assert code == 1 and "Traceback" not in err
    assert err.strip().count("\n") == 0
    assert str(tmp_path / "torch" / "checkpoints" / "20180402-114759-vggface2.pt") in err


def test_train_portraits_refuses_bad_sources(run, monkeypatch, capsys, tmp_path):
    photos = run[0]
    for data, message in [("fashion-mnist", "portraits need photos: faces (the bundled ones), folder:PATH or h5:PATH"),
                          (f"folder:{tmp_path / 'nope'}", "not a folder")]:
        code, out, err = run_pcae(monkeypatch, capsys, "train-portraits", "--data", data, "--out",
                                  tmp_path / "r", "--facenet-weights", "random",
                                  "--facenet-crop-size", CROP, "--cache", tmp_path / "c.h5")
        assert code == 1 and message in err and err.strip().count("\n") == 0, err
    # no face in any photo
    empty = tmp_path / "noface"
    empty.mkdir()
    (empty / "coffee.jpg").write_bytes((photos / "coffee.jpg").read_bytes())
    code, out, err = run_pcae(monkeypatch, capsys, "train-portraits", "--data", f"folder:{empty}",
                              "--out", tmp_path / "r", "--facenet-weights", "random",
                              "--facenet-crop-size", CROP, "--cache", tmp_path / "c.h5")
    assert code == 1 and "no face found in any of its 1 photos" in err
    assert not (tmp_path / "c.h5").exists()
    # bad model options are refused before training (colour faces, known once detected, need
    # channels divisible by 3) and an existing run folder before any detection
    code, out, err = run_pcae(monkeypatch, capsys, "train-portraits", "--data", f"folder:{photos}",
                              "--out", tmp_path / "r2", "--facenet-weights", "random", "--channels", 32,
                              "--facenet-crop-size", CROP, "--cache", run[2], "--image-size", S)
    assert code == 1 and "channels must be divisible by image_channels=3" in err
    assert not (tmp_path / "r2").exists()
    code, out, err = run_pcae(monkeypatch, capsys, "train-portraits", "--data", f"folder:{photos}",
                              "--out", run[1], "--facenet-weights", "random")
    assert code == 1 and "already exists" in err


# ----------------------------------------------------------------------------- portrait

def test_portrait_end_to_end(run, tmp_path):
    _, out, _, _ = run
    grid, samples = tmp_path / "grid.png", tmp_path / "samples.h5"
    result = CliRunner().invoke(app, ["portrait", str(DATA / "astronaut.jpg"), "--n", "4",
                                      "--checkpoint", str(out / "last.pt"), "--out", str(grid),
                                      "--samples-out", str(samples), "--seed", "3"])
    assert result.exit_code == 0, (result.output, result.exception)
    text = result.output
    assert "4 portraits of 8x8" in text
    # photos without person folders: no people, so no identity judge, and it says so
    assert "identity judge: none in this checkpoint" in text
    rms = re.search(r"diversity: pixel RMS between portraits mean ([\d.]+), smallest ([\d.]+) levels; "
                    r"(\d+) of 6 pairs are near-copies", text)
    assert rms and 0 < float(rms.group(2)) <= float(rms.group(1)) <= 255, text
    assert "warning: FaceNet weights are random (NOT pretrained)" in text
    # dlib (a dependency of pcae) measures distance, pose and lighting of any model's portraits
    import importlib.util
    if importlib.util.find_spec("dlib") and importlib.util.find_spec("face_recognition_models"):
        judged = re.search(r"dlib distance to the photo's face: mean ([\d.]+), (\d+)% under 0.6 \(the same "
                           r"person\); the photo at \d+x\d+: ([\d.]+)", text)
        assert judged, text
        assert 0 < float(judged.group(1)) < 2 and 0 <= int(judged.group(2)) <= 100
        assert "pose and lighting, portraits (4): yaw" in text

    image = Image.open(grid)
    assert image.size == grid_px(3 * (S + 2) + 2, 2 * (S + 2) + 2, gap=8)  # the crop | 2 x 2 portraits
    assert image.text["random_weights"] == "true" and "random" in image.text["note"]
    with h5py.File(samples, "r") as f:
        assert f["images"].shape == (4, 3, S, S) and f["source"].shape == (1, 3, S, S)
        assert f.attrs["random_weights"] and f.attrs["n"] == 4
        assert json.loads(f.attrs["diversity"])["rms_min"] == pytest.approx(float(rms.group(2)), abs=0.06)
        if f.attrs["dlib"] != "null":
            assert len(json.loads(f.attrs["dlib"])["distances"]) == 4
        source, first = f["source"][0], f["images"][0]
    k = (image.size[0] - 8) // (3 * (S + 2) + 2)  # the grid's upscaling: every pixel a k x k square
    gutter = np.arange(k * (S + 4), k * (S + 4) + 8)  # the 8 white columns after the source
    tiles = np.delete(np.asarray(image), gutter, axis=1).transpose(2, 0, 1)[:, ::k, ::k]
    assert np.array_equal(tiles[:, 2:2 + S, 2:2 + S], source)  # the source crop comes first
    assert np.array_equal(tiles[:, 2:2 + S, S + 4:2 * S + 4], first)

    # outputs are not overwritten without --force
    again = CliRunner().invoke(app, ["portrait", str(DATA / "astronaut.jpg"), "--checkpoint",
                                     str(out / "last.pt"), "--out", str(grid)])
    assert again.exit_code == 1 and "already exists" in str(again.exception)


def test_samples_folder_replaced_with_fewer_portraits_holds_only_the_new_set(run, tmp_path):
    """Audit: --samples-out DIR --force with a smaller --n left the older set's extra PNGs beside
    the new scores.json."""
    _, out, _, _ = run
    folder = tmp_path / "set"
    for n in (3, 2):  # --force on the first run too: nothing there yet, so it changes nothing
        result = CliRunner().invoke(app, ["portrait", str(DATA / "astronaut.jpg"), "--n", str(n),
                                          "--checkpoint", str(out / "last.pt"), "--out", str(tmp_path / "g.png"),
                                          "--samples-out", str(folder), "--force"])
        assert result.exit_code == 0, (result.output, result.exception)
        assert sorted(p.name for p in folder.iterdir()) == [f"sample_{k:03d}.png" for k in range(n)] + ["scores.json"]
        assert json.loads((folder / "scores.json").read_text())["n"] == n


def test_draw_portraits_scores(model):
    from eval.faces import NEAR_COPY_RMS, diversity
    from pcae.portrait import draw_portraits

    a = draw_portraits(model, DATA / "camera.jpg", 3, seed=1)
    assert a.samples.shape == (3, 3, S, S) and a.samples.dtype == torch.uint8
    assert a.grid.shape == (4, 3, S, S) and torch.equal(a.grid[0], a.source[0])
    assert a.random_weights and a.facenet_weights == "random" and a.sampler == "cached"
    assert a.faces_found == 1 and a.face_index == 0
    x = a.samples.flatten(1).double()
    pairs = [((x[i] - x[j]).pow(2).mean().sqrt().item()) for i in range(3) for j in range(i + 1, 3)]
    d = a.scores["diversity"]
    assert d["rms_mean"] == pytest.approx(np.mean(pairs)) and d["rms_min"] == pytest.approx(min(pairs))
    assert d["pairs"] == 3 and d["near_copies"] == sum(p < NEAR_COPY_RMS for p in pairs)
    assert a.scores["person"] is None and a.scores["identity"] is None  # no people in its photos
    same = a.samples[:1].expand(3, -1, -1, -1)  # three copies of one portrait: three near-copies
    assert diversity(same)["near_copies"] == 3 and diversity(a.samples[:1])["rms_min"] is None
    with pytest.raises(ValueError, match="n must be >= 1, got 0"):
        draw_portraits(model, DATA / "camera.jpg", 0)


def test_portrait_errors_are_one_line(run, monkeypatch, capsys, tmp_path):
    _, out, _, _ = run
    ckpt = out / "last.pt"
    other = tmp_path / "pixelcnn.pt"
    save_checkpoint({"kind": "pixelcnn", "configs": {}, "state_dicts": {}}, other)
    junk = tmp_path / "notes.jpg"
    junk.write_text("not an image")
    cases = [
        ((DATA / "coffee.jpg", "--checkpoint", ckpt),
         rf"no face found in {re.escape(str(DATA / 'coffee.jpg'))} \(best probability 0\.\d{{3}}\)"),
        ((junk, "--checkpoint", ckpt), rf"{re.escape(str(junk))} is not a readable image"),
        ((tmp_path / "missing.jpg", "--checkpoint", ckpt), "missing.jpg does not exist"),
        ((DATA / "astronaut.jpg", "--checkpoint", other), "is a 'pixelcnn' checkpoint, expected 'portrait'"),
        ((DATA / "astronaut.jpg", "--checkpoint", junk), "not a pcae checkpoint"),
        ((DATA / "astronaut.jpg", "--checkpoint", ckpt, "--n", 0), "--n must be >= 1, got 0"),
    ]
    for args, pattern in cases:
        code, _, err = run_pcae(monkeypatch, capsys, "portrait", *args, "--out", tmp_path / "g.png")
        assert code == 1, (args, err)
        assert "Traceback" not in err and err.strip().count("\n") == 0, err
        assert re.search(pattern, err), (pattern, err)
    assert not (tmp_path / "g.png").exists()


# ----------------------------------------------------------------------------- interpolate

def test_interpolate_keeps_the_noise_along_a_row(model):
    from pcae.portrait import interpolate

    same = interpolate(model, DATA / "camera.jpg", DATA / "camera.jpg", 3, rows=2, seed=5)
    grid = same.images.view(2, 5, 3, S, S)
    for r in range(2):  # same embedding and same noise at every step: identical portraits
        assert all(torch.equal(grid[r, 1], grid[r, k]) for k in (2, 3))
    assert not torch.equal(grid[0, 1], grid[1, 1])  # rows differ in their noise
    assert same.distance == pytest.approx(0.0, abs=1e-5) and same.weights == [0.0, 0.5, 1.0]


def test_interpolate_cli(run, tmp_path, monkeypatch, capsys):
    _, out, _, _ = run
    grid = tmp_path / "morph.png"
    code, text, err = run_pcae(monkeypatch, capsys, "interpolate", DATA / "astronaut.jpg",
                               DATA / "camera.jpg", "--steps", 2, "--checkpoint", out / "last.pt",
                               "--out", grid)
    assert code == 0, err
    assert "embedding distance between the two faces" in text and "random (NOT pretrained)" in text
    assert Image.open(grid).size == grid_px(4 * (S + 2) + 2, S + 4)
    code, _, err = run_pcae(monkeypatch, capsys, "interpolate", DATA / "astronaut.jpg",
                            DATA / "coffee.jpg", "--checkpoint", out / "last.pt",
                            "--out", tmp_path / "x.png", "--steps", 1)
    assert code == 1 and "--steps must be in [2, 64]" in err and "got 1" in err
    code, _, err = run_pcae(monkeypatch, capsys, "interpolate", DATA / "astronaut.jpg",
                            DATA / "coffee.jpg", "--checkpoint", out / "last.pt",
                            "--out", tmp_path / "x.png", "--steps", 100000)
    assert code == 1 and "--steps must be in [2, 64]" in err and not (tmp_path / "x.png").exists()


# ----------------------------------------------------------------------------- dlib-conditioned portraits

def test_portraits_conditioned_on_dlib(tmp_path, monkeypatch, capsys):
    """train-portraits --encoder dlib (pretrained, offline): dlib's detector and 128-d descriptors
    make the face cache, the checkpoint records dlib's model, portrait and interpolate draw from it."""
    import importlib.util

    pytest.importorskip("dlib")
    if importlib.util.find_spec("face_recognition_models") is None:
        pytest.skip("face-recognition-models is not installed")
    from PIL import ImageEnhance

    photos = tmp_path / "photos"
    photos.mkdir()
    a = Image.open(DATA / "astronaut.jpg").convert("RGB")
    for name, image in {"a": a, "a_flip": ImageOps.mirror(a), "a_dark": ImageEnhance.Brightness(a).enhance(0.6),
                        "a_tilt": a.rotate(8), "a_big": a.resize((288, 288))}.items():
        image.save(photos / f"{name}.jpg")
    (photos / "coffee.jpg").write_bytes((DATA / "coffee.jpg").read_bytes())  # no face: skipped
    out, cache = tmp_path / "run", tmp_path / "faces.h5"
    common = ["train-portraits", "--data", f"folder:{photos}", "--cache", cache, "--image-size", S,
              "--steps", 2, "--batch-size", 2, "--channels", 6, "--n-layers", 1, "--first-kernel-size", 3,
              "--n-samples", 0, "--eval-every", 0, "--checkpoint-every", 0, "--judge-images", 0]
    code, _, err = run_pcae(monkeypatch, capsys, *common, "--encoder", "dlib", "--facenet-weights", "random",
                            "--out", tmp_path / "bad")
    assert code == 1 and "--facenet-weights and --facenet-crop-size go with --encoder facenet, not dlib" in err
    code, text, err = run_pcae(monkeypatch, capsys, *common, "--encoder", "dlib", "--out", out)
    assert code == 0, err
    assert "faces: 5 in 6 photos" in text and "skipped coffee.jpg" in text
    assert "face encoder: dlib's pretrained ResNet" in text and "random" not in text
    assert "identity judge" not in text  # one person, no person folders: nobody to tell apart
    with h5py.File(cache, "r") as f:
        assert f["embeddings"].shape == (5, 128) and f["crops"].shape[1:] == (3, 150, 150)
        assert json.loads(f.attrs["facenet"])["name"] == "dlib" and not f.attrs["random_weights"]
    ck = load_checkpoint(out / "last.pt")
    assert ck["kind"] == "portrait" and ck["configs"]["facenet"]["name"] == "dlib"
    assert ck["configs"]["model"]["cond_dim"] == 128

    code, text, err = run_pcae(monkeypatch, capsys, "portrait", DATA / "astronaut.jpg", "--n", 3,
                               "--checkpoint", out / "last.pt", "--out", tmp_path / "g.png")
    assert code == 0, err
    assert "3 portraits of 8x8" in text and "pose and lighting, portraits (3)" in text
    assert "dlib distance to the photo's face: mean" in text
    code, text, err = run_pcae(monkeypatch, capsys, "interpolate", DATA / "astronaut.jpg",
                               photos / "a_flip.jpg", "--steps", 3, "--checkpoint", out / "last.pt",
                               "--out", tmp_path / "m.png")
    assert code == 0, err
    # train-ae --encoder dlib is the same pipeline
    code, text, err = run_pcae(monkeypatch, capsys, "train-ae", "--encoder", "dlib", "--data",
                               f"folder:{photos}", "--cache", cache, "--image-size", S, "--steps", 1,
                               "--batch-size", 2, "--channels", 6, "--n-layers", 1, "--n-samples", 0,
                               "--eval-every", 0, "--judge-images", 0, "--out", tmp_path / "ae")
    assert code == 0, err
    assert load_checkpoint(tmp_path / "ae/last.pt")["configs"]["facenet"]["name"] == "dlib"


def test_python_train_with_the_portrait_spec_is_the_same_job(run, tmp_path):
    """train(config, PortraitSpec(...)): the spec's prepare step finds the faces (here: the fixture's
    cache, reused) and points the data at the cache; a resume with other model options is refused."""
    from pcae.errors import PcaeError
    from pcae.portrait import PortraitSpec
    from pcae.train import TrainConfig, train

    photos, _, cache, _ = run
    events = []
    spec = PortraitSpec(facenet_weights="random", facenet_crop_size=CROP, cache=str(cache), channels=6,
                        n_layers=1, first_kernel_size=3)
    out = tmp_path / "run"
    config = TrainConfig(data=f"folder:{photos}", out=str(out), image_size=S, steps=1, batch_size=2,
                         n_samples=2, eval_every=0, checkpoint_every=0, judge_images=0)
    result = train(config, spec, callback=lambda event, info: events.append((event, info)))
    assert result.status == "finished"
    prepared = [info for event, info in events if event == "prepared"]
    assert len(prepared) == 1 and prepared[0]["reused"] == "all" and prepared[0]["faces"] == 6
    stored = load_checkpoint(out / "last.pt", kind="portrait")["configs"]
    assert stored["train"]["data"] == f"h5:{cache}" and stored["train"]["image_size"] == S
    with pytest.raises(PcaeError, match=r"--channels 12 conflicts with the run being resumed \(6\)"):
        train(TrainConfig(out=str(out), steps=2), PortraitSpec(channels=12), resume=True)
    # the same cache given again (another spelling of its path) is no conflict, nor are the photos
    relative = Path(__import__("os").path.relpath(cache))
    train(TrainConfig(out=str(out), steps=2, data=f"folder:{photos}"), PortraitSpec(cache=str(relative)),
          resume=True)
    assert load_checkpoint(out / "last.pt")["step"] == 2


def test_default_caches_are_one_per_set_of_options_and_share_detections(run, tmp_path, monkeypatch):
    """Another --image-size writes a cache of its own (a run on the first keeps its data), made
    from the first's crops without detecting again."""
    import hashlib

    from pcae.portrait import PortraitSpec
    from pcae.train import TrainConfig

    monkeypatch.setenv("PCAE_CACHE_DIR", str(tmp_path / "cache"))
    photos = run[0]
    spec = PortraitSpec(facenet_weights="random", facenet_crop_size=CROP, channels=6, n_layers=1)
    config = TrainConfig(data=f"folder:{photos}", out=str(tmp_path / "r"), image_size=S)
    _, _, first = spec.prepare(config)
    digest = hashlib.sha256(Path(first["cache"]).read_bytes()).hexdigest()
    _, _, again = spec.prepare(config)
    assert again["cache"] == first["cache"] and again["reused"] == "all"
    _, _, other = spec.prepare(TrainConfig(data=f"folder:{photos}", out=str(tmp_path / "r"), image_size=S + 4))
    assert other["cache"] != first["cache"] and other["reused"] == "detections"
    assert other["faces"] == first["faces"] and other["image_size"] == S + 4
    assert hashlib.sha256(Path(first["cache"]).read_bytes()).hexdigest() == digest  # untouched


# ----------------------------------------------------------------------------- real faces, people

PEOPLE = ("orl/s03", "orl/s04", "yale/subject02", "yale/subject03")


@pytest.fixture(scope="module")
def people_run(tmp_path_factory, one_thread):
    """train-portraits --encoder dlib on 4 people x 3 real photos of the bundled faces (one folder
    a person) for 2 steps at 8x8; (photos folder, run folder, CLI output)."""
    pytest.importorskip("dlib")
    from pcae.data import BUNDLED_FACES

    tmp = tmp_path_factory.mktemp("people")
    photos = tmp / "photos"
    for person in PEOPLE:  # photos dlib finds a face in
        (photos / person).mkdir(parents=True)
        for source in sorted((BUNDLED_FACES / person).iterdir())[:3]:
            (photos / person / source.name).symlink_to(source)
    out = tmp / "run"
    torch_home = os.environ.get("TORCH_HOME")
    os.environ["TORCH_HOME"] = str(tmp / "torch")  # no FaceNet weights here: auto picks dlib
    try:
        result = CliRunner().invoke(app, [
            "train-portraits", "--data", f"folder:{photos}", "--out", str(out), "--cache", str(tmp / "faces.h5"),
            "--image-size", str(S), "--steps", "2", "--batch-size", "2", "--channels", "6",
            "--n-layers", "1", "--first-kernel-size", "3", "--spatial-channels", "4", "--n-samples", "2",
            "--eval-every", "0", "--checkpoint-every", "0"])
    finally:
        os.environ.pop("TORCH_HOME") if torch_home is None else os.environ.update(TORCH_HOME=torch_home)
    assert result.exit_code == 0, (result.output, result.exception)
    return photos, out, result.output


def test_people_are_kept_split_within_each_person_and_judged(people_run):
    photos, out, output = people_run
    assert "face encoder: dlib (FaceNet's pretrained weights are not on this machine" in output
    assert "faces: 12 of 4 people in 12 photos (8 train, 4 test), 0 skipped; 8x8, grey" in output
    with h5py.File(out.parent / "faces.h5", "r") as f:
        persons, split = list(f["persons"].asstr()[:]), f["split"][:]
        assert json.loads(f.attrs["people"]) == list(PEOPLE)
    for person in set(persons):  # every person has photos in both splits
        assert sorted(s for p, s in zip(persons, split) if p == person) == [0, 0, 1]
    ck = load_checkpoint(out / "last.pt", kind="portrait")
    assert ck["configs"]["model"]["image_channels"] == 1  # grey photos: a one-channel model
    assert ck["configs"]["identity"]["people"] == sorted(set(persons))
    assert 0 <= ck["configs"]["identity"]["accuracy"] <= 1 and "identity" in ck["state_dicts"]
    assert ck["state_dicts"]["people"]["embeddings"].shape == (4, 128)
    assert set(ck["configs"]["people"]["pose_light"]) == set(persons)
    semantics = json.loads((out / "summary.json").read_text())["semantics"]
    assert semantics["test_faces"] == 4 and semantics["portraits_per_face"] == 4 and semantics["people"] == 4
    assert 0 <= semantics["named"] <= 1 and 0 <= semantics["dlib_same_person"] <= 1
    assert re.search(r"portraits of 4 test faces \(4 each\): identity judge names the person in \d+%", output)


def test_portrait_of_a_known_person_names_them_and_says_which_face_it_used(people_run, tmp_path):
    photos, out, _ = people_run
    pair = tmp_path / "pair.png"  # two people side by side: the larger face is used, and named
    a, b = (Image.open(sorted((photos / p).iterdir())[0]) for p in PEOPLE[:2])
    a = a.resize((a.width * 3 // 2, a.height * 3 // 2))  # the larger face
    both = Image.new("L", (a.width + b.width + 40, a.height), 128)
    both.paste(a, (0, 0))
    both.paste(b, (a.width + 40, 0))
    both.save(pair)
    result = CliRunner().invoke(app, ["portrait", str(pair), "--n", "3", "--checkpoint", str(out / "best.pt"),
                                      "--out", str(tmp_path / "g.png")])
    assert result.exit_code == 0, (result.output, result.exception)
    text = result.output
    assert "2 faces found, used face 0 (largest first; --face-index picks another)" in text
    assert re.search(r"person: orl/s03 \(a person the model knows: embedding distance 0\.\d\d", text), text
    assert re.search(r"identity judge \(4 people, \d+% on real test faces\): \d+% named as orl/s03; it sees", text)
    assert re.search(r"pose and lighting, the person's photos \(3\): yaw", text)
    assert re.search(r"spread against the person's photos: pose [\d.]+x, lighting [\d.]+x", text)
    result = CliRunner().invoke(app, ["portrait", str(pair), "--n", "2", "--face-index", "1", "--checkpoint",
                                      str(out / "best.pt"), "--out", str(tmp_path / "g2.png")])
    assert result.exit_code == 0 and "person: orl/s04" in result.output, result.output
    # a stranger (the astronaut): not a person it knows, so no "named" figure
    result = CliRunner().invoke(app, ["portrait", str(DATA / "astronaut.jpg"), "--n", "2", "--checkpoint",
                                      str(out / "best.pt"), "--out", str(tmp_path / "g3.png")])
    assert result.exit_code == 0, result.output
    assert "person: not one the model knows" in result.output and "named as" not in result.output


def test_bad_photos_and_a_portrait_checkpoint_elsewhere_are_one_line(people_run, tmp_path, monkeypatch, capsys):
    """Issue 25's bad inputs: no face, a face too small, an unreadable file; a portrait checkpoint
    given to a command for another kind of model. One line naming the file; nothing written."""
    photos, out, _ = people_run
    tiny = tmp_path / "tiny.png"
    Image.open(sorted((photos / PEOPLE[0]).iterdir())[0]).resize((24, 28)).save(tiny)
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8\xff not a jpeg")
    cases = [
        ((DATA / "coffee.jpg",), rf"no face found in {re.escape(str(DATA / 'coffee.jpg'))} \(best HOG score"),
        ((tiny,), rf"no face found in {re.escape(str(tiny))} .*the photo is 24x28 pixels, and faces under about "
                  r"40 pixels are not found"),
        ((broken,), rf"{re.escape(str(broken))} is not a readable image"),
    ]
    for args, pattern in cases:
        code, _, err = run_pcae(monkeypatch, capsys, "portrait", *args, "--checkpoint", out / "best.pt",
                                "--out", tmp_path / "g.png")
        assert code == 1 and "Traceback" not in err and err.strip().count("\n") == 0, err
        assert re.search(pattern, err), (pattern, err)
    code, _, err = run_pcae(monkeypatch, capsys, "sample", out / "best.pt", "--out", tmp_path / "s.png")
    assert code == 1 and err.strip().count("\n") == 0
    assert "is a 'portrait' checkpoint, expected 'pixelcnn'" in err, err
    code, _, err = run_pcae(monkeypatch, capsys, "reconstruct", out / "best.pt", "--out", tmp_path / "r.png")
    assert code == 1 and "is a 'portrait' checkpoint, expected 'autoencoder'" in err, err
    assert not any(tmp_path.glob("*.png")) or sorted(p.name for p in tmp_path.glob("*.png")) == ["tiny.png"]


def test_an_exported_portrait_model_draws_the_same_portraits(people_run, tmp_path, monkeypatch, capsys):
    """`pcae export` of a portrait run (identity judge, people, h's standardisation travel with it;
    dlib's model is recorded, not copied): `pcae portrait --checkpoint FOLDER` draws the same."""
    photos, out, _ = people_run
    folder = tmp_path / "model"
    assert run_pcae(monkeypatch, capsys, "export", out / "best.pt", folder)[0] == 0
    photo = sorted((photos / PEOPLE[1]).iterdir())[0]
    drawn = {}
    for name, checkpoint in (("checkpoint", out / "best.pt"), ("export", folder)):
        code, text, err = run_pcae(monkeypatch, capsys, "portrait", photo, "--n", 3, "--checkpoint", checkpoint,
                                   "--out", tmp_path / f"{name}.png", "--samples-out", tmp_path / f"{name}.h5")
        assert code == 0, err
        assert f"person: {PEOPLE[1]}" in text
        with h5py.File(tmp_path / f"{name}.h5", "r") as f:
            drawn[name] = f["images"][:]
    assert np.array_equal(drawn["checkpoint"], drawn["export"])
