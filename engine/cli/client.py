"""A small synchronous HTTP client for the engine's API, shared by the verbs that talk to a running
engine (`incidents`, `postmortem`, `report`). Standard library only (urllib.request).

Where: `--url` or $ESCALATION_URL (default http://127.0.0.1:9095); credentials: `--token` or
$ESCALATION_TOKEN, sent as `Authorization: Bearer TOKEN` (writes need it when the engine has auth).

Errors become one line on stderr and an exit code scripts can rely on:
  0  ok
  1  the engine refused (4xx: unknown incident 404, bad credentials 401, validation 422...);
     the line names the HTTP status and the engine's `{"error": ...}` text
  2  usage error (argparse)
  3  cannot reach the engine, a timeout, a 5xx, or an answer that is not the API's (names the URL)
"""

import argparse
import getpass
import json
import os
import sys
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from typing import Any

DEFAULT_URL = "http://127.0.0.1:9095"
DEFAULT_TIMEOUT_S = 10.0
EXIT_OK, EXIT_REFUSED, EXIT_USAGE, EXIT_UNREACHABLE = 0, 1, 2, 3
Query = Mapping[str, str | int | Sequence[str] | None]


class ApiError(Exception):
    """A request that did not succeed; `exit_code` is 1 (the engine refused) or 3 (no answer)."""

    def __init__(self, message: str, exit_code: int, status: int | None = None) -> None:
        super().__init__(message)
        self.exit_code = exit_code
        self.status = status


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    """A redirect is an error here: urllib would carry the bearer token to wherever it points,
    and turn a POST into a GET that "succeeds" without doing anything."""

    def redirect_request(
        self, req: Any, fp: Any, code: int, msg: str, headers: Any, newurl: str
    ) -> urllib.request.Request | None:
        fp.close()  # the redirect's own answer: read no further, leave no socket behind
        raise ApiError(
            f"the engine answered HTTP {code}, a redirect to {newurl}: use that as --url", EXIT_UNREACHABLE
        )


_OPENER = urllib.request.build_opener(_NoRedirects)


class Client:
    """JSON in, JSON (or text) out; every failure is an ApiError with a one-line message."""

    def __init__(
        self, url: str = DEFAULT_URL, token: str | None = None, timeout_s: float = DEFAULT_TIMEOUT_S
    ):
        self.url = url.rstrip("/")
        if urllib.parse.urlsplit(self.url).scheme not in ("http", "https"):
            raise ApiError(f"--url: expected http://HOST:PORT or https://..., got {url!r}", EXIT_USAGE)
        self.token = token or None
        self.timeout_s = timeout_s

    def get(self, path: str, query: Query | None = None) -> Any:
        return _json(self._call("GET", path, query, None, "application/json"), self._where(path))

    def post(self, path: str, body: Mapping[str, Any]) -> Any:
        return _json(self._call("POST", path, None, body, "application/json"), self._where(path))

    def get_text(self, path: str, query: Query | None = None, accept: str = "text/markdown") -> str:
        return self._call("GET", path, query, None, accept).decode("utf-8", "replace")

    def _timeout(self) -> "ApiError":
        return ApiError(
            f"no answer from the engine at {self.url} within {self.timeout_s:g}s", EXIT_UNREACHABLE
        )

    def _where(self, path: str) -> str:
        return f"{self.url}{path}"

    def _call(
        self, method: str, path: str, query: Query | None, body: Mapping[str, Any] | None, accept: str
    ) -> bytes:
        target = self._where(path)
        if query:
            pairs = _pairs(query)
            if pairs:
                target += "?" + urllib.parse.urlencode(pairs)
        headers = {"Accept": accept, "User-Agent": "escalation-engine-cli"}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        req = urllib.request.Request(target, data=data, headers=headers, method=method)  # noqa: S310
        try:
            with _OPENER.open(req, timeout=self.timeout_s) as resp:
                payload: bytes = resp.read()
                return payload
        except urllib.error.HTTPError as exc:
            try:
                raw = exc.read()
            except (OSError, AttributeError):  # no body to read
                raw = b""
            finally:
                exc.close()
            raise _refusal(exc.code, raw, target) from None
        except TimeoutError:
            raise self._timeout() from None
        except urllib.error.URLError as exc:
            if isinstance(exc.reason, TimeoutError):
                raise self._timeout() from None
            reason = exc.reason.strerror if isinstance(exc.reason, OSError) else None
            raise ApiError(
                f"cannot reach the engine at {self.url}: {reason or exc.reason}", EXIT_UNREACHABLE
            ) from None
        except (OSError, ValueError) as exc:  # a reset mid-answer, a URL that is not one
            raise ApiError(f"cannot reach the engine at {self.url}: {exc}", EXIT_UNREACHABLE) from None


