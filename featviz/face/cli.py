"""The ``featviz`` command: render objectives, list a model's layers, list the known models."""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Sequence
from pathlib import Path

from ..core import param
from ..core.model_info import input_size
from ..core.transforms import PRESETS as TRANSFORM_PRESETS
from ..core.truncate import COMPILE_MODES
from ..errors import FeatvizError
from ..methods.deconv import MODES as PROJECTION_MODES
from ..methods.receptive_field import ERF_WEIGHTS


def _floats(text: str) -> tuple[float, ...]:
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected numbers separated by commas, got {text!r}") from None
    if len(values) not in (1, 3):
        raise argparse.ArgumentTypeError(f"expected 1 or 3 numbers (one per RGB channel), "
                                         f"got {text!r}")
    return values


def _steps_list(text: str) -> list[int]:
    try:
        return [int(v) for v in text.split(",") if v]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected step numbers like 32,128,512, got {text!r}") from None


def _add_model_args(p: argparse.ArgumentParser, weights_default: str | None) -> None:
    p.add_argument("--model", required=True,
                   help="torchvision classifier name (googlenet, vgg16, resnet50, mobilenet_v2, "
                        "alexnet, ...) or cifar_resnet20/32/44/56; `featviz models` lists them")
    p.add_argument("--weights", default=weights_default,
                   help="a local state_dict file, a torchvision weight name (DEFAULT, "
                        "IMAGENET1K_V1, downloaded when online) or 'random' "
                        f"(default: {weights_default})")
    p.add_argument("--mean", type=_floats, help="input normalization mean, e.g. 0.5,0.5,0.5")
    p.add_argument("--std", type=_floats, help="input normalization std, e.g. 0.5,0.5,0.5")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 (default: cuda if present)")


