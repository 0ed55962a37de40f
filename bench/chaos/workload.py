"""The storm: incidents opened through Alertmanager webhooks, acknowledged and resolved through the
API, each call sent to a random ready replica and retried on another when its replica dies.

Each incident follows one script, chosen by the seeded RNG, timed so that what it should page
is unambiguous:

- `ignore`: nobody answers; once the whole ladder has arrived, resolved through the API.
- `ack`: once the whole ladder has arrived, acknowledged; once every acknowledgement has
  arrived, resolved through the API.
- `early_ack`: acknowledged as soon as level 0 has arrived everywhere, well before level 1 is
  due (`until: acknowledged`: levels 1 and 2 must never page); resolved once the
  acknowledgements arrived. If level 0 is not all there 1 s before level 1 is due, it becomes
  an `ack` (counted as a fallback).
- `am_resolve`: as `ignore`, but resolved by Alertmanager (a resolved webhook).

Waiting for arrivals before acting keeps the expectations exact: a page still in flight when
its incident is acknowledged or resolved is rightly dropped by the engine, which would look like
a loss here. The wait is bounded: what has not arrived by then is reported lost.
"""

import asyncio
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import aiohttp

from bench.chaos.policy import ACTOR, LEVEL_OFFSETS_S, address_of, level_targets
from bench.chaos.replicas import Replica
from bench.chaos.sinks import Key, Recorder

TOKEN = "chaos-token"  # noqa: S105 - the replicas' API token, this run only
KINDS = {"ignore": 0.3, "ack": 0.3, "early_ack": 0.25, "am_resolve": 0.15}  # share of incidents
EARLY_MARGIN_S = 1.0  # an early ack goes out at least this long before level 1 is due
CALL_GIVE_UP_S = 60.0


def page_keys(incident: str, lane: int, levels: tuple[int, ...]) -> list[Key]:
    targets = level_targets(lane)
    return [(incident, address_of(t)[0], "trigger", level) for level in levels for t in targets[level]]


def mirror_keys(incident: str, lane: int, levels: tuple[int, ...], action: str) -> list[Key]:
    """An acknowledgement or resolution goes to every target paged so far, once each."""
    targets = level_targets(lane)
    channels = dict.fromkeys(address_of(t)[0] for level in levels for t in targets[level])
    return [(incident, channel, action, 0) for channel in channels]


@dataclass
class Life:
    """One incident's script and what happened to it."""

    n: int
    lane: int
    kind: str
    start_s: float  # offset into the storm
    incident: str = ""
    sent_at: float = 0.0  # wall clock of the first webhook attempt: created_at is not earlier
    acked_at: float | None = None  # wall clock when the acknowledgement was answered 200
    resolved_at: float | None = None
    early: bool = False  # acknowledged after level 0 only
    fallback: bool = False  # planned early_ack, became ack
    waited_out: list[str] = field(default_factory=list)  # what had not arrived when it acted anyway
    error: str = ""

    @property
    def levels(self) -> tuple[int, ...]:
        return (0,) if self.early else tuple(range(len(LEVEL_OFFSETS_S)))


def plan(rng: random.Random, rate_per_s: float, horizon_s: float, lanes: int) -> list[Life]:
    """Poisson arrivals up to `horizon_s`; the storm uses a prefix of them."""
    lives: list[Life] = []
    at = 0.0
    names, weights = list(KINDS), list(KINDS.values())
    while True:
        at += rng.expovariate(rate_per_s)
        if at >= horizon_s:
            return lives
        n = len(lives)
        lives.append(Life(n, n % lanes, rng.choices(names, weights)[0], at))


