"""The cost of one render step (forward to the layer and back, a batch of 16) per layer of
InceptionV1 at 128 px and per MLP block of ViT-Tiny at 224 px, as ratios to a reference
layer measured in the same run: what scales a Microscope site's measured per-unit cost
(``featviz microscope`` on the early layers) to the layers it has not built yet.

    python benchmarks/microscope_depth_cost.py              # about 3 minutes on 2 CPU cores

Each step is timed three times after a warm-up; the best of three is kept (the machine is
shared). Needs the real weights of ``../shared/models`` (``FEATVIZ_MODELS``).
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import torch

import featviz
from featviz.core.hooks import LayerTap, frozen

HERE = Path(__file__).resolve().parent
SHARED = Path(os.environ.get("FEATVIZ_SHARED", HERE.parent.parent / "shared"))
V1_LAYERS = ["conv2d0", "conv2d1", "conv2d2", "mixed3a", "mixed3b", "mixed4a", "mixed4b",
             "mixed4c", "mixed4d", "mixed4e", "mixed5a", "mixed5b"]
VIT_BLOCKS = [0, 2, 5, 8, 11]


def step_ms(model: torch.nn.Module, layer: str, size: int, batch: int = 16,
            reps: int = 3) -> float:
    """The best of ``reps`` forward-and-backward passes to ``layer``, in ms."""
    x = torch.rand(batch, 3, size, size, requires_grad=True)
    with frozen(model), LayerTap(model, [layer]) as tap:
        tap(x)[layer].mean().backward()  # warm-up
        best = float("inf")
        for _ in range(reps):
            start = time.perf_counter()
            tap(x)[layer].square().mean().backward()
            best = min(best, time.perf_counter() - start)
    return best * 1000


def channels(model: torch.nn.Module, layers: list[str], size: int) -> dict[str, int]:
    """Each layer's channel count at ``size``."""
    with torch.no_grad(), LayerTap(model, layers, stop_early=False) as tap:
        acts = tap(torch.zeros(1, 3, size, size))
    return {layer: acts[layer].shape[1] for layer in layers}


def main() -> int:
    """Print one table per model: layer, units, ms per step, ratio to the reference."""
    os.environ.setdefault("FEATVIZ_MODELS", str(SHARED / "models"))
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS") or os.cpu_count() or 1))
    v1 = featviz.models.load("inceptionv1")
    units = channels(v1, V1_LAYERS, 128)
    times = {layer: step_ms(v1, layer, 128) for layer in V1_LAYERS}
    print("| InceptionV1 layer | units | ms per step | / mixed3b |\n|---|---:|---:|---:|")
    for layer in V1_LAYERS:
        print(f"| {layer} | {units[layer]} | {times[layer]:.0f} | "
              f"{times[layer] / times['mixed3b']:.2f} |")
    vit = featviz.models.load("vit_tiny")
    layers = [f"blocks.{k}.mlp.act" for k in VIT_BLOCKS]
    times = {layer: step_ms(vit, layer, 224) for layer in layers}
    print("\n| ViT-Tiny layer | units | ms per step | / blocks.8 |\n|---|---:|---:|---:|")
    for layer in layers:
        print(f"| {layer} | 768 | {times[layer]:.0f} | "
              f"{times[layer] / times['blocks.8.mlp.act']:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
