"""The prepared GPU check: every figure the GPU path owes, from one command.

    bash bench/gpu.sh OUT DATA              # on a GPU machine: installs mtm, then runs this script
    python bench/gpu.py OUT --data DATA     # the same, mtm already installed
    python bench/gpu.py OUT --dry-run       # every step, tiny and on the CPU (digits): checks the script

Each step is timed and logged to OUT/gpu.log; the figures go to OUT/gpu.json (written after every
step, so a step that runs out of time leaves the earlier figures). DATA holds FashionMNIST/raw/.

  tests   the gpu-marked tests (pytest -m gpu)
  train   bench/train.py on the device: the engine against the bare loop and the per-sample loader (img/s)
  paper   experiments/paper/best/fashion-mnist/RN18-PP.toml for 30 epochs: wall time and the test
          accuracy at the validation-selected epoch (goal: <= 60 s on one H200)
  sweep   8 trials at 0.125 GPU each against 1 trial alone: throughput ratio (goal >= 4x) and each
          trial's peak GPU memory
  queue   4 detached runs in 2 slots on GPU 0: wall time, and never more than 2 at once
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parents[1]
PAPER = ROOT / "experiments" / "paper" / "best" / "fashion-mnist" / "RN18-PP.toml"
SWEEP = ROOT / "experiments" / "paper" / "fashion-mnist" / "RN18-PP.toml"


def peak_gpu_gb(records: list[dict[str, Any]]) -> float | None:
    """A run's peak GPU memory allocated over its epochs; None off the GPU."""
    return max((r["gpu_mem_allocated_gb"] for r in records if "gpu_mem_allocated_gb" in r), default=None)


