"""The escalation state machine: decide(incident, event, now_ms, policies). Pure: no I/O, no clock."""

from engine.alerts import Alert, AlertStatus
from engine.events import (
    Acknowledge,
    Action,
    AlertsReceived,
    CancelTimer,
    Decision,
    Escalate,
    Event,
    Note,
    Notify,
    Reassign,
    Resolve,
    RoutedAlert,
    SetTimer,
    Snooze,
    StatusUpdate,
    TimerFired,
    Unacknowledge,
    alert_note,
    coalesce_alert_notes,
)
from engine.incident import AlertState, FiringKey, Incident, Status
from engine.policy.calendars import Calendar, next_open
from engine.policy.durations import format_duration_ms
from engine.policy.maintenance import window_for
from engine.policy.models import EscalationPolicy, PolicySet
from engine.policy.targets import resolve_target
from engine.timeline import EntryKind as K
from engine.times import epoch_ms, rfc3339, utc
from engine.workflow import (
    acknowledged,
    level_now,
    reassign,
    remind,
    reminding,
    status_update,
    update_every_ms,
)

ALERTMANAGER = "alertmanager"


def decide(incident: Incident | None, event: Event, now_ms: int, policies: PolicySet) -> Decision:
    if isinstance(event, AlertsReceived):
        return _alerts(incident, event, now_ms, policies)
    if incident is None or not incident.is_open:
        return Decision(incident)  # an event for a resolved incident changes nothing
    inc = incident.clone()
    d = Decision(inc, changed=True)
    policy = ladder_of(inc, policies, now_ms)
    old_timer = inc.timer_ms
    match event:
        case Acknowledge(by, note):
            if inc.status is Status.ACKNOWLEDGED:
                return Decision(incident)
            _acknowledge(inc, d, policy, by, note, now_ms)
            acknowledged(inc, now_ms, policies)
        case Unacknowledge(by, note):
            if inc.status is not Status.ACKNOWLEDGED:
                return Decision(incident)
            d.effects.append(Note(K.UNACKNOWLEDGED, _with_note("Acknowledgement withdrawn", note), by))
            _retrigger(inc, d, policy, now_ms)
        case Resolve(by, note):
            _resolve(inc, d, by, _with_note("Resolved", note), now_ms)
        case Snooze(by, duration_ms, note):
            inc.status = Status.SNOOZED
            inc.snoozed_until_ms = now_ms + duration_ms
            text = f"Snoozed for {format_duration_ms(duration_ms)}"
            d.effects.append(Note(K.SNOOZED, _with_note(text, note), by))
        case Escalate(by, note):
            d.effects.append(Note(K.ESCALATED, _with_note("Escalated by hand", note), by))
            _escalate_now(inc, d, policy, now_ms)
        case StatusUpdate():
            _status_update(inc, d, event, policy, now_ms, policies)
        case Reassign():
            reassign(inc, d, event, policy, now_ms)
        case TimerFired(due_ms):
            if inc.timer_ms != due_ms or now_ms < due_ms:
                return Decision(incident)  # stale or early: another replica or step handled it
            remind(inc, d, level_now(inc, policy), now_ms, policies)
            _on_timer(inc, d, policy, now_ms)
    _sync_timer(inc, d, policy, old_timer)
    return d


def policy_of(inc: Incident, policies: PolicySet) -> EscalationPolicy:
    """The incident's policy; if a reload removed it, the default policy keeps paging."""
    found = policies.escalation_policies.get(inc.policy)
    return found or policies.escalation_policies[policies.default.policy]


