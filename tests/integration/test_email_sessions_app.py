"""The engine in process with e-mail built from its policies and a real SMTP server: one session
carries page after page, a reload's new notifier starts its own, and shutting down leaves no
session open (the old notifier's included)."""

from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient

from engine.app import create_app
from engine.config import Settings
from engine.policy.loader import load_policies
from tests.integration.test_api import TOKEN, EngineTestServer, body, wait_for
from tests.unit.test_notifier_email import StartServer, open_sockets_to, smtp_server
from tests.unit.test_smtp_sessions import Sessions

__all__ = ["smtp_server"]
pytestmark = pytest.mark.redis
AUTH = {"Authorization": f"Bearer {TOKEN}"}
POLICY = """
severities:
  P1: {{description: Major}}
default: {{severity: P1, policy: page}}
escalation_policies:
  page:
    levels:
      - after: 0s
        notify: [user:alice]
users:
  alice:
    email: alice@example.com
    notify: [{{after: 0s, via: email}}]
channels:
  email: {{smtp_host: 127.0.0.1, smtp_port: {port}, starttls: false, from: "{sender}"}}
"""


def write(d: Path, port: int, sender: str) -> None:
    (d / "policy.yaml").write_text(POLICY.format(port=port, sender=sender))


async def test_pages_share_a_session_until_a_reload_and_none_outlives_the_engine(
    tmp_path: Path, redis_url: str, smtp_server: StartServer
) -> None:
    handler = Sessions()
    server = smtp_server(handler)
    write(tmp_path, server.port, "engine@example.com")
    settings = Settings(redis_url=redis_url, auth_token=TOKEN, policies=tmp_path, delivery_poll_s=0.2)
    app = create_app(settings, load_policies(tmp_path))
    async with TestClient(EngineTestServer(app)) as client:

        async def page(group: str, mails: int) -> None:
            payload = body("01-firing-single.json") | {"groupKey": group}
            resp = await client.post("/api/v1/alertmanager", json=payload, headers=AUTH)
            assert resp.status == 200, await resp.text()
            await wait_for(lambda: len(handler.envelopes) == mails)

        for n in range(3):
            await page(f"g{n}", n + 1)
        assert len(set(handler.peers)) == 1
        assert open_sockets_to(server.port) == 1

        write(tmp_path, server.port, "escalation@example.com")  # e-mail's settings changed
        assert (await client.post("/-/reload", headers=AUTH)).status == 200
        await page("g3", 4)
        assert handler.envelopes[-1].mail_from == "escalation@example.com"
        assert len(set(handler.peers)) == 2  # the new notifier's own session

    assert open_sockets_to(server.port) == 0  # both notifiers' sessions QUIT and closed
    assert len(handler.envelopes) == 4
