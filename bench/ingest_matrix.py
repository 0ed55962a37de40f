"""The ingest part of `python -m bench`: a matrix of wrk runs, each engine run beside its ceiling.

A cell is (policy, mix, alerts per webhook, connections):
  policy   stripped  bench/policies/ingest: the shipped routing and ladders, no page leaves
           shipped   the shipped policies/ with every channel at loopback receivers (bench/shipped.py,
                     bench/sinks.py): pages really go out, and the receivers count them
  mix      new (every webhook a new group) | mix (20 % new groups, 80 % byte-identical repeats)
Bodies come from bench/payloads.py (label sets that the shipped rules route, mixed severities),
the same for every policy and for the echo. The ceiling is bench/echo_server.py driven by the same
wrk script with the same bodies and connections, in the same run; one echo run serves every cell
with its (mix, alerts, connections). Keys: `ingest.<policy>.<mix>.a<alerts>.c<connections>.*`;
the stripped 3-alert cells are also written as `ingest.<mix>.c<connections>.*` (their names
before the matrix existed).
"""

import argparse
import contextlib
import os
import signal
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import redis

from bench import ingest, payloads, shipped, sinks
from engine.store import keys as store_keys

Progress = Callable[[str], None]
Flat = dict[str, float | int | str | bool]
NEW_SHARE = 0.2
ECHO = ingest.Target("echo", "echo")
ENGINE = ingest.Target("engine fsync=always", "engine", "always")


@dataclass(frozen=True)
class Cell:
    policy: str  # stripped | shipped
    mix: str  # new | mix
    alerts: int  # per webhook
    connections: int
    # serve's worker (delivery, timers) stopped with SIGSTOP for the whole run: what the HTTP
    # process alone takes, and how many notifications it decides per webhook for delivery to send
    worker_paused: bool = False

    @property
    def key(self) -> str:
        paused = ".worker_paused" if self.worker_paused else ""
        return f"ingest.{self.policy}.{self.mix}.a{self.alerts}.c{self.connections}{paused}"

    @property
    def alias(self) -> str | None:
        """The name the stripped 3-alert runs had before the matrix (other code reads it)."""
        stripped_a3 = (self.policy, self.alerts, self.worker_paused) == ("stripped", 3, False)
        return f"ingest.{self.mix}.c{self.connections}" if stripped_a3 else None


@dataclass(frozen=True)
class Sizes:
    cells: tuple[Cell, ...]
    warmup_s: int
    duration_s: int
    echo_warmup_s: int  # the echo is steady: a shorter run measures it as well
    echo_duration_s: int
    quiet_wait_s: float  # before each run, wait at most this long for an idle machine,
    quiet_budget_s: float  # and at most this long over the whole part (a busy machine stays busy)


def _args(warmup: int, duration: int, connections: int) -> argparse.Namespace:
    return argparse.Namespace(warmup=warmup, duration=duration, connections=connections, new_share=NEW_SHARE)


def _line(name: str, cell: Cell, r: ingest.Result, extra: str = "") -> str:
    name += " (worker paused)" if cell.worker_paused else ""
    return (
        f"ingest {name:8} {cell.mix:3} a{cell.alerts:<2} c{cell.connections:<3} {r.rps:8,.0f} webhooks/s "
        f"{r.rps * cell.alerts:8,.0f} alerts/s  p50 {r.p50_ms:6.1f} ms  p99 {r.p99_ms:7.1f} ms  "
        f"non-2xx {r.errors['status']}{extra}"
    )


def _engine_keys(cell: Cell, r: ingest.Result, echo: ingest.Result, seconds: int) -> Flat:
    e = r.engine
    alerts = e.get("alerts_received_total", 0.0)
    flat: Flat = {
        "webhooks_per_s": r.rps,
        "alerts_per_s": round(r.rps * cell.alerts, 1),
        "p50_ms": r.p50_ms,
        "p99_ms": r.p99_ms,
        "max_ms": r.max_ms,
        "non_2xx": r.errors["status"],
        "socket_errors": sum(r.errors.values()) - r.errors["status"],
        "ceiling_webhooks_per_s": echo.rps,
        "ceiling_alerts_per_s": round(echo.rps * cell.alerts, 1),
        "ceiling_p50_ms": echo.p50_ms,
        "ceiling_p99_ms": echo.p99_ms,
        "ceiling_cpu_cores": echo.cpu.get("server", 0.0),
        "ratio_to_ceiling": round(r.rps / echo.rps, 4) if echo.rps else 0.0,
        "engine_cpu_cores": r.cpu.get("server", 0.0),  # the HTTP process
        "engine_cpu_ms_per_webhook": round(1000 * r.cpu.get("server", 0.0) / r.rps, 3) if r.rps else 0.0,
        "worker_cpu_cores": r.cpu.get("worker", 0.0),  # serve's worker process: timers, delivery
        "redis_cpu_cores": r.cpu.get("redis", 0.0),
        "others_cpu_cores": r.cpu.get("others", 0.0),
        "commit_conflicts": int(e.get("commit_conflicts_total", 0)),
        "duplicate_alert_share": round(e.get("duplicate_alerts_total", 0.0) / alerts, 3) if alerts else 0.0,
        "incidents_opened": int(e.get("incidents_opened_total", 0)),
        "notifications_sent": int(e.get("notifications_sent", 0)),
        "notification_attempts": int(e.get("notifications_total", 0)),
        "notifications_deferred": int(e.get("notifications_deferred_total", 0)),
        "dead_letters": int(e.get("dead_letters_total", 0)),
        "outbox_depth_at_end": int(e.get("outbox_depth", 0)),
    }
    if cell.policy == "shipped":
        got = r.sinks
        total = int(sum(v for k, v in got.items() if k.endswith(".requests")))
        flat |= {
            "sink_requests": total,
            "sink_refused": int(sum(v for k, v in got.items() if k.endswith(".refused"))),
            "sink_requests_per_s": round(total / seconds, 1),
            "sinks_cpu_cores": r.cpu.get("sinks", 0.0),
        }
        flat |= {f"sink.{c}_requests": int(got.get(f"{c}.requests", 0)) for c in sinks.CHANNELS}
    return {f"{cell.key}.{k}": v for k, v in flat.items()}


