"""The band (colour) correlation of a user's own images: the matrix that decorrelates a
parameterization of C-channel images, as ImageNet's colour correlation does for RGB photos.

Measured like captum's dataset KLT (``dataset_klt_matrix``) and lucid's
``color_correlation_svd_sqrt``: the covariance of the pixels' channel vectors over all images,
its square root ``U sqrt(S)`` from the SVD ``cov = U S U^T`` (so that ``M M^T = cov``), divided
by its largest column norm so that no channel is amplified."""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from pathlib import Path

import torch

from ...errors import FeatvizError
from ..files import read_tensor

# files a folder of bands may hold besides image files: arrays [C,H,W] of any channel count
ARRAY_SUFFIXES = (".npy", ".pt", ".pth")
# added to the eigenvalues, as captum does, so a band without variance keeps the matrix
# invertible (a parameterization started from an image inverts it)
EPSILON = 1e-10

Images = torch.Tensor | str | os.PathLike | Iterable[torch.Tensor]


def band_correlation(images: Images, normalize: bool = True) -> torch.Tensor:
    """The square root [C, C] of the band covariance of ``images``: a tensor [N,C,H,W] (or
    [C,H,W]), an iterable of [C,H,W] tensors, or a folder of image files (RGB) and ``.npy`` /
    ``.pt`` arrays [C,H,W] (any C), in [0, 1]. Pass it as ``param.image(size, channels=C,
    decorrelate=matrix)``. ``normalize`` divides it by its largest column norm (lucid's
    convention); without it ``M @ M.T`` is the covariance itself.

    Args:
        images: A tensor [N,C,H,W] or [C,H,W], an iterable of [C,H,W], or a folder.
        normalize: Divide by the largest column norm (default True).
    """
    return covariance_sqrt(band_covariance(images), normalize)


def band_covariance(images: Images) -> torch.Tensor:
    """The covariance [C, C] of the pixels' channel vectors over all of ``images`` (see
    :func:`band_correlation`), accumulated in float64 one batch at a time.

    Args:
        images: As in :func:`band_correlation`.
    """
    total = square = None
    n = 0
    for batch in _batches(images):
        x = batch.double().transpose(0, 1).reshape(batch.shape[1], -1)  # [C, pixels]
        if total is None:
            total, square = torch.zeros(x.shape[0], dtype=x.dtype), torch.zeros(
                x.shape[0], x.shape[0], dtype=x.dtype)
        elif x.shape[0] != total.shape[0]:
            raise FeatvizError(f"images of {x.shape[0]} and {total.shape[0]} channels mixed; "
                               "a band correlation needs one channel count")
        total += x.sum(1)
        square += x @ x.T
        n += x.shape[1]
    if n < 2:
        raise FeatvizError("a band correlation needs images with at least two pixels")
    mean = total / n
    return (square - n * mean[:, None] * mean[None, :]) / (n - 1)


def covariance_sqrt(cov: torch.Tensor, normalize: bool = True) -> torch.Tensor:
    """``U sqrt(S)`` of the SVD of the covariance ``cov`` ([C, C], float32), each column's sign
    chosen so that its entries sum to a non-negative number (the brightness column positive,
    as lucid's matrix has it); ``normalize`` divides by the largest column norm.

    Args:
        cov: A covariance matrix [C, C].
        normalize: Divide by the largest column norm (default True).
    """
    u, s, _ = torch.linalg.svd(cov.double())
    m = u * (s.clamp_min(0) + EPSILON).sqrt()
    m = m * torch.where(m.sum(0) < 0, -1.0, 1.0)
    if normalize:
        m = m / m.norm(dim=0).max()
    return m.float()


def _batches(images: Images) -> Iterator[torch.Tensor]:
    """[n,C,H,W] batches of ``images`` (a tensor, an iterable of tensors or a folder)."""
    if torch.is_tensor(images):
        t = images[None] if images.dim() == 3 else images
        if t.dim() != 4:
            raise FeatvizError(f"images must be [N,C,H,W] or [C,H,W], got {list(t.shape)}")
        yield from t.split(64)
        return
    items = _folder(Path(images)) if isinstance(images, (str, os.PathLike)) else images
    for i, item in enumerate(items):
        if not torch.is_tensor(item) or item.dim() not in (3, 4):
            raise FeatvizError(f"item {i} of the images is not an image tensor [C,H,W]")
        yield item[None] if item.dim() == 3 else item


def _folder(folder: Path) -> Iterator[torch.Tensor]:
    """The images of ``folder`` one by one: image files as RGB, arrays as they are."""
    from .. import images as _images

    if not folder.is_dir():
        raise FeatvizError(f"image folder not found: {folder}")
    paths = sorted(p for p in folder.iterdir()
                   if p.suffix.lower() in ARRAY_SUFFIXES + _images.IMAGE_SUFFIXES)
    if not paths:
        raise FeatvizError(f"no image files or arrays in {folder}")
    for p in paths:
        yield (read_tensor(p, "image array") if p.suffix.lower() in ARRAY_SUFFIXES
               else _images.load(p))
