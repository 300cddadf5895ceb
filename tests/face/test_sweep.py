"""Whole-model sweeps: job split, torchrun, interruption and resume, manifests, errors."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pytest
import torch
from conftest import HANG_GUARD_S, REPO, make_tiny

import featviz
from featviz import objectives as obj
from featviz import sweep as sw
from featviz.cli import main
from featviz.errors import FeatvizError

SWEEP = [sys.executable, "-m", "featviz", "sweep", "--model", "cifar_resnet20", "--weights",
         "random", "--device", "cpu", "--size", "32"]
TINY = {"steps": 2, "size": 16, "transforms": "none", "log": lambda msg: None}


pytestmark = pytest.mark.usefixtures("one_thread")


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")}
    env["OMP_NUM_THREADS"] = "1"  # two ranks on a shared 2-core machine
    env["PYTHONPATH"] = str(REPO)
    return env


def _lines(out: Path) -> list[dict]:
    """Every manifest line of every rank, each of which must parse."""
    return [json.loads(line) for p in sorted(out.glob("manifest.rank*.jsonl"))
            for line in p.read_text().splitlines() if line.strip()]


def test_job_list_split_and_batches():
    jobs = sw.job_list({"a": [0, 1, 2, 5], "b": [3, 4, 7]}, seed=10)
    assert [j.index for j in jobs] == list(range(7))
    assert [j.seed for j in jobs] == [10, 11, 12, 15, 13, 14, 17]  # seed + channel
    shares = [sw.shard(jobs, r, 3) for r in range(3)]
    assert sorted(j.index for s in shares for j in s) == list(range(7))  # a partition
    assert [j.index for j in shares[1]] == [1, 4]
    groups = list(sw.batches(sw.shard(jobs, 0, 1), 3))
    assert [[(j.layer, j.channel) for j in g] for g in groups] == [
        [("a", 0), ("a", 1), ("a", 2)], [("a", 5)], [("b", 3), ("b", 4), ("b", 7)]]
    with pytest.raises(ValueError, match="rank 2 is outside a world of 2"):
        sw.shard(jobs, 2, 2)


@pytest.mark.slow
def test_torchrun_two_ranks_render_the_job_list_exactly_once(tmp_path):
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node",
           "2", *SWEEP[1:], "--layers", "layer1,layer2.0.conv1", "--channels", "0-4",
           "--steps", "2", "--batch-size", "2", "--out", str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=HANG_GUARD_S, env=_env(),
                          cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    records = _lines(out)
    keys = [(r["layer"], r["channel"]) for r in records]
    expected = [(layer, c) for layer in ("layer1", "layer2.0.conv1") for c in range(5)]
    assert len(keys) == len(set(keys)) == 10  # no job twice
    assert set(keys) == set(expected)  # and none missing
    for rank in (0, 1):  # both ranks worked, each into its own manifest only
        text = (out / f"manifest.rank{rank}.jsonl").read_text()
        mine = [json.loads(x) for x in text.splitlines()]
        assert mine and {r["rank"] for r in mine} == {rank}
        assert {r["world_size"] for r in mine} == {2}
    for r in records:
        assert (out / r["file"]).is_file() and r["seed"] == r["channel"]
    assert "10 of 10 jobs done" in proc.stdout and "on 2 rank(s)" in proc.stdout


@pytest.mark.slow
def test_sigterm_midway_loses_nothing_and_renders_nothing_twice(tmp_path):
    out = tmp_path / "run"
    cmd = [*SWEEP, "--layers", "layer1", "--channels", "0-7", "--steps", "24",
           "--batch-size", "1", "--out", str(out)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=_env(), cwd=tmp_path)
    manifest = out / "manifest.rank0.jsonl"
    deadline = time.monotonic() + HANG_GUARD_S  # waits for the first image, however slow
    while time.monotonic() < deadline and proc.poll() is None:
        if manifest.is_file() and manifest.read_text().count("\n") >= 1:
            break
        time.sleep(0.02)
    proc.send_signal(signal.SIGTERM)
    stdout, stderr = proc.communicate(timeout=HANG_GUARD_S)
    assert proc.returncode == 128 + signal.SIGTERM, stdout + stderr
    assert "interrupted by signal" in stdout
    first = _lines(out)
    assert 1 <= len(first) < 8, "the signal should land midway"
    stamps = {r["file"]: ((out / r["file"]).stat().st_ino, (out / r["file"]).stat().st_mtime_ns)
              for r in first}

    again = subprocess.run(cmd, capture_output=True, text=True, timeout=HANG_GUARD_S, env=_env(),
                           cwd=tmp_path)
    assert again.returncode == 0, again.stdout + again.stderr
    assert f"{len(first)} already done, {8 - len(first)} to render" in again.stdout
    assert f"8 of 8 jobs done; this run rendered {8 - len(first)}" in again.stdout
    records = _lines(out)  # every line parses
    assert sorted(r["channel"] for r in records) == list(range(8))  # one line per job
    for name, stamp in stamps.items():  # finished images were not rendered again
        p = out / name
        assert (p.stat().st_ino, p.stat().st_mtime_ns) == stamp
    assert all((out / r["file"]).is_file() for r in records)
    assert not list(out.rglob("*.tmp"))


def test_corrupt_or_cut_manifest_lines_are_ignored_with_a_warning(tmp_path):
    model = make_tiny()
    sw.sweep(model, tmp_path, ["conv3"], "0-3", **TINY)
    manifest = tmp_path / "manifest.rank0.jsonl"
    lines = manifest.read_text().splitlines()
    assert [json.loads(x)["channel"] for x in lines] == [0, 1, 2, 3]
    # channel 1: garbage; channel 3: cut off mid-line with no newline, as a kill would leave it
    manifest.write_text("\n".join([lines[0], "{not json", lines[2], lines[3][:40]]))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        res = sw.sweep(model, tmp_path, ["conv3"], "0-3", **TINY)
    said = [str(w.message) for w in caught]
    assert len(said) == 2 and "line 2 is not a complete manifest record" in said[0]
    assert "line 4 is not" in said[1] and "rendered again" in said[1]
    assert sorted(r["channel"] for r in res.records) == [1, 3]
    assert (res.rendered, res.skipped) == (2, 2)
    with warnings.catch_warnings(record=True):
        warnings.simplefilter("always")
        good = sw.read_manifests(tmp_path)
    # the cut line was ended before appending: the new records start on lines of their own
    assert sorted(r["channel"] for r in good) == [0, 1, 2, 3]

    (tmp_path / sw.image_file("conv3", 2)).unlink()  # a line whose image is gone: not done
    with warnings.catch_warnings(record=True):
        warnings.simplefilter("always")
        res = sw.sweep(model, tmp_path, ["conv3"], "0-3", **TINY)
    assert [r["channel"] for r in res.records] == [2]


def test_same_image_on_one_rank_or_two(tmp_path):
    model = make_tiny()
    kw = {**TINY, "steps": 6, "transforms": "standard", "size": 24, "seed": 3}
    one = sw.sweep(model, tmp_path / "one", ["conv2", "conv3"], "0,2,5,6,9", batch=4, **kw)
    two = [sw.sweep(model, tmp_path / "two", ["conv2", "conv3"], "0,2,5,6,9", batch=3,
                    rank=r, world_size=2, **kw) for r in (0, 1)]
    assert one.rendered == 10 and [t.rendered for t in two] == [5, 5]
    split = {(r["layer"], r["channel"]): r for t in two for r in t.records}
    for rec in one.records:
        other = split[(rec["layer"], rec["channel"])]
        assert rec["seed"] == other["seed"] == 3 + rec["channel"]
        a = featviz.images.load(tmp_path / "one" / rec["file"])
        b = featviz.images.load(tmp_path / "two" / other["file"])
        assert (a - b).abs().max() <= 1 / 255 + 1e-6  # PNG rounding of equal floats at most
        assert rec["value"] == pytest.approx(other["value"], rel=1e-3, abs=1e-4)
    # and the same image as `render` with that seed, as the module docstring promises
    alone = featviz.render(model, obj.channel("conv3", 5), steps=6, size=24, seed=8,
                           progress=False)
    rec = next(r for r in one.records if r["layer"] == "conv3" and r["channel"] == 5)
    disk = featviz.images.load(tmp_path / "one" / rec["file"])
    assert (alone.images - disk).abs().max() <= 1 / 255 + 1e-4


def test_resume_refuses_other_settings_and_extends_channels(tmp_path):
    model = make_tiny()
    sw.sweep(model, tmp_path, ["conv3"], "0-1", **TINY)
    with pytest.raises(FeatvizError, match=r"steps: 2 then, 3 now.*another --out"):
        sw.sweep(model, tmp_path, ["conv3"], "0-1", **{**TINY, "steps": 3})
    res = sw.sweep(model, tmp_path, ["conv3", "conv1"], "0-3", **TINY)
    assert (res.rendered, res.skipped, res.total) == (6, 2, 8)
    assert sw.read_settings(tmp_path)["layers"] == {"conv3": [0, 1, 2, 3], "conv1": [0, 1, 2, 3]}


def test_a_sweep_records_its_pace_and_resumes_only_at_it(tmp_path):
    model = make_tiny()
    sw.sweep(model, tmp_path, ["conv3"], "0-1", **TINY)
    recorded = sw.read_settings(tmp_path)["settings"]
    assert (recorded["pace"], recorded["lr"]) == ("fast", 0.1)  # the values used, not "auto"
    with pytest.raises(FeatvizError, match=r"lr: 0\.1 then, 0\.05 now.*pace: 'fast' then, "
                                           r"'careful' now"):
        sw.sweep(model, tmp_path, ["conv3"], "0-1", pace="careful", **TINY)
    # a folder from before the pace existed was made with the careful course, and says no pace
    old = tmp_path / "old"
    sw.sweep(model, old, ["conv3"], "0-1", pace="careful", **TINY)
    meta = json.loads((old / "sweep.json").read_text())
    meta["settings"].pop("pace")
    (old / "sweep.json").write_text(json.dumps(meta))
    for path in old.glob("manifest.rank*.jsonl"):
        lines = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        for record in lines:
            record["settings"].pop("pace")
        path.write_text("".join(json.dumps(r) + "\n" for r in lines))
    res = sw.sweep(model, old, ["conv3"], "0-2", pace="careful", **TINY)
    assert (res.rendered, res.skipped) == (1, 2)


def test_a_signal_between_batches_stops_after_the_writes(tmp_path):
    seen = []

    def log(msg):  # deliver SIGTERM right after the first batch is recorded
        seen.append(msg)
        if "(2/" in msg:
            os.kill(os.getpid(), signal.SIGTERM)

    before = signal.getsignal(signal.SIGTERM)
    res = sw.sweep(make_tiny(), tmp_path, ["conv3"], "0-5", batch=2,
                   **{**TINY, "log": log})
    assert res.interrupted and res.signal == signal.SIGTERM
    assert res.rendered == 2 and len(_lines(tmp_path)) == 2
    assert signal.getsignal(signal.SIGTERM) is before  # the handler is put back


def test_one_writer_per_manifest(tmp_path):
    with sw.Manifest(tmp_path, 0), pytest.raises(FeatvizError, match="another featviz sweep"):
        sw.Manifest(tmp_path, 0)
    with sw.Manifest(tmp_path, 0):  # released on close
        pass


def test_channel_counts_and_spec():
    assert sw.channel_counts(make_tiny(), ["conv1", "conv3", "fc"], 16) == {
        "conv1": 8, "conv3": 16, "fc": 10}
    assert sw.parse_channel_spec("all") is None
    assert sw.parse_channel_spec("5,1-3,2") == [1, 2, 3, 5]


@pytest.mark.parametrize("args, expected", [
    (["--layers", "layer1.0.conv9"], "unknown layer 'layer1.0.conv9'; closest: 'layer1.0.conv"),
    (["--layers", "layer1", "--channels", "3,16"], "channel 16 is out of range for layer "
                                                   "'layer1', which has 16 channels (valid: 0-15)"),
    (["--layers", "layer1", "--channels", "0-x"], "--channels takes 'all', a range like 0-63"),
    (["--layers", "layer1", "--batch-size", "0"], "--batch-size must be at least 1, got 0"),
    (["--layers", " , "], "--layers names no layer"),
])
def test_sweep_errors_are_clear(tmp_path, capsys, args, expected):
    code = main(["sweep", *SWEEP[4:], "--steps", "2", *args, "--out", str(tmp_path / "x")])
    assert code == 2
    assert expected in capsys.readouterr().err
    assert not list((tmp_path / "x").glob("manifest*"))


def test_without_a_launcher_no_process_group(monkeypatch):
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    assert sw.distributed_env() is None
    with sw.distributed("cpu") as (rank, world, device):
        assert (rank, world, device) == (0, 1, "cpu")
        assert not torch.distributed.is_initialized()
    monkeypatch.setenv("RANK", "3")
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert sw.distributed_env() == (3, 4, 1)


def test_a_sweep_with_another_parameterization_records_it(tmp_path):
    model = make_tiny()
    res = sw.sweep(model, tmp_path, ["conv3"], "0-1", param="maco", **TINY)
    assert {r["settings"]["param"] for r in res.records} == {"maco"}
    assert {r["settings"]["lr"] for r in res.records} == {featviz.param.maco(8).lr}
    with pytest.raises(FeatvizError, match=r"param: 'maco' then, 'laplacian' now"):
        sw.sweep(model, tmp_path, ["conv3"], "0-1", param="laplacian", **TINY)


def test_a_sweep_uses_and_records_the_course_a_model_declares(tmp_path):
    """A model's declared transforms (a vision transformer's course) are what a sweep renders
    with when it is not told otherwise, recorded by name; a named preset still wins."""
    course = [featviz.transforms.jitter(2), featviz.transforms.color_jitter(0.1, 1.2)]
    model = make_tiny()
    model.featviz_render = {"transforms": course}  # as featviz.models.wrap(render=) sets it
    plain = {k: v for k, v in TINY.items() if k != "transforms"}
    res = sw.sweep(model, tmp_path / "course", ["conv3"], "0-1", **plain)
    assert {r["settings"]["transforms"] for r in res.records} == {repr(course)}
    saved = featviz.images.load(tmp_path / "course" / res.records[1]["file"])

    def render(**options):
        return featviz.render(model, obj.channel("conv3", 1), steps=2, size=16,
                              seed=res.records[1]["seed"], progress=False, **options).images

    # the saved image is the course's render (to PNG rounding), not lucid's transforms'
    assert (render() - saved).abs().max() <= 1 / 255 + 1e-6
    assert (render(transforms="standard") - saved).abs().max() > 2 / 255
    named = sw.sweep(model, tmp_path / "named", ["conv3"], "0-1", transforms="none", **plain)
    assert {r["settings"]["transforms"] for r in named.records} == {"none"}
