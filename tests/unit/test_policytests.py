"""The `test` verb: shipped policy tests pass; a wrong expectation fails (1); a bad file is misuse (2)."""

from pathlib import Path

import pytest

from engine.cli import main
from engine.policy.loader import load_policies
from engine.policytests import TestFileError, load_cases, run_case

ROOT = Path(__file__).parent.parent.parent
POLICIES = str(ROOT / "policies")
FIXTURES = ROOT / "tests" / "fixtures" / "policytests"


def test_shipped_policy_tests_pass(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["test", str(ROOT / "policies" / "tests"), "--policies", POLICIES]) == 0
    out = capsys.readouterr().out.splitlines()
    assert all(line.startswith("ok") for line in out[:-1])
    assert out[-1].startswith(f"{len(out) - 1} passed, 0 failed")


def test_wrong_expectation_fails_with_file_line_and_diff(capsys: pytest.CaptureFixture[str]) -> None:
    wrong = FIXTURES / "wrong" / "p1.yaml"
    assert main(["test", str(wrong), "--policies", POLICIES]) == 1
    out = capsys.readouterr().out
    assert out.splitlines()[0] == "ok    right routing"
    assert f"FAIL  {wrong}:8 wrong severity and on-call" in out
    assert "severity: expected P0, got P1" in out
    assert "- #1 expected  at 0s, level 1, user bob, channel email" in out
    assert "+ #1 got       at 0s, level 1, target schedule:sre-primary, user alice, channel email" in out
    assert "- #2 expected  at 0s, level 1, user bob, channel slack" in out
    assert "+ #2 got       at 0s, level 1, target schedule:sre-primary, user alice, channel slack" in out
    assert "#3 ok" in out
    assert "- #4 expected  at 15m, level 2, user senior-sre" in out
    assert "+ #4 got       (no page)" in out
    assert out.splitlines()[-1] == "1 passed, 1 failed, 2 test(s) in 1 file(s)"


def test_malformed_file_is_usage_error_naming_file_line(capsys: pytest.CaptureFixture[str]) -> None:
    bad = FIXTURES / "malformed" / "bad.yaml"
    assert main(["test", str(bad), "--policies", POLICIES]) == 2
    err = capsys.readouterr().err
    assert f"{bad}:5: unknown key 'ack_after'" in err
    assert f"{bad}:9: invalid duration '5 minutes'" in err
    assert f"{bad}:11: '2027-03-24T10:00:00' has no offset" in err


def test_yaml_syntax_error_names_line(tmp_path: Path) -> None:
    f = tmp_path / "t.yaml"
    f.write_text("tests:\n  - name: x\n   at: [\n", encoding="utf-8")
    with pytest.raises(TestFileError) as exc:
        load_cases([f])
    assert exc.value.problems[0].startswith(f"{f}:3: YAML syntax error")


def test_until_limits_the_compared_pages(tmp_path: Path) -> None:
    f = tmp_path / "t.yaml"
    f.write_text(
        "tests:\n"
        "  - name: only the first 10 minutes\n"
        "    at: 2027-03-24T10:00:00+01:00\n"
        "    alert: {alertname: X, severity: error}\n"
        "    expect:\n"
        "      until: 10m\n"
        "      pages:\n"
        "        - {at: 0s, user: alice, channel: email}\n"
        "        - {at: 0s, user: alice, channel: slack}\n"
        "        - {at: 0s, target: 'pagerduty:platform'}\n",
        encoding="utf-8",
    )
    (case,) = load_cases([f])
    assert run_case(load_policies(Path(POLICIES)), case).ok


def test_missing_path_is_usage_error(tmp_path: Path) -> None:
    assert main(["test", str(tmp_path / "nope.yaml"), "--policies", POLICIES]) == 2
