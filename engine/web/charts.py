"""The reports' numbers and their charts: pure functions of an incidents list, SVG as text.

Charts are server-rendered SVG with presentation by CSS class (console.css), so they need no
JavaScript and pass the console's Content-Security-Policy. Every text in them is escaped.
"""

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from statistics import fmean

from markupsafe import Markup, escape

from engine.incident import Incident
from engine.times import utc

DAY_MS = 86_400_000
HEIGHT = 180
NICE_S = [60 * m for m in (1, 2, 5, 10, 15, 30)] + [3600 * h for h in (1, 2, 3, 6, 12, 24, 48, 96, 168)]
LEFT, RIGHT, TOP, BOTTOM = 44, 8, 12, 26  # plot margins


def fmt_duration(seconds: float | None) -> str:
    """A compact duration for people: 45s, 4m 30s, 2h 5m, 3d 4h; "-" for none."""
    if seconds is None:
        return "-"
    s = max(0, round(seconds))
    for unit, size, sub, subsize in (("d", 86400, "h", 3600), ("h", 3600, "m", 60), ("m", 60, "s", 1)):
        if s >= size:
            whole, rest = divmod(s, size)
            part = rest // subsize
            return f"{whole}{unit} {part}{sub}" if part else f"{whole}{unit}"
    return f"{s}s"


def in_window(incidents: Iterable[Incident], now_ms: int, days: int) -> list[Incident]:
    since = now_ms - days * DAY_MS
    return [i for i in incidents if since <= i.created_ms <= now_ms]


def per_day(incidents: Iterable[Incident], now_ms: int, days: int = 30) -> list[tuple[date, int]]:
    """Incidents opened per UTC day, oldest first; the last entry is today (so far)."""
    today = utc(now_ms).date()
    first = today - timedelta(days=days - 1)
    counts = {first + timedelta(days=n): 0 for n in range(days)}
    for inc in incidents:
        day = utc(inc.created_ms).date()
        if day in counts:
            counts[day] += 1
    return sorted(counts.items())


@dataclass(frozen=True, slots=True)
class SeverityStats:
    severity: str
    opened: int
    acked: int
    resolved: int
    mtta_s: float | None  # mean time to acknowledge of those acknowledged
    mttr_s: float | None  # mean time to resolve of those resolved
    target_s: float | None  # the severity's ack_within
    within_target: int | None  # acknowledged within ack_within (None: no target)


def severity_stats(
    incidents: Iterable[Incident], now_ms: int, targets_ms: Mapping[str, int | None], days: int = 30
) -> list[SeverityStats]:
    """Per severity (in `targets_ms` order, then any other seen), over incidents opened in the
    last `days` days."""
    window = in_window(incidents, now_ms, days)
    names = list(targets_ms) + sorted({i.severity for i in window} - set(targets_ms))
    out = []
    for name in names:
        mine = [i for i in window if i.severity == name]
        tta = [(i.answered_ms - i.created_ms) / 1000 for i in mine if i.answered_ms is not None]  # first ack
        ttr = [(i.resolved_ms - i.created_ms) / 1000 for i in mine if i.resolved_ms is not None]
        target_ms = targets_ms.get(name)
        target = target_ms / 1000 if target_ms else None
        out.append(
            SeverityStats(
                severity=name,
                opened=len(mine),
                acked=len(tta),
                resolved=len(ttr),
                mtta_s=fmean(tta) if tta else None,
                mttr_s=fmean(ttr) if ttr else None,
                target_s=target,
                within_target=sum(t <= target for t in tta) if target is not None else None,
            )
        )
    return out


def _nice_max(value: float) -> float:
    """The axis top: 1, 2 or 5 times a power of ten, at least `value`."""
    if value <= 0:
        return 1.0
    step = 1.0
    while step * 10 <= value:
        step *= 10
    while step > value:
        step /= 10
    for m in (1, 2, 5, 10):
        if m * step >= value:
            return m * step
    return 10 * step


def _nice_duration_max(seconds: float) -> float:
    """The axis top for durations: a round duration (1m, 5m, 15m, 1h, 6h, 1d...) at least `seconds`."""
    return next((n for n in NICE_S if n >= seconds), _nice_max(seconds / 86400) * 86400)


