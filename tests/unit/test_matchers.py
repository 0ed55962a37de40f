"""Alertmanager matcher syntax and semantics (pkg/labels), as table tests plus a round-trip property."""

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from engine.policy.matchers import OPS, Matcher, MatchOp, parse_matcher


@pytest.mark.parametrize(
    ("text", "name", "op", "value"),
    [
        ('severity="critical"', "severity", "=", "critical"),
        ("severity=critical", "severity", "=", "critical"),
        ('env!="staging"', "env", "!=", "staging"),
        ('alertname=~"Security.*|AuthCompromised"', "alertname", "=~", "Security.*|AuthCompromised"),
        ('severity!~"info|debug"', "severity", "!~", "info|debug"),
        ('  severity  =~  "crit"  ', "severity", "=~", "crit"),
        ('env=""', "env", "=", ""),
        ("env=", "env", "=", ""),
        ('msg=" padded "', "msg", "=", " padded "),
        ("msg=two words", "msg", "=", "two words"),
        ('q="say \\"hi\\""', "q", "=", 'say "hi"'),
        ('path="C:\\\\temp"', "path", "=", "C:\\temp"),
        ('text="line\\nbreak"', "text", "=", "line\nbreak"),
        ('re=~"\\d+"', "re", "=~", "\\d+"),  # an unknown escape keeps its backslash
        ("a==b", "a", "=", "=b"),
        ("_under:colon=x", "_under:colon", "=", "x"),
        ('sev=~"(?i)crit.*"', "sev", "=~", "(?i)crit.*"),
    ],
)
def test_parse(text: str, name: str, op: MatchOp, value: str) -> None:
    assert parse_matcher(text) == Matcher(name, op, value)


SYNTAX = (
    'expected LABEL OP VALUE, e.g. severity="critical", with OP one of =, !=, =~, !~ '
    "and LABEL a Prometheus label name"
)
BAD_RE = "invalid regular expression"
UNESCAPED = 'value contains an unescaped double quote; escape it as \\"'


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("severity", f"bad matcher 'severity': {SYNTAX}"),
        ('1abc="x"', f"bad matcher '1abc=\"x\"': {SYNTAX}"),
        ('sev-erity="x"', f"bad matcher 'sev-erity=\"x\"': {SYNTAX}"),
        ('sev~="x"', f"bad matcher 'sev~=\"x\"': {SYNTAX}"),
        ("", f"bad matcher '': {SYNTAX}"),
        ('sev="crit', "bad matcher 'sev=\"crit': value has an opening double quote but no closing one"),
        ('sev=crit"', f"bad matcher 'sev=crit\"': {UNESCAPED}"),
        ('sev="a"b"', f'bad matcher \'sev="a"b"\': {UNESCAPED}'),
        ('a="b", c="d"', f'bad matcher \'a="b", c="d"\': {UNESCAPED} (give one matcher per list item)'),
        ('sev=~"("', f"bad matcher 'sev=~\"(\"': {BAD_RE} '(': missing )"),
        ('sev!~"[a-"', f"bad matcher 'sev!~\"[a-\"': {BAD_RE} '[a-': missing ]"),
        ('sev=~"a)"', f"bad matcher 'sev=~\"a)\"': {BAD_RE} 'a)': unexpected )"),
    ],
)
def test_parse_errors(text: str, error: str) -> None:
    with pytest.raises(ValueError, match="bad matcher") as caught:
        parse_matcher(text)
    assert str(caught.value) == error


@pytest.mark.parametrize(
    ("matcher", "labels", "expected"),
    [
        ('severity="critical"', {"severity": "critical"}, True),
        ('severity="critical"', {"severity": "Critical"}, False),
        ('severity="critical"', {}, False),
        # Regexes are anchored at both ends, as in Alertmanager.
        ('severity=~"crit"', {"severity": "critical"}, False),
        ('severity=~"crit.*"', {"severity": "critical"}, True),
        ('severity=~"error|page"', {"severity": "page"}, True),
        ('severity=~"error|page"', {"severity": "pager"}, False),
        ('severity=~"crit"', {"severity": "crit\n"}, False),
        ('severity=~"(?i)crit"', {"severity": "CRIT"}, True),
        ('severity!~"info|debug"', {"severity": "info"}, False),
        ('severity!~"info|debug"', {"severity": "information"}, True),
        # A missing label is the empty string.
        ('env!="staging"', {}, True),
        ('env!="staging"', {"env": "staging"}, False),
        ('env=""', {}, True),
        ('env=""', {"env": "prod"}, False),
        ('env=~".*"', {}, True),
        ('env=~".+"', {}, False),
        ('env!~".+"', {}, True),
    ],
)
def test_matches(matcher: str, labels: dict[str, str], expected: bool) -> None:
    assert parse_matcher(matcher).matches(labels) is expected


@pytest.mark.parametrize(
    ("matcher", "text"),
    [
        (Matcher("severity", "=", "critical"), 'severity="critical"'),
        (Matcher("env", "!=", ""), 'env!=""'),
        (Matcher("q", "=", 'a"b\\c\nd'), 'q="a\\"b\\\\c\\nd"'),
    ],
)
def test_str_is_canonical(matcher: Matcher, text: str) -> None:
    assert str(matcher) == text


def test_matcher_rejects_bad_operator_and_regex() -> None:
    with pytest.raises(ValueError, match="unknown matcher operator '=='"):
        Matcher("a", "==", "b")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="invalid regular expression"):
        Matcher("a", "=~", "(")


label_names = st.from_regex(r"[a-zA-Z_:][a-zA-Z0-9_:]{0,10}", fullmatch=True)


@given(name=label_names, op=st.sampled_from(OPS), value=st.text(max_size=20))
def test_str_parses_back(name: str, op: MatchOp, value: str) -> None:
    if op in ("=~", "!~"):
        value = re.escape(value)
    matcher = Matcher(name, op, value)
    assert parse_matcher(str(matcher)) == matcher


@given(name=label_names, value=st.text(max_size=20))
def test_escaped_regex_matches_exactly_its_text(name: str, value: str) -> None:
    matcher = Matcher(name, "=~", re.escape(value))
    assert matcher.matches({name: value})
    assert not matcher.matches({name: value + "x"})


@pytest.mark.parametrize(
    ("text", "labels", "expected"),
    [
        ('n=~"\\\\d+"', {"n": "\u0661\u0662"}, False),  # RE2 and Go: \d is ASCII only
        ('n=~".*"', {"n": "a\nb"}, False),  # `.` does not match a newline, as in Go
        ('n=~"(?s).*"', {"n": "a\nb"}, True),
        ('n=~"a|b"', {"n": "b\n"}, False),  # `$` is the end of the text, not before a final newline
        ('n=~"(.|.|.|.|.|.|.|.)*z"', {"n": "a" * 5000}, False),  # linear time: answers at once
    ],
)
def test_regexes_have_alertmanagers_re2_semantics(text: str, labels: dict[str, str], expected: bool) -> None:
    assert parse_matcher(text).matches(labels) is expected


@pytest.mark.parametrize("pattern", ["(a)\\\\1", "(?=a)", "(?<!a)b", "a{1001}"])
def test_constructs_re2_refuses_are_errors(pattern: str) -> None:
    with pytest.raises(ValueError, match=BAD_RE):
        parse_matcher(f'n=~"{pattern}"')
