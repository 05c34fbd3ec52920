"""How fast the command line answers `--help`, beside how long importing torch takes.

`pcae --help` and `pcae train-ae --help` read every default from torch-free dataclasses
(pcae.config, pcae.settings, eval.compare_config), so they never import torch. This prints the
median wall time of each over --repeats fresh processes, and the ratio to `import torch` alone.

    .venv/bin/python benchmarks/cli_start.py [--repeats 7]
"""
from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time

from pcae.machine import cpu_description

CASES = {
    "pcae --help": [sys.executable, "-m", "pcae", "--help"],
    "pcae train-ae --help": [sys.executable, "-m", "pcae", "train-ae", "--help"],
    "pcae compare-decoders --help": [sys.executable, "-m", "pcae", "compare-decoders", "--help"],
    "python -c 'import torch'": [sys.executable, "-c", "import torch"],
}


def wall(command: list[str], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        subprocess.run(command, check=True, capture_output=True)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    loaded = subprocess.run([sys.executable, "-c", "import sys, pcae.cli; print('torch' in sys.modules)"],
                            check=True, capture_output=True, text=True).stdout.strip()
    print(f"machine: {cpu_description()}; torch imported by `import pcae.cli`: {loaded}")
    seconds = {name: wall(command, args.repeats) for name, command in CASES.items()}
    torch_s = seconds["python -c 'import torch'"]
    for name, s in seconds.items():
        print(f"{name:32s} {s:6.3f} s median of {args.repeats}  ({s / torch_s:.2f}x importing torch)")


if __name__ == "__main__":
    main()
