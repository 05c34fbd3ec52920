"""train-portraits --oversample: the training faces of some people shown K times an epoch (the
shipped model's bundled people, 3 % of its faces), in the loop's fixed data order.

Photos are 3 bundled faces of each of 3 people; dlib detects and embeds them (offline)."""
from __future__ import annotations

import collections

import pytest
import torch
from helpers import run_pcae

from pcae.batches import Feeder
from pcae.checkpoint import load_checkpoint

PEOPLE = ("orl/s03", "orl/s04", "yale/subject02")


class _Images:
    def __init__(self, n):
        self.images = torch.arange(n, dtype=torch.uint8).view(n, 1, 1, 1)
        self.labels = torch.arange(n)
        self.info = {}

    def __len__(self):
        return len(self.labels)


def test_an_epoch_holds_each_image_as_often_as_its_repeats_in_a_fixed_order():
    data = _Images(6)
    repeats = torch.tensor([1, 3, 1, 1, 2, 1])

    def epoch(feeder, e):
        return torch.cat([labels for _, (_, labels) in zip(range(feeder.per_epoch), feeder.batches(e, 0))])

    feeder = Feeder(data, 3, 0, 0, 1, torch.device("cpu"), 0, repeats=repeats)
    assert feeder.per_epoch == 3  # 9 images an epoch
    seen = epoch(feeder, 0)
    assert collections.Counter(seen.tolist()) == {0: 1, 1: 3, 2: 1, 3: 1, 4: 2, 5: 1}
    again = Feeder(data, 3, 0, 0, 1, torch.device("cpu"), 0, repeats=repeats)
    assert torch.equal(epoch(again, 0), seen)  # a pure function of (seed, epoch): resumable
    assert not torch.equal(epoch(again, 1), seen)
    plain = Feeder(data, 3, 0, 0, 1, torch.device("cpu"), 0)
    assert plain.per_epoch == 2 and sorted(epoch(plain, 0).tolist()) == list(range(6))


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    pytest.importorskip("dlib")
    from pcae.data import BUNDLED_FACES

    root = tmp_path_factory.mktemp("oversample") / "photos"
    for person in PEOPLE:
        (root / person).mkdir(parents=True)
        for source in sorted((BUNDLED_FACES / person).iterdir())[:3]:
            (root / person / source.name).symlink_to(source)
    return root


def _train(monkeypatch, capsys, photos, out, *extra):
    return run_pcae(monkeypatch, capsys, "train-portraits", "--data", f"folder:{photos}", "--out", out,
                    "--cache", photos.parent / "faces.h5", "--encoder", "dlib", "--image-size", "8",
                    "--steps", "2", "--batch-size", "2", "--channels", "6", "--n-layers", "1",
                    "--first-kernel-size", "3", "--spatial-channels", "4", "--n-samples", "2",
                    "--eval-every", "0", "--checkpoint-every", "0", *extra)


def test_oversampled_people_fill_the_epoch_k_times_and_the_run_keeps_the_option(photos, tmp_path, monkeypatch,
                                                                                capsys, one_thread):
    from pcae.data import load_dataset
    from pcae.faces import load_persons
    from pcae.tasks.portrait import PortraitTask

    out = tmp_path / "run"
    code, _, err = _train(monkeypatch, capsys, photos, out, "--oversample", "orl/*:3")
    assert code == 0, err
    checkpoint = load_checkpoint(out / "last.pt", kind="portrait")
    assert checkpoint["configs"]["portrait"]["oversample"] == "orl/*:3"
    task = PortraitTask.from_checkpoint(checkpoint)
    dataset = load_dataset(checkpoint["configs"]["train"]["data"], split="train")
    persons, _ = load_persons(task.faces["cache"])
    repeats = task.repeats(dataset)
    assert [(persons[int(r)], int(k)) for r, k in zip(dataset.labels, repeats)] == [
        (persons[int(r)], 3 if persons[int(r)].startswith("orl/") else 1) for r in dataset.labels]
    assert sorted(set(repeats.tolist())) == [1, 3]
    task.oversample = None
    assert task.repeats(dataset) is None
    # a resume must train on the same epochs: another --oversample is refused
    code, _, err = _train(monkeypatch, capsys, photos, out, "--oversample", "orl/*:2", "--resume", "--steps", "3")
    assert code != 0 and "oversample" in err, err


@pytest.mark.parametrize("bad, says", [
    ("orl/*", "must be PATTERN[,PATTERN...]:K"), ("orl/*:0", "must be PATTERN[,PATTERN...]:K"),
    (":4", "must be PATTERN[,PATTERN...]:K"), ("lfw/*:4", "no training face's person matches lfw/*")])
def test_a_bad_or_empty_oversample_is_one_line_and_writes_nothing(bad, says, photos, tmp_path, monkeypatch,
                                                                 capsys, one_thread):
    code, _, err = _train(monkeypatch, capsys, photos, tmp_path / "run", "--oversample", bad)
    assert code == 1 and says in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "run").exists()
