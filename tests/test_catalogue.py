"""The catalogues: one entry (and its function) makes a loss valid, trained with its own parameters only, and
named in the tables, the Runs table and Compose; one entry makes a measure recorded each epoch and shown by a
chart, Compare, the exports, `mtm show` and `mtm plot`."""

import pytest
from conftest import SMALL
from typer.testing import CliRunner

from mtm_engine import catalogue
from mtm_engine.catalogue import LossEntry, loss_arguments
from mtm_engine.config import choices, spec_from_dict
from mtm_engine.errors import ConfigError
from mtm_engine.export import build_tables, measures_markdown, run_report, to_markdown
from mtm_engine.records import METRICS, Metric
from mtm_engine.runner import create_run, execute
from mtm_engine.store import Store
from mtm_tui import cli
from mtm_tui.plots import plot_runs
from mtm_tui.screens.compare import compare_choices
from mtm_tui.services.rows import row_cells
from mtm_tui.widgets.charts import View, charts

CALLS = []


def squared_pull(e, y, C, *, reduction="sum", r):
    """A test loss: r * |e - c_e|^2, summed. It takes r, and no eps (it would fail on one)."""
    CALLS.append(r)
    per_instance = r * (e - C[y]).pow(2).sum(dim=1)
    return per_instance.sum() if reduction == "sum" else per_instance.mean()


SPREADS = []


def spread(s):
    """A test measure: the mean distance of a split's embeddings to their class's training centre."""
    value = (s.e - s.centres[s.y]).norm(dim=1).mean().item()
    SPREADS.append((s.split, value))
    return {"spread": value}


@pytest.fixture
def registered(monkeypatch):
    monkeypatch.setitem(catalogue.LOSSES, "squared_pull", LossEntry(
        "squared_pull", "SQ", "squared pull", "mtm", "test_catalogue:squared_pull", {"r": 0.5}))
    monkeypatch.setitem(METRICS, "spread", Metric("spread", "spread", "δ", True, function="test_catalogue:spread",
                                                  chart="Spread", curve=True, column=True, show=True, fmt=".4f"))


def test_a_registered_loss_is_valid_trained_with_its_own_parameters_and_named_everywhere(registered, tmp_path,
                                                                                          monkeypatch):
    monkeypatch.chdir(tmp_path)
    spec = spec_from_dict({}, ["loss.name=squared_pull", "train.epochs=1", *SMALL])
    assert spec.loss.r == 0.5 and "squared_pull" in choices()["loss.name"]          # its default r; Compose offers it
    assert loss_arguments(spec.loss) == {"reduction": "sum", "r": 0.5}                # no eps: not its parameter
    with pytest.raises(ConfigError, match="does not train a 'pure' head"):
        spec_from_dict({}, ["loss.name=squared_pull", "model.head=pure"])
    store = Store(tmp_path / "home")
    run_id = create_run(store, spec, status="running")
    result = execute(store, run_id)
    assert result.status == "finished" and CALLS and set(CALLS) == {0.5}
    row = store.row(run_id)
    assert row_cells(row, row["created"])[5] == "SQ"                                # the Runs table's loss column
    meta, records = store.meta(run_id), store.records(run_id)
    table = to_markdown(build_tables([(meta["spec"], records, run_id)], "final"), "final")
    assert "| CNN-SQ · experiment |" in table
    # the measure: measured on each split every epoch, and shown by every view that draws measures
    assert [split for split, _ in SPREADS] == ["val", "test"]
    assert (records[0]["val_spread"], records[0]["test_spread"]) == tuple(value for _, value in SPREADS)
    chart = charts()["Spread"]
    assert chart.log_y and list(chart.series(records, View(test=True))) == ["δ val", "δ test"]
    assert chart.title(View()) == "spread δ, validation (t adds test); log"
    assert ("spread δ (validation)", METRICS["spread"], "val") in compare_choices().values()
    measures = measures_markdown([(meta["spec"], records, {})])
    assert "| ρ | δ | error AUROC |" in measures and f" {records[0]['test_spread']:.4f} |" in measures
    assert "test_spread" in run_report(meta, store.row(run_id), records)
    shown = CliRunner().invoke(cli.app, ["show", run_id, "--home", str(store.home)], env={"COLUMNS": "160"})
    assert shown.exit_code == 0 and "test cluster size σ, centre distance ρ and spread δ" in shown.output
    written = plot_runs([(meta, store.row(run_id), records)], {}, tmp_path / "plots", formats=("svg",))
    assert tmp_path / "plots" / "spread.svg" in written


def test_an_unknown_loss_lists_the_catalogue_and_each_loss_has_its_own_r():
    with pytest.raises(ConfigError, match="loss.name = 'nope': unknown; choose one of euclidean, cosine"):
        spec_from_dict({}, ["loss.name=nope"])
    assert [catalogue.default_r(n) for n in ("proximity", "push_pull", "euclidean", "gone")] == [1e4, 0.95, 0.0, 0.0]
