"""`pcae data info SOURCE` and `pcae data import SOURCE OUT.h5`: describe a data source, import one
into pcae's HDF5 format (pcae/data.py)."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from pcae.cli.common import DATA_SOURCE_HELP, DataRoot, Force, ImageSize, check_image_channels
from pcae.data import DEFAULT_SOURCE

app = typer.Typer(help="Datasets: describe a source, import one into pcae's HDF5 format.",
                  no_args_is_help=True)

Channels = Annotated[int | None, typer.Option("--channels", callback=check_image_channels,
                                                 help="Convert to 1 or 3 channels.")]


@app.command("info")
def data_info(
    source: str = typer.Argument(DEFAULT_SOURCE, help=DATA_SOURCE_HELP),
    data_root: DataRoot = None,
    channels: Channels = None,
    image_size: ImageSize = None,
    as_json: bool = typer.Option(False, "--json", help="Print the description as JSON."),
):
    """Print counts per split, image shape, classes and where the data comes from."""
    import json

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
    typer.echo(f"classes  {len(classes)}: {', '.join(classes)}" if classes
               else "classes  none (unlabelled)")
    if d["skipped"]:
        typer.echo(f"skipped  {len(d['skipped'])} unreadable files:")
        for s in d["skipped"]:
            typer.echo(f"  {s['file']}: {s['reason']}")


@app.command("import")
def data_import(
    source: str = typer.Argument(..., help=DATA_SOURCE_HELP),
    out: Path = typer.Argument(..., help="HDF5 file to write (images, labels, split)."),
    data_root: DataRoot = None,
    channels: Channels = None,
    image_size: ImageSize = None,
    force: Force = False,
):
    """Write both splits of SOURCE to one HDF5 file, streaming chunk by chunk."""
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    from pcae.data import import_dataset

    with Progress(SpinnerColumn(), TextColumn("importing {task.completed} images"),
                  TimeElapsedColumn(), transient=True) as bar:
        task = bar.add_task("import", total=None)
        s = import_dataset(source, out, channels=channels, image_size=image_size,
                           data_root=data_root, force=force,
                           progress=lambda n: bar.update(task, completed=n))
    counts = ", ".join(f"{k} {v}" for k, v in s["counts"].items())
    typer.echo(f"wrote {out}: {counts} images of {' x '.join(map(str, s['shape']))}, "
               f"{len(s['classes'] or [])} classes, {len(s['skipped'])} files skipped")
    for k in s["skipped"]:
        typer.echo(f"  skipped {k['file']}: {k['reason']}")