def ladder_of(inc: Incident, policies: PolicySet, now: int) -> EscalationPolicy:
    """The policy as this incident climbs it now: under a business-hours severity, every level
    without a calendar of its own keeps to the severity's (no page outside business hours); under
    on_empty: skip, the levels whose targets reach nobody now are known."""
    policy = policy_of(inc, policies)
    if policy.on_empty == "skip":
        policy = policy.model_copy()
        policy._empty = frozenset(
            i
            for i, level in enumerate(policy.levels)
            if not any(resolve_target(t, policies, now).addresses for t in level.notify)
        )
    severity = policies.severities.get(inc.severity)
    if severity is None or severity.calendar is None:
        return policy
    levels = []
    for level in policy.levels:
        if level.calendar is None:
            level = level.model_copy(update={"during": severity.business_hours_only})
            level._calendar = severity.calendar
        levels.append(level)
    shaped = policy.model_copy(update={"levels": levels})
    shaped._empty = policy._empty
    return shaped


def _with_note(text: str, note: str) -> str:
    return f"{text}: {note}" if note else text


def _acknowledge(inc: Incident, d: Decision, policy: EscalationPolicy, by: str, note: str, now: int) -> None:
    inc.status = Status.ACKNOWLEDGED
    inc.acked_by, inc.acked_ms = by, now
    if inc.first_acked_ms is None:  # time to acknowledge counts the first, whatever came after
        inc.first_acked_ms, inc.first_acked_by = now, by
    inc.snoozed_until_ms = None
    inc.ack_deadline_ms = now + policy.ack_timeout if policy.ack_timeout else None
    if policy.until == "resolved":
        # keep climbing to levels not paged yet, but never repeat pages to levels already paged
        levels = len(policy.levels)
        inc.step_limit = levels if inc.step < levels else inc.step
    else:
        inc.held = []  # someone is on it: pages waiting for business hours are moot
    d.effects.append(Note(K.ACKNOWLEDGED, _with_note(f"Acknowledged by {by}", note), by))
    if inc.paged:
        d.effects.append(Notify(Action.ACKNOWLEDGE, tuple(inc.paged), 0))


def _status_update(
    inc: Incident, d: Decision, ev: StatusUpdate, policy: EscalationPolicy, now: int, policies: PolicySet
) -> None:
    status_update(inc, d, ev, level_now(inc, policy), now, policies)
    if ev.status == "resolved":  # the runbooks' last update: "Resolved"
        _resolve(inc, d, ev.by, f"Resolved with UPDATE #{len(inc.updates)}", now)


def _resolve(inc: Incident, d: Decision, by: str, text: str, now: int) -> None:
    inc.status = Status.RESOLVED
    inc.resolved_by, inc.resolved_ms = by, now
    inc.ack_deadline_ms = inc.snoozed_until_ms = inc.update_due_ms = None
    inc.held = []
    d.effects.append(Note(K.RESOLVED, text, by))
    if inc.paged:
        d.effects.append(Notify(Action.RESOLVE, tuple(inc.paged), 0))


def _page_due(inc: Incident, d: Decision, policy: EscalationPolicy, now: int) -> None:
    """Page every ladder step whose absolute deadline has passed (several after downtime)."""
    limit = policy.step_count() if inc.step_limit is None else min(inc.step_limit, policy.step_count())
    due: list[int] = []
    levels = len(policy.levels)
    while inc.step < limit and inc.anchor_ms + policy.step_offset_ms(inc.step) <= now:
        due.append(inc.step)
        inc.step += 1
        empty = inc.step - 1
        if policy.reaches_nobody(empty % levels) and inc.step < limit:
            inc.anchor_ms = now - policy.step_offset_ms(inc.step)  # the next level is due now
            text = (
                f"Level {empty % levels + 1} reaches nobody now: moving on to level {inc.step % levels + 1}"
            )
            d.effects.append(Note(K.NOBODY_ON_CALL, text))
    levels = len(policy.levels)
    for step in due:
        if step + levels not in due:  # catching up: page each level once, not once per missed repeat
            _page_step(inc, d, policy, step, now)


