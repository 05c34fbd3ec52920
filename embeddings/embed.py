"""Writing latents folders (embeddings/folder.py): embed a dataset with an encoder, merge shard parts.

`embed` streams the data through the encoder batch by batch into the HDF5 file (memory holds one
batch), then builds the index by reading the file back in blocks. `--shard i/n` embeds the i-th
contiguous slice of the data into DIR/part-i-of-n/; when the index needs training, every shard
trains it on the same sample of the whole dataset, so the parts share one quantizer and
`merge_parts` can use FAISS's IVF `merge_from`. Parts that cannot be merged that way (HNSW, or IVF
parts trained apart) are merged by adding their stored latents to a copy of the first part's index.

Every split of the source is embedded (train, then test: one segment each, ids running on over
both) unless one is asked for. Ids are the items' indexes in their data source (the test split's
after the train split's); an appended source's ids start after the largest id already stored.
Each split of a source is a `segment` in the latents file's attrs, which is how search
(embeddings/search.py, whose names are importable here too) finds the images of the neighbours;
items read from a folder also record their file and its fingerprint (the segment its `root`), so a
neighbour is drawn from the very file it was embedded from. Skipped items (unreadable files,
photos without a face) are counted and named in index_infos.json (`skipped`, `skipped_files`).
The folder is written through pcae.outputs (one writer, --force for pcae's own files only, the
three files replaced as one change); Ctrl-C stops between batches and leaves it as it was.
"""
from __future__ import annotations

import json
import os
import time
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from embeddings import index as ix
from embeddings.folder import (  # noqa: F401
    FACE_PHOTO_SIZE,
    INDEX,
    INFOS,
    LATENTS,
    _data_options,
    _fingerprints,
    describe_folder,
    encoder_from_checkpoint,
    latents_paths,
    open_folder,
)
from embeddings.search import draw_neighbours, neighbour_images, search_folder  # noqa: F401  (importable here too)
from embeddings.store import (
    LatentStore,
    LatentWriter,
    file_fingerprint,
    file_sha256,
)
from encoders import ENCODER_NAMES, build_encoder
from encoders.facenet import detect_crops, photo_files
from pcae.data import load_dataset
from pcae.errors import Interrupted, PcaeError, deferred_interrupt
from pcae.options import SPLITS, check_split
from pcae.outputs import output_folder, refuse_not_ours
from pcae.runs import require_newest_run, run_of_checkpoint

TRAIN_SEED = 0


def parse_shard(text: str | None) -> tuple[int, int] | None:
    """'i/n' -> (i, n) with 0 <= i < n; None stays None."""
    if text is None:
        return None
    try:
        i, n = (int(v) for v in text.split("/"))
    except ValueError:
        raise PcaeError(f"--shard must look like i/n (e.g. 0/4), got {text!r}") from None
    if not 0 <= i < n:
        raise PcaeError(f"--shard i/n needs 0 <= i < n, got {text!r}")
    return i, n


# ----------------------------------------------------------------------------- encoders


@dataclass(frozen=True)
class EmbedInputs:
    """What `embed` reads, with the defaults filled in: see `embed_inputs`."""
    encoder: str | None
    checkpoint: Path | None
    source: str
    data_root: str | None
    note: str  # where the checkpoint and the data came from, for the user ("" when all were given)


def embed_inputs(encoder: str | None, checkpoint, source: str | None, data_root=None) -> EmbedInputs:
    """The defaults of `pcae embed`: with neither an encoder nor a checkpoint, the newest finished
    auto-encoder run's checkpoint (pcae.runs); the encoder a checkpoint holds (None here, named when
    it is opened); the data a checkpoint's run trained on, else fashion-mnist."""

    notes = []
    if encoder is None and checkpoint is None:
        run = require_newest_run("autoencoder", "auto-encoder run", "pcae train-ae --bottleneck 10")
        checkpoint = run.checkpoint
        notes.append(f"checkpoint {checkpoint} (the newest auto-encoder run)")
    if source is None:
        run = run_of_checkpoint(checkpoint) if checkpoint is not None else None
        if run is not None and run.data:
            source, data_root = run.data, data_root if data_root is not None else run.data_root
            notes.append(f"data {source} (what the run trained on)")
        else:
            source = "fashion-mnist"
    return EmbedInputs(encoder, None if checkpoint is None else Path(checkpoint), source,
                       None if data_root is None else str(data_root), ", ".join(notes))


