"""Sustained Alertmanager webhook ingest: the engine (fsync always / everysec) against a bare aiohttp echo.

    python bench/ingest.py                     # ~3 minutes; needs `wrk` (apt-get install wrk)
    python bench/ingest.py --profile mix       # plus one py-spy profiled run of the engine

Every server runs as a subprocess on 127.0.0.1 and is driven by wrk (one thread, N connections,
bench/ingest.lua) for a warm-up and then a measured run. Two request mixes:
  new  every webhook is a new group: 3 incidents open (shipped routing: one per group for the
       critical alert, one per alert for the two warnings)
  mix  20% new groups, 80% byte-identical repeats of groups already sent (Alertmanager re-sends
       every group every group_interval): all 3 alerts are duplicates of open incidents
Each (server, mix) pair gets a fresh process and data directory. Results: a Markdown table on stdout
and bench/results/ingest-<date>.json.
"""

import argparse
import contextlib
import datetime
import json
import os
import random
import re
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # `python bench/ingest.py` runs without the bench package on the path
    from bench.sinks import SinkProcess

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
FIXTURE = ROOT / "tests" / "fixtures" / "02-firing-group.json"
LUA = BENCH / "ingest.lua"
WEBHOOK = "/api/v1/alertmanager"
TICK = os.sysconf("SC_CLK_TCK")
COUNTERS = (
    "escalation_webhook_requests_total",
    "escalation_alerts_received_total",
    "escalation_duplicate_alerts_total",
    "escalation_incidents_opened_total",
    "escalation_commit_conflicts_total",
    "escalation_notifications_total",  # send attempts, every outcome
    "escalation_notifications_deferred_total",  # held back by a rate limit or an open breaker
    "escalation_dead_letters_total",
)
SENT = "escalation_notifications_sent"  # derived: attempts with outcome="success"
GAUGES = ("escalation_outbox_depth",)  # its value at the end of the window, not a difference


@dataclass(frozen=True)
class Target:
    name: str
    kind: str  # "echo" | "engine"
    fsync: str = ""
    log_level: str = "warning"


@dataclass
class Result:
    target: str
    mix: str
    rps: float  # 2xx answers per second
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    requests: int
    errors: dict[str, int]
    cpu: dict[str, float] = field(default_factory=dict)  # cores used over the run, per process
    engine: dict[str, float] = field(default_factory=dict)  # engine counter deltas over the run
    sinks: dict[str, float] = field(default_factory=dict)  # receivers' count deltas over the run


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def write_template(path: Path) -> None:
    """The fixture with placeholders wrk fills in: a groupKey tag and the three fingerprints."""
    doc = json.loads(FIXTURE.read_text())
    doc["groupKey"] = doc["groupKey"][:-1] + ', bench="@G@"}'
    for i, alert in enumerate(doc["alerts"]):
        alert["fingerprint"] = f"@F{i}@"
    path.write_text(json.dumps(doc, separators=(",", ":")))


def worker_of(pid: int) -> int | None:
    """The child of `pid` that runs `engine worker`, if any."""
    for entry in Path("/proc").iterdir():
        with contextlib.suppress(OSError, ValueError, IndexError):
            if not entry.name.isdigit() or b"\0worker\0" not in (entry / "cmdline").read_bytes():
                continue
            if int((entry / "stat").read_text().rpartition(")")[2].split()[1]) == pid:
                return int(entry.name)
    return None


def cpu_seconds(pid: int | None) -> float:
    if pid is None:
        return 0.0
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / TICK  # utime + stime


def busy_cores_total() -> tuple[float, float]:
    """(busy CPU seconds of the whole machine, monotonic time) from /proc/stat."""
    f = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    return (sum(f) - f[3] - f[4]) / TICK, time.monotonic()  # minus idle and iowait


def wait_quiet(limit_s: float, threshold: float = 0.3) -> float:
    """Wait (at most limit_s) until other work uses < threshold cores over 1 s; return that load."""
    deadline = time.monotonic() + limit_s
    while True:
        b0, t0 = busy_cores_total()
        time.sleep(1)
        b1, t1 = busy_cores_total()
        load = (b1 - b0) / (t1 - t0)
        if load < threshold or time.monotonic() > deadline:
            return load
        print(f"  machine busy ({load:.2f} cores used by others), waiting", flush=True)


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except OSError:
        return False
    return state != "Z"


