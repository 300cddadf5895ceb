"""Does featviz render any model? Every torchvision classifier and a list of timm architectures
across families, with random weights and the default settings.

For each model it picks a middle layer (``featviz.models.middle_layer``), renders one of its
channels and one neuron at a grid position (two images of one batch), then a logit (the
whole model, fitted to the size it takes), for a few steps. Models that take any size render
at ``--size`` (small, for speed); those that take only their own size at that size. The few
multi-GB models render at batch 1 (the channel and the neuron summed on one image) and at most
two steps. It prints a row per model as it finishes — model, layer, layout, ok, ms/step (both
renders' loop time per step) — then the failures with their reasons and the summary lines
``torchvision N/M``, ``timm N/M`` and ``N/M``. A failure that is no featviz error (a raw
exception from torch or the model) is marked ``RAW``: featviz should have said why.

    python benchmarks/model_zoo.py --steps 4 --threads 1  # everything: ~20 min on 2 CPU cores
    python benchmarks/model_zoo.py --only timm --steps 4
    python benchmarks/model_zoo.py --quick              # a handful, for a smoke test
"""

from __future__ import annotations

import argparse
import gc
import sys
import time
import traceback
import warnings
from dataclasses import dataclass

import torch

import featviz
from featviz import objectives as obj
from featviz.core.model_info import fixed_input_size
from featviz.models.spatial import middle_of

TIMM_MODELS = [
    # ResNet and relatives
    "resnet18", "resnet50d", "seresnext26d_32x4d", "resnetv2_50", "res2net50_26w_4s",
    "resnest14d", "cspresnet50", "cspdarknet53", "dpn68", "densenet121", "dla34",
    "hrnet_w18_small", "selecsls42b", "ese_vovnet19b_dw", "rexnet_100", "inception_v3",
    "inception_next_tiny",
    # EfficientNet and mobile networks
    "efficientnet_b0", "tf_efficientnet_lite0", "efficientnetv2_rw_t", "mobilenetv3_large_100",
    "mobilenetv4_conv_small", "ghostnet_100", "lcnet_050", "hgnetv2_b0", "repvgg_a0",
    "mobileone_s0", "fastvit_t8", "repvit_m0_9", "starnet_s1", "mobilevit_xxs",
    "mobilevitv2_050", "edgenext_xx_small", "efficientformer_l1", "efficientformerv2_s0",
    "levit_128s",
    # ConvNeXt, RegNet, NFNet
    "convnext_atto", "convnextv2_atto", "regnetx_002", "regnety_008", "nfnet_l0",
    # vision transformers
    "vit_tiny_patch16_224", "vit_small_patch32_224", "vit_tiny_r_s16_p8_224",
    "vit_little_patch16_reg4_gap_256", "deit_tiny_patch16_224", "deit_tiny_distilled_patch16_224",
    "deit3_small_patch16_224", "beit_base_patch16_224", "eva02_tiny_patch14_224",
    "cait_xxs24_224", "xcit_nano_12_p16_224", "crossvit_tiny_240", "tnt_s_patch16_224",
    "pvt_v2_b0", "twins_svt_small", "coat_lite_tiny", "visformer_tiny", "nest_tiny_jx",
    "hiera_tiny_224",
    # hierarchical and hybrid transformers
    "swin_tiny_patch4_window7_224", "swinv2_tiny_window8_256", "maxvit_nano_rw_256",
    "coatnet_nano_rw_224", "gcvit_xxtiny", "davit_tiny", "focalnet_tiny_srf",
    # MLPs, pooling and other mixers
    "mixer_s16_224", "resmlp_12_224", "gmlp_ti16_224", "poolformer_s12", "poolformerv2_s12",
    "mambaout_femto", "sequencer2d_s",
]
QUICK = ["squeezenet1_1", "timm:regnetx_002", "timm:deit_tiny_distilled_patch16_224"]
BIG_PARAMETERS = 300e6  # above this, batch 1 and at most two steps (vit_h_14, regnet_y_128gf)


@dataclass
class Row:
    """One model's outcome: ``error`` is empty when all three objectives rendered."""

    model: str
    layer: str = "-"
    layout: str = "-"
    ms_per_step: float = float("nan")
    error: str = ""

    @property
    def ok(self) -> bool:
        return not self.error


def zoo(only: str | None, quick: bool) -> list[str]:
    """The model names to try: torchvision's classifiers and ``timm:`` names (when timm is
    installed), or the :data:`QUICK` handful."""
    import torchvision

    names = QUICK if quick else (torchvision.models.list_models(module=torchvision.models)
                                 + [f"timm:{n}" for n in TIMM_MODELS])
    if not _has_timm():
        print("timm is not installed (pip install \"featviz[timm]\"): its models are skipped")
        names = [n for n in names if not n.startswith("timm:")]
    if only:
        names = [n for n in names if n.startswith("timm:") == (only == "timm")]
    return names


