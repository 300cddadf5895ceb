"""Time to a good picture with featviz's defaults, on every model, against lucent 0.1.8.

On five models with real weights (``../shared/models``): featviz's InceptionV1, a GoogLeNet a
user builds from torchvision with the same BVLC weights, MobileNetV2, a CIFAR ResNet-56 and
ViT-Tiny; for channel, neuron, logit and DeepDream objectives (on ViT-Tiny the "channel" is an
MLP unit, the neuron an MLP unit at one patch), at each model's input size, batch 1:

- lucent 0.1.8 as users run it (Fourier + decorrelated colour, its standard transforms, Adam
  0.05, 512 steps) sets the bar: its final image's objective under 8 random transforms from a
  stream neither render used (held-out), and its high-frequency share and checkerboard energy
  (means over its images at steps 480, 496 and 512). lucent optimizes featviz's own objective
  function (read by hooks of this script), so both climb exactly the same thing.
- featviz renders the same objective from the same seed with the careful pace and with the
  fast one (``render(pace=...)``), a snapshot every 16 steps. Its time to quality is its own
  clock at the first snapshot whose held-out objective reaches lucent's with a high-frequency
  share and checkerboard energy at most 5 % above lucent's (the course_candidates.py rule).
  The *defaults* column is the pace ``render`` picks unasked for that model and objective.

Both render the same model object, one after the other, in one run (the machine is shared and
noisy). ``--figure`` draws lucent at 512 steps beside featviz's defaults at their time-to-
quality point, one row per target; ``--json`` keeps the numbers.

    pip install --no-deps torch-lucent==0.1.8 && pip install decorator   # lucent, see speed.py
    python benchmarks/time_to_quality.py --threads 2 --figure F.png     # 19 targets, ~1 h
    python benchmarks/time_to_quality.py --models mobilenet_v2 --kinds channel   # a part
    python benchmarks/time_to_quality.py --quick                        # a smoke run
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

import featviz
from featviz import metrics
from featviz import objectives as obj
from featviz.core.hooks import OUTPUT, resolve_layer
from featviz.core.layouts import declared, normalize
from featviz.core.model_info import fixed_input_size, input_size
from featviz.core.render.setup import prepare

sys.path.insert(0, str(Path(__file__).resolve().parent))
from course_candidates import EVERY, TOLERANCE, WINDOW, Quality, Run, last_window, missed, quality  # noqa: E402
from speed import import_lucent, lucents_hooks_removed  # noqa: E402

HERE = Path(__file__).resolve().parent
SHARED = Path(os.environ.get("FEATVIZ_SHARED", HERE.parent.parent / "shared"))
MODELS_DIR = SHARED / "models"
KINDS = ("channel", "neuron", "logit", "deepdream")
PACES = ("careful", "fast")

# per model: kind -> objectives (as featviz's objective grammar writes them). Channels spread
# over depths; the logits are classes each model knows (ImageNet 1 goldfish, 309 bee; CIFAR 3 cat)
TARGETS = {
    "inceptionv1": {"channel": ["mixed3b:147", "mixed4c:447"], "neuron": ["neuron:mixed4a:476"],
                    "logit": ["logit:309"], "deepdream": ["layer:mixed4c"]},
    "mobilenet_v2": {"channel": ["features.14:12"], "neuron": ["neuron:features.12:30"],
                     "logit": ["logit:309"], "deepdream": ["layer:features.14"]},
    # the same network and weights as inceptionv1, built by a user: featviz knows nothing
    # special about it, so its speed is what any model gets
    "googlenet": {"channel": ["inception4c:81"], "neuron": ["neuron:inception4a:476"],
                  "logit": ["logit:1"], "deepdream": ["layer:inception4c"]},
    "cifar_resnet56": {"channel": ["layer3:10"], "neuron": ["neuron:layer3:20"],
                       "logit": ["logit:3"], "deepdream": ["layer:layer3"]},
    "vit_tiny": {"channel": ["mlp:blocks.8:100"], "neuron": ["mlp:blocks.8:100:7:7"],
                 "logit": ["logit:309"], "deepdream": ["layer:blocks.8"]},
}


def user_googlenet() -> torch.nn.Module:
    """torchvision's GoogLeNet with the paper's architecture restored (the four changes of
    ``../shared/models/README.md``) and BVLC's weights, wrapped with Caffe's preprocessing: a
    model the user builds, which featviz knows nothing special about."""
    from torch import nn
    from torchvision.models import googlenet
    from torchvision.models.googlenet import BasicConv2d

    net = googlenet(weights=None, aux_logits=False, init_weights=False, transform_input=False)
    lrn = nn.LocalResponseNorm(5, alpha=1e-4, beta=0.75, k=1.0)
    net.maxpool1 = nn.Sequential(nn.MaxPool2d(3, 2, ceil_mode=True), lrn)
    net.maxpool2 = nn.Sequential(nn.LocalResponseNorm(5, alpha=1e-4, beta=0.75, k=1.0),
                                 nn.MaxPool2d(3, 2, ceil_mode=True))
    net.maxpool4 = nn.MaxPool2d(3, 2, ceil_mode=True)
    for name in ("inception3a", "inception3b", "inception4a", "inception4b", "inception4c",
                 "inception4d", "inception4e", "inception5a", "inception5b"):
        block = getattr(net, name)
        old = block.branch3[1].conv
        block.branch3[1] = BasicConv2d(old.in_channels, old.out_channels, kernel_size=5,
                                       padding=2)
    state = torch.load(MODELS_DIR / "googlenet_bvlc_imagenet.pth", weights_only=True)
    net.load_state_dict(state, strict=True)
    return featviz.models.wrap(net.eval(), mean=[m / 255 for m in (123.0, 117.0, 104.0)],
                               std=[1 / 255] * 3, name="googlenet (user-built)")


def load(name: str) -> torch.nn.Module:
    """The model ``name`` of :data:`TARGETS` with its real weights."""
    if name == "googlenet":
        return user_googlenet()
    files = {"mobilenet_v2": "mobilenet_v2_imagenet_coral.pth",
             "cifar_resnet56": "resnet56_cifar10.pth"}
    # inceptionv1 and vit_tiny find their files in $FEATVIZ_MODELS
    os.environ.setdefault("FEATVIZ_MODELS", str(MODELS_DIR))
    weights = str(MODELS_DIR / files[name]) if name in files else "default"
    return featviz.models.load(name, weights=weights)


class LucentObjective:
    """featviz's objective as lucent's ``render_vis`` takes one: forward hooks of its own on
    the layers the objective reads (the model's output too), their outputs laid out as
    featviz's tap lays them out, minus the objective's value (lucent minimizes)."""

    def __init__(self, model: torch.nn.Module, objective: obj.Objective, size: int):
        self.model, self.objective, self.size = model, objective, size
        self.acts: dict[str, torch.Tensor] = {}
        self.handles = []

    def __enter__(self) -> LucentObjective:
        for layer in self.objective.layers:
            module = self.model if layer == OUTPUT else resolve_layer(self.model, layer)
            self.handles.append(module.register_forward_hook(self._keep(layer)))
        return self

    def __exit__(self, *exc) -> None:
        for handle in self.handles:
            handle.remove()

    def _keep(self, layer: str):
        def hook(module, args, out):
            self.acts[layer] = out
        return hook

    def __call__(self, _lucent_hooks) -> torch.Tensor:
        acts = normalize(dict(self.acts), declared(self.model), (self.size, self.size))
        return -self.objective(acts).sum()


def lucent_size(model, size: int) -> int | None:
    """What lucent is told to resize its transformed images to: nothing at 224 px and above
    (as users run it: the model sees lucent's padded, jittered ~240 px images, as it sees
    featviz's), the model's size where it takes only that one (ViT-Tiny), and the image's own
    size below 224 (lucent would otherwise upsample a CIFAR net's 32 px images to 224)."""
    return size if fixed_input_size(model) is not None or size < 224 else None


def lucent_run(lucent, model, objective: obj.Objective, size: int, seed: int,
               steps: int) -> Run:
    """lucent's render_vis as a user runs it, on featviz's objective, at the model's size."""
    torch.manual_seed(seed)
    np.random.seed(seed)
    made = {}

    def param_f():
        params, image_f = lucent.param.image(size)
        made["image_f"] = image_f
        return params, image_f

    marks = sorted({max(1, steps - k * EVERY) for k in range(WINDOW)})
    from lucent.optvis.objectives import Objective as LucentObj
    t0 = time.perf_counter()
    with lucents_hooks_removed(model), LucentObjective(model, objective, size) as mine:
        shown = lucent.render.render_vis(model, LucentObj(mine), param_f=param_f,
                                         thresholds=marks, preprocess=False, progress=False,
                                         show_image=False, fixed_image_size=lucent_size(model,
                                                                                      size))
    seconds = time.perf_counter() - t0
    window = [torch.from_numpy(np.ascontiguousarray(im)).permute(0, 3, 1, 2).float()
              for im in shown]
    with torch.no_grad():
        window[-1] = made["image_f"]().detach().cpu()
    return Run(seconds, window[-1], quality(model, objective, window), steps)


def featviz_run(model, objective: obj.Objective, size: int, seed: int, pace: str,
                ref: Quality, steps: int) -> Run:
    """featviz at ``pace``; a snapshot every EVERY steps, judged against ``ref``."""
    marks = list(range(EVERY, steps + 1, EVERY))
    res = featviz.render(model, objective, size=size, steps=steps, seed=seed, pace=pace,
                         progress=False, thresholds=marks, record_every=EVERY)
    clock = dict(zip(res.history_steps, res.history_times, strict=True))
    last = last_window(res.snapshots, res.steps_done) or [res.images]
    run = Run(res.seconds, res.images, quality(model, objective, last), res.steps_done)
    for step in marks:
        window = last_window(res.snapshots, step)
        if not fine_enough(window, ref):  # the cheap checks first: no model run
            continue
        q = quality(model, objective, window)
        if q.reaches(ref):
            run.reached_step, run.reached_seconds = step, clock[step]
            run.reached_image = res.snapshots[step]
            break
    return run


def fine_enough(window: list[torch.Tensor], ref: Quality) -> bool:
    """Whether the snapshots' high-frequency share and checkerboard energy are within
    lucent's bar (what :meth:`Quality.reaches` checks besides the held-out objective)."""
    hf = statistics.fmean(metrics.high_frequency_share(im[0]) for im in window)
    checker = statistics.fmean(metrics.checkerboard_energy(im[0]) for im in window)
    return hf <= TOLERANCE * ref.hf and checker <= TOLERANCE * ref.checker


def default_pace(model, objective: obj.Objective, size: int) -> str:
    """The pace ``render`` takes for ``objective`` on ``model`` when none is named."""
    return prepare(model, objective, None, {"steps": 1, "size": size}).settings.pace


def row(lucent, model, name: str, kind: str, text: str, seed: int, steps: int) -> dict:
    """lucent, then featviz at each pace, on one target: one row of the table."""
    objective = obj.parse(text)
    size = input_size(model)
    ref = lucent_run(lucent, model, objective, size, seed, steps)
    runs = {pace: featviz_run(model, objective, size, seed, pace, ref.quality, steps)
            for pace in PACES}
    return {"model": name, "kind": kind, "objective": text, "seed": seed, "size": size,
            "lucent": ref, "runs": runs, "default": default_pace(model, objective, size)}


def ratio(r: dict, pace: str) -> float:
    """lucent's seconds over featviz's to lucent's quality; 0 where featviz never got there."""
    t = r["runs"][pace].reached_seconds
    return r["lucent"].seconds / t if t else 0.0


def cell(run: Run, ref: Run) -> str:
    """A table cell: seconds (step) where ``run`` met ``ref``'s bar, else why not."""
    if run.reached_step is not None:
        return f"{run.reached_seconds:.1f} ({run.reached_step})"
    return missed(run, ref)


def print_table(rows: list[dict]) -> None:
    """The table, then per model and per pace the medians the issue's targets read."""
    print("| model | objective | lucent s | careful s (step) | fast s (step) | defaults | "
          "lucent / defaults |")
    print("|---|---|---:|---:|---:|---|---:|")
    for r in rows:
        x = ratio(r, r["default"])
        print(f"| {r['model']} | `{r['objective']}` | {r['lucent'].seconds:.1f} | "
              f"{cell(r['runs']['careful'], r['lucent'])} | "
              f"{cell(r['runs']['fast'], r['lucent'])} | {r['default']} | "
              + (f"{x:.1f}x |" if x else "not reached |"))
    print()
    for model in dict.fromkeys(r["model"] for r in rows):
        mine = [r for r in rows if r["model"] == model]
        parts = []
        for pace in (*PACES, "defaults"):
            xs = [ratio(r, r["default"] if pace == "defaults" else pace) for r in mine]
            parts.append(f"{pace} median {statistics.median(xs):.2f}x, worst "
                         f"{min(xs):.2f}x, reached {sum(x > 0 for x in xs)}/{len(xs)}")
        print(f"{model}: " + "; ".join(parts))
    for kind in KINDS:
        mine = [r for r in rows if r["kind"] == kind]
        if mine:
            print(f"{kind}: " + "; ".join(
                f"{pace} median {statistics.median(ratio(r, pace) for r in mine):.2f}x"
                for pace in PACES))


def figure(rows: list[dict], path: Path) -> Path:
    """One row per target: lucent at 512 steps, featviz's defaults where they reached
    lucent's bar (or at 512 where they did not), each labelled with its seconds."""
    from featviz import images

    tiles, labels = [], []
    for r in rows:
        luc, mine = r["lucent"], r["runs"][r["default"]]
        shown = mine.reached_image if mine.reached_image is not None else mine.image
        when = f"step {mine.reached_step}" if mine.reached_step else "512, not reached"
        side = 224  # every tile one size (CIFAR's 32 px shown larger, pixels kept)
        tiles += [torch.nn.functional.interpolate(im, size=side, mode="nearest")[0]
                  for im in (luc.image, shown)]
        labels += [f"{r['model']} {r['objective']}: lucent 512, {luc.seconds:.0f} s",
                   f"featviz defaults ({r['default']}) {when}, "
                   f"{mine.reached_seconds or mine.seconds:.0f} s"]
    path.parent.mkdir(parents=True, exist_ok=True)
    images.grid(tiles, labels, ncol=4).save(path)
    return path


def as_json(rows: list[dict]) -> list[dict]:
    def run(x: Run) -> dict:
        return {"seconds": x.seconds, "reached_step": x.reached_step,
                "reached_seconds": x.reached_seconds, "held_out": x.quality.held_out,
                "hf": x.quality.hf, "checker": x.quality.checker}
    return [{**{k: r[k] for k in ("model", "kind", "objective", "seed", "default")},
             "lucent": run(r["lucent"]), **{p: run(r["runs"][p]) for p in PACES}}
            for r in rows]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", nargs="+", choices=list(TARGETS), default=list(TARGETS))
    ap.add_argument("--kinds", nargs="+", choices=KINDS, default=list(KINDS))
    ap.add_argument("--steps", type=int, default=512, help="lucent's and featviz's steps")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu",
                    help="where the models run (lucent takes the first GPU when there is one)")
    ap.add_argument("--figure", help="write lucent / featviz defaults side by side here (PNG)")
    ap.add_argument("--json", help="write the numbers here")
    ap.add_argument("--quick", action="store_true", help="a smoke run: 32 steps, one target "
                    "per model")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    lucent = import_lucent()
    if lucent is None:
        print("lucent 0.1.8 is not installed: pip install --no-deps torch-lucent==0.1.8")
        return 2
    steps = 32 if args.quick else args.steps
    t0 = time.perf_counter()
    rows = []
    for name in args.models:
        try:
            model = load(name).to(args.device)
        except (OSError, featviz.errors.FeatvizError) as err:  # weights absent here
            print(f"{name}: skipped ({err})", flush=True)
            continue
        targets = [(k, t) for k in args.kinds for t in TARGETS[name].get(k, [])]
        for seed, (kind, text) in enumerate(targets[:1] if args.quick else targets):
            rows.append(row(lucent, model, name, kind, text, seed, steps))
            r = rows[-1]
            print(f"{name} {text}: lucent {r['lucent'].seconds:.0f} s; " + ", ".join(
                f"{p} {cell(r['runs'][p], r['lucent'])}" for p in PACES) +
                f"; default {r['default']} ({time.perf_counter() - t0:.0f} s)", flush=True)
    where = torch.cuda.get_device_name() if args.device.startswith("cuda") else \
        f"{args.threads} CPU thread(s)"
    print(f"\n{where}, batch 1, {steps} steps; quality = held-out objective, "
          "high-frequency share and checkerboard within 5 % of lucent's\n")
    print_table(rows)
    if args.json:
        Path(args.json).write_text(json.dumps(as_json(rows), indent=1))
    if args.figure:
        print(f"\nfigure: {figure(rows, Path(args.figure))}")
    print(f"\n{time.perf_counter() - t0:.0f} s in all")
    return 0


if __name__ == "__main__":
    sys.exit(main())
