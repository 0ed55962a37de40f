"""People's workflow on an open incident: status updates, reassignment, update reminders. Pure.

decide() (escalation.py) calls these for the StatusUpdate and Reassign events and when a timer
fires; they change the incident and append effects, like the rest of the state machine.
"""

from engine.events import Action, Decision, Note, Notify, Reassign, StatusUpdate
from engine.incident import Incident, Status
from engine.policy.durations import format_duration_ms
from engine.policy.models import EscalationPolicy, PolicySet
from engine.timeline import EntryKind as K


def update_every_ms(inc: Incident, policies: PolicySet) -> int | None:
    sev = policies.severities.get(inc.severity)
    return sev.update_every if sev is not None else None


def reminding(inc: Incident) -> bool:
    """Status updates are due from the incident commander: once someone acknowledged (before,
    the ladder is still paging), until it is resolved."""
    return inc.status is Status.ACKNOWLEDGED and inc.update_due_ms is not None


def acknowledged(inc: Incident, now: int, policies: PolicySet) -> None:
    """Whoever acknowledges gets update_every from now for the first update, not from the page."""
    if every := update_every_ms(inc, policies):
        inc.update_due_ms = max(inc.update_due_ms or 0, now + every)


def level_now(inc: Incident, policy: EscalationPolicy) -> int:
    """The 0-based ladder level paged last (0 before any)."""
    return max(inc.step - 1, 0) % len(policy.levels)


def status_update(
    inc: Incident, d: Decision, ev: StatusUpdate, level: int, now: int, policies: PolicySet
) -> None:
    """UPDATE #n on the timeline and to everyone paged; the next one is due update_every from now."""
    n = len(inc.updates) + 1
    inc.updates.append({"n": n, "status": ev.status, "text": ev.message, "by": ev.by, "at_ms": now})
    d.effects.append(Note(K.STATUS_UPDATE, f"UPDATE #{n} ({ev.status}): {ev.message}", ev.by))
    every = update_every_ms(inc, policies)
    inc.update_due_ms = now + every if every else None
    if ev.status != "resolved" and inc.paged:  # "resolved" resolves: the resolution tells everyone
        d.effects.append(Notify(Action.UPDATE, tuple(inc.paged), level, update=n))


def reassign(inc: Incident, d: Decision, ev: Reassign, policy: EscalationPolicy, now: int) -> None:
    """The new target is paged and must acknowledge (the incident is triggered again, its ladder
    resuming from the current level's spacing); whoever had it is told."""
    level = level_now(inc, policy)
    before = [inc.assignee] if inc.assignee else list(inc.paged)
    told = tuple(t for t in before if t != ev.to)
    inc.assignee = ev.to
    inc.status = Status.TRIGGERED
    inc.acked_by = inc.acked_ms = inc.ack_deadline_ms = inc.snoozed_until_ms = None
    inc.step_limit = None
    if inc.step > 0:  # the new target gets the level's usual spacing from now before the next
        inc.anchor_ms = now - policy.step_offset_ms(inc.step - 1)
    text = f"Reassigned to {ev.to}" + (f" (was {', '.join(told)})" if told else "")
    d.effects.append(Note(K.REASSIGNED, f"{text}: {ev.note}" if ev.note else text, ev.by))
    d.effects.append(Notify(Action.TRIGGER, (ev.to,), level))
    if ev.to not in inc.paged:
        inc.paged.append(ev.to)
    if told:
        d.effects.append(Notify(Action.UPDATE, told, level, note=f"Reassigned to {ev.to} by {ev.by}"))


def commander(inc: Incident, policies: PolicySet) -> tuple[str, ...]:
    """Who is reminded: whoever acknowledged (when they are a known user), else the assignee,
    else everyone paged."""
    if inc.acked_by and inc.acked_by in policies.users:
        return (f"user:{inc.acked_by}",)
    if inc.assignee:
        return (inc.assignee,)
    return tuple(inc.paged)


def remind(inc: Incident, d: Decision, level: int, now: int, policies: PolicySet) -> None:
    """update_every passed without a status update: remind the commander; the next reminder follows."""
    if not reminding(inc) or inc.update_due_ms is None or inc.update_due_ms > now:
        return
    every = update_every_ms(inc, policies)
    last = inc.updates[-1]["at_ms"] if inc.updates else inc.created_ms
    since = format_duration_ms(max(0, now - int(last)))
    what = "last status update" if inc.updates else "opened"
    text = f"Status update due: {what} {since} ago"
    inc.update_due_ms = now + every if every else None
    targets = commander(inc, policies)
    d.effects.append(Note(K.UPDATE_DUE, f"{text}; reminding {', '.join(targets) or 'nobody'}"))
    if targets:
        d.effects.append(Notify(Action.UPDATE, targets, level, note=text))
