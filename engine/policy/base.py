"""The base of every policy model (unknown keys are errors, values are frozen), and the types
several sections share."""

from typing import Annotated
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import AfterValidator, BaseModel, ConfigDict


class Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def check_time_zone(value: str) -> str:
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise ValueError(f"unknown time zone {value!r}; use an IANA name such as Europe/Berlin") from None
    return value


TimeZoneName = Annotated[str, AfterValidator(check_time_zone)]  # an IANA name, e.g. Europe/Berlin
