"""The shipped `policies/` directory with every channel pointed at the bench's loopback receivers.

The copy keeps everything (routing, ladders, people, schedules, calendars, templates) and changes
only what points outside the machine, in the `channels:` section: PagerDuty's URL, Slack's and
Telegram's API URLs, each webhook endpoint's URL, the SMTP relay, and the secrets they read (set
in the environment returned, or written to files when the policy names files). A channel kind this
module does not know stops the run: it could page the outside world.
"""

import shutil
from pathlib import Path
from typing import Any

import yaml

from bench.sinks import HOOK_SECRET, PD_KEY, SLACK_TOKEN, TELEGRAM_TOKEN

ROOT = Path(__file__).resolve().parent.parent
SHIPPED = ROOT / "policies"
_SUFFIXES = (".yaml", ".yml")


class _Secrets:
    """Every `<what>_env` / `<what>_file` reference of an entry, filled with the receivers' value."""

    def __init__(self, directory: Path) -> None:
        self.env: dict[str, str] = {}
        self.directory = directory

    def fill(self, entry: dict[str, Any], what: str, value: str) -> None:
        if entry.get(f"{what}_env"):
            self.env[entry[f"{what}_env"]] = value
        elif entry.get(f"{what}_file"):
            path = self.directory / f"{len(list(self.directory.iterdir()))}-{what}"
            path.write_text(value)
            entry[f"{what}_file"] = str(path)


def _point(channels: dict[str, Any], urls: dict[str, Any], secrets: _Secrets) -> None:
    for kind, cfg in channels.items():
        if kind == "pagerduty":
            cfg["url"] = urls["pagerduty"]
            for service in (cfg.get("services") or {}).values():
                secrets.fill(service, "routing_key", PD_KEY)
        elif kind == "slack":
            cfg["api_url"] = urls["slack"]
            secrets.fill(cfg, "token", SLACK_TOKEN)
            secrets.fill(cfg, "signing_secret", "bench-signing-secret")
        elif kind == "telegram":
            cfg["api_url"] = urls["telegram"]
            secrets.fill(cfg, "bot_token", TELEGRAM_TOKEN)
            secrets.fill(cfg, "secret_token", "bench-telegram-secret")
        elif kind == "webhook":
            for name, endpoint in (cfg.get("endpoints") or {}).items():
                endpoint["url"] = f"{urls['webhook']}/{name}"
                secrets.fill(endpoint, "secret", HOOK_SECRET)
        elif kind == "teams":
            for endpoint in (cfg.get("endpoints") or {}).values():
                secrets.fill(endpoint, "url", urls["teams"])  # the URL itself is the secret
        elif kind == "email":
            # the receiver speaks plain SMTP without AUTH; a relay's credentials would go nowhere
            for key in ("username_env", "username_file", "password_env", "password_file"):
                cfg.pop(key, None)
            cfg |= {"smtp_host": "127.0.0.1", "smtp_port": urls["smtp_port"], "starttls": False, "tls": False}
        else:
            raise ValueError(f"channel kind {kind!r}: bench/shipped.py cannot point it at a sink")


def write(dest: Path, urls: dict[str, Any], source: Path = SHIPPED) -> dict[str, str]:
    """Copy `source` to `dest`, point its channels at the receivers at `urls` (SinkProcess.urls);
    return the environment the engine needs (the secrets the channels read)."""
    shutil.copytree(source, dest)
    (dest.parent / "secrets").mkdir(exist_ok=True)
    secrets = _Secrets(dest.parent / "secrets")
    found = False
    for path in sorted(p for p in dest.iterdir() if p.is_file() and p.suffix in _SUFFIXES):
        doc = yaml.safe_load(path.read_text())
        if isinstance(doc, dict) and isinstance(doc.get("channels"), dict):
            _point(doc["channels"], urls, secrets)
            path.write_text(yaml.safe_dump(doc, sort_keys=False))
            found = True
    if not found:
        raise ValueError(f"no channels: section in {source}")
    return secrets.env
