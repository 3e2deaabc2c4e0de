#!/usr/bin/env bash
# The prepared GPU check, on a GPU machine with no network, in two commands of at most about 4 + 4 minutes:
#
#     bash bench/gpu.sh OUT DATA --steps versions,tests,train      # installs (once), then the first steps
#     bash bench/gpu.sh OUT DATA --steps paper,share               # the same install, the other steps
#     bash bench/gpu.sh OUT DATA --dry-run                         # every step, small, on the CPU (digits)
#
# OUT: a folder for gpu.log and gpu.json (the figures). DATA: a folder holding FashionMNIST/raw/*.gz.
# The wheels come from ./.whl, made beforehand by `bash bench/gpu-wheels.sh` on a machine with network: mtm itself
# and what it imports that the GPU machine lacks. They are installed with --no-index --no-deps into ./.gpu-site
# (put on PYTHONPATH), not into the machine's Python: its own torch is never touched, no build backend is needed,
# and a Python that refuses pip installs (externally managed, or a venv whose site-packages differ) is no obstacle.
# Other arguments go to bench/gpu.py (its --help lists the steps).
set -euo pipefail
cd "$(dirname "$0")/.."
usage="usage: bash bench/gpu.sh OUT DATA [--steps a,b] [--dry-run]"
out=${1:?$usage}
data=${2:?$usage}
shift 2
mkdir -p "$out"
python=${PYTHON:-python3}
site=$PWD/.gpu-site
{
    date
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
    "$python" -c 'import sys, torch; print(f"python {sys.version.split()[0]}, torch {torch.__version__}")'
    if [ ! -f "$site/.installed" ]; then
        ls .whl/*.whl >/dev/null 2>&1 || { echo "gpu.sh: no wheels in .whl; run bash bench/gpu-wheels.sh first"; exit 1; }
        rm -rf "$site"
        "$python" -m pip install -q --no-index --no-deps --target "$site" .whl/*.whl
        touch "$site/.installed"
    fi
} 2>&1 | tee -a "$out/gpu.log"
export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}" PATH="$site/bin:$PATH"
exec "$python" bench/gpu.py "$out" --data "$data" "$@"
