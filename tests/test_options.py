"""Training options beyond the paper: augmentation, schedules, weight decay, the class-embedding
learning rate, normalised embeddings and label smoothing."""

import math

import pytest
import torch
import torch.nn.functional as F

from mtm_engine.config import DataSpec, load_spec
from mtm_engine.data import augment, flips, load_dataset
from mtm_engine.losses import cross_entropy
from mtm_engine.models import build_model
from mtm_engine.train import EpochEnded, fit, make_optimiser, make_schedule


def test_augment_crops_from_the_padded_image_and_flips_whole_images():
    x = torch.arange(2 * 1 * 5 * 5, dtype=torch.float32).view(2, 1, 5, 5)
    g = torch.Generator().manual_seed(0)
    out = augment(x, g, padding=2, flip=False)
    padded = F.pad(x, (2, 2, 2, 2), mode="replicate")
    for b in range(2):
        crops = [padded[b, :, i:i + 5, j:j + 5] for i in range(5) for j in range(5)]
        assert any(torch.equal(out[b], c) for c in crops)
    flipped = augment(x, torch.Generator().manual_seed(1), padding=0, flip=True)
    for b in range(2):
        assert torch.equal(flipped[b], x[b]) or torch.equal(flipped[b], x[b].flip(-1))
    again = augment(x, torch.Generator().manual_seed(0), padding=2, flip=False)
    assert torch.equal(out, again)   # the same generator state, the same crops


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
    from mtm_engine.train import embed

    loss = "cross_entropy" if head == "pure" else "push_pull"
    plain = load_spec(overrides=[f"model.head={head}", f"loss.name={loss}", "model.normalize=true", "model.scale=3"])
    tta = load_spec(overrides=[f"model.head={head}", f"loss.name={loss}", "model.normalize=true", "model.scale=3",
                               "eval.flip_tta=true"])
    model = _model(plain)
    x = torch.randn(5, 1, 36, 36)
    e, logits = embed(model, x, tta)
    e1, l1 = embed(model, x, plain)
    e2, l2 = embed(model, x.flip(-1), plain)
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
                 "train.epochs=3"]
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
    for key in ("train_loss", "lr", "test_acc_euc"):
        assert resumed.records[-1][key] == pytest.approx(full.records[-1][key], rel=1e-5), key


@pytest.mark.parametrize("override, message", [
    ("loss.label_smoothing=0.1", "applies to cross_entropy"),
    ("train.warmup_epochs=20", "must be in [0, train.epochs"),
    ("train.schedule=step", "train.schedule = 'step': unknown"),
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
