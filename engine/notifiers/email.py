"""Email over SMTP: one multipart/alternative email per message, all of an incident in one thread.

Threading: every email gets its own unique Message-ID and points `In-Reply-To` and `References` at a
stable per-incident root id, `<incident-{id}@{hostname_for_ids}>`, which no email carries as its
own Message-ID. A root that was really sent would have to be "the first page", but a Message
cannot tell a first page from a repeat cycle or a re-page (all are trigger at level 0), and two
different emails with one Message-ID break RFC 5322; mailboxes that de-duplicate on it (Gmail is
known to) would hide the later page. Threading clients (JWZ's algorithm, JMAP's suggested rule)
group messages that share a References id even when that message itself never arrived.
"""

import asyncio
import binascii
import email.policy
import functools
import ipaddress
import re
import secrets
import socket
import ssl
from collections.abc import Mapping
from datetime import UTC, datetime
from email.errors import MessageError
from email.message import EmailMessage
from email.policy import Compat32
from email.utils import format_datetime, parseaddr
from typing import Any

import aiohttp
import aiosmtplib

from engine import __version__
from engine.errors import DeliveryError, PermanentDeliveryError, RetryableDeliveryError
from engine.messages import Message
from engine.notifiers.base import DEFAULT_TIMEOUT_S
from engine.notifiers.email_body import html_body, one_line, text_body
from engine.notifiers.smtp_sessions import CLOSE_TIMEOUT_S, MAX_IDLE, QUIT_TIMEOUT_S, Client, Sessions, gone
from engine.policy.channels import EmailChannel
from engine.secrets import secret_or_error

DEFAULT_HOSTNAME_FOR_IDS = "escalation-engine"
_MAX_REPLY_CHARS = 300
_NOT_ATEXT = re.compile(r"[^A-Za-z0-9!#$%&'*+/=?^_`{|}~.-]")  # RFC 5322 dot-atom-text
_LOOPBACK_NAMES = ("localhost", "localhost.localdomain")


def thread_root(incident_id: str, hostname_for_ids: str) -> str:
    """The Message-ID every email about the incident refers to (In-Reply-To / References)."""
    return f"<incident-{_NOT_ATEXT.sub('_', incident_id)}@{hostname_for_ids}>"


def message_id(message: Message, hostname_for_ids: str) -> str:
    """Unique per email. Not email.utils.make_msgid: it draws from the global `random` module,
    which a library must leave alone (and `secrets` is the better source for a unique id)."""
    local = f"{_NOT_ATEXT.sub('_', message.incident_id)}.{message.action}.{secrets.token_hex(8)}"
    return f"<{local}@{hostname_for_ids}>"


class _Wire(Compat32):
    """Header values stored as they go on the wire (see _header): EmailMessage's default policy
    parsed each on store and re-folded it when flattened, most of the CPU of a send. One reads
    back as stored: parse as_bytes() for what a recipient sees. 8-bit only for SMTPUTF8."""

    def header_store_parse(self, name: str, value: Any) -> tuple[str, Any]:
        if not isinstance(value, str) or _BAD_BREAK.search(value):  # never a line of its own
            raise ValueError(f"{name} header not folded for the wire: {value!r}")
        return name, value

    def fold(self, name: str, value: str) -> str:
        return f"{name}: {value}{self.linesep}"

    def fold_binary(self, name: str, value: str) -> bytes:
        return self.fold(name, value).encode("utf-8" if self.cte_type == "8bit" else "ascii")


# mangle_from_: compat32 would turn a body line "From ..." into ">From ..."
_WIRE = _Wire(linesep="\r\n", mangle_from_=False, cte_type="7bit")
_WIRE_UTF8 = _Wire(linesep="\r\n", mangle_from_=False, cte_type="8bit")
_BAD_BREAK = re.compile(r"\r(?!\n[ \t])|(?<!\r)\n")  # a CR or LF that is not folding whitespace
_PLAIN = re.compile(r"[!-~]+(?: [!-~]+)*")  # printable ASCII words, one space apart
_TOKEN = re.compile(r"[!-~]{1,900}")
_MAX_LINE = 78


def _header(name: str, value: str, utf8: bool) -> str:
    """`value` folded for the wire as the modern policy writes it: plain ASCII is folded at its
    spaces here; addresses, non-ASCII, words too long for a line and text that looks RFC 2047-
    encoded go to the stdlib. A msg-id stays whole: split into RFC 2047 words it threads nowhere."""
    if name in ("Message-ID", "In-Reply-To", "References") and _TOKEN.fullmatch(value):
        return value
    if name in ("From", "To") or "=?" in value or not _PLAIN.fullmatch(value):
        return _stdlib_folded(name, value, utf8)
    lines, line = [], f"{name}:"
    for word in value.split(" "):
        if len(line) + 1 + len(word) <= _MAX_LINE:
            line += " " + word
        elif line != f"{name}:" and 1 + len(word) <= _MAX_LINE:
            lines.append(line)
            line = " " + word
        else:  # the stdlib encodes such a word to fold it
            return _stdlib_folded(name, value, utf8)
    return "\r\n".join([*lines, line])[len(name) + 2 :]


