"""The `pcae` console script: Ctrl-C while the CLI is still being imported exits like Ctrl-C later.

Building the commands (typer, rich) takes a moment; a KeyboardInterrupt then would end in a
traceback. This module imports nothing heavy, so the window left is the interpreter's own start.
"""
import sys


def main() -> None:
    try:
        from pcae.cli import main as cli_main
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
    cli_main()
