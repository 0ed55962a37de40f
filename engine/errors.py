"""The engine's exception tree; translated to status or exit codes only at the edges."""


class EngineError(Exception):
    """Base of every error the engine raises on purpose."""


class PolicyError(EngineError):
    """Invalid policy files; `problems` holds one `file:line: message` per error."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


class IngestError(EngineError):
    """A payload that cannot be understood (HTTP 400/422)."""

    def __init__(self, message: str, detail: object = None, status: int = 422) -> None:
        super().__init__(message)
        self.detail = detail
        self.status = status


class ClientGone(EngineError):
    """The client went away before its request was read: nothing to answer, nothing to log loudly."""


class IncidentNotFound(EngineError):
    """No incident with that id (HTTP 404)."""


class StoreError(EngineError):
    """Redis failed or is unreachable (HTTP 503)."""


class ConflictError(StoreError):
    """A compare-and-set lost against a concurrent writer; re-read and decide again."""


class DeliveryError(EngineError):
    """A notification could not be delivered."""


class RetryableDeliveryError(DeliveryError):
    """Timeouts, 5xx, 429: try again later (after `retry_after_s` when the channel says)."""

    def __init__(self, message: str, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class PermanentDeliveryError(DeliveryError):
    """4xx, bad configuration: retrying cannot help."""


class NotReplicatedError(StoreError):
    """The master took a commit but fewer replicas than ESCALATION_REDIS_MIN_REPLICAS acknowledged
    it in time: not durable across a failover, so refused (HTTP 503; the sender's retry is a
    duplicate to the state machine, and safe)."""
