"""Dataset examples at scale: the top-9 ImageNet photos of a few InceptionV1 channels, with the
class of each photo and its deconvnet and guided-backprop projections side by side.

The labelled folder (../shared/imagenet-sample, 1000 photos, one per class, with labels.tsv)
is streamed in batches: only the current batch and the current top-k photos are ever held.
Each projection is cut to the unit's receptive-field box and shown with its own contrast
(Zeiler & Fergus's per-patch normalization), so that weak and strong units are both visible.

    python examples/topk_inceptionv1.py                       # writes examples/figures/
    python examples/topk_inceptionv1.py --model mobilenet_v2  # features.14 of MobileNetV2
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
from pathlib import Path

import torch
from _shared import SHARED

import featviz
from featviz.methods import deconv
from featviz.methods.dataset import LabelledFolder

DEFAULTS = {  # model -> (weights file, layer, channels, preprocessing options)
    "inceptionv1": ("googlenet_bvlc_imagenet.pth", "mixed4a", "0,5,6", {}),
    "mobilenet_v2": ("mobilenet_v2_imagenet_coral.pth", "features.14", "0-3",
                     {"mean": (0.5,) * 3, "std": (0.5,) * 3}),
}


def main(argv: list[str] | None = None) -> int:
    """Find, project and draw the top-k photos of the channels; print what was found."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="inceptionv1", choices=sorted(DEFAULTS))
    ap.add_argument("--weights", help="weights file (default: the model's in ../shared/models)")
    ap.add_argument("--images", default=str(SHARED / "imagenet-sample"),
                    help="labelled folder of photos (labels.tsv)")
    ap.add_argument("--layer", help="layer (default: mixed4a, or features.14 for MobileNetV2)")
    ap.add_argument("--channels", help="channels, e.g. 16,55 or 0-3")
    ap.add_argument("--k", type=int, default=9)
    ap.add_argument("--every", type=int, default=5,
                    help="keep the photos of one class in N (default 5: 200 photos; 1: all)")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--tile", type=int, default=56, help="pixels per patch in the figure")
    ap.add_argument("--out", default=str(Path(__file__).parent / "figures" /
                                         "topk_inceptionv1.png"))
    args = ap.parse_args(argv)
    weights, layer, chans, options = DEFAULTS[args.model]
    torch.set_num_threads(1)  # a shared box: one thread is as fast as two busy ones
    model = featviz.models.load(args.model, weights=args.weights or
                                str(SHARED / "models" / weights), **options)
    every = args.every
    source = LabelledFolder(args.images).subset(where=lambda lb: (lb.index or 0) % every == 0)
    layer = args.layer or layer
    channels = featviz.objectives.parse_channels(args.channels or chans)
    start = time.perf_counter()
    top = deconv.top_k(model, source, layer, channels, k=args.k, batch_size=args.batch_size,
                       mode=("deconvnet", "guided"))
    seconds = time.perf_counter() - start
    path = top.save(args.out, tile=args.tile)
    for c, entries in top.entries.items():
        print(f"{layer}:{c}: " + ", ".join(f"{e.class_name} {e.value:.1f}" for e in entries))
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"{len(source)} photos in {seconds:.0f} s, batches of {args.batch_size}; receptive "
          f"field {top.field.size[0]} px; peak memory {peak:.0f} MB; wrote {path} "
          f"({path.stat().st_size // 1024} KB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
