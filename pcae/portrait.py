"""Drawing portraits with a trained portrait model: `pcae portrait PHOTO`, `pcae interpolate A B`.

    load_portrait(checkpoint)          a "portrait" checkpoint as a PortraitModel (pcae/tasks/portrait.py,
                                       where the method, the recipe and the training are)
    draw_portraits(model, photo, n)    the face of one photo, n portraits drawn given its embedding in
                                       one batch, and their figures (eval.faces.portrait_scores)
    interpolate(model, a, b, steps)    portraits along the line between two faces' embeddings, the
                                       same noise along each row
    save_samples(result, path)         the portraits as PNGs + scores.json, or one HDF5 file

`PortraitSpec` is importable from here too (`from pcae.portrait import PortraitSpec`).
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import h5py
import torch
import torch.nn.functional as F
from PIL import Image
from PIL.PngImagePlugin import PngInfo

from eval.faces import portrait_scores
from pcae.batches import resolve_device
from pcae.checkpoint import load_checkpoint
from pcae.faces import encoder_weights
from pcae.errors import PcaeError
from pcae.files import SOFTWARE, atomic_path, open_image, refuse_existing, storable
from pcae.images import save_grid
from pcae.kinds import task_from_checkpoint
from pcae.options import check_guidance, check_temperature
from pcae.outputs import output_folder
from pcae.data import SHIPPED_PORTRAIT
from pcae.runs import newest_run, require_newest_run
from pcae.sampling import check_sampler, sample
from pcae.tasks.portrait import PortraitModel, PortraitSpec  # noqa: F401  (PortraitSpec: importable here)

RANDOM_WARNING = ("FaceNet weights are random (NOT pretrained): embeddings carry no identity, "
                  "so the portraits and scores say nothing about the person")


# ---------------------------------------------------------------------------------------------
# Using a trained portrait model


def load_portrait(path: str | os.PathLike | PortraitModel, device: str = "cpu") -> PortraitModel:
    """A portrait checkpoint as a PortraitModel on `device`, eval mode; PcaeError for other files.

    A PortraitModel passes through (moved to `device`), so callers can load once and draw often.
    """
    if isinstance(path, PortraitModel):
        return path.eval().to(resolve_device(device))
    checkpoint = load_checkpoint(path, kind="portrait")
    task = task_from_checkpoint(checkpoint, path)
    model = PortraitModel(task.model, task.facenet, task.faces, task.identity, task.people, task.norm,
                          task.sampling).float().eval()
    return model.to(resolve_device(device))


def _sampler(sampler: str | None) -> str:
    if sampler is None:
        return "cached"
    check_sampler(sampler)
    return sampler


def _check_sampling(temperature: float | None, guidance: float | None) -> None:
    """Fail fast (before loading a model) on a bad temperature or guidance; None is the model's."""
    for check, value in ((check_temperature, temperature), (check_guidance, guidance)):
        if value is not None:
            check(value)


def _check_photo(path) -> Path:
    """Fail fast (before loading a model) on a missing, non-image or unreadable photo."""

    open_image(path)
    return Path(path)


@dataclass
class PortraitResult:
    """What `draw_portraits` returns. Images are uint8 (N, C, S, S)."""

    photo: str
    probability: float  # the detector's score of the face used
    faces_found: int  # faces in the photo (the largest is used unless face_index says otherwise)
    face_index: int
    source: torch.Tensor  # (1, C, S, S) the face crop at the decoder's size
    samples: torch.Tensor  # (n, C, S, S)
    random_weights: bool
    facenet_weights: str
    sampler: str
    seed: int
    temperature: float
    guidance: float = 0.0
    scores: dict = field(default_factory=dict)  # eval.faces.portrait_scores

    @property
    def grid(self) -> torch.Tensor:
        """The source crop first, then the samples: (n + 1, C, S, S)."""
        return torch.cat([self.source, self.samples])

    def layout(self) -> tuple[torch.Tensor, int]:
        """(tiles, per row) for the portrait grid: the source crop alone in the first column (blank
        below it; save_grid's gap sets it apart), the samples in rows of ceil(sqrt(n)) beside it."""
        n = len(self.samples)
        k = max(1, math.ceil(math.sqrt(n)))
        blank = torch.full_like(self.source[0], 128)  # the grid's own grey
        tiles = []
        for r in range(0, n, k):
            tiles += [self.source[0] if r == 0 else blank, *self.samples[r:r + k]]
        return torch.stack(tiles), k + 1

    def summary(self) -> dict:
        keys = ("photo", "probability", "faces_found", "face_index", "random_weights", "facenet_weights",
                "sampler", "seed", "temperature", "guidance")
        return {k: getattr(self, k) for k in keys} | {"n": len(self.samples), **self.scores}


MAX_STRIP = 64  # the most steps (and rows) of an interpolation: a 64-step row is ~2,300 px wide
PORTRAITS_OUT = Path("portraits")  # where `pcae portrait PHOTO` writes PHOTO-NAME.png when not told


