"""Policy unit tests (like `promtool test rules`): YAML cases run through route() and simulate(). Pure.

A test file is `tests: [case, ...]`; each case names a firing alert (its labels), when it fires,
optional ack/resolve offsets, and what routing and the trigger pages should be. Held pages (a
calendar holding the ladder) count as pages too, so a test can pin down "held until Monday 09:00".
"""

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, tzinfo
from pathlib import Path

from engine.alerts import Alert, AlertStatus, fingerprint
from engine.policy.durations import format_duration_ms, parse_duration_ms
from engine.policy.models import PolicySet
from engine.policy.routing import route
from engine.policy.yamlpos import Pos, Unreadable, read_yaml
from engine.simulate import HORIZON_MS, Page, simulate

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
CASE_KEYS = {"name", "at", "alert", "ack_at", "resolve_at", "expect"}
EXPECT_KEYS = {"rule", "severity", "policy", "pages", "until"}
PAGE_KEYS = ("at", "level", "target", "user", "channel", "address", "held_until")
PAGE_ACTIONS = {"trigger", "held"}  # acknowledge/resolve mirrors are not escalation pages


class TestFileError(Exception):
    """Bad test files (a usage error); each problem is `file:line: message`."""

    __test__ = False  # not a pytest class, whatever its name

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


@dataclass(frozen=True)
class Case:
    where: str  # file:line of the case
    name: str
    at: datetime
    labels: dict[str, str]
    ack_at_ms: int | None = None
    resolve_at_ms: int | None = None
    rule: str | None = None
    severity: str | None = None
    policy: str | None = None
    pages: list[dict[str, int | str]] | None = None  # each: the fields given, times in ms
    until_ms: int | None = None


@dataclass(frozen=True)
class Result:
    case: Case
    diff: list[str] = field(default_factory=list)  # empty: the case passed

    @property
    def ok(self) -> bool:
        return not self.diff


def test_files(paths: list[Path]) -> list[Path]:
    """Files named directly, and every *.yaml / *.yml under a directory, in name order."""
    out: list[Path] = []
    for p in paths:
        if p.is_dir():
            out += sorted(f for f in p.rglob("*") if f.suffix in (".yaml", ".yml") and f.is_file())
        else:
            out.append(p)
    return out


def load_cases(files: list[Path]) -> list[Case]:
    """Every case in `files`; TestFileError listing all problems when any file is bad."""
    problems: list[str] = []
    cases: list[Case] = []
    for file in files:
        try:
            read = read_yaml(file, problems)
        except Unreadable as exc:
            problems.append(str(exc))
            continue
        if read is None:
            problems.append(f"{file}:1: empty test file")
            continue
        data, pos = read
        if not isinstance(data, dict) or set(data) != {"tests"} or not isinstance(data["tests"], list):
            problems.append(f"{pos.where}: a test file is a mapping with one key, tests: [...]")
            continue
        for i, raw in enumerate(data["tests"]):
            case = _case(raw, pos.find(["tests", i]), problems)
            if case is not None:
                cases.append(case)
    if problems:
        raise TestFileError(problems)
    return cases


class _Bad(ValueError):
    def __init__(self, where: str, message: str) -> None:
        super().__init__(f"{where}: {message}")


def _case(raw: object, pos: Pos, problems: list[str]) -> Case | None:
    try:
        c = _mapping(raw, pos, CASE_KEYS, "test")
        name = _str(c.get("name"), pos.find(["name"]), "name")
        if "at" not in c or "alert" not in c:
            raise _Bad(pos.where, "a test needs at (when the alert fires) and alert (its labels)")
        at = _time(c["at"], pos.find(["at"]))
        labels = {k: _str(v, pos.find(["alert", k]), f"label {k}") for k, v in _map(c["alert"], pos, "alert")}
        e = _mapping(c.get("expect", {}), pos.find(["expect"]), EXPECT_KEYS, "expect")
        ep = pos.find(["expect"])
        pages = None
        if "pages" in e:
            if not isinstance(e["pages"], list):
                raise _Bad(ep.find(["pages"]).where, "pages must be a list")
            pages = [_page(p, ep.find(["pages", j])) for j, p in enumerate(e["pages"])]
        return Case(
            pos.where,
            name,
            at,
            labels,
            ack_at_ms=_opt_duration(c, "ack_at", pos),
            resolve_at_ms=_opt_duration(c, "resolve_at", pos),
            rule=_opt_str(e, "rule", ep),
            severity=_opt_str(e, "severity", ep),
            policy=_opt_str(e, "policy", ep),
            pages=pages,
            until_ms=_opt_duration(e, "until", ep),
        )
    except _Bad as exc:
        problems.append(str(exc))
        return None


def _page(raw: object, pos: Pos) -> dict[str, int | str]:
    p = _mapping(raw, pos, set(PAGE_KEYS), "page")
    out: dict[str, int | str] = {}
    for k, v in p.items():
        where = pos.find([k])
        if k == "at":
            out[k] = _duration(v, where)
        elif k == "held_until":
            out[k] = _ms(_time(v, where))
        elif k == "level":
            if not isinstance(v, int) or isinstance(v, bool) or v < 0:
                raise _Bad(where.where, f"level: {v!r} is not a level number (1-based; 0 for a whole hold)")
            out[k] = v
        else:
            out[k] = _str(v, where, k)
    return out


