"""The researcher's loop (issue 28): Compose from a run, a log pane that follows, the queue and devices
panel, Compose's help and jump, seed-aware comparison, named export rows, the foreground progress bar,
and the small words. Pilot tests against real stores and real background runs; snapshots at 80x24."""

import asyncio
import io
import json
import os
import re
import statistics
import time
from pathlib import Path

import pytest
from conftest import NOW, ROOT, SMALL, fake_records, fixture_app, settle, until
from rich.console import Console
from textual.widgets import DataTable, Input, Log

from mtm_engine.config import DataSpec, load_spec
from mtm_engine.data_files import LAYOUT, missing_dataset
from mtm_engine.events import BatchProgress, EpochEnded
from mtm_engine.records import METRICS, Status
from mtm_engine.reference import config_table
from mtm_engine.runner import create_run
from mtm_engine.store import LOG, Store
from mtm_tui.progress import ProgressSink
from mtm_tui.screens.compare import CompareScreen
from mtm_tui.screens.compose import ComposeScreen
from mtm_tui.screens.log import LogScreen
from mtm_tui.screens.queue import QueueData, QueueScreen
from mtm_tui.screens.runs import RunsScreen
from mtm_tui.services import jobs
from mtm_tui.widgets.charts import MetricChart


def select(app, run_id: str) -> None:
    table = app.screen.query_one(DataTable)
    table.move_cursor(row=table.get_row_index(run_id), animate=False)


# --- item 13: the foreground progress bar -----------------------------------------------------------

def test_the_foreground_bar_shows_batches_speed_and_eta_then_evaluating_and_a_pipe_gets_epoch_lines():
    terminal = io.StringIO()
    sink = ProgressSink(3, ("cos",), out=Console(file=terminal, force_terminal=True, color_system=None, width=120))
    with sink:
        # 10 of 40 batches, 1,000 images in 5 s: 200 img/s; 2 batches/s, so the 30 left take 15 s
        sink.emit(BatchProgress(1, 10, 40, 0.5, 1000, 5.0))
        sink.progress.refresh()
        assert re.search(r"10/40 200 img/s · ETA 15s · loss 0\.5", terminal.getvalue())
        sink.emit(BatchProgress(1, 40, 40, 0.25, 4000, 20.0))   # every batch trained: the evaluation runs
        sink.progress.refresh()
        assert "40/40 200 img/s · evaluating · loss 0.25" in terminal.getvalue()
    piped = io.StringIO()
    sink = ProgressSink(3, ("cos",), out=Console(file=piped, force_terminal=False, width=10_000))
    record = {"epoch": 1, "train_loss": 0.25, "val_acc_cos": 0.9, "images_per_s": 200.0, "epoch_time_s": 21.0}
    with sink:
        sink.emit(BatchProgress(1, 40, 40, 0.25, 4000, 20.0))
        sink.emit(EpochEnded(1, record))
    assert piped.getvalue() == "epoch 1/3 loss 0.25 val cos 0.9000 200 img/s 21.0s\n"   # no bar, one line


# --- item 8: clone and relaunch from the TUI ----------------------------------------------------------

def test_a_failed_run_opens_in_compose_is_changed_and_launched(fixture_home):
    store = Store(fixture_home)
    store.update("cccc3333", status="failed", message="CUDA out of memory")
    app = fixture_app(fixture_home)

    async def flow():
        async with app.run_test(size=(100, 30)) as pilot:
            await settle(pilot, 1.0)
            select(app, "cccc3333")
            await pilot.press("f")
            await until(pilot, lambda: isinstance(app.screen, ComposeScreen) and app.screen.spec is not None)
            form = app.screen
            assert form.values()["loss.name"] == "cross_entropy" and form.values()["model.head"] == "pure"
            assert form.query_one("#f-name", Input).placeholder == "pure (run cccc3333's)"
            for key, value in [("train.epochs", "1"), *(item.split("=") for item in SMALL)]:
                form.query_one(f"#f-{key.replace('.', '--')}", Input).value = value
            await pilot.pause()
            await pilot.press("ctrl+l")
            await until(pilot, lambda: isinstance(app.screen, RunsScreen) and len(store.rows()) == 4)
            new = next(r for r in store.rows() if r["id"] not in ("aaaa1111", "bbbb2222", "cccc3333"))
            spec = store.meta(new["id"])["spec"]
            assert (new["name"], spec["loss"]["name"], spec["model"]["head"], spec["train"]["epochs"]) == \
                ("pure", "cross_entropy", "pure", 1)
            await until(pilot, lambda: store.row(new["id"])["status"] == "finished", timeout=120)
    asyncio.run(flow())


