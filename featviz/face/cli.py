"""The ``featviz`` command: render objectives, list a model's layers, list the known models.

Exit statuses (also in the README, "Errors"): 0 done; 2 bad input, one line on stderr that
names the bad value and what would be right; 130 interrupted by Ctrl-C (``render`` writes
what was made first); 1 a bug in featviz: a traceback, and a line asking to report it.
"""

from __future__ import annotations

import argparse
import contextlib
import re
import shlex
import sys
import traceback
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import NoReturn

import torch

from ..core import param
from ..core.model_info import image_channels, input_size
from ..core.transforms import PRESETS as TRANSFORM_PRESETS
from ..core.truncate import COMPILE_MODES
from ..errors import FeatvizError
from ..methods.deconv import MODES as PROJECTION_MODES
from ..methods.receptive_field import ERF_WEIGHTS
from . import arguments as types

#: The exit status of an interrupted command: 128 + SIGINT, what shells report for Ctrl-C.
INTERRUPTED = 130


class _Parser(argparse.ArgumentParser):
    """An argument parser whose mistakes are one line, ``featviz render: error: ...``, with
    exit status 2 (argparse's usage block above it would hide the message in a long list)."""

    def error(self, message: str) -> NoReturn:
        """Print ``message`` as the one line and exit with status 2."""
        # "argument --steps: must be ..." reads "--steps must be ...": the messages of
        # featviz's own argument types are written to follow the option's name
        message = re.sub(r"^argument (\S+): (?=must |names |cannot )", r"\1 ", message)
        self.exit(2, f"{self.prog}: error: {message} (`{self.prog} --help` lists the "
                     "options)\n")


def _add_model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True,
                   help="torchvision classifier name (googlenet, vgg16, resnet50, mobilenet_v2, "
                        "alexnet, ...), cifar_resnet20/32/44/56, timm:NAME (pip install "
                        "'featviz[timm]') or hf:HUB_ID_OR_FOLDER (pip install 'featviz[hf]'); "
                        "`featviz models` lists the first two kinds")
    p.add_argument("--weights", default="DEFAULT",
                   help="a local state_dict file, a torchvision weight name (DEFAULT: "
                        "torchvision's best weights, IMAGENET1K_V1, ...; downloaded once into "
                        "the torch hub cache) or 'random' (default: DEFAULT)")
    p.add_argument("--mean", type=types.mean,
                   help="input normalization mean, e.g. 0.5,0.5,0.5 (default: the weights')")
    p.add_argument("--std", type=types.std,
                   help="input normalization std, above 0, e.g. 0.5,0.5,0.5 (default: the "
                        "weights')")
    p.add_argument("--device", type=types.device,
                   help="cpu, cuda, cuda:1, mps (default: cuda if present, else cpu)")
    p.add_argument("--option", type=types.model_option, action="append", default=[],
                   metavar="KEY=VALUE",
                   help="for timm: and hf: models, passed to their builder, e.g. in_chans=1 or "
                        "img_size=64 (repeat for more)")


def _load_model(args: argparse.Namespace):
    from .. import models

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if str(args.weights).lower() in ("random", "none"):
        torch.manual_seed(getattr(args, "seed", 0))  # the same random network every run
    if args.option and not models.source_of(args.model):
        raise FeatvizError(f"--option {args.option[0][0]}=... is for timm:NAME and hf:ID models "
                           f"only, not {args.model!r}")
    return models.load(args.model, weights=args.weights, mean=args.mean, std=args.std,
                       device=device, **dict(args.option))


