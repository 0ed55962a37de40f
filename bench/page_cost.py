"""What one page about an incident of N alerts costs the delivery worker: the read of the incident
(`Store.load_shown`: the record and at most SHOWN_ALERTS alerts) and the message and e-mail built
from it, as `ChannelWorker.deliver` does them. For comparison, the same with every alert read
(`Store.load`, as delivery did before). Used by `bench/incident_size.py` for each N."""

import time

from engine.events import Action
from engine.incident import Incident
from engine.messages import SHOWN_ALERTS, build_message
from engine.notifiers.email import build_email
from engine.policy.models import PolicySet
from engine.store.redis import RedisStore

PAGES = 20  # per way of reading; a page at N = 10,000 read whole takes ~0.1 s


def _page(inc: Incident, policies: PolicySet) -> bytes:
    message = build_message(
        inc, Action.TRIGGER, level=0, target="user:oncall", address="oncall@example.com", policies=policies
    )
    return build_email(message, "engine@example.com", hostname_for_ids="example.com").as_bytes()


async def page_cost(store: RedisStore, incident_id: str, policies: PolicySet) -> dict[str, float | int]:
    out: dict[str, float | int] = {}
    for name, whole in (("page", False), ("page_whole_read", True)):
        cpu, wall = time.process_time(), time.perf_counter()
        read = 0
        for _ in range(PAGES):
            inc = await (store.load(incident_id) if whole else store.load_shown(incident_id, SHOWN_ALERTS))
            if inc is None:
                raise RuntimeError(f"incident {incident_id} is gone")
            _page(inc, policies)
            read = len(inc.alerts)
        out[f"{name}_cpu_ms"] = round((time.process_time() - cpu) * 1000 / PAGES, 3)
        out[f"{name}_ms"] = round((time.perf_counter() - wall) * 1000 / PAGES, 3)
        out[f"{name}_alerts_read"] = read
    return out
