"""No traceback, no surprise: every mistake on the command line gets one line that names the
bad value and what would be right, with exit status 2, before any model loads where the
mistake is in the arguments; Ctrl-C exits 130 (render keeps what it made); a real bug prints
a traceback and asks to be reported, exit status 1."""

from __future__ import annotations

import os
import shlex
import signal
import stat
import urllib.error

import numpy as np
import pytest
from PIL import Image

from featviz import cli
from featviz.cli import main

pytestmark = pytest.mark.usefixtures("one_thread")

R = "--model mobilenet_v2 --weights random --device cpu"
# a working command of each kind; {first} is its positional argument (an image, a folder)
BASE = {
    "render": "render {R} --objective channel:features.2:0 --size 32 --steps 1 --no-progress "
              "--out {t}/o.png",
    "layers": "layers {R}",
    "deconv": "deconv {first} {R} --layer features.2 --channel 0 --size 32 --out {t}/d.png",
    "topk": "topk {R} --images {t}/imgs --layer features.2 --channels 0-1 --size 32 "
            "--out {t}/t.png",
    "occlude": "occlude {first} {R} --size 32 --out {t}/o.png",
    "invert": "invert {first} {R} --layers features.2 --size 32 --steps 1 --no-progress "
              "--out {t}/i.png",
    "erf": "erf {R} --layers features.2 --size 32 --samples 1 --out {t}/e.png",
    "maps": "maps {first} {R} --size 32 --out {t}/m.html",
    "sweep": "sweep {R} --layers features.2 --channels 0 --size 32 --steps 1 --out {t}/sw",
    "gallery": "gallery {first}",
    "models": "models",
}


def command_line(command: str, extra: str, t) -> list[str]:
    """``command``'s working base with ``extra`` after it; an ``extra`` that starts with
    ``first=PATH`` replaces the base's positional argument."""
    words = shlex.split(extra.format(t=t))
    first = str(t / ("adir" if command == "gallery" else "img.png"))
    if words and words[0].startswith("first="):
        first = words.pop(0)[len("first="):]
    return shlex.split(BASE[command].format(t=t, R=R, first=first)) + words


