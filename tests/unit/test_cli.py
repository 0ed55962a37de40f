"""The CLI's check command, and serve refusing a broken policy set before it starts anything."""

from pathlib import Path

import pytest

from engine.cli import main

ROOT = Path(__file__).parent.parent.parent
INVALID = ROOT / "tests" / "fixtures" / "policies" / "invalid"


def test_check_passes_on_the_shipped_policies(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check", str(ROOT / "policies")]) == 0
    out = capsys.readouterr().out
    assert "OK: 4 severities, 5 rules, 4 escalation policies, 9 users, 2 schedules" in out


def test_check_reports_file_and_line_and_exits_1(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check", str(INVALID / "bad-duration")]) == 1
    err = capsys.readouterr().err
    first = err.splitlines()[0]
    path, line, message = first.split(":", 2)
    assert path.endswith(".yaml") and line.isdigit() and "duration" in message
    assert err.splitlines()[-1].startswith("1 error(s) in")


def test_serve_refuses_invalid_policies_before_starting(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    code = main(["serve", "--policies", str(INVALID / "bad-duration"), "--data-dir", str(tmp_path)])
    assert code == 2
    assert "refusing to start" in capsys.readouterr().err
    assert not (tmp_path / "redis.sock").exists()


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0
    assert capsys.readouterr().out.startswith("escalation-engine ")


def test_missing_channel_secrets_are_named_at_start(tmp_path: Path) -> None:
    from engine.notifiers import secret_problems
    from engine.policy.loader import load_policies

    channels = load_policies(ROOT / "policies").channels
    assert secret_problems(channels, {}) == [
        "slack bot token: environment variable SLACK_BOT_TOKEN is not set",
        "slack signing secret: environment variable SLACK_SIGNING_SECRET is not set",
        "pagerduty service 'platform': environment variable PAGERDUTY_PLATFORM_KEY is not set",
        "webhook 'audit': environment variable AUDIT_WEBHOOK_SECRET is not set",
    ]
    env = {
        "SLACK_BOT_TOKEN": "xoxb-t",
        "SLACK_SIGNING_SECRET": "s",
        "PAGERDUTY_PLATFORM_KEY": "k" * 32,
        "AUDIT_WEBHOOK_SECRET": "s",
    }
    assert secret_problems(channels, env) == []


def test_a_level_during_an_undefined_calendar_is_an_error_at_its_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    text = (ROOT / "tests" / "fixtures" / "policies" / "example" / "policy-example.yaml").read_text()
    text = text.replace(
        "      - after: 30m\n        notify: [user:vp-eng]",
        "      - after: 30m\n        notify: [user:vp-eng]\n        during: business-hours",
        1,
    )
    assert "during: business-hours" in text
    (tmp_path / "p.yaml").write_text(text)
    assert main(["check", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert ".during: undefined calendar 'business-hours' (defined: none)" in err
    assert err.startswith(f"{tmp_path / 'p.yaml'}:57: escalation_policies.critical.levels[2].during")


def test_schema_is_a_json_schema_the_shipped_policies_satisfy(capsys: pytest.CaptureFixture[str]) -> None:
    import json

    import jsonschema
    import yaml

    assert main(["schema"]) == 0
    schema = json.loads(capsys.readouterr().out)
    jsonschema.Draft202012Validator.check_schema(schema)
    merged: dict[str, object] = {}
    for path in sorted((ROOT / "policies").glob("*.yaml")):
        merged.update(yaml.safe_load(path.read_text()))  # the shipped files define disjoint sections
    # as an editor's YAML 1.2 parser sees it: an unquoted 2026-01-05 is a string, not a date
    as_edited = json.loads(json.dumps(merged, default=str))
    jsonschema.validate(as_edited, schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({**as_edited, "rule": []}, schema)  # a typo of `rules`: unknown keys fail


def test_oncall_says_who_is_on_call_and_the_next_handoffs(capsys: pytest.CaptureFixture[str]) -> None:
    import json

    policies = str(ROOT / "policies")
    # Christmas: carol's override, then the weekend rotation, then the weekly one at 09:00 local
    assert main(["oncall", "sre-primary", "--policies", policies, "--at", "2026-12-26T12:00:00+01:00"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0] == "sre-primary (Europe/Berlin) at 2026-12-26 12:00+01:00: carol"
    args = ["oncall", "sre-primary", "--policies", policies, "--at", "2027-03-26T12:00:00Z", "--next", "3"]
    assert main([*args, "-o", "json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["oncall"] == ["alice"] and doc["at"] == "2027-03-26T13:00:00+01:00"
    # the hand-off after the spring switch is still 09:00 local, now at +02:00
    assert doc["next"][-1] == {"at": "2027-03-28T09:00:00+02:00", "oncall": ["erin"]}


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["nobody-knows"], "no schedule 'nobody-knows' (defined: sre-primary, leads)"),
        (["sre-primary", "--at", "2027-03-26T12:00"], "has no offset"),
    ],
)
def test_oncall_usage_errors_exit_2(capsys: pytest.CaptureFixture[str], args: list[str], says: str) -> None:
    assert main(["oncall", *args, "--policies", str(ROOT / "policies")]) == 2
    assert says in capsys.readouterr().err
