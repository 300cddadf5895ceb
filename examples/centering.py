"""Does subtracting the dataset mean matter? Feed each photo with and without it.

Feature-map pictures normalized per channel look nearly the same either way, yet the activation
variance and the class probabilities change a lot. For every photo this prints, per chosen
layer, the variance ratio (without / with mean subtraction) and the mean correlation of the
normalized maps, and the softmax's KL divergence and top-1 agreement; an HTML page compares
the maps of the first photo side by side.

    python examples/centering.py --out out/centering
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from _shared import SHARED, add_model_args, default, load_model

import featviz
from featviz import featuremaps as fm


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_model_args(ap)
    ap.add_argument("--images", default=str(SHARED / "images"))
    ap.add_argument("--layers", help="LAYER,LAYER,... (default: the model's)")
    ap.add_argument("--out", default="out/centering")
    args = ap.parse_args(argv)
    model = load_model(args)
    args.layers = default(args, "centering_layers", args.layers)
    # the model computes (x - mean) / std; feeding x + mean makes that x / std: no centering
    mean = model.mean.cpu()
    layers = args.layers.split(",")
    first = layers[0]
    labels = SHARED / "models" / "imagenet_classes.txt"
    print(f"| photo | {first} variance ratio | {first} map correlation | deepest layer variance "
          f"ratio | KL | top-1 with | top-1 without | agree |")
    print("|---|---:|---:|---:|---:|---|---|---|")
    agree = 0
    photos = featviz.images.list_images(args.images)
    for n, path in enumerate(photos):
        img = featviz.images.load(path, size=model.input_size)
        raw = img + mean
        cmp = fm.compare(model, img, raw, layers)
        with_c = fm.top_classes(model, img, 1, labels if labels.is_file() else None)[0][1]
        without = fm.top_classes(model, raw, 1, labels if labels.is_file() else None)[0][1]
        agree += cmp.top1_agree
        print(f"| {path.name} | {cmp.rows[0][1]:.2f} | {cmp.rows[0][2]:.3f} | "
              f"{cmp.rows[-1][1]:.2f} | {cmp.kl:.3f} | {with_c} | {without} | "
              f"{'yes' if cmp.top1_agree else 'no'} |", flush=True)
        if n == 0:
            page = cmp.report(Path(args.out) / "centering.html")
    print(f"\ntop-1 agrees for {agree}/{len(photos)} photos; side by side: {page}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
