"""Training runs: the CLI end to end, exact resume after SIGKILL, Ctrl-C, non-finite loss, DDP.

All runs use the bundled Fashion-MNIST subset (PCAE_DATA_BUNDLED=1) shrunk to 8x8 and a tiny
model, so each step takes milliseconds.
"""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from helpers import grid_px, run_pcae
from PIL import Image

from pcae.batches import Feeder, data_order
from pcae.checkpoint import load_checkpoint
from pcae.runfolder import read_metrics
from pcae.tasks.pixelcnn import PixelCNNSpec, PixelCNNTask
from pcae.train import TrainConfig, train

TINY = ["--batch-size", "8", "--channels", "8", "--n-layers", "1", "--image-size", "8",
        "--eval-images", "16", "--n-samples", "2", "--log-every", "1"]
TINY_CONFIG = dict(batch_size=8, image_size=8, eval_images=16, n_samples=2, log_every=1)
TINY_SPEC = PixelCNNSpec(channels=8, n_layers=1)


def weights(path):
    return load_checkpoint(path)["state_dicts"]["model"]


def assert_same_weights(a, b):
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), name


# ----------------------------------------------------------------------------- data order


class FakeData:
    def __init__(self, n):
        self.images = torch.arange(n, dtype=torch.uint8).view(n, 1, 1, 1)
        self.labels = torch.arange(n) % 3
        self.shape, self.info = (1, 1, 1), {"source": "fake"}

    def __len__(self):
        return len(self.images)


def take(iterator, k):
    return [next(iterator)[0].flatten().tolist() for _ in range(k)]


def test_data_order_is_a_pure_function_and_ranks_split_each_batch():
    assert torch.equal(data_order(3, 1, 50), data_order(3, 1, 50))
    assert not torch.equal(data_order(3, 1, 50), data_order(3, 2, 50))
    data, cpu = FakeData(50), torch.device("cpu")
    one = Feeder(data, 10, seed=3, rank=0, world=1, device=cpu, num_workers=0)
    ranks = [Feeder(data, 5, seed=3, rank=r, world=2, device=cpu, num_workers=0) for r in (0, 1)]
    assert one.per_epoch == ranks[0].per_epoch == 5
    whole = take(one.batches(0, 0), 12)  # runs over into the next epoch
    halves = [take(f.batches(0, 0), 12) for f in ranks]
    for batch, a, b in zip(whole, *halves):
        assert batch == a + b  # each rank a disjoint slice of the same global batch
    assert sorted(sum(whole[:5], [])) == list(range(50))  # an epoch sees every image once
    assert take(one.batches(1, 2), 3) == whole[7:10]  # (epoch, position) resumes the same stream


class LazyData(FakeData):
    """The same items without `images`: batches must come through the DataLoader path."""

    def __init__(self, n):
        super().__init__(n)
        self._images, self._labels = self.images, self.labels
        self.images = self.labels = None

    def __len__(self):
        return len(self._images)

    def __getitem__(self, i):
        return self._images[i], int(self._labels[i])


def test_dataloader_path_gives_the_same_batches_as_memory():
    cpu = torch.device("cpu")
    memory = Feeder(FakeData(50), 5, seed=1, rank=1, world=2, device=cpu, num_workers=0)
    lazy = Feeder(LazyData(50), 5, seed=1, rank=1, world=2, device=cpu, num_workers=0)
    assert memory.where == "device memory" and lazy.where == "DataLoader"
    a, b = memory.batches(0, 3), lazy.batches(0, 3)
    for _ in range(4):
        (xa, ya), (xb, yb) = next(a), next(b)
        assert torch.equal(xa, xb) and torch.equal(ya, yb) and xb.dtype == torch.uint8


