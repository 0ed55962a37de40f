from dataclasses import replace
from pathlib import Path
from typing import cast

import aiohttp
import pytest

from engine.errors import PermanentDeliveryError
from engine.events import Action
from engine.messages import Message
from engine.notifiers import build_notifiers
from engine.secrets import resolve_secret
from tests.sinks import PagerDutySink, WebhookSink, verify_signature

MESSAGE = Message(
    action=Action.TRIGGER,
    incident_id="inc-1",
    title="[P0] Down",
    body="down",
    severity="P0",
    severity_rank=0,
    status="triggered",
    level=0,
    target="pagerduty:platform",
    address="",
)


def test_neither_source_gives_none() -> None:
    assert resolve_secret(None, None, {}) is None


def test_env_var() -> None:
    assert resolve_secret("PD_KEY", None, {"PD_KEY": "abc123"}) == "abc123"


def test_missing_env_var_names_it() -> None:
    with pytest.raises(ValueError, match="environment variable PD_KEY is not set"):
        resolve_secret("PD_KEY", None, {})


def test_blank_env_var_is_an_error() -> None:
    with pytest.raises(ValueError, match="environment variable PD_KEY is empty"):
        resolve_secret("PD_KEY", None, {"PD_KEY": "  "})


def test_file_strips_trailing_newline_only(tmp_path: Path) -> None:
    path = tmp_path / "key"
    path.write_text(" s3cret \n")

    assert resolve_secret(None, str(path), {}) == " s3cret "


def test_file_with_crlf(tmp_path: Path) -> None:
    path = tmp_path / "key"
    path.write_bytes(b"s3cret\r\n")

    assert resolve_secret(None, str(path), {}) == "s3cret"


def test_missing_file_names_it(tmp_path: Path) -> None:
    path = tmp_path / "absent"

    with pytest.raises(ValueError, match=f"cannot read secret file {path}: No such file or directory"):
        resolve_secret(None, str(path), {})


def test_directory_is_unreadable(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="cannot read secret file"):
        resolve_secret(None, str(tmp_path), {})


def test_empty_file_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "key"
    path.write_text("\n")

    with pytest.raises(ValueError, match=f"secret file {path} is empty"):
        resolve_secret(None, str(path), {})


def test_both_sources_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="not both"):
        resolve_secret("PD_KEY", str(tmp_path / "key"), {"PD_KEY": "abc"})


def test_error_never_contains_the_value(tmp_path: Path) -> None:
    path = tmp_path / "key"
    path.write_bytes(b"\xff\xfe-not-utf8")

    with pytest.raises(ValueError, match="cannot read secret file") as info:
        resolve_secret(None, str(path), {})
    assert "not-utf8" not in str(info.value)


async def test_build_notifiers_resolves_secrets_once_and_reports_failures_at_send(tmp_path: Path) -> None:
    from engine.policy.channels import (
        Channels,  # local: keeps the secret tests independent of the policy layer
    )

    secret_file = tmp_path / "hook-secret"
    secret_file.write_text("whsec\n")
    environ = {"PD_KEY": "0123456789abcdef0123456789abcdef"}
    async with PagerDutySink() as pd, WebhookSink(secret="whsec") as hook, aiohttp.ClientSession() as session:
        channels = Channels.model_validate(
            {
                "pagerduty": {
                    "url": pd.url,
                    "services": {
                        "platform": {"routing_key_env": "PD_KEY"},
                        "gone": {"routing_key_env": "NOPE"},
                    },
                },
                "webhook": {"endpoints": {"ops": {"url": hook.url, "secret_file": str(secret_file)}}},
            }
        )
        notifiers = build_notifiers(channels, session, environ)
        environ["PD_KEY"] = "changed-after-build"

        assert sorted(notifiers) == ["pagerduty", "webhook"]
        await notifiers["pagerduty"].send(replace(MESSAGE, address="platform"))
        with pytest.raises(PermanentDeliveryError, match=r"'gone'.*environment variable NOPE is not set"):
            await notifiers["pagerduty"].send(replace(MESSAGE, address="gone"))
        await notifiers["webhook"].send(replace(MESSAGE, address="ops"))

    assert pd.events[0]["routing_key"] == "0123456789abcdef0123456789abcdef"
    assert verify_signature("whsec", hook.requests[0].headers, hook.requests[0].body)


def test_build_notifiers_skips_unconfigured_channels() -> None:
    from engine.policy.channels import (
        Channels,  # local: keeps the secret tests independent of the policy layer
    )

    assert build_notifiers(Channels(), cast(aiohttp.ClientSession, None), {}) == {}
