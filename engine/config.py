"""Process settings from ESCALATION_* environment variables (policies are YAML, see engine.policy)."""

from pathlib import Path
from typing import Literal

from pydantic import SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="ESCALATION_", extra="ignore")

    policies: Path = Path("policies")
    listen: str = "127.0.0.1:9095"  # beyond loopback needs auth or insecure_no_auth
    redis_url: str | None = None  # None: start the embedded redis-server in data_dir
    data_dir: Path = Path("data")
    redis_fsync: Literal["always", "everysec"] = "always"  # embedded only: 200 means on disk
    public_url: str = ""  # how people reach this engine; used for links in notifications

    # write endpoints: a bearer token and/or basic auth; nothing configured means open
    auth_token: SecretStr | None = None
    auth_token_file: Path | None = None
    auth_basic_user: str | None = None
    auth_basic_password: SecretStr | None = None
    auth_basic_password_file: Path | None = None
    # listening beyond loopback with no credentials configured is refused unless this says so
    insecure_no_auth: bool = False
    auth_failures_per_minute: int = 10  # failed attempts per client address, then 429 for a minute
    tls_cert_file: Path | None = None  # both set: serve HTTPS
    tls_key_file: Path | None = None

    # signs one-click acknowledge/resolve links; unset: a random secret kept in Redis for all replicas
    link_secret: SecretStr | None = None
    link_secret_file: Path | None = None
    link_ttl_s: float = 86_400.0  # how long a link in a page stays usable

    # serve runs timers, delivery and retention in a process of its own (engine.worker); false:
    # all in one process, as `create_app` does (one core, or a separate `engine worker` deployment)
    worker_process: bool = True

    max_body_bytes: int = 4 * 1024 * 1024
    max_inflight_webhooks: int = 64  # more at once wait (below), then are shed with 503 + Retry-After
    webhook_queue_s: float = 0.5  # how long one past the cap waits for a slot (4 x the cap may wait)
    request_header_timeout_s: float = 10.0  # a client slower than this to send headers / body is cut off
    request_body_timeout_s: float = 10.0
    max_connections: int = 1024  # open client connections; more wait in the listen backlog
    # WAIT for this many replicas to acknowledge each commit before answering (0: do not wait)
    redis_min_replicas: int = 0
    redis_min_replicas_timeout_ms: int = 500
    retention_days: float = 30
    archive_dir: Path | None = None  # resolved incidents are written here as JSON lines before they expire
    log_format: Literal["auto", "json", "console"] = "auto"
    # uvloop is opt-in: the connection cap (api/server.GuardedSite) does not hold on it yet
    event_loop: Literal["auto", "uvloop", "asyncio"] = "asyncio"  # auto: uvloop when installed
    log_level: str = "info"

    scheduler_max_sleep_s: float = 1.0  # re-check for timers set by other replicas
    delivery_poll_s: float = 1.0
    # a pending delivery this long untouched belongs to a dead replica (a live one touches what it
    # holds every third of it): the longest a killed replica's in-flight page waits to be re-sent
    delivery_claim_idle_s: float = 10.0
    delivery_timeout_s: float = 10.0
    delivery_backoff_s: float = 2.0
    delivery_backoff_max_s: float = 300.0
    delivery_max_attempts: int = 12
    breaker_failures: int = 5  # consecutive failed sends to one channel endpoint open its breaker
    breaker_open_s: float = 30.0  # then sends fail over (or wait) this long before a probe

    def listen_host_port(self) -> tuple[str, int]:
        host, _, port = self.listen.rpartition(":")
        return host.strip("[]") or "0.0.0.0", int(port)  # noqa: S104 - listening on all interfaces is the documented default
