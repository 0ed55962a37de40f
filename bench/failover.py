"""Redis failover: webhooks the engine accepted (200) and then lost when the master died, with and
without ESCALATION_REDIS_MIN_REPLICAS=1, and how long webhooks were refused.

    python -m bench.failover                    # Sentinel and Cluster, 8 failovers each way: ~5 min
    python -m bench.failover --rounds 3 --only sentinel --out /tmp/f

`python -m engine serve` runs against (a) 1 master + 1 replica watched by 3 Sentinels (quorum 2,
down-after 1 s) through `redis+sentinel://`, and (b) a Redis Cluster of 3 masters with 1 replica
each (cluster-node-timeout 2 s). Senders post one new alert group per webhook at a fixed rate and,
like Alertmanager, retry a refused one (503, connection error) until it is accepted. Each round:
the replica of the master about to die stalls (SIGSTOP, and the master drops its replication link
with CLIENT KILL TYPE replica: a replica that fell behind, as on a partition or a long pause),
webhooks go on for --stall seconds, the master is SIGKILLed and the replica resumes; the Sentinels
or the Cluster promote it, the killed node comes back as its replica. At the end every accepted
webhook's incident is read back through the engine: a 404 is an accepted webhook lost.
Unavailable = from the kill to the first 200 for an alert stored on the killed master's slots.
Writes bench/FAILOVER.md and bench/failover.json.
"""

import argparse
import asyncio
import contextlib
import datetime
import json
import signal
import statistics
import time
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Protocol

import aiohttp
import redis
from redis.crc import key_slot

from bench import report
from bench.ingest import WEBHOOK, Server, Target, running, wait_quiet
from engine.store import keys
from tests.servers import HOST, RedisCluster, RedisServer, Sentinel, ServerStartError, role, wait_for_replicas

BENCH = Path(__file__).resolve().parent
FIXTURE = BENCH.parent / "tests" / "fixtures" / "01-firing-single.json"
DOWN_AFTER_MS = 1000
FAILOVER_MS = 2000  # a Sentinel retries a failover of the same master after twice this
WAIT_TIMEOUT_MS = 500
Flat = dict[str, float | int | str | bool]


def webhook(run: str, i: int) -> bytes:
    """One new alert group: its own incident (critical-prod groups by Alertmanager group)."""
    raw = json.loads(FIXTURE.read_text())
    raw["alerts"][0]["fingerprint"] = f"{i:016x}"
    raw["alerts"][0]["labels"]["instance"] = f"{run}-{i}"
    raw["groupKey"] = f'{{}}:{{run="{run}", i="{i}"}}'
    return json.dumps(raw).encode()


def shard(incident_id: str) -> int:
    return keys.shard_of_id(incident_id)


@dataclass
class Senders:
    """Workers posting new groups at `rate` per second in all; a refused one is retried until 200."""

    base: str
    run: str
    rate: float
    workers: int = 16  # enough that the rate, not each answer's latency, paces them
    # (attempt sent, answered 200, incident ids)
    accepted: list[tuple[float, float, list[str]]] = field(default_factory=list)
    refused: list[float] = field(default_factory=list)
    stopping: bool = False
    _next: int = 0

    async def run_all(self) -> None:
        timeout = aiohttp.ClientTimeout(total=15)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            await asyncio.gather(*(self._worker(session) for _ in range(self.workers)))

    async def _worker(self, session: aiohttp.ClientSession) -> None:
        period = self.workers / self.rate
        while not self.stopping:
            started = time.monotonic()
            body, self._next = webhook(self.run, self._next), self._next + 1
            while not self.stopping:
                sent = time.monotonic()
                with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                    async with session.post(self.base + WEBHOOK, data=body) as resp:
                        if resp.status == 200:
                            ids = (await resp.json())["incidents"]
                            self.accepted.append((sent, time.monotonic(), ids))
                            break
                self.refused.append(time.monotonic())
                await asyncio.sleep(0.1)  # Alertmanager backs off too
            await asyncio.sleep(max(0.0, period - (time.monotonic() - started)))

    def first_ok(self, after: float, shards: set[int]) -> float | None:
        """When the first webhook sent after `after` for one of `shards` was accepted."""
        return next((t for s, t, ids in self.accepted if s > after and shard(ids[0]) in shards), None)


class Topology(Protocol):
    url: str

    def stall_and_kill(self, stall_s: float) -> tuple[float, float, set[int]]: ...
    def recover(self) -> float: ...
    def close(self) -> None: ...


