"""The CLI's HTTP client and the `incidents`/`postmortem`/`report` formatting, against a tiny
http.server stub: requests as sent, errors as exit codes (1 refused, 2 usage, 3 unreachable)."""

import contextlib
import json
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from engine import cli
from engine.cli import incidents, postmortem, report
from engine.cli.client import ApiError, Client, default_user, error_text
from engine.cli.incidents import age, format_duration, on_it, one_line, render_detail, render_table, table
from engine.cli.report import render_report

NOW = datetime(2027, 3, 29, 12, 0, tzinfo=UTC)
Reply = tuple[int, str, bytes, float]  # status, content type, body, delay before answering


class Stub:
    """Canned answers by (method, path); records every request (path with query, headers, body)."""

    def __init__(self) -> None:
        self.replies: dict[tuple[str, str], Reply] = {}
        self.requests: list[dict[str, Any]] = []
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def _answer(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                stub.requests.append(
                    {"method": self.command, "path": self.path, "headers": self.headers, "body": body}
                )
                path = self.path.split("?")[0]
                status, ctype, raw, delay = stub.replies.get(
                    (self.command, path), (404, "text/plain", b"404: Not Found", 0)
                )
                time.sleep(delay)
                with contextlib.suppress(ConnectionError):  # the client gave up (the timeout test)
                    self.send_response(status)
                    self.send_header("Content-Type", ctype)
                    if 300 <= status < 400:  # a redirect: the body names where to
                        self.send_header("Location", raw.decode())
                    self.send_header("Content-Length", str(len(raw)))
                    self.end_headers()
                    self.wfile.write(raw)

            do_GET = do_POST = _answer

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def reply(self, method: str, path: str, status: int, doc: Any, delay: float = 0.0) -> None:
        if isinstance(doc, str):
            self.replies[(method, path)] = (status, "text/markdown", doc.encode(), delay)
        else:
            self.replies[(method, path)] = (status, "application/json", json.dumps(doc).encode(), delay)


@pytest.fixture
def stub(monkeypatch: pytest.MonkeyPatch) -> Iterator[Stub]:
    s = Stub()
    thread = threading.Thread(target=s.server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    monkeypatch.setenv("ESCALATION_URL", s.url)
    monkeypatch.setenv("ESCALATION_TOKEN", "tok")
    monkeypatch.setenv("ESCALATION_USER", "alice")
    for name, verb in (("incidents", incidents), ("postmortem", postmortem), ("report", report)):
        monkeypatch.setitem(cli.VERBS, name, verb)
    yield s
    s.server.shutdown()
    s.server.server_close()
    thread.join(5)


def incident(**over: Any) -> dict[str, Any]:
    inc: dict[str, Any] = {
        "id": "b-029616d7ba04",
        "title": "HighErrorRate checkout: 5xx ratio above 5% on checkout",
        "status": "triggered",
        "severity": "P0",
        "level": 1,
        "created_at": (NOW - timedelta(hours=2, minutes=10)).isoformat().replace("+00:00", "Z"),
        "acknowledged_by": None,
        "assignee": None,
        "paged": ["user:alice"],
        "alerts": [],
        "updates": [],
    }
    inc.update(over)
    return inc


# ---- formatting --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("seconds", "fine", "text"),
    [
        (None, False, "-"),
        (-3, False, "0s"),
        (45, False, "45s"),
        (300, False, "5m"),
        (330, False, "5m"),
        (330, True, "5m30s"),
        (7200, False, "2h"),
        (7800, False, "2h10m"),
        (3 * 86400 + 4000, False, "3d"),
        (86400 + 3600, True, "1d1h"),
        (30 * 86400, True, "30d"),
    ],
)
def test_durations_read_like_people_write_them(seconds: float | None, fine: bool, text: str) -> None:
    assert format_duration(seconds, fine=fine) == text


def test_age_counts_from_the_rfc3339_stamp() -> None:
    assert age("2027-03-29T11:55:00.000Z", NOW) == "5m"
    assert age("2027-03-26T12:00:00Z", NOW) == "3d"
    assert age(None, NOW) == age("yesterday", NOW) == "-"


def test_on_it_is_the_acknowledger_else_the_assignee_else_who_was_paged() -> None:
    assert on_it(incident(acknowledged_by="bob", assignee="user:carol")) == "bob"
    assert on_it(incident(assignee="user:carol")) == "user:carol"
    assert on_it(incident(paged=["user:alice", "schedule:sre"])) == "user:alice, schedule:sre"
    assert on_it(incident(paged=[])) == "-"


def test_the_table_cuts_the_title_to_the_terminal_width() -> None:
    long = incident(title="word " * 40)
    lines = render_table([incident(), long], now=NOW, width=80).splitlines()
    assert lines[0].split() == ["ID", "SEV", "STATUS", "AGE", "LEVEL", "ON", "IT", "TITLE"]
    assert lines[1].split()[:6] == ["b-029616d7ba04", "P0", "triggered", "2h10m", "1", "user:alice"]
    assert all(len(line) <= 80 for line in lines)
    assert lines[2].endswith("…")
    assert lines[0].index("TITLE") == lines[1].index("HighErrorRate")  # columns line up


def test_a_narrow_terminal_still_shows_some_title() -> None:
    out = table(["A", "TITLE"], [["x" * 50, "a long title here"]], width=20)
    assert out.splitlines()[1].endswith("a long titl…")
    assert render_table([], now=NOW) == "no incidents"


def test_one_line_and_the_detail_view() -> None:
    inc = incident(status="snoozed", snoozed_until="2027-03-29T12:30:00.000Z")
    assert one_line(inc) == (
        "b-029616d7ba04 snoozed until 2027-03-29T12:30:00.000Z P0 level 1, on it: user:alice: "
        "HighErrorRate checkout: 5xx ratio above 5% on checkout"
    )
    detail = incident(
        acknowledged_by="alice",
        acknowledged_at="2027-03-29T10:00:00Z",
        time_to_acknowledge_s=270,
        alerts=[
            {
                "status": "firing",
                "labels": {"alertname": "HighErrorRate", "service": "checkout"},
                "annotations": {"summary": "5xx ratio above 5%"},
            }
        ],
        updates=[{"number": 1, "status": "identified", "message": "bad deploy", "by": "bob", "at": "t"}],
        timeline=[
            {"at": "2027-03-29T09:50:00Z", "kind": "triggered", "actor": "alertmanager", "text": "opened"}
        ],
    )
    out = render_detail(detail, NOW)
    assert out.splitlines()[0].startswith("b-029616d7ba04  P0  triggered  HighErrorRate")
    assert "acknowledged:  by alice at 2027-03-29T10:00:00Z, after 4m30s" in out
    assert "firing    HighErrorRate  service=checkout" in out and "5xx ratio above 5%" in out
    assert "Status updates (1):" in out and "identified by bob" in out and "bad deploy" in out
    assert "Timeline (1):" in out and "alertmanager" in out


def test_the_report_table_shows_whatever_sections_exist() -> None:
    doc = {
        "since": "2027-02-27T12:00:00.000Z",
        "incidents": 3,
        "truncated": False,
        "by_severity": [
            {
                "severity": "P0",
                "description": "Complete outage",
                "ack_target_s": 300.0,
                "incidents": 2,
                "acknowledged": 2,
                "mtta_s": {"median": 270.0, "p90": 600.0, "count": 2},
                "mttr_s": {"median": 7800.0, "p90": None, "count": 1},
                "target_met": 1,
                "target_missed": 1,
            }
        ],
        "pages_per_person": [{"person": "alice", "pages": 4, "out_of_hours": 1}],
        "noisiest_alerts": [{"alertname": "HighErrorRate", "service": "checkout", "incidents": 2}],
        "reviews_due": [],
        "by_team": {"payments": {"incidents": 2, "mttr_s": 60}},
        "targets": {"P0": 300},
        "extra": {"nested": {"mtta_s": 61}},
        "tags": ["a", "b"],
    }
    out = render_report(doc, width=200)
    assert "since: 2027-02-27T12:00:00.000Z" in out and "truncated: no" in out
    header = out.splitlines()[out.splitlines().index("by severity:") + 1].split()
    assert header[:3] == ["SEVERITY", "ACK", "TARGET"] and "Complete outage" not in out
    assert header[5:9] == ["MTTA", "P50", "MTTA", "P90"] and "COUNT" not in header
    row = out.splitlines()[out.splitlines().index("by severity:") + 2].split()
    assert row == ["P0", "5m", "2", "2", "4m30s", "10m", "2h10m", "-", "1", "1"]
    assert "alice" in out and "HighErrorRate" in out and "reviews due:\n  (none)" in out
    assert "TEAM" in out and "payments" in out and "1m" in out
    assert "P0  300" in out and "nested  1m1s" in out and "a, b" in out
    assert render_report([1, 2]) == "1, 2" and render_report({}) == "(empty report)"


# ---- the client ----------------------------------------------------------------------------------


def test_get_sends_the_query_and_the_token(stub: Stub) -> None:
    stub.reply("GET", "/api/v1/incidents", 200, {"incidents": []})
    client = Client(stub.url + "/", "tok")
    assert client.get(
        "/api/v1/incidents", {"status": "triggered", "label": ["a=b", "c=d"], "limit": None}
    ) == {"incidents": []}
    sent = stub.requests[-1]
    assert sent["path"] == "/api/v1/incidents?status=triggered&label=a%3Db&label=c%3Dd"
    assert sent["headers"]["Authorization"] == "Bearer tok"


@pytest.mark.parametrize(
    ("status", "doc", "code", "message"),
    [
        (404, {"error": "no incident x", "detail": None}, 1, "HTTP 404: no incident x"),
        (401, {"error": "missing or bad credentials"}, 1, "HTTP 401: missing or bad credentials"),
        (
            422,
            {"error": "invalid body: to: too short", "detail": [{}, {}]},
            1,
            "HTTP 422: invalid body: to: too short (and 1 more problem(s))",
        ),
        (404, "404: Not Found\n<html>", 1, "HTTP 404: 404: Not Found"),
        (
            503,
            {"error": "store unavailable, try again"},
            3,
            "HTTP 503 from {url}/p: store unavailable, try again",
        ),
        (500, "", 3, "HTTP 500 from {url}/p: (empty body)"),
    ],
)
def test_errors_map_to_exit_codes_with_the_engines_message(
    stub: Stub, status: int, doc: Any, code: int, message: str
) -> None:
    stub.reply("POST", "/p", status, doc)
    with pytest.raises(ApiError) as exc:
        Client(stub.url).post("/p", {"by": "x"})
    assert (exc.value.exit_code, exc.value.status) == (code, status)
    assert str(exc.value) == message.format(url=stub.url)


def test_an_answer_that_is_not_json_is_not_the_engine(stub: Stub) -> None:
    stub.reply("GET", "/p", 200, "<html>hello</html>")
    with pytest.raises(ApiError) as exc:
        Client(stub.url).get("/p")
    assert exc.value.exit_code == 3 and "did not answer with JSON" in str(exc.value)


def test_a_slow_engine_is_a_timeout_naming_the_url(stub: Stub) -> None:
    stub.reply("GET", "/slow", 200, {}, delay=1.0)
    with pytest.raises(ApiError) as exc:
        Client(stub.url, timeout_s=0.2).get("/slow")
    assert exc.value.exit_code == 3
    assert str(exc.value) == f"no answer from the engine at {stub.url} within 0.2s"


def test_nothing_listening_and_a_bad_url() -> None:
    with pytest.raises(ApiError) as exc:
        Client("http://127.0.0.1:1").get("/x")
    assert exc.value.exit_code == 3 and str(exc.value).startswith(
        "cannot reach the engine at http://127.0.0.1:1: "
    )
    with pytest.raises(ApiError) as exc:
        Client("file:///etc/passwd")
    assert exc.value.exit_code == 2


def test_who_acts() -> None:
    assert default_user({"ESCALATION_USER": "carol"}) == "carol"
    assert default_user({}) != ""
    assert error_text(b'{"error": "a\\n  b"}') == "a b"


# ---- the verbs, end to end against the stub --------------------------------------------------------


def test_list_and_actions_through_main(stub: Stub, capsys: pytest.CaptureFixture[str]) -> None:
    stub.reply("GET", "/api/v1/incidents", 200, {"incidents": [incident()]})
    assert cli.main(["incidents", "list", "--status", "triggered", "--label", "team=payments"]) == 0
    assert "b-029616d7ba04" in capsys.readouterr().out
    assert stub.requests[-1]["path"] == "/api/v1/incidents?status=triggered&label=team%3Dpayments"

    stub.reply("POST", "/api/v1/incidents/b-1/snooze", 200, incident(status="snoozed"))
    assert cli.main(["incidents", "snooze", "b-1", "--for", "30m", "--note", "n"]) == 0
    assert json.loads(stub.requests[-1]["body"]) == {"by": "alice", "note": "n", "duration": "30m"}

    stub.reply("POST", "/api/v1/incidents/b-1/status", 200, incident())
    assert (
        cli.main(["incidents", "status", "b-1", "--status", "identified", "--message", "m", "--by", "bob"])
        == 0
    )
    assert json.loads(stub.requests[-1]["body"]) == {"by": "bob", "status": "identified", "message": "m"}

    stub.reply("POST", "/api/v1/incidents/b-1/reassign", 200, incident(assignee="user:bob"))
    assert cli.main(["incidents", "reassign", "b-1", "--to", "user:bob"]) == 0
    assert json.loads(stub.requests[-1]["body"]) == {"by": "alice", "note": "", "to": "user:bob"}
    assert "on it: user:bob" in capsys.readouterr().out

    stub.reply("POST", "/api/v1/incidents", 201, incident(opened_by="carol"))
    argv = [
        "incidents",
        "open",
        "--title",
        "T",
        "--label",
        "service=checkout",
        "--label",
        "x=a=b",
        "-o",
        "json",
    ]
    assert cli.main(argv) == 0
    assert json.loads(stub.requests[-1]["body"]) == {
        "title": "T",
        "labels": {"service": "checkout", "x": "a=b"},
        "description": "",
        "reporter": "alice",
    }
    assert json.loads(capsys.readouterr().out)["opened_by"] == "carol"


def test_a_refusal_is_one_line_on_stderr_and_exit_1(stub: Stub, capsys: pytest.CaptureFixture[str]) -> None:
    stub.reply("POST", "/api/v1/incidents/nope/ack", 404, {"error": "no incident nope", "detail": None})
    assert cli.main(["incidents", "ack", "nope"]) == 1
    out, err = capsys.readouterr()
    assert out == "" and err == "escalation-engine incidents: HTTP 404: no incident nope\n"


@pytest.mark.parametrize(
    "argv",
    [
        ["incidents", "status", "x", "--status", "bogus", "--message", "m"],
        ["incidents", "open", "--title", "t", "--label", "no-equals-sign"],
        ["incidents", "list", "--limit", "0"],
        ["incidents", "snooze", "x"],
        ["incidents"],
        ["report", "-o", "yaml"],
    ],
)
def test_usage_errors_exit_2(stub: Stub, argv: list[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        cli.main(argv)
    assert exc.value.code == 2


def test_postmortem_prints_or_writes(stub: Stub, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    stub.reply("GET", "/api/v1/incidents/b-1/postmortem", 200, "# Post-mortem: b-1\n\nbody")
    assert cli.main(["postmortem", "b-1"]) == 0
    assert capsys.readouterr().out == "# Post-mortem: b-1\n\nbody\n"
    assert stub.requests[-1]["headers"]["Accept"] == "text/markdown"
    target = tmp_path / "pm.md"
    assert cli.main(["postmortem", "b-1", "-o", str(target)]) == 0
    assert target.read_text() == "# Post-mortem: b-1\n\nbody\n"
    assert cli.main(["postmortem", "b-1", "-o", str(tmp_path / "missing" / "pm.md")]) == 2
    assert "cannot write" in capsys.readouterr().err


def test_report_formats(stub: Stub, capsys: pytest.CaptureFixture[str]) -> None:
    stub.reply("GET", "/api/v1/reports", 200, {"incidents": 0, "by_severity": []})
    assert cli.main(["report", "--since", "7d", "-o", "json"]) == 0
    assert json.loads(capsys.readouterr().out)["incidents"] == 0
    assert stub.requests[-1]["path"] == "/api/v1/reports?since=7d"
    assert cli.main(["report"]) == 0
    assert capsys.readouterr().out == "incidents: 0\n\nby severity:\n  (none)\n"
    stub.reply("GET", "/api/v1/reports", 200, "# Incident report\n")
    assert cli.main(["report", "-o", "markdown"]) == 0
    assert capsys.readouterr().out == "# Incident report\n"
    assert stub.requests[-1]["path"] == "/api/v1/reports?since=30d&format=markdown"


def test_a_redirect_is_refused_and_the_token_goes_nowhere_else(stub: Stub) -> None:
    """urllib would follow it with the bearer token, and turn the POST into a GET that "works"."""
    stub.replies[("POST", "/api/v1/incidents")] = (302, "text/plain", b"https://elsewhere.example/", 0)
    with pytest.raises(ApiError) as exc:
        Client(stub.url, token="tok").post("/api/v1/incidents", {"title": "x"})
    assert exc.value.exit_code == 3 and "a redirect to" in str(exc.value)
    assert [r["method"] for r in stub.requests] == ["POST"]  # not followed
