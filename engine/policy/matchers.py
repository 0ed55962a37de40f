"""Alertmanager label matchers (`name="value"`, `!=`, `=~`, `!~`) with Alertmanager's syntax and semantics.

Parsing follows Alertmanager's `pkg/labels.ParseMatcher`: a Prometheus label name, an operator,
and a value that may be double-quoted, with OpenMetrics escapes (`\\"`, `\\\\`, `\\n`) and
whitespace tolerated around each token. Regexes are fully anchored, and a missing label
matches as the empty string, so `env!="staging"` matches an alert without `env`.

Regexes are RE2 (google-re2), as in Alertmanager: the same syntax, and matching in linear time,
so a pattern from a policy file or an API query can never stall the engine.
"""

import functools
import re
from dataclasses import dataclass
from typing import Literal, Protocol, cast

import re2

MatchOp = Literal["=", "!=", "=~", "!~"]
OPS: tuple[MatchOp, ...] = ("=", "!=", "=~", "!~")

# Go's \s is ASCII-only and `$` is end of text; spell both out for Python's `re`.
# `=~` precedes `=` so that `~` is not taken as the start of the value.
_SYNTAX = re.compile(
    r"[ \t\n\f\r]*([a-zA-Z_:][a-zA-Z0-9_:]*)[ \t\n\f\r]*(=~|=|!=|!~)[ \t\n\f\r]*((?s:.*?))[ \t\n\f\r]*\Z"
)
_RE2_OPTIONS = re2.Options()
_RE2_OPTIONS.log_errors = False  # errors are raised and reported; do not also print them to stderr
_ESCAPES = {"n": "\n", '"': '"', "\\": "\\"}


@dataclass(frozen=True, slots=True)
class Matcher:
    name: str
    op: MatchOp
    value: str

    def __post_init__(self) -> None:
        if self.op not in OPS:
            raise ValueError(f"unknown matcher operator {self.op!r}; use one of {', '.join(OPS)}")
        if self.op in ("=~", "!~"):
            _compile(self.value)

    def matches(self, labels: dict[str, str]) -> bool:
        actual = labels.get(self.name, "")
        if self.op == "=":
            return actual == self.value
        if self.op == "!=":
            return actual != self.value
        found = _compile(self.value).fullmatch(actual) is not None
        return found if self.op == "=~" else not found

    def __str__(self) -> str:
        escaped = self.value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')
        return f'{self.name}{self.op}"{escaped}"'


class _Pattern(Protocol):
    def fullmatch(self, text: str) -> object | None: ...


@functools.lru_cache(maxsize=4096)
def _compile(value: str) -> _Pattern:
    """Compile an Alertmanager regex, anchored at both ends like Alertmanager's `^(?:re)$`."""
    try:
        re2.compile(value, _RE2_OPTIONS)  # alone first, so that errors describe the pattern as written
        return cast(_Pattern, re2.compile(f"^(?:{value})$", _RE2_OPTIONS))
    except re2.error as exc:
        raise ValueError(f"invalid regular expression {value!r}: {_reason(exc, value)}") from None


def _reason(exc: Exception, value: str) -> str:
    """RE2 says `what: where` (`missing ): (prod`); `where` only when it is not the whole pattern."""
    raw = exc.args[0] if exc.args else ""
    text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)
    what, sep, where = text.partition(": ")
    return what if not sep or where == value else f"{what} at {where!r}"


def parse_matcher(text: str) -> Matcher:
    """Parse one matcher such as `severity="critical"`; ValueError says what is wrong and quotes `text`."""
    found = _SYNTAX.fullmatch(text)
    if found is None:
        raise ValueError(
            f'bad matcher {text!r}: expected LABEL OP VALUE, e.g. severity="critical", '
            "with OP one of =, !=, =~, !~ and LABEL a Prometheus label name"
        )
    name, op, raw = found.groups()
    try:
        value = _unquote(raw)
        return Matcher(name, cast(MatchOp, op), value)
    except ValueError as exc:
        raise ValueError(f"bad matcher {text!r}: {exc}") from None


def _unquote(raw: str) -> str:
    """Undo the optional double quotes and OpenMetrics escapes, exactly as Alertmanager does."""
    quoted = raw.startswith('"')
    body = raw[1:] if quoted else raw
    out: list[str] = []
    i = 0
    while i < len(body):
        char = body[i]
        if char == "\\" and i + 1 < len(body):
            nxt = body[i + 1]
            # An unknown escape such as \d keeps its backslash (regexes rely on it).
            out.append(_ESCAPES.get(nxt, "\\" + nxt))
            i += 2
            continue
        if char == '"':
            if not quoted or i != len(body) - 1:
                hint = " (give one matcher per list item)" if '",' in body else ""
                raise ValueError(f'value contains an unescaped double quote; escape it as \\"{hint}')
            quoted = False
        else:
            out.append(char)
        i += 1
    if quoted:
        raise ValueError("value has an opening double quote but no closing one")
    return "".join(out)
