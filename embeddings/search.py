"""Searching a latents folder: nearest neighbours of a stored id or of an image, and their pictures.

`search_folder(folder, "id:N" | PATH)` embeds an image query with the encoder the folder records
(the same preprocessing as at embed time), searches the index and names each neighbour's id,
distance, label and file; `draw_neighbours` draws the query and its neighbours in one row, each
from the file it was embedded from when it came from a folder (never from whatever the folder holds
at that place today), else from its data source.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from embeddings import index as ix
from embeddings.folder import LATENTS, _data_options, _recorded_encoder, open_folder
from embeddings.store import file_fingerprint, open_latents
from pcae.data import convert_images, load_dataset
from pcae.errors import PcaeError
from pcae.files import SOFTWARE, atomic_path, open_image, storable


def search_folder(folder, query: str, k: int = 10, checkpoint=None) -> dict:
    """k nearest stored items to QUERY ('id:N' or an image file).

    checkpoint: where the encoder checkpoint the latents were made with is now, when it has moved
        (an image query is embedded with it; its sha256 must be the recorded one).

    Returns:
        {"query", "metric", "neighbours": [{"rank", "id", "distance", "label", "class", "file"}]};
        for the cosine metric "distance" is the cosine similarity (larger = closer); "file" is the
        item's file relative to its folder (folder and h5 sources), else None. An id query does
        not return the item itself.
    """
    if k < 1:
        raise PcaeError(f"-k must be >= 1, got {k}")
    store, index, infos = open_folder(folder)
    with store:
        exclude = None
        if query.startswith("id:"):
            try:
                qid = int(query[3:])
            except ValueError:
                raise PcaeError(f"query {query!r}: expected id:N with an integer N") from None
            exclude = store.position_of(qid)
            vector = store.rows([exclude])
        else:
            vector = embed_query_image(store.meta, query, checkpoint)
        if not np.isfinite(vector).all():
            raise PcaeError(f"{folder}: the latent of {query} is NaN or inf; rebuild the folder with "
                            "`pcae embed --force` from a usable checkpoint")
        dist, pos = ix.search(index, vector, min(k + (exclude is not None), index.ntotal), infos["metric"])
        keep = [(d, p) for d, p in zip(dist[0], pos[0]) if p >= 0 and p != exclude][:k]
        if not keep and index.ntotal > (exclude is not None):
            raise PcaeError(f"{folder}: the index found no neighbour of {query} among its {index.ntotal} "
                            "vectors (are they NaN?); rebuild with `pcae embed --force`")
        positions = [p for _, p in keep]
        ids, labels = store.column("ids", positions), store.column("labels", positions)
        files = store.column("files", positions)
        neighbours = []
        for rank, ((d, _), i, lab, file) in enumerate(zip(keep, ids, labels, files), 1):
            classes = store.segment_of(int(i)).get("classes") if store.meta.get("segments") else None
            neighbours.append({"rank": rank, "id": int(i), "distance": round(float(d), 6), "label": int(lab),
                               "class": classes[lab] if classes and 0 <= lab < len(classes) else None,
                               "file": file or None})
        return {"query": query, "metric": infos["metric"], "neighbours": neighbours}

def embed_query_image(meta: dict, path, checkpoint=None) -> np.ndarray:
    """The latent (1, D) of an image file, made by the encoder recorded in the latents' metadata
    (from `checkpoint` when given: the recorded checkpoint, moved)."""


    path = Path(path)
    name = meta.get("encoder")
    if not path.is_file():
        raise PcaeError(f"query {path}: no such image file (or use id:N)")
    if name == "onehot":
        raise PcaeError("these latents are one-hot labels: search them with id:N, not an image")
    if name in ("facenet", "dlib"):
        if (meta.get("encoder_config") or {}).get("weights") == "random" and not meta.get("checkpoint"):
            raise PcaeError("these latents were made with random FaceNet weights that were not saved: "
                            "an image query cannot be embedded the same way; use id:N")
        enc = _recorded_encoder(meta, checkpoint)
        crop = enc.detect_file(path)[0]
        with torch.no_grad():
            return enc(crop[None]).float().numpy()
    image = read_image(path)
    enc = _recorded_encoder(meta, checkpoint)
    opts = _data_options(enc)
    cfg = enc.config
    x = convert_images(image[None], opts["channels"], opts["image_size"])
    if opts["image_size"] is None and tuple(x.shape[2:]) != tuple(cfg["image_size"]):
        x = torch.nn.functional.interpolate(x.float(), size=tuple(cfg["image_size"]), mode="bilinear",
                                            antialias=True).round().clamp(0, 255).to(torch.uint8)
    with torch.no_grad():
        return enc(x).float().numpy()

def read_image(path) -> "torch.Tensor":
    """An image file as uint8 (C, H, W), C = 1 or 3; PcaeError when it is not an image."""


    try:
        im = open_image(path)
    except PcaeError as e:
        raise PcaeError(f"query {e}") from None
    im = im.convert("L" if im.mode in ("1", "L", "I", "I;16", "F") else "RGB")
    a = np.array(im, np.uint8)
    a = a[None] if a.ndim == 2 else a.transpose(2, 0, 1)
    return torch.from_numpy(np.ascontiguousarray(a))


def neighbour_images(folder, result: dict, query_image=None):
    """uint8 images (C, H, W) of the query (when it is an id) and of each neighbour: read from the
    file each row records (folder sources; PcaeError when it is gone or changed), else from their
    sources."""

    store = open_latents(Path(folder) / LATENTS)
    cache, images = {}, []
    with store:
        ids = ([int(result["query"][3:])] if result["query"].startswith("id:") else []) + \
              [n["id"] for n in result["neighbours"]]
        for i in ids:
            seg = store.segment_of(i)
            position = store.position_of(i)
            fingerprint = store.column("file_fingerprints", [position])[0]
            if fingerprint:
                images.append(_recorded_image(seg, i, store.column("files", [position])[0], fingerprint))
                continue
            if "load" not in seg or "offset" not in seg:
                raise PcaeError(f"{store.path}: attr 'segments' does not record how {seg['source']} was "
                                "loaded (fields 'load', 'offset'): its images cannot be shown")
            key = json.dumps([seg["source"], seg["split"], seg["load"]], sort_keys=True)
            if key not in cache:
                load = seg["load"]
                cache[key] = load_dataset(seg["source"], seg["split"], channels=load["channels"],
                                          image_size=load["image_size"], data_root=load["data_root"])
            images.append(cache[key][i - seg["offset"]][0])
    if query_image is not None:
        images.insert(0, query_image)
    return images

def _recorded_image(seg: dict, item_id: int, file: str, fingerprint: str):
    """The image of a stored row, read from the file it was embedded from and converted as at
    embed time; PcaeError when that file is gone or no longer the one embedded."""
    path = Path(seg.get("root", "")) / file
    if not path.is_file():
        raise PcaeError(f"{path}: recorded for id {item_id} but no longer there")
    if file_fingerprint(path) != fingerprint:
        raise PcaeError(f"{path}: recorded for id {item_id} but changed since it was embedded")
    load = seg.get("load") or {}  # channels None: a folder's photos load as RGB (pcae.data)
    return convert_images(read_image(path)[None], load.get("channels") or 3, load.get("image_size"))[0]

def draw_neighbours(folder, result: dict, out, query_file=None) -> Path:
    """A one-row grid: the query, then its neighbours with id, distance and class; written atomically."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    query_image = read_image(query_file) if query_file else None
    images = neighbour_images(folder, result, query_image)
    titles = ["query" + (f"\n{result['query']}" if result["query"].startswith("id:") else "")] + [
        f"id {n['id']}\n{n['distance']:.3g}" + (f"\n{n['class']}" if n["class"] else "")
        + (f"\n{Path(n['file']).name[:18]}" if n.get("file") else "") for n in result["neighbours"]]
    fig, axes = plt.subplots(1, len(images), figsize=(1.4 * len(images), 1.9), squeeze=False)
    for ax, img, title in zip(axes[0], images, titles):
        a = img.numpy()
        ax.imshow(a[0] if a.shape[0] == 1 else a.transpose(1, 2, 0), cmap="gray", vmin=0, vmax=255)
        ax.set_title(storable(title), fontsize=7)  # a file or class name that is not UTF-8: escapes
        ax.axis("off")
    fig.tight_layout()
    out = Path(out)
    with atomic_path(out, out.suffix) as tmp:
        fmt = out.suffix[1:].lower() or "png"
        fig.savefig(tmp, dpi=100, format=fmt, metadata={"Software": SOFTWARE} if fmt == "png" else None)
    plt.close(fig)
    return out
