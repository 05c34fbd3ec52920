"""Detection and embedding of many photos in worker processes, one per core (pcae/faces.py's face
cache uses it): `detections(photos, start, encoder)` yields each photo's face in photo order.

Workers are forked, so they inherit the photo list and the encoder (dlib's and MTCNN's models
load once); each runs one torch thread and ignores Ctrl-C, which the parent handles by stopping
the pool. A GPU encoder, one worker or a short list runs in this process.

Known limits: needs the fork start method (Linux); elsewhere everything runs in this process.
"""
from __future__ import annotations

import multiprocessing
import os
import signal

import torch

from pcae.errors import first_line

POOL_MIN = 128  # fewer photos than this are not worth a pool's start-up

_WORK: tuple = ()  # (photos, encoder) of the detection under way, inherited by forked workers


def detections(photos, start: int, encoder, workers: int | None = None):
    """(crop uint8 array (3, F, F), score, embedding (D,), None) or (None, None, None, why) for
    each photo (an object with `load()` -> PIL image) from `start` on, in order.

    workers: processes (None: one per core; 1: this process)."""
    global _WORK
    todo = range(start, len(photos))
    on_cpu = all(p.device.type == "cpu" for p in encoder.parameters())  # CUDA cannot cross a fork
    workers = min(workers or len(os.sched_getaffinity(0)), 16)
    _WORK = (photos, encoder)
    try:
        if workers <= 1 or not on_cpu or len(todo) < POOL_MIN or "fork" not in multiprocessing.get_all_start_methods():
            yield from map(_detect_one, todo)
            return
        pool = multiprocessing.get_context("fork").Pool(workers, initializer=_quiet_worker)
        try:
            yield from pool.imap(_detect_one, todo, chunksize=4)
        finally:
            pool.terminate()
            pool.join()
    finally:
        _WORK = ()


def _quiet_worker():
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's: it stops the pool
    torch.set_num_threads(1)


def _detect_one(k: int):
    photos, encoder = _WORK
    photo = photos[k]
    try:
        image = photo.load()
    except Exception as e:  # PIL raises many types for broken files
        return None, None, None, f"unreadable ({first_line(e, with_type=True)})"
    try:
        crop, prob, _ = encoder.detect(image)
    except Exception as e:  # a detector's failure on one photo skips that photo
        return None, None, None, f"detection failed ({first_line(e, with_type=True)})"
    if crop is None:
        return None, None, None, encoder.too_small(image) or f"no face ({encoder.miss_note(prob)})"
    with torch.no_grad():
        embedding = encoder(crop[None])[0].float().cpu()
    return crop.numpy(), float(prob), embedding.numpy(), None
