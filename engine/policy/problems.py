"""Error prose for pydantic validation errors: one `file:line: path: message` line per error."""

import difflib
import types
import typing
from typing import Any

from pydantic import BaseModel

from engine.policy.models import PolicySet
from engine.policy.yamlpos import Loc, Pos, join


def dotted(loc: Loc) -> str:
    """A location as messages spell it: `rules[0].severity`."""
    out = ""
    for part in loc:
        out = join(out, part)
    return out


def describe(loc: Loc, kind: str, msg: str, value: object, root: Pos) -> str:
    """One validation error (pydantic's loc, type, msg and input) as a problem line."""
    loc = list(loc)
    if loc and loc[-1] == "[key]":  # a map key that is not text, such as `1:`
        loc, msg = loc[:-1], "names must be text"
    if kind == "missing":
        where, path = root.find(loc[:-1]).where, dotted(loc[:-1])
        noun = "key" if path else "section"
        return f"{where}: {path + ': ' if path else ''}missing required {noun} {loc[-1]!r}"
    if kind == "extra_forbidden":  # named in the message, so the path stops at its parent
        noun = "key" if len(loc) > 1 else "section"
        msg = f"unknown {noun} {loc[-1]!r}{_suggest(str(loc[-1]), _allowed_keys(loc[:-1]))}"
        return f"{root.find(loc).where}: {dotted(loc[:-1]) + ': ' if len(loc) > 1 else ''}{msg}"
    if kind.startswith(("value_error", "assertion_error")):
        msg = msg.split(", ", 1)[-1]  # drop pydantic's "Value error, " prefix
    elif kind == "too_short":
        msg = "must not be empty"
    elif isinstance(value, str | int | float | bool):
        msg = f"{msg}, got {value!r}"
    where = root.find(loc).where
    return f"{where}: {dotted(loc)}: {msg}" if loc else f"{where}: {msg}"


def _suggest(word: str, allowed: list[str]) -> str:
    if not allowed:
        return ""
    close = difflib.get_close_matches(word, allowed, n=1)
    return f" (did you mean {close[0]!r}?)" if close else f"; expected one of: {', '.join(allowed)}"


def model_of(annotation: Any) -> type[BaseModel] | None:
    """The policy model an annotation stands for, looking through `X | None`."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        models = [m for m in map(model_of, typing.get_args(annotation)) if m is not None]
        return models[0] if len(models) == 1 else None
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    return None


def _allowed_keys(loc: Loc) -> list[str]:
    """The keys the model at `loc` accepts, for a "did you mean" on an unknown key."""
    annotation: Any = PolicySet
    for part in loc:
        model = model_of(annotation)
        if model is not None:
            fields = {f.alias or n: f.annotation for n, f in model.model_fields.items()}
            annotation = fields.get(str(part))
        elif typing.get_origin(annotation) in (dict, list):
            annotation = typing.get_args(annotation)[-1]
        else:
            return []
    model = model_of(annotation)
    if model is None:
        return []
    return [f.alias or n for n, f in model.model_fields.items() if not f.exclude]
