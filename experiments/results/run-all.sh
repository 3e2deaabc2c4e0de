#!/usr/bin/env bash
# Re-makes every number in RESULTS.md: 6 losses x 2 datasets x 3 seeds, one after another
# (about 2 hours on 2 CPU cores), into the store that RESULTS.md was exported from.
# From the project root:  experiments/results/run-all.sh [STORE]   (default experiments/results/store)
# A recipe whose run fails (a diverged seed) is reported and the next one starts.
set -uo pipefail
store=${1:-experiments/results/store}
for dataset in fashion-mnist mnist; do
  for loss in PP E C CP CM P; do
    mtm run "experiments/results/$dataset/CNN-$loss.toml" --seeds 3 --home "$store" \
      || echo "run-all: $dataset CNN-$loss did not finish; see mtm list --home $store" >&2
  done
done