def _release_held(inc: Incident, d: Decision, policy: EscalationPolicy, now: int) -> None:
    """Send the held pages whose calendar has opened (their level, as decided when held)."""
    due = sorted(h for h in inc.held if h[0] <= now)
    inc.held = [h for h in inc.held if h[0] > now]
    for _, step in due:
        if step < policy.step_count():  # a reload may have shortened the ladder
            _page_step(inc, d, policy, step, now)


def _opens_ms(calendar: Calendar, now: int) -> int:
    """When `calendar` is next open at or after `now` (now itself when open); far away if never."""
    found = next_open(calendar, utc(now))
    return now if found is None else max(now, epoch_ms(found))


def _page_step(inc: Incident, d: Decision, policy: EscalationPolicy, step: int, now: int) -> None:
    cycle, level = divmod(step, len(policy.levels))
    calendar = policy.levels[level].calendar
    if calendar is not None and (opens := _opens_ms(calendar, now)) > now:
        # outside its calendar: this level's pages wait; the ladder's own deadlines do not move
        inc.held.append([opens, step])
        where = f"level {level + 1}" + (f", repeat {cycle}" if cycle else "")
        text = f"Held {where} until {rfc3339(opens)}: outside calendar {policy.levels[level].during}"
        d.effects.append(Note(K.HELD, text))
        return
    targets = tuple(policy.levels[level].notify)
    where = f"level {level + 1}" + (f", repeat {cycle}" if cycle else "")
    d.effects.append(Note(K.PAGED, f"Paged {', '.join(targets)} ({where})"))
    d.effects.append(Notify(Action.TRIGGER, targets, level))
    for t in targets:
        if t not in inc.paged:
            inc.paged.append(t)


def _trigger_from(inc: Incident, d: Decision, policy: EscalationPolicy, step: int, now: int) -> None:
    """Back to triggered with `step` due now; later steps keep their spacing relative to it."""
    inc.status = Status.TRIGGERED
    inc.acked_by = inc.acked_ms = inc.ack_deadline_ms = inc.snoozed_until_ms = None
    inc.step, inc.anchor_ms, inc.step_limit = step, now - policy.step_offset_ms(step), None
    inc.held = []  # paging again from `step` supersedes what was waiting
    _page_due(inc, d, policy, now)


def _retrigger(inc: Incident, d: Decision, policy: EscalationPolicy, now: int) -> None:
    """Unack, ack timeout, snooze over: page the level last paged again, then climb from there."""
    _trigger_from(inc, d, policy, max(inc.step - 1, 0), now)


def _escalate_now(inc: Incident, d: Decision, policy: EscalationPolicy, now: int) -> None:
    if inc.step >= policy.step_count():
        d.effects.append(Note(K.ESCALATED, "No higher level: paging the last level again"))
    _trigger_from(inc, d, policy, min(inc.step, policy.step_count() - 1), now)


def _on_timer(inc: Incident, d: Decision, policy: EscalationPolicy, now: int) -> None:
    if inc.status is Status.SNOOZED and inc.snoozed_until_ms is not None and inc.snoozed_until_ms <= now:
        d.effects.append(Note(K.UNSNOOZED, "Snooze over: paging again"))
        _retrigger(inc, d, policy, now)
    elif inc.status is Status.ACKNOWLEDGED and inc.ack_deadline_ms is not None and inc.ack_deadline_ms <= now:
        d.effects.append(Note(K.ACK_TIMEOUT, "Acknowledged but not resolved in time: paging again"))
        _retrigger(inc, d, policy, now)
    elif inc.status is Status.TRIGGERED or (inc.status is Status.ACKNOWLEDGED and policy.until == "resolved"):
        _release_held(inc, d, policy, now)
        _page_due(inc, d, policy, now)


