"""`python -m bench.chaos --short`: three replicas on one Redis, SIGKILLed at random moments while
a storm of incidents pages every channel kind, acknowledged and resolved through the API; every
page counted. No timed assertions: only counts (nothing lost, doubled or unexpected)."""

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
CHANNELS = ("pagerduty", "slack", "telegram", "webhook", "teams", "email")


@pytest.mark.timeout(240)
def test_short_chaos_run_loses_and_doubles_nothing(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    cmd = [sys.executable, "-m", "bench.chaos", "--short", "--out", str(tmp_path)]
    run = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=230)
    assert run.returncode == 0, run.stdout[-6000:] + run.stderr[-4000:]

    r: dict[str, Any] = json.loads((tmp_path / "chaos.json").read_text())
    assert r["chaos.passed"] is True
    assert r["chaos.seed"] >= 0 and f"seed {r['chaos.seed']}" in run.stdout
    assert r["chaos.kills"] >= 10, "too few kills to say anything"
    assert r["chaos.incidents"] >= 10
    for name in ("lost", "doubled", "unexpected", "timeline_problems", "errors"):
        assert r[f"chaos.{name}"] == 0, r["problems"]
    for what in ("pages", "acks", "resolves"):
        assert r[f"chaos.{what}.expected"] > 0
        assert r[f"chaos.{what}.received"] == r[f"chaos.{what}.expected"]
    for channel in CHANNELS:  # every channel kind was paged, and got every page
        p = f"chaos.channel.{channel}."
        assert r[p + "trigger.expected"] > 0
        assert r[p + "received"] == r[p + "expected"]
    pd = "chaos.channel.pagerduty."
    for action in ("acknowledge", "resolve"):  # mirrored to PagerDuty, once per incident each
        assert r[pd + f"{action}.expected"] > 0
        assert r[pd + f"{action}.received"] == r[pd + f"{action}.expected"]
    assert "passed" in (tmp_path / "CHAOS.md").read_text()
