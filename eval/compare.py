"""compare-decoders: what does the bottleneck keep under a PixelCNN decoder and under a deconv one?

The claim tested [1, section 3.4]: a PixelCNN decoder models low-level pixel statistics itself, so
the bottleneck h of a PixelCNN auto-encoder is free to keep high-level content, whereas the h of an
MSE-trained deconvolutional auto-encoder must keep low-level detail.

For each bottleneck m, with the same conv encoder architecture, data, seed and step budget (the
training loop of pcae.train, one run folder per model under OUT/runs/):
    pixelcnn-ae   conv encoder -> h -> conditional Gated PixelCNN, trained end to end on the NLL,
                  with pcae train-ae's defaults: h in every layer globally and through the
                  location-dependent map m(h).
    pixelcnn-ae (global h)
                  the same with global conditioning only (`global_pixelcnn`, off by default).
    deconv-ae     conv encoder -> h -> DeconvDecoder, trained end to end with MSE, as in [1].
    deconv head   a DeconvDecoder with the factorised 256-way output, trained (same budget) on the
                  deconv-ae's *frozen* h. Decision: the deconv-ae is trained with MSE as the paper
                  does, and its likelihood is that of the same h under the factorised categorical
                  head, so its bits/dim sits on the PixelCNN's scale without changing what h was
                  trained to keep. Its discretised-Gaussian estimate (sigma^2 = train-split MSE) is
                  reported too.
plus once, as reference, an unconditional Gated PixelCNN of the same size.

On held-out images (a fixed random subset of the test split, seeded) it measures, per model:
bits/dim and bits/image; conditioning gains (eval.metrics.conditioning_gain: shuffled h and h = 0);
linear-probe and k-NN accuracy of h on the labels (train subset -> test subset); MSE/PSNR of the
deconv reconstructions and of PixelCNN samples given h; per-dimension variance of h, active and
effective dimensions; and what a user sees (eval.judge): the fraction of PixelCNN samples given h
(2 per source) and of deconv reconstructions that a classifier trained on the labels puts in their
source's class, beside its accuracy on real test images, their ink and the samples' diversity. eval.report writes report.json, report.md, figure_m{m}.png (original | deconv
reconstruction | PixelCNN samples given the same h) and summary.png.

References:
    [1] van den Oord et al., "Conditional Image Generation with PixelCNN Decoders", 2016,
        arXiv:1606.05328.

Known limits: CPU budgets are far below the paper's; the numbers say which way the effect goes at
this budget, not what a converged model reaches. Sample PSNR uses few images (sampling is sequential).
"""
from __future__ import annotations

import dataclasses
import math
import time
from pathlib import Path
from typing import Callable

import torch

from eval import metrics as M
from eval import report as R
from eval.compare_config import QUICK, CompareConfig
from eval.judge import JudgeConfig, judge_autoencoder, load_judge
from pcae.batches import resolve_device
from pcae.data import load_dataset
from pcae.deconv import gaussian_bits_per_dim
from pcae.errors import Interrupted, PcaeError
from pcae.kinds import load_model
from pcae.outputs import (
    output_folder,
    refuse_not_ours,
)
from pcae.pixelcnn import nll_bits
from pcae.tasks.autoencoder import AutoencoderSpec
from pcae.tasks.pixelcnn import PixelCNNSpec
from pcae.train import TrainConfig, train

REPORT_FILES = ("report.json", "report.md", "summary.png")


Progress = Callable[[str], None]


# ---------------------------------------------------------------------------------------------
# Training (pcae.train's loop) and loading


