"""The diversity figure of "Feature Visualization" (Olah et al., Distill 2017): four images of
one channel rendered as a batch, first with the channel objective alone, then with the
diversity term added.

Without the term the four images start from different noise but climb towards the same
optimum, so they tend to show the same pattern (shifted or recoloured a little). The diversity
term is minus the mean cosine similarity between the images' Gram matrices at a layer (the
style of the activations, where things are being ignored), so adding it with a positive weight
pushes the batch apart in *kind*: watch the second row for different textures, colours and
sub-patterns of the same channel, and the printed Gram similarity dropping while the channel
objective stays high.

    python examples/diversity.py --out out/diversity
    python examples/diversity.py --quick --model cifar_resnet20 --weights random --out /tmp/d
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


def gram_similarity(model: torch.nn.Module, layer: str, images: torch.Tensor) -> float:
    """Mean pairwise cosine similarity of the images' Gram matrices at ``layer`` (what the
    diversity term lowers): 1 for images of identical style, lower for more diverse ones."""
    per_image = metrics.objective_value(model, obj.diversity(layer), images)
    # diversity() gives image i minus its summed similarity to the others, over the batch size
    n = len(images)
    return float(-per_image.sum() / (n - 1))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_model_args(ap)
    ap.add_argument("--layer", help="default: the model's (InceptionV1: mixed4a)")
    ap.add_argument("--channel", type=int, help="channel of --layer (default: the model's)")
    ap.add_argument("--diversity-layer", default=None,
                    help="layer whose Gram matrices are compared (default: --layer)")
    ap.add_argument("--weight", type=float,
                    help="weight of the diversity term (the channel objective has weight 1; "
                         "default: the model's, MobileNetV2 30)")
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--steps", type=int, default=512)
    ap.add_argument("--quick", action="store_true", help="a few steps at a small size")
    ap.add_argument("--out", default="out/diversity")
    args = ap.parse_args(argv)
    if args.quick:
        args.size, args.steps = 32, 8
    model = load_model(args)
    layers = featviz.hooks.named_layers(model)
    args.layer = late_layer(model, default(args, "layer", args.layer))
    args.channel = default(args, "diversity_channel", args.channel)
    args.weight = default(args, "diversity_weight", args.weight)
    div_layer = args.diversity_layer or args.layer
    if div_layer not in layers:
        div_layer = args.layer
    channel = obj.channel(args.layer, args.channel)
    rows = {
        "channel": channel,
        f"+ {args.weight:g} diversity": channel + args.weight * obj.diversity(div_layer),
    }
    images, labels = [], []
    for name, objective in rows.items():
        res = render_careful(model, objective, steps=args.steps, size=args.size,
                             batch=args.batch, seed=0, progress=False)
        reached = metrics.objective_value(model, channel, res.images)
        sim = gram_similarity(model, div_layer, res.images)
        print(f"{name:18s} channel objective per image "
              + " ".join(f"{v:.2f}" for v in reached.tolist())
              + f" | mean {float(reached.mean()):.2f} | Gram similarity {sim:.3f}"
              + f" | {res.seconds:.0f} s", flush=True)
        images.append(res.images)
        labels += [f"{name} {v:.1f}" for v in reached.tolist()]
    path = featviz.images.save(torch.cat(images), Path(args.out) / "diversity.png",
                               labels=labels, ncol=args.batch)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
