"""Secrets by reference (an environment variable or a file), resolved without logging their values."""

from collections.abc import Mapping
from pathlib import Path


def resolve_secret(env: str | None, file: str | None, environ: Mapping[str, str]) -> str | None:
    """The secret named by `env` or `file`; None when neither is given.

    Raises ValueError naming the variable or file (never the value) when it is missing, unreadable
    or empty: callers keep the error and report it per notification, so the engine still starts.
    """
    if env is not None and file is not None:
        raise ValueError(f"give either environment variable {env} or file {file} for a secret, not both")
    if env is not None:
        value = environ.get(env)
        if value is None:
            raise ValueError(f"environment variable {env} is not set")
        if not value.strip():
            raise ValueError(f"environment variable {env} is empty")
        return value
    if file is not None:
        try:
            text = Path(file).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            raise ValueError(f"cannot read secret file {file}: {reason}") from exc
        # Secret files written by `echo` or mounted from Kubernetes often end in a newline.
        value = text.rstrip("\r\n")
        if not value.strip():
            raise ValueError(f"secret file {file} is empty")
        return value
    return None


def secret_or_reason(
    env: str | None, file: str | None, environ: Mapping[str, str], what: str
) -> tuple[str | None, str]:
    """(the secret, "") or (None, why `what` is unavailable): for callers that log and go on."""
    try:
        value = resolve_secret(env, file, environ)
    except ValueError as exc:
        return None, f"{what} unavailable: {exc}"
    return (value, "") if value is not None else (None, f"no {what} configured")


def secret_or_error(env: str | None, file: str | None, environ: Mapping[str, str]) -> str | Exception | None:
    """The secret, or the error reading it, kept as a value: the engine starts anyway and each
    send that needs it fails permanently, naming the variable or file."""
    try:
        return resolve_secret(env, file, environ)
    except ValueError as exc:
        return exc