def _train_run(config: CompareConfig, spec, name: str, progress: Progress) -> Path:
    """Train one model with pcae.train.train into OUT/runs/NAME; return its last.pt."""

    out = Path(config.out) / "runs" / name
    train_config = TrainConfig(
        data=config.data, data_root=config.data_root, out=str(out), steps=config.steps,
        batch_size=config.batch_size, lr=config.lr, seed=config.seed, device=config.device,
        num_workers=0, log_every=max(1, min(100, config.steps)), eval_every=0,
        eval_images=min(config.eval_images or 1000, 1000), sample_every=0, n_samples=0,
        judge_images=0, checkpoint_every=0)
    progress(f"training {name}: {config.steps} steps of {config.batch_size} images")
    start = time.perf_counter()
    result = train(train_config, spec, force=out.exists())
    if result.status != "finished":
        raise Interrupted(f"training {name} was interrupted; its checkpoint is {out / 'last.pt'}")
    metric = result.summary["metric"]
    progress(f"trained {name} in {time.perf_counter() - start:.0f} s: test {metric} "
             f"{result.summary[f'final_test_{metric}']:.4f}")
    return out / "last.pt"


def _load_reference(path, test_x: torch.Tensor):
    """The unconditional PixelCNN at `path` (on the CPU, in eval mode), checked against the data."""

    ref, _ = load_model(path, kind="pixelcnn")
    if ref.config.cond_dim:
        raise PcaeError(f"{path}: is a conditional PixelCNN; the reference must be unconditional")
    try:
        ref.check_inputs(test_x[:1], None)
    except ValueError as e:
        raise PcaeError(f"{path}: does not fit the data ({e})") from None
    return ref.eval()


def _load_autoencoder(path, decoder: str, device: torch.device):
    model, checkpoint = load_model(path, kind="autoencoder")
    if model.kind != decoder:
        raise PcaeError(f"{path}: holds a {model.kind} auto-encoder, expected a {decoder} one")
    if model.encoder.input != "images":
        raise PcaeError(f"{path}: its {model.encoder.config['name']} encoder reads labels; "
                        "compare-decoders needs an image encoder")
    return model.to(device).eval(), checkpoint


def plan_models(config: CompareConfig, pixelcnn=(), deconv=()) -> list[tuple[int | None, str | None, str | None]]:
    """(bottleneck, pixelcnn checkpoint or None, deconv checkpoint or None) per model pair.

    Given checkpoints come in pairs, one pair per bottleneck, in the order of `config.bottlenecks`;
    with no bottlenecks in the config, the bottleneck is read from each pair (None here).
    """
    pixelcnn, deconv = list(pixelcnn or ()), list(deconv or ())
    if not pixelcnn and not deconv:
        if not config.bottlenecks:
            raise ValueError("bottlenecks must hold one or more sizes when no checkpoints are given")
        return [(m, None, None) for m in config.bottlenecks]
    if len(pixelcnn) != len(deconv):
        raise PcaeError(f"give --pixelcnn and --deconv in pairs, one pair per bottleneck; got "
                        f"{len(pixelcnn)} --pixelcnn and {len(deconv)} --deconv")
    if not config.bottlenecks:
        return [(None, str(p), str(d)) for p, d in zip(pixelcnn, deconv)]
    if len(pixelcnn) != len(config.bottlenecks):
        raise PcaeError(f"{len(pixelcnn)} checkpoint pairs for {len(config.bottlenecks)} bottlenecks "
                        f"({', '.join(map(str, config.bottlenecks))}); give one pair per --bottleneck")
    return list(zip(config.bottlenecks, map(str, pixelcnn), map(str, deconv)))


def report_paths(out: Path) -> list[Path]:
    """The report files of OUT that exist (links included): what --force replaces."""
    paths = [out / name for name in REPORT_FILES] + sorted(out.glob("figure_m*.png"))
    return [p for p in paths if p.exists() or p.is_symlink()]


def check_out(out: Path, force: bool) -> None:
    """Refuse an existing, non-empty OUT unless `force` (with it, pcae.outputs refuses what pcae did
    not write, in the report files and in OUT/runs)."""
    if out.exists() and any(p for p in out.iterdir() if not p.name.startswith(".")) and not force:
        if not report_paths(out) and (out / "runs").is_dir():
            raise PcaeError(f"{out}: holds the runs of an unfinished comparison (no report yet); pass "
                            "--force to redo it")
        raise PcaeError(f"{out}: already exists; pass --force to replace its report")


