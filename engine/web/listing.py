"""The incident list's filters and the rows it shows. Pure: incidents and query in, rows out."""

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from engine.api.views import incident_view
from engine.incident import Incident, Status
from engine.policy.matchers import Matcher, parse_matcher
from engine.policy.models import PolicySet
from engine.web.charts import fmt_duration

VIEWS = ("open", "all", "resolved")
MAX_ROWS = 200
SERVICE_LABELS = ("service", "job")  # the label that names the service, in order of preference


@dataclass(frozen=True, slots=True)
class Filters:
    view: str = "open"
    status: str = ""
    severity: str = ""
    label: str = ""
    service: str = ""
    q: str = ""
    matcher: Matcher | None = None
    problems: list[str] = field(default_factory=list)

    @staticmethod
    def from_query(query: Mapping[str, str]) -> "Filters":
        def get(name: str) -> str:
            return query.get(name, "").strip()[:200]

        view = get("view") if get("view") in VIEWS else "open"
        label, problems, matcher = get("label"), [], None
        if label:
            try:
                matcher = parse_matcher(label if any(op in label for op in "=!~") else f'{label}!=""')
            except ValueError as exc:
                problems.append(f"label filter: {exc}")
        status = get("status") if get("status") in {s.value for s in Status} else ""
        return Filters(view, status, get("severity"), label, get("service"), get("q"), matcher, problems)

    def any(self) -> bool:
        return bool(self.status or self.severity or self.label or self.service or self.q)


def labels_of(inc: Incident) -> dict[str, str]:
    return {k: v for a in inc.alerts.values() for k, v in a.labels.items()}


def service_of(inc: Incident) -> str:
    labels = labels_of(inc)
    return next((labels[k] for k in SERVICE_LABELS if labels.get(k)), "")


def _text_hit(inc: Incident, needle: str) -> bool:
    hay = [inc.id, inc.title]
    for a in inc.alerts.values():
        hay += [f"{k}={v}" for k, v in a.labels.items()]
        hay += [f"{k}={v}" for k, v in a.annotations.items()]
    return any(needle in h.casefold() for h in hay)


def keep(inc: Incident, f: Filters) -> bool:
    if (f.view == "open" and not inc.is_open) or (f.view == "resolved" and inc.is_open):
        return False
    if (f.status and inc.status.value != f.status) or (f.severity and inc.severity != f.severity):
        return False
    if f.matcher is not None and not f.matcher.matches(labels_of(inc)):
        return False
    if f.service and service_of(inc) != f.service:
        return False
    return not f.q or _text_hit(inc, f.q.casefold())


def sev_class(policies: PolicySet, severity: str) -> str:
    """sev0 (the highest) to sev3 (the fourth and below): the console's colours."""
    return f"sev{min(policies.severity_rank(severity), 3)}"


def levels_of(policies: PolicySet, policy: str) -> int | None:
    found = policies.escalation_policies.get(policy)
    return len(found.levels) if found else None


def who(view: Mapping[str, Any]) -> tuple[str, str]:
    """Who is on it and how: ("acked", alice) / ("assigned", team:db) / ("paged", a, b)."""
    if view["acknowledged_by"] and view["status"] == "acknowledged":
        return "acked", str(view["acknowledged_by"])
    if view["assignee"]:
        return "assigned", str(view["assignee"])
    if view["paged"]:
        paged = list(view["paged"])
        more = f" +{len(paged) - 3}" if len(paged) > 3 else ""
        return "paged", ", ".join(paged[:3]) + more
    return "", "nobody paged yet"


def row(inc: Incident, policies: PolicySet, now_ms: int) -> dict[str, Any]:
    view = incident_view(inc, levels_of(policies, inc.policy))
    how, names = who(view)
    return {
        **view,
        "age": fmt_duration((now_ms - inc.created_ms) / 1000),
        "levels": levels_of(policies, inc.policy),
        "how": how,
        "who": names,
        "sev_class": sev_class(policies, inc.severity),
        "service": service_of(inc),
        "firing": len(inc.firing()),
    }


def http_url(value: str) -> str | None:
    """`value` when it is an absolute http(s) URL with a host; anything else is not a link."""
    text = value.strip()
    try:
        parts = urlsplit(text)
    except ValueError:
        return None
    if parts.scheme.lower() in ("http", "https") and parts.netloc and text.isprintable():
        return text
    return None
