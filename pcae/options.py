"""Values every command shares, checked in one place: devices, splits, precisions, temperatures,
seeds, and the format an output file's name asks for.

Each check returns the value (normalised) or raises ValueError with a one-line reason that names
the accepted values; the CLI attaches them to its options as callbacks (a bad value is a usage
error, exit 2), and the library calls the same functions (TrainConfig, evaluate, sample,
reconstruct, embed), so a value refused on the command line is refused from Python too.

This module imports nothing heavy: the CLI's --help stays torch-free.
"""
from __future__ import annotations

import math
import re
from pathlib import Path

SPLITS = ("train", "test")
PRECISIONS = ("auto", "fp32", "bf16")
DEVICE_KINDS = ("cpu", "cuda")  # "cuda" may name a device: cuda:N


def check_device(value: str) -> str:
    """"cpu", "cuda" or "cuda:N" (N a device index)."""
    if not isinstance(value, str) or not (value in DEVICE_KINDS or re.fullmatch(r"cuda:\d+", value)):
        raise ValueError(f"device must be cpu, cuda or cuda:N, got {value!r}")
    return value


def check_split(value: str) -> str:
    if value not in SPLITS:
        raise ValueError(f"split must be train or test, got {value!r}")
    return value


def check_precision(value: str) -> str:
    if value not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {value!r}")
    return value


def _finite_non_negative(name: str, value) -> float:
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number, got {value!r}") from None
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"{name} must be finite and >= 0, got {value!r}")
    return value


def check_temperature(value: float) -> float:
    """A finite temperature >= 0 (0 = argmax; an infinite one would draw uniform noise)."""
    return _finite_non_negative("temperature", value)


def check_guidance(value: float) -> float:
    """A finite guidance >= 0 (pcae.sampling.sample; 0 = none)."""
    return _finite_non_negative("guidance", value)


SEED_MAX = 2 ** 32 - 1  # the largest seed numpy's global generator takes (torch's go higher)


def check_seed(value: int) -> int:
    """A whole number in [0, 2**32 - 1]: one seed seeds Python, numpy and torch alike."""
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= SEED_MAX:
        raise ValueError(f"seed must be a whole number from 0 to {SEED_MAX}, got {value!r}")
    return value


def check_suffix(value, suffixes: tuple[str, ...], what: str):
    """An output path whose name ends in one of `suffixes`: bytes of one format under another's
    name mislead every viewer and reader."""
    suffix = Path(value).suffix
    if suffix.lower() not in suffixes:
        raise ValueError(f"{value}: pcae writes {what} here; give a name ending in {' or '.join(suffixes)}"
                         + (f" (not {suffix})" if suffix else ""))
    return value


def check_png_path(value):
    """An image output: pcae's images are PNG (their text chunks hold the captions and scores)."""
    return check_suffix(value, (".png",), "PNG images")


def cli_callback(check):
    """A typer option callback running `check`: its ValueError becomes a usage error."""
    def callback(value):
        import typer

        if value is None:
            return value
        try:
            return check(value)
        except ValueError as e:
            raise typer.BadParameter(str(e)) from None
    return callback