@functools.lru_cache(maxsize=1024)  # From and To repeat; so do an incident's subjects
def _stdlib_folded(name: str, value: str, utf8: bool) -> str:
    if len(value.splitlines()) > 1:  # as EmailMessage refused it
        raise ValueError("Header values may not contain linefeed or carriage return characters")
    policy = email.policy.SMTPUTF8 if utf8 else email.policy.SMTP
    line = str(policy.header_factory(name, value).fold(policy=policy))  # "Name: value\r\n"
    # not "Name:\r\n value": read back, that value starts with a space
    return line[len(name) + 1 : -2].lstrip(" ").removeprefix("\r\n ")


def _quoted_printable(text: str, subtype: str, policy: _Wire) -> EmailMessage:
    part = EmailMessage(policy=policy)
    part["Content-Type"] = f'text/{subtype}; charset="utf-8"'
    part["Content-Transfer-Encoding"] = "quoted-printable"
    # line breaks as set_content() made them: CR, LF and CRLF alike, and one at the end
    lines = text.encode("utf-8").splitlines()
    part.set_payload(binascii.b2a_qp(b"\n".join(lines) + b"\n", istext=True).decode("ascii"))
    return part


def build_email(message: Message, sender: str, *, hostname_for_ids: str, utf8: bool = False) -> EmailMessage:
    """The email for `message` (to `message.address`), threaded under the incident's root id.

    as_bytes() is the email as sent. `utf8`: for non-ASCII addresses, an SMTPUTF8 session (raw
    UTF-8 in headers, as email.policy.SMTPUTF8 writes them)."""
    root = thread_root(message.incident_id, hostname_for_ids)
    policy = _WIRE_UTF8 if utf8 else _WIRE
    mail = EmailMessage(policy=policy)
    for name, value in (
        ("Subject", one_line(message.title)),
        ("From", sender),
        ("To", message.address),
        ("Date", format_datetime(datetime.now(UTC))),  # "+0000", as the modern policy rewrote "GMT"
        ("Message-ID", message_id(message, hostname_for_ids)),
        ("In-Reply-To", root),
        ("References", root),
        ("Auto-Submitted", "auto-generated"),  # RFC 3834: auto-responders must not answer
        ("X-Auto-Response-Suppress", "All"),  # the same for Exchange / Outlook out-of-office replies
        ("X-Escalation-Incident", one_line(message.incident_id)),
        ("X-Escalation-Action", str(message.action)),
        ("X-Escalation-Severity", one_line(message.severity)),
        ("X-Mailer", f"escalation-engine/{__version__}"),
        ("MIME-Version", "1.0"),
    ):
        mail[name] = _header(name, value, utf8)
    # the boundary from `secrets`, not from the generator's use of the global `random` module
    mail["Content-Type"] = f'multipart/alternative;\r\n boundary="=_{secrets.token_hex(16)}"'
    # Quoted-printable keeps the source readable (base64 would hide it); text first, HTML last.
    mail.attach(_quoted_printable(text_body(message), "plain", policy))
    mail.attach(_quoted_printable(html_body(message), "html", policy))
    return mail


def _reply(exc: aiosmtplib.SMTPResponseException) -> str:
    text = one_line(exc.message)
    text = text if len(text) <= _MAX_REPLY_CHARS else text[:_MAX_REPLY_CHARS] + "..."
    return f"{exc.code} {text}"


def _by_code(code: int) -> type[DeliveryError]:
    return PermanentDeliveryError if 500 <= code <= 599 else RetryableDeliveryError