def default_portrait_paths(photo, checkpoint=None, out=None) -> tuple[Path, Path, str]:
    """(checkpoint, out, note) for `pcae portrait`: the model is --checkpoint, else the newest
    finished portrait run's checkpoint under runs/ (a user's own run comes first), else the model
    shipped with pcae (pcae/data/portrait, MODEL_CARD.md there); out is PORTRAITS_OUT/<photo's
    name>.png when not given. The note says which model draws, and why."""

    note = ""
    if checkpoint is None:
        checkpoint, note = default_portrait_model()
    if out is None:
        out = PORTRAITS_OUT / f"{Path(photo).stem}.png"
    return Path(checkpoint), Path(out), note


def default_portrait_model() -> tuple[Path, str]:
    """(model, note) when no --checkpoint is given: the newest finished portrait run under runs/,
    else the shipped model; a one-line error when neither exists."""
    run = newest_run("portrait")
    if run is not None:
        return Path(run.checkpoint), f"{run.checkpoint} (the newest portrait run under runs/)"
    if (SHIPPED_PORTRAIT / "config.json").exists() or (SHIPPED_PORTRAIT / "model.safetensors").exists():
        return SHIPPED_PORTRAIT, (f"{SHIPPED_PORTRAIT} (the model shipped with pcae, see its MODEL_CARD.md; "
                                  "a portrait run of yours under runs/ or --checkpoint takes precedence)")
    return Path(require_newest_run("portrait", "portrait model", "pcae train-portraits").checkpoint), ""


@torch.no_grad()
def draw_portraits(checkpoint: str | os.PathLike | PortraitModel, photo: str | os.PathLike, n: int = 16, *,
                   face_index: int | None = None, sampler: str | None = None, seed: int = 0,
                   temperature: float | None = None, guidance: float | None = None, device: str = "cpu",
                   progress: Callable[[int, int], None] | None = None,
                   references: list | tuple = ()) -> PortraitResult:
    """Draw n portraits of the person in `photo` in one batch, and score them.

    Args:
        checkpoint: a "portrait" checkpoint (pcae train-portraits), or a loaded PortraitModel.
        photo: an image file; its largest face is used, or face `face_index` (largest first).
        n: number of portraits.
        sampler: a name in pcae.sampling.SAMPLERS (default "cached").
        seed, temperature, guidance: for the sampler (pcae.sampling.sample; temperature 0 =
            argmax); None: the model's (PortraitModel.sampling).
        device: "cpu" or "cuda" (detection always runs on the CPU).
        progress: called with (rows done, rows) while sampling.
        references: real photos of the same person: their pose and lighting spread is the
            reference the portraits' is read against (default: the known person's photos).
    Returns:
        PortraitResult; its scores are eval.faces.portrait_scores'.
    """

    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    _check_sampling(temperature, guidance)
    method = _sampler(sampler)
    photo = _check_photo(photo)
    model = load_portrait(checkpoint, device)
    temperature, guidance = model.draw_settings(temperature, guidance)
    crop, prob, found = model.facenet.detect_file(photo, face_index)  # (3, F, F) uint8
    source = model.shrink(crop)  # (1, C, S, S)
    h = model.embed(crop[None])  # (1, D)
    target = next(model.decoder.parameters()).device
    generator = torch.Generator(target).manual_seed(seed)
    samples = sample(model.decoder, n, model.image_shape, model.condition(h).expand(n, -1), temperature,
                     generator, method=method, progress=progress, guidance=guidance).to(torch.uint8).cpu()
    reference = None
    if references:  # detect_file gives the one-line errors of a missing or broken photo
        reference = torch.cat([model.shrink(model.facenet.detect_file(r)[0]) for r in references])
    scores = portrait_scores(model, crop, source, samples, h[0], reference)
    return PortraitResult(photo=str(photo), probability=prob, faces_found=found, face_index=face_index or 0,
                          source=source, samples=samples, random_weights=model.random_weights,
                          facenet_weights=encoder_weights(model.facenet), sampler=method, seed=seed,
                          temperature=temperature, guidance=guidance, scores=scores)


@dataclass
class Interpolation:
    """What `interpolate` returns: rows of (face a, steps samples, face b), uint8 (C, S, S) each."""

    images: torch.Tensor  # (rows * (steps + 2), C, S, S)
    nrow: int  # steps + 2
    weights: list[float]  # t of each step, 0 = a, 1 = b
    distance: float  # between the two faces' embeddings
    random_weights: bool
    facenet_weights: str
    named: list[str] | None = None  # per step of row 0: the person the identity judge sees
    persons: tuple = (None, None)  # the known people of face a and face b


