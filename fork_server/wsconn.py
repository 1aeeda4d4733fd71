"""A lean WebSocket connection: websockets' sans-I/O protocol driven by one ``asyncio.Protocol``.

Why (issue 5, measured with ``just bench``): websockets' asyncio connection costs ~50 µs of
CPU per message, mostly its per-message machinery (an assembler queue, a future and a task
switch to ``recv()``, and ``send_context`` around every ``send()``). At 50 frames/s per call
that, not resampling or the kernel, caps a process at a few hundred calls. Here the same
websockets sans-I/O objects (:class:`websockets.server.ServerProtocol`,
:class:`websockets.client.ClientProtocol`: parsing, limits, close handshake, automatic pongs)
are fed straight from ``data_received``, and each message goes to a callback in the same
call stack. ``send_now()`` writes synchronously.

What is kept from websockets' asyncio layer (same behaviour, same defaults as the fork server
used): the opening-handshake timeout, keepalive pings with a pong timeout, the close timeout
after which the TCP connection is aborted, write flow control (``send()`` waits while the
transport is over its high-water mark) and a bounded receive queue (reading pauses above
``max_queue`` messages) when no callback is set. Messages are assembled from fragments up to
the protocol's ``max_size``; text must be UTF-8 (else close 1007, as websockets does).

Only what the fork server uses is offered: ``recv()``, ``async for``, ``send()``,
``send_now()``, ``close()``, ``abort()``, ``close_code``/``close_reason``, ``subprotocol``,
``remote_address``, ``request``/``response``.
"""

from __future__ import annotations

import asyncio
import logging
import os
import ssl as ssl_module
import struct
from collections import deque
from typing import Any, AsyncIterator, Callable, Mapping, Sequence

from websockets.client import ClientProtocol
from websockets.exceptions import ConnectionClosed, ConnectionClosedError, ConnectionClosedOK
from websockets.frames import OK_CLOSE_CODES, Frame, Opcode
from websockets.http11 import Request, Response
from websockets.protocol import CLIENT, CLOSED, CONNECTING, OPEN, Protocol
from websockets.typing import Subprotocol
from websockets.uri import parse_uri

try:
    from websockets.speedups import apply_mask
except ImportError:  # pragma: no cover - the wheels ship the C speedups
    from websockets.utils import apply_mask

from .redact import WS_LOGGER

__all__ = ["WsConnection", "connect"]

Message = str | bytes
_WRITE_HIGH = 64 * 1024  # asyncio's default transport write limit; above it send() waits
_OP_TEXT, _OP_BINARY, _OP_CONT, _OP_PONG, _OP_CLOSE = Opcode.TEXT, Opcode.BINARY, Opcode.CONT, Opcode.PONG, Opcode.CLOSE
_OK_CLOSE = OK_CLOSE_CODES


class _MaskPool:
    """Mask keys for client frames, 4 bytes at a time from one ``os.urandom(4096)``."""

    __slots__ = ("_buf", "_pos")

    def __init__(self) -> None:
        self._buf = b""
        self._pos = 0

    def take(self) -> bytes:
        pos = self._pos
        if pos + 4 > len(self._buf):
            self._buf, pos = os.urandom(4096), 0
        self._pos = pos + 4
        return self._buf[pos : pos + 4]


_masks = _MaskPool()


def _masked_binary_frames(messages: Sequence[bytes]) -> bytes:
    """RFC 6455 5.2: FIN + opcode 2, MASK bit, 7/16/64-bit length, the key, the masked payload."""
    out = []
    for m in messages:
        n = len(m)
        key = _masks.take()
        if n < 126:
            head = bytes((0x82, 0x80 | n))
        elif n < 65536:
            head = struct.pack("!BBH", 0x82, 0xFE, n)
        else:
            head = struct.pack("!BBQ", 0x82, 0xFF, n)
        out.append(head + key + apply_mask(m, key))
    return b"".join(out) if len(out) > 1 else out[0]


