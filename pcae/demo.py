"""`pcae demo`: a local web page (Gradio) over the same library calls the commands make.

    Portraits      a photo -> its face crop, a grid of n portraits (pcae.portrait.draw_portraits) and
                   the figures `pcae portrait` prints, with the grid PNG to download
    Morph          two photos -> the interpolation strip (pcae.portrait.interpolate)
    Auto-encoder   test images and samples given their h (pcae.inference.reconstruct_checkpoint)
    Class samples  a class-conditional PixelCNN's samples of one class (pcae.inference.sample_checkpoint)
    Search         an uploaded image's nearest stored items (embeddings.search.search_folder)

Which models: each --checkpoint goes to the tab of its kind; a tab without one takes the newest
finished run of its kind under runs/ (portraits: else the model shipped with pcae); a tab with no
model says which command makes one. The portrait model is loaded once and shared by every request.

Safety and load (docs/demo.md): the page takes uploads only (Gradio accepts a file input only from
its own upload folder, so no server path can be typed in), uploads are capped at MAX_UPLOAD, every
photo is read by pcae.files.open_image (a non-image, a decompression bomb: one PcaeError line, shown
on the page) and shrunk to MAX_SIDE before face detection; every model call goes through one queue
with one worker (QUEUE_SIZE waiting at most), so memory holds one request's work at a time and a
failing request answers with its message while the server goes on serving.
"""
from __future__ import annotations

import os
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # offline: no telemetry calls home

import gradio as gr  # noqa: E402

from embeddings.search import draw_neighbours, search_folder  # noqa: E402
from pcae.checkpoint import load_checkpoint  # noqa: E402
from pcae.data import BUNDLED_FACES  # noqa: E402
from pcae.errors import PcaeError, first_line  # noqa: E402
from pcae.files import open_image  # noqa: E402
from pcae.inference import reconstruct_checkpoint, sample_checkpoint  # noqa: E402
from pcae.kinds import task_from_checkpoint  # noqa: E402
from pcae.portrait import (default_portrait_model, draw_portraits, facenet_note, interpolate,  # noqa: E402
                           load_portrait, save_png_grid)
from pcae.runs import newest_run  # noqa: E402

MAX_UPLOAD = "10mb"  # per file, refused by the server before it is stored
MAX_SIDE = 2048  # pixels: a larger photo is shrunk to this before face detection (faces stay far above 40 px)
MAX_PORTRAITS = 36
MAX_STEPS = 16
QUEUE_SIZE = 32  # requests waiting; beyond it the page says the queue is full
KEEP_OUTPUTS_S = 600  # the app's own PNGs (Gradio copies what it shows into its cache, cleaned hourly)
PHOTO_TYPES = [".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff", ".heic", ".heif", ".pgm",
               ".ppm"]
EXAMPLES = ["orl/s01/1.png", "orl/s07/3.png", "yale/subject01/happy.png", "yale/subject05/glasses.png"]
LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")


@dataclass
class Models:
    """What each tab shows: a path, or None and the line that says how to make one."""

    portrait: Path | None = None
    portrait_note: str = ""
    autoencoder: Path | None = None
    pixelcnn: Path | None = None
    latents: Path | None = None
    missing: dict = field(default_factory=dict)  # tab -> the message shown instead


def find_models(checkpoints=(), latents=None) -> Models:
    """Each checkpoint to the tab of its kind; the newest run under runs/ for the others."""
    m = Models(latents=Path(latents) if latents is not None else None)
    for path in checkpoints:
        kind = load_checkpoint(path, lazy=True)["kind"]
        if kind not in ("portrait", "autoencoder", "pixelcnn"):
            raise PcaeError(f"{path}: a {kind} checkpoint, which no tab of the demo shows")
        if getattr(m, kind) is not None:
            raise PcaeError(f"{path}: a second {kind} checkpoint; give one --checkpoint per kind")
        setattr(m, kind, Path(path))
        if kind == "portrait":
            m.portrait_note = f"{path} (--checkpoint)"
    if m.portrait is None:
        try:
            m.portrait, m.portrait_note = default_portrait_model()
            m.portrait_note = m.portrait_note or str(m.portrait)
        except PcaeError as e:
            m.missing["portrait"] = f"No portrait model: {e}."
    for kind, how in (("autoencoder", "pcae train-ae --bottleneck 10"), ("pixelcnn", "pcae train --condition label")):
        if getattr(m, kind) is None:
            run = newest_run(kind)
            if run is not None:
                setattr(m, kind, Path(run.checkpoint))
            else:
                m.missing[kind] = (f"No {kind} run under runs/: make one with `{how}` and restart "
                                   "`pcae demo`, or give its checkpoint with --checkpoint.")
    if m.latents is None:
        m.missing["search"] = ("No latents folder: start the page with `pcae demo --latents DIR`, DIR a "
                               "folder `pcae embed` wrote.")
    elif not m.latents.is_dir():
        raise PcaeError(f"{m.latents}: no such latents folder (`pcae embed` writes one)")
    return m