def _stall(master: RedisServer, replica: RedisServer) -> float:
    """The replica stops (SIGSTOP: it neither acknowledges nor reconnects) and the master ends the
    replication stream: what was already in the replica's socket buffer it applies when resumed,
    any write after this is on the master only. (A stop or DEBUG SLEEP alone loses nothing: the
    kernel buffers the stream and the replica catches up when it wakes.)"""
    assert replica.proc is not None
    replica.proc.send_signal(signal.SIGSTOP)
    with redis.Redis(host=HOST, port=master.port) as r:
        r.execute_command("CLIENT", "KILL", "TYPE", "replica")
    return time.monotonic()


def _kill(master: RedisServer, replica: RedisServer) -> float:
    master.kill()
    at = time.monotonic()
    assert replica.proc is not None
    replica.proc.send_signal(signal.SIGCONT)
    return at


def _rejoined(old: RedisServer, new: RedisServer) -> None:
    """Until the restarted node is the promoted one's replica, in sync; or why not, with its log."""
    try:
        wait_for_replicas(new.port, 1, timeout_s=30)
    except ServerStartError as exc:
        with contextlib.suppress(redis.RedisError, OSError), redis.Redis(host=HOST, port=new.port) as r:
            exc.add_note(f"new master :{new.port}: {r.info('replication')}")
        raise RuntimeError(f"{exc}\nrestarted node :{old.port}:\n{old.log_tail(15)}") from exc


class SentinelPair:
    def __init__(self) -> None:
        self.nodes = [RedisServer().start()]
        self.nodes.append(RedisServer(extra_args=("--replicaof", HOST, str(self.nodes[0].port))).start())
        wait_for_replicas(self.nodes[0].port, 1)
        watch = partial(Sentinel, quorum=2, down_after_ms=DOWN_AFTER_MS, failover_timeout_ms=FAILOVER_MS)
        self.sentinels = [watch(self.nodes[0].port) for _ in range(3)]
        hosts = ",".join(f"{HOST}:{s.port}" for s in self.sentinels)
        self.url = f"redis+sentinel://{hosts}/mymaster"
        self.not_before = 0.0

    def _roles(self) -> tuple[RedisServer, RedisServer]:
        port = self.sentinels[0].master_port()
        master = next(n for n in self.nodes if n.port == port)
        return master, next(n for n in self.nodes if n is not master)

    def stall_and_kill(self, stall_s: float) -> tuple[float, float, set[int]]:
        # a Sentinel will not fail the same master over again within 2 x failover-timeout
        time.sleep(max(0.0, self.not_before - time.monotonic()))
        self.master, self.replica = self._roles()
        wait_for_replicas(self.master.port, 1)
        stalled = _stall(self.master, self.replica)
        time.sleep(stall_s)
        killed = _kill(self.master, self.replica)
        self.not_before = killed + (DOWN_AFTER_MS + 2 * FAILOVER_MS) / 1000 + 1
        return stalled, killed, set(range(keys.SHARDS))

    def recover(self) -> float:
        """Until every Sentinel names the replica; then the killed node returns as its replica."""
        deadline = time.monotonic() + 60
        while any(s.master_port() != self.replica.port for s in self.sentinels):
            if time.monotonic() > deadline:
                raise RuntimeError("the Sentinels did not promote the replica within 60 s")
            time.sleep(0.02)
        promoted = time.monotonic()
        self.master.extra_args = ("--replicaof", HOST, str(self.replica.port))
        self.master.start()
        _rejoined(self.master, self.replica)
        return promoted

    def close(self) -> None:
        for s in self.sentinels:
            s.close()
        for n in self.nodes:
            n.close()


class Cluster:
    def __init__(self) -> None:
        self.cluster = RedisCluster(replicas=1).start()
        self.url = self.cluster.url
        self.rounds = 0

    def stall_and_kill(self, stall_s: float) -> tuple[float, float, set[int]]:
        masters = self.cluster.primaries()
        self.master = masters[self.rounds % len(masters)]
        self.rounds += 1
        self.replica = self.cluster.replica_of(self.master)
        wait_for_replicas(self.master.port, 1)
        owned = {s for s in range(keys.SHARDS) if self._owner(s) == self.master.port}
        stalled = _stall(self.master, self.replica)
        time.sleep(stall_s)
        return stalled, _kill(self.master, self.replica), owned

    def _owner(self, s: int) -> int:
        """The port of the master holding shard `s` (every key of a shard shares one hash slot)."""
        slot = key_slot(keys.timers(s).encode())
        with redis.Redis(host=HOST, port=self.master.port) as r:
            for lo, hi, (_host, port, *_), *_ in r.execute_command("CLUSTER", "SLOTS"):
                if int(lo) <= slot <= int(hi):
                    return int(port)
        return 0

    def recover(self) -> float:
        self.cluster.wait_promoted(self.replica, timeout_s=60)
        promoted = time.monotonic()
        self.master.start()  # from its nodes.conf: it follows the replica promoted in its place
        _rejoined(self.master, self.replica)
        while role(self.master.port) != "slave":
            time.sleep(0.02)
        return promoted

    def close(self) -> None:
        self.cluster.close()


