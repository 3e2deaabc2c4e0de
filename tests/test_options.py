"""Training options beyond the paper: augmentation, schedules, weight decay, the class-embedding
learning rate, normalised embeddings, label smoothing and weight averaging."""

import math

import pytest
import torch
import torch.nn.functional as F

from mtm_engine.checkpoints import make_average
from mtm_engine.config import DataSpec, load_spec
from mtm_engine.data import Split, augment, augmentation_draws, flips, load_dataset
from mtm_engine.events import EpochEnded
from mtm_engine.losses import cross_entropy
from mtm_engine.models import build_model
from mtm_engine.optim import make_optimiser, make_schedule
from mtm_engine.train import fit, train_one_epoch


def test_augment_crops_from_the_padded_image_and_flips_whole_images():
    x = torch.arange(2 * 1 * 5 * 5, dtype=torch.float32).view(2, 1, 5, 5)
    draws = augmentation_draws(2, torch.Generator().manual_seed(0), padding=2, flip=False, device=x.device)
    out = augment(x, draws, padding=2)
    padded = F.pad(x, (2, 2, 2, 2), mode="replicate")
    for b in range(2):
        oy, ox, _ = draws[b].tolist()
        assert torch.equal(out[b], padded[b, :, oy:oy + 5, ox:ox + 5])
    assert torch.equal(augment(x, torch.tensor([[0, 4, 0], [2, 2, 1]]), padding=2)[1], x[1].flip(-1))
    flips_drawn = augmentation_draws(1000, torch.Generator().manual_seed(1), padding=0, flip=True, device=x.device)
    assert flips_drawn[:, :2].eq(0).all() and 400 < flips_drawn[:, 2].sum() < 600   # half of them mirrored
    flipped = augment(x, flips_drawn[:2], padding=0)
    for b in range(2):
        assert torch.equal(flipped[b], x[b].flip(-1) if flips_drawn[b, 2] else x[b])
    again = augmentation_draws(2, torch.Generator().manual_seed(0), padding=2, flip=False, device=x.device)
    assert torch.equal(draws, again)   # the same generator state, the same crops


def test_an_augmented_epoch_sends_its_draws_to_the_device_once_not_per_batch(monkeypatch):
    """On CUDA each host-to-device copy in the batch loop stalls the GPU: count the loop's Tensor.to calls."""
    spec = load_spec(overrides=["data.augment=true", "data.flip=on", "train.batch_size=20", "model.width=4",
                                "model.dim=8", "model.stages=2"])
    data = load_dataset(spec.data)
    model = build_model(spec.model, data.channels, data.num_classes)
    copies = []
    original = torch.Tensor.to
    monkeypatch.setattr(torch.Tensor, "to", lambda self, *a, **k: copies.append(1) or original(self, *a, **k))
    train_one_epoch(model, data.train, spec, make_optimiser(spec, model), epoch=1)
    batches = math.ceil(len(data.train) / 20)
    assert batches >= 40 and len(copies) <= 0.1 * batches


def test_flip_where_it_makes_sense():
    assert flips(DataSpec(dataset="fashion-mnist")) and flips(DataSpec(dataset="cifar10"))
    assert not flips(DataSpec(dataset="mnist")) and not flips(DataSpec(dataset="digits"))
    assert flips(DataSpec(dataset="digits", flip="on")) and not flips(DataSpec(dataset="cifar10", flip="off"))


def _model(spec):
    return build_model(spec.model, 1, 10)


def test_cosine_schedule_warms_up_then_decays():
    spec = load_spec(overrides=["train.epochs=4", "train.schedule=cosine", "train.warmup_epochs=1", "train.lr=0.1"])
    opt = make_optimiser(spec, _model(spec))
    sched = make_schedule(spec, opt, batches_per_epoch=10)   # 40 steps, 10 of warm-up
    lrs = []
    for _ in range(40):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[0] == pytest.approx(0.01) and lrs[9] == pytest.approx(0.1)
    assert lrs[10 + 15] == pytest.approx(0.1 * 0.5 * (1 + math.cos(math.pi * 15 / 30)))
    assert lrs[-1] < 0.001


def test_class_embeddings_get_their_own_rate_and_no_weight_decay():
    spec = load_spec(overrides=["train.ce_lr_mult=10", "train.weight_decay=0.01", "train.optimizer=adamw"])
    model = _model(spec)
    opt = make_optimiser(spec, model)
    net, ce = opt.param_groups
    assert isinstance(opt, torch.optim.AdamW)
    assert ce["params"] == [model.class_embeddings] and ce["lr"] == pytest.approx(10 * spec.train.lr)
    assert ce["weight_decay"] == 0.0 and net["weight_decay"] == 0.01


def test_normalised_embeddings_and_targets_lie_on_the_sphere_of_the_scale():
    spec = load_spec(overrides=["model.normalize=true", "model.scale=7", "model.dim=5"])
    model = _model(spec)
    e, _ = model(torch.randn(3, 1, 36, 36))
    assert torch.allclose(e.norm(dim=1), torch.full((3,), 7.0))
    assert torch.allclose(model.targets().norm(dim=1), torch.full((10,), 7.0))


