"""Decorrelation or jitter? Which does more against high-frequency "mosaic" patterns.

Renders K channels from three depths x S seeds in seven configurations:
pixel, pixel + transformation robustness, Fourier + decorrelated colour, Fourier + colour +
robustness (the "standard" transforms; featviz's defaults), the same with the fast course of
benchmarks/time_to_quality.py, and two further parameterizations with robustness:
MACO (fixed natural-image magnitude, phase optimized) and lucid's Laplacian pyramid; and
reads, at each step budget (snapshots of one run):
the objective reached, the objective under held-out random transforms, the high-frequency share
of the image's power, the checkerboard energy at the network's strides, steps to 90 % of the
final objective and ms per step. Then, for class (logit) visualizations of the CIFAR-10
ResNet-20, the share that ResNet-56 classifies as the target class (transfer).

    python benchmarks/decorrelation_vs_jitter.py            # MobileNetV2, 128 px
    python benchmarks/decorrelation_vs_jitter.py --quick    # about a minute
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import torch

import featviz
from featviz import metrics, param
from featviz import objectives as obj
from featviz import transforms as T

HERE = Path(__file__).resolve().parent
SHARED = Path(os.environ.get("FEATVIZ_SHARED", HERE.parent.parent / "shared"))
# The fast course of the time-to-quality benchmark (render's lr, ema, adam_floor, rail_guard):
# reported beside the defaults so that its pictures are judged here too, not only its speed.
FAST = {"lr": 0.1, "ema": 0.95, "adam_floor": 1.0, "rail_guard": 2.0}
CONFIGS = {  # name: (parameterization, transformation robustness, further render settings)
    "pixel": ("pixel", False, {}),
    "pixel + robustness": ("pixel", True, {}),
    "Fourier + colour": ("fourier", False, {}),
    "Fourier + colour + robustness": ("fourier", True, {}),
    "Fourier + colour + robustness, fast course": ("fourier", True, FAST),
    "MACO + robustness": ("maco", True, {}),
    "Laplacian + robustness": ("laplacian", True, {}),
}


def make_param(kind: str, size: int, gens: list[torch.Generator]):
    """The parameterization a configuration names, one generator per image."""
    batch = len(gens)
    if kind == "maco":
        return param.maco(size, batch, generator=gens)
    if kind == "laplacian":  # lucid's default: 4 levels, decorrelated colour
        return param.laplacian(size, batch, generator=gens)
    fft = kind == "fourier"
    return param.image(size, batch, fft=fft, decorrelate=fft, generator=gens)


def render_config(model, objective, size: int, batch: int, config: tuple,
                  steps: int, budgets: list[int], seed: int):
    kind, robust, settings = config
    gens = [torch.Generator().manual_seed(seed + i) for i in range(batch)]
    p = make_param(kind, size, gens)
    res = featviz.render(model, objective, p, steps=steps, thresholds=budgets,
                         transforms="standard" if robust else "none", seed=seed,
                         progress=False, record_every=4, **settings)
    return res


def channel_rows(model, layers: dict[str, list[int]], size: int, seeds: int, steps: int,
                 budgets: list[int]) -> list[dict]:
    rows = []
    held_out = T.standard()
    for name, config in CONFIGS.items():
        per_budget: dict[int, dict[str, list[float]]] = {b: {} for b in budgets}
        ms, reach = [], []
        for layer, channels in layers.items():
            objective = obj.channel(layer, channels)
            for s in range(seeds):
                res = render_config(model, objective, size, len(channels), config,
                                    steps, budgets, 1000 * s)
                ms.append(res.seconds * 1000 / max(res.steps_done, 1))
                reach += [r for r in metrics.steps_to_fraction(res.history,
                                                                res.history_steps) if r]
                for b in budgets:
                    imgs = res.snapshots[b]
                    m = per_budget[b]
                    m.setdefault("objective", []).extend(
                        metrics.objective_value(model, objective, imgs).tolist())
                    m.setdefault("held-out", []).extend(
                        metrics.robust_objective(model, objective, imgs, held_out, 8).tolist())
                    m.setdefault("hf", []).extend(metrics.high_frequency_share(i) for i in imgs)
                    m.setdefault("cb", []).extend(metrics.checkerboard_energy(i) for i in imgs)
        for b in budgets:
            m = per_budget[b]
            rows.append({"config": name, "steps": b,
                         **{k: sum(v) / len(v) for k, v in m.items()},
                         "reach90": sum(reach) / max(len(reach), 1), "ms": sum(ms) / len(ms)})
    return rows


def transfer_rows(size: int, steps: int, classes: int) -> list[dict]:
    src_path = SHARED / "models" / "resnet20_cifar10.pth"
    dst_path = SHARED / "models" / "resnet56_cifar10.pth"
    if not (src_path.is_file() and dst_path.is_file()):
        return []
    src = featviz.models.load("cifar_resnet20", weights=src_path)
    dst = featviz.models.load("cifar_resnet56", weights=dst_path)
    rows = []
    targets = list(range(classes))
    objective = obj.Objective.sum(obj.logit(c, batch=i) for i, c in enumerate(targets))
    for name, config in CONFIGS.items():
        res = render_config(src, objective, size, len(targets), config, steps, [steps], 0)
        with torch.no_grad():
            pred = dst(res.images).argmax(1)
        rows.append({"config": name, "transfer": float((pred == torch.tensor(targets))
                                                       .float().mean())})
    return rows


def plot(rows: list[dict], path: Path) -> Path:
    """Objective, held-out objective and high-frequency share against steps, per config."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    for name in CONFIGS:
        mine = [r for r in rows if r["config"] == name]
        steps = [r["steps"] for r in mine]
        for ax, key in zip(axes, ("objective", "held-out", "hf"), strict=True):
            ax.plot(steps, [r[key] for r in mine], marker="o", label=name)
    for ax, title in zip(axes, ("objective", "objective, held-out transforms",
                                "high-frequency share"), strict=True):
        ax.set_xscale("log", base=2)
        ax.set_xlabel("steps")
        ax.set_title(title, fontsize=10)
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--weights", default=str(SHARED / "models" / "mobilenet_v2_imagenet_coral.pth"))
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--channels", type=int, default=2, help="K channels per layer")
    ap.add_argument("--seeds", type=int, default=2)
    ap.add_argument("--budgets", default="64,256,512")
    ap.add_argument("--quick", action="store_true", help="tiny settings: about a minute")
    ap.add_argument("--out", default="out/decorrelation", help="folder for the plot")
    args = ap.parse_args(argv)
    torch.set_num_threads(os.cpu_count() or 1)
    budgets = [int(b) for b in args.budgets.split(",")]
    size, k, seeds, cifar_steps = args.size, args.channels, args.seeds, 256
    if args.quick:
        size, k, seeds, budgets, cifar_steps = 64, 1, 1, [16, 48], 32
    model = featviz.models.load("mobilenet_v2", weights=args.weights, mean=(0.5,) * 3,
                                std=(0.5,) * 3)
    layers = {layer: list(range(k)) for layer in ("features.4", "features.10", "features.16")}
    t0 = time.perf_counter()
    rows = channel_rows(model, layers, size, seeds, max(budgets), budgets)
    print(f"MobileNetV2, {size} px, {k} channels x 3 layers x {seeds} seeds\n")
    print("| configuration | steps | objective | held-out transforms | high-freq. share | "
          "checkerboard | steps to 90% | ms/step |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['config']} | {r['steps']} | {r['objective']:.2f} | {r['held-out']:.2f} | "
              f"{r['hf']:.3f} | {r['cb']:.2f} | {r['reach90']:.0f} | {r['ms']:.1f} |")
    print(f"\nplot: {plot(rows, Path(args.out) / 'decorrelation_vs_jitter.png')}")
    transfer = transfer_rows(32, cifar_steps, 10)
    if transfer:
        print("\nCIFAR-10: logit visualizations of ResNet-20 classified as the target by "
              "ResNet-56\n\n| configuration | transfer |\n|---|---:|")
        for r in transfer:
            print(f"| {r['config']} | {r['transfer']:.0%} |")
    print(f"\n{time.perf_counter() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