def _load_model(args: argparse.Namespace):
    import torch

    from .. import models

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if str(args.weights).lower() in ("random", "none"):
        torch.manual_seed(getattr(args, "seed", 0))  # the same random network every run
    return models.load(args.model, weights=args.weights, mean=args.mean, std=args.std,
                       device=device)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``featviz`` command (``featviz --help``): one function adds
    each subcommand, and sets the function that runs it as ``args.run``."""
    parser = argparse.ArgumentParser(prog="featviz", description="See what the units, channels, "
                                     "layers and classes of an image network respond to.")
    sub = parser.add_subparsers(dest="command", required=True)
    for add in (_add_render, _add_layers, _add_deconv, _add_topk, _add_occlude, _add_invert,
                _add_erf, _add_maps, _add_sweep, _add_gallery, _add_models):
        add(sub)
    return parser


def _add_transforms_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--transforms", default="auto", choices=["auto", *TRANSFORM_PRESETS],
                   help="auto (default): standard, or none for --param cppn")


def _add_render(sub) -> None:
    from ..core.objectives import GRAMMAR

    r = sub.add_parser("render", help="optimize images for an objective",
                       formatter_class=argparse.RawDescriptionHelpFormatter, epilog=GRAMMAR)
    _add_model_args(r, "DEFAULT")
    r.add_argument("--objective", required=True, action="append",
                   help="objective string (repeatable); see below")
    r.add_argument("--size", type=int, help="image size in pixels (default: the model's)")
    r.add_argument("--steps", type=int, default=512)
    r.add_argument("--batch-size", type=int, default=16,
                   help="images optimized together when the objectives name several channels")
    _add_transforms_arg(r)
    # default None, read as fourier: so that --pixel can tell a --param given beside it
    r.add_argument("--param", choices=param.KINDS,
                   help="parameterization (default: fourier): fourier or pixel images, maco "
                        "(fixed natural spectrum, phase optimized), laplacian (pyramid), cppn "
                        "(a coordinate network)")
    r.add_argument("--pixel", action="store_true", help="the old spelling of --param pixel")
    r.add_argument("--no-decorrelate", action="store_true", help="plain RGB parameters")
    r.add_argument("--alpha", action="store_true",
                   help="with --param fourier or pixel: an RGBA image blended over random "
                        "backgrounds (writes RGBA PNGs)")
    r.add_argument("--spectrum", help="with --param maco: a spectrum file (.pt/.npy) or a "
                                      "folder of photos to measure it from (default: a power "
                                      "law fitted on photos)")
    r.add_argument("--lr", type=float, default=None,
                   help="learning rate (default: the parameterization's: 0.05, maco 0.2, "
                        "cppn 0.005)")
    r.add_argument("--seed", type=int, default=0,
                   help="image n of the list starts from seed+n (so batching changes nothing);"
                        " also seeds --weights random")
    r.add_argument("--thresholds", type=_steps_list, default=[],
                   help="steps at which to keep snapshots, e.g. 32,128,512 (for --gif)")
    r.add_argument("--gif", help="also write the snapshots as an animated GIF here")
    r.add_argument("--init", help="start from this image file instead of noise")
    _add_speed_args(r)
    r.add_argument("--no-progress", action="store_true")
    r.add_argument("--out", required=True,
                   help="PNG path; with several images also a folder of the same name holding "
                        "one PNG per image, and the PNG is a labelled contact sheet")
    r.set_defaults(run=_render)


def _add_layers(sub) -> None:
    ls = sub.add_parser("layers", help="list every addressable layer with its output shape")
    _add_model_args(ls, "random")
    ls.add_argument("--size", type=int, help="input size for the shapes (default: the model's)")
    ls.set_defaults(run=_layers)


def _add_deconv(sub) -> None:
    d = sub.add_parser("deconv", help="project one activation back to pixels")
    d.add_argument("image", help="image file")
    _add_model_args(d, "DEFAULT")
    _add_unit_args(d)
    d.add_argument("--mode", default="deconvnet", choices=PROJECTION_MODES)
    d.add_argument("--out", required=True, help="PNG: the image beside its projection")
    d.set_defaults(run=_projection_commands)


def _add_topk(sub) -> None:
    t = sub.add_parser("topk", help="top-k dataset patches of channels, with projections")
    _add_model_args(t, "DEFAULT")
    t.add_argument("--images", required=True, help="folder of image files")
    t.add_argument("--layer", required=True)
    t.add_argument("--channels", required=True, help="e.g. 0-7 or 1,5,9")
    t.add_argument("--k", type=int, default=9)
    t.add_argument("--size", type=int, help="image size (default: the model's)")
    t.add_argument("--batch-size", type=int, default=32)
    t.add_argument("--mode", default="deconvnet", choices=PROJECTION_MODES)
    t.add_argument("--out", required=True, help="PNG in the Zeiler & Fergus layout")
    t.set_defaults(run=_projection_commands)


def _add_occlude(sub) -> None:
    o = sub.add_parser("occlude", help="map how much an activation or a class drops when a "
                                       "grey square covers each part of the image")
    o.add_argument("image", help="image file")
    _add_model_args(o, "DEFAULT")
    o.add_argument("--layer", help="with --channel: the activation to watch")
    o.add_argument("--channel", type=int)
    o.add_argument("--class", dest="target_class", type=int, help="watch this class instead")
    o.add_argument("--size", type=int, help="image size (default: the model's)")
    o.add_argument("--patch", type=int, default=32)
    o.add_argument("--stride", type=int, default=8)
    o.add_argument("--out", required=True, help="PNG: the image beside the drop map")
    o.set_defaults(run=_projection_commands)


def _add_invert(sub) -> None:
    v = sub.add_parser("invert", help="reconstruct an image from a layer's activations "
                                      "(Mahendran & Vedaldi)")
    v.add_argument("image", help="image file")
    _add_model_args(v, "DEFAULT")
    v.add_argument("--layers", required=True, help="comma-separated layers, one image each")
    v.add_argument("--steps", type=int, default=1000)
    v.add_argument("--size", type=int, help="image size (default: the model's)")
    v.add_argument("--pixel", action="store_true", help="pixel instead of Fourier parameters")
    v.add_argument("--cosine", action="store_true", help="match directions, not values")
    v.add_argument("--caricature", action="store_true",
                   help="exaggerate what the layer sees instead of matching it")
    v.add_argument("--seed", type=int, default=0)
    v.add_argument("--no-progress", action="store_true")
    v.add_argument("--out", required=True, help="PNG: the original, then one image per layer")
    v.set_defaults(run=_invert)


def _add_erf(sub) -> None:
    e = sub.add_parser("erf", help="effective (and theoretical) receptive fields of layers")
    _add_model_args(e, "DEFAULT")
    e.add_argument("--layers", required=True, help="comma-separated layers")
    e.add_argument("--size", type=int, help="input size (default: the model's)")
    e.add_argument("--samples", type=int, default=32)
    e.add_argument("--inputs", default="noise", help="'noise' or a folder of images")
    e.add_argument("--init", default="trained", choices=ERF_WEIGHTS,
                   help="the model's weights, re-initialized ones, or Luo's uniform case")
    e.add_argument("--channel", type=int, help="one channel (default: the sum over channels)")
    e.add_argument("--out", required=True, help="PNG: heat maps and radial profiles")
    e.set_defaults(run=_erf)


def _add_maps(sub) -> None:
    mp = sub.add_parser("maps", help="browse what every layer holds for an image (HTML report)")
    mp.add_argument("image", help="image file")
    _add_model_args(mp, "DEFAULT")
    mp.add_argument("--layers", default="all", help="'all' or comma-separated layers")
    mp.add_argument("--size", type=int, help="image size (default: the model's)")
    mp.add_argument("--labels", help="class names, one per line (e.g. imagenet_classes.txt)")
    mp.add_argument("--out", required=True, help="a self-contained .html page")
    mp.set_defaults(run=_maps)


def _add_sweep(sub) -> None:
    sw = sub.add_parser("sweep", help="render every channel of layers into a folder; resumable,"
                                      " and split over ranks under torchrun",
                        description="Render channels x layers into --out. Under `torchrun "
                        "--nproc_per_node N -m featviz sweep ...` the jobs are split over the N "
                        "ranks (gloo on the CPU, NCCL on GPUs). Run the same command again to "
                        "resume: finished channels are skipped.")
    _add_model_args(sw, "DEFAULT")
    sw.add_argument("--layers", required=True, help="comma-separated layers")
    sw.add_argument("--channels", default="all", help="all (default), a range 0-63 or a list 1,5,9")
    sw.add_argument("--steps", type=int, default=512)
    sw.add_argument("--size", type=int, help="image size in pixels (default: the model's)")
    sw.add_argument("--batch-size", type=int, default=16, help="channels optimized together")
    _add_transforms_arg(sw)
    sw.add_argument("--param", default="fourier", choices=param.KINDS,
                    help="parameterization of every image (default: fourier)")
    sw.add_argument("--lr", type=float, default=None,
                    help="learning rate (default: the parameterization's)")
    sw.add_argument("--seed", type=int, default=0,
                    help="channel C starts from seed+C on any rank; also seeds --weights random")
    sw.add_argument("--images", help="folder of photos: also keep each channel's top-k patches")
    sw.add_argument("--k", type=int, default=9, help="patches per channel with --images")
    sw.add_argument("--out", required=True, help="sweep folder (created; reused to resume)")
    _add_speed_args(sw)
    sw.set_defaults(run=_sweep)


def _add_gallery(sub) -> None:
    g = sub.add_parser("gallery", help="write a browsable HTML gallery of a sweep folder")
    g.add_argument("folder", help="a folder written by `featviz sweep --out`")
    g.add_argument("--out", help="where to write index.html (default: FOLDER/index.html)")
    g.set_defaults(run=_gallery)


def _add_models(sub) -> None:
    sub.add_parser("models", help="list the model names --model accepts").set_defaults(
        run=_models)


def _add_unit_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--layer", required=True)
    p.add_argument("--channel", type=int, required=True)
    p.add_argument("--position", help="Y,X of the unit in the layer's map (default: strongest)")
    p.add_argument("--size", type=int, help="image size (default: the model's)")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``featviz`` command; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.run(args)
    except FeatvizError as err:
        print(f"featviz {args.command}: error: {err}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # `featviz layers ... | head`
        sys.stderr.close()
        return 0


def _models(args: argparse.Namespace) -> int:
    from ..models import available

    print("\n".join(available()))
    return 0


def _layers(args: argparse.Namespace) -> int:
    from ..core.hooks import layer_aliases
    from ..models import layer_table

    model = _load_model(args)
    rows = layer_table(model, args.size)
    width = max(len(name) for name, _, _ in rows)
    kind_w = max(len(kind) for _, kind, _ in rows)
    print(f"{'layer'.ljust(width)}  {'module'.ljust(kind_w)}  output (C x H x W)")
    for name, kind, shape in rows:
        print(f"{name.ljust(width)}  {kind.ljust(kind_w)}  {shape}")
    aliases = layer_aliases(model)
    if aliases:
        print("\naliases: " + ", ".join(f"{a} -> {p}" for a, p in aliases.items()))
    return 0


def _projection_commands(args: argparse.Namespace) -> int:
    import torch

    from ..core import images
    from ..core.objectives import parse_channels
    from ..methods import deconv

    model = _load_model(args)
    size = input_size(model, args.size)
    if args.command == "topk":
        top = deconv.top_k(model, args.images, args.layer, parse_channels(args.channels),
                           args.k, size=size, batch_size=args.batch_size, mode=args.mode)
        top.save(args.out)
        for c, entries in top.entries.items():
            best = ", ".join(f"{Path(e.source).name} {e.value:.2f}" for e in entries[:3])
            print(f"{args.layer}:{c}: {best}{', ...' if len(entries) > 3 else ''}")
        print(f"receptive field {top.field.size[0]}x{top.field.size[1]} px, jump "
              f"{top.field.jump[0]}; wrote {args.out}")
        return 0
    img = images.load(args.image, size=size)
    if args.command == "deconv":
        position = None
        if args.position:
            try:
                y, x = (int(v) for v in args.position.split(","))
            except ValueError:
                raise FeatvizError(f"--position takes Y,X, got {args.position!r}") from None
            position = (y, x)
        proj = deconv.project(model, img, args.layer, args.channel, position, args.mode)
        images.save(torch.cat([img, proj.image()]), args.out,
                    labels=["image", f"{args.mode} {args.layer}:{args.channel}"], ncol=2)
        y, x = proj.positions[0]
        print(f"{args.layer}:{args.channel} at y={y}, x={x} = {float(proj.activations[0]):.3f};"
              f" wrote {args.out}")
        return 0
    occ = deconv.occlusion(model, img, args.layer, args.channel, target_class=args.target_class,
                           patch=args.patch, stride=args.stride)
    occ.save(args.out)
    print(f"{occ.what}: {occ.base:.4g} on the whole image, largest drop "
          f"{float(occ.drops.max()):.4g}; wrote {args.out}")
    return 0


def _invert(args: argparse.Namespace) -> int:
    from ..core import images
    from ..methods import inversion

    model = _load_model(args)
    size = input_size(model, args.size)
    img = images.load(args.image, size=size)
    layers = _names(args.layers)
    common = dict(steps=args.steps, seed=args.seed, progress=not args.no_progress, size=size,
                  fft=not args.pixel)
    if args.caricature:
        results = [inversion.caricature(model, img, layer, **common) for layer in layers]
        sweep = inversion.InversionSweep(results[0].original, results)
    else:
        sweep = inversion.invert_layers(model, img, layers, kind="cosine" if args.cosine
                                        else "l2", **common)
    sweep.save(args.out)
    print(sweep.table())
    print(f"wrote {args.out}")
    return 0


def _erf(args: argparse.Namespace) -> int:
    from ..methods import receptive_field

    model = _load_model(args)
    layers = _names(args.layers)
    fields = receptive_field.effective_layers(
        model, layers, input_size=args.size, samples=args.samples, inputs=args.inputs,
        weights=args.init, channel=args.channel)
    fields.plot(args.out)
    print(fields.table())
    print(f"wrote {args.out}")
    return 0


def _maps(args: argparse.Namespace) -> int:
    from ..core import images
    from ..methods import featuremaps

    model = _load_model(args)
    size = input_size(model, args.size)
    img = images.load(args.image, size=size)
    layers = "all" if args.layers == "all" else _names(args.layers)
    featuremaps.report(model, img, args.out, layers=layers, labels=args.labels)
    for index, name, p in featuremaps.top_classes(model, img, 5, args.labels):
        print(f"{p:.3f}  {index}  {name}")
    print(f"wrote {args.out}")
    return 0


def _add_speed_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("speed (GPU)")
    g.add_argument("--amp", action="store_true", help="bf16 autocast (CUDA and CPU)")
    g.add_argument("--channels-last", action="store_true",
                   help="run the model in channels-last memory order (often faster on GPUs)")
    g.add_argument("--compile", nargs="?", const="default", choices=COMPILE_MODES,
                   help="torch.compile the model cut after the target layer (compiled once per "
                        "layer; pays on GPUs over many steps); reduce-overhead adds CUDA graphs")


def _speed_options(args: argparse.Namespace) -> dict:
    return {"amp": args.amp, "compile": args.compile or False,
            "memory_format": "channels_last" if args.channels_last else "contiguous"}


def _sweep(args: argparse.Namespace) -> int:
    from . import sweep

    layers = _names(args.layers)
    if not layers:
        raise FeatvizError(f"--layers names no layer: {args.layers!r}")
    sweep.parse_channel_spec(args.channels)  # a typo fails before the model loads
    if args.batch_size < 1:
        raise FeatvizError(f"--batch-size must be at least 1, got {args.batch_size}")
    weights = args.weights
    if weights and str(weights).lower() not in ("random", "none") and Path(weights).is_file():
        weights = str(Path(weights).resolve())  # the same file from any working directory
    with sweep.distributed(args.device) as (rank, world, device):
        args.device = device
        model = _load_model(args)
        result = sweep.sweep(
            model, args.out, layers, args.channels, steps=args.steps, size=args.size,
            batch_size=args.batch_size, lr=args.lr, transforms=args.transforms, seed=args.seed,
            parameterization=args.param,
            images=args.images, k=args.k, rank=rank, world_size=world,
            render_options=_speed_options(args),
            settings={"model": args.model, "weights": weights, "mean": args.mean,
                      "std": args.std})
        if result.interrupted:  # the other ranks may never reach the meeting point
            return 128 + int(result.signal or 2)
        results = sweep.gather_results(result)
    if rank == 0:
        print(sweep.summary(results, args.out, result.keys), flush=True)
        print(f"browse it: featviz gallery {args.out}", flush=True)
    return 0


def _gallery(args: argparse.Namespace) -> int:
    from . import gallery

    index = gallery.write(args.folder, args.out)
    print(f"wrote {index}")
    return 0


def _names(text: str) -> list[str]:
    """A comma-separated list of layer names, blanks dropped."""
    return [name.strip() for name in text.split(",") if name.strip()]


def _safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_")


def _batches(specs: list[str], batch_size: int):
    """Group single-image objective strings into batches of at most ``batch_size``."""
    from ..core.objectives import Objective, channel, parse

    for start in range(0, len(specs), batch_size):
        chunk = specs[start:start + batch_size]
        parts = [s.split(":") for s in chunk]
        if len(chunk) > 1 and all(p[0] == "channel" and len(p) == 3 and p[1] == parts[0][1]
                                  and "+" not in s for p, s in zip(parts, chunk, strict=True)):
            # one vectorized objective for channels of one layer
            yield chunk, channel(parts[0][1], [int(p[2]) for p in parts])
        elif len(chunk) == 1:
            yield chunk, parse(chunk[0])
        else:
            yield chunk, Objective.sum(parse(s).on(i) for i, s in enumerate(chunk))


def _param_kind(args: argparse.Namespace) -> str:
    """The parameterization ``render``'s flags name: ``--param`` (default fourier), of which
    ``--pixel`` is the old spelling for pixel. A flag that does not fit the kind is an error
    naming both, before the model loads."""
    kind = args.param or ("pixel" if args.pixel else "fourier")
    if args.pixel and kind != "pixel":
        raise FeatvizError(f"--pixel is the old spelling of --param pixel; it cannot go with "
                           f"--param {kind}")
    if args.alpha and kind not in ("fourier", "pixel"):
        raise FeatvizError(f"--alpha goes with --param fourier or pixel, not --param {kind}")
    if args.spectrum is not None and kind != "maco":
        raise FeatvizError(f"--spectrum goes with --param maco, not --param {kind}")
    return kind


def _make_param(args: argparse.Namespace, kind: str, size: int, seeds: list[int], init):
    """The parameterization ``kind``, image ``i`` drawn from ``seeds[i]``."""
    return param.make(kind, size, len(seeds), decorrelate=not args.no_decorrelate,
                      alpha=args.alpha, spectrum=args.spectrum, init=init, seed=seeds)


def _render(args: argparse.Namespace) -> int:
    import torch

    from ..core import images
    from ..core.objectives import expand, parse
    from ..core.render import render

    kind = _param_kind(args)
    specs = [s for spec in args.objective for s in expand(spec)]
    for s in specs:
        parse(s)  # fail on a bad string before the model loads
    if args.batch_size < 1:
        raise FeatvizError(f"--batch-size must be at least 1, got {args.batch_size}")
    model = _load_model(args)
    size = input_size(model, args.size)
    init = images.load(args.init, size=size) if args.init else None
    out = Path(args.out)
    many = len(specs) > 1
    folder = out.with_suffix("")
    finished, labels = [], []
    done = 0
    for k, (chunk, objective) in enumerate(_batches(specs, args.batch_size)):
        # image n of the whole list uses seed + n, whatever batch it falls into
        seeds = [args.seed + done + i for i in range(len(chunk))]
        done += len(chunk)
        p = _make_param(args, kind, size, seeds, init)
        if many:
            print(f"batch {k + 1}: {len(chunk)} image(s): {', '.join(chunk)}", flush=True)
        res = render(model, objective, p, steps=args.steps, transforms=args.transforms,
                     lr=args.lr, thresholds=args.thresholds,
                     progress=not args.no_progress, **_speed_options(args))
        if many:
            res.save_each(folder, [_safe(s) for s in chunk])
        finished.append(res.images)
        labels.extend(chunk)
        values = ", ".join(f"{v:.3g}" for v in res.values.tolist())
        print(f"  objective {values} after {res.steps_done} steps in {res.seconds:.1f} s "
              f"(seeds {seeds[0]}-{seeds[-1]})", flush=True)
        if args.gif:
            gif = Path(args.gif)
            res.save_gif(gif if not many else gif.with_name(f"{gif.stem}_{k:03d}{gif.suffix}"))
        if res.interrupted:
            print("interrupted: keeping what was made so far", file=sys.stderr)
            break
    batch = torch.cat(finished)
    images.save(batch, out, labels if many else None)
    where = f"{out} (contact sheet) and {folder}/" if many else str(out)
    print(f"wrote {where}")
    return 130 if res.interrupted else 0


if __name__ == "__main__":
    sys.exit(main())
