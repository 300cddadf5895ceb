"""``featviz accentuate`` on the tiny model, through its own module's ``add`` and ``run`` (the
way the entry point calls every command): it writes a readable strip and prints the objective
before and after and the distance; a bad objective is named before the model loads."""

from __future__ import annotations

import argparse

import pytest
import torch
from PIL import Image

import featviz
from featviz.face.commands import accentuate
from featviz.face.commands.common import Parser


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = Parser(prog="featviz")
    accentuate.add(parser.add_subparsers(dest="command", required=True))
    return parser.parse_args(["accentuate", *argv])


@pytest.fixture
def photo_file(tmp_path):
    g = torch.Generator().manual_seed(0)
    arr = (torch.rand(40, 48, 3, generator=g) * 255).byte().numpy()
    Image.fromarray(arr).save(tmp_path / "photo.png")
    return str(tmp_path / "photo.png")


def test_accentuate_writes_a_readable_strip(tiny, photo_file, tmp_path, capsys, one_thread):
    out = tmp_path / "strip.png"
    args = _parse([photo_file, "channel:conv3:1", "--model", "tiny", "--weights", "random",
                   "--layer", "conv2", "--weight", "2", "--steps", "3", "--seed", "1",
                   "--no-progress", "--out", str(out)])
    assert args.run is accentuate.run
    loaded = []
    assert args.run(args, lambda a: loaded.append(a.model) or tiny) == 0
    assert loaded == ["tiny"]
    with Image.open(out) as strip:
        strip.load()
        assert strip.width > 3 * 32 and strip.height > 32
    text = capsys.readouterr().out
    assert "channel(conv3, 1)" in text and "distance at conv2" in text and str(out) in text
    assert featviz.hooks.hook_count(tiny) == 0


def test_a_bad_objective_is_named_before_the_model_loads(photo_file, tmp_path):
    args = _parse([photo_file, "chanel:conv3:1", "--model", "tiny", "--out",
                   str(tmp_path / "x.png")])

    def load(_args):
        raise AssertionError("the model should not load")

    with pytest.raises(featviz.FeatvizError, match="channel"):
        args.run(args, load)


def test_flags_are_checked_as_they_are_parsed(photo_file, tmp_path, capsys):
    with pytest.raises(SystemExit):
        _parse([photo_file, "channel:conv3:1", "--model", "tiny", "--weight", "-1",
                "--out", str(tmp_path / "x.png")])
    assert "--weight" in capsys.readouterr().err
