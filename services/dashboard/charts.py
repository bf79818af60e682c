"""Small inline SVG charts rendered on the server (no JavaScript chart library, no CDN)."""

from __future__ import annotations

from collections.abc import Sequence
from html import escape


def bar_chart(
    values: Sequence[float],
    labels: Sequence[str],
    *,
    title: str,
    width: int = 640,
    height: int = 160,
    label_every: int = 1,
    value_format: str = "{:g}",
) -> str:
    """A bar chart as an ``<svg>`` string: one bar per value, a y maximum and x labels.

    Every bar has a ``<title>`` (hover tooltip) with its label and value. Text is escaped.
    """
    n = len(values)
    top = max([float(v) for v in values] + [0.0])
    pad_l, pad_b, pad_t = 36, 20, 14
    plot_w, plot_h = width - pad_l - 4, height - pad_b - pad_t
    parts = [
        f'<svg class="chart" role="img" aria-label="{escape(title)}" viewBox="0 0 {width} {height}" '
        f'width="{width}" height="{height}" xmlns="http://www.w3.org/2000/svg">',
        f"<title>{escape(title)}</title>",
        f'<line x1="{pad_l}" y1="{pad_t + plot_h}" x2="{width - 4}" y2="{pad_t + plot_h}" class="axis"/>',
        f'<text x="{pad_l - 4}" y="{pad_t + 4}" text-anchor="end" class="tick">'
        f"{escape(value_format.format(top))}</text>",
        f'<text x="{pad_l - 4}" y="{pad_t + plot_h}" text-anchor="end" class="tick">0</text>',
    ]
    if n:
        slot = plot_w / n
        bar_w = max(1.0, slot * 0.8)
        for i, (v, label) in enumerate(zip(values, labels, strict=True)):
            h = 0.0 if top <= 0 else plot_h * float(v) / top
            x = pad_l + i * slot + (slot - bar_w) / 2
            y = pad_t + plot_h - h
            parts.append(
                f'<rect class="bar" x="{x:.1f}" y="{y:.1f}" width="{bar_w:.1f}" height="{h:.1f}">'
                f"<title>{escape(label)}: {escape(value_format.format(v))}</title></rect>"
            )
            if i % max(1, label_every) == 0:
                parts.append(
                    f'<text x="{x + bar_w / 2:.1f}" y="{height - 5}" text-anchor="middle" class="tick">'
                    f"{escape(label)}</text>"
                )
    parts.append("</svg>")
    return "".join(parts)
