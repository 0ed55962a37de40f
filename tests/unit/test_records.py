"""Outbox messages and timeline entries: one JSON form each, compatible with the first release's."""

import itertools
import json

from hypothesis import given
from hypothesis import strategies as st

from engine.events import Action
from engine.outbox import OutboxMessage
from engine.policy.targets import Address
from engine.timeline import EntryKind, TimelineEntry, in_time_order

messages = st.builds(
    OutboxMessage,
    incident_id=st.text(min_size=1),
    action=st.sampled_from(Action),
    target=st.text(min_size=1),
    level=st.integers(0, 50),
    decided_ms=st.integers(0, 2**53),
    address=st.none() | st.builds(Address, st.sampled_from(["email", "pagerduty"]), st.text()),
    attempt=st.integers(0, 100),
    note=st.text(),
    urgent=st.booleans(),
)


@given(messages)
def test_an_outbox_message_survives_its_json(msg: OutboxMessage) -> None:
    assert OutboxMessage.from_json(msg.to_json()) == msg


def test_entries_written_by_the_first_release_still_parse() -> None:
    first = {"action": "trigger", "at_ms": 5, "incident_id": "3-ab", "level": 1, "target": "user:a"}
    retry = {**first, "channel": "email", "address": "a@x", "attempt": 2}
    assert OutboxMessage.from_json(json.dumps(first)) == OutboxMessage("3-ab", Action.TRIGGER, "user:a", 1, 5)
    again = OutboxMessage.from_json(json.dumps(retry))
    assert again.address == Address("email", "a@x") and again.attempt == 2
    assert json.loads(again.to_json()) == retry  # and are written the same way


def test_a_retry_narrows_to_one_address_and_counts_attempts() -> None:
    msg = OutboxMessage("3-ab", Action.TRIGGER, "user:a", 0, 5)
    retry = msg.retry(Address("email", "a@x")).retry(Address("email", "a@x"))
    assert (retry.address, retry.attempt, retry.decided_ms) == (Address("email", "a@x"), 2, 5)


def test_a_timeline_entry_survives_its_json() -> None:
    entry = TimelineEntry(1_700_000_000_123, EntryKind.DELIVERED, "email", "trigger to email:a@x delivered")
    assert TimelineEntry.from_json(entry.to_json()) == entry
    assert json.loads(entry.to_json())["kind"] == "delivered"


@given(st.lists(st.tuples(st.integers(0, 20), st.sampled_from(EntryKind)), max_size=30))
def test_time_order_sorts_by_time_and_keeps_write_order_for_equal_times(
    rows: list[tuple[int, EntryKind]],
) -> None:
    written = [TimelineEntry(at, kind, "engine", str(i)) for i, (at, kind) in enumerate(rows)]
    ordered = in_time_order(written)
    assert [e.at_ms for e in ordered] == sorted(e.at_ms for e in written)
    for a, b in itertools.pairwise(ordered):
        if a.at_ms == b.at_ms:
            assert int(a.text) < int(b.text)
