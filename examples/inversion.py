"""Mahendran & Vedaldi's feature inversion on the real MobileNetV2: one photo reconstructed
from the activations of five depths, in one figure, with the error table printed.

Shallow layers keep nearly everything (the reconstruction is close to the photo); deep ones
keep the gist: parts and textures in roughly the right places, colours and exact positions
lost.

    python examples/inversion.py --out out/inversion
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from _shared import SHARED, add_model_args, default, load_model

import featviz
from featviz import inversion


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_model_args(ap)
    ap.add_argument("--image", default=str(SHARED / "images" / "cat.jpg"))
    ap.add_argument("--layers", help="LAYER,LAYER,... (default: the model's)")
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--out", default="out/inversion")
    args = ap.parse_args(argv)
    model = load_model(args)
    args.layers = default(args, "inversion_layers", args.layers)
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
