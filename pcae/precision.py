"""--precision auto: bf16 autocast where this hardware runs the model faster in it, fp32 elsewhere.

The decision, in order:
  * fp32 or bf16 asked for: that.
  * CUDA: bf16 when the device has native bf16 (Ampere and newer), else fp32.
  * CPU without bf16 arithmetic (no `amx_bf16` / `avx512_bf16` in /proc/cpuinfo): fp32. On such a
    CPU (an AMD EPYC with AVX2, say) autocast emulates bf16 and ran a train step 0.08x as fast.
  * CPU with bf16 arithmetic: measured. Whether bf16 pays depends on the model: on an Intel Xeon
    with AMX the reference train step (120 channels) ran 2-2.5x faster, a 24-channel one-layer
    auto-encoder only 1.06x. So the caller's own step is timed a few times in both precisions on
    a copy of the model, and bf16 is used when it is at least MIN_SPEEDUP faster. The result is
    cached per machine, torch version, thread count and model (`cache_root()/precision.json`), so
    the measurement is paid once.

Under bf16 autocast the loss, its log-softmax and the bits/dim stay fp32 (pcae.pixelcnn.nll_bits
casts the logits); the weights and the optimiser stay fp32.
"""
from __future__ import annotations

import copy
import hashlib
import json
import time
from typing import Callable

import torch

from pcae.files import atomic_path, cache_root
from pcae.machine import cpu_bf16_flags, cpu_description
from pcae.options import check_precision

MIN_SPEEDUP = 1.2  # bf16 must be this much faster than fp32 to be chosen
CACHE_FILE = "precision.json"


def _cache_path():
    return cache_root() / CACHE_FILE


def _read_cache() -> dict:
    try:
        data = json.loads(_cache_path().read_text())
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def _write_cache(key: str, entry: dict) -> None:
    data = _read_cache()
    data[key] = entry
    try:
        with atomic_path(_cache_path()) as tmp:
            tmp.write_text(json.dumps(data, indent=1) + "\n")
    except OSError:  # a read-only cache costs the next run the measurement again
        pass


def machine_key(model_key: str) -> str:
    """A cache key: this CPU, torch's version and threads, and the caller's model description."""


    text = json.dumps([cpu_description(), torch.__version__, torch.get_num_threads(), model_key])
    return hashlib.sha1(text.encode()).hexdigest()[:16]


def time_it(run: Callable[[], None], repeats: int = 3) -> float:
    """Seconds per call of run(), the fastest of `repeats` after one warm-up call."""
    run()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - start)
    return best


def choose(precision: str, device, measure: Callable[[str], float] | None = None,
           model_key: str = "") -> dict:
    """Resolve a precision for `device` (a torch.device).

    Args:
        precision: "auto", "fp32" or "bf16".
        measure: precision -> seconds per step of the caller's work (on a copy: it must not
            change anything the caller keeps); used on a CPU with bf16 arithmetic only.
        model_key: describes the caller's model and batch, for the cache.
    Returns:
        {"asked", "used" ("fp32" | "bf16"), "why"} and, when measured, "seconds" per precision.
    """

    check_precision(precision)
    if precision != "auto":
        return {"asked": precision, "used": precision, "why": "asked for"}
    if device.type == "cuda":
        native = torch.cuda.is_bf16_supported(including_emulation=False)
        return {"asked": "auto", "used": "bf16" if native else "fp32",
                "why": "the CUDA device has native bf16" if native else "the CUDA device has no native bf16"}
    flags = cpu_bf16_flags()
    if not flags:
        return {"asked": "auto", "used": "fp32", "why": "this CPU has no bf16 arithmetic "
                "(neither amx_bf16 nor avx512_bf16)"}
    if measure is None:
        return {"asked": "auto", "used": "fp32", "why": f"CPU with {', '.join(flags)}, nothing "
                "to measure"}
    key = machine_key(model_key)
    cached = _read_cache().get(key)
    if not (isinstance(cached, dict) and {"fp32", "bf16"} <= set(cached)):
        cached = {"fp32": measure("fp32"), "bf16": measure("bf16")}
        _write_cache(key, cached)
    speedup = cached["fp32"] / max(cached["bf16"], 1e-12)
    used = "bf16" if speedup >= MIN_SPEEDUP else "fp32"
    return {"asked": "auto", "used": used, "seconds": {"fp32": cached["fp32"], "bf16": cached["bf16"]},
            "why": f"CPU with {', '.join(flags)}: this model's step measured {speedup:.2f}x as fast "
                   f"in bf16 (bf16 when >= {MIN_SPEEDUP}x)"}


def step_seconds(task, dataset, batch_size: int, device, precision: str) -> float:
    """Seconds per training step of `task` in `precision` on a batch of `dataset`, measured on a copy
    of the task (the run is untouched, its random state too)."""


    task = copy.deepcopy(task)
    images, labels = (t.to(device) for t in dataset.first(batch_size))
    params = [p for p in task.model.parameters() if p.requires_grad]
    autocast = torch.autocast(device.type, dtype=torch.bfloat16,
                              enabled=precision == "bf16")

    def step():
        with autocast:
            out = task.loss(images, labels)
        loss = out["loss"] if "loss" in out else out[task.metric]
        grads = torch.autograd.grad(loss, params)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        del grads

    with torch.random.fork_rng(devices=[]):  # nothing the run draws is consumed here
        return time_it(step)

