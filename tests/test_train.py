import json

import pytest
import torch
from conftest import SMALL

from mtm_engine.config import load_spec
from mtm_engine.data import Dataset, Split, load_dataset
from mtm_engine.errors import ConfigError
from mtm_engine.events import EpochEnded, RunDiverged
from mtm_engine.records import CHECKPOINT
from mtm_engine.train import fit


class Recorder:
    def __init__(self):
        self.events = []

    def emit(self, event):
        self.events.append(event)


@pytest.fixture(scope="module")
def digits():
    return load_dataset(load_spec().data)


def test_fit_learns_digits_and_records_every_metric(digits, tmp_path):
    spec = load_spec(overrides=["train.epochs=3", "model.width=4", "model.dim=16"])
    sink = Recorder()
    result = fit(spec, tmp_path, sink, data=digits)
    assert result.status == "finished" and [r["epoch"] for r in result.records] == [1, 2, 3]
    last = result.records[-1]
    for key in ("train_loss", "val_acc_cos", "test_acc_euc_ce", "val_cluster_size", "test_centre_distance",
                "test_centre_separation", "val_median_cosine", "test_ce_gap", "ce_separation", "images_per_s"):
        assert key in last, key
    assert last["val_acc_euc"] > 0.7 and last["test_acc_euc"] > 0.7        # chance is 0.1
    assert [e.epoch for e in sink.events if isinstance(e, EpochEnded)] == [1, 2, 3]
    assert result.summary["val"]["euc"]["epoch"] in (1, 2, 3)
    assert (tmp_path / CHECKPOINT).is_file()
    last = json.loads((tmp_path / "embedding-last.json").read_text())
    best = json.loads((tmp_path / "embedding-best.json").read_text())
    assert last["epoch"] == 3 and best["epoch"] == result.summary["val"]["cos"]["epoch"]
    assert len(last["points"]) == len(digits.test) and len(last["centres"]) == len(last["class_embeddings"]) == 10


def test_pure_head_trains_with_cross_entropy(digits, tmp_path):
    spec = load_spec(overrides=["train.epochs=2", "model.head=pure", "loss.name=cross_entropy"])
    result = fit(spec, tmp_path, data=digits)
    assert result.records[-1]["test_acc_pure"] > 0.5
    assert "ce_separation" not in result.records[-1]


def test_resume_gives_the_same_numbers_as_an_uninterrupted_run(digits, tmp_path):
    small = ["model.width=4", "model.dim=16"]
    full = fit(load_spec(overrides=["train.epochs=3", *small]), tmp_path / "a", data=digits)
    part = fit(load_spec(overrides=["train.epochs=2", *small]), tmp_path / "b", data=digits)
    resumed = fit(load_spec(overrides=["train.epochs=3", *small]), tmp_path / "b", resume=True,
                  history=part.records, data=digits)
    assert [r["epoch"] for r in resumed.records] == [1, 2, 3]
    for key in ("train_loss", "val_acc_euc", "test_acc_cos", "test_cluster_size"):
        assert resumed.records[-1][key] == pytest.approx(full.records[-1][key], rel=1e-5), key


def test_a_nan_loss_ends_the_run_as_diverged(digits, tmp_path):
    # std 0: every normalised image is inf or nan (0/0), so is the first batch's loss
    poisoned = Split(digits.train.x, digits.train.y, digits.train.mean, torch.zeros_like(digits.train.std))
    data = Dataset(digits.name, poisoned, digits.val, digits.test, digits.classes)
    sink = Recorder()
    result = fit(load_spec(overrides=["train.epochs=2"]), tmp_path, sink, data=data)
    assert result.status == "diverged" and result.records == []
    assert "lower train.lr" in result.message
    assert any(isinstance(e, RunDiverged) for e in sink.events)


def test_should_stop_interrupts_after_a_whole_epoch(digits, tmp_path):
    stops = iter([False] * 100)
    epochs_done = []

    class StopAfterFirst(Recorder):
        def emit(self, event):
            if isinstance(event, EpochEnded):
                epochs_done.append(event.epoch)

    result = fit(load_spec(overrides=["train.epochs=3", "model.width=4", "model.dim=16"]), tmp_path, StopAfterFirst(), data=digits,
                 should_stop=lambda: bool(epochs_done) or next(stops))
    assert result.status == "interrupted" and [r["epoch"] for r in result.records] == [1]


