"""Which notifications ride a queue's urgent lane, and that the commit script can tell them apart."""

from hypothesis import given
from hypothesis import strategies as st

from engine.events import Action
from engine.outbox import OutboxMessage, urgent
from engine.policy.targets import Address

SHIPPED = 4  # P0-P3


def test_p0_and_p1_go_first_whatever_the_notification() -> None:
    for rank in (0, 1):
        for action in Action:
            assert urgent(action, 0, rank, SHIPPED), (rank, action)


def test_p2_and_p3_go_first_only_for_an_escalation() -> None:
    for rank in (2, 3):
        assert not urgent(Action.TRIGGER, 0, rank, SHIPPED)  # the first page waits its turn
        assert urgent(Action.TRIGGER, 1, rank, SHIPPED)  # level 2: nobody answered level 1
        for action in (Action.ACKNOWLEDGE, Action.RESOLVE, Action.UPDATE):
            assert not urgent(action, 1, rank, SHIPPED)


def test_with_a_lone_severity_escalations_go_first() -> None:
    assert not urgent(Action.TRIGGER, 0, 0, 1)
    assert urgent(Action.TRIGGER, 1, 0, 1)


def test_an_undefined_severity_is_not_urgent_and_an_odd_count_leaves_the_middle_out() -> None:
    assert not urgent(Action.TRIGGER, 0, 4, SHIPPED)  # rank == count: no longer defined
    assert [urgent(Action.RESOLVE, 0, r, 3) for r in range(3)] == [True, False, False]


@given(st.sampled_from(Action), st.integers(0, 9), st.integers(0, 12), st.integers(1, 12))
def test_a_higher_severity_is_never_less_urgent(action: Action, level: int, rank: int, count: int) -> None:
    if urgent(action, level, rank, count):
        assert all(urgent(action, level, r, count) for r in range(rank))
    if action is Action.TRIGGER and level >= 1:
        assert urgent(action, level, rank, count)


@given(st.text(), st.text(), st.booleans(), st.sampled_from(Action))
def test_the_commit_script_finds_the_mark_only_on_urgent_messages(
    note: str, target: str, is_urgent: bool, action: Action
) -> None:
    """commit.lua picks the lane by looking for '"urgent":true' in the message's JSON: text a user
    wrote (a note, a target) can never forge or hide it, since JSON escapes its quotes."""
    for text in (note, '"urgent":true', '{"urgent":true}'):
        msg = OutboxMessage(
            "3-ab", action, target + text, 0, 5, Address("email", text), note=text, urgent=is_urgent
        )
        assert ('"urgent":true' in msg.to_json()) is is_urgent


def test_bulk_sends_leave_connections_of_a_channel_kind_for_urgent_ones() -> None:
    from engine.app import CHANNEL_CONNECTIONS  # the pool each channel kind's HTTP session has
    from engine.delivery.consumer import DeliveryConfig

    assert 0 < DeliveryConfig("c1").bulk_sends <= CHANNEL_CONNECTIONS - 10
