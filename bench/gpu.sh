#!/usr/bin/env bash
# The prepared GPU check, one command on a GPU machine (at most about 8 minutes on one H200, installs included):
#
#     bash bench/gpu.sh OUT DATA
#
# OUT: a folder for gpu.log and gpu.json (the figures). DATA: a folder holding FashionMNIST/raw/*.gz.
# It installs mtm (non-editable) into the machine's python3, the one that holds a CUDA build of torch. A
# machine without internet gets what it lacks of mtm's requirements (and nvidia-ml-py) from wheels in ./.whl,
# downloaded elsewhere for that machine's Python, and keeps its own torch.
# Then bench/gpu.py runs the steps: the gpu-marked tests, bench/train.py on cuda, RN18-PP for 30 epochs,
# 8 fractional sweep trials against one alone, and the queue with 2 slots on one GPU.
# `python bench/gpu.py OUT --dry-run` checks the same steps on a CPU (the test suite runs it).
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:?usage: bash bench/gpu.sh OUT DATA}
data=${2:?usage: bash bench/gpu.sh OUT DATA}
mkdir -p "$out"
python=${PYTHON:-python3}
{
    date
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
    if [ -d .whl ]; then   # no index there: the carried wheels, then mtm on the machine's own torch
        "$python" -m pip install -q --no-index --no-deps .whl/*.whl
        "$python" -m pip install -q --no-index --no-deps --no-build-isolation .
    else
        "$python" -m pip install -q --no-build-isolation '.[gpu]'
    fi
} 2>&1 | tee -a "$out/gpu.log"
exec "$python" bench/gpu.py "$out" --data "$data"