def _has_timm() -> bool:
    try:
        import timm  # noqa: F401
    except ImportError:
        return False
    return True


def try_model(name: str, steps: int, size: int) -> Row:
    """Load ``name`` with random weights and render its three objectives; a failure becomes
    the row's error (``RAW`` when it is no featviz error)."""
    row = Row(name)
    try:
        with warnings.catch_warnings():  # random weights: flat objectives are expected
            warnings.simplefilter("ignore")
            _render_all(featviz.models.load(name, weights=None), row, steps, size)
    except featviz.FeatvizError as err:
        row.error = f"{type(err).__name__}: {err}"
    except Exception as err:
        where = traceback.extract_tb(err.__traceback__)[-1]
        row.error = (f"RAW {type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
                     f" ({where.filename.rsplit('/', 1)[-1]}:{where.lineno})")
    gc.collect()
    return row


def _render_all(model: torch.nn.Module, row: Row, steps: int, size: int) -> None:
    """A channel and a neuron of the middle layer, then a logit; fills ``row`` as it goes."""
    size_used, layers = _probe(model, size)
    layer = middle_of(layers)
    row.layer, row.layout = layer.name, layer.layout
    c, x, y = layer.channels // 3, layer.grid[1] // 4, layer.grid[0] // 4
    big = sum(p.numel() for p in model.parameters()) > BIG_PARAMETERS
    steps = min(steps, 2) if big else steps
    if big:
        hidden = obj.channel(layer.name, c) + obj.neuron(layer.name, c, x=x, y=y)
    else:
        hidden = obj.channel(layer.name, c, batch=0) + obj.neuron(layer.name, c, x=x, y=y,
                                                                  batch=1)
    seconds = 0.0
    for objective in (hidden, obj.logit(1)):
        result = featviz.render(model, objective, steps=steps, size=size_used, seed=0,
                                progress=False)
        if not torch.isfinite(result.images).all():
            raise featviz.FeatvizError(f"{objective.name} gave non-finite images")
        seconds += result.seconds
    row.ms_per_step = 1000 * seconds / max(steps, 1)


def _probe(model: torch.nn.Module, size: int) -> tuple[int | None, list]:
    """The render size and the model's spatial layers at it: ``size`` for a model that takes
    it, else (a fixed-size model, or one too deep for a small image: Inception v3) its own."""
    if not fixed_input_size(model):
        try:
            return size, featviz.models.spatial_layers(model, size)
        except featviz.FeatvizError:
            pass
    return None, featviz.models.spatial_layers(model)


def _line(cells: list[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def report(rows: list[Row]) -> None:
    """The failures with their reasons, then the summary per source and overall."""
    failed = [r for r in rows if not r.ok]
    if failed:
        print("\nfailures:")
        for r in failed:
            print(f"- {r.model}: {r.error}")
    for source, pick in (("torchvision", lambda r: not r.model.startswith("timm:")),
                         ("timm", lambda r: r.model.startswith("timm:"))):
        some = [r for r in rows if pick(r)]
        if some:
            print(f"{source} {sum(r.ok for r in some)}/{len(some)}")
    raw = sum(r.error.startswith("RAW") for r in failed)
    print(f"{sum(r.ok for r in rows)}/{len(rows)} models rendered"
          + (f"; {raw} failures are no featviz error (RAW)" if raw else ""))


def main(argv: list[str] | None = None) -> int:
    """Run the zoo; the exit status is 1 when a failure is no featviz error."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a handful of small models")
    parser.add_argument("--only", choices=["torchvision", "timm"])
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--size", type=int, default=64,
                        help="image size for models that take any size")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch CPU threads (1 on a machine shared with other jobs: "
                             "oversubscribed threads wait on each other many times over)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    print(_line(["model", "layer", "layout", "ok", "ms/step"]))
    print(_line(["---"] * 5))
    rows = []
    for name in zoo(args.only, args.quick):
        start = time.perf_counter()
        row = try_model(name, args.steps, args.size)
        rows.append(row)
        print(_line([row.model, row.layer, row.layout, "yes" if row.ok else "NO",
                     f"{row.ms_per_step:.0f}"]) + f"  ({time.perf_counter() - start:.0f} s)",
              flush=True)
    report(rows)
    return int(any(r.error.startswith("RAW") for r in rows))


if __name__ == "__main__":
    sys.exit(main())