# (command, what is added to its working base command, texts the one-line message holds).
# A later option replaces the base's value, so each row changes one thing.
BAD = [
    # numbers out of range, not numbers, not finite
    ("render", "--steps -5", ["--steps must be from 0 to 1000000, got -5"]),
    ("render", "--steps 100000000000", ["from 0 to 1000000", "100000000000"]),
    ("render", "--steps many", ["--steps must be a whole number", "'many'"]),
    ("render", "--steps 2.5", ["whole number", "'2.5'"]),
    ("render", "--size -32", ["--size must be from 16 to 8192 pixels, got -32"]),
    ("render", "--size 0", ["from 16 to 8192 pixels, got 0"]),
    ("render", "--size 1", ["from 16 to 8192 pixels, got 1"]),
    ("render", "--size 1000000", ["from 16 to 8192 pixels, got 1000000"]),
    ("render", "--size 8193", ["got 8193"]),
    ("render", "--seed 99999999999999999999999", ["--seed must be from 0 to 9223372036854775807",
                                                  "99999999999999999999999"]),
    ("render", "--seed -1", ["--seed must be from 0", "got -1"]),
    ("render", "--lr nan", ["--lr must be a finite number above 0", "'nan'"]),
    ("render", "--lr -1", ["--lr must be a finite number above 0", "'-1'"]),
    ("render", "--lr 0", ["above 0", "'0'"]),
    ("render", "--lr inf", ["finite", "'inf'"]),
    ("render", "--lr fast", ["finite number above 0 (e.g. 0.05)", "'fast'"]),
    ("render", "--lr-schedule cosin", ["--lr-schedule", "'cosin'", "constant", "cosine"]),
    ("render", "--stop-at nan", ["--stop-at must be a finite number", "'nan'"]),
    ("render", "--until-converged --stop-at 3", ["--stop-at", "--until-converged"]),
    ("render", "--std 0,0,0", ["--std must be finite numbers above 0, got '0,0,0'"]),
    ("render", "--std 0.5,-1,0.5", ["above 0", "'0.5,-1,0.5'"]),
    ("render", "--mean inf,0,0", ["--mean must be finite numbers", "'inf,0,0'"]),
    ("render", "--mean a,b,c", ["--mean must be numbers separated by commas", "'a,b,c'"]),
    ("render", "--batch-size 0", ["--batch-size must be at least 1, got 0"]),
    ("render", "--thresholds 32,-1", ["--thresholds must be step numbers from 0 to 1000000",
                                      "'32,-1'"]),
    ("layers", "--size 0", ["--size must be from 16 to 8192 pixels, got 0"]),
    ("deconv", "--channel -1", ["--channel must be at least 0, got -1"]),
    ("deconv", "--position 3", ["--position must be Y,X", "'3'"]),
    ("deconv", "--position 1,-2", ["Y,X", "'1,-2'"]),
    ("deconv", "--size 1", ["from 16 to 8192 pixels, got 1"]),
    ("topk", "--k 0", ["--k must be at least 1, got 0"]),
    ("topk", "--batch-size 0", ["--batch-size must be at least 1, got 0"]),
    ("topk", "--batch-size -3", ["--batch-size must be at least 1, got -3"]),
    ("occlude", "--class 1 --patch 0", ["--patch must be at least 1, got 0"]),
    ("occlude", "--class 1 --stride 0", ["--stride must be at least 1, got 0"]),
    ("occlude", "--class 1 --stride -8", ["--stride must be at least 1, got -8"]),
    ("occlude", "--class -1", ["--class must be at least 0, got -1"]),
    ("occlude", "--layer features.2 --channel x", ["--channel must be a whole number", "'x'"]),
    ("invert", "--steps -1", ["--steps must be from 0 to 1000000, got -1"]),
    ("invert", "--steps 10000000", ["from 0 to 1000000, got 10000000"]),
    ("invert", "--seed -5", ["--seed must be from 0", "got -5"]),
    ("invert", "--size 5", ["from 16 to 8192 pixels, got 5"]),
    ("erf", "--samples 0", ["--samples must be from 1 to 1000000, got 0"]),
    ("erf", "--samples 5000000", ["from 1 to 1000000, got 5000000"]),
    ("erf", "--channel -1", ["--channel must be at least 0, got -1"]),
    ("maps", "--size 100000", ["from 16 to 8192 pixels, got 100000"]),
    ("sweep", "--steps 0", ["--steps must be from 1 to 1000000, got 0"]),
    ("sweep", "--batch-size 0", ["--batch-size must be at least 1, got 0"]),
    ("sweep", "--k 0", ["--k must be at least 1, got 0"]),
    ("sweep", "--lr nan", ["--lr must be a finite number above 0", "'nan'"]),
    ("sweep", "--seed 18446744073709551616", ["--seed must be from 0 to 9223372036854775807"]),
    ("sweep", "--size 1", ["from 16 to 8192 pixels, got 1"]),
    # layer lists
    ("invert", "--layers ''", ["--layers names no layer: ''", "features.2,features.7"]),
    ("invert", "--layers ' , '", ["--layers names no layer: ' , '"]),
    ("erf", "--layers ,", ["--layers names no layer: ','"]),
    ("maps", "--layers ''", ["--layers names no layer"]),
    ("sweep", "--layers ' , '", ["--layers names no layer"]),
    # devices
    ("render", "--device tpu9", ["--device names an unknown device 'tpu9'", "has: cpu"]),
    ("render", "--device cuda:x", ["unknown device 'cuda:x'"]),
    ("render", "--device ''", ["unknown device ''"]),
    ("render", "--device meta", ["'meta', a device this machine does not have", "cpu"]),
    ("layers", "--device tpu9", ["unknown device 'tpu9'"]),
    ("invert", "--device cuda:99", ["'cuda:99', a device this machine does not have"]),
    ("sweep", "--device xla", ["'xla'"]),
    # outputs: suffixes, folders, files in the way, unwritable places, special files
    ("render", "--out {t}/o.txt", ["cannot write", "o.txt: '.txt' is not an image format",
                                   ".png"]),
    ("render", "--out {t}/afile/o.png", ["a file stands where its folder should be", "afile"]),
    ("render", "--out /proc/featviz-test/o.png", ["cannot write /proc/featviz-test/o.png"]),
    ("render", "--out /proc/o.png", ["cannot write /proc/o.png"]),
    ("render", "--out {t}/adir", ["cannot write", "adir: it is a folder", "give a file path"]),
    ("render", "--out {t}/fifo.png", ["fifo.png: it is a FIFO (named pipe)"]),
    ("render", "--gif {t}/g.png", ["--gif must be a .gif file", "g.png"]),
    ("render", "--gif /proc/g.gif", ["cannot write /proc/g.gif"]),
    ("render", "--objective channel:features.2:0-3 --out {t}/sheet",
     ["--out", "sheet needs a suffix such as .png", "5 images"]),
    ("deconv", "--out {t}/d.txt", ["'.txt' is not an image format"]),
    ("topk", "--out {t}/adir", ["adir: it is a folder"]),
    ("occlude", "--class 1 --out {t}/o.jpg2", ["'.jpg2' is not an image format"]),
    ("invert", "--out {t}/fifo.png", ["it is a FIFO"]),
    ("erf", "--out {t}/x.txt", ["'.txt' is not a figure format", ".png", ".pdf"]),
    ("erf", "--out {t}/adir", ["adir: it is a folder"]),
    ("maps", "--out /proc/featviz-test/m.html", ["cannot write /proc/featviz-test/m.html"]),
    ("maps", "--out {t}/adir", ["adir: it is a folder"]),
    ("sweep", "--out {t}/afile", ["--out must be a folder", "afile"]),
    ("sweep", "--out /proc/featviz-test", ["cannot write into /proc/featviz-test"]),
    ("gallery", "--out /proc/featviz-test/index.html", ["cannot write /proc/featviz-test"]),
    ("gallery", "--out {t}/adir", ["adir: it is a folder"]),
    ("gallery", "--out {t}/fifo.png", ["it is a FIFO"]),
    # inputs
    ("deconv", "first={t}/missing.png", ["image must be an existing file",
                                                 "missing.png", "not found"]),
    ("occlude", "first={t}/adir --class 1", ["image must be an existing file", "adir", "a folder"]),
    ("render", "--init {t}/missing.png", ["--init must be an existing file", "missing.png"]),
    ("maps", "--labels {t}/bin.txt", ["cannot read class names from", "bin.txt",
                                      "not UTF-8 text", "one class name per line"]),
    ("maps", "--labels {t}/none.txt", ["--labels must be an existing file", "none.txt"]),
    ("gallery", "first={t}/nowhere", ["sweep folder not found", "nowhere"]),
    ("gallery", "", ["adir holds no sweep manifest", "featviz sweep --out"]),
    # options that do not go together, or are missing
    ("occlude", "", ["say what to watch: --layer LAYER with --channel C, or --class K"]),
    ("occlude", "--class 1 --layer features.2 --channel 0", ["--class 1 cannot go with "
                                                              "--layer/--channel"]),
    ("occlude", "--layer features.2", ["--layer features.2 needs --channel C"]),
    ("occlude", "--channel 3", ["--channel 3 needs --layer LAYER"]),
    ("occlude", "--class 1 --patch 33", ["--patch 33 is larger than the 32x32 image",
                                         "use at most 32"]),
    ("invert", "--caricature --cosine", ["--caricature cannot go with --cosine", "give one"]),
    ("render", "--param cppn --pixel", ["--pixel", "--param cppn"]),
    ("render", "--param maco --alpha", ["--alpha goes with --param fourier or pixel",
                                        "not --param maco"]),
    ("render", "--param image", ["--param: invalid choice: 'image'", "fourier"]),
    ("render", "--transforms wobble", ["invalid choice: 'wobble'", "standard"]),
    ("render", "--objective channel:features.2", ["channel:LAYER:C"]),
    ("topk", "--channels 0-x", ["--channels must be channels such as 12, 0-7", "'0-x'"]),
    ("sweep", "--channels 0-x", ["--channels takes 'all', a range like 0-63"]),
    ("deconv", "--mode upside", ["invalid choice: 'upside'", "guided"]),
    ("erf", "--init pretrained", ["invalid choice: 'pretrained'", "trained"]),
    ("render", "--adam-floor -1", ["--adam-floor", "must be a finite number of at least 0"]),
    ("render", "--rail-guard -2", ["--rail-guard", "must be a finite number of at least 0"]),
    ("render", "--polish -1", ["--polish must be at least 0, got -1"]),
    ("render", "--compile fastest", ["invalid choice: 'fastest'", "reduce-overhead"]),
    ("render", "--colour red", ["unrecognized arguments: --colour red"]),
    ("models", "--all", ["unrecognized arguments: --all"]),
    ("layers", "--out x.png", ["unrecognized arguments: --out x.png"]),
]