def test_epochs_on_an_unlabelled_folder_with_timed_checkpoints(tmp_path):
    flat = tmp_path / "flat"
    flat.mkdir()
    for i in range(40):
        Image.new("L", (8, 8), color=i * 6).save(flat / f"{i}.png")
    events = []
    config = TrainConfig(data=f"folder:{flat}", out=str(tmp_path / "run"), epochs=2, batch_size=8,
                         image_channels=1, n_samples=2, log_every=1, checkpoint_seconds=1e-6)
    result = train(config, TINY_SPEC, callback=lambda event, info: events.append((event, info)))
    per_epoch = len([e for e in events if e[0] == "train"]) // 2
    assert result.summary["steps"] == 2 * per_epoch and result.summary["epochs"] == 2.0
    assert result.summary["data"]["train"]["source"] == f"folder:{flat}"
    saved = [info["step"] for event, info in events if event == "checkpoint" and
             info["path"].endswith("last.pt")]
    assert saved == list(range(1, 2 * per_epoch + 1))  # every log step, since the clock ran out
    final = [info for event, info in events if event == "eval"][-1]
    assert "bpd" in final and "bpd_per_class" not in final  # no labels, no per-class figures


# ----------------------------------------------------------------------------- CLI end to end


def test_cli_train_writes_a_run_and_guards_its_folder(tmp_path, monkeypatch, capsys):
    out = tmp_path / "run"
    args = ["train", "--out", out, *TINY, "--eval-every", "2", "--checkpoint-every", "2",
            "--sample-every", "2"]
    code, stdout, err = run_pcae(monkeypatch, capsys, *args, "--steps", "4")
    assert code == 0, err
    for name in ("last.pt", "best.pt", "metrics.jsonl", "summary.json", "samples.png",
                 "samples/step_0000002.png", "curve.png", "train.log"):
        assert (out / name).is_file(), name
    rows = read_metrics(out / "metrics.jsonl")
    assert [r["step"] for r in rows if r["split"] == "train"] == [1, 2, 3, 4]
    assert [r["step"] for r in rows if r["split"] == "test"] == [2, 4]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["steps"] == 4 and summary["kind"] == "pixelcnn"
    assert 0 < summary["final_test_bpd"] < 8.5 and summary["best_test_bpd"] <= summary["final_test_bpd"]
    assert summary["images_per_s"] > 0 and summary["wall_seconds"] > 0
    assert "bundled" in summary["data"]["train"]["origin"]
    assert Image.open(out / "samples.png").size == grid_px(22, 12)  # 2 samples of 8x8 in one row
    assert "test bpd" in stdout and "done: 4 steps" in stdout and not err
    assert load_checkpoint(out / "last.pt")["step"] == 4

    code, _, err = run_pcae(monkeypatch, capsys, *args, "--steps", "4")
    assert code == 1 and "already exists" in err and err.strip().count("\n") == 0
    assert "Traceback" not in err

    code, stdout, err = run_pcae(monkeypatch, capsys, *args, "--steps", "6", "--resume")
    assert code == 0, err
    steps = [r["step"] for r in read_metrics(out / "metrics.jsonl") if r["split"] == "train"]
    assert steps == [1, 2, 3, 4, 5, 6]
    assert json.loads((out / "summary.json").read_text())["steps"] == 6

    code, _, err = run_pcae(monkeypatch, capsys, "sample", out / "last.pt", "--label", "1",
                            "--out", tmp_path / "g.png")
    assert code == 1 and "unconditional" in err and not (tmp_path / "g.png").exists()

    # --force replaces what pcae wrote and nothing else: the user's own files in the folder stay
    (out / "notes.txt").write_text("mine")
    (out / "mydata").mkdir()
    (out / "mydata" / "a.csv").write_text("1,2")
    (out / "samples" / "favourite.png").write_bytes(b"png")
    code, _, err = run_pcae(monkeypatch, capsys, *args, "--steps", "2", "--force")
    assert code == 0, err
    assert json.loads((out / "summary.json").read_text())["steps"] == 2
    assert not (out / "samples/step_0000004.png").exists()  # replaced, not merged
    assert (out / "notes.txt").read_text() == "mine" and (out / "mydata" / "a.csv").read_text() == "1,2"
    assert (out / "samples" / "favourite.png").read_bytes() == b"png"

    other = tmp_path / "mine"
    other.mkdir()
    (other / "notes.txt").write_text("precious")
    code, _, err = run_pcae(monkeypatch, capsys, "train", "--out", other, *TINY, "--force")
    assert code == 1 and "does not look like a pcae run folder" in err
    assert (other / "notes.txt").read_text() == "precious"