def next_timer(inc: Incident, policy: EscalationPolicy) -> int | None:
    """The earliest pending deadline: next ladder step, ack timeout or snooze end."""
    due: list[int] = []
    climbing = inc.status is Status.TRIGGERED or (
        inc.status is Status.ACKNOWLEDGED and policy.until == "resolved"
    )
    limit = policy.step_count() if inc.step_limit is None else min(inc.step_limit, policy.step_count())
    if climbing and inc.step < limit:
        due.append(inc.anchor_ms + policy.step_offset_ms(inc.step))
    if climbing and inc.held:
        due.append(min(release for release, _ in inc.held))
    if inc.status is Status.ACKNOWLEDGED and inc.ack_deadline_ms is not None:
        due.append(inc.ack_deadline_ms)
    if inc.status is Status.SNOOZED and inc.snoozed_until_ms is not None:
        due.append(inc.snoozed_until_ms)
    if reminding(inc) and inc.update_due_ms is not None:
        due.append(inc.update_due_ms)
    return min(due) if due else None


def _sync_timer(inc: Incident, d: Decision, policy: EscalationPolicy, old: int | None) -> None:
    inc.timer_ms = next_timer(inc, policy) if inc.is_open else None
    if inc.timer_ms != old:
        d.effects.append(SetTimer(inc.timer_ms) if inc.timer_ms is not None else CancelTimer())


# Alerts ---------------------------------------------------------------------------------------


def _alerts(incident: Incident | None, ev: AlertsReceived, now: int, policies: PolicySet) -> Decision:
    if incident is None or not incident.is_open:
        return _maybe_open(incident, ev, now, policies)
    inc = incident.clone()
    d = Decision(inc)
    old_severity, old_timer = inc.severity, inc.timer_ms
    for ra in ev.alerts:
        _apply_alert(inc, d, ra)
    d.effects = coalesce_alert_notes(d.effects)
    inc.duplicates += d.duplicates
    if not d.changed:
        # only repeats: nothing to rewrite; the store bumps the incident's counter by d.duplicates
        return Decision(inc, duplicates=d.duplicates)
    top = _top_alert(inc, policies)
    if top is not None and policies.severity_rank(top[0]) < policies.severity_rank(old_severity):
        d.effects.append(Note(K.SEVERITY_RAISED, f"Severity raised {old_severity} → {top[0]}", ALERTMANAGER))
        inc.severity, inc.policy, inc.rule = top
        _trigger_from(inc, d, ladder_of(inc, policies, now), 0, now)  # re-page from the first level
    if not inc.firing_count():
        _resolve(inc, d, ALERTMANAGER, "All alerts resolved", now)
    _sync_timer(inc, d, ladder_of(inc, policies, now), old_timer)
    return d


def _apply_alert(inc: Incident, d: Decision, ra: RoutedAlert) -> None:
    a = ra.alert
    known = inc.alerts.get(a.fingerprint)
    if known is not None and _is_duplicate(known, a):
        d.duplicates += 1  # HA pair, retry or repeat_interval; or a stale occurrence
        return
    name = a.labels.get("alertname", a.fingerprint)
    if a.status is AlertStatus.RESOLVED:
        if known is None or known.status is AlertStatus.FIRING:
            d.effects.append(alert_note(K.ALERT_RESOLVED, name, a.fingerprint, ALERTMANAGER))
    else:
        kind = K.ALERT_JOINED if known is None else K.ALERT_REFIRED
        d.effects.append(alert_note(kind, name, a.fingerprint, ALERTMANAGER))
    inc.set_alert(_alert_state(ra))
    d.changed = True


def _is_duplicate(known: AlertState, a: Alert) -> bool:
    """Already applied: an occurrence is (fingerprint, startsAt), and a status is applied once."""
    if a.status is AlertStatus.FIRING:
        # the same or an older occurrence (Alertmanager keeps the earliest startsAt when it merges)
        return a.starts_at_ms <= known.starts_at_ms
    if known.status is AlertStatus.RESOLVED:
        return True
    # a resolve applies unless it ended before the occurrence we hold began (an older one)
    return a.ends_at_ms is not None and a.ends_at_ms < known.starts_at_ms


