"""serve's /metrics: its own registry merged with its worker's scrape into one valid exposition."""

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info
from prometheus_client.exposition import generate_latest as text_format
from prometheus_client.openmetrics.exposition import generate_latest
from prometheus_client.openmetrics.parser import text_string_to_metric_families as parse_openmetrics
from prometheus_client.parser import text_string_to_metric_families as parse_text

from engine.exposition import Merged


def openmetrics(source: CollectorRegistry | Merged) -> bytes:
    out: bytes = generate_latest(source)  # type: ignore[no-untyped-call]
    return out


def registry(sent: int, depth: float, latencies: list[float], only: str) -> CollectorRegistry:
    r = CollectorRegistry()
    Info("build", "b", registry=r).info({"version": "1"})
    c = Counter("sent", "s", ["channel"], registry=r)
    c.labels("email").inc(sent)
    c.labels(only).inc()
    Gauge("depth", "d", registry=r).set(depth)
    h = Histogram("latency_seconds", "l", buckets=(0.1, 1.0), registry=r)
    for v in latencies:
        h.observe(v)
    return r


def values(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value for f in parse_text(text) for s in f.samples}


def test_counters_and_histograms_add_up_gauges_and_info_take_the_larger() -> None:
    ours = registry(2, 0.0, [0.05], "slack")
    theirs = openmetrics(registry(3, 7.0, [0.5, 2.0], "pagerduty"))
    got = values(text_format(Merged(ours, theirs)).decode())
    assert got[("sent_total", (("channel", "email"),))] == 5
    assert got[("sent_total", (("channel", "slack"),))] == 1  # ours only
    assert got[("sent_total", (("channel", "pagerduty"),))] == 1  # theirs only
    assert got[("depth", ())] == 7
    assert got[("build_info", (("version", "1"),))] == 1
    assert got[("latency_seconds_count", ())] == 3
    assert got[("latency_seconds_bucket", (("le", "0.1"),))] == 1
    assert got[("latency_seconds_bucket", (("le", "1.0"),))] == 2
    assert got[("latency_seconds_sum", ())] == 2.55


def test_the_merged_exposition_is_valid_openmetrics_with_each_family_once() -> None:
    theirs = openmetrics(registry(3, 7.0, [0.5], "pagerduty"))
    text = openmetrics(Merged(registry(2, 0.0, [0.05], "slack"), theirs)).decode()
    families = parse_openmetrics(text)  # type: ignore[no-untyped-call]
    names = [f.name for f in families]  # strict: interleaved or repeated families raise
    assert sorted(names) == ["build", "depth", "latency_seconds", "sent"]


def test_without_a_worker_scrape_it_is_our_registry_alone() -> None:
    ours = registry(2, 1.0, [], "slack")
    assert text_format(Merged(ours, None)) == text_format(ours)
