"""Building a microscope site: every view of every unit, resumable, one setting per site."""

from __future__ import annotations

import importlib.util
import json

import numpy as np
import pytest
from conftest import hook_free, make_tiny
from PIL import Image

from featviz import microscope
from featviz.errors import FeatvizError
from featviz.face.microscope import store, tasks

pytestmark = pytest.mark.usefixtures("one_thread")

# the quick setting made tiny: the tests check the plumbing, not the pictures
TINY = dict(steps=2, size=32, batch=8, k=2, facets=2, facet_steps=1, photos=1, dream_steps=1,
            groups=2, families=["lines"], class_photos=3, connections=3)


@pytest.fixture
def photos(tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(4):
        Image.fromarray((rng.random((40, 40, 3)) * 255).astype(np.uint8)).save(
            folder / f"p{i}.png")
    (folder / "labels.tsv").write_text("file\tclass_index\n"
                                       + "".join(f"p{i}.png\t{i}\n" for i in range(4)))
    return folder


def _build(model, site, photos, **extra):
    return microscope.microscope(model, site, ["conv1", "conv2", "conv3"], images=photos,
                                 model_name="tiny", weights="/somewhere/tiny.pth",
                                 log=lambda msg: None, **{**TINY, **extra})


def test_a_site_holds_every_view_of_every_unit(tmp_path, photos):
    model = make_tiny()
    site = tmp_path / "site"
    result = _build(model, site, photos)
    assert not result.interrupted and result.index == site / "index.html"
    assert hook_free(model)
    meta = json.loads((site / "microscope.json").read_text())
    assert meta["weights"] == "tiny.pth" and meta["setting"] == "quick"  # a name, no path
    assert meta["settings"]["steps"] == 2 and meta["layers"] == ["conv1", "conv2", "conv3"]
    for layer in ("conv1", "conv2", "conv3"):
        assert (site / layer / "index.html").is_file()
        for task in store.TASKS:
            assert store.is_done(site, layer, task), (layer, task)
    assert (site / "conv2" / "15.html").is_file() and (site / "conv3" / "0.html").is_file()
    weights = store.read_task(site, "conv2", "weights")
    assert weights["source"] == "conv1" and weights["target"] == "conv3"
    assert len(weights["incoming"]) == 16 and len(weights["outgoing"]) == 16
    assert weights["incoming"]["0"]["positive"]  # the strongest conv1 units feeding conv2:0
    first = store.read_task(site, "conv1", "weights")
    assert first["source"] is None and "no earlier layer" in first["source_error"]
    tuning = store.read_task(site, "conv3", "tuning")["families"]["lines"]
    assert len(tuning["units"]) == 16 and tuning["period"] == 180
    facets = store.read_task(site, "conv3", "facets")["units"]
    assert len(facets) == 16
    facet = Image.open(site / store.DATA_DIR / "conv3" / facets["3"])
    assert facet.size == (2 * 32, 32)  # two facets side by side
    classes = store.read_task(site, "conv3", "classes")
    assert classes["photos"] == 3 and set(classes["units"]) == {str(c) for c in range(16)}
    unit = (site / "conv2" / "3.html").read_text()
    assert str(tmp_path) not in unit and "/somewhere" not in unit
    paths = store.read_task(site, "conv3", "paths")
    assert set(paths["units"]) == {str(c) for c in range(16)}
    assert paths["units"]["3"]["layers"] == ["conv1", "conv2", "conv3"]
    assert "<span class='path'" in unit and "path " in unit  # the number beside the picture


def test_a_second_run_redoes_nothing_and_another_setting_is_refused(tmp_path, photos):
    model = make_tiny()
    site = tmp_path / "site"
    _build(model, site, photos)
    stamps = {p: p.stat().st_mtime_ns for p in (site / store.DATA_DIR).rglob("*.png")}
    again = _build(model, site, photos)
    assert again.sweep.rendered == 0 and again.tasks_run == [] and again.facets_run == 0
    assert {p: p.stat().st_mtime_ns for p in (site / store.DATA_DIR).rglob("*.png")} == stamps
    with pytest.raises(FeatvizError, match="made with settings"):
        _build(model, site, photos, steps=3)


def test_an_interrupted_build_keeps_what_it_made_and_goes_on(tmp_path, photos, monkeypatch):
    model = make_tiny()
    site = tmp_path / "site"
    calls = []
    real = tasks.LAYER_TASKS["tuning"]

    def tuning_then_stop(model, layer, ctx):
        calls.append(layer)
        if len(calls) == 2:
            raise KeyboardInterrupt  # as SIGINT lands in the middle of a task
        return real(model, layer, ctx)

    monkeypatch.setitem(tasks.LAYER_TASKS, "tuning", tuning_then_stop)
    first = _build(model, site, photos)
    assert first.interrupted and first.index is None
    assert store.is_done(site, "conv1", "tuning") and not store.is_done(site, "conv2", "tuning")
    done = set(first.tasks_run)
    monkeypatch.setitem(tasks.LAYER_TASKS, "tuning", real)
    second = _build(model, site, photos)
    assert not second.interrupted and ("conv2", "tuning") in second.tasks_run
    assert not done & set(second.tasks_run)  # nothing done twice
    assert (site / "index.html").is_file()


def test_views_that_do_not_apply_say_why(tmp_path):
    """Without photos the photo views say so; the site still has every unit's page."""
    model = make_tiny()
    site = tmp_path / "site"
    microscope.microscope(model, site, ["conv3"], log=lambda msg: None, **TINY)
    for task in ("dreams", "caricatures", "groups", "classes", "paths"):
        assert "no photos" in store.read_task(site, "conv3", task)["not_applicable"]
    assert "no earlier layer" in store.read_task(site, "conv3", "weights")["source_error"]
    assert (site / "conv3" / "7.html").is_file()


def test_unknown_values_are_named():
    with pytest.raises(FeatvizError, match="one of quick, full"):
        microscope.presets.resolve("preview")
    with pytest.raises(FeatvizError, match="unknown microscope value.*stepz"):
        microscope.presets.resolve("quick", {"stepz": 3})
    with pytest.raises(FeatvizError, match="unknown stimulus family 'curvez'"):
        microscope.presets.resolve("quick", {"families": ["curvez"]})


def test_facets_of_a_unit_do_not_depend_on_its_batch(tmp_path):
    """Several units share a facet batch, each pushed apart from its own images only: one
    unit's facets are the same alone or beside another (and the term is Distill's diversity
    for a single unit)."""
    from featviz import objectives as obj
    from featviz.face.microscope import facets

    model = make_tiny()
    values = {**microscope.presets.resolve("quick", TINY), "facet_steps": 3}
    a, b = {"channel": 5, "value": 2.0}, {"channel": 9, "value": 4.0}
    facets.render_facets(model, "conv3", [a], values, tmp_path / "one")
    facets.render_facets(model, "conv3", [b, a], values, tmp_path / "two")
    one = np.asarray(Image.open(facets.facet_file(tmp_path / "one", "conv3", 5)), float)
    two = np.asarray(Image.open(facets.facet_file(tmp_path / "two", "conv3", 5)), float)
    assert np.abs(one - two).max() <= 1  # float rounding of a batch, at most one grey level
    import torch
    acts = {"conv3": torch.rand(3, 4, 5, 5)}
    torch.testing.assert_close(facets.within_units("conv3", 3, [1.0])(acts),
                               obj.diversity("conv3")(acts))


@pytest.mark.skipif(importlib.util.find_spec("timm") is None,
                    reason="timm is not installed (pip install 'featviz[timm]'): the ViT site")
def test_a_transformer_block_shows_the_views_that_apply_and_says_which_do_not(tmp_path, photos):
    """ViT-Tiny (random weights) at its one input size: token layers get feature
    visualizations, facets, dataset examples, DeepDream, caricatures and top classes; expanded
    weights and tuning curves say why they do not apply, on the unit page too."""
    import torch

    import featviz

    torch.manual_seed(0)
    vit = featviz.models.load("vit_tiny", weights=None)
    site = tmp_path / "vit"
    result = microscope.microscope(vit, site, ["blocks.0", "blocks.1"], units="0-1",
                                   images=photos, log=lambda msg: None, **TINY)
    assert not result.interrupted
    assert json.loads((site / "microscope.json").read_text())["settings"]["size"] == 224
    for task in ("dreams", "caricatures", "classes", "facets"):
        assert "not_applicable" not in store.read_task(site, "blocks.1", task), task
    assert "token layer" in store.read_task(site, "blocks.1", "tuning")["not_applicable"]
    weights = store.read_task(site, "blocks.1", "weights")
    assert "attention, which is not linear" in weights["source_error"]
    page = (site / "blocks.1" / "1.html").read_text()
    assert "does not apply" in page and "attention, which is not linear" in page
    assert hook_free(vit)


@pytest.mark.slow  # two processes: about half a minute
def test_a_killed_build_loses_only_the_piece_under_way(tmp_path, photos):
    """SIGKILL (no chance to clean up) once some views are written; the same command again
    finishes the site, rewriting none of the files the first run finished."""
    import os
    import signal
    import subprocess
    import sys
    import time

    from conftest import HANG_GUARD_S, REPO

    site = tmp_path / "site"
    cmd = [sys.executable, "-m", "featviz", "microscope", "--model", "cifar_resnet20",
           "--weights", "random", "--device", "cpu", "--layers", "layer1,layer2",
           "--units", "0-3", "--steps", "2", "--size", "32", "--families", "lines",
           "--images", str(photos), "--out", str(site)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    deadline = time.monotonic() + HANG_GUARD_S
    while time.monotonic() < deadline and proc.poll() is None:
        if len(list((site / store.DATA_DIR).rglob("*.json"))) >= 3:
            break
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=HANG_GUARD_S)
    finished = {p: p.stat().st_mtime_ns for p in (site / store.DATA_DIR).rglob("*.json")}
    assert finished and not (site / "index.html").exists()
    again = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=HANG_GUARD_S)
    assert again.returncode == 0, again.stdout + again.stderr
    for path, stamp in finished.items():
        assert path.stat().st_mtime_ns == stamp, f"{path} was written again"
    for layer in ("layer1", "layer2"):
        assert all(store.is_done(site, layer, task) for task in store.TASKS)
    assert (site / "layer2" / "3.html").is_file()


