"""featviz's render step against the floor and against lucent, measured in one run.

For GoogLeNet, MobileNetV2, VGG16 and ResNet-50 at a shallow, a middle and a deep layer, at 128
and 224 px, batch 1 and 16, it prints a markdown table of milliseconds per optimization step:

- featviz: ``featviz.render`` (Fourier + decorrelated colour, "standard" transforms, Adam), with
  one channel per image of the batch (the normal way to render a layer);
- floor: a bare forward stopped after the target layer plus the backward to the input, weights
  frozen, on an input of the size featviz's transforms hand the model (224 -> 236 px), on the
  model as it is (featviz folds batch norms into convolutions and takes the stem's input
  gradient by phases: it may beat the floor);
- lucent (PyPI ``torch-lucent`` 0.1.8, if installed): ``render_vis`` with the same
  parameterization, told to show the model the same size (``fixed_image_size``);
- lucent default: lucent as users run it, with its own upsampling (128 px images reach the
  model at 224 px); reported, not counted: it shows the model a different picture (measured
  at 128 px only; at 224 px lucent does not upsample).

Each method runs a few warm-up steps, then the timed ones; methods alternate per row so that
load on a shared machine hits all of them alike. On the CPU each method's figure is its median
step (load from elsewhere lands in single steps); on a GPU the mean step, timed without a
synchronization in between. Weights are random (speed does not depend on
them). On CUDA the peak memory per row is printed too; on the CPU a separate line gives the
peak host memory of rendering 64 channels at 224 px in batches of 16.

    python benchmarks/speed.py                      # everything, CPU or the first GPU
    python benchmarks/speed.py --models mobilenet_v2,resnet50 --sizes 224 --batches 1,16

lucent's dependencies pin a kornia from 2020; install it beside featviz without them:
``pip install --no-deps torch-lucent==0.1.8 && pip install decorator``. This script patches the
two kornia functions lucent calls under their old names, and stubs IPython if it is missing.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import subprocess
import sys
import time
import types

import torch

import featviz
from featviz import objectives as obj
from featviz import transforms as T
from featviz.core.model_info import model_device

LAYERS = {
    "googlenet": ["inception3a", "inception4a", "inception5b"],
    "mobilenet_v2": ["features.4", "features.10", "features.17"],
    "vgg16": ["features.8", "features.18", "features.29"],
    "resnet50": ["layer2", "layer3", "layer4"],
}


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# -- the floor ----------------------------------------------------------------------------
class _Stop(Exception):
    pass


def floor_ms(net: torch.nn.Module, layer: str, batch: int, size: int, steps: int,
             device: torch.device) -> float:
    """A bare truncated forward + backward to the input, per step, in ms (after one warm-up
    step; ``steps=0`` times the warm-up step alone, as a probe). On the CPU the median step
    (as for featviz: load from elsewhere lands in single steps); on a GPU the mean over the
    timed steps, synchronized at their ends only (as featviz runs)."""
    module = dict(net.named_modules())[layer]
    store = {}

    def hook(m, i, o):
        store["a"] = o
        raise _Stop

    handle = module.register_forward_hook(hook)
    x = torch.rand(batch, 3, size, size, device=device, requires_grad=True)
    channels = torch.arange(batch, device=device)
    try:
        per_step = device.type == "cpu" or steps == 0
        times = []
        for i in range(max(steps, 0) + 1):
            if per_step or i <= 1:
                sync(device)
                t0 = time.perf_counter()
            with contextlib.suppress(_Stop):
                net(x)
            act = store.pop("a")
            act[torch.arange(batch), channels % act.shape[1]].mean().backward()
            x.grad = None
            if per_step and (i >= 1 or steps == 0):
                sync(device)
                times.append(time.perf_counter() - t0)
        if not per_step:
            sync(device)
            return 1000 * (time.perf_counter() - t0) / steps
    finally:
        handle.remove()
    return 1000 * sorted(times)[len(times) // 2]


# -- featviz --------------------------------------------------------------------------------
def featviz_ms(model, layer: str, batch: int, size: int, steps: int) -> float:
    channels = list(range(batch))
    objective = obj.channel(layer, channels) if batch > 1 else obj.channel(layer, 0)
    # step 1 also runs the whole model once on one image (to learn where to stop) and makes
    # the first allocations; time the steps after two warm-up steps. On a GPU with no device
    # read-back in between (one threshold marks the start): the mean step. On the CPU, where
    # a read-back costs nothing, every step is recorded and the median step taken, as for
    # the floor
    warm = 2
    cpu = model_device(model).type == "cpu"
    res = featviz.render(model, objective, steps=warm + steps, size=size, batch=batch,
                         progress=False, redirect_relu=0, record_every=1 if cpu else 10**9,
                         thresholds=[warm], seed=0)
    if not cpu:
        return res.ms_per_step(after=warm - 1)
    times = [t for s, t in zip(res.history_steps, res.history_times, strict=True)
             if s >= warm]
    steps_ms = sorted(1000 * (b - a) for a, b in zip(times, times[1:], strict=False))
    return steps_ms[len(steps_ms) // 2]


# -- lucent ---------------------------------------------------------------------------------
def import_lucent():
    """Import lucent 0.1.8 on a current torch/kornia, or return None when it is absent."""
    try:
        import kornia
        import kornia.geometry.transform as kt
    except ImportError:
        return None
    # lucent calls these under their pre-0.5 top-level names
    kornia.get_rotation_matrix2d = getattr(kornia, "get_rotation_matrix2d",
                                           kt.get_rotation_matrix2d)
    kornia.warp_affine = getattr(kornia, "warp_affine", kt.warp_affine)
    try:
        import IPython.display  # noqa: F401
    except ImportError:  # lucent imports it for notebooks only
        ipy = types.ModuleType("IPython")
        ipy.display = types.ModuleType("IPython.display")
        sys.modules["IPython"], sys.modules["IPython.display"] = ipy, ipy.display
    try:
        from lucent.optvis import param, render
    except ImportError:
        return None
    return types.SimpleNamespace(param=param, render=render)


@contextlib.contextmanager
def lucents_hooks_removed(model: torch.nn.Module):
    """lucent 0.1.8's ``render_vis`` puts a forward hook on every module and never removes
    them: each call leaves one more per module, which every later forward pass runs, lucent's
    and featviz's (and featviz's InceptionV1 calls a watched unit's modules one by one instead
    of its one fused convolution). Remove what a call added, so each render, lucent's as
    featviz's, starts from the model as it was."""
    before = {module: set(module._forward_hooks) for module in model.modules()}
    try:
        yield
    finally:
        for module in model.modules():
            for key in set(module._forward_hooks) - before.get(module, set()):
                del module._forward_hooks[key]
                module._forward_hooks_with_kwargs.pop(key, None)
                module._forward_hooks_always_called.pop(key, None)


