"""Mahendran & Vedaldi's feature inversion on the real MobileNetV2: one photo reconstructed
from the activations of five depths, in one figure, with the error table printed.

Shallow layers keep nearly everything (the reconstruction is close to the photo); deep ones
keep the gist: parts and textures in roughly the right places, colours and exact positions
lost.

    python examples/inversion.py --out out/inversion
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import torch

import featviz
from featviz import inversion

HERE = Path(__file__).resolve().parent
SHARED = Path(os.environ.get("FEATVIZ_SHARED", HERE.parent.parent / "shared"))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="mobilenet_v2")
    ap.add_argument("--weights", default=str(SHARED / "models" / "mobilenet_v2_imagenet_coral.pth"))
    ap.add_argument("--mean", type=float, nargs=3, default=(0.5, 0.5, 0.5))
    ap.add_argument("--std", type=float, nargs=3, default=(0.5, 0.5, 0.5))
    ap.add_argument("--image", default=str(SHARED / "images" / "cat.jpg"))
    ap.add_argument("--layers", default="features.2,features.4,features.7,features.10,"
                                        "features.14,features.17")
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--out", default="out/inversion")
    args = ap.parse_args(argv)
    torch.set_num_threads(os.cpu_count() or 1)

    model = featviz.models.load(args.model, weights=args.weights, mean=args.mean, std=args.std)
    img = featviz.images.load(args.image, size=model.input_size)
    sweep = inversion.invert_layers(model, img, args.layers.split(","), steps=args.steps,
                                    progress=False)
    out = Path(args.out)
    path = sweep.save(out / f"{Path(args.image).stem}_inversions.png")
    print(sweep.table())
    print(f"\nwrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
