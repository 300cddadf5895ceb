"""How strong and how clean are channel visualizations of a real model (InceptionV1 by default)?

For each (layer, channel) it renders a 224-px image (Fourier + decorrelated colour + the
"standard" transforms, Adam 0.05, 1e4 x the clipping regularizer subtracted, the last 32
steps without transforms (render's polish), channels of one layer rendered together as a
batch, each image from its own seed) and prints, as a markdown table: the channel's mean
activation on the rendered image, the highest mean activation that channel reaches on any
photo of the image folder (each resized on its shorter side and centre-cropped, streamed in
batches), the photo that reaches it, their ratio, the channel's mean activation under 16
random standard transforms the render never drew (held out: how robust the image is), the
share of saturated pixels (any colour value within 0.02 of 0 or 1) and the image's
high-frequency share (power above half the Nyquist frequency: fine grain). The images are
written to --out for a look, and with --figure as one labelled sheet.

    python benchmarks/channel_strength.py --steps 512 --out out/strength
    python benchmarks/channel_strength.py --polish 0       # every step transformed
    python benchmarks/channel_strength.py --model mobilenet_v2 --images ../shared/images
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections import defaultdict
from pathlib import Path

import torch

import featviz
from featviz import objectives as obj
from featviz.hooks import LayerTap, frozen

HERE = Path(__file__).resolve().parent
SHARED = Path(os.environ.get("FEATVIZ_SHARED", HERE.parent.parent / "shared"))
# per model: how to load it and which channels to render by default. InceptionV1: two
# channels of each block from mixed3a to mixed5b (mixed4a:476 is lucid's tutorial channel)
MODELS = {
    "inceptionv1": dict(weights=SHARED / "models" / "googlenet_bvlc_imagenet.pth", stats={},
                        targets="mixed3a:12,mixed3a:65,mixed3b:147,mixed3b:300,mixed4a:97,"
                                "mixed4a:476,mixed4b:36,mixed4b:409,mixed4c:62,mixed4c:447,"
                                "mixed4d:91,mixed4d:504,mixed4e:55,mixed4e:721,mixed5a:180,"
                                "mixed5b:399"),
    "mobilenet_v2": dict(weights=SHARED / "models" / "mobilenet_v2_imagenet_coral.pth",
                         stats=dict(mean=(0.5,) * 3, std=(0.5,) * 3),
                         targets="features.14:12,features.4:5,features.7:20,features.17:100"),
}


def best_photos(model, folder: str, size: int, targets: dict[str, list[int]],
                batch: int = 50) -> dict[tuple[str, int], tuple[float, str]]:
    """For each (layer, channel): its highest mean activation over the photos of ``folder``
    and the photo that reaches it, the photos streamed ``batch`` at a time."""
    best: dict[tuple[str, int], tuple[float, str]] = {}
    for chunk, photos in featviz.dataset.iter_batches(folder, size, batch):
        with frozen(model), LayerTap(model, list(targets)) as tap, torch.no_grad():
            acts = tap(photos)
        for layer, channels in targets.items():
            for c in channels:
                means = acts[layer][:, c].mean(dim=(1, 2))
                j = int(means.argmax())
                if (layer, c) not in best or float(means[j]) > best[layer, c][0]:
                    best[layer, c] = (float(means[j]), Path(chunk[j]).name)
    return best


def report(model, img: torch.Tensor, layer: str, c: int, best: tuple[float, str],
           secs: float) -> tuple[float, float]:
    """Print the table's row for one render; return its ratio to the best photo and its
    saturated share."""
    unit = obj.channel(layer, c)
    rendered = float(featviz.metrics.objective_value(model, unit, img)[0])
    value, photo = best
    ratio = rendered / value if value > 0 else float("inf")
    sat = featviz.metrics.saturated_share(img)
    held_out = featviz.transforms.resolve("standard", tuple(img.shape[-2:]))
    held = float(featviz.metrics.robust_objective(model, unit, img, held_out)[0])
    print(f"| {layer}:{c} | {rendered:.1f} | {value:.1f} | {photo} | {ratio:.1f}x | "
          f"{held:.1f} | {100 * sat:.2f}% | {featviz.metrics.high_frequency_share(img):.3f} | "
          f"{secs:.0f} |", flush=True)
    return ratio, sat


def save_sheet(renders: dict[str, torch.Tensor], path: str, tile: int = 150) -> None:
    """The renders shrunk to ``tile`` px (antialiased), labelled, eight to a row."""
    small = [torch.nn.functional.interpolate(img, size=(tile, tile), mode="bilinear",
                                             antialias=True, align_corners=False).clamp(0, 1)
             for img in renders.values()]
    featviz.images.save(torch.cat(small), path, labels=list(renders), ncol=8)


def _targets(text: str) -> dict[str, list[int]]:
    """``"L:C,L:C"`` grouped by layer, in order."""
    grouped: dict[str, list[int]] = defaultdict(list)
    for target in text.split(","):
        layer, c = target.rsplit(":", 1)
        grouped[layer].append(int(c))
    return dict(grouped)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="inceptionv1", choices=sorted(MODELS))
    ap.add_argument("--weights", help="default: the model's file in ../shared/models")
    ap.add_argument("--images", default=str(SHARED / "imagenet-sample"))
    ap.add_argument("--targets", help="LAYER:C,LAYER:C,... (default: the model's)")
    ap.add_argument("--steps", type=int, default=512)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--lr", type=float, default=None, help="Adam's rate (default: render's)")
    ap.add_argument("--ema", type=float, default=None,
                    help="show the parameters' moving average with this decay (render's ema)")
    ap.add_argument("--adam-floor", type=float, default=None, metavar="K",
                    help="floor Adam's denominator at K x each image's mean (render's "
                         "adam_floor; default: plain Adam)")
    ap.add_argument("--transforms", default="auto", choices=["auto", *featviz.transforms.PRESETS],
                    help="render's transforms (default: the parameterization's, standard)")
    ap.add_argument("--clipping", type=float, default=1e4,
                    help="weight of the clipping regularizer subtracted from each channel "
                         "(default 1e4: keeps colours off 0 and 1; 0 renders without it)")
    ap.add_argument("--polish", type=int, default=32, metavar="N",
                    help="the last N steps without transforms (render's polish; default 32, "
                         "0: every step transformed)")
    ap.add_argument("--figure", help="also write the renders, 150 px, as one labelled sheet")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    ap.add_argument("--out", default="out/strength")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    spec = MODELS[args.model]
    model = featviz.models.load(args.model, weights=args.weights or spec["weights"],
                                **spec["stats"])
    targets = _targets(args.targets or spec["targets"])
    best = best_photos(model, args.images, args.size, targets)
    print(f"{args.model}, {args.steps} steps, {args.size} px; best photo of "
          f"{len(featviz.images.list_images(args.images))} in {args.images}")
    print("| layer:channel | rendered mean | best photo | (which) | ratio | held out | "
          "saturated px | high-freq. share | s |")
    print("|---|---:|---:|---|---:|---:|---:|---:|---:|")
    ratios, sats, renders = [], [], {}
    for layer, channels in targets.items():
        t0 = time.perf_counter()
        objective = obj.channel(layer, channels if len(channels) > 1 else channels[0])
        if args.clipping:
            objective = objective - args.clipping * obj.clipping()
        res = featviz.render(model, objective, steps=args.steps, size=args.size, seed=args.seed,
                             progress=False, lr=args.lr, ema=args.ema,
                             adam_floor=args.adam_floor, transforms=args.transforms,
                             polish=args.polish)
        secs = (time.perf_counter() - t0) / len(channels)
        for i, c in enumerate(channels):
            img = renders[f"{layer}:{c}"] = res.images[i:i + 1]
            featviz.images.save(img, Path(args.out) / f"{layer}_{c}.png")
            ratio, sat = report(model, img, layer, c, best[layer, c], secs)
            ratios.append(ratio)
            sats.append(sat)
    if args.figure:
        save_sheet(renders, args.figure)
    print(f"\nweakest ratio {min(ratios):.1f}x (target >= 5x); most saturated "
          f"{100 * max(sats):.2f}% (target < 2%); images in {args.out}/")
    return 0 if min(ratios) >= 5 and max(sats) < 0.02 else 1


if __name__ == "__main__":
    sys.exit(main())