def _engine_run(cell: Cell, sizes: Sizes, template: Path, tmp: Path) -> tuple[ingest.Result, Flat]:
    """The cell's measurement, and with the worker paused, the notifications decided per webhook."""
    args = _args(sizes.warmup_s, sizes.duration_s, cell.connections)
    if cell.policy == "stripped":
        with ingest.running(ENGINE) as server, _paused(server, cell.worker_paused) as decided:
            return ingest.measure(server, cell.mix, args, template, None), decided
    with tempfile.TemporaryDirectory(prefix="shipped-", dir=tmp) as work, sinks.running(Path(work)) as sk:
        env = shipped.write(Path(work) / "policies", sk.urls)
        policies = Path(work) / "policies"
        with ingest.running(ENGINE, env, policies) as server, _paused(server, cell.worker_paused) as decided:
            return ingest.measure(server, cell.mix, args, template, None, sk), decided


@contextlib.contextmanager
def _paused(server: ingest.Server, pause: bool) -> Iterator[Flat]:
    """With `pause`, serve's worker is stopped (SIGSTOP) inside the block and continued after it.
    Nothing then takes entries off the decided outbox, so its length when the block ends, over
    the webhooks answered since start, is the notifications each webhook decided."""
    found: Flat = {}
    if not pause:
        yield found
        return
    pid = server.worker_pid
    if pid is None:
        raise RuntimeError("serve has no worker process to pause")
    os.kill(pid, signal.SIGSTOP)
    try:
        yield found
        client = redis.Redis(unix_socket_path=str(server.data_dir / "redis.sock"))
        try:
            streams = [store_keys.stream(store_keys.DISPATCH, shard, lane)
                       for shard in range(store_keys.SHARDS) for lane in store_keys.LANES]  # fmt: skip
            decided = sum(int(client.xlen(name)) for name in streams)
        finally:
            client.close()
        webhooks = ingest.counters(server.base)["escalation_webhook_requests_total"]
        found["decided_notifications_per_webhook"] = round(decided / webhooks, 3) if webhooks else 0.0
    finally:
        os.kill(pid, signal.SIGCONT)


def _ordered(cells: tuple[Cell, ...]) -> list[Cell]:
    """Cells that share an echo run one after the other, in the order first named."""
    keys = list(dict.fromkeys((c.mix, c.alerts, c.connections) for c in cells))
    return sorted(cells, key=lambda c: keys.index((c.mix, c.alerts, c.connections)))


def _quiet(limit_s: float) -> None:
    if limit_s >= 1:  # one reading takes 1 s
        ingest.wait_quiet(limit_s)


def run(sizes: Sizes, progress: Progress) -> Flat:
    flat: Flat = {}
    echoes: dict[tuple[str, int, int], ingest.Result] = {}
    runs = len(sizes.cells) + len({(c.mix, c.alerts, c.connections) for c in sizes.cells})
    quiet_s = min(sizes.quiet_wait_s, sizes.quiet_budget_s / runs)
    with tempfile.TemporaryDirectory(prefix="bench-ingest-") as tmp:
        templates = {n: payloads.write(Path(tmp) / f"a{n}.txt", n) for n in {c.alerts for c in sizes.cells}}
        for cell in _ordered(sizes.cells):
            which = (cell.mix, cell.alerts, cell.connections)
            if which not in echoes:
                _quiet(quiet_s)
                args = _args(sizes.echo_warmup_s, sizes.echo_duration_s, cell.connections)
                with ingest.running(ECHO) as server:
                    echoes[which] = ingest.measure(server, cell.mix, args, templates[cell.alerts], None)
                progress(_line("echo", cell, echoes[which]))
            _quiet(quiet_s)
            r, decided = _engine_run(cell, sizes, templates[cell.alerts], Path(tmp))
            keys = _engine_keys(cell, r, echoes[which], sizes.duration_s)
            keys |= {f"{cell.key}.{k}": v for k, v in decided.items()}
            flat |= keys
            if cell.alias:
                flat |= {cell.alias + k.removeprefix(cell.key): v for k, v in keys.items()}
            extra = f"  ratio {keys[cell.key + '.ratio_to_ceiling']:.3f}"
            if cell.policy == "shipped":
                extra += f"  {keys[cell.key + '.sink_requests']:,} deliveries at the sinks"
            if cell.worker_paused:
                extra += f"  {keys[cell.key + '.engine_cpu_ms_per_webhook']} ms HTTP CPU per webhook"
            progress(_line(cell.policy, cell, r, extra))
    flat |= {
        "ingest.warmup_s": sizes.warmup_s,
        "ingest.measured_s": sizes.duration_s,
        "ingest.echo_warmup_s": sizes.echo_warmup_s,
        "ingest.echo_measured_s": sizes.echo_duration_s,
        "ingest.new_share_in_mix": NEW_SHARE,
        "ingest.alerts_per_webhook": 3,  # of the ingest.<mix>.c<N> names
    }
    for n in sorted(templates):
        flat |= {f"ingest.severity_share.a{n}.{k}": v for k, v in payloads.severity_shares(n).items()}
    return flat
