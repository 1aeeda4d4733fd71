"""The reference connector's WebSocket server (adapter: sockets, time and tasks only).

One WebSocket per call. Each connection gets a :class:`~.protocol.ForkStream` (strict checks),
a :class:`~.recording.CallRecord` (what happened) and a mode behaviour (what to do); tasks of
the call live in one TaskGroup and are cancelled when the connection ends.

    async with ConnectorServer("script", hangup_after_playback=True) as server:
        url = server.url("/support")
        ...
        record = await server.wait_call(0)
        await record.wait_stopped()
        assert record.violations == []
"""

from __future__ import annotations

import asyncio
import hmac
import http
import json
import logging
import socket
import time
from typing import Any, Coroutine, Sequence

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from . import protocol as p
from .modes import MODES, Behaviour, ModeOptions, make_options
from .recording import AudioFrame, CallRecord, DtmfEvent, MarkEvent, Sent

__all__ = ["ConnectorServer"]

logger = logging.getLogger("testbed.connector")

_MAX_MESSAGE = 2 << 20  # above the 1 MiB protocol limit, so oversize frames are recorded, not fatal
_CLOSE_AFTER_STOP_S = 5.0  # the fork server must close within this after "stop"


class _CallLog(logging.LoggerAdapter):
    def process(self, msg: Any, kwargs: Any) -> tuple[Any, Any]:
        return f"[{self.extra['call']}] {msg}", kwargs  # type: ignore[index]


class _CallIO:
    """Sends for a behaviour, recording each message on the call's timeline."""

    def __init__(self, ws: ServerConnection, record: CallRecord, stream: p.ForkStream, log: _CallLog) -> None:
        self.ws = ws
        self.record = record
        self.stream = stream
        self.log = log
        self.tg: asyncio.TaskGroup | None = None
        self.tasks: set[asyncio.Task[None]] = set()

    async def send_text(self, text: str) -> bool:
        msg = json.loads(text)
        kind = msg["type"]
        t = time.monotonic()
        if kind == "mark":
            self.stream.mark_sent(msg["name"])
        try:
            await self.ws.send(text)
        except ConnectionClosed:
            return False
        rec = self.record
        rec.sent.append(Sent(t, kind, msg))
        if kind == "clear":
            rec.clears_sent.append(t)
        self.log.debug("> %s", text)
        rec.touch()
        return True

    async def send_raw(self, data: str | bytes, *, text: bool | None = None) -> bool:
        """Send anything, unchecked (the chaos mode's garbage); ``text=True`` sends bytes as a
        text frame even if they are not UTF-8."""
        try:
            await self.ws.send(data, text=text)
        except ConnectionClosed:
            return False
        self.record.touch()
        return True

    async def send_audio(self, pcm: bytes) -> bool:
        t = time.monotonic()
        try:
            await self.ws.send(pcm)
        except ConnectionClosed:
            return False
        rec = self.record
        rec.tts_bytes_sent += len(pcm)
        rec.tts_messages_sent += 1
        if rec.store_audio:
            rec.sent.append(Sent(t, "audio", None, len(pcm)))
            rec.touch()
        return True

    def spawn(self, coro: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None]:
        if self.tg is None:
            coro.close()
            raise RuntimeError("call task group is not running")
        task = self.tg.create_task(coro, name=f"{self.log.extra['call']}:{name}")  # type: ignore[index]
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        return task

    def cancel_all(self) -> None:
        for task in list(self.tasks):
            task.cancel()


