"""Circuits on InceptionV1 (the Distill Circuits thread): how a unit is built from the units
before it, and the families of units that synthetic stimuli find.

Writes five figures: the stimulus families; the first layer's filters; a ``mixed4c`` unit
with the ``mixed4b`` units that excite and inhibit it most (expanded weights, Zoom In) and the
``mixed4d`` units it excites; the same unit's weights through six weight factors of the
layer (Visualizing Weights); and the curve-detector family of ``mixed3b`` (Curve Detectors)
with each unit's feature visualization, tuning curve and strongest photo patches. It also
scans ``mixed3a`` with high-low frequency boundaries and prints both families' counts and
orientation coverage.

    python examples/circuits.py          # examples/figures/circuits_*.png (~15 min, 1 core)
    python examples/circuits.py --quick  # tiny renders, 40 photos: a smoke run (~1 min)

The channel numbers are BVLC GoogLeNet's (featviz's InceptionV1): the Distill articles used a
TF training of the same architecture, whose channels do not carry over (their curve detectors
are mixed3b 379, 385, ...; here the scan finds its own).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
from _shared import SHARED, add_model_args, load_model

import featviz
from featviz import circuits


def parse(argv: list[str] | None) -> argparse.Namespace:
    """The command line."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_model_args(ap)
    ap.add_argument("--unit", default="mixed4c:447", help="the circuit's unit, LAYER:CHANNEL")
    ap.add_argument("--source", default="mixed4b", help="the layer feeding the unit")
    ap.add_argument("--next", default="mixed4d", help="the layer the unit feeds")
    ap.add_argument("--curves-layer", default="mixed3b")
    ap.add_argument("--high-low-layer", default="mixed3a")
    ap.add_argument("--images", default=str(SHARED / "imagenet-sample"),
                    help="photos for the family sheet's patches")
    ap.add_argument("--steps", type=int, default=256, help="render steps per picture")
    ap.add_argument("--photos", type=int, default=1000, help="photos searched for patches")
    ap.add_argument("--quick", action="store_true", help="8 render steps, 40 photos, 4 rows")
    ap.add_argument("--out", default=str(Path(__file__).parent / "figures"))
    args = ap.parse_args(argv)
    if args.quick:
        args.steps, args.photos = 8, 40
    return args


def weight_views(model, args: argparse.Namespace, out: Path, cache) -> None:
    """The first layer's filters, the unit's circuit and its weight factors."""
    circuits.first_layer_filters(model, path=out / "circuits_first_layer.png")
    start = time.perf_counter()
    found = circuits.circuit(model, args.unit, args.source, k=4, next_layer=args.next,
                             cache=cache, path=out / "circuits_unit.png")
    print(f"{found!r}; inhibited by "
          + ", ".join(f"{c.channel} ({c.strength:+.3g})" for c in found.inhibits)
          + f"; excites {args.next} "
          + ", ".join(f"{c.channel} ({c.strength:+.3g})" for c in found.feeds)
          + f" [{time.perf_counter() - start:.0f} s, {cache.rendered} render batch]")
    start = time.perf_counter()
    factors = circuits.weight_factors(found.weights, 6)
    circuits.factor_figure(model, factors, found.unit[1], cache=cache,
                           path=out / "circuits_factors.png")
    print(f"{factors!r} [{time.perf_counter() - start:.0f} s]")


def stimuli(out: Path) -> None:
    """Eight stimuli of each family, spread over its grid, in a 96 px box on a 128 px image."""
    rows, labels = [], []
    for name in ("lines", "gabors", "curves", "high_low", "centre_surround"):
        images, grid = circuits.draw(name, 128, (16, 16, 112, 112))
        pick = torch.linspace(0, len(images) - 1, 8).round().long()
        rows.append(images[pick])
        labels += [f"{name} " + " ".join(f"{v:g}" for v in grid[i].values()
                                          if isinstance(v, (int, float))) for i in pick]
    featviz.images.save(torch.cat(rows), out / "circuits_stimuli.png", labels=labels, ncol=8)


def families(model, args: argparse.Namespace, out: Path, cache) -> None:
    """The curve detectors (with their sheet) and the high-low frequency detectors."""
    curves = circuits.scan(model, args.curves_layer, "curves")
    print(curves.summary())
    start = time.perf_counter()
    curves.sheet(out / "circuits_curves.png", images=args.images, k=4,
                 max_units=4 if args.quick else 12, max_images=args.photos, cache=cache)
    print(f"curve sheet: {time.perf_counter() - start:.0f} s")
    print(circuits.scan(model, args.high_low_layer, "high_low").summary())


def main(argv: list[str] | None = None) -> int:
    """Write the figures and print what they found."""
    args = parse(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    model = load_model(args)
    torch.manual_seed(0)
    cache = circuits.RenderCache(steps=args.steps, size=128 if args.quick else 224)
    stimuli(out)
    weight_views(model, args, out, cache)
    families(model, args, out, cache)
    print(f"wrote {out}/circuits_*.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
