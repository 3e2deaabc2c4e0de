"""`mtm plot`: figures like the paper's Appendix B (and Figs. 2-3) from stored runs, as PNG and
SVG files. matplotlib is an optional extra (`pip install 'mtm-workbench[plot]'`), so the TUI stays light."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mtm_engine import install_hint
from mtm_engine.errors import MtmError
from mtm_engine.export import row_label
from mtm_engine.records import METRICS, Metric, classifiers_in
from mtm_engine.snapshots import PLANES, default_projection, describe, projections

SIZE, DISTANCE = METRICS["cluster_size"].key("test"), METRICS["centre_distance"].key("test")   # Fig. 17's axes


def figures() -> dict[str, tuple[str, Metric]]:
    """figure name -> (title, metric): accuracy (the run's first classifier's), then the catalogue's measures drawn
    per epoch."""
    return {"accuracy": ("Test accuracy over epochs (validation dashed)", METRICS["acc"]),
            **{m.name: (f"{m.words[:1].upper()}{m.words[1:]} over epochs (test split)", m)
               for m in METRICS.values() if m.curve}}


def _pyplot():
    try:
        import matplotlib
    except ImportError:
        raise MtmError(f"mtm plot needs matplotlib: {install_hint('plot')} (or pip install matplotlib)") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _label(meta: dict[str, Any]) -> str:
    return f"{row_label(meta['spec'])} {meta['name']} s{meta['seed']} ({meta['id']})"


def _first_classifier(records: list[dict[str, Any]]) -> str:
    return next(iter(classifiers_in(records)), "cos")


def plot_runs(runs: list[tuple[dict, dict, list]], snapshots: dict[str, dict | None], out: Path,
              formats: tuple[str, ...] = ("png", "svg"), certainty: dict[str, dict | None] | None = None) -> list[Path]:
    """runs: (meta, row, records) per run; snapshots: run id -> its best embedding snapshot;
    certainty: run id -> its kept `mtm eval --certainty` measurement (the risk-coverage curves of
    every run measured, and each run's score histograms)."""
    plt = _pyplot()
    out.mkdir(parents=True, exist_ok=True)
    runs = [run for run in runs if run[2]]
    if not runs:
        raise MtmError("no runs with recorded epochs to plot; `mtm list` shows the runs")
    written: list[Path] = []

    def save(fig, name: str) -> None:
        for fmt in formats:
            path = out / f"{name}.{fmt}"
            fig.savefig(path, dpi=150, bbox_inches="tight")
            written.append(path)
        plt.close(fig)

    for name, (title, metric) in figures().items():
        fig, ax = plt.subplots(figsize=(7, 4.5))
        for meta, _, records in runs:
            classifier = _first_classifier(records)
            epochs = [r["epoch"] for r in records]
            line, = ax.plot(epochs, [r.get(metric.key("test", classifier)) for r in records], marker=".",
                            label=_label(meta))
            if name == "accuracy":
                ax.plot(epochs, [r.get(metric.key("val", classifier)) for r in records], linestyle="--",
                        color=line.get_color())
        ax.set(title=f"{title}; paper {metric.figure}" if metric.figure else title, xlabel="epoch",
               ylabel=metric.symbol if metric.name != "acc" else metric.label, yscale="log" if metric.log else "linear")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
        save(fig, name)

    fig, ax = plt.subplots(figsize=(6, 5))   # Fig. 17: rho against sigma, with rho = sigma
    top = 0.0
    for meta, _, records in runs:
        xs, ys = [r[SIZE] for r in records], [r[DISTANCE] for r in records]
        ax.plot(xs, ys, marker=".", label=_label(meta))
        ax.annotate("1", (xs[0], ys[0]), fontsize=7)
        top = max(top, *xs, *ys)
    low = min(min(r[SIZE] for r in rec) for _, _, rec in runs)
    ax.plot([low, top], [low, top], color="gray", linestyle=":", label="ρ = σ")
    ax.set(title="Centre distance ρ against cluster size σ (test split; 1 = first epoch)", xlabel="cluster size σ",
           ylabel="centre distance ρ", xscale="log", yscale="log")
    ax.legend(fontsize=7)
    save(fig, "distance_vs_size")

    for meta, _, _ in runs:   # Figs. 2-3: the embedding space of each run's best epoch
        snap = snapshots.get(meta["id"])
        if not snap:
            continue
        fig, ax = plt.subplots(figsize=(6, 6))
        name = default_projection(snap)   # the snapshot's default plane (the PCA plane in the first layout)
        plane, labels = projections(snap)[name], snap["labels"]
        points = plane["points"]
        scatter = ax.scatter([p[0] for p in points], [p[1] for p in points], c=[k % 10 for k in labels], cmap="tab10",
                             vmin=0, vmax=9,
                             s=4, alpha=0.6)
        # G and C in their class's colour (as the TUI draws them), told apart by their marker, edged in black
        classes = [k % 10 for k in range(len(plane["centres"]))]   # ten colours, cycling as the TUI's
        ax.scatter(*zip(*plane["centres"]), marker="P", s=110, c=classes, cmap="tab10", vmin=0, vmax=9,
                   edgecolors="black", linewidths=0.8, label="class centres G")
        if plane["class_embeddings"]:
            ax.scatter(*zip(*plane["class_embeddings"]), marker="X", s=90, c=classes, cmap="tab10", vmin=0, vmax=9,
                       edgecolors="black", linewidths=0.8, label="class embeddings C")
        var, axes = plane["explained"], PLANES[name].axes if name in PLANES else name
        ax.set(title=f"{_label(meta)}\nepoch {snap['epoch']}: test embeddings\n{describe(name, plane, labels)}",
               xlabel=f"{axes} 1 ({100 * var[0]:.0f}%)", ylabel=f"{axes} 2 ({100 * var[1]:.0f}%)")
        # both legends outside the axes: never over the points
        ax.add_artist(ax.legend(*scatter.legend_elements(), title="class", fontsize=7, loc="upper left",
                                bbox_to_anchor=(1.02, 1.0)))
        ax.legend(fontsize=7, loc="lower left", bbox_to_anchor=(1.02, 0.0))
        save(fig, f"embedding-{meta['id']}")

    measured = [(meta, certainty[meta["id"]]) for meta, _, _ in runs if (certainty or {}).get(meta["id"])]
    if measured:   # the risk-coverage curves: one panel a run, one line a score
        fig, axes = plt.subplots(1, len(measured), figsize=(5.5 * len(measured), 4.5), squeeze=False,
                                 layout="constrained")
        for ax, (meta, result) in zip(axes[0], measured):
            for name, curve in result["risk_coverage"].items():
                ax.plot(curve["coverage"], curve["risk"], label=name)
            ax.set(title=f"{row_label(meta['spec'])} {meta['name']} s{meta['seed']} ({meta['id'][:8]})\n"
                         f"{result['classifier']} classifier, test split", xlabel="coverage (the surest first)",
                   ylabel="risk (their error rate)")
            ax.grid(alpha=0.3)
            ax.legend(fontsize=7)
        save(fig, "risk_coverage")
    for meta, result in measured:   # each score's histogram: the share of each set in each bin
        scores = result["histograms"]
        columns = min(4, len(scores))
        rows = -(-len(scores) // columns)
        fig, axes = plt.subplots(rows, columns, figsize=(3.4 * columns, 2.8 * rows), squeeze=False,
                                 layout="constrained")
        for ax, (name, counts) in zip(axes.flat, scores.items()):
            for which, label in (("in", "test (in)"), ("out", f"{result['ood']} (out)")):
                if which in counts:
                    total = sum(counts[which]) or 1
                    ax.stairs([c / total for c in counts[which]], counts["edges"], fill=True, alpha=0.5, label=label)
            ax.set(title=name, xlabel="score (higher: surer)", ylabel="share")
            ax.legend(fontsize=6)
        for ax in list(axes.flat)[len(scores):]:
            ax.axis("off")
        fig.suptitle(f"{_label(meta)}: certainty scores of the test split"
                     + (f" against {result['ood']}'s" if result["ood"] else ""), fontsize=9)
        save(fig, f"scores-{meta['id']}")
    return written
