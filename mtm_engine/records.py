"""The run's data model, shared by every reader (CLI, TUI, exporter); no torch.

A run's epoch record is a flat dict: accuracies under `acc_key(split, classifier)`, geometry under
"{split}_{measure}", plus train_loss, lr and timings. The spec is nested ("section" -> key -> value);
readers that compare runs flatten it to "section.key".
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Iterable, TypedDict

from mtm_engine.config import comparable_spec

# The files a run keeps beside its run.json (HOME/runs/<id>/)
CHECKPOINT = "checkpoint.pt"   # the last epoch: what resume continues from
BEST = "best.pt"               # the selected epoch (eval.selection): the weights behind the reported numbers
SNAPSHOTS = {"last": "embedding-last.json", "best": "embedding-best.json"}   # 2-D embedding snapshots
# The last measurement of each kind that `mtm eval` kept for the run: --certainty (analysis.certainty's
# result) and --fewshot (analysis.fewshot's, its K merged into what earlier calls kept).
MEASUREMENTS = {"certainty": "certainty.json", "fewshot": "fewshot.json"}
# The measures of each certainty score in that result, and their column headings (CLI, export, TUI).
CERTAINTY_MEASURES = {"misclassification_auroc": "AUROC", "aurc": "AURC", "accuracy_at_80": "acc@80",
                      "accuracy_at_90": "acc@90", "accuracy_at_95": "acc@95", "ood_auroc": "OOD AUROC",
                      "ood_fpr95": "FPR@95"}
# The share of its GPU's memory a queued run may allocate (set by the queue for runs that share a GPU, 1/n
# with --per-gpu n); the run caps its allocator at it.
GPU_SHARE_ENV = "MTM_GPU_MEMORY_FRACTION"


def gpu_share() -> float | None:
    """This process's share of its GPU's memory, where the queue set one."""
    share = os.environ.get(GPU_SHARE_ENV)
    return float(share) if share else None


PROGRESS = "progress.json"     # the epoch in flight (events.Progress), rewritten every few seconds


class Status(StrEnum):
    """Where a run stands. Stored as its plain value ("running"), and equal to it."""
    QUEUED = "queued"              # waiting for a slot of the queue's pool
    RUNNING = "running"            # a process trains it (a worker, `mtm run`, a sweep's trial)
    FINISHED = "finished"          # every epoch trained
    FAILED = "failed"              # an error ended it (its message says which)
    DIVERGED = "diverged"          # its loss became NaN or infinite
    INTERRUPTED = "interrupted"    # stopped, or its process died: resume continues it


LIVE = (Status.QUEUED, Status.RUNNING)                                 # owned by a process, or about to be
ENDED = (Status.FINISHED, Status.FAILED, Status.DIVERGED, Status.INTERRUPTED)
RESUMABLE = (Status.INTERRUPTED, Status.FAILED, Status.DIVERGED)       # what `mtm resume` continues


def acc_key(split: str, classifier: str) -> str:
    """The record key of a classifier's accuracy on a split, e.g. val_acc_cos."""
    return f"{split}_acc_{classifier}"


