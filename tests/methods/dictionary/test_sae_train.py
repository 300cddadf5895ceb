"""Training a TopK sparse autoencoder on a store: it recovers planted sparse directions, starts
the way Gao et al. 2024 start, never sees the held-out images, resumes to the very SAE of an
uninterrupted run, refuses other settings and bad inputs by name; and a store of a
transformer block's patch tokens."""

from __future__ import annotations

import importlib
import json

import numpy as np
import pytest
import torch
from _sae_toys import sparse_vectors, tiny_vit, write_vectors

from featviz.core.hooks import frozen, hook_count, on_output
from featviz.errors import FeatvizError
from featviz.methods import atlas_store
from featviz.methods.dictionary import SparseAutoencoder, held_out_images, measure, train

# the module, not the function the package exports under the same name
train_module = importlib.import_module("featviz.methods.dictionary.training")


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    """One thread: faster on this busy 2-core box, and the same sums run to run."""


def test_held_out_images_are_a_fixed_evenly_spaced_share():
    held = held_out_images(100, 0.1)
    assert held.tolist() == [5, 15, 25, 35, 45, 55, 65, 75, 85, 95]
    assert held_out_images(7, 0.01).tolist() == [3]  # at least one image when asked for some
    assert len(held_out_images(100, 0.0)) == 0
    with pytest.raises(FeatvizError, match=r"held_out=1\.0"):
        held_out_images(10, 1.0)


def test_the_start_is_the_papers(tmp_path):
    x, _ = sparse_vectors(640, seed=1)
    x = x * 7.0 + 3.0  # far from unit norm and from the origin
    store = write_vectors(tmp_path / "s", x)
    held = held_out_images(len(store.images), 0.1)
    settings = {"n_features": 48, "k": 4, "seed": 3}
    sae = train_module.initial_sae(store, held, settings)
    kept = store.vectors()[~np.isin(store.column("image"), held)].astype(np.float64)
    assert float(sae.scale) == pytest.approx(np.linalg.norm(kept, axis=1).mean(), rel=1e-6)
    assert torch.allclose(sae.W_dec.norm(dim=1), torch.ones(48), atol=1e-6)
    assert torch.equal(sae.W_enc, sae.W_dec.T) and not sae.b_enc.any()
    # b_dec is the geometric median: no point nearby has a smaller summed distance
    median = sae.b_dec.detach().double().numpy() * float(sae.scale)

    def spread(c):
        return np.linalg.norm(kept - c, axis=1).sum()

    assert spread(median) < spread(kept.mean(0))
    assert all(spread(median) <= spread(median + 0.05 * d) for d in np.eye(32))
    again = train_module.initial_sae(store, held, settings)
    assert torch.equal(again.W_dec, sae.W_dec) and torch.equal(again.b_dec, sae.b_dec)
    other = train_module.initial_sae(store, held, {**settings, "seed": 4})
    assert not torch.equal(other.W_dec, sae.W_dec)


def test_geometric_median_of_points_on_a_line_is_their_median():
    points = np.array([[0.0, 0], [1, 0], [2, 0], [3, 0], [100, 0]])
    assert np.allclose(train_module.geometric_median(points), [2, 0], atol=1e-3)


def test_training_recovers_the_planted_directions(tmp_path):
    """64 unit directions in 32-d, every vector a non-negative mix of 3 or 4 of them: the best
    decoder row of almost every direction points its way (a random row would not: the best
    of 128 random rows has a cosine near 0.5)."""
    x, directions = sparse_vectors(8192, d=32, m=64, active=(3, 4))
    store = write_vectors(tmp_path / "s", x, images_per_shard=64)  # 8 shards
    result = train(store, tmp_path / "sae", n_features=128, k=4, epochs=6, batch_size=256,
                   lr=0.01, progress=False)
    best = (torch.tensor(directions).float() @ result.sae.directions().T).max(dim=1).values
    assert (best > 0.9).float().mean() >= 0.9
    assert torch.allclose(result.sae.W_dec.norm(dim=1), torch.ones(128), atol=1e-5)
    held = measure(result.sae, store)
    assert held.fvu < 0.15 and held.l0 <= 4
    assert len(result.history) == 6 * 8 and result.history[-1]["mse"] < result.history[0]["mse"]
    assert result.finished and result.path == tmp_path / "sae" / "sae.pt"
    loaded = SparseAutoencoder.load(result.path)
    assert torch.equal(loaded.W_enc, result.sae.W_enc) and loaded.k == 4
    assert loaded.layer == "toy" and float(loaded.scale) == float(result.sae.scale)


def test_held_out_images_are_never_trained_on(tmp_path):
    x, _ = sparse_vectors(1024)
    held = held_out_images(1024 // 16, 0.1)
    image = np.repeat(np.arange(64), 16)
    x[np.isin(image, held)] = np.nan  # one held-out vector in training would spoil it all
    store = write_vectors(tmp_path / "s", x)
    result = train(store, tmp_path / "sae", n_features=64, k=4, epochs=1, batch_size=128,
                   progress=False)
    assert all(torch.isfinite(p).all() for p in result.sae.state_dict().values())
    assert np.isfinite([h["mse"] for h in result.history]).all()
    assert result.held_out.tolist() == held.tolist()


def _state(sae: SparseAutoencoder) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in sae.state_dict().items()}


