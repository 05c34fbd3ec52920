"""Tests for embeddings/: latents HDF5 store, FAISS indexes (build, search, save/load, merge), and the
`pcae embed` / `pcae search` / `pcae index merge` commands. Library tests use synthetic clustered
vectors made here; CLI tests embed a few dozen images of a folder made in the test."""
from __future__ import annotations

import json
import os
import re

import faiss
import numpy as np
import pytest

from embeddings import index as ix
from embeddings.store import LatentStore, LatentWriter, file_sha256
from pcae.errors import PcaeError


def clustered(n, d=32, clusters=30, seed=0, spread=0.3):
    """n points around `clusters` Gaussian centres (the same centres for every n with one seed)."""
    centres = np.random.default_rng(seed).normal(size=(clusters, d)).astype(np.float32)
    rng = np.random.default_rng(seed + n)
    return (centres[rng.integers(0, clusters, n)] + spread * rng.normal(size=(n, d))).astype(np.float32)


@pytest.fixture(scope="module")
def vectors():
    return clustered(3000)


# ---- indexes ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("metric", ["l2", "cosine"])
@pytest.mark.parametrize("index_string", ["Flat", "IVF32,Flat", "HNSW16,Flat", None])
def test_stored_vector_is_its_own_nearest_neighbour(vectors, index_string, metric):
    index, infos = ix.build_index(vectors, index_string, metric, flat_max=1000)
    assert infos["count"] == len(vectors) and infos["d"] == vectors.shape[1]
    rows = np.arange(0, len(vectors), 29)
    dist, pos = ix.search(index, vectors[rows], 5, metric)
    np.testing.assert_array_equal(pos[:, 0], rows)
    np.testing.assert_allclose(dist[:, 0], 1.0 if metric == "cosine" else 0.0, atol=1e-4)


def test_default_index_string_depends_on_size():
    assert ix.default_index_string(500, flat_max=1000) == "Flat"
    s = ix.default_index_string(100_000, flat_max=1000)
    assert s.startswith("IVF") and s.endswith(",Flat")
    nlist = int(s[3:].split(",")[0])
    assert 100_000 >= 39 * nlist and nlist & (nlist - 1) == 0
    with pytest.raises(ValueError, match="n and flat_max"):
        ix.default_index_string(-1)


def test_default_large_index_recall_at_10():
    """The default non-Flat index reaches recall@10 >= 0.95 on held-out queries (not used in tuning)."""
    x = clustered(8000)
    queries = clustered(200)  # same centres, new points
    index, infos = ix.build_index(x, None, "l2", flat_max=2000)
    assert infos["index_string"].startswith("IVF")
    assert infos["recall_at_10"] >= 0.95
    recall = ix.recall_at_k(index, x, queries, "l2", k=10)
    assert recall >= 0.95, (recall, infos)


def test_a_flat_index_of_fewer_items_than_k_has_recall_1():
    """3 vectors: the exact index finds all 3 of each query's 3 neighbours (it said 0.3, 3 of 10)."""
    x = clustered(3)
    index, infos = ix.build_index(x, "Flat", "l2")
    assert infos["recall_at_10"] == 1.0 and ix.recall_at_k(index, x, x, "l2", k=10) == 1.0


def test_save_load_round_trip(tmp_path, vectors):
    for s in ["Flat", "IVF32,Flat", "HNSW16,Flat"]:
        index, infos = ix.build_index(vectors, s, "cosine")
        path = tmp_path / f"{s}.faiss"
        size = ix.save_index(index, path)
        assert size == path.stat().st_size > 0
        loaded = ix.load_index(path)
        # nprobe / efSearch survive the file (read_index may name the class more precisely)
        assert {**ix.describe(loaded), "type": 0} == {**ix.describe(index), "type": 0}
        q = vectors[:20] + 0.05
        for a, b in zip(ix.search(index, q, 10, "cosine"), ix.search(loaded, q, 10, "cosine")):
            np.testing.assert_array_equal(a, b)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["Flat.faiss", "HNSW16,Flat.faiss", "IVF32,Flat.faiss"]
    ix.write_infos(infos, tmp_path / "index_infos.json")
    assert ix.read_infos(tmp_path / "index_infos.json") == infos


def test_merge_of_shards_equals_single_pass(vectors):
    """Two shards added to copies of one trained IVF index, merged, give exactly the single-pass index."""
    trained = ix.create_index(vectors.shape[1], "IVF32,Flat", "l2")
    ix.train_index(trained, vectors, "l2")
    single, part_a, part_b = (faiss.clone_index(trained) for _ in range(3))
    ix.add_vectors(single, vectors, "l2")
    ix.add_vectors(part_a, vectors[:1700], "l2")
    ix.add_vectors(part_b, vectors[1700:], "l2")
    merged = ix.merge_indexes([part_a, part_b])
    assert merged.ntotal == single.ntotal == len(vectors)
    for index in (single, merged):
        ix.apply_search_params(index, {"nprobe": 4})
    q = clustered(50, seed=0)
    d1, i1 = ix.search(single, q, 10, "l2")
    d2, i2 = ix.search(merged, q, 10, "l2")
    np.testing.assert_array_equal(i1, i2)
    np.testing.assert_array_equal(d1, d2)
    # Flat parts merge too; IVF parts with their own quantizers or HNSW parts cannot
    flat = [ix.build_index(v, "Flat", "l2")[0] for v in (vectors[:1000], vectors[1000:])]
    np.testing.assert_array_equal(ix.search(ix.merge_indexes(flat), q, 5, "l2")[1],
                                  ix.search(ix.build_index(vectors, "Flat", "l2")[0], q, 5, "l2")[1])
    own = [ix.build_index(v, "IVF32,Flat", "l2", seed=s)[0] for s, v in enumerate((vectors[:1500], vectors[1500:]))]
    assert ix.merge_indexes(own) is None
    hnsw = [ix.build_index(v, "HNSW16,Flat", "l2")[0] for v in (vectors[:100], vectors[100:200])]
    assert ix.merge_indexes(hnsw) is None


