"""One /metrics for two processes: the HTTP process's registry merged with the worker's scrape.

Counters and histograms add up (each process counts its own events). Gauges and info take the
larger value: a gauge is set by one of the two (the other leaves it at 0 or never creates the
series), or by both to the same value (the policies' targets, the last reload).
"""

from collections.abc import Iterable, Iterator

from prometheus_client.metrics_core import Metric
from prometheus_client.openmetrics.parser import text_string_to_metric_families
from prometheus_client.registry import Collector, CollectorRegistry
from prometheus_client.samples import Sample

_LARGER = {"gauge", "info", "stateset"}


def _key(sample: Sample) -> tuple[str, tuple[tuple[str, str], ...]]:
    return sample.name, tuple(sorted(sample.labels.items()))


def merge(ours: Iterable[Metric], theirs: Iterable[Metric]) -> list[Metric]:
    merged = {family.name: family for family in ours}
    for family in theirs:
        mine = merged.get(family.name)
        if mine is None:
            merged[family.name] = family
            continue
        index = {_key(s): i for i, s in enumerate(mine.samples)}
        for sample in family.samples:
            at = index.get(_key(sample))
            if at is None:
                mine.samples.append(sample)
                continue
            held = mine.samples[at]
            value = max(held.value, sample.value) if mine.type in _LARGER else held.value + sample.value
            mine.samples[at] = held._replace(value=value)
    return list(merged.values())


class Merged(Collector):
    """A registry-like view for prometheus_client's exposition: ours plus the worker's text."""

    def __init__(self, registry: CollectorRegistry, worker_text: bytes | None) -> None:
        self.registry = registry
        self.worker_text = worker_text

    def collect(self) -> Iterator[Metric]:
        if not self.worker_text:
            yield from self.registry.collect()
            return
        theirs = text_string_to_metric_families(self.worker_text.decode())  # type: ignore[no-untyped-call]
        yield from merge(self.registry.collect(), theirs)

    def restricted_registry(self, names: Iterable[str]) -> "Merged":
        # `?name[]=` filtering is rare: served unfiltered rather than half-merged
        return self
