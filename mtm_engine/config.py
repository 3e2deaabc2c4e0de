"""Experiment spec: load TOML, apply `--set` overrides, validate, serialise.

The spec is plain data (dataclasses of str/int/float/bool/tuple) so that a run can be re-created
from what the store holds. This module imports no torch: the TUI's compose form validates with it.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import math
import tomllib
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Literal, get_args, get_origin, get_type_hints

from mtm_engine import install_hint
from mtm_engine.catalogue import BACKBONES, CLASSIFIERS_FOR_HEAD, DATASETS, LOSSES, default_r, loss_entry, losses_for
from mtm_engine.errors import ConfigError

FOLDER_PREFIX = "folder:"
MAX_DIM = 65_536        # d beyond this is a typo, not an experiment (and would not fit in memory)
MAX_SEED = 2**31 - 1    # the batch-order seed, seed * 100_003 + epoch, stays within torch's 64 bits


@dataclass(frozen=True)
class Range:
    """The values a number key allows: from `low` (to `high`), either end open; `hint` ends the error message."""
    low: float
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    hint: str = ""

    def holds(self, value: float) -> bool:
        above = value > self.low if self.low_open else value >= self.low
        below = self.high is None or (value < self.high if self.high_open else value <= self.high)
        return above and below

    def words(self) -> str:
        """"at least 1", "above 0", "1..5", "in [0, 1)", "above 0 and at most 10"."""
        if self.high is None:
            return f"{'above' if self.low_open else 'at least'} {self.low}"
        if self.low_open:
            return f"above {self.low} and at most {self.high}"
        return f"in [{self.low}, {self.high})" if self.high_open else f"{self.low}..{self.high}"


def setting(default: Any, help: str, values: Range | None = None) -> Any:
    """A key of an experiment, declared once: its default, its one line of help (markdown: `code`, no pipes; the
    README's table, Compose and `mtm keys` show it; "{choices}" stands for the names it allows) and, for a number,
    the range validate holds it to. Its type is the field's annotation (a Literal for a closed set of names)."""
    return field(default=default, metadata={"help": help, "range": values})


@dataclass
class DataSpec:
    dataset: str = setting("digits", "{choices}, or `folder:<path>`")
    root: str = setting("./data",
        "folder holding torchvision datasets (see Datasets). A relative path (here and in `folder:<path>`) means "
        "the folder the run is launched from: it is stored absolute, with that folder (`launched_from`), so the "
        "queue, a resume or `mtm eval` from anywhere else finds the same data")
    val_fraction: float = setting(0.2,
        "share of the training set held out for validation (epoch selection)",
        Range(0, 1, high_open=True, hint=", e.g. 0.2 (0: no validation split)"))
    split_seed: int = setting(0,
        "seed of the train/validation split (kept apart from `train.seed`, so seeds share a split)",
        Range(0, MAX_SEED))
    download: bool = setting(True,
        "download a missing torchvision dataset when the network allows")
    augment: bool = setting(False,
        "random crop with padding (+ flip), applied batch-wise to the cached tensors (off in the paper)")
    crop_padding: int = setting(4,
        "padding of the random crop, in pixels (edge pixels repeated)",
        Range(0))
    flip: Literal["auto", "on", "off"] = setting("auto",
        "horizontal flips when augmenting: `auto` (fashion-mnist, cifar10/100, image folders; not digits or "
        "characters), `on`, `off`")
    size: int = setting(36,
        "image side: 36 is the paper's resize-44/centre-crop-36 (Table 2); another value resizes straight to it "
        "(28: the MNIST family's own size, 1.65x less compute an image)",
        Range(8, 512, hint=" (36: the paper's; 28: MNIST's own size)"))
    holdout_classes: tuple[int, ...] = setting((),
        "classes left out of every split (the rest renumbered 0..K'-1), for `mtm eval --fewshot`; e.g. `[5, 6, 7,"
        " 8, 9]`")


@dataclass
class ModelSpec:
    backbone: Literal[tuple(BACKBONES)] = setting("convnet", "{choices}")
    pretrained: bool = setting(False,
        "ImageNet weights (resnets only)")
    stem: Literal["imagenet", "cifar"] = setting("imagenet",
        "`imagenet`: 7x7 stride 2 + max-pool (the paper's); `cifar`: 3x3 stride 1, no max-pool")
    head: Literal["mtm", "pure"] = setting("mtm",
        "`mtm` (class embeddings) or `pure` (linear classifier)")
    dim: int = setting(512,
        "d, the output-embedding size (mtm heads)",
        Range(1, MAX_DIM, hint=" (our search space is 200..2000)"))
    width: int = setting(16,
        "base channel count of `convnet` (stages of w, 2w, 4w, ...)",
        Range(1))
    depth: int = setting(1,
        "convolutions in each `convnet` stage after the first (2 is the results' network: +2.1 points of "
        "validation accuracy on F-MNIST at about the same CPU time as width 24, depth 1)",
        Range(1))
    stages: int = setting(4,
        "stages of `convnet`; each but the last halves the image (3 at 28 px: 28, 14, 7)",
        Range(1, 5, hint=" (each but the last halves the image)"))
    shortcut: bool = setting(False,
        "`convnet`: each convolution after a stage's first becomes a residual block, ReLU(x + BN(conv(x))), at "
        "the same compute")
    normalize: bool = setting(False,
        "L2-normalise output and class embeddings (mtm heads), then multiply by `model.scale`")
    scale: float = setting(1.0,
        "radius of the sphere the normalised embeddings lie on",
        Range(0, low_open=True, hint=", e.g. 10"))


@dataclass
class LossSpec:
    # one of catalogue.LOSSES (choices() lists them; they may be registered later)
    name: str = setting("push_pull",
        "{choices}: the paper's (Eq. 1-8; `proximity_authors` is proximity as the authors' code computes it), "
        "pytorch-metric-learning's proxy losses (the `metric` extra, below), and `cross_entropy` for pure heads")
    # build_spec sets the loss's own default_r (0 for losses without r) where a config gives none
    r: float = setting(default_r("push_pull"),
        "r of proximity (Eq. 5; also `proximity_authors`) and push-and-pull (Eq. 7; must be < 1)",
        Range(0))
    eps: float = setting(1e-8,
        "epsilon of Eq. 4 and 8",
        Range(0, hint=", e.g. 1e-8"))
    reduction: Literal["sum", "mean"] = setting("sum",
        "`sum` over the batch (as the paper writes the losses) or `mean` (as the authors' code takes push-and-pull "
        "and cross-entropy)")
    label_smoothing: float = setting(0.0,
        "label smoothing of `cross_entropy` (pure heads)",
        Range(0, 1, high_open=True))


@dataclass
class TrainSpec:
    epochs: int = setting(10,
        "epochs",
        Range(1))
    batch_size: int = setting(100,
        "batch size",
        Range(1, hint=", e.g. 100"))
    lr: float = setting(1e-3,
        "learning rate",
        Range(0, 10, low_open=True, hint=", e.g. 0.001"))
    optimizer: Literal["adam", "adamw", "sgd"] = setting("adam",
        "`adam` (the paper's), `adamw` or `sgd`")
    momentum: float = setting(0.9,
        "SGD momentum",
        Range(0, 1, high_open=True))
    weight_decay: float = setting(0.0,
        "weight decay of the network (never of the class embeddings: it would pull the targets to the origin)",
        Range(0, hint=", e.g. 5e-4"))
    schedule: Literal["none", "cosine", "onecycle"] = setting("none",
        "learning-rate schedule, stepped per batch: `none`, `cosine` or `onecycle`")
    warmup_epochs: float = setting(0.0,
        "linear warm-up before `none`/`cosine`; the rising phase of `onecycle` (30% if 0)")
    ce_lr_mult: float = setting(1.0,
        "learning-rate multiplier of the class embeddings",
        Range(0, low_open=True, hint=", e.g. 1"))
    ema: float = setting(0.0,
        "weight averaging: after each batch t, average ← d·average + (1 − d)·weights with d = min(ema, t / (9 + "
        "t)) (BatchNorm statistics too); the average, not the trained weights, is evaluated, selected and kept "
        "(the recorded training loss is the trained weights'). `0`: off; `0.995` averages over about the last 200"
        " batches, 1 / (1 − ema), which should be well under the run's batches",
        Range(0, 1, high_open=True, hint=", e.g. 0.995 (0: no weight averaging)"))
    seed: int = setting(0,
        "seed of the initialisation and the batch order (same numbers again: see \"What a result depends on\")",
        Range(0, MAX_SEED))
    device: str = setting("auto",
        "`auto` (cuda, then mps, then cpu), `cpu`, `cuda`, `cuda:N`, `mps`")
    amp: bool = setting(True,
        "bf16 autocast on CUDA; ignored elsewhere (convolutions run channels_last everywhere). `false` on CUDA "
        "also turns TF32 off: float32 throughout")
    compile: bool = setting(False,
        "`torch.compile` the network's forward pass (in place: checkpoints are unchanged). The first epoch pays "
        "the compilation; it needs a C compiler (and Triton on CUDA). Measured against eager in `bench/train.py`")
    deterministic: bool = setting(False,
        "deterministic kernels only (cuDNN's autotuner off, cuBLAS's deterministic workspace); an op without a "
        "deterministic kernel is an error. Slower on CUDA; the CPU is deterministic without it")
    freeze_batchnorm: bool = setting(False,
        "the authors' loop: from epoch 2 on the network trains in eval mode, so BatchNorm normalises by the "
        "running statistics of epoch 1 (their evaluation set `model.eval()` and training never set "
        "`model.train()` again). Off: BatchNorm trains normally (ours)")


@dataclass
class EvalSpec:
    classifiers: tuple[str, ...] = setting((),
        "classifiers to evaluate; empty: every one that fits the head")
    batch_size: int = setting(1000,
        "batch size of the evaluation passes",
        Range(1))
    centre_samples: int = setting(0,
        "training images whose embeddings give the class centres G (a fixed random subset); `0`: all. Embedding "
        "the whole training split every epoch costs as much as a third of the training pass on a CPU; 10,000 "
        "images estimate 10 centres well",
        Range(0, hint=" (0: all)"))
    flip_tta: bool = setting(False,
        "test-time augmentation: embed each image and its mirror image and average them (a normalised embedding "
        "goes back onto its sphere); for kinds that are mirror-symmetric (clothes, not digits); doubles the "
        "evaluation's cost")
    retrieval: bool = setting(False,
        "each epoch, the test split's embeddings retrieving the training split's (cosine): precision@1, "
        "R-precision, MAP@R, and NMI/AMI of k-means (the `metric` extra)")
    authors_geometry: bool = setting(False,
        "also record the geometry as the authors' analysis code measures it (`authors_*`, beside ours): σ and the"
        " median cosine against the training split's centres with the upper median, ρ of the training centres, "
        "and their centre separation (a sum over pairs over K: (K - 1)/2 times our mean)")
    selection: Literal["val", "max-test"] = setting("val",
        "the epoch a run reports (its `best.pt`, the Runs table, a sweep's score): `val`, the best validation "
        "accuracy (ours); `max-test`, the best test accuracy, the authors' protocol (Tables 6-7): optimistic, "
        "marked `*` beside its test accuracy")


@dataclass
class Spec:
    name: str = setting("experiment", "a label for the run")
    data: DataSpec = field(default_factory=DataSpec)
    model: ModelSpec = field(default_factory=ModelSpec)
    loss: LossSpec = field(default_factory=LossSpec)
    train: TrainSpec = field(default_factory=TrainSpec)
    eval: EvalSpec = field(default_factory=EvalSpec)

    def to_dict(self) -> dict[str, Any]:
        return _plain(dataclasses.asdict(self))

    @property
    def selects_on(self) -> str:
        """The split whose accuracy picks the run's reported epoch (and a sweep's score)."""
        return selection_split(self.eval.selection)

    @property
    def classifiers(self) -> tuple[str, ...]:
        """The classifiers to evaluate: the configured ones, or every one that fits the head."""
        return self.eval.classifiers or CLASSIFIERS_FOR_HEAD[self.model.head]


def selection_split(selection: str) -> str:
    """The split eval.selection picks epochs on: validation, or test under the authors' protocol ("max-test")."""
    return "test" if selection == "max-test" else "val"


SECTIONS: dict[str, type] = {
    "data": DataSpec,
    "model": ModelSpec,
    "loss": LossSpec,
    "train": TrainSpec,
    "eval": EvalSpec,
}

# The keys whose values are names, with the names allowed: their types (a Literal) declare them.
CHOICES: dict[str, tuple[str, ...]] = {f"{section}.{key}": get_args(kind) for section, cls in SECTIONS.items()
                                       for key, kind in get_type_hints(cls).items() if get_origin(kind) is Literal}


def choices() -> dict[str, tuple[str, ...]]:
    """Every key whose values are names, with the names allowed now: the Literal-typed keys, and loss.name from
    the catalogue (which a plug-in or a test may extend)."""
    return {**CHOICES, "loss.name": tuple(LOSSES)}


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (tuple, list)):
        return [_plain(v) for v in value]
    return value


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)   # a JSON string is a valid TOML basic string
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k} = {_toml_value(v)}" for k, v in value.items()) + "}"
    raise ConfigError(f"cannot write {value!r} to TOML")


