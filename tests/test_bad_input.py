"""Damaged or odd input: one line on stderr, exit 1, no traceback, nothing written."""

import json
import os
import subprocess
import sys

import pytest
from conftest import MTM

CASES = [
    (["run", "--set", "train.seed=99999999999"], "train.seed = 99999999999: must be 0..2147483647"),
    (["run", "--set", "train.lr=1e300"], "train.lr = 1e+300: must be above 0 and at most 10"),
    (["run", "--set", "model.dim=10000000"], "model.dim = 10000000: must be 1..65536"),
    (["run", "--set", "eval.classifiers=cos,cos"], "a classifier is named twice"),
    (["run", "--set", "tune.num_samples=3"], "tune.* keys only apply to `mtm tune`"),
    (["run", "."], "is a directory; give the path of a TOML experiment file"),
    (["tune", "--samples", "0", "--epochs", "0"], "tune.num_samples = 0: must be at least 1"),
    (["list", "--where", "x>>1"], "expected FIELD OP VALUE"),
    (["tune", "--resume", "abcd", "--samples", "3"], "--resume abcd restores the sweep with its saved settings"),
    (["list", "--dataset", "F-MNIST-ish"], "--dataset F-MNIST-ish: unknown; choose one of"),
    # issue 27's unclear messages: each names its key and what to do, before any run is created
    (["run", "--set", "data.split_seed=1180591620717411303424"], "data.split_seed = 1180591620717411303424: must be 0.."),
    (["run", "--set", "data.size=8", "--set", "model.stages=5"],
     "data.size = 8 is too small for model.stages = 5: each stage but the last halves the image"),
    (["run", "--set", "data.crop_padding=100000000"], "data.crop_padding = 100000000: at most data.size (36) pixels"),
]


@pytest.mark.parametrize("args, says", CASES, ids=[" ".join(a) for a, _ in CASES])
def test_bad_input_is_one_line_and_exit_1(args, says, mtm_env, tmp_path):
    out = subprocess.run(MTM + args, capture_output=True, text=True, env=mtm_env, cwd=tmp_path, timeout=120)
    lines = out.stderr.strip().splitlines()
    assert out.returncode == 1 and len(lines) == 1 and lines[0].startswith("error: ") and says in lines[0], out.stderr
    assert not (tmp_path / "home" / "runs").exists()


def test_errors_of_json_commands_are_json(mtm_env, tmp_path):
    out = subprocess.run(MTM + ["show", "nope", "--json"], capture_output=True, text=True, env=mtm_env, cwd=tmp_path)
    assert out.returncode == 1 and json.loads(out.stdout) == {
        "error": f"no run 'nope' (by id or name) in {tmp_path / 'home'}; `mtm list` shows the runs"}


def test_a_wrong_choice_exits_2_and_help_lists_the_choices(mtm_env, tmp_path):
    out = subprocess.run(MTM + ["list", "--status", "bogus"], capture_output=True, text=True, env=mtm_env)
    assert out.returncode == 2 and "'bogus' is not one of 'queued', 'running'" in out.stderr
    shown = subprocess.run(MTM + ["export", "--help"], capture_output=True, text=True, env=mtm_env).stdout
    assert "markdown|csv|json" in shown and "val|final|max-test" in shown and "[default: ./mtm-home]" in \
        subprocess.run(MTM + ["list", "--help"], capture_output=True, text=True, env=mtm_env).stdout


def test_an_unexpected_error_is_one_line_unless_debug(mtm_env, tmp_path):
    """Not a user error (here an exception inside the training loop: a loss that is not a loss), but
    still one line, the run recorded failed; --debug shows the traceback."""
    code = ("import sys, mtm_engine.losses as L; L.push_pull = lambda *a, **k: 1 / 0; "
            "from mtm_tui.cli import main; sys.argv = ['mtm', *sys.argv[1:]]; main()")
    args = ["run", "--set", "train.epochs=1", "--set", "model.width=4"]
    out = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, env=mtm_env, cwd=tmp_path)
    lines = out.stderr.strip().splitlines()
    assert out.returncode == 1 and lines[-1] == "error: ZeroDivisionError: division by zero (add --debug for the traceback)"
    assert "Traceback" not in out.stderr
    listed = json.loads(subprocess.run(MTM + ["list", "--json"], capture_output=True, text=True, env=mtm_env,
                                       cwd=tmp_path).stdout)
    assert listed[0]["status"] == "failed" and "ZeroDivisionError" in listed[0]["message"]
    debug = subprocess.run([sys.executable, "-c", code, *args, "--debug"], capture_output=True, text=True,
                           env=mtm_env, cwd=tmp_path)
    assert debug.returncode == 1 and "Traceback" in debug.stderr


def _address_space_after_import() -> int:
    """Bytes of address space a process uses once torch and the training loop are imported."""
    code = "import mtm_engine.train; print(open('/proc/self/status').read().split('VmPeak:')[1].split()[0])"
    return int(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout) * 1024


