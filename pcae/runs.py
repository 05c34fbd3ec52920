"""Run folders as a user's commands find them: the newest finished run of a kind, a checkpoint's run.

A finished run is a folder that `pcae.train.train` wrote `summary.json` into (its "kind" is the
task's: "autoencoder", "portrait" or "pixelcnn"); its checkpoint is best.pt, or last.pt where the
run kept no best. Commands that need a model and are not given one (`pcae embed`, `pcae portrait`)
take the newest such run under RUNS_ROOT, the folder the training commands write into by default,
and say which one they took.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from pcae.errors import PcaeError

RUNS_ROOT = Path("runs")  # relative to where the user runs pcae, like the training commands' --out
_DEPTH = 3  # runs/NAME/, runs/GROUP/NAME/ (benchmarks, compare-decoders), one more level


@dataclass(frozen=True)
class RunInfo:
    folder: Path
    checkpoint: Path
    summary: dict

    @property
    def kind(self) -> str:
        return self.summary.get("kind", "")

    @property
    def data(self) -> str | None:
        """The data source the run trained on, as its --data was given."""
        return (self.summary.get("config") or {}).get("data")

    @property
    def data_root(self) -> str | None:
        return (self.summary.get("config") or {}).get("data_root")


def read_run(folder) -> RunInfo | None:
    """The finished run in `folder`, or None (no summary.json, unreadable, or no checkpoint)."""
    folder = Path(folder)
    try:
        summary = json.loads((folder / "summary.json").read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(summary, dict):
        return None
    for name in ("best.pt", "last.pt"):
        if (folder / name).is_file():
            return RunInfo(folder, folder / name, summary)
    return None


def run_of_checkpoint(path) -> RunInfo | None:
    """The finished run a checkpoint file belongs to (its folder), or None."""
    return read_run(Path(path).parent)


def newest_run(kind: str, root=RUNS_ROOT) -> RunInfo | None:
    """The finished run of `kind` under `root` whose summary.json was written last, or None."""
    root = Path(root)
    found = []
    for depth in range(1, _DEPTH + 1):
        for summary in root.glob("/".join(["*"] * depth) + "/summary.json"):
            run = read_run(summary.parent)
            if run is not None and run.kind == kind:
                found.append((summary.stat().st_mtime, str(summary), run))
    return max(found, key=lambda t: t[:2])[2] if found else None


def require_newest_run(kind: str, what: str, how: str, root=RUNS_ROOT) -> RunInfo:
    """newest_run, or a one-line error saying there is none and how to train one."""
    run = newest_run(kind, root)
    if run is None:
        raise PcaeError(f"no {what} under {root}/ (a finished run's summary.json and best.pt): train "
                        f"one with `{how}`, or give --checkpoint")
    return run