def _load_image(path: str, model, size: int) -> torch.Tensor:
    """An image file read as the model takes it: RGB, or grayscale for a 1-channel model. The
    command line reads no other band counts (the Python API takes them as tensors)."""
    from ..core import images

    channels = image_channels(model)
    if channels not in (1, 3):
        raise FeatvizError(f"the model takes {channels}-channel images; the command line reads "
                           f"image files as RGB or grayscale only: give {channels}-band images "
                           "to the Python API as [1, C, H, W] tensors")
    return images.load(path, size=size, channels=channels)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``featviz`` command (``featviz --help``): one function adds
    each subcommand, and sets the function that runs it as ``args.run``. Every option's value
    is checked as it is parsed (:mod:`featviz.face.arguments`)."""
    parser = _Parser(prog="featviz", description="See what the units, channels, layers and "
                     "classes of an image network respond to.",
                     epilog="Exit status: 0 done, 2 bad input (one line says what is wrong), "
                     "130 interrupted (Ctrl-C), 1 a bug in featviz.")
    sub = parser.add_subparsers(dest="command", required=True)
    for add in (_add_render, _add_layers, _add_deconv, _add_topk, _add_occlude, _add_invert,
                _add_erf, _add_maps, _add_blocks, _add_atlas, _add_sweep, _add_gallery,
                _add_models):
        add(sub)
    return parser


def _add_transforms_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--transforms", default="auto", choices=["auto", *TRANSFORM_PRESETS],
                   help="auto (default): standard, or none for --param cppn")


def _add_size_arg(p: argparse.ArgumentParser, what: str = "image size") -> None:
    p.add_argument("--size", type=types.size,
                   help=f"{what} in pixels, {types.MIN_SIZE}-{types.MAX_SIZE} (default: the "
                        "model's)")


def _add_render(sub) -> None:
    from ..core.objectives import GRAMMAR

    r = sub.add_parser("render", help="optimize images for an objective",
                       formatter_class=argparse.RawDescriptionHelpFormatter, epilog=GRAMMAR)
    _add_model_args(r)
    r.add_argument("--objective", required=True, action="append",
                   help="objective string (repeatable); see below")
    _add_size_arg(r)
    r.add_argument("--steps", type=types.steps, default=512,
                   help=f"optimization steps, 0-{types.MAX_STEPS} (default: 512; 0 writes the "
                        "starting image)")
    r.add_argument("--batch-size", type=types.positive, default=16,
                   help="images optimized together when the objectives name several channels "
                        "(default: 16)")
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
    r.add_argument("--lr", type=types.positive_float, default=None,
                   help="learning rate, above 0 (default: the parameterization's: 0.05, maco "
                        "0.2, cppn 0.005)")
    r.add_argument("--clipping", type=types.positive_float, metavar="WEIGHT",
                   help="subtract WEIGHT x clipping(0.05) from every objective: keeps colour "
                        "values off 0 and 1, where renders turn flat black, white or pure "
                        "colour (1e4 suits channels of InceptionV1)")
    _add_course_args(r)
    r.add_argument("--seed", type=types.seed, default=0,
                   help="image n of the list starts from seed+n (so batching changes nothing);"
                        " also seeds --weights random (default: 0)")
    r.add_argument("--thresholds", type=types.step_list, default=[],
                   help="steps at which to keep snapshots, e.g. 32,128,512 (for --gif)")
    r.add_argument("--gif", type=types.gif_out,
                   help="also write the snapshots as an animated GIF here")
    r.add_argument("--init", type=types.existing_file,
                   help="start from this image file instead of noise")
    _add_speed_args(r)
    r.add_argument("--no-progress", action="store_true", help="do not show a progress bar")
    r.add_argument("--out", required=True, type=types.image_out,
                   help="image file (.png, .jpg, ...); with several images also a folder of "
                        "the same name without the suffix, holding one PNG per image, and the "
                        "file is a labelled contact sheet")
    r.set_defaults(run=_render)


def _add_layers(sub) -> None:
    ls = sub.add_parser("layers", help="list every addressable layer with its output shape")
    _add_model_args(ls)
    _add_size_arg(ls, "input size for the shapes")
    ls.set_defaults(run=_layers)


def _add_deconv(sub) -> None:
    d = sub.add_parser("deconv", help="project one activation back to pixels")
    d.add_argument("image", type=types.existing_file, help="image file")
    _add_model_args(d)
    _add_unit_args(d)
    d.add_argument("--mode", default="deconvnet", choices=PROJECTION_MODES,
                   help="how gradients pass ReLUs on the way back (default: deconvnet)")
    d.add_argument("--out", required=True, type=types.image_out,
                   help="image file: the image beside its projection")
    d.set_defaults(run=_deconv)


def _add_topk(sub) -> None:
    t = sub.add_parser("topk", help="top-k dataset patches of channels, with projections")
    _add_model_args(t)
    t.add_argument("--images", required=True,
                   help="folder of image files (its labels.tsv, if any, names their classes)")
    t.add_argument("--labels", type=types.existing_file,
                   help="labels file (tab-separated: file, class_name/class_index) for --images")
    t.add_argument("--layer", required=True, help="the layer whose channels are ranked")
    t.add_argument("--channels", required=True, type=types.channel_list,
                   help="channels to rank, e.g. 0-7 or 1,5,9")
    t.add_argument("--k", type=types.positive, default=9,
                   help="patches kept per channel (default: 9)")
    _add_size_arg(t)
    t.add_argument("--batch-size", type=types.positive, default=32,
                   help="images per forward pass (default: 32)")
    t.add_argument("--mode", default="deconvnet", choices=PROJECTION_MODES,
                   help="how the patches are projected (default: deconvnet)")
    t.add_argument("--out", required=True, type=types.image_out,
                   help="image file in the Zeiler & Fergus layout")
    t.set_defaults(run=_topk)


def _add_occlude(sub) -> None:
    o = sub.add_parser("occlude", help="map how much an activation or a class drops when a "
                                       "grey square covers each part of the image")
    o.add_argument("image", type=types.existing_file, help="image file")
    _add_model_args(o)
    o.add_argument("--layer", help="with --channel: the activation to watch")
    o.add_argument("--channel", type=types.index, help="with --layer: the channel to watch")
    o.add_argument("--class", dest="target_class", type=types.index,
                   help="watch the probability of this class instead")
    _add_size_arg(o)
    o.add_argument("--patch", type=types.positive, default=32,
                   help="side of the grey square in pixels, at most the image size "
                        "(default: 32)")
    o.add_argument("--stride", type=types.positive, default=8,
                   help="pixels between two positions of the square (default: 8)")
    o.add_argument("--out", required=True, type=types.image_out,
                   help="image file: the image beside the drop map")
    o.set_defaults(run=_occlude)


def _add_invert(sub) -> None:
    v = sub.add_parser("invert", help="reconstruct an image from a layer's activations "
                                      "(Mahendran & Vedaldi)")
    v.add_argument("image", type=types.existing_file, help="image file")
    _add_model_args(v)
    v.add_argument("--layers", required=True, type=types.layer_list,
                   help="comma-separated layers, one image each")
    v.add_argument("--steps", type=types.steps, default=1000,
                   help=f"optimization steps, 0-{types.MAX_STEPS} (default: 1000)")
    _add_size_arg(v)
    v.add_argument("--pixel", action="store_true", help="pixel instead of Fourier parameters")
    v.add_argument("--cosine", action="store_true", help="match directions, not values")
    v.add_argument("--caricature", action="store_true",
                   help="exaggerate what the layer sees instead of matching it (not with "
                        "--cosine)")
    v.add_argument("--seed", type=types.seed, default=0,
                   help="seed of the starting noise and of --weights random (default: 0)")
    v.add_argument("--no-progress", action="store_true", help="do not show a progress bar")
    v.add_argument("--out", required=True, type=types.image_out,
                   help="image file: the original, then one image per layer")
    v.set_defaults(run=_invert)


def _add_erf(sub) -> None:
    e = sub.add_parser("erf", help="effective (and theoretical) receptive fields of layers")
    _add_model_args(e)
    e.add_argument("--layers", required=True, type=types.layer_list,
                   help="comma-separated layers")
    _add_size_arg(e, "input size")
    e.add_argument("--samples", type=types.samples, default=32,
                   help=f"inputs the gradients are averaged over, 1-{types.MAX_STEPS} "
                        "(default: 32)")
    e.add_argument("--inputs", default="noise", help="'noise' (default) or a folder of images")
    e.add_argument("--init", default="trained", choices=ERF_WEIGHTS,
                   help="the model's weights, re-initialized ones, or Luo's uniform case")
    e.add_argument("--channel", type=types.index,
                   help="one channel (default: the sum over channels)")
    e.add_argument("--out", required=True, type=types.plot_out,
                   help="figure file (.png, .pdf, .svg, ...): heat maps and radial profiles")
    e.set_defaults(run=_erf)


def _add_maps(sub) -> None:
    mp = sub.add_parser("maps", help="browse what every layer holds for an image (HTML report)")
    mp.add_argument("image", type=types.existing_file, help="image file")
    _add_model_args(mp)
    mp.add_argument("--layers", default="all", type=types.layer_list,
                    help="'all' (default) or comma-separated layers")
    _add_size_arg(mp)
    mp.add_argument("--labels", type=types.existing_file,
                    help="class names, one per line, UTF-8 (e.g. imagenet_classes.txt)")
    mp.add_argument("--out", required=True, type=types.file_out,
                    help="a self-contained .html page")
    mp.set_defaults(run=_maps)


def _add_blocks(sub) -> None:
    b = sub.add_parser("blocks", help="the Building Blocks views of a photo (semantic "
                                      "dictionary, activation grids, neuron groups) as one "
                                      "HTML page")
    b.add_argument("image", type=types.existing_file, help="image file")
    _add_model_args(b)
    b.add_argument("--layer", required=True, help="layer of the dictionary and the groups")
    b.add_argument("--grid-layers", type=types.layer_list,
                   help="comma-separated layers for activation grids (default: --layer)")
    b.add_argument("--groups", type=types.whole_number(1, 64), default=6,
                   help="neuron groups, 1-64 (default: 6)")
    b.add_argument("--factorization", default="nmf", choices=["nmf", "pca", "ica"],
                   help="how groups are found: nmf (default; needs activations >= 0, as after "
                        "a ReLU), pca or ica for layers with negative values")
    b.add_argument("--top", type=types.whole_number(1, 16), default=4,
                   help="channels per position in the dictionary, 1-16 (default: 4)")
    b.add_argument("--classes", type=types.whole_number(1, 16), default=4,
                   help="top classes in the group attribution table, 1-16 (default: 4)")
    b.add_argument("--steps", type=types.whole_number(1, types.MAX_STEPS), default=256,
                   help=f"steps of every render, 1-{types.MAX_STEPS} (default: 256)")
    b.add_argument("--render-size", type=types.whole_number(types.MIN_SIZE, 512), default=96,
                   help="pixels of channel and group renders (default: 96)")
    b.add_argument("--cell", type=types.whole_number(types.MIN_SIZE, 128), default=32,
                   help="pixels of each activation-grid cell (default: 32)")
    b.add_argument("--renders", type=types.folder_out,
                   help="folder of channel renders to reuse and add to (a sweep's --out works)")
    _add_size_arg(b, "photo size")
    b.add_argument("--seed", type=types.seed, default=0, help="seed of every render")
    b.add_argument("--out", required=True, type=types.file_out,
                   help="a self-contained .html page")
    b.set_defaults(run=_blocks)


def _add_atlas(sub) -> None:
    a = sub.add_parser("atlas", help="an activation atlas of a layer over a folder of photos "
                                     "(PNG and a hoverable HTML page); --class for a class atlas")
    a.add_argument("images", type=types.existing_folder,
                   help="folder of photos (with a labels.tsv for their classes)")
    _add_model_args(a)
    a.add_argument("--layer", required=True, help="a layer with a spatial map")
    a.add_argument("--store", required=True, type=types.folder_out,
                   help="folder of the collected vectors; run again to continue or reuse it")
    a.add_argument("--positions", type=types.positions, default="all",
                   help="positions per photo: all (default) or a number of random ones")
    a.add_argument("--class", dest="classes", action="append", default=[], metavar="CLASS",
                   help="a class atlas of this class (name or index); twice compares two")
    a.add_argument("--top", type=types.positive_float, default=0.02,
                   help="class atlas: the fraction of all vectors kept, those with the "
                        "largest attribution to the class (default: 0.02)")
    a.add_argument("--grid", type=types.whole_number(1, 100), default=20,
                   help="cells a side, 1-100 (default: 20)")
    a.add_argument("--min-count", type=types.whole_number(1), default=3,
                   help="drop cells with fewer vectors (default: 3)")
    a.add_argument("--layout", choices=["auto", "umap", "tsne"], default="auto",
                   help="auto (default): umap where umap-learn is installed, else tsne")
    a.add_argument("--fit-on", type=types.whole_number(10), default=20000,
                   help="vectors the layout is fitted on, the rest placed (default: 20000)")
    a.add_argument("--cell", type=types.whole_number(types.MIN_SIZE, 256), default=32,
                   help="pixels of each cell's render (default: 32)")
    a.add_argument("--steps", type=types.whole_number(1, types.MAX_STEPS), default=256,
                   help=f"render steps, 1-{types.MAX_STEPS} (default: 256)")
    a.add_argument("--batch-size", type=types.whole_number(1, 4096), default=32,
                   help="photos per batch when collecting (default: 32)")
    _add_size_arg(a, "photo size")
    a.add_argument("--seed", type=types.seed, default=0, help="seed of layout and render")
    a.add_argument("--png", type=types.image_out, help="also write the atlas image")
    a.add_argument("--out", required=True, type=types.file_out,
                   help="a self-contained .html page")
    a.set_defaults(run=_atlas)


def _add_sweep(sub) -> None:
    sw = sub.add_parser("sweep", help="render every channel of layers into a folder; resumable,"
                                      " and split over ranks under torchrun",
                        description="Render channels x layers into --out. Under `torchrun "
                        "--nproc_per_node N -m featviz sweep ...` the jobs are split over the N "
                        "ranks (gloo on the CPU, NCCL on GPUs). Run the same command again to "
                        "resume: finished channels are skipped.")
    _add_model_args(sw)
    sw.add_argument("--layers", required=True, type=types.layer_list,
                    help="comma-separated layers")
    sw.add_argument("--channels", default="all", help="all (default), a range 0-63 or a list 1,5,9")
    sw.add_argument("--steps", type=types.whole_number(1, types.MAX_STEPS), default=512,
                    help=f"optimization steps, 1-{types.MAX_STEPS} (default: 512)")
    _add_size_arg(sw)
    sw.add_argument("--batch-size", type=types.positive, default=16,
                    help="channels optimized together (default: 16)")
    _add_transforms_arg(sw)
    sw.add_argument("--param", default="fourier", choices=param.KINDS,
                    help="parameterization of every image (default: fourier)")
    sw.add_argument("--lr", type=types.positive_float, default=None,
                    help="learning rate, above 0 (default: the parameterization's)")
    sw.add_argument("--seed", type=types.seed, default=0,
                    help="channel C starts from seed+C on any rank; also seeds --weights random")
    sw.add_argument("--images", help="folder of photos: also keep each channel's top-k patches "
                                     "(with their classes where it holds a labels.tsv)")
    sw.add_argument("--labels", type=types.existing_file,
                    help="labels file (tab-separated: file, class_name/class_index) for --images")
    sw.add_argument("--k", type=types.positive, default=9,
                    help="patches per channel with --images (default: 9)")
    sw.add_argument("--out", required=True, type=types.folder_out,
                    help="sweep folder (created; reused to resume)")
    _add_speed_args(sw)
    sw.set_defaults(run=_sweep)


def _add_gallery(sub) -> None:
    g = sub.add_parser("gallery", help="write a browsable HTML gallery of a sweep folder")
    g.add_argument("folder", help="a folder written by `featviz sweep --out`")
    g.add_argument("--out", type=types.file_out,
                   help="where to write index.html (default: FOLDER/index.html)")
    g.set_defaults(run=_gallery)


def _add_models(sub) -> None:
    sub.add_parser("models", help="list the model names --model accepts").set_defaults(
        run=_models)


def _add_unit_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--layer", required=True, help="the layer of the unit")
    p.add_argument("--channel", type=types.index, required=True, help="the unit's channel")
    p.add_argument("--position", type=types.position,
                   help="Y,X of the unit in the layer's map (default: strongest)")
    _add_size_arg(p)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``featviz`` command; returns the exit status: 0 done, 2 bad input
    (one line on stderr names the bad value and what would be right), 130 interrupted by
    Ctrl-C, 1 a bug in featviz (a traceback and a request to report it). Warnings print as
    one line each, ``featviz: warning: ...``."""
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        with _tidy_warnings():
            try:
                args = build_parser().parse_args(argv)
            except SystemExit as exit_:  # --help, or a mistake the parser has reported
                return exit_.code if isinstance(exit_.code, int) else int(bool(exit_.code))
            return _run(args, argv)
    except KeyboardInterrupt:  # while parsing, or a second Ctrl-C while reporting
        print("featviz: interrupted", file=sys.stderr)
        return INTERRUPTED


