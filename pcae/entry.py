"""The `pcae` console script: Ctrl-C while the CLI is still being imported exits like Ctrl-C later.

Building the commands (typer, rich) takes a moment; a KeyboardInterrupt then would end in a
traceback. This module imports nothing heavy, so the window left is the interpreter's own start.
"""
import signal
import sys


def main() -> None:
    try:
        from pcae.cli import main as cli_main
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
    try:
        cli_main()
    finally:  # the command is over, its outputs written or discarded: Ctrl-C during the
        # interpreter's teardown would only turn a finished command's exit code into a traceback
        signal.signal(signal.SIGINT, signal.SIG_IGN)
