"""The post-incident review, pre-filled from an incident and its timeline. Pure: no I/O, no clock.

The layout is the runbooks' review template (summary, timeline, root cause with five whys, what
went well, what could be improved, action items), with the engine's own facts filled in. Every
string that came from outside (labels, annotations, notes, names) is escaped: a `|` cannot break
a table, a newline cannot start a heading, and `<script>` stays text.

engine/reports.py builds on the helpers here (this module does not import it).
"""

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from engine.incident import Incident
from engine.policy.models import PEOPLE_KINDS, PolicySet, Severity
from engine.policy.targets import user_by_contact
from engine.timeline import EntryKind, TimelineEntry, in_time_order
from engine.times import utc

LONG_P2_MS = 4 * 3_600_000  # the runbooks: a review for "P2 incidents lasting > 4 hours"
MAX_TIMELINE_ROWS = 1000  # a storm of deliveries must not make the review unreadable
_MD_SPECIAL = re.compile(r"([\\`*\[\]|])")  # `_` and `#` are harmless mid-line
_NEWLINES = re.compile(r"\r\n|\r|\n")
# "trigger to email:alice@example.com (user:alice) delivered" (engine/delivery/worker.py)
_DELIVERY = re.compile(r"^(\w+) to ([a-z]+):(.*) \(([^()]*)\) delivered$", re.DOTALL)


# ---- text ---------------------------------------------------------------------------------------


