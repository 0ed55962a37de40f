"""The `incidents`, `postmortem` and `report` verbs against a REAL engine served in process on a
loopback port (create_app + AppRunner), the CLI run in a worker thread as a user would run it."""

import asyncio
import json
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import structlog
from aiohttp import web

from engine import cli
from engine.api.body import SERVER_ARGS
from engine.app import create_app
from engine.cli import incidents, postmortem, report
from engine.config import Settings
from engine.policy.models import PolicySet

FIXTURES = Path(__file__).parent.parent / "fixtures"
TOKEN = "cli-t0ken"
pytestmark = pytest.mark.redis

POLICIES = PolicySet.model_validate(
    {
        "severities": {"P0": {"description": "Complete outage"}, "P1": {}, "P2": {}, "P3": {}},
        "rules": [
            {"name": "critical", "matchers": ['severity="critical"'], "severity": "P0", "policy": "crit"},
        ],
        "default": {"severity": "P3", "policy": "crit"},
        "escalation_policies": {
            "crit": {
                "levels": [
                    {"after": "0s", "notify": ["user:alice"]},
                    {"after": "15m", "notify": ["user:bob"]},
                ]
            }
        },
        "users": {
            "alice": {"name": "Alice", "email": "alice@example.com"},
            "bob": {"name": "Bob", "email": "bob@example.com"},
        },
    }
)


class Served:
    def __init__(self, url: str, session: aiohttp.ClientSession) -> None:
        self.url = url
        self.session = session

    async def fire(self, name: str = "01-firing-single.json") -> str:
        """Post an Alertmanager fixture; the id of the incident it opened."""
        body = json.loads((FIXTURES / name).read_text())
        headers = {"Authorization": f"Bearer {TOKEN}"}
        async with self.session.post(f"{self.url}/api/v1/alertmanager", json=body, headers=headers) as r:
            assert r.status == 200, await r.text()
            ids: list[str] = (await r.json())["incidents"]
        return ids[0]


@pytest.fixture
async def engine(redis_url: str, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Served]:
    settings = Settings(auth_token=TOKEN, redis_url=redis_url, delivery_poll_s=0.2)
    runner = web.AppRunner(
        create_app(settings, POLICIES, notifiers={}), access_log=None, shutdown_timeout=0.1, **SERVER_ARGS
    )
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    host, port = runner.addresses[0][:2]
    url = f"http://{host}:{port}"
    monkeypatch.setenv("ESCALATION_URL", url)
    monkeypatch.setenv("ESCALATION_TOKEN", TOKEN)
    monkeypatch.setenv("ESCALATION_USER", "alice")
    for name, verb in (("incidents", incidents), ("postmortem", postmortem), ("report", report)):
        monkeypatch.setitem(cli.VERBS, name, verb)
    try:  # the engine's log lines go to a list, not into the CLI's captured stdout
        with structlog.testing.capture_logs():
            async with aiohttp.ClientSession() as session:
                yield Served(url, session)
    finally:
        await runner.cleanup()


async def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """`escalation-engine ARGV...` in a worker thread (the server runs on this loop)."""
    capsys.readouterr()
    code = await asyncio.to_thread(cli.main, list(argv))
    out, err = capsys.readouterr()
    return code, out, err


async def show(capsys: pytest.CaptureFixture[str], incident_id: str) -> dict[str, Any]:
    code, out, err = await run(capsys, "incidents", "show", incident_id, "-o", "json")
    assert code == 0, err
    doc: dict[str, Any] = json.loads(out)
    return doc


async def test_list_show_ack_and_resolve(engine: Served, capsys: pytest.CaptureFixture[str]) -> None:
    inc = await engine.fire()

    code, out, err = await run(capsys, "incidents", "list")
    assert code == 0, err
    header, row = out.splitlines()[:2]
    assert header.split() == ["ID", "SEV", "STATUS", "AGE", "LEVEL", "ON", "IT", "TITLE"]
    assert row.split()[:5] == [inc, "P0", "triggered", row.split()[3], "1"]
    assert row.split()[3].endswith("s")  # opened seconds ago
    assert "user:alice" in row  # paged, nobody acknowledged yet

    code, out, _ = await run(
        capsys, "incidents", "list", "-o", "json", "--severity", "P0", "--label", "team=payments"
    )
    assert code == 0 and [i["id"] for i in json.loads(out)] == [inc]
    code, out, _ = await run(capsys, "incidents", "list", "--status", "acknowledged,resolved")
    assert code == 0 and out.strip() == "no incidents"

    code, out, err = await run(capsys, "incidents", "show", inc)
    assert code == 0, err
    assert out.startswith(f"{inc}  P0  triggered")
    assert "Alerts (1):" in out and "firing" in out and "HighErrorRate" in out
    assert "5xx ratio above 5% on checkout" in out  # the alert's summary
    assert "Timeline (" in out

    code, out, err = await run(capsys, "incidents", "ack", inc, "--note", "looking")
    assert code == 0, err
    assert out.startswith(f"{inc} acknowledged P0") and "on it: alice" in out
    detail = await show(capsys, inc)
    assert detail["acknowledged_by"] == "alice"
    assert any("looking" in e["text"] for e in detail["timeline"])

    code, out, err = await run(capsys, "incidents", "unack", inc, "--by", "bob")
    assert code == 0 and f"{inc} triggered" in out, err

    code, out, err = await run(capsys, "incidents", "resolve", inc, "--by", "bob", "-o", "json")
    assert code == 0, err
    assert json.loads(out)["status"] == "resolved" and json.loads(out)["resolved_by"] == "bob"
    code, out, _ = await run(capsys, "incidents", "list", "--status", "resolved", "-o", "json")
    assert [i["id"] for i in json.loads(out)] == [inc]


