"""Colours and markers every chart shares: ten colours that stay apart on dark and light
terminals (Tableau 10, as RGB: plotext draws them as true colour), and ten markers, so that a
series is told apart by its marker where colours are close or missing."""

from __future__ import annotations

COLOURS: tuple[tuple[int, int, int], ...] = (
    (31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189),
    (140, 86, 75), (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207),
)
MARKERS = ("●", "■", "▲", "◆", "★", "✚", "✖", "▼", "◉", "◼")


def colour(i: int) -> tuple[int, int, int]:
    return COLOURS[i % len(COLOURS)]


def marker(i: int) -> str:
    return MARKERS[i % len(MARKERS)]


def rich_colour(i: int) -> str:
    """The same colour as rich markup takes it, for legends drawn outside the plot."""
    r, g, b = colour(i)
    return f"rgb({r},{g},{b})"