def _mapping(raw: object, pos: Pos, keys: set[str], what: str) -> dict[str, object]:
    if not isinstance(raw, dict):
        raise _Bad(pos.where, f"a {what} must be a mapping")
    for k in raw:
        if k not in keys:
            raise _Bad(
                pos.find([str(k)]).where, f"unknown key {k!r} in a {what} (known: {', '.join(sorted(keys))})"
            )
    return {str(k): v for k, v in raw.items()}


def _map(raw: object, pos: Pos, what: str) -> list[tuple[str, object]]:
    if not isinstance(raw, dict):
        raise _Bad(pos.find([what]).where, f"{what} must be a mapping of labels")
    return [(str(k), v) for k, v in raw.items()]


def _str(v: object, pos: Pos, what: str) -> str:
    if not isinstance(v, str):  # YAML makes 500 an int and yes a bool: quote them
        raise _Bad(pos.where, f"{what}: {v!r} must be a string (quote it)")
    return v


def _opt_str(d: dict[str, object], key: str, pos: Pos) -> str | None:
    return None if key not in d else _str(d[key], pos.find([key]), key)


def _duration(v: object, pos: Pos) -> int:
    try:
        if not isinstance(v, str):
            raise ValueError(f"invalid duration {v!r}: write it as a string such as 30s, 15m, 1h30m")
        return parse_duration_ms(v)
    except ValueError as exc:
        raise _Bad(pos.where, str(exc)) from None


def _opt_duration(d: dict[str, object], key: str, pos: Pos) -> int | None:
    return None if key not in d else _duration(d[key], pos.find([key]))


def _time(v: object, pos: Pos) -> datetime:
    # YAML itself turns an unquoted timestamp into a datetime; a quoted one is a string
    try:
        at = v if isinstance(v, datetime) else datetime.fromisoformat(str(v))
    except ValueError:
        raise _Bad(pos.where, f"{v!r} is not an RFC 3339 time") from None
    if at.tzinfo is None:
        raise _Bad(pos.where, f"{v!r} has no offset; write 2027-03-29T06:59:00Z or with +02:00")
    return at


def _ms(at: datetime) -> int:
    return (at - _EPOCH) // timedelta(milliseconds=1)


def run_case(policies: PolicySet, case: Case) -> Result:
    """Route and simulate one case; the diff lines say what differs (none: it passed)."""
    diff: list[str] = []
    routes = [r for r in route(policies, case.labels) if r.lane == ""]
    terminal = routes[0]
    for field_, want in (("rule", case.rule), ("severity", case.severity), ("policy", case.policy)):
        got = getattr(terminal, field_)
        if want is not None and want != got:
            diff.append(f"{field_}: expected {want}, got {got}")
    if case.pages is None:
        return Result(case, diff)
    start = _ms(case.at)
    until = case.until_ms
    if until is None:  # just past the last expected page; nothing expected: the whole horizon
        until = max(int(p["at"]) for p in case.pages if "at" in p) + 1000 if case.pages else HORIZON_MS
    alert = Alert(fingerprint(case.labels), AlertStatus.FIRING, case.labels, start)
    got = [
        p
        for p in simulate(
            policies,
            [alert],
            start,
            ack_at_ms=None if case.ack_at_ms is None else start + case.ack_at_ms,
            resolve_at_ms=None if case.resolve_at_ms is None else start + case.resolve_at_ms,
            horizon_ms=until,
        )
        if p.action in PAGE_ACTIONS and p.offset_s * 1000 < until
    ]
    same = len(got) == len(case.pages) and all(map(_matches, case.pages, got))
    if not same:
        diff.append(f"pages within {format_duration_ms(until)}: expected {len(case.pages)}, got {len(got)}")
        for i in range(max(len(case.pages), len(got))):
            w = case.pages[i] if i < len(case.pages) else None
            g = got[i] if i < len(got) else None
            if w is not None and g is not None and _matches(w, g):
                diff.append(f"    #{i + 1} ok        {_show_got(g, case.at.tzinfo, w)}")
                continue
            diff.append(f"  - #{i + 1} expected  {_show_want(w, case.at.tzinfo) if w else '(no page)'}")
            diff.append(f"  + #{i + 1} got       {_show_got(g, case.at.tzinfo) if g else '(no page)'}")
    return Result(case, diff)


def _actual(g: Page) -> dict[str, int | str | None]:
    return {
        "at": g.offset_s * 1000,
        "level": g.level,
        "target": g.target,
        "user": g.user,
        "channel": g.channel,
        "address": g.address,
        "held_until": g.held_until_ms,
    }


def _matches(want: dict[str, int | str], g: Page) -> bool:
    got = _actual(g)
    return all(got[k] == v for k, v in want.items())


def _fmt(k: str, v: int | str | None, zone: tzinfo | None) -> str:
    if k == "at" and isinstance(v, int):
        return f"at {format_duration_ms(v)}"
    if k == "held_until" and isinstance(v, int):
        return f"held_until {(_EPOCH + timedelta(milliseconds=v)).astimezone(zone).isoformat()}"
    return f"{k} {v if v != '' else '-'}"


def _show_want(w: dict[str, int | str], zone: tzinfo | None) -> str:
    return ", ".join(_fmt(k, w[k], zone) for k in PAGE_KEYS if k in w)


def _show_got(g: Page, zone: tzinfo | None, only: dict[str, int | str] | None = None) -> str:
    got = _actual(g)
    keys = [k for k in PAGE_KEYS if (k in only if only else got[k] is not None and k != "address")]
    return ", ".join(_fmt(k, got[k], zone) for k in keys) + (
        f" ({g.action})" if g.action != "trigger" else ""
    )
