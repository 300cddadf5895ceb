"""``featviz dictionary train|show`` on a small CIFAR ResNet (random weights) and a folder of
labelled photos: both steps write what they say, a second run resumes instead of redoing, a
dictionary brought from elsewhere is shown, and bad input is one clear line."""

import json
import re

import pytest
import torch

import featviz
from featviz.face.cli import main

MODEL = ["--model", "cifar_resnet20", "--weights", "random", "--device", "cpu"]


@pytest.fixture
def photos(tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    rows = ["file\tclass_index"]
    gen = torch.Generator().manual_seed(0)
    for i in range(12):
        featviz.images.save(torch.rand(3, 32, 32, generator=gen), folder / f"p{i:02d}.png")
        rows.append(f"p{i:02d}.png\t{i % 10}")
    (folder / "labels.tsv").write_text("\n".join(rows) + "\n")
    return folder


def _train(photos, out, *extra):
    return main(["dictionary", "train", *MODEL, "--layer", "layer1", "--images", str(photos),
                 "--out", str(out), "--features", "32", "--k", "4", "--epochs", "2",
                 "--batch", "512", *extra])


def test_train_then_show(tmp_path, photos, capsys, one_thread):
    out = tmp_path / "run"
    assert _train(photos, out) == 0
    measures = json.loads((out / "measures.json").read_text())
    assert measures["features"] == 32 and measures["k"] == 4 and measures["photos"] == 12
    assert 0 <= measures["fvu"] < 1.5 and 0 < measures["l0"] <= 4
    assert 0 <= measures["top1_spliced"] <= 1 and 0 <= measures["same_top1"] <= 1
    assert "fvu" in capsys.readouterr().out
    made = [(out / f).stat().st_mtime_ns for f in ("sae/sae.pt", "measures.json")]
    assert _train(photos, out) == 0  # finished: nothing trained or measured again
    assert [(out / f).stat().st_mtime_ns for f in ("sae/sae.pt", "measures.json")] == made
    assert "measured before" in capsys.readouterr().out
    assert main(["dictionary", "show", *MODEL, "--images", str(photos), "--out", str(out),
                 "--shown", "2", "--neurons", "5", "--top", "3", "--steps", "2",
                 "--size", "32"]) == 0
    page = (out / "page" / "index.html").read_text()
    srcs = re.findall(r"src='([^']+)'", page)
    assert srcs and all((out / "page" / s).is_file() for s in srcs)
    units = json.loads((out / "units.json").read_text())
    assert 5 in units["shown"]["neurons"] and len(units["features"]["score"]) == 32
    assert (out / "sheet.png").stat().st_size > 0


def test_show_a_dictionary_from_elsewhere(tmp_path, photos, one_thread):
    sae = torch.nn.Linear(16, 24)  # layer1 of the CIFAR ResNet has 16 channels
    dec = torch.nn.Linear(24, 16)
    state = {"encoder.weight": sae.weight, "encoder.bias": sae.bias,
             "decoder.weight": dec.weight, "decoder.bias": dec.bias}
    torch.save({k: v.detach() for k, v in state.items()}, tmp_path / "theirs.pt")
    out = tmp_path / "theirs"
    assert main(["dictionary", "show", *MODEL, "--images", str(photos), "--out", str(out),
                 "--sae", str(tmp_path / "theirs.pt"), "--layer", "layer1", "--shown", "1",
                 "--top", "2", "--steps", "2", "--size", "32"]) == 0
    assert (out / "store" / "manifest.json").is_file()
    assert len(json.loads((out / "units.json").read_text())["features"]["score"]) == 24


def test_bad_input_is_one_line(tmp_path, photos, capsys):
    assert _train(photos, tmp_path / "a", "--k", "64") == 2
    assert "--k 64 must be at most --features 32" in capsys.readouterr().err
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["dictionary", "train", *MODEL, "--layer", "layer1", "--images", str(empty),
                 "--out", str(tmp_path / "b")]) == 2
    assert "empty" in capsys.readouterr().err
    assert main(["dictionary", "train", *MODEL, "--layer", "linear", "--images", str(photos),
                 "--out", str(tmp_path / "c")]) == 2
    assert "no spatial positions" in capsys.readouterr().err
