"""A latents folder: its three files, always written together, opened and checked as one.

    latents.h5         the latents, ids, labels and encoder metadata (embeddings/store.py)
    index.faiss        a FAISS index over the latents, row i of the file = position i of the index
    index_infos.json   index string, metric, d, count, bytes, faiss version, build time,
                       recall@10 against exact search, the encoder, and a fingerprint of the
                       other two files (embeddings/index.py)

The three are replaced as one change (pcae.outputs: a staging folder and a journal), so a reader
never sees a new file beside old ones; `open_folder` first finishes a change a kill interrupted,
then refuses a folder whose files do not belong together.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from embeddings import index as ix
from embeddings.store import LatentStore, file_fingerprint, file_sha256, open_latents
from encoders import ENCODER_NAMES, load_encoder
from pcae.checkpoint import load_checkpoint
from pcae.errors import PcaeError
from pcae.outputs import recover_files

LATENTS, INDEX, INFOS = "latents.h5", "index.faiss", "index_infos.json"
FACE_PHOTO_SIZE = 256  # face encoders: photos are read at 256x256 (resize + centre crop), then the face is cut


def latents_paths(folder: Path) -> list[Path]:
    """The files of a latents folder that exist (links included)."""
    return [p for p in (folder / LATENTS, folder / INDEX, folder / INFOS) if p.exists() or p.is_symlink()]

def open_folder(folder) -> tuple[LatentStore, "object", dict]:
    """(store, index, infos) of a latents folder, checked to agree with each other. A writer that
    commits while they are read (search during `embed --force`) makes them disagree for a moment:
    then they are read again, the new ones."""
    folder = Path(folder)
    if not folder.is_dir():
        raise PcaeError(f"{folder}: no such latents folder")
    for attempt in range(3):
        recover_files(folder)  # waits for a live writer's commit
        before = _stamps(folder)
        try:
            return _open_checked(folder)
        except PcaeError:
            if attempt == 2 or _stamps(folder) == before:
                raise


def _stamps(folder: Path) -> list:
    """Which files the folder holds now (inode, mtime): what a commit changes."""
    stamps = []
    for name in (INFOS, INDEX, LATENTS):
        try:
            st = (folder / name).stat()
            stamps.append((st.st_ino, st.st_mtime_ns))
        except OSError:
            stamps.append(None)
    return stamps


def _open_checked(folder: Path) -> tuple[LatentStore, "object", dict]:
    infos = ix.read_infos(folder / INFOS)
    index = ix.load_index(folder / INDEX)
    store = open_latents(folder / LATENTS)
    if index.ntotal != len(store) or index.d != store.dim:
        store.close()
        raise PcaeError(f"{folder}: index ({index.ntotal} x {index.d}) and latents ({len(store)} x {store.dim}) "
                        f"disagree; rebuild with `pcae embed --force`")
    if index.metric_type != ix.METRICS[infos["metric"]] or infos["count"] != index.ntotal:
        store.close()
        raise PcaeError(f"{folder}: {INFOS} (metric {infos['metric']}, count {infos['count']}) does not "
                        f"describe {INDEX} ({ix.metric_name(index)}, {index.ntotal} vectors); rebuild "
                        "with `pcae embed --force`")
    for name, fingerprint in (infos.get("fingerprints") or {}).items():  # folders before them: none
        if name in (INDEX, LATENTS) and file_fingerprint(folder / name) != fingerprint:
            store.close()
            raise PcaeError(f"{folder}: {name} is not the file {INFOS} was written with (copied from "
                            "another embedding?); rebuild with `pcae embed --force`")
    try:
        store.check_ids()
        _check_flat_rows(folder, store, index, infos["metric"])  # a few stored vectors, also for old folders
    except PcaeError:
        store.close()
        raise
    try:
        ix.apply_search_params(index, infos.get("search_params", {}))
    except ValueError as e:
        store.close()
        raise PcaeError(f"{folder / INFOS}: field 'search_params': {e}") from None
    return store, index, infos

def _check_flat_rows(folder: Path, store: LatentStore, index, metric: str) -> None:
    """For a flat index (it stores the vectors): rows 0, N/2 and N-1 must be the latents' (cosine:
    normalised), else the index is another embedding's. Other index types cannot say."""
    import faiss

    if not isinstance(index, faiss.IndexFlat) or index.ntotal == 0:
        return
    rows = sorted({0, index.ntotal // 2, index.ntotal - 1})
    stored = np.stack([index.reconstruct(int(r)) for r in rows])
    latents = ix.prepare(store.rows(rows).astype(np.float32), metric)  # as they were added
    if not np.allclose(stored, latents, rtol=1e-4, atol=1e-5):
        raise PcaeError(f"{folder}: {INDEX} does not hold the vectors of {LATENTS} (another embedding's?); "
                        "rebuild with `pcae embed --force`")

def _fingerprints(tmp: dict) -> dict:
    """The fingerprints of a folder's latents and index, as written (checked by open_folder)."""
    return {name: file_fingerprint(tmp[name]) for name in (LATENTS, INDEX)}

def describe_folder(folder) -> dict:
    """Infos, index details and the latents file's encoder metadata of a latents folder."""
    store, index, infos = open_folder(folder)
    with store:
        return {"folder": str(folder), **infos, "index": ix.describe(index),
                "latents": {"count": len(store), "d": store.dim, "labels": store.labels is not None,
                            "preprocessing": store.meta.get("preprocessing"),
                            "segments": [{k: s[k] for k in ("source", "split", "first_id", "count")}
                                         for s in store.meta.get("segments", [])]}}


# ----------------------------------------------------------------------------- the encoder it records


def encoder_from_checkpoint(path: str | os.PathLike):
    """The encoder stored in a pcae checkpoint (an encoder's own, or the encoder of an auto-encoder)."""

    ck = load_checkpoint(path)
    configs, states = ck.get("configs") or {}, ck.get("state_dicts") or {}
    for key, cfg in configs.items():
        state = states.get(key)
        if isinstance(cfg, dict) and cfg.get("name") in ENCODER_NAMES:
            break
        if isinstance(cfg, dict) and isinstance(cfg.get("encoder"), dict):  # an auto-encoder's config
            cfg = cfg["encoder"]
            state = None if state is None else {k[len("encoder."):]: v for k, v in state.items()
                                                if k.startswith("encoder.")}
            break
    else:
        raise PcaeError(f"{path}: checkpoint of kind {ck['kind']!r} holds no encoder")
    try:
        return load_encoder(cfg, state or None)
    except (ValueError, RuntimeError, KeyError) as e:
        raise PcaeError(f"{path}: cannot rebuild its {cfg.get('name')} encoder ({' '.join(str(e).split())[:160]})") from None

def _data_options(encoder) -> dict:
    """load_dataset's channels / image_size for what the encoder reads."""
    cfg = encoder.config
    if cfg["name"] == "conv":
        h, w = cfg["image_size"]
        return {"channels": cfg["in_channels"], "image_size": h if h == w else None}
    if getattr(encoder, "detects_faces", False):  # whole photos, one common size (folders of mixed
        return {"channels": 3, "image_size": FACE_PHOTO_SIZE}  # sizes would get 32)
    return {"channels": None, "image_size": None}


def _recorded_encoder(meta: dict, checkpoint=None):
    """Rebuild the encoder the latents were made with (from `checkpoint`, where the recorded one
    is now, when given), refusing a checkpoint other than the one they were made with."""

    recorded = meta.get("checkpoint") or None
    if checkpoint is not None and not recorded:
        raise PcaeError(f"these latents were made by the {meta.get('encoder')} encoder without a "
                        "checkpoint: --checkpoint is not needed")
    ck = checkpoint or recorded
    if ck:
        if not Path(ck).is_file():
            raise PcaeError(f"the latents' encoder checkpoint {ck} is missing; an image query needs it "
                            "(pass --checkpoint with where it is now)")
        if file_sha256(ck) != meta.get("checkpoint_sha256"):
            raise PcaeError(f"{ck} is not the checkpoint the latents were made with (sha256 differs"
                            f"{'' if checkpoint else ': it has changed since'})")
        enc = encoder_from_checkpoint(ck)
    else:
        enc = load_encoder(meta["encoder_config"])
    return enc.eval()
