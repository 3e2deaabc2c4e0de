"""The loss catalogue: one entry (and its function) makes a loss valid, trained with its own parameters only,
and named in the tables, the Runs table and Compose."""

import pytest
from conftest import SMALL

from mtm_engine import catalogue
from mtm_engine.catalogue import LossEntry, loss_arguments
from mtm_engine.config import choices, spec_from_dict
from mtm_engine.errors import ConfigError
from mtm_engine.export import build_tables, to_markdown
from mtm_engine.runner import create_run, execute
from mtm_engine.store import Store
from mtm_tui.services.rows import row_cells

CALLS = []


def squared_pull(e, y, C, *, reduction="sum", r):
    """A test loss: r * |e - c_e|^2, summed. It takes r, and no eps (it would fail on one)."""
    CALLS.append(r)
    per_instance = r * (e - C[y]).pow(2).sum(dim=1)
    return per_instance.sum() if reduction == "sum" else per_instance.mean()


@pytest.fixture
def registered(monkeypatch):
    monkeypatch.setitem(catalogue.LOSSES, "squared_pull", LossEntry(
        "squared_pull", "SQ", "squared pull", "mtm", "test_catalogue:squared_pull", {"r": 0.5}))


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
    table = to_markdown(build_tables([(store.meta(run_id)["spec"], store.records(run_id), run_id)], "final"), "final")
    assert "| CNN-SQ · experiment |" in table


def test_an_unknown_loss_lists_the_catalogue_and_each_loss_has_its_own_r():
    with pytest.raises(ConfigError, match="loss.name = 'nope': unknown; choose one of euclidean, cosine"):
        spec_from_dict({}, ["loss.name=nope"])
    assert [catalogue.default_r(n) for n in ("proximity", "push_pull", "euclidean", "gone")] == [1e4, 0.95, 0.0, 0.0]
