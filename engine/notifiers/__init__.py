"""Channel adapters, and building them from the policy's `channels` section."""

from collections.abc import Mapping
from typing import TYPE_CHECKING

import aiohttp

from engine.notifiers.base import Action, AlertSummary, Message, Notifier
from engine.notifiers.pagerduty import PagerDutyNotifier
from engine.notifiers.webhook import WebhookNotifier
from engine.secrets import resolve_secret

if TYPE_CHECKING:  # keeps the adapters importable without the policy layer
    from engine.policy.models import Channels

__all__ = [
    "Action",
    "AlertSummary",
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
    """Notifiers by channel name for the configured HTTP channels (pagerduty, webhook)."""
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
    return notifiers
