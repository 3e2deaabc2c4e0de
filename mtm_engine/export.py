"""Result tables in the layout of the paper's Tables 6 and 7 (Markdown, CSV, JSON), and a
one-run report.

One table per dataset; one row per configuration, named like RN18-PP (backbone short name, loss
code); columns cos, cos_ce, euc, euc_ce, pure; cells test accuracy in %, two decimals, `-` where a
classifier does not apply. Runs of the same configuration with different seeds are one row:
mean ± std (sample standard deviation). The last column is the cost: minutes of training and
evaluation per run (the sum of its epochs' epoch_time_s; mean over seeds).
"""

from __future__ import annotations

import csv
import io
import json
import statistics
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

from mtm_engine.catalogue import BACKBONES, CLASSIFIERS, CLASSIFIERS_FOR_HEAD, DATASETS, LOSSES, loss_code, title_of
from mtm_engine.config import comparable_spec
from mtm_engine.records import CERTAINTY_MEASURES, METRICS, acc_key, config_id, differing_keys, flatten_spec
from mtm_engine.results import SELECTIONS, select_epoch

COLUMNS = tuple(CLASSIFIERS)
CAPTIONS = {
    "val": "test accuracy (%) at the epoch with the best validation accuracy",
    "final": "test accuracy (%) at the final epoch",
    "max-test": "maximum test accuracy (%) over epochs: the paper's protocol, OPTIMISTIC (the test split picks the epoch)",
}


@dataclass
class Row:
    label: str
    cells: dict[str, list[float]] = field(default_factory=dict)   # column -> one test accuracy per seed
    seeds: int = 0
    minutes: list[float] = field(default_factory=list)            # one per seed whose epochs were timed
    val: dict[str, list[float]] = field(default_factory=dict)     # column -> validation accuracy there, per seed
    loss: str = ""
    names: list[str] = field(default_factory=list)                # the runs' names, each once
    run_ids: list[str] = field(default_factory=list)              # the runs, where the caller gave their ids

    @property
    def named(self) -> str:
        """The label with the runs' names (two at most, then how many more): "RN18-PP · lr-low"."""
        names = self.names[:2] + ([f"+{len(self.names) - 2}"] if len(self.names) > 2 else [])
        return f"{self.label} · {', '.join(names)}" if names else self.label


@dataclass
class Table:
    dataset: str
    rows: list[Row]

    def chosen_on_validation(self) -> tuple[Row, str] | None:
        """The headline cell, chosen without looking at test: among the rows with the most seeds (a
        single lucky seed is not a headline), the loss with class embeddings (not the pure head) and the
        classifier whose mean validation accuracy is the highest (ties: the first in paper order). None
        where the tables hold no validation figures (--select final or max-test)."""
        eligible = [(i, row) for i, row in enumerate(self.rows)
                    if row.loss in LOSSES and LOSSES[row.loss].head == "mtm" and row.val]
        seeds = max((row.seeds for _, row in eligible), default=0)
        cells = [(statistics.mean(row.val[c]), -i, -COLUMNS.index(c), row, c)
                 for i, row in eligible if row.seeds == seeds for c in row.val if c in row.cells]
        if not cells:
            return None
        *_, row, column = max(cells, key=lambda cell: cell[:3])
        return row, column


def paper_results() -> dict[str, Any]:
    """The paper's Tables 6 and 7 (max-over-test accuracies in %), keyed dataset -> row -> column."""
    return json.loads(resources.files("mtm_engine").joinpath("paper_results.json").read_text())


def row_label(spec: dict[str, Any]) -> str:
    backbone = spec["model"]["backbone"]
    return f"{title_of(BACKBONES, backbone)}-{loss_code(spec['loss']['name'])}"