def test_dimension_mismatch_and_bad_files(tmp_path, vectors):
    index, _ = ix.build_index(vectors, "Flat", "l2")
    with pytest.raises(PcaeError, match="d=31 but the index holds d=32"):
        ix.search(index, vectors[:2, :31], 3, "l2")
    with pytest.raises(PcaeError, match="dimension mismatch"):
        ix.check_compatible(index, 16)
    with pytest.raises(PcaeError, match="metric mismatch"):
        ix.check_compatible(index, 32, "cosine", {"metric": "l2"})
    with pytest.raises(PcaeError, match="index file not found"):
        ix.load_index(tmp_path / "nope.faiss")
    (tmp_path / "bad.faiss").write_bytes(b"not an index at all")
    with pytest.raises(PcaeError, match="not a readable FAISS index") as e:
        ix.load_index(tmp_path / "bad.faiss")
    assert "\n" not in str(e.value)
    with pytest.raises(ValueError, match="index string 'IVFxx'"):
        ix.create_index(8, "IVFxx")
    with pytest.raises(ValueError, match="metric must be one of"):
        ix.create_index(8, "Flat", "manhattan")


# ---- latents store ---------------------------------------------------------------------------------

def test_store_streams_and_round_trips(tmp_path, vectors):
    path = tmp_path / "latents.h5"
    meta = {"encoder": "conv", "checkpoint": "ae.pt", "checkpoint_sha256": "ab" * 32,
            "preprocessing": {"channels": 1, "image_size": 28},
            "segments": [{"source": "s", "split": "train", "first_id": 0, "first_row": 0, "count": 3000}]}
    with LatentWriter(path, 32, meta) as w:
        for start in range(0, 3000, 1000):
            w.append(vectors[start:start + 1000], np.arange(start, start + 1000), np.arange(1000) % 7)
    # rows are stored in chunks and the datasets grew by resizing, one block at a time
    with LatentStore(path) as s:
        assert len(s) == 3000 and s.dim == 32 and s.latents.chunks is not None
        np.testing.assert_array_equal(s.latents[:], vectors)
        np.testing.assert_array_equal(s.rows([5, 2, 5]), vectors[[5, 2, 5]])
        np.testing.assert_array_equal(s.column("labels", [8, 1]), [1, 1])
        assert s.meta["preprocessing"] == {"channels": 1, "image_size": 28}
        assert s.meta["encoder"] == "conv" and s.meta["checkpoint_sha256"] == "ab" * 32
        assert s.position_of(1234) == 1234 and s.segment_of(10)["source"] == "s"
        with pytest.raises(PcaeError, match="no item with id 5000"):
            s.position_of(5000)
    # append onto a copy: labels unknown for the new rows, old rows unchanged
    path2 = tmp_path / "more.h5"
    with LatentWriter(path2, 32, {}, base=path) as w:
        w.append(vectors[:10], np.arange(3000, 3010))
    with LatentStore(path2) as s:
        assert len(s) == 3010 and s.position_of(3005) == 3005
        np.testing.assert_array_equal(s.column("labels", [3005, 8]), [-1, 1])
    with LatentWriter(tmp_path / "nolabels.h5", 4, {}) as w:
        w.append(np.ones((3, 4)), np.arange(3))
    with LatentStore(tmp_path / "nolabels.h5") as s:
        assert s.labels is None and list(s.column("labels", [0])) == [-1]
    with pytest.raises(ValueError, match=r"latents must have shape \(B, 4\)"):
        LatentWriter(tmp_path / "x.h5", 4, {}).append(np.ones((3, 5)), np.arange(3))
    assert len(file_sha256(path)) == 64


def test_writer_memory_does_not_grow_with_n(tmp_path):
    """Writing 25 MB of latents block by block holds about one block in (Python-traced) memory."""
    import tracemalloc

    rng = np.random.default_rng(0)
    tracemalloc.start()
    with LatentWriter(tmp_path / "big.h5", 64, {}) as w:
        for start in range(0, 100_000, 2000):
            w.append(rng.random((2000, 64), np.float32), np.arange(start, start + 2000))
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 4 * 2000 * 64 * 4, peak  # < 4 blocks of 0.5 MB, for 100 000 x 64 float32 = 25.6 MB
    with LatentStore(tmp_path / "big.h5") as s:
        assert len(s) == 100_000


def test_store_errors_are_one_line(tmp_path):
    with pytest.raises(PcaeError, match="latents file not found"):
        LatentStore(tmp_path / "missing.h5")
    (tmp_path / "corrupt.h5").write_bytes(b"\x89HDF\r\n\x1a\n" + b"garbage" * 100)
    with pytest.raises(PcaeError, match="not a readable HDF5 file") as e:
        LatentStore(tmp_path / "corrupt.h5")
    assert "\n" not in str(e.value)
    import h5py
    with h5py.File(tmp_path / "other.h5", "w") as f:
        f["images"] = np.zeros((2, 3))
    with pytest.raises(PcaeError, match="not a pcae latents file"):
        LatentStore(tmp_path / "other.h5")


# ---- the commands ----------------------------------------------------------------------------------

from typer.testing import CliRunner  # noqa: E402

from embeddings.embed import INDEX, INFOS, LATENTS  # noqa: E402
from pcae.cli import app  # noqa: E402

