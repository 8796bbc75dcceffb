"""Server-rendered SVG charts: markup built here, every text in it escaped, no script.

The CSP forbids inline style, so colours come from classes in /static/console.css; the
chart names itself (title, desc) for screen readers, and the page lists the numbers too.
"""

from __future__ import annotations

from datetime import datetime

from markupsafe import Markup, escape

WIDTH, HEIGHT = 960, 300
LEFT, RIGHT, TOP, BOTTOM = 56, 16, 16, 48
# (key in a series row, legend label, CSS class)
LINES = (
    ("clicks_human", "human clicks", "human"),
    ("clicks_bot", "bot clicks", "bot"),
    ("opens_human", "opens", "opens"),
)
X_LABELS = 6


def _label(at: str, bucket: str) -> str:
    moment = datetime.fromisoformat(at)
    return moment.strftime("%Y-%m-%d") if bucket == "day" else moment.strftime("%m-%d %H:00")


def _nice_top(value: int) -> int:
    """The y axis' top: the first of 1, 2, 5, 10, 20, 50 … at or above value."""
    magnitude = 1
    while True:
        for multiple in (1, 2, 5):
            if multiple * magnitude >= value:
                return multiple * magnitude
        magnitude *= 10


def series_chart(series: list[dict], *, bucket: str, title: str) -> Markup:
    """An <svg> line chart of human clicks, bot clicks and opens per bucket (UTC)."""
    chart_id = "chart-" + bucket
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    total = {key: sum(row[key] for row in series) for key, _, _ in LINES}
    per = "hour" if bucket == "hour" else "day"
    if series:
        desc = (
            f"From {series[0]['at']} to {series[-1]['at']} per {per} (UTC): "
            + ", ".join(f"{total[key]} {label}" for key, label, _ in LINES)
            + "."
        )
    else:
        desc = "No clicks or opens yet."
    parts = [
        f'<svg class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" '
        f'aria-labelledby="{chart_id}-title {chart_id}-desc" xmlns="http://www.w3.org/2000/svg">',
        f'<title id="{chart_id}-title">{escape(title)}</title>',
        f'<desc id="{chart_id}-desc">{escape(desc)}</desc>',
        f'<rect class="plot" x="{LEFT}" y="{TOP}" width="{plot_w}" height="{plot_h}"/>',
    ]
    top = _nice_top(max((row[k] for row in series for k, _, _ in LINES), default=0))
    # Y axis: 0, half, top.
    for value in (0, top / 2, top):
        y = TOP + plot_h - plot_h * value / top
        text = f"{value:g}"
        parts.append(
            f'<line class="grid" x1="{LEFT}" y1="{y:.1f}" x2="{LEFT + plot_w}" y2="{y:.1f}"/>'
        )
        parts.append(
            f'<text class="axis" x="{LEFT - 6}" y="{y + 4:.1f}" text-anchor="end">{text}</text>'
        )
    parts.append(
        f'<text class="axis" x="14" y="{TOP + plot_h / 2:.0f}" text-anchor="middle" '
        f'transform="rotate(-90 14 {TOP + plot_h / 2:.0f})">per {per}</text>'
    )
    n = len(series)

    def x_of(i: int) -> float:
        return LEFT + (plot_w * i / (n - 1) if n > 1 else plot_w / 2)

    if n:
        step = max(1, (n - 1) // (X_LABELS - 1)) if n > 1 else 1
        shown = list(range(0, n, step))
        if shown[-1] != n - 1:  # the last bucket is labelled; a label crowding it goes
            shown = shown[:-1] if n - 1 - shown[-1] < step * 0.6 else shown
            shown.append(n - 1)
        for i in shown:
            x = x_of(i)
            # The first and last labels keep inside the picture.
            anchor = "start" if i == 0 and n > 1 else "end" if i == n - 1 and n > 1 else "middle"
            parts.append(
                f'<text class="axis" x="{x:.1f}" y="{TOP + plot_h + 18}" text-anchor="{anchor}">'
                f"{escape(_label(series[i]['at'], bucket))}</text>"
            )
        for key, _, css in LINES:
            points = " ".join(
                f"{x_of(i):.1f},{TOP + plot_h - plot_h * row[key] / top:.1f}"
                for i, row in enumerate(series)
            )
            if n == 1:  # one bucket: a dot, since a line needs two points
                y = TOP + plot_h - plot_h * series[0][key] / top
                parts.append(f'<circle class="line {css}" cx="{x_of(0):.1f}" cy="{y:.1f}" r="4"/>')
            else:
                parts.append(f'<polyline class="line {css}" points="{points}"/>')
    else:
        parts.append(
            f'<text class="axis" x="{LEFT + plot_w / 2}" y="{TOP + plot_h / 2}" '
            'text-anchor="middle">No clicks or opens yet</text>'
        )
    # Legend under the axis labels.
    x = LEFT
    for key, label, css in LINES:
        parts.append(f'<rect class="key {css}" x="{x}" y="{HEIGHT - 16}" width="12" height="4"/>')
        parts.append(
            f'<text class="axis" x="{x + 16}" y="{HEIGHT - 10}">'
            f"{escape(label)} ({total[key]})</text>"
        )
        x += 190
    parts.append("</svg>")
    # Every dynamic text above went through escape(); numbers are formatted by us.
    return Markup("\n".join(parts))  # noqa: S704
