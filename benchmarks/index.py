"""Benchmark FAISS indexes on synthetic clustered vectors, and `embed` throughput on the default data.

For each index string: build time (train + add), queries/s (one batch of queries, search parameters
tuned like `build_index` (which aims for 0.97 by default): the smallest nprobe / efSearch reaching recall@10 >= 0.95 on a
tuning set), and recall@10 against exact search on a separate set of held-out queries.

    .venv/bin/python benchmarks/index.py --n 200000            # d = 64, 2.5 min on 2 busy cores
    .venv/bin/python benchmarks/index.py --n 1000000 --embed 10000   # 1M vectors + embed speed, ~3.5 min

Numbers depend on the machine and on the threads FAISS may use (OMP_NUM_THREADS).
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import faiss
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from embeddings import index as ix  # noqa: E402


def clustered(n, d, clusters, seed, spread=1.0):
    """n points around `clusters` Gaussian centres; same centres for a given seed whatever n."""
    centres = np.random.default_rng(seed).normal(size=(clusters, d)).astype(np.float32)
    rng = np.random.default_rng([seed, n])
    out = np.empty((n, d), np.float32)
    for s in range(0, n, 1 << 18):  # in blocks: no float64 copy of the whole set
        m = min(n, s + (1 << 18)) - s
        out[s:s + m] = centres[rng.integers(0, clusters, m)] + spread * rng.standard_normal((m, d), np.float32)
    return out


def bench_index(index_string, x, tune_q, test_q, truth, target=0.95):
    t0 = time.perf_counter()
    index = ix.create_index(x.shape[1], index_string, "l2")
    ix.train_index(index, x, "l2")
    ix.add_vectors(index, x, "l2")
    build = time.perf_counter() - t0
    params = ix.tune_search(index, x, tune_q, "l2", target)
    t0 = time.perf_counter()
    _, got = index.search(test_q, 10)
    qps = len(test_q) / (time.perf_counter() - t0)
    recall = float(np.mean([len(set(a) & set(b)) / 10 for a, b in zip(got, truth)]))
    return {"index": index_string, "build_s": round(build, 2), "queries_per_s": round(qps, 1),
            "recall_at_10": round(recall, 4), **params}


def bench_embed(n_images, batch_size=256):
    """Images/s of `embed` (data -> encoder -> latents.h5, index excluded) on the default data, for the
    onehot encoder and an untrained conv encoder (bottleneck 10; speed does not depend on training)."""
    import tempfile

    import torch

    from embeddings.embed import embed
    from encoders import build_encoder
    from pcae.checkpoint import save_checkpoint

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        conv = build_encoder("conv", in_channels=1, image_size=(28, 28), bottleneck=10)
        ck = Path(tmp) / "conv.pt"
        save_checkpoint({"kind": "encoder", "configs": {"encoder": conv.config},
                         "state_dicts": {"encoder": conv.state_dict()}}, ck)
        for name, checkpoint in (("onehot", None), ("conv", ck)):
            infos = embed(name, checkpoint, "fashion-mnist", Path(tmp) / name, limit=n_images, batch_size=batch_size)
            rows.append({"encoder": name, "images": infos["count"], "images_per_s": infos["images_per_s"],
                         "torch_threads": torch.get_num_threads()})
    return rows


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=200_000, help="stored vectors")
    p.add_argument("--d", type=int, default=64)
    p.add_argument("--clusters", type=int, default=1000)
    p.add_argument("--queries", type=int, default=1000, help="held-out queries for queries/s and recall")
    p.add_argument("--indexes", default="Flat;IVF{auto};HNSW32,Flat",
                   help="';'-separated index strings; IVF{auto} = default_index_string(n)")
    p.add_argument("--embed", type=int, default=0, metavar="N", help="also time `embed` on N default images")
    p.add_argument("--json", type=Path, help="write the results here too")
    a = p.parse_args()

    t0 = time.perf_counter()
    x = clustered(a.n, a.d, a.clusters, seed=0)
    tune_q = clustered(200, a.d, a.clusters, seed=0)
    test_q = clustered(a.queries, a.d, a.clusters, seed=0)
    truth = ix.exact_knn(x, test_q, 10, "l2")
    print(f"data: n={a.n} d={a.d} clusters={a.clusters}, made + exact truth in {time.perf_counter() - t0:.1f}s; "
          f"faiss {faiss.__version__}, {faiss.omp_get_max_threads()} threads, {platform.processor() or platform.machine()}")
    strings = a.indexes.replace("IVF{auto}", ix.default_index_string(a.n, 0)).split(";")
    results = []
    for s in strings:
        r = bench_index(s, x, tune_q, test_q, truth)
        results.append(r)
        print(json.dumps(r))
    print("\n| index | build (s) | queries/s | recall@10 | search param |\n|---|---|---|---|---|")
    for r in results:
        param = ", ".join(f"{k}={r[k]}" for k in ("nprobe", "efSearch") if k in r) or "-"
        print(f"| `{r['index']}` | {r['build_s']} | {r['queries_per_s']:.0f} | {r['recall_at_10']:.3f} | {param} |")
    embed_rows = bench_embed(a.embed) if a.embed else []
    for r in embed_rows:
        print(json.dumps(r))
    if a.json:
        a.json.write_text(json.dumps({"n": a.n, "d": a.d, "indexes": results, "embed": embed_rows}, indent=2))


if __name__ == "__main__":
    main()
