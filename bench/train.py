"""Training speed: the engine's epoch against a bare PyTorch loop and a per-sample DataLoader.

    python bench/train.py --dataset digits
    python bench/train.py --dataset mnist --root ../shared/data --repeats 3
    python bench/train.py --dataset fashion-mnist --root DATA --device cuda --json figures.json

All train the same model (same init) with the same loss, optimiser and batch size:
  engine  mtm_engine.train.train_one_epoch over the cached, pre-transformed tensors
  bare    a plain loop over the same tensors (randperm, index, forward, loss, backward, step)
  nchw    the bare loop with the convolution weights in PyTorch's default NCHW layout instead of
          the engine's channels_last (the grey images are the same tensor in either layout)
  loader  torchvision dataset + per-sample transforms (resize 44, crop 36, normalise) + DataLoader
  compiled  (with --compile) the engine with train.compile: the network's forward pass through torch.compile,
          timed after two warm-up batches that pay the compilation (printed on its own)
The runs alternate (engine, bare, loader, engine, ...) and the medians and ratios are printed.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

import torch

from mtm_engine.catalogue import loss_arguments, loss_function
from mtm_engine.config import load_spec
from mtm_engine.data import _TORCHVISION, CROP, RESIZE, _torchvision_split, load_dataset
from mtm_engine.devices import configure_backends, resolve_device
from mtm_engine.models import build_model
from mtm_engine.optim import make_optimiser
from mtm_engine.train import train_one_epoch


def fresh(spec, data, layout=torch.channels_last):
    torch.manual_seed(0)
    model = build_model(spec.model, data.channels, data.num_classes).to(data.train.y.device, memory_format=layout)
    return model, make_optimiser(spec, model)


def sync(data) -> None:
    """Wait for the GPU's queued work, so that a timer measures it (a no-op on the CPU)."""
    if data.train.y.is_cuda:
        torch.cuda.synchronize()


def engine_epoch(spec, data, compiled: bool = False) -> float:
    model, opt = fresh(spec, data)
    if compiled:   # as fit() does with train.compile; the warm-up batches compile (once a process)
        model.compile()
        start = time.perf_counter()
        train_one_epoch(model, data.train.subset(torch.arange(2 * spec.train.batch_size)), spec, opt, 1)
        sync(data)
        COMPILE_S.append(time.perf_counter() - start)
    sync(data)
    start = time.perf_counter()
    train_one_epoch(model, data.train, spec, opt, 1)
    sync(data)
    return time.perf_counter() - start


COMPILE_S: list[float] = []   # the compiled contender's warm-up times (the first pays the compilation)


def bare_epoch(spec, data, layout=torch.channels_last) -> float:
    model, opt = fresh(spec, data, layout)
    loss_fn, train, y, bs = loss_function(spec.loss.name), data.train, data.train.y, spec.train.batch_size
    start = time.perf_counter()
    model.train()
    perm = torch.randperm(len(y), device=y.device)
    for i in range(0, len(y), bs):
        idx = perm[i:i + bs]
        with torch.autocast(y.device.type, dtype=torch.bfloat16, enabled=y.is_cuda and spec.train.amp):
            e, _ = model(train.images(idx))   # uint8 pixels normalised per batch, as the engine
        loss = loss_fn(e, y[idx], model.targets(), **loss_arguments(spec.loss))   # as the engine
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    sync(data)
    return time.perf_counter() - start


def loader_epoch(spec, data, workers: int) -> float:
    from torchvision import transforms as T

    _, mean, std = _TORCHVISION[spec.data.dataset]
    ds = _torchvision_split(spec.data.dataset, spec.data, train=True)
    ds.transform = T.Compose([T.ToTensor(), T.Resize(RESIZE), T.CenterCrop(CROP), T.Normalize(mean, std)])
    subset = torch.utils.data.Subset(ds, range(len(data.train)))   # as many images as the engine
    device = data.train.y.device
    # Pinned host batches: non_blocking copies from pageable memory are synchronous.
    loader = torch.utils.data.DataLoader(subset, batch_size=spec.train.batch_size, shuffle=True,
                                         num_workers=workers, pin_memory=device.type == "cuda")
    model, opt = fresh(spec, data)
    loss_fn = loss_function(spec.loss.name)
    start = time.perf_counter()
    model.train()
    for xb, yb in loader:
        xb, yb = xb.to(device, non_blocking=True), yb.to(device, non_blocking=True)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda" and spec.train.amp):
            e, _ = model(xb)
        loss = loss_fn(e, yb, model.targets(), **loss_arguments(spec.loss))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    sync(data)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="digits")
    parser.add_argument("--root", default="./data")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--workers", type=int, default=0, help="DataLoader workers for the loader pipeline")
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    parser.add_argument("--device", default="cpu", help="cpu or cuda (bf16 autocast, as the engine runs there)")
    parser.add_argument("--json", help="also write the figures to this JSON file")
    parser.add_argument("--compile", action="store_true", help="also time the engine with train.compile")
    args = parser.parse_args()

    spec = load_spec(overrides=[f"data.dataset={args.dataset}", f"data.root={args.root}",
                                f"train.device={args.device}", "train.batch_size=100", *args.overrides])
    device = resolve_device(spec.train.device)
    configure_backends(device, spec)   # the engine's kernel switches (cuDNN autotuner, TF32) for every contender
    data = load_dataset(spec.data).to(device)
    n = len(data.train)
    runs = {"engine": lambda: engine_epoch(spec, data), "bare": lambda: bare_epoch(spec, data),
            "nchw": lambda: bare_epoch(spec, data, torch.contiguous_format)}
    if spec.data.dataset in _TORCHVISION:
        runs["loader"] = lambda: loader_epoch(spec, data, args.workers)
    if args.compile:
        runs["compiled"] = lambda: engine_epoch(spec, data, compiled=True)
    times: dict[str, list[float]] = {k: [] for k in runs}
    for _ in range(args.repeats):
        for name, run in runs.items():
            times[name].append(run())

    print("$ python " + " ".join(sys.argv))
    print(f"{spec.data.dataset}: {n} training images, {spec.model.backbone}, {spec.loss.name}, batch "
          f"{spec.train.batch_size}, {torch.get_num_threads()} threads, median of {args.repeats}")
    med = {k: statistics.median(v) for k, v in times.items()}
    notes = {"engine": "mtm_engine train_one_epoch, cached tensors",
             "bare": "same model, same tensors, plain loop",
             "nchw": "the bare loop, NCHW weights instead of channels_last",
             "loader": f"torchvision dataset + per-sample transforms + DataLoader({args.workers} workers)",
             "compiled": "the engine with train.compile (compiled forward), after its warm-up"}
    for name, t in med.items():
        print(f"{name:<7} 1 epoch: {t:7.2f} s  ({n / t:7.0f} img/s)   {notes[name]}")
    line = (f"overhead engine/bare = {med['engine'] / med['bare']:.3f}"
            f"   speed-up nchw/bare = {med['nchw'] / med['bare']:.2f}")
    if "loader" in med:
        line += f"   speed-up loader/engine = {med['loader'] / med['engine']:.2f}"
    if "compiled" in med:
        line += (f"   speed-up engine/compiled = {med['engine'] / med['compiled']:.2f}"
                 f" (compilation: {COMPILE_S[0]:.0f} s once)")
    print(line)
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"command": "python " + " ".join(sys.argv), "device": str(data.train.y.device),
                       "images": n, "seconds": med, "images_per_s": {k: n / t for k, t in med.items()},
                       "engine_over_bare": med["engine"] / med["bare"]}, fh, indent=1)


if __name__ == "__main__":
    main()
