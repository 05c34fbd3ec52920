"""Time the naive and the cached sampler on the reference Gated PixelCNN, in one run.

Reference configuration (issue 5): 3x32x32 images, 256 levels, a 7x7 first layer, 10 gated 3x3
layers, 120 channels; batches of 4 and 16; on the CPU and, when present, on CUDA. The model is
randomly initialised: the work per step does not depend on the weights.

The naive sampler reruns the full network for each of the 3*32*32 sub-pixels and takes many minutes
on a CPU, so by default it is timed on its first `--naive-rows` rows only (fractions allowed) and
extrapolated linearly: every naive step costs the same (one full forward pass), whatever the row.
The cached sampler always draws whole images. On CUDA the cached sampler is timed twice: eager, and
with each per-channel step replayed as a CUDA graph (the default there).

    python benchmarks/sampling.py                              # cpu (+ cuda if present)
    python benchmarks/sampling.py --device cpu --naive-rows 0.25 --threads 1
"""
from __future__ import annotations

import argparse
import time

import torch

from pcae.machine import cpu_description
from pcae.pixelcnn import GatedPixelCNN, PixelCNNConfig
from pcae.sampling import cached_logits, sample_cached, sample_naive

REFERENCE = PixelCNNConfig(image_channels=3, levels=256, first_kernel_size=7, n_layers=10,
                           kernel_size=3, channels=120, image_size=(32, 32))


class _Stop(Exception):
    """Raised from a forward hook to end a naive run after a given number of steps."""


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@torch.no_grad()
def check_exact(device) -> str:
    """Cached (eager, and CUDA graphs on CUDA) vs naive on a small float64 model with spatial h."""
    torch.manual_seed(0)
    cfg = PixelCNNConfig(image_channels=3, levels=32, n_layers=3, channels=12, kernel_size=5,
                         first_kernel_size=5, cond_dim=4, spatial_cond=True, image_size=(5, 6))
    model = GatedPixelCNN(cfg).double().to(device).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.5)
    h = torch.randn(3, 4, dtype=torch.double, device=device)
    x = torch.randint(0, cfg.levels, (3, 3, 5, 6), device=device)
    graph_options = [False] + ([True] if device.type == "cuda" else [])
    diff = max(float((cached_logits(model, x, h, cuda_graphs=g) - model(x, h)).abs().max())
               for g in graph_options)
    images = []
    for sampler, graphs in [(sample_naive, None)] + [(sample_cached, g) for g in graph_options]:
        kwargs = {} if graphs is None else {"cuda_graphs": graphs}
        gen = torch.Generator(device=device).manual_seed(1)
        images.append(sampler(model, 3, (3, 5, 6), h, 1.0, gen, **kwargs))
    same = all(torch.equal(images[0], other) for other in images[1:])
    if not same or diff > 1e-9:
        raise SystemExit(f"cached sampler is NOT exact on {device}: images equal {same}, "
                         f"max logit difference {diff:.1e}")
    return f"exact on {device}: same images as naive, max logit difference {diff:.1e} (float64)"


def time_naive(model, n: int, shape, rows: float, device) -> tuple[float, int]:
    """Seconds for the naive sampler on the first `rows` rows, extrapolated to the whole image."""
    C, H, W = shape
    steps = max(1, min(C * H * W, round(rows * W * C)))
    calls = 0

    def stop_after(module, args, output):
        nonlocal calls
        calls += 1
        if calls >= steps:
            raise _Stop

    handle = model.register_forward_hook(stop_after)
    try:
        g = torch.Generator(device=device).manual_seed(0)
        _sync(device)
        start = time.perf_counter()
        try:
            sample_naive(model, n, shape, generator=g)
        except _Stop:
            pass
        _sync(device)
        seconds = time.perf_counter() - start
    finally:
        handle.remove()
    return seconds * (C * H * W) / steps, steps


def time_cached(model, n: int, shape, device, cuda_graphs: bool) -> float:
    g = torch.Generator(device=device).manual_seed(0)
    _sync(device)
    start = time.perf_counter()
    sample_cached(model, n, shape, generator=g, cuda_graphs=cuda_graphs)
    _sync(device)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", choices=["all", "cpu", "cuda"], default="all",
                        help="'all' = cpu, plus cuda when available")
    parser.add_argument("--batch", type=int, nargs="+", default=[4, 16])
    parser.add_argument("--naive-rows", type=float, default=2.0,
                        help="time the naive sampler on this many rows (fractions allowed) and "
                             "extrapolate linearly; use 32 for a full run")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    parser.add_argument("--repeats", type=int, default=3,
                        help="time each cached run this many times; the best and the median are printed "
                             "(shared machines are noisy)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    devices = {"all": ["cpu"] + (["cuda"] if torch.cuda.is_available() else []),
               "cpu": ["cpu"], "cuda": ["cuda"]}[args.device]
    shape = (REFERENCE.image_channels, *REFERENCE.image_size)
    C, H, W = shape
    print(f"reference model: {shape[0]}x{H}x{W}, {REFERENCE.levels} levels, first layer "
          f"{REFERENCE.first_kernel_size}x{REFERENCE.first_kernel_size}, {REFERENCE.n_layers} gated "
          f"{REFERENCE.kernel_size}x{REFERENCE.kernel_size} layers, {REFERENCE.channels} channels; "
          f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads\ncpu: {cpu_description()}")
    print(f"naive: timed on {args.naive_rows:g} of {H} rows, extrapolated linearly to the whole image")
    header = f"{'device':<6} {'batch':>5} {'sampler':<14} {'seconds':>10} {'img/s':>8} {'vs naive':>9}"
    print(header)
    print("-" * len(header))
    torch.manual_seed(0)
    for name in devices:
        device = torch.device(name)
        print(check_exact(device))
        model = GatedPixelCNN(REFERENCE).to(device).eval()
        label = cpu_description() if name == "cpu" else torch.cuda.get_device_name(device)
        # warm-up: allocator, oneDNN / cuBLAS handles, CUDA graph capture paths
        time_naive(model, 1, shape, 1 / (W * C), device)
        cached_variants = [("cached", False)] if name == "cpu" else [("cached eager", False),
                                                                      ("cached graphs", True)]
        for _, graphs in cached_variants:
            time_cached(model, 1, (C, 1, W), device, graphs)
        for n in args.batch:
            naive, steps = time_naive(model, n, shape, args.naive_rows, device)
            print(f"{name:<6} {n:>5} {'naive':<14} {naive:>10.2f} {n / naive:>8.3f} {1:>8.1f}x"
                  f"   ({steps} of {C * H * W} steps timed) [{label}]")
            for sampler, graphs in cached_variants:
                times = sorted(time_cached(model, n, shape, device, graphs) for _ in range(args.repeats))
                cached = times[0]
                print(f"{name:<6} {n:>5} {sampler:<14} {cached:>10.2f} {n / cached:>8.2f} "
                      f"{naive / cached:>8.1f}x   (best of {len(times)}, median "
                      f"{times[len(times) // 2]:.2f} s) [{label}]", flush=True)
        if name != "cpu":
            print(f"cuda = {label}")


if __name__ == "__main__":
    main()
