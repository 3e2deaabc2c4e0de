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


@dataclass
class DataSpec:
    dataset: str = "digits"
    root: str = "./data"
    val_fraction: float = 0.2
    split_seed: int = 0
    download: bool = True
    augment: bool = False      # random crop with padding (+ flip), batch-wise on the cached tensors
    crop_padding: int = 4
    flip: Literal["auto", "on", "off"] = "auto"   # auto: flip images that are mirror-symmetric in kind (not digits or characters)
    size: int = 36             # image side: 36 = the paper's resize to 44, centre-crop 36 (Table 2); another
                               # value resizes straight to it (28: MNIST's native size, 1.65x less compute)
    holdout_classes: tuple[int, ...] = ()   # classes left out of training, validation and test (few-shot)


@dataclass
class ModelSpec:
    backbone: Literal[tuple(BACKBONES)] = "convnet"
    pretrained: bool = False
    stem: Literal["imagenet", "cifar"] = "imagenet"
    head: Literal["mtm", "pure"] = "mtm"
    dim: int = 512
    width: int = 16
    depth: int = 1             # convnet: convolutions in each stage after the first
    stages: int = 4            # convnet: stages of width w, 2w, 4w, ...; all but the last halve the resolution
    shortcut: bool = False     # convnet: each convolution after a stage's first adds its input back (residual)
    normalize: bool = False    # L2-normalise, then multiply by scale: e and C (mtm heads), the features (pure heads)
    scale: float = 1.0


@dataclass
class LossSpec:
    name: str = "push_pull"             # one of catalogue.LOSSES (choices() lists them; they may be registered later)
    r: float = default_r("push_pull")   # build_spec sets the loss's own default_r (0 for losses without r) if not given
    eps: float = 1e-8
    reduction: Literal["sum", "mean"] = "sum"
    label_smoothing: float = 0.0   # cross_entropy only


@dataclass
class TrainSpec:
    epochs: int = 10
    batch_size: int = 100
    lr: float = 1e-3
    optimizer: Literal["adam", "adamw", "sgd"] = "adam"
    momentum: float = 0.9
    weight_decay: float = 0.0      # on the network's weights, not on the class embeddings
    schedule: Literal["none", "cosine", "onecycle"] = "none"   # stepped per batch
    warmup_epochs: float = 0.0     # linear warm-up (none, cosine); onecycle's rising phase
    ce_lr_mult: float = 1.0        # learning-rate multiplier of the class embeddings
    ema: float = 0.0               # decay of a per-batch moving average of the weights, evaluated instead; 0: off
    seed: int = 0
    device: str = "auto"
    amp: bool = True
    compile: bool = False          # torch.compile the network's forward pass (in place: same parameter names)
    deterministic: bool = False    # deterministic kernels only (CUDA); same numbers on the same machine type
    freeze_batchnorm: bool = False   # the authors' loop: from epoch 2 on, the network trains in eval mode


@dataclass
class EvalSpec:
    classifiers: tuple[str, ...] = ()
    batch_size: int = 1000
    centre_samples: int = 0        # training images whose embeddings give the centres G; 0: all of them
    flip_tta: bool = False         # embed each image and its mirror image, and average (for mirror-symmetric kinds)
    retrieval: bool = False        # precision@1, R-precision, MAP@R, NMI, AMI on test (pytorch-metric-learning)
    authors_geometry: bool = False   # also the geometry as the authors' analysis code measures it
    selection: Literal["val", "max-test"] = "val"   # the epoch a run reports; max-test: the authors' (optimistic)


