"""Training runs: one loop for every model kind, with checkpoints, exact resume and DDP.

`train(config, spec)` runs one: the spec (pcae/task.py) builds the task, which says what to train;
the loop feeds it batches (pcae/batches.py), steps AdamW, evaluates, draws grids and checkpoints
into the run folder (pcae/runfolder.py), and knows nothing about PixelCNNs. `_Run` reads top to
bottom: setup (config, data, task, optimizer, folder, resume), the loop, one training step, and
the end of a run (final evaluation, samples, the judge, summary).

Exact resume. The data order is a pure function of (seed, epoch); the checkpoint stores (epoch,
batches consumed in it), the optimizer, every RNG state and the step, and the model is rebuilt from
its stored config. A run killed at any moment (checkpoints are atomic) and resumed from last.pt
therefore makes the same updates in the same order as one that never stopped: on CPU with a fixed
seed the final weights are bit-identical (tests/test_train.py kills a real process with SIGKILL).

Throughput (the same code path on CPU and CUDA): loss metrics stay on the device and are read (one
host sync) only every `log_every` steps, which is also when a non-finite loss is noticed. Options:
bf16 autocast (the loss and its softmax in fp32), torch.compile of the loss computation,
channels_last, fused AdamW on CUDA. Data parallel: under `torchrun --nproc_per_node=N -m pcae
train ...` DDP averages the gradients and only rank 0 writes anything.

Known limits: bit-identical resume holds on CPU; on CUDA, kernels (and compile) may be
nondeterministic. Resuming with another number of ranks continues from the same image of the same
epoch, but is not bit-identical.
"""
from __future__ import annotations

import copy
import dataclasses
import json
import logging
import math
import random
import shutil
import signal
import time
from contextlib import ExitStack, contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.distributed as tdist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from eval.judge import judge_run
from pcae.batches import Distributed, Feeder, eval_batches, first_examples
from pcae.checkpoint import load_checkpoint, rng_states, save_checkpoint, set_rng_states
from pcae.config import LR_SCHEDULES, TrainConfig
from pcae.data import load_dataset
from pcae.errors import Interrupted, PcaeError, first_line
from pcae.files import atomic_path
from pcae.images import plot_curve, save_grid
from pcae.precision import choose, time_it
from pcae.resume import (
    _check_resumable,
    _same_setting,
    check_resumed_spec,
    options_set,
    resumed_config,
)
from pcae.runfolder import (
    check_run_folder,
    diverged_warnings,
    open_run_folder,
    read_metrics,
    write_json,
)
from pcae.task import Callback, Task, TaskSpec, TrainResult


class _Objective(nn.Module):
    """task.loss as a module, so DDP and torch.compile wrap the whole loss computation."""

    def __init__(self, task: Task):
        super().__init__()
        self.model = task.model  # registers the parameters for DDP
        self.task = [task]  # a list: not a submodule

    def forward(self, images, labels):
        return self.task[0].loss(images, labels)


def learning_rate(config: TrainConfig, step: int, total: int) -> float:
    """The learning rate at `step` (a pure function, so resuming needs no scheduler state)."""
    warm = min(1.0, (step + 1) / config.warmup_steps) if config.warmup_steps else 1.0
    if config.lr_schedule == "constant":
        return config.lr * warm
    if config.lr_schedule == "cosine":
        t = min(step / max(total, 1), 1.0)
        return config.lr * warm * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * t)))
    raise ValueError(f"lr_schedule must be one of {LR_SCHEDULES}, got {config.lr_schedule!r}")


