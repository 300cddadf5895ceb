"""Image-quality measures for visualizations: high frequencies, checkerboards, robustness,
and the distance of a reconstruction from its original (PSNR, SSIM).

Used to compare parameterizations and transformation robustness (Olah et al., Distill 2017,
"Feature Visualization": decorrelated Fourier parameters and transformations both fight the
high-frequency "mosaic" patterns; these functions put numbers on that), and to score feature
inversions (:mod:`featviz.inversion`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch

from .hooks import INPUT, LayerTap, frozen
from .model_info import fixed_input_size, model_device
from .objectives import Objective
from .transforms import fitted


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    """Peak signal-to-noise ratio in dB of two images in [0, 1].

    Args:
        a: One image, values in [0, 1].
        b: The other image, same shape.
    """
    mse = float(((a.detach().float() - b.detach().float()) ** 2).mean())
    return float("inf") if mse == 0 else 10 * math.log10(1.0 / mse)


def ssim(a: torch.Tensor, b: torch.Tensor) -> float:
    """Structural similarity (Wang et al. 2004; 11-px Gaussian window, σ 1.5) of two images in
    [0, 1], averaged over pixels and channels.

    Args:
        a: One image [C,H,W] or batch [B,C,H,W] in [0, 1].
        b: The other, same shape.
    """
    import kornia

    a, b = a.detach().float().cpu(), b.detach().float().cpu()
    a, b = (a[None] if a.dim() == 3 else a), (b[None] if b.dim() == 3 else b)
    return float(kornia.metrics.ssim(a, b, 11).mean())


def power_spectrum(img: torch.Tensor) -> torch.Tensor:
    """Centred power spectrum [H, W] of an image [3,H,W]/[1,3,H,W] (or [H,W]), mean removed,
    averaged over colour channels; index (H//2, W//2) is the zero frequency.

    Args:
        img: An image [3,H,W] or [1,3,H,W], or a map [H,W].
    """
    t = img.detach().double()
    if t.dim() == 4:
        t = t[0]
    if t.dim() == 2:
        t = t[None]
    t = t - t.mean(dim=(-2, -1), keepdim=True)
    spec = torch.fft.fftshift(torch.fft.fft2(t).abs() ** 2, dim=(-2, -1))
    return spec.mean(0)


def _radius(h: int, w: int) -> torch.Tensor:
    """Frequency magnitude of each centred FFT bin, in cycles per pixel (Nyquist = 0.5)."""
    fy = torch.fft.fftshift(torch.fft.fftfreq(h, dtype=torch.float64))[:, None]
    fx = torch.fft.fftshift(torch.fft.fftfreq(w, dtype=torch.float64))[None, :]
    return (fx ** 2 + fy ** 2).sqrt()


def high_frequency_share(img: torch.Tensor, cutoff: float = 0.5) -> float:
    """Share of the image's power (mean removed) above ``cutoff`` x the Nyquist frequency.

    Args:
        img: An image (see :func:`power_spectrum`).
        cutoff: The threshold as a fraction of the Nyquist frequency (default 0.5).
    """
    spec = power_spectrum(img)
    total = float(spec.sum())
    if total == 0:
        return 0.0
    return float(spec[_radius(*spec.shape) > cutoff * 0.5].sum()) / total


def saturated_share(img: torch.Tensor, margin: float = 0.02) -> float:
    """Share of the pixels of ``img`` ([C,H,W] or [B,C,H,W] in [0, 1]) with any colour value
    within ``margin`` of 0 or 1: flat black, white or pure-colour areas where the
    parameterization's squashing ran out of range.

    Args:
        img: An image [C,H,W] or batch [B,C,H,W] in [0, 1].
        margin: How close to 0 or 1 a value counts as saturated (default 0.02).
    """
    batch = img if img.dim() == 4 else img[None]
    sat = (batch <= margin) | (batch >= 1 - margin)
    return float(sat.any(dim=1).float().mean())


def checkerboard_energy(img: torch.Tensor, strides: Sequence[int] = (2, 4, 8)) -> float:
    """How much power sits exactly at the frequencies a stride-s grid produces (k/s cycles per
    pixel, k = 1..s-1, in x, y or both), relative to the mean power of the bins around each
    (a 5x5 neighbourhood without the centre). About 1 for images without grid artefacts,
    large for checkerboards.

    Args:
        img: An image (see :func:`power_spectrum`).
        strides: The grid strides whose frequencies to check (default 2, 4 and 8).
    """
    spec = power_spectrum(img)
    h, w = spec.shape
    ratios = []
    for s in strides:
        for i in range(s):
            for j in range(s):
                if i == 0 and j == 0:
                    continue
                y = (h // 2 + round(i * h / s)) % h
                x = (w // 2 + round(j * w / s)) % w
                ys = [(y + d) % h for d in range(-2, 3)]
                xs = [(x + d) % w for d in range(-2, 3)]
                block = spec[ys][:, xs]
                around = (block.sum() - spec[y, x]) / (block.numel() - 1)
                ratios.append(float(spec[y, x] / around.clamp_min(1e-30)))
    return sum(ratios) / len(ratios) if ratios else 0.0


def objective_value(model: torch.nn.Module, objective: Objective, images: torch.Tensor,
                    transform: Callable | None = None,
                    generator: torch.Generator | None = None) -> torch.Tensor:
    """The objective of ``images`` [B,3,H,W] (through ``transform`` if given), per image. A
    model that takes one input size only (a ViT) sees the transformed images fitted to it, as
    in a render.

    Args:
        model: The network.
        objective: The objective to evaluate.
        images: The images, [B,3,H,W].
        transform: Called as ``transform(x, generator)`` before the model; None for none.
        generator: The random generator handed to ``transform``; None for torch's global one.
    """
    return robust_objective(model, objective, images, transform, 1, generator=generator)


def robust_objective(model: torch.nn.Module, objective: Objective, images: torch.Tensor,
                     transform: Callable | None, draws: int = 16, seed: int = 12345,
                     generator: torch.Generator | None = None) -> torch.Tensor:
    """Mean objective per image over ``draws`` random transforms from a seed the render never
    used: how well the result holds up when the model sees it a little differently. The
    model is hooked once for all the draws.

    Args:
        model: The network.
        objective: The objective to evaluate.
        images: The images, [B,3,H,W].
        transform: The random transform, called as ``transform(x, generator)``; None for none.
        draws: How many random transforms to average over (default 16).
        seed: Seed of the transforms' generator.
        generator: A generator to draw from instead of a new one seeded with ``seed``.
    """
    x = images.to(model_device(model))
    gen = generator or torch.Generator(device=images.device).manual_seed(seed)
    fixed = fixed_input_size(model)
    if transform is not None and fixed is not None:
        transform = fitted(transform, fixed)
    total = torch.zeros(len(images))
    with frozen(model), LayerTap(model, objective.layers) as tap, torch.no_grad():
        for _ in range(draws):
            acts = tap(transform(x, gen) if transform is not None else x)
            acts[INPUT] = x
            total += objective(acts).cpu()
    return total / draws


def steps_to_fraction(history: torch.Tensor, steps: Sequence[int], fraction: float = 0.9
                      ) -> list[int | None]:
    """Per image: the first recorded step whose objective reaches ``fraction`` of the final
    one (relative to the first recorded value); None when it never does.

    Args:
        history: Objective values [steps, B], one row per recorded step.
        steps: The step number of each row of ``history``.
        fraction: The share of the way from first to final value to reach (default 0.9).
    """
    out: list[int | None] = []
    for col in history.T.tolist():
        start, end = col[0], col[-1]
        goal = start + fraction * (end - start)
        hit = next((s for s, v in zip(steps, col, strict=True)
                    if (v >= goal if end >= start else v <= goal)), None)
        out.append(hit)
    return out
