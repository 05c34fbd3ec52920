"""What a resumed run keeps, and which given options conflict with it: one set of rules for
`pcae.train.train(resume=True)`, from Python as from the CLI.

A resumed run goes on with its stored TrainConfig; the run options given again (RUN_FIELDS) are
taken, every other given training, data or model option must mean what the run stores (the same
file by another path and the source's own size count as the same), and `last.pt`'s own fields
(optimizer, random states, metrics) are checked before anything is written. A spec says where its
options live in a checkpoint (`stored`); options the stored model has no use for are UNUSED.
"""
from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any

from pcae.config import TrainConfig
from pcae.errors import PcaeError


def options_set(obj) -> set[str]:
    """The fields of a config or spec dataclass that differ from a default-built one: what a
    Python caller set, when it does not say (`train(given=None)`)."""
    if not dataclasses.is_dataclass(obj):
        return set()
    default = type(obj)()
    return {f.name for f in dataclasses.fields(obj)
            if f.init and f.metadata.get("option", True) and getattr(obj, f.name) != getattr(default, f.name)}


def _option(name: str) -> str:
    return "--" + name.replace("_", "-")


def _same_setting(name: str, stored, given, data_shape) -> bool:
    """Whether a given training option means what the stored one does: the same data file by
    another path, or the data's own size / channels where the run kept the source's (None)."""
    if stored == given:
        return True
    if name == "data" and isinstance(stored, str) and isinstance(given, str):
        (a, _, pa), (b, _, pb) = stored.partition(":"), given.partition(":")
        return a == b and bool(pa) and bool(pb) and Path(pa).expanduser().resolve() == Path(pb).expanduser().resolve()
    if stored is None and data_shape and name in ("image_size", "image_channels"):
        C, H, W = data_shape
        return given == (C if name == "image_channels" else H if H == W else None)
    return False


def resumed_config(stored: TrainConfig, config: TrainConfig, given: set[str],
                   data_shape=None) -> tuple[TrainConfig, list[str]]:
    """The config a resumed run goes on with: `stored`, with the run options in `given`
    (TrainConfig.RUN_FIELDS) taken from `config`; a run's length is steps or epochs, so giving one
    takes both. Any other given field (data, lr, ...) must mean what the stored one does (`out` may
    move; data_shape: the (C, H, W) the run trained on, for a given size equal to the source's).

    Returns (config, "option value" of each stored run option kept where `config` says otherwise).
    Raises PcaeError naming the first conflicting option.
    """
    for name in sorted(given & {f.name for f in dataclasses.fields(TrainConfig)}
                       - set(TrainConfig.RUN_FIELDS) - {"out"}):
        if not _same_setting(name, getattr(stored, name), getattr(config, name), data_shape):
            raise PcaeError(f"{_option(name)} {getattr(config, name)} conflicts with the run being resumed "
                            f"({getattr(stored, name)}); a resumed run keeps its training settings (start "
                            "a new run with another --out to change them)")
    run_given = [f for f in TrainConfig.RUN_FIELDS if f in given]
    if {"steps", "epochs"} & given:
        run_given = sorted(set(run_given) | {"steps", "epochs"})
    kept = [f"{f.replace('_', '-')} {getattr(stored, f)}" for f in TrainConfig.RUN_FIELDS
            if f not in run_given and f not in ("steps", "epochs")
            and getattr(stored, f) != getattr(config, f)]
    return stored.resumed_with(config, run_given), kept


UNUSED = type("Unused", (), {"__repr__": lambda self: "UNUSED"})()  # see check_resumed_spec


def check_resumed_spec(spec, configs: dict, given: set[str], out: Path) -> None:
    """Each model option in `given` must equal what the resumed run stores (`spec.stored`), and one
    the run does not store cannot be given again: PcaeError naming the option. `spec.stored` maps
    an option the stored model has no use for (the other decoder's width, ...) to UNUSED: given
    again, it is ignored."""
    if not dataclasses.is_dataclass(spec):
        return
    names = {f.name for f in dataclasses.fields(spec) if f.init and f.metadata.get("option", True)}
    stored = spec.stored(configs) if hasattr(spec, "stored") else {}
    for name in sorted(given & names):
        if stored.get(name) is UNUSED:
            continue
        if name not in stored:
            raise PcaeError(f"{_option(name)} cannot be changed when resuming {out}: the run keeps its "
                            "model (start a new run with another --out)")
        if stored[name] != getattr(spec, name):
            raise PcaeError(f"{_option(name)} {getattr(spec, name)} conflicts with the run being resumed "
                            f"({stored[name]}); a resumed run keeps its model (start a new run with "
                            "another --out)")


def _check_resumable(checkpoint: dict, path: Path) -> None:
    """What `--resume` reads besides weights and configs, checked before anything is written:
    PcaeError naming the field (a checkpoint pcae wrote always passes)."""
    def bad(field, rule):
        raise PcaeError(f"{path}: field {field!r} must be {rule}; it cannot be resumed")

    optimizer, rng, metrics = checkpoint.get("optimizer"), checkpoint.get("rng"), checkpoint.get("metrics", {})
    if not (isinstance(optimizer, dict) and {"state", "param_groups"} <= set(optimizer)):
        bad("optimizer", "an optimizer state (state, param_groups)")
    if not (isinstance(rng, dict) and {"torch", "numpy", "python"} <= set(rng)):
        bad("rng", "the random states (torch, numpy, python)")
    if not isinstance(metrics, dict):
        bad("metrics", "a dict")
    number = lambda v: isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v >= 0  # noqa: E731
    for key in ("elapsed", "train_seconds", "images_seen"):
        if key in metrics and not number(metrics[key]):
            bad(f"metrics.{key}", f"a finite number >= 0, got {metrics[key]!r}")
    best = metrics.get("best")
    if best is not None and not (isinstance(best, dict) and isinstance(best.get("value"), (int, float))
                                 and math.isfinite(best["value"]) and number(best.get("step"))):
        bad("metrics.best", f"None or {{value: a finite number, step}}, got {best!r}")


def stored_values(configs: dict, paths: dict[str, tuple[str, ...]]) -> dict[str, Any]:
    """{field: configs[k1][k2]...} for each field whose path of keys exists (for `spec.stored`)."""
    values = {}
    for name, keys in paths.items():
        node = configs
        for key in keys:
            if not isinstance(node, dict) or key not in node:
                break
            node = node[key]
        else:
            values[name] = node
    return values
