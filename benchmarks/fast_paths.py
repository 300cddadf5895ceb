"""What each speed option of render costs and gives: bf16 autocast, channels-last, torch.compile.

For a few layers of the real MobileNetV2 (../shared/models; random weights with --weights
random), it renders the same channels from the same seeds once per variant and prints a
markdown table: ms per step (after warm-up; a compiled variant's first steps include its
compilation, which is reported apart), and the objective reached relative to float32 (mean,
and the worst image). bf16 passes when it stays within a few percent of float32; compile pays
when its ms/step beats the eager one by more than its compile time spreads over a render.

    python benchmarks/fast_paths.py                     # CPU or the first GPU
    python benchmarks/fast_paths.py --variants fp32,bf16 --steps 128
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import torch

import featviz
from featviz import objectives as obj

SHARED = Path(os.environ.get("FEATVIZ_SHARED", Path(__file__).resolve().parents[2] / "shared"))

#: variant name -> render options (reduce-overhead adds CUDA graphs: GPU only)
VARIANTS = {
    "fp32": {},
    "bf16": {"amp": True},
    "channels_last": {"memory_format": "channels_last"},
    "bf16+channels_last": {"amp": True, "memory_format": "channels_last"},
    "compile": {"compile": True},
    "compile+bf16": {"compile": True, "amp": True},
    "reduce-overhead": {"compile": "reduce-overhead"},
    "reduce-overhead+bf16": {"compile": "reduce-overhead", "amp": True},
}
GPU_ONLY = {"reduce-overhead", "reduce-overhead+bf16"}


def run(model, layer: str, channels: list[int], options: dict, steps: int, size: int,
        warm: int) -> tuple[float, float, torch.Tensor]:
    """(ms per step after ``warm`` steps, seconds of the first ``warm`` steps, objective)."""
    res = featviz.render(model, obj.channel(layer, channels), steps=steps, size=size,
                         seed=list(range(len(channels))), progress=False, record_every=warm,
                         redirect_relu=min(16, warm), **options)
    first = res.history_times[0]
    return res.ms_per_step(after=warm - 1), first, res.values


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--weights", default=str(SHARED / "models" / "mobilenet_v2_imagenet_coral.pth"))
    ap.add_argument("--layers", default="features.4,features.10,features.17")
    ap.add_argument("--batch", type=int, default=8, help="channels rendered together")
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--steps", type=int, default=256)
    ap.add_argument("--variants", default=None,
                    help=f"comma-separated, of {', '.join(VARIANTS)} (default: all that run on "
                         "the device)")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = ap.parse_args(argv)
    device = torch.device(args.device)
    names = args.variants.split(",") if args.variants else [
        v for v in VARIANTS if device.type == "cuda" or v not in GPU_ONLY]
    bad = [v for v in names if v not in VARIANTS]
    if bad:
        ap.error(f"unknown variant(s) {', '.join(bad)}; choose from {', '.join(VARIANTS)}")
    names = ["fp32"] + [v for v in names if v != "fp32"]  # the reference comes first
    weights = None if args.weights == "random" else args.weights
    if weights and not Path(weights).is_file():
        ap.error(f"weights file {weights} not found; pass --weights random or a state_dict file")
    torch.manual_seed(0)
    model = featviz.models.load("mobilenet_v2", weights=weights, mean=(0.5,) * 3,
                                std=(0.5,) * 3, device=device)
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else \
        f"CPU, {torch.get_num_threads()} threads"
    print(f"device: {where}; torch {torch.__version__}; MobileNetV2 "
          f"({'real' if weights else 'random'} weights), {args.batch} channels x "
          f"{args.size} px, {args.steps} steps\n")
    print("| layer | variant | ms/step | speed-up | first 32 steps s | objective / fp32 "
          "(mean) | worst image |")
    print("|---|---|---:|---:|---:|---:|---:|")
    channels = list(range(args.batch))
    warm = 32
    t0 = time.perf_counter()
    for layer in args.layers.split(","):
        base = None
        for name in names:
            ms, first, values = run(model, layer, channels, VARIANTS[name], args.steps,
                                    args.size, warm)
            if base is None:
                base = (ms, values)
            ratio = values / base[1]
            worst = ratio[(ratio - 1).abs().argmax()]
            print(f"| {layer} | {name} | {ms:.1f} | {base[0] / ms:.2f}x | {first:.1f} | "
                  f"{float(ratio.mean()):.3f} | {float(worst):.3f} |", flush=True)
    print(f"\n{time.perf_counter() - t0:.0f} s in all")
    return 0


if __name__ == "__main__":
    sys.exit(main())
