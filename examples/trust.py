"""Can these pictures be trusted? Path similarity (Geirhos et al. 2023) of 16 InceptionV1 units
from mixed3a to mixed5b against their top photos, random photos and photos of their top class.

Renders the units (two channels per layer, one in mixed5a and mixed5b, drawn with seed 0, not
picked by eye), streams the sample photos once, and draws each unit's curves over depth beside
its picture.

    python examples/trust.py                  # 16 units, the 1000 sample photos
    python examples/trust.py --quick          # 2 units, 48 photos, a few steps: a smoke run

Figures: ``examples/figures/trust_paths.png``; numbers: ``--run``/paths.json (resumable: the
renders are kept).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import matplotlib
import numpy as np
import torch
from _shared import SHARED, add_model_args, load_model

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

import featviz  # noqa: E402
from featviz import circuits, images  # noqa: E402
from featviz.core.files import write_atomic  # noqa: E402
from featviz.core.hooks import LayerTap, layer_aliases  # noqa: E402
from featviz.methods import trust  # noqa: E402
from featviz.methods.dataset import LabelledFolder  # noqa: E402

LAYERS = ("mixed3a", "mixed3b", "mixed4a", "mixed4b", "mixed4c", "mixed4d", "mixed4e",
          "mixed5a", "mixed5b")


def parse(argv: list[str] | None) -> argparse.Namespace:
    """The command line."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_model_args(ap)
    ap.add_argument("--images", default=str(SHARED / "imagenet-sample"))
    ap.add_argument("--steps", type=int, default=512, help="render steps per unit")
    ap.add_argument("--k", type=int, default=10, help="top photos per unit")
    ap.add_argument("--randoms", type=int, default=20, help="random photos")
    ap.add_argument("--limit", type=int, help="photos used (default: all)")
    ap.add_argument("--stages", default="paths,fooling,accent",
                    help="what to run, of paths, fooling, accent (default: all)")
    ap.add_argument("--fool-steps", type=int, default=256, help="render steps of the demo")
    ap.add_argument("--accent-steps", type=int, default=100,
                    help="accentuation steps (default: the paper's 100)")
    ap.add_argument("--accent-crops", type=int, default=16,
                    help="accentuation crops per step (default: the paper's 16)")
    ap.add_argument("--quick", action="store_true",
                    help="2 units, 48 photos, one accentuated photo, a few steps each")
    ap.add_argument("--run", help="the run's folder (default: examples/runs/trust)")
    ap.add_argument("--out", default=str(Path(__file__).parent / "figures"))
    args = ap.parse_args(argv)
    if args.quick:
        args.steps, args.limit, args.fool_steps, args.accent_steps = 8, 48, 8, 2
        args.accent_crops, args.k, args.randoms = 2, 3, 6
    args.run = Path(args.run or Path(args.out).parent / "runs" /
                    ("trust_quick" if args.quick else "trust"))
    return args


def pick_units(model, quick: bool) -> list[tuple[str, int]]:
    """Two channels of each layer mixed3a-mixed4e and one of mixed5a and mixed5b, drawn with
    seed 0 (the first two only with ``quick``)."""
    from featviz.core.hooks import LayerTap
    with LayerTap(model, LAYERS) as tap, torch.no_grad():
        widths = {n: a.shape[1] for n, a in tap(torch.zeros(1, 3, 224, 224)).items()}
    rng = np.random.default_rng(0)
    units = []
    for layer in LAYERS:
        n = 1 if layer.startswith("mixed5") else 2
        units += [(layer, int(c)) for c in sorted(rng.choice(widths[layer], n, replace=False))]
    return units[:2] if quick else units


def renders(model, units, steps: int, run: Path) -> torch.Tensor:
    """The units' visualizations at 224 px, kept in ``run`` (four per batch, so an
    interrupted run loses one batch at most)."""
    cache = circuits.RenderCache(steps=steps, size=224, folder=run / "renders")
    out = []
    for i in range(0, len(units), 4):
        out += cache.get(model, units[i:i + 4])
    return torch.stack(out)