def engine(url: str, min_replicas: int) -> contextlib.AbstractContextManager[Server]:
    env = {
        "ESCALATION_REDIS_URL": url,
        "ESCALATION_REDIS_MIN_REPLICAS": str(min_replicas),
        "ESCALATION_REDIS_MIN_REPLICAS_TIMEOUT_MS": str(WAIT_TIMEOUT_MS),
    }
    return running(Target("engine failover", "engine", "always"), env)


async def lost_ids(base: str, accepted: list[tuple[float, float, list[str]]]) -> set[str]:
    """Incidents of accepted webhooks that the engine no longer has (404)."""
    gate, lost = asyncio.Semaphore(16), set()
    async with aiohttp.ClientSession() as session:

        async def check(incident_id: str) -> None:
            async with gate, session.get(f"{base}/api/v1/incidents/{incident_id}") as resp:
                if resp.status == 404:
                    lost.add(incident_id)
                elif resp.status != 200:
                    raise RuntimeError(f"reading {incident_id}: HTTP {resp.status} {await resp.text()}")

        await asyncio.gather(*(check(i) for _, _, ids in accepted for i in ids))
    return lost


@dataclass(frozen=True)
class Round:
    stalled: float  # the replica stopped following
    killed: float
    promoted: float
    back: float  # the first 200 for the killed master's shards, sent after the kill
    shards: set[int]

    def behind(self, sent: float, answered: float, incident_id: str) -> bool:
        """Accepted on the master alone: sent before the kill, answered after the stall began."""
        return sent < self.killed and answered >= self.stalled and shard(incident_id) in self.shards


async def failovers(topo: "Topology", senders: Senders, args: argparse.Namespace) -> list[Round]:
    rounds = []
    for _ in range(args.rounds):
        await asyncio.sleep(args.settle)
        stalled, killed, shards = await asyncio.to_thread(topo.stall_and_kill, args.stall)
        promoted = await asyncio.to_thread(topo.recover)
        deadline = time.monotonic() + 60
        while (back := senders.first_ok(killed, shards)) is None:
            if time.monotonic() > deadline:
                raise RuntimeError("no webhook accepted within 60 s of the failover")
            await asyncio.sleep(0.02)
        rounds.append(Round(stalled, killed, promoted, back, shards))
    return rounds


