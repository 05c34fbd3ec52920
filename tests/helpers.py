"""Helpers shared by the test files (importable: pytest puts tests/ on sys.path)."""
from __future__ import annotations

import sys


def run_pcae(monkeypatch, capsys, *args):
    """Run the real entry point (`main` turns PcaeError into one red line); (code, out, err).

    The bundled data and a wide terminal (no wrapped lines to match against) for every call."""
    from pcae.cli import main

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
