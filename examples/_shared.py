"""What the example scripts share: where the sample weights and photos are, and the model
options every example takes (defaults: the real InceptionV1 of ../shared/models, the network
of the Distill articles; ``--model mobilenet_v2`` the real MobileNetV2)."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import torch

import featviz

SHARED = Path(os.environ.get("FEATVIZ_SHARED", Path(__file__).resolve().parents[2] / "shared"))

# per model: its weights file and statistics, and the unit, pair of channels and class the
# figures show by default (chosen by eye: see examples/README.md). InceptionV1's activations
# are about 60x MobileNetV2's (Caffe's 0-255 input), so are the weights of its penalties
# against them: diversity, L1, total variation, blur
MODELS = {
    "inceptionv1": dict(weights=SHARED / "models" / "googlenet_bvlc_imagenet.pth", mean=None,
                        std=None, layer="mixed4a", channel=476, pair="476,460", target=291,
                        deconv_layers="mixed3b,mixed4b",
                        inversion_layers="conv2d0,conv2d2,mixed3b,mixed4b,mixed4e,mixed5b",
                        centering_layers="conv2d0,conv2d2,mixed3b,mixed4d",
                        diversity_channel=97, diversity_weight=1000.0, l1=18000.0, tv=9000.0,
                        blur=600000.0),
    "mobilenet_v2": dict(weights=SHARED / "models" / "mobilenet_v2_imagenet_coral.pth",
                         mean=(0.5,) * 3, std=(0.5,) * 3, layer="features.14", channel=12,
                         pair="12,20", target=291, deconv_layers="features.7,features.14",
                         inversion_layers="features.2,features.4,features.7,features.10,"
                                          "features.14,features.17",
                         centering_layers="features.0.0,features.2,features.7,features.14",
                         diversity_channel=12, diversity_weight=30.0, l1=300.0, tv=150.0,
                         blur=10000.0),
}


def add_model_args(ap: argparse.ArgumentParser) -> None:
    """--model/--weights/--mean/--std, defaulting to the real InceptionV1 (for a model of
    :data:`MODELS`, its own file and statistics)."""
    ap.add_argument("--model", default="inceptionv1")
    ap.add_argument("--weights", help="default: the model's file in ../shared/models "
                                      "(others: torchvision's download)")
    ap.add_argument("--mean", type=float, nargs=3, help="default: the model's own")
    ap.add_argument("--std", type=float, nargs=3, help="default: the model's own")


def load_model(args: argparse.Namespace):
    """The model the options name, with all CPU cores in use (or ``OMP_NUM_THREADS`` of them
    when set: on a machine shared with other jobs, fewer threads are often faster)."""
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS") or os.cpu_count() or 1))
    torch.manual_seed(0)  # the same weights on every run with --weights random
    spec = MODELS.get(args.model, {})
    mean = args.mean if args.mean is not None else spec.get("mean")
    std = args.std if args.std is not None else spec.get("std")
    return featviz.models.load(args.model, weights=args.weights or spec.get("weights", "default"),
                               mean=mean, std=std)


def default(args: argparse.Namespace, key: str, given):
    """``given`` when the user gave it, else the model's default ``key`` from :data:`MODELS`
    (MobileNetV2's for a model without its own: :func:`late_layer` then finds a layer)."""
    if given is not None:
        return given
    return MODELS.get(args.model, MODELS["mobilenet_v2"])[key]


def late_layer(model, layer: str) -> str:
    """``layer`` if the model has it, else a late layer of the model (so the defaults, chosen
    for InceptionV1 and MobileNetV2, still run on any other model)."""
    names = list(featviz.hooks.named_layers(model))
    return layer if layer in names or layer in featviz.hooks.layer_aliases(model) else names[-3]


def render_careful(*args, **kwargs) -> featviz.RenderResult:
    """``featviz.render`` on the careful pace, lucid's course: the one Distill's figures used and
    the one every panel of a comparison is drawn on (the fast pace is the Fourier image's alone,
    which would favour one panel).

    Args:
        *args: ``featviz.render``'s positional arguments.
        **kwargs: its keyword arguments.
    """
    return featviz.render(*args, pace="careful", **kwargs)