@pytest.mark.slow  # torchrun and two ranks: about half a minute
def test_torchrun_ranks_share_the_views_and_rank_0_writes_the_pages(tmp_path, photos):
    import os
    import re
    import subprocess
    import sys

    from conftest import HANG_GUARD_S, REPO

    site = tmp_path / "site"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node",
           "2", "-m", "featviz", "microscope", "--model", "cifar_resnet20", "--weights",
           "random", "--device", "cpu", "--layers", "layer1,layer2", "--units", "0-3",
           "--steps", "2", "--size", "32", "--families", "lines", "--images", str(photos),
           "--out", str(site)]
    env = {k: v for k, v in os.environ.items()
           if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")}
    env.update(OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=HANG_GUARD_S,
                          cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    ran = re.findall(r"\[rank (\d)/2\] (layer\d): (\w+) in", proc.stdout)
    pieces = [(layer, task) for _, layer, task in ran]
    assert sorted(pieces) == sorted((layer, task) for layer in ("layer1", "layer2")
                                    for task in tasks.LAYER_TASKS)  # each once
    assert {rank for rank, _, _ in ran} == {"0", "1"}  # both ranks worked
    assert all(store.is_done(site, "layer2", task) for task in store.TASKS)
    assert (site / "index.html").is_file() and (site / "layer2" / "3.html").is_file()
    assert len(store.read_task(site, "layer1", "facets")["units"]) == 4


def test_a_run_for_some_units_renders_their_facets_only(tmp_path, photos):
    model = make_tiny()
    site = tmp_path / "site"
    microscope.microscope(model, site, ["conv3"], units="0-5", images=photos,
                          log=lambda msg: None, **TINY)
    again = microscope.microscope(model, site, ["conv3"], units="2-3", images=photos,
                                  log=lambda msg: None, **TINY)
    assert again.sweep.rendered == 0 and again.facets_run == 0  # all of 2-3 was there
    facets = store.read_task(site, "conv3", "facets")["units"]
    assert sorted(map(int, facets)) == [0, 1, 2, 3, 4, 5]
    assert (site / "conv3" / "5.html").is_file() and not (site / "conv3" / "6.html").exists()
