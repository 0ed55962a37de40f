"""A dry run of what some alerts would page: the real decide() on a virtual clock. Pure.

Routing and grouping are the processor's ingest's; every step is the state machine's own; each
target is resolved at the instant of its page, so a schedule hands off mid-incident as it would
live. Delivery itself (retries, failover, rate limits, outages) is not simulated: a page here
is what the engine decides and addresses, sent at once.
"""

from collections import defaultdict
from dataclasses import dataclass

from engine.alerts import Alert
from engine.escalation import decide, policy_of
from engine.events import (
    Acknowledge,
    Action,
    AlertsReceived,
    Decision,
    Event,
    Note,
    Notify,
    Resolve,
    RoutedAlert,
    TimerFired,
)
from engine.incident import Incident
from engine.policy.channels import CHANNELS, configured
from engine.policy.models import PolicySet
from engine.policy.routing import incident_key, route
from engine.policy.targets import reachable, resolve_target
from engine.timeline import EntryKind

HORIZON_MS = 7 * 86_400_000
MAX_STEPS = 10_000  # decisions per incident: whatever the policy, the loop ends
ACTOR = "simulate"  # who acknowledges or resolves in a simulation
HELD = "held"  # a timeline kind: a page held back until a calendar opens (levels with `during`)
# why a decision pages again, said on its pages (a page after an ack needs its reason)
_REASONS = {EntryKind.ACK_TIMEOUT, EntryKind.UNSNOOZED, EntryKind.SEVERITY_RAISED, EntryKind.ESCALATED}


@dataclass(frozen=True, slots=True)
class Reach:
    """One address a target reaches at an instant; channel "" says it reaches nobody (see note)."""

    target: str
    user: str  # the person behind the address; "" for a channel target (pagerduty:, email:, ...)
    channel: str
    address: str
    note: str = ""  # nobody on call and the fallback paged, or why nobody is reached


@dataclass(frozen=True, slots=True)
class Page:
    """One notification the engine would send, to one address (or to nobody: channel "")."""

    offset_s: int  # from the trigger (the simulation's start)
    at_ms: int
    incident_key: str
    level: int  # 1-based ladder level (of a trigger or hold); 0: ack/resolve mirror, whole ladder held
    target: str
    user: str
    channel: str
    address: str
    action: str  # trigger, acknowledge, resolve; or "held" (a page held by a calendar)
    note: str = ""
    held_until_ms: int | None = None


def simulate(
    policies: PolicySet,
    alerts: list[Alert],
    start_ms: int,
    *,
    ack_at_ms: int | None = None,
    resolve_at_ms: int | None = None,
    horizon_ms: int = HORIZON_MS,
) -> list[Page]:
    """Every notification `alerts` cause when they arrive at `start_ms`, until `start_ms + horizon_ms`.

    `ack_at_ms` and `resolve_at_ms` are instants (not offsets) at which someone acknowledges or
    resolves every incident; at the same instant as a deadline, the person goes first.
    """
    manual: list[tuple[int, Event]] = []
    if ack_at_ms is not None:
        manual.append((max(ack_at_ms, start_ms), Acknowledge(ACTOR)))
    if resolve_at_ms is not None:
        manual.append((max(resolve_at_ms, start_ms), Resolve(ACTOR)))
    manual.sort(key=lambda m: m[0])  # stable: an ack and a resolve at one instant, ack first
    pages: list[Page] = []
    for n, (key, routed) in enumerate(incidents_of(policies, alerts).items(), 1):
        first = AlertsReceived(tuple(routed), key, f"simulated-{n}")
        pages += _run(policies, first, start_ms, list(manual), start_ms + horizon_ms)
    return sorted(pages, key=lambda p: p.at_ms)  # stable: each incident's order at one instant kept


def incidents_of(policies: PolicySet, alerts: list[Alert]) -> dict[str, list[RoutedAlert]]:
    """Alerts by incident key, as ingest groups them; heartbeat routes open no incident."""
    by_key: dict[str, list[RoutedAlert]] = defaultdict(list)
    for alert in alerts:
        for r in route(policies, alert.labels):
            if r.heartbeat_ms is None:
                by_key[incident_key(r, alert)].append(RoutedAlert(alert, r))
    return dict(by_key)


