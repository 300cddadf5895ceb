"""InceptionV1's render step with PyTorch's local response normalization and with featviz's.

featviz's InceptionV1 computes LRN's sum over neighbouring channels with a 1x1 convolution by a
banded matrix (``featviz.models.inception_v1.LocalResponseNorm``); PyTorch's
``nn.LocalResponseNorm`` pools the squares with ``avg_pool3d``. This times, per layer, a
forward stopped after the layer plus the backward of one channel's mean to the input (the
floor of a render step), batch 1, with the model's own LRNs and with PyTorch's swapped in; the
two alternate per repetition, and each figure is the median. Weights are random (speed does
not depend on them), so it runs anywhere.

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


def swap_lrn(model: nn.Module, pytorchs: bool) -> None:
    """Put PyTorch's LRN (``pytorchs``) or featviz's in the model's two LRN places."""
    net = model.net
    for seq, i, channels in ((net.maxpool1, 1, 64), (net.maxpool2, 0, 192)):
        old = seq[i]
        seq[i] = (nn.LocalResponseNorm(old.size, old.alpha, old.beta, old.k) if pytorchs else
                  inception_v1.LocalResponseNorm(channels, old.size, old.alpha, old.beta, old.k))


def step_ms(tap: LayerTap, layer: str, x: torch.Tensor) -> float:
    """One stopped forward to ``layer`` and the backward of a channel's mean, in ms."""
    t0 = time.perf_counter()
    tap(x)[layer][:, 0].mean().backward()
    return 1000 * (time.perf_counter() - t0)


def layer_times(model: nn.Module, layer: str, x: torch.Tensor, repeats: int
                ) -> dict[bool, float]:
    """Median ms per step with PyTorch's LRN (True) and featviz's (False), alternating."""
    times: dict[bool, list[float]] = {True: [], False: []}
    with LayerTap(model, [layer]) as tap:  # the tap counts its layer once, before timing
        for rep in range(repeats + 2):
            for pytorchs in (True, False):
                swap_lrn(model, pytorchs)
                ms = step_ms(tap, layer, x)
                if rep >= 2:  # two warm-up rounds
                    times[pytorchs].append(ms)
    return {k: statistics.median(v) for k, v in times.items()}


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
    print("| layer | PyTorch's LRN | featviz's LRN | speed-up |")
    print("|---|---:|---:|---:|")
    for layer in LAYERS:
        t = layer_times(model, layer, x, args.repeats)
        print(f"| {layer} | {t[True]:.1f} | {t[False]:.1f} | {t[True] / t[False]:.2f}x |",
              flush=True)
    swap_lrn(model, False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
