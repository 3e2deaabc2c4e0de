"""Post-hoc evaluation of a run's kept weights: `mtm eval` recomputes what the run recorded, and
measures how certain its predictions are (`mtm eval --certainty`)."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from mtm_engine.catalogue import CLASSIFIERS, DATASETS
from mtm_engine.checkpoints import load_state, read_checkpoint
from mtm_engine.classifiers import predict
from mtm_engine.config import FOLDER_PREFIX, Spec
from mtm_engine.data import Dataset, load_dataset, without_classes
from mtm_engine.devices import resolve_device
from mtm_engine.errors import ConfigError, DataError
from mtm_engine.evaluate import centre_subset, embed, evaluate
from mtm_engine.measures.certainty import (
    COVERAGES,
    ClassGaussians,
    accuracy_at_coverage,
    aurc,
    auroc,
    distance_scores,
    expected_calibration_error,
    fit_temperature,
    fpr_at_tpr,
    histogram,
    risk_coverage_points,
    softmax_scores,
)
from mtm_engine.measures.fewshot import (
    EPISODES,
    QUERIES,
    episode_accuracy,
    generalised_accuracy,
    mean_ci,
    sample_episode,
)
from mtm_engine.measures.geometry import class_centres
from mtm_engine.models import MovingTargetsNet, build_model
from mtm_engine.records import BEST, CHECKPOINT

CHECKPOINTS = {"best": BEST, "last": CHECKPOINT}
SUPPORT_POOL = 1000   # training images of each held-out class that few-shot support sets are drawn from


def restore(spec: Spec, run_dir: Path, which: str = "best", data: Dataset | None = None
            ) -> tuple[int, MovingTargetsNet, Dataset]:
    """(epoch, model with the checkpoint's weights, the run's dataset), both on the run's device.
    `data` may pass the run's dataset, already loaded."""
    path = run_dir / CHECKPOINTS[which]
    if not path.exists():
        raise ConfigError(f"{path} does not exist: the run kept no {which} checkpoint (runs record best.pt "
                          f"from this version on; a run that has not finished an epoch has none)")
    device = resolve_device(spec.train.device)
    data = (data or load_dataset(spec.data)).to(device)
    model = initial_model(spec, data)
    state = read_checkpoint(path, model)
    return int(state["epoch"]), model.to(device), data


def check_best(run_dir: Path, selected_epoch: int | None, run_id: str) -> None:
    """Refuse a best.pt that is not the epoch the run's record selected: a run stopped (kill -9) after recording
    an epoch and before writing its weights keeps the older best.pt, which would be measured without a word."""
    path = run_dir / BEST
    if selected_epoch is None or not path.exists():
        return   # restore says what is missing
    state = load_state(path)
    if not isinstance(state.get("epoch"), int):
        raise ConfigError(f"checkpoint {path} is damaged or belongs to another network (it names no epoch); move it "
                          f"aside, and measure the last epoch: --checkpoint last")
    kept = state["epoch"]
    if kept != selected_epoch:
        raise ConfigError(f"{path} holds epoch {kept}, but the run's selected epoch is {selected_epoch} "
                          f"(the run ended between recording that epoch and keeping its weights); `mtm resume "
                          f"{run_id[:8]}` trains it again and keeps them, or measure the last epoch: --checkpoint last")


def initial_model(spec: Spec, data: Dataset) -> MovingTargetsNet:
    """The run's network as it was before its first step (the same seed, the same initialisation)."""
    torch.manual_seed(spec.train.seed)
    return build_model(spec.model, data.channels, data.num_classes).to(data.train.y.device)


def evaluate_checkpoint(spec: Spec, run_dir: Path, which: str = "best") -> tuple[int, dict[str, float]]:
    """(epoch, record): the classifiers' accuracies and the geometry on the validation and test
    splits, recomputed from the run's best (its selected epoch, eval.selection) or last checkpoint. On the CPU they
    equal the record the run stored for that epoch, to the last digit."""
    epoch, model, data = restore(spec, run_dir, which)
    record, _ = evaluate(model, data, spec)
    return epoch, record


