"""How close our training runs to this CPU's arithmetic ceiling, and what a quoted speed would need.

    python bench/compute_ceiling.py
    python bench/compute_ceiling.py --claim 1690 --repeats 5 --json figures.json

The ceiling is the rate of a large float32 matrix product (torch.mm, n x n), the best case for the
cores' vector units. Each network trains here on random 28 px grey images (a training step of --batch
images: forward, backward, AdamW step; cross-entropy on a linear head, so every network pays the same
head), and its rate is turned into arithmetic: a training step costs about 3 forward passes (the
forward, the gradient of the inputs and that of the weights), each 2 FLOPs a multiply-add. The
multiply-adds of the convolutions and linear layers are counted from their shapes during one forward pass.

Networks, all with BatchNorm and ReLU after each 3x3 convolution:
  ours       the headline recipes' network (ConvNet: width 16, depth 2, 4 stages; 28, 14, 7, 3 px)
  stages3    ConvNet with 3 stages of width 32 (28, 14, 7 px): the shape RESULTS.md probed for the
             issue's network
  reference  the issue's reference network as it describes it: six 3x3 convolutions at 28 px, 0.29 M
             parameters, read as two each of 32, 64 and 128 channels at 28, 14 and 7 px (285,984 conv
             weights), then global average pooling
--claim IMG_S: a training speed quoted for `reference`; prints the FLOP rate it implies, and how many
times this CPU's matrix-product rate that is. Runs alternate (sgemm, each network, ...) and medians
are quoted.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

import torch
from torch import nn

from mtm_engine.models import ConvNet


def reference_network() -> nn.Sequential:
    """The issue's reference as read here: x [B, 1, 28, 28] -> features [B, 128]; two conv-BN-ReLU of
    32 channels at 28 px, of 64 at 14 px and of 128 at 7 px, a 2x2 max-pool between widths."""
    layers: list[nn.Module] = []
    channels = 1
    for stage, width in enumerate((32, 64, 128)):
        for _ in range(2):
            layers += [nn.Conv2d(channels, width, 3, padding=1, bias=False), nn.BatchNorm2d(width),
                       nn.ReLU(inplace=True)]
            channels = width
        if stage < 2:
            layers.append(nn.MaxPool2d(2))
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten())


NETWORKS = {
    "ours": lambda: ConvNet(1, width=16, depth=2, stages=4),
    "stages3": lambda: ConvNet(1, width=32, depth=2, stages=3),
    "reference": reference_network,
}


def multiply_adds(model: nn.Module, x: torch.Tensor) -> int:
    """Multiply-adds of the Conv2d and Linear layers in one forward pass of x (all images together)."""
    total = 0

    def count(module: nn.Module, inputs, output: torch.Tensor) -> None:
        nonlocal total
        if isinstance(module, nn.Conv2d):
            kh, kw = module.kernel_size
            total += output.numel() * (module.in_channels // module.groups) * kh * kw
        elif isinstance(module, nn.Linear):
            total += output.numel() * module.in_features

    hooks = [m.register_forward_hook(count) for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    with torch.no_grad():
        model(x)
    for hook in hooks:
        hook.remove()
    return total


def sgemm_gflops(n: int, products: int = 5) -> float:
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b   # warm-up
    start = time.perf_counter()
    for _ in range(products):
        a @ b
    return 2 * n**3 * products / (time.perf_counter() - start) / 1e9


class Trainer:
    """One network with its linear head and optimiser, on a fixed batch of 28 px images."""

    def __init__(self, body: nn.Module, batch: int, classes: int = 10):
        torch.manual_seed(0)
        features = body(torch.zeros(2, 1, 28, 28)).shape[1]
        self.model = nn.Sequential(body, nn.Linear(features, classes)).to(memory_format=torch.channels_last)
        self.optimiser = torch.optim.AdamW(self.model.parameters(), lr=1e-3)
        self.x = torch.randn(batch, 1, 28, 28).contiguous(memory_format=torch.channels_last)
        self.y = torch.randint(0, classes, (batch,))
        self.macs = multiply_adds(self.model, self.x[:1])   # a forward pass of one image
        self.step()   # warm-up: oneDNN picks its kernels on the first call

    def step(self) -> None:
        loss = nn.functional.cross_entropy(self.model(self.x), self.y)
        self.optimiser.zero_grad(set_to_none=True)
        loss.backward()
        self.optimiser.step()

    def images_per_s(self, steps: int) -> float:
        start = time.perf_counter()
        for _ in range(steps):
            self.step()
        return steps * len(self.y) / (time.perf_counter() - start)


def positive(text: str) -> int:
    """argparse type: a whole number >= 1 (a batch, a step count or a matrix of 0 would measure nothing)."""
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number >= 1")
    return int(text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=positive, default=3)
    parser.add_argument("--steps", type=positive, default=20, help="training steps a network a repeat")
    parser.add_argument("--batch", type=positive, default=128,
                        help="images a training step (the headline recipes' 128)")
    parser.add_argument("--matrix", type=positive, default=2048, help="n of the n x n matrix product")
    parser.add_argument("--claim", type=float, default=1690.0,
                        help="a quoted training speed (images/s) of `reference`; 0 to skip")
    parser.add_argument("--json", help="also write the figures to this JSON file")
    args = parser.parse_args()
    if args.claim < 0:
        parser.error(f"argument --claim: {args.claim:g} is not a speed; give images/s, or 0 to skip")

    trainers = {name: Trainer(make(), args.batch) for name, make in NETWORKS.items()}
    rates: dict[str, list[float]] = {"sgemm": [], **{name: [] for name in trainers}}
    for _ in range(args.repeats):
        rates["sgemm"].append(sgemm_gflops(args.matrix))
        for name, trainer in trainers.items():
            rates[name].append(trainer.images_per_s(args.steps))
    ceiling = statistics.median(rates["sgemm"])

    print("$ python " + " ".join(sys.argv))
    print(f"{torch.get_num_threads()} threads, torch {torch.__version__}, batch {args.batch}, median of {args.repeats}")
    print(f"ceiling  {ceiling:6.1f} GFLOP/s   float32 matrix product {args.matrix} x {args.matrix}")
    figures: dict = {"command": "python " + " ".join(sys.argv), "threads": torch.get_num_threads(),
                     "sgemm_gflops": ceiling, "networks": {}}
    for name, trainer in trainers.items():
        speed = statistics.median(rates[name])
        flops = 3 * 2 * trainer.macs   # a training step of one image
        achieved = speed * flops / 1e9
        params = sum(p.numel() for p in trainer.model.parameters())
        print(f"{name:<9} {speed:6.0f} img/s  {trainer.macs / 1e6:5.1f} M multiply-adds an image  {params / 1e6:.2f} M "
              f"parameters  {achieved:6.1f} GFLOP/s = {achieved / ceiling:.2f} x the ceiling")
        figures["networks"][name] = {"images_per_s": speed, "multiply_adds": trainer.macs, "parameters": params,
                                     "gflops": achieved, "of_ceiling": achieved / ceiling}
    if args.claim:
        flops = 3 * 2 * trainers["reference"].macs
        needed = args.claim * flops / 1e9
        print(f"claim    {args.claim:6.0f} img/s of reference needs {needed:6.1f} GFLOP/s = "
              f"{needed / ceiling:.2f} x the ceiling; measured here: {statistics.median(rates['reference']):.0f} img/s")
        figures["claim"] = {"images_per_s": args.claim, "gflops": needed, "of_ceiling": needed / ceiling}
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(figures, fh, indent=1)


if __name__ == "__main__":
    main()