def build_tables(runs: list[tuple], selection: str = "val") -> list[Table]:
    """runs: (spec dict, epoch records[, run id]) tuples. Returns one table per dataset, rows in paper order."""
    groups: dict[str, dict[str, list]] = {}
    for spec, records, *run_id in runs:
        if records:
            groups.setdefault(spec["data"]["dataset"], {}).setdefault(config_id(spec), []).append(
                (spec, records, *run_id))
    tables = []
    for dataset, configs in groups.items():
        labelled = _labels(configs)
        rows = []
        for key, members in configs.items():
            row = Row(labelled[key], seeds=len(members),
                      minutes=[sum(r["epoch_time_s"] for r in records) / 60 for _, records, *_ in members
                               if all("epoch_time_s" in r for r in records)], loss=members[0][0]["loss"]["name"],
                      names=list(dict.fromkeys(spec.get("name", "") for spec, *_ in members if spec.get("name"))),
                      run_ids=[run_id for _, _, *ids in members for run_id in ids])
            for column in COLUMNS:
                values, vals = [], []
                for _, records, *_ in members:
                    chosen = select_epoch(records, column, selection)
                    if chosen is not None:
                        values.append(100.0 * chosen[acc_key("test", column)])
                        if selection == "val" and acc_key("val", column) in chosen:
                            vals.append(100.0 * chosen[acc_key("val", column)])
                if values:
                    row.cells[column] = values
                if vals and len(vals) == len(values):
                    row.val[column] = vals
            rows.append((_order(members[0][0]), row))
        tables.append(Table(dataset, [row for _, row in sorted(rows, key=lambda pair: pair[0])]))
    return sorted(tables, key=lambda t: _dataset_order(t.dataset))


def _order(spec: dict[str, Any]) -> tuple:
    """Paper order: the loss (E, C, CP, PP, CM, P), then the backbone size."""
    names = list(LOSSES)
    loss = spec["loss"]["name"]
    return (names.index(loss) if loss in names else len(names), list(BACKBONES).index(spec["model"]["backbone"]),
            row_label(spec))


def _labels(configs: dict[str, list]) -> dict[str, str]:
    """Row names; configurations that share one (say two learning rates) get the keys that differ."""
    by_label: dict[str, list[str]] = {}
    for key, members in configs.items():
        by_label.setdefault(row_label(members[0][0]), []).append(key)
    labels = {}
    for label, keys in by_label.items():
        if len(keys) == 1:
            labels[keys[0]] = label
            continue
        flat = {k: flatten_spec(comparable_spec(configs[k][0][0])) for k in keys}
        differing = differing_keys(configs[k][0][0] for k in keys)
        for k in keys:
            labels[k] = f"{label} ({', '.join(f'{name}={flat[k].get(name)}' for name in differing)})"
    return labels


def format_cell(values: list[float] | None) -> str:
    return _cells(values or [], 1, ".2f")


def _paper_cell(paper: dict[str, Any], dataset: str, label: str, column: str) -> str:
    """The paper's figure for the same model; for backbones the paper did not use (our convnet),
    the best of its ResNets with the same loss, marked with *."""
    table = paper.get(dataset, {})
    base = label.split(" ")[0]
    if base in table:
        value = table[base].get(column)
        return "-" if value is None else f"{value:.2f}"
    code = base.split("-", 1)[1]
    values = [row.get(column) for name, row in table.items() if name.split("-", 1)[1] == code]
    values = [v for v in values if v is not None]
    return f"{max(values):.2f}*" if values else "-"


def to_markdown(tables: list[Table], selection: str = "val", compare_paper: bool = False) -> str:
    paper = paper_results() if compare_paper else {}
    out = []
    for table in tables:
        title = title_of(DATASETS, table.dataset)
        seeds = sorted({row.seeds for row in table.rows})
        caption = f"**{title}**: {CAPTIONS[selection]}"
        if seeds != [1]:
            caption += "; mean ± std over seeds"
        if compare_paper:
            caption += ("; in brackets, the paper's figure (Tables 6-7: max test accuracy over 30 epochs; "
                        "* = the paper's best ResNet with that loss)")
        header = f"| {title} | " + " | ".join(COLUMNS) + " | min/run |"
        out += [caption, "", header, "|---" * (len(COLUMNS) + 2) + "|"]
        for row in table.rows:
            cells = []
            for column in COLUMNS:
                cell = format_cell(row.cells.get(column))
                if compare_paper and cell != "-":
                    cell += f" ({_paper_cell(paper, table.dataset, row.label, column)})"
                cells.append(cell)
            minutes = f"{statistics.mean(row.minutes):.1f}" if row.minutes else "-"
            out.append(f"| {row.named} | " + " | ".join(cells) + f" | {minutes} |")
        chosen = table.chosen_on_validation()
        if chosen is not None:
            row, column = chosen
            out += ["", f"Chosen on validation (among the rows with {row.seeds} seed{'s' * (row.seeds != 1)}, the loss with class embeddings "
                        f"and the classifier with the best mean validation accuracy, "
                        f"{statistics.mean(row.val[column]):.2f}): **{row.named} `{column}`**, test "
                        f"{format_cell(row.cells[column])}"]
        out.append("")
    return "\n".join(out)


