"""The console's dashboard: submissions per form per day, as a server-drawn chart.

The ledger's daily counts give submissions by form and UTC day
(`counts_by_form_and_day`); everything else here is pure: it turns those
counts into the geometry of a stacked bar chart that a Jinja template draws as
SVG (templates/console/_chart.html), escaping every label as it goes.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from .ledger import Ledger

DAY = 86400
DAYS = 30
# Told apart by people with the common colour-vision deficiencies (Okabe-Ito),
# then repeated: a legend and each bar's own <title> name the form anyway.
PALETTE = (
    "#0072b2",
    "#e69f00",
    "#009e73",
    "#cc79a7",
    "#56b4e9",
    "#d55e00",
    "#f0e442",
    "#000000",
)


def day_of(epoch: float) -> int:
    """Return the UTC day number (days since 1970-01-01) of a ledger time."""
    return math.floor(epoch / DAY)


def counts_by_form_and_day(
    days: int, *, ledger: Ledger, now: float
) -> dict[str, list[int]]:
    """Count submissions per form for each of the last `days` UTC days.

    Each list is oldest day first and ends with today (the day of `now`);
    forms without a submission in the window are absent. Read from the
    ledger's daily counts, which erasure and retention leave alone.
    """
    today = day_of(now)
    first = today - days + 1
    counts: dict[str, list[int]] = {}
    for form_id, day, count in ledger.daily_counts(first):
        index = day - first
        if 0 <= index < days:
            counts.setdefault(form_id, [0] * days)[index] += count
    return dict(sorted(counts.items()))


@dataclass(frozen=True)
class Bar:
    """One form's part of one day's stacked bar."""

    x: float
    y: float
    width: float
    height: float
    color: str
    form: str
    day: str
    count: int


@dataclass(frozen=True)
class Chart:
    """Everything the SVG template draws, already laid out."""

    width: int
    height: int
    left: int
    top: int
    bottom: int
    right: int
    bars: list[Bar]
    y_ticks: list[tuple[float, int]]
    x_labels: list[tuple[float, str]]
    legend: list[tuple[str, str, int]]
    days: list[str]
    rows: list[tuple[str, list[int], int]]
    totals: list[int]
    total: int


def nice_ceiling(value: int) -> int:
    """Round up to 1, 2 or 5 times a power of ten (at least 1) for the y axis."""
    if value <= 1:
        return 1
    power = 10 ** math.floor(math.log10(value))
    for step in (1, 2, 5, 10):
        if value <= step * power:
            return step * power
    return 10 * power  # pragma: no cover - the loop always returns


def build_chart(
    counts: Mapping[str, Sequence[int]],
    first_day: dt.date,
    days: int = DAYS,
    width: int = 960,
    height: int = 240,
) -> Chart:
    """Lay out a stacked bar per day, one colour per form, with axes and labels."""
    left, right, top, bottom = 36, 8, 10, 24
    plot_w, plot_h = width - left - right, height - top - bottom
    dates = [first_day + dt.timedelta(days=n) for n in range(days)]
    labels = [d.strftime("%b %d") for d in dates]
    totals = [sum(series[n] for series in counts.values()) for n in range(days)]
    scale_max = nice_ceiling(max(totals, default=0))
    slot = plot_w / days
    bar_w = round(slot * 0.72, 2)
    colors = {form: PALETTE[n % len(PALETTE)] for n, form in enumerate(counts)}
    bars = []
    for n in range(days):
        x = round(left + n * slot + (slot - bar_w) / 2, 2)
        base = 0
        for form, series in counts.items():
            count = series[n]
            if not count:
                continue
            y0 = top + plot_h - base * plot_h / scale_max
            h = count * plot_h / scale_max
            top_y = round(y0 - h, 2)
            bars.append(
                Bar(x, top_y, bar_w, round(h, 2), colors[form], form, labels[n], count)
            )
            base += count
    ticks = sorted({0, scale_max // 2, scale_max} if scale_max > 1 else {0, 1})
    y_ticks = [(round(top + plot_h - t * plot_h / scale_max, 2), t) for t in ticks]
    # A label every seventh day, counted back from today so today has one.
    x_labels = [
        (round(left + n * slot + slot / 2, 2), labels[n])
        for n in range(days - 1, -1, -7)
    ][::-1]
    rows = [(form, list(series), sum(series)) for form, series in counts.items()]
    legend = [(form, colors[form], total) for form, _, total in rows]
    return Chart(
        width=width,
        height=height,
        left=left,
        top=top,
        bottom=bottom,
        right=right,
        bars=bars,
        y_ticks=y_ticks,
        x_labels=x_labels,
        legend=legend,
        days=[d.isoformat() for d in dates],
        rows=rows,
        totals=totals,
        total=sum(totals),
    )


def first_day(now: float, days: int = DAYS) -> dt.date:
    """The first UTC date of a window of `days` ending today."""
    return dt.date(1970, 1, 1) + dt.timedelta(days=day_of(now) - days + 1)
