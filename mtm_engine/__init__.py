"""The Moving Targets Model engine: data, backbones, class embeddings, losses, classifiers, metrics."""

# The name on the package index (`mtm` and `moving-targets` there are other projects); the commands stay
# `mtm` and `mtm-tui`, and the import packages `mtm_engine` and `mtm_tui`.
DISTRIBUTION = "mtm-workbench"


def install_hint(extra: str) -> str:
    """The pip command that adds an optional extra, for error messages: install_hint("plot")."""
    return f"pip install '{DISTRIBUTION}[{extra}]'"
