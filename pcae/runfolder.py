"""The run folder a training run writes, and the rules for one that exists.

    last.pt, best.pt     checkpoints (pcae.checkpoint); best.pt tracks the task's test metric
    metrics.jsonl        one JSON row per log/eval point: {"step", "split": "train"|"test", ...}
    samples/step_*.png   sample grids during training; samples.png is the final one
    summary.json         config, data source, best/final test metric, wall time, images/s
    curve.png            the training curve
    train.log            what happened, including files the data layer skipped

A folder that exists is refused unless the run resumes it (--resume) or replaces it (--force,
pcae's own files only); a folder left by a run that failed before its first checkpoint holds
nothing to lose and is replaced without --force. The folder is written through pcae.outputs'
one mechanism (`open_run_folder`): one writer at a time, and the run --force replaces kept aside
until the new run's first last.pt.
"""
from __future__ import annotations

import json
import logging
import math
import os
import sys
from contextlib import contextmanager
from pathlib import Path

from pcae.errors import PcaeError
from pcae.files import atomic_path, read_rows, written_by_pcae
from pcae.outputs import output_folder, refuse_not_ours

RUN_FILES = ("last.pt", "metrics.jsonl", "summary.json", "train.log")  # mark a pcae run folder
# everything a run writes into its folder: what --force replaces (nothing else is touched)
RUN_OUTPUTS = RUN_FILES + ("best.pt", "samples.png", "curve.png")
SAMPLES_DIR = "samples"  # holds step_*.png
BOARD_DIR = "tensorboard"  # holds events.out.tfevents.* (--tensorboard)

read_metrics = read_rows  # the rows of metrics.jsonl (pcae's rows only)


def write_json(data: dict, path: str | os.PathLike) -> Path:
    path = Path(path)
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2, default=str) + "\n")
    return path


def run_paths(out: Path) -> list[Path]:
    """The paths in a run folder that a pcae run writes (those that exist, links included)."""
    paths = [out / name for name in RUN_OUTPUTS]
    if (out / SAMPLES_DIR).is_dir():
        paths += sorted((out / SAMPLES_DIR).glob("step_*.png"))
    if (out / BOARD_DIR).is_dir():
        paths += sorted((out / BOARD_DIR).glob("events.out.tfevents.*"))
    return [p for p in paths if p.exists() or p.is_symlink()]


def open_board(out: Path):
    """A TensorBoard writer into OUT/tensorboard (`tensorboard --logdir OUT` lists the run); one
    line saying how to install it when it is not (board_writer: checked before any long stage)."""
    return board_writer()(log_dir=str(out / BOARD_DIR))


