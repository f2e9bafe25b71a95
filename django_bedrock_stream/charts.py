"""Server-rendered SVG bar charts for the admin's usage dashboard: no JavaScript, nothing fetched.

Pure functions, values in and markup out. A chart is accessible on its own (``role="img"``, a
``<title>`` and a ``<desc>``, labelled axes, a ``<title>`` tooltip on every bar); the page colours the
series through their ``series-N`` classes, so it can follow the admin's light and dark themes.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from xml.etree import ElementTree as ET

#: The drawing's coordinates (its viewBox): the page scales it to the width it has.
WIDTH, HEIGHT = 760, 280
#: Room for the legend (top; a single series has none), the tick labels and axis titles (left and bottom).
TOP, RIGHT, BOTTOM, LEFT = 34, 12, 46, 70
TOP_WITHOUT_LEGEND = 12
#: Most labels under the x axis: the others are left out (each bar's tooltip still names it).
MAX_X_LABELS = 10


def nice_ticks(top: float, count: int = 4) -> list[float]:
    """From 0 up to the first tick at or above ``top``, in about ``count`` round steps (1, 2, 2.5 or 5
    times a power of ten), so that the grid lines fall on numbers people read at a glance."""
    if top <= 0:
        return [0.0, 1.0]
    rough = top / count
    power = 10.0 ** math.floor(math.log10(rough))
    step = next(m * power for m in (1, 2, 2.5, 5, 10) if m * power >= rough * (1 - 1e-9))
    return [i * step for i in range(math.ceil(top / step - 1e-9) + 1)]


def compact(value: float) -> str:
    """A tick label: ``0``, ``0.25``, ``950``, ``12k``, ``1.5M``, ``2B``."""
    for limit, suffix in ((1e9, "B"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= limit:
            return f"{value / limit:.3g}{suffix}"
    return f"{value:.3g}"


def bar_chart(
    *,
    chart_id: str,
    title: str,
    desc: str,
    labels: Sequence[str],
    series: Sequence[tuple[str, Sequence[float]]],
    x_label: str,
    y_label: str,
    value_format: Callable[[float], str] = lambda value: f"{value:,}",
) -> str:
    """An SVG of one bar per label, the ``series`` (name, one value per label) stacked bottom-up.

    ``chart_id`` makes the ids of the title and description unique on the page.
    """
    top = TOP if len(series) > 1 else TOP_WITHOUT_LEGEND
    plot_width, plot_height = WIDTH - LEFT - RIGHT, HEIGHT - top - BOTTOM
    baseline = top + plot_height
    stacks = [sum(values[i] for _, values in series) for i in range(len(labels))]
    ticks = nice_ticks(max(stacks, default=0))
    scale = plot_height / ticks[-1]
    svg = ET.Element("svg", {
        "xmlns": "http://www.w3.org/2000/svg", "viewBox": f"0 0 {WIDTH} {HEIGHT}", "class": "bedrock-chart",
        "role": "img", "aria-labelledby": f"{chart_id}-title {chart_id}-desc",
    })
    ET.SubElement(svg, "title", id=f"{chart_id}-title").text = title
    ET.SubElement(svg, "desc", id=f"{chart_id}-desc").text = desc

    grid = ET.SubElement(svg, "g", {"class": "grid", "aria-hidden": "true"})
    for tick in ticks:
        tick_y = _r(baseline - tick * scale)
        ET.SubElement(grid, "line", x1=str(LEFT), x2=str(WIDTH - RIGHT), y1=tick_y, y2=tick_y)
        ET.SubElement(grid, "text", {"x": str(LEFT - 6), "y": tick_y, "dy": "0.32em", "text-anchor": "end"}).text = (
            compact(tick)
        )

    slot = plot_width / max(len(labels), 1)
    bar_width = max(slot * 0.72, 1.0)
    bars = ET.SubElement(svg, "g", {"class": "bars"})
    every = math.ceil(len(labels) / MAX_X_LABELS) or 1
    for i, label in enumerate(labels):
        x, y = LEFT + i * slot + (slot - bar_width) / 2, float(baseline)
        for n, (name, values) in enumerate(series):
            if values[i] <= 0:
                continue
            height = values[i] * scale
            y -= height
            rect = ET.SubElement(bars, "rect", {"class": f"series-{n}", "x": _r(x), "y": _r(y),
                                                "width": _r(bar_width), "height": _r(height)})
            ET.SubElement(rect, "title").text = f"{label} · {name}: {value_format(values[i])}"
        if i % every == 0:
            ET.SubElement(grid, "text", {"x": _r(LEFT + (i + 0.5) * slot), "y": str(baseline + 16),
                                         "text-anchor": "middle"}).text = label

    axes = ET.SubElement(svg, "g", {"class": "axes"})
    ET.SubElement(axes, "line", x1=str(LEFT), x2=str(WIDTH - RIGHT), y1=str(baseline), y2=str(baseline))
    ET.SubElement(axes, "text", {"class": "axis-label", "x": _r(LEFT + plot_width / 2), "y": str(HEIGHT - 6),
                                 "text-anchor": "middle"}).text = x_label
    ET.SubElement(axes, "text", {"class": "axis-label", "transform": f"translate(14 {_r(top + plot_height / 2)}) "
                                 "rotate(-90)", "text-anchor": "middle"}).text = y_label

    if len(series) > 1:
        legend = ET.SubElement(svg, "g", {"class": "legend", "aria-hidden": "true"})
        for n, (name, _) in enumerate(series):
            x = LEFT + n * 130
            ET.SubElement(legend, "rect", {"class": f"series-{n}", "x": str(x), "y": "8", "width": "12",
                                           "height": "12"})
            ET.SubElement(legend, "text", x=str(x + 17), y="18").text = name
    return ET.tostring(svg, encoding="unicode")


def _r(value: float) -> str:
    """A coordinate with at most two decimals (shorter markup, no float noise)."""
    return f"{value:.2f}".rstrip("0").rstrip(".")