runner = CliRunner()


def run(*args):
    return runner.invoke(app, [str(a) for a in args])


def fails(result, match):
    """A user error: exit 1, one PcaeError line containing `match`, no traceback printed."""
    assert result.exit_code == 1, result.output
    assert isinstance(result.exception, PcaeError), repr(result.exception)
    msg = str(result.exception)
    assert "\n" not in msg and match in msg, msg
    assert "Traceback" not in result.output


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory):
    """72 grey 16x16 PNGs in 3 class folders, each class a different brightness pattern."""
    from PIL import Image

    root = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    for c, name in enumerate(["dark", "mid", "bright"]):
        (root / name).mkdir()
        for i in range(24):
            a = np.clip(60 + 70 * c + 40 * rng.normal(size=(16, 16)), 0, 255).astype(np.uint8)
            Image.fromarray(a, "L").save(root / name / f"{i:02d}.png")
    return root


@pytest.fixture(scope="module")
def conv_checkpoint(tmp_path_factory):
    """A freshly built (untrained) conv encoder saved as a checkpoint of its own."""
    import torch

    from encoders import build_encoder
    from pcae.checkpoint import save_checkpoint

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("ck") / "enc.pt"
    for bottleneck, p in ((8, path), (6, path.with_name("enc6.pt"))):
        e = build_encoder("conv", in_channels=1, image_size=(16, 16), bottleneck=bottleneck)
        save_checkpoint({"kind": "encoder", "configs": {"encoder": e.config},
                         "state_dicts": {"encoder": e.state_dict()}}, p)
    return path


def test_cli_embed_and_search(tmp_path, image_folder, conv_checkpoint):
    from pcae.data import load_dataset

    out, data = tmp_path / "lat", f"folder:{image_folder}"
    r = run("embed", "--encoder", "conv", "--checkpoint", conv_checkpoint, "--data", data, "--out", out)
    assert r.exit_code == 0, r.output
    infos = json.loads((out / INFOS).read_text())
    n = infos["count"]
    assert n == 72 and infos["d"] == 8 and infos["index_string"] == "Flat" and infos["recall_at_10"] == 1.0
    assert infos["checkpoint_sha256"] == file_sha256(conv_checkpoint) and infos["bytes"] == (out / INDEX).stat().st_size
    assert sorted(p.name for p in out.iterdir()) == sorted([LATENTS, INDEX, INFOS])  # no temp files left
    with LatentStore(out / LATENTS) as s:
        assert s.meta["encoder"] == "conv" and s.meta["encoder_config"]["bottleneck"] == 8
        assert s.meta["preprocessing"]["input"] == "images" and s.labels is not None
        ids = s.ids[:]
        splits = [(seg["split"], seg["count"]) for seg in s.meta["segments"]]
    np.testing.assert_array_equal(ids, np.arange(n))
    # issue 35: every photo of the folder is indexed, train then test, one segment each
    assert [name for name, _ in splits] == ["train", "test"] and sum(c for _, c in splits) == 72
    assert f"72 latents ({splits[0][1]} train + {splits[1][1]} test added)" in r.output, r.output
    r = run("search", out, f"id:{n - 1}", "-k", 71, "--json", "--out", tmp_path / "all.png")  # a test item
    assert r.exit_code == 0 and len(json.loads(r.output)["neighbours"]) == 71, r.output  # drawn from both splits

    r = run("search", out, "id:3", "-k", 5, "--json")
    assert r.exit_code == 0, r.output
    res = json.loads(r.output)
    assert len(res["neighbours"]) == 5 and 3 not in [x["id"] for x in res["neighbours"]]
    assert all(x["class"] in ("dark", "mid", "bright") for x in res["neighbours"])
    assert [x["distance"] for x in res["neighbours"]] == sorted(x["distance"] for x in res["neighbours"])

    # an image file as query: a stored image finds itself first, at distance ~0
    from PIL import Image
    img = load_dataset(data, "train", channels=1, image_size=16)[7][0]
    Image.fromarray(img[0].numpy(), "L").save(tmp_path / "q.png")
    r = run("search", out, tmp_path / "q.png", "-k", 3, "--out", tmp_path / "grid.png")
    assert r.exit_code == 0, r.output
    first = r.output.splitlines()[1].split()
    assert first[:2] == ["1", "7"] and float(first[2]) < 1e-6
    assert (tmp_path / "grid.png").stat().st_size > 1000
    fails(run("search", out, tmp_path / "q.png", "--out", tmp_path / "grid.png"), "already exists")

    # the folder is not replaced without --force; with it, it is
    fails(run("embed", "--encoder", "conv", "--checkpoint", conv_checkpoint, "--data", data, "--out", out),
          "pass --force")
    r = run("embed", "--encoder", "conv", "--checkpoint", conv_checkpoint, "--data", data, "--out", out,
            "--metric", "cosine", "--force")
    assert r.exit_code == 0 and json.loads((out / INFOS).read_text())["metric"] == "cosine"


def test_embed_of_a_folder_keeps_a_photo_that_falls_in_test(tmp_path):
    """A folder's only photo may hash into the test split: embed indexes it all the same."""
    import hashlib

    from PIL import Image

    from embeddings.embed import embed

    name = next(f"p{k}.png" for k in range(1000)
                if int(hashlib.sha1(f"a/p{k}.png".encode()).hexdigest(), 16) % 10 == 0)
    (tmp_path / "photos" / "a").mkdir(parents=True)
    Image.new("L", (16, 16), 90).save(tmp_path / "photos" / "a" / name)
    infos = embed("onehot", None, f"folder:{tmp_path / 'photos'}", tmp_path / "lat")
    assert infos["count"] == 1 and infos["splits"] == {"test": 1}
    assert embed("onehot", None, f"folder:{tmp_path / 'photos'}", tmp_path / "lat2", split="test")["count"] == 1
    with pytest.raises(PcaeError, match="no images in the train split"):
        embed("onehot", None, f"folder:{tmp_path / 'photos'}", tmp_path / "lat3", split="train")


