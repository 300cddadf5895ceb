"""Classic dictionaries from scikit-learn (NMF, mini-batch dictionary learning) as tied TopK
SAEs: they recover planted non-negative directions, sample within bounds and outside the
held-out images, and refuse what they cannot do by name."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch
from _sae_toys import sparse_vectors, write_vectors

from featviz.errors import FeatvizError
from featviz.methods.dictionary import fit_classic, held_out_images, measure
from featviz.methods.dictionary.classic import sample

pytest.importorskip("sklearn")


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    """One thread: faster on this busy 2-core box."""


@pytest.fixture
def planted(tmp_path):
    """8 sparse non-negative unit directions in 16-d, every vector a mix of 1 to 3 of them."""
    x, directions = sparse_vectors(1024, d=16, m=8, active=(1, 3), positive=True)
    return write_vectors(tmp_path / "s", x, images_per_shard=16), directions


@pytest.mark.parametrize("method", ["nmf", "dictionary"])
def test_a_classic_dictionary_recovers_the_planted_directions(planted, method):
    store, directions = planted
    sae = fit_classic(store, 8, method, k=3, seed=0)
    best = (torch.tensor(directions).float() @ sae.directions().T).max(dim=1).values
    assert (best > 0.9).float().mean() >= 0.75
    assert torch.allclose(sae.W_dec.norm(dim=1), torch.ones(8), atol=1e-5)
    assert torch.equal(sae.W_enc, sae.W_dec.T) and sae.k == 3 and sae.layer == "toy"
    kept = sample(store, 10 ** 6, 0.1, 0)
    assert float(sae.scale) == pytest.approx(np.linalg.norm(kept, axis=1).mean(), rel=1e-5)
    held = measure(sae, store)
    assert held.l0 <= 3 and held.fvu < 0.6  # the tied encoder only approximates the coding
    # a vector that is one planted direction is coded by the row nearest it, nearly alone
    z = sae.encode(torch.tensor(directions[:1]).float() * float(sae.scale))
    assert z.argmax().item() == (sae.directions() @ torch.tensor(directions[0]).float()
                                 ).argmax().item()


def test_the_sample_is_bounded_seeded_and_leaves_out_the_held_out_images(tmp_path):
    x = np.zeros((64 * 4, 3))
    x[:, 0] = np.repeat(np.arange(64), 4)  # channel 0 tells the image
    x[:, 1] = 1.0
    store = write_vectors(tmp_path / "s", x, per_image=4)
    got = sample(store, 100, 0.1, seed=5)
    assert got.shape == (100, 3)
    assert not np.isin(got[:, 0], held_out_images(64, 0.1)).any()
    assert np.array_equal(got, sample(store, 100, 0.1, seed=5))
    assert not np.array_equal(got, sample(store, 100, 0.1, seed=6))
    assert len(sample(store, 10 ** 6, 0.1, 0)) == 4 * (64 - len(held_out_images(64, 0.1)))


def test_nmf_refuses_negative_vectors_by_name(tmp_path):
    x, _ = sparse_vectors(256, d=16, m=8)  # directions with both signs
    store = write_vectors(tmp_path / "s", x, layer="conv2")
    with pytest.raises(FeatvizError, match=r"NMF .* 'conv2' has some \(down to -"):
        fit_classic(store, 8, "nmf", k=2)
    sae = fit_classic(store, 8, "dictionary", k=2)  # dictionary learning takes them
    assert sae.n_features == 8


def test_bad_settings_are_clear_errors(planted):
    store, _ = planted
    with pytest.raises(FeatvizError, match=r"k=32 .*n_features=8"):
        fit_classic(store, 8)
    with pytest.raises(FeatvizError, match=r"method='pca' is not one of nmf, dictionary"):
        fit_classic(store, 8, "pca", k=2)
    with pytest.raises(FeatvizError, match=r"max_vectors=0"):
        fit_classic(store, 8, k=2, max_vectors=0)


def test_a_missing_scikit_learn_says_how_to_install_it(planted, monkeypatch):
    store, _ = planted
    monkeypatch.setitem(sys.modules, "sklearn.decomposition", None)  # import fails
    with pytest.raises(FeatvizError, match=r"need scikit-learn.*pip install"):
        fit_classic(store, 8, k=2)
