#!/usr/bin/env bash
# Gathers, on a machine with package access, what benchmarks/on_gpu.sh needs on a GPU machine
# that has torch but no package access: wheels for kornia and lucent (Python 3.12, x86-64) in
# .gpu/whl, and the real weights of MobileNetV2, BVLC GoogLeNet and a CIFAR ResNet-56 in
# .gpu/shared/models (time_to_quality.py's CNNs; ViT-Tiny's file would pass the 64 MiB a
# device call carries). .gpu/ is kept out of git (.git/info/exclude); take it along with the
# checkout (about 55 MB).
#
#   bash benchmarks/gpu_prep.sh [SHARED_DIR]     # SHARED_DIR: default ../shared
set -euo pipefail
cd "$(dirname "$0")/.."
shared=${1:-../shared}
grep -qx "/.gpu/" .git/info/exclude 2>/dev/null || echo "/.gpu/" >> .git/info/exclude
mkdir -p .gpu/whl .gpu/shared/models .gpu/shared/images
py=(--only-binary=:all: --python-version 3.12 --implementation cp
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64
    --platform manylinux2014_x86_64)
python3 -m pip download -q --no-deps "${py[@]}" -d .gpu/whl "kornia>=0.7" kornia_rs decorator
python3 -m pip download -q --no-deps -d .gpu/whl torch-lucent==0.1.8
cp "$shared/models/mobilenet_v2_imagenet_coral.pth" "$shared/models/imagenet_classes.txt" \
    "$shared/models/googlenet_bvlc_imagenet.pth" "$shared/models/resnet56_cifar10.pth" \
    .gpu/shared/models/
cp "$shared"/images/*.jpg .gpu/shared/images/ 2>/dev/null || true
du -sh .gpu