# mistakes the parser cannot see: they need the command line as a whole
WHOLE = [
    ("", ["the following arguments are required: command"]),
    ("render --model mobilenet_v2", ["required", "--objective", "--out"]),
    ("rendr --model mobilenet_v2", ["invalid choice: 'rendr'", "render"]),
    ("deconv --model mobilenet_v2 --layer a --channel 0 --out {t}/x.png",
     ["required: image"]),
]


@pytest.fixture
def t(tmp_path):
    """A folder with what the rows refer to: an image, a folder of images, a binary file, a
    plain file, an empty folder and a FIFO."""
    rng = np.random.default_rng(0)
    Image.fromarray((rng.random((40, 40, 3)) * 255).astype(np.uint8)).save(tmp_path / "img.png")
    (tmp_path / "imgs").mkdir()
    Image.open(tmp_path / "img.png").save(tmp_path / "imgs" / "a.png")
    (tmp_path / "bin.txt").write_bytes(bytes(range(256)) * 4)
    (tmp_path / "afile").write_text("x")
    (tmp_path / "adir").mkdir()
    os.mkfifo(tmp_path / "fifo.png")
    return tmp_path


@pytest.fixture
def no_model(monkeypatch):
    """Loading a model is a failure here: these mistakes must be found before."""
    def refuse(args):
        raise AssertionError("the model was loaded before the mistake was found")

    monkeypatch.setattr(cli, "_load_model", refuse)