def spec_to_toml(spec: Spec, tune: dict[str, Any] | None = None) -> str:
    """The experiment file for `spec` (and an optional [tune] section); load_spec reads it back."""
    raw = spec.to_dict()
    lines = [f"name = {_toml_value(raw.pop('name'))}"]
    for section, values in raw.items():
        lines += ["", f"[{section}]", *(f"{k} = {_toml_value(v)}" for k, v in values.items())]
    if tune:
        tune = dict(tune)
        space = tune.pop("space", {})
        lines += ["", "[tune]", *(f"{k} = {_toml_value(v)}" for k, v in tune.items())]
        if space:
            lines += ["", "[tune.space]", *(f"{json.dumps(k)} = {_toml_value(v)}" for k, v in space.items())]
    return "\n".join(lines) + "\n"


def comparable_spec(stored: dict[str, Any]) -> dict[str, Any]:
    """A stored spec (Spec.to_dict() of any version) as comparisons should see it, without validating:
    keys added since it was stored at their defaults, so that runs made before a key existed compare
    equal to runs made after at its default; and loss.r at 0 for a loss that has no r (older versions
    stored 0.95 there), since it changes nothing."""
    defaults = Spec().to_dict()
    spec = {**stored, **{section: {**values, **stored.get(section, {})} for section, values in defaults.items()
                         if isinstance(values, dict)}}
    if "r" not in (LOSSES[spec["loss"]["name"]].params if spec["loss"].get("name") in LOSSES else {}):
        spec["loss"] = {**spec["loss"], "r": 0.0}
    return spec


