"""The Embedding screen with Pilot: a run whose snapshot (written by the engine) has ten classes;
`p` cycles the planes; ten classes get ten colours, and no class's points share a mark with a
class centre G or a class embedding C; the legend is a widget of its own, beside the plot."""

import asyncio
import json

import torch
from conftest import until
from textual.widgets import Static
from textual_plotext import PlotextPlot

from mtm_engine.config import load_spec
from mtm_engine.measures.geometry import class_centres, embedding_snapshot
from mtm_engine.runner import create_run
from mtm_engine.snapshots import PLANES, projections
from mtm_engine.store import Store
from mtm_tui.app import MtmApp
from mtm_tui.widgets.embedding import EmbeddingPlot
from mtm_tui.widgets.palette import rich_colour


def _ten_class_snapshot() -> dict:
    g = torch.Generator().manual_seed(0)
    y = torch.arange(400) % 10
    means = 3 * torch.randn(10, 16, generator=g)
    e = means[y] + torch.randn(400, 16, generator=g)
    G = class_centres(e, y, 10)
    return {"epoch": 7, **embedding_snapshot(e, y, G, G + 0.2 * torch.randn(10, 16, generator=g))}


def _store_with(tmp_path, snapshot: dict, run_id: str) -> Store:
    store = Store(tmp_path / "home")
    create_run(store, load_spec(overrides=["name=ten-classes"]), status="running", run_id=run_id, extra={"git": None})
    store.update(run_id, status="finished")
    (store.run_dir(run_id) / "embedding-last.json").write_text(json.dumps(snapshot))
    return store


def _title(app) -> str:
    return str(app.screen.query_one("#embedding-title", Static).render())


def test_p_cycles_the_planes_with_ten_classes_in_ten_colours(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    snapshot = _ten_class_snapshot()
    _store_with(tmp_path, snapshot, "eeee5555")
    app = MtmApp(tmp_path / "home")

    async def flow():
        async with app.run_test(size=(120, 36)) as pilot:
            app.open_embedding("eeee5555")
            await until(pilot, lambda: app.screen.query(EmbeddingPlot) and app.screen.query_one(EmbeddingPlot).drawn)
            plot = app.screen.query_one(EmbeddingPlot)
            seen = []
            for _ in range(4):
                seen.append(plot.projection)
                assert f"plane {plot.projection} · {PLANES[plot.projection].title}" in _title(app)
                # each plane draws its own coordinates
                own = projections(snapshot)[plot.projection]
                points = [(x, y) for d in plot.drawn if d.mark.kind == "point" for x, y in zip(d.xs, d.ys)]
                assert sorted(points) == sorted(map(tuple, own["points"]))
                await pilot.press("p")
                await pilot.pause()
            assert seen == ["centres", "lda", "pca", "centres"]

            # ten classes, ten colours; a centre is its class's digit, a class embedding a cross
            marks = plot.marks
            points = {m.label: m for m in marks if m.kind == "point"}
            centres = {m.label: m for m in marks if m.kind == "centre"}
            embeddings = {m.label: m for m in marks if m.kind == "class_embedding"}
            assert sorted(points) == sorted(centres) == sorted(embeddings) == list(range(10))
            assert len({m.colour for m in points.values()}) == 10
            assert [centres[k].glyph for k in range(10)] == list("0123456789")
            pairs = lambda ms: {(m.colour, m.glyph) for m in ms.values()}   # noqa: E731
            assert not pairs(points) & (pairs(centres) | pairs(embeddings))
            assert len(pairs(centres) | pairs(embeddings)) == 20             # every G and C told apart
            for k in range(10):                                             # G and C in their class's colour
                assert points[k].colour == centres[k].colour == embeddings[k].colour

            # the legend: its own widget, beside the plot, naming every class in its colour
            legend = plot.query_one(".legend", Static)
            chart = plot.query_one(PlotextPlot)
            assert legend is not chart and legend not in chart.walk_children()
            assert not legend.region.overlaps(chart.region) and legend.region.width > 0
            text = plot.legend()
            for k in range(10):
                assert f"[{rich_colour(k)}]" in text and f"class {k}" in text
            assert "class centre G" in text and "class embedding C" in text

    asyncio.run(flow())


def test_a_snapshot_of_the_first_layout_shows_its_pca_plane(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    old = {"epoch": 2, "labels": [0, 1, 2], "points": [[0.0, 0.0], [1.0, 1.0], [2.0, 0.0]],
           "centres": [[0.0, 0.0], [1.0, 1.0], [2.0, 0.0]], "class_embeddings": None,
           "explained_variance": [0.7, 0.3]}
    _store_with(tmp_path, old, "ffff6666")
    app = MtmApp(tmp_path / "home")

    async def flow():
        async with app.run_test(size=(100, 30)) as pilot:
            app.open_embedding("ffff6666")
            await until(pilot, lambda: app.screen.query(EmbeddingPlot) and app.screen.query_one(EmbeddingPlot).drawn)
            plot = app.screen.query_one(EmbeddingPlot)
            assert plot.projection == "pca" and "PCA of the points: 70% + 30%" in _title(app)
            assert "PCA only" in _title(app)
            await pilot.press("p")
            await pilot.pause()
            assert plot.projection == "pca"
            assert not any(m.kind == "class_embedding" for m in plot.marks)   # a head without C
            assert "class embedding C" not in plot.legend()

    asyncio.run(flow())
