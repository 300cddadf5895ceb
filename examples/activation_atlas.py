"""An activation atlas ("Activation Atlas", Carter et al., Distill 2019) of InceptionV1's
mixed4c over the 1000 labelled ImageNet photos of ../shared/imagenet-sample: every position of
every photo (14x14x1000, about 196k vectors of 512 channels) collected to disk, laid out with
UMAP (t-SNE without umap-learn), averaged on a 20x20 grid and each cell's average rendered;
then a class atlas of "fireboat" and a comparison of "snorkel" and "scuba diver", as in the
article, and the hoverable HTML page.

    python examples/activation_atlas.py            # full size: writes examples/figures/atlas_*
    python examples/activation_atlas.py --quick    # a few hundred vectors, a 6x6 grid
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
from pathlib import Path

import numpy as np
from _shared import SHARED, add_model_args, load_model

import featviz
from featviz.face import atlas_page
from featviz.methods import atlas, atlas_store

FIGURES = Path(__file__).parent / "figures"
CLASSES = ("fireboat", "snorkel", "scuba diver")


def own_vs_neighbours(made: atlas.Atlas, model) -> tuple[float, float]:
    """Mean cosine of each cell's render with its own average vector, and with the averages
    of the kept cells around it (8-neighbourhood), over the cells that have neighbours."""
    cos = made.agreement(model).numpy()
    table = made.grid.cell_index()
    own, near = [], []
    for k, (r, c) in enumerate(made.grid.cells.tolist()):
        around = [table[i, j] for i in range(max(0, r - 1), min(made.grid.n, r + 2))
                  for j in range(max(0, c - 1), min(made.grid.n, c + 2))
                  if (i, j) != (r, c) and table[i, j] >= 0]
        if around:
            own.append(cos[k, k])
            near.append(cos[k, around].mean())
    return float(np.mean(own)), float(np.mean(near))


def main_atlas(model, store, args, png: Path, html: str, seconds: dict) -> None:
    """The atlas of all vectors: its figure, its page, its numbers."""
    made = atlas.activation_atlas(model, store, args.grid, method=args.layout,
                                  fit_on=args.fit_on, cell=args.cell, steps=args.steps,
                                  min_count=3, progress=False)
    seconds.update(made.seconds)
    made.save(png, cell=max(args.cell, 40))
    own, near = own_vs_neighbours(made, model)
    print(f"{made}; layout {made.seconds['layout']:.0f} s (fitted on "
          f"{min(args.fit_on, len(store))}), render "
          f"{made.seconds['render']:.0f} s; cosine of each render with its own average "
          f"{own:.3f}, with its neighbours' {near:.3f}")
    atlas_page.write(made, store, html)


def main(argv: list[str] | None = None) -> int:
    """Collect, lay out, grid, render; write the figures and the page; print the numbers."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_model_args(ap)
    ap.add_argument("--images", default=str(SHARED / "imagenet-sample"))
    ap.add_argument("--layer", default="mixed4c")
    ap.add_argument("--store", help="folder of the collected vectors, reused and continued "
                                    "(default: atlas_store_LAYER in --out; its page too)")
    ap.add_argument("--grid", type=int, help="cells a side (default: 20; quick 6)")
    ap.add_argument("--class-grid", type=int, help="of the class atlases (8; quick 4)")
    ap.add_argument("--cell", type=int, default=32)
    ap.add_argument("--steps", type=int, help="render steps (default: 256; quick 32)")
    ap.add_argument("--fit-on", type=int, default=20000)
    ap.add_argument("--top", type=float,
                    help="class atlases: the fraction of all vectors kept per class (0.02; "
                         "quick 0.1)")
    ap.add_argument("--layout", default="auto", choices=["auto", "umap", "tsne"])
    ap.add_argument("--quick", action="store_true",
                    help="50 photos at 8 positions (400 vectors), 6x6 grid, 32 steps")
    ap.add_argument("--classes-only", action="store_true",
                    help="only the class atlases (the store must hold the vectors)")
    ap.add_argument("--out", default=str(FIGURES))
    ap.add_argument("--html", help="the page (default: atlas.html in --store)")
    args = ap.parse_args(argv)
    # everything the script writes lands under --out unless a store is named
    args.store = args.store or str(Path(args.out) / f"atlas_store_{args.layer}")
    photos = featviz.dataset.LabelledFolder(args.images)
    positions = "all"
    if args.quick:
        keep = set(photos.files[:47]) | {f for f in photos.files
                                         if any(photos.labels[f].matches(c) for c in CLASSES)}
        photos.files = [f for f in photos.files if f in keep]
        positions = 8
        args.store = args.store.rstrip("/") + "_quick"
    for name, full, quick in (("grid", 20, 6), ("class_grid", 8, 4), ("steps", 256, 32),
                              ("top", 0.02, 0.1)):
        if getattr(args, name) is None:
            setattr(args, name, quick if args.quick else full)
    model = load_model(args)
    seconds = {}
    start = time.perf_counter()
    store = atlas_store.collect(model, photos, args.layer, args.store, positions=positions,
                                attribute=CLASSES, batch_size=25, progress=False)
    seconds["collect"] = time.perf_counter() - start
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    print(f"{store}; collect {seconds['collect']:.0f} s, peak RSS so far {rss:.2f} GiB")
    html = args.html or str(Path(args.store) / "atlas.html")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    name = f"atlas_{args.layer}{'_quick' if args.quick else ''}"
    if not args.classes_only:
        main_atlas(model, store, args, out / f"{name}.png", html, seconds)
    fireboat = atlas.class_atlas(model, store, ["fireboat"], args.class_grid, top=args.top,
                                 cell=args.cell,
                                 steps=args.steps, method=args.layout, progress=False,
                                 min_count=2)
    big = max(args.cell, 64)
    fireboat.save(out / f"{name}_fireboat.png", cell=big, labels=True)
    print(f"class atlas fireboat: {fireboat}; " + ", ".join(
        f"{k} {v:.0f} s" for k, v in fireboat.seconds.items()), flush=True)
    pair = atlas.class_atlas(model, store, ["snorkel", "scuba diver"], args.class_grid,
                             top=args.top, cell=args.cell, steps=args.steps, method=args.layout,
                             progress=False, min_count=2)
    pair.save(out / f"{name}_snorkel_vs_scuba_diver.png", cell=big, labels=True)
    atlas_page.write(pair, store, str(Path(html).with_name("atlas_snorkel_vs_scuba.html")))
    print(f"class atlas snorkel vs scuba diver: {pair}; " + ", ".join(
        f"{k} {v:.0f} s" for k, v in pair.seconds.items()))
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    print("timings: " + ", ".join(f"{k} {v:.0f} s" for k, v in seconds.items())
          + f"; all {time.perf_counter() - start:.0f} s; peak RSS {rss:.2f} GiB")
    print(f"figures in {out}; page {html}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