def test_cli_append(tmp_path, image_folder, conv_checkpoint):
    out, data = tmp_path / "lat", f"folder:{image_folder}"
    assert run("embed", "--encoder", "onehot", "--data", data, "--split", "train", "--out", out).exit_code == 0
    n_train = json.loads((out / INFOS).read_text())["count"]
    r = run("embed", "--encoder", "onehot", "--data", data, "--split", "test", "--out", out, "--append")
    assert r.exit_code == 0, r.output
    infos = json.loads((out / INFOS).read_text())
    assert infos["count"] == 72 and n_train < 72
    with LatentStore(out / LATENTS) as s:
        ids = s.ids[:]
        assert len(set(ids)) == 72 and ids[n_train] == n_train  # test ids continue after the train ids
        assert [seg["split"] for seg in s.meta["segments"]] == ["train", "test"]
    r = run("search", out, f"id:{n_train}", "-k", 3, "--json", "--out", tmp_path / "g.png")
    assert r.exit_code == 0, r.output
    # the one-hot latent's neighbours share its label
    hits = json.loads(r.output)["neighbours"]
    with LatentStore(out / LATENTS) as s:
        own = int(s.column("labels", [n_train])[0])
    assert all(h["label"] == own for h in hits)
    fails(run("embed", "--encoder", "conv", "--checkpoint", conv_checkpoint, "--data", data, "--out", out,
              "--append"), "made by the onehot encoder, not conv")


def test_cli_shards_merge_like_a_single_pass(tmp_path, image_folder, conv_checkpoint):
    """Two shards (one common training sample) merged = the single-pass index: same neighbours."""
    data = f"folder:{image_folder}"
    common = ["--encoder", "conv", "--checkpoint", conv_checkpoint, "--data", data, "--index", "IVF4,Flat"]
    for shard in ("1/2", "0/2"):
        r = run("embed", *common, "--out", tmp_path / "parts", "--shard", shard)
        assert r.exit_code == 0, r.output
    fails(run("index", "merge", tmp_path / "parts" / "part-0-of-2", "--out", tmp_path / "m"), "shard(s) 1/2 missing")
    r = run("index", "merge", tmp_path / "parts" / "part-1-of-2", tmp_path / "parts" / "part-0-of-2",
            "--out", tmp_path / "merged")
    assert r.exit_code == 0 and "merge_from" in r.output, r.output
    assert run("embed", *common, "--out", tmp_path / "single").exit_code == 0
    merged, single = ix.load_index(tmp_path / "merged" / INDEX), ix.load_index(tmp_path / "single" / INDEX)
    assert ix.describe(merged)["family"] == "IVF" and merged.ntotal == single.ntotal
    with LatentStore(tmp_path / "single" / LATENTS) as a, LatentStore(tmp_path / "merged" / LATENTS) as b:
        np.testing.assert_array_equal(a.latents[:], b.latents[:])
        np.testing.assert_array_equal(a.ids[:], b.ids[:])
        x = a.latents[:]
    for index in (merged, single):
        ix.apply_search_params(index, {"nprobe": 2})
    np.testing.assert_array_equal(ix.search(merged, x, 10, "l2")[1], ix.search(single, x, 10, "l2")[1])
    r = run("index", "describe", tmp_path / "merged")
    assert r.exit_code == 0 and json.loads(r.output)["count"] == len(x)


def test_cli_merge_of_hnsw_parts_re_adds_latents(tmp_path, image_folder):
    """HNSW parts have no FAISS merge: their stored latents go into a copy of part 0's index."""
    common = ["--encoder", "onehot", "--data", f"folder:{image_folder}", "--index", "HNSW8,Flat"]
    for shard in ("0/2", "1/2"):
        assert run("embed", *common, "--out", tmp_path / "parts", "--shard", shard).exit_code == 0
    parts = sorted((tmp_path / "parts").iterdir())
    r = run("index", "merge", *parts, "--out", tmp_path / "merged")
    assert r.exit_code == 0 and "re-added" in r.output, r.output
    merged = ix.load_index(tmp_path / "merged" / INDEX)
    with LatentStore(tmp_path / "merged" / LATENTS) as s:
        x, labels = s.latents[:], s.column("labels", np.arange(len(s)))
    assert merged.ntotal == len(x) and ix.describe(merged)["family"] == "HNSW"
    _, pos = ix.search(merged, x, 1, "l2")  # one-hot rows: the nearest has the same label
    np.testing.assert_array_equal(labels[pos[:, 0]], labels)