def _run(args: argparse.Namespace, argv: list[str]) -> int:
    """Run the parsed command; every way it can end becomes an exit status (see
    :func:`main`), with one line on stderr for all but a bug."""
    name = f"featviz {args.command}"
    try:
        return args.run(args)
    except FeatvizError as err:
        return _fail(name, str(err))
    except BrokenPipeError:  # `featviz layers ... | head`
        sys.stderr.close()
        return 0
    except OSError as err:  # a file the library opened: missing, unreadable, disk full
        where = f"{err.filename}: " if err.filename else ""
        return _fail(name, f"{where}{err.strerror or err}")
    except KeyboardInterrupt:
        print(f"{name}: interrupted (Ctrl-C); nothing more was written", file=sys.stderr)
        return INTERRUPTED
    except Exception as err:
        if _out_of_memory(err):
            return _fail(name, "not enough memory for this run; try a smaller --size or "
                               "--batch-size")
        traceback.print_exc()
        print(f"{name}: this is a bug in featviz, please report it with the command: "
              f"featviz {shlex.join(argv)}", file=sys.stderr)
        return 1


def _fail(name: str, message: str) -> int:
    """Print the one-line message of bad input; its exit status, 2."""
    print(f"{name}: error: {message}", file=sys.stderr)
    return 2


