"""Latents on disk: `pcae embed`, `pcae search`, `pcae index merge|describe` (embeddings/embed.py).

`embed` streams a data source through an encoder into a latents folder (latents.h5 and a FAISS
index), `search` prints a folder's nearest neighbours of a query, `index merge` joins the parts of a
sharded embed and `index describe` prints a folder's metadata.
"""
from __future__ import annotations

from pathlib import Path

import typer

from encoders import ENCODER_NAMES
from pcae.cli.common import DATA_SOURCE_HELP, DataRoot, Force
from pcae.options import check_png_path, check_split, cli_callback

index_app = typer.Typer(help="Latent indexes: merge shard parts, describe a latents folder.",
                        no_args_is_help=True)


def embed_cmd(
    encoder: str | None = typer.Option(None, "--encoder", help="Encoder: " + ", ".join(ENCODER_NAMES)
                                          + " (default: the checkpoint's)."),
    checkpoint: Path | None = typer.Option(None, "--checkpoint", help="Checkpoint holding the encoder "
                                              "(needed for conv; optional for onehot, facenet and dlib) "
                                              "(default without --encoder: the newest finished "
                                              "auto-encoder run's best.pt under runs/)."),
    data: str | None = typer.Option(None, "--data", help=DATA_SOURCE_HELP + " Default: the data "
                                       "the checkpoint's run trained on, else fashion-mnist."),
    out: Path = typer.Option(Path("latents"), "--out", help="Latents folder: latents.h5, index.faiss, "
                             "index_infos.json."),
    split: str | None = typer.Option(None, "--split", callback=cli_callback(check_split),
                                     help="train or test (default: every item, both splits)."),
    index: str | None = typer.Option(None, "--index", help="faiss.index_factory string, e.g. Flat, "
                                        "IVF1024,Flat, HNSW32,Flat (default: Flat for small N, IVF above)."),
    metric: str | None = typer.Option(None, "--metric", help="l2 or cosine (default l2)."),
    append: bool = typer.Option(False, "--append", help="Add to the folder's latents and index."),
    shard: str | None = typer.Option(None, "--shard", help="i/n: embed the i-th of n slices into "
                                        "OUT/part-i-of-n/ (then `pcae index merge`)."),
    force: Force = False,
    batch_size: int = typer.Option(256, "--batch-size", min=1),
    limit: int | None = typer.Option(None, "--limit", min=1, help="Embed only the first N items."),
    data_root: DataRoot = None,
    facenet_weights: str | None = typer.Option(None, "--facenet-weights", help="facenet without "
                                                  "--checkpoint: vggface2 (default), casia-webface, FILE "
                                                  "or random."),
):
    """Stream a data source through an encoder into latents.h5 and a FAISS index."""
    import time

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from embeddings.embed import embed, embed_inputs, parse_shard, skipped_text

    chosen = embed_inputs(encoder, checkpoint, data, data_root)  # embed() keeps these as given
    if chosen.note:
        typer.echo(f"embedding with {chosen.note}", err=True)
    with Progress(TextColumn("embed"), BarColumn(), MofNCompleteColumn(),
                  TextColumn("{task.fields[rate]} images/s"), TimeRemainingColumn(), transient=True) as bar:
        task = bar.add_task("embed", total=None, rate="-")
        start = time.perf_counter()

        def progress(done, total):
            rate = done / max(time.perf_counter() - start, 1e-9)
            bar.update(task, completed=done, total=total, rate=f"{rate:.0f}")

        infos = embed(encoder, chosen.checkpoint, chosen.source, out, split=split, index_string=index,
                      metric=metric, append=append, shard=parse_shard(shard), force=force,
                      batch_size=batch_size, data_root=chosen.data_root, limit=limit,
                      facenet_weights=facenet_weights, progress=progress)
    recall = infos["recall_at_10"]
    added = " + ".join(f"{n} {s}" for s, n in infos["splits"].items())
    typer.echo(f"wrote {infos['out']}: {infos['count']} latents ({added} added) of d={infos['d']} "
               f"({infos['encoder']}), index {infos['index_string']} {infos['metric']}, recall@10 "
               f"{'-' if recall is None else f'{recall:.3f}'}, {infos['images_per_s']:.0f} images/s"
               + (f", {skipped_text(infos)}" if infos["skipped"] else ""))
    if infos["random_weights"]:
        from pcae.portrait import RANDOM_WARNING
        typer.echo(f"warning: {RANDOM_WARNING}")


def search_cmd(
    folder: Path = typer.Argument(..., help="Latents folder written by `pcae embed`."),
    query: str = typer.Argument(..., help="An image file, or id:N for a stored item."),
    k: int = typer.Option(10, "-k", "--k", min=1, help="Neighbours to return."),
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON."),
    out: Path | None = typer.Option(None, "--out", callback=cli_callback(check_png_path),
                                         help="Draw the query and its neighbours to this PNG."),
    checkpoint: Path | None = typer.Option(None, "--checkpoint", help="The encoder checkpoint the "
                                              "latents were made with, where it is now (an image "
                                              "query, when it has moved; its sha256 is checked)."),
    force: Force = False,
):
    """Print the k stored items nearest to QUERY (ids, distances, labels)."""
    import json

    from embeddings.embed import draw_neighbours, search_folder
    from pcae.files import refuse_existing

    refuse_existing(out, force)
    result = search_folder(folder, query, k, checkpoint)
    if out is not None:
        draw_neighbours(folder, result, out, None if query.startswith("id:") else query)
    if as_json:
        typer.echo(json.dumps(result, indent=2))
        return
    score = "cosine" if result["metric"] == "cosine" else "l2^2"
    named = any(n.get("file") for n in result["neighbours"])
    typer.echo(f"{'rank':>4}  {'id':>8}  {score:>10}  label" + ("  file" if named else ""))
    for n in result["neighbours"]:
        label = "-" if n["label"] < 0 else f"{n['label']}" + (f" {n['class']}" if n["class"] else "")
        typer.echo(f"{n['rank']:>4}  {n['id']:>8}  {n['distance']:>10.4g}  {label}"
                   + (f"  {n.get('file') or '-'}" if named else ""))
    if out is not None:
        typer.echo(f"wrote {out}")


@index_app.command("merge")
def index_merge(
    parts: list[Path] = typer.Argument(..., help="Part folders from `pcae embed --shard i/n`."),
    out: Path = typer.Option(..., "--out", help="Latents folder to write."),
    force: Force = False,
):
    """Merge shard parts into one latents folder (FAISS IVF merge, else re-adding the latents)."""
    from embeddings.embed import merge_parts

    infos = merge_parts(parts, out, force=force)
    typer.echo(f"wrote {infos['out']}: {infos['count']} latents from {len(parts)} parts ({infos['merge']}), "
               f"index {infos['index_string']}, recall@10 {infos['recall_at_10']}")


@index_app.command("describe")
def index_describe(folder: Path = typer.Argument(..., help="Latents folder.")):
    """Print a latents folder's index infos and encoder metadata as JSON."""
    import json

    from embeddings.embed import describe_folder

    typer.echo(json.dumps(describe_folder(folder), indent=2))
