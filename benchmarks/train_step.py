"""Training-step throughput of the Gated PixelCNN (forward + backward + AdamW step).

Reference configuration: 3x32x32 images, 256 levels, first layer 7x7, 10 gated 3x3 layers,
120 channels. Prints images/s for each (batch, precision, compile) combination measured in this one
run, the model FLOPs per image (forward + backward, counted by torch's FlopCounterMode) and the
fraction of the device's peak that was achieved. On a CPU, whose peak torch cannot tell, the
reference is the rate of a large fp32 matrix product measured in the same run (`--peak-tflops`
overrides it): images/s times FLOPs per image cannot exceed it, so it also gives the ceiling.

    python benchmarks/train_step.py                          # CPU, batch 32, fp32
    python benchmarks/train_step.py --device cuda --batch 32 --batch 128 \
        --mode fp32 --mode bf16 --mode bf16+compile
"""
from __future__ import annotations

import argparse
import json
import time

import torch

from pcae.machine import cpu_description
from pcae.pixelcnn import GatedPixelCNN, PixelCNNConfig, bits_per_dim

# dense peak TFLOP/s by device-name fragment: (fp32 incl. TF32 tensor cores, bf16)
GPU_PEAKS = {"H100": (494.7, 989.4), "H200": (494.7, 989.4), "A100": (156.0, 312.0)}


def reference_config() -> PixelCNNConfig:
    return PixelCNNConfig(image_channels=3, levels=256, n_layers=10, channels=120, kernel_size=3,
                          first_kernel_size=7, image_size=(32, 32))


def flops_per_image(model, device) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    x = torch.randint(0, 256, (2, 3, 32, 32), device=device)
    with FlopCounterMode(display=False) as counter:
        bits_per_dim(model(x), x).backward()
    model.zero_grad(set_to_none=True)
    return counter.get_total_flops() / 2


