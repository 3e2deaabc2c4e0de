#!/usr/bin/env bash
# The wheels the GPU check needs and the GPU machine lacks, made here (with network) and carried there (without):
#
#     bash bench/gpu-wheels.sh [DIR]        # DIR: default .whl (git ignores it)
#
# The GPU machine (see the device tool's KINDS.md) has Python 3.12, torch 2.11.0+cu130, torchvision 0.26.0, pytest,
# typer, rich, numpy, scikit-learn, nvidia-ml-py, setuptools and wheel, and no network. It lacks textual,
# textual-plotext, plotext, tinydb, hyperopt, ray and pytorch-metric-learning. A device call carries at most 64 MiB,
# so Ray (a 79 MB wheel) and hyperopt (with scipy) stay behind: no step of the check starts a sweep.
# What goes: mtm itself (built here, so the machine needs no build backend), and the rest of what it imports,
# for CPython 3.12 on manylinux x86_64, each with --no-deps, so that nothing the machine already has is replaced.
set -euo pipefail
cd "$(dirname "$0")/.."
dir=${1:-.whl}
limit_mib=64
python=${PYTHON:-python3}
rm -rf "$dir" && mkdir -p "$dir"

"$python" -m pip wheel --no-deps -q -w "$dir" .
# The TUI and its charts, the store, the proxy losses; and what those need beyond the machine's packages
# (textual: platformdirs, mdit-py-plugins and markdown-it-py's linkify; the metric library: tqdm).
missing=(
    "textual==8.2.8" "textual-plotext>=1.0.1" "plotext>=5.3.2,<6" "tinydb>=4.9.0,<5" "pytest-timeout>=2.3"
    "pytorch-metric-learning>=2.9.0" "tqdm" "platformdirs>=3.6,<5" "mdit-py-plugins" "linkify-it-py" "uc-micro-py"
)
"$python" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux_2_28_x86_64 \
    -d "$dir" "${missing[@]}"

total=$(du -cb "$dir"/*.whl | tail -1 | cut -f1)
ls -l "$dir"
echo "$(ls "$dir"/*.whl | wc -l) wheels, $((total / 1024)) KiB in $dir (limit ${limit_mib} MiB)"
if [ "$total" -gt $((limit_mib * 1024 * 1024)) ]; then
    echo "gpu-wheels: $dir holds more than ${limit_mib} MiB, more than a device call carries" >&2
    exit 1
fi
