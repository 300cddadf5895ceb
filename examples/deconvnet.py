"""Zeiler & Fergus on the real MobileNetV2: top-k patches with deconvnet projections, and the
occlusion check that tells whether a projection can be trusted.

For a few channels of two layers it finds the photos (in ../shared/images by default) that
excite each channel most, cuts the patch each unit sees, and writes one figure per layer with
the deconvnet projections beside the patches. Then, for every channel and its best photo, it
covers the square where the projection is largest, and, separately, random squares of the same
size, and prints how much the activation drops: a projection that shows what the unit responds
to makes the first drop much larger.

    python examples/deconvnet.py --out out/deconvnet
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from _shared import SHARED, add_model_args, default, load_model

import featviz
from featviz import deconv


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_model_args(ap)
    ap.add_argument("--images", default=str(SHARED / "images"))
    ap.add_argument("--layers", help="LAYER,LAYER,... (default: the model's)")
    ap.add_argument("--channels", default="0-7", help="channels of each layer, e.g. 0-7")
    ap.add_argument("--k", type=int, default=4)
    ap.add_argument("--out", default="out/deconvnet")
    args = ap.parse_args(argv)
    model = load_model(args)
    args.layers = default(args, "deconv_layers", args.layers)
    channels = featviz.objectives.parse_channels(args.channels)
    out = Path(args.out)
    rows = []
    for layer in args.layers.split(","):
        top = deconv.top_k(model, args.images, layer, channels, k=args.k)
        path = top.save(out / f"{layer}_top{args.k}.png")
        f = top.field
        print(f"{layer}: receptive field {f.size[0]} px, jump {f.jump[0]} px -> {path}")
        for c, entries in top.entries.items():
            best = entries[0]
            img = featviz.images.load(best.source, size=model.input_size)
            highlighted, random = deconv.occlusion_check(model, img, layer, c)
            rows.append((layer, c, Path(best.source).name, best.value, highlighted, random))

    print("\n| layer | channel | best photo | activation | drop, projected square | "
          "drop, random squares |")
    print("|---|---:|---|---:|---:|---:|")
    for layer, c, name, value, hi, rnd in rows:
        print(f"| {layer} | {c} | {name} | {value:.2f} | {hi:.2f} | {rnd:.2f} |")
    wins = sum(hi > rnd for *_, hi, rnd in rows)
    print(f"\nthe projected square drops the activation more than random squares for "
          f"{wins}/{len(rows)} channels ({100 * wins / len(rows):.0f}%)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
