"""atomic_write: whole or not at all, under a kill -9 inside it; and every writer uses it."""

import os
import re
import signal
import subprocess
import sys

import pytest
from conftest import ROOT

from mtm_engine.atomic import atomic_write, temporary_name, writer_of

HALF_THEN_WAIT = """
import sys, time
from pathlib import Path
from mtm_engine.atomic import atomic_write

def slow(fh):
    fh.write(b'{"new": ')   # half of the new content
    fh.flush()
    print("inside", flush=True)
    time.sleep(60)
    fh.write(b'1}')

atomic_write(Path(sys.argv[1]), slow)
"""


def test_a_writer_killed_inside_atomic_write_leaves_the_old_file_whole(tmp_path):
    target = tmp_path / "run.json"
    atomic_write(target, '{"old": 1}')
    writer = subprocess.Popen([sys.executable, "-c", HALF_THEN_WAIT, str(target)], stdout=subprocess.PIPE, text=True)
    assert writer.stdout.readline().strip() == "inside"
    os.kill(writer.pid, signal.SIGKILL)
    writer.wait()
    assert target.read_text() == '{"old": 1}'
    left = [p for p in tmp_path.iterdir() if p != target]
    assert len(left) == 1 and left[0].read_text() == '{"new": ' and writer_of(left[0]) == writer.pid   # for doctor
    atomic_write(target, '{"new": 1}')   # the next writer is not in its way
    assert target.read_text() == '{"new": 1}'


def test_a_write_that_fails_inside_leaves_the_old_file_and_no_temporary_file(tmp_path):
    target = tmp_path / "checkpoint.pt"
    atomic_write(target, b"old")

    def failing(fh):
        fh.write(b"ne")
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError):
        atomic_write(target, failing)
    assert target.read_bytes() == b"old" and list(tmp_path.iterdir()) == [target]


def test_temporary_names_are_the_writers_own():
    name = temporary_name(ROOT / "run.json")
    assert name.parent == ROOT and name.name.startswith(".run.json.") and writer_of(name) == os.getpid()
    assert writer_of(ROOT / ".run.json.123.tmp") == 123 and writer_of(ROOT / "run.json") is None


def test_every_file_mtm_writes_goes_through_atomic_write():
    """No module writes a file in place (write_text, open for writing, os.replace of a temporary file; locks and
    logs are opened to append):
    each would be a file a kill can leave half-written. Moving a whole file aside is not a write."""
    moves = {"mtm_engine/doctor.py": 1, "mtm_engine/tune.py": 1}   # doctor's quarantine; a trial's files into its run
    for path in sorted((ROOT / "mtm_engine").rglob("*.py")) + sorted((ROOT / "mtm_tui").rglob("*.py")):
        rel = str(path.relative_to(ROOT))
        if rel == "mtm_engine/atomic.py":
            continue
        text = path.read_text()
        assert not re.search(r"\.write_(text|bytes)\(|open\([^)]*['\"]wb?['\"]", text), rel
        assert len(re.findall(r"os\.replace\(", text)) == moves.get(rel, 0), rel
