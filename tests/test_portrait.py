"""Portraits: face cache, train-portraits, portrait and interpolate, end to end on the bundled photos.

FaceNet runs with (seeded) random weights and 80x80 crops, the PixelCNN is tiny and works at 8x8;
FaceNet forwards (~0.2 s of CPU per crop) dominate, so the tests embed as few crops as they can. One training run (module fixture) serves every
test that needs a checkpoint.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from PIL import Image, ImageOps
from typer.testing import CliRunner

from pcae.checkpoint import load_checkpoint, save_checkpoint
from pcae.cli import app
from helpers import run_pcae

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
    assert "faces: 6 of 8 photos (5 train, 1 test), 2 skipped" in output
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
    assert Image.open(out / "samples.png").size == (3 * (S + 2) + 2, S + 4)


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
    from pcae.faces import load_embeddings, prepare_faces
    from pcae.utils import PcaeError

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
                              "--out", tmp_path / "run", "--cache", tmp_path / "c.h5")
    assert code == 1 and "Traceback" not in err
    assert err.strip().count("\n") == 0
    assert str(tmp_path / "torch" / "checkpoints" / "20180402-114759-vggface2.pt") in err


def test_train_portraits_refuses_bad_sources(run, monkeypatch, capsys, tmp_path):
    photos = run[0]
    for data, message in [("fashion-mnist", "needs photos as folder:PATH or h5:PATH"),
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
    # bad model options and an existing run folder are refused before any detection
    code, out, err = run_pcae(monkeypatch, capsys, "train-portraits", "--data", f"folder:{photos}",
                              "--out", tmp_path / "r2", "--facenet-weights", "random", "--channels", 32)
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
    similarity = float(re.search(r"identity similarity (-?[\d.]+)", text).group(1))
    diversity = float(re.search(r"diversity ([\d.]+)", text).group(1))
    assert -1 <= similarity <= 1 and 0 <= diversity <= 2
    assert "warning: FaceNet weights are random (NOT pretrained)" in text
    # the independent judge (dlib, installed by pcae[faces]) and the pose / lighting spread
    import importlib.util
    if importlib.util.find_spec("dlib") and importlib.util.find_spec("face_recognition_models"):
        judged = re.search(r"independent judge \(dlib\): mean distance ([\d.]+) .* (\d+)% judged the "
                           r"same person .* at \d+x\d+: ([\d.]+) \(the ceiling\)", text)
        assert judged, text
        assert 0 < float(judged.group(1)) < 2 and 0 <= int(judged.group(2)) <= 100
        assert "pose and lighting, portraits (4): yaw" in text

    image = Image.open(grid)
    assert image.size == (3 * (S + 2) + 2, 2 * (S + 2) + 2)  # 5 tiles, 3 per row
    assert image.text["random_weights"] == "true" and "random" in image.text["note"]
    with h5py.File(samples, "r") as f:
        assert f["images"].shape == (4, 3, S, S) and f["source"].shape == (1, 3, S, S)
        assert f.attrs["random_weights"] and f.attrs["n"] == 4
        assert abs(f["similarities"][:].mean() - similarity) < 1e-3
        if "identity_judge" in f.attrs and f.attrs["identity_judge"] != "null":
            judge = json.loads(f.attrs["identity_judge"])
            assert len(judge["distances"]) == 4 and judge["judge"] == "dlib"
        source, first = f["source"][0], f["images"][0]
    tiles = np.asarray(image).transpose(2, 0, 1)
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
        assert len(json.loads((folder / "scores.json").read_text())["similarities"]) == n


def test_draw_portraits_scores(model):
    from eval.faces import _spread_or_none
    from pcae.portrait import draw_portraits

    a = draw_portraits(model, DATA / "camera.jpg", 3, seed=1)
    assert a.samples.shape == (3, 3, S, S) and a.samples.dtype == torch.uint8
    assert a.grid.shape == (4, 3, S, S) and torch.equal(a.grid[0], a.source[0])
    assert a.random_weights and a.facenet_weights == "random" and a.sampler == "cached"
    x = a.samples.flatten(1).double()
    pairs = [((x[i] - x[j]).pow(2).mean().sqrt().item()) for i in range(3) for j in range(i + 1, 3)]
    assert a.pixel_diversity == pytest.approx(np.mean(pairs))
    assert a.identity_similarity == pytest.approx(np.mean(a.similarities))
    assert 0 <= a.diversity <= 2 and -1 <= a.source_similarity <= 1 + 1e-6
    assert _spread_or_none(torch.ones(1, 5)) is None  # one sample: no diversity
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
    assert same.cosine == pytest.approx(1.0, abs=1e-5) and same.weights == [0.0, 0.5, 1.0]


def test_interpolate_cli(run, tmp_path, monkeypatch, capsys):
    _, out, _, _ = run
    grid = tmp_path / "morph.png"
    code, text, err = run_pcae(monkeypatch, capsys, "interpolate", DATA / "astronaut.jpg",
                               DATA / "camera.jpg", "--steps", 2, "--checkpoint", out / "last.pt",
                               "--out", grid)
    assert code == 0, err
    assert "cosine between the two embeddings" in text and "random (NOT pretrained)" in text
    assert Image.open(grid).size == (4 * (S + 2) + 2, S + 4)
    code, _, err = run_pcae(monkeypatch, capsys, "interpolate", DATA / "astronaut.jpg",
                            DATA / "coffee.jpg", "--checkpoint", out / "last.pt",
                            "--out", tmp_path / "x.png", "--steps", 1)
    assert code == 1 and "--steps must be >= 2, got 1" in err


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
    assert "faces: 5 of 6 photos" in text and "skipped coffee.jpg" in text
    assert "face encoder: dlib's pretrained ResNet" in text and "random" not in text
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
    similarity = float(re.search(r"identity similarity (-?[\d.]+)", text).group(1))
    assert -1 <= similarity <= 1
    assert "independent identity judge: none (the model is conditioned on dlib" in text  # no FaceNet weights
    # with FaceNet's weights on the machine, FaceNet judges it (random ones stand in for them here)
    import eval.faces
    from pcae.faces import build_facenet
    monkeypatch.setattr(eval.faces, "facenet_judge", lambda: build_facenet("random", CROP))
    code, text, err = run_pcae(monkeypatch, capsys, "portrait", DATA / "astronaut.jpg", "--n", 3,
                               "--checkpoint", out / "last.pt", "--out", tmp_path / "g2.png",
                               "--samples-out", tmp_path / "s2.h5")
    assert code == 0, err
    judged = re.search(r"independent judge \(facenet\): mean distance ([\d.]+) .* (\d+)% judged the same "
                       r"person \(< 1.1\)", text)
    assert judged and 0 <= float(judged.group(1)) <= 2, text
    with h5py.File(tmp_path / "s2.h5", "r") as f:
        assert json.loads(f.attrs["identity_judge"])["judge"] == "facenet"
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
    from pcae.portrait import PortraitSpec
    from pcae.train import TrainConfig, train
    from pcae.utils import PcaeError

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