def _out_of_memory(err: Exception) -> bool:
    """Whether ``err`` says the machine ran out of memory: torch's CUDA error, or the CPU
    allocator's RuntimeError, which has no type of its own (hence the message)."""
    if isinstance(err, (MemoryError, torch.cuda.OutOfMemoryError)):
        return True
    return isinstance(err, RuntimeError) and "can't allocate memory" in str(err)


@contextlib.contextmanager
def _tidy_warnings() -> Iterator[None]:
    """Print warnings as one line, ``featviz: warning: ...``, instead of Python's
    ``file:line: Category: ...`` with the source line (what a user of the command does not
    need); the previous way comes back afterwards."""
    with warnings.catch_warnings():
        warnings.showwarning = _show_warning
        yield


def _show_warning(message: Warning | str, category: type[Warning], filename: str, lineno: int,
                  file: object = None, line: str | None = None) -> None:
    """:func:`warnings.showwarning` for the command: the message alone, on one line."""
    text = " ".join(str(message).split())
    print(f"featviz: warning: {text}", file=sys.stderr, flush=True)


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


def _topk(args: argparse.Namespace) -> int:
    from ..methods import dataset, deconv

    dataset.labelled(args.images, args.labels)  # a bad labels.tsv fails before the model loads
    model = _load_model(args)
    top = deconv.top_k(model, args.images, args.layer, args.channels, args.k,
                       size=input_size(model, args.size), batch_size=args.batch_size,
                       mode=args.mode, labels=args.labels)
    top.save(args.out)
    for c, entries in top.entries.items():
        best = ", ".join(f"{Path(e.source).name}{f' ({e.class_name})' if e.label else ''} "
                         f"{e.value:.2f}" for e in entries[:3])
        print(f"{args.layer}:{c}: {best}{', ...' if len(entries) > 3 else ''}")
    print(f"receptive field {top.field.size[0]}x{top.field.size[1]} px, jump "
          f"{top.field.jump[0]}; wrote {args.out}")
    return 0


