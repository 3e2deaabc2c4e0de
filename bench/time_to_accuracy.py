"""Time to the paper's accuracy: our results recipe against the paper's own pipeline, on one CPU.

    python bench/time_to_accuracy.py --root ../shared/data --store experiments/results/store \\
        --ours experiments/results/fashion-mnist/headline-CP.toml --classifier euc

Two figures, measured side by side in this one run (alternating, `--repeats` times each):
  paper   the RN18-PP preset (experiments/paper/best/fashion-mnist/RN18-PP.toml): ResNet18, the
          paper's transforms (resize 44, crop 36), batch 100, Adam; `--images` training images of an
          epoch timed, the img/s extrapolated to its 30 epochs of 48,000 images (training only: the
          paper's evaluation would add to it)
  ours    the `--ours` recipe's training, timed the same way, for its img/s on this CPU now
Then, from the store, the time our recipe's runs took to reach `--target` (the paper's 91.20 on
F-MNIST); its runs are the finished ones of its configuration (`mtm export`'s cells: the whole spec but
name and seed, so `--set train.epochs=15` reads the runs made with that override): the first epoch E
at which the mean over seeds of the test accuracy at the validation-selected epoch (among epochs 1..E)
reaches the target, and the recorded training plus evaluation seconds of epochs 1..E (the median
over seeds, so that one seed which shared the CPU with other work does not count). A run stopped at E
would have run its schedule to the end in E epochs, so this reading of longer runs is conservative.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

from mtm_engine.config import Spec, load_spec
from mtm_engine.data import Split, load_dataset
from mtm_engine.errors import MtmError
from mtm_engine.models import build_model
from mtm_engine.optim import make_optimiser
from mtm_engine.records import acc_key, config_id
from mtm_engine.store import Store
from mtm_engine.train import train_one_epoch

PAPER = Path(__file__).resolve().parent.parent / "experiments" / "paper" / "best" / "fashion-mnist" / "RN18-PP.toml"
PAPER_EPOCHS, TRAIN_IMAGES = 30, 48_000


def images_per_s(spec, split: Split) -> float:
    """Training img/s over `split` (a slice of an epoch), after two warm-up batches."""
    torch.manual_seed(0)
    model = build_model(spec.model, split.x.shape[1], 10)
    optimiser = make_optimiser(spec, model)
    warm = 2 * spec.train.batch_size
    train_one_epoch(model, split.subset(torch.arange(warm)), spec, optimiser, 1)
    start = time.perf_counter()
    train_one_epoch(model, split, spec, optimiser, 1)
    return len(split) / (time.perf_counter() - start)


def time_to_target(store: Store, recipe: Spec, target: float, classifier: str) -> tuple[int, float, int] | None:
    """(epoch E, median seconds of epochs 1..E over seeds, seeds) for the recipe's finished runs, or None.
    The runs are the seeds of its configuration, as `mtm export` groups them: 10- and 15-epoch runs of
    one name are not seeds of one recipe (a longer cosine schedule reaches an epoch at a higher rate)."""
    config = config_id(recipe.to_dict())
    runs = [store.run(r["id"]) for r in store.rows()
            if r["status"] == "finished" and config_id(store.meta(r["id"])["spec"]) == config]
    if not runs:
        raise SystemExit(f"no finished runs of {recipe.name!r} (config {config}) in {store.home}; run the recipe first")
    recorded = min(len(records) for _, _, records in runs)
    for end in range(1, recorded + 1):
        tests, seconds = [], []
        for _, _, records in runs:
            head = records[:end]
            best = max(head, key=lambda r: r[acc_key("val", classifier)])   # the first epoch of the best validation
            tests.append(best[acc_key("test", classifier)])
            seconds.append(sum(r["train_time_s"] + r["eval_time_s"] for r in head))
        if statistics.mean(tests) * 100 >= target:
            return end, statistics.median(seconds), len(runs)
    return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", default="../shared/data")
    parser.add_argument("--store", default="experiments/results/store")
    parser.add_argument("--ours", required=True, help="our recipe (TOML); its runs are read from --store by configuration")
    parser.add_argument("--set", action="append", default=[], help="override a key of --ours, as `mtm run --set`")
    parser.add_argument("--target", type=float, default=91.20, help="test accuracy (%%) to reach")
    parser.add_argument("--classifier", help="the classifier whose accuracy counts (default: the recipe's primary)")
    parser.add_argument("--images", type=int, default=2000, help="training images timed per measurement")
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()

    try:   # a bad --ours or --set: its one-line message, as `mtm run` gives it
        recipe = load_spec(args.ours, args.set)   # as its runs were made, for its config id
        specs = {"paper": load_spec(PAPER, [f"data.root={args.root}", "train.device=cpu"]),
                 "ours": load_spec(args.ours, [*args.set, f"data.root={args.root}", "train.device=cpu"])}
    except MtmError as exc:
        raise SystemExit(f"error: {exc}") from None
    splits = {}
    for name, spec in specs.items():
        train = load_dataset(spec.data).train
        splits[name] = train.subset(torch.arange(min(args.images, len(train))))
    rates: dict[str, list[float]] = {name: [] for name in specs}
    for _ in range(args.repeats):
        for name, spec in specs.items():
            rates[name].append(images_per_s(spec, splits[name]))
    rate = {name: statistics.median(r) for name, r in rates.items()}

    print("$ python " + " ".join(sys.argv))
    print(f"{torch.get_num_threads()} threads; training img/s, median of {args.repeats}, {args.images} images each")
    paper_s = PAPER_EPOCHS * TRAIN_IMAGES / rate["paper"]
    print(f"paper  RN18-PP, 36 px, batch 100, Adam: {rate['paper']:7.1f} img/s -> 1 epoch {TRAIN_IMAGES / rate['paper'] / 60:5.1f} min, "
          f"{PAPER_EPOCHS} epochs {paper_s / 60:6.1f} min (training only)")
    ours = specs["ours"]
    print(f"ours   {ours.name}, {ours.train.epochs} epochs: {rate['ours']:7.1f} img/s -> 1 epoch {TRAIN_IMAGES / rate['ours'] / 60:5.1f} min "
          f"(training only)")
    classifier = args.classifier or ours.classifiers[0]
    reached = time_to_target(Store(Path(args.store)), recipe, args.target, classifier)
    if reached is None:
        print(f"ours   never reached {args.target:.2f} ({classifier}, mean of the seeds, validation-selected) in its "
              f"recorded epochs")
        return
    end, seconds, seeds = reached
    print(f"ours   reached {args.target:.2f} ({classifier}, mean of {seeds} seeds, validation-selected) at epoch {end}: "
          f"{seconds / 60:.1f} min a run as recorded (training + evaluation, median of the seeds)")
    print(f"paper 30 epochs / ours to {args.target:.2f}: {paper_s / seconds:.1f}x")


if __name__ == "__main__":
    main()
