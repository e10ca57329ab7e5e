"""structlog, configured once per process: JSON when not a terminal, console when one is.

Standard-library loggers (FastStream, uvicorn, aiokafka) are routed through the same processors.
Bind per-message context with ``structlog.contextvars``; never log a raw personal field.
"""

import logging
import sys

import structlog
from structlog.typing import Processor

_configured = False


def configure_logging(level: str = "INFO", fmt: str = "auto", *, service: str | None = None) -> None:
    global _configured
    if service:
        structlog.contextvars.bind_contextvars(service=service)
    if _configured:
        return
    _configured = True
    json_output = fmt == "json" or (fmt == "auto" and not sys.stderr.isatty())
    shared_processors: list[Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.StackInfoRenderer(),
        structlog.processors.format_exc_info,
    ]
    renderer = structlog.processors.JSONRenderer() if json_output else structlog.dev.ConsoleRenderer()
    structlog.configure(
        processors=[*shared_processors, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=shared_processors,
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                renderer,
            ],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # aiokafka is chatty about routine group coordination.
    logging.getLogger("aiokafka").setLevel(max(logging.WARNING, root.level))
