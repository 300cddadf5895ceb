"""What a newcomer hit on the command line: ``--model``'s help names the canonical model and
where the rest are listed; ``--out`` without a suffix is an error that suggests ``NAME.png``
instead of a PNG nothing recognizes; ``featviz --version``."""

from __future__ import annotations

import shlex

import numpy as np
import pytest
from PIL import Image

from featviz import __version__, cli
from featviz.cli import main

pytestmark = pytest.mark.usefixtures("one_thread")

R = "--model mobilenet_v2 --weights random --device cpu"


def _help(command: str, capsys) -> str:
    assert main([command, "--help"]) == 0
    return " ".join(capsys.readouterr().out.split())  # argparse wraps lines anywhere


@pytest.mark.parametrize("command", ["render", "layers", "maps", "sweep", "deconv"])
def test_model_help_names_inceptionv1_first_and_points_to_featviz_models(command, capsys):
    text = _help(command, capsys)
    text = text[text.index("options:"):]  # the help of each flag, after the usage lines
    model = text[text.index("--model MODEL "):text.index("--weights WEIGHTS ")]
    assert model.split()[2] == "inceptionv1", model
    assert "mixed4a" in model and "`featviz models` lists every name" in model
    assert "googlenet" in model and "timm:NAME" in model and "hf:" in model


def test_version_flag(capsys):
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"featviz {__version__}"


@pytest.fixture
def t(tmp_path):
    rng = np.random.default_rng(0)
    Image.fromarray((rng.random((40, 40, 3)) * 255).astype(np.uint8)).save(tmp_path / "img.png")
    (tmp_path / "imgs").mkdir()
    Image.open(tmp_path / "img.png").save(tmp_path / "imgs" / "a.png")
    return tmp_path


# each image or figure output, with a name that has no suffix
NO_SUFFIX = {
    "render": "render {R} --objective features.2:0 --size 32 --steps 1 --no-progress "
              "--out {t}/channel",
    "deconv": "deconv {t}/img.png {R} --layer features.2 --channel 0 --size 32 --out {t}/proj",
    "topk": "topk {R} --images {t}/imgs --layer features.2 --channels 0 --size 32 "
            "--out {t}/patches",
    "occlude": "occlude {t}/img.png {R} --class 1 --size 32 --out {t}/heat",
    "invert": "invert {t}/img.png {R} --layers features.2 --size 32 --steps 1 --no-progress "
              "--out {t}/inverted",
    "erf": "erf {R} --layers features.2 --size 32 --samples 1 --out {t}/fields",
    # --png before --store: argparse checks values in order, and --store makes its folder
    "atlas": "atlas {t}/imgs {R} --layer features.2 --png {t}/atlas --store {t}/store "
             "--size 32 --out {t}/atlas.html",
}


@pytest.mark.parametrize("command", sorted(NO_SUFFIX))
def test_an_output_without_a_suffix_is_refused_before_the_model_loads(t, command, capsys,
                                                                       monkeypatch):
    def refuse(args):
        raise AssertionError("the model was loaded before the mistake was found")

    monkeypatch.setattr(cli, "_load_model", refuse)
    before = sorted(p.name for p in t.iterdir())
    code = main(shlex.split(NO_SUFFIX[command].format(R=R, t=t)))
    err = capsys.readouterr().err
    assert code == 2, err
    line, = err.strip().splitlines()
    name = next(word for word in shlex.split(NO_SUFFIX[command].format(R=R, t=t))
                if word.startswith(str(t)) and "." not in word.rsplit("/", 1)[-1]
                and word.rsplit("/", 1)[-1] not in ("imgs", "store"))
    assert line.startswith(f"featviz {command}: error: --")
    assert "needs a suffix such as .png" in line and name in line
    assert f"write {name}.png" in line
    assert sorted(p.name for p in t.iterdir()) == before  # nothing written


def test_an_output_with_a_suffix_still_works(t):
    assert main(shlex.split(NO_SUFFIX["render"].format(R=R, t=t)) + ["--out",
                                                                     str(t / "c.jpg")]) == 0
    assert Image.open(t / "c.jpg").format == "JPEG"
