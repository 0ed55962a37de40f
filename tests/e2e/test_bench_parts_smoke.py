"""The incident-size, scaling and soak benchmarks at their smoke sizes: each part runs, returns its keys
with sane values, and renders its RESULTS.md section. No timed assertions (~20 s in all)."""

from collections.abc import Callable
from typing import Any

import pytest

from bench import incident_size, scaling, soak

pytestmark = pytest.mark.e2e

Flat = dict[str, float | int | str | bool]


def section(markdown: Callable[[Flat], list[str]], flat: dict[str, Any]) -> str:
    lines = markdown(flat)
    assert lines[0].startswith("## ")
    assert any(line.startswith("|---") for line in lines)
    return "\n".join(lines)


@pytest.mark.timeout(60)
def test_incident_size_smoke() -> None:
    flat: dict[str, Any] = dict(incident_size.run_part("smoke", print))  # values compared as numbers
    for n in (10, 100):
        pre = f"incident_size.n{n}."
        assert flat[pre + "alerts"] == n
        assert flat[pre + "webhooks"] >= 3 and flat[pre + "duplicate_webhooks"] >= 3
        assert 0 < flat[pre + "webhook_ms_p50"] <= flat[pre + "webhook_ms_p99"]
        assert 0 < flat[pre + "duplicate_ms_p50"] <= flat[pre + "duplicate_ms_p99"]
        assert flat[pre + "cpu_ms_per_webhook"] > 0 and flat[pre + "duplicate_cpu_ms_per_webhook"] > 0
        assert flat[pre + "concurrent_webhooks"] >= flat[pre + "concurrency"] >= 1
        assert flat[pre + "script_usec_per_call"] > 0
        assert flat[pre + "record_bytes"] > 0 and flat[pre + "incident_bytes"] >= flat[pre + "record_bytes"]
        # every timed change was a change and every repeat a duplicate
        for phase in ("", "concurrent_", "duplicate_"):
            assert flat[pre + phase + "unexpected"] == 0
        assert flat[pre + "errors"] == 0 and flat[pre + "duplicate_errors"] == 0
    assert flat["incident_size.ratio_n100_to_n10.cpu_ms_per_webhook"] > 0
    assert "Incident size" in section(incident_size.markdown, flat)


@pytest.mark.timeout(60)
def test_scaling_smoke() -> None:
    flat: dict[str, Any] = dict(scaling.run_part("smoke", print))  # values compared as numbers
    for k in ("300", "1k"):
        pre = f"scaling.open_{k}."
        assert flat[pre + "open_incidents"] >= (300 if k == "300" else 1000)  # and what the mix opened
        assert flat[pre + "open_incidents_after"] > flat[pre + "open_incidents"]  # the mix opened some
        assert flat[pre + "ingest_webhooks_per_s"] > 0 and flat[pre + "ingest_cpu_ms_per_webhook"] > 0
        assert flat[pre + "timers_due"] > 0 and flat[pre + "timers_fired"] == flat[pre + "timers_due"]
        assert 0 <= flat[pre + "timers_lateness_p50_ms"] <= flat[pre + "timers_lateness_max_ms"]
    assert flat["scaling.ratio_1k_to_300.ingest_cpu_ms_per_webhook"] > 0
    assert "Scaling" in section(scaling.markdown, flat)


@pytest.mark.timeout(60)
def test_soak_smoke() -> None:
    flat: dict[str, Any] = dict(soak.run_part("smoke", print))  # values compared as numbers
    assert flat["soak.webhooks"] > 0 and flat["soak.non_2xx"] == 0
    assert flat["soak.acks"] > 0 and flat["soak.acks_non_2xx"] == 0
    assert flat["soak.incidents_opened"] > 0
    assert flat["soak.samples"] >= 2
    assert 0 < flat["soak.rss_start_mb"] <= flat["soak.rss_max_mb"]
    assert flat["soak.rss_end_mb"] <= flat["soak.rss_max_mb"]
    assert flat["soak.redis_used_memory_end_mb"] > 0
    for key in ("soak.rss_growth_mb", "soak.rss_slope_mb_per_hour", "soak.redis_used_memory_growth_mb"):
        assert isinstance(flat[key], float)
    assert "Soak" in section(soak.markdown, flat)