class WeightAverage:
    """An exponential moving average of a model's trained weights (Polyak averaging [1]).

    The average is what a run evaluates, samples from and saves as the model's weights; the raw
    weights the optimiser works on travel beside it in the checkpoint ("training_weights"), so a
    resumed run continues exactly. The decay ramps up with the step, min(decay, (1+t)/(10+t)) as
    in TensorFlow's ExponentialMovingAverage, so a short run is not dominated by its first steps:
    at 300 steps it averages over roughly the last 30. Averaged: every parameter that trains and
    every floating buffer (e.g. BatchNorm running statistics); the rest is shared, not copied.

    Why: with Adam at a high learning rate the raw weights of a short run jitter from step to step;
    their average is a smoother model whose samples given h follow h far more often (measured in
    benchmarks/ae_recipe.py), at an equal or lower test bits/dim.

    [1] Polyak and Juditsky, "Acceleration of stochastic approximation by averaging", 1992.
    """

    def __init__(self, model: nn.Module, decay: float):
        self.model, self.decay = model, decay
        self.names = [n for n, p in model.named_parameters() if p.requires_grad]
        self.names += [n for n, b in model.named_buffers() if b.is_floating_point()]
        self.average = {n: t.detach().clone() for n, t in self._tensors().items()}
        # the same tensors every step (weights change in place): the lists update() works on
        self._live = [t.detach() for t in self._tensors().values()]

    def _tensors(self) -> dict[str, torch.Tensor]:
        tensors = {**dict(self.model.named_parameters()), **dict(self.model.named_buffers())}
        return {n: tensors[n] for n in self.names}

    @torch.no_grad()
    def update(self, step: int) -> None:
        """Fold in the weights after optimiser step `step` (1-based)."""
        decay = min(self.decay, (1 + step) / (10 + step))
        torch._foreach_lerp_([self.average[n] for n in self.names], self._live, 1.0 - decay)

    @torch.no_grad()
    def swap(self) -> None:
        """Exchange the model's weights and the average (twice restores both exactly)."""
        for n, t in self._tensors().items():
            kept = t.detach().clone()
            t.copy_(self.average[n])
            self.average[n] = kept

    @contextmanager
    def averaged(self):
        """A context in which the model holds the averaged weights."""
        self.swap()
        try:
            yield
        finally:
            self.swap()

    def training_weights(self) -> dict[str, torch.Tensor]:
        """The raw weights while the model holds the average (call inside `averaged()`)."""
        return {n: t.detach().clone() for n, t in self.average.items()}

    @torch.no_grad()
    def restore(self, training_weights: dict[str, torch.Tensor]) -> None:
        """Resume: the model holds the stored average; load it as the average, then put the raw
        weights back into the model."""
        missing = set(self.names) - set(training_weights)
        if missing:
            raise ValueError(f"training weights lack {sorted(missing)[:3]}")
        current = self._tensors()
        for n in self.names:
            self.average[n] = current[n].detach().clone()
            current[n].copy_(training_weights[n])


class _Interrupt:
    """SIGINT sets a flag (the loop saves and stops between steps) instead of raising mid-step.

    Once the steps are done (`steps_done()`), Ctrl-C raises KeyboardInterrupt at once: the final
    checkpoint is written, and what is left (samples, the judge, the summary) `--resume` redoes."""

    def __init__(self):
        self.requested = False
        self.previous = None
        self.immediate = False

    def steps_done(self) -> None:
        """From now on Ctrl-C interrupts at once (raises now if it came during the last step)."""
        self.immediate = True
        if self.requested:
            raise KeyboardInterrupt

    def __enter__(self):
        try:
            self.previous = signal.signal(signal.SIGINT, self._handle)
        except ValueError:  # not the main thread: leave signals alone
            self.previous = None
        return self

    def _handle(self, signum, frame):
        if self.requested or self.immediate:  # a second Ctrl-C, or no steps left: stop now
            raise KeyboardInterrupt
        self.requested = True

    def __exit__(self, *exc):
        if self.previous is not None:
            signal.signal(signal.SIGINT, self.previous)


