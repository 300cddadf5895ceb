"""The example scripts run end to end (tiny settings; they need the real weights)."""

from __future__ import annotations

import subprocess
import sys

import pytest
from conftest import MOBILENET, REPO

needs_weights = pytest.mark.skipif(not MOBILENET.is_file(),
                                   reason=f"real MobileNetV2 weights not found at {MOBILENET}")


def _run(script: str, *args: str) -> str:
    proc = subprocess.run([sys.executable, str(REPO / "examples" / script), *args],
                          capture_output=True, text=True, timeout=600, cwd=REPO)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


@needs_weights
def test_inversion_example(tmp_path):
    out = _run("inversion.py", "--steps", "3", "--layers", "features.2,features.4",
               "--out", str(tmp_path))
    assert "| features.4 |" in out and (tmp_path / "cat_inversions.png").exists()


@needs_weights
def test_deconvnet_example(tmp_path):
    out = _run("deconvnet.py", "--channels", "0-1", "--k", "2", "--layers", "features.7",
               "--out", str(tmp_path))
    assert "projected square drops the activation" in out
    assert (tmp_path / "features.7_top2.png").exists()


@needs_weights
def test_centering_example(tmp_path):
    out = _run("centering.py", "--layers", "features.0.0,features.7", "--out", str(tmp_path))
    assert "features.0.0 variance ratio" in out and "top-1 agrees for" in out
    assert (tmp_path / "centering.html").exists()


@needs_weights
def test_decorrelation_benchmark_quick(tmp_path):
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / "decorrelation_vs_jitter.py"),
                           "--quick", "--out", str(tmp_path)], capture_output=True, text=True,
                          timeout=600, cwd=REPO)
    assert proc.returncode == 0, proc.stderr
    for config in ("pixel", "Fourier + colour + robustness"):
        assert f"| {config} |" in proc.stdout
    assert (tmp_path / "decorrelation_vs_jitter.png").exists()


def test_objectives_example_quick_on_a_tiny_model(tmp_path):
    out = _run("objectives.py", "--quick", "--model", "cifar_resnet20", "--weights", "random",
               "--out", str(tmp_path))
    assert "softmax" in out and (tmp_path / "objectives.png").exists()