def test_a_resumed_run_ends_with_the_sae_of_an_uninterrupted_one(tmp_path, monkeypatch):
    x, _ = sparse_vectors(2048)
    store = write_vectors(tmp_path / "s", x, images_per_shard=16)  # 8 shards
    # twice the planted directions' count: features die, and the counters carry over
    kw = dict(n_features=128, k=4, epochs=2, batch_size=64, dead_after=128, progress=False)
    whole = train(store, tmp_path / "whole", **kw)
    first = train(store, tmp_path / "parts", stop_after=3, **kw)
    assert not first.finished and len(first.history) == 3
    assert not (tmp_path / "parts" / "sae.pt").exists()
    second = train(store, tmp_path / "parts", stop_after=7, **kw)  # across the epoch's end
    assert len(second.history) == 10 and second.history[:3] == first.history
    last = train(store, tmp_path / "parts", **kw)
    assert last.finished and len(last.history) == 16
    for name, value in _state(whole.sae).items():
        assert torch.equal(value, _state(last.sae)[name]), name
    assert last.history == whole.history
    # AuxK ran, and features were dead where the run stopped: the counters mattered
    assert all(h["aux"] > 0 for h in whole.history[1:])
    assert whole.history[2]["dead"] > 0 and whole.history[9]["dead"] > 0
    assert not list((tmp_path / "parts").glob(".*.tmp"))  # every write landed whole

    def no_training(*args, **kw):
        raise AssertionError("a finished folder must not train again")

    monkeypatch.setattr(train_module, "_Run", no_training)
    done = train(store, tmp_path / "parts", **kw)
    assert done.finished and torch.equal(done.sae.W_dec, whole.sae.W_dec)
    assert done.history == whole.history


def test_other_settings_on_a_folder_are_refused_by_name(tmp_path):
    x, _ = sparse_vectors(512)
    store = write_vectors(tmp_path / "s", x)
    kw = dict(n_features=64, k=4, epochs=2, batch_size=64, progress=False)
    train(store, tmp_path / "sae", stop_after=1, **kw)
    with pytest.raises(FeatvizError, match=r"k=4 there, 8 here") as err:
        train(store, tmp_path / "sae", **{**kw, "k": 8})
    assert "n_features" not in str(err.value)
    with pytest.raises(FeatvizError, match=r"lr=.* there, 0\.5 here"):
        train(store, tmp_path / "sae", lr=0.5, **kw)
    with pytest.raises(FeatvizError, match=r"epochs=2 there, 3 here"):
        train(store, tmp_path / "sae", **{**kw, "epochs": 3})


def test_bad_inputs_are_clear_errors(tmp_path):
    x, _ = sparse_vectors(256)
    store = write_vectors(tmp_path / "s", x)
    with pytest.raises(FeatvizError, match=r"k=32 .*n_features=16"):
        train(store, tmp_path / "a", n_features=16, k=32, progress=False)
    with pytest.raises(FeatvizError, match=r"aux_k=99 .*n_features=64"):
        train(store, tmp_path / "a", n_features=64, k=4, aux_k=99, progress=False)
    (tmp_path / "empty").mkdir()
    with pytest.raises(FeatvizError, match=r"empty holds no activation store"):
        train(tmp_path / "empty", tmp_path / "b", progress=False)
    manifest = json.loads((tmp_path / "s" / "manifest.json").read_text())
    (tmp_path / "none").mkdir()
    (tmp_path / "none" / "manifest.json").write_text(json.dumps(
        {**manifest, "shards": [], "images": [], "labels": [], "channels": None, "done": 0}))
    with pytest.raises(FeatvizError, match=r"none holds no vectors"):
        train(tmp_path / "none", tmp_path / "b", progress=False)
    with pytest.raises(FeatvizError, match=r"held_out=1\.5"):
        train(store, tmp_path / "b", k=4, held_out=1.5, progress=False)
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_a_store_of_a_transformer_blocks_patch_tokens(tmp_path):
    """A block's [B, 17, C] output: the 16 patch tokens laid out as the 4 x 4 grid, the class
    token left out; a layer with no positions is refused by name and shape."""
    vit = tiny_vit()
    photos = [(torch.rand(3, 32, 32, generator=torch.Generator().manual_seed(i)), i % 3)
              for i in range(6)]
    store = atlas_store.collect(vit, photos, "block", tmp_path / "s", batch_size=4,
                                progress=False)
    assert store.map_shape == (4, 4) and store.channels == 16 and len(store) == 6 * 16
    seen = []
    with frozen(vit), torch.no_grad(), on_output(vit, ["block"], lambda _, o: seen.append(o)):
        vit(torch.stack([p for p, _ in photos]))
    tokens = seen[0][:, 1:]  # [6, 16, C]: the patches, row by row
    image, y, x = (store.column(c) for c in ("image", "y", "x"))
    expected = tokens[torch.from_numpy(image).long(), torch.from_numpy(y * 4 + x).long()]
    assert np.allclose(store.vectors(), expected.numpy(), atol=2e-3, rtol=2e-3)
    assert not np.allclose(store.vectors()[:16], seen[0][0, :16].numpy(), atol=1e-2)
    assert sorted(zip(y[:16].tolist(), x[:16].tolist(), strict=True)) == [
        (r, c) for r in range(4) for c in range(4)]
    result = train(store, tmp_path / "sae", n_features=32, k=4, epochs=1, batch_size=32,
                   held_out=0.2, progress=False)
    assert result.sae.layer == "block" and result.sae.d_in == 16
    with pytest.raises(FeatvizError, match=r"'head' has no spatial positions .*\[4, 5\]"):
        atlas_store.collect(vit, photos, "head", tmp_path / "h", batch_size=4, progress=False)
    assert hook_count(vit) == 0
