"""One small PNG per incident: actual spend against the expected band, the anomalous steps in red.

Drawn with matplotlib's Agg backend (no display, thread-safe when each chart owns its Figure), at
2× pixel density so it stays sharp on phones, and kept small (a few tens of kB) for mail size.
"""

from __future__ import annotations

import io
from collections.abc import Sequence

from spendwatch.notify.chat import plain_text
from spendwatch.notify.digest import format_money
from spendwatch.records import SeriesPoint

WIDTH_PX = 600
HEIGHT_PX = 200
_DPI = 100
_SCALE = 2
ACTUAL = "#1f2937"
EXPECTED = "#2563eb"
BAND = "#bfdbfe"
ANOMALY = "#dc2626"


def incident_chart(points: Sequence[SeriesPoint], currency: str, *, granularity: str = "daily") -> bytes | None:
    """PNG bytes, or ``None`` when there is nothing to draw."""
    if len(points) < 2:
        return None
    from matplotlib.dates import AutoDateLocator, ConciseDateFormatter, date2num
    from matplotlib.figure import Figure
    from matplotlib.ticker import FuncFormatter

    times = [float(date2num(p.at)) for p in points]  # type: ignore[no-untyped-call]
    figure = Figure(figsize=(WIDTH_PX / _DPI, HEIGHT_PX / _DPI), dpi=_DPI * _SCALE)
    axes = figure.add_axes((0.1, 0.14, 0.88, 0.72))
    axes.fill_between(
        times,
        [p.lower for p in points],
        [p.upper for p in points],
        color=BAND,
        alpha=0.7,
        linewidth=0,
        label="expected range",
    )
    axes.plot(times, [p.expected for p in points], color=EXPECTED, linewidth=1.2, linestyle="--", label="expected")
    axes.plot(times, [p.actual for p in points], color=ACTUAL, linewidth=1.6, label="actual")
    flagged = [p for p in points if p.is_anomaly]
    if flagged:
        step = (times[1] - times[0]) / 2
        flagged_at = [float(date2num(p.at)) for p in flagged]  # type: ignore[no-untyped-call]
        for at in flagged_at:
            axes.axvspan(at - step, at + step, color=ANOMALY, alpha=0.10, linewidth=0)
        axes.scatter(flagged_at, [p.actual for p in flagged], color=ANOMALY, s=16, zorder=5, label="anomaly")
    locator = AutoDateLocator(minticks=3, maxticks=7)  # type: ignore[no-untyped-call]
    axes.xaxis.set_major_locator(locator)
    axes.xaxis.set_major_formatter(ConciseDateFormatter(locator, show_offset=False))  # type: ignore[no-untyped-call]
    axes.yaxis.set_major_formatter(FuncFormatter(lambda value, _: tick_label(value, currency)))
    axes.set_ylim(bottom=min(0.0, *(p.lower for p in points)))
    axes.tick_params(labelsize=8, colors="#4b5563")
    for side in ("top", "right"):
        axes.spines[side].set_visible(False)
    for side in ("left", "bottom"):
        axes.spines[side].set_color("#d1d5db")
    axes.grid(axis="y", color="#e5e7eb", linewidth=0.6)
    # Above the plot, so it never hides the spike it is meant to explain.
    axes.legend(loc="lower left", bbox_to_anchor=(0.0, 1.01), fontsize=7, frameon=False, ncol=4, borderaxespad=0)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=_DPI * _SCALE, metadata={"Software": None})
    return _palette(buffer.getvalue())


def tick_label(value: float, currency: str) -> str:
    """A y-axis label: the amount in the currency, as text.

    The currency comes from the bill (FOCUS ``BillingCurrency``), so it is cut short, stripped of
    control characters, and every ``$`` is escaped: matplotlib reads ``$…$`` as math text, and a
    malformed one (``$\\frac{$``) would fail the chart and with it the digest.
    """
    text = format_money(value, plain_text(currency, 12)).replace(".00", "")
    return text.replace("$", "\\$")


def _palette(png: bytes) -> bytes:
    """Re-encode with a 64-colour palette: a third of the size, no visible loss on a flat chart."""
    from PIL import Image

    with Image.open(io.BytesIO(png)) as image:
        small = image.convert("RGB").quantize(colors=64, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
        out = io.BytesIO()
        small.save(out, format="PNG", optimize=True)
    return out.getvalue()
