#!/usr/bin/env bash
# Re-makes the runs of RESULTS.md, "The authors' protocol: does it matter?", one after another into the store
# (about half an hour on 2 CPU cores). From the project root:  experiments/results/run-authors.sh [STORE] [SEEDS]
# The three recipes of experiments/results/fashion-mnist/authors/, seeds 0..SEEDS-1 (default 3), seed-major so
# that the arms share the machine's state alike. A run that fails is reported and the next one starts.
set -uo pipefail
store=${1:-experiments/results/authors}
seeds=${2:-3}
for seed in $(seq 0 $((seeds - 1))); do
  for recipe in CP CPA CP-frozen-bn; do
    mtm run "experiments/results/fashion-mnist/authors/$recipe.toml" --home "$store" --set "train.seed=$seed" \
      || echo "run-authors: $recipe seed $seed did not finish; see mtm list --home $store" >&2
  done
done