async def test_escalate_and_snooze(engine: Served, capsys: pytest.CaptureFixture[str]) -> None:
    inc = await engine.fire()
    code, out, err = await run(capsys, "incidents", "escalate", inc, "--note", "need bob")
    assert code == 0, err
    assert "level 2" in out
    code, out, err = await run(capsys, "incidents", "snooze", inc, "--for", "30m")
    assert code == 0, err
    assert out.startswith(f"{inc} snoozed until ")
    detail = await show(capsys, inc)
    assert detail["status"] == "snoozed" and detail["snoozed_until"]
    code, out, err = await run(capsys, "incidents", "show", inc)
    assert "snoozed until:" in out


async def test_the_engines_refusals_exit_1_with_its_message(
    engine: Served, capsys: pytest.CaptureFixture[str]
) -> None:
    inc = await engine.fire()
    code, out, err = await run(capsys, "incidents", "show", "no-such-incident")
    assert (code, out) == (1, "")
    assert err.strip() == "escalation-engine incidents: HTTP 404: no incident no-such-incident"

    code, _, err = await run(capsys, "incidents", "ack", inc, "--token", "wrong")
    assert code == 1
    assert err.strip() == "escalation-engine incidents: HTTP 401: missing or bad credentials"

    code, _, err = await run(capsys, "incidents", "snooze", inc, "--for", "forever")
    assert code == 1
    assert err.startswith("escalation-engine incidents: HTTP 422: invalid body: duration")
    assert len(err.strip().splitlines()) == 1

    code, _, err = await run(capsys, "incidents", "list", "--limit", "5000")
    assert code == 1 and "HTTP 400: limit" in err


async def test_nothing_listening_exits_3_naming_the_url(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    with socket.socket() as s:  # a port nobody listens on (bound, then released)
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("ESCALATION_URL", f"http://127.0.0.1:{port}")
    monkeypatch.setitem(cli.VERBS, "incidents", incidents)
    monkeypatch.setitem(cli.VERBS, "report", report)
    for argv in (["incidents", "list"], ["incidents", "ack", "x"], ["report"]):
        code, out, err = await run(capsys, *argv)
        assert (code, out) == (3, "")
        assert f"cannot reach the engine at http://127.0.0.1:{port}" in err


async def test_status_update(engine: Served, capsys: pytest.CaptureFixture[str]) -> None:
    inc = await engine.fire()
    argv = ["incidents", "status", inc, "--status", "identified", "--message", "bad deploy, rolling back"]
    code, out, err = await run(capsys, *argv)
    assert code == 0, err
    assert out.startswith(f"{inc} ")
    detail = await show(capsys, inc)
    assert [(u["status"], u["message"], u["by"]) for u in detail["updates"]] == [
        ("identified", "bad deploy, rolling back", "alice")
    ]
    code, out, _ = await run(capsys, "incidents", "show", inc)
    assert "Status updates (1):" in out and "bad deploy, rolling back" in out


async def test_reassign(engine: Served, capsys: pytest.CaptureFixture[str]) -> None:
    inc = await engine.fire()
    code, out, err = await run(
        capsys, "incidents", "reassign", inc, "--to", "user:bob", "--note", "db expert"
    )
    assert code == 0, err
    assert "on it: user:bob" in out
    assert (await show(capsys, inc))["assignee"] == "user:bob"


async def test_open_by_hand(engine: Served, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["incidents", "open", "--title", "EU customers cannot pay", "--severity", "P1"]
    argv += ["--label", "service=checkout", "--description", "three tickets", "--reporter", "carol"]
    code, out, err = await run(capsys, *argv, "-o", "json")
    assert code == 0, err
    opened = json.loads(out)
    assert (opened["title"], opened["severity"], opened["opened_by"]) == (
        "EU customers cannot pay",
        "P1",
        "carol",
    )
    code, out, _ = await run(capsys, "incidents", "list")
    assert opened["id"] in out and "EU customers cannot pay" in out


async def test_postmortem(engine: Served, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    inc = await engine.fire()
    assert (await run(capsys, "incidents", "resolve", inc))[0] == 0
    code, out, err = await run(capsys, "postmortem", inc)
    assert code == 0, err
    assert out.lstrip().startswith("#") and inc in out
    target = tmp_path / "pm.md"
    code, out, err = await run(capsys, "postmortem", inc, "-o", str(target))
    assert code == 0 and out == "" and f"wrote {target}" in err
    assert target.read_text().lstrip().startswith("#")
    code, _, err = await run(capsys, "postmortem", "no-such-incident")
    assert code == 1 and "HTTP 404: no incident no-such-incident" in err


async def test_report(engine: Served, capsys: pytest.CaptureFixture[str]) -> None:
    inc = await engine.fire()
    assert (await run(capsys, "incidents", "ack", inc))[0] == 0
    assert (await run(capsys, "incidents", "resolve", inc))[0] == 0
    code, out, err = await run(capsys, "report", "--since", "30d", "-o", "json")
    assert code == 0, err
    assert isinstance(json.loads(out), dict)
    code, out, err = await run(capsys, "report", "--since", "7d")
    assert code == 0, err
    assert "P0" in out
    code, out, err = await run(capsys, "report", "-o", "markdown")
    assert code == 0, err
    assert "#" in out and "P0" in out
    code, _, err = await run(capsys, "report", "--since", "whenever")
    assert code == 1 and "HTTP 4" in err
