"""Backbones, stems and heads: the network of the Moving Targets Model (paper Section III, Fig. 1).

A model maps images x [B, C, 36, 36] to (e [B, d], logits [B, K] or None):
- head "mtm": e = Linear(features -> d), plus learned class embeddings C [K, d] (N(0, 1) init);
- head "pure": logits = Linear(features -> K); e is the penultimate features, used by the
  nearest-neighbour classifiers and the geometry measures.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mtm_engine.catalogue import BACKBONES, load
from mtm_engine.config import ModelSpec
from mtm_engine.errors import ModelError


class ConvNet(nn.Module):
    """A small CNN: `stages` stages of conv-BN-ReLU (w, 2w, 4w, ... channels), each but the last
    followed by a 2x2 max-pool, then global average pooling to w * 2^(stages-1) features. The first
    stage has one convolution; the later ones `depth` each.
    - stages=4, w=16 (the default): 36 -> 18 -> 9 -> 4 px; at depth 1 about 4.4 M multiply-adds an
      image, so an MNIST epoch fits in about a minute on 2 CPU cores.
    - stages=3, w=32, depth=2 at 28 px: 28 -> 14 -> 7 px, 0.28 M parameters; more of the compute at
      high resolution, about 2.5x the time an image of stages=4, w=16.
    With `shortcut`, each convolution after a stage's first is a residual block (Shortcut): same
    multiply-adds, one addition more, so a deeper stage trains like a shallow one at first."""

    def __init__(self, in_channels: int, width: int = 16, depth: int = 1, stages: int = 4, shortcut: bool = False):
        super().__init__()
        layers: list[nn.Module] = []
        channels = in_channels
        for stage in range(stages):
            for index in range(1 if stage == 0 else depth):
                if shortcut and index > 0:
                    layers.append(Shortcut(channels))
                else:
                    layers += [nn.Conv2d(channels, width << stage, 3, padding=1, bias=False),
                               nn.BatchNorm2d(width << stage), nn.ReLU(inplace=True)]
                    channels = width << stage
            if stage < stages - 1:
                layers.append(nn.MaxPool2d(2))
        layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten()]
        self.body = nn.Sequential(*layers)
        self.out_features = channels

    def forward(self, x: Tensor) -> Tensor:
        return self.body(x)


class Shortcut(nn.Module):
    """ReLU(x + BN(conv3x3(x))) on x [B, c, H, W]: a residual block of one convolution (He et al., 2016).
    BN's scale starts at 0, so the block starts as the identity on non-negative x, as after a ReLU
    (Goyal et al., 2017: "zero-init residual")."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(channels)
        nn.init.zeros_(self.bn.weight)

    def forward(self, x: Tensor) -> Tensor:
        return F.relu(x + self.bn(self.conv(x)))


def resnet(spec: ModelSpec, in_channels: int) -> tuple[nn.Module, int, bool]:
    """torchvision's ResNet of model.backbone: (backbone without its fc, feature count, whether 1-channel input
    must be repeated to 3)."""
    import torchvision.models as tvm

    name = spec.backbone
    builder = getattr(tvm, name)
    weights = tvm.get_model_weights(name).IMAGENET1K_V1 if spec.pretrained else None
    net = builder(weights=None)
    if weights is not None:
        net.load_state_dict(_pretrained_state(weights))
    repeat = False
    if spec.stem == "cifar":   # 3x3 stride 1, no max-pool: keeps 36x36 resolution into layer1
        net.conv1 = nn.Conv2d(in_channels, 64, 3, stride=1, padding=1, bias=False)
        net.maxpool = nn.Identity()
    elif in_channels != 3:
        if spec.pretrained:
            repeat = True      # keep the ImageNet conv1; feed grey images as 3 equal channels
        else:
            net.conv1 = nn.Conv2d(in_channels, 64, 7, stride=2, padding=3, bias=False)
    features = net.fc.in_features
    net.fc = nn.Identity()
    return net, features, repeat