@pytest.mark.skipif(sys.platform != "linux", reason="the address-space limit and /proc are Linux's")
def test_a_real_out_of_memory_is_one_line_and_the_run_failed(mtm_env, tmp_path):
    """A real allocation failure, not a mock: the run's process gets 600 MB of address space beyond
    what importing torch takes, and a 65,536-dimensional embedding of 1,000-image batches needs more.
    The CPU allocator raises a plain RuntimeError; it must still read as out of memory."""
    import resource

    limit = _address_space_after_import() + 600 * 2**20
    out = subprocess.run(MTM + ["run", "--set", "model.dim=65536", "--set", "train.batch_size=1000",
                                "--set", "train.epochs=1"], capture_output=True, text=True, env=mtm_env,
                         cwd=tmp_path, timeout=300,
                         preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_AS, (limit, limit)))
    lines = out.stderr.strip().splitlines()
    assert out.returncode == 1 and len(lines) == 1, out.stderr
    assert lines[0].startswith("error: out of memory (tried to allocate ") and "lower train.batch_size" in lines[0]
    listed = json.loads(subprocess.run(MTM + ["list", "--json"], capture_output=True, text=True, env=mtm_env,
                                       cwd=tmp_path).stdout)
    assert listed[0]["status"] == "failed" and listed[0]["message"].startswith("out of memory")


def test_out_of_memory_messages_of_cpu_and_cuda_read_the_same():
    from mtm_engine.errors import out_of_memory

    class OutOfMemoryError(RuntimeError):   # torch.OutOfMemoryError's name, as CUDA raises it
        pass

    cuda = out_of_memory(OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 MiB. GPU 0 has ..."))
    cpu = out_of_memory(RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate 4147 bytes."))
    assert str(cuda).startswith("out of memory (tried to allocate 20.00 MiB); lower train.batch_size")
    assert str(cpu).startswith("out of memory (tried to allocate 4147 bytes); lower train.batch_size")
    assert out_of_memory(ValueError("out of range")) is None


@pytest.mark.parametrize("toml, says", [
    ("tune = 5\n", "tune = 5: must be a table of sweep settings"),
    ("[tune]\nspace = 5\n", "tune.space = 5: must be a table of keys to search"),
])
def test_a_sweep_file_with_tune_or_its_space_not_a_table_is_one_line(toml, says, mtm_env, tmp_path):
    (tmp_path / "sweep.toml").write_text(toml)
    out = subprocess.run(MTM + ["tune", "sweep.toml"], capture_output=True, text=True, env=mtm_env, cwd=tmp_path,
                         timeout=120)
    lines = out.stderr.strip().splitlines()
    assert out.returncode == 1 and len(lines) == 1 and says in lines[0], out.stderr


def test_a_network_too_large_for_memory_names_its_keys_before_training(mtm_env, tmp_path):
    """model.width = 100000 ended in an out-of-memory line that blamed the batch size (issue 27). The network is
    sized on the meta device first; the run fails with the keys to lower."""
    out = subprocess.run(MTM + ["run", "--set", "model.width=100000", "--set", "train.epochs=1"], capture_output=True,
                         text=True, env=mtm_env, cwd=tmp_path, timeout=120)
    lines = out.stderr.strip().splitlines()
    assert out.returncode == 1 and len(lines) == 1, out.stderr
    assert "G parameters" in lines[0] and "lower model.width (now 100000)" in lines[0], lines[0]


def test_a_checkpoint_write_that_fails_is_one_line_naming_the_file_and_leaves_no_temporary(tmp_path, monkeypatch):
    """A full disk during torch.save raised torch's "[enforce fail at inline_container.cc:...]", which names no
    file and says nothing of what to do (issue 27)."""
    import torch

    from mtm_engine import checkpoints
    from mtm_engine.errors import MtmError

    def full_disk(state, fh):
        fh.write(b"PK")
        raise RuntimeError("[enforce fail at inline_container.cc:664] . unexpected pos 4416 vs 4310")

    monkeypatch.setattr(torch, "save", full_disk)
    target = tmp_path / "checkpoint.pt"
    with pytest.raises(MtmError, match=rf"^cannot write {target}: the write failed \(a full or failing disk: .*\); "
                                       r"free some space"):
        checkpoints._write(target, {"epoch": 1})
    assert list(tmp_path.iterdir()) == []


def test_a_pipe_as_the_config_is_not_called_missing(mtm_env, tmp_path):
    os.mkfifo(tmp_path / "fifo.toml")
    out = subprocess.run(MTM + ["run", "fifo.toml"], capture_output=True, text=True, env=mtm_env, cwd=tmp_path,
                         timeout=120)
    assert out.returncode == 1 and out.stderr.strip().splitlines() == [
        "error: config file fifo.toml is not a regular file (a pipe or a device); give the path of a TOML experiment "
        "file"]