class _TimedAdam(torch.optim.Adam):
    """Adam that notes the time of each step, to read lucent's per-step cost."""

    stamps: list[float]

    def step(self, closure=None):
        out = super().step(closure)
        sync(self.param_groups[0]["params"][0].device)
        self.stamps.append(time.perf_counter())
        return out


def lucent_ms(lucent, net, layer: str, batch: int, size: int, steps: int,
              fixed: int | None) -> float:
    import numpy as np

    np.random.seed(0)
    opts = []

    def make_opt(params):
        opt = _TimedAdam(params, lr=0.05)
        opt.stamps = []
        opts.append(opt)
        return opt

    warm = 2
    with lucents_hooks_removed(net):
        lucent.render.render_vis(
            net, f"{layer.replace('.', '_')}:0",
            param_f=lambda: lucent.param.image(size, batch=batch),
            optimizer=make_opt, thresholds=(warm + steps,), progress=False, show_image=False,
            fixed_image_size=fixed,
        )
    stamps = opts[0].stamps
    if model_device(net).type == "cpu":  # the median step, as for the others
        steps_ms = sorted(1000 * (b - a) for a, b in zip(stamps[warm - 1:], stamps[warm:],
                                                         strict=False))
        return steps_ms[len(steps_ms) // 2]
    return 1000 * (stamps[-1] - stamps[warm - 1]) / (len(stamps) - warm)


# -- memory -------------------------------------------------------------------------------
def host_memory_gib(model_name: str, layer: str, steps: int) -> float:
    """Peak RSS of a separate process rendering 64 channels at 224 px in batches of 16.

    The child reports its own peak from /proc (VmHWM, its own address space): ru_maxrss
    would include the resident memory of this large process, inherited at fork."""
    out = os.path.join(os.environ.get("TMPDIR", "/tmp"), "featviz_speed_mem.png")
    code = (
        "import resource, sys\n"
        "from featviz.cli import main\n"
        f"main(['render', '--model', '{model_name}', '--weights', 'random', '--device', 'cpu',"
        f" '--objective', 'channel:{layer}:0-63', '--batch-size', '16', '--size', '224',"
        f" '--steps', '{steps}', '--no-progress', '--out', {out!r}])\n"
        "hwm = [ln for ln in open('/proc/self/status') if ln.startswith('VmHWM:')]\n"
        "peak = int(hwm[0].split()[1]) if hwm else "
        "resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "print('PEAK', peak)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True,
                          text=True)
    kib = int(proc.stdout.rsplit("PEAK", 1)[1])
    return kib / 2**20  # Linux reports KiB


def print_batched(per_image: dict[tuple[str, str, int], dict[int, tuple[float, float]]]) -> None:
    """Per image: featviz rendering a layer's channels in one batch (the largest batch
    measured) against lucent rendering them one by one (its batch-1 row)."""
    rows = []
    for (name, layer, size), by_batch in per_image.items():
        big = max(by_batch)
        if big == 1 or 1 not in by_batch or by_batch[1][1] != by_batch[1][1]:  # NaN: no lucent
            continue
        featviz_each = by_batch[big][0] / big
        lucent_each = by_batch[1][1]
        rows.append(f"| {name} | {layer} | {size} | {big} | {featviz_each:.1f} | "
                    f"{lucent_each:.1f} | {lucent_each / featviz_each:.1f} |")
    if rows:
        print("\nper image, channels rendered together vs lucent one by one:\n")
        print("| model | layer | px | featviz batch | featviz ms/step/image | lucent ms/step "
              "(batch 1) | lucent/featviz per image |")
        print("|---|---|---:|---:|---:|---:|---:|")
        print("\n".join(rows))


def print_header(device: torch.device, lucent) -> None:
    """The device line and the head of the table."""
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else \
        f"CPU, {torch.get_num_threads()} threads"
    print(f"device: {where}; torch {torch.__version__}; lucent "
          f"{'0.1.8' if lucent else 'not installed'}\n")
    print("| model | layer | px | batch | featviz ms | floor ms | featviz/floor | lucent ms "
          "| lucent/featviz | lucent/floor | lucent default ms |" +
          (" peak MiB featviz / floor / lucent |" if device.type == "cuda" else ""))
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|" +
          ("---|" if device.type == "cuda" else ""))