def sgemm_tflops(seconds: float = 3.0, n: int = 2048) -> float:
    """Measured fp32 matrix-product rate of this CPU with torch's current threads."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    count, start = 0, time.perf_counter()
    while count < 3 or time.perf_counter() - start < seconds:
        a @ b
        count += 1
    return 2 * n**3 * count / (time.perf_counter() - start) / 1e12


def time_steps(model, batch, device, mode, seconds, min_steps):
    x = torch.randint(0, 256, (batch, 3, 32, 32), device=device)
    fused = device.type == "cuda"
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=fused)
    bf16 = mode.startswith("bf16")
    step_model = torch.compile(model) if mode.endswith("compile") else model

    def step():
        opt.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            logits = step_model(x)
        loss = bits_per_dim(logits, x)  # fp32 softmax
        loss.backward()
        opt.step()
        return loss.detach()

    for _ in range(3 if mode.endswith("compile") else 1):
        step()
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    sync()
    n, start = 0, time.perf_counter()
    while n < min_steps or time.perf_counter() - start < seconds:
        loss = step()
        n += 1
    sync()
    elapsed = time.perf_counter() - start
    return batch * n / elapsed, loss.item()


CATEGORIES = (  # op-name fragments -> where a step's time goes
    ("convolutions (forward + backward)", ("conv", "mkldnn")),
    ("matrix products (1x1s, head)", ("addmm", "mm", "bmm", "matmul", "linear")),
    ("softmax / loss", ("softmax", "nll", "log_sum", "logsumexp", "gather")),
    ("optimizer (AdamW)", ("adam", "_foreach", "lerp", "addcdiv", "addcmul", "sqrt")),
    ("gates and other elementwise", ("tanh", "sigmoid", "mul", "add", "sub", "div", "relu", "threshold", "neg")),
    ("copies and layout", ("copy", "cat", "pad", "clone", "contiguous", "to", "fill", "zero", "index", "slice", "stack")),
)


def profile_step(model, batch, device, mode, steps: int = 3) -> None:
    """Where one training step's time goes: torch.profiler's self time per op, grouped."""
    from torch.profiler import ProfilerActivity, profile

    time_steps(model, batch, device, mode, 0.0, 1)  # warm-up outside the profile
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities) as prof:
        time_steps(model, batch, device, mode, 0.0, steps)
    self_us: dict[str, float] = {}
    for event in prof.key_averages():
        us = event.self_device_time_total if device.type == "cuda" else event.self_cpu_time_total
        self_us[event.key] = self_us.get(event.key, 0.0) + us
    total = sum(self_us.values()) or 1.0
    groups = {name: 0.0 for name, _ in CATEGORIES} | {"other": 0.0}
    for key, us in self_us.items():
        low = key.lower()
        name = next((n for n, parts in CATEGORIES if any(p in low for p in parts)), "other")
        groups[name] += us
    print(f"where the time of a step goes (batch {batch}, {mode}, torch.profiler self time over "
          f"{steps} steps + 1 warm-up inside the timer):")
    for name, us in sorted(groups.items(), key=lambda kv: -kv[1]):
        print(f"  {us / total:6.1%}  {name}")
    print("  top ops: " + ", ".join(f"{k} {v / total:.1%}" for k, v in
                                    sorted(self_us.items(), key=lambda kv: -kv[1])[:8]))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--batch", type=int, action="append")
    ap.add_argument("--mode", action="append", choices=["fp32", "bf16", "bf16+compile", "fp32+compile"])
    ap.add_argument("--seconds", type=float, default=20.0, help="time per measurement")
    ap.add_argument("--min-steps", type=int, default=3)
    ap.add_argument("--peak-tflops", type=float, help="peak for the fraction (CPU default: a measured "
                    "fp32 matrix product)")
    ap.add_argument("--json", help="also write the rows to this file")
    ap.add_argument("--profile", action="store_true", help="also print where a step's time goes "
                    "(torch.profiler, grouped: convolutions, matrix products, loss, optimizer, ...)")
    args = ap.parse_args()
    device = torch.device(args.device)
    batches, modes = args.batch or [32], args.mode or ["fp32"]
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        name = torch.cuda.get_device_name()
    else:
        name = f"cpu: {cpu_description()}; {torch.get_num_threads()} torch threads"

    torch.manual_seed(0)
    model = GatedPixelCNN(reference_config()).to(device)
    flops = flops_per_image(model, device)
    print(f"device: {name}; torch {torch.__version__}")
    print(f"model: {sum(p.numel() for p in model.parameters()) / 1e6:.2f} M parameters, "
          f"{flops / 1e9:.2f} GFLOP per image (forward + backward)")
    peak_note = "device peak"
    if device.type == "cpu" and args.peak_tflops is None:
        args.peak_tflops = sgemm_tflops()
        peak_note = "measured fp32 matrix product"
        print(f"peak: {args.peak_tflops * 1e3:.1f} GFLOP/s ({peak_note}, 2048x2048), so at most "
              f"{args.peak_tflops * 1e12 / flops:.2f} images/s")
    rows = []
    short = name if device.type == "cuda" else cpu_description()  # beside every figure
    print(f"{'batch':>5} {'mode':>13} {'images/s':>10} {'TFLOP/s':>8} {'of peak':>8}   [device]")
    for batch in batches:
        for mode in modes:
            ips, loss = time_steps(model, batch, device, mode, args.seconds, args.min_steps)
            tflops = ips * flops / 1e12
            peak = args.peak_tflops
            if peak is None and device.type == "cuda":
                peak = next((p[1 if mode.startswith("bf16") else 0] for key, p in GPU_PEAKS.items()
                             if key in name), None)
            frac = f"{tflops / peak:.1%}" if peak else "n/a"
            print(f"{batch:>5} {mode:>13} {ips:>10.1f} {tflops:>8.3f} {frac:>8}   [{short}]")
            rows.append(dict(batch=batch, mode=mode, images_per_s=ips, tflops=tflops,
                             peak_fraction=tflops / peak if peak else None, peak=peak_note, loss=loss))
    base = {r["batch"]: r["images_per_s"] for r in rows if r["mode"] == "fp32"}
    for r in rows:
        if r["mode"] != "fp32" and r["batch"] in base:
            print(f"batch {r['batch']}: {r['mode']} is {r['images_per_s'] / base[r['batch']]:.2f}x fp32")
    if args.profile:
        profile_step(model, batches[0], device, modes[0])
    if args.json:
        with open(args.json, "w") as f:
            json.dump(dict(device=name, gflop_per_image=flops / 1e9, rows=rows), f, indent=1)


if __name__ == "__main__":
    main()
