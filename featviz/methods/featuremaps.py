"""The feature-map viewer: what every layer holds for one image, before any optimization.

``capture`` runs the image once and keeps the output of many layers (copied to the CPU as they
come, under a memory cap); a :class:`FeatureMaps` draws channel grids, histograms and per-layer
statistics; ``top_classes`` reads the softmax with class names; ``compare`` measures how two
inputs differ layer by layer (variance ratio, correlation of normalized maps, change of the
softmax); ``report`` writes one self-contained HTML page to browse it all.
"""

from __future__ import annotations

import html
import io
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from PIL import Image
from torch import nn

from ..core import images as _images
from ..core import markdown
from ..core import notebook as _nb
from ..core.hooks import frozen, layer_aliases, named_layers, on_output
from ..core.layouts import declared
from ..core.model_info import class_names, image_channels, model_device
from ..errors import FeatvizError
from ._report_page import histogram_image, img_tag, write_page
from ._top_classes import one_image, read_labels, top_classes
from .tokens import class_cells, split_tokens

NORMALIZATIONS = ("channel", "layer", "none")


_VIEW_LAYERS = 12  # layers a notebook cell shows of a capture
_VIEW_CHANNELS = 16  # channels shown per layer there


@dataclass(repr=False)
class FeatureMaps:
    """Activations of several layers for one image: ``acts[layer]`` is [C,H,W] (or [C]); a
    transformer's token layer is its patch grid [C,h,w], its class token apart in
    ``cls[layer]`` [C]; ``other_names[layer]``: the layer's other names in the model
    (``["mixed4a"]`` for InceptionV1's ``"inception4a"``, the module path for an alias),
    shown beside it."""

    acts: dict[str, torch.Tensor]
    image: torch.Tensor
    logits: torch.Tensor | None
    other_names: dict[str, list[str]] = field(default_factory=dict)
    cls: dict[str, torch.Tensor] = field(default_factory=dict)

    def title(self, layer: str) -> str:
        """``layer`` with its other names, ``"inception4a (mixed4a)"``.

        Args:
            layer: a captured layer's name.
        """
        others = self.other_names.get(layer)
        return f"{layer} ({', '.join(others)})" if others else layer

    @property
    def layers(self) -> list[str]:
        return list(self.acts)

    def class_note(self, layer: str) -> str:
        """How ``layer``'s class token is shown, with its values, in words; "" without one.

        Args:
            layer: A captured layer's name.
        """
        if layer not in self.cls:
            return ""
        token = self.cls[layer].float()
        return (f"{'x'.join(map(str, self.acts[layer].shape[1:]))} patch grid; the class "
                f"token apart, the cell right of each map (on the map's scale, clipped): "
                f"mean {float(token.mean()):.3g}, max {float(token.max()):.3g}")

    def _get(self, layer: str) -> torch.Tensor:
        if layer not in self.acts:
            from ..errors import unknown

            raise unknown("captured layer", layer, self.acts)
        return self.acts[layer]

    def grid(self, layer: str, normalize: str = "channel", max_channels: int | None = 64,
             ncol: int | None = None, cmap: str = "viridis") -> Image.Image:
        """Each channel of ``layer`` as a small picture in a grid, coloured by ``cmap``.

        ``normalize``: per ``"channel"`` (each map to its own min-max), per ``"layer"`` (one
        scale for all), or ``"none"`` (values clipped to [0, 1]). A token layer's maps are its
        patch grid; its class token is the square cell right of each map, coloured on the
        map's scale (clipped: it is not part of the map's range, so that a class token far
        from the patches does not flatten them).

        Args:
            layer: A captured layer's name.
            normalize: ``"channel"``, ``"layer"`` or ``"none"``.
            max_channels: The first channels shown (None or 0: all).
            ncol: Maps per row (default: a square grid).
            cmap: A matplotlib colour map name.
        """
        if normalize not in NORMALIZATIONS:
            raise ValueError(f"normalize must be one of {', '.join(NORMALIZATIONS)}, "
                             f"got {normalize!r}")
        act = self._get(layer).float()
        if act.dim() != 3:
            raise FeatvizError(f"layer {layer!r} has no spatial maps (shape {list(act.shape)})")
        maps = act[:max_channels] if max_channels else act
        lo, hi = torch.zeros(len(maps), 1, 1), torch.ones(len(maps), 1, 1)  # "none": as they are
        if normalize == "channel":
            lo, hi = maps.flatten(1).amin(1).view(-1, 1, 1), maps.flatten(1).amax(1).view(-1, 1, 1)
        elif normalize == "layer":
            lo, hi = lo * maps.min(), hi * maps.max()
        scale = (hi - lo).clamp_min(1e-12)
        tiles = colorize(((maps - lo) / scale).clamp(0, 1), cmap)
        size = max(32, 96 // max(1, maps.shape[-1] // 32))
        height = max(1, round(size * maps.shape[-2] / maps.shape[-1]))  # a rectangle's aspect
        tiles = torch.nn.functional.interpolate(tiles, size=(height, size), mode="nearest")
        if layer in self.cls:
            token = self.cls[layer].float()[:len(maps)].view(-1, 1, 1)
            colours = colorize(((token - lo) / scale).clamp(0, 1), cmap)[..., 0, 0]
            tiles = class_cells(tiles, colours)
        # wider gaps between maps than between a map and its class cell: whose cell is plain
        return _images.grid(tiles, ncol=ncol or math.ceil(math.sqrt(len(tiles))),
                            pad=8 if layer in self.cls else 2)

    def stats(self) -> Stats:
        """Per layer: mean, std, sparsity (share of activations <= 0), max."""
        rows = []
        for layer, act in self.acts.items():
            a = act.float()
            rows.append((layer, tuple(a.shape), float(a.mean()), float(a.std()),
                         float((a <= 0).float().mean()), float(a.max())))
        return Stats(rows)

    def histograms(self, layers: Sequence[str] | None = None, bins: int = 60) -> Image.Image:
        """One histogram of activation values per layer (matplotlib), as an image."""
        plt = _pyplot()
        layers = list(layers or self.layers)
        ncol = min(4, len(layers))
        nrow = math.ceil(len(layers) / ncol)
        fig, axes = plt.subplots(nrow, ncol, figsize=(3 * ncol, 2.2 * nrow), squeeze=False)
        for ax in axes.flat[len(layers):]:
            ax.axis("off")
        for ax, layer in zip(axes.flat, layers, strict=False):
            values = self._get(layer).float().flatten().numpy()
            ax.hist(values, bins=bins, color="#4062bb", log=True)
            ax.set_title(layer, fontsize=8)
            ax.tick_params(labelsize=6)
        fig.tight_layout()
        return _figure_image(fig)

    def __repr__(self) -> str:
        names = ", ".join(self.layers[:6]) + (", ..." if len(self.layers) > 6 else "")
        logits = f", {len(self.logits)} logits" if self.logits is not None else ""
        return (f"FeatureMaps({len(self.acts)} layers: {names}; "
                f"image {_nb.shape(self.image)}{logits})")

    def _shown_layers(self) -> list[str]:
        """The layers a notebook shows: all when few, else :data:`_VIEW_LAYERS` spread evenly
        from first to last (the first and the last included)."""
        if len(self.layers) <= _VIEW_LAYERS:
            return self.layers
        step = (len(self.layers) - 1) / (_VIEW_LAYERS - 1)
        return [self.layers[round(i * step)] for i in range(_VIEW_LAYERS)]

    def _repr_html_(self) -> str:
        """A compact view: the input, then one row per layer (at most :data:`_VIEW_LAYERS`):
        its shape and statistics and its first channels' maps, each to its own range."""
        page = _nb.Budget()
        page.image(_images.to_pil(self.image), "input", max_side=160)
        stats = {row[0]: row for row in self.stats().rows}
        page.text('<table style="border-collapse:collapse;font-size:12px">')
        for layer in self._shown_layers():
            _, shape, mean, std, sparsity, top = stats[layer]
            page.text(f"<tr><td style='padding:2px 8px;vertical-align:top'><b>"
                      f"{html.escape(self.title(layer))}</b><br>{'x'.join(map(str, shape))}"
                      f"<br>mean {mean:.3g} · max {top:.3g}<br>sparsity {sparsity:.0%}</td><td>")
            if self.acts[layer].dim() == 3:
                page.image(self.grid(layer, max_channels=_VIEW_CHANNELS, ncol=8), layer,
                           max_side=512)
                page.text(f"<br>{shown_channels(len(self.acts[layer]), _VIEW_CHANNELS)}")
                if layer in self.cls:
                    page.text(f"<br>{html.escape(self.class_note(layer))}")
            page.text("</td></tr>")
        page.text("</table>")
        if len(self.layers) > _VIEW_LAYERS:
            page.text(f"<p>{_VIEW_LAYERS} of {len(self.layers)} layers shown; "
                      "<code>.grid(layer)</code> shows any one, <code>.stats()</code> all</p>")
        return page.html(f"feature maps of {len(self.layers)} layers")


@dataclass
class Stats:
    """Per-layer statistics (layer, shape, mean, std, sparsity, max); ``str`` is a table."""

    rows: list[tuple]

    def __str__(self) -> str:
        return markdown.table(
            ["layer", "shape", "mean", "std", "sparsity", "max"],
            [(layer, "x".join(map(str, shape)), f"{mean:.3f}", f"{std:.3f}", f"{sparsity:.1%}",
              f"{top:.3f}") for layer, shape, mean, std, sparsity, top in self.rows], left=2)

    def _repr_html_(self) -> str:
        """The table of :meth:`__str__` as HTML (Jupyter)."""
        return _nb.table(["layer", "shape", "mean", "std", "sparsity", "max"],
                         [(layer, "x".join(map(str, shape)), f"{mean:.3f}", f"{std:.3f}",
                           f"{sparsity:.1%}", f"{top:.3f}")
                          for layer, shape, mean, std, sparsity, top in self.rows])


def colorize(maps: torch.Tensor, cmap: str = "viridis") -> torch.Tensor:
    """[N,H,W] in [0, 1] -> [N,3,H,W] RGB with a matplotlib colour map (grey without it).

    Args:
        maps: the maps, [N, H, W] in [0, 1].
        cmap: a matplotlib colour map name (default ``"viridis"``).
    """
    try:
        import matplotlib

        table = torch.tensor(matplotlib.colormaps[cmap](torch.linspace(0, 1, 256).numpy())[:, :3],
                             dtype=torch.float32)
    except ImportError:
        return maps[:, None].expand(-1, 3, -1, -1)
    except KeyError:
        raise ValueError(f"unknown colour map {cmap!r}") from None
    idx = (maps * 255).round().long().clamp(0, 255)
    return table[idx].permute(0, 3, 1, 2)


def _pyplot():
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as err:
        raise FeatvizError("histograms need matplotlib: pip install 'featviz[plot]'") from err
    return plt


def _figure_image(fig) -> Image.Image:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    _pyplot().close(fig)
    buf.seek(0)
    return Image.open(buf).convert("RGB")


def _layer_list(model: nn.Module, layers: str | Sequence[str]) -> list[str]:
    if isinstance(layers, str) and layers == "all":
        return list(named_layers(model))
    return [layers] if isinstance(layers, str) else list(layers)


def capture(model: nn.Module, img: torch.Tensor, layers: str | Sequence[str] = "all",
            max_bytes: int = 2 * 2**30) -> FeatureMaps:
    """Run ``img`` once and keep the output of ``layers`` (a list, or ``"all"``).

    Each activation is copied to the CPU as it is produced (a container that hands on its
    last child's output shares that copy); when the total would pass ``max_bytes`` the
    capture stops with an error that says so. A transformer's token layer is kept as its
    patch grid [C, h, w], its class token apart (:attr:`FeatureMaps.cls`).

    Args:
        model: The model.
        img: One image [1,C,H,W] or [C,H,W] in [0, 1].
        layers: ``"all"`` or a list of layer names.
        max_bytes: The cap on the activations kept, in bytes.
    """
    img = one_image(img, image_channels(model))
    names = _layer_list(model, layers)
    acts: dict[str, torch.Tensor] = {}
    copies: dict[tuple, torch.Tensor] = {}
    used = [0]

    def keep(layer_names: list[str], output) -> None:
        if not torch.is_tensor(output):
            return
        # the same tensor at the same version (no in-place change since): the same values
        key = (output.data_ptr(), output._version, tuple(output.shape))
        if key not in copies:
            nbytes = output[0].numel() * 4
            if used[0] + nbytes > max_bytes:
                raise FeatvizError(
                    f"capturing {layer_names[0]!r} would take the activations past the memory "
                    f"cap of {max_bytes / 2**20:.0f} MiB ({len(acts)} layers kept so far); "
                    "pass a list of layers, or a larger max_bytes")
            used[0] += nbytes
            copies[key] = output[0].detach().float().cpu().clone()
        for name in layer_names:
            acts[name] = copies[key]

    with on_output(model, names, keep), frozen(model), torch.no_grad():
        out = model(img.to(model_device(model)))
    logits = out[0].detach().float().cpu() if torch.is_tensor(out) and out.dim() == 2 else None
    # token sequences as their patch grids, the class token apart, as objectives see them
    grids, cls = split_tokens({n: acts[n] for n in names if n in acts}, declared(model),
                              tuple(img.shape[-2:]))
    return FeatureMaps(grids, img.cpu(), logits, _other_names(model, grids), cls)


def _other_names(model: nn.Module, layers: Sequence[str]) -> dict[str, list[str]]:
    """Each of ``layers``' other names in ``model``: a module path's aliases; an alias's path
    and its other aliases. A name that is both an alias and a path (InceptionV1's
    ``maxpool1``) is read as the alias, as :func:`~featviz.core.hooks.resolve_layer` reads it."""
    aliases = layer_aliases(model)
    found = {}
    for layer in layers:
        path = aliases.get(layer, layer)
        names = [path] + [a for a, p in aliases.items() if p == path]
        others = [name for name in names if name != layer]
        if others:
            found[layer] = others
    return found


def shown_channels(channels: int, max_channels: int | None) -> str:
    """Which of a layer's ``channels`` a grid of at most ``max_channels`` shows, in words:
    ``"channels 0-31 of 512 (the first 32, ...)"`` or ``"all 64 channels"``.

    Args:
        channels: the layer's channel count.
        max_channels: the grid's limit (None or 0: no limit).
    """
    if not max_channels or channels <= max_channels:
        return f"all {channels} channels" if channels > 1 else "its one channel"
    return (f"channels 0-{max_channels - 1} of {channels} (the first {max_channels}, in order; "
            "each map scaled to its own range)")


@dataclass(repr=False)
class Comparison:
    """How two inputs differ, layer by layer, and at the softmax."""

    rows: list[tuple[str, float, float]]  # layer, variance ratio b/a, mean map correlation
    kl: float | None
    top1_agree: bool | None
    a: FeatureMaps
    b: FeatureMaps

    def table(self) -> str:
        text = markdown.table(
            ["layer", "variance ratio (b/a)", "mean correlation of normalized maps"],
            [(layer, f"{ratio:.3f}", f"{corr:.3f}") for layer, ratio, corr in self.rows])
        lines = [text]
        if self.kl is not None:
            lines.append(f"\nsoftmax: KL(a || b) = {self.kl:.4f}, top-1 "
                         f"{'agrees' if self.top1_agree else 'differs'}")
        return "\n".join(lines)

    def __repr__(self) -> str:
        kl = f", KL {self.kl:.4f}, top-1 {'agrees' if self.top1_agree else 'differs'}" \
            if self.kl is not None else ""
        return f"Comparison({len(self.rows)} layers{kl})"

    def _repr_html_(self) -> str:
        """The two inputs side by side above the table of :meth:`table` (Jupyter)."""
        page = _nb.Budget()
        page.image(_images.grid(torch.cat([self.a.image, self.b.image]), ["a", "b"], ncol=2),
                   "inputs", max_side=320)
        if self.kl is not None:
            page.text(f"<p>softmax: KL(a || b) = {self.kl:.4f}, top-1 "
                      f"{'agrees' if self.top1_agree else 'differs'}</p>")
        page.text(_nb.table(["layer", "variance ratio (b/a)", "mean correlation of maps"],
                            [(layer, f"{ratio:.3f}", f"{corr:.3f}")
                             for layer, ratio, corr in self.rows]))
        return page.html("comparison of two inputs")

    def report(self, path: str | os.PathLike) -> Path:
        """A self-contained HTML page with the table and both inputs' channel grids."""
        body = [f"<pre>{html.escape(self.table())}</pre>"]
        for layer, _, _ in self.rows[:12]:
            if self.a.acts[layer].dim() == 3:
                body.append(f"<h3>{html.escape(layer)}</h3><div class='pair'>"
                            f"{img_tag(self.a.grid(layer), 'a')}"
                            f"{img_tag(self.b.grid(layer), 'b')}</div>")
        return write_page(path, "featviz: compare two inputs", {}, "\n".join(body))


def compare(model: nn.Module, a: torch.Tensor, b: torch.Tensor,
            layers: str | Sequence[str] = "all") -> Comparison:
    """Compare the activations of two inputs: per layer the variance ratio var(b)/var(a) and
    the mean correlation of the per-channel normalized maps; the KL divergence and top-1
    agreement of the softmax.

    Args:
        model: the network.
        a: the first input, one image [1, C, H, W] or [C, H, W] in [0, 1].
        b: the second input, the same size.
        layers: the layers to compare, or ``"all"``.
    """
    fa, fb = capture(model, a, layers), capture(model, b, layers)
    rows = []
    for layer in fa.acts:
        x, y = fa.acts[layer].float(), fb.acts[layer].float()
        ratio = float(y.var() / x.var().clamp_min(1e-12))
        corr = _mean_channel_correlation(x, y)
        rows.append((layer, ratio, corr))
    kl = agree = None
    if fa.logits is not None and fb.logits is not None:
        pa, pb = fa.logits.log_softmax(0), fb.logits.log_softmax(0)
        kl = float((pa.exp() * (pa - pb)).sum())
        agree = int(pa.argmax()) == int(pb.argmax())
    return Comparison(rows, kl, agree, fa, fb)


def _mean_channel_correlation(x: torch.Tensor, y: torch.Tensor) -> float:
    """Mean over channels of the Pearson correlation of the two inputs' maps; channels that
    are constant in either input (no shape to compare) are left out. A vector layer ([C], the
    classifier's) has no maps: NaN, as for 1x1 maps."""
    if x.dim() < 2:
        return float("nan")
    xs, ys = x.flatten(1).double(), y.flatten(1).double()
    if xs.shape[1] < 2:
        return float("nan")
    xs = xs - xs.mean(1, keepdim=True)
    ys = ys - ys.mean(1, keepdim=True)
    sx, sy = xs.norm(dim=1), ys.norm(dim=1)
    valid = (sx > 1e-9 * (1 + sx.max())) & (sy > 1e-9 * (1 + sy.max()))
    if not valid.any():
        return float("nan")
    return float(((xs * ys).sum(1)[valid] / (sx * sy)[valid]).mean())


def report(model: nn.Module, img: torch.Tensor, out: str | os.PathLike,
           layers: str | Sequence[str] = "all",
           labels: str | os.PathLike | Sequence[str] | None = None, k: int = 5,
           max_channels: int = 32) -> Path:
    """Write one self-contained HTML page (images embedded) to browse ``img`` through
    ``model``: a layer list, per layer its channel grid (the first ``max_channels``, and the
    page says which), histogram and statistics, and the softmax top-k. Layers are named by
    module path with the model's own names beside them (``inception4a (mixed4a)``).

    Args:
        model: the model.
        img: one image [1,C,H,W] or [C,H,W] in [0, 1].
        out: the .html file to write.
        layers: ``"all"`` or a list of layer names.
        labels: class names (a list or a file with one per line); default: the model's own,
            else the class indices.
        k: how many of the top classes to list.
        max_channels: the most channels a layer's grid shows, the first ones in order.
    """
    maps = capture(model, img, layers)
    picture = img_tag(_images.to_pil(maps.image), "input")
    sections = [f"<section id='input'><h2>input</h2>{picture}"]
    if maps.logits is not None:
        probs = maps.logits.softmax(0)
        names = read_labels(labels if labels is not None else class_names(model), len(probs))
        top = probs.topk(min(k, len(probs)))
        rows = "".join(f"<tr><td>{int(i)}</td><td>{html.escape(names[int(i)])}</td>"
                       f"<td>{float(p):.3f}</td></tr>" for p, i in zip(top.values, top.indices,
                                                                        strict=True))
        sections.append(f"<h3>softmax top-{len(top.values)}</h3><table><tr><th>class</th>"
                        f"<th>name</th><th>p</th></tr>{rows}</table>")
    sections.append("</section>")
    stats = {row[0]: row for row in maps.stats().rows}
    shown: dict[int, str] = {}
    for layer, act in maps.acts.items():
        _, shape, mean, std, sparsity, top = stats[layer]
        parts = [f"<section id='{html.escape(layer)}'><h2>{html.escape(maps.title(layer))}</h2>"
                 f"<p>shape {'x'.join(map(str, shape))} · mean {mean:.3f} · std {std:.3f} · "
                 f"sparsity {sparsity:.1%} · max {top:.3f}</p>"]
        if id(act) in shown:  # a container handing on a child's output: show it once
            first = html.escape(shown[id(act)])
            parts.append(f"<p>same output as <a href='#{first}'>{first}</a></p>")
        else:
            shown[id(act)] = layer
            if act.dim() == 3:
                parts.append(f"<p>{shown_channels(len(act), max_channels)}</p>")
                if layer in maps.cls:
                    parts.append(f"<p>{html.escape(maps.class_note(layer))}</p>")
                parts.append(img_tag(maps.grid(layer, max_channels=max_channels),
                                      f"{layer} maps"))
            parts.append(img_tag(histogram_image(act), f"{layer} histogram"))
        parts.append("</section>")
        sections.append("".join(parts))
    nav = {"input": "input"} | {layer: maps.title(layer) for layer in maps.acts}
    return write_page(out, "featviz feature maps", nav, "\n".join(sections))


__all__ = ["capture", "FeatureMaps", "Stats", "top_classes", "compare", "Comparison", "report",
           "colorize", "read_labels", "shown_channels", "histogram_image"]
