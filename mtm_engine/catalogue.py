"""What can be chosen by name: the datasets, backbones, classifiers and losses, each with what it needs, in a
torch-free catalogue that validation, the exporter, the TUI and the CLI read, so that a new one is one entry here
plus its function. (The measures' catalogue is records.METRICS: their names are record keys.)

Each entry says where its function lives ("module:attribute", imported only when a run uses it) and how the tables
name it. A loss's entry also says which head it trains, and its own `loss.*` parameters with their defaults (the
loss receives those and `reduction`, no others). `register_loss` adds a loss (a plug-in, or a test)."""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any, Callable, Literal

from mtm_engine.errors import ConfigError

EPS = 1e-8   # epsilon of Eq. 4 and 8 where a config does not give one


@dataclass(frozen=True)
class Entry:
    """A dataset (its loader: fn(DataSpec) -> data.RawData) or a backbone (its builder: fn(ModelSpec, in_channels)
    -> (module, feature count, whether 1-channel images are repeated to 3))."""
    name: str        # as configs name it: fashion-mnist, resnet18
    title: str       # in tables and the Runs table: F-MNIST, RN18
    function: str    # "module:attribute"
    large: bool = False   # a backbone that a sweep's trial gets a whole GPU for (tune.trial_resources)


def load(function: str) -> Callable[..., Any]:
    """The function of an entry, imported now."""
    module, attribute = function.split(":")
    return getattr(importlib.import_module(module), attribute)


_TORCHVISION = "mtm_engine.data:load_torchvision"
DATASETS: dict[str, Entry] = {e.name: e for e in (   # in the order of the tables (the paper's, after the quick start's)
    Entry("digits", "digits", "mtm_engine.data:load_digits"),   # scikit-learn's 8x8 digits, embedded: the quick start
    Entry("mnist", "MNIST", _TORCHVISION), Entry("fashion-mnist", "F-MNIST", _TORCHVISION),
    Entry("kmnist", "K-MNIST", _TORCHVISION), Entry("cifar10", "CIFAR10", _TORCHVISION),
    Entry("cifar100", "CIFAR100", _TORCHVISION),
)}
_RESNET = "mtm_engine.models:resnet"
BACKBONES: dict[str, Entry] = {e.name: e for e in (
    Entry("convnet", "CNN", "mtm_engine.models:convnet"),
    Entry("resnet18", "RN18", _RESNET), Entry("resnet34", "RN34", _RESNET), Entry("resnet50", "RN50", _RESNET, True),
    Entry("resnet101", "RN101", _RESNET, True), Entry("resnet152", "RN152", _RESNET, True),
)}


def title_of(catalogue: dict[str, Entry], name: str) -> str:
    """How tables name a dataset or backbone; one no longer in the catalogue (an old run's, a folder) by its name."""
    return catalogue[name].title if name in catalogue else name


@dataclass(frozen=True)
class ClassifierEntry:
    """A nearest-neighbour classifier (paper Eq. 9-11): its metric against a reference set; or the pure head's
    own (metric ""), which predicts by its logits."""
    name: str
    metric: Literal["cos", "euc", ""]
    reference: Literal["centres", "class_embeddings", "logits"]


CLASSIFIERS: dict[str, ClassifierEntry] = {c.name: c for c in (
    ClassifierEntry("cos", "cos", "centres"), ClassifierEntry("cos_ce", "cos", "class_embeddings"),
    ClassifierEntry("euc", "euc", "centres"), ClassifierEntry("euc_ce", "euc", "class_embeddings"),
    ClassifierEntry("pure", "", "logits"),
)}
# The classifiers each head is evaluated with (paper Table 6's columns); the first is the primary: what a run is
# scored, selected and tuned by.
CLASSIFIERS_FOR_HEAD = {
    "mtm": ("cos", "cos_ce", "euc", "euc_ce"),
    "pure": ("pure", "cos", "euc"),
}


@dataclass(frozen=True)
class LossEntry:
    name: str                                   # as configs name it: push_pull
    code: str                                   # in the tables' row names: PP (RN18-PP)
    label: str                                  # in words: push-and-pull
    head: Literal["mtm", "pure"]                # the head it trains
    function: str                               # "module:attribute", called as fn(e, y, C, reduction=..., **params)
    # its own loss.* keys (LossSpec's fields) with their defaults; the loss's r default is used where a config
    # gives none (default_r), the others are LossSpec's
    params: dict[str, float] = field(default_factory=dict)
    # the search space of its own parameters in a sweep without [tune.space] (sweep_spec.paper_space)
    search: dict[str, dict[str, list[float]]] = field(default_factory=dict)
    extra: str = ""                             # the optional dependency it needs (an install extra)
    paper: str = ""                             # its equations in the paper


