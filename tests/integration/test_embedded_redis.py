"""EmbeddedRedis: the engine's default store, a redis-server child process owning the data dir."""

import asyncio
import os
import socket
import stat
import sys
import time
from pathlib import Path

import pytest
from redis.asyncio import Redis

from engine.errors import StoreError
from engine.store.embedded import MAX_UNIX_SOCKET_PATH, EmbeddedRedis
from tests.servers import redis_get

ROOT = Path(__file__).resolve().parents[2]


async def _set(url: str, key: str, value: str) -> None:
    client = Redis.from_url(url)
    try:
        await client.set(key, value)
    finally:
        await client.aclose()


def _alive(pid: int) -> bool:
    """A zombie counts as dead: PID 1 in a container may never reap the orphan."""
    try:
        stat_line = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat_line.rsplit(")", 1)[1].split()[0] != "Z"


async def test_state_survives_a_restart(tmp_path: Path) -> None:
    data = tmp_path / "data"
    async with EmbeddedRedis(data) as server:
        assert server.url == f"unix://{data}/redis.sock"
        await _set(server.url, "incident:1", "open")
    assert (data / "appendonly.aof").stat().st_size > 0

    async with EmbeddedRedis(data) as server:
        assert await redis_get(server.url, "incident:1") == b"open"


async def test_data_dir_and_socket_are_private(tmp_path: Path) -> None:
    data = tmp_path / "data"
    async with EmbeddedRedis(data):
        assert stat.S_IMODE(data.stat().st_mode) == 0o700
        assert stat.S_IMODE((data / "redis.sock").stat().st_mode) == 0o700
    assert not (data / "redis.sock").exists()  # removed by a clean shutdown


@pytest.mark.parametrize("fsync", ["always", "everysec"])
async def test_config_is_applied(tmp_path: Path, fsync: str) -> None:
    async with EmbeddedRedis(tmp_path, fsync=fsync) as server:  # type: ignore[arg-type]
        client = Redis.from_url(server.url, decode_responses=True)
        try:
            config = await client.config_get("*")
        finally:
            await client.aclose()
    assert config["appendfsync"] == fsync
    assert config["appendonly"] == "yes"
    assert config["save"] == ""
    assert config["maxmemory-policy"] == "noeviction"
    assert config["port"] == "0"
    assert config["unixsocketperm"] == "700"
    assert config["protected-mode"] == "yes"
    assert config["hash-max-ziplist-value"] == "2048"  # incident hashes stay compact


async def test_a_second_server_on_the_same_data_dir_is_refused(tmp_path: Path) -> None:
    async with EmbeddedRedis(tmp_path) as first:
        with pytest.raises(StoreError, match=f"already running on data dir {tmp_path}"):
            await EmbeddedRedis(tmp_path).start()
        await _set(first.url, "k", "still served")
        assert await redis_get(first.url, "k") == b"still served"
    # Released on stop.
    async with EmbeddedRedis(tmp_path) as again:
        assert await redis_get(again.url, "k") == b"still served"


async def test_stop_is_idempotent_and_start_returns_the_url(tmp_path: Path) -> None:
    server = EmbeddedRedis(tmp_path)
    await server.stop()
    url = await server.start()
    assert await server.start() == url == server.url
    await server.stop()
    await server.stop()
    assert server.pid is None
    with pytest.raises(StoreError):
        _ = server.url


async def test_a_start_failure_shows_the_log_and_releases_the_lock(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(StoreError, match="Address already in use"):
            await EmbeddedRedis(tmp_path, port=port).start()
    async with EmbeddedRedis(tmp_path) as server:
        assert server.url.startswith("unix://")


async def test_a_long_data_dir_falls_back_to_tcp(tmp_path: Path) -> None:
    data = tmp_path / ("d" * MAX_UNIX_SOCKET_PATH)
    async with EmbeddedRedis(data) as server:
        assert server.url.startswith("redis://127.0.0.1:")
        await _set(server.url, "k", "v")
        assert await redis_get(server.url, "k") == b"v"
    assert not (data / "redis.sock").exists()


async def test_an_explicit_port_uses_tcp(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    async with EmbeddedRedis(tmp_path, port=port) as server:
        assert server.url == f"redis://127.0.0.1:{port}"
        assert await redis_get(server.url, "missing") is None


CHILD = """
import asyncio, sys
from pathlib import Path
from engine.store.embedded import EmbeddedRedis

async def main() -> None:
    server = EmbeddedRedis(Path(sys.argv[1]))
    url = await server.start()
    print(url, server.pid, flush=True)
    await asyncio.sleep(3600)

asyncio.run(main())
"""


@pytest.mark.skipif(sys.platform != "linux", reason="PR_SET_PDEATHSIG is Linux-only")
async def test_the_server_dies_when_the_engine_is_sigkilled(tmp_path: Path) -> None:
    engine = await asyncio.create_subprocess_exec(
        sys.executable, "-c", CHILD, str(tmp_path),
        stdout=asyncio.subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )  # fmt: skip
    try:
        assert engine.stdout is not None
        line = await asyncio.wait_for(engine.stdout.readline(), 15)
        url, pid_text = line.decode().split()
        redis_pid = int(pid_text)
        assert _alive(redis_pid)
        await _set(url, "acknowledged", "before the crash")
    finally:
        engine.kill()
        await engine.wait()

    deadline = time.monotonic() + 5
    while _alive(redis_pid) and time.monotonic() < deadline:  # noqa: ASYNC110 - polling another process
        await asyncio.sleep(0.05)
    assert not _alive(redis_pid), "redis-server outlived the engine"

    # The data dir is free again and appendfsync=always kept the acknowledged write.
    async with EmbeddedRedis(tmp_path) as server:
        assert await redis_get(server.url, "acknowledged") == b"before the crash"
