"""How good a dictionary is, measured the way the SAE literature measures it.

On held-out activation vectors (:func:`measure`): the fraction of variance unexplained
(FVU, ``sum ||x - x_hat||^2 / sum ||x - mean||^2``: 0 is a perfect reconstruction, 1 no better
than the mean), the mean L0 (features active per vector) and the dead features (never active
on those vectors). In the model (:func:`splice`, :func:`splice_accuracy`): the layer's output
replaced by its reconstruction, and what that does to the model's predictions.
"""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ...core import layouts as _layouts
from ...core.hooks import frozen, on_output
from ...core.model_info import image_channels, input_size, model_device
from ...core.sizes import SizeLike
from ...errors import FeatvizError
from .. import dataset as _dataset
from ..atlas_store import ActivationStore
from .sae import SparseAutoencoder
from .training import held_out_images, open_store


@dataclass(frozen=True)
class Measures:
    """A dictionary's measures on ``vectors`` activation vectors: ``fvu`` (fraction of
    variance unexplained), ``mse`` (mean squared error per vector, summed over channels, in the
    layer's units), ``l0`` (mean number of active features per vector), ``dead`` (features never
    active on these vectors) of ``n_features``."""

    fvu: float
    mse: float
    l0: float
    dead: int
    n_features: int
    vectors: int

    @property
    def dead_fraction(self) -> float:
        """The dead features' share of the dictionary."""
        return self.dead / self.n_features

    def __str__(self) -> str:
        return (f"FVU {self.fvu:.4f}, mean L0 {self.l0:.1f} of {self.n_features} features, "
                f"{self.dead} dead ({self.dead_fraction:.1%}), on {self.vectors} vectors")


def measure(sae: SparseAutoencoder, data: ActivationStore | str | os.PathLike | np.ndarray
            | torch.Tensor, *, held_out: float | None = 0.1,
            batch_size: int = 4096) -> Measures:
    """FVU, mean L0 and dead features of ``sae`` on the held-out vectors of a store (the
    images :func:`~featviz.methods.dictionary.training.held_out_images` picks for ``held_out``,
    the ones :func:`~featviz.methods.dictionary.train` never trains on), read shard by shard,
    or on an array of vectors [N, d_in].

    Args:
        sae: the dictionary.
        data: an activation store (or its folder), or vectors [N, d_in].
        held_out: the fraction the SAE was trained with (default 0.1, ``train``'s default);
            None measures on every vector of the store. Ignored for an array.
        batch_size: vectors encoded at once.
    """
    sums = _Sums(sae.n_features)
    for x in _vectors(sae, data, held_out, batch_size):
        sums.add(sae, x)
    if sums.n == 0:
        raise FeatvizError("no vectors to measure on: the store's held-out images hold none "
                           "(collect more images, or give held_out=None to use every vector)")
    return sums.measures()


def _vectors(sae: SparseAutoencoder, data, held_out: float | None,
             batch_size: int) -> Iterator[torch.Tensor]:
    """The vectors to measure on, float32 batches [b, d_in]."""
    if isinstance(data, (np.ndarray, torch.Tensor)):
        x = torch.as_tensor(data).float()
        _check_width(sae, x.shape, "the vectors")
        yield from x.reshape(-1, x.shape[-1]).split(batch_size)
        return
    store = open_store(data)
    _check_width(sae, (store.channels,), f"the store in {store.folder}")
    held = None if held_out is None else held_out_images(len(store.images), held_out)
    for shard in store.shards():
        vectors = shard["vectors"]
        if held is not None:
            vectors = vectors[np.isin(shard["image"], held)]
        yield from torch.from_numpy(vectors.astype(np.float32)).split(batch_size)


def _check_width(sae: SparseAutoencoder, shape, what: str) -> None:
    if len(shape) == 0 or shape[-1] != sae.d_in:
        raise FeatvizError(f"{what} have {shape[-1] if shape else 0} channels (shape "
                           f"{list(shape)}), the dictionary reads {sae.d_in}")


