"""The [tune] section of an experiment file: what `mtm tune` searches and how. Plain data, no
ray: the TUI's compose form validates sweeps with it too."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, get_type_hints

from mtm_engine.catalogue import loss_entry
from mtm_engine.config import (
    SECTIONS,
    Spec,
    build_section,
    build_spec,
    check,
    parse_override,
    read_toml,
    spec_from_dict,
    validate,
)
from mtm_engine.errors import ConfigError

SPACE_KINDS = ("loguniform", "uniform", "integer", "choice", "grid")


@dataclass
class TuneSpec:
    """How `mtm tune` searches. Defaults follow the paper's set-up (Section IV-D)."""
    metric: str = ""               # classifier whose validation accuracy is maximised; "" = the first
    num_samples: int = 50
    max_epochs: int = 30
    search: str = "hyperopt"       # hyperopt | random
    scheduler: str = "asha"        # asha | none
    grace_period: int = 5          # ASHA: epochs before a trial can be stopped
    plateau_results: int = 6       # plateau stopper: results looked at ...
    plateau_std: float = 0.005     # ... and the std under which a trial has plateaued
    cpus_per_trial: float = 1.0
    gpus_per_trial: float | str = "auto"   # "auto": see preflight.gpus_for; a number: that fraction of a GPU
    storage: str = ""              # where Ray keeps the sweep: a folder every node sees, or a URI (s3://...);
                                   # "" = HOME/sweeps
    max_concurrent: int = 0        # 0: as many as the resources allow
    seed: int = 0                  # seed of the search algorithm
    space: dict[str, dict[str, Any]] = field(default_factory=dict)   # "train.lr" -> {"loguniform": [lo, hi]}

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def planned_trials(settings: dict[str, Any]) -> int:
    """The trials a sweep runs (settings: TuneSpec.to_dict()): Ray Tune draws num_samples trials for every
    point of the grid, the product of the grid axes' lengths."""
    return settings["num_samples"] * math.prod(len(axis["grid"]) for axis in settings.get("space", {}).values()
                                               if "grid" in axis)


def paper_space(spec: Spec) -> dict[str, dict[str, Any]]:
    """The search space for this model: lr loguniform 1e-5..1e-2 and d integer 200..2000 (class-embedding heads),
    the authors' (their code's hyperopt space); r over 1e3..1e6 for proximity, the paper's range (Section IV-D),
    drawn loguniform (ours: the authors drew a uniform integer); push_pull keeps r = 0.95."""
    space: dict[str, dict[str, Any]] = {"train.lr": {"loguniform": [1e-5, 1e-2]}}
    if spec.model.head == "mtm":
        space["model.dim"] = {"integer": [200, 2000]}
    space.update({f"loss.{key}": values for key, values in loss_entry(spec.loss.name).search.items()})
    return space


def _flatten_space(space: dict[str, Any], prefix: str = "") -> dict[str, dict[str, Any]]:
    """Accept both `"train.lr" = {...}` and `[tune.space.train] lr = {...}`."""
    flat: dict[str, dict[str, Any]] = {}
    for key, value in space.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and len(value) == 1 and next(iter(value)) in SPACE_KINDS:
            flat[name] = value
        elif isinstance(value, dict) and "." not in name:
            flat.update(_flatten_space(value, f"{name}."))
        else:
            raise ConfigError(f"tune.space.{name}: expected {{kind = [...]}} with kind one of {', '.join(SPACE_KINDS)}")
    return flat


def load_sweep(path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()) -> tuple[Spec, TuneSpec]:
    """An experiment file as a sweep: its spec (the base of every trial) and its [tune] section.
    `--set tune.num_samples=4` and the like override the [tune] keys."""
    raw = read_toml(path)
    spec = spec_from_dict(raw, [o for o in overrides if not o.startswith("tune.")])
    if not isinstance(raw.get("tune", {}), dict):
        raise ConfigError(f"tune = {raw['tune']!r}: must be a table of sweep settings, e.g. [tune] with num_samples = 8")
    tune_raw = dict(raw.get("tune", {}))
    for text in overrides:
        if text.startswith("tune."):
            key, value = parse_override(text)
            tune_raw[key[len("tune."):]] = value
    space = tune_raw.pop("space", None)
    if space is not None and not isinstance(space, dict):
        raise ConfigError(f"tune.space = {space!r}: must be a table of keys to search, e.g. [tune.space] with "
                          f"\"train.lr\" = {{loguniform = [1e-5, 1e-2]}}")
    tspec = build_section("tune", TuneSpec, tune_raw)
    tspec.space = _flatten_space(space) if space is not None else paper_space(spec)
    return spec, validate_sweep(spec, tspec)


def validate_sweep(spec: Spec, t: TuneSpec) -> TuneSpec:
    check(t.num_samples >= 1, f"tune.num_samples = {t.num_samples}: must be at least 1 (the paper used 50)")
    check(t.max_epochs >= 1, f"tune.max_epochs = {t.max_epochs}: must be at least 1")
    check(t.search in ("hyperopt", "random"), f"tune.search = {t.search!r}: choose hyperopt or random")
    check(t.scheduler in ("asha", "none"), f"tune.scheduler = {t.scheduler!r}: choose asha or none")
    check(t.grace_period >= 1, f"tune.grace_period = {t.grace_period}: must be at least 1")
    check(t.plateau_results >= 2, f"tune.plateau_results = {t.plateau_results}: must be at least 2")
    check(t.cpus_per_trial > 0, f"tune.cpus_per_trial = {t.cpus_per_trial}: must be above 0")
    check(t.gpus_per_trial == "auto" or (not isinstance(t.gpus_per_trial, str) and t.gpus_per_trial >= 0),
          f"tune.gpus_per_trial = {t.gpus_per_trial!r}: must be \"auto\" or a number of GPUs, at least 0 "
          f"(0.25: four trials share a GPU)")
    if t.metric:
        check(t.metric in spec.classifiers,
               f"tune.metric = {t.metric!r}: not among the run's classifiers ({', '.join(spec.classifiers)})")
    else:
        t.metric = spec.classifiers[0]
    for key, rule in t.space.items():
        kind, values = next(iter(rule.items()))
        section, _, name = key.partition(".")
        check(section in SECTIONS and name in get_type_hints(SECTIONS[section]),
               f"tune.space: {key!r} is not a configuration key (section.key, e.g. train.lr)")
        check(isinstance(values, list) and values, f"tune.space.{key}: {kind} needs a list, e.g. [1e-5, 1e-2]")
        if kind in ("loguniform", "uniform", "integer"):
            check(len(values) == 2 and all(isinstance(v, (int, float)) for v in values) and values[0] < values[1],
                   f"tune.space.{key}: {kind} needs [low, high] with low < high, not {values}")
            check(kind != "loguniform" or values[0] > 0, f"tune.space.{key}: loguniform needs low > 0")
            check(kind != "integer" or all(isinstance(v, int) for v in values),
                   f"tune.space.{key}: integer needs whole-number bounds, not {values}")
        # Every value the search may draw must make a valid run: check the kind, the ends and the choices.
        check(kind not in ("uniform", "loguniform") or get_type_hints(SECTIONS[section])[name] is not int,
               f"tune.space.{key}: {kind} draws fractional values, and {key} is a whole number; use integer")
        for value in values:
            raw = spec.to_dict()
            raw[section][name] = value
            try:
                validate(build_spec(raw))
            except ConfigError as exc:
                raise ConfigError(f"tune.space.{key}: the value {value!r} would make an invalid run: {exc}") from None
    return t
