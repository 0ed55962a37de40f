"""Small shared state: chat thread references, the link secret, single-use link records."""

import secrets

from engine.store import keys
from engine.store.rediscore import RedisCore


class RedisShared(RedisCore):
    async def thread(self, incident_id: str, channel: str, address: str) -> str | None:
        """What the notifier returned for this incident and address before (Slack's channel and ts)."""
        key = keys.threads(incident_id)
        raw = await self._call("read thread", lambda: self.client.hget(key, f"{channel}:{address}"))
        return None if raw is None else bytes(raw).decode()

    async def set_thread(self, incident_id: str, channel: str, address: str, ref: str) -> None:
        key = keys.threads(incident_id)

        async def write() -> None:
            async with self.client.pipeline(transaction=False) as pipe:
                pipe.hset(key, f"{channel}:{address}", ref)
                if self.retention_ms > 0:  # 0 keeps everything, as for incidents
                    pipe.pexpire(key, self.retention_ms)
                await pipe.execute()

        await self._run("keep thread", write)

    async def link_secret(self) -> bytes:
        """The shared link secret: the first replica to ask creates it, every other one reads it."""
        key, fresh = keys.link_secret(), secrets.token_hex(32)

        async def get_or_set() -> bytes:
            await self.client.set(key, fresh, nx=True)
            value = await self.client.get(key)
            return value.encode() if isinstance(value, str) else bytes(value or fresh.encode())

        return await self._run("read link secret", get_or_set)

    async def use_once(self, digest: str, until_ms: int) -> bool:
        """Record a link as used; False when it was used before (a replay)."""
        key = keys.used_link(digest)
        done = await self._call("use link", lambda: self.client.set(key, "1", nx=True, pxat=until_ms))
        return bool(done)

    async def forget_use(self, digest: str) -> None:
        """Undo use_once: the action it guarded could not be done."""
        key = keys.used_link(digest)
        await self._call("use link", lambda: self.client.delete(key))

    async def epoch(self, create: bool) -> str | None:
        """The store's epoch (see keys.epoch); with `create`, written first when there is none."""
        key, fresh = keys.epoch(), secrets.token_hex(8)

        async def read() -> str | None:
            if create:
                await self.client.set(key, fresh, nx=True)
            value = await self.client.get(key)
            return None if value is None else (value if isinstance(value, str) else bytes(value).decode())

        return await self._run("read epoch", read)
