"""Channel adapters, built from the policy's `channels:` section through the channel registry."""

import asyncio
import importlib
from collections.abc import Callable, Iterable, Mapping
from typing import Any, cast

import aiohttp

from engine.notifiers.base import DEFAULT_TIMEOUT_S, Closable, Notifier
from engine.notifiers.email import EmailNotifier
from engine.notifiers.pagerduty import PagerDutyNotifier
from engine.notifiers.webhook import WebhookNotifier
from engine.policy.channels import CHANNELS, configured
from engine.secrets import resolve_secret

__all__ = [
    "EmailNotifier",
    "Notifier",
    "PagerDutyNotifier",
    "WebhookNotifier",
    "build_notifiers",
    "close_notifiers",
    "factory",
    "secret_problems",
]

Factory = Callable[[Any, aiohttp.ClientSession, Mapping[str, str], float], Notifier]


def factory(kind: str) -> Factory | None:
    """The `build` of the notifier module the registry names for `kind`; None: not deliverable yet."""
    module = CHANNELS[kind].notifier
    if module is None:
        return None
    return cast(Factory, importlib.import_module(f"engine.notifiers.{module}").build)


def build_notifiers(
    channels: object,
    session: aiohttp.ClientSession | Callable[[str], aiohttp.ClientSession],
    environ: Mapping[str, str],
    timeout_s: float = DEFAULT_TIMEOUT_S,
) -> dict[str, Notifier]:
    """Notifiers by channel kind, for the configured channels this release can deliver to; each
    on `session`, or on session(kind): a pool of its own, so one slow channel holds no other's.
    `timeout_s`: a send's budget, the delivery's own deadline (e-mail fits QUIT in it too)."""
    notifiers: dict[str, Notifier] = {}
    for kind, settings in configured(channels).items():
        build = factory(kind)
        if build is not None:
            own = session if isinstance(session, aiohttp.ClientSession) or session is None else session(kind)
            notifiers[kind] = build(settings, own, environ, timeout_s)
    return notifiers


async def close_notifiers(notifiers: Iterable[Notifier]) -> None:
    """End what the notifiers hold open (e-mail's SMTP sessions), all at once."""
    await asyncio.gather(*(n.aclose() for n in notifiers if isinstance(n, Closable)))


def secret_problems(channels: object, environ: Mapping[str, str]) -> list[str]:
    """Channel secrets that cannot be read now: said once at start, not only per failed page."""
    problems = []
    for settings in configured(channels).values():
        for ref in settings.secret_refs():
            try:
                resolve_secret(ref.env, ref.file, environ)
            except ValueError as exc:
                problems.append(f"{ref.what}: {exc}")
    return problems
