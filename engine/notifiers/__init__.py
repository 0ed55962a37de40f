"""Channel adapters, and building them from the policy's `channels` section."""

from collections.abc import Mapping
from email.utils import parseaddr
from typing import TYPE_CHECKING

import aiohttp

from engine.notifiers.base import Action, AlertSummary, Message, Notifier
from engine.notifiers.email import DEFAULT_HOSTNAME_FOR_IDS, EmailNotifier
from engine.notifiers.pagerduty import PagerDutyNotifier
from engine.notifiers.webhook import WebhookNotifier
from engine.secrets import resolve_secret

if TYPE_CHECKING:  # keeps the adapters importable without the policy layer
    from engine.policy.models import Channels

__all__ = [
    "Action",
    "AlertSummary",
    "EmailNotifier",
    "Message",
    "Notifier",
    "PagerDutyNotifier",
    "WebhookNotifier",
    "build_notifiers",
]


def _secret(env: str | None, file: str | None, environ: Mapping[str, str]) -> str | Exception | None:
    # Kept as a value so the engine starts anyway and each affected send fails permanently, naming it.
    try:
        return resolve_secret(env, file, environ)
    except ValueError as exc:
        return exc


def build_notifiers(
    channels: "Channels", session: aiohttp.ClientSession, environ: Mapping[str, str]
) -> dict[str, Notifier]:
    """Notifiers by channel name for the configured channels (pagerduty, webhook, email)."""
    notifiers: dict[str, Notifier] = {}
    if channels.pagerduty is not None:
        keys: dict[str, str | Exception] = {}
        for name, service in channels.pagerduty.services.items():
            key = _secret(service.routing_key_env, service.routing_key_file, environ)
            keys[name] = ValueError("no routing key configured") if key is None else key
        notifiers["pagerduty"] = PagerDutyNotifier(session, channels.pagerduty.url, keys)
    if channels.webhook is not None:
        endpoints = {
            name: (ep.url, _secret(ep.secret_env, ep.secret_file, environ))
            for name, ep in channels.webhook.endpoints.items()
        }
        notifiers["webhook"] = WebhookNotifier(session, endpoints)
    if channels.email is not None:
        mail = channels.email
        # Message-IDs on the sender's domain: one the operator controls, and a real domain name.
        domain = parseaddr(mail.from_)[1].rpartition("@")[2]
        notifiers["email"] = EmailNotifier(
            mail.smtp_host,
            mail.smtp_port,
            mail.from_,
            starttls=mail.starttls,
            tls=mail.tls,
            username=_secret(mail.username_env, mail.username_file, environ),
            password=_secret(mail.password_env, mail.password_file, environ),
            hostname_for_ids=domain or DEFAULT_HOSTNAME_FOR_IDS,
        )
    return notifiers
