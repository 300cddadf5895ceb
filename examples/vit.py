"""A real vision transformer, rendered: ViT-Tiny/16's MLP units and class logits.

Two sheets, rendered with what ``render`` does for ViT-Tiny unasked (the transformer course
its model declares: jitter that breaks the 16-px patch grid; see docs/transformers.md):

- ``vit_units.png``: 16 MLP hidden units (after the GELU, the mean over the patches) spread
  over blocks 1-11 and chosen by a fixed seed before looking (the units
  ``benchmarks/vit_quality.py`` measures), each render beside the photo patch that excites
  the unit most among the sample photos: the token's 16-px patch outlined, one patch of the
  photo around it.
- ``vit_logits.png``: 10 class logits (classes by a fixed seed), each labelled with its class
  and the class the model gives the render.

    python examples/vit.py            # 256 steps, the 1000 sample photos (~20 min on 2 cores)
    python examples/vit.py --quick    # 4 units, 2 logits, 16 steps, 40 photos
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import defaultdict
from pathlib import Path

import torch
import torch.nn.functional as F
from _shared import SHARED

import featviz
from featviz import objectives as obj
from featviz.methods.deconv import outline, top_k

FIGURES = Path(__file__).parent / "figures"
SEED = 0  # picks the units and the classes, as benchmarks/vit_quality.py does


def chosen_units(n: int) -> list[tuple[int, int]]:
    """``n`` (block, unit) pairs: blocks spread evenly over 1-11, units drawn by :data:`SEED`."""
    units = torch.randint(768, (n,), generator=torch.Generator().manual_seed(SEED)).tolist()
    return [(1 + (10 * i) // max(n - 1, 1), u) for i, u in enumerate(units)]


def chosen_classes(n: int) -> list[int]:
    """``n`` ImageNet classes drawn by :data:`SEED` (+1, as the benchmark)."""
    return torch.randperm(1000, generator=torch.Generator().manual_seed(SEED + 1))[:n].tolist()


def top_patches(model, photos: list[str], units: list[tuple[int, int]]) -> dict:
    """(block, unit) -> the top photo's window around the unit's strongest patch, with the
    patch outlined; one scan of the photos per block."""
    by_block = defaultdict(list)
    for b, u in units:
        by_block[b].append(u)
    found = {}
    for b, chosen in by_block.items():
        top = top_k(model, photos, f"blocks.{b}.mlp.act", chosen, k=1, mode="gradient")
        for u in chosen:
            entry = top.entries[u][0]
            found[b, u] = outline(_tile(entry.patch), entry.focus, entry.patch.shape[1:])
    return found


def units_sheet(model, units, photos: list[str], steps: int, path: Path) -> None:
    """Each unit's render beside its top photo patch, four pairs to a row."""
    objectives = [obj.mlp(f"blocks.{b}", u, batch=i) for i, (b, u) in enumerate(units)]
    # the careful pace: the course the published sheets were made with
    renders = featviz.render(model, obj.Objective.sum(objectives), steps=steps, seed=SEED,
                             pace="careful", progress=False).images
    patches = top_patches(model, photos, units)
    tiles, labels = [], []
    for i, (b, u) in enumerate(units):
        tiles += [_tile(renders[i]), patches[b, u]]
        labels += [f"block {b}, unit {u}", "its top photo patch"]
    featviz.images.save(torch.stack(tiles), path, labels=labels, ncol=8)


def logits_sheet(model, classes: list[int], steps: int, path: Path) -> None:
    """Each class's render, labelled with the class and what the model calls the render."""
    logits = [obj.logit(c, batch=i) for i, c in enumerate(classes)]
    renders = featviz.render(model, obj.Objective.sum(logits), steps=steps, seed=SEED,
                             pace="careful", progress=False).images
    names = model.featviz_classes
    with torch.no_grad():
        seen = model(renders).argmax(-1).tolist()
    labels = [f"{names[c]} (seen: {names[s]})" for c, s in zip(classes, seen, strict=True)]
    featviz.images.save(torch.stack([_tile(r) for r in renders]), path, labels=labels, ncol=5)


def _tile(img: torch.Tensor, side: int = 160) -> torch.Tensor:
    """``img`` [C,H,W] scaled to ``side`` px (antialiased), values kept in [0, 1]."""
    small = F.interpolate(img[None], size=(side, side), mode="bilinear", antialias=True,
                          align_corners=False)
    return small[0].clamp(0, 1)


def main(argv: list[str] | None = None) -> int:
    """Render both sheets and say where they went."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--weights", default=str(SHARED / "models" /
                                             "vit_tiny_patch16_224_augreg_imagenet.pth"))
    ap.add_argument("--images", default=str(SHARED / "imagenet-sample"))
    ap.add_argument("--steps", type=int, default=256)
    ap.add_argument("--quick", action="store_true", help="4 units, 2 logits, 16 steps, "
                    "40 photos: checks the script runs")
    ap.add_argument("--out", default=str(FIGURES), help="folder of the two sheets")
    args = ap.parse_args(argv)
    n_units, n_classes, steps, n_photos = (4, 2, 16, 40) if args.quick else (16, 10, args.steps,
                                                                             None)
    start = time.perf_counter()
    model = featviz.models.load("vit_tiny", weights=args.weights)
    photos = featviz.images.list_images(args.images)[:n_photos]
    out = Path(args.out)
    units_sheet(model, chosen_units(n_units), photos, steps, out / "vit_units.png")
    logits_sheet(model, chosen_classes(n_classes), steps, out / "vit_logits.png")
    print(f"wrote {out / 'vit_units.png'} and {out / 'vit_logits.png'} in "
          f"{time.perf_counter() - start:.0f} s ({steps} steps, {len(photos)} photos)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
