#!/usr/bin/env bash
# Re-makes the runs of RESULTS.md, "The paper's open questions", one after another into the store
# (about 3 hours on 2 CPU cores). From the project root:  experiments/results/run-questions.sh [STORE] [SEEDS]
# For each of the 10 losses in experiments/results/fashion-mnist/losses/: a few-shot run trained on
# classes 0-4 (mtm eval --fewshot 1, 5, 10), then SEEDS (default 3) seeds on all classes, each
# evaluated for certainty against MNIST (mtm eval --certainty --ood mnist).
# A run that fails is reported and the next one starts.
set -uo pipefail
store=${1:-experiments/results/store}
seeds=${2:-3}
losses="CP P PP E C CM PA PNCA NS AF"
run_id() { python3 -c 'import json, sys; print(json.loads(sys.stdin.read().strip().splitlines()[-1])["run_id"])'; }
warn() { echo "run-questions: $*; see mtm list --home $store" >&2; }

for code in $losses; do
  recipe=experiments/results/fashion-mnist/losses/$code.toml
  if id=$(mtm run "$recipe" --json --home "$store" --set "data.holdout_classes=[5,6,7,8,9]" \
            --set eval.retrieval=false --set "name=fashion-mnist-fewshot-$code" | run_id); then
    mtm eval "$id" --fewshot 1 --fewshot 5 --fewshot 10 --home "$store" || warn "few-shot of $id failed"
  else
    warn "the few-shot run of $code did not finish"
  fi
done
for seed in $(seq 0 $((seeds - 1))); do
  for code in $losses; do
    if id=$(mtm run "experiments/results/fashion-mnist/losses/$code.toml" --json --home "$store" \
              --set "train.seed=$seed" | run_id); then
      mtm eval "$id" --certainty --ood mnist --home "$store" || warn "certainty of $id failed"
    else
      warn "$code seed $seed did not finish"
    fi
  done
done