def to_csv(tables: list[Table]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["dataset", "model", "seeds", *(f"{c}_{s}" for c in COLUMNS for s in ("mean", "std")),
                     "min_per_run", "names", "run_ids"])
    for table in tables:
        for row in table.rows:
            cells = []
            for column in COLUMNS:
                values = row.cells.get(column)
                cells += [f"{statistics.mean(values):.4f}" if values else "",
                          f"{statistics.stdev(values):.4f}" if values and len(values) > 1 else ""]
            minutes = f"{statistics.mean(row.minutes):.2f}" if row.minutes else ""
            writer.writerow([table.dataset, row.label, row.seeds, *cells, minutes, " ".join(row.names),
                             " ".join(row.run_ids)])
    return buffer.getvalue()


def to_json(tables: list[Table], selection: str) -> str:
    return json.dumps({"selection": selection, "tables": [
        {"dataset": t.dataset, "rows": [{"model": r.label, "seeds": r.seeds, "test_accuracy_percent": r.cells,
                                         "minutes_per_run": r.minutes, "names": r.names, "run_ids": r.run_ids}
                                        for r in t.rows]} for t in tables]}, indent=1)


def certainty_section(result: dict[str, Any]) -> list[str]:
    """Markdown lines for a kept `mtm eval --certainty` measurement (analysis.certainty's result)."""
    first = next(iter(result["scores"].values()))
    shown = [k for k in CERTAINTY_MEASURES if k in first]
    lines = ["", "## Certainty", "",
             f"The {result['classifier']} classifier's predictions on the test split, {result['checkpoint']} checkpoint "
             f"(epoch {result['epoch']}), accuracy {100 * result['accuracy']:.2f}%"
             + (f"; out-of-distribution: {result['ood']}'s test split" if result["ood"] else "") + ". "
             f"ECE {result['ece']:.4f} at temperature {result['temperature']:.4g} (fitted on validation). AUROC: "
             f"right against wrong predictions; acc@N: accuracy on the N% surest; FPR@95: out-of-distribution images "
             f"accepted at 95% of the test images.", "",
             "| score | " + " | ".join(CERTAINTY_MEASURES[k] for k in shown) + " |", "|---" * (len(shown) + 1) + "|"]
    lines += [f"| {name} | " + " | ".join(f"{row[k]:.4f}" for k in shown) + " |" for name, row in result["scores"].items()]
    return lines


# `mtm export --measures`: the figures of each configuration side by side, from its epoch records at
# the validation-selected epoch (primary classifier) and the measurements `mtm eval` kept.
# (heading, where the value comes from, its key, the scale it is shown at, the format): the accuracy in %, the
# catalogue's measures that ask for a column, then the certainty of `mtm eval --certainty`.
CERTAINTY_COLUMNS = (
    ("error AUROC", "certainty", "misclassification_auroc", 1, ".3f"), ("AURC", "certainty", "aurc", 1, ".4f"),
    ("OOD AUROC", "certainty", "ood_auroc", 1, ".3f"), ("Gaussian OOD AUROC", "gaussian", "ood_auroc", 1, ".3f"),
    ("ECE", "ece", "ece", 1, ".3f"),
)


def measure_columns() -> tuple[tuple[str, str, str, float, str], ...]:
    accuracy = METRICS["acc"]
    return (("acc %", "record", accuracy.name, 100, accuracy.fmt),
            *((m.symbol, "record", m.key(), 1, m.fmt) for m in METRICS.values() if m.column), *CERTAINTY_COLUMNS)


