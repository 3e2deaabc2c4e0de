"""The prepared GPU check: every figure the GPU path owes, in steps of at most 4 minutes each.

    bash bench/gpu.sh OUT DATA --steps versions,tests,train     # on the GPU machine: installs, then these steps
    bash bench/gpu.sh OUT DATA --steps paper,share              # a second command: the other steps
    python bench/gpu.py OUT --dry-run                           # every step, tiny and on the CPU (digits)

Each step is timed and logged to OUT/gpu.log; the figures go to OUT/gpu.json, which a later command extends
(written after every step, so a step that fails or runs out of time leaves the others' figures). Every step
has a deadline (--step-s, 240 s): a command past it is killed, and queued runs are stopped. DATA holds
FashionMNIST/raw/. No step needs Ray (its wheel is too large to carry to the GPU machine); the tests cover
Ray's fractional-GPU packing on the CPU.

  versions  mtm --version: mtm, torch, the CUDA devices
  tests     the gpu-marked tests and the CUDA emulation tests
  train     bench/train.py on the device: the engine against the bare loop and the per-sample loader (img/s)
  paper     experiments/paper/best/fashion-mnist/RN18-PP.toml for 30 epochs: wall time and the test
            accuracy at the validation-selected epoch (goal: <= 60 s on one H100)
  share     runs sharing one GPU through the queue: one alone, then 8 at once (--per-gpu 8); throughput
            ratio (goal >= 4x), each run's peak memory against its share, and never more than 8 at once
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
STEPS = ("versions", "tests", "train", "paper", "share")
SHARED = 8   # runs on one GPU in the share step


def peak_gpu_gb(records: list[dict[str, Any]]) -> float | None:
    """A run's peak GPU memory allocated over its epochs; None off the GPU."""
    return max((r["gpu_mem_allocated_gb"] for r in records if "gpu_mem_allocated_gb" in r), default=None)


class StepTimeout(RuntimeError):
    pass