def test_label_conditional_run_sample_and_evaluate(tmp_path, monkeypatch, capsys):
    out = tmp_path / "run"
    code, stdout, err = run_pcae(monkeypatch, capsys, "train", "--out", out, *TINY, "--steps", "2",
                                 "--condition", "label", "--n-samples", "10", "--eval-every", "0",
                                 "--judge-images", "30")
    assert code == 0, err
    samples = Image.open(out / "samples.png")
    assert samples.size == grid_px(12, 102)  # one row per class, 10 classes
    assert json.loads(samples.text["rows"]) == load_checkpoint(out / "last.pt")["data"]["train"]["classes"]
    # the sample judge scored one sample per test label, per class too
    semantics = json.loads((out / "summary.json").read_text())["semantics"]
    assert semantics["samples"] == 30 and 0 <= semantics["class_accuracy"] <= 1
    assert 0 < semantics["judge_accuracy"] <= 1 and len(semantics["per_class"]) >= 2
    assert "class-conditional samples are judged their class" in stdout
    ckpt = load_checkpoint(out / "last.pt")
    assert ckpt["configs"]["model"]["cond_dim"] == 10
    assert ckpt["configs"]["task"] == {"condition": "label", "classes": ckpt["data"]["train"]["classes"]}

    grid = tmp_path / "g.png"
    code, stdout, err = run_pcae(monkeypatch, capsys, "sample", out / "last.pt", "--n", "4",
                                 "--label", "3", "--out", grid, "--seed", "1")
    assert code == 0, err
    assert Image.open(grid).size == grid_px(22, 22) and "4 samples" in stdout
    code, _, err = run_pcae(monkeypatch, capsys, "sample", out / "last.pt", "--out", grid)
    assert code == 1 and "already exists" in err
    code, _, err = run_pcae(monkeypatch, capsys, "sample", out / "last.pt", "--label", "10",
                            "--out", tmp_path / "h.png")
    assert code == 1 and "--label must be in [0, 10)" in err and err.strip().count("\n") == 0
    code, _, err = run_pcae(monkeypatch, capsys, "sample", out / "last.pt", "--sampler", "magic",
                            "--out", tmp_path / "h.png")
    assert code == 1 and "unknown sampler 'magic'" in err and "naive" in err

    code, stdout, err = run_pcae(monkeypatch, capsys, "evaluate", out / "last.pt", "--limit", "40")
    assert code == 0, err
    result = json.loads(stdout)
    assert result["images"] == 40 and result["kind"] == "pixelcnn" and result["step"] == 2
    assert 0 < result["bpd"] < 8.5
    assert set(result["bpd_per_class"]) <= set(ckpt["data"]["train"]["classes"])
    assert len(result["bpd_per_class"]) >= 2


def test_cli_bad_options(tmp_path, monkeypatch, capsys):
    code, _, err = run_pcae(monkeypatch, capsys, "train", "--out", tmp_path / "a", "--condition", "x")
    assert code == 2 and "none or label" in err
    code, _, err = run_pcae(monkeypatch, capsys, "train", "--out", tmp_path / "a", "--resume")
    assert code == 1 and "nothing to resume" in err
    code, _, err = run_pcae(monkeypatch, capsys, "train", "--out", tmp_path / "a", "--channels", "8",
                            "--image-channels", "3", "--steps", "1")
    assert code == 1 and "channels must be divisible by --image-channels=3" in err
    assert not (tmp_path / "a").exists()  # a run that fails to start leaves nothing behind
    if not torch.cuda.is_available():
        code, _, err = run_pcae(monkeypatch, capsys, "train", "--out", tmp_path / "b", "--device", "cuda")
        assert code == 1 and "no CUDA device" in err and err.strip().count("\n") == 0
    flat = tmp_path / "flat"
    flat.mkdir()
    for i in range(30):
        Image.new("L", (8, 8), color=i * 8).save(flat / f"{i}.png")
    code, _, err = run_pcae(monkeypatch, capsys, "train", "--out", tmp_path / "c", "--data",
                            f"folder:{flat}", "--condition", "label", *TINY)
    assert code == 1 and "has no labels" in err and err.strip().count("\n") == 0


# ----------------------------------------------------------------------------- stopping