def _deconv(args: argparse.Namespace) -> int:
    from ..core import images
    from ..methods import deconv

    model = _load_model(args)
    img = _load_image(args.image, model, input_size(model, args.size))
    proj = deconv.project(model, img, args.layer, args.channel, args.position, args.mode)
    images.save(torch.cat([img, proj.image()]), args.out,
                labels=["image", f"{args.mode} {args.layer}:{args.channel}"], ncol=2)
    y, x = proj.positions[0]
    print(f"{args.layer}:{args.channel} at y={y}, x={x} = {float(proj.activations[0]):.3f};"
          f" wrote {args.out}")
    return 0


def _occlude(args: argparse.Namespace) -> int:
    from ..methods import deconv

    _check_occlusion_target(args)
    if args.size:  # the image size is known before the model loads
        _check_patch(args.patch, args.size)
    model = _load_model(args)
    size = input_size(model, args.size)
    _check_patch(args.patch, size)
    img = _load_image(args.image, model, size)
    occ = deconv.occlusion(model, img, args.layer, args.channel, target_class=args.target_class,
                           patch=args.patch, stride=args.stride)
    occ.save(args.out)
    print(f"{occ.what}: {occ.base:.4g} on the whole image, largest drop "
          f"{float(occ.drops.max()):.4g}; wrote {args.out}")
    return 0


