"""Checkpoints: one dict per file, written atomically, loaded without running code.

A checkpoint is a plain dict:

    format_version  int, FORMAT_VERSION when written; newer files are refused, not misread
    pcae            "checkpoint" (marks the file as ours)
    kind            "pixelcnn", "autoencoder", "portrait", ... (which builder rebuilds the model)
    configs         {"model": asdict(PixelCNNConfig), "train": asdict(TrainConfig), ...} plain dicts
    state_dicts     {"model": model.state_dict(), ...}: the weights to use (a training run that
                    averages its weights stores the average here)
    training_weights  optional {name: tensor}: the raw weights the optimiser was working on, beside
                    their average, so a resumed run continues exactly (pcae.steps.WeightAverage)
    optimizer       optimizer.state_dict() (absent in a weights-only export)
    step, epoch, position   optimizer steps done; data epoch and batches consumed inside it
    rng             {"torch", "cuda", "numpy", "python"} generator states
    data            the data source's info dict (source, origin, classes, skipped files, ...)
    metrics         {"best_test": ..., ...} what the run knew when it saved

Writing goes through `pcae.files.atomic_path` (temp file in the same folder, fsync, os.replace), so
a run killed at any moment leaves the previous checkpoint or the new one, never half of one.
Reading uses `torch.load(weights_only=True)`: everything stored is tensors, numbers, strings, None,
lists, tuples and dicts (`to_plain` converts the rest), so an untrusted file cannot run code.

Models are rebuilt from the stored config by the checkpoint's kind (pcae.kinds, the one table of
model kinds), never from numbers written down elsewhere.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pcae.data import SHIPPED_PORTRAIT
from pcae.errors import PcaeError, first_line
from pcae.files import VERSION, atomic_path, load_torch_file, refuse_special
from pcae.outputs import output_folder

FORMAT_VERSION = 1

def to_plain(value: Any) -> Any:
    """Convert dataclasses, tuples, paths and numpy values into what weights_only loading accepts."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return to_plain(dataclasses.asdict(value))
    if isinstance(value, dict):  # keys stay as they are (optimizer states use int keys)
        return {k if isinstance(k, (int, str)) else str(k): to_plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_plain(v) for v in value]
    if isinstance(value, os.PathLike):
        return str(value)
    if isinstance(value, np.ndarray):
        return torch.from_numpy(value.copy())
    if isinstance(value, np.generic):
        return value.item()
    if value is None or isinstance(value, (bool, int, float, str, torch.Tensor)):
        return value
    raise TypeError(f"cannot store a {type(value).__name__} in a checkpoint: {value!r}")


