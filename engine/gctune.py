"""Garbage-collector settings for the long-running processes (serve and its worker).

CPython's cyclic collector runs a young collection every 700 container allocations and an old
one every 100 young ones, each old one walking every live object. A server allocates fast and
keeps much of what it built at start-up (modules, policies, templates) for ever, so a timer
storm spent about a third of its time there: 40k timers due in 4 s were all fired 3.3 s after the
last was due with the defaults, 1.8 s with a young collection every 10,000 allocations. Reference
counting still frees nearly all garbage at once; only cycles wait a little longer.
"""

import gc

YOUNG_EVERY = 10_000  # container allocations between young collections (CPython's default: 700)


def tune() -> None:
    """Leave what exists now (built at start-up) out of every later collection, and collect less
    often. Call once, after start-up and before serving."""
    gc.collect()
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(YOUNG_EVERY, middle, old)