def _frame(title: str, top_label: str, body: list[str], width: int) -> Markup:
    plot_h = HEIGHT - TOP - BOTTOM
    parts = [
        f'<svg class="chart" viewBox="0 0 {width} {HEIGHT}" preserveAspectRatio="xMinYMin meet" '
        f'role="img" aria-label="{escape(title)}" xmlns="http://www.w3.org/2000/svg">',
        f"<title>{escape(title)}</title>",
        f'<line class="grid" x1="{LEFT}" y1="{TOP}" x2="{width - RIGHT}" y2="{TOP}"/>',
        f'<line class="axis" x1="{LEFT}" y1="{TOP + plot_h}" x2="{width - RIGHT}" y2="{TOP + plot_h}"/>',
        f'<text class="label" x="{LEFT - 4}" y="{TOP + 4}" text-anchor="end">{escape(top_label)}</text>',
        f'<text class="label" x="{LEFT - 4}" y="{TOP + plot_h}" text-anchor="end">0</text>',
        *body,
        "</svg>",
    ]
    return Markup("\n".join(parts))  # noqa: S704 - every interpolated text above is escaped


def per_day_svg(days: Sequence[tuple[date, int]], width: int = 1000) -> Markup:
    """Bars of incidents per day; the date under every 7th bar, counted back from today's."""
    plot_w, plot_h = width - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    top = _nice_max(max((n for _, n in days), default=0))
    slot = plot_w / max(len(days), 1)
    body = []
    for k, (day, n) in enumerate(days):
        h = plot_h * n / top
        x = LEFT + k * slot
        tip = f"{day.isoformat()}: {n} incident{'s' if n != 1 else ''}"
        body.append(
            f'<rect class="bar" x="{x + 1:.1f}" y="{TOP + plot_h - h:.1f}" width="{max(slot - 2, 1):.1f}" '
            f'height="{h:.1f}"><title>{escape(tip)}</title></rect>'
        )
        if (len(days) - 1 - k) % 7 == 0:
            body.append(
                f'<text class="label" x="{x + slot / 2:.1f}" y="{HEIGHT - 8}" text-anchor="middle">'
                f"{escape(day.strftime('%m-%d'))}</text>"
            )
    return _frame("Incidents opened per day (UTC), last 30 days", f"{top:g}", body, width)


def duration_svg(
    title: str,
    bars: Sequence[tuple[str, float | None, float | None]],
    css: Mapping[str, str],
    width: int = 600,
) -> Markup:
    """One bar per severity (a mean duration) and, where given, its target as a line across the
    bar's slot: the bar is marked `over` when it passes the target. `css`: severity -> class."""
    plot_w, plot_h = width - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    top = _nice_duration_max(max((v for _, a, b in bars for v in (a, b) if v is not None), default=0))
    slot = plot_w / max(len(bars), 1)
    bar_w = min(slot * 0.5, 80)
    body = []
    for k, (name, value, target) in enumerate(bars):
        cx = LEFT + k * slot + slot / 2
        if value is not None:
            h = plot_h * value / top
            over = " over" if target is not None and value > target else ""
            body.append(
                f'<rect class="bar {escape(css.get(name, ""))}{over}" x="{cx - bar_w / 2:.1f}" '
                f'y="{TOP + plot_h - h:.1f}" width="{bar_w:.1f}" height="{h:.1f}">'
                f"<title>{escape(f'{name}: {fmt_duration(value)}')}</title></rect>"
            )
            body.append(
                f'<text class="value" x="{cx:.1f}" y="{TOP + plot_h - h - 3:.1f}" text-anchor="middle">'
                f"{escape(fmt_duration(value))}</text>"
            )
        if target is not None:
            y = TOP + plot_h - plot_h * target / top
            body.append(
                f'<line class="target" x1="{cx - slot * 0.4:.1f}" y1="{y:.1f}" x2="{cx + slot * 0.4:.1f}" '
                f'y2="{y:.1f}"><title>{escape(f"{name} target: {fmt_duration(target)}")}</title></line>'
            )
        label = name if value is not None else f"{name} (none)"
        body.append(
            f'<text class="label" x="{cx:.1f}" y="{HEIGHT - 8}" text-anchor="middle">{escape(label)}</text>'
        )
    return _frame(title, fmt_duration(top), body, width)
