"""Latents on disk: one HDF5 file per latents folder (the latents file of embeddings/folder.py).

Layout of `latents.h5`:
    latents   (N, D) float32   one row per embedded item, chunked by rows and resizable
    ids       (N,)   int64     the item's id: its index in its source, shifted so that ids stay unique
                               when another source is appended (see the `segments` attr)
    labels    (N,)   int64     the item's class, -1 where unknown; absent when no row has a label
    files     (N,)   str       the item's file relative to its folder ("" where unknown); absent
                               when no row has one
    file_fingerprints (N,) str the file's `file_fingerprint` when it was embedded, for files read
                               from a folder ("" elsewhere); absent when no row has one (older files)
    attrs     format_version, encoder, encoder_config (JSON), dim, checkpoint (path), checkpoint_sha256,
              preprocessing (JSON), next_id,
              segments (JSON list of {source, split, first_id, first_row, count, ...})

`LatentWriter` appends blocks of rows to resizable datasets, so memory holds one block whatever N
is. It writes to the path it is given: callers that want the atomic rename wrap it in
`pcae.files.atomic_path` (the `embed` pipeline renames the latents, the index and its infos together).
`LatentStore` reads a file lazily (rows are read on demand) and turns every way a file can be
missing or broken into one PcaeError line.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import h5py
import numpy as np

from pcae.errors import PcaeError, first_line
from pcae.formats import name_bytes, name_text
from pcae.files import ensure_space

FORMAT_VERSION = 1
_CHUNK_ROWS = 4096
TEXT_COLUMNS = ("files", "file_fingerprints")  # "" where unknown; a column of only "" is not stored
_JSON_ATTRS = ("preprocessing", "segments", "encoder_config")


def file_sha256(path: str | os.PathLike) -> str:
    """Hex sha256 of a file, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def file_fingerprint(path: str | os.PathLike, whole_below: int = 16 << 20) -> str:
    """A cheap identity of a file's content: sha256 of its size and of all of it (files under
    `whole_below` bytes) or of 32 blocks of 64 KiB spread over it, first and last included. Two
    files of one size from different embeddings differ in it (it is no guard against forgery)."""
    size = os.path.getsize(path)
    h = hashlib.sha256(str(size).encode())
    with open(path, "rb") as f:
        if size < whole_below:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
        else:
            block = 1 << 16
            for i in range(32):
                f.seek((size - block) * i // 31)
                h.update(f.read(block))
    return h.hexdigest()


class LatentWriter:
    """Streaming writer for `latents.h5`.

    Args:
        path: file to write (created, or extended when `base` is given).
        dim: D, the size of each latent.
        meta: attrs to store — `encoder`, `checkpoint`, `checkpoint_sha256`, `preprocessing` (dict),
            `segments` (list of dicts); anything else JSON-serialisable is kept too.
        base: an existing latents file to copy first and append to (its D must equal `dim`).
    """

    def __init__(self, path: str | os.PathLike, dim: int, meta: dict, base: str | os.PathLike | None = None):
        if dim < 1:
            raise ValueError(f"dim must be >= 1, got {dim}")
        self.path = Path(path)
        self.dim = int(dim)
        ensure_space(self.path, os.path.getsize(base) if base is not None else 0)
        if base is not None:
            shutil.copyfile(base, self.path)
            self._f = h5py.File(self.path, "r+")
            if self._f["latents"].shape[1] != self.dim:
                got = self._f["latents"].shape[1]
                self._f.close()
                raise ValueError(f"dim {dim} does not match the base file's {got}")
        else:
            self._f = h5py.File(self.path, "w")
            self._f.create_dataset("latents", (0, self.dim), dtype="float32", maxshape=(None, self.dim),
                                   chunks=(min(_CHUNK_ROWS, max(1, (1 << 20) // (4 * self.dim))), self.dim))
            self._f.create_dataset("ids", (0,), dtype="int64", maxshape=(None,), chunks=(_CHUNK_ROWS,))
            self._f.create_dataset("labels", (0,), dtype="int64", maxshape=(None,), chunks=(_CHUNK_ROWS,))
        if "labels" not in self._f:  # a base file without labels gets -1 rows so the columns line up
            n = self._f["ids"].shape[0]
            self._f.create_dataset("labels", data=np.full(n, -1, np.int64), maxshape=(None,),
                                   chunks=(_CHUNK_ROWS,))
        for name in TEXT_COLUMNS:  # likewise "" for the files and their fingerprints
            if name not in self._f:
                n = self._f["ids"].shape[0]
                self._f.create_dataset(name, data=np.array([""] * n, dtype=object), maxshape=(None,),
                                       chunks=(_CHUNK_ROWS,), dtype=h5py.string_dtype())
        self._f.attrs["format_version"] = FORMAT_VERSION
        self._f.attrs["dim"] = self.dim
        for key, value in meta.items():
            self._f.attrs[key] = json.dumps(value) if key in _JSON_ATTRS else ("" if value is None else value)

    def __len__(self) -> int:
        return self._f["ids"].shape[0]

    def append(self, latents: np.ndarray, ids: np.ndarray, labels: np.ndarray | None = None,
               files: list[str] | None = None, file_fingerprints: list[str] | None = None) -> None:
        """Append rows: latents (B, D) float, ids (B,) int, labels (B,) int (-1 = unknown) or None,
        files and file_fingerprints (B,) str ("" = unknown) or None."""
        latents = np.asarray(latents, dtype=np.float32)
        ids = np.asarray(ids, dtype=np.int64)
        if latents.ndim != 2 or latents.shape[1] != self.dim:
            raise ValueError(f"latents must have shape (B, {self.dim}), got {latents.shape}")
        if ids.shape != (latents.shape[0],):
            raise ValueError(f"ids must have shape ({latents.shape[0]},), got {ids.shape}")
        labels = np.full(len(ids), -1, np.int64) if labels is None else np.asarray(labels, dtype=np.int64)
        if labels.shape != ids.shape:
            raise ValueError(f"labels must have shape {ids.shape}, got {labels.shape}")
        texts = {}
        for name, values in zip(TEXT_COLUMNS, (files, file_fingerprints)):
            texts[name] = [b""] * len(ids) if values is None else [name_bytes(str(v)) for v in values]
            if len(texts[name]) != len(ids):
                raise ValueError(f"{name} must name {len(ids)} rows, got {len(texts[name])}")
        n, b = len(self), len(ids)
        ensure_space(self.path, latents.nbytes + 16 * b + sum(len(v) for t in texts.values() for v in t))
        for name, rows in (("latents", latents), ("ids", ids), ("labels", labels),
                           *((k, np.array(v, dtype=object)) for k, v in texts.items())):
            ds = self._f[name]
            ds.resize(n + b, axis=0)
            ds[n:n + b] = rows

    def set_attr(self, key: str, value) -> None:
        self._f.attrs[key] = json.dumps(value) if key in _JSON_ATTRS else value

    def close(self) -> None:
        """Drop an all-unknown labels, files or file_fingerprints column, then close the file."""
        if self._f.id.valid:
            labels = self._f["labels"]
            if not any((labels[s:s + 65536] >= 0).any() for s in range(0, labels.shape[0], 65536)):
                del self._f["labels"]
            for name in TEXT_COLUMNS:
                column = self._f[name]
                if not any(any(v for v in column[s:s + 65536]) for s in range(0, column.shape[0], 65536)):
                    del self._f[name]
            self._f.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class LatentStore:
    """Read-only view of a `latents.h5` file; rows are read on demand.

    Attributes:
        latents: the h5py dataset (N, D); slice it to read rows.
        ids, labels: h5py datasets (labels is None when the file has none).
        meta: the attrs, JSON attrs decoded.
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        if not self.path.is_file():
            raise PcaeError(f"{self.path}: latents file not found")
        try:
            self._f = h5py.File(self.path, "r")
        except OSError as e:
            raise PcaeError(f"{self.path}: not a readable HDF5 file ({first_line(e)})") from None
        try:
            self.latents = self._f["latents"]
            self.ids = self._f["ids"]
            self.labels = self._f["labels"] if "labels" in self._f else None
            if self.latents.ndim != 2 or self.ids.shape != (self.latents.shape[0],):
                raise PcaeError(f"{self.path}: latents {self.latents.shape} and ids {self.ids.shape} disagree")
            if not np.issubdtype(self.latents.dtype, np.floating):
                raise PcaeError(f"{self.path}: dataset 'latents' must hold floats, got {self.latents.dtype}")
            for name in ("ids", "labels", *TEXT_COLUMNS):
                column = self._f[name] if name in self._f else None
                if column is not None and column.shape != self.ids.shape:
                    raise PcaeError(f"{self.path}: dataset {name!r} has shape {column.shape}, the latents "
                                    f"need {self.ids.shape}")
                if column is not None and name not in TEXT_COLUMNS and not np.issubdtype(column.dtype, np.integer):
                    raise PcaeError(f"{self.path}: dataset {name!r} must hold integers, got {column.dtype}")
                if column is not None and name in TEXT_COLUMNS and h5py.check_string_dtype(column.dtype) is None:
                    raise PcaeError(f"{self.path}: dataset {name!r} must hold strings, got {column.dtype}")
            self.meta = {k: (json.loads(v) if k in _JSON_ATTRS else _plain(v)) for k, v in self._f.attrs.items()}
            _check_meta(self.path, self.meta, self.dim)
        except (KeyError, OSError, ValueError) as e:
            self._f.close()
            raise PcaeError(f"{self.path}: not a pcae latents file ({first_line(e)})") from None
        except PcaeError:
            self._f.close()
            raise

    @property
    def dim(self) -> int:
        return int(self.latents.shape[1])

    def __len__(self) -> int:
        return int(self.latents.shape[0])

    def rows(self, positions) -> np.ndarray:
        """Latents at the given row positions (any order, repeats allowed) -> (len, D) float32."""
        positions = np.asarray(positions, dtype=np.int64)
        uniq, inverse = np.unique(positions, return_inverse=True)  # h5py wants increasing indices
        return self.latents[uniq][inverse] if len(uniq) else np.zeros((0, self.dim), np.float32)

    def column(self, name: str, positions) -> np.ndarray:
        """Values of `ids`, `labels`, `files` or `file_fingerprints` at row positions (labels: -1
        and the text columns: "" where the file has none)."""
        positions = np.asarray(positions, dtype=np.int64)
        if name == "labels" and self.labels is None:
            return np.full(len(positions), -1, np.int64)
        if name in TEXT_COLUMNS:
            if name not in self._f:
                return np.array([""] * len(positions), dtype=object)
            uniq, inverse = np.unique(positions, return_inverse=True)
            values = self._f[name][uniq] if len(uniq) else np.zeros(0, object)
            return np.array([name_text(v) for v in values], dtype=object)[inverse] if len(uniq) \
                else np.zeros(0, object)
        uniq, inverse = np.unique(positions, return_inverse=True)
        return self._f[name][uniq][inverse] if len(uniq) else np.zeros(0, np.int64)

    def check_ids(self) -> None:
        """PcaeError unless every id is stored once (a search would show one item as many)."""
        n, previous, increasing = len(self), None, True
        for start in range(0, n, 1 << 20):  # the usual case, ids in increasing order, in one pass
            block = self.ids[start:start + (1 << 20)]
            if np.any(np.diff(block) <= 0) or (previous is not None and len(block) and block[0] <= previous):
                increasing = False
                break
            previous = block[-1] if len(block) else previous
        if increasing:
            return
        ids, counts = np.unique(self.ids[:], return_counts=True)
        if np.any(counts > 1):
            raise PcaeError(f"{self.path}: id {int(ids[np.argmax(counts > 1)])} is stored "
                            f"{int(counts.max())} times; every id must be stored once")

    def position_of(self, item_id: int) -> int:
        """Row position of an id; PcaeError when the file has no such id."""
        n = len(self)
        if 0 <= item_id < n and self.ids[item_id] == item_id:  # ids are usually 0..N-1 in order
            return int(item_id)
        for start in range(0, n, 1 << 16):
            hit = np.flatnonzero(self.ids[start:start + (1 << 16)] == item_id)
            if len(hit):
                return start + int(hit[0])
        raise PcaeError(f"{self.path}: no item with id {item_id}")

    def segment_of(self, item_id: int) -> dict:
        """The segment (source, split, first_id, ...) an id came from."""
        for seg in self.meta.get("segments", []):
            # span: the source items the segment covers, faceless ones included (count: rows kept)
            if seg["first_id"] <= item_id < seg["first_id"] + seg.get("span", seg["count"]):
                return seg
        raise PcaeError(f"{self.path}: no source recorded for id {item_id}")

    def close(self) -> None:
        self._f.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


# The attrs readers rely on, with their types (absent ones are allowed: older files lack some).
_ATTR_TYPES = {"format_version": int, "encoder": str, "encoder_config": dict, "dim": int, "checkpoint": str,
               "checkpoint_sha256": str, "preprocessing": dict, "next_id": int, "segments": list}
_SEGMENT_TYPES = {"source": str, "split": str, "first_id": int, "count": int, "first_row": int,
                  "offset": int, "span": int, "load": dict, "classes": (list, type(None)),
                  "origin": (str, type(None)), "shard": list, "root": str}
_SEGMENT_REQUIRED = ("source", "split", "first_id", "count", "first_row")  # offset, load: images shown
_LOAD_TYPES = {"channels": (int, type(None)), "image_size": (int, type(None)), "data_root": (str, type(None))}


def _type_names(kind) -> str:
    kinds = kind if isinstance(kind, tuple) else (kind,)
    return " or ".join("null" if k is type(None) else {"dict": "object", "list": "list", "str": "string",
                                                       "int": "integer"}[k.__name__] for k in kinds)


def _is(value, kind) -> bool:
    kinds = kind if isinstance(kind, tuple) else (kind,)
    return isinstance(value, kinds) and not (isinstance(value, bool) and int in kinds)


def _check_meta(path: Path, meta: dict, dim: int) -> None:
    """PcaeError naming the attr (and segment field) unless the decoded attrs have the types
    search, append and merge rely on."""
    for key, kind in _ATTR_TYPES.items():
        if key in meta and not _is(meta[key], kind):
            raise PcaeError(f"{path}: attr {key!r} must be {_type_names(kind)}, got {meta[key]!r:.60}")
    if "dim" in meta and meta["dim"] != dim:
        raise PcaeError(f"{path}: attr 'dim' is {meta['dim']}, the latents have {dim} columns")
    if meta.get("next_id", 0) < 0:
        raise PcaeError(f"{path}: attr 'next_id' must not be negative, got {meta['next_id']}")
    for n, seg in enumerate(meta.get("segments", [])):
        where = f"{path}: attr 'segments' entry {n}"
        if not isinstance(seg, dict):
            raise PcaeError(f"{where} must be an object, got {seg!r:.60}")
        for key in _SEGMENT_REQUIRED:
            if key not in seg:
                raise PcaeError(f"{where} lacks field {key!r}")
        for key, kind in _SEGMENT_TYPES.items():
            if key in seg and not _is(seg[key], kind):
                raise PcaeError(f"{where}: field {key!r} must be {_type_names(kind)}, got {seg[key]!r:.60}")
        for key in ("count", "first_row", "span"):
            if seg.get(key, 0) < 0:
                raise PcaeError(f"{where}: field {key!r} must not be negative, got {seg[key]}")
        for key, kind in _LOAD_TYPES.items() if "load" in seg else ():
            if not _is(seg["load"].get(key), kind):
                raise PcaeError(f"{where}: field 'load.{key}' must be {_type_names(kind)}, got "
                                f"{seg['load'].get(key)!r:.60}")
        if seg.get("classes") is not None and not all(isinstance(c, str) for c in seg["classes"]):
            raise PcaeError(f"{where}: field 'classes' must list strings")


def open_latents(path: str | os.PathLike) -> LatentStore:
    """Open a latents file for reading (PcaeError when missing or not a latents file)."""
    return LatentStore(path)


def _plain(v):
    """h5py attr -> plain Python value."""
    if isinstance(v, bytes):
        return v.decode()
    if isinstance(v, np.generic):
        return v.item()
    return v