class WsConnection(asyncio.Protocol):
    """One WebSocket over one transport (client or server side; see the module docstring)."""

    def __init__(
        self,
        protocol: Protocol,
        *,
        ping_interval: float | None = 20.0,
        ping_timeout: float | None = 20.0,
        close_timeout: float = 2.0,
        max_queue: int = 64,
        logger: logging.Logger | logging.LoggerAdapter | None = None,
    ) -> None:
        self.protocol = protocol
        self.ping_interval = ping_interval
        self.ping_timeout = ping_timeout
        self.close_timeout = close_timeout
        self.max_queue = max_queue
        self.logger = logger or logging.getLogger("voicefork.ws")
        self.loop = asyncio.get_event_loop()
        self.transport: asyncio.Transport | None = None
        self.request: Request | None = None
        self.response: Response | None = None
        self._receiver: Callable[[Message], None] | None = None
        self._on_close: Callable[[], None] | None = None
        self._queue: deque[Message] = deque()
        self._waiter: asyncio.Future[None] | None = None
        self._reading_paused = False
        self._writing_paused = False
        self._drain_waiters: list[asyncio.Future[None]] = []
        self._fragments: list[bytes] | None = None
        self._fragment_text = False
        self._closed: asyncio.Future[None] = self.loop.create_future()
        self._close_timer: asyncio.TimerHandle | None = None
        self._ping_timer: asyncio.TimerHandle | None = None
        self._pong_due: float | None = None
        self._ping_payload = b""
        self._next_ping_at = 0.0
        self._ping_mark = 0
        # Data messages written so far, and how many of them the peer has provably read: those
        # written before the last ping it answered (a WebSocket peer handles frames in order).
        self.sent_messages = 0
        self.acked_messages = 0
        self.on_ack: Callable[[int], None] | None = None  # called with acked_messages on each pong
        self.last_rtt = 0.0  # of the last answered ping
        self._ping_sent_at = 0.0
        # Bytes handed to the transport, and how many the kernel had taken when writing first
        # paused in this pong window (its send buffer was full then, so it only takes more as
        # the peer reads; see _peer_reading). None: not paused in this window.
        self._bytes_handed = 0
        self._taken_at_pause: int | None = None
        self._paused_at = 0.0
        self.keepalive_failed = False
        self.connection_exc: BaseException | None = None

    # ---------------------------------------------------------------- public

    @property
    def state(self) -> Any:
        return self.protocol.state

    @property
    def open(self) -> bool:
        return self.protocol.state is OPEN

    @property
    def subprotocol(self) -> Subprotocol | None:
        return self.protocol.subprotocol

    @property
    def close_code(self) -> int | None:
        p = self.protocol
        if p.state is CLOSED:
            return p.close_code
        return p.close_rcvd.code if p.close_rcvd is not None else None

    @property
    def close_reason(self) -> str | None:
        p = self.protocol
        if p.state is CLOSED:
            return p.close_reason
        return p.close_rcvd.reason if p.close_rcvd is not None else None

    @property
    def remote_address(self) -> Any:
        return self.transport.get_extra_info("peername") if self.transport is not None else None

    @property
    def writable(self) -> bool:
        """True when ``send_now()`` will write without going over the write high-water mark."""
        return self.protocol.state is OPEN and not self._writing_paused

    def set_receiver(self, on_message: Callable[[Message], None] | None, on_close: Callable[[], None] | None = None) -> None:
        """Deliver every message to ``on_message`` from ``data_received`` (no queue, no task).

        Messages already queued (read before the receiver was set) are delivered first.
        ``on_close`` runs once when the TCP connection is gone.
        """
        self._receiver = on_message
        self._on_close = on_close
        if on_message is not None:
            while self._queue:
                on_message(self._queue.popleft())
            self._resume_reading()
            if self._closed.done() and on_close is not None:
                on_close()

    async def recv(self) -> Message:
        """The next message; raises ConnectionClosed once the connection is closed and drained."""
        while not self._queue:
            p = self.protocol
            if p.state is CLOSED or self._closed.done():
                raise self._close_exc()
            if p.close_rcvd is not None and p.close_sent is not None:
                # The peer's close is in and answered: no data can follow (RFC 6455 5.5.1), so
                # do not wait for the peer to drop TCP. A peer whose own reading is paused
                # would take its whole close timeout: 2 s more of a caller's silence (chaos suite).
                ok = p.close_rcvd.code in _OK_CLOSE and p.close_sent.code in _OK_CLOSE
                raise (ConnectionClosedOK if ok else ConnectionClosedError)(p.close_rcvd, p.close_sent, True)
            self._waiter = self.loop.create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        message = self._queue.popleft()
        if len(self._queue) <= self.max_queue // 4:
            self._resume_reading()
        return message

    async def __aiter__(self) -> AsyncIterator[Message]:
        try:
            while True:
                yield await self.recv()
        except ConnectionClosed:
            return

    def send_now(self, message: Message) -> bool:
        """Write one message now (no await); False if the connection is not open."""
        p = self.protocol
        if p.state is not OPEN:
            return False
        if type(message) is bytes:
            p.send_binary(message)
        elif isinstance(message, str):
            p.send_text(message.encode())
        else:
            p.send_binary(bytes(message))
        self.sent_messages += 1
        self._send_data()
        return True

    def send_many_now(self, messages: Sequence[bytes]) -> bool:
        """Binary messages in one write (several caller frames from one read); False if not open.

        Client side: the frames are built here (FIN, binary, masked) with mask keys taken from
        a pool filled by ``os.urandom`` 4 KiB at a time. websockets' serializer asks the kernel
        for 4 random bytes per frame (``secrets.token_bytes``: a getrandom syscall, 4 % of the
        fork server's CPU at 200 calls); the keys are as unpredictable either way (RFC 6455
        5.3). A data frame changes no protocol state, so nothing else is bypassed.
        """
        p = self.protocol
        if p.state is not OPEN:
            return False
        self.sent_messages += len(messages)
        if p.side is CLIENT and not p.expect_continuation_frame and self.transport is not None:
            data = _masked_binary_frames(messages)
            self._bytes_handed += len(data)
            self.transport.write(data)
            return True
        for m in messages:
            p.send_binary(m)
        self._send_data()
        return True

    async def send(self, message: Message) -> None:
        """Write one message, then wait while the transport is over its high-water mark."""
        if not self.send_now(message):
            await self._wait_closed_then_raise()
        if self._writing_paused:
            await self._drain()

    async def ping(self, data: bytes = b"") -> None:
        if self.protocol.state is OPEN:
            self.protocol.send_ping(data)
            self._send_data()

    def close_now(self, code: int = 1000, reason: str = "") -> None:
        """Start the closing handshake without waiting (from a callback)."""
        if self.protocol.state is OPEN:
            self.protocol.send_close(code, reason)
            self._send_data()
            self._arm_close_timer()
        elif self.protocol.state is CONNECTING and self.transport is not None:
            self.transport.abort()

    async def close(self, code: int = 1000, reason: str = "") -> None:
        """Closing handshake; returns when the TCP connection is closed (aborted after close_timeout)."""
        self.close_now(code, reason)
        await self.wait_closed()

    async def wait_closed(self) -> None:
        await asyncio.shield(self._closed)

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()

    # ---------------------------------------------------------------- internals

    def _close_exc(self) -> ConnectionClosed:
        if self.protocol.state is not CLOSED:
            self.protocol.receive_eof()
        exc = self.protocol.close_exc
        if self.connection_exc is not None:
            exc.__cause__ = self.connection_exc
        return exc

    async def _wait_closed_then_raise(self) -> None:
        # websockets' send() on a closing connection waits for the close, then raises.
        try:
            async with asyncio.timeout(self.close_timeout + 1):
                await asyncio.shield(self._closed)
        except TimeoutError:
            self.abort()
        raise self._close_exc()

    def _send_data(self) -> None:
        t = self.transport
        if t is None:
            return
        for data in self.protocol.data_to_send():
            if data:
                self._bytes_handed += len(data)
                t.write(data)
            elif t.can_write_eof():
                try:
                    t.write_eof()
                except Exception:  # noqa: BLE001 - uvloop may raise RuntimeError on a closing transport
                    pass
            else:
                t.close()
        if self.protocol.close_expected():
            self._arm_close_timer()

    def _arm_close_timer(self) -> None:
        if self._close_timer is None and not self._closed.done():
            self._close_timer = self.loop.call_later(self.close_timeout, self.abort)

    def _pause_reading(self) -> None:
        if not self._reading_paused and self.transport is not None:
            self._reading_paused = True
            self.transport.pause_reading()

    def _resume_reading(self) -> None:
        if self._reading_paused and self.transport is not None and not self._closed.done():
            self._reading_paused = False
            self.transport.resume_reading()

    async def _drain(self) -> None:
        if not self._writing_paused or self._closed.done():
            return
        waiter = self.loop.create_future()
        self._drain_waiters.append(waiter)
        try:
            await waiter
        finally:
            self._drain_waiters.remove(waiter)

    def _deliver(self, message: Message) -> None:
        receiver = self._receiver
        if receiver is not None:
            receiver(message)
            return
        self._queue.append(message)
        if len(self._queue) >= self.max_queue:
            self._pause_reading()
        w = self._waiter
        if w is not None and not w.done():
            w.set_result(None)

    def _frame(self, frame: Frame) -> None:
        op = frame.opcode
        if op is _OP_CLOSE:  # recv() ends now (see there)
            w = self._waiter
            if w is not None and not w.done():
                w.set_result(None)
            return
        if op is _OP_BINARY or op is _OP_TEXT:
            if frame.fin:
                if op is _OP_BINARY:
                    self._deliver(frame.data if type(frame.data) is bytes else bytes(frame.data))
                else:
                    self._text(frame.data)
                return
            self._fragments = [bytes(frame.data)]
            self._fragment_text = op is _OP_TEXT
        elif op is _OP_CONT:
            if self._fragments is None:
                return  # the protocol already failed the connection
            self._fragments.append(bytes(frame.data))
            if frame.fin:
                data, self._fragments = b"".join(self._fragments), None
                if self._fragment_text:
                    self._text(data)
                else:
                    self._deliver(data)
        elif op is _OP_PONG:
            if self._pong_due is not None and frame.data == self._ping_payload:
                self._pong_due = None
                self.last_rtt = self.loop.time() - self._ping_sent_at
                self.acked_messages = self._ping_mark
                if self._ping_timer is not None:  # it was set for the pong deadline
                    self._ping_timer.cancel()
                self._ping_timer = self.loop.call_at(self._next_ping_at, self._keepalive)
                if self.on_ack is not None:
                    self.on_ack(self._ping_mark)

    def _text(self, data: bytes) -> None:
        try:
            text = data.decode()
        except UnicodeDecodeError:
            self.protocol.fail(1007, "invalid UTF-8")  # as websockets: 1007 invalid frame payload data
            self._send_data()
            return
        self._deliver(text)

    # ---- keepalive: one timer per connection, as websockets' keepalive task

    def _arm_ping(self) -> None:
        if self.ping_interval is not None:
            self._next_ping_at = self.loop.time() + self.ping_interval
            self._ping_timer = self.loop.call_at(self._next_ping_at, self._keepalive)

    def _keepalive(self) -> None:
        """One ping in flight at a time, sent every ``ping_interval``; no pong within
        ``ping_timeout`` of it aborts the connection. The timer wakes exactly at the next ping
        or at the pong's deadline, so a dead peer is found ``ping_interval + ping_timeout``
        after its last pong at the latest (websockets' own keepalive can take a tick more), or
        ``ping_interval + 2 x`` its last round trip if that is longer (a slow reader). A peer
        that keeps taking our bytes against backpressure is alive however late its pong (its
        ping waits behind the audio in its socket); it is cut once a ping_timeout passes with
        writing paused and nothing taken."""
        self._ping_timer = None
        if self.protocol.state is not OPEN:
            return
        now = self.loop.time()
        if self._pong_due is not None and now >= self._pong_due - 0.001 and self._taken_at_pause is not None:
            timeout = self.ping_timeout or 1.0
            if self._peer_reading():
                # The pong waits behind audio the peer is still reading (a slow but live
                # reader): give it another ping_timeout rather than cut a call that is only behind.
                self._pong_due = now + timeout
                self._start_window()
            elif now < self._paused_at + timeout - 0.001:
                # Writing paused late in the window: the kernel takes more in bursts (window
                # updates), so judge only after a full ping_timeout of backpressure.
                self._pong_due = self._paused_at + timeout
        if self._pong_due is not None and now >= self._pong_due - 0.001:
            self.logger.warning("keepalive ping timeout (%.2f s); closing", self.ping_timeout or 0)
            self.keepalive_failed = True
            self.protocol.fail(1011, "keepalive ping timeout")
            self._send_data()
            # A peer that answers no ping will not answer the close either: waiting the close
            # timeout for it only lengthens the caller's silence (2 s of the 5.1 s measured).
            self.abort()
            return
        interval = self.ping_interval or 1.0
        if self._pong_due is None:
            if now < self._next_ping_at - 0.001:  # woken early (a pong re-armed us): wait on
                self._ping_timer = self.loop.call_at(self._next_ping_at, self._keepalive)
                return
            self._ping_payload = struct.pack("!I", int.from_bytes(os.urandom(4), "big"))
            self._ping_mark = self.sent_messages
            self.protocol.send_ping(self._ping_payload)
            self._send_data()
            self._next_ping_at = now + interval
            self._ping_sent_at = now
            self._start_window()
            if self.ping_timeout is not None:
                # A peer that reads slowly answers late (the ping waits behind the audio in its
                # socket), but it answers: allow twice its last round trip before calling it dead.
                self._pong_due = now + max(self.ping_timeout, 2 * self.last_rtt)
        wake = self._pong_due if self._pong_due is not None else self._next_ping_at
        self._ping_timer = self.loop.call_at(wake, self._keepalive)

    def _taken(self) -> int:
        """Bytes the kernel has taken from us (handed to the transport minus its buffer)."""
        t = self.transport
        return self._bytes_handed - (t.get_write_buffer_size() if t is not None else 0)

    def _start_window(self) -> None:
        self._taken_at_pause = self._taken() if self._writing_paused else None
        self._paused_at = self.loop.time()

    def _peer_reading(self) -> bool:
        """The kernel took more of our bytes after writing paused in this window. With its send
        buffer full it only takes more as the peer reads, so the peer is alive and the pong waits
        behind audio. Bytes that went into a kernel buffer with room prove nothing: a hung
        peer's socket absorbs them too (that window ends in a pause with no progress after it,
        and the pong deadline holds; a window with no pause keeps the plain deadline)."""
        mark = self._taken_at_pause
        return mark is not None and self._taken() > mark

    # ---------------------------------------------------------------- asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.transport.set_write_buffer_limits(_WRITE_HIGH)  # type: ignore[union-attr]

    def data_received(self, data: bytes) -> None:
        p = self.protocol
        p.receive_data(data)
        events = p.events_received()
        try:
            self._send_data()  # automatic pongs, close replies
        except Exception as exc:  # noqa: BLE001 - as websockets: remembered, surfaced as the close cause
            self.connection_exc = exc
        for event in events:
            if type(event) is Frame:
                self._frame(event)
            else:
                self._handshake_event(event)

    def _handshake_event(self, event: Any) -> None:
        """Request (server) or Response (client); subclasses and :func:`connect` handle them."""

    def eof_received(self) -> None:
        self.protocol.receive_eof()
        self._send_data()

    def pause_writing(self) -> None:
        if self._taken_at_pause is None:
            self._taken_at_pause = self._taken()
            self._paused_at = self.loop.time()
        self._writing_paused = True

    def resume_writing(self) -> None:
        self._writing_paused = False
        for w in self._drain_waiters:
            if not w.done():
                w.set_result(None)

    def connection_lost(self, exc: Exception | None) -> None:
        self.protocol.receive_eof()
        if exc is not None and self.connection_exc is None:
            self.connection_exc = exc
        for timer in (self._close_timer, self._ping_timer):
            if timer is not None:
                timer.cancel()
        self._ping_timer = None
        if not self._closed.done():
            self._closed.set_result(None)
        w = self._waiter
        if w is not None and not w.done():
            w.set_result(None)
        for d in self._drain_waiters:
            if not d.done():
                d.set_result(None)
        self._handshake_lost()
        on_close = self._on_close
        if on_close is not None and self._receiver is not None:
            self._on_close = None
            on_close()

    def _handshake_lost(self) -> None:
        """The TCP connection ended during the opening handshake (subclasses)."""


