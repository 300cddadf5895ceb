"""Channels per minute of `featviz sweep` on 1 rank and on 2 ranks (torchrun, gloo).

Runs the same small sweep (the real MobileNetV2 when its weights are in ../shared/models, else
a random CIFAR ResNet-20; 16 channels, 128 px, 64 steps, batches of 8) several ways, each as
its own command into a fresh folder, and prints a markdown table:

- 1 rank x 2 threads: the plain command using both cores (torch's default here);
- 2 ranks x 1 thread: `torchrun --nproc_per_node 2`, one core per rank (torchrun's own
  OMP_NUM_THREADS=1) -- the fair comparison with the row above: the same two cores, the same
  batch size (each rank renders its 8 channels in one batch, the single rank in two);
- 1 rank x 1 thread: what one core gives, the baseline for scaling;
- on a machine with CUDA also 1 GPU, and one rank per GPU.

"channels/min" counts rendering only (from the sweep's own summary: after the model loaded);
"command s" is the whole command, process start-up, model load and rendezvous included;
"load" is the machine's 1-minute load average when the row started: on a shared machine other
work competes, and torch's threads of a 2-thread process then spin-wait for each other.

    python benchmarks/sweep_speed.py
    python benchmarks/sweep_speed.py --devices cuda --channels 64   # the GPU rows alone
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
SHARED = Path(os.environ.get("FEATVIZ_SHARED", HERE.parent.parent / "shared"))
MOBILENET = SHARED / "models" / "mobilenet_v2_imagenet_coral.pth"


def model_args(device: str) -> list[str]:
    """The sweep's model flags: real MobileNetV2 features.7 if present, else ResNet-20."""
    if MOBILENET.is_file():
        return ["--model", "mobilenet_v2", "--weights", str(MOBILENET), "--mean", "0.5,0.5,0.5",
                "--std", "0.5,0.5,0.5", "--layers", "features.7", "--device", device]
    return ["--model", "cifar_resnet20", "--weights", "random", "--layers", "layer3.0.conv1",
            "--device", device]


def run(ranks: int, threads: int, device: str, args: argparse.Namespace) -> tuple[float, float]:
    """Run one sweep; return (channels per minute of rendering, seconds of the command)."""
    with tempfile.TemporaryDirectory() as tmp:
        sweep = ["sweep", *model_args(device), "--channels", f"0-{args.channels - 1}",
                 "--size", str(args.size), "--steps", str(args.steps), "--batch-size",
                 str(args.channels // 2), "--out", str(Path(tmp) / "run")]
        if ranks == 1:
            cmd = [sys.executable, "-m", "featviz", *sweep]
        else:
            cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone",
                   "--nproc_per_node", str(ranks), "-m", "featviz", *sweep]
        env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
        start = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
        seconds = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{proc.stdout}\n{proc.stderr}")
    rate = re.search(r"([\d.]+) channels/min", proc.stdout)
    return float(rate.group(1)), seconds


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--channels", type=int, default=16)
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--steps", type=int, default=64)
    ap.add_argument("--devices", default="cpu,cuda",
                    help="which rows: cpu, cuda or both (cuda rows need a GPU)")
    args = ap.parse_args(argv)
    devices = args.devices.split(",")
    rows = [("cpu", 1, 2), ("cpu", 2, 1), ("cpu", 1, 1)] if "cpu" in devices else []
    if "cuda" in devices and torch.cuda.is_available():
        rows += [("cuda", 1, 1)]
        if torch.cuda.device_count() > 1:
            rows += [("cuda", torch.cuda.device_count(), 1)]
    model = "mobilenet_v2 features.7" if MOBILENET.is_file() else "cifar_resnet20 (random)"
    print(f"{model}, {args.channels} channels, {args.size} px, {args.steps} steps, batches of "
          f"{args.channels // 2}; {os.cpu_count()} CPU cores")
    print("| device | ranks | threads per rank | channels/min | command s | load |")
    print("|---|---:|---:|---:|---:|---:|")
    for device, ranks, threads in rows:
        load = os.getloadavg()[0]
        rate, seconds = run(ranks, threads, device, args)
        print(f"| {device} | {ranks} | {threads} | {rate:.1f} | {seconds:.1f} | {load:.1f} |",
              flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
