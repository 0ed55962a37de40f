"""A page about a fleet-wide outage: the incident holds thousands of alerts, the message shows at
most SHOWN_ALERTS of them (the firing ones first) and counts them all, in every channel."""

import json
import re
from dataclasses import replace

from engine.alerts import AlertStatus
from engine.events import Action
from engine.incident import AlertState, Incident
from engine.messages import SHOWN_ALERTS, Message, build_message
from engine.notifiers.email import build_email
from engine.notifiers.pagerduty import event_body
from engine.notifiers.slack import page_blocks
from engine.notifiers.teams import adaptive_card
from engine.notifiers.webhook import webhook_body
from tests.unit.test_messages import POLICIES, T0, incident

RESOLVED, FIRING = 300, 200


def outage() -> Incident:
    """500 alerts joined one by one: the resolved ones first, so a read in order meets them first."""
    inc = incident(alerts={}, firing_by=None, alert_total=None)
    for n in range(RESOLVED + FIRING):
        status = AlertStatus.RESOLVED if n < RESOLVED else AlertStatus.FIRING
        labels = {"alertname": "HostDown", "service": "edge", "instance": f"host-{n}:9100"}
        url = f"http://prom.example/graph?g0.expr=up&i={n}"
        inc.set_alert(
            AlertState(f"fp{n:04d}", status, T0, labels, {"summary": "host down"}, generator_url=url)
        )
    return inc


def page(inc: Incident) -> Message:
    return build_message(
        inc, Action.TRIGGER, level=0, target="user:a", address="a@example.com", policies=POLICIES
    )


def test_the_message_shows_the_firing_alerts_first_and_counts_them_all() -> None:
    inc = outage()

    msg = page(inc)

    assert len(msg.alerts) == SHOWN_ALERTS
    assert all(a.status == "firing" for a in msg.alerts)
    assert (msg.total_alerts, msg.total_firing) == (500, 200)
    assert msg.labels == {"alertname": "HostDown", "service": "edge"}  # kept as the alerts joined


def test_with_fewer_firing_than_shown_the_rest_are_resolved_ones() -> None:
    inc = outage()
    for n in range(RESOLVED + 10, RESOLVED + FIRING):  # all but 10 resolve
        inc.set_alert(replace(inc.alerts[f"fp{n:04d}"], status=AlertStatus.RESOLVED))

    msg = page(inc)

    assert [a.status for a in msg.alerts] == ["firing"] * 10 + ["resolved"] * (SHOWN_ALERTS - 10)
    assert (msg.total_alerts, msg.total_firing) == (500, 10)


def test_a_partial_read_still_names_what_every_alert_shares() -> None:
    """The store reads a few alerts for a message; the record keeps the labels all of them share."""
    whole = outage()
    partial = Incident.from_json(whole.to_json(), {fp: whole.alerts[fp] for fp in ("fp0400", "fp0401")})

    msg = page(partial)

    assert msg.labels == {"alertname": "HostDown", "service": "edge"}  # not the two's "instance"
    assert (msg.total_alerts, msg.total_firing) == (500, 200)
    assert len(msg.alerts) == 2


def test_every_channel_counts_all_and_lists_few() -> None:
    msg = page(outage())

    pd = event_body(msg, "0" * 32)["payload"]["custom_details"]
    assert (pd["alert_count"], pd["firing"], len(pd["alerts"])) == (500, 200, SHOWN_ALERTS)
    hook = webhook_body(msg)
    assert (hook["alert_count"], hook["firing"], len(hook["alerts"])) == (500, 200, SHOWN_ALERTS)
    slack = json.dumps(page_blocks(msg), ensure_ascii=False)
    more = re.search(r"…and (\d+) more alerts", slack)
    assert more is not None and int(more.group(1)) + slack.count("• `firing`") == 500
    teams = json.dumps(adaptive_card(msg), ensure_ascii=False)
    assert "…and 480 more" in teams  # 20 shown of 500
    mail = build_email(msg, "e@example.com", hostname_for_ids="example.com").as_string()
    assert mail.count("Graph: HostDown") <= SHOWN_ALERTS  # not a link per host of the fleet
