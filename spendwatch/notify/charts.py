"""One small PNG per incident: actual spend against the expected band, the anomalous steps in red.

Drawn with matplotlib's Agg backend (no display, thread-safe when each chart owns its Figure), at
2× pixel density so it stays sharp on phones, and kept small (a few tens of kB) for mail size.

Readable on a phone: the image is 480 px wide (CSS) with 11 pt text, so at a phone's ~360 px the text
is still ~11 px. Scaled to what the incident is about: the y axis fits the incident's own steps and
their expected band; a bigger, unrelated step elsewhere in the window (an $8k runaway beside the $30
blip the card is about) is clipped at the top and labelled with its value instead of flattening the
incident into the floor.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from datetime import datetime
from functools import lru_cache

from spendwatch.money import format_money
from spendwatch.notify.chat import plain_text
from spendwatch.store.records import SeriesPoint

WIDTH_PX = 480
HEIGHT_PX = 220
FONT_PT = 11
# A step more than this many times the incident's own top is "unrelated": clipped, labelled.
CLIP_FACTOR = 3.0
_DPI = 100
_SCALE = 2
ACTUAL = "#1f2937"
EXPECTED = "#2563eb"
BAND = "#bfdbfe"
ANOMALY = "#dc2626"


def incident_chart(
    points: Sequence[SeriesPoint],
    currency: str,
    *,
    granularity: str = "daily",
    window: tuple[datetime, datetime] | None = None,
) -> bytes | None:
    """PNG bytes, or ``None`` when there is nothing to draw. ``window``: the incident's first/last step.

    The same incident is drawn for the FinOps digest, its team's and each recipient's copy: charts
    are kept by their content (a few hundred milliseconds each to draw)."""
    if len(points) < 2:
        return None
    return _drawn(tuple(points), currency, granularity, window)


@lru_cache(maxsize=64)
def _drawn(
    points: tuple[SeriesPoint, ...], currency: str, granularity: str, window: tuple[datetime, datetime] | None
) -> bytes:
    from matplotlib.dates import HOURLY, AutoDateLocator, ConciseDateFormatter, date2num
    from matplotlib.figure import Figure
    from matplotlib.ticker import FuncFormatter, MaxNLocator

    times = [float(date2num(p.at)) for p in points]  # type: ignore[no-untyped-call]
    top = y_limit(points, window)
    figure = Figure(figsize=(WIDTH_PX / _DPI, HEIGHT_PX / _DPI), dpi=_DPI * _SCALE)
    axes = figure.add_axes((0.16, 0.15, 0.82, 0.70))
    clip = [min(v, top) for v in (p.upper for p in points)]
    band = axes.fill_between(times, [p.lower for p in points], clip, color=BAND, alpha=0.7, linewidth=0)
    [expected] = axes.plot(times, [min(p.expected, top) for p in points], color=EXPECTED, linewidth=1.4,
                           linestyle="--")  # fmt: skip
    axes.plot(times, [min(p.actual, top) for p in points], color=ACTUAL, linewidth=1.8, label="actual")
    flagged = [p for p in points if p.is_anomaly and _inside(p.at, window)]
    if flagged:
        step = (times[1] - times[0]) / 2
        flagged_at = [float(date2num(p.at)) for p in flagged]  # type: ignore[no-untyped-call]
        for at in flagged_at:
            axes.axvspan(at - step, at + step, color=ANOMALY, alpha=0.10, linewidth=0)
        axes.scatter(flagged_at, [min(p.actual, top) for p in flagged], color=ANOMALY, s=22, zorder=5,
                     label="anomaly")  # fmt: skip
    for at, point in zip(times, points, strict=True):
        if point.actual > top:
            # Off the scale: say how big rather than squash the incident to fit it.
            label = f"↑ {tick_label(point.actual, currency)}"
            axes.annotate(label, (at, top), fontsize=FONT_PT - 1, color="#6b7280", ha="center", va="top",
                          xytext=(0, -2), textcoords="offset points")  # fmt: skip
    locator = AutoDateLocator(minticks=3, maxticks=5)  # type: ignore[no-untyped-call]
    # Two to three days of hours fit no stock hourly step at five ticks (matplotlib warns, to the
    # user's terminal, and picks 12 h); a daily step in hours puts the ticks at midnight instead.
    locator.intervald[HOURLY] = [1, 2, 3, 4, 6, 12, 24]
    axes.xaxis.set_major_locator(locator)
    axes.xaxis.set_major_formatter(ConciseDateFormatter(locator, show_offset=False))  # type: ignore[no-untyped-call]
    axes.yaxis.set_major_locator(MaxNLocator(nbins=4))
    axes.yaxis.set_major_formatter(FuncFormatter(lambda value, _: tick_label(value, currency)))
    axes.set_ylim(bottom=min(0.0, *(p.lower for p in points)), top=top * 1.05)
    axes.tick_params(labelsize=FONT_PT, colors="#374151")
    for side in ("top", "right"):
        axes.spines[side].set_visible(False)
    for side in ("left", "bottom"):
        axes.spines[side].set_color("#d1d5db")
    axes.grid(axis="y", color="#e5e7eb", linewidth=0.6)
    # Above the plot, so it never hides the spike it is meant to explain.
    # The band and its line are one entry: three labels fit the width at a size a phone can read.
    handles, labels = axes.get_legend_handles_labels()
    axes.legend([(band, expected), *handles], ["expected (range)", *labels], loc="lower left",
                bbox_to_anchor=(0.0, 1.01), fontsize=FONT_PT - 1, frameon=False, ncol=3, borderaxespad=0,
                handlelength=1.6, columnspacing=1.2)  # fmt: skip
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=_DPI * _SCALE, metadata={"Software": None})
    return _palette(buffer.getvalue())


def _inside(at: datetime, window: tuple[datetime, datetime] | None) -> bool:
    return window is None or window[0] <= at <= window[1]


def y_limit(points: Sequence[SeriesPoint], window: tuple[datetime, datetime] | None) -> float:
    """The top of the y axis: everything in the incident's window and the expected band fit; a step
    outside the window more than ``CLIP_FACTOR`` × that is clipped."""
    own = [max(p.actual, p.upper, p.expected) for p in points if _inside(p.at, window)] or [0.0]
    band = [max(p.upper, p.expected) for p in points]
    base = max(*own, *band, 1e-9)
    everything = max(max(p.actual, p.upper) for p in points)
    return everything if everything <= CLIP_FACTOR * base else base * 1.15


def tick_label(value: float, currency: str) -> str:
    """A y-axis label: the amount in the currency, as text.

    The currency comes from the bill (FOCUS ``BillingCurrency``), so it is cut short, stripped of
    control characters, and every ``$`` is escaped: matplotlib reads ``$…$`` as math text, and a
    malformed one (``$\\frac{$``) would fail the chart and with it the digest.
    """
    text = format_money(value, plain_text(currency, 12), whole=True)
    return text.replace("$", "\\$")


def _palette(png: bytes) -> bytes:
    """Re-encode with a 64-colour palette: a third of the size, no visible loss on a flat chart."""
    from PIL import Image

    with Image.open(io.BytesIO(png)) as image:
        small = image.convert("RGB").quantize(colors=64, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
        out = io.BytesIO()
        small.save(out, format="PNG", optimize=True)
    return out.getvalue()
