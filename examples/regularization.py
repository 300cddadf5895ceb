"""The regularization figure of "Feature Visualization" (Olah et al., Distill 2017): the same
channel optimized with no regularization, with three frequency penalties (L1, total variation,
blur) and with transformation robustness.

Every image uses the plain pixel parameterization (no Fourier basis, no colour decorrelation),
so the regularizer is the only thing that differs. Unregularized, the image fills with
high-frequency noise and checkerboard patterns that excite the channel without looking like
anything; the penalties trade some of the objective for smoother images (L1 pulls pixels back
to grey, total variation punishes differences between neighbours, blur smooths the image a
little every step); transformation robustness (jitter, scale, rotate each step) instead asks
for an image that still works when moved, which removes the pixel-exact checkerboards. The
printed high-frequency share and checkerboard energy put numbers on what the eye sees.

    python examples/regularization.py --out out/regularization
    python examples/regularization.py --quick --model cifar_resnet20 --weights random --out /tmp/r
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from _shared import add_model_args, default, late_layer, load_model, render_careful

import featviz
from featviz import metrics, param
from featviz import objectives as obj


def configs(channel: obj.Objective, l1: float, tv: float, blur: float
            ) -> dict[str, tuple[obj.Objective, str]]:
    """Name -> (objective, transforms preset) for the five columns of the figure."""
    return {
        "none": (channel, "none"),
        f"L1 {l1:g}": (channel - l1 * obj.l1(), "none"),
        f"total variation {tv:g}": (channel - tv * obj.total_variation(), "none"),
        f"blur {blur:g}": (channel - blur * obj.blur(), "none"),
        "robustness": (channel, "standard"),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_model_args(ap)
    ap.add_argument("--layer", help="default: the model's (InceptionV1: mixed4a)")
    ap.add_argument("--channel", type=int, help="channel of --layer (default: the model's)")
    ap.add_argument("--l1", type=float, help="weight of the L1 penalty (default: the model's; "
                                                 "MobileNetV2 300)")
    ap.add_argument("--tv", type=float, help="weight of total variation (MobileNetV2: 150)")
    ap.add_argument("--blur", type=float, help="weight of the blur penalty (MobileNetV2: 1e4)")
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--steps", type=int, default=512)
    ap.add_argument("--quick", action="store_true", help="a few steps at a small size")
    ap.add_argument("--out", default="out/regularization")
    args = ap.parse_args(argv)
    if args.quick:
        args.size, args.steps = 32, 8
    model = load_model(args)
    args.layer = late_layer(model, default(args, "layer", args.layer))
    args.channel = default(args, "channel", args.channel)
    args.l1, args.tv, args.blur = (default(args, k, getattr(args, k)) for k in ("l1", "tv", "blur"))
    channel = obj.channel(args.layer, args.channel)
    images, labels = [], []
    for name, (objective, transforms) in configs(channel, args.l1, args.tv, args.blur).items():
        p = param.image(args.size, fft=False, decorrelate=False, seed=0)
        res = render_careful(model, objective, p, steps=args.steps, transforms=transforms,
                             progress=False)
        img = res.images
        reached = float(metrics.objective_value(model, channel, img)[0])
        hf, cb = metrics.high_frequency_share(img), metrics.checkerboard_energy(img)
        print(f"{name:24s} channel objective {reached:7.2f} | high-freq. share {hf:.3f} | "
              f"checkerboard {cb:6.2f} | {res.seconds:.0f} s", flush=True)
        images.append(img)
        labels.append(name)
    path = featviz.images.save(torch.cat(images), Path(args.out) / "regularization.png",
                               labels=labels, ncol=len(images))
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
