"""A sparse autoencoder over one layer's activation vectors: the dictionary's features.

The layout is the one most SAE code shares (SAELens, ``saev``, OpenAI's TopK release):
``W_enc`` [d_in, n], ``b_enc`` [n], ``W_dec`` [n, d_in], ``b_dec`` [d_in]. A vector ``x`` is
encoded as ``z = f(((x / scale) - b_dec) @ W_enc + b_enc)`` and decoded as
``x_hat = (z @ W_dec + b_dec) * scale``, where ``f`` keeps the ``k`` largest values after a
ReLU (a TopK SAE, Gao et al. 2024, "Scaling and evaluating sparse autoencoders") or, with
``k=None``, all positive ones (the ReLU SAE most published dictionaries are). ``scale`` is one
number that brings the layer's vectors to unit mean norm, so that one learning rate serves
layers of any magnitude (Gao et al. normalize the same way); a dictionary trained elsewhere
has ``scale=1``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

from ...core.files import write_atomic
from ...errors import FeatvizError

# the key names other projects give the four tensors, mapped to ours (SAELens and most
# releases already use ours; some keep nn.Linear modules)
_ALIASES = {
    "W_enc": ("W_enc", "w_enc", "encoder.weight.T"),
    "b_enc": ("b_enc", "encoder.bias"),
    "W_dec": ("W_dec", "w_dec", "decoder.weight.T"),
    "b_dec": ("b_dec", "decoder.bias", "pre_bias"),
}


class SparseAutoencoder(nn.Module):
    """A dictionary of ``n_features`` directions for vectors of ``d_in`` numbers.

    Args:
        d_in: the length of one activation vector (the layer's channels).
        n_features: the dictionary's size.
        k: how many features may be active per vector (TopK); None for a ReLU SAE.
        scale: the number the vectors are divided by before encoding (see the module).
        layer: the layer it was trained on, recorded for pages and objectives.
    """

    def __init__(self, d_in: int, n_features: int, k: int | None = 32, scale: float = 1.0,
                 layer: str = ""):
        super().__init__()
        _check_sizes(d_in, n_features, k)
        self.k = k
        self.layer = layer
        self.W_enc = nn.Parameter(torch.zeros(d_in, n_features))
        self.b_enc = nn.Parameter(torch.zeros(n_features))
        self.W_dec = nn.Parameter(torch.zeros(n_features, d_in))
        self.b_dec = nn.Parameter(torch.zeros(d_in))
        self.register_buffer("scale", torch.tensor(float(scale)))

    d_in = property(lambda self: self.W_enc.shape[0])
    n_features = property(lambda self: self.W_enc.shape[1])

    def pre_activation(self, x: torch.Tensor) -> torch.Tensor:
        """Every feature's value before the sparsity [..., n]: what a feature objective
        maximizes (it has a gradient where the TopK would cut it off).

        Args:
            x: activation vectors [..., d_in].
        """
        return (x / self.scale - self.b_dec) @ self.W_enc + self.b_enc

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """The sparse code [..., n]: ReLU, then only the ``k`` largest kept (all for k=None).

        Args:
            x: activation vectors [..., d_in].
        """
        z = torch.relu(self.pre_activation(x))
        if self.k is None or self.k >= z.shape[-1]:
            return z
        top = z.topk(self.k, dim=-1)
        return torch.zeros_like(z).scatter(-1, top.indices, top.values)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """The reconstruction [..., d_in] of codes ``z``, in the layer's own units.

        Args:
            z: codes [..., n].
        """
        return (z @ self.W_dec + self.b_dec) * self.scale

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(reconstruction, code)`` of ``x`` [..., d_in].

        Args:
            x: activation vectors [..., d_in].
        """
        z = self.encode(x)
        return self.decode(z), z

    def directions(self) -> torch.Tensor:
        """The decoder's rows as unit vectors [n, d_in]: each feature's direction in the
        layer's activation space (what a direction render of the feature draws)."""
        w = self.W_dec.detach()
        return w / w.norm(dim=1, keepdim=True).clamp_min(1e-8)

    @torch.no_grad()
    def normalize_decoder(self) -> None:
        """Rescale every decoder row to unit norm (the constraint that stops the sparsity
        from being cheated by tiny codes times large rows), moving the scale into the
        encoder so the reconstruction is unchanged."""
        norm = self.W_dec.norm(dim=1).clamp_min(1e-8)
        self.W_dec /= norm[:, None]
        self.W_enc *= norm[None, :]
        self.b_enc *= norm

    def config(self) -> dict:
        """What :meth:`load` needs besides the tensors."""
        return {"d_in": self.d_in, "n_features": self.n_features, "k": self.k,
                "scale": float(self.scale), "layer": self.layer}

    def save(self, path: str | os.PathLike) -> Path:
        """Write the dictionary (tensors and config) to ``path`` atomically.

        Args:
            path: the file to write (``.pt``).
        """
        blob = {"config": self.config(),
                "state": {k: v.detach().cpu() for k, v in self.state_dict().items()}}
        return write_atomic(path, lambda tmp: torch.save(blob, tmp))

    @classmethod
    def load(cls, path: str | os.PathLike) -> SparseAutoencoder:
        """A dictionary written by :meth:`save`, or a bare state_dict of the four tensors
        (see :meth:`from_state_dict`).

        Args:
            path: the file to read.
        """
        path = Path(path)
        if not path.is_file():
            raise FeatvizError(f"no dictionary file at {path}")
        blob = torch.load(path, map_location="cpu", weights_only=True)
        if isinstance(blob, dict) and "config" in blob and "state" in blob:
            cfg = blob["config"]
            sae = cls(cfg["d_in"], cfg["n_features"], cfg["k"], cfg["scale"], cfg["layer"])
            sae.load_state_dict(blob["state"])
            return sae
        return cls.from_state_dict(blob)

    @classmethod
    def from_state_dict(cls, state: Mapping[str, torch.Tensor], k: int | None = None,
                        layer: str = "", scale: float = 1.0) -> SparseAutoencoder:
        """A dictionary trained elsewhere, from its ``W_enc, b_enc, W_dec, b_dec`` (or
        ``encoder.weight``/``encoder.bias``/``decoder.weight``/``decoder.bias`` of
        ``nn.Linear`` modules); extra keys (thresholds, statistics) are ignored.

        Args:
            state: the tensors by name.
            k: keep only the ``k`` largest features per vector; None keeps every positive one.
            layer: the layer it reads, for pages and objectives.
            scale: what its inputs were divided by in training (1 when they were not).
        """
        found = {ours: _lookup(state, ours) for ours in _ALIASES}
        w_enc, w_dec = found["W_enc"], found["W_dec"]
        if w_enc.dim() != 2 or w_dec.shape != w_enc.T.shape:
            raise FeatvizError(f"W_enc {tuple(w_enc.shape)} and W_dec {tuple(w_dec.shape)} "
                               "must be [d_in, n] and [n, d_in]")
        sae = cls(w_enc.shape[0], w_enc.shape[1], k, scale, layer)
        with torch.no_grad():
            for name, value in found.items():
                getattr(sae, name).copy_(value.float())
        return sae

    def __repr__(self) -> str:
        sparsity = f"top-{self.k}" if self.k is not None else "ReLU"
        at = f" at {self.layer!r}" if self.layer else ""
        return f"SparseAutoencoder({self.n_features} features of {self.d_in}{at}, {sparsity})"


def _check_sizes(d_in: int, n_features: int, k: int | None) -> None:
    if d_in < 1 or n_features < 1:
        raise FeatvizError(f"a dictionary needs d_in >= 1 and n_features >= 1, got "
                           f"{d_in} and {n_features}")
    if k is not None and not 1 <= k <= n_features:
        raise FeatvizError(f"k={k} must be between 1 and the dictionary size {n_features} "
                           f"(k is how many of the {n_features} features may be active at once)")


def _lookup(state: Mapping[str, torch.Tensor], ours: str) -> torch.Tensor:
    """One of the four tensors under any of its known names (``.T``: stored transposed)."""
    for alias in _ALIASES[ours]:
        key = alias.removesuffix(".T")
        if key in state:
            value = torch.as_tensor(state[key])
            return value.T if alias.endswith(".T") else value
    raise FeatvizError(f"the state_dict has no {ours} (looked for {', '.join(_ALIASES[ours])}; "
                       f"it has {', '.join(sorted(state)) or 'nothing'})")
