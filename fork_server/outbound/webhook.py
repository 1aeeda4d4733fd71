"""The status webhook: one JSON POST per status change of an outbound call.

:func:`encode_post` builds the request and :func:`parse_status_line` reads the answer's
status (sans-I/O); :class:`WebhookSender` is the asyncio adapter: one task sends the posts in
order from a bounded queue (a full queue drops the newest post, counted), each attempt within
``timeout_s``, a failed one (no connection, no answer, 5xx) tried ``retries`` more times after
0.5 s, then 1 s. A call never waits for it. asyncio streams, not an HTTP client library: one
POST with ``Connection: close`` needs nothing more, and no new dependency.
"""

from __future__ import annotations

import asyncio
import json
import logging
import ssl
from typing import Any, Callable, Final
from urllib.parse import urlsplit

from ..errors import LocalUsageError

__all__ = ["encode_post", "parse_status_line", "WebhookSender"]

QUEUE_MAX: Final = 1000
_MAX_HEAD: Final = 8192


def encode_post(url: str, doc: dict[str, Any]) -> tuple[str, int, bool, bytes]:
    """(host, port, tls, request bytes) of a JSON POST to ``url``."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise LocalUsageError(f"webhook URL {url!r} is not http(s)://host/...")
    tls = parts.scheme == "https"
    port = parts.port or (443 if tls else 80)
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    host = parts.netloc.rpartition("@")[2]  # never send URL credentials as a Host
    body = json.dumps(doc, separators=(",", ":")).encode()
    head = (f"POST {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: voicefork\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n")
    if any(c in head[:-4] for c in "\0") or head.count("\r\n\r\n") != 1:
        raise LocalUsageError("webhook request head would not be one HTTP head")
    return parts.hostname, port, tls, head.encode("latin-1") + body


def parse_status_line(line: bytes) -> int | None:
    """The status code of ``HTTP/1.x NNN ...``, or None."""
    parts = line.split(b" ", 2)
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/1.") or not parts[1].isdigit() or len(parts[1]) != 3:
        return None
    return int(parts[1])


class WebhookSender:
    def __init__(self, url: str, *, log: logging.Logger, timeout_s: float = 5.0, retries: int = 2,
                 backoff_s: tuple[float, ...] = (0.5, 1.0), on_result: Callable[[str], None] | None = None) -> None:
        encode_post(url, {})  # checks the URL now
        self.url = url
        self.log = log
        self.timeout_s = timeout_s
        self.retries = retries
        self.backoff_s = backoff_s
        self.on_result = on_result or (lambda _: None)  # "sent" | "failed" | "dropped"
        self._queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue(QUEUE_MAX)
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="outbound-webhook")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    def post(self, doc: dict[str, Any]) -> None:
        try:
            self._queue.put_nowait(doc)
        except asyncio.QueueFull:
            self.on_result("dropped")
            self.log.error("> webhook: %d posts queued; dropped the status %s of %s", QUEUE_MAX, doc.get("status"), doc.get("id"))

    async def _run(self) -> None:
        while True:
            doc = await self._queue.get()
            for attempt in range(self.retries + 1):
                try:
                    # asyncio.timeout, not wait_for: 3.11's wait_for drops a cancel (close()) that
                    # lands in the loop turn its result does, and this loop would post on.
                    async with asyncio.timeout(self.timeout_s):
                        status = await self._send(doc)
                except (OSError, TimeoutError, asyncio.IncompleteReadError, ssl.SSLError) as exc:
                    status, why = None, f"{type(exc).__name__}: {exc}"
                else:
                    why = f"HTTP {status}"
                if status is not None and status < 500:
                    level = logging.INFO if 200 <= status < 300 else logging.WARNING
                    self.log.log(level, "> webhook %s %s: %d", doc.get("id"), doc.get("status"), status)
                    self.on_result("sent" if 200 <= status < 300 else "failed")
                    break
                if attempt < self.retries:
                    await asyncio.sleep(self.backoff_s[min(attempt, len(self.backoff_s) - 1)])
                else:
                    self.on_result("failed")
                    self.log.warning("> webhook %s %s: %s after %d tries; given up", doc.get("id"), doc.get("status"), why,
                                     self.retries + 1)

    async def _send(self, doc: dict[str, Any]) -> int | None:
        host, port, tls, data = encode_post(self.url, doc)
        reader, writer = await asyncio.open_connection(host, port, ssl=ssl.create_default_context() if tls else None,
                                                       limit=_MAX_HEAD)
        try:
            writer.write(data)
            await writer.drain()
            return parse_status_line(await reader.readline())
        finally:
            writer.close()
