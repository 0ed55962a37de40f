"""The outbox message: one decided notification, written in the step that decided it. Pure."""

import dataclasses
from dataclasses import dataclass

import orjson

from engine.events import Action
from engine.policy.targets import Address


@dataclass(frozen=True, slots=True)
class OutboxMessage:
    """`action` about `incident_id` to everyone `target` reaches at send time.

    A retry narrows it to the one address that failed (`address`), with its attempt count, so
    the addresses that succeeded are not sent to again.
    """

    incident_id: str
    action: Action
    target: str  # the policy target, e.g. "user:sre-oncall" or "pagerduty:platform"
    level: int  # 0-based ladder level that caused a trigger (0 for ack/resolve)
    decided_ms: int  # when the engine decided it: retries of it share the value
    address: Address | None = None
    attempt: int = 0
    followup: bool = False  # a person's own later step: only while the incident is unacknowledged
    note: str = ""  # an UPDATE's own words (a reassignment, a reminder); "" for a status update
    update: int = 0  # a status update's number: what it says, even when sent after the next one
    paced: bool = False  # parked for a turn the rate limit reserved: sent when it comes back
    urgent: bool = False  # rides its queue's urgent lane, read before the rest (see `urgent`)

    def retry(self, address: Address) -> "OutboxMessage":
        """This message again, to the one address that failed, one attempt later."""
        return dataclasses.replace(self, address=address, attempt=self.attempt + 1, paced=False)

    def followup_to(self, address: Address) -> "OutboxMessage":
        """A person's own later step (their notification rules), to one address."""
        return dataclasses.replace(self, address=address, attempt=0, followup=True, paced=False)

    def to(self, address: Address) -> "OutboxMessage":
        """This message narrowed to one address, as its channel's queue carries it."""
        return dataclasses.replace(self, address=address, paced=False)

    def in_turn(self) -> "OutboxMessage":
        """This message parked until the turn the rate limit reserved for it: not asked again."""
        return dataclasses.replace(self, paced=True)

    def first_attempt(self) -> "OutboxMessage":
        """This message as a fresh delivery (a re-driven dead letter)."""
        return dataclasses.replace(self, attempt=0, paced=False)

    def again(self) -> "OutboxMessage":
        """This message again, one attempt later (after a failure that names no address)."""
        return dataclasses.replace(self, attempt=self.attempt + 1, paced=False)

    def to_json(self) -> str:
        # the keys of the first release, so entries pending across an upgrade still parse
        raw: dict[str, object] = {
            "incident_id": self.incident_id,
            "action": self.action.value,
            "target": self.target,
            "level": self.level,
            "at_ms": self.decided_ms,
        }
        if self.address is not None:
            raw |= {"channel": self.address.channel, "address": self.address.name}
            if self.address.person:
                raw["person"] = self.address.person
        if self.address is not None or self.attempt:
            raw["attempt"] = self.attempt
        if self.followup:
            raw["followup"] = True
        if self.note:
            raw["note"] = self.note
        if self.update:
            raw["update"] = self.update
        if self.paced:
            raw["paced"] = True
        if self.urgent:
            raw["urgent"] = True
        return orjson.dumps(raw, option=orjson.OPT_SORT_KEYS).decode()

    @classmethod
    def from_json(cls, text: str | bytes) -> "OutboxMessage":
        raw = orjson.loads(text)
        address = (
            Address(str(raw["channel"]), str(raw["address"]), str(raw.get("person", "")))
            if "channel" in raw
            else None
        )
        return cls(
            incident_id=str(raw["incident_id"]),
            action=Action(raw["action"]),
            target=str(raw["target"]),
            level=int(raw["level"]),
            decided_ms=int(raw.get("at_ms", 0)),
            address=address,
            attempt=int(raw.get("attempt", 0)),
            followup=bool(raw.get("followup", False)),
            note=str(raw.get("note", "")),
            update=int(raw.get("update", 0)),
            paced=bool(raw.get("paced", False)),
            urgent=bool(raw.get("urgent", False)),
        )


def urgent(action: Action, level: int, rank: int, severities: int) -> bool:
    """Whether a notification goes before the rest of its queue: everything about an incident
    whose severity ranks in the upper half (P0 and P1 of P0-P3: their first page, updates and
    resolution alike), and the page of an escalation (level 2 on: someone did not answer) at
    any severity. Under a storm of lesser alerts, these do not wait behind it; with a single
    severity, escalations go first. `rank` is 0 for the highest of `severities` (a severity no
    longer defined ranks below them all)."""
    return rank < severities // 2 or (action is Action.TRIGGER and level >= 1)