# ---------------------------------------------------------------------------------------------
# Uploads and answers


class _Outputs:
    """The app's PNGs, in one temporary folder; those older than KEEP_OUTPUTS_S go at each request."""

    def __init__(self):
        self.folder = Path(tempfile.mkdtemp(prefix="pcae-demo-"))

    def path(self, stem: str) -> Path:
        now = time.time()
        for old in self.folder.iterdir():
            try:
                if now - old.stat().st_mtime > KEEP_OUTPUTS_S:
                    old.unlink()
            except OSError:
                pass
        return self.folder / f"{stem}-{uuid.uuid4().hex[:8]}.png"


def _photo(upload, outputs: _Outputs, names: dict) -> Path:
    """An uploaded photo as a file face detection may read: refused with pcae's own line when it is
    not an image or a decompression bomb (open_image), shrunk to MAX_SIDE when larger."""
    if not upload:
        raise PcaeError("no photo: upload one, or pick an example")
    path = Path(upload)
    names[str(path)] = path.name  # messages name the upload, not the server's copy
    image = open_image(path, "RGB")
    if max(image.size) <= MAX_SIDE:
        return path
    image.thumbnail((MAX_SIDE, MAX_SIDE))
    small = outputs.path(path.stem[:40])
    image.save(small, format="png")
    names[str(small)] = f"{path.name} (shrunk to {image.width}x{image.height})"
    return small


def _message(e: Exception, names: dict) -> str:
    """The one line shown on the page for a request that failed."""
    line = str(e) if isinstance(e, PcaeError) else first_line(e, limit=300)
    for server_path, name in sorted(names.items(), key=lambda kv: -len(kv[0])):
        line = line.replace(server_path, name)
    return f"**Error:** {line}"


def _lines(lines) -> str:
    return "\n".join(f"- {line}" for line in lines)


# ---------------------------------------------------------------------------------------------
# The page