def test_cli_errors_are_one_line(tmp_path, image_folder, conv_checkpoint):
    out, data = tmp_path / "lat", f"folder:{image_folder}"
    assert run("embed", "--encoder", "conv", "--checkpoint", conv_checkpoint, "--data", data, "--out", out).exit_code == 0
    six = conv_checkpoint.with_name("enc6.pt")
    fails(run("embed", "--encoder", "conv", "--checkpoint", six, "--data", data, "--out", out, "--append"),
          "dimension mismatch")
    (tmp_path / "notes.txt").write_text("not an image")
    fails(run("search", out, tmp_path / "notes.txt"), "not a readable image")
    fails(run("search", out, "id:999"), "no item with id 999")
    fails(run("embed", "--encoder", "conv", "--data", data, "--out", tmp_path / "x"), "needs --checkpoint")
    fails(run("embed", "--encoder", "onehot", "--data", data, "--out", tmp_path / "x", "--index", "IVF9x"),
          "--index: index string 'IVF9x'")
    fails(run("embed", "--encoder", "onehot", "--data", data, "--out", tmp_path / "x", "--index", "IVF512,Flat"),
          "cannot train the index on")
    fails(run("embed", "--encoder", "conv", "--checkpoint", conv_checkpoint, "--data", data, "--out", out,
              "--force", "--shard", "2/2"), "0 <= i < n")
    broken = tmp_path / "broken"
    broken.mkdir()
    for name in (LATENTS, INDEX, INFOS):
        (broken / name).write_bytes((out / name).read_bytes())
    (broken / INDEX).unlink()
    fails(run("search", broken, "id:1"), "index file not found")
    (broken / INDEX).write_bytes((out / INDEX).read_bytes())
    (broken / LATENTS).write_bytes(b"\x89HDF\r\n\x1a\n" + bytes(500))
    fails(run("search", broken, "id:1"), "not a readable HDF5 file")
    fails(run("index", "describe", tmp_path / "nowhere"), "no such latents folder")


def test_main_prints_one_red_line(tmp_path, capsys, monkeypatch):
    import sys

    from pcae.cli import main

    monkeypatch.setattr(sys, "argv", ["pcae", "search", str(tmp_path), "id:1"])
    with pytest.raises(SystemExit) as e:
        main()
    err = capsys.readouterr().err
    assert e.value.code == 1 and err.count("\n") == 1 and err.startswith("error: ") and "Traceback" not in err


def test_cli_facenet_embed_skips_faceless_images(tmp_path):
    """facenet (random weights, recorded as such): photos without a face are skipped and counted."""
    import shutil
    from pathlib import Path

    photos = Path(__file__).parent / "data"
    folder = tmp_path / "photos"
    folder.mkdir()
    shutil.copy(photos / "astronaut.jpg", folder / "face.jpg")  # names that fall in the train split
    from PIL import Image
    Image.new("RGB", (192, 192), (128, 128, 128)).save(folder / "no-face.jpg")  # MTCNN rejects it fast
    out = tmp_path / "faces"
    r = run("embed", "--encoder", "facenet", "--facenet-weights", "random", "--data", f"folder:{folder}",
            "--out", out, "--metric", "cosine")
    assert r.exit_code == 0, r.output
    assert "warning: FaceNet weights are random" in r.output  # as every portrait output says
    infos = json.loads((out / INFOS).read_text())
    assert infos["count"] == 1 and infos["skipped"] == 1 and infos["d"] == 512
    with LatentStore(out / LATENTS) as s:
        assert s.meta["preprocessing"]["random_weights"] is True
        assert s.meta["encoder_config"]["weights"] == "random"
        ids = list(s.ids[:])
    r = run("search", out, f"id:{ids[0]}", "-k", 5, "--json")  # the only item: no neighbour but itself
    assert r.exit_code == 0 and json.loads(r.output)["neighbours"] == [], r.output
    # unsaved random weights cannot embed a query image the same way: refused, not silently wrong
    fails(run("search", out, photos / "astronaut.jpg"), "random FaceNet weights")
    fails(run("embed", "--encoder", "conv", "--facenet-weights", "random", "--out", tmp_path / "x"),
          "--facenet-weights goes with --encoder facenet")


def test_interrupted_embed_leaves_the_previous_folder_intact(tmp_path, image_folder):
    from embeddings.embed import embed

    out, data = tmp_path / "lat", f"folder:{image_folder}"
    embed("onehot", None, data, out)
    before = {name: (out / name).read_bytes() for name in (LATENTS, INDEX, INFOS)}

    def interrupt(done, total):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        embed("onehot", None, data, out, force=True, metric="cosine", batch_size=8, progress=interrupt)
    assert {name: (out / name).read_bytes() for name in (LATENTS, INDEX, INFOS)} == before
    assert sorted(p.name for p in out.iterdir()) == sorted(before)  # temp files removed


KILL_AFTER_COMMIT = """
import os, sys
import pcae.outputs as u
real = u.recover_files
def dying(folder):
    if (u.Path(folder) / u.JOURNAL).exists():
        os._exit(9)  # like SIGKILL: after the commit point, before any file is renamed
    return real(folder)
u.recover_files = dying
from embeddings.embed import embed
embed("onehot", None, sys.argv[1], sys.argv[2], force=True, metric="cosine", batch_size=8)
"""

KILL_MID_EMBED = """
import os, sys
from embeddings.embed import embed
embed("onehot", None, sys.argv[1], sys.argv[2], force=True, metric="cosine", batch_size=8,
      progress=lambda done, total: os._exit(9))
"""


