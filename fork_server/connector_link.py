"""The WebSocket client to a voice connector: one per call (adapter; the wire is its dialect's,
:mod:`fork_server.dialects`).

It only moves data. Outgoing messages go through one bounded queue so that ``start`` always
precedes audio and marks keep their place; when the connector reads too slowly, the OLDEST
caller audio is dropped and counted (issue 6: bounded memory, never block the fork).

Caller audio written to the socket is kept until a pong proves the connector read it (it
answers pings in order with data), at most ``max_replay_frames``. When the link is lost,
:meth:`take_unconfirmed` hands back what the connector may not have had, for the next leg:
a dead or half-open connector's socket buffers otherwise swallow seconds of the caller (issue 6).
A pong proves only that the connector's WebSocket library read the frames: they may still wait
in its receive queue (websockets keeps up to 16 messages) when the connector dies, so the last
``CONFIRMED_TAIL_FRAMES`` confirmed frames go to the next leg too (its ``start`` gives their
offset, so a connector skips what it had). Seen in the chaos suite under load: a connector that
aborted its socket had lost up to 4 frames the pong had confirmed.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections import deque
from typing import Any, Awaitable, Callable, Mapping

from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidURI

from .dialects import Dialect, VoiceforkDialect
from .dialects import messages as msg
from .dialects import voicefork as cp
from .errors import ConnectorProtocolError, LocalUsageError
from .wsconn import WsConnection as ClientConnection, connect  # lean websockets client (issue 5)

CONFIRMED_TAIL_FRAMES = 16  # websockets' default max_queue: read by the library, maybe not by the app

__all__ = ["ConnectorLink"]

SUBPROTOCOL = cp.SUBPROTOCOL
_MAX_TEXT_QUEUE = 256  # control messages are few; a peer that never reads them is dead
# Below the bounded queue, keep the socket's own buffers small: the kernel autotunes a send
# buffer to MiBs (~2 min of caller audio), so a connector reading slower than real time would
# fall minutes behind before the queue ever dropped anything. Linux doubles SO_SNDBUF: 8 KiB,
# 0.25 s of caller audio (still 80 KB/s at 100 ms RTT, 2.5x what a call sends).
_SNDBUF = 4 * 1024
_WRITE_LIMIT = 4 * 1024  # the transport's own buffer above the socket's
_LOG_FIRST_JUNK = 5  # malformed messages logged one by one; after that every 100th, with the count
_LOG_JUNK_EVERY = 100


class ConnectorLink:
    """Connect, pump both directions, report events and loss through callbacks.

    ``on_event`` is awaited for every event read: it may wait (back-pressure to the connector).
    """

    def __init__(
        self,
        url: str,
        *,
        headers: Mapping[str, str],
        connect_timeout_s: float,
        ping_interval_s: float,
        max_queued_frames: int,
        ping_timeout_s: float | None = None,
        max_replay_frames: int = 100,
        on_event: Callable[[Any], Awaitable[None]],
        on_lost: Callable[[int | None, str], None],
        log: logging.LoggerAdapter,
        on_dropped: Callable[[int], None] | None = None,
        dialect: Callable[[], Dialect] = VoiceforkDialect,
    ) -> None:
        self.url = url
        self._make_dialect = dialect
        self._headers = dict(headers)
        self._connect_timeout = connect_timeout_s
        self._ping = ping_interval_s
        self._ping_timeout = ping_timeout_s if ping_timeout_s is not None else 2 * ping_interval_s
        # Written, unconfirmed caller audio: (the socket's message count after the write, frames).
        self._unacked: deque[tuple[int, Any]] = deque()
        self._unacked_frames = 0
        self._max_replay = max_replay_frames
        # The newest confirmed frames, (message count, frame), for a connector that dies with them queued.
        self._acked_tail: deque[tuple[int, bytes]] = deque(maxlen=min(CONFIRMED_TAIL_FRAMES, max_replay_frames))
        self._gap_at = -1  # sent-message count when the queue last dropped audio (a hole before it)
        self.alive_at = 0.0  # monotonic time of the last proof the connector reads (open, pong)
        self._on_event = on_event
        self._on_lost = on_lost
        self._on_dropped = on_dropped
        self._log = log
        self._ws: ClientConnection | None = None
        self._dialect = dialect()
        # Caller audio (bytes, encoded when written), messages (encoded when written, so a
        # dialect's sequence numbers follow the wire order) and ready text frames.
        self._out: deque[bytes | str | msg.Message] = deque()
        self._audio_in_queue = 0
        self._max_frames = max_queued_frames
        self._wake = asyncio.Event()
        self._closing = False
        self._tasks: list[asyncio.Task[None]] = []
        self.dropped_frames = 0
        self.malformed = 0

    async def open(self) -> None:
        """Connect within the timeout; raises ConnectorProtocolError on any failure."""
        d = self._make_dialect()  # a fresh one per connection: a new leg starts a new stream
        try:
            async with asyncio.timeout(self._connect_timeout):
                self._ws = await connect(
                    self.url,
                    additional_headers=self._headers,
                    subprotocols=[d.subprotocol] if d.subprotocol else None,  # no compression, no proxy
                    open_timeout=self._connect_timeout,
                    ping_interval=self._ping,
                    ping_timeout=self._ping_timeout,
                    close_timeout=2,
                    max_size=d.max_message_bytes + 16,
                    user_agent_header="voicefork",
                )
        except asyncio.CancelledError:
            raise
        except TimeoutError as exc:
            raise ConnectorProtocolError(
                f"cannot connect to {self.url}: no handshake within {self._connect_timeout:.2f} s") from exc
        except (OSError, InvalidHandshake, InvalidURI, ConnectionClosed) as exc:
            raise ConnectorProtocolError(f"cannot connect to {self.url}: {str(exc) or type(exc).__name__}") from exc
        transport = self._ws.transport
        if transport is not None:
            transport.set_write_buffer_limits(_WRITE_LIMIT)  # send_audio() queues (and drops) above it
        sock = transport.get_extra_info("socket") if transport is not None else None
        if sock is not None:
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, _SNDBUF)
            except OSError as exc:  # not fatal: only the latency bound after a stall is lost
                self._log.warning("> connector socket: cannot set SO_SNDBUF: %s", exc)
        self._dialect = d
        self._closing = False
        self.alive_at = time.monotonic()
        self._ws.on_ack = self._acked
        self._tasks = [
            asyncio.create_task(self._reader(), name="connector-reader"),
            asyncio.create_task(self._writer(), name="connector-writer"),
        ]

    @property
    def queued_frames(self) -> int:
        """Caller audio frames waiting to be written (at most ``max_queued_frames``)."""
        return self._audio_in_queue

    @property
    def dialect(self) -> Dialect:
        return self._dialect

    def send_text(self, text: str) -> None:
        """One ready text frame (already in the dialect's wire format)."""
        self._queue_control(text)

    def send_message(self, message: msg.Message) -> None:
        """One dialect-neutral message; the dialect encodes it when it is written."""
        self._queue_control(message)

    def _queue_control(self, item: str | msg.Message) -> None:
        if len(self._out) - self._audio_in_queue >= _MAX_TEXT_QUEUE:
            self._log.warning("> connector control queue full; dropping %.60r", item)
            return
        self._out.append(item)
        self._wake.set()

    def send_audio(self, frames: list[bytes] | tuple[bytes, ...]) -> None:
        out = self._out
        ws = self._ws
        # Hot path (issue 5): nothing queued ahead and the socket takes it: write now, no task switch.
        if not out and ws is not None and not self._closing and ws.writable:
            d = self._dialect
            if d.binary_audio:
                sent = ws.send_many_now(frames)
            else:
                sent = all([ws.send_now(text) for text in d.encode_audio(frames)])
            if sent:
                self._written(ws.sent_messages, frames)
                return
        for frame in frames:
            out.append(frame)
        self._audio_in_queue += len(frames)
        over = self._audio_in_queue - self._max_frames
        if over > 0:
            self._drop_oldest_audio(over)
        self._wake.set()

    def _written(self, mark: int, frames: Any) -> None:
        self._unacked.append((mark, frames))
        self._unacked_frames += len(frames)
        while self._unacked_frames > self._max_replay and len(self._unacked) > 1:
            self._unacked_frames -= len(self._unacked.popleft()[1])
            self._acked_tail.clear()  # no longer next to what is kept: the run would have a hole

    def _acked(self, acked_messages: int) -> None:
        self.alive_at = time.monotonic()
        u = self._unacked
        while u and u[0][0] <= acked_messages:
            mark, frames = u.popleft()
            self._unacked_frames -= len(frames)
            self._acked_tail.extend((mark, f) for f in frames)

    @property
    def timed_out(self) -> bool:
        """The link was lost because the connector answered no ping in time (half-open)."""
        ws = self._ws
        return ws is not None and ws.keepalive_failed

    def take_unconfirmed(self) -> list[bytes]:
        """Caller frames the connector may not have read, oldest first (after the link is lost).

        The last confirmed frames (see the module's docstring), then those written but not
        covered by a pong, then those still queued; only the newest unbroken run (a queue drop
        leaves a hole: frames before it are not handed back, as they would be out of order).
        Empties the link's buffers."""
        gap = self._gap_at
        out = [f for mark, f in self._acked_tail if mark > gap]
        out.extend(f for mark, frames in self._unacked if mark > gap for f in frames)
        out.extend(item for item in self._out if isinstance(item, bytes))
        self._acked_tail.clear()
        self._unacked.clear()
        self._unacked_frames = 0
        self._out.clear()
        self._audio_in_queue = 0
        return out

    def _drop_oldest_audio(self, n: int) -> None:
        if not self.dropped_frames:
            self._log.warning("> connector is not reading: dropping the oldest caller audio (%d frames queued)",
                              self._audio_in_queue)
        if self._on_dropped is not None:
            self._on_dropped(n)
        kept: deque[bytes | str | msg.Message] = deque()
        out = self._out
        while out and n:
            item = out.popleft()
            if isinstance(item, bytes):
                n -= 1
                self._audio_in_queue -= 1
                self.dropped_frames += 1
            else:
                kept.append(item)
        kept.extend(out)
        self._out = kept
        self._gap_at = self._ws.sent_messages if self._ws is not None else 0

    async def _writer(self) -> None:
        ws = self._ws
        if ws is None:
            return
        try:
            while True:
                while not self._out:
                    if self._closing:
                        await ws.close(1000)
                        return
                    self._wake.clear()
                    await self._wake.wait()
                item = self._out.popleft()
                d = self._dialect
                if isinstance(item, bytes):
                    self._audio_in_queue -= 1
                    await ws.send(item if d.binary_audio else d.encode_audio((item,))[0])
                    self._written(ws.sent_messages, (item,))
                elif isinstance(item, str):
                    await ws.send(item)
                else:
                    try:
                        texts = d.encode(item)
                    except LocalUsageError as exc:  # our bug: that message is lost, not the call
                        self._log.error("> connector: cannot send %r: %s", item, exc)
                        continue
                    for text in texts:
                        await ws.send(text)
        except ConnectionClosed:
            return

    async def _reader(self) -> None:
        ws = self._ws
        if ws is None:
            return
        code: int | None = None
        reason = ""
        try:
            async for message in ws:
                if isinstance(message, str):
                    events = self._dialect.receive_text(message)
                else:
                    events = self._dialect.receive_binary(message)
                for ev in events:
                    if type(ev) is msg.Malformed:
                        self._junk(ev)
                    # Awaited: while the call is behind, this stops reading, so a flooding
                    # connector is pushed back through TCP instead of filling the call's queue.
                    await self._on_event(ev)
        except ConnectionClosed:
            pass
        finally:
            if ws.close_code is not None:
                code, reason = ws.close_code, ws.close_reason or ""
            if not self._closing:
                self._on_lost(code, reason or "connection closed")

    def _junk(self, ev: msg.Malformed) -> None:
        self.malformed += 1
        n = self.malformed
        if n <= _LOG_FIRST_JUNK or n % _LOG_JUNK_EVERY == 0:
            self._log.warning("< connector sent a malformed message (%d so far): %s", n, ev.reason)

    async def close(self) -> None:
        """Send what is queued (stop last), then close with 1000."""
        self._closing = True
        self._wake.set()
        tasks, self._tasks = self._tasks, []
        if not tasks:
            return
        try:
            async with asyncio.timeout(3):
                await asyncio.gather(*tasks, return_exceptions=True)
        except TimeoutError:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        if self._ws is not None:
            await self._ws.close()

    def abort(self) -> None:
        """Drop everything now (call teardown after the fork is gone), the socket included."""
        self._closing = True
        for t in self._tasks:
            t.cancel()
        self._tasks = []
        if self._ws is not None:
            self._ws.abort()
