"""Top-1 / top-5 accuracy of a model as featviz loads it, on the labelled sample photos.

Checks a loader end to end (architecture, weights, preprocessing): each photo's shorter side
is resized to 256 (bilinear, antialiased), its centre 224x224 cut out, and the model that
``featviz.models.load`` returns (which normalizes by itself) classifies it. The class of a
photo is the ``class_index`` column of the folder's ``labels.tsv``. The figures to compare
with are the plain-PyTorch ones in ``../shared/models/README.md`` (InceptionV1: 74.8 % top-1,
92.5 % top-5).

    python benchmarks/accuracy.py                      # InceptionV1 (BVLC GoogLeNet)
    python benchmarks/accuracy.py --model mobilenet_v2 \\
        --weights ../shared/models/mobilenet_v2_imagenet_coral.pth --mean 0.5 --std 0.5
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

import featviz

HERE = Path(__file__).resolve().parent
SHARED = Path(os.environ.get("FEATVIZ_SHARED", HERE.parent.parent / "shared"))


def labelled_photos(folder: Path) -> list[tuple[Path, int]]:
    """(photo path, class index) of every photo ``folder/labels.tsv`` lists (read, and checked,
    by featviz's own labels reader)."""
    labels = featviz.dataset.read_labels(folder / "labels.tsv")
    return [(folder / name, label.index) for name, label in labels.items()]


def centre_crop(path: Path, resize: int = 256, crop: int = 224) -> torch.Tensor:
    """The photo as [3, crop, crop] in [0, 1]: shorter side to ``resize``, centre cut."""
    with Image.open(path) as im:
        im = im.convert("RGB")
        scale = resize / min(im.size)
        im = im.resize((max(crop, round(im.width * scale)), max(crop, round(im.height * scale))),
                       Image.BILINEAR)
        left, top = (im.width - crop) // 2, (im.height - crop) // 2
        im = im.crop((left, top, left + crop, top + crop))
    return torch.from_numpy(np.asarray(im, dtype=np.float32) / 255).permute(2, 0, 1)


def accuracy(model: torch.nn.Module, rows: list[tuple[Path, int]], batch: int = 25
             ) -> tuple[float, float]:
    """Top-1 and top-5 accuracy (fractions) of ``model`` over ``rows``."""
    top1 = top5 = 0
    with torch.no_grad():
        for i in range(0, len(rows), batch):
            chunk = rows[i:i + batch]
            x = torch.stack([centre_crop(p) for p, _ in chunk])
            best = model(x).topk(5, dim=1).indices
            labels = torch.tensor([c for _, c in chunk])
            top1 += int((best[:, 0] == labels).sum())
            top5 += int((best == labels[:, None]).any(1).sum())
    return top1 / len(rows), top5 / len(rows)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="inceptionv1")
    p.add_argument("--weights", default=str(SHARED / "models" / "googlenet_bvlc_imagenet.pth"))
    p.add_argument("--mean", type=float, nargs="+")
    p.add_argument("--std", type=float, nargs="+")
    p.add_argument("--images", default=str(SHARED / "imagenet-sample"))
    p.add_argument("--limit", type=int, help="only the first N photos (a quick check)")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    folder = Path(args.images)
    if not (folder / "labels.tsv").is_file():
        print(f"no labels.tsv in {folder}: give --images a labelled folder", file=sys.stderr)
        return 2
    rows = labelled_photos(folder)[:args.limit]
    model = featviz.models.load(args.model, weights=args.weights, mean=args.mean, std=args.std)
    start = time.perf_counter()
    top1, top5 = accuracy(model, rows)
    print(f"{args.model} ({Path(args.weights).name}) on {len(rows)} photos of {folder.name}: "
          f"top-1 {100 * top1:.1f} %, top-5 {100 * top5:.1f} % "
          f"({time.perf_counter() - start:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
