"""Classic dictionary learning for small layers: scikit-learn's NMF or mini-batch dictionary
learning on a bounded sample of a store's training vectors, handed back as a
:class:`~featviz.methods.dictionary.SparseAutoencoder` so that everything that reads one
(measures, the splice, feature pages) reads it too.

The learned dictionary becomes the decoder (unit rows). scikit-learn finds each vector's code
by an optimization (NMF's coordinate-descent updates, or a Lasso with non-negative codes); the
SAE instead encodes with the decoder's tied transpose, a ReLU and a TopK
(``z = TopK(ReLU((x / scale) @ W_dec.T + b_enc))``): one matrix product that approximates that
sparse code, well where the dictionary's directions are far from alike, worse where they
overlap (NMF's non-negative directions always do). ``b_enc`` is set so that every feature's
mean pre-activation on the fitted vectors is the mean of scikit-learn's code for it, which
takes off the mean of what the other directions add to a feature's tied value (without it a
tied NMF encoder can reconstruct worse than the mean does). Training a TopK SAE
(:func:`~featviz.methods.dictionary.train`) learns the encoder instead.
"""

from __future__ import annotations

import importlib
import os
import warnings
from types import ModuleType

import numpy as np
import torch

from ...errors import FeatvizError
from ..atlas_store import ActivationStore
from .sae import SparseAutoencoder
from .training import held_out_images, open_store

METHODS = ("nmf", "dictionary")


def fit_classic(store: ActivationStore | str | os.PathLike, n_features: int,
                method: str = "nmf", *, k: int = 32, max_vectors: int = 20000,
                held_out: float = 0.1, seed: int = 0) -> SparseAutoencoder:
    """A dictionary of ``n_features`` directions learned by scikit-learn from at most
    ``max_vectors`` training vectors of ``store`` (drawn with ``seed``; the held-out images
    left out, as :func:`~featviz.methods.dictionary.train` leaves them), divided by their mean
    norm (the SAE's ``scale``). ``method="nmf"`` (:class:`sklearn.decomposition.NMF`, for
    layers with no negative values: after a ReLU) or ``"dictionary"``
    (:class:`sklearn.decomposition.MiniBatchDictionaryLearning`, non-negative codes). The
    SAE's decoder is the dictionary with unit rows, its encoder their tied transpose with
    TopK ``k`` (see the module for how that approximates scikit-learn's own coding).

    Args:
        store: the activation store (or its folder).
        n_features: the dictionary's size.
        method: ``"nmf"`` or ``"dictionary"``.
        k: features active per vector in the SAE's encoder; at most ``n_features``.
        max_vectors: at most this many vectors are fitted on (both methods hold them all).
        held_out: the share of the store's images left out (for measuring on).
        seed: seeds the sample and scikit-learn's initialisation.
    """
    if method not in METHODS:
        raise FeatvizError(f"method={method!r} is not one of {', '.join(METHODS)}")
    if n_features < 1 or not 1 <= k <= n_features:
        raise FeatvizError(f"k={k} must be between 1 and n_features={n_features} "
                           "(n_features at least 1)")
    if max_vectors < 1:
        raise FeatvizError(f"max_vectors={max_vectors} must be at least 1")
    decomposition = _decomposition()
    store = open_store(store)
    x = sample(store, max_vectors, held_out, seed)
    if method == "nmf" and x.min() < 0:
        raise FeatvizError(f"NMF needs vectors with no negative values, and layer "
                           f"{store.layer!r} has some (down to {x.min():.4g}); use "
                           "method='dictionary', or a layer after a ReLU")
    scale = float(np.linalg.norm(x, axis=1).mean())
    if not scale > 0:
        raise FeatvizError(f"every sampled vector of {store.folder} is zero")
    atoms, codes = _fit(decomposition, method, x / scale, n_features, seed)
    return _as_sae(atoms, codes, x, k, scale, store.layer)


def _decomposition() -> ModuleType:
    """``sklearn.decomposition``, or an error that says how to install it."""
    try:
        return importlib.import_module("sklearn.decomposition")
    except ImportError as err:
        raise FeatvizError("classic dictionaries (fit_classic) need scikit-learn, which is "
                           "not installed: pip install featviz[groups] (or pip install "
                           "scikit-learn)") from err


def sample(store: ActivationStore, max_vectors: int, held_out: float, seed: int) -> np.ndarray:
    """At most ``max_vectors`` training vectors of ``store`` (none of the held-out images),
    drawn without replacement with ``seed``, float32 [m, C] in the store's order.

    Args:
        store: the activation store.
        max_vectors: at most this many.
        held_out: the share of the store's images left out.
        seed: seeds the draw.
    """
    held = held_out_images(len(store.images), held_out)
    rows = np.flatnonzero(~np.isin(store.column("image"), held))
    if len(rows) == 0:
        raise FeatvizError(f"the store in {store.folder} has no vectors left after holding out "
                           f"{len(held)} of its {len(store.images)} images")
    if len(rows) > max_vectors:
        rows = np.sort(np.random.default_rng(seed).choice(rows, max_vectors, replace=False))
    return store.vectors(rows)


def _fit(decomposition: ModuleType, method: str, x: np.ndarray, n: int,
         seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The dictionary's atoms [n, C] (rows) that scikit-learn learns from ``x``, and its
    codes of ``x`` [m, n]."""
    if method == "nmf":
        model = decomposition.NMF(n_components=n, init="nndsvda", max_iter=400,
                                  random_state=seed)
    else:  # coordinate descent: the coding that takes non-negative codes
        model = decomposition.MiniBatchDictionaryLearning(
            n_components=n, alpha=0.1, batch_size=256, max_iter=50, fit_algorithm="cd",
            transform_algorithm="lasso_cd", transform_alpha=0.1, positive_code=True,
            random_state=seed)
    with warnings.catch_warnings():
        # each mini-batch's Lasso stops at its iteration limit, warning every time: noise here
        warnings.simplefilter("ignore", category=_convergence_warning())
        codes = model.fit_transform(x)
    return np.asarray(model.components_, dtype=np.float64), np.asarray(codes, np.float64)


def _convergence_warning() -> type[Warning]:
    from sklearn.exceptions import ConvergenceWarning
    return ConvergenceWarning


def _as_sae(atoms: np.ndarray, codes: np.ndarray, x: np.ndarray, k: int, scale: float,
            layer: str) -> SparseAutoencoder:
    """A tied SAE whose decoder rows are ``atoms`` made unit length (a row of zeros, an atom
    scikit-learn left unused, stays zero: that feature never fires), and whose encoder bias
    makes each feature's mean pre-activation on ``x`` (divided by ``scale``) the mean of
    scikit-learn's code for it: it takes off the mean of what the other atoms add to a tied
    encoder's value (``codes`` [m, n] scikit-learn's codes of ``x``)."""
    norms = np.linalg.norm(atoms, axis=1)
    unit = np.where(norms[:, None] > 0, atoms / np.maximum(norms, 1e-12)[:, None], 0.0)
    bias = codes.mean(axis=0) * norms - (x.mean(axis=0) / scale) @ unit.T
    rows = torch.from_numpy(unit).float()
    sae = SparseAutoencoder(rows.shape[1], rows.shape[0], k, scale, layer)
    with torch.no_grad():
        sae.W_dec.copy_(rows)
        sae.W_enc.copy_(rows.T)
        sae.b_enc.copy_(torch.from_numpy(np.where(norms > 0, bias, 0.0)).float())
    return sae