@pytest.mark.parametrize("when", ["mid-embed", "after-commit"])
def test_killed_embed_leaves_one_whole_folder(tmp_path, image_folder, when):
    """A run killed before its commit leaves the previous three files (and its leftovers are
    removed next time); one killed after it is finished by the next command that opens the folder."""
    import os
    import subprocess
    import sys

    from embeddings.embed import describe_folder, embed

    out, data = tmp_path / "lat", f"folder:{image_folder}"
    embed("onehot", None, data, out)  # metric l2
    before = {name: (out / name).read_bytes() for name in (LATENTS, INDEX, INFOS)}
    script = KILL_MID_EMBED if when == "mid-embed" else KILL_AFTER_COMMIT
    proc = subprocess.run([sys.executable, "-c", script, data, str(out)], capture_output=True,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 9, proc.stderr.decode()
    leftovers = sorted(p.name for p in out.iterdir() if p.name not in before)
    assert leftovers, "the killed run left nothing to clean up or finish"
    described = describe_folder(out)  # opening the folder recovers it
    assert sorted(p.name for p in out.iterdir()) == sorted(before)
    if when == "mid-embed":
        assert {name: (out / name).read_bytes() for name in before} == before
        assert described["metric"] == "l2"
    else:
        assert described["metric"] == "cosine"
        assert (out / INFOS).read_bytes() != before[INFOS]
        assert json.loads((out / INFOS).read_text())["count"] == described["latents"]["count"]


def test_stale_temp_files_of_dead_writers_are_removed(tmp_path):
    import os

    from pcae.files import _host_tag, atomic_path, writer_tag

    target = tmp_path / "file.json"
    dead = tmp_path / ".file.json.pid999999999.abc.tmp"  # no such process
    alive = tmp_path / f".file.json.pid{os.getpid()}.abc.tmp"  # a live writer's: kept
    foreign = tmp_path / ".notes.tmp"  # not pcae's: kept
    dead_here = tmp_path / f".file.json.pid999999999-{_host_tag()}.abc.tmp"
    other_host = tmp_path / ".file.json.pid999999999-0000zzzz.abc.tmp"  # a pid of another machine: kept
    for path in (dead, alive, foreign, dead_here, other_host):
        path.write_text("x")
    with atomic_path(target) as tmp:
        assert writer_tag() in tmp.name
        tmp.write_text("{}")
    assert not dead.exists() and alive.exists() and foreign.exists() and target.read_text() == "{}"
    assert not dead_here.exists() and other_host.exists()


def test_malformed_infos_and_mismatched_folders_are_one_line(tmp_path, image_folder):
    from embeddings.embed import embed, merge_parts, open_folder

    out = tmp_path / "lat"
    embed("onehot", None, f"folder:{image_folder}", out)
    good = json.loads((out / INFOS).read_text())
    cases = [([1, 2], "index infos must be a JSON object, got a list"),
             ({k: v for k, v in good.items() if k != "metric"}, "field 'metric' must be str"),
             ({**good, "count": "many"}, "field 'count' must be int"),
             ({**good, "metric": "cosine"}, "does not describe index.faiss (l2,"),
             ({**good, "metric": "hamming"}, "field 'metric' must be one of l2, cosine")]
    for infos, words in cases:
        (out / INFOS).write_text(json.dumps(infos))
        with pytest.raises(PcaeError) as e:
            open_folder(out)
        assert words in str(e.value) and str(out) in str(e.value) and "\n" not in str(e.value)
    (out / INFOS).write_text(json.dumps(good))
    with pytest.raises(PcaeError, match="given more than once as a part"):
        merge_parts([out, out], tmp_path / "merged")


@pytest.fixture(scope="module")
def face_folder(tmp_path_factory):
    """20 LFW faces (150x150) with the astronaut and three transformed copies of it hidden among them."""
    from pathlib import Path

    from PIL import Image, ImageEnhance, ImageOps

    data = Path(__file__).parent / "data"
    folder = tmp_path_factory.mktemp("faces") / "photos"
    folder.mkdir()
    faces = np.load(data / "lfw_faces.npz")["faces"][:20]
    for i, face in enumerate(faces):
        Image.fromarray(face).convert("RGB").resize((150, 150), Image.BICUBIC).save(folder / f"lfw-{i:02d}.png")
    photo = Image.open(data / "astronaut.jpg").convert("RGB")
    photo.save(folder / "astronaut.png")
    ImageOps.mirror(photo).save(folder / "astronaut-mirror.png")
    ImageEnhance.Brightness(photo).enhance(0.5).save(folder / "astronaut-dark.png")
    photo.rotate(10).save(folder / "astronaut-tilted.png")
    return folder


def test_face_search_by_photo_finds_the_same_person_and_names_the_files(face_folder, tmp_path):
    """pcae embed --encoder dlib over photos, then pcae search by a photo: the astronaut's own
    photos come first, and every result names its file (table, --json)."""
    import importlib.util

    pytest.importorskip("dlib")
    if importlib.util.find_spec("face_recognition_models") is None:
        pytest.skip("face-recognition-models is not installed")
    from pathlib import Path

    out = tmp_path / "lat"
    result = run("embed", "--encoder", "dlib", "--data", f"folder:{face_folder}", "--out", out)
    assert result.exit_code == 0, result.output
    query = Path(__file__).parent / "data" / "astronaut.jpg"
    result = run("search", out, query, "-k", 4, "--json")
    assert result.exit_code == 0, result.output
    found = json.loads(result.output)["neighbours"]
    astronauts = {"astronaut.png", "astronaut-mirror.png", "astronaut-dark.png", "astronaut-tilted.png"}
    in_train = {n["file"] for n in found} & astronauts
    assert in_train and all(n["file"] in astronauts for n in found[:len(in_train)]), found
    assert all(n["file"] for n in found) and found[0]["distance"] < 0.6 ** 2  # l2^2: same person
    table = run("search", out, query, "-k", 3)
    assert table.exit_code == 0 and "file" in table.output.splitlines()[0]
    assert found[0]["file"] in table.output


@pytest.mark.parametrize("bad", ["HNSW0", "HNSW1,Flat", "NSG0", "IVF0,Flat", "IVF4_HNSW0,Flat"])
def test_index_sizes_faiss_would_abort_on_are_refused(bad):
    """FAISS accepts these strings, then aborts the process (HNSW0) or loops forever (NSG0) when
    vectors are added: pcae refuses them first, naming the part."""
    from embeddings.index import create_index

    with pytest.raises(ValueError, match=rf"index string {re.escape(repr(bad))}: (HNSW|NSG|IVF)\d+ needs"):
        create_index(8, bad)
    for good in ("HNSW2", "IVF4,Flat", "Flat"):
        assert create_index(8, good).d == 8


# ---- files that do not belong together, or cannot be trusted ---------------------------------------

@pytest.fixture()
def onehot_folder(tmp_path, image_folder):
    out = tmp_path / "lat"
    assert run("embed", "--encoder", "onehot", "--data", f"folder:{image_folder}", "--out", out).exit_code == 0
    return out


def test_a_crafted_commit_journal_moves_and_deletes_nothing(onehot_folder, tmp_path):
    from pcae.outputs import JOURNAL

    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "precious.txt").write_text("mine")
    (onehot_folder / "elsewhere.txt").write_text("also mine")
    for plan in [{"staging": "../victim", "names": []}, {"staging": ".pcae-staging.x", "names": ["../elsewhere.txt"]}]:
        (onehot_folder / ".pcae-staging.x").mkdir(exist_ok=True)
        (onehot_folder / JOURNAL).write_text(json.dumps(plan))
        fails(run("search", onehot_folder, "id:0"), "unreadable commit journal")
        assert (victim / "precious.txt").read_text() == "mine"
        assert (onehot_folder / "elsewhere.txt").read_text() == "also mine"


