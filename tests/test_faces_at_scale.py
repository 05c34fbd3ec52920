"""Faces at LFW's scale: a split by person, a face cache built by several workers that survives a
stop, the identity judge's classes, and the known-person threshold calibrated on unseen people.

Photos are the bundled faces (real, 55 people); dlib detects them (offline)."""
import json
import shutil

import h5py
import numpy as np
import pytest
import torch

from pcae.data import BUNDLED_FACES, HOLDOUT_MIN_PHOTOS, held_out_people, image_files
from pcae.faces import _Photo, _partial_path, build_face_encoder, prepare_faces, split_faces
from pcae.formats import HELD_OUT, h5_split
from pcae.tasks.portrait import KNOWN_FALSE_RATE, known_threshold


def test_held_out_people_are_whole_people_with_enough_photos_and_stable():
    persons = [f"p{k}" for k in range(400) for _ in range(5)] + [f"q{k}" for k in range(400) for _ in range(4)]
    held = held_out_people(persons, 0.1)
    assert held and all(p.startswith("p") for p in held)  # 4 photos: never held out
    assert 0.05 < len(held) / 400 < 0.15
    # the same person is held out whatever else the folder holds
    assert held_out_people(persons[:1000], 0.1) == {p for p in held if int(p[1:]) < 200}
    assert held_out_people(persons, 0.0) == set()


def test_split_codes_hold_out_people_and_keep_an_only_photo_in_training():
    photos = [_Photo(f"{p}/{k}.png", p, None, None) for p in ("a", "b", "c", "d") for k in range(1)]
    codes = split_faces(photos)
    assert codes == [0, 0, 0, 0]  # four people, one photo each: no one is dropped into test
    photos += [_Photo(f"e/{k}.png", "e", None, None) for k in range(3)]
    codes = split_faces(photos)
    assert codes[:4] == [0, 0, 0, 0] and codes[4:].count(1) == 1  # the test face is e's
    many = [_Photo(f"{p}/{k}.png", p, None, None) for p in map(str, range(60)) for k in range(HOLDOUT_MIN_PHOTOS)]
    codes = split_faces(many, 0.2)
    held = held_out_people([p.person for p in many], 0.2)
    assert held and all((c == HELD_OUT) == (p.person in held) for p, c in zip(many, codes))
    assert {c for p, c in zip(many, codes) if p.person not in held} == {0, 1}


def test_an_h5_source_takes_held_out_rows_in_neither_split(tmp_path):
    path = tmp_path / "x.h5"
    with h5py.File(path, "w") as f:
        f["images"] = np.zeros((6, 1, 4, 4), np.uint8)
        f["split"] = np.array([0, 0, 1, HELD_OUT, HELD_OUT, 0], np.uint8)
    assert h5_split(path, "train").count == 3
    assert h5_split(path, "test").count == 1


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    """140 bundled photos (more than the 128 that a pool of workers takes), one folder per person."""
    root = tmp_path_factory.mktemp("photos")
    for path in image_files(BUNDLED_FACES)[:140]:
        target = root / path.relative_to(BUNDLED_FACES)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(path, target)
    return root


def _columns(path):
    with h5py.File(path, "r") as f:
        return {k: f[k][:] for k in ("images", "crops", "embeddings", "files", "persons", "split")}, json.loads(
            f.attrs["skipped"])


def test_two_workers_stopped_and_resumed_make_the_cache_one_process_makes(photos, tmp_path):
    encoder = build_face_encoder("dlib")
    one = prepare_faces(f"folder:{photos}", tmp_path / "one.h5", encoder, 16, workers=1, holdout=0.2)
    seen = []

    def stop(done, total):
        seen.append(done)
        if done == 70:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        prepare_faces(f"folder:{photos}", tmp_path / "two.h5", encoder, 16, workers=2, progress=stop, holdout=0.2)
    partial = _partial_path(tmp_path / "two.h5")
    assert partial.is_file() and not (tmp_path / "two.h5").exists()
    with h5py.File(partial, "r") as f:
        assert f.attrs["done"] == 64  # the last chunk recorded before the stop
    seen.clear()
    two = prepare_faces(f"folder:{photos}", tmp_path / "two.h5", encoder, 16, workers=2, progress=stop_never(seen),
                        holdout=0.2)
    assert seen[0] == 65 and seen[-1] == 140  # went on after the 64 recorded photos
    assert not partial.exists()
    a, skipped_a = _columns(one["cache"])
    b, skipped_b = _columns(two["cache"])
    assert skipped_a == skipped_b
    for key in a:
        assert np.array_equal(a[key], b[key]), key
    assert one["held_out"] == two["held_out"] > 0


