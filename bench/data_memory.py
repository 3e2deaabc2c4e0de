"""What a dataset takes in memory once loaded (what fit() copies to the device), and the loading process's
peak resident memory, at a given data.size. Each size is loaded in a fresh process, so peaks do not mix.

    python bench/data_memory.py --dataset fashion-mnist --root ../shared/data --sizes 36 112 224

Prints one line a size: the splits' bytes, what float32 pixels would take, and the peak RSS of the load.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time


def measure(dataset: str, root: str, size: int) -> dict:
    from mtm_engine.config import load_spec
    from mtm_engine.data import load_dataset

    start = time.perf_counter()
    data = load_dataset(load_spec(overrides=[f"data.dataset={dataset}", f"data.root={root}",
                                             f"data.size={size}"]).data)
    splits = (data.train, data.val, data.test)
    pixels, nbytes = sum(s.x.numel() for s in splits), sum(s.x.nbytes + s.y.nbytes for s in splits)
    return {"size": size, "dtype": str(data.train.x.dtype), "bytes": nbytes, "float32_bytes": 4 * pixels,
            "peak_rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024, "load_s": time.perf_counter() - start}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="fashion-mnist")
    parser.add_argument("--root", default="../shared/data")
    parser.add_argument("--sizes", type=int, nargs="+", default=[36, 224])
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)   # the child process: measure one size
    args = parser.parse_args()
    if args.one is not None:
        print(json.dumps(measure(args.dataset, args.root, args.one)))
        return
    print("command:", " ".join([sys.executable, *sys.argv]))
    gib = 2**30
    for size in args.sizes:
        out = subprocess.run([sys.executable, __file__, "--dataset", args.dataset, "--root", args.root,
                              "--one", str(size)], capture_output=True, text=True, check=True).stdout
        m = json.loads(out.splitlines()[-1])
        print(f"{args.dataset} at data.size {size}: {m['bytes'] / gib:.2f} GiB as {m['dtype']} "
              f"(float32 would be {m['float32_bytes'] / gib:.2f} GiB); peak RSS of the load {m['peak_rss'] / gib:.2f} GiB; "
              f"{m['load_s']:.0f} s")


if __name__ == "__main__":
    main()