def certainty(spec: Spec, run_dir: Path, which: str = "best", ood: str | None = None) -> dict[str, Any]:
    """How well each certainty score of a run's predictions ranks them (Section VI-A), on the test split.

    The prediction is the run's primary classifier's (spec.classifiers[0]). Scores (higher = more
    certain): for MTM heads distance, margin and cosine to the nearest class centre G and class
    embedding C; for pure heads msp and energy; for both `gaussian`, a Gaussian per class on the
    training embeddings (DDU). For each: misclassification AUROC (right vs wrong), AURC, accuracy at
    COVERAGES, and with `ood` (another dataset's test split, resized to the run's image size and
    normalised with that dataset's own constants) AUROC and FPR at 95% TPR of in- against out-of-
    distribution. Calibration: a temperature T for softmax(similarity / T) (pure heads: logits / T) is
    fitted on the VALIDATION split; ECE on test at that T.
    """
    if ood is not None and ood not in DATASETS and not ood.startswith(FOLDER_PREFIX):
        raise DataError(f"--ood {ood}: unknown dataset; choose one of {', '.join(DATASETS)}")
    if spec.data.val_fraction == 0:
        raise ConfigError("--certainty fits its temperature on the validation split, and this run has none "
                          "(data.val_fraction = 0); --set data.val_fraction=0.2 holds out images it trained on, "
                          "whose temperature will be optimistic")
    epoch, model, data = restore(spec, run_dir, which)
    if ood is not None:
        other = load_dataset(dataclasses.replace(spec.data, dataset=ood, val_fraction=0.0, holdout_classes=()))
        if other.channels != data.channels:
            raise DataError(f"--ood {ood}: its images have {other.channels} channel(s), the run's {spec.data.dataset} "
                            f"{data.channels}; choose a dataset with {data.channels}")
        ood_images = other.test.to(data.test.y.device)   # normalised with its own dataset's constants
    centre_images = centre_subset(data.train, spec.eval.centre_samples)
    e_train, _ = embed(model, centre_images, spec)
    y = centre_images.y
    G = class_centres(e_train, y, data.num_classes).nan_to_num(0.0)     # [K, d]
    C = model.targets().detach() if model.class_embeddings is not None else None
    primary = spec.classifiers[0]
    gaussians = ClassGaussians(e_train, y, data.num_classes)

    def scores(e: Tensor, logits: Tensor | None) -> dict[str, Tensor]:
        out: dict[str, Tensor] = {}
        if C is not None:
            for refs, name in ((G, "G"), (C, "C")):
                out.update({f"{score} {name}": v for score, v in distance_scores(e, refs).items()})
        if logits is not None:
            out.update(softmax_scores(logits))
        out["gaussian"] = gaussians.score(e)
        return out

    def similarity(e: Tensor, logits: Tensor | None) -> Tensor:
        """[N, K] logits of the primary classifier's softmax: cos or -distance to its references."""
        entry = CLASSIFIERS[primary]
        if entry.reference == "logits":
            return logits
        R = C if entry.reference == "class_embeddings" else G
        return F.normalize(e, dim=1) @ F.normalize(R, dim=1).T if entry.metric == "cos" else -torch.cdist(e, R)

    e_val, logits_val = embed(model, data.val, spec)
    e_test, logits_test = embed(model, data.test, spec)
    correct = predict(primary, e_test, centres=G, class_embeddings=C, logits=logits_test) == data.test.y
    test_scores = scores(e_test, logits_test)
    if ood is not None:
        ood_scores = scores(*embed(model, ood_images, spec))
        in_dist = torch.arange(len(e_test) + len(ood_images), device=correct.device) < len(e_test)   # [N_in + N_out]
    table, curves, histograms = {}, {}, {}
    for name, s in test_scores.items():
        curves[name] = risk_coverage_points(s, correct)
        histograms[name] = histogram({"in": s} | ({"out": ood_scores[name]} if ood is not None else {}))
        row = {"misclassification_auroc": auroc(s, correct), "aurc": aurc(s, correct)}
        row.update({f"accuracy_at_{round(c * 100)}": accuracy_at_coverage(s, correct, c) for c in COVERAGES})
        if ood is not None:
            both = torch.cat([s, ood_scores[name]])
            row.update(ood_auroc=auroc(both, in_dist), ood_fpr95=fpr_at_tpr(both, in_dist))
        table[name] = row
    temperature = fit_temperature(similarity(e_val, logits_val), data.val.y)
    probs = (similarity(e_test, logits_test) / temperature).softmax(dim=1)
    return {"epoch": epoch, "classifier": primary, "accuracy": correct.double().mean().item(), "ood": ood,
            "temperature": temperature, "ece": expected_calibration_error(probs, data.test.y), "scores": table,
            "risk_coverage": curves, "histograms": histograms}