@torch.no_grad()
def interpolate(checkpoint: str | os.PathLike | PortraitModel, a: str | os.PathLike, b: str | os.PathLike,
                steps: int = 8, *, rows: int = 1, seed: int = 0, temperature: float | None = None,
                guidance: float | None = None, sampler: str | None = None,
                face_index: tuple[int | None, int | None] = (None, None),
                device: str = "cpu") -> Interpolation:
    """Portraits along the line from the embedding of face a to that of face b.

    Step k uses h = (1 - t_k) e_a + t_k e_b, t_k = k / (steps - 1) (renormalised for an encoder
    with unit embeddings). Every step is drawn with a generator seeded `seed`, so row r gets the
    same noise at every step and what changes along a row is the embedding's doing.

    Returns:
        Interpolation; images are rows of (crop a, the steps samples, crop b).
    """

    if not 2 <= steps <= MAX_STRIP:
        raise ValueError(f"steps must be in [2, {MAX_STRIP}] (each step is a portrait drawn pixel by pixel), "
                         f"got {steps}")
    if not 1 <= rows <= MAX_STRIP:
        raise ValueError(f"rows must be in [1, {MAX_STRIP}], got {rows}")
    _check_sampling(temperature, guidance)
    method = _sampler(sampler)
    a, b = _check_photo(a), _check_photo(b)
    model = load_portrait(checkpoint, device)
    temperature, guidance = model.draw_settings(temperature, guidance)
    crops = [model.facenet.detect_file(p, i)[0] for p, i in zip((a, b), face_index)]
    e_a, e_b = model.embed(torch.stack(crops))  # (D,) each
    target = next(model.decoder.parameters()).device
    ts = torch.linspace(0, 1, steps).tolist()
    columns = []
    for t in ts:
        h = (1 - t) * e_a + t * e_b
        if getattr(model.facenet, "unit_norm", False):  # keep h where the encoder's embeddings lie
            h = F.normalize(h, dim=0)
        generator = torch.Generator(target).manual_seed(seed)
        x = sample(model.decoder, rows, model.image_shape, model.condition(h[None]).expand(rows, -1),
                   temperature, generator, method=method, guidance=guidance)
        columns.append(x.to(torch.uint8).cpu())
    ends = [model.shrink(c).expand(rows, -1, -1, -1) for c in crops]
    grid = torch.stack([ends[0], *columns, ends[1]], dim=1).flatten(0, 1)  # row-major
    named = model.identity.name(torch.cat([c[:1] for c in columns])) if model.identity is not None else None
    return Interpolation(images=grid, nrow=steps + 2, weights=ts, distance=float((e_a - e_b).norm()),
                         random_weights=model.random_weights, facenet_weights=encoder_weights(model.facenet),
                         named=named, persons=(model.person_of(e_a)[0], model.person_of(e_b)[0]))


# ---------------------------------------------------------------------------------------------
# Writing results


save_png_grid = save_grid  # the portrait grids: pcae.images.save_grid with their scores as text


def facenet_note(random_weights: bool, weights: str) -> str:
    if weights == "dlib":
        return "face encoder: dlib's pretrained ResNet (face-recognition-models)"
    return RANDOM_WARNING if random_weights else f"FaceNet weights: {weights}"


def _pcae_png():
    """PNG text chunks that mark a file as pcae's (what --force may replace)."""

    info = PngInfo()
    info.add_text("Software", SOFTWARE)
    return info


def save_samples(result: PortraitResult, path: str | os.PathLike, checkpoint: str = "", *,
                 force: bool = False) -> Path:
    """The samples as PNGs in a folder (sample_000.png, ...) + scores.json, or as one HDF5 file
    (path ending .h5): `images` uint8 (n, C, S, S) (pcae-images/1, so `h5:PATH` reads it),
    `source` uint8 (1, C, S, S); attrs with the scores. An existing set is replaced only with
    `force`, checked under the folder's lock: of two commands writing one folder, the second fails."""

    path = Path(path)
    meta = {"pcae": "portrait samples", "checkpoint": str(checkpoint), **result.summary(),
            "note": facenet_note(result.random_weights, result.facenet_weights)}
    if path.suffix.lower() in (".h5", ".hdf5"):
        refuse_existing(path, force)
        with atomic_path(path, suffix=".h5") as tmp:
            with h5py.File(tmp, "w") as f:
                f.create_dataset("images", data=result.samples.numpy())
                f.create_dataset("source", data=result.source.numpy())
                f.attrs["format"] = "pcae-images/1"
                f.attrs["source"] = storable(f"portraits of {result.photo}")
                for key, value in meta.items():
                    f.attrs[key] = storable(value) if isinstance(value, str) else \
                        value if isinstance(value, (bool, int, float)) else json.dumps(value)
        return path
    paths_of = lambda folder: sorted(folder.glob("sample_*.png")) + [  # noqa: E731
        f for f in [folder / "scores.json"] if f.exists() or f.is_symlink()]
    with output_folder(path, "portrait samples folder", paths_of) as folder:
        if folder.existing() and not force:  # under the lock: another command may have written it since
            raise PcaeError(f"{path}: already holds portraits ({folder.existing()[0].name}, ...); pass "
                            "--force to replace them")
        folder.replace()  # an older set (pcae's) waits aside
        for k, image in enumerate(result.samples):
            array = image.permute(1, 2, 0).numpy()
            with atomic_path(path / f"sample_{k:03d}.png", suffix=".png") as tmp:
                Image.fromarray(array[:, :, 0] if array.shape[2] == 1 else array).save(
                    tmp, format="png", pnginfo=_pcae_png())
        with atomic_path(path / "scores.json") as tmp:
            tmp.write_text(json.dumps(meta, indent=2, default=str) + "\n")
    return path
