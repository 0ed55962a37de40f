"""What goes into the state machine (events) and what comes out (effects, in a Decision). Data only."""

from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum

from engine.alerts import Alert
from engine.incident import Incident
from engine.policy.routing import Route
from engine.timeline import EntryKind


class Action(StrEnum):
    """What a notification asks of the channel; PagerDuty's event actions use the same words."""

    TRIGGER = "trigger"  # a page: first notification, escalation, repeat, re-trigger
    ACKNOWLEDGE = "acknowledge"
    RESOLVE = "resolve"
    UPDATE = "update"  # a status update, a reassignment notice, a reminder that an update is due


UPDATE_STATUSES = ("investigating", "identified", "monitoring", "resolved")  # the runbooks' words


# Events ---------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RoutedAlert:
    alert: Alert
    route: Route


@dataclass(frozen=True, slots=True)
class AlertsReceived:
    """Alerts of one webhook that share an incident key; `new_id` names the incident if one opens."""

    alerts: tuple[RoutedAlert, ...]
    key: str
    new_id: str
    title: str = ""  # an incident opened by hand: its title (else made from the alert)
    opened_by: str = ""  # ... and who reported it


@dataclass(frozen=True, slots=True)
class Acknowledge:
    by: str
    note: str = ""


@dataclass(frozen=True, slots=True)
class Unacknowledge:
    by: str
    note: str = ""


@dataclass(frozen=True, slots=True)
class Resolve:
    by: str
    note: str = ""


@dataclass(frozen=True, slots=True)
class Snooze:
    by: str
    duration_ms: int
    note: str = ""


@dataclass(frozen=True, slots=True)
class Escalate:
    by: str
    note: str = ""


@dataclass(frozen=True, slots=True)
class StatusUpdate:
    """The incident commander's update: one of UPDATE_STATUSES and what people should know."""

    by: str
    status: str
    message: str


@dataclass(frozen=True, slots=True)
class Reassign:
    """Hand the incident to another target (user:, schedule:, team:...): paged now, the old told."""

    by: str
    to: str
    note: str = ""


@dataclass(frozen=True, slots=True)
class TimerFired:
    due_ms: int


Event = (
    AlertsReceived
    | Acknowledge
    | Unacknowledge
    | Resolve
    | Snooze
    | Escalate
    | StatusUpdate
    | Reassign
    | TimerFired
)
MANUAL_ACTIONS: dict[str, Callable[[str, str], Event]] = {
    "ack": Acknowledge,
    "unack": Unacknowledge,
    "resolve": Resolve,
    "escalate": Escalate,
}


# Effects --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Notify:
    action: Action
    targets: tuple[str, ...]
    level: int
    note: str = ""  # an UPDATE that is not a status update says what it is ("Reassigned to ...")
    update: int = 0  # a status update's number (UPDATE #n): sent late, it still says what it said


@dataclass(frozen=True, slots=True)
class Note:
    """A timeline entry; the store stamps it with the decision's time."""

    kind: EntryKind
    text: str
    actor: str = "engine"


@dataclass(frozen=True, slots=True)
class SetTimer:
    due_ms: int


@dataclass(frozen=True, slots=True)
class CancelTimer:
    pass


Effect = Notify | Note | SetTimer | CancelTimer

# one webhook's alerts joining, resolving or firing again: named one by one up to this many per
# kind; past it, one entry says how many and names the first few (a fleet-wide outage's 2,000
# alerts made 2,000 timeline entries, each written with the commit and shown in the console)
ALERT_NOTES = 5
_DID = {
    EntryKind.ALERT_JOINED: "joined, firing",
    EntryKind.ALERT_RESOLVED: "resolved",
    EntryKind.ALERT_REFIRED: "firing again",
}


def alert_note(kind: EntryKind, name: str, fingerprint: str, actor: str) -> Note:
    return Note(kind, f"{name} ({fingerprint}) {_DID[kind]}", actor)


def coalesce_alert_notes(effects: list[Effect]) -> list[Effect]:
    """`effects` with the per-alert notes of each kind past ALERT_NOTES made one, where the first was."""
    per_kind: dict[EntryKind, list[Note]] = {}
    for e in effects:
        if isinstance(e, Note) and e.kind in _DID:
            per_kind.setdefault(e.kind, []).append(e)
    many = {kind: notes for kind, notes in per_kind.items() if len(notes) > ALERT_NOTES}
    if not many:
        return effects
    out: list[Effect] = []
    for e in effects:
        if not (isinstance(e, Note) and e.kind in many):
            out.append(e)
        elif e is many[e.kind][0]:
            notes, did = many[e.kind], _DID[e.kind]
            named = ", ".join(n.text.removesuffix(f" {did}") for n in notes[:3])
            out.append(Note(e.kind, f"{len(notes)} alerts {did}: {named} and {len(notes) - 3} more", e.actor))
    return out


@dataclass(slots=True)
class Decision:
    incident: Incident | None  # None: nothing exists and nothing was opened
    effects: list[Effect] = field(default_factory=list)
    changed: bool = False  # False: nothing to commit
    opened: bool = False  # a new incident (replaces the key's pointer)
    duplicates: int = 0  # alert occurrences already applied: counted by the store, never re-applied