@dataclass
class Spec:
    name: str = "experiment"
    data: DataSpec = field(default_factory=DataSpec)
    model: ModelSpec = field(default_factory=ModelSpec)
    loss: LossSpec = field(default_factory=LossSpec)
    train: TrainSpec = field(default_factory=TrainSpec)
    eval: EvalSpec = field(default_factory=EvalSpec)

    def to_dict(self) -> dict[str, Any]:
        return _plain(dataclasses.asdict(self))

    @property
    def selects_on(self) -> str:
        """The split whose accuracy picks the run's reported epoch (and a sweep's score): validation, or test under
        the authors' protocol (eval.selection = "max-test")."""
        return "test" if self.eval.selection == "max-test" else "val"

    @property
    def classifiers(self) -> tuple[str, ...]:
        """The classifiers to evaluate: the configured ones, or every one that fits the head."""
        return self.eval.classifiers or CLASSIFIERS_FOR_HEAD[self.model.head]


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
    """Check every value and the rules between keys; raise ConfigError naming the key."""
    for dotted, allowed in choices().items():
        section, key = dotted.split(".")
        value = getattr(getattr(spec, section), key)
        check(value in allowed, f"{dotted} = {value!r}: unknown; choose one of {', '.join(allowed)}")

    d, m, lo, t, ev = spec.data, spec.model, spec.loss, spec.train, spec.eval
    check(
        d.dataset in DATASETS or d.dataset.startswith(FOLDER_PREFIX) and len(d.dataset) > len(FOLDER_PREFIX),
        f"data.dataset = {d.dataset!r}: unknown; choose one of {', '.join(DATASETS)}, or folder:<path>",
    )
    check(0.0 <= d.val_fraction < 1.0,
           f"data.val_fraction = {d.val_fraction}: must be in [0, 1), e.g. 0.2 (0: no validation split)")
    check(len(set(d.holdout_classes)) == len(d.holdout_classes) and all(k >= 0 for k in d.holdout_classes),
          f"data.holdout_classes = {list(d.holdout_classes)}: class numbers from 0, each once")
    check(8 <= d.size <= 512, f"data.size = {d.size}: must be 8..512 (36: the paper's; 28: MNIST's own size)")
    check(0 <= d.split_seed <= MAX_SEED, f"data.split_seed = {d.split_seed}: must be 0..{MAX_SEED}")
    check(d.crop_padding <= d.size, f"data.crop_padding = {d.crop_padding}: at most data.size ({d.size}) pixels, "
                                    f"e.g. 4 (the crop is taken from the image padded by it on each side)")
    check(m.backbone != "convnet" or d.size >= 2 ** (m.stages - 1),
          f"data.size = {d.size} is too small for model.stages = {m.stages}: each stage but the last halves the image, "
          f"so it needs at least {2 ** (m.stages - 1)} px; raise data.size or lower model.stages")
    check(1 <= m.dim <= MAX_DIM, f"model.dim = {m.dim}: must be 1..{MAX_DIM} (our search space is 200..2000)")
    check(m.width >= 1, f"model.width = {m.width}: must be at least 1")
    check(m.depth >= 1, f"model.depth = {m.depth}: must be at least 1")
    check(1 <= m.stages <= 5, f"model.stages = {m.stages}: must be 1 to 5 (each but the last halves the image)")
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
    check(lo.r >= 0.0, f"loss.r = {lo.r}: must be at least 0")
    check(lo.eps >= 0.0, f"loss.eps = {lo.eps}: must be at least 0, e.g. 1e-8")
    check(t.epochs >= 1, f"train.epochs = {t.epochs}: must be at least 1")
    check(t.batch_size >= 1, f"train.batch_size = {t.batch_size}: must be at least 1, e.g. 100")
    check(0.0 < t.lr <= 10.0, f"train.lr = {t.lr}: must be above 0 and at most 10, e.g. 0.001")
    check(0 <= t.seed <= MAX_SEED, f"train.seed = {t.seed}: must be 0..{MAX_SEED}")
    check(0.0 <= t.momentum < 1.0, f"train.momentum = {t.momentum}: must be in [0, 1)")
    check(t.weight_decay >= 0.0, f"train.weight_decay = {t.weight_decay}: must be at least 0, e.g. 5e-4")
    check(0.0 <= t.warmup_epochs < t.epochs,
           f"train.warmup_epochs = {t.warmup_epochs}: must be in [0, train.epochs = {t.epochs})")
    check(t.ce_lr_mult > 0.0, f"train.ce_lr_mult = {t.ce_lr_mult}: must be above 0, e.g. 1")
    check(0.0 <= t.ema < 1.0, f"train.ema = {t.ema}: must be in [0, 1), e.g. 0.995 (0: no weight averaging)")
    check(d.crop_padding >= 0, f"data.crop_padding = {d.crop_padding}: must be at least 0")
    check(m.scale > 0.0, f"model.scale = {m.scale}: must be above 0, e.g. 10")
    check(0.0 <= lo.label_smoothing < 1.0, f"loss.label_smoothing = {lo.label_smoothing}: must be in [0, 1)")
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
    check(ev.batch_size >= 1, f"eval.batch_size = {ev.batch_size}: must be at least 1")
    check(ev.centre_samples >= 0, f"eval.centre_samples = {ev.centre_samples}: must be at least 0 (0: all)")
    return spec
