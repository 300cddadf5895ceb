"""Feature inversion (Mahendran & Vedaldi 2015) and caricatures (lucid).

Given a photo x0 and a layer Φ, find the image x whose activations match Φ(x0):

    minimize  ||Φ(x) − Φ(x0)||² / ||Φ(x0)||²  +  λα · Nα(x)  +  λTV · TVβ(x)

with the paper's normalizations carried over to [0, 1] images: Nα is the mean over pixels of
Σ_channels |(x − 0.5) / B|^α and TVβ the mean of ((dx² + dy²) / V²)^(β/2) summed over channels,
B = 80/255 (the paper's typical pixel magnitude, B = 80 on 0..255) and V = B / 6.5 (its
typical difference of neighbouring pixels); α = 6, β = 2. What survives in x shows what the
layer keeps of the image. It runs in featviz's render loop with a matching objective; a
caricature instead maximizes the alignment with Φ(x0), exaggerating what the layer sees.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..core import images as _images
from ..core import markdown
from ..core import notebook as _nb
from ..core import param as _param
from ..core import transforms as _transforms
from ..core.hooks import INPUT, LayerTap, frozen
from ..core.metrics import psnr, ssim  # also reached as featviz.inversion.psnr/ssim
from ..core.model_info import image_channels, model_device
from ..core.objectives import Objective
from ..core.render import render
from ..core.sizes import SizeLike, hw
from ..errors import FeatvizError

#: The paper's pixel-range and neighbour-difference scales, on a [0, 1] image.
B = 80 / 255
V = B / 6.5


def features(model: nn.Module, img: torch.Tensor, layer: str) -> torch.Tensor:
    """Φ(img): the activations of ``layer`` for a batch, without gradients.

    Args:
        model: the network.
        img: the images, [B, C, H, W].
        layer: the layer.
    """
    with frozen(model), LayerTap(model, [layer]) as tap, torch.no_grad():
        return tap(img.to(model_device(model)))[layer].detach()


def _check_target(layer: str, target: torch.Tensor) -> float:
    norm2 = float((target.float() ** 2).sum())
    if not norm2 > 0:
        raise FeatvizError(f"the activations of layer {layer!r} are all zero for this image: "
                           "there is nothing to match (pick another layer or image)")
    return norm2


def _aligned(layer: str, act: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    if act.shape[1:] != target.shape[1:]:
        raise FeatvizError(f"layer {layer!r} gives {list(act.shape[1:])} for the image being "
                           f"optimized but {list(target.shape[1:])} for the target: keep the "
                           "image size (use transforms that do not change it, e.g. 'distill')")
    return target.to(act.device, act.dtype).expand_as(act)


def matching(layer: str, target: torch.Tensor, kind: str = "l2") -> Objective:
    """Minus the normalized squared error ||Φ(x) − target||² / ||target||² (``kind="l2"``),
    or the cosine similarity of Φ(x) and target (``kind="cosine"``), per image.

    Args:
        layer: the layer matched.
        target: the target activation Φ(x0).
        kind: ``"l2"`` (default) or ``"cosine"``.
    """
    target = target.detach()
    norm2 = _check_target(layer, target)
    if kind not in ("l2", "cosine"):
        raise ValueError(f"kind must be 'l2' or 'cosine', got {kind!r}")

    def fn(acts):
        act = acts[layer].float()
        t = _aligned(layer, act, target)
        if kind == "cosine":
            return F.cosine_similarity(act.flatten(1), t.flatten(1), dim=1)
        return -((act - t) ** 2).flatten(1).sum(1) / norm2

    return Objective(fn, [layer], f"match({layer}, {kind})")


def caricature_objective(layer: str, target: torch.Tensor, cossim_pow: float = 1.0) -> Objective:
    """lucid's caricature: the dot product with Φ(x0) (normalized by ||Φ(x0)||²), times the
    cosine similarity to the power ``cossim_pow`` so the direction matters, not only size.

    Args:
        layer: the layer.
        target: the activation Φ(x0) of the original image.
        cossim_pow: the power of the cosine similarity (default 1).
    """
    target = target.detach()
    norm2 = _check_target(layer, target)

    def fn(acts):
        act = acts[layer].float()
        t = _aligned(layer, act, target).flatten(1)
        act = act.flatten(1)
        dot = (act * t).sum(1) / norm2
        cos = F.cosine_similarity(act, t, dim=1).clamp_min(1e-4)
        return dot * cos ** cossim_pow

    return Objective(fn, [layer], f"caricature({layer})")


def alpha_norm(alpha: float = 6.0, bound: float = B) -> Objective:
    """The paper's α-norm prior Nα: mean over pixels of Σ_c |(x − 0.5) / bound|^α.

    Args:
        alpha: the exponent α (default 6).
        bound: the pixel range scale B.
    """
    return Objective(lambda acts: (((acts[INPUT] - 0.5) / bound).abs() ** alpha)
                     .sum(1).flatten(1).mean(1), [INPUT], f"alpha_norm({alpha:g})")


def tv_beta(beta: float = 2.0, scale: float = V) -> Objective:
    """The paper's TVβ prior: mean over pixels of Σ_c ((dx² + dy²) / scale²)^(β/2).

    Args:
        beta: the exponent β (default 2).
        scale: the normalizing scale V.
    """

    def fn(acts):
        img = acts[INPUT]
        dx = img[..., :-1, 1:] - img[..., :-1, :-1]
        dy = img[..., 1:, :-1] - img[..., :-1, :-1]
        return (((dx ** 2 + dy ** 2) / scale ** 2 + 1e-8) ** (beta / 2)).sum(1).flatten(1).mean(1)

    return Objective(fn, [INPUT], f"tv_beta({beta:g})")


@dataclass(repr=False)
class Inversion:
    """A reconstruction: ``image`` [1,C,H,W] in [0, 1] and how close it came.

    ``feature_error``: ||Φ(x) − Φ(x0)||² / ||Φ(x0)||² of the final image (no transforms);
    ``start_error``: the same for the starting image; ``psnr``/``ssim`` against the original.
    """

    image: torch.Tensor
    original: torch.Tensor
    layer: str
    feature_error: float
    start_error: float
    psnr: float
    ssim: float
    seconds: float
    history: torch.Tensor = field(repr=False, default_factory=lambda: torch.empty(0))

    def save(self, path: str | os.PathLike) -> Path:
        """Write the reconstruction as a PNG."""
        return _images.save(self.image, path, alpha=False)

    def __repr__(self) -> str:
        return (f"Inversion({self.layer}: feature error {self.start_error:.3f} -> "
                f"{self.feature_error:.4f}, PSNR {self.psnr:.1f} dB, SSIM {self.ssim:.3f}, "
                f"{_nb.shape(self.image[0])} in {self.seconds:.1f} s)")

    def _pair(self):
        return _nb.picture(_rgb(torch.cat([self.original, self.image])),
                           ["original", f"from {self.layer}"], ncol=2)

    def _repr_png_(self) -> bytes:
        """The original beside its reconstruction."""
        return _nb.png(self._pair())

    def _repr_html_(self) -> str:
        """The original beside its reconstruction, and how close it came."""
        page = _nb.Budget()
        page.image(self._pair(), "inversion")
        page.text(_nb.table(["feature error (start)", "feature error", "PSNR dB", "SSIM", "s"],
                            [(f"{self.start_error:.3f}", f"{self.feature_error:.4f}",
                              f"{self.psnr:.1f}", f"{self.ssim:.3f}", f"{self.seconds:.1f}")]))
        return page.html(f"inversion from {self.layer}")


def _rgb(t: torch.Tensor) -> torch.Tensor:
    """Images of any band count as a notebook shows them (four bands are bands, not alpha)."""
    return t if t.shape[1] in (1, 3) else _images.composite(
        t, [min(i, t.shape[1] - 1) for i in range(3)])


@dataclass(repr=False)
class InversionSweep:
    """Reconstructions of one image from several layers."""

    original: torch.Tensor
    results: list[Inversion]

    def table(self) -> str:
        """A markdown table: layer, feature error (start -> end), PSNR, SSIM, seconds."""
        return markdown.table(
            ["layer", "feature error (start)", "feature error", "PSNR dB", "SSIM", "s"],
            [(r.layer, f"{r.start_error:.3f}", f"{r.feature_error:.4f}", f"{r.psnr:.1f}",
              f"{r.ssim:.3f}", f"{r.seconds:.0f}") for r in self.results])

    def save(self, path: str | os.PathLike) -> Path:
        """One row: the original, then one reconstruction per layer, labelled with errors."""
        tiles = torch.cat([self.original] + [r.image for r in self.results])
        labels = ["original"] + [f"{r.layer} err {r.feature_error:.3f} {r.psnr:.1f}dB"
                                 for r in self.results]
        return _images.save(tiles, path, labels=labels, ncol=len(labels), alpha=False)

    def __repr__(self) -> str:
        layers = ", ".join(f"{r.layer} {r.feature_error:.3f}" for r in self.results[:8])
        more = ", ..." if len(self.results) > 8 else ""
        return f"InversionSweep({len(self.results)} layers, feature error: {layers}{more})"

    def _row(self):
        tiles = torch.cat([self.original] + [r.image for r in self.results])
        labels = ["original"] + [r.layer for r in self.results]
        return _nb.picture(_rgb(tiles), labels, ncol=len(labels))

    def _repr_png_(self) -> bytes:
        """One row: the original, then the reconstruction from each layer."""
        return _nb.png(self._row())

    def _repr_html_(self) -> str:
        """The row of reconstructions above the table of errors (:meth:`table`)."""
        page = _nb.Budget()
        page.image(self._row(), "inversions")
        page.text(_nb.table(["layer", "feature error (start)", "feature error", "PSNR dB",
                             "SSIM", "s"],
                            [(r.layer, f"{r.start_error:.3f}", f"{r.feature_error:.4f}",
                              f"{r.psnr:.1f}", f"{r.ssim:.3f}", f"{r.seconds:.0f}")
                             for r in self.results]))
        return page.html(f"inversion from {len(self.results)} layers")


def _prepare(model: nn.Module, img: torch.Tensor, size: SizeLike | None) -> torch.Tensor:
    if not torch.is_tensor(img):
        raise TypeError("img must be an image tensor (load files with featviz.images.load)")
    img = img[None] if img.dim() == 3 else img
    channels = image_channels(model)
    if img.dim() != 4 or img.shape[:2] != (1, channels):
        raise ValueError(f"invert takes one image [1,{channels},H,W] in [0, 1] (the model's "
                         f"channels), got {list(img.shape)}")
    size = size or getattr(model, "input_size", None)
    if size and tuple(img.shape[-2:]) != hw(size):
        import warnings

        h, w = hw(size)
        warnings.warn(f"resizing the {img.shape[-2]}x{img.shape[-1]} image to {h}x{w} "
                      "(the model's input size; pass size= to choose another, one side or "
                      "(height, width))", stacklevel=3)
        img = F.interpolate(img.float(), (h, w), mode="bilinear", antialias=True,
                            align_corners=False).clamp(0, 1)
    return img.float().cpu()


def _feature_error(model, img, layer, target) -> float:
    act = features(model, img, layer).float().cpu()
    t = target.float().cpu()
    return float(((act - t) ** 2).sum() / (t ** 2).sum())


def _run(model, img, layer, objective_for, *, steps, fft, init, lr, lambda_alpha, alpha,
         lambda_tv, beta, transforms, seed, progress, size) -> Inversion:
    import time

    original = _prepare(model, img, size)
    target = features(model, original, layer)
    objective = objective_for(layer, target)
    if lambda_alpha:
        objective = objective - lambda_alpha * alpha_norm(alpha)
    if lambda_tv:
        objective = objective - lambda_tv * tv_beta(beta)
    start = _prepare(model, init, tuple(original.shape[-2:])) if init is not None else None
    p = _param.image(tuple(original.shape[-2:]), 1, fft=fft, init=start, seed=seed,
                     channels=original.shape[1])
    t0 = time.perf_counter()
    start_error = _feature_error(model, p().detach(), layer, target)
    res = render(model, objective, p, steps=steps, transforms=transforms, lr=lr,
                 progress=progress, redirect_relu=0)
    recon = res.images
    return Inversion(recon, original, layer, _feature_error(model, recon, layer, target),
                     start_error, psnr(recon, original), ssim(recon, original),
                     time.perf_counter() - t0, res.history)


def _jitter(pixels: int):
    """Random shifts of up to ±``pixels`` that keep the image size (edges repeated)."""
    if not pixels:
        return None
    return [_transforms.pad(pixels, mode="edge"), _transforms.jitter(2 * pixels)]


def invert(
    model: nn.Module,
    img: torch.Tensor,
    layer: str,
    steps: int = 1000,
    *,
    fft: bool = True,
    init: torch.Tensor | None = None,
    kind: str = "l2",
    lr: float = 0.05,
    lambda_alpha: float = 1e-3,
    alpha: float = 6.0,
    lambda_tv: float = 5e-3,
    beta: float = 2.0,
    jitter: int = 2,
    transforms: Sequence | None = None,
    seed: int = 0,
    size: SizeLike | None = None,
    progress: bool = True,
) -> Inversion:
    """Reconstruct ``img`` ([1,C,H,W] in [0, 1], C the model's channels) from the activations
    of ``layer``.

    Starts from noise (or ``init``), in the Fourier (``fft``) or pixel parameterization, with
    random shifts of up to ``jitter`` pixels each step as in the paper (or any ``transforms``).
    ``kind="cosine"`` matches directions instead of values. An image of another size than
    ``size`` (one side or (height, width); default the model's input size) is resized, with a
    warning.

    Args:
        model: the network.
        img: the image, [1, C, H, W] in [0, 1].
        layer: the layer reconstructed from.
        steps: optimization steps (default 1000).
        fft: use the Fourier parameterization (default True).
        init: a start image; None starts from noise.
        kind: ``"l2"`` (default) or ``"cosine"``.
        lr: the learning rate.
        lambda_alpha: the weight of the α-norm prior.
        alpha: the exponent of the α-norm prior.
        lambda_tv: the weight of the total-variation prior.
        beta: the exponent of the total-variation prior.
        jitter: the largest random shift per step, in pixels.
        transforms: transforms to use instead of the jitter; None for the jitter.
        seed: the random seed.
        size: one side or (height, width); None for the model's input size.
        progress: show a progress bar.
    """
    return _run(model, img, layer, lambda l, t: matching(l, t, kind), steps=steps, fft=fft,
                init=init, lr=lr, lambda_alpha=lambda_alpha, alpha=alpha, lambda_tv=lambda_tv,
                beta=beta, transforms=transforms if transforms is not None else _jitter(jitter),
                seed=seed, progress=progress, size=size)


def invert_layers(model: nn.Module, img: torch.Tensor, layers: Sequence[str],
                  **kwargs: Any) -> InversionSweep:
    """:func:`invert` from each of ``layers``, the same settings for all.

    Args:
        model: the network.
        img: the image, [1, C, H, W] in [0, 1].
        layers: the layers to invert from.
        **kwargs: settings of :func:`invert`.
    """
    results = [invert(model, img, layer, **kwargs) for layer in layers]
    return InversionSweep(results[0].original, results)


def caricature(
    model: nn.Module,
    img: torch.Tensor,
    layer: str,
    steps: int = 512,
    *,
    cossim_pow: float = 1.0,
    fft: bool = True,
    lr: float = 0.05,
    lambda_tv: float = 0.0,
    transforms: Sequence | str | None = "distill",
    seed: int = 0,
    size: SizeLike | None = None,
    progress: bool = True,
) -> Inversion:
    """lucid's caricature: an image that the layer sees as even more like ``img`` than ``img``
    itself (maximizes the alignment with Φ(img)), with transformation robustness that keeps
    the image size (the "distill" preset crops its padding back off); ``size`` as in
    :func:`invert`.

    Args:
        model: the network.
        img: the image, [1, C, H, W] in [0, 1].
        layer: the layer.
        steps: optimization steps (default 512).
        cossim_pow: the power of the cosine similarity (default 1).
        fft: use the Fourier parameterization (default True).
        lr: the learning rate.
        lambda_tv: the weight of the total-variation prior (default 0).
        transforms: a preset name or transforms (default ``"distill"``); None for none.
        seed: the random seed.
        size: one side or (height, width); None for the model's input size.
        progress: show a progress bar.
    """
    return _run(model, img, layer, lambda l, t: caricature_objective(l, t, cossim_pow),
                steps=steps, fft=fft, init=None, lr=lr, lambda_alpha=0.0, alpha=6.0,
                lambda_tv=lambda_tv, beta=2.0, transforms=transforms, seed=seed,
                progress=progress, size=size)
