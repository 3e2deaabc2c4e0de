"""The configuration reference: one line of help for every key of an experiment, as config.py declares it
(config.setting). The README's configuration table, Compose's help for the focused field and `mtm keys` are all
made from it (a test holds the README to it: `python -m mtm_engine.reference README.md` rewrites the table)."""

from __future__ import annotations

import dataclasses
import re
import sys
from pathlib import Path

from mtm_engine.atomic import atomic_write
from mtm_engine.catalogue import DATASETS
from mtm_engine.config import SECTIONS, Spec, _toml_value, choices
from mtm_engine.records import flatten_spec


def key_help() -> dict[str, str]:
    """key -> its meaning, as markdown (`code` spans, no pipes): every key of Spec, in its order, as its
    declaration says it (config.setting), with the names it allows where it says {choices}."""
    names = {**choices(), "data.dataset": tuple(DATASETS)}
    declared = {"name": next(f for f in dataclasses.fields(Spec) if f.name == "name")}
    declared.update({f"{section}.{f.name}": f for section, cls in SECTIONS.items() for f in dataclasses.fields(cls)})
    return {key: f.metadata["help"].replace("{choices}", ", ".join(f"`{n}`" for n in names.get(key, ())))
            for key, f in declared.items()}


def shown_default(value) -> str:
    """A default as the TOML one would write: `1e-8`, not 1e-08."""
    return re.sub(r"e-0(\d)", r"e-\1", _toml_value(value))


def config_table() -> list[str]:
    """The README's table of every configuration key: its default and its meaning."""
    defaults = flatten_spec(Spec().to_dict())
    rows = ["| key | default | meaning |", "|---|---|---|"]
    for key, meaning in key_help().items():
        default = "file name" if key == "name" else f"`{shown_default(defaults[key])}`"
        rows.append(f"| `{key}` | {default} | {meaning} |")
    return rows


def one_line(key: str, width: int = 76) -> str:
    """Compose's help for a field: the key's meaning as plain text, its first clause where the whole is longer
    than a line."""
    text = key_help().get(key, "").replace("`", "")
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
