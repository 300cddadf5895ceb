"""Does a wall against saturated pixels hold on objectives of any scale?

Renders each objective (224 px, 512 steps, seed 0) four ways: featviz's defaults; the fast
course (Adam 0.1, the parameters' average at 0.95, Adam's denominator floored at 1x each
image's mean) with no wall; the fast course with ``1e4 * obj.clipping()`` subtracted (a wall
of fixed weight, chosen on InceptionV1's channels); the fast course with ``rail_guard=2`` (a
push relative to the objective's own pull). Prints, per render, the objective at the end
(no transforms), the share of saturated pixels (a colour value within 0.02 of 0 or 1) and the
high-frequency share, as a markdown table. ``--scale 100`` multiplies every objective by 100:
the guard's course does not change, the fixed wall's does.

    python benchmarks/rail_guard.py --threads 2
    python benchmarks/rail_guard.py --threads 2 --cases inceptionv1:channel:mixed3b:342 \\
        --scale 100 --courses "fast, 1e4 clipping" "fast, rail guard 2"
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import torch

import featviz
from featviz import objectives as obj
from featviz.hooks import LayerTap, frozen

HERE = Path(__file__).resolve().parent
SHARED = Path(os.environ.get("FEATVIZ_SHARED", HERE.parent.parent / "shared"))
MODELS = {
    "inceptionv1": dict(weights=SHARED / "models" / "googlenet_bvlc_imagenet.pth"),
    "mobilenet_v2": dict(weights=SHARED / "models" / "mobilenet_v2_imagenet_coral.pth",
                         mean=(0.5,) * 3, std=(0.5,) * 3),
}
FAST = dict(lr=0.1, ema=0.95, adam_floor=1.0)
COURSES = {  # name: (weight of the clipping regularizer subtracted, render's settings)
    "defaults": (0.0, {}),
    "fast, no wall": (0.0, FAST),
    "fast, 1e4 clipping": (1e4, FAST),
    "fast, rail guard 2": (0.0, dict(FAST, rail_guard=2.0)),
}
CASES = ("inceptionv1:logit:1", "mobilenet_v2:channel:features.14:12")


def measure(model, objective: obj.Objective, image: torch.Tensor) -> float:
    """The objective's value on ``image`` as it is (no transforms)."""
    with frozen(model), LayerTap(model, objective.layers) as tap, torch.no_grad():
        return float(objective(tap(image)).flatten()[0])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cases", nargs="+", default=list(CASES),
                    help="MODEL:OBJECTIVE, the objective as the CLI writes it")
    ap.add_argument("--courses", nargs="+", default=list(COURSES), choices=list(COURSES))
    ap.add_argument("--scale", type=float, default=1.0, help="multiply every objective by this")
    ap.add_argument("--steps", type=int, default=512)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    loaded: dict[str, torch.nn.Module] = {}
    print("| objective | course | at the end | saturated px | high-frequency share | s |")
    print("|---|---|---:|---:|---:|---:|")
    for case in args.cases:
        name, spec = case.split(":", 1)
        if name not in loaded:
            loaded[name] = featviz.models.load(name, **MODELS[name])
        judged = obj.parse(spec)
        for course in args.courses:
            wall, settings = COURSES[course]
            climbed = args.scale * judged - wall * obj.clipping() if wall else args.scale * judged
            t0 = time.perf_counter()
            res = featviz.render(loaded[name], climbed, steps=args.steps, size=224, seed=0,
                                 progress=False, **settings)
            print(f"| {name} {args.scale:g} x {spec} | {course} | "
                  f"{measure(loaded[name], judged, res.images):.1f} | "
                  f"{100 * featviz.metrics.saturated_share(res.images):.1f}% | "
                  f"{featviz.metrics.high_frequency_share(res.images):.3f} | "
                  f"{time.perf_counter() - t0:.0f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
