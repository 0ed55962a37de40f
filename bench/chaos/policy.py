"""The run's policy: LANES copies of one ladder, each lane with its own addresses on every channel.

Incidents are spread over the lanes (label `lane`) so that no PagerDuty service, Slack channel or
Telegram chat sees more than the engine's per-endpoint send rate allows: what is measured is the
engine under kills, not its rate limiter. Every title carries a marker, `CHAOS <id> <kind> L<n>`,
so each sink can tell which incident, action and level a request is about.
"""

import re
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import yaml

LEVEL_OFFSETS_S = (0, 3, 6)
CHANNELS = ("pagerduty", "slack", "telegram", "webhook", "teams", "email")
# credentials of the local receivers only (the Slack and Telegram sinks check the token they get)
SLACK_TOKEN = "xoxb-chaos-token"  # noqa: S105
TELEGRAM_TOKEN = "123456:CHAOS-bot-token"  # noqa: S105
HOOK_SECRET = "chaos-hook-secret"  # noqa: S105
ACTOR = "chaos"
MARKER = re.compile(r"CHAOS (\S+) (trigger|escalation|acknowledge|resolve) L(\d+)")


@dataclass(frozen=True, slots=True)
class SinkUrls:
    pagerduty: str
    slack: str
    telegram: str
    webhook: str
    teams: str
    smtp_port: int


def pd_key(lane: int) -> str:
    return f"{lane:08d}" + "c4a05" * 4 + "ffff"  # 32 characters, like a real integration key


def slack_channel(lane: int) -> str:
    return f"#chaos-{lane}"


def telegram_chat(lane: int) -> int:
    return 7_000_000 + lane


def email_address(lane: int) -> str:
    return f"lane-{lane}@chaos.test"


def level_targets(lane: int) -> list[list[str]]:
    """Every channel kind on the ladder; Slack, Telegram and PagerDuty twice, so that escalations
    also go through their second-message paths (Slack/Telegram thread, PagerDuty's same dedup_key)."""
    return [
        [f"pagerduty:pd-{lane}", f"slack:{slack_channel(lane)}", f"telegram:{telegram_chat(lane)}"],
        [f"webhook:hook-{lane}", f"teams:teams-{lane}", f"slack:{slack_channel(lane)}"],
        [f"email:{email_address(lane)}", f"pagerduty:pd-{lane}", f"telegram:{telegram_chat(lane)}"],
    ]


def address_of(target: str) -> tuple[str, str]:
    """`kind:name` -> (channel, the address as the sinks report it)."""
    kind, _, name = target.partition(":")
    if kind == "pagerduty":
        return kind, pd_key(int(name.removeprefix("pd-")))
    if kind in ("webhook", "teams"):
        return kind, name.rpartition("-")[2]  # the lane: it is in the URL path the sink sees
    return kind, name


def _subject(kind: str) -> dict[str, str]:
    # `kind` in the template is the engine's word: trigger, escalation, acknowledge, resolve
    return {
        "subject": "CHAOS {{ incident.id }} {{ kind }} L{{ incident.level }}",
        "body": "chaos: {{ kind }}, level {{ incident.level }}, paged {{ incident.paged | join(', ') }}",
    }


def _teams_url(base: str, lane: int) -> str:
    parts = urlsplit(base)
    return f"{parts.scheme}://{parts.netloc}/workflows/lane-{lane}/triggers/manual/paths/invoke?{parts.query}"


def write_policies(directory: Path, lanes: int, urls: SinkUrls) -> dict[str, str]:
    """Write the policy file; return the environment the engine needs (secrets by reference)."""
    env = {
        "CHAOS_SLACK_TOKEN": SLACK_TOKEN,
        "CHAOS_SLACK_SIGNING": "chaos-signing-secret",
        "CHAOS_TG_TOKEN": TELEGRAM_TOKEN,
        "CHAOS_TG_SECRET": "chaos-telegram-secret",
        "CHAOS_HOOK_SECRET": HOOK_SECRET,
    }
    policies: dict[str, object] = {}
    rules = []
    for lane in range(lanes):
        rules.append(
            {
                "name": f"lane-{lane}",
                "matchers": [f'lane="{lane}"'],
                "severity": "P1",
                "policy": f"lane-{lane}",
                "group_by": "alert",
            }
        )
        policies[f"lane-{lane}"] = {
            "until": "acknowledged",
            "templates": "chaos",
            "levels": [
                {"after": f"{after}s", "notify": targets}
                for after, targets in zip(LEVEL_OFFSETS_S, level_targets(lane), strict=True)
            ],
        }
        env[f"CHAOS_PD_{lane}"] = pd_key(lane)
        env[f"CHAOS_TEAMS_{lane}"] = _teams_url(urls.teams, lane)
    doc = {
        "severities": {"P1": {"description": "chaos"}},
        "rules": rules,
        "default": {"severity": "P1", "policy": "lane-0"},
        "escalation_policies": policies,
        "templates": {
            "chaos": {kind: _subject(kind) for kind in ("initial", "escalation", "acknowledge", "resolution")}
        },
        "channels": {
            "pagerduty": {
                "url": urls.pagerduty,
                "services": {f"pd-{n}": {"routing_key_env": f"CHAOS_PD_{n}"} for n in range(lanes)},
            },
            "slack": {
                "api_url": urls.slack,
                "token_env": "CHAOS_SLACK_TOKEN",
                "signing_secret_env": "CHAOS_SLACK_SIGNING",
            },
            "telegram": {
                "api_url": urls.telegram,
                "bot_token_env": "CHAOS_TG_TOKEN",
                "secret_token_env": "CHAOS_TG_SECRET",
            },
            "webhook": {
                "endpoints": {
                    f"hook-{n}": {"url": f"{urls.webhook}/lane-{n}", "secret_env": "CHAOS_HOOK_SECRET"}
                    for n in range(lanes)
                }
            },
            "teams": {"endpoints": {f"teams-{n}": {"url_env": f"CHAOS_TEAMS_{n}"} for n in range(lanes)}},
            "email": {
                "smtp_host": "127.0.0.1",
                "smtp_port": urls.smtp_port,
                "starttls": False,
                "from": "escalations@chaos.test",
            },
        },
    }
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "chaos.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))
    return env