def deliverable(policies: PolicySet) -> frozenset[str]:
    """Channel kinds the engine would send on: configured, and with a notifier in this release."""
    return frozenset(k for k in configured(policies.channels) if CHANNELS[k].notifier is not None)


def reach(target: str, policies: PolicySet, at_ms: int) -> list[Reach]:
    """Who and where `target` reaches at `at_ms`, filtered to deliverable channels as delivery does."""
    channels = deliverable(policies)
    found = resolve_target(target, policies, at_ms)
    if not found.people:  # a channel target, or nobody (no such user, empty slot without fallback)
        sends = reachable(target, found.addresses, channels)
        if not sends:
            return [Reach(target, "", "", "", found.why_empty or found.note or _no_channel(target))]
        return [Reach(target, "", a.channel, a.name, found.note) for a in sends]
    out: list[Reach] = []
    for person in found.people:  # per person, so each address says whose it is
        own = resolve_target(f"user:{person}", policies, at_ms)
        sends = reachable(f"user:{person}", own.addresses, channels)
        out += [Reach(target, person, a.channel, a.name, found.note) for a in sends]
        if not sends:
            why = own.why_empty or _no_channel(f"user:{person}")
            out.append(Reach(target, person, "", "", f"{found.note}; {why}" if found.note else why))
    return out


def _no_channel(target: str) -> str:
    return f"{target}: no contact method on a channel this engine delivers to"


def _run(
    policies: PolicySet, first: AlertsReceived, start: int, manual: list[tuple[int, Event]], end: int
) -> list[Page]:
    d = decide(None, first, start, policies)
    pages = _pages(None, d, first.key, start, start, policies)
    inc = d.incident
    for _ in range(MAX_STEPS):
        if inc is None or not inc.is_open:
            break
        step = _next_event(inc, manual, end)
        if step is None:
            break
        now, event = step
        d = decide(inc, event, now, policies)
        pages += _pages(inc, d, first.key, start, now, policies)
        inc = d.incident
    return pages


def _next_event(inc: Incident, manual: list[tuple[int, Event]], end: int) -> tuple[int, Event] | None:
    """Jump the clock to whichever comes first: a person's action or the incident's timer."""
    timer = inc.timer_ms
    if manual and manual[0][0] <= end and (timer is None or manual[0][0] <= timer):
        return manual.pop(0)
    if timer is not None and timer <= end:
        return timer, TimerFired(timer)
    return None


def _pages(
    before: Incident | None, d: Decision, key: str, start: int, now: int, policies: PolicySet
) -> list[Page]:
    out: list[Page] = []
    offset_s = (now - start) // 1000
    why = "; ".join(e.text for e in d.effects if isinstance(e, Note) and e.kind in _REASONS)
    holds = _new_holds(before, d.incident, policies)
    for e in d.effects:
        if isinstance(e, Notify):
            level = e.level + 1 if e.action is Action.TRIGGER else 0
            for target in e.targets:
                for r in reach(target, policies, now):
                    note = "; ".join(n for n in (why if level else "", r.note) if n)
                    page = (target, r.user, r.channel, r.address, e.action.value, note)
                    out.append(Page(offset_s, now, key, level, *page))
        elif isinstance(e, Note) and e.kind.value == HELD and d.incident is not None:
            # a level held by its calendar, in the order held; else the whole ladder waits (anchor)
            level, until = holds.pop(0) if holds else (0, d.incident.anchor_ms)
            out.append(Page(offset_s, now, key, level, "", "", "", "", HELD, e.text, until))
    return out


def _new_holds(before: Incident | None, after: Incident | None, policies: PolicySet) -> list[tuple[int, int]]:
    """(1-based level, release ms) of the pages this decision held back, in the order it held them."""
    if after is None:
        return []
    levels = len(policy_of(after, policies).levels)
    old = before.held if before is not None else []
    return [(step % levels + 1, release) for release, step in after.held if [release, step] not in old]
