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
import json
import math
from pathlib import Path
from typing import Any

import torch

from pcae.checkpoint import set_rng_states
from pcae.config import TrainConfig
from pcae.errors import PcaeError, first_line
from pcae.files import atomic_path
from pcae.runfolder import read_metrics


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


def restore_run(run, checkpoint: dict) -> None:
    """Put a pcae.train run where `checkpoint` (its last.pt) left off: optimizer, position in the
    data, progress figures, raw weights and RNG states; the metrics rows after it are dropped
    (they will be written again)."""
    fused, state = run.fused, run.state
    if run.total < checkpoint["step"]:  # --epochs: the length in steps is known only now
        raise PcaeError(f"--epochs {run.config.epochs} ({run.total} steps) is fewer than the "
                        f"{checkpoint['step']} steps {run.out} has done; give more to continue it")
    try:
        run.optimizer.load_state_dict(checkpoint["optimizer"])
    except (KeyError, TypeError, ValueError, RuntimeError, IndexError) as e:
        raise PcaeError(f"{run.out / 'last.pt'}: its optimizer state does not fit the model "
                        f"({first_line(e)}); it cannot be resumed") from None
    if checkpoint["position"] > run.feeder.per_epoch:
        raise PcaeError(f"{run.out / 'last.pt'}: field 'position' ({checkpoint['position']}) is beyond "
                        f"the {run.feeder.per_epoch} batches of an epoch; it cannot be resumed")
    for group in run.optimizer.param_groups:  # the saving machine's choice may not apply here
        group["fused"], group["foreach"] = (fused or None), None
        for p in group["params"]:  # fused kernels want the step count beside the parameter
            opt_state = run.optimizer.state.get(p, {})
            if "step" in opt_state:
                opt_state["step"] = (opt_state["step"].to(p.device, torch.float32) if fused
                                     else opt_state["step"].cpu())
    state.step, state.epoch = checkpoint["step"], checkpoint["epoch"]
    state.position = checkpoint["position"]
    saved_batch = checkpoint.get("global_batch", run.feeder.global_batch)
    if saved_batch != run.feeder.global_batch:  # another number of ranks: same image on
        state.position = min(state.position * saved_batch // run.feeder.global_batch,
                             run.feeder.per_epoch - 1)
        run.log.info("global batch changed %d -> %d: resuming at batch %d of epoch %d",
                      saved_batch, run.feeder.global_batch, state.position, state.epoch)
    metrics = checkpoint.get("metrics", {})
    state.best = metrics.get("best")
    state.elapsed = metrics.get("elapsed", 0.0)
    state.train_seconds = metrics.get("train_seconds", 0.0)
    state.images_seen = metrics.get("images_seen", 0)
    state.last_checkpoint_step = state.step
    if run.average is not None:  # the model holds the stored average; raw weights beside it
        weights = checkpoint.get("training_weights")
        if weights is not None:
            run.average.restore(weights)
    try:
        set_rng_states(checkpoint["rng"])
    except (KeyError, TypeError, ValueError, RuntimeError, IndexError, AttributeError) as e:
        raise PcaeError(f"{run.out / 'last.pt'}: its random states are unreadable ({first_line(e)}); "
                        "it cannot be resumed") from None
    if run.dist.main:  # forget what happened after the checkpoint: it will happen again
        rows = [r for r in read_metrics(run.out / "metrics.jsonl") if r["step"] <= state.step]
        with atomic_path(run.out / "metrics.jsonl") as tmp:
            tmp.write_text("".join(json.dumps(r) + "\n" for r in rows))