OWN_SCORE = {"mtm": "distance C", "pure": "msp"}   # the certainty score each head has without extra fitting
FEWSHOT_COLUMNS = (("trained", "1"), ("trained", "5"), ("trained", "10"), ("random", "5"), ("pixels", "5"))


def _measure(spec: dict[str, Any], records: list[dict[str, Any]], measured: dict[str, Any], source: str,
             key: str) -> float | None:
    if source == "record":
        primary = CLASSIFIERS_FOR_HEAD[spec["model"]["head"]][0]
        chosen = select_epoch(records, primary)
        return None if chosen is None else chosen.get(acc_key("test", primary) if key == METRICS["acc"].name else key)
    certainty = measured.get("certainty")
    if certainty is None:
        return None
    if source == "ece":
        return certainty["ece"]
    score = certainty["scores"].get("gaussian" if source == "gaussian" else OWN_SCORE[spec["model"]["head"]], {})
    return score.get(key)


def _cells(values: list[float | None], scale: float, fmt: str) -> str:
    """"-", one value, or mean ± sample std of the values that are present, scaled and formatted."""
    present = [scale * v for v in values if v is not None]
    if not present:
        return "-"
    if len(present) == 1:
        return f"{present[0]:{fmt}}"
    return f"{statistics.mean(present):{fmt}} ± {statistics.stdev(present):{fmt}}"


def measures_markdown(runs: list[tuple[dict[str, Any], list[dict[str, Any]], dict[str, Any]]]) -> str:
    """runs: (spec, epoch records, {kind: kept measurement or None}). Per dataset, a table of each
    configuration's figures (measure_columns()), mean ± std over the seeds that have them; then a table of the
    few-shot measurements, for the configurations that held classes out."""
    out, columns = [], measure_columns()
    for dataset in sorted({spec["data"]["dataset"] for spec, _, _ in runs}, key=_dataset_order):
        title = title_of(DATASETS, dataset)
        recorded = [(s, r, m) for s, r, m in runs if s["data"]["dataset"] == dataset and r]
        whole = _grouped([run for run in recorded if not run[0]["data"].get("holdout_classes")])
        if whole:
            out += [f"**{title}**: each configuration's figures on the test split, mean ± std over its seeds "
                    f"(over those measured, for `mtm eval`'s): accuracy and the retrieval and geometry measures at "
                    f"the validation-selected epoch of the primary classifier; certainty from `mtm eval --certainty` "
                    f"of the best checkpoint, by the head's own score (the distance to the nearest class embedding "
                    f"C, or the pure head's MSP) and by a class-conditional Gaussian; ECE after temperature scaling.",
                    "", f"| {title} | seeds | " + " | ".join(c[0] for c in columns) + " |",
                    "|---" * (len(columns) + 2) + "|"]
            for label, members in whole:
                out.append(f"| {label} | {len(members)} | " + " | ".join(
                    _cells([_measure(s, r, m, source, key) for s, r, m in members], scale, fmt)
                    for _, source, key, scale, fmt in columns) + " |")
            out.append("")
        fewshot = _grouped([run for run in recorded if run[2].get("fewshot")])
        if fewshot:
            first = fewshot[0][1][0][2]["fewshot"]
            out += [f"**{title}, few-shot**: {first['ways']}-way accuracy (%) on the held-out classes "
                    f"{first['held_out']}, mean over {first['episodes']} episodes (`mtm eval --fewshot`): the trained "
                    f"network's features at K shots, the same network untrained and the images themselves at 5 "
                    f"shots; generalised: every test image among the old centres and the new 5-shot ones.", "",
                    f"| {title} | " + " | ".join(f"{f} {k}-shot" for f, k in FEWSHOT_COLUMNS)
                    + " | generalised old | generalised new |", "|---" * (len(FEWSHOT_COLUMNS) + 3) + "|"]
            for label, members in fewshot:
                kept = [m["fewshot"]["features"] for _, _, m in members]
                cells = [_cells([f.get(name, {}).get(k, {}).get("accuracy") for f in kept], 100, ".2f")
                         for name, k in FEWSHOT_COLUMNS]
                cells += [_cells([f["trained"].get("5", {}).get(g) for f in kept], 100, ".2f")
                          for g in ("generalised_old", "generalised_new")]
                out.append(f"| {label} | " + " | ".join(cells) + " |")
            out.append("")
    return "\n".join(out)