def fewshot(spec: Spec, run_dir: Path, shots: list[int], which: str = "best", episodes: int = EPISODES,
            pool: int = SUPPORT_POOL) -> dict[str, Any]:
    """Few-shot accuracy on the classes the run never saw (data.holdout_classes), for each K in `shots`:
    N-way K-shot episodes with N = every held-out class (mean and 95% CI over `episodes`), and the
    generalised setting (old classes' centres G beside the new classes' K-shot centres: accuracy on
    old and on new test images). Measured for the trained network (its embeddings e; a pure head's
    are its penultimate features) and two baselines: the same network untrained, by its backbone's
    random features (not its head's output: an untrained MTM head's e is almost all bias, |b| 0.58
    against |Wf| 0.014 for the convnet, so its cosine barely sees the image), and the images themselves
    (pixels, as normalised for the network: what any feature must beat to have learnt something that
    transfers). Support images come from a fixed random `pool` of
    each held-out class's training images (not validation); queries from their test images. The
    nearest centre is cosine, or euclidean for a run whose primary classifier is.
    The episodes depend only on (K, episode number): every run and every kind of feature meet the same ones."""
    held = list(spec.data.holdout_classes)
    if not held:
        raise ConfigError("--fewshot measures classes the run never saw, and this run trained on every class; "
                          "train one with --set data.holdout_classes=[5,6,7,8,9]")
    full = load_dataset(dataclasses.replace(spec.data, holdout_classes=()))
    counts = [int((full.train.y == k).sum()) for k in held]
    if max(shots) > min(min(counts), pool):
        fewest = held[counts.index(min(counts))]
        raise ConfigError(f"--fewshot {max(shots)}: " + (
            f"held-out class {fewest} has only {min(counts)} training images; choose K <= {min(counts)}"
            if min(counts) < pool else f"support sets are drawn from {pool} images a class; choose K <= {pool}"))
    device = resolve_device(spec.train.device)
    full = full.to(device)
    old = [k for k in range(full.num_classes) if k not in held]
    epoch, trained, data = restore(spec, run_dir, which, without_classes(full, tuple(held)))
    metric = "euc" if spec.classifiers[0].startswith("euc") else "cos"
    g = torch.Generator().manual_seed(0)
    support_idx = torch.cat([(full.train.y.cpu() == k).nonzero().squeeze(1)[
        torch.randperm(counts[i], generator=g)[:pool]] for i, k in enumerate(held)]).to(device)
    new_test = torch.isin(full.test.y, torch.tensor(held, device=device))                       # [N_test] bool
    support, query = full.train.subset(support_idx), full.test.subset(new_test)
    support_y, query_y = support.y.cpu(), query.y.cpu()
    centres = centre_subset(data.train, spec.eval.centre_samples)
    results: dict[str, Any] = {}
    untrained = initial_model(spec, data)
    featurisers = {"trained": lambda split: embed(trained, split, spec)[0],                   # [N, d]
                   "random": lambda split: embed(untrained, split, spec, backbone=True)[0],  # [N, F]
                   "pixels": lambda split: split.images().flatten(1)}                         # [N, C*S*S]
    for name, features in featurisers.items():
        support_e, query_e, test_e = (features(split).cpu() for split in (support, query, full.test))
        G = class_centres(features(centres), centres.y, data.num_classes).cpu()   # [K_old, d], old order
        results[name] = {}
        for k in shots:
            g = torch.Generator().manual_seed(1_000 * k)
            accuracy, old_acc, new_acc = [], [], []
            for _ in range(episodes):
                episode = sample_episode(support_y, query_y, held, len(held), k, QUERIES, g)
                accuracy.append(episode_accuracy(support_e, query_e, episode, metric))
                o, n = generalised_accuracy(G, support_e, episode, test_e, full.test.y.cpu(), old, metric)
                old_acc.append(o)
                new_acc.append(n)
            mean, ci = mean_ci(accuracy)
            results[name][str(k)] = {"accuracy": mean, "ci95": ci, "generalised_old": mean_ci(old_acc)[0],
                                "generalised_new": mean_ci(new_acc)[0]}
    return {"epoch": epoch, "held_out": held, "ways": len(held), "queries": QUERIES, "episodes": episodes,
            "metric": metric, "features": results}
