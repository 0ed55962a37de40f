"""Reading YAML with positions: each value's `file:line`, kept beside the data for error messages."""

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import yaml

Loc = Sequence[int | str]


@dataclass
class Pos:
    """Where a value was written (`file:line`), and the same for its keys or list items."""

    where: str
    children: dict[str, "Pos"] = field(default_factory=dict)

    def find(self, loc: Loc) -> "Pos":
        """The deepest position along `loc` (a missing key points at its parent)."""
        pos = self
        for part in loc:
            child = pos.children.get(str(part))
            if child is None:
                break
            pos = child
        return pos


class Unreadable(Exception):
    """A file that cannot be read or parsed; its message is the problem line."""


def read_yaml(file: Path, problems: list[str]) -> tuple[object, Pos] | None:
    """The file's data and positions; None when it is empty. Duplicate keys go to `problems`."""
    try:
        text = file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise Unreadable(f"{file}: cannot read: {exc}") from None
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None  # empty, or only comments
        # Positions come from the composed nodes, before construction rewrites `<<` merge keys.
        pos = _positions(node, str(file), "", problems, set())
        return loader.construct_document(node), pos
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        context = (
            f"{exc.context} at line {exc.context_mark.line + 1}: " if exc.context and exc.context_mark else ""
        )
        line = mark.line + 1 if mark else 1
        raise Unreadable(f"{file}:{line}: YAML syntax error: {context}{exc.problem}") from None
    except yaml.YAMLError as exc:
        raise Unreadable(f"{file}:1: YAML error: {exc}") from None
    finally:
        loader.dispose()


def _positions(node: yaml.Node, file: str, path: str, problems: list[str], seen: set[int]) -> Pos:
    pos = Pos(f"{file}:{node.start_mark.line + 1}")
    if id(node) in seen:  # a recursive alias; the constructor reports it if it matters
        return pos
    seen = seen | {id(node)}
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            name = str(key.value) if isinstance(key, yaml.ScalarNode) else "?"
            child = _positions(value, file, join(path, name), problems, seen)
            child.where = f"{file}:{key.start_mark.line + 1}"  # the key's line is where one looks
            if name in pos.children and name != "<<":
                first = other(pos.children[name].where, child.where)
                problems.append(f"{child.where}: {join(path, name)}: duplicate key (first at {first})")
            pos.children.setdefault(name, child)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            pos.children[str(i)] = _positions(item, file, f"{path}[{i}]", problems, seen)
    return pos


def join(path: str, part: int | str) -> str:
    """`path` extended by a key (`a.b`) or a list index (`a[0]`), as messages spell locations."""
    if isinstance(part, int):
        return f"{path}[{part}]"
    return f"{path}.{part}" if path else part


def other(where: str, here: str) -> str:
    """`where` for a message about `here`: just the line when both are in one file."""
    file, _, line = where.rpartition(":")
    return f"line {line}" if file == here.rpartition(":")[0] else where
