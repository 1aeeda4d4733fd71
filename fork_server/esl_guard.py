"""The framing guard between python-ESL and the switch (issue 6), on the event loop.

python-ESL 1.4.18 parses the switch's framing in C without checks: a negative or huge
``Content-Length`` and a handful of other inputs crash the whole process
(:mod:`fork_server.esl_wire` lists them). So :class:`~fork_server.esl_client.EslClient` never
lets python-ESL reach the switch. It fronts python-ESL's command connections only: EslClient
receives events itself, on the event loop (:class:`fork_server.esl_async.EslEvents`), so no
event ever reaches python-ESL, and no event needs to be skipped for its sake (an event
python-ESL could not take, e.g. a caller name holding ``ARRAY::``, is now delivered).

For each command connection the guard connects to the switch, answers its ``auth/request``,
and hands python-ESL one end of a private socket pair through ``ESLconnection(fd)``
(python-ESL's outbound-socket constructor; it sends ``connect`` first and the guard answers
that itself). From then on bytes pass both ways; what comes from the switch is read with
:class:`~fork_server.esl_wire.EslReader` and each frame goes through
:func:`~fork_server.esl_wire.python_esl_verdict`: forwarded (a reply python-ESL can take, or a
disconnect notice), or the link is dropped with one log line naming the fault (a reply it
cannot take, or any other frame: on a command connection python-ESL would queue an event for
ever). A dropped link is an ordinary ESL drop to EslClient: it reconnects with backoff, and a
command in flight fails as ``EslLostInFlight``.

Why a socket pair and not a loopback listener: there is nothing to connect to, so nothing to
authenticate and no open relay to the switch's ESL for other local users. Why
``SOCK_SEQPACKET``: python-ESL reads 65 535 bytes at a time and, when a read ends right after a
newline inside a header block, looks one byte past its data (esl_buffer_read_packet) and may
end the block there; the guard sends every header block whole inside one record, and a record
is never split by a read. Limits: a record ≤ 65 535 bytes (python-ESL's read size); while
python-ESL is not reading, the guard stops reading the switch (TCP backpressure, as before).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import os
import socket
from collections import deque

from .errors import EslProtocolError, LocalUsageError
from .esl_wire import FORWARD, MAX_HEAD, EslFrame, EslReader, python_esl_verdict

__all__ = ["EslGuard"]

RECORD = MAX_HEAD  # python-ESL recv()s 65 535 bytes; a longer record would be cut
_CONNECT_REPLY = b"Content-Type: command/reply\nReply-Text: +OK\n\n"


class EslGuard:
    """Opens guarded command connections for python-ESL; ``open_for_thread`` is called from its
    threads."""

    def __init__(self, host: str, port: int, password: str, *, logger: logging.Logger, timeout: float = 5.0) -> None:
        if any(ch in password for ch in "\r\n\0"):
            raise LocalUsageError("the ESL password holds a CR, LF or NUL")  # it would end the auth command
        self._addr = (host, port)
        self._auth = f"auth {password}\n\n".encode()
        self.log = logger
        self.timeout = timeout
        self._links: set[_Link] = set()
        self._closing = False
        self.dropped = 0  # links dropped on a frame python-ESL cannot take

    def open_for_thread(self, loop: asyncio.AbstractEventLoop) -> int | None:
        """From a python-ESL thread: the fd of an authenticated connection for
        ``ESLconnection(fd)`` (python-ESL then owns it), or None (unreachable or refused)."""
        try:
            fut = asyncio.run_coroutine_threadsafe(self.open(), loop)
        except RuntimeError:  # the loop is closed: the client is going away
            return None
        try:
            return fut.result(2 * self.timeout + 1)
        except (concurrent.futures.TimeoutError, concurrent.futures.CancelledError):
            fut.cancel()
            fut.add_done_callback(_close_unclaimed)
            return None

    async def open(self) -> int | None:
        if self._closing:
            return None
        loop = asyncio.get_running_loop()
        link: _Link | None = None
        try:
            async with asyncio.timeout(self.timeout):
                _, link = await loop.create_connection(lambda: _Link(self), *self._addr)
            async with asyncio.timeout(self.timeout):
                authed = await asyncio.shield(link.authed)
            if not authed or self._closing:
                link.close()
                return None
            return link.attach()
        except (OSError, TimeoutError):
            if link is not None:
                link.close()
            return None
        except BaseException:
            if link is not None:
                link.close()
            raise

    def close(self) -> None:
        self._closing = True
        for link in list(self._links):
            link.close()


def _close_unclaimed(fut: concurrent.futures.Future[int | None]) -> None:
    if not fut.cancelled() and fut.exception() is None and fut.result() is not None:
        os.close(fut.result())  # type: ignore[arg-type]


class _Link(asyncio.Protocol):
    """One guarded command connection: the switch on a TCP transport, python-ESL on ``sock``."""

    def __init__(self, guard: EslGuard) -> None:
        self.guard = guard
        self.loop = asyncio.get_running_loop()
        self.reader = EslReader()
        self.transport: asyncio.Transport | None = None
        self.sock: socket.socket | None = None
        self.state = "auth"  # auth -> attach (python-ESL's "connect" not yet answered) -> relay -> closed
        self.authed: asyncio.Future[bool] = self.loop.create_future()
        self._record = bytearray()  # the record being filled
        self._out: deque[bytes] = deque()  # records ready for python-ESL
        self._from_esl = bytearray()  # python-ESL's bytes before its "connect" is complete
        self._writing = False

    # ------------------------------------------------------------ the switch side

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.guard._links.add(self)

    def data_received(self, data: bytes) -> None:
        try:
            frames = self.reader.feed(data)
        except EslProtocolError as exc:
            return self.fault(exc.message)
        for frame in frames:
            if self.state == "auth":
                self._handshake(frame)
                continue
            if self.state == "closed":
                return
            verdict, why = python_esl_verdict(frame, events=False)  # forward or drop, never skip
            if verdict != FORWARD:
                self._flush()  # what came before it is fine and goes first
                return self.fault(why)
            self._queue(frame)
        self._flush()

    def _handshake(self, frame: EslFrame) -> None:
        ctype = frame.headers.get("Content-Type")
        if ctype == "auth/request":
            self.transport.write(self.guard._auth)  # type: ignore[union-attr]
            return
        ok = ctype == "command/reply" and frame.headers.get("Reply-Text", "").startswith("+OK")
        if not self.authed.done():
            self.authed.set_result(ok)
        if ok:
            self.state = "attach"
        else:
            self.close()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.authed.done():
            self.authed.set_result(False)
        if self.state == "relay":
            self._flush()  # a last frame (a disconnect notice) still reaches python-ESL
        self.close()

    # ------------------------------------------------------------ the python-ESL side

    def attach(self) -> int:
        """Make the socket pair; python-ESL gets the returned fd (and will close it)."""
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        ours.setblocking(False)
        self.sock = ours
        self.loop.add_reader(ours.fileno(), self._from_python_esl)
        return theirs.detach()

    def _from_python_esl(self) -> None:
        for _ in range(16):
            if self.sock is None:
                return
            try:
                data = self.sock.recv(RECORD + 1)
            except BlockingIOError:
                return
            except OSError:
                data = b""
            if not data:  # python-ESL disconnected
                return self.close()
            if len(data) > RECORD:  # a longer record was cut by the read: never pass half a command on
                return self.fault(f"a command of over {RECORD} bytes from python-ESL")
            if self.state == "relay":
                self.transport.write(data)  # type: ignore[union-attr]
                continue
            self._from_esl += data
            end = self._from_esl.find(b"\n\n")
            if end < 0:
                if len(self._from_esl) > 64:
                    return self.fault("python-ESL did not start with connect")
                continue
            if bytes(self._from_esl[: end + 2]) != b"connect\n\n":
                return self.fault("python-ESL did not start with connect")
            rest = bytes(self._from_esl[end + 2 :])
            self._from_esl.clear()
            self._out.appendleft(_CONNECT_REPLY)  # its reply comes before anything the switch sent
            self.state = "relay"
            self._flush()
            if rest:
                self.transport.write(rest)  # type: ignore[union-attr]

    def _queue(self, frame: EslFrame) -> None:
        # Records hold whole header blocks: a block never straddles two python-ESL reads.
        record = self._record
        if len(record) + len(frame.head) > RECORD:
            self._out.append(bytes(record))
            record.clear()
        record += frame.head
        if frame.body:
            record += frame.body
            while len(record) > RECORD:
                self._out.append(bytes(record[:RECORD]))
                del record[:RECORD]

    def _flush(self) -> None:
        if self._record:
            self._out.append(bytes(self._record))
            self._record.clear()
        if self.state != "relay" or self.sock is None:
            return  # held until python-ESL's "connect" is answered
        out = self._out
        while out:
            try:
                self.sock.send(out[0])
            except BlockingIOError:
                if not self._writing:  # python-ESL is behind: stop reading the switch until it catches up
                    self._writing = True
                    self.loop.add_writer(self.sock.fileno(), self._flush)
                    self.transport.pause_reading()  # type: ignore[union-attr]
                return
            except OSError:
                return self.close()
            out.popleft()
        if self._writing:
            self._writing = False
            self.loop.remove_writer(self.sock.fileno())
            if not self.transport.is_closing():  # type: ignore[union-attr]
                self.transport.resume_reading()  # type: ignore[union-attr]

    # ------------------------------------------------------------ faults and the end

    def fault(self, why: str) -> None:
        self.guard.dropped += 1
        self.guard.log.error("ESL commands link: %s; dropping it before python-ESL reads it", why)
        self.close()

    def close(self) -> None:
        if self.state == "closed" and self.sock is None and self.transport is None:
            return
        self.state = "closed"
        if not self.authed.done():
            self.authed.set_result(False)
        if self.sock is not None:
            fd = self.sock.fileno()
            self.loop.remove_reader(fd)
            if self._writing:
                self.loop.remove_writer(fd)
            self.sock.close()
            self.sock = None
        if self.transport is not None:
            self.transport.abort()
            self.transport = None
        self._out.clear()
        self.guard._links.discard(self)
