#!/usr/bin/env bash
# Everything that needs a GPU, in one go: the CUDA tests, then the speed, fast-path and sweep
# benchmarks; each writes its output to OUT_DIR (default ./gpu_results) as it goes.
#
#   bash benchmarks/on_gpu.sh [OUT_DIR]
#
# Needs a Python with torch and torchvision that sees the GPU. kornia, lucent and their needs
# may come as wheels in ./.whl (for a Python 3.12 machine without package access:
#   pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#     --platform manylinux_2_17_x86_64 -d .whl kornia kornia_rs decorator
#   pip download --no-deps -d .whl torch-lucent==0.1.8 ),
# and the real MobileNetV2 weights beside the checkout (../shared/models) or in FEATVIZ_SHARED.
set -uo pipefail
cd "$(dirname "$0")/.."
out=${1:-gpu_results}
mkdir -p "$out"
if compgen -G ".whl/*.whl" >/dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/featviz_site .whl/*.whl
    export PYTHONPATH=/tmp/featviz_site:${PYTHONPATH:-}
fi
export PYTHONPATH=$PWD:${PYTHONPATH:-} PYTHONUNBUFFERED=1
python3 - <<'EOF' | tee "$out/device.txt"
import torch
print(torch.__version__, torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU")
EOF
python3 -m pytest -q -p no:cacheprovider tests/test_render.py tests/test_truncate.py \
    tests/test_real_mobilenet.py -k "cuda or bf16 or compile or truncat" 2>&1 | tee "$out/tests.txt"
python3 benchmarks/speed.py --no-memory 2>&1 | tee "$out/speed.txt"
python3 benchmarks/fast_paths.py 2>&1 | tee "$out/fast_paths.txt"
python3 benchmarks/sweep_speed.py --devices cuda --channels 64 2>&1 | tee "$out/sweep_speed.txt"
