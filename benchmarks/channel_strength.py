"""How strong and how clean are channel visualizations of the real MobileNetV2?

For each (layer, channel) it renders a 224-px image (Fourier + decorrelated colour + the
"standard" transforms, Adam 0.05) and prints, as a markdown table: the channel's mean activation
on the rendered image, the highest mean activation that channel reaches on any photo in the
image folder (each resized on its shorter side and centre-cropped to 224), their ratio, and the
share of saturated pixels (any colour value within 0.02 of 0 or 1). The images are written to
--out for a look.

    python benchmarks/channel_strength.py --steps 512 --out out/strength
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import torch

import featviz
from featviz import objectives as obj
from featviz.hooks import LayerTap, frozen

HERE = Path(__file__).resolve().parent
SHARED = Path(os.environ.get("FEATVIZ_SHARED", HERE.parent.parent / "shared"))
DEFAULT_TARGETS = "features.14:12,features.4:5,features.7:20,features.17:100"


def channel_means(model, images: torch.Tensor, layer: str, channel: int) -> torch.Tensor:
    """Mean activation of one channel for each image of a batch (no transforms)."""
    with frozen(model), LayerTap(model, [layer]) as tap, torch.no_grad():
        return tap(images)[layer][:, channel].mean(dim=(1, 2))


def saturated_share(img: torch.Tensor, margin: float = 0.02) -> float:
    """Share of pixels with any colour value within ``margin`` of 0 or 1."""
    sat = (img <= margin) | (img >= 1 - margin)
    return float(sat.any(dim=1).float().mean())


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--weights", default=str(SHARED / "models" / "mobilenet_v2_imagenet_coral.pth"))
    ap.add_argument("--images", default=str(SHARED / "images"))
    ap.add_argument("--targets", default=DEFAULT_TARGETS, help="LAYER:C,LAYER:C,...")
    ap.add_argument("--steps", type=int, default=512)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="out/strength")
    args = ap.parse_args(argv)

    model = featviz.models.load("mobilenet_v2", weights=args.weights, mean=(0.5,) * 3,
                                std=(0.5,) * 3)
    photos = torch.cat([featviz.images.load(p, size=args.size)
                        for p in featviz.images.list_images(args.images)])
    out = Path(args.out)
    print("| layer:channel | rendered mean act. | best photo | ratio | saturated px | s |")
    print("|---|---:|---:|---:|---:|---:|")
    worst_ratio, worst_sat = float("inf"), 0.0
    for target in args.targets.split(","):
        layer, c = target.rsplit(":", 1)
        c = int(c)
        t0 = time.perf_counter()
        res = featviz.render(model, obj.channel(layer, c), steps=args.steps, size=args.size,
                             seed=args.seed, progress=False)
        secs = time.perf_counter() - t0
        rendered = float(channel_means(model, res.images, layer, c)[0])
        best = float(channel_means(model, photos, layer, c).max())
        ratio = rendered / best if best > 0 else float("inf")
        sat = saturated_share(res.images)
        worst_ratio, worst_sat = min(worst_ratio, ratio), max(worst_sat, sat)
        res.save(out / f"{layer}_{c}.png")
        print(f"| {layer}:{c} | {rendered:.3f} | {best:.3f} | {ratio:.1f}x | {100 * sat:.2f}% "
              f"| {secs:.0f} |", flush=True)
    print(f"\nweakest ratio {worst_ratio:.1f}x (target >= 5x); most saturated "
          f"{100 * worst_sat:.2f}% (target < 5%); images in {out}/")
    return 0 if worst_ratio >= 5 and worst_sat < 0.05 else 1


if __name__ == "__main__":
    sys.exit(main())