class _Sums:
    """Running sums for the measures, in float64."""

    def __init__(self, n_features: int):
        self.n, self.err, self.sq, self.l0 = 0, 0.0, 0.0, 0.0
        self.total: torch.Tensor | None = None
        self.active = torch.zeros(n_features, dtype=torch.bool)

    @torch.no_grad()
    def add(self, sae: SparseAutoencoder, x: torch.Tensor) -> None:
        x_hat, z = sae(x.to(sae.W_dec.device))
        x_hat, z = x_hat.cpu(), z.cpu()
        x64 = x.double()
        self.n += len(x)
        self.err += (x64 - x_hat.double()).pow(2).sum().item()
        self.sq += x64.pow(2).sum().item()
        total = x64.sum(dim=0)
        self.total = total if self.total is None else self.total + total
        fired = z > 0
        self.l0 += fired.sum().item()
        self.active |= fired.any(dim=0)

    def measures(self) -> Measures:
        mean = self.total / self.n
        variance = self.sq - self.n * mean.pow(2).sum().item()  # sum ||x - mean||^2
        if variance > 1e-12 * max(self.sq, 1e-300):
            fvu = self.err / variance
        else:  # every vector the same: FVU is 0 for an exact reconstruction, else undefined
            fvu = 0.0 if self.err == 0 else float("inf")
        dead = int((~self.active).sum())
        return Measures(fvu, self.err / self.n, self.l0 / self.n, dead, len(self.active),
                        self.n)


# -- the splice ------------------------------------------------------------------------------
@contextlib.contextmanager
def splice(model: nn.Module, layer: str, sae: SparseAutoencoder) -> Iterator[nn.Module]:
    """For the body of the ``with``, every forward pass of ``model`` goes on from ``layer``
    with the layer's output replaced by ``sae``'s reconstruction of it: a map [B, C, H, W]
    position by position (channels last, reconstructed, put back), channels-last maps
    [B, H, W, C] and token sequences [B, T, C] vector by vector, except a transformer's
    leading tokens (the class token: the model's declared prefix tokens, where the rest form a
    square grid), which stay as they are: a dictionary is trained on the patch tokens only
    (:mod:`featviz.methods.atlas_store`), and the class token, unlike any patch, is what the
    head reads. Gradients flow through the reconstruction. The hook is removed on exit, also
    when the body raises.

    Args:
        model: the network.
        layer: the layer whose output is replaced (a path or an alias).
        sae: the dictionary; its ``d_in`` must be the layer's channels.
    """
    prefix = _layouts.declared(model).prefix_tokens

    def replace(names: list[str], output: object) -> torch.Tensor:
        return reconstruct(sae, output, names[0], keep=_kept(output, prefix))

    with on_output(model, [layer], replace):
        yield model


def _kept(act: object, prefix: int) -> int:
    """How many leading tokens of ``act`` a splice leaves alone: ``prefix`` for a token
    sequence whose other tokens form a square grid, else none."""
    if not isinstance(act, torch.Tensor) or act.dim() != 3 or prefix <= 0:
        return 0
    rest = act.shape[1] - prefix
    return prefix if rest > 0 and math.isqrt(rest) ** 2 == rest else 0


def reconstruct(sae: SparseAutoencoder, act: object, layer: str = "",
                keep: int = 0) -> torch.Tensor:
    """``sae``'s reconstruction of a layer's output ``act`` in the output's own shape, dtype
    and device: a map [B, C, H, W] (or [B, H, W, C]: the side that is ``d_in``, the channels
    first when both are) or a token sequence [B, T, C], vector by vector; anything else is an
    error naming ``layer`` and the shape.

    Args:
        sae: the dictionary.
        act: the layer's output.
        layer: the layer's name, for errors.
        keep: leading tokens of a token sequence left as they are (a class token).
    """
    if not isinstance(act, torch.Tensor):
        raise FeatvizError(f"layer {layer!r} returns {type(act).__name__}, not a tensor; "
                           "splice a layer whose output is a tensor")
    shape, c = list(act.shape), sae.d_in
    param = sae.W_dec
    if act.dim() == 4 and shape[1] == c:
        x = act.permute(0, 2, 3, 1)
        return _like(_through(sae, x, param).permute(0, 3, 1, 2), act)
    if act.dim() == 3 and shape[-1] == c and keep:
        rest = _through(sae, act[:, keep:], param).to(act.dtype)
        return _like(torch.cat([act[:, :keep], rest], dim=1), act)
    if act.dim() in (3, 4) and shape[-1] == c:
        return _like(_through(sae, act, param), act)
    raise FeatvizError(f"cannot splice the dictionary into layer {layer!r}: its output "
                       f"{shape} is neither a map [B, {c}, H, W] or [B, H, W, {c}] nor a "
                       f"token sequence [B, T, {c}] of the dictionary's {c} channels")


def _like(out: torch.Tensor, act: torch.Tensor) -> torch.Tensor:
    """``out`` in ``act``'s dtype and memory order (the layers after it may compute in another
    order, to other roundings, on a tensor laid out otherwise)."""
    out = out.to(act.dtype)
    if act.is_contiguous():
        return out.contiguous()
    if act.dim() == 4 and act.is_contiguous(memory_format=torch.channels_last):
        return out.contiguous(memory_format=torch.channels_last)
    return out


