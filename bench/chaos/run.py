"""One chaos run: sinks, one redis-server (AOF, fsync always), N replicas, the monkey, the storm,
a quiet period, then every incident read back and counted. Everything is on 127.0.0.1 and
everything started here is stopped here, also on failure, Ctrl-C or SIGTERM."""

import asyncio
import contextlib
import os
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import redis.asyncio

from bench.chaos.count import Tally, tally
from bench.chaos.policy import HOOK_SECRET, SinkUrls, write_policies
from bench.chaos.replicas import Kill, Monkey, Replica
from bench.chaos.sinks import PagerDuty, Recorder, Slack, Teams, Telegram, Webhook, start_smtp
from bench.chaos.workload import TOKEN, Client, Life, Workload, plan
from tests.servers import RedisServer

Progress = Callable[[str], None]
_DEPTH = "escalation_outbox_depth{"
STORM_STRETCH = 1.5  # the storm may go on this much longer to reach min_kills
LAG_TICK_S = 0.1


@dataclass(frozen=True, slots=True)
class Config:
    seed: int
    mode: str = "default"
    storm_s: float = 360.0  # new incidents for this long; kills go on until the last is resolved
    min_kills: int = 100  # fewer kills by storm_s (a slow machine restarts slowly): the storm goes on
    rate_per_s: float = 1.0  # new incidents per second (Poisson)
    lanes: int = 20
    replicas: int = 3
    kill_every_s: tuple[float, float] = (1.0, 3.5)
    down_s: tuple[float, float] = (0.2, 2.0)  # killed replica stays down this long before restarting
    # share of kills aimed at a replica still starting (a crash loop); the others hit serving ones
    starting_share: float = 0.25
    delay_s: tuple[float, float] = (0.05, 0.3)  # receivers answer after this long
    claim_idle_s: float = 2.0  # ESCALATION_DELIVERY_CLAIM_IDLE_S
    wait_s: float = 45.0  # a message this late: its incident's script acts anyway (it is reported lost)
    quiet_s: float = 8.0  # no receiver saw anything for this long: the system is quiet
    drain_max_s: float = 90.0
    max_run_s: float = 900.0
    engine_log_level: str = "warning"  # info logs every delivery, with its replica (costs CPU)


SHORT = {  # the test suite's size: ~15 kills, under a minute
    "mode": "short",
    "storm_s": 18.0,
    "min_kills": 12,
    "rate_per_s": 1.2,
    "lanes": 8,
    "kill_every_s": (0.6, 1.5),
    "down_s": (0.1, 1.0),
    "starting_share": 0.4,
    "quiet_s": 5.0,
    "drain_max_s": 25.0,
    "wait_s": 20.0,
    "max_run_s": 110.0,
}


@dataclass
class Outcome:
    config: Config
    tally: Tally
    lives: list[Life]
    kills: list[Kill]
    rec: Recorder
    seconds: float = 0.0
    storm_seconds: float = 0.0  # storm start to the last incident resolved (kills happen in here)
    replica_starts: int = 0
    start_s: list[float] = field(default_factory=list)  # replica spawn -> ready
    lag_s: list[float] = field(default_factory=list)  # this process's event loop: how late a 0.1 s sleep woke
    failed_starts: int = 0
    client_retries: int = 0
    outbox_left: float = 0.0  # notifications still queued when counting began
    details: dict[str, dict[str, Any]] = field(default_factory=dict)
    workdir: Path = Path()
    load: str = ""  # /proc/loadavg before the run: other work on the machine shows in the figures


def loadavg() -> str:
    with contextlib.suppress(OSError):
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    return "unknown"


def engine_env(cfg: Config, secrets: dict[str, str]) -> dict[str, str]:
    return {
        **os.environ,
        **secrets,
        "ESCALATION_AUTH_TOKEN": TOKEN,
        "ESCALATION_DELIVERY_CLAIM_IDLE_S": str(cfg.claim_idle_s),
        "ESCALATION_LOG_LEVEL": cfg.engine_log_level,
        "ESCALATION_LOG_FORMAT": "json",
    }


async def _outbox_depth(client: Client) -> float:
    """Notifications still queued or parked, all queues (the engine's gauge, refreshed every 5 s)."""
    text = await client.call("GET", "/metrics", text=True)
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(_DEPTH))


async def _quiet(rec: Recorder, client: Client, cfg: Config) -> float:
    """Until no receiver has seen a request for quiet_s and the outbox is empty (at most
    drain_max_s); returns what is left in the outbox."""
    deadline = time.monotonic() + cfg.drain_max_s
    while True:
        idle = time.monotonic() - rec.last_at
        if idle >= cfg.quiet_s:
            left = await _outbox_depth(client)
            if left == 0 or time.monotonic() >= deadline:
                return left
        elif time.monotonic() >= deadline:
            return await _outbox_depth(client)
        await asyncio.sleep(max(0.2, cfg.quiet_s - idle))


