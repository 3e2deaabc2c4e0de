"""`mtm plot` writes the paper's Appendix-B figures and the embedding spaces from stored runs."""

import json
import subprocess

from conftest import MTM, fake_records, fake_snapshot

from mtm_engine.config import load_spec
from mtm_engine.runner import create_run
from mtm_engine.store import Store


def test_mtm_plot_writes_every_figure(tmp_path, mtm_env):
    store = Store(tmp_path / "home")
    ids = []
    for seed in (0, 1):
        run_id = create_run(store, load_spec(overrides=[f"train.seed={seed}"]), status="running")
        for r in fake_records(4):
            store.append_epoch(run_id, r, {"epoch": r["epoch"]})
        store.update(run_id, status="finished")
        ids.append(run_id)
    (store.run_dir(ids[0]) / "embedding-best.json").write_text(json.dumps(fake_snapshot()))
    out = subprocess.run(MTM + ["plot", "--out", "figs"], capture_output=True, text=True, env=mtm_env, cwd=tmp_path,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    names = {p.name for p in (tmp_path / "figs").iterdir()}
    for figure in ("accuracy", "cluster_size", "centre_distance", "centre_separation", "distance_vs_size",
                   "median_cosine", f"embedding-{ids[0]}"):
        assert {f"{figure}.png", f"{figure}.svg"} <= names, figure
        assert (tmp_path / "figs" / f"{figure}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert f"embedding-{ids[1]}.png" not in names   # no snapshot, no figure
