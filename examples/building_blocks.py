"""The main views of "The Building Blocks of Interpretability" (Olah et al., Distill 2018) on
one photo: the semantic dictionary, activation grids at two layers, neuron groups with their
spatial maps, and a group-to-class attribution table; optionally the same as one HTML page.

    python examples/building_blocks.py                  # InceptionV1, writes examples/figures/
    python examples/building_blocks.py --quick          # small and fast, a first look
    python examples/building_blocks.py --html out/blocks.html
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
from _shared import SHARED, add_model_args, load_model

import featviz
from featviz.face import blocks_page
from featviz.methods.building_blocks import BuildingBlocks, building_blocks

FIGURES = Path(__file__).parent / "figures"


def groups_figure(blocks: BuildingBlocks, tile: int = 128):
    """Each group's render above its spatial map, then all groups over the photo; each render
    labelled with the class it speaks for most."""
    g, table = blocks.groups, blocks.group_classes
    renders = blocks.group_renders.shown()
    maps = g.map_images()
    pics, labels = [], []
    for j in range(len(renders)):
        best = int(table.values[j].argmax())
        pics.append(renders[j:j + 1, :3])
        labels.append(f"group {j}: {table.names[best].split(',')[0]} {table.values[j, best]:+.1f}")
    for j in range(len(renders)):
        pics.append(maps[j:j + 1])
        labels.append(f"where group {j} fires")
    pics = [torch.nn.functional.interpolate(p, size=(tile, tile), mode="bilinear",
                                            antialias=True) for p in pics]
    return featviz.images.grid(torch.cat(pics), labels, ncol=len(renders))


def table_markdown(blocks: BuildingBlocks) -> str:
    """The group-to-class attribution as a markdown table."""
    t = blocks.group_classes
    head = "| group | " + " | ".join(n.split(",")[0] for n in t.names) + " |"
    rule = "|---|" + "---:|" * len(t.names)
    rows = [f"| {j} | " + " | ".join(r) + " |" for j, r in enumerate(t.rows())]
    return "\n".join([head, rule, *rows])


def main(argv: list[str] | None = None) -> int:
    """Make the views, write the figures (and the page), print the table and timings."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_model_args(ap)
    ap.add_argument("--image", default=str(SHARED / "images" / "pets.jpg"))
    ap.add_argument("--photo-size", type=int, default=224, help="the photo's side in pixels")
    ap.add_argument("--layer", default="mixed4d")
    ap.add_argument("--grid-layers", default="mixed4d,mixed5a")
    ap.add_argument("--groups", type=int, default=6)
    ap.add_argument("--steps", type=int, help="steps of every render (default 256; --quick 16)")
    ap.add_argument("--size", type=int, help="pixels of channel and group renders (default 96; "
                                             "--quick 48)")
    ap.add_argument("--cell", type=int, default=32, help="pixels of each grid cell")
    ap.add_argument("--quick", action="store_true", help="fewer steps, smaller renders")
    ap.add_argument("--out", default=str(FIGURES))
    ap.add_argument("--html", help="also write the page `featviz blocks` writes")
    args = ap.parse_args(argv)
    args.steps = args.steps or (16 if args.quick else 256)
    args.size = args.size or (48 if args.quick else 96)
    model = load_model(args)
    image = featviz.images.load(args.image, args.photo_size)
    start = time.perf_counter()
    blocks = building_blocks(model, image, args.layer, grid_layers=args.grid_layers.split(","),
                             groups=args.groups, size=args.size, cell=args.cell,
                             steps=args.steps, progress=False)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    name = Path(args.image).stem
    blocks.dictionary.figure().save(out / f"blocks_{name}_dictionary.png")
    for layer, grid in blocks.grids.items():
        featviz.images.save(grid.beside_photo(), out / f"blocks_{name}_grid_{layer}.png")
    groups_figure(blocks).save(out / f"blocks_{name}_groups.png")
    featviz.images.save(blocks.groups.overlay(), out / f"blocks_{name}_groups_overlay.png")
    if args.html:
        blocks_page.write(blocks, args.html, f"{Path(args.image).name}: {args.layer}")
    print("top classes: " + ", ".join(f"{n} {p:.2f}" for _, n, p in blocks.top_classes))
    print(f"neuron groups of {args.layer}: relative reconstruction error "
          f"{blocks.groups.error:.3f}")
    print(table_markdown(blocks))
    for what, secs in blocks.seconds.items():
        print(f"{what}: {secs:.0f} s")
    print(f"all: {time.perf_counter() - start:.0f} s; figures in {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
