"""The embedding view's chart: one plane of a run's embedding snapshot (mtm_engine.snapshots), the
test points coloured by class, each class centre G drawn as its class's digit and each class
embedding C as a cross, both in their class's colour, and a legend beside the plot, never over it.

A mark is a (colour, glyph) pair. Class k's colour is palette.colour(k), so the ten classes of a
ten-class dataset get ten colours; classes ten apart share a colour, and their points then differ by
glyph. The glyphs of points, centres and class embeddings never coincide, so no class's points look
like any centre or class embedding.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from rich.markup import escape
from textual.app import ComposeResult
from textual.containers import Horizontal
from textual.widgets import Static
from textual_plotext import PlotextPlot

from mtm_engine.snapshots import PLANES, Projection, default_projection, describe, projections
from mtm_tui.widgets.palette import colour, rich_colour

POINT_GLYPHS = ("•", "∘", "▪", "▫", "⋄", "∗", "▴", "▿", "+", "·")   # by k // 10
CENTRE_GLYPHS = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"   # class k's G: its digit
CLASS_EMBEDDING_GLYPH = "×"
KINDS = {"point": "test point", "centre": "class centre G", "class_embedding": "class embedding C"}


@dataclass(frozen=True)
class Mark:
    kind: str                      # "point", "centre" (G) or "class_embedding" (C)
    label: int                     # the class
    colour: tuple[int, int, int]   # RGB, as plotext takes it
    glyph: str


def mark(kind: str, label: int) -> Mark:
    if kind == "point":
        glyph = POINT_GLYPHS[label // 10 % len(POINT_GLYPHS)]
    elif kind == "centre":
        glyph = CENTRE_GLYPHS[label] if label < len(CENTRE_GLYPHS) else "#"
    else:
        glyph = CLASS_EMBEDDING_GLYPH
    return Mark(kind, label, colour(label), glyph)


@dataclass(frozen=True)
class Drawn:
    """One series the last redraw handed to plotext: its mark and coordinates."""
    mark: Mark
    xs: list[float]
    ys: list[float]


class EmbeddingPlot(Horizontal):
    """A plane of an embedding snapshot: the plot, and its legend to the right of it.

    `update(snapshot, projection)` hands it a snapshot (either layout, or None before the run's first
    epoch) and the plane to show (None, or a plane the snapshot lacks: its default plane)."""

    DEFAULT_CSS = """
    EmbeddingPlot { height: 1fr; }
    EmbeddingPlot > PlotextPlot { width: 1fr; height: 1fr; min-height: 8; }
    EmbeddingPlot > .legend { width: auto; max-width: 34; height: 1fr; padding: 0 1; overflow-y: auto; }
    """

    def __init__(self, **kwargs: Any):
        super().__init__(**kwargs)
        self.snapshot: dict[str, Any] | None = None
        self.projection: str | None = None     # the plane shown
        self.drawn: list[Drawn] = []           # what the last redraw plotted, in drawing order

    def compose(self) -> ComposeResult:
        yield PlotextPlot()
        yield Static("", classes="legend")

    @property
    def planes(self) -> dict[str, Projection]:
        return projections(self.snapshot)

    @property
    def marks(self) -> list[Mark]:
        """Every mark the last redraw used (one per drawn series), points first."""
        return [d.mark for d in self.drawn]

    def describe(self) -> str:
        """The plane shown and how well it separates the classes, in one line ("" before a snapshot)."""
        if self.projection is None or self.snapshot is None:
            return ""
        return describe(self.projection, self.planes[self.projection], self.snapshot.get("labels", []))

    def update(self, snapshot: dict[str, Any] | None, projection: str | None = None) -> str | None:
        """Show `projection` of `snapshot`; returns the plane shown."""
        self.snapshot = snapshot
        self.projection = projection if projection in self.planes else default_projection(snapshot)
        self.redraw()
        return self.projection

    def redraw(self) -> None:
        self.drawn = self._series()
        if not self.is_mounted:
            return
        plot = self.query_one(PlotextPlot)
        plt = plot.plt
        plt.clear_data()
        plt.clear_figure()
        if not self.drawn:
            plt.title("no embedding snapshot yet: the run writes one after each epoch")
            plot.refresh()
            self.query_one(".legend", Static).update("")
            return
        plane = PLANES.get(self.projection or "")
        axes = plane.axes if plane else self.projection
        plt.title(f"test embeddings, epoch {self.snapshot.get('epoch', '?')}: "
                  f"{plane.title if plane else self.projection}")
        plt.xlabel(f"{axes} 1")
        plt.ylabel(f"{axes} 2")
        for d in self.drawn:   # no plotext labels: its legend would sit over the points
            plt.scatter(d.xs, d.ys, marker=d.mark.glyph, color=d.mark.colour,
                        style="bold" if d.mark.kind == "centre" else None)
        plot.refresh()
        self.query_one(".legend", Static).update(self.legend())

    def _series(self) -> list[Drawn]:
        """Points per class, then the class embeddings C, then the centres G on top."""
        if self.projection is None or self.snapshot is None:
            return []
        plane = self.planes[self.projection]
        labels = self.snapshot.get("labels", [])
        by_class: dict[int, tuple[list[float], list[float]]] = {}
        for (x, y), label in zip(plane["points"], labels):
            xs, ys = by_class.setdefault(label, ([], []))
            xs.append(x)
            ys.append(y)
        drawn = [Drawn(mark("point", k), *by_class[k]) for k in sorted(by_class)]
        for kind in ("class_embedding", "centre"):
            rows = plane["class_embeddings"] if kind == "class_embedding" else plane["centres"]
            drawn += [Drawn(mark(kind, k), [x], [y]) for k, (x, y) in enumerate(rows or [])]
        return drawn

    def legend(self) -> str:
        """Rich markup: each class in its colour with its three marks, then what the marks mean."""
        classes = sorted({d.mark.label for d in self.drawn})
        has_c = any(d.mark.kind == "class_embedding" for d in self.drawn)

        def row(k: int) -> str:
            marks = [mark("point", k).glyph, mark("centre", k).glyph] + ([CLASS_EMBEDDING_GLYPH] if has_c else [])
            return f"[{rich_colour(k)}]{' '.join(escape(m) for m in marks)}[/] class {k}"

        lines = ["[b]class[/b]", *(row(k) for k in classes), ""]
        lines.append(f"{POINT_GLYPHS[0]} {KINDS['point']}")
        lines.append(f"[b]{CENTRE_GLYPHS[0]}[/b] {KINDS['centre']}" + (" (its digit)" if len(classes) <= 10 else ""))
        if has_c:
            lines.append(f"{CLASS_EMBEDDING_GLYPH} {KINDS['class_embedding']}")
        if len(classes) > 10:
            lines.append("colours repeat every ten classes; the point glyph changes")
        return "\n".join(lines)
