"""The laws of Luo et al. (NIPS 2016) on the effective receptive field, measured by featviz.

Prints markdown tables:
1. stacks of n 3x3 stride-1 convolutions with uniform weights and no nonlinearity: ERF σ
   against the closed form sqrt(n (k²-1) / 12), the theoretical field 2n+1, ERF/TRF area;
   the exponent of σ ∝ n^e fitted over n (expect 0.5);
2. the same stacks with random weights and ReLUs (averaged over noise inputs);
3. what a stride-2 layer and dilation do to σ (8 layers);
4. random initialization against the trained weights of the CIFAR ResNets in ../shared/models.

    python benchmarks/erf_laws.py
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import warnings
from pathlib import Path

import torch
from torch import nn

import featviz
from featviz import receptive_field as rf

HERE = Path(__file__).resolve().parent
SHARED = Path(os.environ.get("FEATVIZ_SHARED", HERE.parent.parent / "shared"))


def stack(n: int, channels: int, relu: bool, stride2_at: int | None = None,
          dilation: int = 1) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i in range(n):
        layers.append(nn.Conv2d(3 if i == 0 else channels, channels, 3,
                                2 if i == stride2_at else 1, dilation, dilation=dilation))
        if relu:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


def fitted_exponent(ns: list[int], sigmas: list[float]) -> float:
    """Slope of log σ against log n (least squares)."""
    xs, ys = [math.log(n) for n in ns], [math.log(s) for s in sigmas]
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sum(
        (x - mx) ** 2 for x in xs)


def stack_table(title: str, ns: list[int], relu: bool, weights: str, samples: int) -> float:
    print(f"\n### {title}\n")
    print("| n | TRF px | ERF σ px | closed form σ | ERF/TRF area (95%) |")
    print("|---:|---:|---:|---:|---:|")
    sigmas = []
    for n in ns:
        torch.manual_seed(n)
        net = stack(n, 16 if relu else 4, relu)
        last = str(len(net) - 1)
        size = 2 * n + 1 + 16
        erf = rf.effective(net, last, input_size=size, samples=samples, weights=weights)
        sigmas.append(erf.sigma)
        print(f"| {n} | {erf.trf.size[0]} | {erf.sigma:.3f} | {math.sqrt(n * 8 / 12):.3f} | "
              f"{erf.ratio_to():.3f} |", flush=True)
    e = fitted_exponent(ns, sigmas)
    print(f"\nfitted exponent of σ ∝ n^e: e = {e:.3f} (the paper: 0.5)")
    return e


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--ns", default="2,4,8,16,32,64")
    ap.add_argument("--samples", type=int, default=16)
    ap.add_argument("--out", default="out/erf", help="folder for the figures")
    args = ap.parse_args(argv)
    torch.set_num_threads(os.cpu_count() or 1)
    ns = [int(n) for n in args.ns.split(",")]
    out = Path(args.out)

    e_uniform = stack_table("1. uniform weights, no nonlinearity", ns, False, "uniform", 1)
    e_random = stack_table("2. random weights + ReLU", ns, True, "trained", args.samples)

    print("\n### 3. stride and dilation (8 layers of 3x3, random weights + ReLU)\n")
    print("| variant | TRF px | ERF σ px | ERF/TRF area (95%) |")
    print("|---|---:|---:|---:|")
    for name, kwargs in [("plain", {}), ("stride 2 at layer 1", {"stride2_at": 0}),
                         ("stride 2 at layer 5", {"stride2_at": 4}),
                         ("dilation 2 everywhere", {"dilation": 2})]:
        torch.manual_seed(0)
        net = stack(8, 16, True, **kwargs)
        erf = rf.effective(net, str(len(net) - 1), input_size=96, samples=args.samples)
        print(f"| {name} | {erf.trf.size[0]} | {erf.sigma:.2f} | {erf.ratio_to():.3f} |",
              flush=True)

    print("\n### 4. CIFAR ResNets: random initialization against trained weights "
          "(output of layer3, 64-px noise)\n")
    print("| model | TRF px | σ random px | σ trained px | trained/random |")
    print("|---|---:|---:|---:|---:|")
    for depth in (20, 32, 44, 56):
        path = SHARED / "models" / f"resnet{depth}_cifar10.pth"
        if not path.is_file():
            print(f"| cifar_resnet{depth} | weights not found at {path} | | | |")
            continue
        model = featviz.models.load(f"cifar_resnet{depth}", weights=path)
        kw = dict(input_size=64, samples=args.samples)
        with warnings.catch_warnings():
            # the deeper nets' theoretical fields exceed any input; their ERFs (σ ~10 px)
            # stay far from the borders of a 64-px input
            warnings.simplefilter("ignore", UserWarning)
            trained = rf.effective(model, "layer3", weights="trained", **kw)
            random = rf.effective(model, "layer3", weights="random", **kw)
        print(f"| cifar_resnet{depth} | {trained.trf.size[0]} | {random.sigma:.2f} | "
              f"{trained.sigma:.2f} | {trained.sigma / random.sigma:.2f} |", flush=True)
        if depth == 20:
            rf.EffectiveFields([random, trained]).plot(out / "resnet20_random_vs_trained.png")

    print(f"\nexponents: uniform {e_uniform:.3f}, random + ReLU {e_random:.3f} "
          f"(target for the uniform stack: 0.45-0.55); figure in {out}/")
    return 0 if 0.45 <= e_uniform <= 0.55 else 1


if __name__ == "__main__":
    sys.exit(main())