@dataclass(frozen=True)
class Metric:
    """One measure of the catalogue: how it is measured, and how every reader names, draws and formats it.
    A new measure is one entry here (or `register_metric`) plus its function; the views below then show it."""
    name: str          # the record key without its split ("acc": a classifier's accuracy)
    label: str         # in words: "cluster size"
    symbol: str        # in legends and column headings: "σ"
    log: bool          # drawn on a log scale (the paper's Figs. 15-19)
    figure: str = ""   # the paper's figure of this measure per epoch (Tables 6-7 give accuracy once a run: none)
    per_split: bool = True
    # "module:attribute" of the function that measures it each epoch, called as fn(evaluate.Embedded) -> {name:
    # value} (once a split if per_split, else once), with the other measures of that function; "": training's own
    function: str = ""
    chart: str = ""    # the Run screen's chart (its tab) that draws it over epochs; "": none
    legend: str = ""   # its line's name in that chart ("" : its symbol), followed by the split
    curve: bool = False    # offered per epoch in Compare, drawn by `mtm plot`, a column of `mtm export RUN`'s epochs
    column: bool = False   # a column of `mtm export --measures`, at the validation-selected epoch
    show: bool = False     # a column of `mtm show`'s epochs
    fmt: str = ".3f"       # how a value is written where its column has its own format (the measures table)

    def key(self, split: str = "test", classifier: str = "cos") -> str:
        """The record key, e.g. test_cluster_size, or val_acc_cos for the accuracy."""
        if self.name == "acc":
            return acc_key(split, classifier)
        return f"{split}_{self.name}" if self.per_split else self.name

    @property
    def words(self) -> str:
        """How a title names it: its label, with its symbol where that is one letter ("cluster size σ")."""
        return f"{self.label} {self.symbol}" if len(self.symbol) == 1 else self.label

_GEOMETRY, _RETRIEVAL = "mtm_engine.measures.geometry:split_geometry", "mtm_engine.metric_learning:split_retrieval"
_AUTHORS, _AUTHORS_CHART = "mtm_engine.measures.geometry:split_authors_geometry", "Authors'"
METRICS: dict[str, Metric] = {}


def register_metric(metric: Metric) -> None:
    """Add a measure (or replace one of that name): it is then measured each epoch and shown by every view it asks."""
    METRICS[metric.name] = metric


for _metric in (
    Metric("acc", "accuracy", "acc", False, fmt=".2f"),
    Metric("train_loss", "training loss", "L", False, per_split=False),
    # eval.retrieval: the test split's embeddings retrieving the training split's (metric_learning.retrieval)
    Metric("precision_at_1", "precision@1", "P@1", False, function=_RETRIEVAL, column=True),
    Metric("r_precision", "R-precision", "R-P", False, function=_RETRIEVAL),
    Metric("map_at_r", "MAP@R", "MAP@R", False, function=_RETRIEVAL, column=True),
    Metric("nmi", "NMI of k-means", "NMI", False, function=_RETRIEVAL, column=True),
    Metric("ami", "AMI of k-means", "AMI", False, function=_RETRIEVAL),
    Metric("cluster_size", "cluster size", "σ", True, "Fig. 15", function=_GEOMETRY, chart="σ & ρ", curve=True,
           column=True, show=True, fmt=".2f"),
    Metric("centre_distance", "centre distance", "ρ", True, "Fig. 16", function=_GEOMETRY, chart="σ & ρ", curve=True,
           column=True, show=True, fmt=".2f"),
    Metric("centre_separation", "centre separation", "mean |g_k - g_l|", True, "Figs. 18-19", function=_GEOMETRY,
           chart="Separation", legend="|g_k - g_l|", curve=True),
    Metric("median_cosine", "median cosine", "cos", False, function=_GEOMETRY, chart="Cosine", curve=True),
    # eval.authors_geometry: as the authors' analysis code measures them (geometry.split_authors_geometry)
    Metric("authors_cluster_size", "cluster size (authors')", "σ'", True, function=_AUTHORS, chart=_AUTHORS_CHART,
           show=True),
    Metric("authors_centre_distance", "centre distance (authors')", "ρ'", True, per_split=False,
           function="mtm_engine.measures.geometry:authors_centre_distance", chart=_AUTHORS_CHART, show=True),
    Metric("authors_centre_separation", "centre separation (authors')", "Σ|g_k - g_l| / K", True, function=_AUTHORS,
           chart=_AUTHORS_CHART, legend="sep'"),
    Metric("authors_median_cosine", "median cosine (authors')", "cos'", False, function=_AUTHORS, show=True),
    # MTM heads only
    Metric("ce_separation", "class embedding separation", "mean |c_k - c_l|", True, per_split=False,
           function="mtm_engine.measures.geometry:class_embedding_separation", chart="Separation", legend="|c_k - c_l|"),
    Metric("ce_gap", "class embedding gap", "mean |c_k - g_k|", True, function="mtm_engine.measures.geometry:class_embedding_gaps",
           chart="Separation", legend="|c_k - g_k|"),
):
    register_metric(_metric)


