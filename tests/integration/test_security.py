"""The attacks, one by one, against the engine in process and as `serve` (real redis-server).

Covered here: every write endpoint refuses requests without credentials; credentials of any shape
are compared without a 500; failed attempts are rate limited per address (API and console);
`serve` refuses to listen beyond loopback without auth and takes HTTPS; secrets never reach the
log or an API answer. Covered where the feature lives: forged, stale and replayed Slack clicks
(test_slack_interactions), Telegram updates without the secret (test_telegram_updates), tampered,
expired and replayed signed links (test_links, tests/unit/test_links), template sandbox escapes
refused at load (tests/unit/test_templates), slow and crowding clients (e2e/test_slow_clients).
"""

import os
import re
import socket
import ssl
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient
from prometheus_client import CollectorRegistry

from engine.api.auth import FailedAttempts, client_key, exposure_problem, make_auth
from engine.app import create_app
from engine.config import Settings
from engine.notifiers import PagerDutyNotifier
from tests.e2e.harness import free_port, wait_http
from tests.integration.test_api import POLICIES, ROUTING_KEY, TOKEN, EngineTestServer, body
from tests.sinks import PagerDutySink

pytestmark = pytest.mark.redis
ROOT = Path(__file__).parent.parent.parent
# routes that verify the caller their own way (a signature, a secret, a signed token, a session)
SELF_VERIFIED = {"/api/v1/slack/interactions", "/api/v1/telegram/updates", "/ack/{token}", "/login"}


@pytest.fixture
async def client(redis_url: str) -> AsyncIterator[TestClient[Any, Any]]:
    settings = Settings(auth_token=TOKEN, redis_url=redis_url, auth_failures_per_minute=3)
    async with PagerDutySink() as pd, aiohttp.ClientSession() as session:
        notifiers = {"pagerduty": PagerDutyNotifier(session, pd.url, {"platform": ROUTING_KEY})}
        app = create_app(settings, POLICIES, notifiers=notifiers, registry=CollectorRegistry())
        async with TestClient(EngineTestServer(app)) as c:
            yield c


def _concrete(path: str) -> str:
    return re.sub(r"\{(\w+)\}", lambda m: {"action": "ack", "verb": "ack"}.get(m[1], "x"), path)


async def test_every_write_endpoint_refuses_a_caller_without_credentials(
    client: TestClient[Any, Any],
) -> None:
    writes = sorted(
        {r.resource.canonical for r in client.app.router.routes() if r.method == "POST" and r.resource}
    )
    assert "/api/v1/alertmanager" in writes and "/-/reload" in writes
    for path in writes:
        resp = await client.post(_concrete(path), data=b"{}", allow_redirects=False)
        text = await resp.text()
        if path in SELF_VERIFIED:
            assert resp.status in (400, 401, 403, 404, 410), f"{path}: {resp.status} {text}"
        elif path.startswith("/api/") or path.startswith("/-/"):
            assert resp.status == 401, f"{path}: {resp.status} {text}"
            assert resp.headers["WWW-Authenticate"].startswith("Bearer")
        else:  # the console: no session, no CSRF token
            assert resp.status in (303, 403), f"{path}: {resp.status} {text}"
    incidents = await (await client.get("/api/v1/incidents")).json()
    assert incidents["incidents"] == []  # and nothing was written by any of them


@pytest.mark.parametrize(
    "header",
    [
        f"Bearer {TOKEN[:-1]}x",  # same length, last byte wrong
        f"Bearer {TOKEN}{TOKEN}",
        "Bearer ",
        "Bearer t\u00f6ken",  # not ASCII
        "Basic !!!not-base64!!!",
        "Basic " + "QUJD" * 1000,
        "Token " + TOKEN,
    ],
)
async def test_credentials_of_any_shape_are_a_401_never_a_500(
    client: TestClient[Any, Any], header: str
) -> None:
    resp = await client.post(
        "/api/v1/alertmanager", json=body("01-firing-single.json"), headers={"Authorization": header}
    )
    assert resp.status == 401, await resp.text()
    assert (await resp.json())["error"] == "missing or bad credentials"


async def test_failed_attempts_are_limited_per_address_even_for_the_right_token(
    client: TestClient[Any, Any],
) -> None:
    bad = {"Authorization": "Bearer guess"}
    for _ in range(3):
        assert (await client.post("/-/reload", headers=bad)).status == 401
    for headers in (bad, {"Authorization": f"Bearer {TOKEN}"}):
        resp = await client.post("/-/reload", headers=headers)
        assert resp.status == 429, await resp.text()
        assert 1 <= int(resp.headers["Retry-After"]) <= 60
        assert "too many failed authentication attempts" in (await resp.json())["error"]
    login = await (await client.get("/login")).text()
    csrf = re.search(r'name="csrf" value="([^"]+)"', login)
    assert csrf is not None
    form = {"csrf": csrf[1], "token": TOKEN, "name": "mallory"}
    page = await client.post("/login", data=form, allow_redirects=False)  # the console shares the count
    assert page.status == 429
    assert "Too many failed attempts" in await page.text()


