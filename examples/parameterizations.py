"""One channel under each parameterization featviz offers: pixel, Fourier with decorrelated
colour (lucid's default), MACO (fixed natural-image magnitude, only the phase optimized; Fel et
al. 2023), lucid's Laplacian pyramid, a CPPN (Distill "Differentiable Image
Parameterizations" section 3) and a transparent (RGBA) image (section 4); the aligned
parameterization (section 1) is in ``interaction.py``.

What to look for: pixel images are full of high-frequency noise; Fourier and the Laplacian
pyramid are smoother; MACO keeps a photo's energy per frequency, so its images look like
photographs in texture even where the content is strange (the script also writes MACO's
transparency map: the accumulated gradient, bright where the image mattered); the CPPN paints
smooth, resolution-free shapes (rendered without transforms, its default: with jitter it
stalls; ``cppn_large.png`` samples the same network at 4x the size);
the RGBA image keeps only what drives the channel opaque, shown over a checkerboard.

    python examples/parameterizations.py --out out/parameterizations
    python examples/parameterizations.py --quick --model cifar_resnet20 --weights random --out p
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
from _shared import add_model_args, default, late_layer, load_model, render_careful

import featviz
from featviz import metrics, param
from featviz import objectives as obj

CHECKER = 0.7  # grey of the light checkerboard squares behind transparent images



def parameterizations(size: int) -> dict:
    """Name -> a builder of each parameterization, seeded alike."""
    return {
        "pixel": lambda: param.image(size, fft=False, decorrelate=False, seed=0),
        "Fourier + colour": lambda: param.image(size, seed=0),
        "MACO": lambda: param.maco(size, seed=0),
        "Laplacian pyramid": lambda: param.laplacian(size, seed=0),
        "CPPN": lambda: param.cppn(size, seed=0),
        "RGBA": lambda: param.image(size, alpha=True, seed=0),
    }


def over_checkerboard(rgba: torch.Tensor, cell: int = 8) -> torch.Tensor:
    """RGBA [B,4,H,W] composited over a grey checkerboard, [B,3,H,W]."""
    h, w = rgba.shape[-2:]
    yy, xx = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    board = torch.where(((yy // cell + xx // cell) % 2) == 0, CHECKER, CHECKER - 0.2)
    return featviz.param.alpha.blend(rgba, board.expand(3, h, w)[None])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_model_args(ap)
    ap.add_argument("--layer", help="default: the model's (InceptionV1: mixed4a)")
    ap.add_argument("--channel", type=int, help="channel of --layer (default: the model's)")
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--steps", type=int, default=512)
    ap.add_argument("--cppn-steps", type=int, default=512, help="steps for the CPPN")
    ap.add_argument("--quick", action="store_true", help="a few steps at a small size")
    ap.add_argument("--out", default="out/parameterizations")
    args = ap.parse_args(argv)
    if args.quick:
        args.size, args.steps, args.cppn_steps = 32, 8, 8
    model = load_model(args)
    args.layer = late_layer(model, default(args, "layer", args.layer))
    args.channel = default(args, "channel", args.channel)
    objective = obj.channel(args.layer, args.channel)
    out = Path(args.out)
    shown, labels = [], []
    print("| parameterization | objective | objective of the RGB image | high-freq. share | "
          "saturated px | seconds |\n|---|---:|---:|---:|---:|---:|")
    for name, build in parameterizations(args.size).items():
        p = build()
        t0 = time.perf_counter()
        res = render_careful(model, objective, p, steps=args.cppn_steps if name == "CPPN"
                             else args.steps, progress=False)
        seconds = time.perf_counter() - t0
        # what the model saw, and what is shown (MACO's contrast stretched, as its paper does)
        seen = res.images[:, :3] if name != "RGBA" else over_checkerboard(res.images)
        rgb = res.shown()[:, :3] if name != "RGBA" else seen
        stem = name.split()[0].lower()
        res.save(out / f"{stem}.png")
        if name == "MACO":
            featviz.images.save(res.saliency, out / "maco_transparency.png")
            featviz.images.save(res.with_transparency(), out / "maco_rgba.png")
        if name == "CPPN":
            with torch.no_grad():
                featviz.images.save(p.at(4 * args.size), out / "cppn_large.png")
        value = float(metrics.objective_value(model, objective, seen)[0])
        print(f"| {name} | {float(res.values[0]):.2f} | {value:.2f} | "
              f"{metrics.high_frequency_share(rgb[0]):.3f} | "
              f"{100 * metrics.saturated_share(rgb):.1f}% | {seconds:.0f} |", flush=True)
        shown.append(rgb)
        labels.append(name)
        if name == "MACO":
            shown.append(res.saliency.expand(-1, 3, -1, -1))
            labels.append("MACO transparency")
    sheet = featviz.images.save(torch.cat(shown), out / "parameterizations.png", labels=labels,
                                ncol=len(shown))
    print(f"wrote {sheet} and one PNG per parameterization in {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