def rfc3339(at: float) -> str:
    return datetime.fromtimestamp(at, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def alert_payload(life: Life, resolved_at: float | None = None) -> dict[str, Any]:
    status = "firing" if resolved_at is None else "resolved"
    labels = {"alertname": "ChaosStorm", "lane": str(life.lane), "n": str(life.n), "service": "chaos"}
    alert = {
        "status": status,
        "labels": labels,
        "annotations": {"summary": f"chaos incident {life.n}"},
        "startsAt": rfc3339(life.sent_at),
        "endsAt": "0001-01-01T00:00:00Z" if resolved_at is None else rfc3339(resolved_at),
        "generatorURL": "http://127.0.0.1/chaos",
        "fingerprint": f"{life.n:016x}",
    }
    return {
        "receiver": "chaos",
        "status": status,
        "alerts": [alert],
        "groupLabels": {"n": str(life.n)},
        "commonLabels": labels,
        "commonAnnotations": alert["annotations"],
        "externalURL": "http://127.0.0.1/alertmanager",
        "version": "4",
        "groupKey": f'{{}}:{{n="{life.n}"}}',
        "truncatedAlerts": 0,
    }


class Client:
    """The API of whichever replica is up: a call that meets a dead one is sent again elsewhere
    (every call here is safe to repeat: a repeated webhook is a duplicate, a second ack a no-op)."""

    def __init__(self, replicas: list[Replica], session: aiohttp.ClientSession, rng: random.Random) -> None:
        self.replicas = replicas
        self.session = session
        self.rng = rng
        self.retries = 0
        self.timeout = aiohttp.ClientTimeout(total=10)

    async def call(self, method: str, path: str, body: Any = None, *, text: bool = False) -> Any:
        deadline = time.monotonic() + CALL_GIVE_UP_S
        headers = {"Authorization": f"Bearer {TOKEN}"}
        while True:
            ready = [r for r in self.replicas if r.ready] or self.replicas
            replica = self.rng.choice(ready)
            problem = ""
            try:
                async with self.session.request(
                    method, replica.url + path, json=body, headers=headers, timeout=self.timeout
                ) as resp:
                    if resp.status == 200:
                        return await (resp.text() if text else resp.json())
                    problem = f"HTTP {resp.status}: {(await resp.text())[:300]}"
                    if resp.status < 500:
                        raise RuntimeError(f"{method} {path}: {problem}")
            except (aiohttp.ClientError, TimeoutError) as exc:
                problem = f"{type(exc).__name__}: {exc}"
            self.retries += 1
            if time.monotonic() > deadline:
                raise RuntimeError(f"{method} {path}: gave up after {CALL_GIVE_UP_S:g}s: {problem}")
            await asyncio.sleep(0.1)


class Workload:
    def __init__(self, client: Client, rec: Recorder, wait_s: float) -> None:
        self.client = client
        self.rec = rec
        self.wait_s = wait_s  # how long after its deadline a page may take before the script acts anyway

    async def run(self, lives: list[Life], storm_s: float, more: Callable[[], bool]) -> None:
        """Start each planned incident on time: all those within storm_s, later ones while `more()`
        says so; the ones never started are removed from `lives`."""
        start = time.monotonic()
        tasks = []
        for life in lives:
            if life.start_s >= storm_s and not more():
                break
            await asyncio.sleep(max(0.0, start + life.start_s - time.monotonic()))
            tasks.append(asyncio.create_task(self.live(life)))
        del lives[len(tasks) :]
        await asyncio.gather(*tasks)

    async def live(self, life: Life) -> None:
        try:
            await self._script(life)
        except Exception as exc:
            life.error = f"{type(exc).__name__}: {exc}"

    async def _arrived(self, life: Life, keys: list[Key], until: float, what: str) -> bool:
        while not self.rec.has(keys):
            if time.time() >= until:
                life.waited_out.append(what)
                return False
            await asyncio.sleep(0.1)
        return True

    async def _act(self, life: Life, action: str) -> float:
        await self.client.call("POST", f"/api/v1/incidents/{life.incident}/{action}", {"by": ACTOR})
        return time.time()

    async def _script(self, life: Life) -> None:
        life.sent_at = time.time()
        reply = await self.client.call("POST", "/api/v1/alertmanager", alert_payload(life))
        life.incident = str(reply["incidents"][0])
        due = [life.sent_at + offset for offset in LEVEL_OFFSETS_S]
        if life.kind == "early_ack":
            first = page_keys(life.incident, life.lane, (0,))
            if await self._arrived(life, first, due[1] - EARLY_MARGIN_S, "early"):
                life.early = True
                life.waited_out.clear()
                life.acked_at = await self._act(life, "ack")
                acks = mirror_keys(life.incident, life.lane, life.levels, "acknowledge")
                await self._arrived(life, acks, life.acked_at + self.wait_s, "acknowledgements")
                life.resolved_at = await self._act(life, "resolve")
                return
            life.waited_out.clear()
            life.fallback = True
        pages = page_keys(life.incident, life.lane, life.levels)
        await self._arrived(life, pages, due[-1] + self.wait_s, "pages")
        if life.kind in ("ack", "early_ack"):
            life.acked_at = await self._act(life, "ack")
            acks = mirror_keys(life.incident, life.lane, life.levels, "acknowledge")
            await self._arrived(life, acks, life.acked_at + self.wait_s, "acknowledgements")
        if life.kind == "am_resolve":
            ended = time.time()
            await self.client.call("POST", "/api/v1/alertmanager", alert_payload(life, ended))
            life.resolved_at = time.time()
        else:
            life.resolved_at = await self._act(life, "resolve")
