"""How long an epoch's checkpoint holds up training: written in place (torch.save, fsync, rename) against written
in the background (the copy to host memory blocks; the write and fsync overlap the next epoch).

    python bench/checkpoint.py [--backbone resnet18] [--repeats 5] [--device cpu|cuda]

The state is what fit() writes after an epoch of the paper's RN18-PP: the network with its class embeddings, Adam's
two moments a weight (after one step, so that they exist), and best.pt beside it. Runs alternate (in place,
background, in place, ...); medians are printed.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from mtm_engine.checkpoints import BackgroundWriter, _write, best_state, checkpoint_state
from mtm_engine.config import load_spec
from mtm_engine.models import build_model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backbone", default="resnet18")
    parser.add_argument("--dim", type=int, default=1285)   # RN18-PP's d (Appendix A)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()

    spec = load_spec(overrides=[f"model.backbone={args.backbone}", f"model.dim={args.dim}"])
    model = build_model(spec.model, 1, 10).to(args.device)
    optimiser = torch.optim.Adam(model.parameters())
    model(torch.randn(2, 1, 36, 36, device=args.device))[0].sum().backward()
    optimiser.step()   # Adam's moments now exist
    schedule = torch.optim.lr_scheduler.LambdaLR(optimiser, lambda _: 1.0)
    folder = Path(tempfile.mkdtemp(prefix="mtm-bench-checkpoint-"))

    def writes():
        return [(folder / "best.pt", best_state(model, 1)),
                (folder / "checkpoint.pt", checkpoint_state(model, optimiser, schedule, 1))]

    def in_place() -> float:
        start = time.perf_counter()
        for path, state in writes():
            _write(path, state)
        return time.perf_counter() - start

    writer = BackgroundWriter()

    def background() -> tuple[float, float]:
        start = time.perf_counter()
        writer.write(writes(), epoch=1)
        blocked = time.perf_counter() - start
        writer.wait()
        return blocked, time.perf_counter() - start

    blocking, behind, whole = [], [], []
    for _ in range(args.repeats):
        blocking.append(in_place())
        blocked, total = background()
        behind.append(blocked)
        whole.append(total)
    size = sum(p.stat().st_size for p in folder.glob("*.pt")) / 1e6
    print("$ python " + " ".join(sys.argv))
    print(f"{args.backbone} d={args.dim} on {args.device}: checkpoint.pt + best.pt = {size:.0f} MB, median of "
          f"{args.repeats}")
    print(f"in place     training waits {statistics.median(blocking):6.3f} s")
    print(f"background   training waits {statistics.median(behind):6.3f} s   (the host copy; the write itself "
          f"took {statistics.median(whole):.3f} s on its thread)")
    print(f"waiting, background / in place = {statistics.median(behind) / statistics.median(blocking):.3f}")


if __name__ == "__main__":
    main()