@pytest.mark.parametrize("where", ["evaluate", "sample_grid"])
def test_ctrl_c_after_the_last_step_is_not_ignored(where, tmp_path, monkeypatch, capsys):
    """Ctrl-C during the final evaluation (inside the last step's bookkeeping) or the final
    samples (after it) still ends the command with 130; --resume then finishes the run."""
    original = getattr(PixelCNNTask, where)

    def interrupted(self, *args, **kwargs):
        if not calls:
            calls.append(1)
            os.kill(os.getpid(), signal.SIGINT)
        return original(self, *args, **kwargs)

    calls = []
    monkeypatch.setattr(PixelCNNTask, where, interrupted)
    out = tmp_path / "run"
    args = ["train", "--out", out, *TINY, "--steps", "3", "--eval-every", "0", "--precision", "fp32"]
    code, _, err = run_pcae(monkeypatch, capsys, *args)
    assert code == 130, err
    assert "interrupted" in err and err.strip().count("\n") == 0 and "Traceback" not in err
    assert f"{out / 'last.pt'}" in err and "--resume" in err  # where the run is, how to finish it
    assert load_checkpoint(out / "last.pt")["step"] == 3 and not (out / "summary.json").exists()
    code, _, err = run_pcae(monkeypatch, capsys, *args, "--resume")
    assert code == 0, err
    assert json.loads((out / "summary.json").read_text())["steps"] == 3


def test_ctrl_c_saves_a_checkpoint_and_exits_130(tmp_path, monkeypatch, capsys):
    original, calls = PixelCNNTask.loss, []

    def loss(self, images, labels):
        calls.append(1)
        if len(calls) == 3:
            os.kill(os.getpid(), signal.SIGINT)  # as if the user pressed Ctrl-C during step 3
        return original(self, images, labels)

    monkeypatch.setattr(PixelCNNTask, "loss", loss)
    out = tmp_path / "run"
    # fp32: --precision auto may time the step first, and those loss calls must not count
    args = ["train", "--out", out, *TINY, "--steps", "6", "--checkpoint-every", "0", "--precision", "fp32"]
    before = signal.getsignal(signal.SIGINT)  # Python's default, or SIG_IGN under nohup / `cmd &`
    code, stdout, err = run_pcae(monkeypatch, capsys, *args)
    assert code == 130, err
    assert "interrupted at step 3" in err and err.strip().count("\n") == 0 and "Traceback" not in err
    assert load_checkpoint(out / "last.pt")["step"] == 3
    assert signal.getsignal(signal.SIGINT) is before  # the handler is restored
    code, _, err = run_pcae(monkeypatch, capsys, *args, "--resume")
    assert code == 0, err
    assert load_checkpoint(out / "last.pt")["step"] == 6

    # Ctrl-C in a --force run before its first checkpoint: nothing new is kept, the old run comes back
    finished = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    calls.clear()
    code, _, err = run_pcae(monkeypatch, capsys, *args, "--force")
    assert code == 130 and "holds the run --force was replacing" in err and "Traceback" not in err
    assert {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()} == finished


def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch, capsys):
    original, calls = PixelCNNTask.loss, []

    def loss(self, images, labels):
        calls.append(1)
        out = original(self, images, labels)
        return {k: v * float("nan") for k, v in out.items()} if len(calls) >= 5 else out

    monkeypatch.setattr(PixelCNNTask, "loss", loss)
    out = tmp_path / "run"
    code, _, err = run_pcae(monkeypatch, capsys, "train", "--out", out, *TINY, "--steps", "8",
                            "--checkpoint-every", "2", "--eval-every", "0")
    assert code == 1 and err.strip().count("\n") == 0 and "Traceback" not in err
    assert "loss is not finite by step 5" in err and "last.pt (step 4)" in err
    ckpt = load_checkpoint(out / "last.pt")
    assert ckpt["step"] == 4
    assert all(torch.isfinite(v).all() for v in ckpt["state_dicts"]["model"].values())
    assert not (out / "summary.json").exists()


# ----------------------------------------------------------------------------- exact resume