class ConnectorServer:
    """A voice connector for tests and benchmarks: ``echo``, ``script`` or ``sink``.

    ``token``: when set, a request without ``Authorization: Bearer <token>`` gets 401.
    ``subprotocol``: selected when the client offers it; None never selects one.
    ``store_audio``: keep every caller frame and every TTS send on the record (default: all
    modes but ``sink``). Other keywords are the mode's options (see :mod:`.modes`), or pass
    ``options=`` a ready options object.

    Faults of the whole server, for the chaos suite; attributes a test may change at any time:
    ``refuse_status`` (every handshake is answered with this HTTP status), ``handshake_delay_s``
    (the handshake answer waits this long: a connector that accepts TCP but hangs). ``rcvbuf``
    (constructor only) sets SO_RCVBUF on every accepted socket, so a connector that stops
    reading pushes back on the fork server within a few KB instead of the kernel's megabytes.
    """

    def __init__(
        self,
        mode: str = "script",
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        token: str | None = None,
        subprotocol: str | None = p.SUBPROTOCOL,
        store_audio: bool | None = None,
        options: ModeOptions | None = None,
        rcvbuf: int | None = None,
        **option_kw: Any,
    ) -> None:
        if mode not in MODES:
            raise ValueError(f"unknown mode {mode!r}; expected one of {sorted(MODES)}")
        if options is not None and option_kw:
            raise TypeError("pass options= or option keywords, not both")
        if token is not None and not token:
            raise ValueError("token must be non-empty when given")
        self.mode = mode
        self.behaviour_type: type[Behaviour] = MODES[mode]
        self.options = options if options is not None else make_options(mode, **option_kw)
        if not isinstance(self.options, self.behaviour_type.options_type):
            raise TypeError(f"mode {mode!r} needs {self.behaviour_type.options_type.__name__}")
        self.host = host
        self._port = port
        self._token = token
        self.subprotocol = subprotocol
        self.store_audio = self.behaviour_type.store_audio if store_audio is None else store_audio
        self._shared = self.behaviour_type.prepare(self.options)
        self.connections: list[CallRecord] = []  # every accepted connection, in order
        self.calls: dict[str, CallRecord] = {}  # uuid -> latest connection for that call
        self._heard_until: dict[str, int] = {}  # uuid -> caller frames heard (timeline index)
        self.rejected = 0  # handshakes refused (auth, or refuse_status)
        self.refuse_status: int | None = None
        self.handshake_delay_s = 0.0
        self.handshakes = 0  # handshake requests seen, refused or not
        self._rcvbuf = rcvbuf
        self._closing: asyncio.Event | None = None
        self._server: Server | None = None
        self._changed: asyncio.Event | None = None

    # -- lifecycle
    async def start(self) -> "ConnectorServer":
        if self._server is not None:
            raise RuntimeError("already started")
        where: dict[str, Any] = {"host": self.host, "port": self._port}
        if self._rcvbuf is not None:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, self._rcvbuf)  # accepted sockets inherit it
            sock.bind((self.host, self._port))
            where = {"sock": sock}
        self._server = await serve(
            self._handle,
            **where,
            process_request=self._process_request,
            select_subprotocol=self._select_subprotocol,
            compression=None,
            max_size=_MAX_MESSAGE,
            ping_interval=None,  # the fork server pings; we answer
            close_timeout=2,
            server_header="voicefork-testbed-connector",
            logger=logging.getLogger("testbed.connector.websockets"),  # apart from the fork server's
        )
        self._port = self._server.sockets[0].getsockname()[1]
        logger.info("connector (%s) listening on %s", self.mode, self.url())
        return self

    async def close(self) -> None:
        if self._server is None:
            return
        if self._closing is not None:
            self._closing.set()
        self._server.close()
        await self._server.wait_closed()
        self._server = None

    async def __aenter__(self) -> "ConnectorServer":
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @property
    def port(self) -> int:
        return self._port

    def url(self, path: str = "/") -> str:
        if not path.startswith("/"):
            raise ValueError(f"path must start with '/', got {path!r}")
        return f"ws://{self.host}:{self._port}{path}"

    # -- waiting
    def _touch(self) -> None:
        ev = self._changed
        if ev is not None:
            self._changed = None
            ev.set()

    async def wait_call(self, key: str | int, timeout: float = 5.0) -> CallRecord:
        """The call with this uuid, or the ``key``-th connection (from 0) once it has started or closed."""

        def find() -> CallRecord | None:
            if isinstance(key, int):
                if key < len(self.connections):
                    r = self.connections[key]
                    return r if r.start is not None or r.closed else None
                return None
            return self.calls.get(key)

        deadline = time.monotonic() + timeout
        while (found := find()) is None:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"no call {key!r} within {timeout} s")
            if self._changed is None:
                self._changed = asyncio.Event()
            try:
                async with asyncio.timeout(left):
                    await self._changed.wait()
            except TimeoutError:
                pass
        return found

    # -- handshake
    def _select_subprotocol(self, connection: ServerConnection, offered: Sequence[str]) -> str | None:
        return self.subprotocol if self.subprotocol is not None and self.subprotocol in offered else None

    async def _process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        self.handshakes += 1
        if self.handshake_delay_s > 0:
            if self._closing is None:
                self._closing = asyncio.Event()
            try:  # close() ends the wait, so a hung handshake does not hold up the teardown
                async with asyncio.timeout(self.handshake_delay_s):
                    await self._closing.wait()
            except TimeoutError:
                pass
        if self.refuse_status is not None:
            self.rejected += 1
            self._touch()
            return connection.respond(http.HTTPStatus(self.refuse_status), "refused (chaos)\n")
        if self._token is None:
            return None
        header = request.headers.get("Authorization", "")
        expected = "Bearer " + self._token
        if hmac.compare_digest(header.encode(), expected.encode()):
            return None
        self.rejected += 1
        logger.warning("< %s refused: %s bearer token", request.path, "wrong" if header else "no")
        response = connection.respond(http.HTTPStatus.UNAUTHORIZED, "unauthorized\n")
        response.headers["WWW-Authenticate"] = 'Bearer realm="voicefork-connector"'
        self._touch()
        return response

    # -- one connection
    async def _handle(self, ws: ServerConnection) -> None:
        request = ws.request
        raw = request.headers.raw_items() if request else []
        headers = {k: ("<redacted>" if k.lower() == "authorization" else v) for k, v in raw}
        record = CallRecord(
            index=len(self.connections),
            path=request.path if request else "",
            subprotocol=ws.subprotocol,
            headers=headers,
            connected_at=time.monotonic(),
            store_audio=self.store_audio,
        )
        self.connections.append(record)
        stream = p.ForkStream()
        log = _CallLog(logger, {"call": f"#{record.index}"})
        io = _CallIO(ws, record, stream, log)
        behaviour = self.behaviour_type(io, self.options, self._shared)
        log.debug("< connection on %s (subprotocol %s)", record.path, record.subprotocol)
        try:
            async with asyncio.TaskGroup() as tg:
                io.tg = tg
                try:
                    await self._read(ws, stream, record, behaviour, io, log)
                finally:
                    io.cancel_all()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a bug in a behaviour: keep it on the record, close 1011
            record.error = repr(exc)
            log.exception("connector behaviour failed")
            await ws.close(1011, "connector error")
        finally:
            record.close_code = ws.close_code
            record.close_reason = ws.close_reason
            record.closed_at = time.monotonic()
            if record.stop_reason is not None and record.close_code not in (1000, None) and record.error is None:
                record.violations.append(f"closed with code {record.close_code} after stop, expected 1000")
            log.info(
                "call stopped: reason=%s close=%s frames=%d bad_frames=%d tts_bytes=%d violations=%d",
                record.stop_reason, record.close_code, record.frame_count, record.bad_frames,
                record.tts_bytes_sent, len(record.violations),
            )
            record.touch()
            self._touch()

    async def _read(
        self, ws: ServerConnection, stream: p.ForkStream, record: CallRecord,
        behaviour: Behaviour, io: _CallIO, log: _CallLog,
    ) -> None:
        store = record.store_audio
        try:
            async for message in ws:
                t = time.monotonic()
                if isinstance(message, bytes):
                    events = stream.receive_binary(message)
                    record.frame_count += 1
                    if record.uuid is not None:
                        # A resumed leg starts with audio the last leg may have had (its start's
                        # offset_ms says where): the behaviour hears each frame once.
                        at = record.offset_ms // 20 + record.frame_count - 1
                        if at < self._heard_until.get(record.uuid, 0):
                            record.replayed_frames += 1
                            events = [e for e in events if not isinstance(e, p.CallerAudio)]
                        else:
                            self._heard_until[record.uuid] = at + 1
                    record.audio_bytes += len(message)
                    record.bad_frames = stream.bad_frames
                    if record.first_audio_at is None:
                        record.first_audio_at = t
                    record.last_audio_at = t
                    if store:
                        record.frames.append(AudioFrame(t, message))
                else:
                    log.debug("< %.200s", message)
                    events = stream.receive_text(message)
                for event in events:
                    self._note(event, t, record, io, log)
                    await behaviour.on_event(event)
                record.touch()  # cheap unless a test is waiting on the record
        except ConnectionClosed:
            pass

    def _note(self, event: p.ForkEvent, t: float, record: CallRecord, io: _CallIO, log: _CallLog) -> None:
        if isinstance(event, p.CallerAudio):
            return
        if isinstance(event, p.Violation):
            record.violations.append(event.message)
            log.warning("< protocol violation: %s", event.message)
        elif isinstance(event, p.Start):
            if record.start is None:
                record.start, record.start_at = event.message, t
                record.offset_ms = event.offset_ms
                record.uuid = event.uuid or None
                if event.uuid:
                    log.extra["call"] = event.uuid  # type: ignore[index]
                    self.calls[event.uuid] = record
                log.info("call started: route=%s resumed=%s path=%s", event.route, event.resumed, record.path)
                self._touch()
        elif isinstance(event, p.Dtmf):
            record.dtmf.append(DtmfEvent(t, event.digit, event.duration_ms))
            log.debug("< dtmf %s", event.digit)
        elif isinstance(event, p.MarkReport):
            record.marks.append(MarkEvent(t, event.name, event.status))
            log.debug("< mark %s %s", event.name, event.status)
        elif isinstance(event, p.Stop):
            record.stop_reason, record.stop_at = event.reason, t
            record.stop_recording = event.recording
            log.info("< stop %s", event.reason)
            io.spawn(self._expect_close(io.ws, record), "close-watch")

    @staticmethod
    async def _expect_close(ws: ServerConnection, record: CallRecord) -> None:
        try:
            async with asyncio.timeout(_CLOSE_AFTER_STOP_S):
                await ws.wait_closed()
        except TimeoutError:
            record.violations.append(f"connection still open {_CLOSE_AFTER_STOP_S} s after stop")
            await ws.close(1000)
