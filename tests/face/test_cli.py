"""The featviz command: render (one or many images), layers, and clear errors."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from conftest import HANG_GUARD_S
from PIL import Image

from featviz.cli import main

RANDOM = ["--model", "mobilenet_v2", "--weights", "random", "--device", "cpu"]


@pytest.mark.heavy
def test_render_many_channels_in_batches(tmp_path, capsys):
    out = tmp_path / "sheet.png"
    code = main(["render", *RANDOM, "--objective", "channel:features.4:0-4", "--batch-size", "2",
                 "--size", "48", "--steps", "4", "--no-progress", "--out", str(out)])
    assert code == 0
    text = capsys.readouterr().out
    assert text.count("batch ") == 3  # 5 channels in batches of 2, 2, 1
    files = sorted(p.name for p in (tmp_path / "sheet").iterdir())
    assert files == [f"channel_features.4_{c}.png" for c in range(5)]
    assert Image.open(tmp_path / "sheet" / files[0]).size == (48, 48)
    assert Image.open(out).size[0] > 3 * 48  # the contact sheet


def test_render_single_with_gif(tmp_path):
    out, gif = tmp_path / "one.png", tmp_path / "one.gif"
    code = main(["render", *RANDOM, "--mean", "0.5,0.5,0.5", "--std", "0.5", "--objective",
                 "neuron:features.7:3", "--size", "40", "--steps", "6", "--thresholds", "2,4",
                 "--gif", str(gif), "--no-progress", "--out", str(out)])
    assert code == 0
    assert Image.open(out).size == (40, 40)
    assert Image.open(gif).n_frames == 3


@pytest.mark.heavy
def test_render_until_converged_with_a_cosine_rate(tmp_path, capsys):
    out = tmp_path / "one.png"
    code = main(["render", *RANDOM, "--objective", "channel:features.4:0", "--size", "32",
                 "--steps", "4096", "--lr", "1e-9", "--lr-schedule", "cosine",
                 "--until-converged", "--no-progress", "--out", str(out)])
    assert code == 0
    text = capsys.readouterr().out
    # a rate this small leaves the image as it was: flat from the first check, so it stops
    # after three checks of 32 steps
    assert "after 96 steps" in text and "stopped: converged" in text, text
    assert Image.open(out).size == (32, 32)


@pytest.mark.heavy
def test_render_with_ema_changes_the_image(tmp_path):
    outs = [tmp_path / "plain.png", tmp_path / "ema.png"]
    for out, ema in zip(outs, ["0", "0.9"], strict=True):
        assert main(["render", *RANDOM, "--objective", "channel:features.4:0", "--size", "32",
                     "--steps", "24", "--lr", "0.2", "--seed", "1", "--ema", ema,
                     "--no-progress", "--out", str(out)]) == 0
    plain, ema = (np.asarray(Image.open(o), dtype=np.int16) for o in outs)
    assert np.abs(plain - ema).max() > 2  # the average, not the last step


@pytest.mark.heavy
def test_render_with_an_adam_floor_changes_the_image(tmp_path):
    # --adam-floor 0 is plain Adam, the Fourier image's default
    outs = [tmp_path / "plain.png", tmp_path / "zero.png", tmp_path / "floor.png"]
    for out, floor in zip(outs, [[], ["--adam-floor", "0"], ["--adam-floor", "1"]],
                          strict=True):
        assert main(["render", *RANDOM, "--objective", "channel:features.4:0", "--size", "32",
                     "--steps", "24", "--seed", "1", *floor, "--no-progress",
                     "--out", str(out)]) == 0
    plain, zero, floored = (np.asarray(Image.open(o), dtype=np.int16) for o in outs)
    assert np.array_equal(plain, zero)
    assert np.abs(plain - floored).max() > 2


@pytest.mark.parametrize("wall", [["--clipping", "1000"], ["--rail-guard", "4"]])
@pytest.mark.heavy
def test_render_with_a_wall_keeps_colours_off_the_rails(tmp_path, wall):
    # --clipping subtracts a penalty of fixed weight; --rail-guard's push is relative to the
    # objective's pull: both hold a render at a large rate off 0 and 1
    shares = []
    for flags in [[], wall]:
        out = tmp_path / f"{len(flags)}.png"
        assert main(["render", *RANDOM, "--objective", "channel:features.4:0", "--size", "32",
                     "--steps", "32", "--lr", "0.5", "--seed", "1", "--no-progress",
                     "--out", str(out), *flags]) == 0
        img = np.asarray(Image.open(out)) / 255
        shares.append(((img <= 0.02) | (img >= 0.98)).any(axis=-1).mean())
    assert shares[0] > 0.3 and shares[1] < 0.05


@pytest.mark.heavy
def test_render_polish_changes_the_last_steps_and_is_checked_against_steps(tmp_path, capsys):
    outs = [tmp_path / "plain.png", tmp_path / "polished.png"]
    for out, flags in zip(outs, [[], ["--polish", "8"]], strict=True):
        assert main(["render", *RANDOM, "--objective", "channel:features.4:0", "--size", "32",
                     "--steps", "16", "--seed", "1", "--no-progress", "--out", str(out),
                     *flags]) == 0
    plain, polished = (np.asarray(Image.open(o), dtype=np.int16) for o in outs)
    assert np.abs(plain - polished).max() > 2
    assert main(["render", *RANDOM, "--objective", "channel:features.4:0", "--size", "32",
                 "--steps", "4", "--polish", "5", "--no-progress",
                 "--out", str(tmp_path / "x.png")]) == 2
    err = capsys.readouterr().err
    assert "polish must be a whole number of steps from 0 to steps (4)" in err
    assert "Traceback" not in err


def test_layers_lists_shapes(capsys):
    assert main(["layers", "--model", "mobilenet_v2", "--weights", "random"]) == 0
    text = capsys.readouterr().out
    line = next(ln for ln in text.splitlines() if ln.startswith("features.14 "))
    assert "InvertedResidual" in line and "160x7x7" in line


def test_layers_shows_aliases(capsys):
    assert main(["layers", "--model", "googlenet", "--weights", "random"]) == 0
    assert "mixed4a -> inception4a" in capsys.readouterr().out


@pytest.mark.parametrize("args, expected", [
    (["--objective", "channel:features.4"], "channel:LAYER:C"),
    (["--objective", "channel:features.44:1"], "'features.4'"),
    (["--objective", "channel:features.4:999"], "valid: 0-31"),
    (["--objective", "logit:1000"], "valid: 0-999"),
    (["--objective", "channel:features.4:0", "--ema", "1.5"], "ema must be a number in [0, 1)"),
])
@pytest.mark.heavy
def test_render_errors_are_clear(tmp_path, capsys, args, expected):
    code = main(["render", *RANDOM, *args, "--size", "32", "--steps", "2", "--no-progress",
                 "--out", str(tmp_path / "x.png")])
    assert code == 2
    assert expected in capsys.readouterr().err


def test_missing_weights_file(tmp_path, capsys):
    code = main(["render", "--model", "mobilenet_v2", "--weights", str(tmp_path / "w.pth"),
                 "--objective", "channel:features.4:0", "--out", str(tmp_path / "x.png")])
    assert code == 2
    assert "w.pth" in capsys.readouterr().err


def test_unknown_model(capsys):
    assert main(["layers", "--model", "resnet_50"]) == 2
    assert "'resnet50'" in capsys.readouterr().err


@pytest.mark.heavy
def test_python_dash_m_is_the_same_command():
    proc = subprocess.run([sys.executable, "-m", "featviz", "render", "--help"],
                          capture_output=True, text=True, timeout=HANG_GUARD_S)
    assert proc.returncode == 0 and "--objective" in proc.stdout and "neuron:LAYER" in proc.stdout


@pytest.mark.heavy
def test_batch_size_does_not_change_images(tmp_path):
    import numpy as np

    def run(bs: int) -> list:
        out = tmp_path / f"bs{bs}.png"
        assert main(["render", *RANDOM, "--objective", "channel:features.2:0-2", "--batch-size",
                     str(bs), "--size", "32", "--steps", "5", "--no-progress",
                     "--out", str(out)]) == 0
        folder = tmp_path / f"bs{bs}"
        return [np.asarray(Image.open(p), dtype=int) for p in sorted(folder.iterdir())]

    for a, b in zip(run(3), run(1), strict=True):
        assert np.abs(a - b).max() <= 1


def test_init_image_is_the_starting_point(tmp_path):
    import numpy as np

    rng = np.random.default_rng(0)
    photo = (rng.uniform(0.1, 0.9, (40, 40, 3)) * 255).astype(np.uint8)
    Image.fromarray(photo).save(tmp_path / "photo.png")
    out = tmp_path / "same.png"
    assert main(["render", *RANDOM, "--objective", "channel:features.2:0", "--size", "40",
                 "--steps", "0", "--init", str(tmp_path / "photo.png"), "--no-progress",
                 "--out", str(out)]) == 0
    assert np.abs(np.asarray(Image.open(out), dtype=int) - photo).max() <= 1


def test_unreadable_init_image_names_path(tmp_path, capsys):
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"not an image")
    assert main(["render", *RANDOM, "--objective", "channel:features.2:0", "--init", str(bad),
                 "--out", str(tmp_path / "x.png")]) == 2
    assert "broken.jpg" in capsys.readouterr().err


@pytest.mark.heavy
def test_invert_command(tmp_path, capsys):
    import numpy as np

    rng = np.random.default_rng(1)
    Image.fromarray((rng.random((60, 50, 3)) * 255).astype(np.uint8)).save(tmp_path / "p.png")
    out = tmp_path / "row.png"
    assert main(["invert", str(tmp_path / "p.png"), *RANDOM, "--layers", "features.1,features.3",
                 "--steps", "3", "--size", "48", "--no-progress", "--out", str(out)]) == 0
    assert "| features.3 |" in capsys.readouterr().out
    assert Image.open(out).size[0] > 3 * 48


@pytest.mark.heavy
def test_deconv_topk_occlude_commands(tmp_path, capsys):
    import numpy as np

    rng = np.random.default_rng(2)
    for i in range(3):
        Image.fromarray((rng.random((40, 40, 3)) * 255).astype(np.uint8)).save(
            tmp_path / f"{i}.png")
    common = [*RANDOM, "--size", "48"]
    assert main(["deconv", str(tmp_path / "0.png"), *common, "--layer", "features.3",
                 "--channel", "2", "--mode", "guided", "--out", str(tmp_path / "d.png")]) == 0
    assert main(["topk", *common, "--images", str(tmp_path), "--layer", "features.3",
                 "--channels", "0-1", "--k", "2", "--out", str(tmp_path / "t.png")]) == 0
    assert main(["occlude", str(tmp_path / "1.png"), *common, "--class", "3", "--patch", "16",
                 "--stride", "16", "--out", str(tmp_path / "o.png")]) == 0
    text = capsys.readouterr().out
    assert "features.3:0:" in text and "receptive field" in text
    for name in ("d.png", "t.png", "o.png"):
        assert (tmp_path / name).stat().st_size > 0


@pytest.mark.heavy
def test_erf_command(tmp_path, capsys):
    out = tmp_path / "erf.png"
    assert main(["erf", "--model", "cifar_resnet20", "--weights", "random", "--device", "cpu",
                 "--layers", "layer1.0,layer2.0", "--samples", "2", "--size", "40",
                 "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "| layer2.0 |" in text and out.stat().st_size > 0


def test_circuit_command(tmp_path, capsys):
    out, cache = tmp_path / "circuit.png", tmp_path / "renders"
    args = ["circuit", "--model", "cifar_resnet20", "--weights", "random", "--device", "cpu",
            "--unit", "layer2.0:3", "--source", "layer1", "--next", "layer2.1", "--top", "2",
            "--steps", "2", "--cache", str(cache), "--out", str(out)]
    assert main(args) == 0
    text = capsys.readouterr().out
    assert "layer2.0:3 excited by layer1:" in text and "excites layer2.1:" in text
    assert out.stat().st_size > 0 and len(list(cache.glob("*.png"))) >= 5
    assert main(args[:-4] + ["--source", "layer3", "--out", str(out)]) == 2
    assert "'layer3' runs after target 'layer2.0'" in capsys.readouterr().err


def test_maps_command(tmp_path, capsys):
    import numpy as np

    rng = np.random.default_rng(3)
    Image.fromarray((rng.random((50, 50, 4)) * 255).astype(np.uint8), "RGBA").save(
        tmp_path / "rgba.png")
    (tmp_path / "names.txt").write_text("\n".join(f"n{i}" for i in range(1000)))
    out = tmp_path / "report.html"
    assert main(["maps", str(tmp_path / "rgba.png"), *RANDOM, "--size", "48", "--layers",
                 "features.1,features.3", "--labels", str(tmp_path / "names.txt"),
                 "--out", str(out)]) == 0
    assert "n" in capsys.readouterr().out and "features.3" in out.read_text()
    (tmp_path / "notes.txt").write_text("not an image")
    assert main(["maps", str(tmp_path / "notes.txt"), *RANDOM, "--out", str(out)]) == 2
    assert "notes.txt" in capsys.readouterr().err


@pytest.mark.parametrize("choice", [["--param", "maco"], ["--param", "laplacian"],
                                    ["--param", "cppn"], ["--alpha"],
                                    ["--param", "pixel", "--alpha"]])
@pytest.mark.heavy
def test_render_with_each_parameterization(tmp_path, choice):
    out = tmp_path / "p.png"
    code = main(["render", *RANDOM, "--objective", "channel:features.4:1", *choice, "--size",
                 "32", "--steps", "3", "--no-progress", "--out", str(out)])
    assert code == 0
    with Image.open(out) as im:
        assert im.size == (32, 32) and im.mode == ("RGBA" if "--alpha" in choice else "RGB")


@pytest.mark.parametrize("args, expected", [
    (["--param", "cppn", "--alpha"],
     "--alpha goes with --param fourier or pixel, not --param cppn"),
    (["--spectrum", "x.pt"], "--spectrum goes with --param maco, not --param fourier"),
    (["--param", "maco", "--spectrum", "missing.pt"], "spectrum file not found: missing.pt"),
])
def test_parameterization_options_are_checked(tmp_path, capsys, args, expected):
    code = main(["render", *RANDOM, "--objective", "channel:features.4:1", *args, "--size",
                 "32", "--steps", "1", "--no-progress", "--out", str(tmp_path / "p.png")])
    assert code == 2 and expected in capsys.readouterr().err


def _render_png(tmp_path, name: str, *args: str) -> bytes:
    out = tmp_path / f"{name}.png"
    code = main(["render", *RANDOM, "--objective", "channel:features.4:1", *args, "--size",
                 "32", "--steps", "2", "--no-progress", "--out", str(out)])
    assert code == 0
    with Image.open(out) as im:
        return im.tobytes()


@pytest.mark.heavy
def test_render_spells_parameterizations_as_sweep_does(tmp_path):
    """--param takes the library's kinds with fourier as the default; --pixel is the old
    spelling of --param pixel and renders the same image."""
    fourier = _render_png(tmp_path, "default")
    assert _render_png(tmp_path, "fourier", "--param", "fourier") == fourier
    pixel = _render_png(tmp_path, "pixel", "--param", "pixel")
    assert pixel != fourier
    assert _render_png(tmp_path, "old", "--pixel") == pixel
    assert _render_png(tmp_path, "both", "--pixel", "--param", "pixel") == pixel


@pytest.mark.parametrize("args, flags", [
    (["--pixel", "--param", "maco"], ["--pixel", "--param maco"]),
    (["--pixel", "--param", "fourier"], ["--pixel", "--param fourier"]),
    (["--alpha", "--param", "laplacian"], ["--alpha", "--param laplacian"]),
    (["--alpha", "--pixel", "--param", "maco"], ["--pixel", "--param maco"]),
    (["--spectrum", "s.pt", "--param", "cppn"], ["--spectrum", "--param cppn"]),
    (["--spectrum", "s.pt", "--pixel"], ["--spectrum", "--param pixel"]),
])
def test_flags_that_do_not_fit_the_parameterization(tmp_path, capsys, args, flags):
    """One line naming both flags, exit status 2, before the model loads (the weights file
    does not even exist)."""
    code = main(["render", "--model", "mobilenet_v2", "--weights", str(tmp_path / "none.pth"),
                 "--objective", "channel:features.4:1", *args, "--out", str(tmp_path / "p.png")])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert err.startswith("featviz render: error: ") and "none.pth" not in err
    assert all(flag in err for flag in flags)


def test_param_image_is_no_longer_a_spelling(tmp_path, capsys):
    assert main(["render", *RANDOM, "--objective", "channel:features.4:1", "--param", "image",
                 "--out", str(tmp_path / "x.png")]) == 2
    assert "invalid choice: 'image'" in capsys.readouterr().err


def _choices(command: str, dest: str) -> tuple:
    import argparse

    from featviz.cli import build_parser

    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    action = next(a for a in sub.choices[command]._actions if a.dest == dest)
    return tuple(action.choices)


def test_choices_are_the_librarys_registries():
    from featviz import deconv, param, receptive_field, transforms, truncate

    for command in ("render", "sweep"):
        assert _choices(command, "param") == tuple(param.KINDS)
        assert _choices(command, "transforms") == ("auto", *transforms.PRESETS)
        assert _choices(command, "compile") == truncate.COMPILE_MODES
    for command in ("deconv", "topk"):
        assert _choices(command, "mode") == deconv.MODES
    assert _choices("erf", "init") == receptive_field.ERF_WEIGHTS


def test_maco_spectrum_from_a_folder_needs_enough_photos(tmp_path, capsys):
    for i in range(2):
        Image.new("RGB", (20, 20), (50 * i, 0, 0)).save(tmp_path / f"{i}.png")
    code = main(["render", *RANDOM, "--objective", "channel:features.4:1", "--param", "maco",
                 "--spectrum", str(tmp_path), "--size", "32", "--steps", "1", "--no-progress",
                 "--out", str(tmp_path / "p.png")])
    assert code == 2 and "holds 2 image file(s)" in capsys.readouterr().err


@pytest.mark.heavy
def test_speed_options_reach_render_and_sweep(tmp_path, monkeypatch):
    """--amp, --channels-last and --compile [MODE] are handed to every render, of `render`
    and of `sweep` alike."""
    import importlib

    module = importlib.import_module("featviz.render")  # featviz.render is the function
    seen = []
    real = module.render

    def spy(*args, **kwargs):
        seen.append({k: kwargs.get(k) for k in ("amp", "memory_format", "compile")})
        return real(*args, **{**kwargs, "compile": False, "steps": 1})

    monkeypatch.setattr(module, "render", spy)
    common = ["--size", "32", "--steps", "1"]
    assert main(["render", *RANDOM, "--objective", "channel:features.2:0", *common, "--amp",
                 "--compile", "--no-progress", "--out", str(tmp_path / "a.png")]) == 0
    assert main(["render", *RANDOM, "--objective", "channel:features.2:0", *common,
                 "--channels-last", "--compile", "reduce-overhead", "--no-progress",
                 "--out", str(tmp_path / "b.png")]) == 0
    assert main(["sweep", *RANDOM, "--layers", "features.2", "--channels", "0-1", *common,
                 "--compile", "--out", str(tmp_path / "sweep")]) == 0
    assert seen[0] == {"amp": True, "memory_format": "contiguous", "compile": "default"}
    assert seen[1] == {"amp": False, "memory_format": "channels_last",
                       "compile": "reduce-overhead"}
    assert seen[2] == {"amp": False, "memory_format": "contiguous", "compile": "default"}
    assert main(["render", *RANDOM, "--objective", "channel:features.2:0", "--compile",
                 "fastest", "--out", str(tmp_path / "c.png")]) == 2