def curves_figure(model, results, images: torch.Tensor, path: Path, measure: str) -> None:
    """Per unit: its picture and its curves over depth."""
    names = {v: k for k, v in layer_aliases(model).items()}
    n = len(results)
    cols = 4
    rows = (n + cols - 1) // cols
    fig, axes = plt.subplots(rows, 2 * cols, figsize=(4.2 * cols, 2.1 * rows), dpi=110,
                             gridspec_kw={"width_ratios": [1, 1.9] * cols})
    axes = np.atleast_2d(axes)
    for i, (r, img) in enumerate(zip(results, images, strict=True)):
        a_img, a_cur = axes[i // cols, 2 * (i % cols)], axes[i // cols, 2 * (i % cols) + 1]
        a_img.imshow(img.permute(1, 2, 0).clamp(0, 1).numpy())
        a_img.set_axis_off()
        a_img.set_title(f"{r.unit}\nsummary {r.similarity:.2f}", fontsize=8)
        x = np.arange(len(r.layers))
        a_cur.plot(x, r.top, color="tab:green", lw=1.2, label="top photos (each other)")
        if r.top_class:
            a_cur.plot(x, r.top_class, color="tab:olive", lw=1, ls=":",
                       label="photos of the top class")
        a_cur.plot(x, r.random, color="tab:gray", lw=1.2, ls="--", label="random photos")
        a_cur.plot(x, r.visualization, color="tab:red", lw=1.6, label="visualization")
        a_cur.set_ylim(-0.4, 1.0)
        a_cur.set_xticks(x, [names.get(n, n).replace("mixed", "")
                             .replace("conv2d", "c") for n in r.layers], fontsize=6)
        a_cur.tick_params(axis="y", labelsize=6)
        a_cur.axhline(0, color="#ccc", lw=0.5)
    for j in range(n, rows * cols):
        axes[j // cols, 2 * (j % cols)].set_axis_off()
        axes[j // cols, 2 * (j % cols) + 1].set_axis_off()
    handles, labels = axes[0, 1].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=4, fontsize=8)
    what = {"attribution": "attribution profiles (which channels carry the unit's activation)",
            "activation": "activation profiles (each channel's mean activation)"}[measure]
    fig.suptitle(f"Spearman correlation with the unit's top photos of {what}, per layer up "
                 "to the unit's own", fontsize=9)
    fig.tight_layout(rect=(0, 0.04, 1, 0.97))
    write_atomic(path, lambda tmp: fig.savefig(tmp, format="png"))
    plt.close(fig)


def paths(model, args) -> dict:
    """The path check of the 16 units, both measures; a figure each; the numbers in the run
    folder."""
    units = pick_units(model, args.quick)
    t0 = time.perf_counter()
    images_ = renders(model, units, args.steps, args.run)
    t1 = time.perf_counter()
    photos = _photos(args)
    out, timing = {}, {"render_s": round(t1 - t0, 1), "photos": len(photos),
                       "units": len(units)}
    tag = "_quick" if args.quick else ""
    for measure in ("attribution", "activation"):
        t = time.perf_counter()
        results = trust.path_similarity(model, [f"{u}:{c}" for u, c in units], images_,
                                        photos, k=args.k, randoms=args.randoms,
                                        measure=measure, progress=True)
        timing[f"{measure}_s"] = round(time.perf_counter() - t, 1)
        trust.save_json(results, args.run / f"paths_{measure}.json")
        curves_figure(model, results, images_,
                      Path(args.out) / f"trust_paths_{measure}{tag}.png", measure)
        out[measure] = results
        for r in results:
            print(f"{measure:>11} {r.unit:>14}  visualization {r.similarity:.3f}  top photos "
                  f"{r.natural:.3f}  random {r.chance:.3f}  class {r.class_name}")
    write_atomic(args.run / "paths_timing.json", lambda tmp: tmp.write_text(json.dumps(timing)))
    print(json.dumps(timing))
    return out


def _photos(args) -> LabelledFolder:
    photos = LabelledFolder(args.images)
    return photos.spread(args.limit) if args.limit else photos


def _render(model, unit: str, steps: int, path: Path) -> torch.Tensor:
    """A unit's visualization at 224 px, seed 0, kept at ``path`` (read back when there)."""
    if path.is_file():
        return images.load(path)[0]
    img = featviz.render(model, f"channel:{unit}", size=224, steps=steps, seed=0).images[0]
    images.save(img, path)
    return img


def _unit_means(model, layer: str, channel: int, pictures: torch.Tensor) -> list[float]:
    """The channel's mean over positions on each picture (the channel objective's value)."""
    with LayerTap(model, [layer]) as tap, torch.no_grad():
        return tap(pictures)[layer][:, channel].flatten(1).mean(1).tolist()


def fooling(model, args) -> dict:
    """The manipulated network (Geirhos et al.'s silent units) of mixed4a:476 showing Grace
    Hopper: top-1 before and after on every photo and on a held-out half, the unit's
    activation on both visualizations and its top photo, the path check of both; a figure."""
    layer, channel = "mixed4a", 476
    target = SHARED / "images" / "grace_hopper.jpg"
    photos = _photos(args)
    t0 = time.perf_counter()
    man = trust.silent_path(model, layer, channel, target, photos)
    whole = trust.unchanged_on(model, man, photos)
    evens, odds = LabelledFolder(args.images), LabelledFolder(args.images)
    evens.files, odds.files = photos.files[0::2], photos.files[1::2]
    half = trust.silent_path(model, layer, channel, target, evens)
    held_out = trust.unchanged_on(model, half, odds)
    t1 = time.perf_counter()
    plain = _render(model, f"{layer}:{channel}", args.fool_steps, args.run / "fool_plain.png")
    fooled = _render(man.model, f"{layer}:{channel}", args.fool_steps,
                     args.run / "fool_manipulated.png")
    t2 = time.perf_counter()
    checks = {measure: [trust.path_similarity(m, [f"{layer}:{channel}"], img[None], photos,
                                              k=args.k, randoms=args.randoms,
                                              measure=measure)[0]
                        for m, img in ((model, plain), (man.model, fooled))]
              for measure in ("attribution", "activation")}
    t3 = time.perf_counter()
    top = images.load(Path(args.images) / checks["attribution"][0].top_sources[0],
                      size=224)[0]
    pics = torch.stack([plain, fooled, top])
    numbers = {
        "threshold": man.threshold, "gain": man.gain, "photos": man.photos,
        "top1_same": whole.same_top1, "max_logit_diff": whole.max_logit_diff,
        "fired": whole.fired, "held_out": {"photos": held_out.photos,
                                           "top1_same": held_out.same_top1,
                                           "fired": held_out.fired,
                                           "max_cosine": held_out.max_cosine,
                                           "threshold": half.threshold},
        "activation_original": dict(zip(("plain", "fooled", "top"),
                                        _unit_means(model, layer, channel, pics), strict=True)),
        "activation_manipulated": dict(zip(("plain", "fooled", "top"),
                                           _unit_means(man.model, layer, channel, pics),
                                           strict=True)),
        "cosine_with_target": dict(zip(("plain", "fooled", "top"),
                                       man.cosines(pics).tolist(), strict=True)),
        "paths": {m: {"plain": c[0].summary(), "fooled": c[1].summary(),
                      "plain_curve": c[0].visualization, "fooled_curve": c[1].visualization,
                      "layers": c[0].layers} for m, c in checks.items()},
        "seconds": {"fit_and_check": round(t1 - t0, 1), "renders": round(t2 - t1, 1),
                    "paths": round(t3 - t2, 1)}}
    write_atomic(args.run / "fooling.json",
                 lambda tmp: tmp.write_text(json.dumps(numbers, indent=1)))
    tag = "_quick" if args.quick else ""
    fooling_figure(model, images.load(target, size=224)[0], pics, checks, numbers,
                   Path(args.out) / f"trust_fooling{tag}.png")
    print(json.dumps(numbers, indent=1))
    return numbers


def fooling_figure(model, target, pics, checks, numbers: dict, path: Path) -> None:
    """The target, both visualizations and the top photo; the two path checks' curves."""
    names = {v: k for k, v in layer_aliases(model).items()}
    act_o, act_m = numbers["activation_original"], numbers["activation_manipulated"]
    fig, axes = plt.subplots(1, 6, figsize=(18, 3.6), dpi=110,
                             gridspec_kw={"width_ratios": [1, 1, 1, 1, 1.6, 1.6]})
    titles = ["target picture (not a photo of the set)",
              f"original model's visualization\nunit {act_o['plain']:.0f}",
              f"manipulated model's visualization\nunit {act_m['fooled']:.0f}",
              f"top photo, both models\nunit {act_o['top']:.0f}"]
    for ax, img, title in zip(axes[:4], [target, pics[0], pics[1], pics[2]], titles,
                              strict=True):
        ax.imshow(img.permute(1, 2, 0).clamp(0, 1).numpy())
        ax.set_title(title, fontsize=8)
        ax.set_axis_off()
    for ax, measure in zip(axes[4:], ("attribution", "activation"), strict=True):
        plain, fooled = checks[measure]
        x = np.arange(len(plain.layers))
        ax.plot(x, plain.top, color="tab:green", lw=1.2, label="top photos (each other)")
        ax.plot(x, plain.random, color="tab:gray", lw=1.2, ls="--", label="random photos")
        ax.plot(x, plain.visualization, color="tab:blue", lw=1.6,
                label=f"original visualization ({plain.similarity:.2f})")
        ax.plot(x, fooled.visualization, color="tab:red", lw=1.6,
                label=f"manipulated visualization ({fooled.similarity:.2f})")
        ax.set_xticks(x, [names.get(n, n) for n in plain.layers], fontsize=7, rotation=30)
        ax.set_ylim(-0.4, 1.0)
        ax.set_title(f"path similarity, {measure} profiles", fontsize=8)
        ax.legend(fontsize=6)
    fig.suptitle(f"mixed4a:476 with a silent path to a target: top-1 the same on "
                 f"{numbers['top1_same']} of {numbers['photos']} photos", fontsize=9)
    fig.tight_layout()
    write_atomic(path, lambda tmp: fig.savefig(tmp, format="png"))
    plt.close(fig)


ACCENT_LAYERS = ("mixed3b", "mixed4d")
ACCENT_PHOTOS = ("bird.jpg", "dragonfly.jpg", "hot_dog.jpg", "owl.jpg", "pets.jpg",
                 "sunflower.jpg")


def top_channel(model, layer: str, photo: torch.Tensor) -> int:
    """The photo's top unit of ``layer``: the channel of the highest mean activation."""
    with LayerTap(model, [layer]) as tap, torch.no_grad():
        return int(tap(photo[None])[layer][0].flatten(1).mean(1).argmax())


def accent(model, args) -> list[dict]:
    """Feature accentuation (Hamblin et al. 2024, featviz's defaults) of six photos, each for
    its top unit at two depths; a figure, the numbers in the run folder."""
    rows, numbers = [], []
    for name in ACCENT_PHOTOS[:1] if args.quick else ACCENT_PHOTOS:
        photo = images.load(SHARED / "images" / name, size=224)[0]
        row = [photo]
        for layer in ACCENT_LAYERS:
            c = top_channel(model, layer, photo)
            res = trust.accentuate(model, photo, f"channel:{layer}:{c}", steps=args.accent_steps,
                                   crops=args.accent_crops)
            row += [res.image, res.difference]
            numbers.append({"photo": name, "unit": f"{layer}:{c}", "before": res.before,
                            "after": res.after, "distance": res.distance,
                            "layer": res.layer, "seconds": round(res.seconds, 1)})
            print(json.dumps(numbers[-1]))
        rows.append(row)
    write_atomic(args.run / "accent.json", lambda tmp: tmp.write_text(json.dumps(numbers)))
    accent_figure(rows, numbers, Path(args.out) /
                  f"trust_accentuation{'_quick' if args.quick else ''}.png")
    return numbers


def accent_figure(rows, numbers, path: Path) -> None:
    """Per photo: the photo, then per depth the accentuated photo and where it changed."""
    # 72 dpi: six rows of detailed photos stay under 2 MB as a PNG
    fig, axes = plt.subplots(len(rows), 5, figsize=(12.5, 2.6 * len(rows)), dpi=72,
                             squeeze=False)
    for i, row in enumerate(rows):
        for j, pic in enumerate(row):
            ax = axes[i, j]
            if pic.dim() == 2:
                ax.imshow(pic.numpy(), cmap="magma")
            else:
                ax.imshow(pic.permute(1, 2, 0).clamp(0, 1).numpy())
            ax.set_axis_off()
        for d in range(2):
            n = numbers[2 * i + d]
            axes[i, 1 + 2 * d].set_title(f"{n['unit']}: {n['before']:.0f} -> {n['after']:.0f}",
                                         fontsize=8)
            axes[i, 2 + 2 * d].set_title(f"changed (distance {n['distance']:.2f} "
                                         f"at {n['layer']})", fontsize=7)
        axes[i, 0].set_title(numbers[2 * i]["photo"], fontsize=8)
    fig.tight_layout()
    write_atomic(path, lambda tmp: fig.savefig(tmp, format="png"))
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    """Run the stages and print their numbers."""
    args = parse(argv)
    args.run.mkdir(parents=True, exist_ok=True)
    model = load_model(args)
    stages = set(args.stages.split(","))
    if "paths" in stages:
        paths(model, args)
    if "fooling" in stages:
        fooling(model, args)
    if "accent" in stages:
        accent(model, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
