"""Policy loading: shipped and example policies load; invalid ones give exact `file:line: message`s."""

import shutil
import textwrap
from pathlib import Path

import pytest

from engine.errors import PolicyError
from engine.policy.loader import check_policies, load_policies

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "tests" / "fixtures" / "policies"
KINDS = "user, schedule, team, slack, telegram, email, pagerduty, webhook, teams"
BAD_DURATION = "use Go/Prometheus syntax such as 30s, 15m, 1h30m"

# The smallest valid policy set: one severity, one policy, the default.
BASE = """\
severities:
  P1: {description: Major}
default: {severity: P1, policy: page}
escalation_policies:
  page:
    levels:
      - after: 0s
        notify: [email:sre@example.com]
"""


def write(directory: Path, name: str, text: str) -> Path:
    path = directory / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))
    return path


def problems_in(path: Path) -> list[str]:
    """check_policies(path) with `path/` cut from file names, so expectations stay short."""
    return [p.replace(f"{path}/", "") for p in check_policies(path)]


def test_shipped_policies_load() -> None:
    policies = load_policies(ROOT / "policies")
    assert list(policies.severities) == ["P0", "P1", "P2", "P3"]
    assert policies.severities["P0"].ack_within == 15 * 60_000
    assert [(r.name, r.severity, r.policy) for r in policies.rules] == [
        ("watchdog", "P1", "standard"),
        ("security", "P0", "critical"),
        ("critical-prod", "P0", "critical"),
        ("errors", "P1", "standard"),
        ("warnings", "P2", "slow"),
    ]
    assert (policies.default.severity, policies.default.policy) == ("P3", "low")
    ladders = {
        name: (
            p.until,
            p.ack_timeout,
            p.repeat,
            p.repeat_after,
            [(lvl.after, lvl.notify) for lvl in p.levels],
        )
        for name, p in policies.escalation_policies.items()
    }
    assert ladders == {
        "critical": (
            "acknowledged",
            30 * 60_000,
            2,
            15 * 60_000,
            [
                (
                    0,
                    [
                        "user:sre-oncall",
                        "user:senior-sre",
                        "pagerduty:platform",
                        "webhook:audit",
                        "slack:#incidents",
                    ],
                ),
                (15 * 60_000, ["user:eng-manager"]),
                (30 * 60_000, ["user:vp-eng"]),
            ],
        ),
        "standard": (
            "resolved",
            None,
            0,
            0,
            [(0, ["schedule:sre-primary", "pagerduty:platform"]), (30 * 60_000, ["user:senior-sre"])],
        ),
        "slow": (
            "resolved",
            None,
            0,
            0,
            [(0, ["schedule:sre-primary", "pagerduty:platform"]), (2 * 3_600_000, ["user:senior-sre"])],
        ),
        "low": ("acknowledged", None, 0, 0, [(0, ["email:sre-team@example.com"])]),
    }
    assert list(policies.users)[:4] == ["sre-oncall", "senior-sre", "eng-manager", "vp-eng"]
    assert list(policies.schedules) == ["sre-primary", "leads"]
    channels = policies.channels
    assert channels.pagerduty is not None
    assert channels.webhook is not None
    assert channels.email is not None
    assert channels.pagerduty.url == "https://events.pagerduty.com/v2/enqueue"
    assert channels.pagerduty.services["platform"].routing_key_env == "PAGERDUTY_PLATFORM_KEY"
    assert channels.webhook.endpoints["audit"].secret_env == "AUDIT_WEBHOOK_SECRET"
    email = channels.email
    assert (email.smtp_host, email.smtp_port, email.starttls, email.from_) == (
        "localhost",
        25,
        False,
        "escalations@example.com",
    )
    assert check_policies(ROOT / "policies") == []


def test_example_policy_loads() -> None:
    policies = load_policies(FIXTURES / "example")
    assert [(r.name, r.group_by, r.continue_) for r in policies.rules] == [
        ("security", "alertmanager", False),
        ("critical-prod", "alertmanager", False),
        ("errors", ["alertname", "service"], False),
        ("warnings", "alert", False),
    ]
    assert list(policies.escalation_policies) == ["critical", "standard", "slow", "low"]
    assert policies.escalation_policies["critical"].levels[1].notify == [
        "user:eng-manager",
        "slack:#incidents",
    ]
    assert policies.channels.slack is not None
    assert policies.channels.slack.signing_secret_env == "SLACK_SIGNING_SECRET"


