import urllib.error

import pytest
import torch

from mtm_engine.config import ModelSpec
from mtm_engine.data import Split
from mtm_engine.errors import ModelError
from mtm_engine.models import Shortcut, build_model


def test_mtm_head_outputs_embeddings_and_owns_class_embeddings():
    model = build_model(ModelSpec(backbone="convnet", head="mtm", dim=12), in_channels=1, num_classes=10)
    e, logits = model(torch.randn(3, 1, 36, 36))
    assert e.shape == (3, 12) and logits is None
    assert model.class_embeddings.shape == (10, 12)
    assert any(p is model.class_embeddings for p in model.parameters())


def test_pure_head_outputs_logits_and_its_penultimate_features():
    model = build_model(ModelSpec(backbone="convnet", head="pure", width=8), in_channels=3, num_classes=4)
    e, logits = model(torch.randn(2, 3, 36, 36))
    assert e.shape == (2, 64) and logits.shape == (2, 4)
    assert model.class_embeddings is None


def test_backbone_features_are_what_any_head_reads():
    """embed(..., backbone=True) gives the backbone's features [N, F] for either head (the few-shot random
    baseline): an unnormalised pure head's e itself, and for an MTM head the input of its embedding layer."""
    from mtm_engine.config import load_spec
    from mtm_engine.evaluate import embed

    images = Split(torch.randint(0, 256, (5, 1, 28, 28), dtype=torch.uint8), torch.zeros(5, dtype=torch.long),
                   torch.tensor([0.5]), torch.tensor([0.25]))
    x = images.images()   # [5, 1, 28, 28] normalised
    for head in ("mtm", "pure"):
        spec = load_spec(overrides=[f"model.head={head}", "eval.flip_tta=true", "model.normalize=false"]
                         + (["loss.name=cross_entropy"] if head == "pure" else []))
        torch.manual_seed(0)
        model = build_model(spec.model, in_channels=1, num_classes=10).eval()
        features, logits = embed(model, images, spec, backbone=True)
        with torch.no_grad():
            mirrored = (model.backbone(x) + model.backbone(x.flip(-1))) / 2   # [5, F], flip averaged
        assert logits is None and features.shape == mirrored.shape == (5, 128) and torch.allclose(features, mirrored, atol=1e-6)
        if head == "pure":
            assert torch.allclose(features, embed(model, images, spec)[0], atol=1e-6)
        else:
            assert embed(model, images, spec)[0].shape == (5, spec.model.dim)


def test_convnet_depth_adds_convolutions_to_every_stage_but_the_first():
    def convs(depth):
        model = build_model(ModelSpec(backbone="convnet", width=4, depth=depth), in_channels=1, num_classes=3)
        return [m.out_channels for m in model.backbone.modules() if isinstance(m, torch.nn.Conv2d)]

    assert convs(1) == [4, 8, 16, 32]
    assert convs(2) == [4, 8, 8, 16, 16, 32, 32]


def test_convnet_stages_set_the_widths_and_the_pooling():
    """stages=3 at 28 px: 28 -> 14 -> 7, then global pooling of the last stage's 4w channels."""
    model = build_model(ModelSpec(backbone="convnet", width=4, depth=2, stages=3, dim=6), in_channels=1, num_classes=3)
    convs = [m.out_channels for m in model.backbone.modules() if isinstance(m, torch.nn.Conv2d)]
    pools = [m for m in model.backbone.modules() if isinstance(m, torch.nn.MaxPool2d)]
    assert convs == [4, 8, 8, 16, 16] and len(pools) == 2 and model.embed.in_features == 16
    assert model.backbone.body[:-2](torch.randn(2, 1, 28, 28)).shape == (2, 16, 7, 7)


def test_convnet_shortcut_adds_each_later_convolution_to_its_input():
    """With shortcut, a stage's later convolutions are residual blocks: the same convolutions (and so the
    same multiply-adds), and a block whose BN scale is 0 at the start is the identity on its input."""
    def net(shortcut):
        spec = ModelSpec(backbone="convnet", width=4, depth=3, shortcut=shortcut)
        return build_model(spec, in_channels=1, num_classes=3).backbone

    def convs(model):
        return [(m.in_channels, m.out_channels) for m in model.modules() if isinstance(m, torch.nn.Conv2d)]

    def blocks(model):
        return sum(isinstance(m, Shortcut) for m in model.modules())

    assert convs(net(True)) == convs(net(False))
    assert (blocks(net(True)), blocks(net(False))) == (3 * 2, 0)   # 3 stages after the first, 2 later convs each
    block = Shortcut(3)
    x = torch.rand(2, 3, 5, 5)   # >= 0, so ReLU(x + 0) == x
    torch.testing.assert_close(block(x), x)
    block = Shortcut(3).eval()    # BN with its initial running statistics (mean 0, var 1)
    torch.nn.init.ones_(block.bn.weight)
    expected = torch.relu(x + torch.nn.functional.conv2d(x, block.conv.weight, padding=1) / (1 + block.bn.eps) ** 0.5)
    torch.testing.assert_close(block(x), expected)


