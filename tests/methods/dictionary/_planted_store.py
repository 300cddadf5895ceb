"""Hand-written activation stores and dictionaries for the dictionary-feature tests: the
store is the format :func:`featviz.atlas_store.collect` writes (a manifest and npz shards),
with planted vectors, so what a search must find is known exactly."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from featviz.methods.atlas_store import ActivationStore
from featviz.methods.dictionary import SparseAutoencoder


def write_store(folder: Path, maps: np.ndarray, names: Sequence[str] | None = None,
                labels: Sequence[str] | None = None, per_shard: int = 2, layer: str = "conv2",
                size: int = 32) -> ActivationStore:
    """A store of ``maps`` [images, H, W, C] (every position kept), ``per_shard`` images a
    shard; ``labels`` are class names ('' for none), their ids in order of appearance."""
    n, h, w, c = maps.shape
    names = list(names) if names is not None else [f"img{i}.png" for i in range(n)]
    labels = list(labels) if labels is not None else [""] * n
    ids_of = {lb: i for i, lb in enumerate(dict.fromkeys(lb for lb in labels if lb))}
    ids = [ids_of.get(lb, -1) for lb in labels]
    folder.mkdir(parents=True, exist_ok=True)
    shards = []
    for s, first in enumerate(range(0, n, per_shard)):
        part = range(first, min(first + per_shard, n))
        yy, xx = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
        arrays = {
            "vectors": np.concatenate([maps[i].reshape(-1, c) for i in part]).astype(np.float16),
            "image": np.repeat(np.array(part, dtype=np.int32), h * w),
            "y": np.tile(yy.ravel(), len(part)).astype(np.int16),
            "x": np.tile(xx.ravel(), len(part)).astype(np.int16),
            "label": np.repeat(np.array([ids[i] for i in part], dtype=np.int32), h * w),
        }
        name = f"shard_{s:05d}.npz"
        np.savez(folder / name, **arrays)
        shards.append({"file": name, "count": len(arrays["vectors"]), "images": len(part)})
    manifest = {"layer": layer, "size": size, "positions": "all", "seed": 0, "attribute": [],
                "channels": c, "map_shape": [h, w], "images": names, "labels": labels,
                "label_ids": ids, "shards": shards, "done": n}
    (folder / "manifest.json").write_text(json.dumps(manifest))
    return ActivationStore.open(folder)


def identity_sae(d_in: int, n: int, threshold: float = 0.0, k: int | None = None,
                 layer: str = "conv2") -> SparseAutoencoder:
    """A dictionary whose feature ``i`` reads channel ``i`` less ``threshold``."""
    sae = SparseAutoencoder(d_in, n, k=k, layer=layer)
    with torch.no_grad():
        sae.W_enc.zero_()
        sae.W_enc[:n, :n] = torch.eye(n)
        sae.b_enc.fill_(-threshold)
        sae.W_dec.copy_(sae.W_enc.T)
    return sae