def _check_occlusion_target(args: argparse.Namespace) -> None:
    """``occlude`` watches one thing: ``--layer`` with ``--channel``, or ``--class``; an
    error naming the flags otherwise."""
    unit = args.layer is not None or args.channel is not None
    if unit and args.target_class is not None:
        raise FeatvizError(f"--class {args.target_class} cannot go with --layer/--channel: "
                           "watch either a class or one channel of a layer")
    if args.layer is not None and args.channel is None:
        raise FeatvizError(f"--layer {args.layer} needs --channel C, the channel to watch")
    if args.channel is not None and args.layer is None:
        raise FeatvizError(f"--channel {args.channel} needs --layer LAYER, its layer")
    if not unit and args.target_class is None:
        raise FeatvizError("say what to watch: --layer LAYER with --channel C, or --class K")


def _check_patch(patch: int, size: int) -> None:
    if patch > size:
        raise FeatvizError(f"--patch {patch} is larger than the {size}x{size} image; use at "
                           f"most {size} (or a larger --size)")


def _warn_if_no_steps(steps: int) -> None:
    if steps == 0:
        warnings.warn("--steps 0: nothing is optimized, the starting image is written as it is",
                      stacklevel=2)


def _invert(args: argparse.Namespace) -> int:
    from ..methods import inversion

    if args.caricature and args.cosine:
        raise FeatvizError("--caricature cannot go with --cosine: a caricature exaggerates "
                           "what the layer sees, --cosine matches its direction; give one")
    _warn_if_no_steps(args.steps)
    model = _load_model(args)
    size = input_size(model, args.size)
    img = _load_image(args.image, model, size)
    common = dict(steps=args.steps, seed=args.seed, progress=not args.no_progress, size=size,
                  fft=not args.pixel)
    if args.caricature:
        results = [inversion.caricature(model, img, layer, **common) for layer in args.layers]
        sweep = inversion.InversionSweep(results[0].original, results)
    else:
        sweep = inversion.invert_layers(model, img, args.layers, kind="cosine" if args.cosine
                                        else "l2", **common)
    sweep.save(args.out)
    print(sweep.table())
    print(f"wrote {args.out}")
    return 0


def _erf(args: argparse.Namespace) -> int:
    from ..methods import receptive_field

    model = _load_model(args)
    fields = receptive_field.effective_layers(
        model, args.layers, input_size=args.size, samples=args.samples, inputs=args.inputs,
        weights=args.init, channel=args.channel)
    fields.plot(args.out)
    print(fields.table())
    print(f"wrote {args.out}")
    return 0


def _maps(args: argparse.Namespace) -> int:
    from ..methods import featuremaps

    if args.labels:
        featuremaps.read_labels(args.labels, 0)  # an unreadable file fails before the model
    model = _load_model(args)
    size = input_size(model, args.size)
    img = _load_image(args.image, model, size)
    layers = "all" if args.layers == ["all"] else args.layers
    featuremaps.report(model, img, args.out, layers=layers, labels=args.labels)
    for index, name, p in featuremaps.top_classes(model, img, 5, args.labels):
        print(f"{p:.3f}  {index}  {name}")
    print(f"wrote {args.out}")
    return 0


def _blocks(args: argparse.Namespace) -> int:
    from ..core.hooks import resolve_layer
    from ..methods.building_blocks import building_blocks
    from . import blocks_page

    model = _load_model(args)
    for name in [args.layer, *(args.grid_layers or [])]:
        resolve_layer(model, name)  # an unknown layer fails before any render
    img = _load_image(args.image, model, input_size(model, args.size))
    blocks = building_blocks(model, img, args.layer, grid_layers=args.grid_layers,
                             groups=args.groups, n=args.top, classes=args.classes,
                             size=args.render_size, cell=args.cell, steps=args.steps,
                             seed=args.seed, method=args.factorization, folder=args.renders)
    blocks_page.write(blocks, args.out, f"{Path(args.image).name}: {args.layer}")
    for name, secs in blocks.seconds.items():
        print(f"{name}: {secs:.0f} s")
    print(f"wrote {args.out}")
    return 0


def _atlas(args: argparse.Namespace) -> int:
    from ..core.hooks import resolve_layer
    from ..methods import atlas, atlas_store
    from . import atlas_page

    model = _load_model(args)
    resolve_layer(model, args.layer)  # an unknown layer fails before any work
    if len(args.classes) > 2:
        raise FeatvizError(f"--class: give one class, or two to compare, not "
                           f"{len(args.classes)}")
    classes = [int(c) if c.isdigit() else c for c in args.classes]
    store = atlas_store.collect(model, args.images, args.layer, args.store, size=args.size,
                                batch_size=args.batch_size, positions=args.positions,
                                seed=args.seed, attribute=classes)
    kw = {"min_count": args.min_count, "cell": args.cell, "steps": args.steps,
          "seed": args.seed, "method": args.layout}
    if classes:
        made = atlas.class_atlas(model, store, classes, args.grid, top=args.top, **kw)
    else:
        made = atlas.activation_atlas(model, store, args.grid, fit_on=args.fit_on, **kw)
    if args.png:
        made.save(args.png)
        print(f"wrote {args.png}")
    atlas_page.write(made, store, args.out)
    print(f"{len(store)} vectors; " + ", ".join(f"{k} {v:.0f} s"
                                                for k, v in made.seconds.items()))
    print(f"wrote {args.out}")
    return 0