class Check:
    def __init__(self, out: Path, dry_run: bool, data: str, step_s: float):
        self.out, self.dry_run, self.data, self.step_s = out, dry_run, data, step_s
        self.env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        self.deadline = float("inf")
        figures = out / "gpu.json"   # a second command adds its steps to the first's figures
        self.figures: dict[str, Any] = json.loads(figures.read_text()) if figures.exists() else {}
        self.figures.update(dry_run=dry_run, command=" ".join([Path(sys.argv[0]).name, *sys.argv[1:]]))
        self.figures.setdefault("started", time.strftime("%Y-%m-%d %H:%M:%S"))
        self.log = open(out / "gpu.log", "a")

    def say(self, text: str) -> None:
        print(text, flush=True)
        print(text, file=self.log, flush=True)

    def left(self) -> float:
        return self.deadline - time.monotonic()

    def sh(self, *command: str, home: Path | None = None) -> tuple[str, float]:
        """Run a command, its output into the log; (stdout, seconds). A failure raises; so does the step's deadline."""
        self.say("$ " + " ".join(command))
        env = {**self.env, "MTM_HOME": str(home)} if home else self.env
        start = time.perf_counter()
        try:
            done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=max(1, self.left()))
        except subprocess.TimeoutExpired as exc:
            self.log.write(f"{exc.stdout or ''}{exc.stderr or ''}")
            raise StepTimeout(f"past the step's deadline of {self.step_s:.0f} s: {' '.join(command[:6])}") from None
        seconds = time.perf_counter() - start
        self.log.write(done.stdout + done.stderr)
        self.log.flush()
        if done.returncode != 0:
            raise RuntimeError(f"exit {done.returncode}: {(done.stderr or done.stdout).strip().splitlines()[-1:]}")
        return done.stdout, seconds

    def mtm(self, *args: str, home: Path | None = None) -> tuple[str, float]:
        return self.sh(sys.executable, "-P", "-m", "mtm_tui.cli", *args, home=home)

    def home(self) -> Path:
        return Path(tempfile.mkdtemp(prefix="mtm-gpu-check-"))

    def data_sets(self) -> list[str]:
        """Overrides that point an experiment at the data: in a dry run, digits and a small convnet."""
        if self.dry_run:
            return ["--set", "data.dataset=digits", "--set", "model.backbone=convnet", "--set", "model.width=4"]
        return ["--set", f"data.root={self.data}"]

    def step(self, name: str, run: Callable[[], dict[str, Any]]) -> None:
        self.say(f"\n== {name}")
        start = time.perf_counter()
        self.deadline = time.monotonic() + self.step_s
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
        files = [str(ROOT / "tests" / name) for name in ("test_gpu.py", "test_cuda_emulated.py")]
        # -o addopts=: the suite's own options want pytest-xdist, which the GPU machine lacks
        text, seconds = self.sh(sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-o", "addopts=", *files)
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
        home = self.home()
        text, seconds = self.mtm("run", str(PAPER), "--json", *self.data_sets(), "--set", f"train.epochs={epochs}",
                                 home=home)
        result = json.loads(text)
        shown = json.loads(self.mtm("show", result["run_id"], "--json", home=home)[0])
        return {"epochs": epochs, "wall_s": round(seconds, 1), "test_accuracy_val_selected": result["test_accuracy"],
                "selected_epoch": result["selected_epoch"], "device": shown.get("device"),
                "epoch_s": [round(r["epoch_time_s"], 2) for r in shown["records"]],
                "peak_gpu_gb": peak_gpu_gb(shown["records"])}

    def queued(self, runs: int, per_device: int, epochs: int) -> dict[str, Any]:
        """`runs` seeds of the paper's RN18-PP through the queue, `per_device` at once on the first visible GPU
        (CPU slots in a dry run), in a home of their own; waits until they end or the deadline passes."""
        home = self.home()
        slots = ["--slots", str(per_device)] if self.dry_run else ["--gpus", self.first_gpu(),
                                                                  "--per-gpu", str(per_device)]
        start = time.perf_counter()
        text, _ = self.mtm("run", str(PAPER), "-d", "--json", "--seeds", str(runs), *slots, *self.data_sets(),
                           "--set", f"train.epochs={epochs}", home=home)
        run_ids = json.loads(text)["run_ids"]
        while True:
            rows = {r["id"]: r for r in json.loads(self.mtm("list", "--json", home=home)[0]) if r["id"] in run_ids}
            if all(r["status"] not in ("queued", "running") for r in rows.values()):
                break
            if self.left() < 15:   # leave time to stop them: nothing may outlive the step
                for run_id in run_ids:
                    subprocess.run([sys.executable, "-P", "-m", "mtm_tui.cli", "stop", run_id],
                                   env={**self.env, "MTM_HOME": str(home)}, capture_output=True, timeout=10)
                raise StepTimeout(f"{runs} queued runs had not ended by the step's deadline; stopped")
            time.sleep(2)
        wall = time.perf_counter() - start
        records = {run_id: json.loads(self.mtm("show", run_id, "--json", home=home)[0])["records"]
                   for run_id in run_ids}
        spans = [(r["started"], r["ended"]) for r in rows.values() if r.get("started") and r.get("ended")]
        return {"runs": runs, "epochs": epochs, "wall_s": round(wall, 1),
                "most_at_once": max((sum(s <= t < e for s, e in spans) for t, _ in spans), default=0),
                "statuses": sorted(r["status"] for r in rows.values()),
                "devices": sorted({str(r.get("device")) for r in rows.values()}),
                "train_images_per_s": sum(max((e["images_per_s"] for e in recs), default=0) for recs in records.values()),
                "peak_gpu_gb": {run_id[:8]: peak_gpu_gb(recs) for run_id, recs in records.items()}}

    def first_gpu(self) -> str:
        from mtm_tui.services.jobs import visible_gpus

        gpus = visible_gpus()
        if not gpus:
            raise RuntimeError("no GPU visible (nvidia-smi lists none and CUDA_VISIBLE_DEVICES is unset)")
        return gpus[0]

    def share(self) -> dict[str, Any]:
        runs, epochs = (4, 1) if self.dry_run else (SHARED, 3)
        per_device = 2 if self.dry_run else SHARED
        alone = self.queued(1, 1, epochs)
        together = self.queued(runs, per_device, epochs)
        return {"alone": alone, "together": together, "per_device": per_device,
                "wall_throughput_ratio": round((runs / together["wall_s"]) / (1 / alone["wall_s"]), 2),
                "images_per_s_ratio": round(together["train_images_per_s"] / alone["train_images_per_s"], 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", type=Path, help="folder for gpu.log and gpu.json")
    parser.add_argument("--data", default=str(ROOT.parent / "shared" / "data"), help="folder with FashionMNIST/raw")
    parser.add_argument("--dry-run", action="store_true", help="every step tiny, on the CPU, with digits")
    parser.add_argument("--steps", default=",".join(STEPS), help=f"comma-separated, of {', '.join(STEPS)}")
    parser.add_argument("--step-s", type=float, default=240, help="each step's deadline in seconds")
    args = parser.parse_args()
    steps = args.steps.split(",")
    unknown = [s for s in steps if s not in STEPS]
    if unknown:
        parser.error(f"unknown step {unknown[0]!r}; choose from {', '.join(STEPS)}")
    args.out.mkdir(parents=True, exist_ok=True)
    check = Check(args.out, args.dry_run, str(Path(args.data).resolve()), args.step_s)
    for name in steps:
        check.step(name, getattr(check, name))
    failed = [name for name in steps if not check.figures[name]["ok"]]
    check.say(f"\nfigures in {args.out / 'gpu.json'}" + (f"; failed steps: {', '.join(failed)}" if failed else ""))
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
