#!/usr/bin/env bash
# Everything that needs a GPU, in one go, each part under its own time limit so that the whole
# fits in about 13 minutes on an H100/H200: first time_to_quality.py (featviz's defaults
# against lucent on the CNNs whose weights .gpu/shared holds), the CUDA tests, speed.py
# (against the floor and lucent), fast_paths.py (bf16 and channels-last at three depths; torch.compile and CUDA
# graphs at one), and the GPU rows of sweep_speed.py. Each part writes its table into OUT_DIR
# (default ./gpu_results) as it goes, so a part cut short still leaves what it printed.
#
#   bash benchmarks/gpu_prep.sh              # first, where pip works: fills .gpu/
#   bash benchmarks/on_gpu.sh [OUT_DIR] [PARTS]   # PARTS: ttq,tests,speed,fast,compile,sweep
#
# Needs a Python with torch and torchvision that sees the GPU; kornia and lucent come as wheels
# from .gpu/whl if they are not installed, the real weights from .gpu/shared (or
# FEATVIZ_SHARED, or ../shared).
set -uo pipefail
cd "$(dirname "$0")/.."
out=${1:-gpu_results}
parts=${2:-ttq,tests,speed,fast,compile,sweep}
mkdir -p "$out"
if ! python3 -c "import kornia, lucent" 2>/dev/null && compgen -G ".gpu/whl/*.whl" >/dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/featviz_site \
        .gpu/whl/*.whl
    export PYTHONPATH=/tmp/featviz_site:${PYTHONPATH:-}
fi
[ -d .gpu/shared ] && export FEATVIZ_SHARED=${FEATVIZ_SHARED:-$PWD/.gpu/shared}
export PYTHONPATH=$PWD:${PYTHONPATH:-} PYTHONUNBUFFERED=1
has() { [[ ",$parts," == *",$1,"* ]]; }

python3 -c "import torch; print(torch.__version__, torch.cuda.get_device_name(0)
      if torch.cuda.is_available() else 'no GPU')" 2>&1 | tee "$out/device.txt"
if has ttq; then  # the issue-44 table first: channels and logits of the four CNNs
    timeout 240 python3 benchmarks/time_to_quality.py --device cuda --kinds channel logit \
        --models inceptionv1 googlenet mobilenet_v2 cifar_resnet56 2>&1 | tee "$out/ttq.txt"
fi
if has tests; then
    timeout 150 python3 -m pytest -q -p no:cacheprovider tests/core/test_render.py \
        tests/core/test_truncate.py tests/models/test_real_mobilenet.py -k "cuda or bf16" \
        2>&1 | tee "$out/tests.txt"
fi
if has speed; then
    timeout 200 python3 benchmarks/speed.py --no-memory 2>&1 | tee "$out/speed.txt"
fi
if has fast; then
    timeout 30 python3 benchmarks/transforms_cost.py --device cuda 2>&1 \
        | tee "$out/transforms_cost.txt"
    timeout 90 python3 benchmarks/fast_paths.py \
        --variants fp32,bf16,channels_last,bf16+channels_last 2>&1 | tee "$out/fast_paths.txt"
fi
if has compile; then  # each compiled variant compiles once: one layer keeps this short
    timeout 120 python3 benchmarks/fast_paths.py --layers features.10 \
        --variants fp32,compile,reduce-overhead,reduce-overhead+bf16 \
        2>&1 | tee "$out/compile.txt"
fi
if has sweep; then
    timeout 60 python3 benchmarks/sweep_speed.py --devices cuda --channels 64 \
        2>&1 | tee "$out/sweep_speed.txt"
fi