def test_a_file_from_another_embedding_is_refused(onehot_folder, tmp_path):
    """Same N, d and metric: only the fingerprints in the infos tell the files apart."""
    index = ix.load_index(onehot_folder / INDEX)
    other, _ = ix.build_index(np.random.default_rng(0).normal(size=(index.ntotal, index.d)).astype(np.float32),
                              "Flat", "l2")
    faiss.write_index(other, str(onehot_folder / INDEX))
    fails(run("search", onehot_folder, "id:0"), f"{INDEX} is not the file {INFOS} was written with")


def test_duplicate_ids_float_latents_and_overlapping_merges_are_refused(onehot_folder, tmp_path, image_folder):
    import shutil

    import h5py

    infos = json.loads((onehot_folder / INFOS).read_text())
    del infos["fingerprints"]  # as a folder from before them: the contents are still checked
    (onehot_folder / INFOS).write_text(json.dumps(infos))
    with h5py.File(onehot_folder / LATENTS, "r+") as f:
        ids = f["ids"][:]
        ids[1] = ids[0]
        f["ids"][:] = ids
    fails(run("search", onehot_folder, "id:2"), f"id {ids[0]} is stored 2 times")
    with h5py.File(onehot_folder / LATENTS, "r+") as f:
        latents = f["latents"][:]
        del f["latents"]
        f["latents"] = latents.astype(np.int32)
    fails(run("search", onehot_folder, "id:2"), "dataset 'latents' must hold floats, got int32")

    a, b = tmp_path / "a", tmp_path / "b"
    for out in (a, b):
        assert run("embed", "--encoder", "onehot", "--data", f"folder:{image_folder}", "--out", out).exit_code == 0
    fails(run("index", "merge", a, b, "--out", tmp_path / "m"), "both hold id 0")
    assert not (tmp_path / "m").exists()
    shutil.rmtree(b)


def _replace(f, name, data):
    if name in f:
        del f[name]
    f.create_dataset(name, data=data)


@pytest.mark.parametrize("damage, words", [
    (lambda f, infos: _replace(f, "labels", np.zeros(2, np.int64)), "dataset 'labels' has shape (2,), the latents need"),
    (lambda f, infos: _replace(f, "labels", np.zeros((20, 2), np.int64)), "dataset 'labels' has shape (20, 2)"),
    (lambda f, infos: _replace(f, "files", np.array([b"a.png"] * 3)), "dataset 'files' has shape (3,)"),
    (lambda f, infos: _replace(f, "files", np.zeros(len(f["ids"]))), "dataset 'files' must hold strings"),
    (lambda f, infos: f.attrs.__setitem__("segments", "[1, 2]"), "attr 'segments' entry 0 must be an object"),
    (lambda f, infos: f.attrs.__setitem__("segments", '[{"source": "x"}]'), "entry 0 lacks field 'split'"),
    (lambda f, infos: f.attrs.__setitem__("encoder_config", "[]"), "attr 'encoder_config' must be object"),
    (lambda f, infos: f.attrs.__setitem__("dim", 99), "attr 'dim' is 99, the latents have"),
    (lambda f, infos: infos.__setitem__("search_params", {"nprobe": "many"}), "field 'search_params' must map"),
    (lambda f, infos: infos.__setitem__("search_params", [1]), "field 'search_params' must map"),
    (lambda f, infos: infos.__setitem__("search_params", {"nprobe": 4}), "'nprobe' does not apply to a Flat"),
])
def test_malformed_latents_columns_attrs_and_search_params_are_one_line(onehot_folder, damage, words):
    """Every reader (search, describe, append, merge) opens a folder through one check of the
    columns' shapes and the attrs' and infos' types: a damaged folder is one line naming the field."""
    import h5py

    from embeddings.store import file_fingerprint

    infos = json.loads((onehot_folder / INFOS).read_text())
    with h5py.File(onehot_folder / LATENTS, "r+") as f:
        damage(f, infos)
    infos["fingerprints"][LATENTS] = file_fingerprint(onehot_folder / LATENTS)  # damage made "in place"
    (onehot_folder / INFOS).write_text(json.dumps(infos))
    for args in (("search", onehot_folder, "id:3"), ("index", "describe", onehot_folder)):
        fails(run(*args), words)


