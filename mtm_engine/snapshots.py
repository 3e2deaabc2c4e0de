"""Reading a run's embedding snapshot (embedding-last.json, embedding-best.json), torch-free: the
TUI and `mtm plot` read it through here, whichever layout the run wrote.

A snapshot (geometry.embedding_snapshot, plus the epoch evaluate.write_snapshot adds) is

    {"epoch": 5, "labels": [N ints],
     "points": [[x, y]] N, "centres": [[x, y]] K, "class_embeddings": [[x, y]] K or null,
     "explained_variance": [2],                                the PCA plane, in the first layout
     "projections": {"centres": {"points", "centres", "class_embeddings", "explained"},
                     "lda": {...}},                            the planes added since
     "default": "centres"}

A snapshot of the first layout has only the flat PCA plane; `projections` reads both.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, TypedDict


class Projection(TypedDict):
    """One plane: 2-D coordinates of the points [N], the class centres G [K] and the class embeddings
    C [K] (None for a head without them), and the share of the plane's criterion along each axis [2]."""
    points: list[list[float]]
    centres: list[list[float]]
    class_embeddings: list[list[float]] | None
    explained: list[float]


@dataclass(frozen=True)
class Plane:
    title: str        # what the plane is
    axes: str         # the axes' short name, numbered 1 and 2 in a figure
    explained: str    # what `explained` is a share of


PLANES = {
    "centres": Plane("PCA of the class centres G", "G-PC", "of the centres' variance"),
    "lda": Plane("Fisher LDA", "LD", "of the Fisher criterion"),
    "pca": Plane("PCA of the points", "PC", "of the points' variance"),
}
ORDER = tuple(PLANES)   # the order the TUI's `p` cycles through


def projections(snapshot: dict[str, Any] | None) -> dict[str, Projection]:
    """{name: Projection} in ORDER (then any other names), from either layout; {} for no snapshot."""
    if not snapshot:
        return {}
    found: dict[str, Projection] = {}
    for name, plane in (snapshot.get("projections") or {}).items():
        found[name] = _projection(plane, plane.get("explained"))
    if snapshot.get("points") is not None:   # the flat PCA plane, in both layouts
        found["pca"] = _projection(snapshot, snapshot.get("explained_variance"))
    return {name: found[name] for name in sorted(found, key=lambda n: (ORDER + (n,)).index(n))}


def _projection(plane: dict[str, Any], explained: list[float] | None) -> Projection:
    return Projection(points=plane.get("points") or [], centres=plane.get("centres") or [],
                      class_embeddings=plane.get("class_embeddings") or None,
                      explained=list(explained or [0.0, 0.0]))


def default_projection(snapshot: dict[str, Any] | None) -> str | None:
    """The plane to show first: the snapshot's "default" where it has it, else its first plane."""
    found = projections(snapshot)
    if not found:
        return None
    default = (snapshot or {}).get("default")
    return default if default in found else next(iter(found))


def next_projection(snapshot: dict[str, Any] | None, current: str | None) -> str | None:
    """The plane after `current` in ORDER among those the snapshot has (wrapping round)."""
    names = list(projections(snapshot))
    if not names:
        return None
    return names[(names.index(current) + 1) % len(names)] if current in names else names[0]


def nearest_centre_share(projection: Projection, labels: list[int]) -> float | None:
    """The share of the points whose nearest class centre G in the plane is their own class's: how
    well the classes separate in this picture (1.0: every point lies nearest its own centre).
    None where there is nothing to measure. Centres are indexed by class."""
    centres = projection["centres"]
    total = hits = 0
    for (x, y), label in zip(projection["points"], labels):
        if not 0 <= label < len(centres):
            continue
        distances = [(x - cx) ** 2 + (y - cy) ** 2 for cx, cy in centres]
        hits += distances[label] == min(distances)
        total += 1
    return hits / total if total else None


def describe(name: str, projection: Projection, labels: list[int]) -> str:
    """One line on a plane and how well it separates the classes, e.g. "PCA of the class centres G:
    71% + 20% of the centres' variance; 96% nearest their own centre" (the share of the points)."""
    plane = PLANES.get(name, Plane(name, name, ""))
    e1, e2 = (list(projection["explained"]) + [0.0, 0.0])[:2]
    text = f"{plane.title}: {100 * e1:.0f}% + {100 * e2:.0f}% {plane.explained}".rstrip()
    share = nearest_centre_share(projection, labels)
    return text if share is None else f"{text}; {100 * share:.0f}% nearest their own centre"
