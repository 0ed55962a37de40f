"""Which alert occurrences this process saw applied to an open incident: the duplicate fast path's hint.

Alertmanager re-sends every group each group_interval, and an HA pair sends it twice, so most
webhooks repeat what is held. A webhook whose alerts are all held here is first offered to
Store.count_repeats, which counts what truly repeats in one step (no read, no decide, no
rewrite). Only a hint: the store checks every repeat itself, and a wrong guess costs one round
trip, after which the occurrence is forgotten and decided in full.
"""

from collections import OrderedDict
from collections.abc import Sequence

from engine.events import RoutedAlert
from engine.incident import Incident

HELD_OCCURRENCES = 65_536  # hashes, about 8 MB at most (5 MB as a plain dict)


class Held:
    def __init__(self, limit: int = HELD_OCCURRENCES) -> None:
        self.limit = limit
        # insertion order = age. An OrderedDict, not a dict: dropping a dict's oldest key scans
        # past every key dropped before it since the last resize, ~20 µs at this size
        self._held: OrderedDict[int, None] = OrderedDict()

    @staticmethod
    def occurrences(key: str, routed: Sequence[RoutedAlert]) -> list[int]:
        return [hash((key, ra.alert.fingerprint, ra.alert.status, ra.alert.starts_at_ms)) for ra in routed]

    def all_held(self, occurrences: list[int]) -> bool:
        held = self._held
        return all(o in held for o in occurrences)

    def forget(self, occurrences: list[int]) -> None:
        for o in occurrences:
            self._held.pop(o, None)

    def saw(self, occurrences: list[int], routed: Sequence[RoutedAlert], inc: Incident | None) -> None:
        """After a decision: the alerts the open incident now holds as they were sent."""
        if inc is None or not inc.is_open:
            return
        held = self._held
        for o, ra in zip(occurrences, routed, strict=True):
            state = inc.alerts.get(ra.alert.fingerprint)
            if state is not None and state.status is ra.alert.status:
                held[o] = None
        while len(held) > self.limit:
            held.popitem(last=False)
