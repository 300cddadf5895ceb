"""Toys for the SAE training, measure and classic tests: vectors made of known sparse
directions, written as a store in the shard and manifest format that
:func:`featviz.methods.atlas_store.collect` writes, and a one-block vision transformer."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from torch import nn

import featviz
from featviz.methods.atlas_store import ActivationStore


def sparse_vectors(n: int, d: int = 32, m: int = 64, active: tuple[int, int] = (3, 4),
                   seed: int = 0, positive: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """``n`` vectors [n, d], each a sum of ``active`` (a range, both ends included) of ``m``
    random unit directions with weights in [0.5, 1.5]; and the directions [m, d] (with no
    negative entries when ``positive``)."""
    rng = np.random.default_rng(seed)
    directions = rng.standard_normal((m, d))
    if positive:  # sparse non-negative directions: a few channels each
        directions = np.abs(directions) * (rng.random((m, d)) < 0.25)
        directions[np.arange(m), rng.integers(0, d, m)] += 1.0
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)
    codes = np.zeros((n, m))
    for row in codes:
        chosen = rng.choice(m, rng.integers(active[0], active[1] + 1), replace=False)
        row[chosen] = rng.uniform(0.5, 1.5, len(chosen))
    return codes @ directions, directions


def write_vectors(folder: Path, vectors: np.ndarray, per_image: int = 16,
                  images_per_shard: int = 8, layer: str = "toy") -> ActivationStore:
    """``vectors`` [N, C] as a store of ``N // per_image`` images (a square grid of positions
    each, ``per_image`` a square), ``images_per_shard`` images to a shard, image i of class
    i % 3."""
    folder.mkdir(parents=True, exist_ok=True)
    n_images = len(vectors) // per_image
    side = int(round(per_image ** 0.5))
    shards = []
    for s, first in enumerate(range(0, n_images, images_per_shard)):
        ids = np.arange(first, min(first + images_per_shard, n_images))
        image = np.repeat(ids, per_image).astype(np.int32)
        where = np.tile(np.arange(per_image), len(ids))
        rows = vectors[first * per_image:(ids[-1] + 1) * per_image]
        name = f"shard_{s:05d}.npz"
        np.savez(folder / name, vectors=rows.astype(np.float16), image=image,
                 y=(where // side).astype(np.int16), x=(where % side).astype(np.int16),
                 label=(image % 3).astype(np.int32))
        shards.append({"file": name, "count": len(rows), "images": len(ids)})
    manifest = {"layer": layer, "size": 32, "positions": "all", "seed": 0, "attribute": [],
                "attribute_names": [], "channels": int(vectors.shape[1]),
                "map_shape": [side, side], "images": [f"#{i}" for i in range(n_images)],
                "labels": [str(i % 3) for i in range(n_images)],
                "label_ids": [i % 3 for i in range(n_images)], "shards": shards,
                "done": n_images}
    (folder / "manifest.json").write_text(json.dumps(manifest))
    return ActivationStore.open(folder)


class TinyViT(nn.Module):
    """8-px patches of a 32-px image (a 4 x 4 grid) and a class token, one transformer block
    (``block``, its output [B, 17, 16]) and a linear head on the class token (``head``)."""

    def __init__(self, dim: int = 16, classes: int = 5):
        super().__init__()
        self.patch = nn.Conv2d(3, dim, 8, stride=8)
        self.cls = nn.Parameter(torch.randn(1, 1, dim))
        self.pos = nn.Parameter(0.1 * torch.randn(1, 17, dim))
        self.block = nn.TransformerEncoderLayer(dim, 2, 32, dropout=0.0, batch_first=True)
        self.head = nn.Linear(dim, classes)

    def forward(self, x):
        t = self.patch(x).flatten(2).transpose(1, 2)
        t = torch.cat([self.cls.expand(len(t), -1, -1), t], dim=1) + self.pos
        return self.head(self.block(t)[:, 0])


def tiny_vit(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return featviz.models.wrap(TinyViT(), input_size=32, name="tiny-vit")
