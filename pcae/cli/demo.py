"""`pcae demo`: the web page (pcae/demo.py) on this machine, until Ctrl-C."""
from __future__ import annotations

import time
from pathlib import Path

import typer

from pcae.cli.common import TRAIN, Device


def demo_cmd(
    host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on. The default is this "
                             "machine only; 0.0.0.0 opens the page to every machine that can reach this "
                             "one (there is no login)."),
    port: int = typer.Option(7860, "--port", min=1, max=65535, help="Port to listen on."),
    checkpoint: list[Path] = typer.Option([], "--checkpoint", help="A model to show (repeat): a portrait, "
                                          "auto-encoder or class-conditional PixelCNN checkpoint (or exported "
                                          "folder) goes to the tab of its kind (default: the newest run of each "
                                          "kind under runs/; portraits: else the model shipped with pcae)."),
    latents: Path | None = typer.Option(None, "--latents", help="A latents folder (`pcae embed`) for the "
                                        "Search tab."),
    device: Device = TRAIN["device"],
):
    """Serve a web page: portraits from a photo, a morph, auto-encoder and class samples, search.

    Needs pip install 'pcae\\[demo]'. Requests wait in one queue; only size-limited uploads are read.
    """
    from pcae.errors import PcaeError

    try:
        from pcae.demo import LOCAL_HOSTS, build_app, find_models, launch
    except ModuleNotFoundError as e:
        if e.name and e.name.split(".")[0] in ("gradio", "gradio_client"):
            raise PcaeError("`pcae demo` needs Gradio: pip install 'pcae[demo]'") from None
        raise
    from pcae.cli.portraits import portrait_lines

    if host not in LOCAL_HOSTS:
        typer.secho(f"warning: listening on {host}: anyone who can reach this machine on port {port} can "
                    "use the page and this machine's CPU (no login)", fg=typer.colors.YELLOW, err=True)
    models = find_models(checkpoint, latents)
    typer.echo(f"portraits: {models.portrait_note or models.missing.get('portrait')}")
    for tab, path in (("auto-encoder", models.autoencoder), ("class samples", models.pixelcnn),
                      ("search", models.latents)):
        typer.echo(f"{tab}: {path or 'none (the tab says how to make one)'}")
    app = build_app(models, portrait_lines, device)
    url = launch(app, host, port)
    typer.echo(f"serving on {url} (Ctrl-C to stop)")
    try:
        while True:  # Ctrl-C ends it as every command: "interrupted", exit 130
            time.sleep(1)
    finally:
        app.close()
