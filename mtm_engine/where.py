"""The where-language of `mtm list --where`: FIELD OP VALUE over a run's index row."""

from __future__ import annotations

import re
from typing import Any, Callable

from mtm_engine.store import StoreError

_WHERE = re.compile(r"^\s*([A-Za-z_][\w.]*)\s*(>=|<=|==|!=|>|<|=|~)\s*([^<>=!~\s].*?)\s*$")


def parse_where(text: str) -> Callable[[dict[str, Any]], bool]:
    """'best_val>0.9' -> a predicate over index rows. Strings compare as text, numbers as numbers;
    'note~resumed' holds where the field's text contains the value (tags: where one tag does)."""
    match = _WHERE.match(text)
    if not match:
        raise StoreError(f"--where {text!r}: expected FIELD OP VALUE, e.g. --where 'best_val>0.9' or 'note~resumed'")
    field, op, raw = match.groups()
    if op == "~":
        wanted = raw.strip("'\"").lower()

        def contains(row: dict[str, Any]) -> bool:
            have = row.get(field)
            return have is not None and any(wanted in str(v).lower() for v in (have if isinstance(have, list)
                                                                                 else [have]))

        contains.field = field   # type: ignore[attr-defined]
        return contains
    try:
        value: Any = float(raw)
    except ValueError:
        value = raw.strip("'\"")
    ops = {">": lambda a, b: a > b, ">=": lambda a, b: a >= b, "<": lambda a, b: a < b, "<=": lambda a, b: a <= b,
           "==": lambda a, b: a == b, "=": lambda a, b: a == b, "!=": lambda a, b: a != b}

    def predicate(row: dict[str, Any]) -> bool:
        have = row.get(field)   # a field only some runs have (note, tags): the others do not match
        if have is None or isinstance(value, float) != isinstance(have, (int, float)):
            return False
        return ops[op](have, value)

    predicate.field = field   # type: ignore[attr-defined]  (checked against the rows by the caller)
    return predicate
