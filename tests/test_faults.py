"""Faults from the machine and the user, at their root (issue 17): a full disk is one line naming
the file and nothing written before is lost; Ctrl-C is one line and exit 130, whenever it comes.

A real full disk needs a small filesystem (root, a tmpfs); here the disk's free space is made to
read as nearly none, which is what every writer checks or is checked by."""
from __future__ import annotations

import builtins
import collections
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import run_pcae

from pcae.errors import DiskFull, Interrupted
from pcae.files import atomic_path
from pcae.outputs import atomic_files

Usage = collections.namedtuple("Usage", "total used free")


@pytest.fixture
def full_disk(monkeypatch):
    """The disk of every path reads as having 10 kB free."""
    monkeypatch.setattr(shutil, "disk_usage", lambda path: Usage(1 << 30, (1 << 30) - 10_000, 10_000))


def hidden(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def test_a_checkpoint_that_does_not_fit_is_disk_full_and_the_old_one_stays(tmp_path, monkeypatch):
    from pcae.checkpoint import load_checkpoint, save_checkpoint

    path = tmp_path / "last.pt"
    save_checkpoint({"kind": "pixelcnn", "configs": {}, "state_dicts": {}, "step": 1}, path)
    before = path.read_bytes()

    def short_write(obj, f):  # what torch.save raises when the disk fills under it
        Path(f).write_bytes(b"PK partial")
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 3100800 vs 3100692")

    monkeypatch.setattr(torch, "save", short_write)
    monkeypatch.setattr(shutil, "disk_usage", lambda p: Usage(1 << 30, 1 << 30, 0))
    with pytest.raises(DiskFull, match=f"the disk is full \\(writing {path}\\)"):
        save_checkpoint({"kind": "pixelcnn", "configs": {}, "state_dicts": {}, "step": 2}, path)
    assert path.read_bytes() == before and load_checkpoint(path)["step"] == 1
    assert hidden(tmp_path) == []  # the temp file is gone


def test_an_error_that_is_not_the_disk_stays_itself(tmp_path, monkeypatch):
    """Plenty of space: a RuntimeError from a writer is not called a full disk."""
    with pytest.raises(RuntimeError, match="something else"):
        with atomic_path(tmp_path / "x.bin"):
            raise RuntimeError("something else")
    assert list(tmp_path.iterdir()) == []


def test_a_latents_folder_that_does_not_fit_leaves_the_old_one_whole(tmp_path, full_disk):
    from embeddings.store import LatentWriter

    folder = tmp_path / "lat"
    folder.mkdir()
    (folder / "latents.h5").write_bytes(b"old latents")
    with pytest.raises(DiskFull, match="the disk is full"):
        with atomic_files(folder, ["latents.h5"]) as tmp:
            with LatentWriter(tmp["latents.h5"], 4, {}) as w:
                w.append(np.zeros((1000, 4)), np.arange(1000))
    assert (folder / "latents.h5").read_bytes() == b"old latents"
    assert hidden(folder) == []  # no staging folder left taking space


def test_cli_data_import_on_a_full_disk_is_one_line(tmp_path, monkeypatch, capsys, full_disk):
    import h5py

    out = tmp_path / "x.h5"
    with h5py.File(out, "w") as f:  # an earlier import: what --force may replace
        f.attrs["format"] = "pcae-images/1"
    old = out.read_bytes()
    code, _, err = run_pcae(monkeypatch, capsys, "data", "import", "fashion-mnist", out, "--force")
    assert code == 1, err
    assert err.strip() == f"error: the disk is full (writing {out}): free some space and run again; files written before are intact"
    assert out.read_bytes() == old and hidden(tmp_path) == []


def test_ctrl_c_while_the_cli_is_imported_is_exit_130(monkeypatch, capsys):
    import sys

    from pcae import entry

    real_import = builtins.__import__

    def interrupted(name, *args, **kwargs):
        if name == "pcae.cli":
            raise KeyboardInterrupt
        return real_import(name, *args, **kwargs)

    monkeypatch.delitem(sys.modules, "pcae.cli")
    monkeypatch.setattr(builtins, "__import__", interrupted)
    with pytest.raises(SystemExit) as info:
        entry.main()
    assert info.value.code == 130 and capsys.readouterr().err.strip() == "interrupted"


def test_an_interrupted_comparison_is_exit_130_in_one_line(tmp_path, monkeypatch, capsys):
    import eval.compare

    def interrupted(*args, **kwargs):
        raise Interrupted("training pixelcnn-unconditional was interrupted; its checkpoint is X/last.pt")

    monkeypatch.setattr(eval.compare, "compare_decoders", interrupted)
    code, _, err = run_pcae(monkeypatch, capsys, "compare-decoders", "--out", tmp_path / "cmp", "--quick")
    assert code == 130, err
    assert err.strip() == "training pixelcnn-unconditional was interrupted; its checkpoint is X/last.pt"


def test_a_killed_writers_temp_file_goes_with_the_next_write_in_its_folder(tmp_path):
    """A `data import` killed while writing a.h5 leaves .a.h5.pidN...tmp; writing b.h5 there removes it."""
    import subprocess

    dead = subprocess.Popen(["true"])
    dead.wait()  # a pid no process has now
    stale = tmp_path / f".a.h5.pid{dead.pid}.x1.h5.tmp"
    stale.write_bytes(b"half")
    mine = tmp_path / "notes.tmp"  # not pcae's: kept
    mine.write_text("mine")
    with atomic_path(tmp_path / "b.h5") as tmp:
        tmp.write_bytes(b"new")
    assert not stale.exists() and mine.read_text() == "mine" and (tmp_path / "b.h5").read_bytes() == b"new"


def test_once_the_command_is_over_ctrl_c_cannot_change_its_exit(monkeypatch):
    """Ctrl-C while the interpreter tears down (after outputs are written) used to print a
    traceback or turn exit 0 into -2: the entry point ignores it once the command has returned."""
    import signal

    import pcae.cli
    from pcae import entry

    calls = []
    monkeypatch.setattr(pcae.cli, "main", lambda: None)
    monkeypatch.setattr(signal, "signal", lambda signum, handler: calls.append((signum, handler)))
    entry.main()
    assert calls == [(signal.SIGINT, signal.SIG_IGN)]


def test_an_output_path_that_is_a_folder_is_named_as_given(tmp_path):
    from pcae.errors import PcaeError
    from pcae.files import atomic_path

    (tmp_path / "mine").mkdir()
    with pytest.raises(PcaeError, match=f"^{tmp_path / 'mine'}: is a folder, a file was expected$"):
        with atomic_path(tmp_path / "mine"):
            pass
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine"]  # no temp file was made


def test_force_replaces_only_files_pcae_wrote(tmp_path):
    import torch

    from pcae.errors import PcaeError
    from pcae.files import refuse_existing, written_by_pcae
    from pcae.images import plot_curve, save_grid

    grid = save_grid(torch.zeros(2, 1, 4, 4, dtype=torch.uint8), 2, tmp_path / "grid.png")
    curve = plot_curve([{"step": 1, "split": "train", "bpd": 3.0}], "bpd", tmp_path / "curve.png")
    mine = tmp_path / "mine.png"
    from PIL import Image
    Image.new("L", (4, 4)).save(mine)  # a PNG, but the user's
    (tmp_path / "notes.txt").write_text("mine")
    assert written_by_pcae(grid) and written_by_pcae(curve)
    assert not written_by_pcae(mine) and not written_by_pcae(tmp_path / "notes.txt")
    refuse_existing(grid, force=True)  # allowed
    for path in (mine, tmp_path / "notes.txt"):
        with pytest.raises(PcaeError, match="is not a file pcae wrote; --force replaces only pcae's outputs"):
            refuse_existing(path, force=True)
    with pytest.raises(PcaeError, match="already exists; pass --force"):
        refuse_existing(grid, force=False)
    folder = tmp_path / "samples"
    folder.mkdir()
    save_grid(torch.zeros(1, 1, 4, 4, dtype=torch.uint8), 1, folder / "sample_000.png")
    assert written_by_pcae(folder)
    (folder / "mine.txt").write_text("mine")
    assert not written_by_pcae(folder)
