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


# --- data: `pcae data info SOURCE`, `pcae data import SOURCE OUT.h5` ---------------------------
from pcae.data import source_names as _data_source_names  # noqa: E402  (torch-free module)

data_app = typer.Typer(help="Datasets: describe a source, import one into pcae's HDF5 format.",
                       no_args_is_help=True)
app.add_typer(data_app, name="data")
_DATA_SOURCE_HELP = "Data source: " + ", ".join(_data_source_names()) + "."


def _check_channels(channels):
    if channels not in (None, 1, 3):
        raise typer.BadParameter(f"must be 1 or 3, got {channels}", param_hint="--channels")


@data_app.command("info")
def data_info(
    source: str = typer.Argument("fashion-mnist", help=_DATA_SOURCE_HELP),
    data_root: Optional[Path] = typer.Option(None, "--data-root", help="torchvision data root."),
    channels: Optional[int] = typer.Option(None, "--channels", min=1, max=3, help="Convert to 1 or 3."),
    image_size: Optional[int] = typer.Option(None, "--image-size", min=1, help="Resize + centre crop."),
    as_json: bool = typer.Option(False, "--json", help="Print the description as JSON."),
):
    """Print counts per split, image shape, classes and where the data comes from."""
    import json

    _check_channels(channels)
    from pcae.data import describe_source
    d = describe_source(source, channels=channels, image_size=image_size, data_root=data_root)
    if as_json:
        typer.echo(json.dumps(d, indent=2))
        return
    classes = d["classes"]
    typer.echo(f"source   {d['source']}")
    typer.echo(f"origin   {d['origin']}")
    typer.echo(f"shape    {' x '.join(map(str, d['shape']))}  (C x H x W, uint8)")
    for split, n in d["counts"].items():
        typer.echo(f"{split:<8} {n} images")
    typer.echo(f"classes  {len(classes)}: {', '.join(classes)}" if classes else "classes  none (unlabelled)")
    if d["skipped"]:
        typer.echo(f"skipped  {len(d['skipped'])} unreadable files:")
        for s in d["skipped"]:
            typer.echo(f"  {s['file']}: {s['reason']}")


@data_app.command("import")
def data_import(
    source: str = typer.Argument(..., help=_DATA_SOURCE_HELP),
    out: Path = typer.Argument(..., help="HDF5 file to write (images, labels, split)."),
    data_root: Optional[Path] = typer.Option(None, "--data-root", help="torchvision data root."),
    channels: Optional[int] = typer.Option(None, "--channels", min=1, max=3, help="Convert to 1 or 3."),
    image_size: Optional[int] = typer.Option(None, "--image-size", min=1, help="Resize + centre crop."),
    force: bool = typer.Option(False, "--force", help="Replace an existing OUT."),
):
    """Write both splits of SOURCE to one HDF5 file, streaming chunk by chunk."""
    _check_channels(channels)
    from pcae.data import import_dataset
    s = import_dataset(source, out, channels=channels, image_size=image_size, data_root=data_root,
                       force=force)
    counts = ", ".join(f"{k} {v}" for k, v in s["counts"].items())
    typer.echo(f"wrote {out}: {counts} images of {' x '.join(map(str, s['shape']))}, "
               f"{len(s['classes'] or [])} classes, {len(s['skipped'])} files skipped")
    for k in s["skipped"]:
        typer.echo(f"  skipped {k['file']}: {k['reason']}")


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
    except Exception as e:  # click's usage errors (typer 0.2x vendors click as typer._click)
        if hasattr(e, "show") and hasattr(e, "exit_code"):
            e.show()
            sys.exit(e.exit_code)
        raise


if __name__ == "__main__":
    main()
