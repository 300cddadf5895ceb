"""A Microscope site for InceptionV1's early layers, and screenshots of three of its pages.

Builds (or resumes) ``featviz microscope`` for ``conv2d0`` to ``mixed3b`` at the quick setting
into ``--site``, prints its run time and size, and with Chromium installed writes screenshots
of the index, the ``mixed3b`` layer page and one unit page into ``--out``:

    python examples/microscope.py --site out/v1site          # ~35 min on 2 CPU threads
    python examples/microscope.py --site out/v1site --layers conv2d0 --units 0-7 --quick-look

The same command resumes an interrupted build and adds layers given later (``--layers
...,mixed4a``); ``featviz microscope`` is the command line behind it.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import time
from pathlib import Path

from _shared import SHARED, add_model_args, load_model

from featviz import microscope
from featviz.face.microscope import store

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def screenshot(page: Path, png: Path, height: int) -> None:
    """A ``height``-pixel-tall screenshot of ``page`` (a file) by headless Chromium."""
    subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu",
                    "--hide-scrollbars", f"--window-size=1100,{height}",
                    f"--screenshot={png}", page.resolve().as_uri()],
                   check=True, capture_output=True, timeout=120)


def main(argv: list[str] | None = None) -> int:
    """Build the site, print its cost, take the screenshots."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_model_args(ap)
    ap.add_argument("--layers", default="conv2d0,conv2d1,conv2d2,mixed3a,mixed3b")
    ap.add_argument("--units", default="all")
    ap.add_argument("--images", default=str(SHARED / "imagenet-sample"))
    ap.add_argument("--site", required=True, help="the site's folder (reused to resume)")
    ap.add_argument("--unit", default="mixed3b:326", help="the unit page to screenshot")
    ap.add_argument("--quick-look", action="store_true",
                    help="8 steps, no facets: a smoke run of the whole pipeline")
    ap.add_argument("--out", default=str(Path(__file__).parent / "figures"))
    args = ap.parse_args(argv)
    model = load_model(args)
    layers = args.layers.split(",")
    extra = dict(steps=8, facets=0, dream_steps=4, class_photos=8) if args.quick_look else {}
    start = time.perf_counter()
    result = microscope.microscope(model, args.site, layers, units=args.units,
                                   images=args.images, model_name=args.model,
                                   # the model's own weights, named as the command line does
                                   weights=args.weights or "DEFAULT", **extra)
    seconds = time.perf_counter() - start
    size = store.folder_bytes(args.site) / 2**20
    print(f"{args.site}: {seconds:.0f} s this run, {size:.1f} MB")
    if result.interrupted or CHROMIUM is None:
        print("no screenshots" + (" (no chromium)" if CHROMIUM is None else ""))
        return 0
    layer, unit = args.unit.rsplit(":", 1)
    if layer not in layers:
        layer, unit = layers[-1], args.units.split("-")[0].split(",")[0].replace("all", "0")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    site = Path(args.site)
    for name, page, height in (("index", site / "index.html", 520),
                               ("layer", site / store.layer_page(layer), 900),
                               ("unit", site / store.unit_page(layer, int(unit)), 2200)):
        screenshot(page, out / f"microscope_{name}.png", height)
    print(f"wrote {out}/microscope_{{index,layer,unit}}.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