def _classify(exc: Exception, what: str) -> DeliveryError:
    """SMTP reply classes decide: 5xx permanent; 4xx, timeouts and connection trouble retryable."""
    if isinstance(exc, aiosmtplib.SMTPRecipientsRefused):  # one recipient: it was refused
        refused = exc.recipients[0] if exc.recipients else None
        if refused is None:
            return RetryableDeliveryError(f"{what}: recipient refused")
        return _by_code(refused.code)(f"{what}: recipient refused: {_reply(refused)}")
    if isinstance(exc, aiosmtplib.SMTPAuthenticationError):
        return _by_code(exc.code)(f"{what}: SMTP authentication failed: {_reply(exc)}")
    if isinstance(exc, aiosmtplib.SMTPSenderRefused):
        return _by_code(exc.code)(f"{what}: sender {exc.sender!r} refused: {_reply(exc)}")
    if isinstance(exc, aiosmtplib.SMTPResponseException):
        return _by_code(exc.code)(f"{what}: SMTP server replied {_reply(exc)}")
    if isinstance(exc, TimeoutError):  # includes aiosmtplib.SMTPTimeoutError
        return RetryableDeliveryError(f"{what}: timed out: {exc}")
    if isinstance(exc, aiosmtplib.SMTPServerDisconnected | aiosmtplib.SMTPConnectError):
        return RetryableDeliveryError(f"{what}: {exc}")
    if isinstance(exc, aiosmtplib.SMTPException):
        # STARTTLS or AUTH not offered, no usable AUTH mechanism, ...: the setup, not the moment.
        return PermanentDeliveryError(f"{what}: {exc}")
    if isinstance(exc, OSError):  # TLS handshake failures during STARTTLS (SSLError is an OSError)
        return RetryableDeliveryError(f"{what}: {type(exc).__name__}: {exc}")
    return PermanentDeliveryError(f"{what}: {type(exc).__name__}: {exc}")


def _is_loopback(host: str) -> bool:
    if host.lower() in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


_fqdn: str | None = None


async def _local_hostname() -> str:
    """The name for EHLO, looked up once: aiosmtplib, given none, asks a thread for it per connection."""
    global _fqdn
    if _fqdn is None:
        _fqdn = await asyncio.to_thread(socket.getfqdn)
    return _fqdn


class EmailNotifier:
    """Sends each message as an email to `message.address` through one SMTP server.

    `tls` is implicit TLS (port 465); otherwise `starttls` requires the STARTTLS upgrade (port 587)
    and refuses to send if the server does not offer it. With neither, the session stays in
    cleartext: for a trusted internal relay only. Certificates are verified. Credentials are only
    sent over TLS or to a loopback address. Sessions are kept open for the next mail (up to
    `idle_sessions` of them, see smtp_sessions); aclose() ends them.
    """

    def __init__(
        self,
        host: str,
        port: int,
        sender: str,
        *,
        starttls: bool,
        tls: bool,
        username: str | Exception | None,
        password: str | Exception | None,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        hostname_for_ids: str = DEFAULT_HOSTNAME_FOR_IDS,
        tls_context: ssl.SSLContext | None = None,
        idle_sessions: int = MAX_IDLE,
    ) -> None:
        self._host = host
        self._port = port
        self._sender = sender
        self._envelope_from = parseaddr(sender)[1]
        self._tls = tls
        self._starttls = starttls and not tls  # implicit TLS already encrypts: no upgrade to do
        self._username = username
        self._password = password
        self._timeout_s = timeout_s
        self._hostname_for_ids = hostname_for_ids
        self._tls_context = tls_context
        if tls_context is None and (self._tls or self._starttls):
            self._tls_context = ssl.create_default_context()  # verifies certificate and host name
        self._accept_s, quit_s, self._close_s = _budgets(timeout_s)
        # QUIT and the close of a kept session run apart from any send, within the same shares
        self._sessions = Sessions(max_idle=idle_sessions, quit_s=quit_s, close_s=self._close_s)

    def _credentials(self, what: str) -> tuple[str, str] | None:
        """(username, password), None for no AUTH; never puts the password in an error."""
        username, password = self._username, self._password
        if isinstance(username, Exception):
            raise PermanentDeliveryError(f"{what}: SMTP username unavailable: {username}")
        if isinstance(password, Exception):  # names the variable or file, never the value
            raise PermanentDeliveryError(f"{what}: SMTP password unavailable: {password}")
        if username is None and password is None:
            return None
        if username is None or password is None:
            raise PermanentDeliveryError(
                f"{what}: SMTP {'password' if password is None else 'username'} is not configured; "
                "give both username and password, or neither"
            )
        if not (self._tls or self._starttls or _is_loopback(self._host)):
            raise PermanentDeliveryError(
                f"{what}: refusing to send SMTP credentials without TLS; enable starttls or tls"
            )
        return username, password

    def endpoint(self, address: str) -> str:
        return f"{self._host}:{self._port}"  # one SMTP server for every address

    def unusable(self, address: str) -> str | None:
        address = address.strip()
        what = f"email to {address!r} via {self._host}:{self._port}"
        try:
            self._credentials(what)
        except PermanentDeliveryError as exc:
            return str(exc)
        if not self._envelope_from:
            return f"{what}: sender {self._sender!r} is not an email address"
        if "@" not in address or one_line(address) != address:
            return f"{what}: not an email address"
        return None

    async def send(self, message: Message, thread: str | None = None) -> str | None:
        address = message.address.strip()
        what = f"email to {address!r} via {self._host}:{self._port}"
        if (why := self.unusable(address)) is not None:
            raise PermanentDeliveryError(why)
        credentials = self._credentials(what)
        envelope_from = self._envelope_from
        utf8 = not (envelope_from.isascii() and address.isascii())  # as send_message() decided
        try:
            mail = build_email(message, self._sender, hostname_for_ids=self._hostname_for_ids, utf8=utf8)
            wire = mail.as_bytes()  # flattened once: send_message() would copy and re-fold it
        except (ValueError, TypeError, MessageError) as exc:
            raise PermanentDeliveryError(f"{what}: cannot build the email: {exc}") from exc
        accept_s, close_s = self._accept_s, self._close_s
        client: Client | None = None
        try:
            async with asyncio.timeout(accept_s):
                client = self._sessions.take()
                if client is not None:  # an open session: no handshake, no EHLO, no AUTH
                    try:
                        await _transaction(client, envelope_from, address, wire, utf8)
                    except Exception as exc:
                        if client.in_transaction or not gone(exc):
                            raise
                        # the server closed it while it was idle: nothing was sent, start afresh
                        self._sessions.retire(client)
                        client = None
                if client is None:
                    client = self._client(credentials)
                    client.local_hostname = await _local_hostname()
                    await client.connect()
                    await _transaction(client, envelope_from, address, wire, utf8)
        except BaseException as exc:
            if client is not None:  # no socket outlives a failed send
                client.close()
                await client.wait_closed(close_s)
            if isinstance(exc, Exception):
                raise _classify(exc, what) from exc
            raise
        # Accepted: nothing more happens here that could fail the delivery (a retry would send it
        # twice). The session is kept for the next mail, or QUIT in the background.
        self._sessions.give(client)
        return None

    def _client(self, credentials: tuple[str, str] | None) -> Client:
        return Client(
            hostname=self._host,
            port=self._port,
            use_tls=self._tls,
            start_tls=self._starttls,  # False, not None: no silent opportunistic upgrade
            tls_context=self._tls_context,
            timeout=self._timeout_s,
            username=credentials[0] if credentials else None,
            password=credentials[1] if credentials else None,
        )

    async def aclose(self) -> None:
        """QUIT and close the sessions kept open (the worker's shutdown, a reload's old notifier)."""
        await self._sessions.aclose()