def test_a_single_file_loads() -> None:
    policies = load_policies(FIXTURES / "example" / "policy-example.yaml")
    assert len(policies.rules) == 4


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        (
            "unknown-key",
            [
                "policy.yaml:6: escalation_policies.standard: missing required key 'levels'",
                "policy.yaml:8: escalation_policies.standard: unknown key 'level' (did you mean 'levels'?)",
            ],
        ),
        (
            "bad-duration",
            [
                "policy.yaml:10: escalation_policies.standard.levels[1].after: "
                f"invalid duration '15x': {BAD_DURATION}"
            ],
        ),
        (
            "undefined-policy",
            ["policy.yaml:8: rules[0].policy: undefined escalation policy 'standrad' (defined: standard)"],
        ),
        ("duplicate-name", ["b.yaml:4: users.alice: defined twice (also at a.yaml:11)"]),
        (
            "yaml-syntax",
            [
                "policy.yaml:9: YAML syntax error: while parsing a flow sequence at line 8: "
                "expected ',' or ']', but got ':'"
            ],
        ),
        (
            "unknown-target-kind",
            [
                "policy.yaml:9: escalation_policies.standard.levels[0].notify[1]: "
                f"unknown target kind 'sms' in 'sms:+15550100'; use one of {KINDS}"
            ],
        ),
        (
            "several-errors",
            [
                f"policy.yaml:3: severities.P1.ack_within: invalid duration 'soon': {BAD_DURATION}",
                "policy.yaml:6: rules[0].matchers[1]: bad matcher 'env=~\"(prod\"': "
                "invalid regular expression '(prod': missing )",
                "policy.yaml:7: rules[0].severity: undefined severity 'P9' (defined: P1)",
                "policy.yaml:9: rules[1].name: rule 'errors' defined twice (also at line 5)",
                "policy.yaml:13: rules[1].group_by: "
                "group_by is 'alertmanager', 'alert' or a list of label names",
                "policy.yaml:14: default: missing required key 'policy'",
                "policy.yaml:17: escalation_policies.standard.until: "
                "Input should be 'acknowledged' or 'resolved', got 'fixed'",
                "policy.yaml:21: escalation_policies.standard.levels[0].notify[0]: "
                "undefined user 'ghost' (defined: none)",
                "policy.yaml:23: escalation_policies.standard.levels[1].notify[0]: "
                "undefined pagerduty service 'platform' (defined: none)",
                "policy.yaml:23: escalation_policies.standard.levels[1].notify[1]: "
                "undefined webhook endpoint 'audit' (defined: none)",
            ],
        ),
    ],
)
def test_invalid_fixture(case: str, expected: list[str]) -> None:
    path = FIXTURES / "invalid" / case
    assert problems_in(path) == expected
    with pytest.raises(PolicyError) as caught:
        load_policies(path)
    assert [p.replace(f"{path}/", "") for p in caught.value.problems] == expected