# ---------------------------------------------------------------------------------------------
# Evaluation


def _subset(dataset, n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """n images (all when 0) of a split, in a fixed random order: (images uint8, labels long)."""
    order = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(seed))
    if n:
        order = order[:n]
    if getattr(dataset, "images", None) is not None:
        labels = dataset.labels if dataset.labels is not None else torch.full((len(dataset),), -1)
        return dataset.images[order], labels[order].long()
    items = [dataset[int(i)] for i in order]
    return torch.stack([x for x, _ in items]), torch.tensor([y for _, y in items], dtype=torch.long)


def _batches(x: torch.Tensor, size: int, device: torch.device):
    for lo in range(0, len(x), size):
        yield x[lo:lo + size].to(device)


@torch.no_grad()
def _codes(encoder, images: torch.Tensor, size: int, device) -> torch.Tensor:
    """h (N, D) on the CPU for a stack of images."""
    return torch.cat([encoder(x).float().cpu() for x in _batches(images, size, device)])


def _check_images(model, images: torch.Tensor, path) -> None:
    try:
        model.check_images(images[:1])
        model.encoder(images[:1].to(next(model.parameters()).device))
    except ValueError as e:
        raise PcaeError(f"{path}: does not fit the data ({e})") from None


@torch.no_grad()
def _code_metrics(config, h_train, y_train, h_test, y_test) -> dict:
    labelled = (y_train >= 0).all() and (y_test >= 0).all()
    var = M.h_variance(h_test)
    out = {"active_dims": M.active_dims(var, config.active_threshold),
           "participation_ratio": M.participation_ratio(h_test),
           "h_variance": var.tolist(), "probe_accuracy": None, "knn_accuracy": None}
    if labelled:
        out["probe_accuracy"] = M.linear_probe(h_train, y_train, h_test, y_test)["accuracy"]
        out["knn_accuracy"] = M.knn_accuracy(h_train, y_train, h_test, y_test, config.knn_k)["accuracy"]
    return out


def _gains(nll, images, h, config, device) -> dict:
    generator = torch.Generator().manual_seed(config.seed)
    pairs = ((x, hb.to(device)) for x, hb in zip(_batches(images, config.eval_batch, device),
                                                   h.split(config.eval_batch)))
    g = M.conditioning_gain(nll, pairs, generator)
    dims = images[0].numel()
    return {"bits_per_image": g["bits_per_image"], "bits_per_dim": g["bits_per_image"] / dims,
            "shuffled_gain": g["shuffled_gain"], "zero_gain": g["zero_gain"]}


@torch.no_grad()
def evaluate_unconditional(model, test_x, config, device) -> dict:
    bits = M.bits_over_batches(lambda x: nll_bits(model(x), x),
                               _batches(test_x, config.eval_batch, device))
    return {"bits_per_image": bits["bits_per_image"], "bits_per_dim": bits["bits_per_dim"]}


def _judge(config: CompareConfig):
    """The data's sample judge (eval.judge), or None without labels or with judge_images 0."""

    if not config.judge_images:
        return None
    # quick mode: a judge trained in a second or two (its ceiling is printed beside its figures)
    judge_config = JudgeConfig(epochs=1, max_train_images=2000) if config.quick else JudgeConfig()
    try:
        return load_judge(config.data, data_root=config.data_root, config=judge_config)
    except PcaeError:
        return None


_SEMANTICS = ("class_agreement", "judge_accuracy", "ink", "source_ink", "ink_ratio",
              "diversity_rms", "diversity_features")


def _semantics(model, judge, data, config, device, generator) -> dict:
    """eval.judge figures on the first judge_images test images (None each without a judge)."""

    _, _, test_x, test_y, _ = data
    if judge is None or (test_y < 0).any():
        return dict.fromkeys(_SEMANTICS)
    n = min(config.judge_images, len(test_x))
    figures = judge_autoencoder(model, judge, test_x[:n].to(device), test_y[:n].to(device),
                                generator=generator)
    return {k: figures[k] for k in _SEMANTICS}