async def test_a_blocked_address_gets_503_on_the_webhook_so_alertmanager_retries(
    client: TestClient[Any, Any],
) -> None:
    for _ in range(3):
        await client.post("/-/reload", headers={"Authorization": "Bearer guess"})
    resp = await client.post(
        "/api/v1/alertmanager",
        json=body("01-firing-single.json"),
        headers={"Authorization": f"Bearer {TOKEN}"},
    )
    assert resp.status == 503  # a 429 would be dropped by Alertmanager; a 5xx is retried
    assert int(resp.headers["Retry-After"]) >= 1


def test_failures_are_counted_per_ipv6_64_and_per_ipv4_address() -> None:
    assert client_key("2001:db8:1:2:aaaa::1") == client_key("2001:db8:1:2:bbbb::7") == "2001:db8:1:2::/64"
    assert client_key("2001:db8:1:3::1") != client_key("2001:db8:1:2::1")
    assert client_key("::ffff:10.0.0.1") == "10.0.0.1" and client_key("10.0.0.2") == "10.0.0.2"
    assert client_key("::1") == "::1" and client_key(None) == ""


def test_serve_says_so_when_the_port_is_taken_before_starting_anything(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        proc = _serve({}, "--listen", f"127.0.0.1:{port}", "--data-dir", str(tmp_path))
        out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 2, out
    assert f"cannot listen on 127.0.0.1:{port}: Address already in use".encode() in out
    assert b"Traceback" not in out and b"engine_started" not in out


def test_an_encrypted_tls_key_is_refused_with_a_message_not_a_prompt(tmp_path: Path) -> None:
    cert, key = _self_signed(tmp_path)
    locked = tmp_path / "locked.pem"
    subprocess.run(
        ["openssl", "pkey", "-in", str(key), "-aes256", "-passout", "pass:x", "-out", str(locked)],
        check=True,
        capture_output=True,
    )
    env = {"ESCALATION_TLS_CERT_FILE": str(cert), "ESCALATION_TLS_KEY_FILE": str(locked)}
    proc = _serve(env, "--listen", f"127.0.0.1:{free_port()}", "--data-dir", str(tmp_path / "d"))
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 2, out
    assert b"is encrypted: give an unencrypted PEM key" in out


def test_the_failure_count_slides_and_is_per_address() -> None:
    now = [1000.0]
    attempts = FailedAttempts(per_minute=2, clock=lambda: now[0])
    attempts.failed("10.0.0.1")
    now[0] += 30
    attempts.failed("10.0.0.1")
    assert attempts.retry_after_s("10.0.0.1") == 30  # until the first failure is a minute old
    assert attempts.retry_after_s("10.0.0.2") == 0
    now[0] += 30.5
    assert attempts.retry_after_s("10.0.0.1") == 0  # one failure left in the window
    for i in range(FailedAttempts.MAX_ADDRESSES + 5):  # a flood of addresses is bounded in memory
        attempts.failed(f"192.0.2.{i}")
    assert len(attempts._seen) == FailedAttempts.MAX_ADDRESSES


@pytest.mark.parametrize(
    ("host", "configured", "refused"),
    [
        ("127.0.0.1", {}, False),
        ("::1", {}, False),
        ("localhost", {}, False),
        ("0.0.0.0", {}, True),  # noqa: S104 - the case under test
        ("10.1.2.3", {}, True),
        ("example.internal", {}, True),
        ("0.0.0.0", {"auth_token": "t"}, False),  # noqa: S104
        ("0.0.0.0", {"auth_basic_user": "u", "auth_basic_password": "p"}, False),  # noqa: S104
        ("0.0.0.0", {"insecure_no_auth": True}, False),  # noqa: S104
    ],
)
def test_listening_beyond_loopback_needs_auth_or_an_explicit_flag(
    host: str, configured: dict[str, Any], refused: bool
) -> None:
    settings = Settings(**configured)
    problem = exposure_problem(settings, make_auth(settings), host)
    assert (problem is not None) == refused
    if refused:
        assert problem is not None and "--insecure-no-auth" in problem and host in problem


def _serve(env: dict[str, str], *args: str) -> subprocess.Popen[bytes]:
    cmd = [sys.executable, "-m", "engine", "serve", "--policies", str(ROOT / "policies"), *args]
    clean = {k: v for k, v in os.environ.items() if not k.startswith("ESCALATION_")}
    return subprocess.Popen(cmd, env={**clean, **env}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def test_serve_refuses_to_listen_on_all_interfaces_without_auth(tmp_path: Path) -> None:
    proc = _serve({}, "--listen", f"0.0.0.0:{free_port()}", "--data-dir", str(tmp_path))
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 2
    assert b"refusing to start: it would listen on 0.0.0.0 without authentication" in out
    assert b"Traceback" not in out


@pytest.mark.parametrize(
    ("env", "says"),
    [
        ({"ESCALATION_TLS_CERT_FILE": "/nonexistent/cert.pem"}, b"ESCALATION_TLS_KEY_FILE is not"),
        (
            {
                "ESCALATION_TLS_CERT_FILE": "/nonexistent/c.pem",
                "ESCALATION_TLS_KEY_FILE": "/nonexistent/k.pem",
            },
            b"TLS certificate /nonexistent/c.pem / key /nonexistent/k.pem: No such file or directory",
        ),
        ({"ESCALATION_AUTH_TOKEN_FILE": "/nonexistent/token"}, b"/nonexistent/token: No such file"),
        ({"ESCALATION_AUTH_TOKEN": " "}, b"ESCALATION_AUTH_TOKEN(_FILE) is empty"),  # else "Bearer " matches
        ({"ESCALATION_AUTH_BASIC_USER": "u"}, b"without ESCALATION_AUTH_BASIC_PASSWORD"),
    ],
)
def test_bad_tls_or_credential_files_stop_serve_with_a_clear_message(
    tmp_path: Path, env: dict[str, str], says: bytes
) -> None:
    proc = _serve(env, "--listen", f"127.0.0.1:{free_port()}", "--data-dir", str(tmp_path))
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 2, out
    assert says in out, out
    assert b"Traceback" not in out


def _self_signed(tmp: Path) -> tuple[Path, Path]:
    cert, key = tmp / "cert.pem", tmp / "key.pem"
    subprocess.run(
        [
            *("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"),
            *("-subj", "/CN=localhost", "-addext", "subjectAltName=IP:127.0.0.1"),
            *("-keyout", str(key), "-out", str(cert)),
        ],
        check=True,
        capture_output=True,
    )
    return cert, key


async def test_serve_speaks_https_with_a_certificate_and_secrets_stay_out_of_logs_and_answers(
    tmp_path: Path,
) -> None:
    cert, key = _self_signed(tmp_path)
    port = free_port()
    secret_token = "tok-" + os.urandom(8).hex()
    env = {
        "ESCALATION_TLS_CERT_FILE": str(cert),
        "ESCALATION_TLS_KEY_FILE": str(key),
        "ESCALATION_AUTH_TOKEN": secret_token,
        "ESCALATION_LOG_FORMAT": "json",
        "ESCALATION_LOG_LEVEL": "debug",
        "SLACK_BOT_TOKEN": "xoxb-" + os.urandom(8).hex(),  # the shipped policies read these
        "PAGERDUTY_ROUTING_KEY_PLATFORM": os.urandom(16).hex(),
    }
    proc = _serve(env, "--listen", f"0.0.0.0:{port}", "--data-dir", str(tmp_path / "data"))  # auth: allowed
    trust = ssl.create_default_context(cafile=str(cert))
    try:
        async with aiohttp.ClientSession() as session:
            await wait_http(f"https://127.0.0.1:{port}/-/ready", 20, proc, trust)
            auth = {"Authorization": f"Bearer {secret_token}"}
            url = f"https://127.0.0.1:{port}"
            async with session.post(
                f"{url}/api/v1/alertmanager", json=body("01-firing-single.json"), headers=auth, ssl=trust
            ) as resp:
                assert resp.status == 200, await resp.text()
            answers = []
            for path in ("/api/v1/incidents", "/metrics", "/-/ready", "/api/v1/openapi.json", "/login"):
                async with session.get(url + path, ssl=trust, headers=auth) as resp:
                    answers.append(await resp.text())
            with pytest.raises(aiohttp.ClientError):  # plain HTTP to the TLS port is not served
                async with session.get(f"http://127.0.0.1:{port}/-/healthy") as resp:
                    await resp.read()
            async with session.post(
                f"{url}/-/reload", headers={"Authorization": "Bearer nope"}, ssl=trust
            ) as r:
                assert r.status == 401
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=30)
    seen = out.decode() + "".join(answers)
    assert '"webhook"' in seen and "engine_started" in seen  # the log really was captured
    for name in ("ESCALATION_AUTH_TOKEN", "SLACK_BOT_TOKEN", "PAGERDUTY_ROUTING_KEY_PLATFORM"):
        assert env[name] not in seen, f"{name}'s value leaked"
