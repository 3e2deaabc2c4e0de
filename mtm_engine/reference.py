"""The configuration reference: one line of help for every key of an experiment. The README's
configuration table and Compose's help for the focused field are both made from it (a test holds the
README to it: `python -m mtm_engine.reference README.md` rewrites the table). Defaults come from the spec's
dataclasses, so they are never written twice."""

from __future__ import annotations

import re
import sys
from pathlib import Path

from mtm_engine.atomic import atomic_write
from mtm_engine.config import Spec, _toml_value
from mtm_engine.records import flatten_spec

# key -> its meaning, as markdown (`code` spans, no pipes); every key of Spec, in its order
KEY_HELP = {
    'name': "a label for the run",
    'data.dataset': "`digits`, `mnist`, `fashion-mnist`, `kmnist`, `cifar10`, `cifar100`, or `folder:<path>`",
    'data.root': (
        "folder holding torchvision datasets (see Datasets). A relative path (here and in `folder:<path>`) "
        "means the folder the run is launched from: it is stored absolute, with that folder "
        "(`launched_from`), so the queue, a resume or `mtm eval` from anywhere else finds the same data"),
    'data.val_fraction': "share of the training set held out for validation (epoch selection)",
    'data.split_seed': "seed of the train/validation split (kept apart from `train.seed`, so seeds share a split)",
    'data.download': "download a missing torchvision dataset when the network allows",
    'data.augment': "random crop with padding (+ flip), applied batch-wise to the cached tensors (off in the paper)",
    'data.crop_padding': "padding of the random crop, in pixels (edge pixels repeated)",
    'data.flip': (
        "horizontal flips when augmenting: `auto` (fashion-mnist, cifar10/100, image folders; not digits or "
        "characters), `on`, `off`"),
    'data.holdout_classes': (
        "classes left out of every split (the rest renumbered 0..K'-1), for `mtm eval --fewshot`; e.g. `[5, "
        "6, 7, 8, 9]`"),
    'data.size': (
        "image side: 36 is the paper's resize-44/centre-crop-36 (Table 2); another value resizes straight to "
        "it (28: the MNIST family's own size, 1.65x less compute an image)"),
    'model.backbone': "`convnet`, `resnet18`, `resnet34`, `resnet50`, `resnet101`, `resnet152`",
    'model.pretrained': "ImageNet weights (resnets only)",
    'model.stem': "`imagenet`: 7x7 stride 2 + max-pool (the paper's); `cifar`: 3x3 stride 1, no max-pool",
    'model.head': "`mtm` (class embeddings) or `pure` (linear classifier)",
    'model.dim': "d, the output-embedding size (mtm heads)",
    'model.width': "base channel count of `convnet` (stages of w, 2w, 4w, ...)",
    'model.stages': "stages of `convnet`; each but the last halves the image (3 at 28 px: 28, 14, 7)",
    'model.depth': (
        "convolutions in each `convnet` stage after the first (2 is the results' network: +2.1 points of "
        "validation accuracy on F-MNIST at about the same CPU time as width 24, depth 1)"),
    'model.shortcut': (
        "`convnet`: each convolution after a stage's first becomes a residual block, ReLU(x + BN(conv(x))), "
        "at the same compute"),
    'model.normalize': "L2-normalise output and class embeddings (mtm heads), then multiply by `model.scale`",
    'model.scale': "radius of the sphere the normalised embeddings lie on",
    'loss.name': (
        "`euclidean`, `cosine`, `proximity`, `push_pull`, `comparison`; the proxy losses `proxy_anchor`, "
        "`proxy_nca`, `normalized_softmax`, `arcface` (the `metric` extra, below); `cross_entropy` for pure "
        "heads"),
    'loss.r': "r of proximity (Eq. 5) and push-and-pull (Eq. 7; must be < 1)",
    'loss.eps': "epsilon of Eq. 4 and 8",
    'loss.reduction': "`sum` over the batch (the paper's) or `mean`",
    'loss.label_smoothing': "label smoothing of `cross_entropy` (pure heads)",
    'train.epochs': "epochs",
    'train.batch_size': "batch size",
    'train.lr': "learning rate",
    'train.optimizer': "`adam` (the paper's), `adamw` or `sgd`",
    'train.momentum': "SGD momentum",
    'train.weight_decay': (
        "weight decay of the network (never of the class embeddings: it would pull the targets to the origin)"),
    'train.schedule': "learning-rate schedule, stepped per batch: `none`, `cosine` or `onecycle`",
    'train.warmup_epochs': "linear warm-up before `none`/`cosine`; the rising phase of `onecycle` (30% if 0)",
    'train.ce_lr_mult': "learning-rate multiplier of the class embeddings",
    'train.ema': (
        "weight averaging: after each batch t, average ← d·average + (1 − d)·weights with d = min(ema, t / (9 "
        "+ t)) (BatchNorm statistics too); the average, not the trained weights, is evaluated, selected and "
        "kept (the recorded training loss is the trained weights'). `0`: off; `0.995` averages over about the "
        "last 200 batches, 1 / (1 − ema), which should be well under the run's batches"),
    'train.seed': (
        "seed of the initialisation and the batch order (same numbers again: see \"What a result depends on\")"),
    'train.device': "`auto` (cuda, then mps, then cpu), `cpu`, `cuda`, `cuda:N`, `mps`",
    'train.amp': (
        "bf16 autocast on CUDA; ignored elsewhere (convolutions run channels_last everywhere). `false` on "
        "CUDA also turns TF32 off: float32 throughout"),
    'train.compile': (
        "`torch.compile` the network's forward pass (in place: checkpoints are unchanged). The first epoch "
        "pays the compilation; it needs a C compiler (and Triton on CUDA). Measured against eager in "
        "`bench/train.py`"),
    'train.deterministic': (
        "deterministic kernels only (cuDNN's autotuner off, cuBLAS's deterministic workspace); an op without "
        "a deterministic kernel is an error. Slower on CUDA; the CPU is deterministic without it"),
    'train.freeze_batchnorm': (
        "the authors' loop: from epoch 2 on the network trains in eval mode, so BatchNorm normalises by the "
        "running statistics of epoch 1 (their evaluation set `model.eval()` and training never set `model.train()` "
        "again). Off: BatchNorm trains normally (ours)"),
    'eval.classifiers': "classifiers to evaluate; empty: every one that fits the head",
    'eval.batch_size': "batch size of the evaluation passes",
    'eval.centre_samples': (
        "training images whose embeddings give the class centres G (a fixed random subset); `0`: all. "
        "Embedding the whole training split every epoch costs as much as a third of the training pass on a "
        "CPU; 10,000 images estimate 10 centres well"),
    'eval.retrieval': (
        "each epoch, the test split's embeddings retrieving the training split's (cosine): precision@1, "
        "R-precision, MAP@R, and NMI/AMI of k-means (the `metric` extra)"),
    'eval.flip_tta': (
        "test-time augmentation: embed each image and its mirror image and average them (a normalised "
        "embedding goes back onto its sphere); for kinds that are mirror-symmetric (clothes, not digits); "
        "doubles the evaluation's cost"),
    'eval.authors_geometry': (
        "also record the geometry as the authors' analysis code measures it (`authors_*`, beside ours): σ and "
        "the median cosine against the training split's centres with the upper median, ρ of the training centres, "
        "and their centre separation (a sum over pairs over K: (K - 1)/2 times our mean)"),
    'eval.selection': (
        "the epoch a run reports (its `best.pt`, the Runs table, a sweep's score): `val`, the best validation "
        "accuracy (ours); `max-test`, the best test accuracy, the authors' protocol (Tables 6-7): optimistic, "
        "marked `*` beside its test accuracy"),
}