class Server:
    """One server subprocess; stop() also ends the engine's embedded redis-server, whatever happened."""

    def __init__(
        self,
        target: Target,
        port: int,
        workdir: Path,
        policies: Path | None = None,
        extra_env: dict[str, str] | None = None,
    ) -> None:
        self.target = target
        self.port = port
        self.workdir = workdir
        self.policies = policies or BENCH / "policies" / "ingest"
        self.extra_env = extra_env or {}
        self.data_dir = workdir / "data"
        self.log_path = workdir / "server.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("ESCALATION_")}
        listen = f"127.0.0.1:{self.port}"
        if self.target.kind == "echo":
            cmd = [sys.executable, str(BENCH / "echo_server.py"), "--listen", listen]
        else:
            cmd = [sys.executable, "-m", "engine", "serve", "--policies", str(self.policies),
                   "--listen", listen, "--data-dir", str(self.data_dir)]  # fmt: skip
            env |= {
                "ESCALATION_REDIS_FSYNC": self.target.fsync,
                "ESCALATION_LOG_LEVEL": self.target.log_level,
                "ESCALATION_LOG_FORMAT": "json",
            } | self.extra_env
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                cmd, cwd=ROOT, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=log
            )
        self._wait_ready()

    def _wait_ready(self, timeout_s: float = 30) -> None:
        assert self.proc is not None
        path = "/-/healthy" if self.target.kind == "echo" else "/-/ready"
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.target.name} exited:\n{self.log_path.read_text()[-2000:]}")
            with contextlib.suppress(OSError), urllib.request.urlopen(self.base + path, timeout=1) as r:  # noqa: S310
                if r.status == 200:
                    return
            time.sleep(0.1)
        raise RuntimeError(f"{self.target.name} not ready after {timeout_s}s")

    @property
    def worker_pid(self) -> int | None:
        """serve's worker process (timers, delivery, retention): its child running `engine worker`."""
        return worker_of(self.proc.pid) if self.proc is not None else None

    @property
    def redis_pid(self) -> int | None:
        """From the embedded store's lock file: `redis-server pid N, engine pid M`."""
        with contextlib.suppress(OSError):
            m = re.match(r"redis-server pid (\d+)", (self.data_dir / "engine.lock").read_text())
            if m:
                return int(m.group(1))
        return None

    def stop(self) -> None:
        redis_pid = self.redis_pid
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.send_signal(signal.SIGTERM)  # the engine stops its redis-server itself
                try:
                    self.proc.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait()
            self.proc = None
        if redis_pid is None or not alive(redis_pid):
            return
        with contextlib.suppress(OSError):  # only if that pid is still a redis-server
            if b"redis-server" in Path(f"/proc/{redis_pid}/cmdline").read_bytes():
                os.kill(redis_pid, signal.SIGTERM)
                deadline = time.monotonic() + 10
                while alive(redis_pid) and time.monotonic() < deadline:
                    time.sleep(0.1)
                if alive(redis_pid):
                    os.kill(redis_pid, signal.SIGKILL)


@contextlib.contextmanager
def running(
    target: Target, extra_env: dict[str, str] | None = None, policies: Path | None = None
) -> Iterator[Server]:
    workdir = Path(tempfile.mkdtemp(prefix="bench-" + re.sub(r"\W+", "-", target.name) + "-"))
    server = Server(target, free_port(), workdir, policies, extra_env)
    try:
        server.start()
        yield server
    finally:
        server.stop()
        shutil.rmtree(workdir, ignore_errors=True)


def wrk(url: str, seconds: int, connections: int, new_share: float, template: Path) -> dict[str, Any]:
    env = os.environ | {
        "BENCH_TEMPLATE": str(template),
        "BENCH_RUN": str(random.randrange(1 << 24)),
        "BENCH_NEW_SHARE": str(new_share),
    }
    cmd = ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--timeout", "10s", "-s", str(LUA), url]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=seconds + 60, check=True)
    for line in out.stdout.splitlines():
        if line.startswith("BENCH "):
            result: dict[str, Any] = json.loads(line[6:])
            return result
    raise RuntimeError(f"no BENCH line from wrk:\n{out.stdout}\n{out.stderr}")


