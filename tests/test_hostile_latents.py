"""`pcae embed` / `pcae search` when the world moves under a latents folder: photos added to,
removed from or changed in the embedded folder, unreadable photos, Ctrl-C during --force."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from helpers import run_pcae
from PIL import Image

from embeddings.embed import INDEX, INFOS, LATENTS

V1 = Path(__file__).parent / "data" / "v1"


def _train_name(stem: str) -> str:
    """A file name under class folder a/ that starts with `stem` and falls in the train split."""
    from pcae.data import is_test_path

    return next(f"a/{stem}{i}.png" for i in range(100) if not is_test_path(f"a/{stem}{i}.png"))


@pytest.fixture
def photos(tmp_path):
    """Two class folders of 8x8 grey photos, each photo one grey level of its own (its file's mark)."""
    root = tmp_path / "photos"
    for c, name in enumerate(["a", "b"]):
        (root / name).mkdir(parents=True)
        for i in range(8):
            level = 20 + 100 * c + 10 * i
            Image.fromarray(np.full((8, 8), level, np.uint8), "L").save(root / name / f"1{i}.png")
    return root


@pytest.fixture
def embedded(photos, tmp_path, monkeypatch, capsys):
    out = tmp_path / "lat"
    code, _, err = run_pcae(monkeypatch, capsys, "embed", "--encoder", "onehot", "--data", f"folder:{photos}",
                            "--out", out)
    assert code == 0, err
    return out


def _search(monkeypatch, capsys, folder, tmp_path, query="id:0"):
    code, out, err = run_pcae(monkeypatch, capsys, "search", folder, query, "-k", 3, "--json",
                              "--out", tmp_path / "n.png", "--force")
    return code, (json.loads(out) if code == 0 else None), err


def _one_line_error(code, err, words):
    assert code == 1 and "Traceback" not in err and err.strip().count("\n") == 0, err
    assert words in err, err


def test_search_draws_each_neighbour_from_its_recorded_file_after_a_photo_is_added(
        photos, embedded, tmp_path, monkeypatch, capsys):
    from embeddings.search import neighbour_images

    added = _train_name("0")  # sorts before every embedded photo: today's listing shifts by one
    Image.fromarray(np.full((8, 8), 255, np.uint8), "L").save(photos / added)
    code, result, err = _search(monkeypatch, capsys, embedded, tmp_path)
    assert code == 0, err
    images = neighbour_images(embedded, result)  # the query (an id), then its neighbours
    for n, image in zip([{"file": None}] + result["neighbours"], images):
        if n["file"]:
            recorded = np.asarray(Image.open(photos / n["file"]))
            assert int(image[0, 0, 0]) == int(recorded[0, 0]) != 255, n
    assert (tmp_path / "n.png").stat().st_size > 0


def test_search_names_a_neighbour_photo_removed_since_it_was_embedded(
        photos, embedded, tmp_path, monkeypatch, capsys):
    code, result, err = _search(monkeypatch, capsys, embedded, tmp_path)
    assert code == 0, err
    gone = result["neighbours"][0]
    (photos / gone["file"]).unlink()
    code, _, err = _search(monkeypatch, capsys, embedded, tmp_path)
    _one_line_error(code, err, f"{gone['file']}: recorded for id {gone['id']} but no longer there")


def test_search_names_a_neighbour_photo_changed_since_it_was_embedded(
        photos, embedded, tmp_path, monkeypatch, capsys):
    code, result, err = _search(monkeypatch, capsys, embedded, tmp_path)
    assert code == 0, err
    changed = result["neighbours"][1]
    Image.fromarray(np.full((8, 8), 7, np.uint8), "L").save(photos / changed["file"])  # another picture, same name
    code, _, err = _search(monkeypatch, capsys, embedded, tmp_path)
    _one_line_error(code, err, f"{changed['file']}: recorded for id {changed['id']} but changed since it "
                               "was embedded")


def test_search_draws_neighbours_of_an_old_built_in_dataset_folder_as_before(tmp_path, monkeypatch, capsys):
    from embeddings.search import neighbour_images
    from pcae.data import load_dataset

    folder = tmp_path / "latents"
    shutil.copytree(V1 / "latents", folder)  # fashion-mnist, written before rows recorded their files
    code, result, err = _search(monkeypatch, capsys, folder, tmp_path)
    assert code == 0, err
    data = load_dataset("fashion-mnist", "train", channels=1, image_size=28)
    for i, image in zip([0] + [n["id"] for n in result["neighbours"]], neighbour_images(folder, result)):
        assert np.array_equal(image.numpy(), data[i][0].numpy())


def test_embed_names_the_unreadable_photos_it_skipped(photos, tmp_path, monkeypatch, capsys):
    from embeddings.embed import skipped_text

    junk = sorted(_train_name(f"x{k}_") for k in range(7))
    for name in junk:
        (photos / name).write_bytes(b"not an image")
    out = tmp_path / "lat"
    code, printed, err = run_pcae(monkeypatch, capsys, "embed", "--encoder", "onehot",
                                  "--data", f"folder:{photos}", "--out", out)
    stored = json.loads((out / "index_infos.json").read_text())
    assert code == 0 and f", {skipped_text(stored)}" in printed, err  # "7 skipped: a.png, ... and 2 more"
    code, described, err = run_pcae(monkeypatch, capsys, "index", "describe", out)
    infos = json.loads(described)
    assert infos["skipped"] == 7 and sorted(s["file"] for s in infos["skipped_files"]) == junk
    assert all(s["reason"] for s in infos["skipped_files"])
    named = [s["file"] for s in infos["skipped_files"][:5]]
    assert skipped_text(infos) == f"7 skipped: {', '.join(named)} and 2 more"


def test_ctrl_c_during_embed_force_exits_130_and_keeps_the_previous_folder(
        photos, embedded, monkeypatch, capsys):
    """Ctrl-C arrives while h5py or torch runs a weakref callback: Python would print the
    KeyboardInterrupt as "ignored" there and carry on, and the embed replaced the folder, exit 0."""
    import signal
    import weakref

    import embeddings.embed as embed_module

    before = {name: (embedded / name).read_bytes() for name in (LATENTS, INDEX, INFOS)}
    real, calls = embed_module._encode, []

    def encode(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            class Finalised:
                pass
            thing = Finalised()
            ref = weakref.ref(thing, lambda _: signal.raise_signal(signal.SIGINT))  # noqa: F841
            del thing
        return real(*args, **kwargs)

    monkeypatch.setattr(embed_module, "_encode", encode)
    code, _, err = run_pcae(monkeypatch, capsys, "embed", "--encoder", "onehot", "--data", f"folder:{photos}",
                            "--out", embedded, "--force", "--metric", "cosine", "--batch-size", 2)
    assert code == 130 and err.strip().count("\n") == 0, err
    assert f"interrupted: {embedded} holds its previous latents, as they were" in err
    assert len(calls) == 2  # stopped at the batch after Ctrl-C, not at the end
    assert {name: (embedded / name).read_bytes() for name in before} == before
    assert sorted(p.name for p in embedded.iterdir()) == sorted(before)  # nothing half-written left
