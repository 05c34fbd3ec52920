"""Small helpers shared across pcae: the user-facing error type and atomic file writes."""
from __future__ import annotations

import os
import tempfile
from contextlib import contextmanager
from pathlib import Path


def cache_root() -> Path:
    """pcae's cache folder: $PCAE_CACHE_DIR, else $XDG_CACHE_HOME/pcae, else ~/.cache/pcae."""
    base = os.environ.get("PCAE_CACHE_DIR")
    if base:
        return Path(base)
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "pcae"


class PcaeError(Exception):
    """An error the user can fix (bad file, bad option). The CLI prints it as one line, exit 1."""


@contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = ""):
    """Yield a temp path in the same folder as `path`; on success fsync it and os.replace it over
    `path`, so a reader (or a run killed at any moment) sees the old file or the new one, never half."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=suffix + ".tmp")
    os.close(fd)
    try:
        yield Path(tmp)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; outputs get the usual permissions
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def cpu_description() -> str:
    """The CPU's model name and its bf16 support, for every speed figure (Linux /proc/cpuinfo)."""
    import platform

    model, flags = platform.processor() or platform.machine(), set()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() == "model name" and model in ("", platform.machine()):
                    model = value.strip()
                elif key.strip() == "flags" and not flags:
                    flags = set(value.split())
    except OSError:
        pass
    bf16 = [name for name in ("amx_bf16", "avx512_bf16") if name in flags]
    return f"{model}, {os.cpu_count()} cores, bf16: {', '.join(bf16) if bf16 else 'none'}"