def test_resume_after_sigkill_ends_with_identical_weights(tmp_path, monkeypatch, capsys, one_thread):
    # one_thread (conftest) matches the single-threaded subprocesses bit for bit
    steps, every = 24, 4
    killed = tmp_path / "killed"
    env = {**os.environ, "PCAE_DATA_BUNDLED": "1", "OMP_NUM_THREADS": "1"}
    # Evaluations make the doomed run slow enough to kill mid-way (and must not change the weights).
    cmd = [sys.executable, "-m", "pcae", "train", "--out", str(killed), *TINY, "--steps", str(steps),
           "--checkpoint-every", str(every), "--eval-every", "1", "--eval-images", "2000"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while not (killed / "last.pt").exists():
        assert proc.poll() is None, proc.stderr.read().decode()
        assert time.monotonic() < deadline, "no checkpoint within 120 s"
        time.sleep(0.02)
    time.sleep(0.3)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    stopped_at = load_checkpoint(killed / "last.pt")["step"]
    assert 0 < stopped_at < steps, "the run was not killed mid-way"

    code, _, err = run_pcae(monkeypatch, capsys, "train", "--out", killed, "--resume",
                            "--eval-every", "0", *TINY)
    assert code == 0, err
    ref = train(TrainConfig(out=str(tmp_path / "ref"), steps=steps, checkpoint_every=every,
                            **TINY_CONFIG), TINY_SPEC)
    assert ref.summary["steps"] == steps == load_checkpoint(killed / "last.pt")["step"]
    assert_same_weights(weights(killed / "last.pt"), weights(tmp_path / "ref/last.pt"))
    rows = [r["step"] for r in read_metrics(killed / "metrics.jsonl") if r["split"] == "train"]
    assert rows == list(range(1, steps + 1))  # rows after the checkpoint were dropped, then redone


# ----------------------------------------------------------------------------- DDP


def _ddp_worker(rank, world, port, out, result_dir):
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), PCAE_DATA_BUNDLED="1")
    torch.set_num_threads(1)
    config = TrainConfig(out=out, steps=4, checkpoint_every=2, keep_best=False, **TINY_CONFIG)
    result = train(config, TINY_SPEC)
    torch.save(result.task.model.state_dict(), Path(result_dir) / f"rank{rank}.pt")
    torch.save(result.summary, Path(result_dir) / f"summary{rank}.pt")


def test_ddp_two_cpu_ranks_stay_identical_and_only_rank0_writes(tmp_path):
    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out, results = tmp_path / "run", tmp_path / "results"
    results.mkdir()
    mp.spawn(_ddp_worker, args=(2, port, str(out), str(results)), nprocs=2, join=True)
    rank0, rank1 = (torch.load(results / f"rank{r}.pt") for r in (0, 1))
    assert_same_weights(rank0, rank1)
    torch.manual_seed(0)
    init = PixelCNNSpec(channels=8, n_layers=1).build(FakeShape()).model.state_dict()
    assert any(not torch.equal(rank0[k], init[k]) for k in init), "no training happened"
    assert sorted(p.name for p in out.rglob("*.pt")) == ["last.pt"]
    assert not [p for p in out.rglob("*") if p.name.startswith(".")], "temp files left behind"
    ckpt = load_checkpoint(out / "last.pt")
    assert ckpt["step"] == 4 and ckpt["global_batch"] == 16
    assert_same_weights(ckpt["state_dicts"]["model"], rank0)
    summary = torch.load(results / "summary0.pt")
    assert summary["world_size"] == 2 and summary["steps"] == 4
    assert torch.load(results / "summary1.pt") == {}  # rank 1 reports nothing


class FakeShape:
    shape, num_classes, classes, info = (1, 8, 8), 10, None, {"source": "fake"}


# ----------------------------------------------------------------------------- weight average


def test_weight_average_follows_the_ramped_decay_and_swaps_exactly():
    from pcae.steps import WeightAverage

    model = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.BatchNorm1d(2))
    model[0].bias.requires_grad_(False)  # frozen: shared, never averaged
    average = WeightAverage(model, decay=0.9)
    assert "0.bias" not in average.names and "1.running_mean" in average.names
    start = model[0].weight.detach().clone()
    with torch.no_grad():
        model[0].weight.add_(1.0)
    average.update(step=1)  # decay min(0.9, 2/11): the average moves 9/11 of the way
    expected = start + (1 - 2 / 11) * 1.0
    raw = model[0].weight.detach().clone()
    with average.averaged():
        assert torch.allclose(model[0].weight, expected)
        inside = average.training_weights()
        assert torch.equal(inside["0.weight"], raw)
    assert torch.equal(model[0].weight, raw)  # swapped back bit for bit
    for step in range(2, 500):
        average.update(step)
    with average.averaged():
        assert torch.allclose(model[0].weight, raw, atol=1e-6)  # a constant model is its own average