async def _transaction(client: Client, envelope_from: str, address: str, wire: bytes, utf8: bool) -> None:
    await client.sendmail(envelope_from, [address], wire, mail_options=await _options(client, utf8))


def _budgets(timeout_s: float) -> tuple[float, float, float]:
    """Seconds to get the mail accepted, for a kept session's QUIT, and to close a session:
    accept and close together within `timeout_s` (the delivery's own deadline, 5 % kept for what
    the worker does around the send), so a mail the server accepted is never cut off by that
    deadline and sent again. QUIT's share also bounds a kept session's MAIL (smtp_sessions)."""
    close_s = min(CLOSE_TIMEOUT_S, timeout_s / 10)
    return timeout_s * 0.95 - close_s, min(QUIT_TIMEOUT_S, timeout_s / 5), close_s


async def _options(client: aiosmtplib.SMTP, utf8: bool) -> list[str]:
    """No MAIL options for our 7-bit mail; for non-ASCII addresses what send_message() asked
    (sendmail() refuses if the server has no SMTPUTF8, which needs EHLO: no HELO fallback)."""
    if not utf8:
        return []
    if client.is_ehlo_or_helo_needed:
        await client.ehlo()
    return ["SMTPUTF8", *(["BODY=8BITMIME"] if client.supports_extension("8bitmime") else [])]


def build(
    settings: EmailChannel,
    session: aiohttp.ClientSession,
    environ: Mapping[str, str],
    timeout_s: float = DEFAULT_TIMEOUT_S,
) -> EmailNotifier:
    # Message-IDs on the sender's domain: one the operator controls, and a real domain name.
    domain = parseaddr(settings.from_)[1].rpartition("@")[2]
    return EmailNotifier(
        settings.smtp_host,
        settings.smtp_port,
        settings.from_,
        starttls=settings.starttls,
        tls=settings.tls,
        username=secret_or_error(settings.username_env, settings.username_file, environ),
        password=secret_or_error(settings.password_env, settings.password_file, environ),
        hostname_for_ids=domain or DEFAULT_HOSTNAME_FOR_IDS,
        timeout_s=timeout_s,
    )