def run(argv: list[str], capsys) -> tuple[int, str]:
    code = main(argv)
    return code, capsys.readouterr().err


def _one_clear_line(code: int, err: str, expected: list[str]) -> None:
    assert code == 2, err
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1 or "objective strings" in err, err  # the grammar follows its line
    assert lines[0].startswith("featviz")
    assert ": error: " in lines[0]
    for text in expected:
        assert text in err, f"{text!r} not in {err!r}"


@pytest.mark.parametrize("command, extra, expected", BAD,
                         ids=[f"{c} {e}" for c, e, _ in BAD])
def test_bad_input(t, no_model, capsys, command, extra, expected):
    code, err = run(command_line(command, extra, t), capsys)
    _one_clear_line(code, err, expected)


@pytest.mark.parametrize("line, expected", WHOLE, ids=[w[0] or "nothing" for w in WHOLE])
def test_bad_command_line(tmp_path, no_model, capsys, line, expected):
    code, err = run(shlex.split(line.format(t=tmp_path)), capsys)
    _one_clear_line(code, err, expected)


def test_the_battery_covers_every_command():
    assert {c for c, _, _ in BAD} == set(BASE)
    assert len(BAD) + len(WHOLE) >= 80


def test_every_base_command_works_as_it_is(t, capsys):
    """The rows change one thing of a working command: the cheap bases run through."""
    for command, extra in [("models", ""), ("layers", ""), ("deconv", ""),
                           ("occlude", "--class 1")]:
        assert main(command_line(command, extra, t)) == 0
    assert "Traceback" not in capsys.readouterr().err


# mistakes that need the model (its layers, its input size) or the weights
AFTER_LOADING = [
    ("deconv", "--layer features.99", ["unknown layer 'features.99'", "closest"]),
    ("deconv", "--channel 999", ["valid: 0-"]),
    ("topk", "--images {t}/nowhere", ["image folder not found", "nowhere"]),
    ("topk", "--images {t}/adir", ["adir"]),
    ("invert", "--layers features.2,nosuch", ["unknown layer 'nosuch'"]),
    ("erf", "--layers nosuch", ["unknown layer 'nosuch'"]),
    ("maps", "--labels {t}/short.txt", ["2 class names for a model with 1000 outputs"]),
    ("render", "--weights {t}/w.pth", ["weights file not found", "w.pth"]),
    ("layers", "--model resnet_50", ["unknown model 'resnet_50'", "'resnet50'"]),
]


@pytest.mark.parametrize("command, extra, expected", AFTER_LOADING,
                         ids=[f"{c} {e}" for c, e, _ in AFTER_LOADING])
def test_bad_input_found_with_the_model(t, capsys, command, extra, expected):
    (t / "short.txt").write_text("a\nb\n")
    code, err = run(command_line(command, extra, t), capsys)
    _one_clear_line(code, err, expected)