def open_encoder(name: str | None, checkpoint: str | os.PathLike | None = None, num_classes: int = 0,
                 facenet_weights: str | None = None):
    """(encoder in eval mode, metadata {encoder, encoder_config, checkpoint, checkpoint_sha256, preprocessing}).

    name: a registered encoder, or None for the one the checkpoint holds.
    facenet_weights: for facenet without a checkpoint, "vggface2" (default), "casia-webface", a
    weights file, or "random" (recorded in the metadata).
    """

    if name is None and checkpoint is None:
        raise PcaeError("give --encoder, or --checkpoint with the encoder to use")
    if name is not None and name not in ENCODER_NAMES:
        raise PcaeError(f"unknown encoder {name!r}; known: {', '.join(ENCODER_NAMES)}")
    if facenet_weights is not None and (name != "facenet" or checkpoint is not None):
        raise PcaeError("--facenet-weights goes with --encoder facenet and no --checkpoint")
    if checkpoint is not None:
        encoder = encoder_from_checkpoint(checkpoint)
        stored = encoder.config["name"]
        name = name or stored
        if stored != name:
            raise PcaeError(f"{checkpoint}: holds a {stored} encoder, not {name}")
    elif name == "conv":
        raise PcaeError("--encoder conv needs --checkpoint (a trained auto-encoder or encoder checkpoint)")
    elif name == "onehot":
        if num_classes < 1:
            raise PcaeError("--encoder onehot needs labelled data, and this source has no classes")
        encoder = build_encoder("onehot", num_classes=num_classes)
    else:
        encoder = build_encoder(name, **({} if facenet_weights is None else {"weights": facenet_weights}))
    encoder.eval()
    meta = {"encoder": name, "encoder_config": dict(encoder.config),
            "checkpoint": "" if checkpoint is None else str(Path(checkpoint).resolve()),
            "checkpoint_sha256": "" if checkpoint is None else file_sha256(checkpoint),
            "preprocessing": dict(encoder.preprocessing)}
    return encoder, meta


def _encode(encoder, images, labels, photos=None) -> tuple[np.ndarray, np.ndarray]:
    """One batch -> (latents (B', D) float32, kept (B',) bool mask over the batch); PcaeError when
    the encoder gives NaN or inf (an index of them answers nothing)."""
    z, keep = _encode_batch(encoder, images, labels, photos)
    if not np.isfinite(z).all():
        raise PcaeError(f"the {(getattr(encoder, 'config', None) or {}).get('name', 'given')} encoder gave NaN or inf latents; its "
                        "weights (or the images) are not usable, so nothing was written")
    return z, keep


def _encode_batch(encoder, images, labels, photos=None) -> tuple[np.ndarray, np.ndarray]:
    with torch.no_grad():
        if encoder.input == "labels":
            keep = labels >= 0
            return encoder(labels[keep]).float().numpy(), keep.numpy()
        if getattr(encoder, "detects_faces", False):  # crop the face first (in the whole photo file,
            crops = detect_crops(encoder, images, photos)  # as search does); skip images without one
            keep = torch.tensor([c is not None for c in crops], dtype=torch.bool)
            if not keep.any():
                return np.zeros((0, encoder.dim), np.float32), keep.numpy()
            return encoder(torch.stack([c for c in crops if c is not None])).float().numpy(), keep.numpy()
        return encoder(images).float().numpy(), np.ones(len(images), bool)


