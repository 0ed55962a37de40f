"""E-mail's kept SMTP sessions against real aiosmtpd servers: reused, expired, replaced when the
server dropped them, never reused after a failure, all closed by aclose()."""

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field, replace
from typing import Any

import pytest

from engine.errors import RetryableDeliveryError
from engine.notifiers import smtp_sessions
from engine.notifiers.email import EmailNotifier
from tests.unit.test_notifier_email import (
    MESSAGE,
    Handler,
    RawSmtp,
    StartServer,
    close_made,
    notifier,
    open_sockets_to,
    raw_smtp,
    smtp_server,
)

__all__ = ["close_made", "smtp_server"]  # the fixtures, shared with the notifier's tests


@dataclass
class Sessions(Handler):
    """Records the connection (client port) each mail came on; `refuse_second_mail` answers a
    session's second MAIL with 421, as a relay does that closes a connection it held idle."""

    refuse_second_mail: bool = False
    peers: list[Any] = field(default_factory=list)
    mails_by_peer: dict[Any, int] = field(default_factory=dict)

    async def handle_MAIL(
        self, server: Any, session: Any, envelope: Any, address: str, mail_options: list[str]
    ) -> str:
        seen = self.mails_by_peer[session.peer] = self.mails_by_peer.get(session.peer, 0) + 1
        if self.refuse_second_mail and seen == 2:
            return "421 4.4.2 closing idle connection"
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        reply = await super().handle_DATA(server, session, envelope)
        self.peers.append(session.peer)
        return reply


def started(
    smtp_server: StartServer, handler: Sessions, idle_sessions: int = smtp_sessions.MAX_IDLE, **server: Any
) -> tuple[Sessions, int, EmailNotifier]:
    """A server with `handler`, its port, and a notifier sending to it."""
    port = smtp_server(handler, **server).port
    return handler, port, notifier(port, idle_sessions=idle_sessions)


def to(n: int) -> Any:
    return replace(MESSAGE, address=f"oncall-{n}@example.com")


async def test_one_session_carries_mail_after_mail(smtp_server: StartServer) -> None:
    handler, port, sender = started(smtp_server, Sessions())

    for n in range(3):
        await sender.send(to(n))

    assert [e.rcpt_tos for e in handler.envelopes] == [[f"oncall-{n}@example.com"] for n in range(3)]
    assert len(set(handler.peers)) == 1  # one connection, one EHLO
    assert open_sockets_to(port) == 1


async def test_sends_at_once_each_get_a_session_and_only_some_are_kept(smtp_server: StartServer) -> None:
    handler, port, sender = started(smtp_server, Sessions(), idle_sessions=2)

    await asyncio.gather(*(sender.send(to(n)) for n in range(5)))
    assert len(set(handler.peers)) == 5
    for n in range(4):  # one after another: the two kept ones serve them all
        await sender.send(to(n))

    assert len(handler.envelopes) == 9 and len(set(handler.peers)) == 5
    await asyncio.sleep(0.1)  # the three not kept were QUIT in the background
    assert open_sockets_to(port) == 2