def _pairs(query: Query) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    for key, value in query.items():
        if value is None or value == "" or value == []:
            continue
        if isinstance(value, str | int):
            out.append((key, str(value)))
        else:
            out.extend((key, str(v)) for v in value)
    return out


def error_text(raw: bytes) -> str:
    """The engine's `{"error": ...}` message; for any other body, its first line (shortened)."""
    text = raw.decode("utf-8", "replace").strip()
    try:
        doc = json.loads(text)
    except ValueError:
        doc = None
    if isinstance(doc, dict) and doc.get("error"):
        message = str(doc["error"])
        detail = doc.get("detail")
        if isinstance(detail, list) and len(detail) > 1:  # the 422s list every bad field
            message += f" (and {len(detail) - 1} more problem(s))"
        return " ".join(message.split())
    first = text.splitlines()[0] if text else ""
    return first[:200] or "(empty body)"


def _refusal(status: int, raw: bytes, where: str) -> ApiError:
    message = error_text(raw)
    if status >= 500:
        return ApiError(f"HTTP {status} from {where}: {message}", EXIT_UNREACHABLE, status)
    return ApiError(f"HTTP {status}: {message}", EXIT_REFUSED, status)


def _json(raw: bytes, where: str) -> Any:
    try:
        return json.loads(raw)
    except ValueError:
        raise ApiError(f"{where} did not answer with JSON; is that the engine?", EXIT_UNREACHABLE) from None


# ---- flags, and the one place errors become exit codes -----------------------------------------


def add_connection_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--url", help=f"the engine's base URL (default $ESCALATION_URL or {DEFAULT_URL})")
    parser.add_argument("--token", help="bearer token for writes (default $ESCALATION_TOKEN)")
    parser.add_argument(
        "--timeout", type=float, default=DEFAULT_TIMEOUT_S, help="seconds to wait for the engine (default 10)"
    )


def client_from(args: argparse.Namespace, env: Mapping[str, str] | None = None) -> Client:
    env = os.environ if env is None else env
    url = getattr(args, "url", None) or env.get("ESCALATION_URL") or DEFAULT_URL
    token = getattr(args, "token", None) or env.get("ESCALATION_TOKEN") or None
    return Client(url, token, getattr(args, "timeout", DEFAULT_TIMEOUT_S))


def default_user(env: Mapping[str, str] | None = None) -> str:
    """Who acts: $ESCALATION_USER, else the OS user name, else "cli"."""
    env = os.environ if env is None else env
    if env.get("ESCALATION_USER"):
        return env["ESCALATION_USER"]
    try:
        return getpass.getuser() or "cli"
    except (OSError, KeyError):  # no login name (a container with an unnamed uid)
        return "cli"


def run_api(verb: str, work: Callable[[], int]) -> int:
    """Run `work`; an ApiError becomes `escalation-engine VERB: message` on stderr and its exit code."""
    try:
        return work()
    except ApiError as exc:
        print(f"escalation-engine {verb}: {exc}", file=sys.stderr)
        return exc.exit_code