def _batches(ds, rows: np.ndarray, batch_size: int):
    """(rows, images uint8 (B, C, H, W), labels (B,)) for consecutive slices of `rows`."""

    for s in range(0, len(rows), batch_size):
        r = rows[s:s + batch_size]
        if ds.images is not None:
            yield r, ds.images[r], ds.labels[r]
        else:
            items = [ds[int(i)] for i in r]
            yield r, torch.stack([x for x, _ in items]), torch.tensor([y for _, y in items], dtype=torch.long)


# ----------------------------------------------------------------------------- embed

def embed(encoder: str | None = None, checkpoint=None, source: str | None = None, out="latents", *,
          split: str | None = None, index_string: str | None = None,
          metric: str | None = None, append: bool = False, shard: tuple[int, int] | None = None,
          force: bool = False, batch_size: int = 256, data_root=None, limit: int | None = None,
          flat_max: int = ix.FLAT_MAX, facenet_weights: str | None = None,
          progress: Callable[[int, int], None] | None = None) -> dict:
    """Embed a data source (every split, or the one asked for) into a latents folder (see the
    module docstring).

    Args:
        encoder: registered encoder name (None: the checkpoint's); checkpoint: a pcae checkpoint
            holding it (None for onehot and pretrained face encoders; with no encoder either, the
            newest finished auto-encoder run's, see `embed_inputs`).
        source, data_root: what `pcae.data.load_dataset` reads (source None: the data the
            checkpoint's run trained on, else fashion-mnist).
        split: "train" or "test"; None (the default): every item, train then test, one segment each.
        out: the latents folder (with `shard`, its part-i-of-n sub-folder is written).
        index_string, metric: index to build (None: chosen by size; metric defaults to l2, or to the
            existing folder's on append).
        append: add to the folder's latents and index (encoder, checkpoint, d and metric must match).
        shard: (i, n) to embed the i-th of n contiguous slices.
        limit: embed only the first `limit` items (of the splits one after the other).
        facenet_weights: see `open_encoder`.
        progress: called as progress(done, total) after each batch.
    Returns:
        the index infos written to index_infos.json (plus `skipped`, the number of items without a
        latent, and `skipped_files`, [{file, reason}] for each: unreadable files, faceless photos),
        `splits` ({split: latents added}) and `random_weights`: whether the encoder is an untrained
        (random) FaceNet.
    Raises:
        Interrupted: on Ctrl-C, which stops the embed at the next batch or before the commit,
            the folder as it was.
    """

    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if append and shard:
        raise PcaeError("--append and --shard cannot be combined: embed shards, then `pcae index merge`")
    if checkpoint is not None and not Path(checkpoint).exists():
        raise PcaeError(f"{checkpoint}: no such checkpoint file")
    out = Path(out)
    if shard:
        out = out / f"part-{shard[0]}-of-{shard[1]}"
    with _stop_on_ctrl_c(out) as ctrl_c, \
            output_folder(out, "latents folder", latents_paths) as folder:  # from the first read to the commit
        old = _existing(out, append, force)
        if old and metric is not None and metric != old["infos"]["metric"]:
            raise PcaeError(f"{out}: the index uses metric {old['infos']['metric']}, not {metric}")
        if old and index_string is not None and index_string != old["infos"]["index_string"]:
            raise PcaeError(f"{out}: the index is {old['infos']['index_string']!r}, not {index_string!r}")
        metric = metric or (old["infos"]["metric"] if old else "l2")
        if metric not in ix.METRICS:
            raise PcaeError(f"--metric must be one of {', '.join(ix.METRICS)}, got {metric!r}")

        chosen = embed_inputs(encoder, checkpoint, source, data_root)
        checkpoint, source, data_root = chosen.checkpoint, chosen.source, chosen.data_root
        # onehot needs the number of classes before the data is opened with the encoder's options
        splits = SPLITS if split is None else (check_split(split),)
        probe = load_dataset(source, splits[0], data_root=data_root, empty_ok=len(splits) > 1) \
            if encoder == "onehot" and checkpoint is None else None
        enc, meta = open_encoder(encoder, checkpoint, probe.num_classes if probe is not None else 0, facenet_weights)
        if old:
            _check_same_encoder(out, old["meta"], meta, enc.dim)
        if index_string is not None:
            try:
                ix.create_index(enc.dim, index_string, metric)
            except ValueError as e:
                raise PcaeError(f"--index: {e}") from None
        options = _data_options(enc)
        datasets = [probe if probe is not None and options["channels"] is None and s == splits[0] else
                    load_dataset(source, s, data_root=data_root, empty_ok=len(splits) > 1, **options)
                    for s in splits]
        # the splits' items one after another: ids (and --limit, --shard) run over the concatenation
        bases = np.cumsum([0] + [len(ds) for ds in datasets])
        n_all = int(bases[-1]) if limit is None else min(limit, int(bases[-1]))
        lo, hi = (shard[0] * n_all // shard[1], (shard[0] + 1) * n_all // shard[1]) if shard else (0, n_all)
        first_id = old["next_id"] if old else 0
        parts, skipped = [], []  # (dataset, its rows, its segment) of each split with rows in [lo, hi)
        for s, ds, base in zip(splits, datasets, bases):
            rows = np.arange(max(lo, base), min(hi, base + len(ds))) - base
            # the files the data source could not read (once, in shard 0), then the items the encoder could not embed
            skipped += [] if shard and shard[0] else [item for item in ds.info.get("skipped") or []
                                                      if item not in skipped]  # a class folder: once
            if not len(rows):
                continue
            segment = {"source": source, "split": s, "origin": ds.info.get("origin"), "offset": first_id + int(base),
                       "first_id": first_id + int(base + rows[0]), "count": 0, "first_row": 0,
                       "load": {**options, "data_root": None if data_root is None else str(data_root)},
                       "classes": ds.classes, "span": len(rows)}  # span: ids first_id .. first_id + span - 1
            if shard:
                segment["shard"] = list(shard)
            if photo_files(ds, []) is not None:  # a folder's files: each row records its own, to be drawn from it
                segment["root"] = str(Path(ds.info["origin"]).resolve())
            parts.append((ds, rows, segment))
        if not bases[-1]:  # every split empty (one asked for is refused by load_dataset)
            first = f": {len(skipped)} unreadable, {skipped[0]['file']}: {skipped[0]['reason']}" if skipped else ""
            raise PcaeError(f"{datasets[0].info.get('origin') or source}: no images{first}")
        total = sum(len(rows) for _, rows, _ in parts)
        why = "no face found" if getattr(enc, "detects_faces", False) else "no label"
        what = f"{source} ({'+'.join(splits)})"

        out.mkdir(parents=True, exist_ok=True)
        t0 = time.perf_counter()
        with folder.files([LATENTS, INDEX, INFOS]) as tmp:  # all three replaced together
            tmp_latents, tmp_index, tmp_infos = tmp[LATENTS], tmp[INDEX], tmp[INFOS]
            segments = (old["meta"].get("segments", []) if old else []) + [seg for _, _, seg in parts]
            with LatentWriter(tmp_latents, enc.dim, {**meta, "segments": segments},
                              base=out / LATENTS if old else None) as writer:
                done = 0
                for ds, rows, segment in parts:
                    segment["first_row"] = len(writer)
                    for r, images, labels in _batches(ds, rows, batch_size):
                        photos = photo_files(ds, r)
                        z, keep = _encode(enc, images, labels, photos)
                        files = [ds.files[i] for i in r[keep]] if ds.files is not None else None
                        prints = [file_fingerprint(p) for p, k in zip(photos, keep) if k] if photos else None
                        writer.append(z, r[keep] + segment["offset"], labels.numpy()[keep], files, prints)
                        skipped += [{"file": ds.files[i] if ds.files is not None else f"id {i + segment['offset']}",
                                     "reason": why} for i in r[~keep]]
                        done += len(r)
                        ctrl_c.check()
                        if progress:
                            progress(done, total)
                    segment["count"] = len(writer) - segment["first_row"]
                writer.set_attr("segments", segments)
                writer.set_attr("next_id", int(first_id + (hi if shard else n_all)))
            embed_time = time.perf_counter() - t0

            with LatentStore(tmp_latents) as store:
                if len(store) == 0:
                    raise PcaeError(f"no latents: {what} gave no item the {meta['encoder']} encoder could embed")
                if old:
                    index = ix.load_index(out / INDEX)
                    ix.check_compatible(index, store.dim, metric, old["infos"])
                    t1 = time.perf_counter()
                    ix.add_vectors(index, store.latents, metric, start=old["count"])
                    infos = {**old["infos"], "count": int(index.ntotal),
                             "build_time_s": round(old["infos"].get("build_time_s", 0) + time.perf_counter() - t1, 3),
                             **ix.measure_recall(index, store.latents, metric)}
                else:
                    train = None
                    if shard:  # every shard trains on one common sample of all the shards' items
                        index_string = index_string or ix.default_index_string(n_all, flat_max)
                        train = _common_train_sample(enc, datasets, bases, n_all, index_string, metric, batch_size)
                    index, infos = ix.build_index(store.latents, index_string, metric, flat_max=flat_max,
                                                  train_vectors=train, seed=TRAIN_SEED)
            infos.update(bytes=_write_index(index, tmp_index),
                         encoder=meta["encoder"], checkpoint=meta["checkpoint"],
                         checkpoint_sha256=meta["checkpoint_sha256"], embed_time_s=round(embed_time, 3),
                         images_per_s=round(total / max(embed_time, 1e-9), 1),
                         skipped=len(skipped) + (old["infos"].get("skipped", 0) if old else 0),
                         skipped_files=(old["infos"].get("skipped_files", []) if old else []) + skipped,
                         faiss_version=infos["faiss_version"])
            if shard:
                infos["shard"] = list(shard)
            infos["fingerprints"] = _fingerprints(tmp)
            tmp_infos.write_text(json.dumps(infos, indent=2) + "\n")
            ctrl_c.check()  # the last moment before the commit
        return {**infos, "out": str(out), "random_weights": bool(meta["preprocessing"].get("random_weights")),
                "splits": {seg["split"]: seg["count"] for _, _, seg in parts}}


def skipped_text(infos: dict, limit: int = 5) -> str:
    """'N skipped: a.png, b.png and M more' for an embed's infos: the first `limit` skipped items
    named (their reasons are in index_infos.json's skipped_files); "" when none was skipped."""
    if not infos.get("skipped"):
        return ""
    named = [s["file"] for s in infos.get("skipped_files", [])[:limit]]
    more = infos["skipped"] - len(named)
    return (f"{infos['skipped']} skipped" + (f": {', '.join(named)}" if named else "")
            + (f" and {more} more" if named and more > 0 else ""))


@contextmanager
def _stop_on_ctrl_c(out: Path):
    """Ctrl-C during an embed sets a flag that `check()` turns into a stop between batches and
    before the commit (a second Ctrl-C stops at once): a KeyboardInterrupt raised by the signal
    itself can land in h5py's or torch's weakref callbacks, where Python prints it as "ignored"
    and the embed went on to replace the folder and exit 0. The stop is an Interrupted (exit 130)
    saying what `out` holds. A KeyboardInterrupt of the caller's own (no Ctrl-C) passes as it is."""
    had = bool(latents_paths(out))
    with deferred_interrupt() as ctrl_c:
        try:
            yield ctrl_c
        except KeyboardInterrupt:
            if not ctrl_c.requested:
                raise
            kept = f"{out} holds its previous latents, as they were" if had else f"nothing was written to {out}"
            raise Interrupted(f"interrupted: {kept}") from None


def _write_index(index, path: Path) -> int:
    import faiss

    faiss.write_index(index, str(path))
    return path.stat().st_size


def _common_train_sample(enc, datasets, bases, n_all, index_string, metric, batch_size) -> np.ndarray | None:
    """Latents of the same random sample of the first n_all items of the splits one after another
    (`datasets`, starting at `bases`), for every shard (None: the index needs no training)."""
    probe = ix.create_index(enc.dim, index_string, metric)
    if probe.is_trained:
        return None
    ivf = ix.extract_ivf(probe)
    rows = ix.sample_rows(n_all, 50 * ivf.nlist if ivf is not None else 100_000, TRAIN_SEED)
    parts = []
    for ds, base in zip(datasets, bases):
        mine = rows[(rows >= base) & (rows < base + len(ds))] - base
        parts += [_encode(enc, x, y, photo_files(ds, r))[0] for r, x, y in _batches(ds, mine, batch_size)]
    return np.concatenate(parts)


def _existing(out: Path, append: bool, force: bool) -> dict | None:
    """What an --append run adds to; PcaeError when the folder holds latents and neither flag is set
    (with --force, when one of its files is not pcae's: pcae.outputs.refuse_not_ours)."""
    present = [name for name in (LATENTS, INDEX, INFOS) if (out / name).exists()]
    if append:
        if len(present) < 3:
            missing = sorted({LATENTS, INDEX, INFOS} - set(present))
            raise PcaeError(f"{out}: nothing to append to ({', '.join(missing)} missing)")
        store, _, infos = open_folder(out)  # the same checks as a search: what is appended to must hold
        with store:
            meta, count = store.meta, len(store)
            next_id = meta.get("next_id")
            if next_id is None:
                next_id = max((int(store.ids[s:s + 65536].max()) for s in range(0, count, 65536)), default=-1) + 1
        if infos.get("count") != count:
            raise PcaeError(f"{out}: index_infos.json counts {infos.get('count')} items, latents.h5 {count}")
        return {"infos": infos, "meta": meta, "count": count, "next_id": int(next_id)}
    if present and not force:
        raise PcaeError(f"{out} already holds {', '.join(present)}; pass --force to replace them "
                        f"or --append to add to them")
    # --force replaces pcae's own latents folder (out of step or damaged: what it is for), never
    # a user's file: a damaged file counts as pcae's only beside one that is pcae's for sure
    refuse_not_ours([out / name for name in present])
    return None


def _check_same_encoder(out: Path, old: dict, new: dict, dim: int) -> None:
    if old.get("encoder") != new["encoder"]:
        raise PcaeError(f"{out}: latents were made by the {old.get('encoder')} encoder, not {new['encoder']}")
    if old.get("dim") != dim:
        raise PcaeError(f"{out}: dimension mismatch: stored latents have d={old.get('dim')}, "
                        f"the {new['encoder']} encoder gives d={dim}")
    if old.get("checkpoint_sha256", "") != new["checkpoint_sha256"]:
        raise PcaeError(f"{out}: latents were made with another checkpoint "
                        f"({old.get('checkpoint') or 'none'}, sha256 {old.get('checkpoint_sha256', '')[:12] or '-'})")


# ----------------------------------------------------------------------------- folders


# ----------------------------------------------------------------------------- merge

def merge_parts(parts: list, out, *, force: bool = False) -> dict:
    """Merge shard folders (from `embed(..., shard=...)`) into one latents folder.

    Parts are ordered by their shard number; all n shards must be present, with one encoder,
    checkpoint, d, metric and index string. Returns the merged folder's infos.
    """
    if not parts:
        raise PcaeError("index merge needs at least one part folder")
    out = Path(out)
    if any(Path(p).resolve() == out.resolve() for p in parts):
        raise PcaeError(f"{out}: the output folder cannot also be a part")
    resolved = [Path(p).resolve() for p in parts]
    twice = sorted({str(p) for p in parts if resolved.count(Path(p).resolve()) > 1})
    if twice:  # every id of it would be stored twice
        raise PcaeError(f"{twice[0]}: given more than once as a part")
    with output_folder(out, "latents folder", latents_paths) as folder:  # one writer at a time
        _existing(out, append=False, force=force)
        opened = [open_folder(p) for p in parts]
        with ExitStack() as stack:
            for store, _, _ in opened:
                stack.enter_context(store)
            infos0, meta0 = opened[0][2], opened[0][0].meta
            shards = [o[2].get("shard") for o in opened]
            if all(shards):
                n = shards[0][1]
                have = sorted(s[0] for s in shards)
                if any(s[1] != n for s in shards) or have != sorted(set(have)):
                    raise PcaeError(f"parts are not distinct shards of one split: {[f'{i}/{m}' for i, m in shards]}")
                if have != list(range(n)):
                    missing = sorted(set(range(n)) - set(have))
                    raise PcaeError(f"shard(s) {', '.join(f'{i}/{n}' for i in missing)} missing from the parts")
                opened.sort(key=lambda o: o[2]["shard"][0])
                parts = [p for _, p in sorted(zip([s[0] for s in shards], parts))]
            for (store, index, infos), p in zip(opened, parts):
                for key in ("encoder", "checkpoint_sha256", "metric", "index_string", "d"):
                    if infos.get(key) != infos0.get(key):
                        raise PcaeError(f"{p}: its {key} ({infos.get(key)}) differs from {parts[0]}'s ({infos0.get(key)})")

            ids = [o[0].ids[:] for o in opened]  # each part's are distinct (open_folder): across parts?
            for i, j in ((i, j) for i in range(len(ids)) for j in range(i + 1, len(ids))):
                both = np.intersect1d(ids[i], ids[j])
                if len(both):
                    raise PcaeError(f"{parts[i]} and {parts[j]} both hold id {int(both[0])} ({len(both)} ids in "
                                    "common): merge holds parts of one embedding with distinct ids (shards)")
            del ids
            t0 = time.perf_counter()
            indexes = [o[1] for o in opened]
            merged = ix.merge_indexes(indexes)
            how = "faiss merge_from"
            if merged is None:
                import faiss
                merged, how = faiss.clone_index(indexes[0]), "re-added into part 0's trained index"
                for store, _, _ in opened[1:]:
                    ix.add_vectors(merged, store.latents, infos0["metric"])
            ix.apply_search_params(merged, infos0.get("search_params", {}))

            out.mkdir(parents=True, exist_ok=True)
            with folder.files([LATENTS, INDEX, INFOS]) as tmp:  # all three replaced together
                tmp_latents, tmp_index, tmp_infos = tmp[LATENTS], tmp[INDEX], tmp[INFOS]
                segments, row = [], 0
                for store, _, _ in opened:
                    for seg in store.meta.get("segments", []):
                        segments.append({**seg, "first_row": row + seg["first_row"]})
                    row += len(store)
                meta = {k: meta0.get(k) for k in ("encoder", "encoder_config", "checkpoint", "checkpoint_sha256",
                                                  "preprocessing")}
                with LatentWriter(tmp_latents, opened[0][0].dim, {**meta, "segments": segments}) as writer:
                    for store, _, _ in opened:
                        for s in range(0, len(store), ix.BLOCK):
                            block = np.arange(s, min(len(store), s + ix.BLOCK))
                            writer.append(store.latents[s:s + ix.BLOCK], store.ids[s:s + ix.BLOCK],
                                          store.column("labels", block), list(store.column("files", block)),
                                          list(store.column("file_fingerprints", block)))
                    writer.set_attr("next_id", max(int(o[0].meta.get("next_id", 0)) for o in opened))
                with LatentStore(tmp_latents) as store:
                    recall = ix.measure_recall(merged, store.latents, infos0["metric"])
                infos = {k: v for k, v in infos0.items() if k not in ("shard", "embed_time_s", "images_per_s")}
                infos.update(count=int(merged.ntotal), merge=how, parts=[str(p) for p in parts],
                             skipped=sum(o[2].get("skipped", 0) for o in opened),
                             skipped_files=[s for o in opened for s in o[2].get("skipped_files", [])],
                             build_time_s=round(time.perf_counter() - t0, 3), **recall,
                             bytes=_write_index(merged, tmp_index))
                infos["fingerprints"] = _fingerprints(tmp)
                tmp_infos.write_text(json.dumps(infos, indent=2) + "\n")
        return {**infos, "out": str(out)}
