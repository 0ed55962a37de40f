from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any

import aiohttp
import pytest

from engine.errors import PermanentDeliveryError, RetryableDeliveryError
from engine.events import Action
from engine.messages import AlertSummary, Message
from engine.notifiers import factory
from engine.notifiers.teams import MAX_BODY_BYTES, TeamsNotifier, adaptive_card, build, teams_body
from engine.policy.channels import TeamsChannel, TeamsEndpoint
from tests.chat_sinks import TeamsSink, adaptive_card_problems
from tests.sinks import Reply, refused_url

LINKS = {"acknowledge": "https://esc.example/ack/tok-ack", "resolve": "https://esc.example/ack/tok-res"}
PAGE = Message(
    action=Action.TRIGGER,
    incident_id="3-a1b2c3d4e5f6",
    title="[P1] checkout - 5xx ratio above 5%",
    body="Status: Triggered\nWe are aware of an issue affecting checkout.",
    severity="P1",
    severity_rank=1,
    status="triggered",
    level=1,
    target="teams:ops",
    address="ops",
    alerts=(
        AlertSummary(
            fingerprint="ff00",
            status="firing",
            labels={"alertname": "HighErrorRate", "instance": "checkout-1"},
            annotations={"summary": "5xx above 5%", "runbook_url": "https://runbooks.example/checkout"},
            starts_at="2026-11-23T10:00:00Z",
        ),
    ),
    triggered_at="2026-11-23T10:00:05Z",
    incident_url="https://esc.example/api/v1/incidents/3-a1b2c3d4e5f6",
    links=LINKS,
)


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


@pytest.fixture
async def teams() -> AsyncIterator[TeamsSink]:
    async with TeamsSink() as s:
        yield s


def notifier(session: aiohttp.ClientSession, url: str | Exception | None) -> TeamsNotifier:
    return TeamsNotifier(session, {"ops": url}, timeout_s=5)


def facts(card: dict[str, Any]) -> dict[str, str]:
    [factset] = [e for e in card["body"] if e["type"] == "FactSet"]
    return {f["title"]: f["value"] for f in factset["facts"]}


def buttons(card: dict[str, Any]) -> dict[str, str]:
    return {a["title"]: a["url"] for a in card.get("actions", [])}


async def test_a_page_posts_one_adaptive_card(session: aiohttp.ClientSession, teams: TeamsSink) -> None:
    assert await notifier(session, teams.url).send(PAGE) is None

    [request] = teams.requests
    assert request.headers["Content-Type"] == "application/json"
    assert adaptive_card_problems(request.json) == []
    [card] = teams.cards
    assert card["version"] in ("1.4", "1.5")
    assert card["body"][0]["text"] == "[P1] checkout - 5xx ratio above 5%"
    assert card["body"][0]["color"] == "Attention"
    assert facts(card) == {
        "Severity": "P1",
        "Status": "Triggered",
        "Level": "2",
        "Started": "2026-11-23T10:00:05Z",
        "Incident": "3-a1b2c3d4e5f6",
    }
    texts = [e.get("text", "") for e in card["body"]]
    assert texts[2:4] == ["Status: Triggered", "We are aware of an issue affecting checkout."]
    assert [e.get("spacing") for e in card["body"][2:4]] == ["Medium", "None"]  # one line each
    assert "[firing] HighErrorRate · checkout-1 · 5xx above 5%" in texts
    [runbooks] = [e for e in card["body"] if e["type"] == "ActionSet"]
    assert runbooks["actions"] == [
        {"type": "Action.OpenUrl", "title": "Runbook", "url": "https://runbooks.example/checkout"}
    ]
    assert buttons(card) == {
        "Acknowledge": LINKS["acknowledge"],
        "Resolve": LINKS["resolve"],
        "Open incident": PAGE.incident_url,
    }


async def test_state_changes_post_a_new_card_showing_the_state(
    session: aiohttp.ClientSession, teams: TeamsSink
) -> None:
    n = notifier(session, teams.url)
    ack = replace(PAGE, action=Action.ACKNOWLEDGE, status="acknowledged", level=0, acknowledged_by="alice")
    resolved = replace(ack, action=Action.RESOLVE, status="resolved", resolved_by="bob")

    assert await n.send(ack, "ignored-thread") is None
    assert await n.send(resolved) is None

    acked_card, resolved_card = teams.cards
    assert facts(acked_card)["Acknowledged by"] == "alice" and "Level" not in facts(acked_card)
    assert buttons(acked_card) == {"Resolve": LINKS["resolve"], "Open incident": PAGE.incident_url}
    assert facts(resolved_card)["Resolved by"] == "bob"
    assert resolved_card["body"][0]["color"] == "Good"
    assert buttons(resolved_card) == {"Open incident": PAGE.incident_url}  # nothing left to do