# --- item 10: the log pane, and why a run ended ----------------------------------------------------

def test_the_log_pane_follows_a_growing_log_and_shows_whole_lines_only(fixture_home):
    store = Store(fixture_home)
    log = store.run_dir("aaaa1111") / LOG
    log.write_text("device cpu, 1,234 parameters\nepoch 1/8 loss 1.0\n")
    app = fixture_app(fixture_home)

    async def flow():
        async with app.run_test(size=(100, 30)) as pilot:
            await settle(pilot, 1.0)
            select(app, "aaaa1111")
            await pilot.press("l")
            await until(pilot, lambda: isinstance(app.screen, LogScreen) and app.screen.query_one(Log).line_count >= 2)
            lines = app.screen.query_one(Log)
            with log.open("a") as fh:
                fh.write("epoch 2/8 loss 0.5\nepoch 3/8 lo")   # the last line is still being written
            await until(pilot, lambda: lines.line_count == 3)
            await pilot.pause(1.0)
            assert lines.lines[-1] == "epoch 2/8 loss 0.5" and lines.line_count == 3
            with log.open("a") as fh:
                fh.write("ss 0.25\n")
            await until(pilot, lambda: lines.line_count == 4)
            assert lines.lines[-1] == "epoch 3/8 loss 0.25"
            assert lines.auto_scroll and "following" in str(app.screen.query_one("#log-title").render())
            await pilot.press("f")
            assert not lines.auto_scroll
    asyncio.run(flow())


def test_why_a_run_failed_shows_under_the_table_and_in_the_wide_table(fixture_home):
    Store(fixture_home).update("cccc3333", status="failed", message="CUDA out of memory in epoch 5; lower "
                                                                    "train.batch_size")
    app = fixture_app(fixture_home)

    async def flow():
        async with app.run_test(size=(200, 50)) as pilot:
            await settle(pilot, 1.0)
            select(app, "cccc3333")
            await pilot.pause(0.3)
            assert "cccc3333 failed: CUDA out of memory in epoch 5; lower train.batch_size" in \
                str(app.screen.query_one("#runs-progress").render())
            assert "CUDA out of memory in epoch 5" in str(app.screen.query_one(DataTable).get_cell("cccc3333", "now"))
            select(app, "aaaa1111")   # a finished run: nothing to say
            await pilot.pause(0.3)
            assert str(app.screen.query_one("#runs-progress").render()).strip() == ""
    asyncio.run(flow())


# --- item 11: the queue and devices panel --------------------------------------------------------------

