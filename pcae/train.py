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

import dataclasses
import json
import logging
import math
import random
import shutil
import time
from contextlib import ExitStack, nullcontext
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.distributed as tdist
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torchvision.utils import make_grid

from eval.judge import judge_run
from pcae.batches import Distributed, Feeder, eval_batches, first_examples
from pcae.checkpoint import load_checkpoint, rng_states, save_checkpoint
from pcae.config import TrainConfig
from pcae.data import load_dataset
from pcae.errors import Interrupted, PcaeError
from pcae.files import atomic_path
from pcae.images import plot_curve, save_captioned
from pcae.precision import choose, step_seconds
from pcae.resume import (
    _check_resumable,
    _same_setting,
    check_resumed_spec,
    options_set,
    restore_run,
    resumed_config,
)
from pcae.runfolder import (
    board_writer,
    brief,
    check_run_folder,
    diverged_warnings,
    log_file,
    open_board,
    open_run_folder,
    read_metrics,
    skipped_items,
    write_json,
)
from pcae.steps import Interrupt, NonFiniteLoss, Objective, WeightAverage, learning_rate
from pcae.task import Callback, TaskSpec, TrainResult

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
    """One training run, read top to bottom: `run`, the `_setup` stages (config, data, task,
    optimizer, folder, resume, objective), `_loop` (one `_train_step` per batch; evaluation, grids
    and checkpoints when due), then `_finish`. What it tracks between steps is in `state`."""

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
        self.board = None  # a TensorBoard SummaryWriter into OUT/tensorboard, with --tensorboard

    def run(self) -> TrainResult:
        self.started = time.monotonic()
        try:
            self._setup()
            return self._loop()
        except BaseException as e:
            self._close_log()
            replacing = self._replacing()
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
        if self.board is not None:
            self.board.close()
            self.board = None
        for handler in list(self.log.handlers):
            handler.close()
            self.log.removeHandler(handler)

    # -- setup, stage by stage: nothing is written before _open_folder -------------------------

    def _setup(self):
        check_run_folder(self.out, self.resume, self.force, self.config.data)  # every rank, before any write
        self.dist.barrier()
        checkpoint = self._load_config()
        _ = self.config.tensorboard and board_writer()  # a missing package: said before any face step
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
        self.feeder = Feeder(self.train_ds, config.batch_size, config.seed, self.dist.rank, self.dist.world,
                             device, config.num_workers, config.channels_last, self.task.repeats(self.train_ds))
        self.total = config.steps or config.epochs * self.feeder.per_epoch

    def _open_folder(self, resumed: bool):
        """The run folder and train.log. Nothing is written before this, so a run that cannot
        start leaves no folder behind."""

        dist, config, task = self.dist, self.config, self.task
        if dist.main:
            # held to the end: a second run here stops at once; a run --force replaces waits aside till last.pt
            self.folder = self.holds.enter_context(open_run_folder(self.out, self.resume, self.force))
            if config.tensorboard:
                self.board = open_board(self.out)
            self.log.addHandler(log_file(self.out))
        else:
            self.log.addHandler(logging.NullHandler())
        dist.barrier()
        self.log.info("%s run in %s (rank 0 of %d, device %s)",
                      "resumed" if resumed else "new", self.out, dist.world, dist.device)
        self.log.info("config %s", json.dumps(dataclasses.asdict(config)))
        for split, info in self.data_info.items():
            self.log.info("data %s: %s", split, json.dumps(brief(info), default=str))
        self.log.info("model %s: %s", task.kind, json.dumps(brief(task.configs()), default=str))
        for where, skipped in skipped_items({"data": self.data_info, "model": task.configs()}):
            self.log.info("%s: skipped %s", where, skipped)  # every file left out, one a line

    def _restore(self, checkpoint: dict):
        """Optimizer, position in the data, progress figures, raw weights and RNG states of last.pt."""
        restore_run(self, checkpoint)

    def _make_objective(self):
        """The loss module (DDP and torch.compile around it when asked), the precision, the examples."""
        config, dist = self.config, self.dist
        device = dist.device
        objective: nn.Module = Objective(self.task)
        if dist.world > 1:
            objective = DistributedDataParallel(objective, device_ids=[device.index] if device.type == "cuda" else None,
                            broadcast_buffers=False)
        if config.compile:
            objective = torch.compile(objective)
        self.objective = objective

        # DDP ranks decide without measuring, so that they cannot disagree
        measure = (lambda p: step_seconds(self.task, self.train_ds, self.config.batch_size, dist.device, p)
                   if dist.world == 1 else None)
        self.precision = choose(config.precision, device, measure, self._model_key())
        self.log.info("precision %s", json.dumps(self.precision))
        self.autocast = torch.autocast(device.type, dtype=torch.bfloat16,
                                       enabled=self.precision["used"] == "bf16")
        self.examples = first_examples(self.test_ds, config.n_samples, device)

    def _model_key(self) -> str:
        return json.dumps([self.task.kind, self.task.configs(), self.config.batch_size,
                           self.config.compile, self.config.channels_last], sort_keys=True, default=str)

    # -- the loop and one training step ---------------------------------------------------------

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
        with Interrupt() as interrupt:
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

    # -- pieces: metrics rows, checkpoints, evaluation, grids ------------------------------------

    def _write_row(self, row: dict):
        if self.dist.main:
            with open(self.out / "metrics.jsonl", "a") as f:
                f.write(json.dumps(row) + "\n")
            if self.board is not None:  # the same scalars, as "split/name"
                for key, value in row.items():
                    if key not in ("step", "epoch", "split") and isinstance(value, (int, float)):
                        self.board.add_scalar(f"{row['split']}/{key}", value, row["step"])

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
            "kind": self.task.kind, "configs": {**self.task.configs(), "train": dataclasses.asdict(self.config)},
            "state_dicts": self.task.state_dicts(), "optimizer": self.optimizer.state_dict(),
            "step": self.state.step, "epoch": self.state.epoch, "position": self.state.position,
            "global_batch": self.feeder.global_batch, "rng": rng_states(), "data": self.data_info,
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
        n, generator = self.config.n_samples, torch.Generator(self.dist.device).manual_seed(self.config.seed)
        with self._averaged():
            images, nrow = self.task.sample_grid(self.examples, n, generator, self.config.temperature)
        path = save_captioned(images, nrow, self.out / name, self.task.grid_caption(self.examples, n))
        if self.board is not None:
            grid = make_grid(images.float().cpu() / 255.0, nrow=nrow, padding=2, pad_value=0.5)
            self.board.add_image("samples", grid, self.state.step)
        self.last_grid = (self.state.step, path)
        self.log.info("step %d: wrote %s", self.state.step, path)
        self.callback("sample", {"step": self.state.step, "path": str(path)})
        return path

    # -- the end of a run -----------------------------------------------------------------------

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
