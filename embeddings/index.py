"""FAISS indexes over latents: build, tune, search, save, load, append, merge, describe.

An index is made by `faiss.index_factory` from an index string [1]. When none is given the size
decides (`default_index_string`): exact `Flat` search up to `flat_max` vectors, above that an
inverted file `IVF{nlist},Flat` with nlist ~ 2 sqrt(N) (a power of two, at least 39 training points
per list, as FAISS's k-means asks; the FAISS wiki suggests 4-16 sqrt(N), we stay lower so that
k-means on 2 CPU cores takes seconds, and let the tuned nprobe buy the recall back). IVF is the default rather than HNSW because IVF indexes built
with one trained quantizer merge cheaply (`merge_from`), which is what sharded embedding needs.

Metric `l2` is squared Euclidean distance (smaller = closer); `cosine` normalises every vector and
uses inner product, so its "distance" is the cosine similarity (larger = closer).

Search parameters (IVF nprobe, HNSW efSearch) are tuned after building, in the spirit of
autofaiss [2]: the smallest setting whose recall@10 against exact search reaches `target_recall` on a
sample of stored vectors used as queries; the recall reported in the infos is measured on a second,
disjoint sample. Both parameters are serialised by `faiss.write_index`.

Everything here reads vectors through slicing (`x[a:b]`, sorted fancy indexing), so an in-memory
array and an h5py dataset work alike and memory holds one block, whatever N is.

[1] https://github.com/facebookresearch/faiss/wiki/The-index-factory
[2] https://github.com/criteo/autofaiss (index_infos.json)
Known limits: merge of HNSW (or of IVF parts with different quantizers) is not a FAISS operation;
`embeddings.embed.merge_parts` re-adds those parts' vectors into the first part's trained index.
`faiss.IndexShards` would search parts side by side, but `faiss.write_index` cannot save it, so a
merged folder always holds one real index.
"""
from __future__ import annotations

import json
import math
import os
import re
import time
from pathlib import Path

import faiss
import numpy as np

from pcae.errors import PcaeError
from pcae.files import atomic_path

FLAT_MAX = 20_000
METRICS = {"l2": faiss.METRIC_L2, "cosine": faiss.METRIC_INNER_PRODUCT}
BLOCK = 65_536
_STEPS = {"nprobe": [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096],
          "efSearch": [16, 32, 64, 128, 256, 512, 1024]}


def default_index_string(n: int, flat_max: int = FLAT_MAX) -> str:
    """Index string for n vectors: 'Flat' when n <= flat_max, else 'IVF{nlist},Flat'."""
    if n < 0 or flat_max < 0:
        raise ValueError(f"n and flat_max must be >= 0, got {n}, {flat_max}")
    if n <= flat_max:
        return "Flat"
    nlist = 2 ** round(math.log2(2 * math.sqrt(n)))
    while nlist > 1 and n < 39 * nlist:
        nlist //= 2
    return f"IVF{nlist},Flat"


def prepare(x, metric: str) -> np.ndarray:
    """Vectors as C-contiguous float32, L2-normalised for the cosine metric (a copy)."""
    x = np.array(x, dtype=np.float32, order="C", copy=True)
    if x.ndim != 2:
        raise ValueError(f"vectors must be 2-D (N, D), got shape {x.shape}")
    if metric == "cosine":
        faiss.normalize_L2(x)
    elif metric != "l2":
        raise ValueError(f"metric must be one of {sorted(METRICS)}, got {metric!r}")
    return x


def create_index(d: int, index_string: str, metric: str = "l2") -> faiss.Index:
    """An empty index from `faiss.index_factory` (ValueError for a string FAISS does not accept)."""
    if metric not in METRICS:
        raise ValueError(f"metric must be one of {sorted(METRICS)}, got {metric!r}")
    # sizes FAISS accepts in the string but then aborts the process on, or loops forever on

    for kind, value, least in [(m.group(1), int(m.group(2)), 2) for m in re.finditer(r"(HNSW|NSG)(\d+)", index_string)] \
            + [("IVF", int(m.group(1)), 1) for m in re.finditer(r"IVF(\d+)", index_string)]:
        if value < least:
            raise ValueError(f"index string {index_string!r}: {kind}{value} needs {kind}{least} or more")
    try:
        return faiss.index_factory(int(d), index_string, METRICS[metric])
    except RuntimeError as e:
        raise ValueError(f"index string {index_string!r} is not one faiss.index_factory accepts "
                         f"({' '.join(str(e).split())[-120:]})") from None