def test_the_queue_panel_shows_the_pool_the_run_in_its_slot_and_the_queue_and_sets_the_slots(tmp_path, monkeypatch):
    """Real runs through the real pool: one CPU slot, one run training in it, two waiting in order."""
    monkeypatch.chdir(tmp_path)
    store = Store(tmp_path / "home")
    jobs.configure_slots(store, ["cpu"])
    ids = [create_run(store, load_spec(overrides=[f"name=q{n}", "train.epochs=200", *SMALL]), status="queued")
           for n in range(3)]
    for run_id in ids:
        store.update(run_id, queued=NOW + ids.index(run_id))   # the order they wait in
        time.sleep(0.01)
    jobs.enqueue(store, ids)
    app = fixture_app(tmp_path / "home")

    async def flow():
        async with app.run_test(size=(100, 30)) as pilot:
            await settle(pilot, 0.5)
            await pilot.press("p")
            await until(pilot, lambda: isinstance(app.screen, QueueScreen))
            slots = app.screen.query_one("#queue-slots", DataTable)
            await until(pilot, lambda: slots.row_count == 1 and slots.get_row_at(0)[2] == ids[0][:8], timeout=60)
            pool = str(app.screen.query_one("#queue-pool").render())
            assert re.search(r"pool running \(pid \d+ on ", pool) and "1 slot, 1 busy: cpu" in pool
            waiting = app.screen.query_one("#queue-waiting", DataTable)
            assert [waiting.get_row_at(i)[:2] for i in range(waiting.row_count)] == [["1", ids[1][:8]], ["2", ids[2][:8]]]
            await pilot.press("s")
            await pilot.press(*"--slots 2", "enter")
            await until(pilot, lambda: jobs.read_slots(store) == ["cpu", "cpu"])
            await until(pilot, lambda: slots.row_count == 2 and slots.get_row_at(1)[2] == ids[1][:8], timeout=60)
            await pilot.press("s")
            await pilot.press(*"--slots 0", "enter")   # refused in one line; the slots stay
            await pilot.pause(0.5)
            assert jobs.read_slots(store) == ["cpu", "cpu"]
    try:
        asyncio.run(flow())
    finally:
        for run_id in ids:
            jobs.stop(store, run_id)
        deadline = time.time() + 60
        while any(r["status"] in ("queued", "running") for r in store.rows()) and time.time() < deadline:
            time.sleep(0.3)


def test_a_gpu_slot_shows_its_gpu_memory_and_use_from_nvidia_smi(fixture_home):
    # nvidia-smi --query-gpu=index,name,memory.used,memory.total,utilization.gpu --format=csv,noheader,nounits
    gpus = jobs.parse_gpu_stats("0, NVIDIA H100 80GB HBM3, 40960, 81559, 87\n1, NVIDIA H100 80GB HBM3, 0, 81559, [N/A]\n")
    assert set(gpus) == {"0"} and (gpus["0"].memory_used_gb, gpus["0"].utilisation_pct) == (40.0, 87.0)
    row = {**Store(fixture_home).row("aaaa1111"), "status": "running", "slot": 1, "epoch": 3, "epochs": 8}
    state = jobs.QueueState(None, False, ["gpu:1", "gpu:0"], {1: row}, [], gpus)
    app = fixture_app(fixture_home)

    async def flow():
        async with app.run_test(size=(100, 30)) as pilot:
            await settle(pilot, 0.5)
            await pilot.press("p")
            await until(pilot, lambda: isinstance(app.screen, QueueScreen))
            app.screen.POLL_S = 3600   # the panel shows the state handed to it, not the store's
            app.screen.show(QueueData(state))
            slots = app.screen.query_one("#queue-slots", DataTable)
            assert slots.get_row_at(0)[1:4] == ["gpu:1", "-", "[dim]free[/]"] and slots.get_row_at(0)[6:] == ["-", "-"]
            assert slots.get_row_at(1)[:3] == ["1", "gpu:0", "aaaa1111"] and slots.get_row_at(1)[6:] == \
                ["40.0/80 GB", "87%"]
    asyncio.run(flow())


# --- item 12: Compose you can work in --------------------------------------------------------------------

