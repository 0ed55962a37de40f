"""The OpenAPI document, and schemathesis fuzzing the engine process through it.

schemathesis reads /api/v1/openapi.json and generates requests for every operation, valid and
invalid, following the document's links from a webhook's answer to the incidents it opened.
The checks: no 5xx, status codes and content types as documented, bodies that match their
schemas, and invalid data refused. Bounded: a fixed seed and 25 examples per operation.
"""

import asyncio
import shutil
import sys
from pathlib import Path

import pytest

from tests.e2e.harness import TOKEN, EngineProcess

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).parent.parent.parent
CHECKS = ",".join(
    [
        "not_a_server_error",
        "status_code_conformance",
        "content_type_conformance",
        "response_schema_conformance",
        "negative_data_rejection",
    ]
)


async def test_the_document_describes_every_route_and_fuzzing_through_it_finds_nothing(
    tmp_path: Path,
) -> None:
    # configured as deployed: Slack clicks are verified (the fuzzer's unsigned ones get 401)
    env = {"SLACK_SIGNING_SECRET": "fuzz-signing-secret"}
    engine = EngineProcess(ROOT / "policies", tmp_path / "data", tmp_path / "engine.log", env)
    await engine.start()
    try:
        doc = await engine.call("GET", "/api/v1/openapi.json")
        assert doc["openapi"].startswith("3.1")
        paths = set(doc["paths"])
        for route in [
            "/api/v1/alertmanager",
            "/api/v1/incidents",
            "/api/v1/incidents/{id}",
            "/api/v1/deadletters",
            "/api/v1/deadletters/{id}/redrive",
            "/api/v1/slack/interactions",
            "/api/v1/telegram/updates",
            "/ack/{token}",
        ]:
            assert route in paths
        actions = {p.rsplit("/", 1)[1] for p in paths if p.startswith("/api/v1/incidents/{id}/")}
        assert actions == {
            "ack",
            "unack",
            "resolve",
            "escalate",
            "snooze",
            "status",
            "reassign",
            "postmortem",
        }
        alert = doc["components"]["schemas"]["AlertmanagerAlert"]
        assert {"startsAt", "labels", "status"} <= set(alert["properties"])  # from the validating model

        cli = shutil.which("schemathesis", path=str(Path(sys.executable).parent)) or "schemathesis"
        proc = await asyncio.create_subprocess_exec(
            *[
                cli,
                "run",
                f"{engine.url}/api/v1/openapi.json",
                "--header",
                f"Authorization: Bearer {TOKEN}",
                "--checks",
                CHECKS,
                "--max-examples",
                "25",
                "--seed",
                "20261202",
                "--workers",
                "1",
                "--request-timeout",
                "10",
            ],
            cwd=tmp_path,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        async with asyncio.timeout(240):
            out, _ = await proc.communicate()
        summary = out.decode(errors="replace")[-3000:]
        assert proc.returncode == 0, summary
        assert " passed" in summary and "failure" not in summary.lower().split("summary")[-1], summary
        assert "Traceback" not in engine.log_text()
    finally:
        engine.stop()
