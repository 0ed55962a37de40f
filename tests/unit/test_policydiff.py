"""`diff OLD NEW`: behaviour changes found from policy edits (fixtures: old/ is policies/, new/ edits it).

new/ differs in three ways: the P1 `errors` rule uses the `slow` policy, the critical ladder's
level 2 pages vp-eng instead of eng-manager, and the weekly rotation starts with bob, not alice.
"""

import json
import shutil
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from engine.cli import main
from engine.cli.diff import next_monday
from engine.policy.loader import load_policies
from engine.policydiff import corpus, diff

FIXTURES = Path(__file__).parent.parent / "fixtures" / "policydiff"
OLD, NEW = FIXTURES / "old", FIXTURES / "new"
AT = "2027-03-29T00:00:00Z"  # a Monday; the Berlin hand-off is at 09:00 local (07:00Z)


def _json(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, list[dict[str, Any]]]:
    code = main(["diff", *args, "--at", AT, "-o", "json"])
    changes: list[dict[str, Any]] = json.loads(capsys.readouterr().out)["changes"]
    return code, changes


def _find(changes: list[dict[str, Any]], labels: dict[str, str], field: str) -> list[dict[str, Any]]:
    return [c for c in changes if c["labels"] == labels and c["field"] == field]


def test_rule_routes_to_another_policy(capsys: pytest.CaptureFixture[str]) -> None:
    _, changes = _json(capsys, str(OLD), str(NEW))
    [policy] = _find(changes, {"severity": "error"}, "policy")
    assert (policy["old"], policy["new"], policy["count"]) == ("standard", "slow", 28)
    [level2] = _find(changes, {"severity": "error"}, "level 2")
    assert (level2["old"], level2["new"]) == ("after 30m: senior-sre", "after 2h: senior-sre")
    assert _find(changes, {"severity": "error"}, "rule") == []  # same rule, same severity
    assert _find(changes, {"severity": "error"}, "severity") == []


def test_ladder_level_pages_another_user(capsys: pytest.CaptureFixture[str]) -> None:
    _, changes = _json(capsys, str(OLD), str(NEW))
    for labels in ({"severity": "critical"}, {"alertname": "AuthCompromised"}, {"alertname": "Security"}):
        [c] = _find(changes, labels, "level 2")
        assert (c["old"], c["new"]) == ("after 15m: eng-manager", "after 15m: vp-eng")
        assert c["at"] == "2027-03-29T00:00:00+00:00"
    assert _find(changes, {"severity": "critical"}, "level 1") == []


def test_rotation_change_shows_at_the_instants_it_matters(capsys: pytest.CaptureFixture[str]) -> None:
    _, changes = _json(capsys, str(OLD), str(NEW))
    # the warnings rule's policy is untouched: only who the schedule reaches differs
    found = {(c["old"], c["new"], c["at"]) for c in _find(changes, {"severity": "warning"}, "level 1")}
    assert found == {
        (
            "after 0s: alice, pagerduty:platform",
            "after 0s: bob, pagerduty:platform",
            "2027-03-29T00:00:00+00:00",
        ),
        (
            "after 0s: bob, pagerduty:platform",
            "after 0s: alice, pagerduty:platform",
            "2027-03-29T12:00:00+00:00",
        ),
    }
    assert {c["field"] for c in changes if c["labels"] == {"severity": "warning"}} == {"level 1"}
    assert _find(changes, {}, "level 1") == []  # the default (email) ladder is unchanged


def test_table_names_labels_field_and_old_to_new(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["diff", str(OLD), str(NEW), "--at", AT]) == 0
    out = capsys.readouterr().out
    assert "LABELS" in out and "OLD -> NEW" in out
    line = next(x for x in out.splitlines() if x.startswith("severity=error") and " policy " in x)
    assert "standard -> slow" in line


def test_identical_dirs_no_changes_even_with_exit_code(capsys: pytest.CaptureFixture[str]) -> None:
    code, changes = _json(capsys, str(OLD), str(OLD), "--exit-code")
    assert (code, changes) == (0, [])
    assert main(["diff", str(OLD), str(OLD), "--at", AT, "--exit-code"]) == 0
    assert "no change" in capsys.readouterr().out


def test_exit_code_one_on_changes(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["diff", str(OLD), str(NEW), "--at", AT, "--exit-code"]) == 1
    assert main(["diff", str(OLD), str(NEW), "--at", AT]) == 0
    capsys.readouterr()


def test_broken_new_dir_exits_two_with_file_and_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    broken = tmp_path / "broken"
    shutil.copytree(NEW, broken)
    routing = broken / "routing.yaml"
    routing.write_text(routing.read_text().replace("policy: slow\n", "policy: nosuch\n", 1))
    assert main(["diff", str(OLD), str(broken), "--at", AT]) == 2
    err = capsys.readouterr().err
    assert "routing.yaml:" in err and "nosuch" in err


def test_usage_errors_exit_two(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["diff", str(OLD), str(tmp_path / "missing")]) == 2
    assert main(["diff", str(OLD), str(NEW), "--at", "2027-03-29T00:00:00"]) == 2  # no offset
    with pytest.raises(SystemExit) as exc:
        main(["diff", str(OLD)])
    assert exc.value.code == 2
    capsys.readouterr()


def test_corpus_covers_rules_and_default() -> None:
    labels = corpus(load_policies(OLD))
    for expected in (
        {"alertname": "Watchdog"},
        {"alertname": "AuthCompromised"},  # each literal alternative of `Security.*|AuthCompromised`
        {"severity": "critical", "env": "staging"},  # `!=` broken: the excluded value
        {"severity": "page"},
        {},
    ):
        assert expected in labels


def test_same_policies_diff_empty_and_next_monday() -> None:
    policies = load_policies(OLD)
    assert diff(policies, policies, 0) == []
    assert next_monday(datetime(2027, 3, 29, 0, 0, 1, tzinfo=UTC)) == datetime(2027, 4, 5, tzinfo=UTC)
    assert next_monday(datetime(2027, 3, 31, 15, tzinfo=UTC)) == datetime(2027, 4, 5, tzinfo=UTC)
