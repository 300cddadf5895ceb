"""The first figure of "Feature Visualization" (Olah et al., Distill 2017): one unit seen as a
neuron, a channel and a layer (DeepDream), and one class seen as a logit and as a softmax
probability, side by side.

The softmax image usually looks worse than the logit one: a probability can also rise by
pushing every other class down, so the optimizer spends much of its effort suppressing evidence
for other classes instead of building evidence for the chosen one, and the image fills with
whatever lowers the competitors.

    python examples/objectives.py --out out/objectives
    python examples/objectives.py --quick --model cifar_resnet20 --weights random --out /tmp/o
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from _shared import add_model_args, default, late_layer, load_model, render_careful

import featviz
from featviz import metrics
from featviz import objectives as obj


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_model_args(ap)
    ap.add_argument("--layer", help="default: the model's (InceptionV1: mixed4a)")
    ap.add_argument("--unit", type=int, help="channel of --layer (default: the model's)")
    ap.add_argument("--class", dest="target", type=int, help="default 291: lion")
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--steps", type=int, default=512)
    ap.add_argument("--quick", action="store_true", help="a few steps at a small size")
    ap.add_argument("--out", default="out/objectives")
    args = ap.parse_args(argv)
    if args.quick:
        args.size, args.steps = 32, 8
    model = load_model(args)
    args.layer = late_layer(model, default(args, "layer", args.layer))
    args.unit = default(args, "channel", args.unit)
    args.target = default(args, "target", args.target)
    with torch.no_grad():
        classes = model(torch.zeros(1, 3, args.size, args.size)).shape[1]
    if not 0 <= args.target < classes:
        print(f"class {args.target} is not among the model's {classes} classes: using 0")
        args.target = 0
    kinds = {
        "neuron": obj.neuron(args.layer, args.unit),
        "channel": obj.channel(args.layer, args.unit),
        "layer (DeepDream)": obj.layer(args.layer),
        "logit": obj.logit(args.target),
        "softmax": obj.softmax(args.target),
    }
    images = []
    for name, objective in kinds.items():
        res = render_careful(model, objective, steps=args.steps, size=args.size, seed=0,
                             progress=False)
        images.append(res.images)
        print(f"{name:18s} {objective.name:40s} reached {float(res.values[0]):.3f}, "
              f"saturated px {100 * metrics.saturated_share(res.images):.1f}%", flush=True)
    path = featviz.images.save(torch.cat(images), Path(args.out) / "objectives.png",
                               labels=list(kinds), ncol=len(kinds))
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