def board_writer():
    """TensorBoard's SummaryWriter class; PcaeError saying how to install it when it is not."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise PcaeError("--tensorboard needs the tensorboard package: pip install 'pcae[tensorboard]'") from None
    return SummaryWriter


def log_file(out: Path) -> logging.Handler:
    """The handler writing OUT/train.log. A write that fails (a full disk) is raised as the run's
    error, naming the file, where logging would print a traceback for each line and go on."""

    class LogFile(logging.FileHandler):
        def handleError(self, record):
            error = sys.exc_info()[1]
            if isinstance(error, OSError) and error.filename is None:
                error.filename = self.baseFilename
            raise error

    handler = LogFile(out / "train.log")
    handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%Y-%m-%d %H:%M:%S"))
    return handler


def failed_start(out: Path) -> bool:
    """A folder that a run which failed before its first checkpoint left behind: nothing in it but
    pcae's own logs (train.log, metrics.jsonl, samples, by content) and pcae's temp files, and no
    checkpoint or summary. A new run replaces it without --force (nothing there can be resumed or
    lost)."""
    if not out.is_dir() or any((out / name).exists() for name in ("last.pt", "best.pt", "summary.json")):
        return False
    entries = list(out.iterdir())
    ours = lambda e: (e.name in RUN_OUTPUTS and written_by_pcae(e) is True) \
        or (e.name.startswith(".") and e.name.endswith(".tmp") and e.is_file() and not e.is_symlink()) \
        or (e.name == SAMPLES_DIR and e.is_dir() and not e.is_symlink()
            and all(p.name.startswith("step_") and written_by_pcae(p) is True for p in e.iterdir()))
    return bool(entries) and all(ours(e) for e in entries) and (out / "train.log").is_file()


def _check(out: Path, resume: bool, force: bool) -> None:
    if out.exists() and not out.is_dir():
        raise PcaeError(f"{out}: exists and is not a folder")
    if resume:
        if not (out / "last.pt").exists():
            raise PcaeError(f"{out}: nothing to resume (no last.pt in it)")
        log = out / "train.log"
        if log.is_symlink() or (log.exists() and not log.is_file()):
            raise PcaeError(f"{log}: is a link or not a file; --resume appends to pcae's own log only "
                            "(replace it with a copy, or move it away)")
        return
    if out.exists() and any(out.iterdir()) and not failed_start(out):
        if not force:
            raise PcaeError(f"{out}: already exists; pass --resume to continue it or --force to "
                            "replace it")
        if not any((out / name).exists() for name in RUN_FILES):
            raise PcaeError(f"{out}: does not look like a pcae run folder; refusing to replace it")
        refuse_not_ours(run_paths(out))


def _folder(out: Path):
    return output_folder(out, "run folder", run_paths, committed=lambda folder: (folder / "last.pt").exists())


def check_run_folder(out: Path, resume: bool, force: bool, data: str = "") -> None:
    """Refuse to write a run folder unless told: --resume continues it, --force replaces it (pcae's
    own files of it only); and refuse one inside its own data folder (`data` "folder:PATH"), whose
    next reading would take the run's images for data. Writes nothing, except to finish what a
    killed writer left (a run a killed --force was replacing comes back)."""
    if resume and force:
        raise ValueError("resume and force exclude each other")
    kind, _, folder = data.partition(":")
    if kind == "folder" and folder and out.resolve().is_relative_to(Path(folder).expanduser().resolve()):
        raise PcaeError(f"{out} is inside the data folder {folder}: the run's images (samples.png, "
                        "curve.png) would become data of the next run; choose an --out outside it")
    if out.is_dir():
        with _folder(out):
            _check(out, resume, force)
    else:
        _check(out, resume, force)


@contextmanager
def open_run_folder(out: Path, resume: bool, force: bool):
    """The run folder, held for one run (pcae.outputs.output_folder): checked again under its
    lock; a failed start's leftovers cleared; with --force the old run set aside until the caller
    commits (at the new run's first last.pt), put back if the run ends before. Yields the
    OutputFolder."""
    with _folder(out) as folder:
        _check(out, resume, force)
        if not resume and failed_start(out):
            folder.clear()
        elif not resume and force and folder.existing():
            folder.replace()
        empty = out / SAMPLES_DIR  # left empty once its grids are set aside
        if empty.is_dir() and not empty.is_symlink() and not any(empty.iterdir()):
            empty.rmdir()
        yield folder


def _levels(configs) -> int:
    """The number of intensity levels a model's configs name (256 when they name none)."""
    if isinstance(configs, dict):
        if isinstance(configs.get("levels"), int):
            return configs["levels"]
        for value in configs.values():
            found = _levels(value)
            if found != 256:
                return found
    return 256

def diverged_warnings(summary: dict, configs: dict) -> list[str]:
    """What a finished run's numbers say went wrong: a test bits/dim worse than a uniform guess
    over the levels (log2 256 = 8), which only a diverged run reaches (e.g. --lr 1e9)."""
    if summary.get("metric") != "bpd":
        return []
    final = summary.get("final_test_bpd")
    uniform = math.log2(_levels(configs))
    if final is None or final <= uniform:
        return []
    lr = (summary.get("config") or {}).get("lr")
    return [f"test bits/dim {final:.4g} is worse than a uniform guess over the levels "
            f"({uniform:.2f}): training diverged; lower --lr (it was {lr:g})"]


def brief(value, most: int = 20):
    """`value` for a log line: lists and dicts longer than `most` become their length (a portrait
    model's configs name every person it knows: thousands at LFW's size)."""
    if isinstance(value, dict):
        return {k: brief(v, most) for k, v in value.items()} if len(value) <= most else f"{{{len(value)} entries}}"
    if isinstance(value, (list, tuple)):
        return [brief(v, most) for v in value] if len(value) <= most else f"[{len(value)} items]"
    return value


def skipped_items(tree, where: str = ""):
    """(path, entry) for each entry of every list named "skipped" in nested dicts: the files a
    data source or a face cache left out, which `brief` shortens to a count."""
    if isinstance(tree, dict):
        for key, value in tree.items():
            path = f"{where} {key}".strip()
            if key == "skipped" and isinstance(value, list):
                yield from ((where, entry) for entry in value)
            else:
                yield from skipped_items(value, path)