@pytest.mark.parametrize("ema", [0.0, 0.9])   # with weight averaging, the average is what is evaluated and kept
def test_the_kept_best_and_last_weights_reproduce_the_recorded_epochs_exactly(tmp_path, ema):
    from mtm_engine.analysis import evaluate_checkpoint

    spec = load_spec(overrides=["train.epochs=3", "model.width=4", "model.dim=16", "train.lr=0.003",
                                f"train.ema={ema}"])
    result = fit(spec, tmp_path)
    assert (tmp_path / "best.pt").exists() and (tmp_path / "checkpoint.pt").exists()
    best_epoch = result.summary["val"][spec.classifiers[0]]["epoch"]
    kept = torch.load(tmp_path / "best.pt", weights_only=True)   # the evaluated weights only: no optimiser state
    assert set(kept) == {"epoch", "model"} and kept["epoch"] == best_epoch
    for which, expected_epoch in (("best", best_epoch), ("last", 3)):
        epoch, record = evaluate_checkpoint(spec, tmp_path, which)
        stored = result.records[epoch - 1]
        assert epoch == expected_epoch
        assert {k: record[k] for k in stored if k in record} == {k: stored[k] for k in stored if k in record}
        assert any(k.startswith("test_acc_") for k in record)


def test_a_damaged_checkpoint_is_one_line_naming_the_file(tmp_path):
    spec = load_spec(overrides=["train.epochs=1", "model.width=4", "model.dim=16"])
    fit(spec, tmp_path)
    (tmp_path / "checkpoint.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ConfigError, match=f"checkpoint {tmp_path / 'checkpoint.pt'} is damaged"):
        fit(load_spec(overrides=["train.epochs=2", "model.width=4", "model.dim=16"]), tmp_path, resume=True)
    fit(spec, tmp_path / "other")   # a checkpoint of another network
    (tmp_path / "other" / "checkpoint.pt").replace(tmp_path / "checkpoint.pt")
    with pytest.raises(ConfigError, match="belongs to another network"):
        fit(load_spec(overrides=["train.epochs=2", "model.width=8", "model.dim=16"]), tmp_path, resume=True)
    # issue 27's attacks: each was a raw KeyError, RuntimeError or IsADirectoryError, or torch's advice to load
    # the file with weights_only=False (which would run it)
    import pickle

    from mtm_engine.analysis import check_best
    from mtm_engine.checkpoints import load_state

    (tmp_path / "other" / "best.pt").replace(tmp_path / "checkpoint.pt")   # weights only: no optimiser state
    with pytest.raises(ConfigError, match=r"is damaged .*\(it lacks 'optimizer': not a whole training checkpoint\)"):
        fit(load_spec(overrides=["train.epochs=2", "model.width=4", "model.dim=16"]), tmp_path, resume=True)

    class Payload:
        def __reduce__(self):
            return (print, ("this ran",))

    planted = tmp_path / "best.pt"
    torch.save({"epoch": Payload()}, planted)
    with pytest.raises(ConfigError, match=r"best.pt is damaged .*\(it holds objects other than tensors and numbers, "
                                          r"and mtm never unpickles those\)") as info:
        check_best(tmp_path, 1, "abcd1234")
    assert "weights_only" not in str(info.value)
    planted.write_bytes(pickle.dumps({"epoch": 1}))   # a legacy pickle, not torch's zip
    with pytest.raises(ConfigError, match=r"best.pt is damaged"):
        check_best(tmp_path, 1, "abcd1234")
    planted.unlink()
    planted.mkdir()
    with pytest.raises(ConfigError, match=r"best.pt is damaged"):
        load_state(planted)


def test_a_run_reports_the_epoch_in_flight_to_its_progress_file(tmp_path):
    """BatchProgress carries the images seen and the time since the epoch began; the store sink
    writes them (rate-limited) to progress.json, which the TUI's Runs and Run screens read."""
    from mtm_engine.events import BatchProgress
    from mtm_engine.runner import create_run, execute
    from mtm_engine.store import Store

    store = Store(tmp_path / "home")
    spec = load_spec(overrides=["train.epochs=1", "model.width=4", "train.batch_size=50"])
    run_id = create_run(store, spec, status="queued")
    seen = Recorder()
    execute(store, run_id, seen)
    steps = [e for e in seen.events if isinstance(e, BatchProgress)]
    train_images = 1150   # digits: 1,797 images, 20% test, then 20% of the rest for validation
    assert [e.images for e in steps] == [min(e.batch * 50, train_images) for e in steps]
    assert steps[-1].images == train_images and steps[-1].batch == steps[-1].batches == 23
    assert all(later.seconds >= earlier.seconds > 0 for earlier, later in zip(steps, steps[1:]))
    progress = store.progress(run_id)   # the first progress of the run is written at once
    assert progress["epoch"] == 1 and 1 <= progress["batch"] <= 23 and progress["batches"] == 23
    assert progress["images_per_s"] > 0 and progress["gpu_mem_gb"] is None


def test_checkpoints_written_in_the_background_hold_the_state_when_asked_in_order(tmp_path, monkeypatch):
    """The next epoch changes the weights in place while the last one's checkpoint is written: the file must
    hold them as they were when the write was asked; writes land one after another, in order; and a failed
    write is raised in the training thread."""
    import threading

    from mtm_engine import checkpoints
    from mtm_engine.checkpoints import BackgroundWriter

    w = torch.nn.Parameter(torch.zeros(3))
    order, release = [], threading.Event()
    real_write = checkpoints._write

    def slow_write(path, state):
        release.wait(timeout=30)   # held until the training thread has moved on
        order.append(path.name)
        real_write(path, state)

    monkeypatch.setattr(checkpoints, "_write", slow_write)
    writer = BackgroundWriter()
    assert writer.write([(tmp_path / "best.pt", {"w": w}), (tmp_path / "checkpoint.pt", {"w": w})], epoch=1) is None
    with torch.no_grad():
        w.add_(5.0)   # the next epoch trains on
    release.set()
    assert writer.wait() == 1 and order == ["best.pt", "checkpoint.pt"]
    assert torch.equal(torch.load(tmp_path / "checkpoint.pt", weights_only=True)["w"], torch.zeros(3))

    monkeypatch.setattr(checkpoints, "_write", lambda path, state: (_ for _ in ()).throw(OSError(28, "No space left")))
    writer.write([(tmp_path / "checkpoint.pt", {"w": w})], epoch=2)
    with pytest.raises(OSError, match="No space left"):
        writer.wait()


def test_a_finished_run_has_its_last_checkpoint_on_disk_and_said_so(digits, tmp_path):
    from mtm_engine.events import CheckpointSaved

    sink = Recorder()
    fit(load_spec(overrides=["train.epochs=2", "model.width=4", "model.dim=16"]), tmp_path, sink, data=digits)
    assert [e.epoch for e in sink.events if isinstance(e, CheckpointSaved)] == [1, 2]
    assert torch.load(tmp_path / CHECKPOINT, weights_only=True)["epoch"] == 2


def test_resume_without_its_checkpoint_says_which_epochs_it_trains_again_and_refreshes_the_row(tmp_path):
    """The recorded epochs were dropped without a word, and the row still showed the old epoch and accuracy."""
    from mtm_engine.runner import create_run, execute
    from mtm_engine.store import Store

    store = Store(tmp_path)
    run_id = create_run(store, load_spec(overrides=["train.epochs=2", "model.width=4", "model.dim=16",
                                                    "data.size=16"]))
    execute(store, run_id)
    (store.run_dir(run_id) / CHECKPOINT).unlink()
    seen = []

    class Watch:
        def emit(self, event):
            if type(event).__name__ == "RunStarted":
                seen.append((event.note, store.row(run_id)["epoch"]))

    store.update(run_id, status="interrupted")
    result = execute(store, run_id, Watch(), resume=True)
    note = "epochs 1-2 were recorded, and trained again: checkpoint.pt was missing"
    assert seen == [(note, 0)]   # the row refreshed as soon as the records were dropped
    assert result.status == "finished" and result.message == note and store.row(run_id)["message"] == note
    assert [r["epoch"] for r in store.records(run_id)] == [1, 2]


@pytest.mark.parametrize("freeze", [False, True])
def test_freeze_batchnorm_keeps_epoch_1_s_statistics_from_epoch_2_on(freeze):
    """train.freeze_batchnorm, the authors' loop: epoch 1 trains in train mode (BatchNorm's running statistics
    move), epoch 2 in eval mode (they stay at epoch 1's, while the weights still learn)."""
    from mtm_engine.models import build_model
    from mtm_engine.optim import make_optimiser
    from mtm_engine.train import train_one_epoch

    spec = load_spec(overrides=[*SMALL, f"train.freeze_batchnorm={str(freeze).lower()}"])
    data = load_dataset(spec.data)
    torch.manual_seed(0)
    model = build_model(spec.model, 1, data.num_classes)
    optimiser = make_optimiser(spec, model)
    norms = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]

    def statistics():
        return torch.cat([t.clone() for m in norms for t in (m.running_mean, m.running_var)])

    before = statistics()
    train_one_epoch(model, data.train, spec, optimiser, epoch=1)
    after_one = statistics()
    weights = [p.clone() for p in model.parameters()]
    train_one_epoch(model, data.train, spec, optimiser, epoch=2)
    assert not torch.equal(before, after_one) and model.training is not freeze
    assert torch.equal(statistics(), after_one) is freeze
    assert any(not torch.equal(w, p) for w, p in zip(weights, model.parameters()))
