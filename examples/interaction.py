"""How two channels interact (Olah et al., "Feature Visualization", Distill 2017, "Interaction
between Neurons"): each channel alone, the two added, and an interpolation: a batch in which
image i maximizes (1 - t) * A + t * B with t going from 0 to 1.

With independent images each frame of the interpolation starts from its own noise and lands
somewhere else, so the sequence jumps. With the aligned parameterization (``--shared``, the
default; Distill's "Differentiable Image Parameterizations", section 1) every frame adds a
private image to low-resolution parts shared across the batch, so the frames line up and the
pattern of A morphs into the pattern of B. The script prints how far apart neighbouring frames
are, relative to the distance between the two ends (1 for a straight morph).

    python examples/interaction.py --out out/interaction
    python examples/interaction.py --quick --model cifar_resnet20 --weights random --out /tmp/i
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from _shared import add_model_args, default, late_layer, load_model, render_careful

import featviz
from featviz import objectives as obj
from featviz import param


def path_ratio(frames: torch.Tensor) -> float:
    """The summed distance between neighbouring frames over the distance between the ends:
    1 when the frames walk straight from the first to the last, larger when they jump."""
    steps = (frames[1:] - frames[:-1]).abs().mean(dim=(1, 2, 3)).sum()
    return float(steps / (frames[-1] - frames[0]).abs().mean().clamp_min(1e-8))


def interpolation(model, a: obj.Objective, b: obj.Objective, frames: int, size: int,
                  steps: int, shared: bool, neighbours: float = 0.0):
    """Render an interpolation from ``a`` to ``b`` in one batch of ``frames`` images, aligned
    (``shared``) or independent; ``neighbours`` weighs a penalty on neighbour differences."""
    gens = [torch.Generator().manual_seed(i) for i in range(frames)]
    p = param.aligned(size, frames, generator=gens) if shared else param.image(
        size, frames, generator=gens)
    objective = obj.interpolate(a, b, frames)
    if neighbours:
        objective = objective - neighbours * obj.neighbour_difference()
    return render_careful(model, objective, p, steps=steps, seed=0, progress=False)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_model_args(ap)
    ap.add_argument("--layer", help="default: the model's (InceptionV1: mixed4a)")
    ap.add_argument("--channels", help="A,B (default: the model's pair)")
    ap.add_argument("--frames", type=int, default=6)
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--steps", type=int, default=512)
    ap.add_argument("--no-shared", dest="shared", action="store_false",
                    help="only independent frames (no aligned row)")
    ap.add_argument("--neighbours", type=float, default=0.0,
                    help="weight of the penalty on differences between neighbouring frames")
    ap.add_argument("--quick", action="store_true", help="a few steps at a small size")
    ap.add_argument("--out", default="out/interaction")
    args = ap.parse_args(argv)
    if args.quick:
        args.size, args.steps, args.frames = 32, 8, 4
    model = load_model(args)
    args.layer = late_layer(model, default(args, "layer", args.layer))
    args.channels = default(args, "pair", args.channels)
    ca, cb = (int(c) for c in args.channels.split(","))
    a, b = obj.channel(args.layer, ca), obj.channel(args.layer, cb)

    pair = render_careful(model, obj.Objective.sum([a.on(0), b.on(1), (a + b).on(2)]),
                          steps=args.steps, size=args.size, seed=0, progress=False)
    for label, value in zip(pair.labels, pair.values.tolist(), strict=True):
        print(f"{label:40s} reached {value:.3f}", flush=True)
    out = Path(args.out)
    featviz.images.save(pair.images, out / "interaction_pair.png",
                        labels=[f"{ca}", f"{cb}", f"{ca} + {cb}"], ncol=3)

    rows, labels = [], []
    kinds = [("independent", False)] + ([("aligned", True)] if args.shared else [])
    for name, shared in kinds:
        res = interpolation(model, a, b, args.frames, args.size, args.steps, shared,
                            args.neighbours)
        rows.append(res.images)
        ts = [i / (args.frames - 1) for i in range(args.frames)]
        labels += [f"{name} t={t:.2f}" for t in ts]
        print(f"{name:12s} frames: neighbour/end distance ratio {path_ratio(res.images):.2f}, "
              f"objective {', '.join(f'{v:.2f}' for v in res.values.tolist())}", flush=True)
    path = featviz.images.save(torch.cat(rows), out / "interaction.png", labels=labels,
                               ncol=args.frames)
    print(f"wrote {out / 'interaction_pair.png'} and {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
