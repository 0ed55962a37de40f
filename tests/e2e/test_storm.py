"""A small alert storm against a real `serve` (bench/storm.py at a tiny size, with a low in-flight
cap so that shedding happens): the engine sheds with 503 + Retry-After and nothing else, keeps
every alert it accepted, pages the level 2 of the incidents it already had, and stays live."""

import pytest

from bench.storm import measure, parse_args

pytestmark = pytest.mark.e2e


@pytest.mark.timeout(240)
async def test_a_storm_is_shed_with_retry_after_and_costs_no_accepted_alert_or_deadline() -> None:
    args = parse_args(
        [
            *("--alerts", "2000", "--within", "2", "--senders", "48", "--per-webhook", "10"),
            *("--pre", "5", "--level2-after", "4", "--max-seconds", "120", "--group-by", "alert"),
            *("--drain", "60", "--env", "ESCALATION_MAX_INFLIGHT_WEBHOOKS", "4"),
        ]
    )
    result = await measure(args)
    answers = result["webhook_answers"]
    assert set(answers) <= {"200", "503"}, answers
    assert answers.get("503", 0) > 0, "the storm was never shed: the test proves nothing"
    assert result["shed_503_without_retry_after"] == 0
    assert result["alerts_accepted"] + result["alerts_unsent_at_deadline"] == 2000
    assert result["alerts_unsent_at_deadline"] == 0
    assert result["accepted_incidents_missing_in_redis"] == 0
    assert result["pre_level2_arrived"] == result["pre_incidents"] == 5
    assert result["health_failures"] == 0
    assert result["storm_incidents_paged"] == 2000  # every storm incident paged
    assert result["storm_incidents_not_paged"] == 0
