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
import contextlib
import html
import ipaddress
import re
import secrets
import ssl
from collections.abc import Mapping
from email.message import EmailMessage
from email.utils import formatdate, parseaddr
from urllib.parse import urlsplit

import aiohttp
import aiosmtplib
from markupsafe import escape

from engine import __version__
from engine.errors import DeliveryError, PermanentDeliveryError, RetryableDeliveryError
from engine.messages import Message
from engine.policy.channels import EmailChannel
from engine.secrets import secret_or_error

DEFAULT_HOSTNAME_FOR_IDS = "escalation-engine"
_QUIT_TIMEOUT_S = 2.0  # after the message is accepted: never let a slow QUIT turn into a retry
_MAX_REPLY_CHARS = 300
_NOT_ATEXT = re.compile(r"[^A-Za-z0-9!#$%&'*+/=?^_`{|}~.-]")  # RFC 5322 dot-atom-text
_LOOPBACK_NAMES = ("localhost", "localhost.localdomain")


def thread_root(incident_id: str, hostname_for_ids: str) -> str:
    """The Message-ID every email about the incident refers to (In-Reply-To / References)."""
    return f"<incident-{_NOT_ATEXT.sub('_', incident_id)}@{hostname_for_ids}>"


def _one_line(text: str) -> str:
    return " ".join(text.split())  # header values must not carry CR/LF (alert text often does)