def counters(base: str) -> dict[str, float]:
    with urllib.request.urlopen(base + "/metrics", timeout=10) as r:  # noqa: S310 - http://127.0.0.1
        text = r.read().decode()
    total = dict.fromkeys((*COUNTERS, SENT, *GAUGES), 0.0)
    for line in text.splitlines():
        name = line.split("{")[0].split(" ")[0]
        if name in total:
            total[name] += float(line.rsplit(" ", 1)[1])
            if name == "escalation_notifications_total" and 'outcome="success"' in line:
                total[SENT] += float(line.rsplit(" ", 1)[1])
    return total


def measure(
    server: Server,
    mix: str,
    args: argparse.Namespace,
    template: Path,
    profile: Path | None,
    sinks: "SinkProcess | None" = None,
) -> Result:
    """wrk's warm-up, then its measured window; with `sinks`, what the receivers got in the window."""
    url = server.base + WEBHOOK
    share = 1.0 if mix == "new" else args.new_share
    wrk(url, args.warmup, args.connections, share, template)
    pids = {"server": server.proc.pid if server.proc else None, "redis": server.redis_pid,
            "worker": server.worker_pid}  # fmt: skip
    if sinks is not None:
        pids["sinks"] = sinks.pid
    # counters first: with the worker paused (bench/ingest_matrix.py) a scrape waits 2 s for it,
    # which must not fall between the CPU readings and the window they are divided by
    before = counters(server.base) if server.target.kind == "engine" else {}
    before_cpu = {k: cpu_seconds(p) for k, p in pids.items()}
    before_wrk = resource.getrusage(resource.RUSAGE_CHILDREN)
    before_all = busy_cores_total()
    before_sinks = sinks.counts() if sinks is not None else {}
    spy = None
    if profile is not None and pids["server"] is not None:
        cmd = ["py-spy", "record", "--pid", str(pids["server"]), "--duration", str(args.duration),
               "--rate", "200", "--format", "raw", "--output", str(profile)]  # fmt: skip
        spy = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    started = time.monotonic()
    w = wrk(url, args.duration, args.connections, share, template)
    elapsed = time.monotonic() - started
    if spy is not None:
        spy.wait(timeout=60)
    after_wrk = resource.getrusage(resource.RUSAGE_CHILDREN)
    after_all = busy_cores_total()
    cpu = {k: round((cpu_seconds(p) - before_cpu[k]) / elapsed, 2) for k, p in pids.items() if p}
    wrk_s = after_wrk.ru_utime + after_wrk.ru_stime - before_wrk.ru_utime - before_wrk.ru_stime
    cpu["wrk"] = round(wrk_s / elapsed, 2)
    # everything else busy on the machine: other processes, and kernel time (loopback softirq) not
    # charged to ours
    machine = (after_all[0] - before_all[0]) / (after_all[1] - before_all[1])
    cpu["others"] = round(machine - sum(cpu.values()), 2)
    got = {k: v - before_sinks.get(k, 0) for k, v in sinks.counts().items()} if sinks is not None else {}
    engine = {}
    if before:
        after = counters(server.base)
        engine = {k.removeprefix("escalation_"): after[k] - (k not in GAUGES) * before[k] for k in after}
    lat = w["latency_us"]
    return Result(
        target=server.target.name,
        mix=mix,
        rps=round((w["requests"] - w["errors"]["status"]) / (w["duration_us"] / 1e6), 1),
        p50_ms=lat["p50"] / 1000,
        p90_ms=lat["p90"] / 1000,
        p99_ms=lat["p99"] / 1000,
        max_ms=lat["max"] / 1000,
        requests=w["requests"],
        errors=w["errors"],
        cpu=cpu,
        engine=engine,
        sinks=got,
    )


def table(results: list[Result]) -> str:
    echo = {r.mix: r.rps for r in results if r.target == "echo"}
    rows = [
        "| server | mix | 2xx req/s | p50 ms | p99 ms | engine/echo "
        "| CPU cores: server, worker, redis, wrk, others | non-2xx |",
        "|---|---|---:|---:|---:|---:|---|---:|",
    ]
    for r in results:
        ratio = f"{r.rps / echo[r.mix]:.3f}" if r.target != "echo" and echo.get(r.mix) else ""
        cpu = ", ".join(f"{r.cpu.get(k, 0):.2f}" for k in ("server", "worker", "redis", "wrk", "others"))
        rows.append(
            f"| {r.target} | {r.mix} | {r.rps:,.0f} | {r.p50_ms:.1f} | {r.p99_ms:.1f} | {ratio} | {cpu} "
            f"| {r.errors['status']} |"
            + (f" other errors {r.errors}" if sum(r.errors.values()) > r.errors["status"] else "")
        )
    return "\n".join(rows)


