"""The logger our WebSocket server and clients log through: credentials never reach a log.

websockets logs every handshake header at DEBUG, ``Authorization`` included (the fork
socket's Basic credentials, a connector's Bearer token). Everything websockets logs for us
goes through :data:`WS_LOGGER`, whose filter blanks those values (issue 6).
"""

from __future__ import annotations

import logging

__all__ = ["RedactCredentials", "WS_LOGGER"]

_SECRET_HEADERS = frozenset({"authorization", "proxy-authorization", "cookie", "set-cookie"})


class RedactCredentials(logging.Filter):
    """Blanks the value of a credential header in websockets' ``"%s: %s"`` header records."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple) and len(args) == 2 and str(args[0]).lower() in _SECRET_HEADERS:
            record.args = (args[0], "<redacted>")
        return True


WS_LOGGER = logging.getLogger("voicefork.websockets")
WS_LOGGER.addFilter(RedactCredentials())