def rng_states() -> dict:
    """Every global generator's state, in a weights_only-loadable form."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
        "python": to_plain(random.getstate()),
    }


def set_rng_states(states: dict) -> None:
    """Restore what `rng_states` returned (CUDA states only where this machine has the devices)."""
    torch.set_rng_state(states["torch"])
    cuda = states.get("cuda") or []
    if cuda and torch.cuda.is_available() and len(cuda) <= torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda)
    n = states["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                         n["cached_gaussian"]))
    version, internal, gauss = states["python"]
    random.setstate((version, tuple(internal), gauss))


def save_checkpoint(checkpoint: dict, path: str | os.PathLike) -> Path:
    """Write `checkpoint` (see the module docstring) atomically to `path`. Returns the path."""
    for key in ("kind", "configs", "state_dicts"):
        if key not in checkpoint:
            raise ValueError(f"checkpoint must have a {key!r} entry, got keys {sorted(checkpoint)}")
    payload = {"pcae": "checkpoint", "format_version": FORMAT_VERSION, "pcae_version": VERSION}
    payload.update(to_plain({k: v for k, v in checkpoint.items() if k not in payload}))
    path = Path(path)
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)
    return path


def load_checkpoint(path: str | os.PathLike, kind: str | None = None, *, lazy: bool = False) -> dict:
    """Read a checkpoint onto the CPU, refusing anything that is not a usable pcae checkpoint.

    Args:
        path: the .pt file.
        kind: if given, the kind the caller needs ("pixelcnn", ...).
        lazy: map the file instead of reading it (torch.load's mmap): the kind, configs and step
            cost no weight reads, which a portrait checkpoint (~94 MB of FaceNet) makes worth it.
    Returns:
        the checkpoint dict (tensors on CPU).
    Raises:
        PcaeError naming the file and the problem: missing, unreadable or corrupt, not a pcae
        checkpoint, written by a newer pcae, or of another kind.
    """
    path = Path(path)
    if not path.exists():
        raise PcaeError(f"{path}: no such checkpoint file")
    if path.is_dir() and (path / PRETRAINED_CONFIG).is_file():
        checkpoint = read_pretrained(path)
    elif path.is_dir():
        raise PcaeError(f"{path}: is a folder, expected a checkpoint file (e.g. {path / 'last.pt'}) or a "
                        f"folder `pcae export` wrote ({PRETRAINED_CONFIG}, {PRETRAINED_WEIGHTS})")
    else:
        refuse_special(path, "a checkpoint file")
        checkpoint = load_torch_file(path, lazy=lazy)
    if not isinstance(checkpoint, dict) or checkpoint.get("pcae") != "checkpoint":
        raise PcaeError(f"{path}: not a pcae checkpoint (no pcae checkpoint header)")
    version = checkpoint.get("format_version")
    if not isinstance(version, int):
        raise PcaeError(f"{path}: checkpoint has no valid format_version")
    if version > FORMAT_VERSION:
        raise PcaeError(f"{path}: checkpoint format {version} is newer than this pcae reads "
                        f"({FORMAT_VERSION}); upgrade pcae")
    for key, want in (("kind", str), ("configs", dict), ("state_dicts", dict)):
        if key not in checkpoint:
            raise PcaeError(f"{path}: checkpoint is missing its {key!r} entry")
        if not isinstance(checkpoint[key], want):
            raise PcaeError(f"{path}: field {key!r} must be a {'string' if want is str else 'dict'}, got "
                            f"{type(checkpoint[key]).__name__}")
    if kind is not None and checkpoint["kind"] != kind:
        article = "an" if str(checkpoint["kind"])[:1] in "aeiou" else "a"
        raise PcaeError(f"{path}: is {article} {checkpoint['kind']!r} checkpoint, expected {kind!r}")
    for key in ("step", "epoch", "position"):  # where a run stands: counts, so --resume can trust them
        value = checkpoint.get(key, 0)
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise PcaeError(f"{path}: field {key!r} must be an integer >= 0, got {value!r}")
    if not lazy:  # a mapped file's weights are not read here (only its kind and configs are used)
        bad = _first_nonfinite(checkpoint["state_dicts"]) or _first_nonfinite(
            checkpoint.get("training_weights") or {}, "training_weights")
        if bad:
            raise PcaeError(f"{path}: its weights hold NaN or inf ({bad}); the run that wrote it "
                            "diverged: use an earlier checkpoint")
    return checkpoint


def _first_nonfinite(tree, where: str = "") -> str | None:
    """The key path of the first floating tensor in nested dicts that holds NaN or inf, else None."""
    if isinstance(tree, dict):
        for key, value in tree.items():
            found = _first_nonfinite(value, f"{where}/{key}" if where else str(key))
            if found:
                return found
    elif isinstance(tree, torch.Tensor) and tree.is_floating_point() and not bool(torch.isfinite(tree).all()):
        return where
    return None


def run_kind(out: str | os.PathLike) -> str | None:
    """The kind of the run in folder `out` (its last.pt, mapped: no weights are read), or None when
    it has no last.pt yet."""
    path = Path(out) / "last.pt"
    return load_checkpoint(path, lazy=True).get("kind") if path.is_file() else None




# ---------------------------------------------------------------------------------------------
# Weights for use, without the training code: safetensors + config.json (`pcae export`)

PRETRAINED_CONFIG, PRETRAINED_WEIGHTS = "config.json", "model.safetensors"
PRETRAINED_FORMAT = "pcae-pretrained/1"


def export_pretrained(checkpoint: dict, folder: str | os.PathLike, *, force: bool = False) -> Path:
    """Write a checkpoint's model as the layout Hugging Face tools use: `model.safetensors` (every
    tensor of its state dicts, keyed "group.name"; no pickle, so loading runs no code) and
    `config.json` (the kind, every config including the encoder's preprocessing, the data's shape
    and levels, the step). The optimizer and random states stay behind: this is for using a
    model, `--resume` keeps the training checkpoint. An encoder whose weights are pretrained
    elsewhere (FaceNet's named weights) is recorded by name and sha1 instead of copied; dlib's
    has no torch weights to copy.

    The two files are one output (pcae.outputs): written together, and with `force` an older
    export of pcae's is replaced, anything else refused.
    """
    from safetensors.torch import save_file

    tensors, omitted = {}, {}
    for group, state in checkpoint["state_dicts"].items():
        config = checkpoint["configs"].get(group)
        if isinstance(config, dict) and config.get("weights") not in (None, "random") and "/" not in str(
                config.get("weights")):  # a named pretrained file (FaceNet's vggface2): by name
            omitted[group] = {"weights": config["weights"], "sha1": _state_sha1(state)}
            continue
        for name, value in state.items():
            tensors[f"{group}.{name}"] = value.detach().cpu().contiguous()
    config = {"format": PRETRAINED_FORMAT, "pcae_version": VERSION, "kind": checkpoint["kind"],
              "configs": to_plain(checkpoint["configs"]), "groups": sorted(checkpoint["state_dicts"]),
              "omitted": omitted, "data": to_plain(checkpoint.get("data")), "step": checkpoint.get("step", 0)}
    folder = Path(folder)
    paths_of = lambda f: [p for p in (f / PRETRAINED_CONFIG, f / PRETRAINED_WEIGHTS)  # noqa: E731
                          if p.exists() or p.is_symlink()]
    with output_folder(folder, "pretrained model folder", paths_of) as out:
        if out.existing():
            if not force:
                raise PcaeError(f"{folder}: already holds {', '.join(p.name for p in out.existing())}; pass "
                                "--force to replace them")
            out.replace()
        with out.files([PRETRAINED_CONFIG, PRETRAINED_WEIGHTS]) as tmp:
            save_file(tensors, str(tmp[PRETRAINED_WEIGHTS]), metadata={"format": PRETRAINED_FORMAT})
            tmp[PRETRAINED_CONFIG].write_text(json.dumps(config, indent=2) + "\n")
    return folder


PRETRAINED_FIELDS = {  # config.json's own fields: what each must be, and the test
    "kind": ("a string", lambda v: isinstance(v, str)),
    "configs": ("an object", lambda v: isinstance(v, dict)),
    "groups": ("a list of names", lambda v: isinstance(v, list) and all(isinstance(g, str) for g in v)),
    "omitted": ("an object of objects", lambda v: v is None or (isinstance(v, dict) and all(
        isinstance(o, dict) for o in v.values()))),
    "data": ("an object or null", lambda v: v is None or isinstance(v, dict)),
    "step": ("an integer >= 0", lambda v: v is None or (isinstance(v, int) and not isinstance(v, bool) and v >= 0)),
}


def read_pretrained(folder: Path) -> dict:
    """An exported folder as a checkpoint dict (kind, configs, state dicts, step), read without
    pickle; PcaeError naming the file and the problem."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    # the model shipped inside pcae is damaged only by a broken install: say how to mend it
    fix = ("; the portrait model shipped with pcae is damaged: reinstall pcae (pip install "
           "--force-reinstall --no-deps pcae, or `pip install -e .` again in a clone)"
           if folder.resolve() == SHIPPED_PORTRAIT.resolve() else "")
    try:
        config = json.loads((folder / PRETRAINED_CONFIG).read_text())
    except (OSError, ValueError) as e:
        raise PcaeError(f"{folder / PRETRAINED_CONFIG}: unreadable ({first_line(e)}){fix}") from None
    if not isinstance(config, dict) or config.get("format") != PRETRAINED_FORMAT:
        raise PcaeError(f"{folder / PRETRAINED_CONFIG}: not a pcae pretrained model's config{fix}")
    for name, (want, ok) in PRETRAINED_FIELDS.items():  # the configs inside are checked as the model is built
        if not ok(config.get(name)):
            raise PcaeError(f"{folder / PRETRAINED_CONFIG}: field {name!r} must be {want}, got "
                            f"{json.dumps(config.get(name))[:60]}{fix}")
    try:
        with open(folder / PRETRAINED_WEIGHTS, "rb"):  # the real cause (permission denied), which safetensors hides
            pass
        tensors = load_file(str(folder / PRETRAINED_WEIGHTS))
    except (OSError, SafetensorError) as e:
        raise PcaeError(f"{folder / PRETRAINED_WEIGHTS}: unreadable ({first_line(e)}){fix}") from None
    states: dict[str, dict] = {group: {} for group in config.get("groups", [])}
    for key, value in tensors.items():
        group, _, name = key.partition(".")
        states.setdefault(group, {})[name] = value
    for group in config.get("omitted", {}):
        states.pop(group, None)  # rebuilt from its config: the pretrained file it names
    return {"pcae": "checkpoint", "format_version": FORMAT_VERSION, "kind": config.get("kind"),
            "configs": config.get("configs"), "state_dicts": states, "step": config.get("step", 0),
            "data": config.get("data"), "pretrained": {"folder": str(folder), "omitted": config.get("omitted", {})}}


def _state_sha1(state: dict) -> str:
    digest = hashlib.sha1()
    for name, value in state.items():
        digest.update(name.encode())
        digest.update(value.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()