def git_state() -> str:
    """HEAD and whether engine/ has uncommitted changes (others may be editing while we measure)."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
        )
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "engine"], cwd=ROOT, capture_output=True, text=True
        )
    except OSError:
        return "unknown"
    return head.stdout.strip() + (" + uncommitted engine/ changes" if dirty.stdout.strip() else "")


def _exit_once(signum: int, _frame: object) -> None:
    """Unwind through the finally blocks (servers stopped, temp dirs removed); later signals would
    interrupt that cleanup, so they are ignored: it is bounded (about 30 s at most)."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    sys.exit(128 + signum)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=int, default=15, help="measured seconds per run")
    parser.add_argument("--warmup", type=int, default=3, help="warm-up seconds per run")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--new-share", type=float, default=0.2, help="share of new groups in the mix")
    parser.add_argument("--mixes", default="new,mix")
    parser.add_argument("--no-info", action="store_true", help="skip the extra log-level=info run")
    parser.add_argument(
        "--profile", choices=("new", "mix"), help="one extra py-spy run of the engine (fsync=always)"
    )
    parser.add_argument("--tag", default="", help="suffix for the results file name")
    parser.add_argument(
        "--quiet-wait", type=float, default=60, help="max seconds to wait for an idle machine"
    )
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        print("wrk not found: apt-get install -y wrk", file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, _exit_once)
    signal.signal(signal.SIGINT, _exit_once)
    sys.path.insert(0, str(ROOT))  # run as a script: bench/ is the path, not the repository
    from bench.spy import profile_summary

    targets = [
        Target("echo", "echo"),
        Target("engine fsync=always", "engine", "always"),
        Target("engine fsync=everysec", "engine", "everysec"),
    ]
    mixes = args.mixes.split(",")
    plan = [(t, m) for t in targets for m in mixes]
    if not args.no_info:
        plan.append((Target("engine fsync=always, log info", "engine", "always", "info"), "mix"))
    out_dir = BENCH / "results"
    out_dir.mkdir(exist_ok=True)
    today = datetime.date.today().isoformat()
    results: list[Result] = []
    engine_rev = git_state()
    print(f"engine at {engine_rev}", flush=True)
    with tempfile.TemporaryDirectory(prefix="bench-ingest-") as tmp:
        template = Path(tmp) / "body.json"
        write_template(template)
        for target, mix in plan:
            wait_quiet(args.quiet_wait)
            with running(target) as server:
                r = measure(server, mix, args, template, None)
            line = f"{r.target:32} {r.mix:4} {r.rps:8.0f} req/s  p50 {r.p50_ms:6.1f}  p99 {r.p99_ms:6.1f} ms"
            print(f"{line}  cpu {r.cpu}  {r.engine or ''}", flush=True)
            results.append(r)
        profile_top: dict[str, list[tuple[str, float]]] = {}
        if args.profile:
            raw = out_dir / f"ingest-profile-{today}-{args.profile}{'-' + args.tag if args.tag else ''}.txt"
            wait_quiet(args.quiet_wait)
            with running(Target("engine fsync=always (py-spy)", "engine", "always")) as server:
                measure(server, args.profile, args, template, raw)
            profile_top = profile_summary(raw)
    print()
    print(table(results))
    if profile_top:
        for kind, rows in profile_top.items():
            print(f"\npy-spy, engine, {args.profile} (fsync=always): {kind}, % of event-loop thread samples")
            for fn, pct in rows:
                print(f"{pct:5.1f}  {fn}")
    meta = {"date": today, "cores": os.cpu_count(), "python": sys.version.split()[0], "engine": engine_rev,
            "args": vars(args)}  # fmt: skip
    doc = {"meta": meta, "results": [asdict(r) for r in results], "profile_top": profile_top}
    (out_dir / f"ingest-{today}{'-' + args.tag if args.tag else ''}.json").write_text(
        json.dumps(doc, indent=2) + "\n"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