class _ClientConnection(WsConnection):
    def __init__(self, protocol: ClientProtocol, **kwargs: Any) -> None:
        super().__init__(protocol, **kwargs)
        self.opened: asyncio.Future[None] = self.loop.create_future()

    def _handshake_event(self, event: Any) -> None:
        if isinstance(event, Response) and not self.opened.done():
            self.response = event
            if self.protocol.handshake_exc is not None:
                self.opened.set_exception(self.protocol.handshake_exc)
            else:
                self.opened.set_result(None)
                self._arm_ping()

    def _handshake_lost(self) -> None:
        if not self.opened.done():
            exc = self.protocol.handshake_exc or ConnectionError("connection closed during the opening handshake")
            self.opened.set_exception(exc)


async def connect(
    url: str,
    *,
    additional_headers: Mapping[str, str] | None = None,
    subprotocols: Sequence[str] | None = None,
    open_timeout: float = 10.0,
    ping_interval: float | None = 20.0,
    ping_timeout: float | None = 20.0,
    close_timeout: float = 2.0,
    max_size: int | None = 1 << 20,
    max_queue: int = 16,  # websockets' default: reading pauses above 16 messages
    user_agent_header: str | None = None,
    logger: logging.Logger | logging.LoggerAdapter | None = None,
) -> WsConnection:
    """Open a client WebSocket (ws:// or wss://); raises OSError, TimeoutError or InvalidHandshake.

    No proxy and no compression (the fork server never used either).
    """
    uri = parse_uri(url)
    protocol = ClientProtocol(
        uri,
        subprotocols=[Subprotocol(s) for s in subprotocols] if subprotocols else None,
        max_size=max_size,
        logger=WS_LOGGER,  # its DEBUG lines hold the request headers, Authorization too: redacted there
    )
    loop = asyncio.get_running_loop()
    ctx = ssl_module.create_default_context() if uri.secure else None

    async def _open() -> _ClientConnection:
        _, conn = await loop.create_connection(
            lambda: _ClientConnection(
                protocol,
                ping_interval=ping_interval,
                ping_timeout=ping_timeout,
                close_timeout=close_timeout,
                max_queue=max_queue,
                logger=logger,
            ),
            uri.host,
            uri.port,
            ssl=ctx,
            server_hostname=uri.host if ctx else None,
        )
        request = protocol.connect()
        for k, v in (additional_headers or {}).items():
            request.headers[k] = v
        if user_agent_header is not None:
            request.headers["User-Agent"] = user_agent_header
        protocol.send_request(request)
        conn._send_data()
        try:
            await conn.opened
        except BaseException:
            conn.abort()
            raise
        return conn

    async with asyncio.timeout(open_timeout):
        return await _open()

