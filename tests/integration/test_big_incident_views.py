"""A fleet-wide outage's incident in the API and the console: what they answer with is bounded
(some alerts, the firing ones first, and counts of all), not a page of every alert it holds."""

import copy
import re
from typing import Any

from tests.integration.test_console import Console, alert_body, console

__all__ = ["console"]
HOSTS = 900  # under the store's scan budget: every firing one is found


def fleet(resolved: bool = False) -> dict[str, Any]:
    body = alert_body(team="edge")
    first = body["alerts"][0]
    alerts = []
    for n in range(HOSTS):
        a = copy.deepcopy(first)
        a["labels"]["instance"] = f"host-{n}:9100"
        a["fingerprint"] = f"{n:016x}"
        if resolved and n >= 10:  # all but ten
            a["status"], a["endsAt"] = "resolved", "2026-11-23T18:00:00Z"
        alerts.append(a)
    body["alerts"] = alerts
    return body


async def test_the_api_answers_with_some_alerts_the_firing_first_and_counts_them_all(
    console: Console,
) -> None:
    incident_id = await console.webhook(fleet())
    await console.webhook(fleet(resolved=True))

    detail = await console.api_incident(incident_id)

    assert (detail["alert_count"], detail["firing"], len(detail["alerts"])) == (HOSTS, 10, 100)
    assert [a["status"] for a in detail["alerts"][:11]] == ["firing"] * 10 + ["resolved"]
    few = await (await console.client.get(f"/api/v1/incidents/{incident_id}?alerts=3")).json()
    assert len(few["alerts"]) == 3 and few["alert_count"] == HOSTS
    none = await (await console.client.get(f"/api/v1/incidents/{incident_id}?alerts=0")).json()
    assert none["alerts"] == [] and none["firing"] == 10
    for bad in ("1001", "-1", "all", "1e3"):
        resp = await console.client.get(f"/api/v1/incidents/{incident_id}?alerts={bad}")
        assert resp.status == 400, bad
        assert (await resp.json())["error"].startswith("alerts: expected a whole number from 0 to 1000")
    [listed] = (await (await console.client.get("/api/v1/incidents")).json())["incidents"]
    assert (listed["alert_count"], len(listed["alerts"])) == (HOSTS, 50)


async def test_the_console_page_shows_a_hundred_and_says_how_many_there_are(console: Console) -> None:
    incident_id = await console.webhook(fleet())
    await console.login()

    status, page = await console.get(f"/incidents/{incident_id}")

    assert status == 200
    assert f"{HOSTS} firing of {HOSTS}" in page
    assert "Showing 100, the firing ones first." in page
    assert len(re.findall(r'class="alert card firing"', page)) == 100
    assert len(page) < 400_000  # every host's alert made it 14 MB at 10,000
    status, listing = await console.get("/?q=team=edge")  # the list reads 50 of each incident's
    assert status == 200 and incident_id in listing
