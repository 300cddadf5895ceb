"""Dictionary features: a TopK sparse autoencoder trained on one layer's activations over the
sample photos, measured, and shown beside the layer's neurons.

Trains (``featviz dictionary train``'s steps), measures (held-out FVU, L0, dead features;
top-1 with the layer spliced), shows (``featviz dictionary show``: the most and least
single-minded features and neurons with their renders and top patches), then draws the
single-mindedness distributions of both kinds and, for a convolutional layer, scans every
feature and every neuron with curve stimuli (as the circuits' family scan does) to ask whether
the dictionary holds curve detectors that no single neuron holds.

    python examples/dictionary.py                                   # InceptionV1 mixed3b
    python examples/dictionary.py --model vit_tiny --layer blocks.8 --epochs 8
    python examples/dictionary.py --quick                           # 48 photos: a smoke run

Figures: ``examples/figures/dictionary_<model>_<layer>_{sheet,minded,curves}.png``; the run's
store, dictionary, page and numbers stay under ``--run`` (resumable: run it again).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import matplotlib
import numpy as np
import torch
from _shared import SHARED, add_model_args, load_model

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from featviz import circuits  # noqa: E402
from featviz.core.files import write_atomic  # noqa: E402
from featviz.face import dictionary_page, dictionary_run  # noqa: E402
from featviz.methods import dictionary  # noqa: E402
from featviz.methods.atlas_store import ActivationStore  # noqa: E402
from featviz.methods.circuits.families import (  # noqa: E402
    MAX_CIRCULAR_VARIANCE,
    MIN_RESPONSE,
    members,
)
from featviz.methods.circuits.tuning import measure, orientation_curve  # noqa: E402


def parse(argv: list[str] | None) -> argparse.Namespace:
    """The command line."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_model_args(ap)
    ap.add_argument("--layer", default="mixed3b")
    ap.add_argument("--images", default=str(SHARED / "imagenet-sample"))
    ap.add_argument("--features", type=int, help="dictionary size (default 8 x channels)")
    ap.add_argument("--k", type=int, default=32, help="features active per vector")
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--batch", type=int, default=1024, help="vectors per training step")
    ap.add_argument("--limit", type=int, help="photos used (default: all)")
    ap.add_argument("--steps", type=int, default=128, help="render steps per unit")
    ap.add_argument("--quick", action="store_true",
                    help="48 photos, 256 features, 1 epoch, 8 render steps")
    ap.add_argument("--run", help="the run's folder (default: examples/runs/<model>_<layer>)")
    ap.add_argument("--out", default=str(Path(__file__).parent / "figures"))
    args = ap.parse_args(argv)
    if args.quick:
        args.limit, args.features, args.epochs, args.steps = 48, 256, 1, 8
    args.tag = f"{args.model}_{args.layer}".replace(".", "_").replace(":", "_")
    # beside the figures, not among them: a store of every position is hundreds of MB
    args.run = args.run or str(Path(args.out).parent / "runs" / (
        args.tag + ("_quick" if args.quick else "")))
    return args


def minded_figure(units: dict, path: Path, title: str) -> None:
    """Histograms of both kinds' single-mindedness, medians marked."""
    fig, ax = plt.subplots(figsize=(6.4, 3.4), dpi=120)
    scores = {kind: np.array([v for v in units[kind]["score"].values() if v is not None])
              for kind in ("neurons", "features")}
    top = max(0.6, np.ceil(10 * max(s.max() for s in scores.values()) + 0.5) / 10)
    bins = np.linspace(-0.1, top, int(round((top + 0.1) / 0.02)) + 1)
    for kind, colour in (("neurons", "tab:blue"), ("features", "tab:orange")):
        s = scores[kind]
        ax.hist(s, bins=bins, density=True, alpha=0.55, color=colour,
                label=f"{kind} (n={len(s)}, median {np.median(s):.2f})")
        ax.axvline(np.median(s), color=colour, lw=1.5)
    ax.set_xlabel("single-mindedness: mean pairwise cosine of the top patches' embeddings")
    ax.set_ylabel("density")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    write_atomic(path, lambda tmp: fig.savefig(tmp, format="png"))
    plt.close(fig)