LOSSES: dict[str, LossEntry] = {}
_R_SEARCH = {"r": {"loguniform": [1e3, 1e6]}}


def register_loss(entry: LossEntry) -> None:
    """Add a loss (or replace one of that name); it is then valid in configs, named in tables, and trained."""
    LOSSES[entry.name] = entry


for _entry in (
    LossEntry("euclidean", "E", "euclidean distance", "mtm", "mtm_engine.losses:euclidean", paper="Eq. 1"),
    LossEntry("cosine", "C", "cosine distance", "mtm", "mtm_engine.losses:cosine", {"eps": EPS}, paper="Eq. 2-3"),
    # proximity's r: inside the paper's range [1e3, 1e6], searched log-uniformly (the authors: uniformly)
    LossEntry("proximity", "CP", "class proximity", "mtm", "mtm_engine.losses:proximity", {"r": 1e4, "eps": EPS},
              _R_SEARCH, paper="Eq. 4-5"),
    # the form in the authors' code (Simonbolsen/P8), which Appendix A's r were tuned on: 1 / (|c - k| + 1)
    LossEntry("proximity_authors", "CPA", "class proximity (the authors' code)", "mtm",
              "mtm_engine.losses:proximity_authors", {"r": 1e4}, _R_SEARCH, paper="Eq. 4-5, as the authors' code has it"),
    LossEntry("push_pull", "PP", "push-and-pull", "mtm", "mtm_engine.losses:push_pull", {"r": 0.95}, paper="Eq. 6-7"),
    LossEntry("comparison", "CM", "comparison", "mtm", "mtm_engine.losses:comparison", {"eps": EPS}, paper="Eq. 8"),
    # pytorch-metric-learning's proxy losses, the class embeddings as their proxies
    LossEntry("proxy_anchor", "PA", "Proxy Anchor", "mtm", "mtm_engine.metric_learning:proxy_anchor", extra="metric"),
    LossEntry("proxy_nca", "PNCA", "ProxyNCA", "mtm", "mtm_engine.metric_learning:proxy_nca", extra="metric"),
    LossEntry("normalized_softmax", "NS", "normalised softmax", "mtm", "mtm_engine.metric_learning:normalized_softmax",
              extra="metric"),
    LossEntry("arcface", "AF", "ArcFace", "mtm", "mtm_engine.metric_learning:arcface", extra="metric"),
    LossEntry("cross_entropy", "P", "cross-entropy", "pure", "mtm_engine.losses:cross_entropy",
              {"label_smoothing": 0.0}),
):
    register_loss(_entry)


def loss_entry(name: str) -> LossEntry:
    try:
        return LOSSES[name]
    except KeyError:
        raise ConfigError(f"loss.name = {name!r}: unknown loss; choose one of {', '.join(LOSSES)}") from None


def losses_for(head: str) -> tuple[str, ...]:
    """The losses that train this head, in the catalogue's (the paper's) order."""
    return tuple(name for name, entry in LOSSES.items() if entry.head == head)


def default_r(name: str) -> float:
    """loss.r where a config gives none: the loss's own, 0 for a loss without r (or one no longer known)."""
    entry = LOSSES.get(name)
    return entry.params.get("r", 0.0) if entry else 0.0


def loss_code(name: str) -> str:
    """The tables' code of a loss (PP); a loss no longer in the catalogue (an old run's) by its name."""
    return LOSSES[name].code if name in LOSSES else name


def loss_codes() -> dict[str, str]:
    return {name: entry.code for name, entry in LOSSES.items()}


def loss_function(name: str) -> Callable[..., Any]:
    """The loss's function, imported now (torch, and the library of a proxy loss)."""
    return load(loss_entry(name).function)


def loss_arguments(spec_loss: Any) -> dict[str, Any]:
    """What the loss of a LossSpec is called with besides (e, y, C): its own parameters and the reduction."""
    entry = loss_entry(spec_loss.name)
    unknown = [key for key in entry.params if not hasattr(spec_loss, key)]
    if unknown:
        raise ConfigError(f"loss {entry.name!r} takes loss.{unknown[0]}, which is not a key of [loss]; its catalogue "
                          f"entry may name only keys of [loss] ({', '.join(vars(spec_loss))})")
    return {"reduction": spec_loss.reduction, **{key: getattr(spec_loss, key) for key in entry.params}}