def md(text: object) -> str:
    """Outside text as inline Markdown: HTML and Markdown markup escaped, one line."""
    s = str(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    s = _MD_SPECIAL.sub(r"\\\1", s)
    return _NEWLINES.sub("<br>", s.strip())


def cell(text: object) -> str:
    """A table cell: as md(), never empty (an empty cell is fine, but a dash reads better)."""
    return md(text) or "—"


def row(*cells: object) -> str:
    return "| " + " | ".join(cell(c) for c in cells) + " |"


def when(ms: int | None) -> str:
    """UTC wall time for people: 2027-03-29 06:59:12 UTC."""
    return "—" if ms is None else utc(ms).strftime("%Y-%m-%d %H:%M:%S UTC")


def human(ms: int) -> str:
    """A duration for people: 1d 2h 3m 4s (whole seconds; 0s)."""
    s = max(0, ms) // 1000
    parts = []
    for unit, size in (("d", 86_400), ("h", 3_600), ("m", 60), ("s", 1)):
        n, s = divmod(s, size)
        if n:
            parts.append(f"{n}{unit}")
    return " ".join(parts) or "0s"


# ---- facts shared with the reports ----------------------------------------------------------------


def common_label(inc: Incident, name: str) -> str | None:
    values = {a.labels.get(name) for a in inc.alerts.values()}
    return values.pop() if len(values) == 1 and None not in values else None


def service_of(inc: Incident) -> str:
    """The `service` label its alerts share, else their common `job`, else "unknown"."""
    return common_label(inc, "service") or common_label(inc, "job") or "unknown"


def alert_service(labels: Mapping[str, str]) -> str:
    return labels.get("service") or labels.get("job") or "unknown"


def first_response_ms(inc: Incident) -> int | None:
    """When someone (or the alert clearing) first answered: the acknowledgement, else the resolution."""
    return inc.answered_ms if inc.answered_ms is not None else inc.resolved_ms


@dataclass(frozen=True, slots=True)
class TargetCheck:
    target_ms: int | None  # the severity's ack_within; None: no target
    outcome: str  # "met", "missed", "pending" (open, within target) or "none" (no target)
    margin_ms: int  # how far inside (met/pending) or over (missed) the target


def ack_target(inc: Incident, severities: Mapping[str, Severity], now_ms: int) -> TargetCheck:
    """The first response against the severity's ack_within; unanswered past it is already missed."""
    sev = severities.get(inc.severity)
    target = sev.ack_within if sev is not None else None
    if target is None:
        return TargetCheck(None, "none", 0)
    answered = first_response_ms(inc)
    took = (answered if answered is not None else now_ms) - inc.created_ms
    if took > target:
        return TargetCheck(target, "missed", took - target)
    return TargetCheck(target, "met" if answered is not None else "pending", target - took)


def review_due(
    incident: Incident, severities: Mapping[str, Severity], now_ms: int | None = None
) -> str | None:
    """Why the runbooks want a post-incident review of `incident`, or None.

    Every incident of the two highest severities (P0, P1); one of the third (P2) that lasted over
    4 hours (until resolved; until `now_ms` while open, when given). Names are the policies' own.
    """
    names = list(severities)
    if incident.severity not in names:
        return None
    rank = names.index(incident.severity)
    if rank <= 1:
        top = " and ".join(names[:2])
        return f"{incident.severity} incident: every {top} incident gets a post-incident review"
    end = incident.resolved_ms if incident.resolved_ms is not None else now_ms
    if rank == 2 and end is not None and end - incident.created_ms > LONG_P2_MS:
        how = "lasted" if incident.resolved_ms is not None else "has lasted"
        return (
            f"{incident.severity} incident that {how} {human(end - incident.created_ms)}, over 4 hours: "
            f"{incident.severity} incidents lasting over 4 hours get a post-incident review"
        )
    return None


@dataclass(frozen=True, slots=True)
class Delivery:
    at_ms: int
    action: str  # trigger, acknowledge, resolve, update
    channel: str
    address: str
    target: str  # the policy target it was sent for (user:alice, schedule:primary, slack:#ops)
    person: str  # the user reached ("" when the target is a channel, not a person)


def deliveries(timeline: Iterable[TimelineEntry], policies: PolicySet) -> list[Delivery]:
    """The `delivered` entries, parsed; the person from a user: target, else from their contact."""
    out = []
    for e in timeline:
        m = _DELIVERY.match(e.text) if e.kind is EntryKind.DELIVERED else None
        if m is None:
            continue
        action, channel, address, target = m.groups()
        kind, _, name = target.partition(":")
        person = ""
        if kind == "user":
            person = name
        elif kind in PEOPLE_KINDS:
            person = user_by_contact(policies, channel, address) or ""
        out.append(Delivery(e.at_ms, action, channel, address, target, person))
    return out


# ---- the review -----------------------------------------------------------------------------------


def postmortem(incident: Incident, timeline: list[TimelineEntry], policies: PolicySet, now_ms: int) -> str:
    """The review in Markdown: facts from the incident and its timeline, prompts for the rest."""
    inc = incident
    entries = in_time_order(timeline)
    why = review_due(inc, policies.severities, now_ms)
    lines = [
        f"# Post-incident review: {md(inc.title)}",
        "",
        f"_Pre-filled by escalation-engine from incident {md(inc.id)} and its timeline on {when(now_ms)}. "
        "Facts come from the engine; the sections from **Root cause analysis** on are for the people "
        "involved to write. Blameless: focus on systems and processes, not individuals._",
        "",
        f"**Review required:** yes — {md(why)}."
        if why
        else "**Review required:** not by the runbooks' rules (every P0 and P1; P2 lasting over 4 hours); "
        "hold one anyway if customers saw the impact or it revealed a systemic issue.",
        "",
        "_Schedule the review within 3 business days and complete this document within 5._",
        "",
    ]
    lines += _summary(inc, policies, now_ms)
    lines += _metrics(inc, entries, policies, now_ms)
    lines += _timeline(entries)
    lines += _people(inc, entries, policies)
    lines += _updates(inc)
    lines += _written_by_people(inc, entries, policies, now_ms)
    return "\n".join(lines) + "\n"


def _summary(inc: Incident, policies: PolicySet, now_ms: int) -> list[str]:
    sev = policies.severities.get(inc.severity)
    severity = md(inc.severity) + (f" — {md(sev.description)}" if sev and sev.description else "")
    end = inc.resolved_ms
    duration = human((end if end is not None else now_ms) - inc.created_ms)
    alerts = list(inc.alerts.values())
    firing = sum(1 for a in alerts if a.status.value == "firing")
    lines = [
        "## Incident summary",
        "",
        f"- **Incident:** {md(inc.id)} ({md(inc.status.value)})",
        f"- **Start:** {when(inc.created_ms)}",
        f"- **End:** {when(end)}" if end is not None else f"- **End:** still open on {when(now_ms)}",
        f"- **Duration:** {duration}" + ("" if end is not None else " so far"),
        f"- **Severity:** {severity}",
    ]
    impacts = _distinct(a.annotations.get("impact", "") for a in alerts)
    lines.append("- **Impact:** " + ("; ".join(md(t) for t in impacts) if impacts else "_(describe it)_"))
    for label, key in (("Summary", "summary"), ("Description", "description")):
        texts = _distinct(a.annotations.get(key, "") for a in alerts)
        if texts:
            lines.append(f"- **{label}:** " + "; ".join(md(t) for t in texts))
    if inc.updates:
        last = inc.updates[-1]
        lines.append(
            f"- **Last status update:** #{md(last.get('n', ''))} ({md(last.get('status', ''))}) "
            f"{md(last.get('text', ''))}"
        )
    services = _distinct(alert_service(a.labels) for a in alerts)
    lines.append(f"- **Services:** {', '.join(md(s) for s in services) or 'unknown'}")
    common = _common_labels(inc)
    if common:
        lines.append("- **Labels:** " + ", ".join(f"{md(k)}={md(v)}" for k, v in common))
    names = _distinct(a.labels.get("alertname", "") for a in alerts)
    summary = f"- **Alerts:** {len(alerts)} (firing: {firing}, resolved: {len(alerts) - firing})"
    lines.append(summary + (": " + ", ".join(md(n) for n in names) if names else ""))
    runbooks = _distinct(a.annotations.get("runbook_url", "") for a in alerts)
    if runbooks:
        lines.append("- **Runbook:** " + ", ".join(md(r) for r in runbooks))
    opener = f"{md(inc.opened_by)}, by hand" if inc.opened_by else "Alertmanager"
    lines += [
        f"- **Opened by:** {opener} (rule {md(inc.rule)}, escalation policy {md(inc.policy)})",
        "",
    ]
    return lines


def _metrics(inc: Incident, entries: list[TimelineEntry], policies: PolicySet, now_ms: int) -> list[str]:
    check = ack_target(inc, policies.severities, now_ms)
    target = (
        f"{human(check.target_ms)} ({inc.severity} ack_within)" if check.target_ms is not None else "none"
    )
    result = {
        "met": f"met, {human(check.margin_ms)} to spare",
        "missed": f"missed by {human(check.margin_ms)}",
        "pending": f"open, {human(check.margin_ms)} left",
        "none": "no target set",
    }[check.outcome]
    if inc.answered_ms is not None:
        tta = f"{human(inc.answered_ms - inc.created_ms)} (by {inc.first_acked_by or inc.acked_by or '?'})"
    elif inc.resolved_ms is not None:
        tta = f"never acknowledged; resolved after {human(inc.resolved_ms - inc.created_ms)}"
    else:
        tta = f"not acknowledged after {human(now_ms - inc.created_ms)}"
    ttr = (
        f"{human(inc.resolved_ms - inc.created_ms)} ({_resolver(inc.resolved_by)})"
        if inc.resolved_ms is not None
        else f"not resolved after {human(now_ms - inc.created_ms)}"
    )
    rounds = sum(1 for e in entries if e.kind is EntryKind.PAGED)
    escalations = [e for e in entries if e.kind is EntryKind.ESCALATED]
    return [
        "## Response metrics",
        "",
        "| Metric | Value | Target | Result |",
        "|---|---|---|---|",
        row("Time to acknowledge", tta, target, result),
        row("Time to resolve", ttr, "—", "—"),
        row("Ladder steps paged", rounds, "—", "—"),
        row("Escalated by hand", len(escalations), "—", "—"),
        "",
    ]


def _timeline(entries: list[TimelineEntry]) -> list[str]:
    lines = ["## Timeline", "", "| Time (UTC) | Actor | Event |", "|---|---|---|"]
    for e in entries[:MAX_TIMELINE_ROWS]:
        lines.append(row(utc(e.at_ms).strftime("%Y-%m-%d %H:%M:%S"), e.actor, f"{e.kind.value}: {e.text}"))
    if len(entries) > MAX_TIMELINE_ROWS:
        lines.append(row("…", "", f"{len(entries) - MAX_TIMELINE_ROWS} more entries: see the incident's API"))
    lines += [
        "",
        "_Add what the engine cannot know: when the incident commander took over, when the root cause "
        "was identified, when the fix was deployed, when service was restored._",
        "",
    ]
    return lines


def _people(inc: Incident, entries: list[TimelineEntry], policies: PolicySet) -> list[str]:
    lines = ["## Who was paged and who responded", ""]
    lines.append("- **Targets paged:** " + (", ".join(md(t) for t in inc.paged) or "nobody"))
    sent: dict[tuple[str, str], list[int]] = {}
    for d in deliveries(entries, policies):
        if d.action == "trigger":
            sent.setdefault((d.person or d.target, f"{d.channel}:{d.address}"), []).append(d.at_ms)
    failed = sum(1 for e in entries if e.kind is EntryKind.DELIVERY_FAILED)
    if sent:
        lines += ["", "| Reached | Via | Pages delivered | First (UTC) |", "|---|---|---|---|"]
        for (who, via), times in sorted(sent.items(), key=lambda kv: (min(kv[1]), kv[0])):
            lines.append(row(who, via, len(times), when(min(times))))
        lines.append("")
    else:
        lines.append("- **Pages delivered:** none recorded")
    if failed:
        lines.append(f"- **Deliveries that failed for good:** {failed} (see the timeline)")
    responders = [
        (e.kind.value.replace("_", " "), e.actor, e.at_ms)
        for e in entries
        if e.kind
        in (EntryKind.ACKNOWLEDGED, EntryKind.RESOLVED, EntryKind.STATUS_UPDATE, EntryKind.REASSIGNED)
        or (e.kind is EntryKind.ESCALATED and e.actor != "engine")
    ]
    lines.append("- **Responded:**" + ("" if responders else " nobody"))
    lines += [f"  - {what} by {md(who)} at {when(at)}" for what, who, at in responders]
    return [*lines, ""]


def _updates(inc: Incident) -> list[str]:
    lines = ["## Status updates", ""]
    if not inc.updates:
        return [*lines, "_None were posted._", ""]
    lines += ["| # | Time (UTC) | Status | By | Message |", "|---|---|---|---|---|"]
    for i, u in enumerate(inc.updates, 1):
        at = u.get("at_ms")
        lines.append(
            row(
                u.get("n", i),
                when(int(at)) if at is not None else "",
                u.get("status"),
                u.get("by"),
                u.get("text"),
            )
        )
    return [*lines, ""]


def _written_by_people(
    inc: Incident, entries: list[TimelineEntry], policies: PolicySet, now_ms: int
) -> list[str]:
    check = ack_target(inc, policies.severities, now_ms)
    well, improve = [], []
    if check.outcome == "met":
        well.append(
            f"- Answered within the {human(check.target_ms or 0)} target ({human(check.margin_ms)} to spare)"
        )
    elif check.outcome == "missed":
        improve.append(
            f"- The {human(check.target_ms or 0)} response target was missed by {human(check.margin_ms)}"
        )
    if inc.updates:
        well.append(f"- {len(inc.updates)} status update(s) kept people informed")
    if any(e.kind is EntryKind.UPDATE_DUE for e in entries):
        improve.append("- Status updates fell behind (the engine had to remind the incident commander)")
    if any(e.kind is EntryKind.DELIVERY_FAILED for e in entries):
        improve.append("- Some pages could not be delivered")
    if any(e.kind is EntryKind.NOBODY_ON_CALL for e in entries):
        improve.append("- A level of the escalation policy reached nobody")
    hint = "_Suggested from the timeline; keep, edit or delete:_"
    return [
        "## Root cause analysis",
        "",
        "**What happened:**",
        "",
        "_Describe the failure as the systems saw it: what broke, where, and how it was noticed._",
        "",
        "**Why it happened (five whys):**",
        "",
        *(f"{n}. Why {n}? →" for n in range(1, 5)),
        "5. Why 5? → (root cause)",
        "",
        "**Contributing factors:**",
        "",
        "-",
        "",
        "## What went well",
        "",
        *([hint, "", *well, ""] if well else []),
        "-",
        "",
        "## What could be improved",
        "",
        *([hint, "", *improve, ""] if improve else []),
        "-",
        "",
        "## Action items",
        "",
        "_One owner and a due date per item; track them to done._",
        "",
        "| Item | Owner | Due date | Status |",
        "|---|---|---|---|",
        *["|  |  |  |  |"] * 3,
        "",
        "## Review",
        "",
        "- **Review meeting:** _(date)_",
        "- **Reviewed by:** _(names)_",
        "- **Tracking ticket:** _(link)_",
    ]


def _resolver(by: str | None) -> str:
    return "all its alerts resolved" if by == "alertmanager" else f"by {by or '?'}"


def _distinct(values: Iterable[str]) -> list[str]:
    """Non-empty values, first-seen order, each once."""
    return [v for v in dict.fromkeys(v.strip() for v in values) if v]


def _common_labels(inc: Incident) -> list[tuple[str, str]]:
    alerts = list(inc.alerts.values())
    if not alerts:
        return []
    first = alerts[0].labels
    return sorted((k, v) for k, v in first.items() if all(a.labels.get(k) == v for a in alerts[1:]))
