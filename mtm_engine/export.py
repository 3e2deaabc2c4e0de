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

from mtm_engine.config import BACKBONES, LOSSES, MTM_LOSSES, comparable_spec
from mtm_engine.records import CERTAINTY_MEASURES, acc_key, config_id, differing_keys, flatten_spec
from mtm_engine.results import SELECTIONS, select_epoch

COLUMNS = ("cos", "cos_ce", "euc", "euc_ce", "pure")
BACKBONE_SHORT = {"convnet": "CNN", "resnet18": "RN18", "resnet34": "RN34", "resnet50": "RN50",
                  "resnet101": "RN101", "resnet152": "RN152"}
LOSS_CODES = {"euclidean": "E", "cosine": "C", "proximity": "CP", "push_pull": "PP", "comparison": "CM",
              "proxy_anchor": "PA", "proxy_nca": "PNCA", "normalized_softmax": "NS", "arcface": "AF",
              "cross_entropy": "P"}
DATASET_TITLES = {"mnist": "MNIST", "fashion-mnist": "F-MNIST", "kmnist": "K-MNIST", "cifar10": "CIFAR10",
                  "cifar100": "CIFAR100", "digits": "digits"}
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


@dataclass
class Table:
    dataset: str
    rows: list[Row]

    def chosen_on_validation(self) -> tuple[Row, str] | None:
        """The headline cell, chosen without looking at test: among the rows with the most seeds (a
        single lucky seed is not a headline), the loss with class embeddings (not the pure head) and the
        classifier whose mean validation accuracy is the highest (ties: the first in paper order). None
        where the tables hold no validation figures (--select final or max-test)."""
        eligible = [(i, row) for i, row in enumerate(self.rows) if row.loss in MTM_LOSSES and row.val]
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
    return f"{BACKBONE_SHORT.get(backbone, backbone)}-{LOSS_CODES[spec['loss']['name']]}"


def build_tables(runs: list[tuple[dict[str, Any], list[dict[str, Any]]]], selection: str = "val") -> list[Table]:
    """runs: (spec dict, epoch records) pairs. Returns one table per dataset, rows in paper order."""
    groups: dict[str, dict[str, list]] = {}
    for spec, records in runs:
        if records:
            groups.setdefault(spec["data"]["dataset"], {}).setdefault(config_id(spec), []).append((spec, records))
    tables = []
    for dataset, configs in groups.items():
        labelled = _labels(configs)
        rows = []
        for key, members in configs.items():
            row = Row(labelled[key], seeds=len(members),
                      minutes=[sum(r["epoch_time_s"] for r in records) / 60 for _, records in members
                               if all("epoch_time_s" in r for r in records)], loss=members[0][0]["loss"]["name"])
            for column in COLUMNS:
                values, vals = [], []
                for _, records in members:
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
    return sorted(tables, key=lambda t: list(DATASET_TITLES).index(t.dataset) if t.dataset in DATASET_TITLES else 99)


def _order(spec: dict[str, Any]) -> tuple:
    """Paper order: the loss (E, C, CP, PP, CM, P), then the backbone size."""
    return (LOSSES.index(spec["loss"]["name"]), BACKBONES.index(spec["model"]["backbone"]), row_label(spec))


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
    if not values:
        return "-"
    if len(values) == 1:
        return f"{values[0]:.2f}"
    return f"{statistics.mean(values):.2f} ± {statistics.stdev(values):.2f}"


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
        title = DATASET_TITLES.get(table.dataset, table.dataset)
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
            out.append(f"| {row.label} | " + " | ".join(cells) + f" | {minutes} |")
        chosen = table.chosen_on_validation()
        if chosen is not None:
            row, column = chosen
            out += ["", f"Chosen on validation (among the rows with {row.seeds} seed{'s' * (row.seeds != 1)}, the loss with class embeddings "
                        f"and the classifier with the best mean validation accuracy, "
                        f"{statistics.mean(row.val[column]):.2f}): **{row.label} `{column}`**, test "
                        f"{format_cell(row.cells[column])}"]
        out.append("")
    return "\n".join(out)


def to_csv(tables: list[Table]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["dataset", "model", "seeds", *(f"{c}_{s}" for c in COLUMNS for s in ("mean", "std"))])
    for table in tables:
        for row in table.rows:
            cells = []
            for column in COLUMNS:
                values = row.cells.get(column)
                cells += [f"{statistics.mean(values):.4f}" if values else "",
                          f"{statistics.stdev(values):.4f}" if values and len(values) > 1 else ""]
            writer.writerow([table.dataset, row.label, row.seeds, *cells])
    return buffer.getvalue()


def to_json(tables: list[Table], selection: str) -> str:
    return json.dumps({"selection": selection, "tables": [
        {"dataset": t.dataset, "rows": [{"model": r.label, "seeds": r.seeds, "test_accuracy_percent": r.cells}
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


def run_report(meta: dict[str, Any], row: dict[str, Any], records: list[dict[str, Any]],
               certainty: dict[str, Any] | None = None) -> str:
    """A one-run Markdown report: spec, per-epoch metrics and the final figures, and the kept
    certainty measurement if `mtm eval --certainty` made one."""
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
    metrics = ["train_loss", *(acc_key(s, c) for c in columns for s in ("val", "test")),
               "test_cluster_size", "test_centre_distance", "test_centre_separation", "test_median_cosine",
               "epoch_time_s"]
    metrics = [m for m in metrics if records and m in records[0]]
    lines += ["", "## Per epoch", "", "| epoch | " + " | ".join(metrics) + " |", "|---" * (len(metrics) + 1) + "|"]
    for r in records:
        lines.append(f"| {r['epoch']} | " + " | ".join(f"{r[m]:.4g}" for m in metrics) + " |")
    if certainty is not None:
        lines += certainty_section(certainty)
    return "\n".join(lines) + "\n"