def _is_web_url(url: str) -> bool:
    """Only http(s) links become clickable: an annotation could hold a javascript: URL."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return False
    return parts.scheme in ("http", "https") and bool(parts.netloc)


def text_body(message: Message) -> str:
    lines = [message.body.rstrip()]
    if message.incident_url and message.incident_url not in message.body:  # the default templates link it
        lines += ["", f"Incident: {message.incident_url}"]
    lines += ["", "-- ", f"Incident {message.incident_id} · sent to {message.target} by escalation-engine"]
    return "\n".join(lines) + "\n"


def _link_or_text(url: str, text: str) -> str:
    if _is_web_url(url):
        return f'<a href="{html.escape(url)}">{html.escape(text)}</a>'
    return html.escape(url)


_BUTTON = (
    'style="display:inline-block;padding:8px 16px;margin:0 8px 4px 0;border-radius:4px;'
    'color:#fff;text-decoration:none;font-weight:bold;background:{}"'
)
_ONE_CLICK = {"acknowledge": ("Acknowledge", "#1f6feb"), "resolve": ("Resolve", "#1a7f37")}


def _buttons(message: Message) -> list[str]:
    """The signed links as buttons: none once resolved, no acknowledge once acknowledged."""
    if message.status == "resolved":
        return []
    buttons = [
        f'<a href="{html.escape(url)}" {_BUTTON.format(color)}>{label}</a>'
        for key, (label, color) in _ONE_CLICK.items()
        if _is_web_url(url := message.links.get(key, ""))
        and not (key == "acknowledge" and message.status == "acknowledged")
    ]
    return ['<p style="margin:0 0 12px">' + "".join(buttons) + "</p>"] if buttons else []


def _linkify(shown: str, urls: list[str]) -> str:
    """The signed links in the escaped body made clickable (a template with its own <a> is left be)."""
    if not urls or "<a " in shown:
        return shown
    forms = sorted(
        {f(url) for url in urls for f in (html.escape, lambda u: str(escape(u)))}, key=len, reverse=True
    )
    pattern = re.compile("|".join(re.escape(f) for f in forms))
    return pattern.sub(lambda m: f'<a href="{m.group(0)}">{m.group(0)}</a>', shown)


def html_body(message: Message) -> str:
    """A simple HTML version of `message`; every piece of alert text is escaped.

    The body is `message.html`, the body template rendered with its values escaped (a template's own
    markup is the policy author's); a Message without it shows `message.body`, escaped here."""
    esc = html.escape
    title = _one_line(message.title)
    shown = message.html.rstrip() if message.html else esc(message.body.rstrip())
    shown = _linkify(shown, [url for url in message.links.values() if _is_web_url(url)])
    cell = 'style="padding:2px 8px;border:1px solid #ddd;vertical-align:top"'
    parts = [
        "<!DOCTYPE html>",
        '<html><head><meta charset="utf-8"><title>' + esc(title) + "</title></head>",
        '<body style="font-family:Arial,Helvetica,sans-serif;font-size:14px;color:#222">',
        '<p style="font-size:16px;font-weight:bold;margin:0 0 8px">' + esc(title) + "</p>",
        *_buttons(message),
        '<pre style="font-family:Menlo,Consolas,monospace;font-size:13px;white-space:pre-wrap;'
        'margin:0 0 12px">' + shown + "</pre>",
    ]
    links = []
    if message.incident_url:
        links.append(_link_or_text(message.incident_url, f"Open incident {message.incident_id}"))
    for alert in message.alerts:
        name = alert.labels.get("alertname", alert.fingerprint)
        if alert.annotations.get("runbook_url"):
            links.append(_link_or_text(alert.annotations["runbook_url"], f"Runbook: {name}"))
        if alert.generator_url:
            links.append(_link_or_text(alert.generator_url, f"Graph: {name}"))
    if links:
        parts.append('<p style="margin:0 0 12px">' + " &middot; ".join(dict.fromkeys(links)) + "</p>")
    if message.labels:
        rows = "".join(
            f"<tr><td {cell}>{esc(key)}</td><td {cell}>{esc(value)}</td></tr>"
            for key, value in sorted(message.labels.items())
        )
        parts.append(f'<table style="border-collapse:collapse;margin:0 0 12px">{rows}</table>')
    parts += [
        '<p style="color:#888;font-size:12px">Incident '
        + esc(message.incident_id)
        + " &middot; sent to "
        + esc(message.target)
        + " by escalation-engine</p>",
        "</body></html>",
    ]
    return "\n".join(parts) + "\n"


def message_id(message: Message, hostname_for_ids: str) -> str:
    """Unique per email. Not email.utils.make_msgid: it draws from the global `random` module,
    which a library must leave alone (and `secrets` is the better source for a unique id)."""
    local = f"{_NOT_ATEXT.sub('_', message.incident_id)}.{message.action}.{secrets.token_hex(8)}"
    return f"<{local}@{hostname_for_ids}>"


def build_email(message: Message, sender: str, *, hostname_for_ids: str) -> EmailMessage:
    """The email for `message` (to `message.address`), threaded under the incident's root id."""
    root = thread_root(message.incident_id, hostname_for_ids)
    email = EmailMessage()
    email["Subject"] = _one_line(message.title)
    email["From"] = sender
    email["To"] = message.address
    email["Date"] = formatdate(usegmt=True)
    email["Message-ID"] = message_id(message, hostname_for_ids)
    email["In-Reply-To"] = root
    email["References"] = root
    email["Auto-Submitted"] = "auto-generated"  # RFC 3834: auto-responders must not answer
    email["X-Auto-Response-Suppress"] = "All"  # the same for Exchange / Outlook out-of-office replies
    email["X-Escalation-Incident"] = _one_line(message.incident_id)
    email["X-Escalation-Action"] = str(message.action)
    email["X-Escalation-Severity"] = _one_line(message.severity)
    email["X-Mailer"] = f"escalation-engine/{__version__}"
    # Quoted-printable keeps the source readable (base64 would hide it); text first, HTML last.
    email.set_content(text_body(message), cte="quoted-printable")
    email.add_alternative(html_body(message), subtype="html", cte="quoted-printable")
    # chosen here, not by the generator, which draws it from the global `random` module
    email.set_boundary(f"=_{secrets.token_hex(16)}")
    return email


def _reply(exc: aiosmtplib.SMTPResponseException) -> str:
    text = _one_line(exc.message)
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


class EmailNotifier:
    """Sends each message as an email to `message.address` through one SMTP server.

    `tls` is implicit TLS (port 465); otherwise `starttls` requires the STARTTLS upgrade (port 587)
    and refuses to send if the server does not offer it. With neither, the session stays in
    cleartext: for a trusted internal relay only. Certificates are verified. Credentials are only
    sent over TLS or to a loopback address.
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
        timeout_s: float = 10,
        hostname_for_ids: str = DEFAULT_HOSTNAME_FOR_IDS,
        tls_context: ssl.SSLContext | None = None,
    ) -> None:
        self._host = host
        self._port = port
        self._sender = sender
        self._tls = tls
        self._starttls = starttls and not tls  # implicit TLS already encrypts: no upgrade to do
        self._username = username
        self._password = password
        self._timeout_s = timeout_s
        self._hostname_for_ids = hostname_for_ids
        self._tls_context = tls_context
        if tls_context is None and (self._tls or self._starttls):
            self._tls_context = ssl.create_default_context()  # verifies certificate and host name

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
        if not parseaddr(self._sender)[1]:
            return f"{what}: sender {self._sender!r} is not an email address"
        if "@" not in address or _one_line(address) != address:
            return f"{what}: not an email address"
        return None

    async def send(self, message: Message, thread: str | None = None) -> str | None:
        address = message.address.strip()
        what = f"email to {address!r} via {self._host}:{self._port}"
        if (why := self.unusable(address)) is not None:
            raise PermanentDeliveryError(why)
        credentials = self._credentials(what)
        envelope_from = parseaddr(self._sender)[1]
        try:
            email = build_email(message, self._sender, hostname_for_ids=self._hostname_for_ids)
        except (ValueError, TypeError) as exc:
            raise PermanentDeliveryError(f"{what}: cannot build the email: {exc}") from exc
        client = aiosmtplib.SMTP(
            hostname=self._host,
            port=self._port,
            use_tls=self._tls,
            start_tls=self._starttls,  # False, not None: no silent opportunistic upgrade
            tls_context=self._tls_context,
            timeout=self._timeout_s,
            username=credentials[0] if credentials else None,
            password=credentials[1] if credentials else None,
        )
        try:
            try:
                async with asyncio.timeout(self._timeout_s):
                    await client.connect()
                    await client.send_message(email, sender=envelope_from, recipients=[address])
            except Exception as exc:
                raise _classify(exc, what) from exc
            # Accepted: from here on nothing may fail the delivery (a retry would send it twice).
            with contextlib.suppress(Exception):
                async with asyncio.timeout(min(self._timeout_s, _QUIT_TIMEOUT_S)):
                    await client.quit()
        finally:
            client.close()
        return None


def build(
    settings: EmailChannel, session: aiohttp.ClientSession, environ: Mapping[str, str]
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
    )
