"""Measuring a dictionary: FVU, mean L0 and dead features as computed by hand, on the held-out
images only; the splice that puts a layer's reconstruction in place of its output (nothing
changes for an identity dictionary, always unhooked) and the accuracy it leaves."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from _sae_toys import tiny_vit, write_vectors
from conftest import make_tiny

import featviz
from featviz.core.hooks import hook_count
from featviz.errors import FeatvizError
from featviz.methods.dictionary import (
    SparseAutoencoder,
    held_out_images,
    measure,
    splice,
    splice_accuracy,
)
from featviz.methods.dictionary.measures import reconstruct


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    """One thread: faster on this busy 2-core box."""


def _sae(w_enc, w_dec, k=None, b_enc=None, b_dec=None, scale=1.0) -> SparseAutoencoder:
    w_enc, w_dec = torch.as_tensor(w_enc).float(), torch.as_tensor(w_dec).float()
    sae = SparseAutoencoder(w_enc.shape[0], w_enc.shape[1], k, scale)
    with torch.no_grad():
        sae.W_enc.copy_(w_enc)
        sae.W_dec.copy_(w_dec)
        if b_enc is not None:
            sae.b_enc.copy_(torch.as_tensor(b_enc))
        if b_dec is not None:
            sae.b_dec.copy_(torch.as_tensor(b_dec))
    return sae


def _identity(d: int) -> SparseAutoencoder:
    return _sae(torch.eye(d), torch.eye(d))


def _signed_identity(d: int) -> SparseAutoencoder:
    """2d features, +x and -x: relu(x) - relu(-x) is x for either sign, exactly."""
    eye = torch.eye(d)
    return _sae(torch.cat([eye, -eye], dim=1), torch.cat([eye, -eye], dim=0))


# three directions in 2-d, one feature per vector: e1, e2 and their diagonal
S = 2 ** -0.5
DIRS = [[1.0, 0.0], [0.0, 1.0], [S, S]]
VECTORS = np.array([[2.0, 0.0], [0.0, 1.0], [3.0, 1.0], [-1.0, 0.0]])


def test_fvu_l0_and_dead_features_match_a_hand_computation():
    """(2,0) -> feature 0 at 2, exact; (0,1) -> feature 1 at 1, exact; (3,1) -> feature 0 at 3
    (above the diagonal's 2.83), error 1; (-1,0) -> nothing fires, error 1. The mean is
    (1, 0.5), the summed squared distance to it 1.25 + 1.25 + 4.25 + 4.25 = 11: FVU 2/11.
    L0 = 3/4; the diagonal never fires: 1 dead of 3."""
    sae = _sae(torch.tensor(DIRS).T, DIRS, k=1)
    m = measure(sae, VECTORS)
    assert m.fvu == pytest.approx(2 / 11, rel=1e-6) and m.mse == pytest.approx(0.5, rel=1e-6)
    assert m.l0 == pytest.approx(0.75) and m.dead == 1 and m.n_features == 3
    assert m.dead_fraction == pytest.approx(1 / 3) and m.vectors == 4
    assert "FVU 0.1818" in str(m) and "1 dead (33.3%)" in str(m)
    # k=2: the diagonal joins every vector that fires, adding (1, 1), (.5, .5) and (2, 2):
    # errors 2, 0.5, 5 and 1, FVU 8.5/11; six active in four vectors; none dead
    both = measure(_sae(torch.tensor(DIRS).T, DIRS, k=2), VECTORS)
    assert both.fvu == pytest.approx(8.5 / 11, rel=1e-6) and both.dead == 0
    assert both.l0 == pytest.approx(6 / 4)
    assert measure(sae, VECTORS, batch_size=1) == m  # the sums do not depend on batching


def test_a_store_is_measured_on_its_held_out_images_only(tmp_path):
    # 10 images of one vector each: image i is the vector i + 1 along one channel
    x = np.zeros((10, 2))
    x[:, 0] = np.arange(1, 11)
    store = write_vectors(tmp_path / "s", x, per_image=1, images_per_shard=3)
    sae = _sae(torch.tensor(DIRS).T, DIRS, k=1)
    held = held_out_images(10, 0.2)
    assert held.tolist() == [2, 7]
    on_store = measure(sae, store, held_out=0.2)
    assert on_store == measure(sae, x[held]) and on_store.vectors == 2
    assert measure(sae, store, held_out=None) == measure(sae, x)
    with pytest.raises(FeatvizError, match="3 channels .* reads 2"):
        measure(sae, np.zeros((4, 3)))


def test_the_splice_of_an_identity_dictionary_changes_nothing(tiny):
    images = torch.rand(3, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        plain = tiny(images)
        with splice(tiny, "relu", _identity(8)):  # after a ReLU: every value >= 0 passes
            assert hook_count(tiny) == 1
            same = tiny(images)
        with splice(tiny, "conv2", _signed_identity(16)):  # a signed map, [B, 16, 16, 16]
            signed = tiny(images)
    assert torch.equal(plain, same) and torch.equal(plain, signed)
    assert hook_count(tiny) == 0


def test_the_splice_changes_the_output_when_the_dictionary_is_no_identity(tiny):
    images = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    swap = _sae(torch.eye(8), torch.eye(8)[torch.randperm(8, generator=torch.Generator()
                                                                   .manual_seed(0))])
    with torch.no_grad():
        plain = tiny(images)
        with splice(tiny, "relu", swap):
            swapped = tiny(images)
        with splice(tiny, "relu", _sae(torch.eye(8), torch.eye(8), k=2)):
            sparse = tiny(images)
    assert not torch.allclose(plain, swapped, atol=1e-4)
    assert not torch.allclose(plain, sparse, atol=1e-4)
    assert hook_count(tiny) == 0


def test_the_hook_is_removed_when_the_body_raises(tiny):
    with pytest.raises(RuntimeError, match="boom"), splice(tiny, "relu", _identity(8)):
        assert hook_count(tiny) == 1
        raise RuntimeError("boom")
    assert hook_count(tiny) == 0
    with pytest.raises(FeatvizError, match=r"'fc'.*\[1, 10\]"), torch.no_grad(), \
            splice(tiny, "fc", _identity(10)):
        tiny(torch.rand(1, 3, 32, 32))  # a vector layer: no map nor tokens
    assert hook_count(tiny) == 0


def test_reconstruct_reads_maps_and_tokens_vector_by_vector():
    g = torch.Generator().manual_seed(2)
    perm = torch.randperm(4, generator=g)
    swap = _sae(torch.eye(4), torch.eye(4)[perm])  # feature i lands on channel perm[i]
    nchw = torch.rand(2, 4, 3, 5, generator=g)
    out = reconstruct(swap, nchw, "m")
    assert out.shape == nchw.shape and torch.equal(out[:, perm], nchw)
    tokens = torch.rand(2, 7, 4, generator=g)
    assert torch.equal(reconstruct(swap, tokens, "t")[..., perm], tokens)
    nhwc = torch.rand(2, 3, 5, 4, generator=g)
    assert torch.equal(reconstruct(swap, nhwc, "h")[..., perm], nhwc)
    assert reconstruct(swap, nchw.half(), "m").dtype == torch.float16
    with pytest.raises(FeatvizError, match=r"'v'.*\[2, 4\]"):
        reconstruct(swap, torch.rand(2, 4), "v")
    with pytest.raises(FeatvizError, match=r"'w'.*\[2, 5, 3, 3\]"):
        reconstruct(swap, torch.rand(2, 5, 3, 3), "w")


def test_the_splice_on_a_transformer_blocks_tokens():
    vit = tiny_vit()
    images = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        plain = vit(images)
        with splice(vit, "block", _signed_identity(16)):
            same = vit(images)
        with splice(vit, "block", _sae(torch.eye(16), torch.eye(16), k=4)):
            changed = vit(images)
    assert torch.equal(plain, same)
    # the head reads only the class token, which the splice leaves alone (the dictionary
    # is trained on patch tokens); the patch tokens are replaced
    assert torch.equal(plain, changed)
    assert hook_count(vit) == 0
    tokens = torch.rand(2, 17, 16, generator=torch.Generator().manual_seed(5))
    out = reconstruct(_sae(torch.eye(16), torch.eye(16), k=4), tokens, "t", keep=1)
    assert torch.equal(out[:, 0], tokens[:, 0])
    assert not torch.allclose(out[:, 1:], tokens[:, 1:], atol=1e-4)


def _labelled_folder(folder, model, n=6):
    """``n`` photos and a labels.tsv that gives the model's own class for the first four and
    another for the rest (a top-1 accuracy of 4/n); the photos as the model reads them, and
    the labels."""
    folder.mkdir()
    images = torch.rand(n, 3, 32, 32, generator=torch.Generator().manual_seed(4))
    for i in range(n):
        featviz.images.save(images[i:i + 1], folder / f"p{i}.png")
    loaded = torch.cat([featviz.images.load(folder / f"p{i}.png", size=32) for i in range(n)])
    with torch.no_grad():
        top = model(loaded).argmax(1)
    labels = [int(top[i]) if i < 4 else (int(top[i]) + 1) % 10 for i in range(n)]
    lines = ["file\tclass_index"] + [f"p{i}.png\t{lb}" for i, lb in enumerate(labels)]
    (folder / "labels.tsv").write_text("\n".join(lines) + "\n")
    return loaded, torch.tensor(labels)


def test_splice_accuracy_with_and_without_the_dictionary(tiny, tmp_path):
    folder = tmp_path / "photos"
    photos, labels = _labelled_folder(folder, tiny)
    same = splice_accuracy(tiny, "relu", _identity(8), folder, batch_size=4, progress=False)
    assert same.accuracy == pytest.approx(4 / 6) == same.spliced_accuracy
    assert same.kl == 0 and same.agreement == 1 and same.images == 6
    # every photo's map becomes the same constant: one prediction for all
    const = _sae(torch.eye(8), torch.zeros(8, 8), b_dec=torch.full((8,), 0.3))
    with torch.no_grad(), splice(tiny, "relu", const):
        logits = tiny(photos)
    with torch.no_grad():
        plain = tiny(photos)
    off = splice_accuracy(tiny, "relu", const, folder, batch_size=4, progress=False)
    assert off.accuracy == same.accuracy
    assert off.spliced_accuracy == pytest.approx((logits.argmax(1) == labels).float().mean())
    assert off.agreement == pytest.approx((logits.argmax(1) == plain.argmax(1)).float().mean())
    kl = (plain.softmax(1) * (plain.log_softmax(1) - logits.log_softmax(1))).sum(1).mean()
    assert off.kl == pytest.approx(float(kl), rel=1e-4) and off.kl > 1e-3
    assert "top-1 66.7%" in str(off)
    assert hook_count(tiny) == 0
    unlabelled = tmp_path / "plain"
    unlabelled.mkdir()
    featviz.images.save(torch.rand(1, 3, 32, 32), unlabelled / "a.png")
    with pytest.raises(FeatvizError, match="class of every photo"):
        splice_accuracy(tiny, "relu", _identity(8), unlabelled, progress=False)


def test_splice_accuracy_takes_a_dataset_of_labelled_items():
    model = make_tiny(1)
    items = [(torch.rand(3, 32, 32, generator=torch.Generator().manual_seed(i)), i % 10)
             for i in range(5)]
    with torch.no_grad():
        top = model(torch.stack([img for img, _ in items])).argmax(1)
    right = sum(int(top[i]) == i % 10 for i in range(5)) / 5
    result = splice_accuracy(model, "relu", _identity(8), items, size=32, progress=False)
    assert result.accuracy == pytest.approx(right) == result.spliced_accuracy
