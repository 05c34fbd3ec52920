"""The `pcae` command line: options -> one library call -> a short summary.

Thin on purpose: every command imports its library function inside its body, so `pcae --help`
does not import torch. Library code raises PcaeError for problems the user can fix; `main()` turns
it into one red line on stderr and exit code 1 (usage errors exit 2, typer's convention).
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import typer

from pcae import __version__
from pcae.utils import PcaeError

app = typer.Typer(
    name="pcae",
    help="Representation learning with conditional Gated PixelCNN decoders.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _version(value: bool):
    if value:
        typer.echo(f"pcae {__version__}")
        raise typer.Exit()


@app.callback()
def _root(version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                       help="Print the version and exit.")):
    """Representation learning with conditional Gated PixelCNN decoders."""


def main():
    try:
        app(standalone_mode=False)
    except PcaeError as e:
        typer.secho(f"error: {e}", fg=typer.colors.RED, err=True)
        sys.exit(1)
    except KeyboardInterrupt:
        typer.secho("interrupted", fg=typer.colors.RED, err=True)
        sys.exit(130)
    except typer.Exit as e:
        sys.exit(e.exit_code)
    except typer.Abort:
        sys.exit(1)
    except Exception as e:  # click's usage errors
        import click
        if isinstance(e, click.exceptions.ClickException):
            e.show()
            sys.exit(e.exit_code)
        raise


if __name__ == "__main__":
    main()
