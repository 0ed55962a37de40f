"""Every channel kind comes from one place (policy/channels.py); everything else derives from it."""

import importlib
from typing import Any

import aiohttp
import pytest
from prometheus_client import CollectorRegistry

from engine.delivery.retry import Outcome
from engine.events import Action
from engine.metrics import OUTCOMES, Metrics
from engine.notifiers import build_notifiers, factory, secret_problems
from engine.policy.channels import CHANNEL_KINDS, CHANNELS, Channels, ChannelSettings, configured
from engine.policy.models import TARGET_KINDS, User
from engine.policy.targets import Address, resolve_target
from tests.unit.escalation_helpers import POLICIES

KINDS = [kind.name for kind in CHANNEL_KINDS]
SETTINGS: dict[str, dict[str, Any]] = {
    "slack": {"token_env": "SLACK_TOKEN"},
    "email": {"smtp_host": "localhost", "from": "engine@example.com", "password_env": "SMTP_PW"},
    "pagerduty": {"services": {"platform": {"routing_key_env": "PD_KEY"}}},
    "webhook": {"endpoints": {"audit": {"url": "http://127.0.0.1:1/hook", "secret_file": "/nonexistent"}}},
    "telegram": {"bot_token_env": "TG_TOKEN"},
    "teams": {"endpoints": {"sre": {"url_env": "TEAMS_SRE_URL"}}},
}


def test_the_registry_enumerates_the_kinds_and_names_each_once() -> None:
    assert KINDS == ["slack", "telegram", "email", "pagerduty", "webhook", "teams"]
    assert len(set(KINDS)) == len(KINDS) == len(CHANNELS)
    assert set(SETTINGS) == set(KINDS), "this test covers every registered kind"


@pytest.mark.parametrize("kind", KINDS)
def test_each_kind_is_a_channels_section_a_target_kind_and_a_metric_label(kind: str) -> None:
    assert kind in Channels.model_fields
    assert issubclass(CHANNELS[kind].settings, ChannelSettings)
    assert kind in TARGET_KINDS
    assert resolve_target(f"{kind}:x", POLICIES).addresses == [Address(kind, "x")]
    registry = CollectorRegistry()
    Metrics(registry)
    for action in Action:
        labels = {"channel": kind, "action": action.value, "outcome": "success"}
        assert registry.get_sample_value("escalation_notifications_total", labels) == 0.0


@pytest.mark.parametrize("kind", KINDS)
def test_a_kind_with_a_notifier_module_builds_from_its_settings(kind: str) -> None:
    entry = CHANNELS[kind]
    build = factory(kind)
    if entry.notifier is None:
        assert build is None  # accepted in policies, not deliverable by this release
        return
    assert build is importlib.import_module(f"engine.notifiers.{entry.notifier}").build
    channels = Channels.model_validate({kind: SETTINGS[kind]})
    assert list(configured(channels)) == [kind]
    assert list(build_notifiers(channels, None, {})) == [kind]  # type: ignore[arg-type]


def test_user_contact_fields_are_user_model_fields() -> None:
    for kind in CHANNEL_KINDS:
        if kind.user_field:
            assert kind.user_field in User.model_fields


def test_secret_problems_come_from_each_kinds_settings() -> None:
    channels = Channels.model_validate(SETTINGS)
    problems = secret_problems(channels, {})
    assert problems == [
        "slack bot token: environment variable SLACK_TOKEN is not set",
        "telegram bot token: environment variable TG_TOKEN is not set",
        "email password: environment variable SMTP_PW is not set",
        "pagerduty service 'platform': environment variable PD_KEY is not set",
        "webhook 'audit': cannot read secret file /nonexistent: No such file or directory",
        "teams endpoint 'sre': environment variable TEAMS_SRE_URL is not set",
    ]
    env = {"SLACK_TOKEN": "x", "TG_TOKEN": "x", "SMTP_PW": "x", "PD_KEY": "y", "TEAMS_SRE_URL": "z"}
    assert secret_problems(channels, env) == problems[4:5]


def test_delivery_outcomes_are_the_metric_labels() -> None:
    assert [o.value for o in Outcome] == list(OUTCOMES)


async def test_unconfigured_channels_build_nothing() -> None:
    async with aiohttp.ClientSession() as session:
        assert build_notifiers(Channels(), session, {}) == {}
