"""The dictionary page: features beside neurons with renders, patches, classes, firing rates
and scores under a table of measures; every image it names is in its folder (the folder can
be moved), text is escaped, no script; and the one-PNG sheet of both kinds side by side."""

from __future__ import annotations

import re
import shutil
from html.parser import HTMLParser

import numpy as np
import pytest
import torch
from PIL import Image

import featviz
from featviz.errors import FeatvizError
from featviz.face import dictionary_page
from featviz.face.dictionary_page import UnitCard, sheet_png, unit_cards, write
from featviz.methods.dictionary._units import Example, UnitExamples
from featviz.methods.dictionary.minded import Minded

EVIL = "<script>alert('x')</script> & co"


class _Tags(HTMLParser):
    def __init__(self):
        super().__init__()
        self.srcs, self.scripts, self.text = [], 0, []

    def handle_starttag(self, tag, attrs):
        if tag == "img":
            self.srcs.append(dict(attrs)["src"])
        self.scripts += tag == "script"

    def handle_data(self, data):
        self.text.append(data)


def _cards(tmp_path):
    torch.manual_seed(0)
    render_file = tmp_path / "given render.png"
    featviz.images.save(torch.rand(3, 20, 20), render_file)
    features = [
        UnitCard("feature", 7, torch.rand(3, 32, 32), torch.rand(4, 3, 16, 16),
                 [(EVIL, 1.5), ("dog", 0.25)], 0.031, 0.82),
        UnitCard("feature", 2, render_file, None, [], 0.0, float("nan")),  # never fires
    ]
    neurons = [UnitCard("neuron", 3, torch.rand(1, 3, 32, 32), torch.rand(2, 1, 16, 16),
                        [("cat", 2.0)], 0.5, 0.1)]
    return features, neurons


def _parse(page):
    tags = _Tags()
    tags.feed(page.read_text(encoding="utf-8"))
    return tags


def test_the_page_shows_both_kinds_and_every_image_it_names_exists(tmp_path):
    features, neurons = _cards(tmp_path)
    page = write(tmp_path / "site", "mixed4a", features, neurons,
                 {"FVU": 0.1234567, "L0": 32, "dead %": 1.5, EVIL: "yes"})
    assert page == tmp_path / "site" / "index.html"
    tags = _parse(page)
    assert len(tags.srcs) == 5  # three renders, two patch strips (feature 2 never fires)
    for src in tags.srcs:
        assert not src.startswith(("/", "http", "data:")) and (page.parent / src).is_file()
    text = " ".join(tags.text)
    assert "feature 7" in text and "neuron 3" in text and "never fires" in text
    assert "0.1235" in text and "3.10%" in text and "0.82" in text
    strip = Image.open(page.parent / next(s for s in tags.srcs if "feature00007_patches" in s))
    assert strip.width > 4 * 16 and strip.height >= 16  # the four patches in a row
    # the given file was copied in: the folder moves as a whole
    moved = tmp_path / "moved"
    shutil.move(tmp_path / "site", moved)
    (tmp_path / "given render.png").unlink()
    assert all((moved / src).is_file() for src in _parse(moved / "index.html").srcs)


def test_text_is_escaped_and_there_is_no_script(tmp_path):
    features, neurons = _cards(tmp_path)
    page = write(tmp_path / "site", "<b>layer</b>", features, neurons, {EVIL: EVIL})
    raw = page.read_text(encoding="utf-8")
    assert "<script" not in raw and "<b>layer" not in raw
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt; &amp; co" in raw
    tags = _parse(page)
    assert tags.scripts == 0
    assert any(EVIL in t for t in tags.text)  # it reads as the text it was
    assert not re.search(r"(src|href)=['\"]https?:", raw)


def test_cards_from_a_search(tmp_path):
    e = [Example(i, f"p{i}.png", "cat", 0, i, 3.0 - i, i) for i in range(3)]
    found = UnitExamples("feature", "conv2", 32, [0, 4], {0: e, 4: []}, {0: 0.25, 4: 0.0},
                         ["cat", "dog"], np.array([2.0, 1.0]), np.array([[4.0, 0.0],
                                                                         [3.0, 0.0]]))
    scores = Minded("feature", [0, 4], np.array([0.9, np.nan]))
    cards = unit_cards(found, patches={0: torch.rand(3, 3, 8, 8)}, scores=scores, classes=2)
    assert [c.title for c in cards] == ["feature 0", "feature 4"]
    assert cards[0].classes == [("dog", 3.0), ("cat", 2.0)]
    assert cards[0].firing_rate == 0.25 and cards[0].score == 0.9
    assert cards[1].patches is None and cards[1].render is None
    page = write(tmp_path / "site", "conv2", cards, [])
    assert len(_parse(page).srcs) == 1


def test_the_sheet_png_puts_the_kinds_side_by_side(tmp_path):
    features, neurons = _cards(tmp_path)
    path = sheet_png(tmp_path / "sheet.png", {"features": features, "neurons": neurons},
                     tile=24)
    img = np.asarray(Image.open(path).convert("RGB"))
    # two sheets of (render + 4 patches) columns of 24 px, rows of 24 px plus a label line
    assert img.shape[1] > 2 * 5 * 24 and img.shape[0] > 2 * 24
    one = sheet_png(tmp_path / "one.png", {"features": features}, tile=24)
    assert Image.open(one).width < img.shape[1] / 1.5
    assert not list(tmp_path.glob(".*.tmp"))  # written atomically: no temporary left
    with pytest.raises(FeatvizError, match="at least one sheet"):
        sheet_png(tmp_path / "none.png", {"features": []})
    with pytest.raises(FeatvizError, match="render image not found"):
        write(tmp_path / "bad", "x", [UnitCard("feature", 0, tmp_path / "no.png")], [])
    assert dictionary_page.IMAGES == "images"


def test_from_a_store_to_the_page(tmp_path, one_thread):
    """The whole way on a tiny net: collect, search, cut patches, score, render, show."""
    from conftest import make_tiny

    from featviz.methods import atlas_store
    from featviz.methods.dictionary import (
        SparseAutoencoder,
        dictionary_feature,
        example_patches,
        feature_examples,
        layer_mindedness,
    )

    tiny, photos = make_tiny(), tmp_path / "photos"
    photos.mkdir()
    for i in range(3):
        featviz.images.save(torch.rand(3, 32, 32), photos / f"p{i}.png")
    store = atlas_store.collect(tiny, photos, "conv3", tmp_path / "store", progress=False)
    sae = SparseAutoencoder(16, 6, k=2, layer="conv3")
    with torch.no_grad():
        sae.W_enc.normal_()
        sae.W_dec.normal_()
    found = feature_examples(store, sae, k=3)
    scores = layer_mindedness(store, found)
    renders = featviz.render(tiny, dictionary_feature("conv3", sae, [0, 1]), size=32, steps=4,
                             progress=False, seed=0).images
    cards = {kind: unit_cards(getattr(found, kind), units=[0, 1],
                              patches=example_patches(tiny, getattr(found, kind), tile=24),
                              renders={0: renders[0], 1: renders[1]},
                              scores=getattr(scores, kind))
             for kind in ("features", "neurons")}
    page = write(tmp_path / "site", "conv3", cards["features"], cards["neurons"], {"L0": 2})
    srcs = _parse(page).srcs
    assert all((page.parent / s).is_file() for s in srcs)
    shown = sum(c.patches is not None and len(c.patches) > 0
                for kind in cards.values() for c in kind)
    assert len(srcs) == 4 + shown  # four renders, a strip per unit that fired
    assert sheet_png(tmp_path / "sheet.png", cards).is_file()
