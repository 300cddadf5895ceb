"""Labelled folders: labels.tsv parsing and its errors, each top-k entry knows its photo's class,
top-k streams (one batch in memory), per-patch display contrast and receptive-field crops, and
the classes reach the sweep's manifest and the gallery page."""

from __future__ import annotations

import weakref
from pathlib import Path

import pytest
import torch
from conftest import make_tiny
from PIL import Image

from featviz import deconv, gallery
from featviz import sweep as sw
from featviz.cli import main
from featviz.errors import FeatvizError
from featviz.methods.dataset import Label, LabelledFolder, labelled, read_labels

pytestmark = pytest.mark.usefixtures("one_thread")

HEADER = "file\tclass_index\twnid\tclass_name\toriginal_file\n"
CLASSES = ["tench, Tinca tinca", "goldfish, Carassius auratus", "great white shark"]


def _photos(folder: Path, n: int = 6, size: int = 20) -> dict[str, Label]:
    """``n`` made-up photos (brightness varies, so the channels rank them) and a labels.tsv
    like imagenet-sample's: photo i is of class i % 3."""
    folder.mkdir(parents=True, exist_ok=True)
    gen = torch.Generator().manual_seed(1)
    lines, labels = [HEADER], {}
    for i in range(n):
        arr = (torch.rand(size, size, 3, generator=gen) * (0.3 + 0.7 * i / n) * 255)
        name = f"{i:04d}_n{i:08d}.png"
        Image.fromarray(arr.to(torch.uint8).numpy()).save(folder / name)
        c = i % 3
        lines.append(f"{name}\t{c}\tn{i:08d}\t{CLASSES[c]}\torig_{i}.JPEG\n")
        labels[name] = Label(c, CLASSES[c])
    (folder / "labels.tsv").write_text("".join(lines))
    return labels


def test_labels_tsv_is_read(tmp_path):
    expected = _photos(tmp_path)
    assert read_labels(tmp_path / "labels.tsv") == expected
    folder = LabelledFolder(tmp_path)
    assert len(folder) == 6 and [Path(p).name for p in folder] == list(expected)
    assert folder.label(tmp_path / "0001_n00000001.png").short == "goldfish"
    assert isinstance(labelled(str(tmp_path)), LabelledFolder)
    # filters: by index, by name or synonym, by predicate; a class nobody has is an error
    assert len(folder.subset(classes=[0])) == 2
    assert len(folder.subset(classes=["Carassius auratus", "great white shark"])) == 4
    assert [folder.label(p).index for p in folder.subset(where=lambda lb: lb.index > 0)] \
        == [1, 2, 1, 2]
    assert len(LabelledFolder(tmp_path, classes=["tench"])) == 2
    with pytest.raises(FeatvizError, match="'zebra'"):
        folder.subset(classes=["zebra"])
    # a spread sample: evenly through the list, all when asked for more than there are
    assert [Path(p).name[:4] for p in folder.spread(3)] == ["0000", "0002", "0004"]
    assert len(folder.spread(60)) == 6 and folder.spread(2).label("0003_n00000003.png")


@pytest.mark.parametrize("text, line, what", [
    ("name\tclass_name\na.png\tx\n", 1, "bad header"),
    ("file\twnid\na.png\tx\n", 1, "bad header"),
    ("", 1, "empty labels file"),
    (HEADER + "0000_n00000000.png\t0\tn0\ttench\to\nmissing.jpg\t1\tn1\tgoldfish\to\n", 3,
     "'missing.jpg' is not a file"),
    (HEADER + "0000_n00000000.png\tzero\tn0\ttench\to\n", 2, "not an integer"),
    (HEADER + "0000_n00000000.png\t0\n", 2, "too few"),
    (HEADER + "0000_n00000000.png\t0\tn\tt\to\n0000_n00000000.png\t0\tn\tt\to\n", 3, "twice"),
])
def test_bad_labels_name_the_file_and_line(tmp_path, text, line, what):
    _photos(tmp_path, n=1)
    (tmp_path / "labels.tsv").write_text(text)
    with pytest.raises(FeatvizError, match=f"labels.tsv line {line}: .*{what}"):
        LabelledFolder(tmp_path)
    with pytest.raises(FeatvizError, match=f"line {line}"):  # a folder source reads it too
        deconv.top_k(make_tiny(), tmp_path, "conv3", [0], k=1)


def test_top_k_entries_know_the_class_of_their_photo(tmp_path):
    expected = _photos(tmp_path / "photos")
    top = deconv.top_k(make_tiny(), tmp_path / "photos", "conv3", [0, 3, 7], k=3, batch_size=4)
    for entries in top.entries.values():
        assert len(entries) == 3
        for e in entries:
            assert e.label == expected[Path(e.source).name]
            assert e.class_name == expected[Path(e.source).name].short
    # an explicit labels file, and a class filter: only those photos are ranked
    (tmp_path / "photos" / "labels.tsv").rename(tmp_path / "elsewhere.tsv")
    only = LabelledFolder(tmp_path / "photos", labels=tmp_path / "elsewhere.tsv",
                          classes=["goldfish"])
    top = deconv.top_k(make_tiny(), only, "conv3", [0], k=5)
    assert {e.class_name for e in top.entries[0]} == {"goldfish"}
    assert len(top.entries[0]) == 2


