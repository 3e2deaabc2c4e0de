"""Which drawn parameter of a sweep matters most for the validation accuracy. Plain Python: no
torch, no ray, no UI, so the TUI's sweep view and any report can ask it.

Numeric parameters are scored by |Spearman rank correlation| with the accuracy: ranks are
scale-free, so a log-uniform learning rate needs no log, and any monotone effect counts. A
categorical parameter (strings, booleans, or a mix of kinds) is scored by eta squared, the share of
the accuracy's variance that lies between its groups. Both lie in [0, 1]; they measure different
things (a monotone trend, a difference of group means), so a screen shows the method beside the score.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from numbers import Real
from typing import Any, Iterable

METHODS = {"spearman": "|ρ|", "eta2": "η²"}   # method -> how a screen labels its score (|Spearman ρ|, η²)

Trial = tuple[dict[str, Any], float | None]   # (drawn values, e.g. {"train.lr": 3e-4}; val accuracy)


@dataclass(frozen=True)
class Importance:
    param: str
    score: float                  # in [0, 1]; 0 for a constant parameter or too few trials
    method: str                   # a key of METHODS
    n: int                        # trials scored: those with an accuracy and a value of this parameter
    rho: float | None = None      # spearman: the signed correlation (> 0: larger values did better)
    best: Any = None              # eta2: the value whose trials had the highest mean accuracy

    @property
    def label(self) -> str:
        return METHODS[self.method]


def is_numeric(value: Any) -> bool:
    """A number that ranks (bools are categories, not 0 and 1)."""
    return isinstance(value, Real) and not isinstance(value, bool) and math.isfinite(value)


def average_ranks(values: list[float]) -> list[float]:
    """1-based ranks; tied values share the mean of the ranks they span ([5, 1, 5] -> [2.5, 1, 2.5])."""
    order = sorted(range(len(values)), key=lambda i: values[i])
    ranks = [0.0] * len(values)
    start = 0
    while start < len(order):
        end = start
        while end + 1 < len(order) and values[order[end + 1]] == values[order[start]]:
            end += 1
        for i in order[start:end + 1]:
            ranks[i] = (start + end) / 2 + 1
        start = end + 1
    return ranks


def pearson(xs: list[float], ys: list[float]) -> float:
    """The correlation of xs and ys; 0 where either is constant (it says nothing then)."""
    n = len(xs)
    if n < 2:
        return 0.0
    mx, my = sum(xs) / n, sum(ys) / n
    sxy = sum((x - mx) * (y - my) for x, y in zip(xs, ys))
    sxx = sum((x - mx) ** 2 for x in xs)
    syy = sum((y - my) ** 2 for y in ys)
    if sxx == 0 or syy == 0:
        return 0.0
    return max(-1.0, min(1.0, sxy / math.sqrt(sxx * syy)))


def spearman(xs: list[float], ys: list[float]) -> float:
    """Spearman's rank correlation: Pearson's correlation of the average ranks."""
    return pearson(average_ranks(xs), average_ranks(ys))


def eta_squared(groups: list[Any], ys: list[float]) -> tuple[float, Any]:
    """(SS_between / SS_total, the group with the highest mean) of ys grouped by `groups`; 0 where ys
    are constant."""
    n = len(ys)
    if n == 0:
        return 0.0, None
    mean = sum(ys) / n
    total = sum((y - mean) ** 2 for y in ys)
    by_group: dict[str, tuple[Any, list[float]]] = {}
    for g, y in zip(groups, ys):
        by_group.setdefault(repr(g), (g, []))[1].append(y)   # repr: True and 1, "1" and 1 stay apart
    means = {key: sum(v) / len(v) for key, (_, v) in by_group.items()}
    best = by_group[max(means, key=lambda key: means[key])][0]
    if total == 0:
        return 0.0, best
    between = sum(len(v) * (means[key] - mean) ** 2 for key, (_, v) in by_group.items())
    return min(1.0, between / total), best


def importance(trials: Iterable[Trial]) -> list[Importance]:
    """How much each parameter matters, most important first (ties by name). Trials without an
    accuracy (not yet scored, failed) are left out; a parameter is scored on the trials that have it."""
    trials = list(trials)
    params = sorted({key for values, _ in trials for key in values})
    scored = [(values, float(acc)) for values, acc in trials
              if acc is not None and is_numeric(acc)]
    out = []
    for param in params:
        # the kind comes from every drawn value, scored or not, so it does not flip as trials finish
        numeric = all(is_numeric(v[param]) for v, _ in trials if v.get(param) is not None)
        pairs = [(values[param], acc) for values, acc in scored if values.get(param) is not None]
        xs, ys = [x for x, _ in pairs], [y for _, y in pairs]
        if numeric:
            rho = spearman([float(x) for x in xs], ys)
            out.append(Importance(param, abs(rho), "spearman", len(pairs), rho=rho))
        else:
            score, best = eta_squared(xs, ys)
            out.append(Importance(param, score, "eta2", len(pairs), best=best))
    return sorted(out, key=lambda imp: (-imp.score, imp.param))