def test_a_normalised_pure_head_classifies_features_on_the_sphere():
    """Pure heads: the linear layer sees s * f / |f| (logits = W s f/|f| + b, by hand from the backbone's f)."""
    spec = load_spec(overrides=["model.head=pure", "loss.name=cross_entropy", "model.normalize=true",
                                "model.scale=3"])
    model = _model(spec).eval()
    x = torch.randn(4, 1, 36, 36)
    f = model.backbone(x.contiguous(memory_format=torch.channels_last))          # [4, F]
    e, logits = model(x)
    by_hand = 3 * f / f.norm(dim=1, keepdim=True) @ model.classifier.weight.T + model.classifier.bias
    assert torch.allclose(logits, by_hand, atol=1e-5) and torch.allclose(e.norm(dim=1), torch.full((4,), 3.0))


@pytest.mark.parametrize("head", ["mtm", "pure"])
def test_flip_tta_averages_each_image_with_its_mirror_image(head):
    """eval.flip_tta: e = mean of the two (back on the sphere of radius s for a normalised MTM
    head), logits = mean of the two; by hand from two plain forward passes."""
    from mtm_engine.evaluate import embed

    loss = "cross_entropy" if head == "pure" else "push_pull"
    plain = load_spec(overrides=[f"model.head={head}", f"loss.name={loss}", "model.normalize=true", "model.scale=3"])
    tta = load_spec(overrides=[f"model.head={head}", f"loss.name={loss}", "model.normalize=true", "model.scale=3",
                               "eval.flip_tta=true"])
    model = _model(plain)
    pixels = torch.randint(0, 256, (5, 1, 36, 36), dtype=torch.uint8)
    mean, std, y = torch.tensor([0.5]), torch.tensor([0.25]), torch.zeros(5, dtype=torch.long)
    e, logits = embed(model, Split(pixels, y, mean, std), tta)
    e1, l1 = embed(model, Split(pixels, y, mean, std), plain)
    e2, l2 = embed(model, Split(pixels.flip(-1), y, mean, std), plain)
    mean = (e1 + e2) / 2
    assert torch.allclose(e, 3 * F.normalize(mean, dim=1) if head == "mtm" else mean, atol=1e-5)
    assert (logits is None) == (head == "mtm")
    if head == "pure":
        assert torch.allclose(logits, (l1 + l2) / 2, atol=1e-5)


def test_label_smoothing_matches_a_hand_computation():
    logits, y = torch.tensor([[2.0, 0.0]]), torch.tensor([0])
    logp = torch.log_softmax(logits, dim=1)[0]
    # smoothing 0.2 over 2 classes: target (0.9, 0.1)
    expected = -(0.9 * logp[0] + 0.1 * logp[1]).item()
    assert cross_entropy(logits, y, label_smoothing=0.2).item() == pytest.approx(expected)


def test_options_train_and_resume_exactly(tmp_path):
    overrides = ["data.augment=true", "data.flip=on", "train.schedule=onecycle", "train.weight_decay=1e-4",
                 "train.optimizer=adamw", "model.normalize=true", "model.scale=8", "train.ce_lr_mult=2",
                 "train.ema=0.9", "train.epochs=3", "model.width=4", "model.dim=16"]
    data = load_dataset(load_spec().data)
    full = fit(load_spec(overrides=overrides), tmp_path / "a", data=data)

    class StopAfterTwo:
        stop = False

        def emit(self, event):
            if isinstance(event, EpochEnded) and event.epoch == 2:
                self.stop = True

    sink = StopAfterTwo()
    two = fit(load_spec(overrides=overrides), tmp_path / "b", sink, data=data, should_stop=lambda: sink.stop)
    assert two.status == "interrupted" and len(two.records) == 2
    resumed = fit(load_spec(overrides=overrides), tmp_path / "b", data=data, resume=True, history=two.records)
    assert full.records[-1]["test_acc_euc"] > 0.5
    for key in ("train_loss", "lr", "test_acc_euc", "test_cluster_size", "ce_separation"):
        assert resumed.records[-1][key] == pytest.approx(full.records[-1][key], rel=1e-5), key
    ends = [torch.load(tmp_path / run / "checkpoint.pt", weights_only=True) for run in ("a", "b")]
    for part in ("model", "trained_model"):   # the average (train.ema) and the trained weights, bit for bit
        for k, v in ends[0][part].items():
            assert torch.equal(ends[1][part][k], v), (part, k)


