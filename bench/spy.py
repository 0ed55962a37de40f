"""py-spy raw (collapsed) stacks of the engine's event loop -> where its time went (ingest.py --profile)."""

import re
from pathlib import Path


def _frame(text: str) -> str:
    """`handler (/path/engine/api/handlers.py:38)` -> `handler (handlers.py)`."""
    m = re.match(r"(.*) \((.*?)(?::\d+)?\)$", text)
    return f"{m[1]} ({Path(m[2]).name})" if m else text


# (substring of a sampled stack, category): the first that matches names where a sample's time went
CATEGORIES = (
    ("Redis.execute_command", "redis-py client"),
    ("Pipeline.execute", "redis-py client"),
    ("AsyncScript.__call__", "redis-py client"),
    ("Incident.to_json", "Incident.to_json"),
    ("Incident.from_json", "Incident.from_json"),
    ("engine/escalation.py", "decide"),
    ("deepcopy", "copy.deepcopy"),
    ("parse_payload", "pydantic payload validation"),
    ("engine/messages.py", "build_message"),
)


def profile_summary(raw: Path, n: int = 10) -> dict[str, list[tuple[str, float]]]:
    """py-spy raw (collapsed) stacks of the event loop thread -> top functions by self time, and
    the share of samples per (task, activity): webhook handler / delivery / other x CATEGORIES."""
    own: dict[str, int] = {}
    where: dict[str, int] = {}
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or stack.startswith("Thread._bootstrap"):  # asyncio's child watcher, blocked in waitpid
            continue
        c = int(count)
        total += c
        frames = [_frame(f) for f in stack.split(";")]
        own[frames[-1]] = own.get(frames[-1], 0) + c
        # decisions may run as gather() tasks, whose stacks start at the event loop, not the handler
        task = ("delivery" if any(f.startswith("Delivery.") for f in frames)
                else "scheduler" if any(f.startswith("Scheduler.") for f in frames)
                else "webhook" if any(f.startswith(("alertmanager (", "Processor.")) for f in frames)
                else "aiohttp/asyncio outside handlers")  # fmt: skip
        activity = next((name for key, name in CATEGORIES if key in stack), "rest")
        where[f"{task}: {activity}"] = where.get(f"{task}: {activity}", 0) + c

    def top(d: dict[str, int], k: int) -> list[tuple[str, float]]:
        return [(f, round(100 * d[f] / total, 1)) for f in sorted(d, key=lambda f: d[f], reverse=True)[:k]]

    return {"self": top(own, n), "breakdown": top(where, 3 * n)}
