"""The path check of a sweep folder: recorded per unit, resumed, refused with other settings,
shown in the gallery beside each picture; ``featviz paths`` on a folder that is no sweep."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import make_tiny
from PIL import Image

from featviz import gallery
from featviz import sweep as sw
from featviz.cli import main
from featviz.errors import FeatvizError
from featviz.face import path_check

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def swept(tmp_path_factory):
    """A two-layer sweep of the tiny model and eight made-up photos."""
    root = tmp_path_factory.mktemp("paths")
    photos = root / "photos"
    photos.mkdir()
    gen = torch.Generator().manual_seed(0)
    for i in range(8):
        small = torch.rand(1, 3, 4, 4, generator=gen)
        arr = torch.nn.functional.interpolate(small, size=24, mode="bilinear")[0]
        Image.fromarray((arr.permute(1, 2, 0) * 255).to(torch.uint8).numpy()).save(
            photos / f"p{i}.png")
    sw.sweep(make_tiny(), root / "run", ["conv2", "conv3"], "0-2", steps=2, size=16,
             log=lambda msg: None)
    return root / "run", photos


def test_every_unit_is_checked_once_and_the_gallery_shows_it(swept):
    folder, photos = swept
    model = make_tiny()
    lines = []
    path = path_check.check_sweep(model, folder, photos, k=3, randoms=3, chunk=4,
                                  log=lines.append)
    checks = path_check.read(folder)
    assert set(checks) == {f"{layer}:{c}" for layer in ("conv2", "conv3") for c in range(3)}
    assert lines == ["path check: 4 of 6 units", "path check: 6 of 6 units"]
    assert checks["conv3:1"]["layers"] == ["conv1", "conv2", "conv3"]
    stamp = path.stat().st_mtime_ns
    path_check.check_sweep(model, folder, photos, k=3, randoms=3, log=lines.append)
    assert path.stat().st_mtime_ns == stamp and len(lines) == 2  # nothing left to check
    page = (folder / gallery.page_name("conv3")).read_text() if gallery.write(folder) else ""
    line = path_check.caption(checks["conv3:1"])
    assert line.startswith("path ") and line in page
    assert page.count("class='path'") == 3


def test_other_settings_are_refused_and_a_bad_file_reads_as_none(swept, tmp_path):
    folder, photos = swept
    path_check.check_sweep(make_tiny(), folder, photos, k=3, randoms=3, log=lambda m: None)
    with pytest.raises(FeatvizError, match="was made with"):
        path_check.check_sweep(make_tiny(), folder, photos, k=4, randoms=3)
    (tmp_path / path_check.PATHS_FILE).write_text("{cut off")
    assert path_check.read(tmp_path) == {}
    assert path_check.caption(None) is None
    data = json.loads((folder / path_check.PATHS_FILE).read_text())
    assert data["settings"]["k"] == 3


def test_paths_command_on_a_folder_that_is_no_sweep(tmp_path, capsys):
    photos = tmp_path / "photos"
    photos.mkdir()
    code = main(["paths", str(tmp_path), "--model", "cifar_resnet20", "--weights", "random",
                 "--images", str(photos)])
    assert code == 2
    assert "holds no sweep manifest" in capsys.readouterr().err
