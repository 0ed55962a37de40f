"""The stored record across releases: a field this release does not know (a later release's, read
during a rolling upgrade or after a rollback) is skipped, not an error that stops the incident."""

import orjson

from engine.incident import Incident
from tests.unit.test_big_incident_message import outage


def test_a_field_from_a_later_release_is_skipped() -> None:
    inc = outage()
    raw = orjson.loads(inc.to_json())
    raw["escalation_v9_field"] = {"anything": [1, 2]}

    read = Incident.from_json(orjson.dumps(raw), dict(inc.alerts))

    assert read.to_json() == inc.to_json()
    assert read.common == {"alertname": "HostDown", "service": "edge"}


def test_a_record_from_before_the_shared_labels_reads_as_unknown() -> None:
    inc = outage()
    raw = orjson.loads(inc.to_json())
    del raw["common"]

    read = Incident.from_json(orjson.dumps(raw), {})

    assert read.common is None and read.alert_total == 500