def train_index(index: faiss.Index, vectors, metric: str, max_train: int | None = None, seed: int = 0) -> None:
    """Train on a random sample of `vectors` (no-op for indexes that need no training)."""
    if index.is_trained:
        return
    n = len(vectors)
    if max_train is None:
        ivf = extract_ivf(index)
        max_train = 50 * ivf.nlist if ivf is not None else 100_000
    rows = sample_rows(n, max_train, seed)
    try:
        index.train(prepare(vectors[rows], metric))
    except RuntimeError as e:  # e.g. fewer training points than IVF lists
        raise PcaeError(f"cannot train the index on {len(rows)} vectors "
                        f"({' '.join(str(e).split())[-120:]})") from None


def add_vectors(index: faiss.Index, vectors, metric: str, block: int = BLOCK, start: int = 0) -> None:
    """Add rows start.. of `vectors` (array or h5py dataset), block by block."""
    d = vectors.shape[1]
    if d != index.d:
        raise ValueError(f"vectors have d={d}, the index d={index.d}")
    for s in range(start, len(vectors), block):
        index.add(prepare(vectors[s:s + block], metric))


def search(index: faiss.Index, queries, k: int, metric: str) -> tuple[np.ndarray, np.ndarray]:
    """k nearest stored vectors -> (distances (Q, k), positions (Q, k)); position -1 = fewer than k."""
    queries = prepare(np.atleast_2d(queries), metric)
    if queries.shape[1] != index.d:
        raise PcaeError(f"query has d={queries.shape[1]} but the index holds d={index.d} vectors")
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    return index.search(queries, k)


def exact_knn(vectors, queries: np.ndarray, k: int, metric: str, block: int = BLOCK) -> np.ndarray:
    """Exact k-NN positions (Q, k) by brute force, streamed over blocks of `vectors`."""
    q = prepare(queries, metric)
    mt = METRICS[metric]
    best_d = np.full((len(q), 0), 0, np.float32)
    best_i = np.zeros((len(q), 0), np.int64)
    for start in range(0, len(vectors), block):
        xb = prepare(vectors[start:start + block], metric)
        dist, idx = faiss.knn(q, xb, min(k, len(xb)), metric=mt)
        dd = np.concatenate([best_d, dist], axis=1)
        ii = np.concatenate([best_i, idx + start], axis=1)
        order = np.argsort(-dd if metric == "cosine" else dd, axis=1, kind="stable")[:, :k]
        best_d, best_i = np.take_along_axis(dd, order, 1), np.take_along_axis(ii, order, 1)
    return best_i


def recall_at_k(index: faiss.Index, vectors, queries: np.ndarray, metric: str, k: int = 10,
                truth: np.ndarray | None = None) -> float:
    """Mean |approximate top-k ∩ exact top-k| / k over the queries (k at most the number of vectors:
    with 3 vectors a perfect index finds all 3 of 3, not 3 of 10)."""
    k = min(k, len(vectors))
    truth = exact_knn(vectors, queries, k, metric) if truth is None else truth[:, :k]
    _, got = search(index, queries, k, metric)
    return float(np.mean([len(set(a) & set(b)) / k for a, b in zip(got, truth)]))


def tune_search(index: faiss.Index, vectors, queries: np.ndarray, metric: str, target_recall: float = 0.95,
                k: int = 10) -> dict:
    """Smallest nprobe (IVF) or efSearch (HNSW) whose recall@k reaches the target; returns the setting."""
    name = "nprobe" if extract_ivf(index) is not None else "efSearch" if _hnsw(index) is not None else None
    if name is None or len(queries) == 0:
        return {}
    truth = exact_knn(vectors, queries, k, metric)
    steps = [s for s in _STEPS[name] if name != "nprobe" or s <= extract_ivf(index).nlist] or [1]
    for value in steps:
        _set_param(index, name, value)
        if recall_at_k(index, vectors, queries, metric, k, truth) >= target_recall:
            break
    return {name: value}


