"""The two protocols of the paper's presets: ours (honest: validation picks the epoch) and the authors' (as their
code ran it). A faithful preset and its honest twin each train one epoch, on the embedded digits at a small size
(8 px: the presets' ResNet-18, loss, head and hyperparameters unchanged)."""

import tomllib
from pathlib import Path

import pytest

from mtm_engine.config import load_spec
from mtm_engine.records import acc_key
from mtm_engine.runner import create_run, execute
from mtm_engine.store import Store
from mtm_tui.services.rows import COLUMNS, row_cells

PAPER = Path(__file__).parents[1] / "experiments" / "paper"


def test_every_faithful_preset_has_an_honest_twin_with_the_same_hyperparameters():
    faithful = sorted((PAPER / "authors").rglob("RN*.toml"))
    assert len(faithful) == 150
    for path in faithful:
        twin = PAPER / path.relative_to(PAPER / "authors")
        ours, theirs = load_spec(twin), load_spec(path)
        assert (ours.train.lr, ours.model.dim, ours.loss.r) == (theirs.train.lr, theirs.model.dim, theirs.loss.r)
        assert "the authors' protocol" in path.read_text().splitlines()[0]
        assert "our protocol" in twin.read_text().splitlines()[0]
        space = tomllib.loads(path.read_text()).get("tune", {}).get("space", {})
        if "loss.r" in space:   # the authors drew r uniformly (an integer), ours log-uniformly
            assert space["loss.r"] == {"integer": [1000, 1000000]}
            assert tomllib.loads(twin.read_text())["tune"]["space"]["loss.r"] == {"loguniform": [1e3, 1e6]}


@pytest.mark.parametrize("protocol", ["ours", "authors"])
def test_a_paper_preset_trains_one_epoch_in_its_protocol(protocol, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = (PAPER / "authors" if protocol == "authors" else PAPER) / "best" / "fashion-mnist" / "RN18-CP.toml"
    spec = load_spec(path, ["train.epochs=1", "data.dataset=digits", "data.size=8"])
    store = Store(tmp_path / "home")
    run_id = create_run(store, spec, status="running")
    assert execute(store, run_id).status == "finished"
    row, (record,) = store.row(run_id), store.records(run_id)
    if protocol == "authors":
        assert (spec.loss.name, spec.train.freeze_batchnorm, row["primary"]) == ("proximity_authors", True, "euc_ce")
        assert row["selection"] == "max-test" and acc_key("val", "euc_ce") not in record   # no validation split
        assert row["test_acc"] == record[acc_key("test", "euc_ce")]
        assert row_cells(row, row["created"])[COLUMNS.index("test%")].endswith("*")   # marked optimistic
        assert {"test_authors_cluster_size", "authors_centre_distance", "test_cluster_size"} <= set(record)
    else:
        assert (spec.loss.name, spec.train.freeze_batchnorm, row["primary"]) == ("proximity", False, "cos")
        assert row["selection"] == "val" and row["best_val"] == record[acc_key("val", "cos")]
        assert not any("authors" in key for key in record)
        assert not row_cells(row, row["created"])[COLUMNS.index("test%")].endswith("*")