async def test_an_idle_session_is_quit_and_closed(
    smtp_server: StartServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(smtp_sessions, "IDLE_S", 0.2)
    handler, port, sender = started(smtp_server, Sessions())
    await sender.send(to(1))
    assert open_sockets_to(port) == 1

    await asyncio.sleep(0.5)

    assert open_sockets_to(port) == 0  # without another send or aclose()
    await sender.send(to(2))  # a new session
    assert len(set(handler.peers)) == 2


async def test_a_session_the_server_timed_out_is_replaced(smtp_server: StartServer) -> None:
    # aiosmtpd says 421 and closes a client idle for `timeout`
    handler, _, sender = started(smtp_server, Sessions(), timeout=0.2)
    await sender.send(to(1))

    await asyncio.sleep(0.5)
    await sender.send(to(2))

    assert [e.rcpt_tos for e in handler.envelopes] == [["oncall-1@example.com"], ["oncall-2@example.com"]]
    assert len(set(handler.peers)) == 2


async def test_a_421_to_mail_on_a_kept_session_sends_on_a_new_one(smtp_server: StartServer) -> None:
    """The server closed the session just as it was taken: nothing was sent on it, so the mail goes
    once, on a new session, within the same send."""
    handler, _, sender = started(smtp_server, Sessions(refuse_second_mail=True))
    await sender.send(to(1))

    await sender.send(to(2))

    assert [e.rcpt_tos for e in handler.envelopes] == [["oncall-1@example.com"], ["oncall-2@example.com"]]
    assert len(set(handler.peers)) == 2


async def test_a_failure_after_mail_is_not_sent_again_and_the_session_is_closed(
    smtp_server: StartServer,
) -> None:
    handler, port, sender = started(smtp_server, Sessions())
    await sender.send(to(1))
    handler.rcpt_reply = "450 4.2.1 Mailbox busy"

    with pytest.raises(RetryableDeliveryError, match="450"):
        await sender.send(to(2))  # MAIL went through: the delivery retries, not the notifier

    assert sum(handler.mails_by_peer.values()) == 2
    assert open_sockets_to(port) == 0  # not kept after a failure
    handler.rcpt_reply = None
    await sender.send(to(3))
    assert len(set(handler.peers)) == 2


async def test_a_session_is_retired_after_max_mails(
    smtp_server: StartServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(smtp_sessions, "MAX_MAILS", 2)
    handler, _, sender = started(smtp_server, Sessions())

    for n in range(5):
        await sender.send(to(n))

    assert [handler.peers.count(p) for p in dict.fromkeys(handler.peers)] == [2, 2, 1]


async def test_aclose_ends_every_session_and_keeps_none_after(smtp_server: StartServer) -> None:
    handler, port, sender = started(smtp_server, Sessions())
    await asyncio.gather(*(sender.send(to(n)) for n in range(3)))
    assert open_sockets_to(port) == 3

    await sender.aclose()
    assert open_sockets_to(port) == 0

    await sender.send(to(4))  # a send that was under way when the worker stopped
    await sender.aclose()
    assert open_sockets_to(port) == 0
    assert len(handler.envelopes) == 4


@dataclass
class HangsUpAfterData(Sessions):
    """Takes a session's second mail, then drops the connection before its 250."""

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        reply = await super().handle_DATA(server, session, envelope)
        if self.mails_by_peer[session.peer] == 2:
            server.transport.close()
        return reply


async def test_a_drop_after_mail_on_a_kept_session_is_not_sent_again_at_once(
    smtp_server: StartServer,
) -> None:
    """Past MAIL the server may have taken the mail: the send fails (the delivery's retry decides),
    rather than the notifier sending it again on a new session there and then."""
    handler, _, sender = started(smtp_server, HangsUpAfterData())
    await sender.send(to(1))

    with pytest.raises(RetryableDeliveryError):
        await sender.send(to(2))

    assert len(handler.envelopes) == 2 and len(set(handler.peers)) == 1


@pytest.fixture
async def stalls_second_mail() -> AsyncIterator[RawSmtp]:
    """Each connection takes one mail, then never answers the next MAIL: a kept session whose
    flow a firewall dropped without a reset."""
    async with raw_smtp(lambda verb, mails: verb == b"MAIL" and mails == 2) as server:
        yield server


async def test_a_kept_session_whose_mail_goes_unanswered_is_given_up_for_a_new_one(
    stalls_second_mail: RawSmtp,
) -> None:
    sender = notifier(stalls_second_mail.port, timeout_s=2)
    await sender.send(to(1))

    started = time.monotonic()
    await sender.send(to(2))  # the kept session's MAIL: no answer within 0.4 s (a QUIT's budget)

    assert time.monotonic() - started < 1.5  # not the whole 1.7 s of the send's budget
    assert (stalls_second_mail.received, stalls_second_mail.connections) == (2, 2)