def test_run_saves_the_average_and_resumes_it(tmp_path):
    config = TrainConfig(out=str(tmp_path / "a"), steps=6, checkpoint_every=3, ema=0.9, **TINY_CONFIG)
    full = train(config, TINY_SPEC)
    checkpoint = load_checkpoint(tmp_path / "a/last.pt")
    raw, saved = checkpoint["training_weights"], checkpoint["state_dicts"]["model"]
    assert set(raw) <= set(saved) and any(not torch.equal(raw[k], saved[k]) for k in raw)
    # the task handed back holds what was saved: the average
    assert_same_weights(full.task.model.state_dict(), saved)
    # 3 steps, then resume to 6: the same average and the same raw weights as one run of 6
    train(TrainConfig(out=str(tmp_path / "b"), steps=3, ema=0.9, **TINY_CONFIG), TINY_SPEC)
    train(TrainConfig(out=str(tmp_path / "b"), steps=6, ema=0.9, **TINY_CONFIG), TINY_SPEC, resume=True)
    resumed = load_checkpoint(tmp_path / "b/last.pt")
    assert_same_weights(resumed["state_dicts"]["model"], saved)
    assert_same_weights(resumed["training_weights"], raw)
    # without averaging nothing extra is stored
    train(TrainConfig(out=str(tmp_path / "c"), steps=2, ema=0.0, **TINY_CONFIG), TINY_SPEC)
    assert "training_weights" not in load_checkpoint(tmp_path / "c/last.pt")


def test_warmup_ramps_the_learning_rate():
    from pcae.steps import learning_rate

    config = TrainConfig(steps=100, lr=1e-3, warmup_steps=10)
    assert learning_rate(config, 0, 100) == pytest.approx(1e-4)
    assert learning_rate(config, 9, 100) == pytest.approx(1e-3)
    assert learning_rate(config, 50, 100) == pytest.approx(1e-3)
    cosine = TrainConfig(steps=100, lr=1e-3, warmup_steps=10, lr_schedule="cosine")
    assert learning_rate(cosine, 4, 100) < learning_rate(cosine, 9, 100)
    with pytest.raises(ValueError, match="ema must be in"):
        TrainConfig(steps=1, ema=1.0)


def test_resume_keeps_stored_run_options_and_refuses_conflicts(tmp_path, monkeypatch, capsys):
    out = tmp_path / "run"
    code, _, err = run_pcae(monkeypatch, capsys, "train", "--out", out, *TINY, "--steps", "2",
                            "--eval-every", "1", "--judge-images", "0")
    assert code == 0, err
    for option, value, words in [("--channels", "16", "--channels 16 conflicts with the run being "
                                  "resumed (8); a resumed run keeps its model"),
                                 ("--condition", "label", "--condition label conflicts"),
                                 ("--lr", "0.01", "--lr 0.01 conflicts with the run being resumed (0.004)"),
                                 ("--data", "h5:other.h5", "--data h5:other.h5 conflicts")]:
        code, _, err = run_pcae(monkeypatch, capsys, "train", "--out", out, "--resume", "--steps", "3",
                                option, value)
        assert code == 1 and words in err and "Traceback" not in err, (option, err)
    assert load_checkpoint(out / "last.pt")["step"] == 2  # nothing ran
    # the same value again is fine; run options not given again are the stored ones, and said so
    code, stdout, err = run_pcae(monkeypatch, capsys, "train", "--out", out, "--resume", "--steps", "3",
                                 "--channels", "8")
    assert code == 0, err
    assert "stored run options: log-every 1, eval-every 1, eval-images 16" in stdout
    stored = load_checkpoint(out / "last.pt")["configs"]["train"]
    assert stored["eval_every"] == 1 and stored["eval_images"] == 16 and stored["steps"] == 3
    assert [r["step"] for r in read_metrics(out / "metrics.jsonl") if r["split"] == "test"] == [1, 2, 3]


