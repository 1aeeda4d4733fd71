"""An ESL listener that counts what a subscriber like the fork server is sent: events and bytes
per event name, and per played segment.

It logs in to the switch's Event Socket (the real one, or the emulator's
:class:`testbed.freeswitch.esl_server.EslServer`), subscribes ``event plain`` to the names it is
given (the bench passes :data:`fork_server.app.SUBSCRIBED_EVENTS`, or ``ALL`` to see everything),
and lets through only the calls it is told about: ``filter Unique-ID <uuid>`` per call (a
placeholder filter first, so nothing is sent before the first call is added; mod_event_socket
sends an event when ANY filter matches, read in its ``event_handler``, 1.10.12). Counting a sample
of the calls keeps the tap's own cost off the switch: the switch copies an event only for
listeners it will be sent to. Bytes are what crossed the socket: the outer header block and the
``text/event-plain`` body.

:class:`TapCounts` is the sans-I/O part (frames in, counts out); :class:`EslTap` the adapter.
Limits: framing by :class:`fork_server.esl_wire.EslReader` (a header block ≤ 64 KiB, a body
≤ 4 MiB); at most ``MAX_SEGMENTS`` segment paths and ``MAX_TRACE`` trace entries are kept.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from typing import Any, Iterable

from fork_server.esl_async import parse_plain_event
from fork_server.esl_wire import EslFrame, EslReader

__all__ = ["TapCounts", "EslTap", "MAX_SEGMENTS", "MAX_TRACE", "NO_CALL"]

MAX_SEGMENTS = 100_000
MAX_TRACE = 20_000
NO_CALL = "00000000-0000-0000-0000-000000000000"


class TapCounts:
    """Events seen while ``on``: per name (``CUSTOM`` as ``CUSTOM <subclass>``) count and bytes;
    per segment file the events naming it (``Playback-File-Path`` or a playback's
    ``Application-Data``); with ``trace`` on, (time, uuid, name, bytes, n headers) of each."""

    def __init__(self, *, trace: bool = False) -> None:
        self.on = False
        self.events: dict[str, int] = {}
        self.bytes: dict[str, int] = {}
        self.per_segment: dict[str, list[str]] = {}
        self.trace_on = trace
        self.trace: deque[tuple[float, str, str, int, int]] = deque(maxlen=MAX_TRACE)
        self.samples: dict[str, tuple[int, list[tuple[str, str]]]] = {}  # name -> (bytes, headers) of the first seen

    def reset(self) -> None:
        self.events.clear()
        self.bytes.clear()
        self.per_segment.clear()
        self.trace.clear()

    def feed(self, frame: EslFrame, t: float | None = None) -> None:
        if not self.on or frame.headers.get("Content-Type") != "text/event-plain" or frame.body is None:
            return
        size = len(frame.head) + len(frame.body)
        headers, _ = parse_plain_event(frame.body)
        name = headers.get("Event-Name", "?")
        if name == "CUSTOM":
            name = f"CUSTOM {headers.get('Event-Subclass', '')}"
        self.events[name] = self.events.get(name, 0) + 1
        self.bytes[name] = self.bytes.get(name, 0) + size
        if name not in self.samples:
            self.samples[name] = (size, list(headers.items()))
        path = headers.get("Playback-File-Path")
        if path is None and headers.get("Application") == "playback":
            path = headers.get("Application-Data")
        if path and (path in self.per_segment or len(self.per_segment) < MAX_SEGMENTS):
            self.per_segment.setdefault(path, []).append(name)
        if self.trace_on:
            self.trace.append((time.monotonic() if t is None else t, headers.get("Unique-ID", ""), name, size,
                               len(headers)))

    def segment_profile(self) -> dict[str, int]:
        """How many segments got which sequence of events, e.g. ``{"PLAYBACK_START PLAYBACK_STOP
        CHANNEL_EXECUTE_COMPLETE": 40}`` (segments whose PLAYBACK_START was seen)."""
        out: dict[str, int] = {}
        for names in self.per_segment.values():
            if "PLAYBACK_START" in names:
                key = " ".join(names)
                out[key] = out.get(key, 0) + 1
        return out

    def total(self) -> tuple[int, int]:
        return sum(self.events.values()), sum(self.bytes.values())


class EslTap(asyncio.Protocol):
    """``tap = await EslTap.connect(host, port, password, events)``; ``await tap.watch(uuid)``."""

    def __init__(self, counts: TapCounts) -> None:
        self.counts = counts
        self.reader = EslReader()
        self.transport: asyncio.Transport | None = None
        self._replies: deque[asyncio.Future[EslFrame]] = deque()
        self._auth: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.watched: set[str] = set()
        self.error: str | None = None

    @classmethod
    async def connect(cls, host: str, port: int, password: str, events: Iterable[str] | None, *,
                      counts: TapCounts | None = None, filters: Iterable[tuple[str, str]] | None = None) -> "EslTap":
        """Log in and subscribe to ``events`` (None: a command-only connection). Without
        ``filters``, only calls given to :meth:`watch` are let through."""
        loop = asyncio.get_running_loop()
        _, tap = await loop.create_connection(lambda: cls(counts or TapCounts()), host, port)
        await asyncio.wait_for(tap._auth, 5)
        await tap.command(f"auth {password}", expect="+OK accepted")
        if events is not None:
            await tap.command("event plain " + " ".join(events), expect="+OK")
            for header, value in filters if filters is not None else [("Unique-ID", NO_CALL)]:
                await tap.command(f"filter {header} {value}", expect="+OK")
        return tap

    async def watch(self, uuid: str) -> None:
        """Count this call's events from now on."""
        if uuid not in self.watched:
            self.watched.add(uuid)
            await self.command(f"filter Unique-ID {uuid}", expect="+OK")

    async def command(self, block: str, expect: str | None = None) -> EslFrame:
        """Send one command block (without its blank line) and return the reply frame; with
        ``expect``, a reply (Reply-Text, or an api body) not starting with it raises."""
        if self.transport is None or self.transport.is_closing():
            raise ConnectionError(f"ESL tap closed ({self.error})")
        fut: asyncio.Future[EslFrame] = asyncio.get_running_loop().create_future()
        self._replies.append(fut)
        self.transport.write(block.encode() + b"\n\n")
        reply = await asyncio.wait_for(fut, 5)
        text = reply.headers.get("Reply-Text") or (reply.body or b"").decode("utf-8", "replace")
        if expect is not None and not text.startswith(expect):
            raise ConnectionError(f"ESL: {block.split()[0]} answered {text.strip()!r}")
        return reply

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        try:
            frames = self.reader.feed(data)
        except Exception as exc:  # noqa: BLE001 - EslProtocolError: the stream is lost, say why
            self.error = str(exc)
            self.transport.close()  # type: ignore[union-attr]
            return
        t = time.monotonic()
        for frame in frames:
            ctype = frame.headers.get("Content-Type")
            if ctype == "auth/request":
                if not self._auth.done():
                    self._auth.set_result(None)
            elif ctype in ("command/reply", "api/response"):
                if self._replies:
                    fut = self._replies.popleft()
                    if not fut.done():
                        fut.set_result(frame)
            else:
                self.counts.feed(frame, t)

    def connection_lost(self, exc: Exception | None) -> None:
        self.error = self.error or (str(exc) if exc else "closed")
        for fut in self._replies:
            if not fut.done():
                fut.set_exception(ConnectionError(f"ESL tap closed ({self.error})"))
        self._replies.clear()
        if not self._auth.done():
            self._auth.set_exception(ConnectionError("ESL tap closed before auth/request"))

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def info(self) -> dict[str, Any]:
        n, b = self.counts.total()
        return {"calls_watched": len(self.watched), "events": n, "bytes": b}
