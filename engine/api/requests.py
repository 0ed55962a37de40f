"""Request bodies of the incident actions: validated by these models, documented from them."""

from typing import Annotated, Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from engine.errors import IngestError
from engine.ingest.alertmanager import field_path

M = TypeVar("M", bound=BaseModel)


class ActionBody(BaseModel):
    """ack, unack, resolve, escalate: who acts, and why."""

    model_config = ConfigDict(extra="ignore", title="ActionBody")

    by: str = Field("api", min_length=1, max_length=256, description="who acts (a user name)")
    note: str = Field("", max_length=4096, description="why, for the timeline")


class SnoozeBody(ActionBody):
    """snooze: also for how long."""

    model_config = ConfigDict(extra="ignore", title="SnoozeBody")

    duration: str = Field(
        max_length=64,
        pattern=r"^([0-9]+(ms|y|w|d|h|m|s))+$",
        description="Go/Prometheus duration, more than 0s and at most 30d (e.g. 30m)",
    )


class StatusBody(BaseModel):
    """status: the incident commander's update, sent to everyone paged (UPDATE #n)."""

    model_config = ConfigDict(extra="ignore", title="StatusBody")

    by: str = Field("api", min_length=1, max_length=256, description="who posts it (a user name)")
    status: Literal["investigating", "identified", "monitoring", "resolved"] = Field(
        description="the runbooks' words; resolved also resolves the incident"
    )
    message: str = Field(min_length=1, max_length=4096, description="what people should know")


class ReassignBody(BaseModel):
    """reassign: hand the incident to another target, paged now; whoever had it is told."""

    model_config = ConfigDict(extra="ignore", title="ReassignBody")

    by: str = Field("api", min_length=1, max_length=256, description="who hands it over")
    to: str = Field(
        min_length=3,
        max_length=256,
        description="a target: user:NAME, schedule:NAME, team:NAME, slack:#ch...",
    )
    note: str = Field("", max_length=4096, description="why, for the timeline")


class OpenBody(BaseModel):
    """Open an incident by hand (a customer report): it pages exactly like an alert would."""

    model_config = ConfigDict(extra="ignore", title="OpenBody")

    title: str = Field(min_length=1, max_length=512)
    severity: str | None = Field(None, max_length=64, description="a severity; else the rules decide")
    policy: str | None = Field(None, max_length=256, description="an escalation policy; else the rules")
    labels: dict[Annotated[str, Field(pattern=r"^[a-zA-Z_][a-zA-Z0-9_]*$", max_length=128)], str] = Field(
        default_factory=dict,
        max_length=30,
        description="labels the rules route on (service, team...), as for an alert",
    )
    description: str = Field("", max_length=8192)
    reporter: str = Field("api", min_length=1, max_length=256, description="who reported it")


def validate(model: type[M], raw: Any) -> M:
    """`raw` as a `model`; a 400 when it is not a JSON object, a 422 naming every bad field."""
    if not isinstance(raw, dict):
        raise IngestError("body: expected a JSON object", status=400)
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        problems = [
            {"field": field_path(err["loc"]), "message": err["msg"]}
            for err in exc.errors(include_url=False, include_context=False, include_input=False)
        ]
        first = problems[0]
        raise IngestError(f"invalid body: {first['field']}: {first['message']}", problems) from None
