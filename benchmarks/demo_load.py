"""Load on `pcae demo`: concurrent portrait requests through Gradio's own client, all answered?

Starts `pcae demo` on a free port (or uses --url), then sends --requests portrait requests at once
(bundled face photos, --n portraits each) plus --bad failing ones (a file that is not an image, a
photo without a face) and checks that every good request got its grid and figures, every bad one its
message, and that the server still serves. Prints the wall time, each answer's latency, and the
server's peak resident memory (VmHWM of its process, read from /proc: only for a server this script
started), with the machine's CPU.

    python benchmarks/demo_load.py --checkpoint PATH           # default: the model `pcae demo` picks
    python benchmarks/demo_load.py --requests 8 --n 16 --bad 2
"""
from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from pcae.data import BUNDLED_FACES
from pcae.machine import cpu_description

PHOTOS = ["orl/s01/1.png", "orl/s07/3.png", "yale/subject01/happy.png", "yale/subject05/glasses.png",
          "orl/s12/2.png", "orl/s20/5.png", "yale/subject09/sad.png", "orl/s33/1.png"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def memory_kb(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def start_server(checkpoint: str | None, folder: Path) -> tuple[subprocess.Popen, str, float]:
    port = free_port()
    command = [sys.executable, "-m", "pcae", "demo", "--port", str(port)]
    command += ["--checkpoint", checkpoint] if checkpoint else []
    log = folder / "demo.log"
    start = time.perf_counter()
    proc = subprocess.Popen(command, stdout=open(log, "w"), stderr=subprocess.STDOUT,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    while time.perf_counter() - start < 120:
        text = log.read_text()
        if "serving on " in text:
            return proc, text.split("serving on ", 1)[1].split()[0], time.perf_counter() - start
        if proc.poll() is not None:
            break
        time.sleep(0.2)
    proc.kill()
    raise SystemExit(f"pcae demo did not start:\n{log.read_text()}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--checkpoint", help="portrait model for the server this script starts")
    ap.add_argument("--url", help="a running `pcae demo` instead (no memory figure then)")
    ap.add_argument("--requests", type=int, default=8)
    ap.add_argument("--bad", type=int, default=2, help="failing requests sent among them")
    ap.add_argument("--n", type=int, default=16, help="portraits per request")
    ap.add_argument("--timeout", type=float, default=300, help="seconds for all answers")
    args = ap.parse_args()
    from gradio_client import Client, handle_file

    folder = Path(tempfile.mkdtemp(prefix="pcae-demo-load-"))
    proc, started = None, None
    if args.url:
        url = args.url
    else:
        proc, url, started = start_server(args.checkpoint, folder)
    photos = [BUNDLED_FACES / p for p in PHOTOS if (BUNDLED_FACES / p).exists()]
    not_image = folder / "notes.png"
    not_image.write_text("not a picture\n")
    from PIL import Image

    no_face = folder / "grey.png"
    Image.new("L", (320, 240), 128).save(no_face)
    jobs = [("good", photos[k % len(photos)]) for k in range(args.requests)]
    jobs += [("bad", (not_image, no_face)[k % 2]) for k in range(args.bad)]
    peak, baseline = [0], memory_kb(proc.pid, "VmRSS") if proc else 0
    done = threading.Event()

    def watch():  # VmHWM is the kernel's own peak; VmRSS sampled too, for the figure while serving
        while not done.is_set() and proc is not None and proc.poll() is None:
            peak[0] = max(peak[0], memory_kb(proc.pid, "VmRSS"))
            time.sleep(0.05)

    threading.Thread(target=watch, daemon=True).start()
    client = Client(url, verbose=False)

    def one(job):
        kind, photo = job
        t = time.perf_counter()
        crop, grid, text, download = client.predict(handle_file(str(photo)), args.n, 0, api_name="/portraits")
        ok = (grid is not None and Path(grid).is_file() and "dlib distance" in text) if kind == "good" else \
            (grid is None and "**Error:**" in text)
        lines = text.splitlines()
        name = str(photo.relative_to(BUNDLED_FACES)) if photo.is_relative_to(BUNDLED_FACES) else photo.name
        return kind, name, time.perf_counter() - t, ok, lines[min(1, len(lines) - 1) if ok and kind == "good" else 0][:140]

    start = time.perf_counter()
    try:
        with ThreadPoolExecutor(len(jobs)) as pool:
            results = list(pool.map(one, jobs, timeout=args.timeout))
        wall = time.perf_counter() - start
        done.set()
        alive = urllib.request.urlopen(url, timeout=10).status == 200
    except BaseException:
        if proc is not None:
            proc.kill()
        raise
    print(f"machine: {cpu_description()}")
    if started is not None:
        print(f"pcae demo serving {started:.1f} s after the command")
    for kind, name, seconds, ok, line in sorted(results, key=lambda r: r[2]):
        print(f"  {kind:4s} {name:26s} answered after {seconds:5.1f} s  {'ok' if ok else 'WRONG'}  {line}")
    good = [r for r in results if r[0] == "good"]
    print(f"{len(jobs)} requests at once ({len(good)} portrait requests of {args.n}, {len(jobs) - len(good)} "
          f"failing): {sum(r[3] for r in results)} answered correctly in {wall:.1f} s; server still serving: {alive}")
    if proc is not None:
        print(f"server memory: {baseline / 1024:.0f} MiB resident before, peak {peak[0] / 1024:.0f} MiB while "
              f"answering (VmHWM {memory_kb(proc.pid, 'VmHWM') / 1024:.0f} MiB)")
        proc.terminate()
        proc.wait(10)
    if not all(r[3] for r in results) or not alive:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