class Check:
    def __init__(self, out: Path, dry_run: bool, data: str):
        self.out, self.dry_run, self.data = out, dry_run, data
        self.home = Path(tempfile.mkdtemp(prefix="mtm-gpu-check-"))
        self.env = {**os.environ, "MTM_HOME": str(self.home), "PYTHONUNBUFFERED": "1"}
        self.figures: dict[str, Any] = {"dry_run": dry_run, "started": time.strftime("%Y-%m-%d %H:%M:%S"),
                                        "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]])}
        self.log = open(out / "gpu.log", "a")

    def say(self, text: str) -> None:
        print(text, flush=True)
        print(text, file=self.log, flush=True)

    def sh(self, *command: str, env: dict[str, str] | None = None) -> tuple[str, float]:
        """Run a command, its output into the log; (stdout, seconds). A failure raises."""
        self.say("$ " + " ".join(command))
        start = time.perf_counter()
        done = subprocess.run(command, cwd=ROOT, env=env or self.env, capture_output=True, text=True)
        seconds = time.perf_counter() - start
        self.log.write(done.stdout + done.stderr)
        self.log.flush()
        if done.returncode != 0:
            raise RuntimeError(f"exit {done.returncode}: {(done.stderr or done.stdout).strip().splitlines()[-1:]}")
        return done.stdout, seconds

    def mtm(self, *args: str) -> tuple[str, float]:
        return self.sh(sys.executable, "-P", "-m", "mtm_tui.cli", *args)

    def data_sets(self) -> list[str]:
        """Overrides that point an experiment at the data: in a dry run, digits and a small convnet."""
        if self.dry_run:
            return ["--set", "data.dataset=digits", "--set", "model.backbone=convnet", "--set", "model.width=4"]
        return ["--set", f"data.root={self.data}"]

    def step(self, name: str, run: Callable[[], dict[str, Any]]) -> None:
        self.say(f"\n== {name}")
        start = time.perf_counter()
        try:
            figures = {"ok": True, **run()}
        except Exception as exc:   # one failing step must not cost the others' figures
            figures = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
        figures["step_s"] = round(time.perf_counter() - start, 1)
        self.figures[name] = figures
        self.say(f"{name}: {json.dumps(figures)}")
        (self.out / "gpu.json").write_text(json.dumps(self.figures, indent=1))

    # --- the steps ---------------------------------------------------------------------------------

    def versions(self) -> dict[str, Any]:
        text, _ = self.mtm("--version")
        return {"versions": text.strip().splitlines()}

    def tests(self) -> dict[str, Any]:
        text, seconds = self.sh(sys.executable, "-m", "pytest", "-m", "gpu", "-q", "-p", "no:cacheprovider",
                                str(ROOT / "tests"))
        return {"summary": text.strip().splitlines()[-1], "seconds": round(seconds, 1)}

    def train(self) -> dict[str, Any]:
        figures = self.out / "train.json"
        args = (["--dataset", "digits", "--device", "cpu", "--repeats", "1"] if self.dry_run else
                ["--dataset", "fashion-mnist", "--root", self.data, "--device", "cuda", "--repeats", "3",
                 "--workers", "8"])
        self.sh(sys.executable, str(ROOT / "bench" / "train.py"), *args, "--json", str(figures))
        result = json.loads(figures.read_text())
        figures.unlink()
        return result

    def paper(self) -> dict[str, Any]:
        epochs = 1 if self.dry_run else 30
        text, seconds = self.mtm("run", str(PAPER), "--json", *self.data_sets(), "--set", f"train.epochs={epochs}")
        result = json.loads(text)
        shown = json.loads(self.mtm("show", result["run_id"], "--json")[0])
        return {"epochs": epochs, "wall_s": round(seconds, 1), "test_accuracy_val_selected": result["test_accuracy"],
                "selected_epoch": result["selected_epoch"], "device": shown.get("device"),
                "epoch_s": [round(r["epoch_time_s"], 2) for r in shown["records"]],
                "peak_gpu_gb": peak_gpu_gb(shown["records"])}

    def sweep(self) -> dict[str, Any]:
        samples, epochs, gpus = (2, 1, "0") if self.dry_run else (8, 3, "0.125")

        def tune(n: int) -> tuple[dict[str, Any], float]:
            config = [] if self.dry_run else [str(SWEEP)]
            text, seconds = self.mtm("tune", *config, "--json", "--samples", str(n), "--epochs", str(epochs),
                                     *self.data_sets(), "--set", f"tune.gpus_per_trial={gpus}",
                                     "--set", "tune.search=random", "--set", "tune.scheduler=none")
            return json.loads(text), seconds

        alone, alone_s = tune(1)
        together, together_s = tune(samples)
        trials = json.loads(self.mtm("list", "--sweep", together["sweep_id"], "--json")[0])
        peaks = {}
        for trial in trials:
            records = json.loads(self.mtm("show", trial["id"], "--json")[0])["records"]
            peaks[trial["id"]] = peak_gpu_gb(records)
        ratio = (samples / together_s) / (1 / alone_s)   # trials per second, together against alone
        return {"trials": samples, "epochs": epochs, "gpus_per_trial": float(gpus), "one_alone_s": round(alone_s, 1),
                "together_s": round(together_s, 1), "throughput_ratio": round(ratio, 2),
                "finished": together["status"], "peak_gpu_gb_per_trial": peaks}

    def queue(self) -> dict[str, Any]:
        slots = ["--slots", "2"] if self.dry_run else ["--gpus", "0", "--per-gpu", "2"]
        config = [] if self.dry_run else [str(PAPER)]
        epochs = 1 if self.dry_run else 3
        start = time.perf_counter()
        text, _ = self.mtm("run", *config, "-d", "--json", "--seeds", "4", *slots, *self.data_sets(),
                           "--set", f"train.epochs={epochs}")
        run_ids = json.loads(text)["run_ids"]
        while True:
            rows = {r["id"]: r for r in json.loads(self.mtm("list", "--json")[0]) if r["id"] in run_ids}
            if all(r["status"] not in ("queued", "running") for r in rows.values()):
                break
            time.sleep(2)
        wall = time.perf_counter() - start
        spans = [(r["started"], r["ended"]) for r in rows.values() if r.get("started") and r.get("ended")]
        most = max((sum(s <= start < e for s, e in spans) for start, _ in spans), default=0)
        return {"runs": len(run_ids), "epochs": epochs, "wall_s": round(wall, 1), "most_at_once": most,
                "statuses": sorted(r["status"] for r in rows.values()),
                "devices": sorted({str(r.get("device")) for r in rows.values()})}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", type=Path, help="folder for gpu.log and gpu.json")
    parser.add_argument("--data", default=str(ROOT.parent / "shared" / "data"), help="folder with FashionMNIST/raw")
    parser.add_argument("--dry-run", action="store_true", help="every step tiny, on the CPU, with digits")
    parser.add_argument("--steps", default="versions,tests,train,paper,sweep,queue")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    check = Check(args.out, args.dry_run, str(Path(args.data).resolve()))
    for name in args.steps.split(","):
        check.step(name, getattr(check, name))
    failed = [name for name in args.steps.split(",") if not check.figures[name]["ok"]]
    check.say(f"\nfigures in {args.out / 'gpu.json'}" + (f"; failed steps: {', '.join(failed)}" if failed else ""))
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