class RunMeta(TypedDict, total=False):
    """What a run is: written once, at creation (run.json's meta table)."""
    id: str
    name: str
    spec: dict[str, Any]           # config.Spec.to_dict(): a run can be re-created from it
    seed: int
    versions: dict[str, str]       # python, mtm, torch, torchvision, ray, tinydb
    git: str | None                # the commit of the mtm source (None: an installed wheel)
    git_dirty: bool | None         # then source.patch beside run.json holds the diff
    sweep: str | None
    trial_id: str
    trial_config: dict[str, Any]
    refit_of: str


class RunRow(TypedDict, total=False):
    """Where a run stands: what `mtm list` shows (run.json's row table, copied to the index)."""
    id: str
    name: str
    status: Status
    dataset: str
    backbone: str
    loss: str
    head: str
    dim: int | None
    lr: float
    r: float
    seed: int
    epochs: int
    primary: str                   # the classifier of best_val and test_acc
    selection: str                 # eval.selection: how best_epoch was chosen ("max-test": on test, optimistic)
    epoch: int                     # epochs recorded
    best_epoch: int | None
    best_val: float | None
    test_acc: float | None
    sweep: str | None
    host: str
    pid: int | None
    pid_start: int | None          # with pid: the owning process (pids are reused)
    device: str | None
    slot: int
    slot_device: str               # gpu:<id> or cpu: the queue slot it ran in
    message: str
    shard: str
    created: float
    updated: float
    heartbeat: float
    queued: float
    started: float
    ended: float
    tags: list[str]
    note: str
    config: str                    # records.config_id of the spec: seeds of one configuration share it


class EpochRecord(TypedDict, total=False):
    """One epoch (run.json's epochs table). Besides these: METRICS[name].key(split, classifier)
    for each metric of the catalogue (ce_gap and ce_separation for MTM heads only)."""
    epoch: int
    train_loss: float
    lr: float
    train_time_s: float
    eval_time_s: float
    epoch_time_s: float
    images_per_s: float
    gpu_mem_allocated_gb: float    # on CUDA only
    gpu_mem_reserved_gb: float
    gpu_util_pct: float            # with nvidia-ml-py


def classifiers_in(records: Iterable[dict[str, Any]]) -> tuple[str, ...]:
    """The classifiers that records hold test accuracies of, in their order."""
    prefix = acc_key("test", "")
    for record in records:
        return tuple(k[len(prefix):] for k in record if k.startswith(prefix))
    return ()


def flatten_spec(spec: dict[str, Any]) -> dict[str, Any]:
    """{"train": {"lr": 0.001}, "name": "x"} -> {"train.lr": 0.001} (sections only)."""
    return {f"{s}.{k}": v for s, values in spec.items() if isinstance(values, dict) for k, v in values.items()}


def config_id(spec: dict[str, Any]) -> str:
    """What makes runs the same configuration, as a short id: the whole spec but its name and
    seed. Seeds of one configuration share it (`mtm export`'s cells, the TUI's groups)."""
    same = {s: ({k: v for k, v in values.items() if not (s == "train" and k == "seed")} if isinstance(values, dict)
                else values) for s, values in comparable_spec(spec).items() if s != "name"}
    return hashlib.sha1(json.dumps(same, sort_keys=True).encode()).hexdigest()[:12]


def differing_keys(specs: Iterable[dict[str, Any]]) -> list[str]:
    """The flattened spec keys whose values are not all equal across `specs`, sorted."""
    flat = [flatten_spec(comparable_spec(spec)) for spec in specs]
    keys = sorted({k for f in flat for k in f})
    return [k for k in keys if len({repr(f.get(k)) for f in flat}) > 1]
