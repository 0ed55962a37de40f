"""`python -m bench --smoke`: every benchmark runs at a tiny size and reports. No timed assertions:
only that each part ran, wrote its keys with sane values, and wrote nothing into bench/."""

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
BENCH = ROOT / "bench"


def bench_files() -> dict[str, int]:
    """Every file under bench/ (bytecode caches aside) and its modification time."""
    return {
        str(p.relative_to(BENCH)): p.stat().st_mtime_ns
        for p in BENCH.rglob("*")
        if p.is_file() and "__pycache__" not in p.parts
    }


def keys_matching(results: dict[str, Any], pattern: str) -> list[str]:
    return [k for k in results if re.fullmatch(pattern, k)]


@pytest.mark.timeout(180)
def test_smoke_run_reports_every_part(tmp_path: Path) -> None:
    before = bench_files()
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    cmd = [sys.executable, "-m", "bench", "--smoke", "--out", str(tmp_path)]
    run = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=170)
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-4000:]
    assert bench_files() == before, "a run with --out wrote into bench/"

    results: dict[str, Any] = json.loads((tmp_path / "results.json").read_text())
    markdown = (tmp_path / "RESULTS.md").read_text()
    commit = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.strip()
    assert results["meta.commit"] == commit
    assert commit in markdown
    assert results["meta.mode"] == "smoke"
    assert results["meta.quick"] is False
    assert results["meta.cores"] >= 1 and results["meta.python"] == ".".join(map(str, sys.version_info[:3]))
    assert not keys_matching(results, r"meta\.failed\..*")
    for part in ("timers", "repeats", "e2e"):
        assert results[f"meta.seconds.{part}"] > 0

    # end to end: every webhook's page arrived at the PagerDuty sink
    e = "e2e.rate_100."
    assert results[e + "webhooks_sent"] > 0
    assert results[e + "pages_arrived"] == results[e + "webhooks_sent"]
    assert results[e + "pages_missing"] == 0
    assert results[e + "webhook_non_2xx"] == 0
    assert 0 < results[e + "latency_p50_ms"] <= results[e + "latency_p99_ms"] <= results[e + "latency_max_ms"]
    assert "webhook in → PagerDuty page out" in markdown

    # timers: a steady run and a storm, every timer fired
    steady = keys_matching(results, r"timers\.\w+\.rate_\d+\.fired")
    storm = keys_matching(results, r"timers\.\w+\.storm\.fired")
    assert steady and storm
    for key in steady + storm:
        run_prefix = key.removesuffix(".fired")
        assert results[run_prefix + ".unfired"] == 0
        assert results[run_prefix + ".fired_per_s"] > 0
        assert 0 <= results[run_prefix + ".lateness_p50_ms"] <= results[run_prefix + ".lateness_max_ms"]
    assert results["memory.redis_bytes_per_incident"] > 0

    # repeats: CPU per webhook measured
    assert results["repeats.new_cpu_ms_per_webhook"] > 0
    assert results["repeats.repeat_cpu_ms_per_webhook"] > 0

    # ingest needs wrk: measured against the echo, or skipped with a note
    if shutil.which("wrk"):
        check_ingest(results, markdown)
    else:
        assert "wrk" in results["meta.skipped.ingest"]
        assert not keys_matching(results, r"ingest\..*")
        assert "ingest skipped" in markdown


def check_ingest(results: dict[str, Any], markdown: str) -> None:
    """Every cell against its echo; the shipped policies' pages arrived at the receivers, unrefused."""
    cell_ratio = r"ingest\.(stripped|shipped)\.(new|mix)\.a\d+\.c\d+\.ratio_to_ceiling"
    cells = [k.removesuffix(".ratio_to_ceiling") for k in keys_matching(results, cell_ratio)]
    assert {c.split(".")[1] for c in cells} == {"stripped", "shipped"}
    for cell in cells:
        alerts = int(cell.split(".")[3][1:])
        rate = results[cell + ".webhooks_per_s"]
        assert rate > 0
        assert results[cell + ".alerts_per_s"] == pytest.approx(rate * alerts, rel=0.01)
        assert 0 < results[cell + ".p50_ms"] <= results[cell + ".p99_ms"]
        assert results[cell + ".non_2xx"] == 0
        assert results[cell + ".ceiling_webhooks_per_s"] > 0
        assert 0 < results[cell + ".ratio_to_ceiling"] < 1
        assert results[cell + ".incidents_opened"] > 0
    for cell in (c for c in cells if ".shipped." in c):
        assert results[cell + ".sink_requests"] > 0, "no page reached the receivers"
        assert results[cell + ".sink_refused"] == 0, "a receiver refused a delivery as malformed"
        assert results[cell + ".sink.email_requests"] > 0
        assert results[cell + ".notifications_sent"] > 0
    for cell in (c for c in cells if ".stripped." in c):
        assert cell + ".sink_requests" not in results  # no page leaves the stripped policy

    # the names from before the matrix: the stripped 3-alert cells under ingest.<mix>.c<N>
    aliases = keys_matching(results, r"ingest\.(new|mix)\.c\d+\.ratio_to_ceiling")
    assert aliases
    for key in aliases:
        _, mix, conns, _ = key.split(".")
        assert results[key] == results[f"ingest.stripped.{mix}.a3.{conns}.ratio_to_ceiling"]
        assert results[key.replace("ratio_to_ceiling", "webhooks_per_s")] > 0
    assert "sink deliveries" in markdown
    assert "ingest.shipped.mix.a3." in markdown

    # the same shipped cell with serve's worker stopped: nothing sent, what was decided counted
    paused = "ingest.shipped.mix.a3.c8.worker_paused"
    assert results[paused + ".webhooks_per_s"] > 0
    assert results[paused + ".worker_cpu_cores"] == 0  # stopped for the whole measured window
    assert results[paused + ".sink_requests"] == 0
    assert results[paused + ".decided_notifications_per_webhook"] > 0
    assert results[paused + ".engine_cpu_ms_per_webhook"] > 0
    assert "What bounds the ratio" in markdown
