"""The one registry of channel kinds: each declared once, with its settings model.

Everything that differs per channel kind derives from CHANNEL_KINDS: the `channels:` section of
the policy files, the target kinds `check` accepts and the names they must refer to, a user's
contact methods, the metric labels, the notifier built for it and the secrets it needs.
Adding a channel = its settings model here + one ChannelKind entry + its module in
`engine/notifiers/` with `build(settings, session, environ) -> Notifier`.
"""

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pydantic import ConfigDict, Field, create_model, model_validator

from engine.policy.base import Model


@dataclass(frozen=True, slots=True)
class SecretRef:
    """A secret by reference: `what` it is for, and the environment variable or file holding it."""

    what: str
    env: str | None
    file: str | None


class ChannelSettings(Model):
    """A channel's `channels:` entry. Subclasses say what names and secrets they define."""

    def named_addresses(self) -> Mapping[str, object] | None:
        """The names a `KIND:NAME` target must refer to; None when any address will do."""
        return None

    def secret_refs(self) -> list[SecretRef]:
        return []


class PagerDutyService(Model):
    routing_key_env: str | None = None
    routing_key_file: str | None = None

    @model_validator(mode="after")
    def _one_source(self) -> "PagerDutyService":
        if (self.routing_key_env is None) == (self.routing_key_file is None):
            raise ValueError("give exactly one of routing_key_env or routing_key_file")
        return self


class PagerDutyChannel(ChannelSettings):
    url: str = "https://events.pagerduty.com/v2/enqueue"
    services: dict[str, PagerDutyService] = {}

    def named_addresses(self) -> Mapping[str, object]:
        return self.services

    def secret_refs(self) -> list[SecretRef]:
        return [
            SecretRef(f"pagerduty service {name!r}", s.routing_key_env, s.routing_key_file)
            for name, s in self.services.items()
        ]


class WebhookEndpoint(Model):
    url: str
    secret_env: str | None = None
    secret_file: str | None = None


class WebhookChannel(ChannelSettings):
    endpoints: dict[str, WebhookEndpoint] = {}

    def named_addresses(self) -> Mapping[str, object]:
        return self.endpoints

    def secret_refs(self) -> list[SecretRef]:
        return [
            SecretRef(f"webhook {name!r}", e.secret_env, e.secret_file) for name, e in self.endpoints.items()
        ]


class SlackChannel(ChannelSettings):
    """Slack Web API with a bot token (chat:write, im:write); button clicks come back signed."""

    api_url: str = "https://slack.com/api/"
    token_env: str | None = None
    token_file: str | None = None
    signing_secret_env: str | None = None
    signing_secret_file: str | None = None
    # where a click's response_url may point (it comes from the signed payload; tests use a sink)
    response_url_prefix: str = "https://hooks.slack.com/"

    def secret_refs(self) -> list[SecretRef]:
        return [
            SecretRef("slack bot token", self.token_env, self.token_file),
            SecretRef("slack signing secret", self.signing_secret_env, self.signing_secret_file),
        ]


class TeamsEndpoint(Model):
    """A Teams Workflows (Power Automate) webhook: the URL carries its own signature, so it is a secret."""

    url_env: str | None = None
    url_file: str | None = None

    @model_validator(mode="after")
    def _one_source(self) -> "TeamsEndpoint":
        if (self.url_env is None) == (self.url_file is None):
            raise ValueError("give exactly one of url_env or url_file")
        return self


class TeamsChannel(ChannelSettings):
    endpoints: dict[str, TeamsEndpoint] = {}

    def named_addresses(self) -> Mapping[str, object]:
        return self.endpoints

    def secret_refs(self) -> list[SecretRef]:
        return [
            SecretRef(f"teams endpoint {name!r}", e.url_env, e.url_file) for name, e in self.endpoints.items()
        ]


class TelegramChannel(ChannelSettings):
    """Telegram Bot API; callback queries come back with the secret token set by setWebhook."""

    api_url: str = "https://api.telegram.org"
    bot_token_env: str | None = None
    bot_token_file: str | None = None
    secret_token_env: str | None = None
    secret_token_file: str | None = None

    def secret_refs(self) -> list[SecretRef]:
        return [
            SecretRef("telegram bot token", self.bot_token_env, self.bot_token_file),
            SecretRef("telegram secret token", self.secret_token_env, self.secret_token_file),
        ]


class EmailChannel(ChannelSettings):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    smtp_host: str
    smtp_port: int = 587
    starttls: bool = True
    tls: bool = False
    username_env: str | None = None
    username_file: str | None = None
    password_env: str | None = None
    password_file: str | None = None
    from_: str = Field(alias="from")

    def secret_refs(self) -> list[SecretRef]:
        return [
            SecretRef("email username", self.username_env, self.username_file),
            SecretRef("email password", self.password_env, self.password_file),
        ]


@dataclass(frozen=True, slots=True)
class ChannelKind:
    name: str  # the `channels:` key, the target kind (`email:...`) and the metric label
    settings: type[ChannelSettings]
    # the module under engine.notifiers whose build() makes its Notifier; named, not imported,
    # so the pure core never imports the shell. None: accepted in policies, not deliverable yet.
    notifier: str | None
    user_field: str | None = None  # the User field holding a person's address on this channel
    named_as: str = ""  # what a `KIND:NAME` target names, for "undefined ..." errors
    # with named_as: the key in its raw `channels:` entry holding those names, since the
    # cross-check runs before validation and cannot ask the settings' named_addresses()
    names_key: str = ""
    updates: bool = True  # carries status updates and notices (PagerDuty's Events API cannot)


# The order is a person's failover order: when one contact method gives up (or its breaker is
# open), the next one of theirs in this order is tried.
CHANNEL_KINDS: tuple[ChannelKind, ...] = (
    ChannelKind("slack", SlackChannel, "slack", user_field="slack"),
    ChannelKind("telegram", TelegramChannel, "telegram", user_field="telegram"),
    ChannelKind("email", EmailChannel, "email", user_field="email"),
    ChannelKind(
        "pagerduty",
        PagerDutyChannel,
        "pagerduty",
        user_field="pagerduty",
        named_as="pagerduty service",
        names_key="services",
        updates=False,
    ),
    ChannelKind("webhook", WebhookChannel, "webhook", named_as="webhook endpoint", names_key="endpoints"),
    ChannelKind("teams", TeamsChannel, "teams", named_as="teams endpoint", names_key="endpoints"),
)
CHANNELS: dict[str, ChannelKind] = {kind.name: kind for kind in CHANNEL_KINDS}

if TYPE_CHECKING:

    class Channels(Model):
        """What create_model builds below, as the type checker sees it: one attribute per kind."""

        def __getattr__(self, kind: str) -> Any: ...

else:
    Channels = create_model(
        "Channels",
        __base__=Model,
        __doc__="The `channels:` section: one optional entry per channel kind.",
        **{kind.name: (kind.settings | None, None) for kind in CHANNEL_KINDS},
    )


def configured(channels: Any) -> dict[str, ChannelSettings]:
    """The channel kinds that have a `channels:` entry, with their settings."""
    found = {kind.name: getattr(channels, kind.name, None) for kind in CHANNEL_KINDS}
    return {name: settings for name, settings in found.items() if settings is not None}
