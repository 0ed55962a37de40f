"""What incident_size, scaling and soak share: a table cell, the ratio of a figure between the
smallest and the largest size, and running one of them on its own (`python -m bench.<part>`)."""

import asyncio
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path

Progress = Callable[[str], None]
Flat = dict[str, float | int | str | bool]


def cell(v: object) -> str:
    """A figure as a table shows it: thousands separated, two decimals below 100."""
    if v is None:
        return "—"
    x = float(v)  # type: ignore[arg-type]
    return f"{x:,.0f}" if isinstance(v, int) or abs(x) >= 100 else f"{x:,.2f}"


def add_ratios(flat: Flat, at: Callable[[object, str], str], lo: object, hi: object, names: tuple[str, ...],
               ratio: Callable[[str], str]) -> None:  # fmt: skip
    """flat[ratio(name)] = figure at hi / figure at lo, for each name whose figure at lo is > 0."""
    for name in names:
        base = float(flat[at(lo, name)])
        if base > 0:
            flat[ratio(name)] = round(float(flat[at(hi, name)]) / base, 2)


def run_alone(part: str, compute: Callable[[Progress], Flat], markdown: Callable[[Flat], list[str]],
              out: Path | None, interrupted: str) -> int:  # fmt: skip
    """Run a part on its own: progress on stderr, then its Markdown and its JSON (also to `out`)."""
    started = time.monotonic()
    try:
        flat = compute(lambda line: print(line, file=sys.stderr, flush=True))
    except (asyncio.CancelledError, KeyboardInterrupt):
        print(f"interrupted: {interrupted}", file=sys.stderr)
        return 130
    flat[f"{part}.seconds"] = round(time.monotonic() - started, 1)
    print("\n".join(markdown(flat)))
    text = json.dumps(flat, indent=2, ensure_ascii=False)
    print(text)
    if out:
        out.write_text(text + "\n")
    return 0