def test_convnet_parameter_names_are_those_of_the_kept_checkpoints():
    """Without shortcut, the layers keep their places in `body`, so best.pt files saved before it still load:
    conv-BN at 0-1, max-pool at 3, then conv-BN at 4-5 and 7-8 (width 4, depth 2, 2 stages)."""
    model = build_model(ModelSpec(backbone="convnet", width=4, depth=2, stages=2), in_channels=1, num_classes=3)
    assert {k.rsplit(".", 1)[0] for k in model.backbone.state_dict()} == {f"body.{i}" for i in (0, 1, 4, 5, 7, 8)}


def test_weights_are_channels_last_and_any_input_layout_gives_the_same_output():
    model = build_model(ModelSpec(backbone="convnet", width=4, dim=6), in_channels=3, num_classes=3).eval()
    conv = next(m for m in model.modules() if isinstance(m, torch.nn.Conv2d))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    x = torch.randn(2, 3, 36, 36)
    e_nchw, _ = model(x)
    e_nhwc, _ = model(x.contiguous(memory_format=torch.channels_last))
    torch.testing.assert_close(e_nchw, e_nhwc)


@pytest.mark.parametrize("stem", ["imagenet", "cifar"])
def test_resnet_takes_grey_images_with_either_stem(stem):
    model = build_model(ModelSpec(backbone="resnet18", stem=stem, dim=5), in_channels=1, num_classes=3)
    assert model.backbone.conv1.in_channels == 1
    assert model.backbone.conv1.kernel_size == ((3, 3) if stem == "cifar" else (7, 7))
    e, _ = model.eval()(torch.randn(2, 1, 36, 36))
    assert e.shape == (2, 5)


def test_pretrained_weights_offline_name_the_cache_file(tmp_path, monkeypatch):
    def offline(*args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    with pytest.raises(ModelError) as info:
        build_model(ModelSpec(backbone="resnet18", pretrained=True), in_channels=1, num_classes=10)
    assert "resnet18-f37072fd.pth" in str(info.value) and str(tmp_path) in str(info.value)


def _cached_weights(tmp_path, monkeypatch, content):
    """A file where torch.hub keeps resnet18's weights, and the hash check set to accept it (its name carries
    the start of the real file's sha256, which no test file can have)."""
    import hashlib

    from mtm_engine import models

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    cache = tmp_path / "hub" / "checkpoints" / "resnet18-f37072fd.pth"
    cache.parent.mkdir(parents=True)
    content(cache)
    monkeypatch.setattr(models, "_hash_prefix", lambda name: hashlib.sha256(cache.read_bytes()).hexdigest()[:8])
    return cache


def test_pretrained_grey_input_is_repeated_to_three_channels(tmp_path, monkeypatch):
    import torchvision.models as tvm

    state = tvm.resnet18().state_dict()
    _cached_weights(tmp_path, monkeypatch, lambda path: torch.save(state, path))
    model = build_model(ModelSpec(backbone="resnet18", pretrained=True, dim=4), in_channels=1, num_classes=2)
    assert model.backbone.conv1.in_channels == 3
    assert torch.equal(model.backbone.layer1[0].conv1.weight, state["layer1.0.conv1.weight"])
    e, _ = model.eval()(torch.randn(2, 1, 36, 36))
    assert e.shape == (2, 4)


class Payload:
    """A pickle that runs code when unpickled: it creates a file."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def test_planted_pretrained_weights_never_run_their_pickle(tmp_path, monkeypatch):
    """A file planted in the hub cache ran its payload (torch.hub unpickles with weights_only=False). Now a file
    whose sha256 is not the one its name gives is refused, and one that passes is unpickled weights-only."""
    import pickle

    marker = tmp_path / "ran"
    cache = _cached_weights(tmp_path, monkeypatch, lambda path: path.write_bytes(pickle.dumps(Payload(marker))))
    with pytest.raises(ModelError, match="cannot be read as weights"):
        build_model(ModelSpec(backbone="resnet18", pretrained=True), in_channels=1, num_classes=10)
    assert not marker.exists()
    monkeypatch.undo()   # the real check: the planted file's sha256 is not torchvision's
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    with pytest.raises(ModelError, match=r"is not torchvision's file \(its sha256"):
        build_model(ModelSpec(backbone="resnet18", pretrained=True), in_channels=1, num_classes=10)
    assert not marker.exists() and cache.exists()


@pytest.mark.parametrize("head", ["mtm", "pure"])
def test_heads_run_in_float32_under_bf16_autocast(head):
    """The backbone may run in bf16, but e and the logits must not be rounded to bf16: that rounding
    would put a floor under the cluster size σ. So under autocast the heads give float32 outputs equal
    to the float32 heads applied to the (bf16) features."""
    torch.manual_seed(0)
    model = build_model(ModelSpec(backbone="convnet", head=head, width=4, dim=1351), in_channels=1,
                        num_classes=10).eval()
    x = torch.randn(4, 1, 36, 36)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        e, logits = model(x)
        features = model.backbone(x.contiguous(memory_format=torch.channels_last))
    assert features.dtype == torch.bfloat16   # the autocast really reaches the backbone
    with torch.no_grad():
        expected_e = model.embed(features.float())
        expected_logits = model.classifier(features.float()) if head == "pure" else None
        bf16_e = model.embed(features.float()).bfloat16().float()
    assert e.dtype == torch.float32
    assert torch.equal(e, expected_e)
    if head == "pure":
        assert logits.dtype == torch.float32 and torch.equal(logits, expected_logits)
    else:   # a bf16 head would have differed
        assert not torch.equal(e, bf16_e)