def _pretrained_state(weights) -> dict[str, Tensor]:
    """torchvision's ImageNet weights from the torch hub cache (downloaded there once, if allowed), checked
    against the hash in their file name and loaded with weights_only=True. (torch.hub would unpickle
    whatever file lies there with weights_only=False: a planted file would run its code.)"""
    cache = Path(torch.hub.get_dir()) / "checkpoints" / Path(weights.url).name
    if not cache.exists():
        try:
            cache.parent.mkdir(parents=True, exist_ok=True)
            torch.hub.download_url_to_file(weights.url, str(cache), progress=False)
        except Exception as exc:   # urllib/HTTP/OS errors differ by platform; all mean "not here"
            raise ModelError(
                f"pretrained weights {cache.name} are not in {cache.parent} and could not be downloaded "
                f"({type(exc).__name__}); copy the file there from {weights.url}, or set model.pretrained = false"
            ) from None
    expected = _hash_prefix(cache.name)
    with open(cache, "rb") as fh:
        actual = hashlib.file_digest(fh, "sha256").hexdigest()
    if not actual.startswith(expected):
        raise ModelError(f"{cache} is not torchvision's file (its sha256 {actual[:12]}... does not begin with "
                         f"{expected}, as its name says); delete it, and copy the file there again from {weights.url}")
    try:
        return torch.load(cache, map_location="cpu", weights_only=True)
    except Exception as exc:   # a foreign pickle is refused here, not run
        raise ModelError(f"{cache} cannot be read as weights ({str(exc).strip().splitlines()[0][:120]}); delete it, "
                         f"and copy the file there again from {weights.url}") from None


def _hash_prefix(name: str) -> str:
    """The start of a file's sha256 that torchvision writes into its weights' names: resnet18-f37072fd.pth."""
    return name.rsplit("-", 1)[-1].split(".")[0]


def convnet(spec: ModelSpec, in_channels: int) -> tuple[nn.Module, int, bool]:
    net = ConvNet(in_channels, spec.width, spec.depth, spec.stages, spec.shortcut)
    return net, net.out_features, False


class MovingTargetsNet(nn.Module):
    """Backbone + head. forward(x [B, C, H, W]) -> (e [B, d], logits [B, K] or None)."""

    def __init__(self, backbone: nn.Module, features: int, head: str, dim: int, num_classes: int,
                 repeat_channels: bool = False, normalize: bool = False, scale: float = 1.0):
        super().__init__()
        self.backbone = backbone
        self.head = head
        self.repeat_channels = repeat_channels
        self.normalize, self.scale = normalize, scale
        if head == "mtm":
            self.embed: nn.Module = nn.Linear(features, dim)
            self.class_embeddings: nn.Parameter | None = nn.Parameter(torch.randn(num_classes, dim))
            self.classifier: nn.Module | None = None
        else:
            self.embed = nn.Identity()
            self.register_parameter("class_embeddings", None)
            self.classifier = nn.Linear(features, num_classes)

    def features(self, x: Tensor) -> Tensor:
        """The backbone's features [B, F] of images x [B, C, H, W], before any head; bf16 under CUDA autocast."""
        if self.repeat_channels:
            x = x.expand(-1, 3, -1, -1)
        # NHWC: oneDNN (CPU) and cuDNN (bf16) convolutions run faster on it; a training epoch is
        # 1.16x-1.30x faster on 2 CPU cores (bench/train.py). A no-op for 1-channel images.
        return self.backbone(x.contiguous(memory_format=torch.channels_last))

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor | None]:
        features = self.features(x)   # [B, F]
        # The heads run in float32, outside autocast: a bf16 Linear rounds e to 8 bits of mantissa,
        # and that rounding puts a floor under the cluster size σ (paper Fig. 15: σ falls
        # exponentially). With d = 1351 a true σ of 0.037 measured 0.060 with a bf16 head.
        with torch.autocast(features.device.type, enabled=False):
            features = features.float()
            if self.normalize and self.classifier is not None:   # pure head: its linear layer sees s * f / |f|
                features = self.scale * F.normalize(features, dim=1)
            logits = self.classifier(features) if self.classifier is not None else None   # [B, K]
            e = self.embed(features)                                                         # [B, d]
            return (self.scale * F.normalize(e, dim=1) if self.normalize else e), logits

    def targets(self) -> Tensor | None:
        """The class embeddings C [K, d] as the losses and classifiers see them: on the sphere of
        radius `scale` when the head normalises, else as learned; None for pure heads."""
        C = self.class_embeddings
        if C is None or not self.normalize:
            return C
        return self.scale * F.normalize(C, dim=1)


def build_model(spec: ModelSpec, in_channels: int, num_classes: int) -> MovingTargetsNet:
    if spec.backbone not in BACKBONES:
        raise ModelError(f"model.backbone = {spec.backbone!r}: unknown; choose one of {', '.join(BACKBONES)}")
    backbone, features, repeat = load(BACKBONES[spec.backbone].function)(spec, in_channels)
    model = MovingTargetsNet(backbone, features, spec.head, spec.dim, num_classes, repeat, spec.normalize, spec.scale)
    return model.to(memory_format=torch.channels_last)   # NHWC weights, to match forward's input
