"""The preconditioning figure of "Feature Visualization" (Olah et al., Distill 2017): the same
channel optimized in three parameterizations (pixel, Fourier, Fourier + decorrelated colour),
each without and with transformation robustness, seen at the same step budgets.

The parameterization does not change which images are optimal, only the path gradient descent
takes: in the pixel basis the steepest direction is dominated by high frequencies, so the image
fills with noise long before a pattern forms; the Fourier basis scaled by 1/frequency whitens
the spectrum, and decorrelated colour does the same for the colour channels, so the same step
budget gives smoother, more coloured images. Read each row left to right (more steps) and
compare rows at the same column; the printed high-frequency share should be lower for the
Fourier rows. Transformation robustness is the other remedy (it removes checkerboards) and
the two combine.

    python examples/preconditioning.py --out out/preconditioning
    python examples/preconditioning.py --quick --model cifar_resnet20 --weights random --out /tmp/p
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from _shared import add_model_args, default, late_layer, load_model, render_careful
from PIL import Image

import featviz
from featviz import metrics, param
from featviz import objectives as obj

PARAMS = {  # name: (Fourier, decorrelated colour)
    "pixel": (False, False),
    "Fourier": (True, False),
    "Fourier + colour": (True, True),
}



def save_small(images: torch.Tensor, path: Path, labels: list[str], ncol: int) -> Path:
    """Write a labelled grid like :func:`featviz.images.save`, but with a 256-colour palette (no
    dithering): 18 tiles of pixel noise would otherwise make a PNG of about 800 KB."""
    path.parent.mkdir(parents=True, exist_ok=True)
    pic = featviz.images.grid(images, labels, ncol).quantize(256, dither=Image.Dither.NONE)
    pic.save(path, optimize=True)
    return path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_model_args(ap)
    ap.add_argument("--layer", help="default: the model's (InceptionV1: mixed4a)")
    ap.add_argument("--channel", type=int, help="channel of --layer (default: the model's)")
    ap.add_argument("--budgets", default="64,256,1024",
                    help="step budgets (comma-separated); the last is the number of steps")
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--quick", action="store_true", help="a few steps at a small size")
    ap.add_argument("--out", default="out/preconditioning")
    args = ap.parse_args(argv)
    budgets = sorted({int(b) for b in args.budgets.split(",")})
    if args.quick:
        args.size, budgets = 32, [2, 4, 8]
    model = load_model(args)
    args.layer = late_layer(model, default(args, "layer", args.layer))
    args.channel = default(args, "channel", args.channel)
    objective = obj.channel(args.layer, args.channel)
    images, labels = [], []
    for pname, (fft, decorrelate) in PARAMS.items():
        for robust in (False, True):
            name = pname + (" + robustness" if robust else "")
            p = param.image(args.size, fft=fft, decorrelate=decorrelate, seed=0)
            res = render_careful(model, objective, p, steps=budgets[-1], thresholds=budgets,
                                 transforms="standard" if robust else "none", progress=False)
            cells = []
            for b in budgets:
                snap = res.snapshots[b]
                value = float(metrics.objective_value(model, objective, snap)[0])
                hf = metrics.high_frequency_share(snap)
                cb = metrics.checkerboard_energy(snap)
                cells.append(f"{b}: {value:6.2f} hf {hf:.3f} cb {cb:5.2f}")
                images.append(snap)
                short = name.replace(" + ", "+").replace("robustness", "rob.")
                labels.append(f"{short}, {b} steps" if len(short) < 12 else f"{short} {b}")
            print(f"{name:29s} " + " | ".join(cells) + f" | {res.seconds:.0f} s", flush=True)
    path = save_small(torch.cat(images), Path(args.out) / "preconditioning.png", labels,
                      len(budgets))
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
