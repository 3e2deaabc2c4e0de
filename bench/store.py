"""Store at the paper's scale: 3,750 runs (75 sweeps x 50 trials) of 30 epochs each.

    python bench/store.py                      # the paper's scale (fills a temporary store first)
    python bench/store.py --runs 500 --epochs 10

Fills the store through the real API (create_run, append_epoch: locked, atomic, fsynced writes),
then measures on the full store, each the median of many repeats:
  append_ms  appending one epoch to a run (the same in an empty and a full store: printed both)
  list_ms    listing every run (what `mtm list` reads)
  load_ms    loading one run's whole history (what `mtm show` reads)
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

from mtm_engine.store import Store

CLASSIFIERS = ("cos", "cos_ce", "euc", "euc_ce")


def record(epoch: int, rng: random.Random) -> dict:
    """An epoch record with the keys a real MTM run writes."""
    r = {"epoch": epoch, "train_loss": rng.uniform(-1e3, 1e3)}
    for split in ("val", "test"):
        r.update({f"{split}_acc_{c}": rng.random() for c in CLASSIFIERS})
        r.update({f"{split}_{m}": rng.uniform(0, 50) for m in
                  ("cluster_size", "centre_distance", "centre_separation", "median_cosine", "ce_gap")})
    r.update(ce_separation=rng.uniform(0, 50), train_time_s=20.0, eval_time_s=5.0, epoch_time_s=25.0,
             images_per_s=2400.0)
    return r


def row(sweep: str, epochs: int) -> dict:
    return {"name": "bench", "status": "running", "dataset": "fashion-mnist", "backbone": "resnet18",
            "loss": "push_pull", "head": "mtm", "dim": 512, "lr": 1e-3, "r": 0.95, "seed": 0, "epochs": epochs,
            "epoch": 0, "best_epoch": None, "best_val": None, "test_acc": None, "primary": "cos", "sweep": sweep,
            "host": "bench", "pid": None, "device": "cpu", "message": ""}


def fill(home: str, sweeps: list[int], per_sweep: int, epochs: int) -> None:
    store = Store(home)
    rng = random.Random(sweeps[0])
    for s in sweeps:
        for t in range(per_sweep):
            run_id = f"s{s:03d}t{t:03d}"
            store.create_run(run_id, {"spec": {}, "seed": t}, row(f"{s:03d}", epochs))
            for epoch in range(1, epochs + 1):
                store.append_epoch(run_id, record(epoch, rng), {"epoch": epoch, "best_val": 0.9, "test_acc": 0.9})
            store.update(run_id, status="finished")


def append_ms(store: Store, runs: int, epochs: int, tag: str) -> float:
    """Median over `runs` fresh runs x `epochs` appends each."""
    rng, times = random.Random(1), []
    for n in range(runs):
        run_id = f"{tag}{n:04d}"
        store.create_run(run_id, {"spec": {}, "seed": n}, row(tag, epochs))
        for epoch in range(1, epochs + 1):
            r = record(epoch, rng)
            start = time.perf_counter()
            store.append_epoch(run_id, r, {"epoch": epoch})
            times.append(time.perf_counter() - start)
        store.update(run_id, status="finished")
    return 1000 * statistics.median(times)


def timed_ms(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3750)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--per-sweep", type=int, default=50)
    parser.add_argument("--workers", type=int, default=2, help="processes filling the store")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="mtm-store-bench-") as home:
        empty_append = append_ms(Store(Path(home) / "empty"), 10, args.epochs, "e")
        full = Path(home) / "full"
        sweeps = list(range(args.runs // args.per_sweep))
        start = time.perf_counter()
        ctx = mp.get_context("spawn")
        procs = [ctx.Process(target=fill, args=(str(full), sweeps[w::args.workers], args.per_sweep, args.epochs))
                 for w in range(args.workers)]
        for p in procs:
            p.start()
        for p in procs:
            p.join()
        fill_s = time.perf_counter() - start
        store = Store(full)
        n_runs = len(store.rows())
        full_append = append_ms(store, 10, args.epochs, "f")
        list_ms = timed_ms(store.rows, 15)
        ids = [r["id"] for r in random.Random(2).sample(store.rows(), 50)]
        load_ms = statistics.median(timed_ms(lambda i=i: store.run(i), 3) for i in ids)
        print("$ python " + " ".join(sys.argv))
        print(f"filled {n_runs} runs x {args.epochs} epochs with {args.workers} processes in {fill_s:.0f} s "
              f"({n_runs * args.epochs / fill_s:.0f} appends/s)")
        print(f"append_ms in an empty store: {empty_append:.2f}; in the full store: {full_append:.2f}")
        print(f"store: runs={n_runs} epochs={args.epochs} append_ms={full_append:.2f} list_ms={list_ms:.1f} "
              f"load_ms={load_ms:.2f}")


if __name__ == "__main__":
    main()
