"""Charts as inline SVG, drawn on the server: small pure functions from numbers to markup.

Why server-side SVG: no chart library to vendor and keep, no script, nothing for the page's
Content-Security-Policy to allow (colours come from classes in console.css, never from ``style``
attributes, which ``style-src 'self'`` would refuse). Every chart has ``role="img"``, an
``aria-label`` and a ``<title>`` per mark, so a screen reader and a hovering mouse both get the
numbers; pages also show the same numbers in a table.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from html import escape

from markupsafe import Markup


def _num(x: float) -> str:
    """Coordinates with at most two decimals, no ``-0`` and no exponent."""
    text = f"{x:.2f}".rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text


def nice_max(value: float) -> float:
    """The smallest 1, 2 or 5 times a power of ten that is ``>= value`` (an axis top); 1 for 0."""
    if value <= 0:
        return 1.0
    scale = 1.0
    while scale * 10 <= value:
        scale *= 10
    while scale > value:
        scale /= 10
    for step in (1, 2, 5, 10):
        if step * scale >= value:
            return step * scale
    return 10 * scale  # unreachable: 10 * scale > value by construction


def stacked_bars(
    bars: Sequence[tuple[str, Mapping[str, int]]],
    series: Sequence[str],
    *,
    label: str,
    width: int = 720,
    height: int = 180,
    testid: str = "chart",
) -> Markup:
    """Vertical stacked bars: one bar per ``(label, {series: count})``, stacked in ``series`` order.

    Each segment has class ``s-<series>`` (coloured by the stylesheet) and a ``<title>`` with its
    bar's label, series and count. An empty chart (no bars, or all zero) still draws its axis and
    says "no data", so the page layout does not jump between windows.
    """
    pad_left, pad_bottom, pad_top = 40, 20, 8
    plot_w = width - pad_left - 4
    plot_h = height - pad_bottom - pad_top
    totals = [sum(max(0, int(v.get(s, 0))) for s in series) for _, v in bars]
    top = nice_max(max(totals, default=0))
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" viewBox="0 0 {width} {height}"'
        f' role="img" aria-label="{escape(label)}" data-testid="{escape(testid)}"'
        ">",
        f"<title>{escape(label)}</title>",
        f'<line class="axis" x1="{pad_left}" y1="{pad_top + plot_h}" x2="{width - 4}"'
        f' y2="{pad_top + plot_h}"/>',
        f'<text class="tick" x="{pad_left - 4}" y="{pad_top + 8}" text-anchor="end">'
        f"{escape(_short(top))}</text>",
        f'<text class="tick" x="{pad_left - 4}" y="{pad_top + plot_h}" text-anchor="end">0</text>',
    ]
    if not bars or max(totals, default=0) == 0:
        parts.append(
            f'<text class="empty" x="{pad_left + plot_w / 2:.0f}" y="{pad_top + plot_h / 2:.0f}"'
            f' text-anchor="middle">no data</text>'
        )
    slot = plot_w / max(len(bars), 1)
    bar_w = max(slot * 0.8, 1.0)
    for i, (bar_label, values) in enumerate(bars):
        x = pad_left + i * slot + (slot - bar_w) / 2
        y_base = float(pad_top + plot_h)
        for s in series:
            n = max(0, int(values.get(s, 0)))
            if n == 0:
                continue
            h = plot_h * n / top
            y_base -= h
            parts.append(
                f'<rect class="s-{escape(s)}" x="{_num(x)}" y="{_num(y_base)}"'
                f' width="{_num(bar_w)}" height="{_num(h)}">'
                f"<title>{escape(bar_label)}: {escape(s)} {n:,}</title></rect>"
            )
    # First and last labels only: readable on a phone, the table below has every bucket.
    if bars:
        parts.append(
            f'<text class="tick" x="{pad_left}" y="{height - 4}">{escape(bars[0][0])}</text>'
        )
        if len(bars) > 1:
            parts.append(
                f'<text class="tick" x="{width - 4}" y="{height - 4}" text-anchor="end">'
                f"{escape(bars[-1][0])}</text>"
            )
    parts.append("</svg>")
    # Safe: every text and attribute value interpolated above went through escape().
    return Markup("".join(parts))  # noqa: S704


def meter(value: float, limit: float, *, label: str, width: int = 100, height: int = 10) -> Markup:
    """A horizontal gauge of ``value / limit`` (clamped to the bar; class ``over`` past 100%,
    ``warn`` from 80%): budget use in a table cell."""
    ratio = value / limit if limit > 0 else (1.0 if value > 0 else 0.0)
    state = "over" if ratio >= 1 else "warn" if ratio >= 0.8 else "ok"
    fill = width * min(max(ratio, 0.0), 1.0)
    # Safe: the only text is the escaped label; everything else is a number or a fixed word.
    return Markup(  # noqa: S704
        f'<svg xmlns="http://www.w3.org/2000/svg" class="meter meter-{state}"'
        f' viewBox="0 0 {width} {height}" width="{width}" height="{height}" role="img"'
        f' aria-label="{escape(label)}"><title>{escape(label)}</title>'
        f'<rect class="track" x="0" y="0" width="{width}" height="{height}"/>'
        f'<rect class="fill" x="0" y="0" width="{_num(fill)}" height="{height}"/></svg>'
    )


def _short(x: float) -> str:
    """An axis number: 1.2k, 3M."""
    for unit, div in (("M", 1e6), ("k", 1e3)):
        if x >= div:
            return f"{x / div:g}{unit}"
    return f"{x:g}"
