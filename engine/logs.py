"""structlog set up once at start: JSON when not a terminal, one rich line per unit of work."""

import logging
import sys

import structlog
from aiohttp.http_exceptions import BadHttpMessage


def configure_logging(level: str = "info", fmt: str = "auto") -> None:
    json_out = fmt == "json" or (fmt == "auto" and not sys.stderr.isatty())
    shared: list[structlog.types.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    renderer: structlog.types.Processor = (
        structlog.processors.JSONRenderer() if json_out else structlog.dev.ConsoleRenderer()
    )
    structlog.configure(
        processors=[*shared, structlog.processors.dict_tracebacks if json_out else _noop, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level.upper())),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
        cache_logger_on_first_use=True,
    )
    # aiohttp and redis log through stdlib: render them the same way
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(structlog.stdlib.ProcessorFormatter(processor=renderer, foreign_pre_chain=shared))
    handler.addFilter(QuietClientFaults(debug=level.lower() == "debug"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.WARNING)


class QuietClientFaults(logging.Filter):
    """A malformed request or a client gone mid-request is the client's fault, not the engine's:
    aiohttp logs those at error with a traceback; say them once, at debug, in one line."""

    def __init__(self, debug: bool) -> None:
        super().__init__()
        self.debug = debug

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        client_fault = isinstance(exc, BadHttpMessage | ConnectionResetError)
        if not record.name.startswith("aiohttp") or not client_fault:
            return True
        record.msg, record.args = f"{record.getMessage()}: {' '.join(str(exc).split())}", None
        record.levelno, record.levelname = logging.DEBUG, "DEBUG"
        record.exc_info = record.exc_text = None
        return self.debug


def _noop(_: object, __: str, event: structlog.types.EventDict) -> structlog.types.EventDict:
    return event