def _add_speed_args(p: argparse.ArgumentParser) -> None:
    # not "speed (GPU)": bf16 autocast and channels-last pay on many CPUs as well
    g = p.add_argument_group("speed")
    g.add_argument("--amp", action="store_true", help="bf16 autocast (CUDA and CPU)")
    g.add_argument("--channels-last", action="store_true",
                   help="run the model in channels-last memory order (often faster on GPUs)")
    g.add_argument("--compile", nargs="?", const="default", choices=COMPILE_MODES,
                   help="torch.compile the model cut after the target layer (compiled once per "
                        "layer; pays on GPUs over many steps); reduce-overhead adds CUDA graphs")


def _speed_options(args: argparse.Namespace) -> dict:
    return {"amp": args.amp, "compile": args.compile or False,
            "memory_format": "channels_last" if args.channels_last else "contiguous"}


def _add_course_args(p: argparse.ArgumentParser) -> None:
    """How a render's steps go: the rate's schedule and an early stop (one kind at most)."""
    from ..core.render.schedule import SCHEDULES

    p.add_argument("--lr-schedule", choices=SCHEDULES, default=None,
                   help="the learning rate over the steps: constant, or cosine (from --lr down "
                        "to 5%% of it at the last step) (default: the parameterization's)")
    p.add_argument("--ema", type=float, default=None, metavar="DECAY",
                   help="show an exponential moving average of the parameters with this decay "
                        "in [0, 1), e.g. 0.95: it cancels the optimizer's step-to-step jitter "
                        "(default: the parameterization's; 0: the last step's)")
    p.add_argument("--adam-floor", type=types.non_negative_float, default=None, metavar="K",
                   help="floor Adam's denominator at K times its mean over each image's "
                        "coefficients: coefficients the model barely responds to (grid "
                        "frequencies, grain) move in proportion to their gradient; 0: plain "
                        "Adam (default: the parameterization's, plain Adam for all of "
                        "featviz's)")
    p.add_argument("--rail-guard", type=types.non_negative_float, default=None, metavar="K",
                   help="push colour values within 0.05 of 0 or 1 back inside with K times "
                        "the objective's mean pull on a value, e.g. 2: keeps fast courses off "
                        "flat black, white and pure-colour areas at any objective scale; 0: "
                        "none (default: the parameterization's, none for all of featviz's)")
    p.add_argument("--polish", type=types.whole_number(0), default=0, metavar="N",
                   help="run the last N of --steps without transforms, so the image shown is "
                        "the one optimized last: a stronger image as shown, a slightly less "
                        "transform-robust one, e.g. 32 (default 0)")
    stop = p.add_mutually_exclusive_group()
    stop.add_argument("--until-converged", action="store_true",
                      help="stop before --steps once the objective under fixed held-out "
                           "transforms stops rising (checked every 32 steps)")
    stop.add_argument("--stop-at", type=types.finite_float, metavar="VALUE",
                      help="stop before --steps once every image's held-out objective reaches "
                           "VALUE")


def _course_options(args: argparse.Namespace) -> dict:
    stop_at = "converged" if args.until_converged else args.stop_at
    return {"lr_schedule": args.lr_schedule, "stop_at": stop_at, "ema": args.ema,
            "adam_floor": args.adam_floor, "rail_guard": args.rail_guard,
            "polish": args.polish}