@torch.no_grad()
def evaluate_pixelcnn_ae(model, data, config, device, generator) -> tuple[dict, torch.Tensor]:
    """Metrics of a PixelCNN auto-encoder, and its samples (F, n, C, H, W) for the figure."""

    train_x, train_y, test_x, test_y, fig_x = data
    h_train = _codes(model.encoder, train_x, config.eval_batch, device)
    h_test = _codes(model.encoder, test_x, config.eval_batch, device)
    row = _gains(lambda x, h: nll_bits(model.decoder(x, h), x), test_x, h_test, config, device)
    row.update(_code_metrics(config, h_train, train_y, h_test, test_y))
    samples = model.sample(fig_x.to(device), config.samples_per_image, generator=generator).cpu()
    sample_mse = M.mse(fig_x[:, None].expand_as(samples).flatten(0, 1), samples.flatten(0, 1))
    row.update(sample_mse=sample_mse.mean().item(), sample_psnr=M.psnr(sample_mse.mean().item()),
               reconstruction_mse=None, reconstruction_psnr=None, gaussian_bits_per_dim=None)
    return row, samples


@torch.no_grad()
def evaluate_deconv_ae(model, head, data, config, device) -> tuple[dict, torch.Tensor]:
    """Metrics of a deconv auto-encoder (likelihoods from `head`: a categorical deconv decoder on
    the same h, or None when the model is itself categorical), and its reconstructions of fig_x."""

    train_x, train_y, test_x, test_y, fig_x = data
    h_train = _codes(model.encoder, train_x, config.eval_batch, device)
    h_test = _codes(model.encoder, test_x, config.eval_batch, device)
    categorical = head.decoder if head is not None else model.decoder
    row = _gains(lambda x, h: nll_bits(categorical(h), x), test_x, h_test, config, device)
    row.update(_code_metrics(config, h_train, train_y, h_test, test_y))

    def recon(h):
        return torch.cat([model.decoder.to_levels(model.decoder(hb.to(device))).cpu()
                          for hb in h.split(config.eval_batch)])

    test_mse = M.mse(test_x, recon(h_test)).mean().item()
    row.update(reconstruction_mse=test_mse, reconstruction_psnr=M.psnr(test_mse),
               sample_mse=None, sample_psnr=None, gaussian_bits_per_dim=None)
    if model.decoder.config.output == "mse":
        # sigma^2 = the train subset's MSE (the maximum-likelihood scale of a Gaussian), no test data
        sigma = math.sqrt(M.mse(train_x, recon(h_train)).mean().item())
        total = 0.0
        for x, hb in zip(_batches(test_x, config.eval_batch, device), h_test.split(config.eval_batch)):
            mean = model.decoder(hb.to(device))
            total += gaussian_bits_per_dim(mean, x, sigma, model.decoder.config.levels).item() * len(x)
        row["gaussian_bits_per_dim"] = total / len(test_x)
    return row, recon(_codes(model.encoder, fig_x, config.eval_batch, device))


# ---------------------------------------------------------------------------------------------
# The experiment


def compare_decoders(config: CompareConfig, *, pixelcnn=(), deconv=(), unconditional=None,
                     force: bool = False, progress: Progress | None = None) -> dict:
    """Train (or load) the models, measure them, write the report into `config.out`.

    Args:
        config: what to compare and the budget.
        pixelcnn, deconv: optional auto-encoder checkpoints, one pair per bottleneck (in order);
            their encoders' dims must equal the bottlenecks. A deconv checkpoint trained with MSE
            gets a categorical head trained on its frozen h; a categorical one is its own.
        unconditional: optional unconditional PixelCNN checkpoint (the reference); else trained.
        force: replace the report (and runs) in an existing `config.out`.
        progress: told one line at a time what is happening.
    Returns:
        the report dict (also written to OUT/report.json): {"config", "data", "rows", "figures", ...}.
    """


    out = Path(config.out)
    given = [Path(p).resolve() for p in (*pixelcnn, *deconv, *([unconditional] if unconditional else []))]

    def paths_of(folder: Path) -> list[Path]:  # the report files and runs/ (unless it holds a given model)
        runs = folder / "runs"
        inside = runs.is_dir() and any(runs.resolve() in p.parents for p in given)
        return report_paths(folder) + ([runs] if (runs.exists() or runs.is_symlink()) and not inside else [])

    try:
        with output_folder(out, "report folder", paths_of,
                           committed=lambda folder: (folder / "report.json").exists()) as folder:
            check_out(out, force)
            if force:
                refuse_not_ours(paths_of(out))  # before anything is read or trained
            return _compare_decoders(config, out, pixelcnn, deconv, unconditional, force,
                                     progress or (lambda message: None), folder)
    except (KeyboardInterrupt, Interrupted):
        if "folder" in locals() and folder.replaced:  # put back by output_folder; its runs went too
            raise Interrupted(f"interrupted: {out} holds the comparison --force was replacing, "
                              "as it was") from None
        raise


