"""A render step with the unread branches of a block left out, and with the whole block.

A channel objective on a concatenating layer (an InceptionV1 block) reads the channels of one
branch; render leaves the others out of the forward and backward passes
(``featviz.core.prune``), with the same images to the bit. This times featviz's render step on
InceptionV1 (BVLC weights from ``../shared/models`` where they are, else random ones: the
speed does not depend on them), batch 1, one channel from each
branch of ``mixed3b``, ``mixed4c`` and ``mixed5a``, with and without that pruning, in NCHW and
NHWC order. The two variants alternate per channel; each figure is the median step after the
warm-up (every step's time is recorded).

    python benchmarks/prune_step.py                  # 224 px, 2 threads, about 2 min
    python benchmarks/prune_step.py --threads 1 --steps 24
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import warnings
from pathlib import Path

import torch

import featviz
from featviz import objectives as obj
from featviz.core import prune
from featviz.models import inception_v1

WARM = 4  # steps before timing: the first builds the traced graph
SHARED = Path(os.environ.get("FEATVIZ_SHARED", Path(__file__).resolve().parents[2] / "shared"))
WEIGHTS = SHARED / "models" / "googlenet_bvlc_imagenet.pth"


def branch_channels(block: str) -> list[tuple[str, int]]:
    """One channel in each of ``block``'s four branches (the middle of each)."""
    _, c1, _, c3, _, c5, pool = inception_v1.BLOCKS[block]
    starts = [0, c1, c1 + c3, c1 + c3 + c5]
    return [(name, start + size // 2) for name, start, size in
            zip(("1x1", "3x3", "5x5", "pool"), starts, (c1, c3, c5, pool), strict=True)]


@contextlib.contextmanager
def pruning(on: bool):
    """Renders with (the default) or without the unread branches left out: a switch for
    these comparisons, not a render option (the images are the same either way)."""
    saved = prune.might_prune
    if not on:
        prune.might_prune = lambda model, channels: False
    try:
        yield
    finally:
        prune.might_prune = saved


def step_ms(model, layer: str, channel: int, size: int, steps: int, fmt: str, on: bool) -> float:
    with pruning(on), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a dead unit of random weights times the same
        res = featviz.render(model, obj.channel(layer, channel), size=size, steps=WARM + steps,
                             seed=0, progress=False, record_every=1, redirect_relu=0,
                             memory_format=fmt)
    t = [b for s, b in zip(res.history_steps, res.history_times, strict=True) if s >= WARM]
    return 1000 * statistics.median(b - a for a, b in zip(t, t[1:], strict=False))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--steps", type=int, default=32, help="timed steps per render")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    real = WEIGHTS.exists()
    model = featviz.models.load("inceptionv1", weights=str(WEIGHTS) if real else None)
    print(f"InceptionV1 ({'BVLC' if real else 'random'} weights), {args.size} px, batch 1, "
          f"{args.threads} thread(s); median ms per render step\n")
    print("| layer | branch (channel) | layout | whole block ms | pruned ms | speed-up |")
    print("|---|---|---|---:|---:|---:|")
    gains = {}
    for lucid, block in (("mixed3b", "inception3b"), ("mixed4c", "inception4c"),
                         ("mixed5a", "inception5a")):
        for branch, channel in branch_channels(block):
            for fmt, label in (("contiguous", "NCHW"), ("channels_last", "NHWC")):
                whole = step_ms(model, lucid, channel, args.size, args.steps, fmt, False)
                cut = step_ms(model, lucid, channel, args.size, args.steps, fmt, True)
                gains.setdefault((lucid, label), []).append(whole / cut)
                print(f"| {lucid} | {branch} ({channel}) | {label} | {whole:.1f} | {cut:.1f} | "
                      f"{whole / cut:.2f}x |", flush=True)
    print("\nmedian speed-up per layer and layout: " + ", ".join(
        f"{layer} {label} {statistics.median(g):.2f}x" for (layer, label), g in gains.items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