@pytest.mark.parametrize(
    ("files", "expected"),
    [
        pytest.param({}, ["{dir}: no policy files (*.yaml, *.yml) in this directory"], id="empty-directory"),
        pytest.param(
            {"a.yaml": "severities: {P1: {}}\nescalation_policies: {}\n"},
            ["{dir}: missing required section 'default'"],
            id="no-default",
        ),
        pytest.param(
            {"a.yaml": BASE, "b.yaml": "default: {severity: P1, policy: page}\n"},
            ["b.yaml:1: default: defined twice (also at a.yaml:3)"],
            id="default-twice",
        ),
        pytest.param(
            {"a.yaml": BASE, "b.yml": "severities:\n  P2: {}\n  P1: {}\n"},
            ["b.yml:3: severities.P1: defined twice (also at a.yaml:2)"],
            id="severity-twice",
        ),
        pytest.param(
            {"a.yaml": BASE + "users:\n  bob: {}\n  bob: {email: b@x}\n"},
            ["a.yaml:11: users.bob: duplicate key (first at line 10)"],
            id="duplicate-key-in-one-file",
        ),
        pytest.param(
            {
                "a.yaml": BASE + "channels:\n  email: {smtp_host: a, from: x@y}\n",
                "b.yaml": "channels:\n  email: {}\n",
            },
            ["b.yaml:2: channels.email: defined twice (also at a.yaml:10)"],
            id="channel-twice",
        ),
        pytest.param(
            {"a.yaml": BASE, "b.yaml": "- just\n- a list\n"},
            ["b.yaml:1: expected a mapping of sections (severities, rules, ...), got a list"],
            id="top-level-list",
        ),
        pytest.param(
            {"a.yaml": BASE + "rules:\n  - {name: default, matchers: [a=b], severity: P1, policy: page}\n"},
            ["a.yaml:10: rules[0].name: 'default' is reserved for the default route"],
            id="rule-named-default",
        ),
        pytest.param(
            {"a.yaml": BASE + "schedule:\n  primary: {}\n"},
            ["a.yaml:9: unknown section 'schedule' (did you mean 'schedules'?)"],
            id="unknown-section",
        ),
        pytest.param(
            {"a.yaml": BASE + "sections:\n  primary: {}\n"},
            [
                "a.yaml:9: unknown section 'sections'; expected one of: severities, rules, default, "
                "escalation_policies, users, schedules, calendars, templates, heartbeat, maintenance, teams, "
                "channels"
            ],
            id="unknown-section-no-suggestion",
        ),
        pytest.param(
            {"a.yaml": BASE + "rules: {name: x}\n"},
            ["a.yaml:9: rules: expected a list, got a dict"],
            id="rules-not-a-list",
        ),
        pytest.param(
            {"a.yaml": BASE.replace("after: 0s", "after: 5")},
            [
                "a.yaml:7: escalation_policies.page.levels[0].after: "
                "a bare number is ambiguous; give a unit, e.g. 30s or 15m"
            ],
            id="bare-number-duration",
        ),
        pytest.param(
            {"a.yaml": BASE + "users:\n  bob: {pagerduty: ops}\n"},
            ["a.yaml:10: users.bob.pagerduty: undefined pagerduty service 'ops' (defined: none)"],
            id="user-pagerduty-service",
        ),
        pytest.param(
            {"a.yaml": BASE + "      - after: 1m\n        notify: []\n"},
            ["a.yaml:10: escalation_policies.page.levels[1].notify: must not be empty"],
            id="empty-notify",
        ),
        pytest.param(
            {"a.yaml": BASE, "b.yaml": "users: [x\n", "c.yaml": "rules: [{name: r, severity: P9}]\n"},
            [
                "b.yaml:2: YAML syntax error: while parsing a flow sequence at line 1: "
                "expected ',' or ']', but got '<stream end>'",
                "c.yaml:1: rules[0]: missing required key 'matchers'",
                "c.yaml:1: rules[0]: missing required key 'policy'",
            ],
            id="unparsed-file-skips-reference-checks",
        ),
    ],
)
def test_directory_problems(tmp_path: Path, files: dict[str, str], expected: list[str]) -> None:
    for name, text in files.items():
        write(tmp_path, name, text)
    assert problems_in(tmp_path) == [e.replace("{dir}", str(tmp_path)) for e in expected]


def test_missing_path_is_a_problem(tmp_path: Path) -> None:
    assert check_policies(tmp_path / "nope") == [f"{tmp_path}/nope: no such file or directory"]


def test_files_merge_in_name_order(tmp_path: Path) -> None:
    write(tmp_path, "10-base.yaml", BASE)
    write(tmp_path, "30-late.yml", "rules:\n  - {name: third, matchers: [a=c], severity: P1, policy: page}\n")
    write(
        tmp_path,
        "20-early.yaml",
        """\
        severities:
          P2: {}
        rules:
          - {name: first, matchers: [a=a], severity: P2, policy: page}
          - {name: second, matchers: [a=b], severity: P1, policy: page, continue: true}
        users:
          alice: {email: alice@example.com}
        channels:
          pagerduty:
            services: {ops: {routing_key_file: /run/secrets/pd}}
        """,
    )
    write(tmp_path, "40-email.yaml", "channels:\n  email: {smtp_host: mail, from: esc@example.com}\n")
    write(tmp_path, "notes.txt", "not: [policy")
    write(tmp_path, ".swap.yaml", "not: [policy")
    write(tmp_path, "tests/routing.yaml", "not: [policy")  # policy tests live here; not policies
    write(tmp_path, "empty.yaml", "# nothing here yet\n")
    policies = load_policies(tmp_path)
    assert [(r.name, r.continue_) for r in policies.rules] == [
        ("first", False),
        ("second", True),
        ("third", False),
    ]
    assert list(policies.severities) == ["P1", "P2"]
    assert list(policies.users) == ["alice"]
    assert policies.channels.pagerduty is not None
    assert policies.channels.email is not None
    assert policies.channels.pagerduty.services["ops"].routing_key_file == "/run/secrets/pd"
    assert policies.channels.email.smtp_host == "mail"


