"""InceptionV1's render step with PyTorch's modules and with featviz's own.

featviz's InceptionV1 differs from a plain PyTorch build in three places, with the same values
and gradients: LRN's sum over neighbouring channels is a 1x1 convolution by a banded matrix
(``featviz.models.inception_v1.LocalResponseNorm``; PyTorch's ``nn.LocalResponseNorm`` pools
the squares with ``avg_pool3d``); the batch norms that hold the Caffe biases add them
(``CaffeBias``; ``nn.BatchNorm2d`` runs a full batch norm, forward and backward); and a unit
nobody watches passes that bias to its convolution, which adds it in the same call
(``ConvUnit.fold_bias``; equal up to float rounding), the stem's among them, whose input
gradient then runs by pixel phases (``featviz.core.stem_conv``). This times, per layer, a
forward stopped after the layer plus the backward of one channel's mean to the input (the
floor of a render step), batch 1, in four builds: PyTorch's LRN and batch norms, featviz's
LRN with batch norms, featviz's LRN with bias adds, and the model as featviz has it. They
alternate per repetition, and each figure is the median. Weights are random, Caffe-style
(speed does not depend on them), so it runs anywhere.

    python benchmarks/inception_step.py                  # 224 px, all CPU threads
    python benchmarks/inception_step.py --threads 1 --size 128
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import torch
from torch import nn

import featviz
from featviz.core.hooks import LayerTap
from featviz.models import inception_v1

LAYERS = ("conv2d2", "mixed3b", "mixed4c", "mixed5a")


#: the builds timed: (label, PyTorch's LRN, PyTorch's batch norms, bias in the convolution)
BUILDS = (("PyTorch's LRN and batch norms", True, True, False),
          ("featviz's LRN, batch norms", False, True, False),
          ("featviz's LRN and bias adds", False, False, False),
          ("featviz's LRN, bias in the convolution, stem by phases", False, False, True))


def swap(model: nn.Module, pytorchs_lrn: bool, pytorchs_norm: bool, fold: bool = True) -> None:
    """Put PyTorch's LRN or featviz's in the model's two LRN places, make its batch norms
    PyTorch's or featviz's (the same parameters and buffers either way), and let its units
    pass the bias to the convolution or not."""
    net = model.net
    for seq, i, channels in ((net.maxpool1, 1, 64), (net.maxpool2, 0, 192)):
        old = seq[i]
        seq[i] = (nn.LocalResponseNorm(old.size, old.alpha, old.beta, old.k) if pytorchs_lrn
                  else inception_v1.LocalResponseNorm(channels, old.size, old.alpha, old.beta,
                                                      old.k))
    for module in net.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.__class__ = nn.BatchNorm2d if pytorchs_norm else inception_v1.CaffeBias
        if isinstance(module, inception_v1.ConvUnit):
            module.fold_bias = fold


def step_ms(tap: LayerTap, layer: str, x: torch.Tensor) -> float:
    """One stopped forward to ``layer`` and the backward of a channel's mean, in ms."""
    t0 = time.perf_counter()
    tap(x)[layer][:, 0].mean().backward()
    return 1000 * (time.perf_counter() - t0)


def layer_times(model: nn.Module, layer: str, x: torch.Tensor, repeats: int) -> list[float]:
    """Median ms per step of each of BUILDS, alternating."""
    times: list[list[float]] = [[] for _ in BUILDS]
    with LayerTap(model, [layer]) as tap:  # the tap counts its layer once, before timing
        for rep in range(repeats + 2):
            for k, (_, lrn, norm, fold) in enumerate(BUILDS):
                swap(model, lrn, norm, fold)
                ms = step_ms(tap, layer, x)
                if rep >= 2:  # two warm-up rounds
                    times[k].append(ms)
    return [statistics.median(t) for t in times]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--repeats", type=int, default=15)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = featviz.models.load("inceptionv1", weights=None).eval().requires_grad_(False)
    x = torch.rand(1, 3, args.size, args.size, requires_grad=True)
    print(f"InceptionV1, batch 1, {args.size} px, {args.threads} thread(s), CPU; forward to the "
          "layer + backward to the input, median ms\n")
    print("| layer | layout | " + " | ".join(build[0] for build in BUILDS)
          + " | LRN speed-up | bias adds' speed-up | bias in the convolution + stem | all |")
    print("|---|---|" + "---:|" * (len(BUILDS) + 3))
    for layer in LAYERS:
        for layout, fmt in (("NCHW", torch.contiguous_format), ("NHWC", torch.channels_last)):
            model.to(memory_format=fmt)
            t = layer_times(model, layer, x.detach().contiguous(memory_format=fmt)
                            .requires_grad_(), args.repeats)
            print(f"| {layer} | {layout} | " + " | ".join(f"{ms:.1f}" for ms in t)
                  + f" | {t[0] / t[1]:.2f}x | {t[1] / t[2]:.2f}x | {t[2] / t[3]:.2f}x"
                  f" | {t[0] / t[3]:.2f}x |",
                  flush=True)
    model.to(memory_format=torch.contiguous_format)
    swap(model, False, False, True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
