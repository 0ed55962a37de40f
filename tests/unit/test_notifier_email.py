"""EmailNotifier against real SMTP servers: aiosmtpd Controllers on 127.0.0.1, each on its own thread."""

import asyncio
import contextlib
import email
import email.policy
import os
import re
import socket
import ssl
import string
import subprocess
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field, replace
from datetime import timedelta
from email.message import EmailMessage
from email.utils import formatdate
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword
from aiosmtplib.email import flatten_message
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine import __version__
from engine.errors import PermanentDeliveryError, RetryableDeliveryError
from engine.events import Action
from engine.messages import AlertSummary, Message
from engine.notifiers import EmailNotifier, build_notifiers, close_notifiers, smtp_sessions
from engine.notifiers import email as email_module
from engine.notifiers.email import build_email, message_id, thread_root
from engine.notifiers.email_body import html_body, text_body
from tests.servers import free_port

HOST = "127.0.0.1"
SENDER = "Escalation Engine <alerts@example.com>"
USER = "engine"
PASSWORD = "s3cret-pw"

# aiosmtpd warns (UserWarning, on every connection) when a server requires AUTH without TLS. These
# servers do so on purpose, on loopback, to test AUTH without certificates; pyproject turns warnings
# into errors, so the tests that start one ignore exactly that warning.
cleartext_auth_server = pytest.mark.filterwarnings(
    "ignore:Requiring AUTH while not requiring TLS can lead to security vulnerabilities!:UserWarning"
)

MESSAGE = Message(
    action=Action.TRIGGER,
    incident_id="3-0a1b2c3d4e5f",
    title="[P1] HighErrorRate checkout",
    body=(
        "Incident 3-0a1b2c3d4e5f: HighErrorRate checkout\n"
        "Severity: P1\n"
        "  [firing] HighErrorRate web-1 <script>alert('x')</script> 5xx above 5%\n"
        "    runbook: javascript:alert(1)"
    ),
    severity="P1",
    severity_rank=1,
    status="triggered",
    level=0,
    target="user:sre-oncall",
    address="oncall@example.com",
    labels={"alertname": "HighErrorRate", "service": "checkout"},
    alerts=(
        AlertSummary(
            fingerprint="ab12",
            status="firing",
            labels={"alertname": "HighErrorRate", "service": "checkout", "instance": "web-1"},
            annotations={
                "summary": "<script>alert('x')</script> 5xx above 5%",
                "runbook_url": "javascript:alert(1)",
            },
            starts_at="2026-11-23T10:00:00Z",
            generator_url="http://prom.example/graph?g0.expr=a&g0.tab=1",
        ),
    ),
    triggered_at="2026-11-23T10:00:05Z",
    incident_url="https://esc.example/api/v1/incidents/3-0a1b2c3d4e5f",
)


@dataclass
class Handler:
    """Records accepted envelopes; `rcpt_reply` / `data_reply` turn the server into a refusing one."""

    rcpt_reply: str | None = None
    data_reply: str | None = None
    envelopes: list[Any] = field(default_factory=list)
    ehlo_names: list[str] = field(default_factory=list)

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, rcpt_options: list[str]
    ) -> str:
        if self.rcpt_reply:
            return self.rcpt_reply
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        if self.data_reply:
            return self.data_reply
        self.envelopes.append(envelope)
        self.ehlo_names.append(session.host_name)
        return "250 Message accepted for delivery"

    def emails(self) -> list[EmailMessage]:
        return [email.message_from_bytes(e.content, policy=email.policy.default) for e in self.envelopes]


def authenticator(server: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any) -> AuthResult:
    ok = isinstance(auth_data, LoginPassword) and auth_data == (USER.encode(), PASSWORD.encode())
    return AuthResult(success=ok, handled=False)  # handled=False: aiosmtpd sends the 535 itself


class _Controller(Controller):
    """Listens on port 0 and learns the kernel's choice (Controller itself needs a fixed port)."""

    def _trigger_server(self) -> None:
        assert isinstance(self.server, asyncio.Server)
        self.port = self.server.sockets[0].getsockname()[1]
        super()._trigger_server()  # type: ignore[no-untyped-call]


