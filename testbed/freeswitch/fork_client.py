"""mod_audio_fork's media side: one WebSocket client per fork ("bug") on an emulated channel.

Every behaviour here is from REF "The WebSocket as the fork server sees it", "Close" and
"Buffering", unless marked as an assumption:
* handshake: ``GET <path?query>`` with ``Host: 127.0.0.1`` (no port), ``Origin:
  http://127.0.0.1``, subprotocol ``audio.drachtio.org``, ``Pragma``/``Cache-Control:
  no-cache``; Basic auth only from the channel variables ``MOD_AUDIO_BASIC_AUTH_*``;
* the metadata text frame first, then binary L16 frames; audio from before the connect is
  dropped; under load everything buffered goes out as one frame;
* a per-fork buffer of ``MOD_AUDIO_FORK_BUFFER_SECS`` (default 2 s): on overflow one
  ``buffer_overrun`` event and the audio is dropped;
* no pings, no reconnect; hangup closes with 1000 and an empty reason; ``stop <text>`` sends
  the text then closes 1000; ``graceful-shutdown`` sends a zero-length binary frame and from
  then on never closes;
* when the server closes, ``disconnect`` fires with no body and the bug stays attached;
* connect failure: ``connect_failed`` with ``{"reason":"Unable to connect"}``, or
  ``{"reason":"HS: ws upgrade response not 101"}`` for an HTTP refusal (e.g. 401/403).

With ``module="jambonz"`` (measured 2026-12-06 on 1.10.12 with the jambonz module,
/tmp/jambonz_report.md): the same handshake, close and graceful-shutdown behaviour (Q1, Q6), and
* binary frames from the server go to ``on_binary`` (the switch decides: play, buffer, discard);
* a 401 gives ``{"reason":"HS: ws upgrade unauthorized"}`` (Q1; other refusals as above,
  assumption: from REF's 403);
* messages received after ``stop`` are dropped (audio_pipe.cpp:148-151), except that binary
  ones still reach ``on_binary``, where the switch crashes (Q7.2);
* every text to the server is queued in order (``m_metadata_list``), which ForkBug always does.
"""

from __future__ import annotations

import asyncio
import base64
import logging
from collections import deque
from typing import TYPE_CHECKING, Callable
from urllib.parse import urlsplit

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus

from .fork_args import ForkCommand

if TYPE_CHECKING:
    from .jambonz import StreamPlayout

__all__ = ["ForkBug"]

log = logging.getLogger("testbed.freeswitch.fork")
_WS_LOG = logging.getLogger("testbed.freeswitch.fork.websockets")

SUBPROTOCOL = "audio.drachtio.org"
MAX_SERVER_MESSAGE = 16 << 20  # REF: a 1.28 MB playAudio worked


class _ForkConnection(ClientConnection):
    """websockets' client with the Host header mod_audio_fork (libwebsockets) sends: no port."""

    async def handshake(self, *args, **kwargs) -> None:  # type: ignore[override]
        build = self.protocol.connect

        def connect_request():  # type: ignore[no-untyped-def]
            request = build()
            host = request.headers["Host"]
            del request.headers["Host"]
            request.headers["Host"] = urlsplit(f"//{host}").hostname or host
            return request

        self.protocol.connect = connect_request  # type: ignore[method-assign]
        await super().handshake(*args, **kwargs)