def _alert_state(ra: RoutedAlert) -> AlertState:
    a, r = ra.alert, ra.route
    return AlertState(
        fingerprint=a.fingerprint,
        status=a.status,
        starts_at_ms=a.starts_at_ms,
        labels=dict(a.labels),
        annotations=dict(a.annotations),
        ends_at_ms=a.ends_at_ms,
        generator_url=a.generator_url,
        severity=r.severity,
        policy=r.policy,
        rule=r.rule,
    )


def _top_alert(inc: Incident, policies: PolicySet) -> FiringKey | None:
    """(severity, policy, rule) of the highest firing severity, from the aggregate: the alerts
    a webhook did not name are not read (on a tie, the one counted first)."""
    counts = inc.counts()
    return min(counts, key=lambda k: policies.severity_rank(k[0])) if counts else None


def _maybe_open(previous: Incident | None, ev: AlertsReceived, now: int, policies: PolicySet) -> Decision:
    """Open a new incident for firing alerts that are new occurrences (not repeats of a closed one)."""
    fresh: list[RoutedAlert] = []
    dups = 0
    for ra in ev.alerts:
        old = previous.alerts.get(ra.alert.fingerprint) if previous else None
        if ra.alert.status is not AlertStatus.FIRING:
            dups += 1
        elif old is not None and old.starts_at_ms >= ra.alert.starts_at_ms:
            dups += 1  # the same occurrence as the resolved incident had: not a re-fire
        else:
            fresh.append(ra)
    if not fresh:
        return Decision(previous, duplicates=dups)
    top = min(fresh, key=lambda ra: policies.severity_rank(ra.route.severity))
    inc = Incident(
        id=ev.new_id,
        key=ev.key,
        title=_title(top.alert),
        severity=top.route.severity,
        policy=top.route.policy,
        rule=top.route.rule,
        status=Status.TRIGGERED,
        created_ms=now,
        anchor_ms=now,
        group_key=top.alert.group_key,
        opened_by=ev.opened_by,
    )
    for ra in fresh:
        inc.set_alert(_alert_state(ra))
    if ev.title:
        inc.title = ev.title
    d = Decision(inc, changed=True, opened=True, duplicates=dups)
    sev = policies.severities[inc.severity]
    text = f"Opened as {inc.severity} ({sev.description})" if sev.description else f"Opened as {inc.severity}"
    how = f"by hand by {ev.opened_by}, " if ev.opened_by else "by "
    d.effects.append(
        Note(K.OPENED, f"{text} {how}rule {inc.rule}, policy {inc.policy}", ev.opened_by or ALERTMANAGER)
    )
    policy = ladder_of(inc, policies, now)
    if (window := window_for(policies.maintenance, top.alert.labels, now)) is not None:
        inc.step = policy.step_count()  # recorded, never paged
        d.effects.append(Note(K.MAINTENANCE, f"Opened during maintenance window {window.name}: not paging"))
        _sync_timer(inc, d, policy, None)
        return d
    if every := update_every_ms(inc, policies):  # not in maintenance: nobody works on those
        inc.update_due_ms = now + every
    if sev.calendar is not None and (opens := _opens_ms(sev.calendar, now)) > now:
        inc.anchor_ms = opens  # the whole ladder starts when business hours begin
        hours = sev.business_hours_only
        text = (
            f"{inc.severity} is handled during business hours ({hours}): paging held until {rfc3339(opens)}"
        )
        d.effects.append(Note(K.HELD, text))
    _page_due(inc, d, policy, now)
    _sync_timer(inc, d, policy, None)
    return d


def _title(a: Alert) -> str:
    name = a.labels.get("alertname", "alert")
    where = a.labels.get("service") or a.labels.get("job") or a.labels.get("instance") or ""
    summary = a.annotations.get("summary", "")
    head = f"{name} {where}".strip()
    return f"{head}: {summary}" if summary else head