def test_compose_jumps_to_a_typed_key_helps_with_the_focused_one_and_checks_that_the_data_is_there(fixture_home,
                                                                                                    tmp_path):
    raw = tmp_path / "data" / "FashionMNIST" / "raw"
    app = fixture_app(fixture_home)

    async def flow():
        async with app.run_test(size=(100, 30)) as pilot:
            await settle(pilot, 0.5)
            await pilot.press("c")
            await until(pilot, lambda: isinstance(app.screen, ComposeScreen) and app.screen.spec is not None)
            form = app.screen
            await pilot.press("ctrl+g", *"lr", "enter")   # a key's last part is enough
            await pilot.pause(0.3)
            assert app.focused.id == "f-train--lr"
            assert str(form.query_one("#field-help").render()) == "train.lr: learning rate"
            verdict = form.query_one("#verdict")
            assert "✓ valid" in str(verdict.render()) and "the data is there" in str(verdict.render())   # digits
            form.query_one("#f-data--dataset", Input).value = "fashion-mnist"
            form.query_one("#f-data--root", Input).value = "data"   # relative: the folder mtm-tui runs in
            form.query_one("#f-data--download", ).value = "false"
            await pilot.pause(0.3)
            said = str(verdict.render())
            assert said.startswith("✗ fashion-mnist is not in") and str(raw.resolve()) in said and form.spec is None
            raw.mkdir(parents=True)
            for name in LAYOUT["fashion-mnist"][1]:
                (raw / name).write_bytes(b"")
            form.check()
            assert "✓ valid: fashion-mnist" in str(verdict.render())
            await pilot.press("ctrl+g", *"o", "enter")   # in several keys: said, and the focus stays
            await pilot.pause(0.3)
            assert app.focused.id == "f-train--lr"
    asyncio.run(flow())


def test_a_dataset_is_there_as_archives_or_as_torchvision_extracted_it(tmp_path):
    import torchvision.datasets

    for name, (sub, archives, _) in LAYOUT.items():   # the names torchvision reads
        cls = getattr(torchvision.datasets, {"mnist": "MNIST", "fashion-mnist": "FashionMNIST", "kmnist": "KMNIST",
                                             "cifar10": "CIFAR10", "cifar100": "CIFAR100"}[name])
        expected = [Path(url).name for url, _ in cls.resources] if hasattr(cls, "resources") else [cls.filename]
        assert list(archives) == expected and (sub == "." or sub == f"{cls.__name__}/raw")
    assert missing_dataset(DataSpec(dataset="digits", root=str(tmp_path))) is None
    assert "kmnist is not in" in missing_dataset(DataSpec(dataset="kmnist", root=str(tmp_path)))
    (tmp_path / "cifar-10-batches-py").mkdir()
    assert missing_dataset(DataSpec(dataset="cifar10", root=str(tmp_path))) is None
    assert missing_dataset(DataSpec(dataset=f"folder:{tmp_path}/none", root=".")) == f"folder {tmp_path}/none does not exist"


def test_the_readme_configuration_table_is_the_reference():
    readme = (ROOT / "README.md").read_text().splitlines()
    start = readme.index("| key | default | meaning |")
    assert readme[start:start + len(config_table())] == config_table(), "run: python -m mtm_engine.reference README.md"


# --- item 9: seed-aware comparison, named export rows -----------------------------------------------------

def _seeds_home(tmp_path) -> tuple[Path, dict[str, list[str]]]:
    """Two learning rates, two seeds each; seed s of lr L reaches validation accuracy base + s / 100 in epoch 1."""
    store = Store(tmp_path / "home")
    ids: dict[str, list[str]] = {}
    for lr, base in (("0.001", 0.80), ("0.0003", 0.70)):
        for seed in (0, 1):
            run_id = create_run(store, load_spec(overrides=["name=pp", f"train.lr={lr}", f"train.seed={seed}"]),
                                status="finished")
            for r in fake_records(3, start=base + seed / 100):
                store.append_epoch(run_id, r, {"epoch": r["epoch"], "best_val": r["val_acc_cos"],
                                               "test_acc": r["test_acc_cos"], "best_epoch": r["epoch"]})
            store.update(run_id, status="finished")
            ids.setdefault(lr, []).append(run_id)
    return tmp_path / "home", ids