@dataclass
class Server:
    handler: Handler
    port: int


StartServer = Callable[..., Server]


@pytest.fixture
def smtp_server() -> Iterator[StartServer]:
    """Starts aiosmtpd servers (own thread and loop each); all are stopped at teardown."""
    controllers: list[Controller] = []

    def start(handler: Handler | None = None, **kwargs: Any) -> Server:
        handler = handler or Handler()
        controller = _Controller(handler, hostname=HOST, port=0, ready_timeout=5, **kwargs)
        controller.start()
        controllers.append(controller)
        return Server(handler, controller.port)

    yield start
    for controller in controllers:
        controller.stop()


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 (openssl CLI: no test-only Python dependency)."""
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        [
            *("openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"),
            *("-nodes", "-days", "2", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"),
            *("-keyout", str(key), "-out", str(cert)),
        ],
        check=True,
        capture_output=True,
        timeout=30,
    )
    return cert, key


def server_tls(certificate: tuple[Path, Path]) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(*certificate)
    return ctx


def client_tls(certificate: tuple[Path, Path]) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(certificate[0]))


MADE: list[EmailNotifier] = []  # by notifier(): their kept sessions are closed after each test


@pytest.fixture(autouse=True)
async def close_made() -> AsyncIterator[None]:
    yield
    while MADE:
        await MADE.pop().aclose()


def notifier(
    port: int,
    *,
    starttls: bool = False,
    tls: bool = False,
    username: str | Exception | None = None,
    password: str | Exception | None = None,
    timeout_s: float = 2,
    tls_context: ssl.SSLContext | None = None,
    host: str = HOST,
    idle_sessions: int = smtp_sessions.MAX_IDLE,
) -> EmailNotifier:
    made = EmailNotifier(
        host,
        port,
        SENDER,
        starttls=starttls,
        tls=tls,
        username=username,
        password=password,
        timeout_s=timeout_s,
        hostname_for_ids="alerts.example.com",
        tls_context=tls_context,
        idle_sessions=idle_sessions,
    )
    MADE.append(made)
    return made


def open_sockets_to(port: int) -> int:
    """This process's TCP sockets connected to `port` (Linux /proc): a send must leave none open,
    or each waits for the garbage collector (a ResourceWarning, in whichever test runs then)."""
    ours = set()
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):  # closed meanwhile
            ours.add(os.readlink(f"/proc/self/fd/{fd}"))
    count = 0
    for table in ("/proc/self/net/tcp", "/proc/self/net/tcp6"):
        for row in Path(table).read_text().splitlines()[1:]:
            fields = row.split()
            count += int(fields[2].rsplit(":", 1)[1], 16) == port and f"socket:[{fields[9]}]" in ours
    return count


# ---- content -------------------------------------------------------------------------------------


async def test_delivers_multipart_email_with_headers(smtp_server: StartServer) -> None:
    server = smtp_server()

    sender = notifier(server.port)
    await sender.send(MESSAGE)

    assert open_sockets_to(server.port) == 1  # kept open for the next mail
    await sender.aclose()
    assert open_sockets_to(server.port) == 0
    [envelope] = server.handler.envelopes
    assert envelope.mail_from == "alerts@example.com"
    assert envelope.rcpt_tos == ["oncall@example.com"]
    [mail] = server.handler.emails()
    assert mail["Subject"] == "[P1] HighErrorRate checkout"
    assert mail["From"] == SENDER
    assert mail["To"] == "oncall@example.com"
    assert mail["Date"].datetime.tzinfo is not None
    assert mail["Auto-Submitted"] == "auto-generated"
    assert mail["X-Escalation-Incident"] == "3-0a1b2c3d4e5f"
    assert mail["X-Escalation-Action"] == "trigger"
    assert mail.get_content_type() == "multipart/alternative"
    parts = list(mail.iter_parts())
    assert [p.get_content_type() for p in parts] == ["text/plain", "text/html"]  # preferred last
    assert all(p.get_content_charset() == "utf-8" for p in parts)
    text, page = (p.get_content().replace("\r\n", "\n") for p in parts)  # CRLF as on the wire
    assert text.startswith(MESSAGE.body)
    assert f"Incident: {MESSAGE.incident_url}" in text
    assert f'<a href="{MESSAGE.incident_url}">' in page


async def test_html_part_escapes_alert_text(smtp_server: StartServer) -> None:
    server = smtp_server()
    hostile = replace(MESSAGE, title="[P1] <img src=x onerror=alert(1)>\nInjected: header")

    await notifier(server.port).send(hostile)

    [mail] = server.handler.emails()
    assert mail["Subject"] == "[P1] <img src=x onerror=alert(1)> Injected: header"  # one line, no header
    assert mail["Injected"] is None
    html_part = mail.get_body(preferencelist=("html",))
    assert html_part is not None
    page = html_part.get_content()
    assert "<script>" not in page and "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;" in page
    assert "<img" not in page and "&lt;img src=x onerror=alert(1)&gt;" in page
    assert 'href="javascript:' not in page  # a non-http runbook URL stays text
    assert 'href="http://prom.example/graph?g0.expr=a&amp;g0.tab=1"' in page


def test_html_part_shows_the_html_rendering_and_text_links_the_incident_once() -> None:
    rendered = replace(
        MESSAGE,
        body=f"Status: Triggered <x>\nDetails: {MESSAGE.incident_url}",
        html=f"Status: Triggered &lt;x&gt;\nDetails: {MESSAGE.incident_url}",
    )

    mail = build_email(rendered, SENDER, hostname_for_ids="alerts.example.com")

    text = text_body(rendered)
    assert text.startswith(rendered.body + "\n") and text.count(MESSAGE.incident_url) == 1
    page = html_body(rendered)
    assert "Status: Triggered &lt;x&gt;" in page and "&amp;lt;" not in page  # escaped once, in the template
    assert html_body(MESSAGE).count("&lt;script&gt;") == 1  # no `html`: the body is escaped here
    assert mail["Subject"] == "[P1] HighErrorRate checkout"


@pytest.mark.parametrize("brk", ["\n", "\r", "\r\n", "\u2028", "\x85", "\v"])
async def test_alert_text_arrives_in_its_own_header_as_one_line(smtp_server: StartServer, brk: str) -> None:
    server = smtp_server()
    title = f"[P1] Überlast \u2013 数据库{brk}Bcc: victim@example.com{brk}{brk}body"
    hostile = replace(MESSAGE, title=title, severity=f"P1{brk}X-Injected: 1", incident_id=f"3-ab{brk}To: x")

    await notifier(server.port).send(hostile)

    [envelope] = server.handler.envelopes
    assert envelope.rcpt_tos == ["oncall@example.com"]
    head = envelope.content.partition(b"\r\n\r\n")[0]
    assert head.isascii()  # non-ASCII as RFC 2047 encoded-words
    [mail] = server.handler.emails()
    assert mail["Subject"] == "[P1] Überlast \u2013 数据库 Bcc: victim@example.com body"
    assert mail["X-Escalation-Severity"] == "P1 X-Injected: 1"
    assert mail["X-Escalation-Incident"] == "3-ab To: x"
    assert mail["Bcc"] is None and mail["X-Injected"] is None and mail.get_all("To") == ["oncall@example.com"]


@pytest.mark.parametrize("smtputf8", [True, False])
async def test_a_non_ascii_address_needs_smtputf8(smtp_server: StartServer, smtputf8: bool) -> None:
    server = smtp_server(enable_SMTPUTF8=smtputf8)
    to_jorg = replace(MESSAGE, address="jörg@exämple.com")

    if not smtputf8:
        with pytest.raises(PermanentDeliveryError, match="SMTPUTF8 is not supported"):
            await notifier(server.port).send(to_jorg)
        return
    await notifier(server.port).send(to_jorg)

    [envelope] = server.handler.envelopes
    assert envelope.rcpt_tos == ["jörg@exämple.com"]
    assert {"SMTPUTF8", "BODY=8BITMIME"} <= set(envelope.mail_options)
    [mail] = server.handler.emails()
    assert mail["To"] == "jörg@exämple.com"  # in UTF-8: an address cannot be RFC 2047-encoded


async def test_ehlo_names_this_host_looked_up_once(
    smtp_server: StartServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = smtp_server(server_hostname="smtp.test")  # else aiosmtpd looks its own name up
    lookups: list[str] = []

    def getfqdn() -> str:
        lookups.append("getfqdn")
        return "mx1.example.net"

    monkeypatch.setattr(email_module, "_fqdn", None)
    monkeypatch.setattr(socket, "getfqdn", getfqdn)
    email_notifier = notifier(server.port)

    for _ in range(3):
        await email_notifier.send(MESSAGE)

    assert server.handler.ehlo_names == ["mx1.example.net"] * 3
    assert lookups == ["getfqdn"]  # not once per connection, in a thread each time


def old_build_email(message: Message, sender: str, *, hostname_for_ids: str) -> EmailMessage:
    """build_email as it was (EmailMessage, default policy), for what a recipient read of it."""
    root = thread_root(message.incident_id, hostname_for_ids)
    mail = EmailMessage()
    for name, value in [
        ("Subject", " ".join(message.title.split())),
        ("From", sender),
        ("To", message.address),
        ("Date", formatdate(usegmt=True)),
        ("Message-ID", message_id(message, hostname_for_ids)),
        ("In-Reply-To", root),
        ("References", root),
        ("Auto-Submitted", "auto-generated"),
        ("X-Auto-Response-Suppress", "All"),
        ("X-Escalation-Incident", " ".join(message.incident_id.split())),
        ("X-Escalation-Action", str(message.action)),
        ("X-Escalation-Severity", " ".join(message.severity.split())),
        ("X-Mailer", f"escalation-engine/{__version__}"),
    ]:
        mail[name] = value
    mail.set_content(text_body(message), cte="quoted-printable")
    mail.add_alternative(html_body(message), subtype="html", cte="quoted-printable")
    mail.set_boundary(f"=_{'0' * 32}")
    return mail


TEXT = st.text(max_size=200) | st.text(string.printable + "äß\u2013数", max_size=300)
WORD = st.text(string.ascii_letters + "=?_-[]<>", min_size=1, max_size=90)  # some too long for a line
WORDS = st.lists(WORD, max_size=12).map(" ".join)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    title=TEXT | WORDS,
    body=TEXT,
    page=st.just("") | TEXT,
    severity=TEXT | WORDS,
    incident_id=st.text(max_size=40),
    ids=st.sampled_from(["alerts.example.com", "a" * 80 + ".example", "bücher.example"]),
    utf8=st.booleans(),
)
def test_the_email_reads_as_the_old_build_did(
    title: str, body: str, page: str, severity: str, incident_id: str, ids: str, utf8: bool
) -> None:
    """What a recipient reads (header values, both bodies) is what the old EmailMessage build gave."""
    utf8 = utf8 or not ids.isascii()  # as send() sets it: the ids are on the sender's domain
    address = "jörg@exämple.com" if utf8 else "oncall@example.com"
    msg = replace(MESSAGE, title=title, body=body, html=page, severity=severity, incident_id=incident_id)
    msg = replace(msg, address=address)

    raw = build_email(msg, SENDER, hostname_for_ids=ids, utf8=utf8).as_bytes()
    new = email.message_from_bytes(raw, policy=email.policy.default)
    old_raw = flatten_message(old_build_email(msg, SENDER, hostname_for_ids=ids), utf8=utf8)
    old = email.message_from_bytes(old_raw, policy=email.policy.default)

    same = [k for k in old if k not in ("Date", "Message-ID", "Content-Type")]
    # lstrip: the old fold could move a whole value onto a continuation line ("Name:\r\n value"),
    # which reads back with a leading space
    assert [(k, new[k]) for k in same] == [(k, old[k].lstrip()) for k in same]
    assert new.keys() == old.keys()  # no header more or less
    assert abs(new["Date"].datetime - old["Date"].datetime) < timedelta(seconds=5)
    unique = re.compile(r"\.[0-9a-f]{16}@")
    assert unique.sub("@", new["Message-ID"]) == unique.sub("@", old["Message-ID"].lstrip())
    assert new.get_content_type() == "multipart/alternative"
    assert re.fullmatch(r"=_[0-9a-f]{32}", new.get_boundary() or "")
    new_parts, old_parts = list(new.iter_parts()), list(old.iter_parts())
    assert [p.get_content() for p in new_parts] == [p.get_content() for p in old_parts]
    assert [p["Content-Type"] for p in new_parts] == [p["Content-Type"] for p in old_parts]
    assert {p["Content-Transfer-Encoding"] for p in new_parts} == {"quoted-printable"}
    head, _, rest = raw.partition(b"\r\n\r\n")
    assert all(len(line) <= 998 and b"\r" not in line and b"\n" not in line for line in head.split(b"\r\n"))
    assert all(line[:1] in (b" ", b"\t") or b":" in line for line in head.split(b"\r\n"))
    assert rest.isascii() and (utf8 or head.isascii())
    assert all(len(line) <= 76 for line in rest.split(b"\r\n"))  # RFC 2045's quoted-printable limit


# ---- threading -----------------------------------------------------------------------------------


async def test_one_thread_per_incident(smtp_server: StartServer) -> None:
    server = smtp_server()
    email_notifier = notifier(server.port)
    other = replace(MESSAGE, incident_id="3-ffffffffffff")
    sequence = [
        MESSAGE,
        replace(MESSAGE, level=1),  # escalation
        replace(MESSAGE, action=Action.ACKNOWLEDGE, status="acknowledged", title="[ACK] " + MESSAGE.title),
        replace(MESSAGE),  # a repeat cycle pages level 0 again: the same fields as the first page
        replace(MESSAGE, action=Action.RESOLVE, status="resolved", title="[RESOLVED] " + MESSAGE.title),
        other,
    ]

    for message in sequence:
        await email_notifier.send(message)

    mails = server.handler.emails()
    root = "<incident-3-0a1b2c3d4e5f@alerts.example.com>"
    assert thread_root(MESSAGE.incident_id, "alerts.example.com") == root
    assert [m["X-Escalation-Action"] for m in mails[:5]] == [
        "trigger", "trigger", "acknowledge", "trigger", "resolve"
    ]  # fmt: skip
    for mail in mails[:5]:
        assert mail["In-Reply-To"] == root
        assert mail["References"] == root
    ids = [m["Message-ID"] for m in mails]
    assert len(set(ids)) == len(ids)  # never reused: clients drop a second message with a known id
    assert root not in ids
    assert all(i.startswith("<") and i.endswith("@alerts.example.com>") for i in ids)
    other_root = thread_root(other.incident_id, "alerts.example.com")
    assert other_root != root
    assert mails[5]["In-Reply-To"] == other_root
    assert mails[5]["References"] == other_root


def test_thread_root_keeps_message_id_syntax() -> None:
    assert thread_root("3-abc", "example.com") == "<incident-3-abc@example.com>"
    assert thread_root("a b<c>@d", "example.com") == "<incident-a_b_c__d@example.com>"


# ---- failures ------------------------------------------------------------------------------------


async def test_connection_refused_is_retryable() -> None:
    with pytest.raises(RetryableDeliveryError, match=r"oncall@example\.com.*127\.0\.0\.1"):
        await notifier(free_port()).send(MESSAGE)


@pytest.fixture
async def silent_server() -> AsyncIterator[int]:
    """Accepts connections and never sends the SMTP greeting."""
    writers: list[asyncio.StreamWriter] = []

    async def hold(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writers.append(writer)

    server = await asyncio.start_server(hold, HOST, 0)
    yield server.sockets[0].getsockname()[1]
    for writer in writers:
        writer.close()
    server.close()
    await server.wait_closed()


async def test_server_that_never_answers_is_retryable(silent_server: int) -> None:
    with pytest.raises(RetryableDeliveryError, match=r"timed out"):
        await notifier(silent_server, timeout_s=0.2).send(MESSAGE)

    assert open_sockets_to(silent_server) == 0


@pytest.mark.parametrize(
    ("stage", "reply", "error"),
    [
        ("data", "451 4.3.0 Try again later", RetryableDeliveryError),
        ("rcpt", "450 4.2.1 Mailbox busy", RetryableDeliveryError),
        ("rcpt", "550 5.1.1 No such user", PermanentDeliveryError),
        ("data", "554 5.7.1 Rejected as spam", PermanentDeliveryError),
    ],
    ids=["data-451", "rcpt-450", "rcpt-550", "data-554"],
)
async def test_smtp_reply_class_decides_retry(
    smtp_server: StartServer, stage: str, reply: str, error: type[Exception]
) -> None:
    server = smtp_server(Handler(rcpt_reply=reply) if stage == "rcpt" else Handler(data_reply=reply))

    with pytest.raises(error, match=re.escape(reply)) as info:
        await notifier(server.port).send(MESSAGE)

    assert type(info.value) is error
    assert server.handler.envelopes == []
    assert open_sockets_to(server.port) == 0


async def test_invalid_recipient_address_is_permanent(smtp_server: StartServer) -> None:
    server = smtp_server()
    with pytest.raises(PermanentDeliveryError, match="not an email address"):
        await notifier(server.port).send(replace(MESSAGE, address="sre-oncall"))
    assert server.handler.envelopes == []


# ---- authentication and TLS ----------------------------------------------------------------------


@cleartext_auth_server
async def test_auth_with_right_credentials_delivers(smtp_server: StartServer) -> None:
    server = smtp_server(auth_required=True, auth_require_tls=False, authenticator=authenticator)

    await notifier(server.port, username=USER, password=PASSWORD).send(MESSAGE)

    assert len(server.handler.envelopes) == 1


@cleartext_auth_server
async def test_auth_with_wrong_password_is_permanent(smtp_server: StartServer) -> None:
    server = smtp_server(auth_required=True, auth_require_tls=False, authenticator=authenticator)

    with pytest.raises(PermanentDeliveryError, match="authentication failed: 535") as info:
        await notifier(server.port, username=USER, password="wrong-pw").send(MESSAGE)

    assert "wrong-pw" not in str(info.value)
    assert server.handler.envelopes == []


@cleartext_auth_server
async def test_auth_required_but_no_credentials_is_permanent(smtp_server: StartServer) -> None:
    server = smtp_server(auth_required=True, auth_require_tls=False, authenticator=authenticator)

    with pytest.raises(PermanentDeliveryError, match="530"):
        await notifier(server.port).send(MESSAGE)


@pytest.mark.parametrize("which", ["username", "password"])
async def test_unresolved_secret_is_permanent_and_named(which: str) -> None:
    missing = ValueError("environment variable SMTP_SECRET is not set")
    given: dict[str, str | Exception] = {"username": USER, "password": PASSWORD, which: missing}

    with pytest.raises(PermanentDeliveryError, match=f"SMTP {which} unavailable: environment variable"):
        await notifier(free_port(), username=given["username"], password=given["password"]).send(MESSAGE)


async def test_credentials_are_never_sent_in_cleartext_to_a_remote_host() -> None:
    remote = notifier(25, host="smtp.example.invalid", username=USER, password=PASSWORD)
    with pytest.raises(PermanentDeliveryError, match="without TLS") as info:
        await remote.send(MESSAGE)  # refused before connecting: the host does not even resolve
    assert PASSWORD not in str(info.value)


async def test_starttls_then_auth(smtp_server: StartServer, certificate: tuple[Path, Path]) -> None:
    server = smtp_server(
        tls_context=server_tls(certificate),
        require_starttls=True,
        auth_required=True,
        authenticator=authenticator,
    )
    tls_notifier = notifier(
        server.port, starttls=True, username=USER, password=PASSWORD, tls_context=client_tls(certificate)
    )

    await tls_notifier.send(MESSAGE)
    await tls_notifier.aclose()

    # TLS closes after a close_notify round trip, which aclose() waits for: a socket left to the
    # garbage collector warned in whichever test ran then (test_implicit_tls, now and then)
    assert open_sockets_to(server.port) == 0
    [envelope] = server.handler.envelopes
    assert envelope.rcpt_tos == ["oncall@example.com"]


async def test_implicit_tls(smtp_server: StartServer, certificate: tuple[Path, Path]) -> None:
    server = smtp_server(ssl_context=server_tls(certificate))

    # starttls=True as well (the policy's default): implicit TLS wins, nothing to upgrade.
    tls_notifier = notifier(server.port, tls=True, starttls=True, tls_context=client_tls(certificate))
    await tls_notifier.send(MESSAGE)
    await tls_notifier.aclose()

    assert open_sockets_to(server.port) == 0
    assert len(server.handler.envelopes) == 1


async def test_starttls_with_untrusted_certificate_is_retryable(
    smtp_server: StartServer, certificate: tuple[Path, Path]
) -> None:
    server = smtp_server(tls_context=server_tls(certificate), require_starttls=True)

    with pytest.raises(RetryableDeliveryError, match="CERTIFICATE_VERIFY_FAILED"):
        await notifier(server.port, starttls=True).send(MESSAGE)  # system CAs: not trusted

    assert open_sockets_to(server.port) == 0  # the plain socket under the failed handshake too
    assert server.handler.envelopes == []


@pytest.fixture
async def server_that_holds_on(certificate: tuple[Path, Path]) -> AsyncIterator[int]:
    """Implicit-TLS SMTP that accepts the mail, then after its 221 reads nothing: our
    close_notify is never answered, the connection never closed from its side."""
    writers: list[asyncio.StreamWriter] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writers.append(writer)
        writer.write(b"220 ready\r\n")
        while verb := (await reader.readline())[:4].upper():
            if verb == b"QUIT":
                writer.write(b"221 bye\r\n")
                assert isinstance(writer.transport, asyncio.Transport)
                writer.transport.pause_reading()
                return
            writer.write(b"354 go on\r\n" if verb == b"DATA" else b"250 ok\r\n")
            if verb == b"DATA":
                await reader.readuntil(b"\r\n.\r\n")
                writer.write(b"250 accepted\r\n")

    server = await asyncio.start_server(serve, HOST, 0, ssl=server_tls(certificate))
    yield server.sockets[0].getsockname()[1]
    for writer in writers:
        writer.transport.abort()  # no TLS close to wait for: it reads nothing any more
        await writer.wait_closed()
    server.close()
    await server.wait_closed()


async def test_a_server_that_never_lets_go_is_let_go(
    server_that_holds_on: int, certificate: tuple[Path, Path]
) -> None:
    tls_notifier = notifier(server_that_holds_on, tls=True, tls_context=client_tls(certificate))
    await tls_notifier.send(MESSAGE)  # accepted: no error, however the close goes

    started = time.monotonic()
    await tls_notifier.aclose()

    assert time.monotonic() - started < 1  # QUIT 0.4 s + close 0.2 s; asyncio alone waits 30 s
    assert open_sockets_to(server_that_holds_on) == 0


@dataclass
class RawSmtp:
    """A bare SMTP server on asyncio streams that stops answering where `hang(verb, mails)` says
    (`mails`: the MAILs seen on this connection so far, this one included)."""

    hang: Callable[[bytes, int], bool]
    port: int = 0
    seen: list[bytes] = field(default_factory=list)
    received: int = 0
    connections: int = 0


@contextlib.asynccontextmanager
async def raw_smtp(hang: Callable[[bytes, int], bool]) -> AsyncIterator[RawSmtp]:
    found = RawSmtp(hang)
    handlers: list[asyncio.Task[Any]] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        handlers.append(asyncio.current_task())  # type: ignore[arg-type]
        found.connections += 1
        mails = 0
        writer.write(b"220 ready\r\n")
        try:
            while verb := (await reader.readline())[:4].upper():
                found.seen.append(verb)
                mails += verb == b"MAIL"
                if found.hang(verb, mails):
                    await asyncio.sleep(30)  # no answer, no close
                writer.write(b"354 go on\r\n" if verb == b"DATA" else b"250 ok\r\n")
                if verb == b"DATA":
                    await reader.readuntil(b"\r\n.\r\n")
                    found.received += 1
                    writer.write(b"250 accepted\r\n")
        finally:
            writer.transport.abort()

    server = await asyncio.start_server(serve, HOST, 0)
    found.port = server.sockets[0].getsockname()[1]
    try:
        yield found
    finally:
        for task in handlers:
            task.cancel()
        await asyncio.gather(*handlers, return_exceptions=True)
        server.close()
        await server.wait_closed()


@pytest.fixture
async def quit_never_answered() -> AsyncIterator[RawSmtp]:
    """Accepts the mail, then never answers QUIT."""
    async with raw_smtp(lambda verb, _: verb == b"QUIT") as server:
        yield server


async def test_an_accepted_mail_is_done_at_once_and_quit_ends_within_its_budget(
    quit_never_answered: RawSmtp,
) -> None:
    """The worker cuts a send off at the deadline the notifier is given (the delivery timeout):
    were QUIT to run in it, an accepted mail could count as failed and be sent again. QUIT comes
    when the session ends, apart from any send, and a server that never answers it is let go."""
    sender = notifier(quit_never_answered.port, timeout_s=1.0)
    async with asyncio.timeout(1.0):  # as ChannelWorker.deliver wraps it
        await sender.send(MESSAGE)
    assert quit_never_answered.seen == [b"EHLO", b"MAIL", b"RCPT", b"DATA"]

    started = time.monotonic()
    await sender.aclose()

    assert time.monotonic() - started < 0.6  # QUIT 0.2 s, close 0.1 s
    assert quit_never_answered.seen[-1] == b"QUIT"
    assert open_sockets_to(quit_never_answered.port) == 0


async def test_the_notifiers_serve_builds_keep_to_the_delivery_timeout(
    quit_never_answered: RawSmtp,
) -> None:
    """ESCALATION_DELIVERY_TIMEOUT_S reaches the notifiers (they kept a 10 s budget of their own)."""
    from engine.policy.channels import Channels  # local, as in test_secrets: the policy layer is optional

    settings = {"smtp_host": HOST, "smtp_port": quit_never_answered.port, "starttls": False, "from": SENDER}
    channels = Channels.model_validate({"email": settings})
    built = build_notifiers(channels, None, {}, timeout_s=1.0)  # type: ignore[arg-type]
    async with asyncio.timeout(1.0):  # as ChannelWorker.deliver wraps it
        await built["email"].send(MESSAGE)
    started = time.monotonic()
    await close_notifiers(built.values())
    assert time.monotonic() - started < 0.6  # QUIT's share of 1 s, not of the 10 s default


async def test_starttls_required_but_not_offered_is_permanent(smtp_server: StartServer) -> None:
    server = smtp_server()

    with pytest.raises(PermanentDeliveryError, match="STARTTLS"):
        await notifier(server.port, starttls=True).send(MESSAGE)

    assert server.handler.envelopes == []


# ---- build_notifiers -----------------------------------------------------------------------------


@cleartext_auth_server
async def test_build_notifiers_builds_email_from_policy_channels(
    smtp_server: StartServer, tmp_path: Path
) -> None:
    from engine.policy.channels import Channels  # local, as in test_secrets: the policy layer is optional

    server = smtp_server(auth_required=True, auth_require_tls=False, authenticator=authenticator)
    password_file = tmp_path / "smtp-password"
    password_file.write_text(PASSWORD + "\n")
    settings = {
        "smtp_host": HOST,
        "smtp_port": server.port,
        "starttls": False,
        "from": SENDER,
        "username_env": "SMTP_USER",
        "password_file": str(password_file),
    }
    channels = Channels.model_validate({"email": settings})

    notifiers = build_notifiers(channels, None, {"SMTP_USER": USER})  # type: ignore[arg-type]
    await notifiers["email"].send(MESSAGE)
    broken = build_notifiers(channels, None, {})  # type: ignore[arg-type]
    with pytest.raises(PermanentDeliveryError, match="environment variable SMTP_USER is not set"):
        await broken["email"].send(MESSAGE)

    assert isinstance(notifiers["email"], EmailNotifier)
    [mail] = server.handler.emails()
    assert mail["References"] == "<incident-3-0a1b2c3d4e5f@example.com>"  # ids on the sender's domain
