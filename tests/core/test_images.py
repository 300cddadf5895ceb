"""Contact-sheet labels: a label too wide for its tile keeps its end (the unit number)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw, ImageFont

from featviz.core import images

FONT = ImageFont.load_default()


def _width(text: str) -> float:
    return ImageDraw.Draw(Image.new("RGB", (1, 1))).textlength(text, font=FONT)


@pytest.mark.parametrize("label, number", [("channel:features.14:12", "12"),
                                           ("channel(features.7, 12)", "12)"),
                                           ("channel:features.17:1234", "1234")])
@pytest.mark.parametrize("width", [24, 32, 40, 48, 64, 80, 96])
def test_a_long_label_keeps_its_unit_number(label, number, width):
    lines = images.label_lines(label, width)
    assert 1 <= len(lines) <= 2
    assert all(_width(line) <= width for line in lines)
    assert lines[-1].endswith(number)
    assert lines[0].startswith("c")  # and the start of it on the first line


def test_a_label_breaks_after_a_separator_when_both_halves_fit():
    assert images.label_lines("channel:features.14:12", 80) == ["channel:", "features.14:12"]
    assert images.label_lines("channel:features.14:12", 64) == ["channel:fea…", "14:12"]
    assert images.label_lines("channel:features.14:12", 200) == ["channel:features.14:12"]


def _line(sheet: Image.Image, x: int, y: int, w: int) -> np.ndarray:
    return np.asarray(sheet.crop((x, y, x + w, y + 12)))


def _drawn(text: str, w: int) -> np.ndarray:
    ref = Image.new("RGB", (w, 12), (255, 255, 255))
    ImageDraw.Draw(ref).text((0, 0), text, fill=(0, 0, 0), font=FONT)
    return np.asarray(ref)


def test_grid_writes_the_channel_number_under_a_small_tile():
    tiles = torch.rand(2, 3, 32, 32)
    sheet = images.grid(tiles, ["channel:features.14:12", "channel:features.14:7"], ncol=2)
    assert sheet.size == (2 * 36 + 4, 4 + 32 + 26 + 4)  # two label lines
    second = 4 + 32 + 1 + 12  # where the second line of the first tile's label starts
    assert np.array_equal(_line(sheet, 4, second, 32), _drawn("14:12", 32))
    assert np.array_equal(_line(sheet, 40, second, 32), _drawn("14:7", 32))
    assert (_drawn("14:12", 32) < 128).any()  # and it is drawn, not blank


def test_grid_keeps_one_label_line_when_the_labels_fit():
    sheet = images.grid(torch.rand(2, 3, 32, 32), ["a 1", "b 2"], ncol=2)
    assert sheet.size == (2 * 36 + 4, 4 + 32 + 14 + 4)
    assert images.grid(torch.rand(2, 3, 32, 32), ncol=2).size == (2 * 36 + 4, 4 + 32 + 4)