def _compare_decoders(config, out, pixelcnn, deconv, unconditional, force, progress, folder) -> dict:
    plan = plan_models(config, pixelcnn, deconv)
    device = resolve_device(config.device)
    started = time.perf_counter()

    kwargs = dict(data_root=config.data_root)
    train_ds = load_dataset(config.data, "train", **kwargs)
    test_ds = load_dataset(config.data, "test", **kwargs)
    train_x, train_y = _subset(train_ds, config.probe_images, config.seed)
    test_x, test_y = _subset(test_ds, config.eval_images, config.seed + 1)
    if len(test_x) < 2:
        raise PcaeError(f"data {config.data!r}: the test split has {len(test_x)} images; need >= 2")
    fig_x = test_x[:config.figure_images]
    data = (train_x, train_y, test_x, test_y, fig_x)
    progress(f"data {config.data} ({test_ds.info['origin']}): {len(train_x)} train images for the "
             f"probes, {len(test_x)} test images")
    if unconditional is not None:
        _load_reference(unconditional, test_x)
    for m, p_path, d_path in plan:  # a wrong checkpoint fails now, not after an hour of training
        if p_path is not None:
            for path, kind in ((p_path, "pixelcnn"), (d_path, "deconv")):
                model, _ = _load_autoencoder(path, kind, torch.device("cpu"))
                if m is not None and model.encoder.dim != m:
                    raise PcaeError(f"{path}: its encoder has dim {model.encoder.dim}, expected bottleneck {m}")
                _check_images(model, test_x, path)
    # After every check above has passed, the previous comparison (its report files and runs/) is
    # set aside whole: put back if this one fails, is stopped or is killed before its report is
    # written, removed after. Where a given checkpoint lies in OUT/runs, the runs stay in place
    # (each is replaced when its model is trained again) and only the report waits aside.
    if force:
        folder.replace()

    size = dict(channels=config.channels, n_layers=config.n_layers)
    if unconditional is None:
        unconditional = _train_run(config, PixelCNNSpec(**size), "pixelcnn-unconditional", progress)
    ref = _load_reference(unconditional, test_x).to(device)
    progress("evaluating pixelcnn-unconditional")
    reference = {"bottleneck": None, "model": "pixelcnn (unconditional)", "checkpoint": str(unconditional),
                 **evaluate_unconditional(ref, test_x, config, device)}
    judge = _judge(config)
    if judge is not None:
        progress(f"sample judge: {judge.accuracy:.1%} on the real test images ({judge.info.get('cached')})")
    rows, figures = [], {}
    for m, p_path, d_path in plan:
        if p_path is None:
            p_path = _train_run(config, AutoencoderSpec(bottleneck=m, decoder="pixelcnn",
                                                        encoder_channels=config.encoder_channels, **size),
                                f"pixelcnn-ae-m{m}", progress)
        if d_path is None:
            d_path = _train_run(config, AutoencoderSpec(bottleneck=m, decoder="deconv", deconv_output="mse",
                                                        encoder_channels=config.encoder_channels,
                                                        deconv_channels=config.deconv_channels),
                                f"deconv-ae-m{m}", progress)
        pae, _ = _load_autoencoder(p_path, "pixelcnn", device)
        dae, _ = _load_autoencoder(d_path, "deconv", device)
        m = pae.encoder.dim if m is None else m
        for model, path in ((pae, p_path), (dae, d_path)):
            if model.encoder.dim != m:
                raise PcaeError(f"{path}: its encoder has dim {model.encoder.dim}, expected bottleneck {m}")
            _check_images(model, test_x, path)
        head = None
        if dae.decoder.config.output == "mse":
            head_path = _train_run(config, AutoencoderSpec(
                decoder="deconv", deconv_output="categorical", freeze_encoder=True,
                encoder_checkpoint=str(d_path), deconv_channels=dae.decoder.config.channels),
                f"deconv-head-m{m}", progress)
            head, _ = _load_autoencoder(head_path, "deconv", device)

        progress(f"evaluating pixelcnn-ae m={m} (NLL, gains, probes, {config.figure_images} x "
                 f"{config.samples_per_image} samples, judge on {config.judge_images} x 2)")
        generator = torch.Generator(device).manual_seed(config.seed)
        p_row, samples = evaluate_pixelcnn_ae(pae, data, config, device, generator)
        p_row.update(_semantics(pae, judge, data, config, device, generator))
        progress(f"evaluating deconv-ae m={m}")
        d_row, recon = evaluate_deconv_ae(dae, head, data, config, device)
        d_row.update(_semantics(dae, judge, data, config, device, generator))
        done = [(p_row, "pixelcnn-ae", p_path), (d_row, "deconv-ae", d_path)]
        figures[f"m{m}"] = str(R.write_figure(fig_x, recon, samples, out / f"figure_m{m}.png"))
        if config.global_pixelcnn:
            g_path = _train_run(config, AutoencoderSpec(bottleneck=m, decoder="pixelcnn",
                                                        spatial_cond=False,
                                                        encoder_channels=config.encoder_channels, **size),
                                f"pixelcnn-ae-global-m{m}", progress)
            gae, _ = _load_autoencoder(g_path, "pixelcnn", device)
            progress(f"evaluating pixelcnn-ae (global h) m={m}")
            generator = torch.Generator(device).manual_seed(config.seed)
            g_row, g_samples = evaluate_pixelcnn_ae(gae, data, config, device, generator)
            g_row.update(_semantics(gae, judge, data, config, device, generator))
            done.insert(1, (g_row, "pixelcnn-ae (global h)", g_path))
            figures[f"m{m}-global"] = str(R.write_figure(fig_x, recon, g_samples,
                                                         out / f"figure_m{m}_global.png"))
        for row, name, path in done:
            row.update(bottleneck=m, model=name, checkpoint=str(path),
                       bits_saved_vs_unconditional=reference["bits_per_image"] - row["bits_per_image"])
            rows.append(row)

    for row in rows:  # a fixed key order, so report.json reads the same for every row
        for key in ("gaussian_bits_per_dim", "sample_mse", "sample_psnr", "reconstruction_mse",
                    "reconstruction_psnr", *_SEMANTICS):
            row.setdefault(key, None)
    rows.append(reference)
    report = {
        "config": dataclasses.asdict(config),
        "data": {"source": config.data, "origin": test_ds.info["origin"],
                 "shape": list(test_ds.shape), "classes": test_ds.classes},
        "eval_images": len(test_x), "probe_images": len(train_x),
        "judge": None if judge is None else {"accuracy": judge.accuracy, **judge.info},
        "rows": rows,
        "figures": figures,
        "plot": str(out / "summary.png"),
        "wall_seconds": None,
    }
    R.write_plot(rows, out / "summary.png")
    report["wall_seconds"] = time.perf_counter() - started
    R.write_json(report, out / "report.json")
    R.write_markdown(report, out / "report.md")
    progress(f"wrote {out}/: report.json, report.md, summary.png, "
             + ", ".join(Path(f).name for f in figures.values()))
    return report