def test_evaluate_on_other_data_names_its_classes(tmp_path, monkeypatch, capsys):
    import h5py
    import numpy as np

    out = tmp_path / "run"
    code, _, err = run_pcae(monkeypatch, capsys, "train", "--out", out, *TINY, "--steps", "1",
                            "--judge-images", "0")
    assert code == 0, err
    other = tmp_path / "shapes.h5"
    with h5py.File(other, "w") as f:
        f.attrs.update(format="pcae-images/1", source="shapes", origin="test",
                       classes=json.dumps(["circle", "square"]))
        f["images"] = np.random.default_rng(0).integers(0, 256, (20, 1, 8, 8), dtype=np.uint8)
        f["labels"] = np.arange(20) // 10  # test rows 9 and 19: one of each
    code, stdout, err = run_pcae(monkeypatch, capsys, "evaluate", out / "last.pt", "--data", f"h5:{other}")
    assert code == 0, err
    assert set(json.loads(stdout)["bpd_per_class"]) == {"circle", "square"}


def test_force_replaces_only_pcae_files_and_keeps_the_old_run_until_the_new_one_checkpoints(
        tmp_path, monkeypatch, capsys):
    """Audit: --force deleted the old run before a later check failed, or when the new run was
    killed; took over a user's train.log; wrote through a linked log; a second run mixed into it."""
    import pcae.train as T
    from pcae.outputs import folder_lock, set_aside
    from pcae.runfolder import run_paths

    out = tmp_path / "run"
    args = ["train", "--out", out, *TINY, "--steps", "2"]
    assert run_pcae(monkeypatch, capsys, *args)[0] == 0
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}

    def intact():
        return {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} == before

    # a check that fails after the data is read (more than the data in one batch) changes nothing
    code, _, err = run_pcae(monkeypatch, capsys, *args, "--force", "--batch-size", "100000")
    assert code == 1 and "lower --batch-size" in err and intact()
    # a failure after the folder is opened (here: choosing the precision) puts the old run back
    monkeypatch.setattr(T._Run, "_make_objective", lambda self: (_ for _ in ()).throw(T.PcaeError("boom")))
    code, _, err = run_pcae(monkeypatch, capsys, *args, "--force")
    assert code == 1 and "boom" in err and intact() and not list(out.glob(".pcae-replaced.*"))
    monkeypatch.undo()
    # killed (SIGKILL) before its first last.pt: the run it was replacing comes back on the next one
    aside = set_aside(out, run_paths(out))
    (out / "train.log").write_text("2026-01-01 00:00:00 new run in x\n")  # the killed run's
    os.rename(aside, out / ".pcae-replaced.pid999999999.x")
    code, _, err = run_pcae(monkeypatch, capsys, *args)
    assert code == 1 and "already exists" in err and intact()
    # killed while setting the old run aside (some files moved, no completion mark): moved back
    half = out / ".pcae-replaced.pid999999999.y"
    half.mkdir()
    os.replace(out / "metrics.jsonl", half / "metrics.jsonl")
    code, _, err = run_pcae(monkeypatch, capsys, *args)
    assert code == 1 and "already exists" in err and intact() and not half.exists()

    # a second command writing the folder stops at once, naming it
    with folder_lock(out, "run folder"):
        code, _, err = run_pcae(monkeypatch, capsys, *args, "--force")
    assert code == 1 and "another pcae command is writing" in err and intact()

    # under pcae's names, a file pcae did not write (or a link) is the user's: refused, kept
    log = out / "train.log"
    log.write_text("my own notes\n")
    code, _, err = run_pcae(monkeypatch, capsys, *args, "--force")
    assert code == 1 and "train.log: is not a file pcae wrote" in err
    assert log.read_text() == "my own notes\n"
    target = tmp_path / "elsewhere.log"
    target.write_text("keep\n")
    log.unlink()
    log.symlink_to(target)
    code, _, err = run_pcae(monkeypatch, capsys, *args, "--steps", "3", "--resume")
    assert code == 1 and "is a link" in err and target.read_text() == "keep\n"
    code, _, err = run_pcae(monkeypatch, capsys, *args, "--force")
    assert code == 1 and "is a link" in err and target.read_text() == "keep\n"

    # a folder holding only a user's train.log / metrics.jsonl is not a failed pcae start
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "train.log").write_text("my experiment log\n")
    (mine / "metrics.jsonl").write_text('{"loss": 1}\n')
    code, _, err = run_pcae(monkeypatch, capsys, "train", "--out", mine, *TINY, "--steps", "1")
    assert code == 1 and "already exists" in err
    assert (mine / "train.log").read_text() == "my experiment log\n"


