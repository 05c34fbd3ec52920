"""Shared option values are checked in one place (pcae/options.py): every command refuses the
same bad values the same way, in one line, with no traceback; and unsafe files get no advice."""
from __future__ import annotations

import pytest
import torch
from helpers import run_pcae

from pcae.batches import resolve_device
from pcae.errors import PcaeError
from pcae.options import check_device, check_precision, check_split, check_temperature
from pcae.train import TrainConfig


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    from pcae.tasks.pixelcnn import PixelCNNSpec
    from pcae.train import train

    mp = pytest.MonkeyPatch()
    mp.setenv("PCAE_DATA_BUNDLED", "1")
    out = tmp_path_factory.mktemp("opt") / "run"
    train(TrainConfig(out=str(out), steps=1, batch_size=4, image_size=8, eval_images=8, n_samples=1),
          PixelCNNSpec(channels=4, n_layers=0))
    mp.undo()
    return out / "last.pt"


def test_checks_accept_and_refuse():
    assert check_device("cpu") == "cpu" and check_device("cuda:3") == "cuda:3"
    for bad in ("tpu", "cuda:", "cuda:x", "CPU", ""):
        with pytest.raises(ValueError, match="device must be cpu, cuda or cuda:N"):
            check_device(bad)
    assert check_split("test") == "test" and check_precision("bf16") == "bf16"
    with pytest.raises(ValueError, match="split must be train or test, got 'val'"):
        check_split("val")
    with pytest.raises(ValueError, match="precision must be one of auto, fp32, bf16, got .fp8."):
        check_precision("fp8")
    assert check_temperature(0) == 0.0
    for bad in (float("inf"), float("nan"), -1):
        with pytest.raises(ValueError, match="temperature must be finite and >= 0"):
            check_temperature(bad)
    with pytest.raises(ValueError, match="temperature must be finite"):
        TrainConfig(temperature=float("inf"))
    with pytest.raises(ValueError, match="device must be cpu, cuda or cuda:N"):
        TrainConfig(device="tpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_a_valid_cuda_device_without_cuda_is_one_clear_error():
    with pytest.raises(PcaeError, match="--device cuda:0: no CUDA device is available here"):
        resolve_device("cuda:0")
    TrainConfig(device="cuda:0")  # a valid value; only resolving it needs the device


@pytest.mark.parametrize("args, words, code", [
    (["evaluate", "CKPT", "--split", "val"], "split must be train or test, got 'val'", 2),
    (["evaluate", "CKPT", "--device", "tpu"], "device must be cpu, cuda or cuda:N, got 'tpu'", 2),
    (["evaluate", "CKPT", "--precision", "fp8"], "precision must be one of auto, fp32, bf16", 2),
    (["sample", "CKPT", "--temperature", "inf", "--out", "OUT"], "temperature must be finite", 2),
    (["embed", "--encoder", "onehot", "--out", "OUT", "--split", "val"], "split must be train or test", 2),
])
def test_every_command_refuses_bad_shared_values(args, words, code, checkpoint, tmp_path, monkeypatch,
                                                 capsys):
    args = [str(checkpoint) if a == "CKPT" else str(tmp_path / "o.png") if a == "OUT" else a for a in args]
    got, out, err = run_pcae(monkeypatch, capsys, *args)
    assert got == code and words in err and "Traceback" not in err + out
    assert not (tmp_path / "o.png").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_index_on_a_cpu_machine_is_one_line(checkpoint, monkeypatch, capsys):
    code, _, err = run_pcae(monkeypatch, capsys, "evaluate", checkpoint, "--device", "cuda:0")
    assert code == 1 and err.strip() == "error: --device cuda:0: no CUDA device is available here " \
                                        "(use --device cpu)"


class Evil:
    """A class weights-only loading refuses to rebuild."""


def test_unsafe_pickles_get_no_weights_only_advice(tmp_path, monkeypatch, capsys):
    import re

    path = tmp_path / "evil.pt"
    torch.save({"x": Evil()}, path)
    code, _, err = run_pcae(monkeypatch, capsys, "evaluate", path)
    assert code == 1 and "weights_only" not in err and "likely succeed" not in err
    assert re.search(r"not a pcae checkpoint: it holds a pickled [\w.]*Evil object", err), err
    assert err.count("\n") == 1


@pytest.mark.parametrize("args, words", [
    (["--image-size", "9000"], "images of 1x9000x9000 in memory (--image-size 9000) would need"),
    (["--channels", "1000000"], "(--channels, --n-layers) would need about"),
    (["--bottleneck", "1000000000"], "the conv encoder (--bottleneck 1000000000"),
])
def test_sizes_that_cannot_fit_are_refused_before_allocating(args, words, tmp_path, monkeypatch, capsys):
    code, out, err = run_pcae(monkeypatch, capsys, "train-ae", *args, "--out", tmp_path / "r", "--steps", 1)
    assert code == 1 and words in err and "this machine has" in err and err.count("\n") == 1, err
    assert not (tmp_path / "r").exists()


def test_parameter_count_is_exact():
    from pcae.pixelcnn import GatedPixelCNN, PixelCNNConfig

    for config in (PixelCNNConfig(channels=6, n_layers=2),
                   PixelCNNConfig(image_channels=3, channels=6, n_layers=1, cond_dim=4,
                                  spatial_cond=True, spatial_channels=5, image_size=(9, 7)),
                   PixelCNNConfig(gated=False, channels=4, head_channels=8, cond_dim=2)):
        model = GatedPixelCNN(config)
        assert config.parameter_count() == sum(p.numel() for p in model.parameters())


def test_a_full_disk_is_one_line_and_the_previous_checkpoint_survives(tmp_path, monkeypatch, capsys):
    import errno

    from pcae.checkpoint import load_checkpoint

    out = tmp_path / "run"
    args = ["train", "--out", out, "--steps", 2, "--batch-size", 4, "--image-size", 8, "--channels", 4,
            "--n-layers", 0, "--eval-images", 8, "--n-samples", 1, "--judge-images", 0,
            "--checkpoint-every", 1, "--eval-every", 0]
    real_save, calls = torch.save, []

    def full_disk(obj, f, *a, **k):
        calls.append(f)
        if len(calls) > 1:  # the first checkpoint fits, the second finds the disk full
            raise OSError(errno.ENOSPC, "No space left on device", str(f))
        return real_save(obj, f, *a, **k)

    monkeypatch.setattr(torch, "save", full_disk)
    code, _, err = run_pcae(monkeypatch, capsys, *args)
    assert code == 1 and "Traceback" not in err and err.count("\n") == 1
    assert err.startswith("error: the disk is full") and "files written before are intact" in err
    monkeypatch.setattr(torch, "save", real_save)
    assert load_checkpoint(out / "last.pt")["step"] == 1  # the previous checkpoint, whole
    assert not [p.name for p in out.iterdir() if p.name.endswith(".tmp")]  # no half-written file


def bomb_png(path, width: int, height: int):
    """A valid PNG header claiming width x height 8-bit grey pixels, with almost no data: PIL
    learns the size from the header alone, decoding it would allocate width*height bytes."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64))
                     + chunk(b"IEND", b""))
    return path


@pytest.mark.parametrize("side", [10_000, 50_000])  # PIL warns only / PIL refuses
def test_decompression_bombs_are_refused_before_decoding(side, tmp_path, monkeypatch, capsys):
    from pcae.data import load_dataset
    from pcae.files import open_image

    bomb = bomb_png(tmp_path / "bomb.png", side, side)
    with pytest.raises(PcaeError, match=r"bomb.png: (refused|.*megapixels)"):
        open_image(bomb)
    # a photo for portrait: one line before any model is loaded
    code, _, err = run_pcae(monkeypatch, capsys, "portrait", bomb, "--checkpoint", tmp_path / "x.pt",
                            "--out", tmp_path / "g.png")
    assert code == 1 and "Traceback" not in err and err.strip().count("\n") == 0, err
    assert "bomb.png" in err and ("megapixels" in err or "refused" in err), err
    # a folder data source skips it, named, and reads the others
    folder = tmp_path / "images"
    folder.mkdir()
    bomb.rename(folder / "bomb.png")
    from PIL import Image
    for i in range(2):
        Image.new("L", (8, 8), 40 * i).save(folder / f"ok{i}.png")
    ds = load_dataset(f"folder:{folder}", "train", image_size=8)
    assert any(s["file"] == "bomb.png" for s in ds.info["skipped"]), ds.info["skipped"]


TINY = ["--steps", 3, "--batch-size", 4, "--image-size", 8, "--channels", 4, "--n-layers", 0,
        "--eval-images", 8, "--n-samples", 1, "--judge-images", 0, "--eval-every", 0]


def test_a_diverged_run_says_so(tmp_path, monkeypatch, capsys):
    import json

    from pcae.runfolder import diverged_warnings

    code, out, err = run_pcae(monkeypatch, capsys, "train", "--out", tmp_path / "run", *TINY, "--lr", 1e9)
    summary = json.loads((tmp_path / "run/summary.json").read_text())
    bpd = summary["final_test_bpd"]
    if code == 0:  # finite but worse than guessing: a warning, in summary.json and train.log
        assert bpd > 8 and "training diverged; lower --lr (it was 1e+09)" in err, (bpd, err)
        assert summary["warnings"] and "warning: test bits/dim" in (tmp_path / "run/train.log").read_text()
    else:  # or the loss went non-finite first: the existing one-line error
        assert "not finite" in err and "Traceback" not in err, err
    # the rule itself, both ways
    assert diverged_warnings({"metric": "bpd", "final_test_bpd": 4e27, "config": {"lr": 1e9}}, {})
    assert not diverged_warnings({"metric": "bpd", "final_test_bpd": 3.2, "config": {"lr": 4e-3}}, {})
    assert diverged_warnings({"metric": "bpd", "final_test_bpd": 3.2, "config": {"lr": 1}},
                             {"model": {"levels": 4}})  # 2 bits/dim is uniform over 4 levels
    code, out, err = run_pcae(monkeypatch, capsys, "train", "--out", tmp_path / "ok", *TINY)
    assert code == 0 and "diverged" not in err
    assert json.loads((tmp_path / "ok/summary.json").read_text())["warnings"] == []


def test_a_run_that_failed_before_its_first_checkpoint_is_retried_without_force(tmp_path, monkeypatch,
                                                                                 capsys):
    from pcae.runfolder import failed_start

    out = tmp_path / "run"
    out.mkdir()
    (out / "train.log").write_text(f"2026-12-02 10:00:00 new run in {out} (rank 0 of 1, device cpu)\n")
    (out / "metrics.jsonl").write_text("")
    import subprocess
    dead = subprocess.Popen(["true"])
    dead.wait()  # a pid no process has now: its temp file is stale
    stale = out / f".last.pt.pid{dead.pid}.x1.tmp"
    stale.write_bytes(b"half")
    assert failed_start(out)
    code, _, err = run_pcae(monkeypatch, capsys, "train", "--out", out, *TINY)
    assert code == 0, err
    assert (out / "last.pt").is_file() and not stale.exists()
    assert "2026-12-02 10:00:00 new run" not in (out / "train.log").read_text()
    # anything else in the folder (a user's file, a checkpoint) still needs --force / --resume
    assert not failed_start(out)
    user = tmp_path / "kept"
    user.mkdir()
    (user / "train.log").write_text("x")
    (user / "notes.txt").write_text("mine")
    assert not failed_start(user)
    code, _, err = run_pcae(monkeypatch, capsys, "train", "--out", user, *TINY)
    assert code == 1 and "already exists" in err and (user / "notes.txt").read_text() == "mine"