def _sweep(args: argparse.Namespace) -> int:
    from . import sweep

    sweep.parse_channel_spec(args.channels)  # a typo fails before the model loads
    weights = args.weights
    if weights and str(weights).lower() not in ("random", "none") and Path(weights).is_file():
        weights = str(Path(weights).resolve())  # the same file from any working directory
    with sweep.distributed(args.device) as (rank, world, device):
        args.device = device
        model = _load_model(args)
        result = sweep.sweep(
            model, args.out, args.layers, args.channels, steps=args.steps, size=args.size,
            batch_size=args.batch_size, lr=args.lr, transforms=args.transforms, seed=args.seed,
            parameterization=args.param,
            images=args.images, labels=args.labels, k=args.k, rank=rank, world_size=world,
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


def _make_param(args: argparse.Namespace, kind: str, size: int, seeds: list[int], init,
                channels: int = 3):
    """The parameterization ``kind`` of ``channels``-channel images, image ``i`` drawn from
    ``seeds[i]``; colour decorrelation is ImageNet's for RGB unless ``--no-decorrelate``."""
    return param.make(kind, size, len(seeds), decorrelate=False if args.no_decorrelate else None,
                      alpha=args.alpha, spectrum=args.spectrum, init=init, seed=seeds,
                      channels=channels)


def _render_specs(args: argparse.Namespace) -> list[str]:
    """The single-image objective strings ``render`` makes, after checking everything that
    can be checked before the model loads."""
    from ..core.objectives import expand, parse

    specs = [s for spec in args.objective for s in expand(spec)]
    for s in specs:
        parse(s)  # fail on a bad string before the model loads
    if len(specs) > 1 and not Path(args.out).suffix:
        raise FeatvizError(f"--out {args.out} needs a suffix such as .png when rendering "
                           f"{len(specs)} images: the contact sheet goes there, the images "
                           f"into the folder {args.out}/")
    _warn_if_no_steps(args.steps)
    return specs


def _render(args: argparse.Namespace) -> int:

    kind = _param_kind(args)
    specs = _render_specs(args)
    model = _load_model(args)
    size = input_size(model, args.size)
    init = _load_image(args.init, model, size) if args.init else None
    finished, labels, stopped = _render_batches(args, model, kind, specs, size, init)
    return _write_render(args, finished, labels, stopped, many=len(specs) > 1)


def _render_batches(args: argparse.Namespace, model, kind: str, specs: list[str], size: int,
                    init) -> tuple[list[torch.Tensor], list[str], str | None]:
    """Render ``specs`` batch by batch: the images made, their labels, and None, or where a
    first Ctrl-C stopped (the batch in flight keeps what it made so far). A second Ctrl-C
    raises KeyboardInterrupt at once."""
    from ..core.objectives import clipping
    from ..core.render import render

    many = len(specs) > 1
    finished: list[torch.Tensor] = []
    labels: list[str] = []
    stopped = None
    try:
        for k, (chunk, objective) in enumerate(_batches(specs, args.batch_size)):
            # image n of the whole list uses seed + n, whatever batch it falls into
            seeds = [args.seed + len(labels) + i for i in range(len(chunk))]
            p = _make_param(args, kind, size, seeds, init, image_channels(model))
            if many:
                print(f"batch {k + 1}: {len(chunk)} image(s): {', '.join(chunk)}", flush=True)
            if args.clipping:
                objective = objective - args.clipping * clipping()
            res = render(model, objective, p, steps=args.steps, transforms=args.transforms,
                         lr=args.lr, thresholds=args.thresholds, progress=not args.no_progress,
                         interrupt="return", **_speed_options(args), **_course_options(args))
            if res.interrupted:
                stopped = f"after {res.steps_done} of {args.steps} steps of batch {k + 1}"
            _keep_batch(args, res, chunk, seeds, k, many)
            finished.append(res.shown())
            labels.extend(chunk)
            if stopped:
                break
    except KeyboardInterrupt:
        if stopped:  # the second Ctrl-C
            raise
        stopped = f"after {len(finished)} finished batch(es)"  # a first one between renders
    return finished, labels, stopped


def _keep_batch(args: argparse.Namespace, res, chunk: list[str], seeds: list[int], k: int,
                many: bool) -> None:
    """Write one batch's own files (its images in the folder, its GIF) and report it."""
    if many:
        res.save_each(Path(args.out).with_suffix(""), [_safe(s) for s in chunk])
    values = ", ".join(f"{v:.3g}" for v in res.values.tolist())
    print(f"  objective {values} after {res.steps_done} steps in {res.seconds:.1f} s "
          f"(seeds {seeds[0]}-{seeds[-1]}){_stop_note(args, res)}", flush=True)
    if args.gif:
        gif = Path(args.gif)
        res.save_gif(gif if not many else gif.with_name(f"{gif.stem}_{k:03d}{gif.suffix}"))


def _stop_note(args: argparse.Namespace, res) -> str:
    """What the held-out checks of --until-converged/--stop-at measured, and why it stopped."""
    if res.held_out is None or not len(res.held_out):
        return ""
    held = ", ".join(f"{v:.3g}" for v in res.held_out[-1].tolist())
    why = ""
    if res.steps_done < args.steps and not res.interrupted:
        why = (", stopped: converged" if args.until_converged
               else f", stopped: reached {args.stop_at:g}")
    return f"; held-out objective {held}{why}"


def _write_render(args: argparse.Namespace, finished: list[torch.Tensor], labels: list[str],
                  stopped: str | None, many: bool) -> int:
    """Write the image (or contact sheet) of what was made; the exit status: 0, or 130 when
    a Ctrl-C stopped the render (what was made so far is written first, and said so)."""
    from ..core import images

    out = Path(args.out)
    if not finished:
        print(f"featviz render: interrupted (Ctrl-C) {stopped}, before any image was made; "
              "nothing written", file=sys.stderr)
        return INTERRUPTED
    images.save(torch.cat(finished), out, labels if many else None, alpha=args.alpha)
    where = f"{out} (contact sheet) and {out.with_suffix('')}/" if many else str(out)
    print(f"wrote {where}")
    if stopped is None:
        return 0
    print(f"featviz render: interrupted (Ctrl-C) {stopped}: wrote what was made so far to "
          f"{where}", file=sys.stderr)
    return INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