def shown_default(value) -> str:
    """A default as the TOML one would write: `1e-8`, not 1e-08."""
    return re.sub(r"e-0(\d)", r"e-\1", _toml_value(value))


def config_table() -> list[str]:
    """The README's table of every configuration key: its default and its meaning."""
    defaults = flatten_spec(Spec().to_dict())
    rows = ["| key | default | meaning |", "|---|---|---|"]
    for key, meaning in KEY_HELP.items():
        default = "file name" if key == "name" else f"`{shown_default(defaults[key])}`"
        rows.append(f"| `{key}` | {default} | {meaning} |")
    return rows


def one_line(key: str, width: int = 76) -> str:
    """Compose's help for a field: the key's meaning as plain text, its first clause where the whole is longer
    than a line."""
    text = KEY_HELP.get(key, "").replace("`", "")
    return text if len(text) <= width else re.split(r"(?<=[.;:])\s", text, maxsplit=1)[0].rstrip(".;:")


def rewrite(readme: Path) -> None:
    """Put the table in place of the README's (the lines from its header row to the first line after it that is
    not a table row)."""
    lines = readme.read_text().splitlines()
    start = lines.index("| key | default | meaning |")
    end = next(i for i in range(start, len(lines)) if not lines[i].startswith("|"))
    atomic_write(readme, "\n".join(lines[:start] + config_table() + lines[end:]) + "\n")


if __name__ == "__main__":
    rewrite(Path(sys.argv[1]))