class ForkBug:
    """One ``uuid_audio_fork ... start``: the emulated switch feeds frames; this sends them."""

    def __init__(
        self,
        cmd: ForkCommand,
        *,
        auth: tuple[str, str] | None,
        channels: int,
        fire: Callable[[str, str | None], None],
        on_text: Callable[["ForkBug", str], None],
        buffer_secs: float = 2.0,
        merge_frames: int = 1,
        module: str = "drachtio",
        on_binary: Callable[[ForkBug, bytes], None] | None = None,
    ) -> None:
        self.cmd = cmd
        self.module = module
        self._on_binary = on_binary  # None: binary frames from the server are discarded (drachtio)
        self.stopping = False  # API stop ran (the socket is closing)
        self.playout: StreamPlayout | None = None  # jambonz: the fork's stream state, set by the switch
        self.rate = cmd.rate or 8000
        self.channels = channels
        self._auth = auth
        self._fire = fire  # (event subclass suffix, body) → CUSTOM mod_audio_fork::<name>
        self._on_text = on_text
        self._limit = int(buffer_secs * self.rate * 2 * channels)
        self._merge = max(1, merge_frames)
        self._pending: deque[bytes] = deque()
        self._pending_bytes = 0
        self._ticks = 0
        self._wake = asyncio.Event()
        self.ws: ClientConnection | None = None
        self.connected = False
        self.closed_by_server = False
        self.paused = False
        self.graceful = False
        self.overrun_fired = False
        self.frames_sent = 0
        self.bytes_sent = 0
        self.frames_dropped = 0
        self.close_code: int | None = None
        self._stalled_until = 0.0
        self._done = False
        self._task = asyncio.get_running_loop().create_task(self._run(), name=f"fork-{cmd.uuid}")

    # ------------------------------------------------------------ from the channel's clock

    def feed(self, pcm: bytes) -> None:
        """One frame of this fork's audio; dropped before the connect and while paused (REF)."""
        if not self.connected or self.paused or self.graceful or self._done:
            return
        if self._pending_bytes + len(pcm) > self._limit:
            self.frames_dropped += 1
            if not self.overrun_fired:
                self.overrun_fired = True
                self._fire("buffer_overrun", None)
            return
        self._pending.append(pcm)
        self._pending_bytes += len(pcm)
        self._ticks += 1
        if self._ticks % self._merge == 0:
            self._wake.set()

    # ------------------------------------------------------------ API verbs

    def send_text(self, text: str) -> None:
        if self.graceful:
            self._queue_control(b"")  # REF: after graceful-shutdown only zero-length frames go out
        else:
            self._queue_control(text)

    def stop(self, text: str | None) -> None:
        if self.graceful:
            self._queue_control(b"")  # REF: and it never closes
            return
        self.stopping = True
        if text is not None:
            self._queue_control(text)
        self._queue_control(None)  # close 1000

    def graceful_shutdown(self) -> None:
        self.graceful = True
        self._queue_control(b"")

    def stall(self, seconds: float) -> None:
        """Chaos tests: the service thread sends nothing for ``seconds`` (the fork server or
        the network is not keeping up), so the buffer fills and ``buffer_overrun`` fires (REF)."""
        self._stalled_until = asyncio.get_running_loop().time() + seconds

    def hangup(self) -> None:
        """The channel hung up: close 1000, empty reason, no final text (REF)."""
        self._queue_control(None)

    async def wait_closed(self) -> None:
        await asyncio.shield(self._task)

    def abort(self) -> None:
        """The whole switch died: no close frame."""
        self._done = True
        if self.ws is not None and self.ws.transport is not None:
            self.ws.transport.abort()
        self._task.cancel()

    # ------------------------------------------------------------ the connection

    def _queue_control(self, item: str | bytes | None) -> None:
        self._pending.append(_Control(item))
        self._wake.set()

    def _headers(self) -> dict[str, str]:
        h = {"Pragma": "no-cache", "Cache-Control": "no-cache"}
        if self._auth is not None:
            token = base64.b64encode(f"{self._auth[0]}:{self._auth[1]}".encode()).decode()
            h["Authorization"] = f"Basic {token}"
        return h

    async def _run(self) -> None:
        try:
            self.ws = await connect(
                self.cmd.url or "",
                subprotocols=[SUBPROTOCOL],  # type: ignore[list-item]
                origin="http://127.0.0.1",  # type: ignore[arg-type]
                additional_headers=self._headers(),
                user_agent_header=None,
                compression=None,
                ping_interval=None,  # REF: no pings
                max_size=MAX_SERVER_MESSAGE,
                open_timeout=5,
                create_connection=_ForkConnection,
                logger=_WS_LOG,  # the switch's own log, apart from the fork server's
            )
        except InvalidStatus as e:
            self._done = True
            if self.module == "jambonz" and e.response.status_code == 401:
                self._fire("connect_failed", '{"reason":"HS: ws upgrade unauthorized"}')
            else:
                self._fire("connect_failed", '{"reason":"HS: ws upgrade response not 101"}')
            return
        except (OSError, InvalidHandshake, TimeoutError, ValueError) as e:
            log.info("fork %s: connect failed: %s", self.cmd.uuid, e)
            self._done = True
            self._fire("connect_failed", '{"reason":"Unable to connect"}')
            return
        # A hangup while connecting: close right away, nothing sent.
        if any(isinstance(p, _Control) and p.item is None for p in self._pending):
            await self.ws.close(1000, "")
            self._done = True
            return
        self._pending.clear()
        self._pending_bytes = 0
        self._fire("connect", None)
        if self.cmd.metadata is not None:
            await self.ws.send(self.cmd.metadata)
        self.connected = True
        reader = asyncio.get_running_loop().create_task(self._read())
        try:
            await self._send_loop()
        except ConnectionClosed:
            pass
        finally:
            self.connected = False
            self._done = True
            await asyncio.wait({reader}, timeout=2)
            reader.cancel()

    async def _send_loop(self) -> None:
        assert self.ws is not None
        loop = asyncio.get_running_loop()
        while not self.closed_by_server:
            await self._wake.wait()
            self._wake.clear()
            if (wait := self._stalled_until - loop.time()) > 0:
                await asyncio.sleep(wait)
            audio: list[bytes] = []
            while self._pending:
                item = self._pending.popleft()
                if isinstance(item, _Control):
                    if audio:
                        await self._send_audio(audio)
                        audio = []
                    if item.item is None:
                        self.close_code = 1000  # before the await: the reader must not see a server close
                        await self.ws.close(1000, "")
                        return
                    await self.ws.send(item.item)
                else:
                    self._pending_bytes -= len(item)
                    audio.append(item)
            if audio:
                await self._send_audio(audio)

    async def _send_audio(self, frames: list[bytes]) -> None:
        assert self.ws is not None
        # Source: the service thread sends everything buffered as a single frame.
        await self.ws.send(frames[0] if len(frames) == 1 else b"".join(frames))
        self.frames_sent += 1
        self.bytes_sent += sum(len(f) for f in frames)

    async def _read(self) -> None:
        assert self.ws is not None
        try:
            async for message in self.ws:
                if isinstance(message, str):
                    if self.stopping and self.module == "jambonz":
                        continue  # audio_pipe.cpp:148-151: dropped while closing
                    self._on_text(self, message)
                elif self._on_binary is not None:
                    self._on_binary(self, message)
                # else REF (source): binary frames from the server are discarded.
        except ConnectionClosed:
            pass
        if self.close_code is None and not self._done_by_us():
            # REF: the server closed: disconnect, no body; the bug stays attached.
            self.closed_by_server = True
            self.connected = False
            self._wake.set()
            self._fire("disconnect", None)

    def _done_by_us(self) -> bool:
        return self.close_code is not None


class _Control:
    __slots__ = ("item",)

    def __init__(self, item: str | bytes | None) -> None:
        self.item = item