def test_resume_skips_metrics_rows_that_are_not_pcae_s(tmp_path, monkeypatch, capsys):
    out = tmp_path / "run"
    args = ["train", "--out", out, *TINY, "--steps", "2"]
    assert run_pcae(monkeypatch, capsys, *args)[0] == 0
    with open(out / "metrics.jsonl", "a") as f:
        f.write('{"note": "no step"}\n[1, 2]\n{"step": "3"}\n')
    code, _, err = run_pcae(monkeypatch, capsys, *args[:-1], "3", "--resume")
    assert code == 0, err
    assert [r["step"] for r in read_metrics(out / "metrics.jsonl") if r["split"] == "train"] == [1, 2, 3]


def test_sample_n_beyond_memory_is_refused_at_once(tmp_path, monkeypatch, capsys):
    """Audit D: `sample --n 100000000000` ran for a quarter of an hour, then a traceback."""
    out = tmp_path / "run"
    assert run_pcae(monkeypatch, capsys, "train", "--out", out, *TINY, "--steps", "1")[0] == 0
    code, _, err = run_pcae(monkeypatch, capsys, "sample", out / "last.pt", "--out", tmp_path / "g.png",
                            "--n", "100000000000")
    assert code == 1 and "--n 100000000000 would need about" in err and err.strip().count("\n") == 0
    assert not (tmp_path / "g.png").exists()


def test_tensorboard_logs_the_metrics_rows_and_the_grids(tmp_path, monkeypatch, capsys):
    """--tensorboard: OUT/tensorboard holds what metrics.jsonl holds (as split/name scalars) and the
    sample grids, read back by TensorBoard's own reader; --force replaces it with the rest."""
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = tmp_path / "run"
    args = ["train", "--out", out, *TINY, "--steps", "4", "--eval-every", "2", "--sample-every", "2", "--tensorboard"]
    code, _, err = run_pcae(monkeypatch, capsys, *args)
    assert code == 0, err
    events = EventAccumulator(str(out / "tensorboard"))
    events.Reload()
    tags = events.Tags()
    assert {"train/bpd", "train/images_per_s", "train/lr", "test/bpd"} <= set(tags["scalars"]), tags
    rows = [r for r in read_metrics(out / "metrics.jsonl") if r["split"] == "test"]
    logged = [(e.step, e.value) for e in events.Scalars("test/bpd")]
    assert [(r["step"], pytest.approx(r["bpd"], rel=1e-6)) for r in rows] == logged
    assert "samples" in tags["images"] and len(events.Images("samples")) >= 2
    assert run_pcae(monkeypatch, capsys, *args, "--force")[0] == 0  # pcae's event files are replaced
    assert len(list((out / "tensorboard").glob("events.out.tfevents.*"))) == 1


def test_label_conditional_with_a_location_dependent_map(tmp_path, monkeypatch, capsys):
    """--spatial-channels c: h = the one-hot class also reaches every layer as a c-channel map
    m(h) of the image's size (the paper's location-dependent conditioning); a resume keeps it."""
    out = tmp_path / "run"
    args = ["train", "--out", out, *TINY, "--condition", "label", "--spatial-channels", "4",
            "--eval-every", "0", "--judge-images", "0"]
    code, _, err = run_pcae(monkeypatch, capsys, *args, "--steps", "2")
    assert code == 0, err
    model = load_checkpoint(out / "last.pt")["configs"]["model"]
    assert model["spatial_cond"] is True and model["spatial_channels"] == 4 and model["cond_dim"] == 10
    code, _, err = run_pcae(monkeypatch, capsys, "train", "--out", out, "--resume", "--steps", "3",
                            "--spatial-channels", "8")
    assert code == 1 and "--spatial-channels 8 conflicts with the run being resumed (4)" in err, err