async def _read_back(client: Client, lives: list[Life]) -> dict[str, dict[str, Any]]:
    details: dict[str, dict[str, Any]] = {}
    for life in lives:
        if life.incident:
            with contextlib.suppress(RuntimeError):
                details[life.incident] = await client.call("GET", f"/api/v1/incidents/{life.incident}")
    return details


async def _watch_lag(lags: list[float]) -> None:
    """How late this process's own event loop runs: the receivers' arrival times are only as
    good as that (a stalled driver would make the engine look late)."""
    while True:
        before = time.monotonic()
        await asyncio.sleep(LAG_TICK_S)
        lags.append(time.monotonic() - before - LAG_TICK_S)


async def _report_progress(
    progress: Progress, lives: list[Life], monkey: Monkey, rec: Recorder, started: float
) -> None:
    while True:
        await asyncio.sleep(15)
        opened = sum(1 for life in lives if life.incident)
        done = sum(1 for life in lives if life.resolved_at is not None or life.error)
        progress(
            f"  {time.monotonic() - started:5.0f}s: {opened}/{len(lives)} incidents opened, {done} done, "
            f"{len(monkey.kills)} kills, {len(rec.seen)} deliveries seen"
        )


async def _storm(
    cfg: Config,
    replicas: list[Replica],
    session: aiohttp.ClientSession,
    redis_client: "redis.asyncio.Redis",
    rec: Recorder,
    out: Outcome,
    progress: Progress,
) -> None:
    for r in replicas:
        r.spawn()
    await asyncio.gather(*(r.wait_ready(session) for r in replicas))
    progress(
        f"{len(replicas)} replicas ready; new incidents for {cfg.storm_s:g}s (longer, up to "
        f"{cfg.storm_s * STORM_STRETCH:g}s, until {cfg.min_kills} kills)"
    )
    monkey = Monkey(
        replicas,
        session,
        redis_client,
        random.Random(f"{cfg.seed}/monkey"),
        cfg.kill_every_s,
        cfg.down_s,
        cfg.starting_share,
    )
    client = Client(replicas, session, random.Random(f"{cfg.seed}/client"))
    stop = asyncio.Event()
    started = time.monotonic()
    kills = asyncio.create_task(monkey.run(stop))
    ticker = asyncio.create_task(_report_progress(progress, out.lives, monkey, rec, started))
    lag = asyncio.create_task(_watch_lag(out.lag_s))
    try:
        await Workload(client, rec, cfg.wait_s).run(
            out.lives, cfg.storm_s, lambda: len(monkey.kills) < cfg.min_kills
        )
        out.storm_seconds = time.monotonic() - started
    finally:
        stop.set()
        await kills  # and every replica restarted and ready
        ticker.cancel()
        lag.cancel()
    progress(f"storm over after {out.storm_seconds:.0f}s, {len(monkey.kills)} kills; waiting for quiet")
    out.outbox_left = await _quiet(rec, client, cfg)
    out.details = await _read_back(client, out.lives)
    out.kills = monkey.kills
    out.failed_starts = monkey.failed_starts
    out.client_retries = client.retries


async def run(cfg: Config, workdir: Path, progress: Progress = print) -> Outcome:
    """The whole run; raises TimeoutError past cfg.max_run_s (after stopping everything)."""
    began = time.monotonic()
    rec = Recorder(random.Random(f"{cfg.seed}/sinks"), cfg.delay_s)
    lives = plan(random.Random(f"{cfg.seed}/plan"), cfg.rate_per_s, cfg.storm_s * STORM_STRETCH, cfg.lanes)
    out = Outcome(cfg, Tally(), lives, [], rec, workdir=workdir, load=loadavg())
    async with (
        asyncio.timeout(cfg.max_run_s),
        PagerDuty(rec) as pd,
        Webhook(rec, HOOK_SECRET) as hook,
        Slack(rec, cfg.lanes) as slack,
        Telegram(rec) as telegram,
        Teams(rec) as teams,
    ):
        smtp, smtp_port = await start_smtp(rec)
        server = RedisServer(extra_args=("--appendonly", "yes", "--appendfsync", "always"))
        replicas: list[Replica] = []
        try:
            server.start()
            urls = SinkUrls(pd.url, slack.url, telegram.url, hook.url, teams.url, smtp_port)
            secrets = write_policies(workdir / "policies", cfg.lanes, urls)
            env = engine_env(cfg, secrets)
            replicas = [
                Replica(i, workdir / "policies", server.url, env, workdir / f"replica-{i}.log")
                for i in range(cfg.replicas)
            ]
            redis_client = redis.asyncio.Redis.from_url(server.url)
            try:
                async with aiohttp.ClientSession() as session:
                    await _storm(cfg, replicas, session, redis_client, rec, out, progress)
            finally:
                await redis_client.aclose()
        finally:
            for r in replicas:
                r.stop()
            out.replica_starts = sum(r.starts for r in replicas)
            out.start_s = [s for r in replicas for s in r.start_s]
            server.close()
            smtp.close()
            await smtp.wait_closed()
    out.tally = tally(lives, rec, out.details, out.kills)
    out.seconds = time.monotonic() - began
    return out
