"""Helpers shared by the test files (importable: pytest puts tests/ on sys.path)."""
from __future__ import annotations

import sys


def run_pcae(monkeypatch, capsys, *args):
    """Run the real entry point (`main` turns PcaeError into one red line); (code, out, err).

    The bundled data and a wide terminal (no wrapped lines to match against) for every call."""
    import pcae.cli
    from pcae.cli import main

    # the CLI leaves with os._exit after a full disk (HDF5 can crash in its exit handler); not here
    monkeypatch.setattr(pcae.cli, "_exit_now", lambda code: sys.exit(code))
    monkeypatch.setenv("PCAE_DATA_BUNDLED", "1")
    monkeypatch.setenv("COLUMNS", "200")
    monkeypatch.setattr(sys, "argv", ["pcae", *map(str, args)])
    try:
        main()
        code = 0
    except SystemExit as e:
        code = e.code
    out, err = capsys.readouterr()
    return code, out, err


def grid_px(width: int, height: int, gap: int = 0) -> tuple[int, int]:
    """The size of a grid pcae.images.save_grid writes, from its native size: upscaled by the
    smallest whole factor that makes it at least MIN_WIDTH wide (plus a gutter, when asked)."""
    from pcae.images import MIN_WIDTH

    scale = -(-MIN_WIDTH // width)
    return scale * width + gap, scale * height