class NonFiniteLoss(PcaeError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""


# ---------------------------------------------------------------------------------------------
# The loop


def train(config: TrainConfig, spec: TaskSpec, *, resume: bool = False, force: bool = False,
          callback: Callback | None = None, given=None) -> TrainResult:
    """Train `spec`'s task as `config` says, writing the run folder `config.out`.

    Args:
        config: what to train on and how.
        spec: builds the task (model + loss) from the data, or restores it from last.pt.
        resume: continue `config.out` from its last.pt. The stored settings win, except the run
            options (TrainConfig.RUN_FIELDS) in `given`, taken from `config`; any other field of
            `config` or `spec` in `given` must equal the stored one (else PcaeError, before
            anything runs). The start event's "kept" lists the stored run options kept.
        force: replace an existing `config.out`.
        callback: told about progress (rank 0 only); the CLI draws its progress bar from it.
            Besides the loop's events: "prepare" ({"done", "total"}) and "prepared" (the spec's
            info) while a spec with a `prepare` step (portraits) readies its data.
        given: names of the `config` and `spec` fields the caller set (the CLI: the options on
            its command line); None: those that differ from their defaults (`options_set`).
    Returns:
        TrainResult; status "interrupted" after Ctrl-C (a checkpoint was saved).
    Raises:
        PcaeError for problems the user can fix; NonFiniteLoss when the loss diverges.
    """
    dist = Distributed.setup(config.device)
    try:
        given = options_set(config) | options_set(spec) if given is None else set(given)
        return _Run(config, spec, dist, resume, force, callback or (lambda event, info: None),
                    given).run()
    finally:
        dist.close()


@dataclass
class RunState:
    """Where a run stands: what a checkpoint stores besides weights, optimizer and RNG states."""

    step: int = 0  # optimizer steps done
    epoch: int = 0  # data epoch, and batches consumed inside it
    position: int = 0
    best: dict | None = None  # {"value", "step"} of the best test metric so far
    elapsed: float = 0.0  # wall seconds of the sessions before this one
    train_seconds: float = 0.0  # seconds inside training steps, all sessions
    images_seen: int = 0
    last_checkpoint_step: int | None = None  # None until last.pt is written (or resumed from)


class _Run:
    """One training run, in stages: `_setup` (below: config, data, task, folder, optimizer,
    resume, objective), then `_loop` (one `_train_step` per batch, `_report` when something is
    due), then `_finish`. Everything it tracks between steps is in `state` (a RunState)."""

    def __init__(self, config, spec, dist, resume, force, callback, given):
        self.config, self.spec, self.dist = config, spec, dist
        self.given, self.kept = given, []
        self.resume, self.force, self.callback = resume, force, callback
        self.out = Path(config.out)
        self.log = logging.getLogger(f"pcae.train.{id(self)}")
        self.log.propagate = False
        self.log.setLevel(logging.INFO)
        self.state = RunState()
        self.last_grid = None  # (step, path) of the newest sample grid
        self.holds = ExitStack()  # the run folder, held for the run (rank 0)
        self.folder = None  # its pcae.outputs.OutputFolder: what --force replaces waits there

    # -- setup, stage by stage ------------------------------------------------------------------

    def _setup(self):
        check_run_folder(self.out, self.resume, self.force)  # every rank checks before anyone writes
        self.dist.barrier()
        checkpoint = self._load_config()
        if checkpoint is None:
            self._prepare()
        self._open_data()
        self._make_task(checkpoint)
        self._make_optimizer()  # its data checks too come before anything in the folder changes
        self._open_folder(resumed=checkpoint is not None)  # the first write
        if checkpoint:
            self._restore(checkpoint)
        self._make_objective()

    def _load_config(self) -> dict | None:
        """When resuming: last.pt, and the stored config with the run options given again; given
        options that conflict with the stored run are refused here, before anything runs."""
        if not self.resume:
            return None
        checkpoint = load_checkpoint(self.out / "last.pt", kind=self.spec.kind)
        try:
            # runs saved before weight averaging existed had none: keep it so
            stored = TrainConfig(**{"ema": 0.0, **checkpoint["configs"]["train"]})
        except (KeyError, TypeError, ValueError) as e:
            raise PcaeError(f"{self.out / 'last.pt'}: its training config cannot be read "
                            f"({e})") from None
        _check_resumable(checkpoint, self.out / "last.pt")
        shape = ((checkpoint.get("data") or {}).get("train") or {}).get("shape")
        given = self.given
        photos = getattr(self.spec, "stored_source", lambda configs: None)(checkpoint.get("configs", {}))
        if "data" in given and photos is not None and _same_setting("data", photos, self.config.data, None):
            given = given - {"data"}  # the photos a portrait run's face cache was made from
        self.config, self.kept = resumed_config(
            stored, self.config, given, tuple(shape) if isinstance(shape, (list, tuple)) and len(shape) == 3 else None)
        check_resumed_spec(self.spec, checkpoint.get("configs", {}), self.given, self.out)
        done = checkpoint["step"]
        if self.config.steps and self.config.steps < done:
            raise PcaeError(f"--steps {self.config.steps} is fewer than the {done} steps {self.out} has "
                            "done; give at least that many to continue it")
        return checkpoint

    def _prepare(self):
        """A new run's data step of its spec (the portrait face cache), when it has one."""
        if not hasattr(self.spec, "prepare"):
            return
        progress = lambda done, total: self.callback("prepare", {"done": done, "total": total})
        self.config, self.spec, info = self.spec.prepare(self.config, progress)
        if info is not None:
            self.callback("prepared", info)

    def _open_data(self):
        config = self.config
        kwargs = dict(channels=config.image_channels, image_size=config.image_size,
                      data_root=config.data_root)
        self.train_ds = load_dataset(config.data, split="train", **kwargs)
        self.test_ds = load_dataset(config.data, split="test", **kwargs)
        self.data_info = {"train": self.train_ds.info, "test": self.test_ds.info}

    def _make_task(self, checkpoint: dict | None):
        seed = self.config.seed
        torch.manual_seed(seed)
        random.seed(seed)
        np.random.seed(seed)
        task = self.spec.restore(checkpoint) if checkpoint else self.spec.build(self.train_ds)
        task.check_data(self.train_ds)
        self.task = task

    def _open_folder(self, resumed: bool):
        """The run folder and train.log. Nothing is written before this, so a run that cannot
        start leaves no folder behind."""

        dist, config, task = self.dist, self.config, self.task
        if dist.main:
            # held until the run ends: a second run into this folder stops at once, and the run
            # --force replaces waits aside until this one's first last.pt
            self.folder = self.holds.enter_context(open_run_folder(self.out, self.resume, self.force))
            handler = logging.FileHandler(self.out / "train.log")
            handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%Y-%m-%d %H:%M:%S"))
            self.log.addHandler(handler)
        else:
            self.log.addHandler(logging.NullHandler())
        dist.barrier()
        self.log.info("%s run in %s (rank 0 of %d, device %s)",
                      "resumed" if resumed else "new", self.out, dist.world, dist.device)
        self.log.info("config %s", json.dumps(dataclasses.asdict(config)))
        for split, info in self.data_info.items():
            self.log.info("data %s: %s", split, json.dumps(info, default=str))
            for skipped in info.get("skipped", []) or []:
                self.log.info("data %s: skipped %s", split, skipped)
        self.log.info("model %s: %s", task.kind, json.dumps(task.configs(), default=str))

    def _make_optimizer(self):
        config, device, model = self.config, self.dist.device, self.task.model
        model.to(device)
        if config.channels_last:
            model.to(memory_format=torch.channels_last)
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.fused = device.type == "cuda"
        self.optimizer = torch.optim.AdamW(self.params, lr=config.lr, weight_decay=config.weight_decay,
                                           fused=self.fused or None)
        self.average = WeightAverage(model, config.ema) if config.ema else None
        self.feeder = Feeder(self.train_ds, config.batch_size, config.seed, self.dist.rank,
                             self.dist.world, device, config.num_workers, config.channels_last)
        self.total = config.steps or config.epochs * self.feeder.per_epoch

    def _restore(self, checkpoint: dict):
        """Optimizer, position in the data, progress figures, raw weights and RNG states of last.pt."""
        fused, state = self.fused, self.state
        if self.total < checkpoint["step"]:  # --epochs: the length in steps is known only now
            raise PcaeError(f"--epochs {self.config.epochs} ({self.total} steps) is fewer than the "
                            f"{checkpoint['step']} steps {self.out} has done; give more to continue it")
        try:
            self.optimizer.load_state_dict(checkpoint["optimizer"])
        except (KeyError, TypeError, ValueError, RuntimeError, IndexError) as e:
            raise PcaeError(f"{self.out / 'last.pt'}: its optimizer state does not fit the model "
                            f"({first_line(e)}); it cannot be resumed") from None
        if checkpoint["position"] > self.feeder.per_epoch:
            raise PcaeError(f"{self.out / 'last.pt'}: field 'position' ({checkpoint['position']}) is beyond "
                            f"the {self.feeder.per_epoch} batches of an epoch; it cannot be resumed")
        for group in self.optimizer.param_groups:  # the saving machine's choice may not apply here
            group["fused"], group["foreach"] = (fused or None), None
            for p in group["params"]:  # fused kernels want the step count beside the parameter
                opt_state = self.optimizer.state.get(p, {})
                if "step" in opt_state:
                    opt_state["step"] = (opt_state["step"].to(p.device, torch.float32) if fused
                                         else opt_state["step"].cpu())
        state.step, state.epoch = checkpoint["step"], checkpoint["epoch"]
        state.position = checkpoint["position"]
        saved_batch = checkpoint.get("global_batch", self.feeder.global_batch)
        if saved_batch != self.feeder.global_batch:  # another number of ranks: same image on
            state.position = min(state.position * saved_batch // self.feeder.global_batch,
                                 self.feeder.per_epoch - 1)
            self.log.info("global batch changed %d -> %d: resuming at batch %d of epoch %d",
                          saved_batch, self.feeder.global_batch, state.position, state.epoch)
        metrics = checkpoint.get("metrics", {})
        state.best = metrics.get("best")
        state.elapsed = metrics.get("elapsed", 0.0)
        state.train_seconds = metrics.get("train_seconds", 0.0)
        state.images_seen = metrics.get("images_seen", 0)
        state.last_checkpoint_step = state.step
        if self.average is not None:  # the model holds the stored average; raw weights beside it
            weights = checkpoint.get("training_weights")
            if weights is not None:
                self.average.restore(weights)
        try:
            set_rng_states(checkpoint["rng"])
        except (KeyError, TypeError, ValueError, RuntimeError, IndexError, AttributeError) as e:
            raise PcaeError(f"{self.out / 'last.pt'}: its random states are unreadable ({first_line(e)}); "
                            "it cannot be resumed") from None
        if self.dist.main:  # forget what happened after the checkpoint: it will happen again
            rows = [r for r in read_metrics(self.out / "metrics.jsonl") if r["step"] <= state.step]
            with atomic_path(self.out / "metrics.jsonl") as tmp:
                tmp.write_text("".join(json.dumps(r) + "\n" for r in rows))

    def _make_objective(self):
        """The loss module (DDP and torch.compile around it when asked), the precision, the examples."""
        config, dist = self.config, self.dist
        device = dist.device
        objective: nn.Module = _Objective(self.task)
        if dist.world > 1:
            objective = DistributedDataParallel(objective, device_ids=[device.index] if device.type == "cuda" else None,
                            broadcast_buffers=False)
        if config.compile:
            objective = torch.compile(objective)
        self.objective = objective

        # DDP ranks decide without measuring, so that they cannot disagree
        measure = self._time_step if dist.world == 1 else None
        self.precision = choose(config.precision, device, measure, self._model_key())
        self.log.info("precision %s", json.dumps(self.precision))
        self.autocast = torch.autocast(device.type, dtype=torch.bfloat16,
                                       enabled=self.precision["used"] == "bf16")
        self.examples = first_examples(self.test_ds, config.n_samples, device)

    def _model_key(self) -> str:
        return json.dumps([self.task.kind, self.task.configs(), self.config.batch_size,
                           self.config.compile, self.config.channels_last], sort_keys=True, default=str)

    def _time_step(self, precision: str) -> float:
        """Seconds per training step in `precision`, on a copy of the task (the run is untouched)."""


        task = copy.deepcopy(self.task)
        images, labels = first_examples(self.train_ds, self.config.batch_size, self.dist.device)
        params = [p for p in task.model.parameters() if p.requires_grad]
        autocast = torch.autocast(self.dist.device.type, dtype=torch.bfloat16,
                                  enabled=precision == "bf16")

        def step():
            with autocast:
                out = task.loss(images, labels)
            loss = out["loss"] if "loss" in out else out[task.metric]
            grads = torch.autograd.grad(loss, params)
            if self.dist.device.type == "cuda":
                torch.cuda.synchronize(self.dist.device)
            del grads

        with torch.random.fork_rng(devices=[]):  # nothing the run draws is consumed here
            return time_it(step)

    # -- pieces ---------------------------------------------------------------------------------

    def _write_row(self, row: dict):
        if self.dist.main:
            with open(self.out / "metrics.jsonl", "a") as f:
                f.write(json.dumps(row) + "\n")

    def _averaged(self):
        """A context in which the model holds the averaged weights (when the run averages)."""
        return self.average.averaged() if self.average is not None else nullcontext()

    def _checkpoint(self, name="last.pt"):
        if not self.dist.main:
            return
        with self._averaged():  # "state_dicts" holds the weights to use: the average
            self._save(name)

    def _save(self, name):
        checkpoint = {
            "kind": self.task.kind,
            "configs": {**self.task.configs(), "train": dataclasses.asdict(self.config)},
            "state_dicts": self.task.state_dicts(),
            "optimizer": self.optimizer.state_dict(),
            "step": self.state.step, "epoch": self.state.epoch, "position": self.state.position,
            "global_batch": self.feeder.global_batch,
            "rng": rng_states(),
            "data": self.data_info,
            "metrics": {"best": self.state.best, "elapsed": self.state.elapsed + self._since_start(),
                        "train_seconds": self.state.train_seconds, "images_seen": self.state.images_seen},
        }
        if self.average is not None:
            checkpoint["training_weights"] = self.average.training_weights()
        path = save_checkpoint(checkpoint, self.out / name)
        if name == "last.pt":
            self.state.last_checkpoint_step = self.state.step
            self.folder.commit()  # the new run can be resumed now: the one it replaces goes
        self.log.info("step %d: saved %s", self.state.step, path)
        self.callback("checkpoint", {"step": self.state.step, "path": str(path)})

    def _since_start(self):
        return time.monotonic() - self.started

    def _nonfinite_message(self, what: str) -> str:
        if self.state.last_checkpoint_step is None:
            kept = "no checkpoint had been written yet"
        else:
            kept = f"the last good checkpoint is {self.out / 'last.pt'} (step {self.state.last_checkpoint_step})"
        return (f"{what} by step {self.state.step}: training stopped; {kept}. Try a lower --lr "
                f"(now {self.config.lr:g}) or --grad-clip")

    def _evaluate(self):
        if not self.dist.main:
            return None
        task, config = self.task, self.config
        task.model.eval()
        try:
            with self.autocast, self._averaged():
                batches = eval_batches(self.test_ds, config.eval_images, 2 * config.batch_size,
                                       self.dist.device, config.num_workers)
                metrics = task.evaluate(batches)
        finally:
            task.model.train()
        if not metrics:
            return None
        row = {"step": self.state.step, "epoch": self.state.epoch, "split": "test", **metrics}
        self._write_row(row)
        self.log.info("step %d: test %s", self.state.step, json.dumps(metrics))
        self.callback("eval", row)
        value = metrics.get(task.metric)
        if value is not None and math.isfinite(value) and (self.state.best is None or value < self.state.best["value"]):
            self.state.best = {"value": value, "step": self.state.step}
            if config.keep_best:
                self._checkpoint("best.pt")
        return metrics

    def _sample(self, name: str):
        if not self.dist.main or self.config.n_samples == 0:
            return None
        generator = torch.Generator(self.dist.device).manual_seed(self.config.seed)
        with self._averaged():
            images, nrow = self.task.sample_grid(self.examples, self.config.n_samples, generator,
                                                 self.config.temperature)
        path = save_grid(images, nrow, self.out / name)
        self.last_grid = (self.state.step, path)
        self.log.info("step %d: wrote %s", self.state.step, path)
        self.callback("sample", {"step": self.state.step, "path": str(path)})
        return path

    # -- the loop -------------------------------------------------------------------------------

    def run(self) -> TrainResult:
        self.started = time.monotonic()
        try:
            self._setup()
            return self._loop()
        except BaseException as e:
            self._close_log()
            replacing = self.folder is not None and self.folder.aside is not None
            self.holds.__exit__(type(e), e, e.__traceback__)  # before its first last.pt: the old run is back
            if replacing and isinstance(e, KeyboardInterrupt):
                raise Interrupted(f"interrupted before the new run's first checkpoint: {self.out} "
                                  "holds the run --force was replacing, as it was") from None
            raise
        finally:
            self._close_log()
            self.holds.close()

    def _replacing(self) -> bool:
        """Whether the run --force replaces still waits aside (this run has no last.pt yet)."""
        return self.folder is not None and self.folder.aside is not None

    def _close_log(self):
        for handler in list(self.log.handlers):
            handler.close()
            self.log.removeHandler(handler)

    def _loop(self) -> TrainResult:
        config, dist, task, state = self.config, self.dist, self.task, self.state
        device = dist.device
        self.callback("start", {"step": state.step, "total": self.total, "device": str(device),
                                "metric": task.metric, "kind": task.kind,
                                "world": dist.world, "data": self.data_info["train"],
                                "feeding": self.feeder.where, "out": str(self.out),
                                "precision": self.precision, "kept": self.kept})
        task.model.train()
        sums: dict[str, torch.Tensor] = {}  # loss metrics summed since the last train row
        nonfinite = torch.zeros((), dtype=torch.bool, device=device)
        window_steps, window_start = 0, time.monotonic()
        last_checkpoint_time = time.monotonic()
        status = "finished"
        batches = self.feeder.batches(state.epoch, state.position)
        with _Interrupt() as interrupt:
            while state.step < self.total:
                out, loss = self._train_step(*next(batches))
                window_steps += 1
                nonfinite |= ~torch.isfinite(loss.detach())
                for k, v in out.items():
                    sums[k] = sums.get(k, 0) + v.detach().float()

                final = state.step == self.total
                due = lambda every: every > 0 and state.step % every == 0  # noqa: E731
                log_now = due(config.log_every) or final
                eval_now = due(config.eval_every) or final
                sample_now = due(config.sample_every)
                checkpoint_now = due(config.checkpoint_every) or final or (
                    log_now and config.checkpoint_seconds > 0
                    and time.monotonic() - last_checkpoint_time >= config.checkpoint_seconds)
                stop_now = interrupt.requested and dist.world == 1
                if not (log_now or eval_now or sample_now or checkpoint_now or stop_now):
                    continue

                stop = self._check(nonfinite, interrupt.requested)  # checkpoints only after it
                if log_now or stop:
                    seconds = time.monotonic() - window_start
                    self._log_train(sums, window_steps, seconds)
                    sums, window_steps = {}, 0
                if eval_now:
                    self._evaluate()
                if sample_now:
                    self._sample(f"samples/step_{state.step:07d}.png")
                stop = stop or (interrupt.requested and dist.world == 1)  # Ctrl-C during those
                if stop and not checkpoint_now and self._replacing() and dist.world == 1:
                    raise KeyboardInterrupt  # nothing of the new run saved yet: run() puts the old one back
                if checkpoint_now or stop:
                    self._checkpoint()
                    last_checkpoint_time = time.monotonic()
                if stop:
                    status = "interrupted"
                    self.log.info("step %d: interrupted; saved last.pt", state.step)
                    break
                window_start = time.monotonic()

            if status == "finished":
                if state.last_checkpoint_step != state.step:
                    self._checkpoint()
                interrupt.steps_done()
                summary = self._finish()
            else:
                summary = self._summary(final=None)
        if self.average is not None:  # hand back the model that was saved: the averaged one
            self.average.swap()
        return TrainResult(summary=summary, task=task, status=status, out=self.out)

    def _train_step(self, images: torch.Tensor, labels: torch.Tensor):
        """One optimizer step on a batch; the state moves on. Returns (loss metrics, loss)."""
        config, state = self.config, self.state
        if config.lr_schedule != "constant" or config.warmup_steps:
            lr = learning_rate(config, state.step, self.total)
            for group in self.optimizer.param_groups:
                group["lr"] = lr
        with self.autocast:
            out = self.objective(images, labels)
        loss = out["loss"] if "loss" in out else out[self.task.metric]
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if config.grad_clip:
            torch.nn.utils.clip_grad_norm_(self.params, config.grad_clip)
        self.optimizer.step()
        state.step += 1
        if self.average is not None:
            self.average.update(state.step)
        state.position += 1
        if state.position == self.feeder.per_epoch:
            state.epoch, state.position = state.epoch + 1, 0
        state.images_seen += self.feeder.global_batch
        return out, loss

    def _check(self, nonfinite: torch.Tensor, interrupted: bool) -> bool:
        """The one host sync: NonFiniteLoss when the losses or weights went non-finite; whether any
        rank got Ctrl-C (then the run stops after a checkpoint)."""
        device = self.dist.device
        weights_ok = torch.stack([torch.isfinite(p).all() for p in self.params]).all()
        flags = torch.stack([nonfinite.float(), (~weights_ok).float(),
                             torch.tensor(float(interrupted), device=device)])
        if self.dist.world > 1:
            tdist.all_reduce(flags, op=tdist.ReduceOp.MAX)
        bad_loss, bad_weights, stop = (bool(v) for v in flags.tolist())
        if bad_loss or bad_weights:
            message = self._nonfinite_message("the loss is not finite" if bad_loss
                                              else "the weights are not finite")
            self.log.info(message)
            raise NonFiniteLoss(message)
        return stop

    def _log_train(self, sums: dict[str, torch.Tensor], steps: int, seconds: float):
        """A train row: the mean loss metrics of the last `steps` steps (over ranks), speed, lr."""
        dist, state = self.dist, self.state
        state.train_seconds += seconds
        values = torch.stack(list(sums.values())) / steps
        if dist.world > 1:
            tdist.all_reduce(values)
            values /= dist.world
        row = {"step": state.step, "epoch": state.epoch, "split": "train", **dict(zip(sums, values.tolist())),
               "images_per_s": steps * self.feeder.global_batch / max(seconds, 1e-9),
               "lr": self.optimizer.param_groups[0]["lr"]}
        self._write_row(row)
        if dist.main:
            self.callback("train", {**row, "total": self.total})

    def _finish(self) -> dict:
        """The end of a run: final eval (unless the last step had one), samples, summary, curve."""
        if not self.dist.main:
            return {}
        rows = read_metrics(self.out / "metrics.jsonl")
        tests = [r for r in rows if r.get("split") == "test"]
        final = tests[-1] if tests and tests[-1]["step"] == self.state.step else self._evaluate()
        if self.last_grid is not None and self.last_grid[0] == self.state.step:  # drawn at this step already
            with atomic_path(self.out / "samples.png", suffix=".png") as tmp:
                shutil.copyfile(self.last_grid[1], tmp)
        else:
            self._sample("samples.png")
        summary = self._summary(final)
        semantics = self._judge()
        if semantics is not None:
            summary["semantics"] = semantics
        summary["warnings"] = diverged_warnings(summary, self.task.configs())
        for line in summary["warnings"]:
            self.log.info("warning: %s", line)
        write_json(summary, self.out / "summary.json")
        plot_curve(read_metrics(self.out / "metrics.jsonl"), self.task.metric, self.out / "curve.png")
        self.log.info("finished: %s", json.dumps(summary, default=str))
        self.callback("end", summary)
        return summary

    def _judge(self) -> dict | None:
        """The sample judge's figures for the final model (eval.judge), or None."""
        config = self.config
        own = getattr(self.task, "judge_run", None)  # a task that judges its samples itself
        if not config.judge_images or not (self.task.judgeable or own):
            return None

        source = dict(source=config.data, channels=config.image_channels,
                      image_size=config.image_size, data_root=config.data_root)
        self.callback("judge", {"images": config.judge_images})
        generator = torch.Generator(self.dist.device).manual_seed(config.seed)
        self.task.model.eval()
        try:
            with self._averaged():
                if own is not None:
                    semantics = own(self.test_ds, config.judge_images, generator, config.temperature)
                else:
                    semantics = judge_run(self.task, source, self.test_ds, config.judge_images,
                                          generator, config.temperature)
        finally:
            self.task.model.train()
        if semantics is not None:
            self.log.info("sample judge: %s", json.dumps(semantics, default=str))
        return semantics

    def _summary(self, final) -> dict:
        metric = self.task.metric
        return {
            "kind": self.task.kind,
            "out": str(self.out),
            "steps": self.state.step,
            "epochs": self.state.step / self.feeder.per_epoch,
            "config": dataclasses.asdict(self.config),
            "model": self.task.configs(),
            "data": self.data_info,
            "metric": metric,
            f"final_test_{metric}": None if not final else final.get(metric),
            f"best_test_{metric}": None if not self.state.best else self.state.best["value"],
            "best_step": None if not self.state.best else self.state.best["step"],
            "test_images": None if not final else final.get("images"),
            "wall_seconds": self.state.elapsed + self._since_start(),
            "train_seconds": self.state.train_seconds,
            "images_per_s": self.state.images_seen / max(self.state.train_seconds, 1e-9),
            "world_size": self.dist.world,
            "device": str(self.dist.device),
            "precision": self.precision,
            "parameters": sum(p.numel() for p in self.task.model.parameters()),
        }
