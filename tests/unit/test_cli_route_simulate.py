"""The route and simulate verbs: tables for people, one JSON document for scripts, exit 2 on misuse."""

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from engine.cli import main
from engine.cli.route import parse_labels

ROOT = Path(__file__).parent.parent.parent
POLICIES = str(ROOT / "policies")
FIRING = str(ROOT / "tests" / "fixtures" / "01-firing-single.json")
INVALID = str(ROOT / "tests" / "fixtures" / "policies" / "invalid" / "bad-duration")


def run_json(capsys: pytest.CaptureFixture[str], *args: str) -> Any:
    assert main([*args, "--policies", POLICIES, "-o", "json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_simulate_table(capsys: pytest.CaptureFixture[str]) -> None:
    args = ["simulate", "--alert", FIRING, "--at", "2027-03-26T18:00:00+01:00", "--ack-at", "20m"]
    assert main([*args, "--policies", POLICIES]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "HighErrorRate (af1df04a58c8db18): rule critical-prod -> P0, policy critical"
    assert lines[1] == "triggered at 2027-03-26 18:00:00+01:00; ack at +20m"
    assert lines[2].split() == ["OFFSET", "TIME", "LEVEL", "TARGET", "WHO", "CHANNEL", "ACTION", "NOTE"]
    row = "+0s 2027-03-26 18:00+01:00 1 user:sre-oncall sre-oncall email:sre-oncall@example.com trigger"
    assert lines[3].split() == row.split()
    slack = "+0s 2027-03-26 18:00+01:00 1 user:sre-oncall sre-oncall slack:U01SREONC trigger"
    assert lines[4].split() == slack.split()
    channel = "+0s 2027-03-26 18:00+01:00 1 slack:#incidents - slack:#incidents trigger"
    assert channel.split() in [line.split() for line in lines]
    assert any(
        line.split()[:5] == ["+15m", "2027-03-26", "18:15+01:00", "2", "user:eng-manager"] for line in lines
    )
    # level 1: two users on email and Slack, PagerDuty, the audit hook, #incidents; and level 2's
    assert sum("acknowledge" in line for line in lines) == 8


def test_simulate_json_keeps_the_offset_of_at(capsys: pytest.CaptureFixture[str]) -> None:
    doc = run_json(
        capsys, "simulate", "--alert", FIRING, "--at", "2027-03-26T18:00:00+01:00", "--ack-at", "4m"
    )
    assert doc["at"] == "2027-03-26T18:00:00+01:00" and doc["ack_at"] == "2027-03-26T18:04:00+01:00"
    assert doc["resolve_at"] is None
    first = doc["pages"][0]
    keys = "offset_s at incident level target user channel address action note held_until"
    assert list(first) == keys.split()
    assert [first[k] for k in ("offset_s", "level", "action", "held_until")] == [0, 1, "trigger", None]
    acked = [p for p in doc["pages"] if p["action"] == "acknowledge"]
    assert {p["at"] for p in acked} == {"2027-03-26T18:04:00+01:00"} and {p["level"] for p in acked} == {0}
    # until: acknowledged: the next page is the ack timeout's, 30m after the ack
    later = [p for p in doc["pages"] if p["action"] == "trigger" and p["offset_s"] > 0]
    assert later[0]["offset_s"] == 34 * 60 and "not resolved in time" in later[0]["note"]


def test_simulate_a_label_set_pages_the_one_on_call(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    alert = tmp_path / "p1.json"
    alert.write_text(json.dumps({"alertname": "Slow", "severity": "error", "service": "checkout"}))
    at = "2027-03-26T12:00:00Z"
    doc = run_json(capsys, "simulate", "--alert", str(alert), "--at", at, "--resolve-at", "45m")
    oncall = run_json(capsys, "oncall", "sre-primary", "--at", at)["oncall"]
    paged = [p for p in doc["pages"] if p["target"] == "schedule:sre-primary" and p["action"] == "trigger"]
    assert oncall == ["alice"]
    assert [(p["user"], p["channel"]) for p in paged] == [("alice", "email"), ("alice", "slack")]
    assert [(p["offset_s"], p["user"], p["channel"]) for p in doc["pages"] if p["level"] == 2] == [
        (1800, "senior-sre", "email"),
        (1800, "senior-sre", "slack"),
    ]
    assert doc["pages"][0]["at"] == "2027-03-26T12:00:00+00:00"
    assert {p["action"] for p in doc["pages"] if p["offset_s"] == 45 * 60} == {"resolve"}


def test_simulate_a_watchdog_says_why_nothing_pages(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    (tmp_path / "w.json").write_text('{"alertname": "Watchdog"}')
    assert main(["simulate", "--alert", str(tmp_path / "w.json"), "--policies", POLICIES]) == 0
    out = capsys.readouterr().out
    assert "heartbeat of rule watchdog, opens no incident" in out and out.endswith("no notifications\n")


@pytest.mark.parametrize(
    ("content", "extra", "says"),
    [
        (None, [], "No such file"),
        ("{not json", [], "--alert"),
        ('{"alertname": 1}', [], "neither a label set nor a webhook"),
        ('{"alertname": "X"}', ["--at", "2027-03-26T12:00"], "has no offset"),
        ('{"alertname": "X"}', ["--ack-at", "4 minutes"], "--ack-at: invalid duration"),
        ('{"alertname": "X"}', ["--resolve-at=-1m"], "--resolve-at: invalid duration"),
    ],
)
def test_simulate_usage_errors_exit_2(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, content: str | None, extra: list[str], says: str
) -> None:
    alert = tmp_path / "a.json"
    if content is not None:
        alert.write_text(content)
    assert main(["simulate", "--alert", str(alert), *extra, "--policies", POLICIES]) == 2
    assert says in capsys.readouterr().err


def test_route_critical_shows_the_ladder_and_who_it_reaches(capsys: pytest.CaptureFixture[str]) -> None:
    doc = run_json(
        capsys, "route", "--labels", "severity=critical,service=checkout", "--at", "2027-03-26T12:00:00Z"
    )
    assert (doc["rule"], doc["severity"], doc["policy"], doc["heartbeat_s"]) == (
        "critical-prod",
        "P0",
        "critical",
        None,
    )
    assert [level["after_s"] for level in doc["levels"]] == [0, 900, 1800]
    assert doc["levels"][0]["targets"] == [
        "user:sre-oncall",
        "user:senior-sre",
        "pagerduty:platform",
        "webhook:audit",
        "slack:#incidents",
    ]
    assert doc["levels"][0]["people"] == ["sre-oncall", "senior-sre"]
    reached = [(r["target"], r["channel"], r["address"]) for r in doc["levels"][0]["reaches"]]
    assert ("user:sre-oncall", "slack", "U01SREONC") in reached
    assert ("slack:#incidents", "slack", "#incidents") in reached
    assert doc["levels"][1]["at"] == "2027-03-26T12:15:00+00:00"
    assert main(["route", "--labels", "severity=critical", "--policies", POLICIES]) == 0
    out = capsys.readouterr().out
    assert "rule critical-prod: P0 (Complete outage or security breach), policy critical" in out
    assert "email:vp-eng@example.com" in out


def test_route_a_watchdog_is_a_heartbeat(capsys: pytest.CaptureFixture[str]) -> None:
    # Saturday: the weekend rotation would take the silence page
    doc = run_json(capsys, "route", "--labels", "alertname=Watchdog", "--at", "2027-03-27T12:00:00+01:00")
    assert (doc["rule"], doc["heartbeat_s"], doc["policy"]) == ("watchdog", 300, "standard")
    assert doc["levels"][0]["people"] == ["dave"]
    assert main(["route", "--labels", "alertname=Watchdog", "--policies", POLICIES]) == 0
    assert "rule watchdog: heartbeat, opens no incident; silent for 5m" in capsys.readouterr().out


def test_route_lists_every_lane_of_continue_rules(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    shutil.copytree(ROOT / "policies", tmp_path / "p")
    routing = tmp_path / "p" / "routing.yaml"
    rule = "{name: payments-copy, matchers: ['team=\"payments\"'], continue: true, severity: P3, policy: low}"
    extra = f"rules:\n  - {rule}\n"
    routing.write_text(routing.read_text().replace("rules:\n", extra, 1))
    args = [
        "route",
        "--labels",
        "team=payments,severity=critical",
        "--policies",
        str(tmp_path / "p"),
        "-o",
        "json",
    ]
    assert main(args) == 0
    doc = json.loads(capsys.readouterr().out)
    lanes = [(r["rule"], r["lane"]) for r in doc["routes"]]
    assert lanes == [("payments-copy", "payments-copy"), ("critical-prod", "")]
    assert doc["labels"] == {"team": "payments", "severity": "critical"}


def test_labels_split_at_the_first_equals_sign() -> None:
    assert parse_labels("a=b=c,empty=") == {"a": "b=c", "empty": ""}
    assert parse_labels("") == {}


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--labels", "severity=critical,oops"], "'oops' is not name=value"),
        (["--labels", "=x"], "'=x' is not name=value"),
        (["--labels", "a=b", "--at", "tomorrow"], "Invalid isoformat"),
    ],
)
def test_route_usage_errors_exit_2(capsys: pytest.CaptureFixture[str], args: list[str], says: str) -> None:
    assert main(["route", *args, "--policies", POLICIES]) == 2
    assert says in capsys.readouterr().err


def test_broken_policies_and_missing_arguments_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["route", "--labels", "a=b", "--policies", INVALID]) == 2
    assert main(["simulate", "--alert", FIRING, "--policies", INVALID]) == 2
    assert "error(s) in" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        main(["simulate"])
    assert exc.value.code == 2