def test_copied_shipped_policies_with_tests_subdirectory(tmp_path: Path) -> None:
    shutil.copytree(ROOT / "policies", tmp_path / "policies")
    write(tmp_path / "policies", "tests/cases.yaml", "tests: [{labels: {severity: critical}}]\n")
    assert check_policies(tmp_path / "policies") == []


def test_the_specs_policy_example_is_accepted_whole() -> None:
    """PRODUCT.md: the example's keys are the contract, and every feature in it is built now
    (update_every, Telegram contacts, the Teams and Telegram channels were the last)."""
    assert check_policies(ROOT / "tests" / "fixtures" / "policies" / "spec-example") == []


def test_a_rule_an_earlier_catch_all_shadows_is_an_error_at_its_line(tmp_path: Path) -> None:
    import yaml

    def rule(name: str, *matchers: str, **extra: object) -> dict[str, object]:
        return {"name": name, "matchers": list(matchers), "severity": "P1", "policy": "standard", **extra}

    example = ROOT / "tests" / "fixtures" / "policies" / "example" / "policy-example.yaml"
    policies = yaml.safe_load(example.read_text())
    policies["rules"] = [
        rule("all-critical", 'severity="critical"'),
        rule("critical-db", 'service="db"', 'severity="critical"'),
        rule("fan-out", 'team="sre"', **{"continue": True}),
        rule("sre-errors", 'team="sre"', 'severity="error"'),
    ]
    (tmp_path / "p.yaml").write_text(yaml.safe_dump(policies, sort_keys=False))
    problems = check_policies(tmp_path)
    assert len(problems) == 1, problems  # a `continue` rule shadows nothing
    assert ": rules[1].matchers: this rule can never match: rules[0] (line " in problems[0]


def test_a_directory_of_one_defect_per_file_reports_each_at_its_file_and_line() -> None:
    """tests/fixtures/policies/broken-sections: a valid base and one file per defect of the
    policy language's sections; check finds every one, at the file and line that has it."""
    d = ROOT / "tests" / "fixtures" / "policies" / "broken-sections"
    found = {Path(p.split(":", 1)[0]).name: p for p in check_policies(d)}
    expected = {
        "bad-hours.yaml": (
            5,
            "calendars.night.hours.mon[0]: opening window '17:00-09:00' ends before it starts",
        ),
        "bad-maintenance.yaml": (2, "maintenance[0]: to must be after from"),
        "bad-via.yaml": (5, "users.carol.notify[0].via: via 'carrier-pigeon': use a channel"),
        "bad-zone.yaml": (3, "schedules.mars.time_zone: unknown time zone 'Mars/Olympus_Mons'"),
        "empty-rotation.yaml": (5, "schedules.nobody.rotations[0].participants: must not be empty"),
        "overlapping-overrides.yaml": (2, "schedules.rota: overrides overlap: alice"),
        "shadowed-rule.yaml": (7, "rules[1].matchers: this rule can never match: rules[0] (line 3)"),
        "template-escape.yaml": (4, "templates.escape.initial.body: template not allowed (line 1)"),
        "template-syntax.yaml": (4, "templates.broken.initial.subject: template syntax error at line 1"),
        "unknown-calendar.yaml": (
            5,
            "escalation_policies.held.levels[0].during: undefined calendar 'office'",
        ),
        "unknown-participant.yaml": (5, "participants[0]: undefined user 'casper'"),
        "unknown-team-schedule.yaml": (3, "teams.sre.schedule: undefined schedule 'missing-rota'"),
    }
    assert set(found) == set(expected)  # one problem per broken file, none in the base
    for name, (line, says) in expected.items():
        assert found[name].startswith(f"{d / name}:{line}: "), found[name]
        assert says in found[name], found[name]
