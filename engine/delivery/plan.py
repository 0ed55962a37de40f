"""What one outbox message becomes at send time: skipped, unreachable, or sends. Pure."""

from collections.abc import Collection
from dataclasses import dataclass

from engine.escalation import policy_of
from engine.events import Action
from engine.incident import Incident, Status
from engine.outbox import OutboxMessage
from engine.policy.channels import CHANNELS
from engine.policy.models import PolicySet
from engine.policy.targets import Address, reachable, resolve_target


@dataclass(frozen=True, slots=True)
class Plan:
    sends: tuple[Address, ...] = ()
    skipped: str = ""  # why the notification no longer applies ("" when it does)
    unreachable: str = ""  # why the target reached nobody ("" when it reached someone)
    note: str = ""  # for the timeline: nobody on call, so a fallback was paged
    later: tuple[tuple[int, Address], ...] = ()  # people's own later steps: (after_ms, to)


def plan(
    msg: OutboxMessage, inc: Incident, policies: PolicySet, channels: Collection[str], now_ms: int
) -> Plan:
    """Resolve `msg` against the incident as it is now, the policies in force now, and who is
    on call now (a page sent late goes to whoever is on call when it is sent)."""
    if why := stale(inc, msg.action, policies):
        return Plan(skipped=why)
    if msg.followup and inc.status is not Status.TRIGGERED:  # a person's later step: unacked only
        return Plan(skipped=f"incident is {inc.status} now")
    if msg.address is not None:  # a retry: only the address that failed
        return Plan(sends=(msg.address,))
    found = resolve_target(msg.target, policies, now_ms)
    sends = reachable(msg.target, found.addresses, channels)
    if msg.action is Action.UPDATE:  # an update goes where updates can be shown, not to PagerDuty
        sends = [a for a in sends if CHANNELS[a.channel].updates]
        if not sends:
            return Plan()
    if not sends and not found.later:
        return Plan(unreachable=found.why_empty or found.note or _no_channel(msg.target, found.addresses))
    later = tuple((after, a) for after, a in found.later if reachable(msg.target, [a], channels))
    return Plan(sends=tuple(sends), note=found.note, later=later)


def _no_channel(target: str, addresses: list[Address]) -> str:
    kinds = ", ".join(sorted({a.channel for a in addresses}))
    return f"{target}: no contact method on a configured channel (has {kinds})"


def stale(inc: Incident, action: Action, policies: PolicySet) -> str:
    """Why a decided notification no longer applies by the time it is sent ("" when it does)."""
    if action is Action.TRIGGER:
        if inc.status is Status.RESOLVED:
            return "already resolved"
        if inc.status is Status.SNOOZED:
            return "snoozed"
        if inc.status is Status.ACKNOWLEDGED and policy_of(inc, policies).until == "acknowledged":
            return "already acknowledged"
    if action is Action.ACKNOWLEDGE and inc.status is not Status.ACKNOWLEDGED:
        return f"incident is {inc.status} now"
    if action is Action.UPDATE and inc.status is Status.RESOLVED:
        return "already resolved"
    return ""