async def measure(kind: str, min_replicas: int, args: argparse.Namespace) -> dict[str, Any]:
    topo: Topology = await asyncio.to_thread(SentinelPair if kind == "sentinel" else Cluster)
    try:
        with engine(topo.url, min_replicas) as server:
            senders = Senders(server.base, f"{kind}{min_replicas}", args.rate)
            sending = asyncio.create_task(senders.run_all())
            try:
                rounds = await failovers(topo, senders, args)
            finally:
                senders.stopping = True
                await sending
            lost = await lost_ids(server.base, senders.accepted)
    finally:
        await asyncio.to_thread(topo.close)
    behind = {i for s, t, ids in senders.accepted for i in ids if any(r.behind(s, t, i) for r in rounds)}
    unavailable = [r.back - r.killed for r in rounds]
    steady = sorted(  # answer latency away from the failovers: what WAIT costs every webhook
        (t - s) * 1000 for s, t, _ in senders.accepted if not any(r.stalled - 1 < s < r.back for r in rounds)
    )
    return {
        "rounds": len(rounds),
        "webhooks_accepted": len(senders.accepted),
        "accepted_while_replica_behind": len(behind),
        "lost": len(lost),
        "lost_outside_stall": len(lost - behind),
        "refused_attempts": len(senders.refused),
        "steady_latency_ms_p50": round(steady[len(steady) // 2], 1),
        "steady_latency_ms_p99": round(steady[int(len(steady) * 0.99)], 1),
        "unavailable_s_p50": round(statistics.median(unavailable), 2),
        "unavailable_s_max": round(max(unavailable), 2),
        "promoted_after_s_p50": round(statistics.median(r.promoted - r.killed for r in rounds), 2),
        "unavailable_s_each": " ".join(f"{u:.2f}" for u in unavailable),
    }


def render(flat: Flat, command: str) -> str:
    each = {k: v for k, v in flat.items() if k.endswith("_each")}
    rows = []
    for kind in ("sentinel", "cluster"):
        for mode in ("async", "wait"):
            g = {k.rpartition(".")[2]: v for k, v in flat.items() if k.startswith(f"failover.{kind}.{mode}.")}
            if g:
                rows.append(
                    f"| {kind} | {'`MIN_REPLICAS=1`' if mode == 'wait' else 'async (0)'} | {g['rounds']} | "
                    f"{g['webhooks_accepted']} | {g['accepted_while_replica_behind']} | **{g['lost']}** | "
                    f"{g['refused_attempts']} | {g['promoted_after_s_p50']} | {g['unavailable_s_p50']} / "
                    f"{g['unavailable_s_max']} | {g['steady_latency_ms_p50']} / "
                    f"{g['steady_latency_ms_p99']} | {g.get('others_cpu_cores_before', '-')} |"
                )
    return "\n".join(
        [
            "# Redis failover: accepted webhooks lost, with and without WAIT",
            "",
            f"`{command}` on {flat['meta.machine']}, {flat['meta.date']}, commit {flat['meta.commit']}.",
            "",
            __doc__.split("\n\n", 2)[2].strip() if __doc__ else "",
            "",
            "| topology | replication | failovers | webhooks accepted "
            "| accepted while the replica was behind | accepted, then lost "
            "| refused attempts (503 / reset) | promoted after, s (p50) | unavailable, s (p50 / max) "
            "| 200 latency away from failovers, ms (p50 / p99) | cores used by other work at start |",
            "|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|",
            *rows,
            "",
            "Without WAIT, what the master accepted while its replica was behind is gone after the "
            "replica is promoted. With `ESCALATION_REDIS_MIN_REPLICAS=1` those webhooks were answered "
            "503 (each after the 500 ms WAIT timeout), Alertmanager-style retries were accepted by the "
            "promoted master, and nothing accepted was lost. The price: with one replica per master, "
            "a master without its replica refuses commits, so unavailability lasts until the killed "
            "node is back as a replica (here, restarted at once); with two replicas and "
            "MIN_REPLICAS=1 it would not.",
            "",
            '"Accepted while the replica was behind" counts answers that arrived after the stall '
            "began to webhooks sent before the kill, on the killed master's shards: an upper bound "
            "(some were committed, and replicated, just before). Latency and throughput are from a "
            "shared 2-core VM (last column: other work running when the run started); compare the "
            "loss columns, which do not depend on it.",
            "",
            "Per-round unavailability (s): "
            + "; ".join(f"{k.split('.')[1]} {k.split('.')[2]}: {v}" for k, v in each.items()),
            "",
        ]
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.failover", description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=8, help="failovers per topology and mode")
    parser.add_argument("--rate", type=float, default=200, help="new webhooks per second")
    parser.add_argument(
        "--stall", type=float, default=0.3, help="seconds the replica is behind before the kill"
    )
    parser.add_argument(
        "--settle", type=float, default=1.0, help="seconds of steady traffic before each round"
    )
    parser.add_argument("--only", choices=("sentinel", "cluster"), help="one topology only")
    parser.add_argument(
        "--quiet-wait", type=float, default=60, help="max seconds to wait for an idle machine"
    )
    parser.add_argument("--out", type=Path, default=BENCH)
    args = parser.parse_args(argv)
    flat: Flat = {
        "meta.date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        **report.git(),
        **report.machine(),
        **report.versions(),
    }
    for kind in ("sentinel", "cluster"):
        if args.only and kind != args.only:
            continue
        for mode, min_replicas in (("async", 0), ("wait", 1)):
            others = wait_quiet(args.quiet_wait)  # figures taken beside other work are not comparable
            started = time.monotonic()
            r = asyncio.run(measure(kind, min_replicas, args)) | {"others_cpu_cores_before": round(others, 2)}
            flat |= {f"failover.{kind}.{mode}.{k}": v for k, v in r.items()}
            print(f"{kind} {mode}: {r} ({time.monotonic() - started:.0f} s)", flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "failover.json").write_text(json.dumps(flat, indent=2) + "\n")
    (args.out / "FAILOVER.md").write_text(render(flat, "python -m bench.failover " + " ".join(argv or [])))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
