"""Request bodies of the incident actions: validated by these models, documented from them."""

from typing import Any, TypeVar

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