def test_blank_lines_become_gaps_and_very_long_bodies_stay_few_blocks() -> None:
    card = adaptive_card(replace(PAGE, body="a\n\n\nb\nc\n" + "line\n" * 500, alerts=()))

    lines = card["body"][2:]
    assert [(e["text"], e["spacing"]) for e in lines[:3]] == [("a", "Medium"), ("b", "Medium"), ("c", "None")]
    assert len(lines) == 60 and lines[-1]["text"].count("line") > 400


def test_no_signed_links_no_action_buttons() -> None:
    card = adaptive_card(replace(PAGE, links={}, incident_url=""))

    assert "actions" not in card


def test_a_huge_incident_stays_under_the_size_cap() -> None:
    alert = PAGE.alerts[0]
    many = tuple(replace(alert, fingerprint=str(i), annotations={"summary": "x" * 400}) for i in range(200))
    data = teams_body(replace(PAGE, alerts=many, body="y" * 50_000))

    assert len(data) <= MAX_BODY_BYTES


@pytest.mark.parametrize("status", [200, 202])
async def test_success_statuses(session: aiohttp.ClientSession, teams: TeamsSink, status: int) -> None:
    teams.script(Reply(status))

    await notifier(session, teams.url).send(PAGE)


async def test_throttling_honours_retry_after(session: aiohttp.ClientSession, teams: TeamsSink) -> None:
    teams.script(Reply(429, {"error": {"message": f"slow down {teams.url}"}}, headers={"Retry-After": "9"}))

    with pytest.raises(RetryableDeliveryError) as info:
        await notifier(session, teams.url).send(PAGE)

    assert info.value.retry_after_s == 9
    assert teams.sig not in str(info.value)


@pytest.mark.parametrize("status", [500, 502, 503])
async def test_server_errors_retry(session: aiohttp.ClientSession, teams: TeamsSink, status: int) -> None:
    teams.script(Reply(status))

    with pytest.raises(RetryableDeliveryError):
        await notifier(session, teams.url).send(PAGE)


async def test_other_client_errors_are_permanent_and_never_show_the_url(
    session: aiohttp.ClientSession, teams: TeamsSink
) -> None:
    wrong = teams.url.replace(teams.sig, "forged")
    with pytest.raises(PermanentDeliveryError) as info:
        await notifier(session, wrong).send(PAGE)

    assert "HTTP 401" in str(info.value) and "teams endpoint 'ops'" in str(info.value)
    assert "forged" not in str(info.value) and "127.0.0.1" not in str(info.value)

    teams.script(Reply(400, {"error": {"message": f"bad request to {teams.url}"}}))
    with pytest.raises(PermanentDeliveryError) as info:
        await notifier(session, teams.url).send(PAGE)
    assert teams.sig not in str(info.value)


async def test_network_failures_retry(session: aiohttp.ClientSession) -> None:
    with pytest.raises(RetryableDeliveryError):
        await notifier(session, refused_url("/x?sig=abc")).send(PAGE)


async def test_configuration_problems_are_permanent(session: aiohttp.ClientSession) -> None:
    with pytest.raises(PermanentDeliveryError, match="not configured"):
        await notifier(session, "https://x").send(replace(PAGE, address="elsewhere"))

    settings = TeamsChannel(endpoints={"ops": TeamsEndpoint(url_env="TEAMS_OPS_URL")})
    with pytest.raises(PermanentDeliveryError, match="TEAMS_OPS_URL"):
        await build(settings, session, {}).send(PAGE)


async def test_built_through_the_registry(session: aiohttp.ClientSession, teams: TeamsSink) -> None:
    build_ = factory("teams")
    assert build_ is not None
    settings = TeamsChannel(endpoints={"ops": TeamsEndpoint(url_env="TEAMS_OPS_URL")})
    n = build_(settings, session, {"TEAMS_OPS_URL": teams.url}, 5.0)

    await n.send(PAGE)

    assert n.endpoint("ops") == "ops"
    assert len(teams.cards) == 1