def test_patch_larger_than_the_models_input_size(t, capsys):
    argv = [a for a in command_line("occlude", "--class 1 --patch 300", t)]
    del argv[argv.index("--size"):argv.index("--size") + 2]  # the model's 224 px
    code, err = run(argv, capsys)
    _one_clear_line(code, err, ["--patch 300 is larger than the 224x224 image",
                                "use at most 224"])


def test_offline_download_names_both_ways_out(t, monkeypatch, capsys):
    import torchvision.models._api as api

    def offline(*args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(api, "load_state_dict_from_url", offline)
    code, err = run(["layers", "--model", "mobilenet_v2"], capsys)  # --weights DEFAULT
    _one_clear_line(code, err, ["could not download", "--weights PATH", "--weights random"])


def test_weights_default_is_the_same_everywhere():
    import argparse

    sub = next(a for a in cli.build_parser()._actions
               if isinstance(a, argparse._SubParsersAction))
    parsers = dict(sub.choices)
    for name, p in sub.choices.items():  # a command with steps: `dictionary train`
        steps = [a for a in p._actions if isinstance(a, argparse._SubParsersAction)]
        parsers.update({f"{name} {s}": q for a in steps for s, q in a.choices.items()})
    defaults = {name: p.get_default("weights") for name, p in parsers.items()
                if any(a.dest == "weights" for a in p._actions)}
    assert set(defaults) == {"render", "layers", "deconv", "topk", "occlude", "invert", "erf",
                             "maps", "blocks", "atlas", "circuit", "microscope", "sweep",
                             "dictionary train", "dictionary show", "paths", "accentuate"}
    assert set(defaults.values()) == {"DEFAULT"}


def test_every_option_has_help():
    import argparse

    sub = next(a for a in cli.build_parser()._actions
               if isinstance(a, argparse._SubParsersAction))
    missing = [f"{name} {a.option_strings or a.dest}" for name, p in sub.choices.items()
               for a in p._actions if not a.help]
    assert missing == []
    render_help = sub.choices["render"].format_help()
    assert "speed:" in render_help and "speed (GPU)" not in render_help


def test_an_unknown_cuda_device_without_a_gpu(tmp_path, monkeypatch, capsys):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    code, err = run(command_line("layers", "--device cuda", tmp_path), capsys)
    _one_clear_line(code, err, ["'cuda', a device this machine does not have", "has: cpu"])


def test_out_through_a_symlink_writes_the_target_and_keeps_the_link(tmp_path):
    (tmp_path / "real").mkdir()
    target = tmp_path / "real" / "target.png"
    link = tmp_path / "link.png"
    link.symlink_to(target)
    assert main(command_line("render", f"--out {link}", tmp_path)) == 0
    assert link.is_symlink() and os.readlink(link) == str(target)
    with Image.open(target) as im:
        assert im.size == (32, 32)


def test_fifo_out_is_refused_and_left_alone(t, no_model, capsys):
    code, err = run(command_line("render", "--out {t}/fifo.png", t), capsys)
    _one_clear_line(code, err, ["fifo.png: it is a FIFO (named pipe)", "featviz writes only "
                                                                        "regular files"])
    assert stat.S_ISFIFO(os.stat(t / "fifo.png").st_mode)


def test_a_bug_prints_a_traceback_and_asks_for_a_report(tmp_path, monkeypatch, capsys):
    import featviz.models

    def broken(*args, **kwargs):
        raise ZeroDivisionError("an internal mistake")

    monkeypatch.setattr(featviz.models, "layer_table", broken)
    argv = command_line("layers", "", tmp_path)
    code, err = run(argv, capsys)
    assert code == 1
    assert "Traceback" in err and "ZeroDivisionError: an internal mistake" in err
    assert err.strip().splitlines()[-1] == (
        "featviz layers: this is a bug in featviz, please report it with the command: "
        f"featviz {shlex.join(argv)}")


def test_out_of_memory_is_bad_input_not_a_bug(tmp_path, monkeypatch, capsys):
    import featviz.models

    def huge(*args, **kwargs):
        raise RuntimeError("[enforce fail at alloc_cpu.cpp:127] DefaultCPUAllocator: can't "
                           "allocate memory: you tried to allocate 2199023255552 bytes")

    monkeypatch.setattr(featviz.models, "layer_table", huge)
    code, err = run(command_line("layers", "", tmp_path), capsys)
    _one_clear_line(code, err, ["not enough memory", "smaller --size"])


def test_os_errors_of_the_library_are_one_line(tmp_path, monkeypatch, capsys):
    import featviz.models

    def denied(*args, **kwargs):
        raise PermissionError(13, "Permission denied", "/data/photo.png")

    monkeypatch.setattr(featviz.models, "layer_table", denied)
    code, err = run(command_line("layers", "", tmp_path), capsys)
    _one_clear_line(code, err, ["/data/photo.png: Permission denied"])


def _sigint_at(monkeypatch, calls: set[int]):
    """Load the model as the command would, with a hook that sends this process SIGINT
    (a real Ctrl-C) at the given forward calls."""
    real = cli._load_model
    seen = []

    def load(args):
        model = real(args)

        def hook(module, inputs):
            seen.append(1)
            if len(seen) in calls:
                os.kill(os.getpid(), signal.SIGINT)

        model.register_forward_pre_hook(hook)
        return model

    monkeypatch.setattr(cli, "_load_model", load)


def test_first_ctrl_c_keeps_what_render_made(tmp_path, monkeypatch, capsys):
    _sigint_at(monkeypatch, {4})
    out = tmp_path / "o.png"
    code, err = run(command_line("render", "--steps 1000", tmp_path), capsys)
    assert code == 130 and "Traceback" not in err
    assert "interrupted (Ctrl-C) after" in err and f"wrote what was made so far to {out}" in err
    with Image.open(out) as im:
        assert im.size == (32, 32)


def test_second_ctrl_c_stops_at_once(tmp_path, monkeypatch, capsys):
    import featviz.images

    _sigint_at(monkeypatch, {4})
    real_save = featviz.images.save

    def save_interrupted(*args, **kwargs):  # the second Ctrl-C, while the image is written
        os.kill(os.getpid(), signal.SIGINT)
        return real_save(*args, **kwargs)

    monkeypatch.setattr(featviz.images, "save", save_interrupted)
    code, err = run(command_line("render", "--steps 1000", tmp_path), capsys)
    assert code == 130 and "Traceback" not in err
    assert err.strip().splitlines()[-1] == ("featviz render: interrupted (Ctrl-C); nothing "
                                            "more was written")
    assert not (tmp_path / "o.png").exists()


def test_ctrl_c_in_another_long_command(t, monkeypatch, capsys):
    _sigint_at(monkeypatch, {2})
    code, err = run(command_line("invert", "--steps 1000", t), capsys)
    assert code == 130 and "Traceback" not in err
    assert err.strip().splitlines()[-1] == ("featviz invert: interrupted (Ctrl-C); nothing "
                                            "more was written")


def test_ctrl_c_stops_a_sweep_with_130(tmp_path, monkeypatch, capsys):
    _sigint_at(monkeypatch, {3})
    code = main(command_line("sweep", "--steps 1000 --channels 0-3 --batch-size 1", tmp_path))
    said = capsys.readouterr()
    assert code == 130 and "Traceback" not in said.err
    assert "interrupted by signal" in said.out and "run the same command again" in said.out


def test_warnings_are_one_tidy_line(t, monkeypatch, capsys):
    import warnings

    import featviz.models

    code = main(command_line("render", "--steps 0", t))
    err = capsys.readouterr().err
    assert code == 0
    assert "featviz: warning: --steps 0: nothing is optimized" in err
    assert "UserWarning" not in err and ".py:" not in err
    # a warning from inside the library, over two lines, as render's flat-objective one
    real = featviz.models.layer_table

    def warns(*args, **kwargs):
        warnings.warn("the objective stayed at about zero\nfor channel 3", stacklevel=2)
        return real(*args, **kwargs)

    monkeypatch.setattr(featviz.models, "layer_table", warns)
    assert main(command_line("layers", "", t)) == 0
    err = capsys.readouterr().err
    assert err == "featviz: warning: the objective stayed at about zero for channel 3\n"


def test_statistics_of_another_channel_count_are_named_once_the_model_is_known(tmp_path, capsys):
    """--mean/--std take one number per input channel of any model, so their count is checked
    against the model when it loads: one line, exit 2."""
    code, err = run(["render", *R.split(), "--std", "1,2", "--objective", "channel:features.2:0",
                     "--size", "32", "--steps", "1", "--no-progress", "--out",
                     str(tmp_path / "o.png")], capsys)
    _one_clear_line(code, err, ["std needs 1 or 3 values", "the network takes 3", "(1.0, 2.0)"])