def _through(sae: SparseAutoencoder, x: torch.Tensor, param: torch.Tensor) -> torch.Tensor:
    """``sae``'s reconstruction of channels-last ``x``, computed on the SAE's device and dtype,
    handed back on ``x``'s device."""
    x_hat, _ = sae(x.to(device=param.device, dtype=param.dtype))
    return x_hat.to(x.device)


@dataclass(frozen=True)
class SpliceAccuracy:
    """What splicing a dictionary into a layer does to a classifier on ``images`` labelled
    photos: top-1 ``accuracy`` without and ``spliced_accuracy`` with it, ``kl`` the mean KL
    divergence of the spliced predictions from the original ones (nats), ``agreement`` how
    often the top-1 class stays the same."""

    accuracy: float
    spliced_accuracy: float
    kl: float
    agreement: float
    images: int

    def __str__(self) -> str:
        return (f"top-1 {self.accuracy:.1%} -> {self.spliced_accuracy:.1%} spliced, "
                f"KL {self.kl:.4f} nats, same top-1 class {self.agreement:.1%}, "
                f"on {self.images} images")


def splice_accuracy(model: nn.Module, layer: str, sae: SparseAutoencoder,
                    images: _dataset.Source, *, size: SizeLike | None = None,
                    batch_size: int = 32, progress: bool = True) -> SpliceAccuracy:
    """Top-1 accuracy of ``model`` on labelled ``images`` with and without ``sae`` spliced into
    ``layer`` (:func:`splice`), the mean KL divergence of the spliced predictions from the
    original and how often the top-1 class is unchanged. The model runs in eval mode.

    Args:
        model: the classifier.
        layer: the layer whose output is replaced by its reconstruction.
        sae: the dictionary.
        images: a folder with a ``labels.tsv`` (a labelled folder), or a dataset of
            ``(image, class index)`` items.
        size: one side or (height, width) of the photos; default the model's input size.
        batch_size: photos per pass.
        progress: show a progress bar.
    """
    from tqdm.auto import tqdm

    source = _dataset.labelled(images)
    size = input_size(model, size)
    batches = _dataset.iter_labelled_batches(source, size, batch_size,
                                             channels=image_channels(model))
    sums = np.zeros(4)  # right, right spliced, summed KL, same top class
    n = 0
    total = len(source) if hasattr(source, "__len__") else None
    with (frozen(model), torch.no_grad(),
          tqdm(total=total, disable=not progress, unit="img", desc="splice") as bar):
        for _, labels, batch in batches:
            target = torch.tensor([_class_of(model, lb) for lb in labels])
            sums += _compare(model, layer, sae, batch.to(model_device(model)), target)
            n += len(labels)
            bar.update(len(labels))
    return SpliceAccuracy(sums[0] / n, sums[1] / n, sums[2] / n, sums[3] / n, n)


def _compare(model: nn.Module, layer: str, sae: SparseAutoencoder, batch: torch.Tensor,
             target: torch.Tensor) -> np.ndarray:
    """(right, right spliced, summed KL, same top class) over one batch."""
    plain = _logits(model(batch)).float().cpu()
    with splice(model, layer, sae):
        spliced = _logits(model(batch)).float().cpu()
    log_p, log_q = F.log_softmax(plain, -1), F.log_softmax(spliced, -1)
    kl = (log_p.exp() * (log_p - log_q)).sum(-1).clamp_min(0).sum()
    top, top_s = plain.argmax(-1), spliced.argmax(-1)
    return np.array([(top == target).sum().item(), (top_s == target).sum().item(), kl.item(),
                     (top == top_s).sum().item()], dtype=np.float64)


def _logits(output: object) -> torch.Tensor:
    logits = getattr(output, "logits", output)
    if not isinstance(logits, torch.Tensor) or logits.dim() != 2:
        raise FeatvizError("splice_accuracy needs a classifier whose output is logits "
                           f"[B, classes], got {type(output).__name__}")
    return logits


def _class_of(model: nn.Module, label: _dataset.Label | None) -> int:
    """The class index of a photo's label; an error when it has none."""
    if label is None:
        raise FeatvizError("splice_accuracy needs the class of every photo: give a folder "
                           "with a labels.tsv or a dataset of (image, class index) items")
    if label.index is not None:
        return label.index
    from ... import models as _models
    return _models.class_index(model, label.name)