def test_top_k_holds_one_batch_at_a_time():
    model = make_tiny()
    made, alive, seen = [0], [0], []

    def source():
        gen = torch.Generator().manual_seed(0)
        for _ in range(40):
            img = torch.rand(3, 32, 32, generator=gen)
            made[0] += 1
            alive[0] += 1
            weakref.finalize(img, lambda: alive.__setitem__(0, alive[0] - 1))
            yield img

    handle = model.net.conv1.register_forward_pre_hook(
        lambda m, args: seen.append((len(seen), made[0], alive[0])))
    top = deconv.top_k(model, source(), "conv3", [1, 2], k=3, batch_size=5)
    handle.remove()
    scan_passes = [s for s in seen if s[0] < 8]  # the 8 batches of the scan, then projections
    assert len(scan_passes) == 8
    for n, produced, live in scan_passes:
        assert produced <= 5 * (n + 1)  # nothing read ahead of the batch being run
        assert live <= 2  # the given images die once copied: at most one in flight
    assert made[0] == 40 and len(top.entries[1]) == 3


def test_each_projection_gets_its_own_contrast():
    gen = torch.Generator().manual_seed(0)
    weak, strong = 1e-4 * torch.randn(3, 30, 30, generator=gen), 1e3 * torch.randn(
        3, 30, 30, generator=gen)
    shown = deconv.display_patch(torch.stack([weak, strong]))
    for img in shown:
        assert img.min() < 0.02 and img.max() > 0.98
        assert abs(float(img.median()) - 0.5) < 0.05  # zero is grey
    torch.testing.assert_close(deconv.display_patch(weak), shown[0])
    assert (deconv.display_patch(torch.zeros(3, 4, 4)) == 0.5).all()


def test_crops_are_the_receptive_field_box():
    model = make_tiny()
    torch.manual_seed(0)
    imgs = [torch.rand(3, 32, 32) for _ in range(5)]
    top = deconv.top_k(model, imgs, "conv3", [2], k=3, signal=None, mode=["deconvnet", "guided"])
    for e in top.entries[2]:
        box = top.field.box(*e.position)
        assert e.box == box
        assert e.patch.shape == e.projection.shape == (3, *top.field.size)
        torch.testing.assert_close(e.patch, deconv.crop_box(imgs[int(e.source[1:])], box),
                                   atol=1 / 255, rtol=0)
        assert set(e.projections) == {"deconvnet", "guided"}
        assert e.projection.min() < 0.05 and e.projection.max() > 0.95
    trimmed = deconv.top_k(model, imgs, "conv3", [2], k=3)
    for e in trimmed.entries[2]:
        t, le, b, r = e.box
        ft, fl, fb, fr = top.field.box(*e.position)
        assert ft <= t < b <= fb and fl <= le < r <= fr and t - ft == fb - b  # centred inside
        assert e.patch.shape[1:] == (b - t, r - le)
    assert top.grid(tile=24).width > trimmed.grid(tile=24, modes=["deconvnet"]).width


def test_sweep_records_and_gallery_show_the_classes(tmp_path):
    expected = _photos(tmp_path / "photos", n=4)
    run = tmp_path / "run"
    sw.sweep(make_tiny(), run, ["conv3"], "0-1", steps=1, size=16, images=tmp_path / "photos",
             k=3, log=lambda msg: None)
    recs = sw.read_manifests(run)
    for rec in recs:
        top = rec["topk"]
        assert top["classes"] == [expected[s].name for s in top["sources"]]
        assert top["class_indices"] == [expected[s].index for s in top["sources"]]
    page = (run / gallery.page_name("conv3")).read_text() if gallery.write(run) else ""
    for rec in recs:
        shown = [c.split(",")[0] for c in rec["topk"]["classes"]]
        assert "<ol class='classes'" in page and "".join(f"<li>{c}</li>" for c in shown) in page
    assert "(goldfish, Carassius auratus)" in page or "(tench, Tinca tinca)" in page


def test_cli_topk_reads_labels_and_refuses_a_bad_file(tmp_path, capsys):
    _photos(tmp_path / "photos", n=3, size=40)
    args = ["topk", "--model", "mobilenet_v2", "--weights", "random", "--device", "cpu",
            "--size", "32", "--images", str(tmp_path / "photos"), "--layer", "features.2",
            "--channels", "0", "--k", "2", "--out", str(tmp_path / "t.png")]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert any(f"({c.split(',')[0]})" in out for c in CLASSES)
    (tmp_path / "photos" / "labels.tsv").write_text(HEADER + "nope.png\t0\tn\tt\to\n")
    assert main(args) == 2
    assert "labels.tsv line 2: 'nope.png' is not a file" in capsys.readouterr().err