def stop_never(seen):
    return lambda done, total: seen.append(done)


def test_the_known_threshold_calls_few_unseen_photos_known():
    generator = torch.Generator().manual_seed(0)
    means = torch.randn(500, 16, generator=generator)
    unseen = torch.randn(400, 16, generator=generator)
    threshold = known_threshold(means, unseen, same_person=100.0)
    nearest = torch.cdist(unseen, means).min(1).values
    assert (nearest < threshold).float().mean() <= KNOWN_FALSE_RATE
    assert (nearest <= threshold + 1e-6).float().mean() >= KNOWN_FALSE_RATE - 1 / len(unseen)
    assert known_threshold(means, unseen, same_person=0.1) == 0.1  # never above the encoder's own
    assert known_threshold(means, unseen[:0], same_person=0.6) == 0.6  # nothing to calibrate on


@pytest.fixture(scope="module")
def held_out_run(photos, tmp_path_factory):
    """A two-step portrait run on the 140 photos with 30 % of the people held out."""
    from pcae.portrait import PortraitSpec, load_portrait
    from pcae.train import TrainConfig, train

    out = tmp_path_factory.mktemp("run")
    config = TrainConfig(data=f"folder:{photos}", out=str(out), steps=2, batch_size=8, eval_every=0,
                         judge_images=0, checkpoint_every=0, precision="fp32")
    train(config, PortraitSpec(encoder="dlib", channels=6, n_layers=1, spatial_channels=4, holdout=0.3))
    model = load_portrait(out / "last.pt")
    return model, model.faces["cache"]


def test_unseen_judges_say_of_portraits_that_copy_the_source_what_they_say_of_the_source(held_out_run, monkeypatch):
    """If every portrait were the source photo itself, both judges would name it exactly as they
    name the real photo (their ceiling), and every portrait would count as a copy of the source."""
    import eval.unseen as unseen
    model, cache = held_out_run
    people = unseen.unseen_people(cache)
    assert len(people) >= 2
    with h5py.File(cache, "r") as f:
        images = torch.from_numpy(f["images"][:, :1])
        table = model.condition(torch.from_numpy(f["embeddings"][:]))

    def copy_source(decoder, n, shape, h, temperature, generator, **kw):  # the photo whose h it is
        return images[torch.cdist(h.double(), table.double()).argmin(1)].long()

    monkeypatch.setattr(unseen, "sample", copy_source)
    r = unseen.judge_unseen(model, cache, n=3, sources=1)
    assert r["people"] == len(people) and r["chance"] == pytest.approx(1 / len(people))
    assert r["sources"] == len(people) and r["portraits"] == 3 * len(people)
    assert r["judge"]["portraits"] == pytest.approx(r["judge"]["real"])
    assert r["dlib"]["portraits"] == pytest.approx(r["dlib"]["real"])
    assert r["copies_of_source"] == r["portraits"] and r["near_copies"] == r["pairs"]
    # dlib's descriptor of the photo itself, against galleries without it, finds the person
    assert r["dlib"]["real"] > 2 / len(people)


def test_the_model_calls_an_unseen_person_known_at_most_as_calibrated(held_out_run):
    from eval.unseen import known_person_rates
    model, cache = held_out_run
    rates = known_person_rates(model, cache)
    assert rates["unseen_photos"] > 0 and rates["unseen_called_known"] <= KNOWN_FALSE_RATE
    assert rates["threshold"] == model.people["threshold"] <= model.facenet.same_person


def test_a_folder_where_everyone_has_one_photo_is_refused_not_trained_on_fewer_people(tmp_path, monkeypatch, capsys):
    """Each person's only photo stays in training (issue 35), so there is no test face: one line."""
    from helpers import run_pcae

    for person in ("s01", "s02", "s04"):
        (tmp_path / "one" / person).mkdir(parents=True)
        shutil.copy(BUNDLED_FACES / "orl" / person / "1.png", tmp_path / "one" / person / "1.png")
    code, out, err = run_pcae(monkeypatch, capsys, "train-portraits", "--data", f"folder:{tmp_path / 'one'}",
                              "--out", tmp_path / "run", "--steps", 1)
    assert code == 1 and "without dropping a person" in err and err.strip().count("\n") == 0
    assert not (tmp_path / "run").exists()
