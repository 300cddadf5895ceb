"""What the example scripts share: where the sample weights and photos are, and the model
options every example takes (defaults: the real MobileNetV2 of ../shared/models)."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import torch

import featviz

SHARED = Path(os.environ.get("FEATVIZ_SHARED", Path(__file__).resolve().parents[2] / "shared"))


def add_model_args(ap: argparse.ArgumentParser) -> None:
    """--model/--weights/--mean/--std, defaulting to the real MobileNetV2."""
    ap.add_argument("--model", default="mobilenet_v2")
    ap.add_argument("--weights", default=str(SHARED / "models" / "mobilenet_v2_imagenet_coral.pth"))
    ap.add_argument("--mean", type=float, nargs=3, default=(0.5, 0.5, 0.5))
    ap.add_argument("--std", type=float, nargs=3, default=(0.5, 0.5, 0.5))


def load_model(args: argparse.Namespace):
    """The model the options name, with all CPU cores in use (or ``OMP_NUM_THREADS`` of them
    when set: on a machine shared with other jobs, fewer threads are often faster)."""
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS") or os.cpu_count() or 1))
    torch.manual_seed(0)  # the same weights on every run with --weights random
    return featviz.models.load(args.model, weights=args.weights, mean=args.mean, std=args.std)


def late_layer(model, layer: str) -> str:
    """``layer`` if the model has it, else a late layer of the model (so the defaults, chosen
    for MobileNetV2, still run on any other model)."""
    names = list(featviz.hooks.named_layers(model))
    return layer if layer in names else names[-3]