def build_app(models: Models, describe: Callable[[dict, int], list[str]], device: str = "cpu") -> gr.Blocks:
    """The page's Blocks (not launched). `describe(scores, size)` words the portraits' figures as
    `pcae portrait` prints them (pcae.cli.portraits.portrait_lines)."""
    outputs = _Outputs()
    portrait_model = load_portrait(models.portrait, device) if models.portrait is not None else None

    def portraits(upload, n, seed, progress=gr.Progress()):
        names = {}
        try:
            photo = _photo(upload, outputs, names)
            progress((0, 1), desc="finding the face")
            start = time.perf_counter()
            r = draw_portraits(portrait_model, photo, int(n), seed=int(seed), device=device,
                               progress=lambda done, rows: progress((done, rows), desc="sampling rows"))
            S = r.samples.shape[-1]
            note = facenet_note(r.random_weights, r.facenet_weights)
            crop = save_png_grid(r.source, 1, outputs.path("face"), min_width=160)
            tiles, nrow = r.layout()
            grid = save_png_grid(tiles, nrow, outputs.path(f"portraits-{Path(photo).stem[:40]}"),
                                 {"pcae": "portrait grid: the source crop | the samples",
                                  "checkpoint": str(models.portrait), **r.summary(), "note": note}, gap=8)
            head = [f"model: {models.portrait_note}",
                    f"face in {Path(upload).name} (detector score {r.probability:.2f}): {int(n)} portraits of "
                    f"{S}x{S} in {time.perf_counter() - start:.1f} s ({r.sampler} sampler, seed {int(seed)}, "
                    f"temperature {r.temperature:g}, guidance {r.guidance:g})"]
            lines = head + describe(r.scores, S) + [("warning: " if r.random_weights else "") + note]
            return str(crop), str(grid), _lines(lines), str(grid)
        except (PcaeError, ValueError, OSError) as e:
            return None, None, _message(e, names), None

    def morph(a, b, steps, seed, progress=gr.Progress()):
        names = {}
        try:
            pa, pb = _photo(a, outputs, names), _photo(b, outputs, names)
            progress((0, 1), desc="drawing the strip")
            r = interpolate(portrait_model, pa, pb, int(steps), seed=int(seed), device=device)
            strip = save_png_grid(r.images, r.nrow, outputs.path("morph"),
                                  {"pcae": "interpolation", "checkpoint": str(models.portrait)})
            lines = [f"model: {models.portrait_note}",
                     f"{Path(a).name} -> {Path(b).name}: {int(steps)} portraits; embedding distance between "
                     f"the two faces {r.distance:.3f}"]
            if r.named:
                lines.append(f"identity judge along the strip ({r.persons[0] or 'a'} -> {r.persons[1] or 'b'}): "
                             + ", ".join(r.named))
            return str(strip), _lines(lines)
        except (PcaeError, ValueError, OSError) as e:
            return None, _message(e, names)

    def autoencoder(n, samples, seed, progress=gr.Progress()):
        try:
            progress((0, 1), desc="sampling given each h")
            grid, nrow, info = reconstruct_checkpoint(models.autoencoder, n=int(n), samples=int(samples),
                                                      seed=int(seed), device=device, judge_images=0)
            path = save_png_grid(grid, nrow, outputs.path("autoencoder"))
            rows = ", ".join(info["caption"]["rows"])
            lines = [f"model: {models.autoencoder} ({info['decoder']} decoder, {info['encoder']} encoder, "
                     f"step {info['step']})",
                     f"each row: a {info['split']} image of {info['data']} ({rows}), then "
                     + ("samples given its h" if info["caption"]["sources_first"] else "its reconstruction")]
            lines += [f"{k}: {v:.4g}" for k, v in info.items() if isinstance(v, float)]
            return str(path), _lines(lines)
        except (PcaeError, ValueError, OSError) as e:
            return None, _message(e, {})

    def class_samples(label, n, seed, progress=gr.Progress()):
        try:
            progress((0, 1), desc="sampling")
            images, nrow = sample_checkpoint(models.pixelcnn, int(n), label=int(label), seed=int(seed),
                                             device=device)
            path = save_png_grid(images, nrow, outputs.path("class"))
            return str(path), f"model: {models.pixelcnn}; {int(n)} samples of class {classes[int(label)]}"
        except (PcaeError, ValueError, OSError) as e:
            return None, _message(e, {})

    def search(upload, k, progress=gr.Progress()):
        names = {}
        try:
            query = _photo(upload, outputs, names)
            progress((0, 1), desc="searching")
            result = search_folder(models.latents, str(query), int(k))
            picture = draw_neighbours(models.latents, result, outputs.path("neighbours"), str(query))
            score = "cosine similarity" if result["metric"] == "cosine" else "squared L2 distance"
            table = [f"| rank | id | {score} | label | file |", "|---:|---:|---:|---|---|"]
            for m in result["neighbours"]:
                label = "-" if m["label"] < 0 else f"{m['label']}" + (f" {m['class']}" if m["class"] else "")
                table.append(f"| {m['rank']} | {m['id']} | {m['distance']:.4g} | {label} | {m.get('file') or '-'} |")
            return str(picture), "\n".join(table)
        except (PcaeError, ValueError, OSError) as e:
            return None, _message(e, names)

    classes, pixelcnn_note = [], models.missing.get("pixelcnn", "")
    if models.pixelcnn is not None:
        task = task_from_checkpoint(load_checkpoint(models.pixelcnn), models.pixelcnn)
        if task.condition == "label":
            classes = list(task.classes)
        else:
            pixelcnn_note = (f"{models.pixelcnn} is an unconditional PixelCNN: class samples need one trained "
                             "with `pcae train --condition label` (give it with --checkpoint).")

    with gr.Blocks(title="pcae demo", delete_cache=(3600, 3600)) as app:
        gr.Markdown("# pcae: conditional Gated PixelCNN\nDrawn on this machine, pixel by pixel; requests "
                    "wait their turn in one queue.")
        with gr.Tab("Portraits"):
            if portrait_model is None:
                gr.Markdown(models.missing["portrait"])
            else:
                gr.Markdown(f"New portraits of the person in a photo. Model: {models.portrait_note}")
                with gr.Row():
                    with gr.Column():
                        photo = gr.File(label="Photo with a face", file_types=PHOTO_TYPES, type="filepath",
                                        elem_id="portrait-photo")
                        n = gr.Slider(1, MAX_PORTRAITS, value=16, step=1, label="Portraits")
                        seed = _seed()
                        go = gr.Button("Draw portraits", variant="primary", elem_id="portrait-go")
                        examples = [e for e in EXAMPLES if (BUNDLED_FACES / e).exists()]
                        gr.Examples([[str(BUNDLED_FACES / e)] for e in examples], inputs=[photo],
                                    example_labels=[e.rsplit(".", 1)[0].replace("/", " ") for e in examples],
                                    label="Or a bundled face (ORL, Yale; pcae/data/faces)")
                    with gr.Column():
                        crop = gr.Image(label="The face used", type="filepath", interactive=False,
                                        elem_id="portrait-crop")
                        download = gr.File(label="The grid (PNG)", interactive=False, elem_id="portrait-download")
                grid = gr.Image(label="Portraits: the face, then the samples", type="filepath", interactive=False,
                                elem_id="portrait-grid")
                figures = gr.Markdown(elem_id="portrait-figures")
                go.click(portraits, [photo, n, seed], [crop, grid, figures, download], **ONE_AT_A_TIME)
        _tab("Morph", models.missing.get("portrait", ""),
             "One face into another: portraits along the line between their embeddings.",
             lambda: [*(gr.File(label=f"Face {x}", file_types=PHOTO_TYPES, type="filepath") for x in "AB"),
                      gr.Slider(2, MAX_STEPS, value=8, step=1, label="Steps"), _seed()],
             morph, "Morph", "A, the steps, B")
        _tab("Auto-encoder", models.missing.get("autoencoder", ""),
             f"Test images, each followed by samples given its h. Model: {models.autoencoder}",
             lambda: [gr.Slider(1, 8, value=4, step=1, label="Test images (the first of the test split)"),
                      gr.Slider(1, 8, value=4, step=1, label="Samples per image"), _seed()],
             autoencoder, "Sample", "Image | samples given its h")
        _tab("Class samples", "" if classes else pixelcnn_note, f"Samples of one class. Model: {models.pixelcnn}",
             lambda: [gr.Dropdown([(c, k) for k, c in enumerate(classes)], value=0, label="Class"),
                      gr.Slider(1, 36, value=16, step=1, label="Samples"), _seed()],
             class_samples, "Sample", "Samples")
        _tab("Search", models.missing.get("search", ""),
             f"The stored items nearest an image (or face photo). Latents: {models.latents}",
             lambda: [gr.File(label="Image", file_types=PHOTO_TYPES, type="filepath"),
                      gr.Slider(1, 32, value=8, step=1, label="Neighbours")],
             search, "Search", "The query, then its neighbours")
    app.queue(default_concurrency_limit=1, max_size=QUEUE_SIZE)
    return app