def _grouped(runs: list[tuple[dict[str, Any], list[dict[str, Any]], dict[str, Any]]]) -> list[tuple[str, list]]:
    """Runs grouped by configuration (seeds together), labelled and in paper order."""
    configs: dict[str, list] = {}
    for run in runs:
        configs.setdefault(config_id(run[0]), []).append(run)
    labels = _labels(configs)
    return [(labels[key], members) for key, members in sorted(configs.items(), key=lambda kv: _order(kv[1][0][0]))]


def _dataset_order(dataset: str) -> int:
    return list(DATASETS).index(dataset) if dataset in DATASETS else 99


def fewshot_section(result: dict[str, Any]) -> list[str]:
    """Markdown lines for a kept `mtm eval --fewshot` measurement (analysis.fewshot's result)."""
    lines = ["", "## Few-shot", "",
             f"{result['ways']}-way episodes on the held-out classes {result['held_out']}, {result['checkpoint']} "
             f"checkpoint (epoch {result['epoch']}): K support images a class from their training images, "
             f"{result['queries']} queries a class from their test images, nearest {result['metric']} centre; "
             f"mean ± 95% CI over {result['episodes']} episodes. Generalised: every test image among the old classes' "
             f"centres and the new classes' K-shot centres.", "",
             "| features | K | accuracy % | generalised: old % | generalised: new % |", "|---|---|---|---|---|"]
    lines += [f"| {features} | {k} | {100 * r['accuracy']:.2f} ± {100 * r['ci95']:.2f} | "
              f"{100 * r['generalised_old']:.2f} | {100 * r['generalised_new']:.2f} |"
              for features, by_k in result["features"].items() for k, r in by_k.items()]
    return lines


def run_report(meta: dict[str, Any], row: dict[str, Any], records: list[dict[str, Any]],
               measurements: dict[str, dict[str, Any] | None] | None = None) -> str:
    """A one-run Markdown report: spec, per-epoch metrics and the final figures, and the measurements
    `mtm eval` kept (records.MEASUREMENTS: kind -> result, or None where never measured)."""
    spec = meta["spec"]
    columns = [c for c in COLUMNS if records and acc_key("test", c) in records[0]]
    lines = [f"# Run {meta['id']}: {meta['name']}", "",
             f"status **{row['status']}**, {row.get('epoch', 0)}/{row['epochs']} epochs, device {row.get('device')}, "
             f"seed {meta['seed']}, git {meta.get('git') or '-'}{' + source.patch (dirty)' if meta.get('git_dirty') else ''}", "", "## Spec", "", "| key | value |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in flatten_spec(spec).items()]
    lines += ["", "## Final figures (test accuracy %)", "", "| selection | " + " | ".join(columns) + " |",
              "|---" * (len(columns) + 1) + "|"]
    for selection in SELECTIONS:
        cells = []
        for c in columns:
            chosen = select_epoch(records, c, selection)
            cells.append(f"{100 * chosen[acc_key('test', c)]:.2f} (ep {chosen['epoch']})" if chosen else "-")
        lines.append(f"| {selection} | " + " | ".join(cells) + " |")
    metrics = [METRICS["train_loss"].key(), *(acc_key(s, c) for c in columns for s in ("val", "test")),
               *(m.key() for m in METRICS.values() if m.curve),
               "epoch_time_s"]
    metrics = [m for m in metrics if records and m in records[0]]
    lines += ["", "## Per epoch", "", "| epoch | " + " | ".join(metrics) + " |", "|---" * (len(metrics) + 1) + "|"]
    for r in records:
        lines.append(f"| {r['epoch']} | " + " | ".join(f"{r[m]:.4g}" for m in metrics) + " |")
    sections = {"certainty": certainty_section, "fewshot": fewshot_section}
    for kind, result in (measurements or {}).items():
        if result is not None:
            lines += sections[kind](result)
    return "\n".join(lines) + "\n"
