"""Data layer: every registered source loads, converts and splits as documented; bad input fails
with one line. All data is written into tmp_path here, or is the bundled Fashion-MNIST subset."""
from __future__ import annotations

import gzip
import json
import pickle
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from helpers import run_pcae
from PIL import Image

from pcae import data, formats
from pcae.data import SOURCES, ImageDataset, convert_images, describe_source, import_dataset, load_dataset
from pcae.errors import PcaeError


@pytest.fixture(autouse=True)
def _offline(monkeypatch):
    monkeypatch.setenv("PCAE_DATA_BUNDLED", "1")       # same data with or without the Debian package
    monkeypatch.delenv("PCAE_DATA_ROOT", raising=False)


# ----------------------------------------------------------------------------- data makers

def _png(path, size=(20, 20), mode="RGB", seed=0):
    rng = np.random.default_rng(seed)
    shape = (size[1], size[0], 3) if mode == "RGB" else (size[1], size[0])
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8), mode).save(path)


def make_labelled_folder(root, per_class=15):
    """Two class folders of 20x20 RGB PNGs, plus junk: a file that is no image, one whose header
    reads but whose pixels are cut off, a text file and a hidden folder (both ignored)."""
    for k, name in enumerate(["cat", "dog"]):
        for i in range(per_class):
            _png(root / name / f"{name}_{i:02d}.png", seed=100 * k + i)
    (root / "dog" / "broken.png").write_bytes(b"\x89PNG not really an image")
    whole = (root / "cat" / "cat_00.png").read_bytes()
    (root / "cat" / "truncated.png").write_bytes(whole[: len(whole) // 2])
    (root / "README.txt").write_text("not an image, ignored")
    _png(root / "cat" / ".thumbnails" / "t.png", seed=7)
    return root


def make_flat_folder(root, n=40):
    """Grey PNGs of mixed sizes, no class folders: unlabelled, default size 32."""
    for i in range(n):
        _png(root / f"img_{i:02d}.png", size=(16 + i % 3 * 8, 24), mode="L", seed=i)
    return root


def _write_idx(path, array):
    header = bytes([0, 0, 8, array.ndim]) + np.array(array.shape, ">i4").tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    with gzip.open(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


def make_mnist_root(root, n_train=20, n_test=10, name="MNIST"):
    """The torchvision MNIST layout (root/NAME/raw/*-ubyte.gz) with random digits."""
    rng = np.random.default_rng(0)
    raw = root / name / "raw"
    for split, n in (("train", n_train), ("t10k", n_test)):
        _write_idx(raw / f"{split}-images-idx3-ubyte.gz", rng.integers(0, 256, (n, 28, 28)))
        _write_idx(raw / f"{split}-labels-idx1-ubyte.gz", rng.integers(0, 10, n))
    return root


def make_cifar_root(root, per_batch=3):
    """The torchvision CIFAR-10 layout (root/cifar-10-batches-py/) with random images."""
    rng = np.random.default_rng(0)
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batch = {"data": rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8),
                 "labels": rng.integers(0, 10, per_batch).tolist()}
        (folder / name).write_bytes(pickle.dumps(batch, protocol=2))
    return root


def _split_counts(source, data_root=None):
    return [len(load_dataset(source, s, data_root=data_root)) for s in data.SPLITS]


@pytest.fixture
def source_case(request, tmp_path):
    """(source string, data_root, expected (C, H, W), expected classes or None, labelled?)"""
    name = request.param
    if name == "fashion-mnist":
        return "fashion-mnist", None, (1, 28, 28), data.FASHION_MNIST_CLASSES
    if name == "mnist":
        return "mnist", make_mnist_root(tmp_path), (1, 28, 28), data.MNIST_CLASSES
    if name == "cifar10":
        return "cifar10", make_cifar_root(tmp_path), (3, 32, 32), data.CIFAR10_CLASSES
    if name == "folder":
        return f"folder:{make_labelled_folder(tmp_path / 'imgs')}", None, (3, 20, 20), ["cat", "dog"]
    if name == "faces":
        people = sorted(p.parent.relative_to(data.BUNDLED_FACES).as_posix()
                        for p in data.BUNDLED_FACES.rglob("1.png")) + [f"yale/subject{k:02d}" for k in range(1, 16)]
        return "faces", None, (3, 32, 32), sorted(people)
    if name == "h5":
        src = f"folder:{make_labelled_folder(tmp_path / 'imgs')}"
        import_dataset(src, tmp_path / "d.h5")
        return f"h5:{tmp_path / 'd.h5'}", None, (3, 20, 20), ["cat", "dog"]
    raise AssertionError(f"no test case for source {name!r}: add one")


ALL_SOURCES = pytest.mark.parametrize("source_case", list(SOURCES), indirect=True)


# ----------------------------------------------------------------------------- every source

@ALL_SOURCES
def test_every_source_loads_both_splits(source_case):
    source, root, shape, classes = source_case
    for split in data.SPLITS:
        ds = load_dataset(source, split, data_root=root)
        assert isinstance(ds, ImageDataset) and len(ds) > 0
        assert ds.shape == shape and ds.classes == classes and ds.num_classes == len(classes)
        assert ds.images.dtype == torch.uint8 and ds.images.shape == (len(ds), *shape)
        assert ds.labels.dtype == torch.long and ds.labels.shape == (len(ds),)
        assert 0 <= int(ds.labels.min()) and int(ds.labels.max()) < len(classes)
        image, label = ds[len(ds) - 1]
        assert image.dtype == torch.uint8 and tuple(image.shape) == shape and isinstance(label, int)
        info = json.loads(json.dumps(ds.info))           # JSON-able, and says where data came from
        assert info["source"] == source and info["split"] == split and info["count"] == len(ds)
        assert info["shape"] == list(shape) and info["classes"] == classes and info["origin"]


@ALL_SOURCES
@pytest.mark.parametrize("channels,size", [(3, 16), (1, 8), (None, 12)])
def test_every_source_converts(source_case, channels, size):
    source, root, shape, _ = source_case
    ds = load_dataset(source, "test", channels=channels, image_size=size, data_root=root)
    expected = (channels or shape[0], size, size)
    assert ds.shape == expected and ds.images.shape[1:] == expected and ds[0][0].shape == expected
    assert ds.info["shape"] == list(expected)


@ALL_SOURCES
def test_every_source_splits_are_fixed(source_case):
    source, root, *_ = source_case
    a, b = (load_dataset(source, "test", data_root=root) for _ in range(2))
    assert torch.equal(a.images, b.images) and torch.equal(a.labels, b.labels)


def test_every_registered_source_has_a_case():
    assert set(SOURCES) == {"fashion-mnist", "mnist", "cifar10", "faces", "folder", "h5"}


# ----------------------------------------------------------------------------- faces: people

def test_bundled_faces_are_55_people_each_in_both_splits():
    train, test = load_dataset("faces", "train"), load_dataset("faces", "test")
    assert (len(train), len(test)) == (425, 55) and train.classes == test.classes
    assert len(train.classes) == 55 and train.classes[0] == "orl/s01" and train.classes[-1] == "yale/subject15"
    assert torch.bincount(test.labels, minlength=55).tolist() == [1] * 55  # one test photo a person
    assert set(train.files).isdisjoint(test.files)
    assert (data.BUNDLED_FACES / "SOURCES.md").is_file()  # the credits travel with the photos


def test_person_split_keeps_every_person_in_both_splits():
    rels = [f"p{k}/{i}.png" for k in range(30) for i in range(k % 25 + 1)] + ["loose.png"]
    persons = [data.person_of(r) for r in rels]
    assert persons[-1] is None and persons[0] == "p0"
    test = data.person_split(rels, persons)
    for k in range(30):
        mine = [t for r, t in zip(rels, test) if r.startswith(f"p{k}/")]
        n = len(mine)
        assert sum(mine) == (0 if n == 1 else max(1, round(n / 10))), (k, n)  # a lone photo trains
    assert test[-1] == data.is_test_path("loose.png")
    # by photo: adding a person does not move another person's photos
    more = data.person_split(rels + ["q/1.png", "q/2.png"], persons + ["q", "q"])
    assert more[:len(rels)] == test


# ----------------------------------------------------------------------------- fashion-mnist

def test_bundled_fashion_mnist_is_the_documented_subset():
    train, test = load_dataset("fashion-mnist", "train"), load_dataset("fashion-mnist", "test")
    assert (len(train), len(test)) == (10000, 2000)
    assert train.info["origin"] == "bundled subset (10000 train / 2000 test)"
    assert torch.bincount(train.labels).tolist() == [1000] * 10
    assert torch.bincount(test.labels).tolist() == [200] * 10
    assert train.classes[0] == "T-shirt/top" and train.classes[9] == "Ankle boot"
    assert 50 < train.images.float().mean() < 100         # real clothes, not noise or zeros
    assert (data.BUNDLED_DIR / "LICENSE.fashion-mnist").read_text().count("Zalando SE") == 1
    assert data.BUNDLED_FILE.stat().st_size < 8e6


@pytest.mark.skipif(not formats.has_idx(data.DEBIAN_FASHION_MNIST), reason="Debian package absent")
def test_full_fashion_mnist_when_installed_and_subset_rows_match_it(monkeypatch):
    monkeypatch.delenv("PCAE_DATA_BUNDLED")
    full = load_dataset("fashion-mnist", "test")
    assert len(full) == 10000 and "full set" in full.info["origin"]
    small = load_dataset("fashion-mnist", "test", bundled=True)
    rows = torch.from_numpy(np.load(data.BUNDLED_FILE)["test_index"]).long()
    assert torch.equal(full.images[rows], small.images)
    assert torch.equal(full.labels[rows], small.labels)


def test_the_maintainer_script_bundles_the_first_images_of_each_class(tmp_path, monkeypatch):
    import importlib.util

    path = Path(__file__).resolve().parent.parent / "scripts" / "build_bundled_subset.py"
    spec = importlib.util.spec_from_file_location("build_bundled_subset", path)
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    root = make_mnist_root(tmp_path, n_train=60, n_test=30, name="FashionMNIST")
    out = tmp_path / "subset.npz"
    script.build_bundled_subset(root / "FashionMNIST" / "raw", out, per_class=(3, 2))
    monkeypatch.setattr(data, "BUNDLED_FILE", out)
    for split, k in zip(data.SPLITS, (3, 2)):
        full = load_dataset("fashion-mnist", split, data_root=root)
        small = load_dataset("fashion-mnist", split, bundled=True)
        rows = torch.from_numpy(np.load(out)[f"{split}_index"]).long()
        assert torch.equal(full.images[rows], small.images)
        assert torch.equal(full.labels[rows], small.labels)
        for c in range(10):  # the first k of each class, in their original order
            assert torch.equal(rows[small.labels == c], torch.nonzero(full.labels == c).flatten()[:k])


def test_fashion_mnist_from_a_torchvision_root(tmp_path):
    root = make_mnist_root(tmp_path, n_train=7, n_test=3, name="FashionMNIST")
    ds = load_dataset("fashion-mnist", "test", data_root=root)
    assert len(ds) == 3 and ds.info["origin"] == str(root / "FashionMNIST/raw")
    assert ds.classes == data.FASHION_MNIST_CLASSES


def test_fashion_mnist_at_32_rgb_for_the_reference_config():
    ds = load_dataset("fashion-mnist", "test", channels=3, image_size=32)
    assert ds.images.shape == (2000, 3, 32, 32)
    assert all(torch.equal(ds.images[:, 0], ds.images[:, c]) for c in (1, 2))


# ----------------------------------------------------------------------------- conversion

def test_convert_images_properties():
    grey = torch.randint(0, 256, (2, 1, 10, 20), dtype=torch.uint8)
    rgb = convert_images(grey, channels=3)
    assert rgb.shape == (2, 3, 10, 20) and all(torch.equal(rgb[:, c], grey[:, 0]) for c in range(3))
    assert torch.equal(convert_images(rgb, channels=1), grey)          # luma weights sum to 1
    red = torch.zeros(1, 3, 4, 4, dtype=torch.uint8)
    red[:, 0] = 255
    assert convert_images(red, channels=1).unique().tolist() == [76]   # round(0.299 * 255)
    flat = torch.full((1, 3, 10, 20), 77, dtype=torch.uint8)
    assert convert_images(flat, image_size=8).shape == (1, 3, 8, 8)
    assert convert_images(flat, image_size=8).unique().tolist() == [77]
    # centre crop: a wide image keeps its middle columns
    wide = torch.zeros(1, 1, 8, 24, dtype=torch.uint8)
    wide[..., 8:16] = 255
    assert convert_images(wide, image_size=8).min() == 255
    assert convert_images(grey) is grey
    with pytest.raises(ValueError, match="channels"):
        convert_images(grey, channels=2)


# ----------------------------------------------------------------------------- folders

def test_folder_split_is_a_disjoint_cover_by_path_hash(tmp_path):
    root = make_labelled_folder(tmp_path / "imgs")
    train, test = (load_dataset(f"folder:{root}", s) for s in data.SPLITS)
    assert len(train) + len(test) == 30                                 # broken.png skipped
    expected_test = sorted(f"{c}/{c}_{i:02d}.png" for c in ("cat", "dog") for i in range(15)
                           if data.is_test_path(f"{c}/{c}_{i:02d}.png"))
    assert len(test) == len(expected_test) > 0
    train_px = {bytes(x.numpy()) for x in train.images}
    assert not train_px & {bytes(x.numpy()) for x in test.images}      # disjoint
    # adding a file never moves an existing one between splits
    _png(root / "cat" / "cat_99.png", seed=999)
    test2 = load_dataset(f"folder:{root}", "test")
    assert {bytes(x.numpy()) for x in test.images} <= {bytes(x.numpy()) for x in test2.images}


def test_folder_skips_and_reports_corrupt_images(tmp_path):
    root = make_labelled_folder(tmp_path / "imgs")
    report = describe_source(f"folder:{root}")
    reasons = {s["file"]: s["reason"] for s in report["skipped"]}
    assert sorted(reasons) == ["cat/truncated.png", "dog/broken.png"]
    assert "cannot identify image file" in reasons["dog/broken.png"]
    assert "truncated" in reasons["cat/truncated.png"]
    assert report["counts"]["train"] + report["counts"]["test"] == 30


def test_flat_folder_is_unlabelled_and_resized_to_32(tmp_path):
    root = make_flat_folder(tmp_path / "flat")
    ds = load_dataset(f"folder:{root}", "train")
    assert ds.classes is None and ds.num_classes == 0 and ds.shape == (3, 32, 32)
    assert (ds.labels == -1).all() and ds[0][1] == -1
    assert load_dataset(f"folder:{root}", "train", channels=1).shape == (1, 32, 32)


def test_an_empty_split_is_an_error_to_load_but_imports_as_zero_rows(tmp_path):
    root = make_flat_folder(tmp_path / "flat", n=5)                    # all 5 hash to train
    with pytest.raises(PcaeError, match="no images in the test split; about 1 in 10"):
        load_dataset(f"folder:{root}", "test")
    summary = import_dataset(f"folder:{root}", tmp_path / "d.h5")
    assert summary["counts"] == {"train": 5, "test": 0}
    assert describe_source(f"folder:{root}")["counts"] == {"train": 5, "test": 0}


# ----------------------------------------------------------------------------- HDF5 import

def test_import_round_trip_keeps_images_labels_splits_and_classes(tmp_path):
    src = f"folder:{make_labelled_folder(tmp_path / 'imgs')}"
    seen = []
    summary = import_dataset(src, tmp_path / "d.h5", image_size=12, chunk_size=4, progress=seen.append)
    assert seen == sorted(seen) and len(seen) > 5                       # written chunk by chunk
    assert summary["counts"]["train"] + summary["counts"]["test"] == 30 == seen[-1]
    assert sorted(s["file"] for s in summary["skipped"]) == ["cat/truncated.png", "dog/broken.png"]
    with h5py.File(tmp_path / "d.h5") as f:
        assert f["images"].dtype == np.uint8 and f["images"].shape == (30, 3, 12, 12)
        assert f["images"].compression == "gzip" and f["images"].chunks is not None
        assert f.attrs["source"] == src and json.loads(f.attrs["classes"]) == ["cat", "dog"]
    for split in data.SPLITS:
        a = load_dataset(src, split, image_size=12)
        b = load_dataset(f"h5:{tmp_path / 'd.h5'}", split)
        assert torch.equal(a.images, b.images) and torch.equal(a.labels, b.labels)
        assert b.classes == ["cat", "dog"] and "imported from" in b.info["origin"]
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []   # no temp left


def test_import_refuses_to_overwrite_without_force(tmp_path):
    out = tmp_path / "d.h5"
    out.write_bytes(b"keep me")
    src = f"folder:{make_flat_folder(tmp_path / 'flat')}"
    with pytest.raises(PcaeError, match="already exists"):
        import_dataset(src, out)
    assert out.read_bytes() == b"keep me"
    # --force replaces pcae's own outputs only (issue 17): not the user's file, but an import
    with pytest.raises(PcaeError, match="is not a file pcae wrote"):
        import_dataset(src, out, force=True)
    assert out.read_bytes() == b"keep me"
    out.unlink()
    import_dataset(src, out)
    import_dataset(src, out, force=True)
    assert h5py.is_hdf5(out)


def test_h5_without_split_uses_every_tenth_row_and_large_files_read_lazily(tmp_path, monkeypatch):
    path = tmp_path / "plain.h5"
    images = np.arange(25 * 3 * 4 * 4, dtype=np.int64).reshape(25, 3, 4, 4).astype(np.uint8)
    with h5py.File(path, "w") as f:
        f["images"] = images
    test = load_dataset(f"h5:{path}", "test")
    assert torch.equal(test.images, torch.from_numpy(images[[9, 19]]))
    assert test.classes is None and (test.labels == -1).all()
    eager = load_dataset(f"h5:{path}", "train", image_size=2)
    monkeypatch.setattr(data, "IN_MEMORY_LIMIT", 0)
    lazy = load_dataset(f"h5:{path}", "train", image_size=2)
    assert lazy.images is None and lazy.labels is None and len(lazy) == len(eager) == 23
    assert lazy.shape == eager.shape == (3, 2, 2)
    assert all(torch.equal(lazy[i][0], eager[i][0]) and lazy[i][1] == -1 for i in range(len(lazy)))


def test_h5_split_and_labels_outside_their_range_are_refused(tmp_path):
    path = tmp_path / "odd.h5"
    with h5py.File(path, "w") as f:
        f["images"] = np.zeros((4, 1, 2, 2), np.uint8)
        f["split"] = np.array([0, 1, 7, 0], np.uint8)  # row 2 would be in neither split
    with pytest.raises(PcaeError, match=r"'split' holds \[7\], expected only 0 \(train\), 1 \(test\) and 2 \(held out\)"):
        load_dataset(f"h5:{path}", "train")
    with h5py.File(path, "w") as f:
        f["images"] = np.zeros((4, 1, 2, 2), np.uint8)
        f["labels"] = np.array([0, 1, 5, -1])
        f.attrs["classes"] = json.dumps(["a", "b"])
    with pytest.raises(PcaeError, match=r"'labels' range \[-1, 5\] does not fit its 2 classes"):
        load_dataset(f"h5:{path}", "train")


# ----------------------------------------------------------------------------- bad input

BAD_SOURCES = {
    "unknown": (lambda t: "nope", "unknown data source 'nope'; known: fashion-mnist"),
    "missing path": (lambda t: "folder:", "needs a path: folder:PATH"),
    "unexpected path": (lambda t: "mnist:/data", "takes no path"),
    "empty folder": (lambda t: f"folder:{(t / 'empty').mkdir() or t / 'empty'}", "no images found"),
    "not a folder": (lambda t: f"folder:{t / 'nowhere'}", "not a folder"),
    "h5 missing": (lambda t: f"h5:{t / 'none.h5'}", "file not found"),
    "not hdf5": (lambda t: (t / "x.h5").write_text("hello") and f"h5:{t / 'x.h5'}",
                 "not an HDF5 file"),
    "h5 without images": (lambda t: h5py.File(t / "e.h5", "w").close() or f"h5:{t / 'e.h5'}",
                          "no 'images' dataset"),
    "mnist without root": (lambda t: "mnist", "--data-root"),
    "cifar10 without root": (lambda t: "cifar10", "--data-root"),
}


@pytest.mark.parametrize("case", list(BAD_SOURCES))
def test_bad_sources_raise_one_line_pcae_errors(case, tmp_path):
    make, message = BAD_SOURCES[case]
    source = make(tmp_path)
    with pytest.raises(PcaeError, match=message) as e:
        load_dataset(source, "train")
    assert "\n" not in str(e.value)
    if "h5" in case or "folder" in case:
        assert str(tmp_path) in str(e.value)                   # names the file


def test_missing_torchvision_data_with_a_root_tries_one_download_then_one_error(tmp_path, monkeypatch):
    import torchvision.datasets as tvd
    calls = []

    def offline(root, train, download):
        calls.append((root, train, download))
        raise RuntimeError("Error downloading train-images-idx3-ubyte.gz:\nno network")
    monkeypatch.setattr(tvd, "MNIST", offline)
    expected = r"--data-root DIR .* download into .* failed: Error downloading"
    with pytest.raises(PcaeError, match=expected) as e:
        load_dataset("mnist", data_root=tmp_path)
    assert "\n" not in str(e.value) and calls == [(str(tmp_path), True, True)]


def test_damaged_files_and_unwritable_outputs_are_one_line_errors(tmp_path, monkeypatch, capsys):
    root = make_mnist_root(tmp_path / "root")
    (root / "MNIST/raw/t10k-images-idx3-ubyte.gz").write_bytes(b"\x1f\x8b\x08\x00garbage")
    code, out, err = run_pcae(monkeypatch, capsys, "data", "info", "mnist", "--data-root", root)
    assert code == 1 and "t10k-images-idx3-ubyte.gz: cannot read idx file" in err
    (tmp_path / "a_file").write_text("")
    code, out, err = run_pcae(monkeypatch, capsys, "data", "import", "fashion-mnist",
                              tmp_path / "a_file" / "out.h5")
    assert code == 1 and "out.h5: cannot write" in err and err.strip().count("\n") == 0


def test_bad_arguments_raise_value_errors():
    with pytest.raises(ValueError, match="split"):
        load_dataset("fashion-mnist", "validation")
    with pytest.raises(ValueError, match="image_size"):
        load_dataset("fashion-mnist", image_size=0)


# ----------------------------------------------------------------------------- CLI


def test_cli_info_and_import(tmp_path, monkeypatch, capsys):
    root = make_labelled_folder(tmp_path / "imgs")
    code, out, err = run_pcae(monkeypatch, capsys, "data", "info", f"folder:{root}")
    assert code == 0, err
    assert "origin" in out and "3 x 20 x 20" in out and "cat, dog" in out
    assert "dog/broken.png" in out and "train" in out and "test" in out
    code, out, _ = run_pcae(monkeypatch, capsys, "data", "info", "--json")
    assert code == 0 and json.loads(out)["counts"] == {"train": 10000, "test": 2000}

    out_h5 = tmp_path / "o.h5"
    args = ("data", "import", f"folder:{root}", out_h5, "--channels", "1", "--image-size", "8")
    code, out, err = run_pcae(monkeypatch, capsys, *args)
    assert code == 0 and out_h5.is_file() and "1 x 8 x 8" in out
    code, out, err = run_pcae(monkeypatch, capsys, *args)
    assert code == 1 and err.strip().count("\n") == 0 and "already exists" in err
    code, out, err = run_pcae(monkeypatch, capsys, *args, "--force")
    assert code == 0
    assert load_dataset(f"h5:{out_h5}", "test").shape == (1, 8, 8)


@pytest.mark.parametrize("case", list(BAD_SOURCES))
def test_cli_bad_sources_are_one_line_errors(case, tmp_path, monkeypatch, capsys):
    source = BAD_SOURCES[case][0](tmp_path)
    for args in (("data", "info", source), ("data", "import", source, tmp_path / "out.h5")):
        code, out, err = run_pcae(monkeypatch, capsys, *args)
        assert code == 1, (out, err)
        assert err.startswith("error: ") and err.strip().count("\n") == 0 and "Traceback" not in err
        assert BAD_SOURCES[case][1] in err
        assert not (tmp_path / "out.h5").exists()


def test_cli_bad_channels_is_a_usage_error(monkeypatch, capsys):
    code, out, err = run_pcae(monkeypatch, capsys, "data", "info", "--channels", "2")
    assert code == 2 and "Traceback" not in err + out