def quickstart_path() -> Path:
    """The embedded default experiment, shipped inside the package."""
    return Path(str(resources.files("mtm_engine").joinpath("quickstart.toml")))


def parse_override(text: str) -> tuple[str, Any]:
    """`section.key=value` -> ("section.key", value); the value is read as TOML, else as a string."""
    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or "." not in key and key != "name":
        raise ConfigError(f"--set {text!r}: expected section.key=value, e.g. --set train.lr=0.001")
    raw = raw.strip()
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw
    return key, value


def read_toml(path: str | Path | None) -> dict[str, Any]:
    path = Path(path) if path is not None else quickstart_path()
    if path.is_dir():
        raise ConfigError(f"config {path} is a directory; give the path of a TOML experiment file in it")
    if not path.is_file():
        raise ConfigError(f"config file {path} " + ("is not a regular file (a pipe or a device); give the path of a "
                                                    "TOML experiment file" if path.exists() else
                                                    "does not exist; give the path of a TOML experiment file"))
    try:
        raw = tomllib.loads(path.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: not valid TOML ({exc}); fix the file's syntax") from None
    raw.setdefault("name", path.stem)
    return raw


def load_spec(path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()) -> Spec:
    """Read a TOML experiment (the quick start if `path` is None), apply overrides, validate.
    A [tune] section is allowed and ignored here (see sweep_spec.load_sweep)."""
    return spec_from_dict(read_toml(path), [o for o in overrides if not o.startswith("tune.")])


def with_absolute_paths(spec: Spec) -> Spec:
    """The spec with data.root and a folder: dataset as absolute paths, resolved from the current folder: a run is
    created in one folder and trained, resumed or evaluated from others (the queue's pool started elsewhere, a
    sweep's trials, a later `mtm eval`), where a relative path would mean another folder."""
    def absolute(path: str) -> str:
        return str(Path(path).expanduser().resolve())

    dataset = spec.data.dataset
    if dataset.startswith(FOLDER_PREFIX):
        dataset = FOLDER_PREFIX + absolute(dataset[len(FOLDER_PREFIX):])
    return dataclasses.replace(spec, data=dataclasses.replace(spec.data, root=absolute(spec.data.root), dataset=dataset))


def spec_from_dict(raw: dict[str, Any], overrides: list[str] | tuple[str, ...] = ()) -> Spec:
    raw = {k: dict(v) if isinstance(v, dict) else v for k, v in raw.items() if k != "tune"}
    for text in overrides:
        key, value = parse_override(text)
        if key == "name":
            raw["name"] = value
            continue
        section, _, name = key.partition(".")
        if section not in SECTIONS:
            raise ConfigError(f"--set {key}: unknown section {section!r}; choose one of {', '.join(SECTIONS)}")
        raw.setdefault(section, {})[name] = value
    return validate(build_spec(raw))


def build_spec(raw: dict[str, Any]) -> Spec:
    unknown = set(raw) - set(SECTIONS) - {"name", "tune"}
    if unknown:
        raise ConfigError(
            f"unknown section {sorted(unknown)[0]!r}; the sections are name, {', '.join(SECTIONS)}, tune"
        )
    name = raw.get("name", "experiment")
    if not isinstance(name, str) or not name:
        raise ConfigError(f"name = {name!r}: must be a non-empty string")
    sections = {}
    for section, cls in SECTIONS.items():
        values = raw.get(section, {})
        if not isinstance(values, dict):
            raise ConfigError(f"{section} = {values!r}: must be a table, e.g. [{section}]")
        sections[section] = build_section(section, cls, values)
    if "r" not in raw.get("loss", {}):
        sections["loss"] = dataclasses.replace(sections["loss"], r=default_r(sections["loss"].name))
    return Spec(name=name, **sections)


def build_section(section: str, cls: type, values: dict[str, Any]) -> Any:
    hints = get_type_hints(cls)
    kwargs = {}
    for key, value in values.items():
        if key not in hints:
            raise ConfigError(f"{section}.{key}: unknown key; the keys of [{section}] are {', '.join(hints)}")
        kwargs[key] = _coerce(f"{section}.{key}", value, hints[key])
    return cls(**kwargs)


def _coerce(key: str, value: Any, kind: Any) -> Any:
    if kind is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{key} = {value!r}: must be true or false")
    if kind is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(f"{key} = {value!r}: must be a whole number")
    if kind is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            return float(value)
        raise ConfigError(f"{key} = {value!r}: must be a finite number")
    if kind is str or get_origin(kind) is Literal:   # a name: which ones are allowed, validate says
        if isinstance(value, str):
            return value
        raise ConfigError(f"{key} = {value!r}: must be a string (in quotes)")
    if kind == float | str:   # a number or a word ("auto")
        if isinstance(value, str):
            return value
        return _coerce(key, value, float)
    if kind == tuple[int, ...]:   # a TOML list of whole numbers, or "5,6,7" from --set
        if isinstance(value, str):
            value = [int(v) if v.strip().lstrip("-").isdigit() else v for v in value.split(",") if v.strip()]
        if isinstance(value, list) and all(isinstance(v, int) and not isinstance(v, bool) for v in value):
            return tuple(value)
        raise ConfigError(f"{key} = {value!r}: must be a list of class numbers, e.g. [5, 6, 7, 8, 9]")
    # tuple[str, ...]: a TOML list of strings, or one comma-separated string from --set.
    if isinstance(value, str):
        value = [v.strip() for v in value.split(",") if v.strip()]
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return tuple(value)
    raise ConfigError(f"{key} = {value!r}: must be a list of names, e.g. [\"cos\", \"euc\"]")


def check(ok: bool, message: str) -> None:
    if not ok:
        raise ConfigError(message)


def validate(spec: Spec) -> Spec:
    """Check every value against its declaration (its names, its range), then the rules between keys; raise
    ConfigError naming the key."""
    for dotted, allowed in choices().items():
        section, key = dotted.split(".")
        value = getattr(getattr(spec, section), key)
        check(value in allowed, f"{dotted} = {value!r}: unknown; choose one of {', '.join(allowed)}")
    for section, cls in SECTIONS.items():
        for declared in dataclasses.fields(cls):
            values, value = declared.metadata["range"], getattr(getattr(spec, section), declared.name)
            check(values is None or values.holds(value),
                  f"{section}.{declared.name} = {value}: must be {values and values.words()}{values and values.hint}")

    d, m, lo, t, ev = spec.data, spec.model, spec.loss, spec.train, spec.eval
    check(
        d.dataset in DATASETS or d.dataset.startswith(FOLDER_PREFIX) and len(d.dataset) > len(FOLDER_PREFIX),
        f"data.dataset = {d.dataset!r}: unknown; choose one of {', '.join(DATASETS)}, or folder:<path>",
    )
    check(len(set(d.holdout_classes)) == len(d.holdout_classes) and all(k >= 0 for k in d.holdout_classes),
          f"data.holdout_classes = {list(d.holdout_classes)}: class numbers from 0, each once")
    check(d.crop_padding <= d.size, f"data.crop_padding = {d.crop_padding}: at most data.size ({d.size}) pixels, "
                                    f"e.g. 4 (the crop is taken from the image padded by it on each side)")
    check(m.backbone != "convnet" or d.size >= 2 ** (m.stages - 1),
          f"data.size = {d.size} is too small for model.stages = {m.stages}: each stage but the last halves the image, "
          f"so it needs at least {2 ** (m.stages - 1)} px; raise data.size or lower model.stages")
    check(not m.shortcut or (m.backbone == "convnet" and m.depth >= 2 and m.stages >= 2),
          f"model.shortcut = true: needs a convnet with model.depth >= 2 and model.stages >= 2, whose later "
          f"convolutions become residual blocks (here {m.backbone!r}, depth {m.depth}, {m.stages} stages); "
          f"use model.backbone = \"convnet\" with model.depth = 2 or more, or model.shortcut = false")
    check(
        not m.pretrained or m.backbone.startswith("resnet"),
        f"model.pretrained = true: only the resnet backbones have pretrained weights, not {m.backbone!r}",
    )
    losses_for_head = losses_for(m.head)
    check(
        lo.name in losses_for_head,
        f"loss.name = {lo.name!r}: does not train a {m.head!r} head; choose one of {', '.join(losses_for_head)}",
    )
    proxy = loss_entry(lo.name).extra == "metric"
    if proxy or ev.retrieval:   # looked up only when asked for (Compose validates per key)
        library = importlib.util.find_spec("pytorch_metric_learning") is not None
        check(not proxy or library, f"loss.name = {lo.name!r} comes from pytorch-metric-learning, "
                                    f"which is not installed; {install_hint('metric')}")
        check(not ev.retrieval or library, "eval.retrieval = true: its metrics come from pytorch-metric-learning, "
                                           f"which is not installed; {install_hint('metric')}")
    if lo.name == "push_pull":
        check(
            lo.r < 1.0,
            f"loss.r = {lo.r}: push_pull needs r < 1 (at r >= 1 the loss is unbounded below); try 0.95",
        )
    check(0.0 <= t.warmup_epochs < t.epochs,
           f"train.warmup_epochs = {t.warmup_epochs}: must be in [0, train.epochs = {t.epochs})")
    check(lo.label_smoothing == 0.0 or "label_smoothing" in loss_entry(lo.name).params,
           f"loss.label_smoothing = {lo.label_smoothing}: applies to cross_entropy (pure heads) only")
    check(
        t.device in ("auto", "cpu", "cuda", "mps") or t.device.startswith("cuda:"),
        f"train.device = {t.device!r}: choose auto, cpu, cuda, cuda:N or mps",
    )
    allowed = CLASSIFIERS_FOR_HEAD[m.head]
    check(len(set(ev.classifiers)) == len(ev.classifiers),
           f"eval.classifiers = {list(ev.classifiers)}: a classifier is named twice; name each once")
    for name in ev.classifiers:
        check(
            name in allowed,
            f"eval.classifiers: {name!r} does not apply to a {m.head!r} head; choose from {', '.join(allowed)}",
        )
    return spec