def test_compare_draws_seeds_as_a_band_named_by_the_keys_that_differ(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    home, ids = _seeds_home(tmp_path)
    app = fixture_app(home)

    async def flow():
        async with app.run_test(size=(120, 40)) as pilot:
            await settle(pilot, 0.5)
            app.open_compare(ids["0.001"] + ids["0.0003"])
            await until(pilot, lambda: isinstance(app.screen, CompareScreen) and app.screen.query(MetricChart)
                        and app.screen.query_one(MetricChart).drawn)
            drawn = app.screen.query_one(MetricChart).drawn
            assert list(drawn) == ["lr=1.0e-03 ×2", "lr=3.0e-04 ×2"]
            xs, mean, spread = drawn["lr=1.0e-03 ×2"]
            epoch1 = [0.80 + 0.18 * 0.4, 0.81 + 0.17 * 0.4]   # fake_records: start + (0.98 - start) * (1 - 0.6)
            assert xs == [1, 2, 3] and mean[0] == pytest.approx(statistics.fmean(epoch1))
            assert spread[0] == pytest.approx(statistics.stdev(epoch1))
            legend = str(app.screen.query_one(".legend").render())
            assert "lr=1.0e-03 ×2" in legend and "±" in legend
            table = app.screen.query_one("#compare-table", DataTable)
            assert table.get_row_at(0)[:2] == ["×2 seeds", "lr=1.0e-03"]
            await pilot.press("s")   # each run on its own: the seed joins the names
            await pilot.pause(0.3)
            assert sorted(app.screen.query_one(MetricChart).drawn) == [
                "lr=1.0e-03 seed=0", "lr=1.0e-03 seed=1", "lr=3.0e-04 seed=0", "lr=3.0e-04 seed=1"]
    asyncio.run(flow())


# --- item 6: the small words ---------------------------------------------------------------------------

def test_the_small_words_name_keys_and_figures_truly(fixture_home):
    store = Store(fixture_home)
    queued = create_run(store, load_spec(), status="queued")
    assert jobs.stop(store, queued) == "taken out of the queue"
    assert "R in mtm-tui" in store.row(queued)["message"]
    # Tables 6-7 give accuracy once a run: no per-epoch chart may claim them
    assert not any("Table" in m.figure for m in METRICS.values())
    app = fixture_app(fixture_home)

    async def flow():
        async with app.run_test(size=(80, 24), notifications=True) as pilot:
            await settle(pilot, 0.5)
            helps = [c.help for c in app.get_system_commands(app.screen)]
            assert "key j, on the Runs screen" in helps and not any("cursor(" in h for h in helps)
            app.notify("a toast")
            await pilot.pause(0.5)
            toast = app.screen.query_one("Toast")
            assert toast.region.y <= 2   # at the top: the legends and the footer at the bottom stay readable
    asyncio.run(flow())


def test_the_sweep_chart_draws_a_parameter_searched_log_uniformly_on_a_log_axis(tmp_path, monkeypatch):
    from mtm_tui.screens.sweep import ParamScatter, SweepScreen, log_axis

    assert log_axis([2e-4, 5e-4], searched_log=True) and not log_axis([2e-4, 5e-4])
    monkeypatch.chdir(tmp_path)
    store = Store(tmp_path / "home")
    store.save_sweep("5ee7", {"id": "5ee7", "name": "lr", "spec": load_spec().to_dict(), "created": NOW,
                              "tune": {"metric": "cos", "num_samples": 2, "space": {"train.lr": {"loguniform": [1e-4, 1e-3]}}}})
    for n, lr in enumerate((2e-4, 5e-4)):
        run_id = create_run(store, load_spec(overrides=[f"train.lr={lr}"]), status="finished", sweep="5ee7",
                            extra={"trial_config": {"train.lr": lr}})
        store.append_epoch(run_id, fake_records(1)[0], {"epoch": 1, "best_val": 0.9 + n / 100, "test_acc": 0.9})
        store.update(run_id, status="finished")
    app = fixture_app(tmp_path / "home")

    async def flow():
        async with app.run_test(size=(100, 30)) as pilot:
            await settle(pilot, 0.5)
            app.push_screen(SweepScreen("5ee7"))
            await until(pilot, lambda: isinstance(app.screen, SweepScreen) and len(app.screen.data.trials) == 2)
            await settle(pilot, 0.5)
            assert "train.lr (log)" in app.screen.query_one(ParamScatter).plt.build()
    asyncio.run(flow())


# --- snapshots at 80x24 -------------------------------------------------------------------------------

def test_snapshot_compare_seed_bands_80x24(snap_compare, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    home, ids = _seeds_home(tmp_path)

    async def compare(pilot):
        await settle(pilot, 0.5)
        pilot.app.open_compare(ids["0.001"] + ids["0.0003"])
        await settle(pilot)
    assert snap_compare(fixture_app(Path(os.path.relpath(home))), terminal_size=(80, 24), run_before=compare)


def test_snapshot_queue_80x24(snap_compare, fixture_home, monkeypatch):
    store = Store(fixture_home)
    monkeypatch.setattr(jobs, "ensure_pool", lambda store: None)   # a still picture: no pool starts the queue
    jobs.configure_slots(store, ["cpu", "cpu"])
    (store.home / "queue" / "pool.json").write_text(json.dumps({"host": "gpu-node-1", "pid": 4242, "started": NOW - 300}))
    store.update("aaaa1111", status="running", slot=0, epoch=3, epochs=8, host="elsewhere", heartbeat=time.time())
    for n, run_id in enumerate(("bbbb2222", "cccc3333")):
        store.update(run_id, status="queued", queued=NOW - 120 + n)

    async def queue(pilot):
        await settle(pilot, 0.5)
        await pilot.press("p")
        await settle(pilot)
    assert snap_compare(fixture_app(fixture_home), terminal_size=(80, 24), run_before=queue)


def test_snapshot_log_80x24(snap_compare, fixture_home):
    Store(fixture_home).update("cccc3333", status="failed", message="diverged: loss is NaN")
    (Store(fixture_home).run_dir("cccc3333") / LOG).write_text(
        "device cpu, 21,706 parameters, images: train 1437, val 360, test 1797\n"
        + "".join(f"epoch {e}/5 loss {10 / e:.5g} val pure 0.{90 + e}00 2,000 img/s 1.5s\n" for e in range(1, 5)))

    async def log(pilot):
        await settle(pilot, 0.5)
        select(pilot.app, "cccc3333")
        await pilot.press("l")
        await settle(pilot)
    assert snap_compare(fixture_app(fixture_home), terminal_size=(80, 24), run_before=log)


def test_snapshot_compose_from_a_run_80x24(snap_compare, fixture_home):
    # its data.root absolute as typed, so that the picture is the same in any folder
    create_run(Store(fixture_home), load_spec(overrides=["name=lr-low", "train.lr=0.0003", "data.root=/srv/data"]),
               status="failed", run_id="dddd4444")

    async def compose(pilot):
        await settle(pilot, 0.5)
        select(pilot.app, "dddd4444")
        await pilot.press("f")
        await until(pilot, lambda: getattr(pilot.app.screen, "spec", None) is not None)
        pilot.app.screen.query_one("#f-name", Input).cursor_blink = False
        await settle(pilot)
    assert snap_compare(fixture_app(fixture_home), terminal_size=(80, 24), run_before=compose)


def test_the_log_pane_of_a_queued_run_waits_for_its_log_and_then_follows_it(fixture_home, monkeypatch):
    monkeypatch.setattr(jobs, "ensure_pool", lambda store: None)   # the test writes the log a worker would
    store = Store(fixture_home)
    store.update("aaaa1111", status=Status.QUEUED)
    log = store.run_dir("aaaa1111") / LOG
    app = fixture_app(fixture_home)

    async def flow():
        async with app.run_test(size=(100, 30)) as pilot:
            await settle(pilot, 0.5)
            app.open_log("aaaa1111")
            await until(pilot, lambda: isinstance(app.screen, LogScreen) and app.screen.query("#log-title")
                        and "waits in the queue" in str(app.screen.query_one("#log-title").render()))
            log.write_text("device cpu, 1,234 parameters\n")   # a slot took it
            await until(pilot, lambda: app.screen.query_one(Log).lines == ["device cpu, 1,234 parameters"])
            assert "waits in the queue" not in str(app.screen.query_one("#log-title").render())
    asyncio.run(flow())