ONE_AT_A_TIME = dict(concurrency_limit=1, concurrency_id="pcae-model")  # one model call at a time, all tabs


def _seed() -> gr.Number:
    return gr.Number(0, precision=0, minimum=0, maximum=2**32 - 1, label="Seed")


def _tab(name: str, missing: str, intro: str, inputs: Callable[[], list], fn, button: str, picture: str) -> None:
    """A tab: the line saying why it is empty, or its intro, a row of inputs, a button, then a picture
    and a text, which fn(*inputs) -> (picture, text) fills through the one queue."""
    with gr.Tab(name):
        if missing:
            gr.Markdown(missing)
            return
        gr.Markdown(intro)
        with gr.Row():
            made = inputs()
        go = gr.Button(button, variant="primary")
        outputs = [gr.Image(label=picture, type="filepath", interactive=False), gr.Markdown()]
        go.click(fn, made, outputs, **ONE_AT_A_TIME)


def launch(app: gr.Blocks, host: str = "127.0.0.1", port: int = 7860) -> str:
    """Start serving `app` in the background; returns its address. `app.block_thread()` waits."""
    try:
        app.launch(server_name=host, server_port=port, prevent_thread_lock=True, quiet=True, ssr_mode=False,
                   max_file_size=MAX_UPLOAD, allowed_paths=[str(BUNDLED_FACES)], show_error=False,
                   footer_links=[], theme=gr.themes.Default(font=["ui-sans-serif", "system-ui", "sans-serif"],
                                                             font_mono=["ui-monospace", "monospace"]))
    except OSError as e:
        raise PcaeError(f"cannot serve on {host}:{port}: the port is in use or not allowed here; choose "
                        "another --port") from None
    return app.local_url if host in LOCAL_HOSTS else f"http://{host}:{port}/"