def test_pipes_and_devices_are_refused_not_read(tmp_path):
    """A FIFO given as a checkpoint or a photo would block forever, /dev/zero would never end."""
    fifo = tmp_path / "pipe.pt"
    os.mkfifo(fifo)
    fails(run("evaluate", fifo), "is not a regular file (a pipe, socket or device)")
    fails(run("evaluate", "/dev/zero"), "is not a regular file")
    fails(run("sample", fifo, "--out", tmp_path / "s.png"), "is not a regular file")
    fails(run("data", "info", f"h5:{fifo}"), "is not a regular file")


def test_a_diverged_checkpoint_is_refused_before_it_is_used(tmp_path, image_folder, conv_checkpoint):
    import torch

    from pcae.checkpoint import load_checkpoint, save_checkpoint

    checkpoint = load_checkpoint(conv_checkpoint)
    name = next(iter(checkpoint["state_dicts"]["encoder"]))
    checkpoint["state_dicts"]["encoder"][name] = torch.full_like(checkpoint["state_dicts"]["encoder"][name],
                                                                 float("nan"))
    save_checkpoint(checkpoint, tmp_path / "nan.pt")
    fails(run("embed", "--encoder", "conv", "--checkpoint", tmp_path / "nan.pt", "--data",
              f"folder:{image_folder}", "--out", tmp_path / "lat"), f"its weights hold NaN or inf (encoder/{name})")
    assert not (tmp_path / "lat").exists()


def test_nan_latents_are_said_not_searched(onehot_folder):
    import h5py

    infos = json.loads((onehot_folder / INFOS).read_text())
    del infos["fingerprints"]
    (onehot_folder / INFOS).write_text(json.dumps(infos))
    with h5py.File(onehot_folder / LATENTS, "r+") as f:
        f["latents"][1] = np.nan  # not a row the flat-index check compares
    fails(run("search", onehot_folder, "id:1"), "the latent of id:1 is NaN or inf")


def test_a_folder_without_fingerprints_still_checks_its_flat_index(onehot_folder, tmp_path):
    """Folders from before the fingerprints: a flat index must hold the latents' own vectors."""
    infos = json.loads((onehot_folder / INFOS).read_text())
    del infos["fingerprints"]
    (onehot_folder / INFOS).write_text(json.dumps(infos))
    assert run("search", onehot_folder, "id:0").exit_code == 0
    index = ix.load_index(onehot_folder / INDEX)
    other, _ = ix.build_index(np.random.default_rng(0).normal(size=(index.ntotal, index.d)).astype(np.float32),
                              "Flat", "l2")
    faiss.write_index(other, str(onehot_folder / INDEX))
    fails(run("search", onehot_folder, "id:0"), f"{INDEX} does not hold the vectors of {LATENTS}")
    fails(run("embed", "--encoder", "onehot", "--data", "fashion-mnist", "--out", onehot_folder, "--append"),
          f"{INDEX} does not hold the vectors of {LATENTS}")


def test_force_replaces_only_pcae_latents_and_one_writer_holds_a_folder(onehot_folder, tmp_path, image_folder):
    """Audit: `embed --force` and `index merge --force` replaced a latents.h5 / index_infos.json
    pcae had not written; two `embed --append` runs on one folder both ended 0, one append lost."""
    from pcae.outputs import folder_lock

    data = f"folder:{image_folder}"
    saved = {name: (onehot_folder / name).read_bytes() for name in (LATENTS, INDEX, INFOS)}
    with folder_lock(onehot_folder, "latents folder"):  # another command is writing it
        fails(run("embed", "--encoder", "onehot", "--data", data, "--out", onehot_folder, "--append"),
              "another pcae command is writing this latents folder")
    assert {name: (onehot_folder / name).read_bytes() for name in saved} == saved

    for name, foreign in ((INFOS, b'{"my": "settings"}\n'), (LATENTS, b"my own table\n"), (INDEX, b"not faiss")):
        mine = tmp_path / name
        mine.write_bytes(foreign)
        folder = tmp_path / f"user-{name}"
        folder.mkdir()
        for other in (LATENTS, INDEX, INFOS):
            (folder / other).write_bytes(foreign if other == name else saved[other])
        fails(run("embed", "--encoder", "onehot", "--data", data, "--out", folder, "--force"),
              f"{name}: is not a file pcae wrote")
        fails(run("index", "merge", onehot_folder, "--out", folder, "--force"), f"{name}: is not a file pcae wrote")
        assert (folder / name).read_bytes() == foreign
    # pcae's own folder, even out of step (infos of another embedding) or damaged (a truncated
    # latents.h5, infos cut off), is replaced by --force
    (onehot_folder / INFOS).write_text(json.dumps({**json.loads(saved[INFOS]), "count": 1}))
    assert run("embed", "--encoder", "onehot", "--data", data, "--out", onehot_folder, "--force").exit_code == 0
    (onehot_folder / LATENTS).write_bytes(saved[LATENTS][:len(saved[LATENTS]) // 2])
    (onehot_folder / INFOS).write_bytes(saved[INFOS][:40])
    assert run("embed", "--encoder", "onehot", "--data", data, "--out", onehot_folder, "--force").exit_code == 0
    assert run("search", onehot_folder, "id:0").exit_code == 0
    # damaged files alone (nothing beside them that is pcae's for sure) are not taken for pcae's
    lone = tmp_path / "lone"
    lone.mkdir()
    (lone / LATENTS).write_bytes(saved[LATENTS][:len(saved[LATENTS]) // 2])
    fails(run("embed", "--encoder", "onehot", "--data", data, "--out", lone, "--force"), "is not a file pcae wrote")
    # a file where the folder should be: one line, nothing made
    fails(run("embed", "--encoder", "onehot", "--data", data, "--out", tmp_path / INFOS), "is not a folder")
