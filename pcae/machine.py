"""Facts about this machine that pcae's checks and speed figures need: its memory (an impossible
size is refused before it is allocated) and its CPU (named beside every speed figure; bf16 support)."""
from __future__ import annotations

import os
import platform

from pcae.errors import PcaeError


def memory_bytes() -> int:
    """This machine's physical memory in bytes (0 when the OS does not say)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 0

def check_fits(nbytes: float, what: str) -> None:
    """PcaeError naming `what` (the options responsible) when nbytes exceed this machine's memory,
    so an impossible size is refused before anything is allocated."""
    total = memory_bytes()
    if total and nbytes > total:
        raise PcaeError(f"{what} would need about {_size(nbytes)}; this machine has {_size(total)} of "
                        "memory")

def _size(nbytes: float) -> str:
    for unit in ("bytes", "KB", "MB", "GB", "TB", "PB"):
        if nbytes < 1024 or unit == "PB":
            return f"{nbytes:.0f} {unit}" if unit == "bytes" else f"{nbytes:.1f} {unit}"
        nbytes /= 1024
    return f"{nbytes:.1f} PB"

def _cpuinfo() -> tuple[str, set[str]]:
    """(model name, flags) of the first CPU in /proc/cpuinfo (Linux); what it can tell elsewhere."""

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
    return model, flags

def cpu_bf16_flags() -> list[str]:
    """The bf16 instruction sets this CPU reports, e.g. ['amx_bf16', 'avx512_bf16']."""
    flags = _cpuinfo()[1]
    return [name for name in ("amx_bf16", "avx512_bf16") if name in flags]

def cpu_description() -> str:
    """The CPU's model name and its bf16 support, for every speed figure (Linux /proc/cpuinfo)."""
    model, _ = _cpuinfo()
    bf16 = cpu_bf16_flags()
    return f"{model}, {os.cpu_count()} cores, bf16: {', '.join(bf16) if bf16 else 'none'}"