def build_index(vectors, index_string: str | None = None, metric: str = "l2", *, flat_max: int = FLAT_MAX,
                train_vectors=None, target_recall: float = 0.97, n_queries: int = 200, seed: int = 0,
                block: int = BLOCK) -> tuple[faiss.Index, dict]:
    """Build, tune and measure an index over `vectors`.

    Args:
        vectors: (N, D) array or h5py dataset, read in blocks.
        index_string: a `faiss.index_factory` string; None picks `default_index_string(N, flat_max)`.
        metric: 'l2' or 'cosine'.
        train_vectors: where the training sample comes from (default `vectors`); shards pass a sample
            common to all shards so that their quantizers are identical and merge.
        target_recall: recall@10 that the search parameter tuning aims for.
        n_queries: stored vectors used as queries for tuning and, separately, for the reported recall.
    Returns:
        (index, infos): infos holds index_string, metric, d, count, build_time_s, recall_at_10,
        search_params and faiss_version (the caller adds bytes and the encoder once it is saved).
    """
    n, d = vectors.shape
    index_string = index_string or default_index_string(n, flat_max)
    t0 = time.perf_counter()
    index = create_index(d, index_string, metric)
    if not index.is_trained:
        source = vectors if train_vectors is None else train_vectors
        if len(source) == 0:
            raise PcaeError(f"index {index_string!r} needs training but there are no vectors")
        train_index(index, source, metric, seed=seed)
    add_vectors(index, vectors, metric, block)
    rows = sample_rows(n, 2 * n_queries, seed + 1)
    rng = np.random.default_rng(seed + 2)
    rng.shuffle(rows)
    tune_rows, eval_rows = np.sort(rows[:len(rows) // 2]), np.sort(rows[len(rows) // 2:])
    params = tune_search(index, vectors, vectors[tune_rows], metric, target_recall) if n else {}
    build_time = time.perf_counter() - t0
    infos = {
        "index_string": index_string, "metric": metric, "d": int(d), "count": int(index.ntotal),
        "build_time_s": round(build_time, 3), "search_params": params,
        **measure_recall(index, vectors, metric, eval_rows),
        "faiss_version": faiss.__version__,
    }
    return index, infos


def measure_recall(index: faiss.Index, vectors, metric: str, rows=None, n_queries: int = 200,
                   seed: int = 1) -> dict:
    """{'recall_at_10', 'recall_queries'} with stored vectors at `rows` (default a random sample) as queries."""
    rows = sample_rows(len(vectors), n_queries, seed) if rows is None else np.asarray(rows)
    if len(rows) == 0:
        return {"recall_at_10": None, "recall_queries": 0}
    recall = recall_at_k(index, vectors, vectors[np.sort(rows)], metric, 10)
    return {"recall_at_10": round(recall, 4), "recall_queries": int(len(rows))}


def save_index(index: faiss.Index, path: str | os.PathLike) -> int:
    """Write atomically (temp file in the same folder, then os.replace); returns the file's bytes."""
    with atomic_path(path, ".faiss") as tmp:
        faiss.write_index(index, str(tmp))
        size = tmp.stat().st_size
    return size


def load_index(path: str | os.PathLike) -> faiss.Index:
    """Read an index file (PcaeError when missing or unreadable)."""
    path = Path(path)
    if not path.is_file():
        raise PcaeError(f"{path}: index file not found")
    try:
        return faiss.read_index(str(path))
    except RuntimeError as e:
        raise PcaeError(f"{path}: not a readable FAISS index ({' '.join(str(e).split())[-100:]})") from None


def write_infos(infos: dict, path: str | os.PathLike) -> None:
    with atomic_path(path, ".json") as tmp:
        tmp.write_text(json.dumps(infos, indent=2) + "\n")


def metric_name(index: faiss.Index) -> str:
    """The pcae metric name of an index ("l2" or "cosine"), or what FAISS calls it."""
    names = {v: k for k, v in METRICS.items()}
    return names.get(index.metric_type, f"faiss metric {index.metric_type}")


INFO_FIELDS = {"index_string": str, "metric": str, "d": int, "count": int}  # what readers rely on


def read_infos(path: str | os.PathLike) -> dict:
    """index_infos.json, checked: a JSON object with the INFO_FIELDS of the right types and a
    known metric; PcaeError naming the file and the field otherwise."""
    path = Path(path)
    try:
        infos = json.loads(path.read_text())
    except FileNotFoundError:
        raise PcaeError(f"{path}: index infos not found") from None
    except (OSError, ValueError) as e:
        raise PcaeError(f"{path}: unreadable index infos ({e})") from None
    if not isinstance(infos, dict):
        raise PcaeError(f"{path}: index infos must be a JSON object, got a {type(infos).__name__}")
    for key, kind in INFO_FIELDS.items():
        if not isinstance(infos.get(key), kind) or isinstance(infos.get(key), bool):
            raise PcaeError(f"{path}: field {key!r} must be {kind.__name__}, got {infos.get(key)!r}")
    prints = infos.get("fingerprints", {})
    if not isinstance(prints, dict) or not all(isinstance(v, str) for v in prints.values()):
        raise PcaeError(f"{path}: field 'fingerprints' must map file names to strings, got {prints!r}")
    params = infos.get("search_params", {})
    if not isinstance(params, dict) or not all(
            k in SEARCH_PARAMS and isinstance(v, int) and not isinstance(v, bool) and v >= 1
            for k, v in params.items()):
        raise PcaeError(f"{path}: field 'search_params' must map {' or '.join(SEARCH_PARAMS)} to positive "
                        f"integers, got {params!r:.80}")
    if infos["metric"] not in METRICS:
        raise PcaeError(f"{path}: field 'metric' must be one of {', '.join(METRICS)}, got "
                        f"{infos['metric']!r}")
    return infos


def check_compatible(index: faiss.Index, d: int, metric: str | None = None, infos: dict | None = None) -> None:
    """PcaeError unless `index` holds d-dimensional vectors under the same metric."""
    if index.d != d:
        raise PcaeError(f"dimension mismatch: the index holds d={index.d}, the new vectors have d={d}")
    if metric is not None and index.metric_type != METRICS[metric]:
        raise PcaeError(f"metric mismatch: the index was built for {infos.get('metric') if infos else '?'}, "
                        f"not {metric}")


def merge_indexes(parts: list[faiss.Index]) -> faiss.Index | None:
    """One index holding parts[0], parts[1], ... in order, or None when FAISS cannot merge them.

    Mergeable: IVF parts sharing one trained quantizer (`IndexIVF.merge_from`, ids shifted so that
    positions stay global) and Flat parts. Anything else (HNSW, IVF with different quantizers) -> None.
    """
    if not parts:
        raise ValueError("parts must not be empty")
    first = parts[0]
    for p in parts[1:]:
        if p.d != first.d or p.metric_type != first.metric_type or _family(p) != _family(first):
            raise PcaeError(f"cannot merge parts of different kinds: {_family(first)} d={first.d} "
                            f"vs {_family(p)} d={p.d}")
    ivf0 = extract_ivf(first)
    if ivf0 is not None:
        centroids = _centroids(ivf0)
        if any(not np.array_equal(_centroids(extract_ivf(p)), centroids) for p in parts[1:]):
            return None
    elif not isinstance(first, faiss.IndexFlat):
        return None
    merged = faiss.clone_index(first)
    for p in parts[1:]:
        # IVF stores each vector's id (its position in its part); shift by the rows already merged.
        # Flat indexes have implicit ids and take add_id = 0.
        merged.merge_from(faiss.clone_index(p), merged.ntotal if ivf0 is not None else 0)
    return merged


def describe(index: faiss.Index) -> dict:
    """Kind, d, count, metric and search parameters of an index."""
    info = {"type": type(index).__name__, "family": _family(index), "d": index.d, "count": int(index.ntotal),
            "metric": next((m for m, v in METRICS.items() if v == index.metric_type), str(index.metric_type)),
            "trained": bool(index.is_trained)}
    if (ivf := extract_ivf(index)) is not None:
        info.update(nlist=ivf.nlist, nprobe=ivf.nprobe)
    if (h := _hnsw(index)) is not None:
        info.update(efSearch=h.hnsw.efSearch, M=h.hnsw.nb_neighbors(1))
    return info


def apply_search_params(index: faiss.Index, params: dict) -> None:
    for name, value in params.items():
        _set_param(index, name, value)


SEARCH_PARAMS = ("nprobe", "efSearch")  # what tune_search sets: IVF's lists probed, HNSW's beam width


def _set_param(index, name, value):
    if name == "nprobe" and (ivf := extract_ivf(index)) is not None:
        ivf.nprobe = int(value)
    elif name == "efSearch" and (h := _hnsw(index)) is not None:
        h.hnsw.efSearch = int(value)
    elif name in SEARCH_PARAMS:
        raise ValueError(f"search parameter {name!r} does not apply to a {_family(index)} index")
    else:
        raise ValueError(f"unknown search parameter {name!r}")


def _family(index) -> str:
    if extract_ivf(index) is not None:
        return "IVF"
    if _hnsw(index) is not None:
        return "HNSW"
    return "Flat" if isinstance(index, faiss.IndexFlat) else type(index).__name__


def extract_ivf(index):
    """The IndexIVF inside `index`, or None."""
    try:
        return faiss.extract_index_ivf(index)
    except RuntimeError:
        return None


def _hnsw(index):
    index = faiss.downcast_index(index)
    return index if isinstance(index, (faiss.IndexHNSW,)) else None


def _centroids(ivf) -> np.ndarray:
    return ivf.quantizer.reconstruct_n(0, ivf.nlist)


def sample_rows(n: int, m: int, seed: int) -> np.ndarray:
    """Sorted random sample of min(n, m) row positions (h5py needs increasing indices)."""
    if m >= n:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, m, replace=False))
