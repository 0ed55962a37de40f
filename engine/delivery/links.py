"""The link secret in use: ESCALATION_LINK_SECRET(_FILE), else one random secret shared in Redis."""

from engine import links
from engine.config import Settings
from engine.store.base import Store


class LinkSecret:
    """Resolved once, on first use, so a Redis that is down at start-up does not stop the engine."""

    def __init__(self, settings: Settings, store: Store) -> None:
        self._store = store
        self._ttl_ms = int(settings.link_ttl_s * 1000)
        self._public_url = settings.public_url
        self._value: bytes | None = None
        if settings.link_secret is not None:
            self._value = settings.link_secret.get_secret_value().encode()
        elif settings.link_secret_file is not None:
            text = settings.link_secret_file.read_text(encoding="utf-8").rstrip("\r\n")
            if not text.strip():
                raise ValueError(f"link secret file {settings.link_secret_file} is empty")
            self._value = text.encode()

    async def get(self) -> bytes:
        if self._value is None:
            self._value = await self._store.link_secret()
        return self._value

    async def links(self, incident_id: str, now_ms: int) -> dict[str, str]:
        """Signed acknowledge/resolve links for a page sent now ({} without a public URL). Each
        page gets its own (the expiry, to the second, is in the token): a link used once does not
        disable the links of a later page, say after an acknowledgement timed out."""
        if not self._public_url:
            return {}
        return links.links_for(await self.get(), self._public_url, incident_id, now_ms + self._ttl_ms)