def curve_units(model, layer: str, sae: dictionary.SparseAutoencoder) -> dict:
    """Every neuron's and every feature's response to the curve family at the layer's centre
    unit, and which of each belong to the family (the thresholds of :func:`circuits.scan`);
    for each curve feature, its decoder direction's largest share on one neuron."""
    fam = circuits.get_family("curves")
    m = measure(model, layer, fam)
    angles = fam.params[fam.orientation]
    out = {}
    with torch.no_grad():
        kinds = {"neurons": (m.responses, m.baseline),
                 "features": (sae.pre_activation(m.responses), sae.pre_activation(m.baseline))}
    for kind, (resp, base) in kinds.items():
        curves = orientation_curve(resp.T.reshape(resp.shape[1], *fam.shape), fam)
        member, cv, _, _ = members(curves, base, angles, fam.period, MIN_RESPONSE,
                                   MAX_CIRCULAR_VARIANCE)
        found = member.nonzero().flatten().tolist()
        out[kind] = {"members": found, "cv": {u: float(cv[u]) for u in found},
                     "peak": {u: float(angles[int(curves[u].argmax())]) for u in found}}
    dirs = sae.directions().abs()
    out["features"]["top_neuron"] = {u: (int(dirs[u].argmax()), float(dirs[u].max()))
                                     for u in out["features"]["members"]}
    return out


def curve_sheet(model, run: Path, sae, found_curves: dict, images: str, steps: int,
                path: Path) -> None:
    """Ten curve features (those spread over several neurons first, then by preferred
    orientation) beside ten curve neurons: renders and top patches."""
    store = ActivationStore.open(run / dictionary_run.STORE)
    feats, cells = found_curves["features"], found_curves["neurons"]
    spread = sorted(feats["members"], key=lambda u: (feats["top_neuron"][u][1] >= 0.5,
                                                      feats["peak"][u]))[:10]
    neurons = sorted(cells["members"], key=lambda u: cells["peak"][u])[:10]
    if not spread or not neurons:
        return
    found = dictionary.feature_examples(store, sae, features=spread, k=6, channels=neurons)
    cache = circuits.RenderCache(steps=steps, size=128, folder=run / "renders")
    units = [(store.layer, v) for v in dictionary.feature_directions(sae, spread)] \
        + [(store.layer, c) for c in neurons]
    renders = cache.get(model, units)
    sheets = {}
    for kind, part, chosen, made in (("curve features", found.features, spread,
                                      renders[:len(spread)]),
                                     ("curve neurons", found.neurons, neurons,
                                      renders[len(spread):])):
        patches = dictionary.example_patches(model, part, images, units=chosen)
        sheets[kind] = dictionary_page.unit_cards(part, chosen, patches=patches,
                                                  renders=dict(zip(chosen, made, strict=True)))
    dictionary_page.sheet_png(path, sheets)


def curve_summary(found: dict) -> str:
    """How the curve features sit on the neurons: their largest share on one neuron, and
    whether that neuron is itself a curve neuron."""
    feats = found["features"]
    shares = sorted(feats["top_neuron"][u][1] for u in feats["members"])
    on_curve = sum(feats["top_neuron"][u][0] in found["neurons"]["members"]
                   for u in feats["members"])
    held = sum(s >= 0.5 for s in shares)
    return (f"curves: {len(found['neurons']['members'])} neurons, {len(shares)} features "
            f"({held} mostly one neuron, {len(shares) - held} spread over several; "
            f"largest share on one neuron: min {shares[0] if shares else float('nan'):.2f}, "
            f"median {np.median(shares) if shares else float('nan'):.2f}; {on_curve} of them "
            "on a curve neuron)")


def main(argv: list[str] | None = None) -> int:
    """Train, measure, show, and write the figures; print the numbers."""
    args = parse(argv)
    out, run = Path(args.out), Path(args.run)
    model = load_model(args)
    training = {"epochs": args.epochs, "batch_size": args.batch, "k": args.k,
                "n_features": args.features}
    measures = dictionary_run.train_layer(model, args.layer, args.images, run,
                                          limit=args.limit, **training)
    print(json.dumps({k: v for k, v in measures.items() if k != "settings"}))
    units = dictionary_run.show_layer(model, run, args.images, steps=args.steps,
                                      render_size=128)
    write_atomic(out / f"dictionary_{args.tag}_sheet.png",
                 lambda tmp: tmp.write_bytes((run / dictionary_run.SHEET).read_bytes()))
    minded_figure(units, out / f"dictionary_{args.tag}_minded.png",
                  f"{args.model} {args.layer}: {measures['features']} features, "
                  f"{measures['channels']} neurons")
    print("single-mindedness:", json.dumps({k: units[k]["summary"]
                                            for k in ("neurons", "features")}))
    sae = dictionary.SparseAutoencoder.load(run / dictionary_run.SAE / "sae.pt")
    if len(ActivationStore.open(run / dictionary_run.STORE).map_shape) == 2 \
            and "blocks" not in args.layer:
        found = curve_units(model, args.layer, sae)
        print(curve_summary(found))
        write_atomic(run / "curves.json", lambda tmp: tmp.write_text(json.dumps(found)))
        curve_sheet(model, run, sae, found, args.images, args.steps,
                    out / f"dictionary_{args.tag}_curves.png")
    print(f"wrote {out}/dictionary_{args.tag}_*.png and {run / 'page' / 'index.html'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