def test_weight_averaging_matches_a_hand_computation():
    """train.ema = 0.9 over four batches: a = w1 (a copy), then a = d a + (1 - d) w_t with the warm-up
    d = min(0.9, t / (9 + t)), for the weights and the BatchNorm statistics (model.stages builds BatchNorm)
    alike; integer buffers are copied."""
    spec = load_spec(overrides=["train.ema=0.9", "train.batch_size=15", "model.stages=2", "model.width=4"])
    data = load_dataset(spec.data)
    split = data.train.subset(torch.arange(60))
    torch.manual_seed(0)
    model = build_model(spec.model, data.channels, data.num_classes)
    average = make_average(spec, model)
    seen = []   # the trained weights and buffers after each step (every batch reports progress)
    train_one_epoch(model, split, spec, make_optimiser(spec, model), 1, average=average,
                    on_progress=lambda *_: seen.append({k: v.clone() for k, v in model.state_dict().items()}))
    assert len(seen) == 4 and average.steps == 4
    by_hand = seen[0]
    for t, weights in enumerate(seen[1:], start=2):
        d = min(0.9, t / (9 + t))   # 2/11, 3/12, 4/13
        by_hand = {k: d * v + (1 - d) * weights[k] if v.is_floating_point() else weights[k] for k, v in by_hand.items()}
    averaged = average.module.state_dict()
    assert any("running_mean" in k for k in averaged) and any("num_batches_tracked" in k for k in averaged)
    for k, v in by_hand.items():
        assert torch.allclose(averaged[k], v, atol=1e-6) if v.is_floating_point() else torch.equal(averaged[k], v), k
    assert not torch.allclose(averaged["class_embeddings"], seen[-1]["class_embeddings"])   # C is averaged too


def test_weight_averaging_trains_the_same_weights_and_evaluates_their_average(tmp_path):
    """With train.ema the trained weights are bit for bit those of the same run without it; the records,
    the selection and the kept checkpoint's `model` are the average's."""
    data = load_dataset(load_spec().data)
    overrides = ["train.epochs=2", "model.width=4", "model.dim=16"]
    plain = fit(load_spec(overrides=overrides), tmp_path / "plain", data=data)
    averaged = fit(load_spec(overrides=[*overrides, "train.ema=0.9"]), tmp_path / "ema", data=data)
    assert [r["train_loss"] for r in averaged.records] == [r["train_loss"] for r in plain.records]
    assert averaged.records[-1]["test_cluster_size"] != plain.records[-1]["test_cluster_size"]
    plain_state = torch.load(tmp_path / "plain" / "checkpoint.pt", weights_only=True)
    ema_state = torch.load(tmp_path / "ema" / "checkpoint.pt", weights_only=True)
    for k, v in plain_state["model"].items():
        assert torch.equal(ema_state["trained_model"][k], v), k
    assert not torch.equal(ema_state["model"]["class_embeddings"], plain_state["model"]["class_embeddings"])


@pytest.mark.parametrize("override, message", [
    ("loss.label_smoothing=0.1", "applies to cross_entropy"),
    ("train.warmup_epochs=20", "must be in [0, train.epochs"),
    ("train.schedule=step", "train.schedule = 'step': unknown"),
    ("train.ema=1", "train.ema = 1.0: must be in [0, 1"),
])
def test_option_errors(override, message):
    from mtm_engine.errors import ConfigError

    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("(", r"\(")):
        load_spec(overrides=[override])


def test_centres_from_a_subset_of_the_training_split(tmp_path):
    data = load_dataset(load_spec().data)
    full = fit(load_spec(overrides=["train.epochs=1"]), tmp_path / "a", data=data)
    part = fit(load_spec(overrides=["train.epochs=1", "eval.centre_samples=300"]), tmp_path / "b", data=data)
    # the same training, other centres: the centre-based classifiers may differ, the others may not
    assert part.records[0]["train_loss"] == full.records[0]["train_loss"]
    assert part.records[0]["test_acc_euc_ce"] == full.records[0]["test_acc_euc_ce"]
    assert part.records[0]["test_acc_euc"] == pytest.approx(full.records[0]["test_acc_euc"], abs=0.1)


@pytest.mark.long   # inductor compiles for about a minute on 2 CPU cores
def test_a_compiled_run_trains_the_same_numbers_and_keeps_the_same_checkpoint(tmp_path):
    """train.compile = true: torch.compile of the forward pass, in place. On the CPU its epoch records equal
    eager's (to float32 rounding: inductor fuses the same ops), and its checkpoint has the module's own
    parameter names, so eval, resume and an eager load read it."""
    from conftest import SMALL

    from mtm_engine.records import CHECKPOINT

    runs = {c: fit(load_spec(overrides=["train.epochs=1", f"train.compile={c}", *SMALL]), tmp_path / c)
            for c in ("false", "true")}
    eager, compiled = runs["false"].records[-1], runs["true"].records[-1]
    for key in ("train_loss", "val_acc_cos", "test_acc_euc", "test_cluster_size"):
        assert compiled[key] == pytest.approx(eager[key], rel=1e-4), key
    keys = {c: set(torch.load(tmp_path / c / CHECKPOINT, weights_only=True)["model"]) for c in runs}
    assert keys["true"] == keys["false"] and not any("_orig_mod" in k for k in keys["true"])
