"""The hostile-input audit's cases (issue 29): photos as phones, scanners and file systems give
them, option values out of range, names at the file system's limits, interruptions and races.
Each test names what the user sees; the fixes sit in the shared mechanisms (pcae.files' one image
reader, pcae.options' checks, pcae.outputs' commits, pcae.cli's main)."""
from __future__ import annotations

import errno
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import weakref
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from helpers import run_pcae
from PIL import Image

from pcae.data import load_dataset
from pcae.files import open_image
from pcae.images import save_grid

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _offline(monkeypatch):
    monkeypatch.setenv("PCAE_DATA_BUNDLED", "1")


def _gradient(w=40, h=24) -> np.ndarray:
    """An RGB image whose every row and column differs: any turn or flip shows."""
    y, x = np.mgrid[0:h, 0:w]
    return np.stack([x * 255 // (w - 1), y * 255 // (h - 1), (x + y) % 256], -1).astype(np.uint8)


def _sideways_jpeg(path: Path, upright: np.ndarray) -> None:
    """What a phone writes: the pixels as the sensor lay (turned), and EXIF orientation 6 ("rotate
    90 clockwise to view") so that viewers show the photo upright."""
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(np.rot90(upright, 1).copy()).save(path, quality=95, exif=exif)


# ----------------------------------------------------------------------------- photos as they come

def test_a_phone_jpeg_with_an_exif_rotation_is_read_upright(tmp_path):
    upright = _gradient()
    _sideways_jpeg(tmp_path / "phone.jpg", upright)
    photo = np.asarray(open_image(tmp_path / "phone.jpg"))
    assert photo.shape == upright.shape
    assert np.abs(photo.astype(int) - upright).mean() < 6  # JPEG's loss only, not a turn


def test_data_import_stores_a_rotated_phone_photo_upright(tmp_path, monkeypatch, capsys):
    upright = _gradient()
    folder = tmp_path / "photos"
    (folder / "a").mkdir(parents=True)
    for i in range(12):  # same size as the photo when upright: no resize blurs the comparison
        Image.fromarray(upright).save(folder / "a" / f"plain{i}.png")
    _sideways_jpeg(folder / "a" / "phone.jpg", upright)
    out = tmp_path / "x.h5"
    code, _, err = run_pcae(monkeypatch, capsys, "data", "import", f"folder:{folder}", out)
    assert code == 0, err
    with h5py.File(out) as f:
        files = [v.decode() for v in f["files"][:]]
        images = f["images"][:]
    assert images.shape[2:] == (24, 40)  # the upright shape, from the header's orientation
    stored = images[files.index("a/phone.jpg")].transpose(1, 2, 0).astype(int)
    assert np.abs(stored - upright).mean() < 6


def test_a_16_bit_png_is_scaled_to_8_bits_not_clipped_to_white(tmp_path):
    levels = np.linspace(0, 65535, 64 * 64).reshape(64, 64).astype(np.uint16)
    (tmp_path / "deep").mkdir()
    for i in range(12):
        Image.fromarray(levels).save(tmp_path / "deep" / f"scan{i}.png")
    photo = np.asarray(open_image(tmp_path / "deep" / "scan0.png"))
    assert photo.dtype == np.uint8 and abs(photo.mean() - 127.5) < 1 and photo.min() == 0 and photo.max() == 255
    ds = load_dataset(f"folder:{tmp_path / 'deep'}", "train", channels=1)
    assert abs(ds.images.float().mean().item() - 127.5) < 1


def test_palette_cmyk_and_grey_alpha_photos_read_as_rgb(tmp_path):
    rgb = _gradient()
    Image.fromarray(rgb).convert("P").save(tmp_path / "p.png")
    Image.fromarray(rgb).convert("CMYK").save(tmp_path / "c.jpg")
    Image.fromarray(rgb).convert("LA").save(tmp_path / "la.png")
    for name in ("p.png", "c.jpg", "la.png"):
        image = open_image(tmp_path / name)
        assert image.mode == "RGB", name  # grey + alpha goes through RGBA, then RGB
        assert np.asarray(image.convert("RGB")).shape == rgb.shape, name


def test_a_file_name_that_is_not_utf8_is_listed_and_written_as_an_escape(tmp_path, monkeypatch, capsys):
    folder = tmp_path / "photos"
    (folder / "a").mkdir(parents=True)
    for i in range(11):
        Image.fromarray(_gradient()).save(folder / "a" / f"p{i}.png")
    odd = os.fsdecode(bytes(folder / "a") + b"/caf\xe9.png")  # Latin-1 bytes, as old cameras name
    Image.fromarray(_gradient()).save(odd)
    code, out, err = run_pcae(monkeypatch, capsys, "data", "info", f"folder:{folder}")
    assert code == 0 and "Traceback" not in err, err
    code, _, err = run_pcae(monkeypatch, capsys, "data", "import", f"folder:{folder}", tmp_path / "x.h5")
    assert code == 0, err
    with h5py.File(tmp_path / "x.h5") as f:
        assert b"a/caf\xe9.png" in list(f["files"][:])  # the file's own bytes
    grid = save_grid(torch.zeros(2, 1, 4, 4, dtype=torch.uint8), 2, tmp_path / "g.png", {"photo": odd})
    assert Image.open(grid).text["photo"].endswith("caf\\udce9.png")


def test_a_class_folder_that_cannot_be_read_is_named_not_dropped(tmp_path, monkeypatch):
    folder = tmp_path / "photos"
    for name in ("cats", "dogs"):
        (folder / name).mkdir(parents=True)
        for i in range(12):
            Image.fromarray(_gradient()).save(folder / name / f"{name}{i}.png")
    real_scandir = os.scandir

    def scandir(path="."):  # as for a folder of another user, mode 700 (the tests run as root)
        if Path(path) == folder / "dogs":
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", scandir)
    ds = load_dataset(f"folder:{folder}", "train")
    assert ds.classes == ["cats"]
    assert {"file": "dogs/", "reason": "class folder cannot be read (Permission denied)"} in ds.info["skipped"]


def test_a_link_to_the_folder_itself_is_not_a_class(tmp_path):
    folder = tmp_path / "flat"
    folder.mkdir()
    for i in range(12):
        Image.fromarray(_gradient()).save(folder / f"p{i}.png")
    (folder / "loop").symlink_to(folder)
    (folder / "gone").symlink_to(tmp_path / "nowhere")
    ds = load_dataset(f"folder:{folder}", "train")
    assert ds.classes is None and len(ds) >= 9  # the flat folder's photos, unlabelled
    assert {"file": "gone", "reason": "a link to nothing"} in ds.info["skipped"]


@pytest.mark.parametrize("command", ["info", "import"])
def test_an_image_size_beyond_any_image_is_refused_in_one_line(tmp_path, monkeypatch, capsys, command):
    args = ["data", command, "fashion-mnist", "--image-size", "100000"]
    code, _, err = run_pcae(monkeypatch, capsys, *args, *([tmp_path / "x.h5"] if command == "import" else []))
    assert code == 1 and err.count("\n") == 1, err
    assert "--image-size must be between 1 and 9459" in err
    assert not (tmp_path / "x.h5").exists()


def test_train_portraits_with_an_image_size_too_large_for_memory_is_one_line(tmp_path, monkeypatch, capsys):
    code, _, err = run_pcae(monkeypatch, capsys, "train-portraits", "--out", tmp_path / "run",
                            "--encoder", "dlib", "--image-size", "9000")
    assert code == 1 and err.count("\n") == 1, err
    assert "--image-size 9000: 480 faces of 9000x9000 would need about" in err
    assert not (tmp_path / "run").exists()


# ----------------------------------------------------------------------------- option values

@pytest.mark.parametrize("seed", ["-1", str(2 ** 70)])
def test_a_seed_out_of_range_is_a_usage_error(tmp_path, monkeypatch, capsys, seed):
    code, _, err = run_pcae(monkeypatch, capsys, "train", "--out", tmp_path / "run", "--steps", "1",
                            "--seed", seed)
    assert code == 2 and "seed must be a whole number from 0 to 4294967295" in err, err
    assert "Traceback" not in err and not (tmp_path / "run").exists()


@pytest.mark.parametrize("args", [["sample", "ckpt.pt", "--out", "grid.jpg"],
                                  ["search", "latents", "id:0", "--out", "n.txt"],
                                  ["portrait", "photo.jpg", "--out", "p.gif"]])
def test_an_image_output_not_named_png_is_a_usage_error(tmp_path, monkeypatch, capsys, args):
    monkeypatch.chdir(tmp_path)
    code, _, err = run_pcae(monkeypatch, capsys, *args)
    assert code == 2 and "pcae writes PNG images here; give a name ending in .png" in err, err
    assert os.listdir(tmp_path) == []


def test_an_output_name_of_240_bytes_is_written(tmp_path, monkeypatch, capsys):
    folder = tmp_path / "photos"
    folder.mkdir()
    for i in range(12):
        Image.fromarray(_gradient()).save(folder / f"p{i}.png")
    out = tmp_path / ("n" * 237 + ".h5")  # 240 bytes: the file system allows 255
    code, _, err = run_pcae(monkeypatch, capsys, "data", "import", f"folder:{folder}", out)
    assert code == 0, err
    assert out.exists() and [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


# ----------------------------------------------------------------------------- interruptions, races

def test_ctrl_c_during_data_import_stops_it_even_inside_a_finaliser(tmp_path, monkeypatch, capsys):
    """The signal lands while a weakref callback runs (h5py closes its objects in those); a
    KeyboardInterrupt raised there would be printed as "ignored" and the import would go on."""
    class Thing:
        pass

    def progress(n):
        thing = Thing()
        hit = threading.Event()
        weakref.finalize(thing, lambda: (os.kill(os.getpid(), signal.SIGINT), hit.wait(0.2)))
        del thing

    from pcae.data import import_dataset
    out = tmp_path / "x.h5"
    with pytest.raises(KeyboardInterrupt):
        import_dataset("fashion-mnist", out, chunk_size=100, progress=progress)
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_train_on_a_full_disk_is_one_line(tmp_path, monkeypatch, capsys):
    real_flush = logging.FileHandler.flush

    def flush(self):  # train.log's first write meets a full disk
        if self.baseFilename.endswith("train.log"):
            raise OSError(errno.ENOSPC, "No space left on device")
        real_flush(self)

    monkeypatch.setattr(logging.FileHandler, "flush", flush)
    code, out, err = run_pcae(monkeypatch, capsys, "train", "--out", tmp_path / "run", "--steps", "2",
                              "--channels", "8", "--n-layers", "1", "--image-size", "8")
    assert code == 1, err
    assert err.count("\n") == 1 and err.startswith("error: the disk is full"), err
    assert "Logging error" not in err + out


def test_a_reader_never_finishes_a_live_writers_commit(tmp_path):
    """search while embed --force commits: the reader waits for the writer's own renames."""
    from pcae.files import STAGING_PREFIX, _host_tag
    from pcae.outputs import JOURNAL, recover_files

    writer = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        staging = tmp_path / f"{STAGING_PREFIX}pid{writer.pid}-{_host_tag()}.abc"
        staging.mkdir()
        (staging / "latents.h5").write_text("new")
        (tmp_path / "latents.h5").write_text("old")
        (tmp_path / JOURNAL).write_text(json.dumps({"staging": staging.name, "names": ["latents.h5"]}))

        def writer_finishes():  # what the writer itself does right after its journal
            os.replace(staging / "latents.h5", tmp_path / "latents.h5")
            (tmp_path / JOURNAL).unlink()
            staging.rmdir()

        timer = threading.Timer(0.3, writer_finishes)
        timer.start()
        assert recover_files(tmp_path) is False  # waited; moved nothing itself
        timer.join()
        assert (tmp_path / "latents.h5").read_text() == "new" and not (tmp_path / JOURNAL).exists()
    finally:
        writer.kill()
        writer.wait()


def test_output_to_a_closed_pipe_ends_quietly(tmp_path):
    """`pcae ... | head -n 1`: the reader went away; no traceback, no error, exit 0."""
    read, write = os.pipe()
    os.close(read)
    env = {**os.environ, "PCAE_DATA_BUNDLED": "1"}
    done = subprocess.run([sys.executable, "-c", "from pcae.cli import main; main()", "data", "info",
                           "fashion-mnist"], stdout=write, stderr=subprocess.PIPE, env=env, cwd=ROOT,
                          timeout=120)
    os.close(write)
    assert done.returncode == 0 and done.stderr == b"", done.stderr.decode()


def test_a_search_that_meets_a_commit_half_way_reads_the_folder_again(tmp_path, monkeypatch, capsys):
    """The writer's renames land between the reader's reads of index and latents: the three files
    disagree for a moment; the reader opens them again instead of calling them another embedding's."""
    import embeddings.folder as lf

    out = tmp_path / "lat"
    code, _, err = run_pcae(monkeypatch, capsys, "embed", "--encoder", "onehot", "--out", out)
    assert code == 0, err
    real, calls = lf._open_checked, []

    def open_checked(folder):
        calls.append(folder)
        if len(calls) == 1:  # a commit renames index.faiss into place while this read runs
            data = (folder / "index.faiss").read_bytes()
            (folder / "index.faiss").unlink()
            (folder / "index.faiss").write_bytes(data)
            raise lf.PcaeError(f"{folder}: index.faiss is not the file index_infos.json was written with")
        return real(folder)

    monkeypatch.setattr(lf, "_open_checked", open_checked)
    code, printed, err = run_pcae(monkeypatch, capsys, "search", out, "id:0", "-k", "3")
    assert code == 0 and len(calls) == 2, err
    assert len(printed.splitlines()) == 4


def test_data_import_to_a_name_that_is_not_hdf5_is_refused(tmp_path, monkeypatch, capsys):
    code, _, err = run_pcae(monkeypatch, capsys, "data", "import", "fashion-mnist", tmp_path / "out.txt")
    assert code == 1 and err.strip() == (f"error: {tmp_path / 'out.txt'}: pcae writes an HDF5 file here; "
                                         "give a name ending in .h5 or .hdf5 (not .txt)"), err
    assert list(tmp_path.iterdir()) == []


def test_a_text_file_given_as_a_checkpoint_is_one_line(tmp_path, monkeypatch, capsys):
    notes = tmp_path / "notes.pt"
    notes.write_text("root:x:0:0:root:/root:/bin/bash\n")  # the unpickler raised IndexError on this
    code, _, err = run_pcae(monkeypatch, capsys, "evaluate", notes)
    assert code == 1 and err.count("\n") == 1 and "not a torch file" in err, err


def test_a_user_with_no_home_and_no_password_entry_still_has_a_cache(monkeypatch):
    """A service's user (issue 35): no $HOME and no password entry, where Path.home() raises."""
    from pathlib import Path

    from pcae.files import cache_root

    for name in ("PCAE_CACHE_DIR", "XDG_CACHE_HOME", "HOME"):
        monkeypatch.delenv(name, raising=False)

    def no_home():
        raise RuntimeError("Could not determine home directory.")

    monkeypatch.setattr(Path, "home", staticmethod(no_home))
    root = cache_root()
    assert root.name.startswith("pcae-cache-") and root.parent.is_dir()


def test_a_file_name_that_is_not_utf8_is_indexed_and_drawn_from(tmp_path):
    """issue 35 (odd locales): a Latin-1 file name, or any non-ASCII one where Python runs with
    LC_ALL=C and PYTHONUTF8=0, reaches Python as surrogates, which HDF5 text cannot hold: `pcae
    embed` failed on the whole folder. The latents store each file's own bytes (as `data import`
    does), so search draws the neighbour from that very file; the face cache names it with escapes."""
    from embeddings.embed import embed
    from embeddings.search import draw_neighbours, search_folder
    from embeddings.store import LatentStore
    from pcae.faces import list_photos

    root = tmp_path / "photos"
    for person in ("a", "b"):
        (root / person).mkdir(parents=True)
        for k in range(3):
            Image.new("L", (16, 16), 40 * k).save(root / person / f"{k}.png")
    os.mkdir(os.fsencode(root) + b"/Zo\xeb")
    for bad in (b"/a/Jos\xe9.png", b"/Zo\xeb/1.png"):
        Image.new("L", (16, 16), 250).save(os.fsencode(root) + bad)
    infos = embed("onehot", None, f"folder:{root}", tmp_path / "lat")
    assert infos["count"] == 8 and not infos["skipped"], infos
    with LatentStore(tmp_path / "lat" / "latents.h5") as store:
        files = list(store.column("files", np.arange(len(store))))
        assert "a/Jos\udce9.png" in files and "Zo\udceb/1.png" in files, files
        odd = int(store.ids[files.index("a/Jos\udce9.png")])
    result = search_folder(tmp_path / "lat", f"id:{odd}", k=7)
    assert len(result["neighbours"]) == 7 and draw_neighbours(tmp_path / "lat", result, tmp_path / "n.png").is_file()
    again = search_folder(tmp_path / "lat", f"id:{int(result['neighbours'][0]['id'])}", k=7)  # the odd one, drawn
    assert odd in [n["id"] for n in again["neighbours"]]
    draw_neighbours(tmp_path / "lat", again, tmp_path / "m.png")

    photos = {photo.name: photo for photo in list_photos(f"folder:{root}")[0]}
    assert photos["a/Jos\\udce9.png"].person == "a" and photos["Zo\\udceb/1.png"].person == "Zo\\udceb"
    assert photos["a/Jos\\udce9.png"].load().size == (16, 16)


def test_a_run_folder_inside_its_own_data_folder_is_refused(tmp_path, monkeypatch, capsys):
    """issue 35 (outputs onto their inputs): `pcae train --data folder:cls --out cls/run` made
    cls/run a third class of its own data (samples.png, curve.png), and --resume then failed with
    "3 classes, the model was built for 2". Refused before anything is read or written."""
    for name in ("x", "y"):
        (tmp_path / "cls" / name).mkdir(parents=True)
        for i in range(12):
            Image.fromarray(_gradient()).save(tmp_path / "cls" / name / f"{i}.png")
    monkeypatch.chdir(tmp_path)
    for out in ("cls/run", "cls/x/run"):
        code, _, err = run_pcae(monkeypatch, capsys, "train", "--data", "folder:cls", "--steps", 2, "--out", out)
        assert code == 1 and err.strip().splitlines()[-1] == (
            f"error: {out} is inside the data folder cls: the run's images (samples.png, curve.png) would "
            "become data of the next run; choose an --out outside it"), err
        assert not (tmp_path / out).exists()
    code, _, err = run_pcae(monkeypatch, capsys, "train", "--data", "folder:cls", "--image-size", 8, "--steps", 1,
                            "--channels", 3, "--n-layers", 0, "--eval-images", 2, "--judge-images", 0,
                            "--batch-size", 4, "--out", "cls-run")  # beside it: fine
    assert code == 0, err


def test_pcae_traceback_shows_where_an_error_came_from(tmp_path):
    """A user's error is one line; PCAE_TRACEBACK=1 prints the traceback above it (docs/faults.md),
    for an error that is really a bug in pcae."""
    command = [sys.executable, "-m", "pcae", "search", str(tmp_path / "nothing"), "id:0"]
    plain = subprocess.run(command, capture_output=True, text=True)
    shown = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "PCAE_TRACEBACK": "1"})
    line = f"error: {tmp_path / 'nothing'}: no such latents folder"
    assert plain.returncode == shown.returncode == 1 and plain.stderr.strip() == line, plain.stderr
    assert shown.stderr.startswith("Traceback") and "open_folder" in shown.stderr, shown.stderr
    assert shown.stderr.strip().splitlines()[-1] == line