def row(name: str, model, layer: str, size: int, batch: int, device: torch.device, lucent,
        budget: float) -> tuple[float, float]:
    """Time one row of the table and print it; returns (featviz ms, lucent ms) per step."""
    net = model.net
    seen = T.standard().out_size((size, size))[0]
    for p in net.parameters():
        p.requires_grad_(False)
    probe = floor_ms(net, layer, batch, seen, 0, device)
    # at least 2 timed steps, but 1 for steps of several seconds (VGG16 at batch 16) so that
    # the CPU run stays within about 10 minutes
    least = 1 if probe > 3000 else 2
    steps = max(least, min(30, round(1000 * budget / max(probe, 1e-3))))
    # cheap rows alternate the methods over several rounds and keep each one's best round:
    # load from elsewhere then hits all methods alike
    rounds = 3 if probe < 100 else 1
    runs: dict[str, list[float]] = {"featviz": [], "floor": [], "lucent": []}
    peaks: dict[str, float] = {}
    for _ in range(rounds):
        jobs = [("featviz", featviz_ms, (model, layer, batch, size, steps)),
                ("floor", floor_ms, (net, layer, batch, seen, steps, device))]
        if lucent:
            jobs.append(("lucent", lucent_ms, (lucent, net, layer, batch, size, steps, seen)))
        for key, fn, fargs in jobs:
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            runs[key].append(fn(*fargs))
            if device.type == "cuda":
                peaks[key] = torch.cuda.max_memory_allocated(device) / 2**20
    fv, fl = min(runs["featviz"]), min(runs["floor"])
    lu = min(runs["lucent"]) if runs["lucent"] else float("nan")
    # lucent's own default differs from the counted row by its upsampling of small images to
    # 224 px; at 224 px it only adds its size-changing scale
    ld = (lucent_ms(lucent, net, layer, batch, size, max(1, steps // 2), None)
          if lucent and size < 224 else float("nan"))
    mem = (" " + " / ".join(f"{peaks.get(k, float('nan')):.0f}" for k in runs) + " |"
           ) if peaks else ""
    print(f"| {name} | {layer} | {size} | {batch} | {fv:.1f} | {fl:.1f} | {fv / fl:.2f} | "
          f"{lu:.1f} | {lu / fv:.2f} | {lu / fl:.2f} | {ld:.1f} |{mem}", flush=True)
    return fv, lu


def _listed(values: list[str]) -> list[str]:
    """The items of a list option given comma- or space-separated."""
    return [item for value in values for item in value.split(",") if item]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    # lists: comma- or space-separated (--batches 1,16 or --batches 1 16)
    ap.add_argument("--models", nargs="+", default=["googlenet,mobilenet_v2,vgg16,resnet50"],
                    help=f"of {', '.join(LAYERS)}")
    ap.add_argument("--sizes", nargs="+", default=["128,224"])
    ap.add_argument("--batches", nargs="+", default=["1,16"])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--budget", type=float, default=0.4,
                    help="seconds of timed steps per method and row (at least 1 step)")
    ap.add_argument("--no-lucent", action="store_true")
    ap.add_argument("--no-memory", action="store_true")
    ap.add_argument("--threads", type=int, default=0,
                    help="CPU threads (default: all cores; fewer on a machine others share)")
    args = ap.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cpu":
        torch.set_num_threads(args.threads or os.cpu_count() or 1)
    lucent = None if args.no_lucent else import_lucent()
    print_header(device, lucent)
    # one throwaway round first: thread pools, allocator and kernel caches warm up here, not in
    # the first row
    warm_model = featviz.models.load("mobilenet_v2", weights=None, device=device)
    featviz_ms(warm_model, "features.4", 2, 64, 2)
    floor_ms(warm_model.net, "features.4", 2, 64, 2, device)
    t_start = time.perf_counter()
    per_image: dict[tuple[str, str, int], dict[int, tuple[float, float]]] = {}
    for name in _listed(args.models):
        model = featviz.models.load(name, weights=None, device=device)
        for layer in LAYERS[name]:
            for size in (int(s) for s in _listed(args.sizes)):
                for batch in (int(b) for b in _listed(args.batches)):
                    per_image.setdefault((name, layer, size), {})[batch] = row(
                        name, model, layer, size, batch, device, lucent, args.budget)
    print(f"\n{time.perf_counter() - t_start:.0f} s in all")
    print_batched(per_image)
    if device.type == "cpu" and not args.no_memory:
        gib = host_memory_gib("mobilenet_v2", "features.7", 2)
        print(f"peak host memory, 64 channels of mobilenet_v2 features.7 at 224 px in batches of "
              f"16 (`featviz render`, 2 steps per batch): {gib:.2f} GiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
