"""A bot that speaks Twilio's side of Media Streams, driven by a test (the emulator's peer).

It records every message the fork server sends with its arrival time and sends what the
test asks: media (μ-law, as Twilio bots send it), mark, clear; and it ends calls the way
Twilio bots do, through the REST API (:func:`rest_hang_up`). Loopback only, port 0.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import json
import time
from dataclasses import dataclass, field
from typing import Any

from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed

from fork_server.pcm import ulaw_decode, ulaw_encode
from fs_dialplan import load_config
from fs_dialplan.model import Config

__all__ = ["TwilioPeer", "Stream", "rest_hang_up", "twilio_config", "TEST_ACCOUNT_SID"]

TEST_ACCOUNT_SID = "AC" + "5e" * 16
MAX_MESSAGE = 64 * 1024  # what the fork server sends is at most a start with its parameters


@dataclass
class Stream:
    """One Media Stream (one fork server connection)."""

    ws: ServerConnection
    got: list[tuple[float, dict[str, Any]]] = field(default_factory=list)
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    closed: bool = False
    marks_sent: dict[str, float] = field(default_factory=dict)
    clears_sent: list[float] = field(default_factory=list)
    media_sent: list[float] = field(default_factory=list)

    def of(self, event: str) -> list[dict[str, Any]]:
        return [m for _, m in self.got if m.get("event") == event]

    @property
    def start(self) -> dict[str, Any]:
        return self.of("start")[0]

    @property
    def stream_sid(self) -> str:
        return self.start["streamSid"]

    def caller_pcm(self) -> bytes:
        """The caller's audio as received (μ-law decoded to PCM s16le, 8 kHz)."""
        return b"".join(ulaw_decode(base64.b64decode(m["media"]["payload"])) for m in self.of("media"))

    def marks_back(self) -> list[tuple[float, str]]:
        return [(t, m["mark"]["name"]) for t, m in self.got if m.get("event") == "mark"]

    async def wait(self, pred: Any, timeout: float = 10.0, what: str = "condition") -> None:
        end = time.monotonic() + timeout
        while not pred(self):
            left = end - time.monotonic()
            if left <= 0:
                raise AssertionError(f"timed out waiting for {what}")
            self.changed.clear()
            try:
                async with asyncio.timeout(min(left, 0.1)):
                    await self.changed.wait()
            except TimeoutError:
                pass

    async def media(self, pcm8k: bytes, chunk_ms: int = 20, pace: float = 0.0) -> None:
        """Send PCM s16le 8 kHz as μ-law media messages of ``chunk_ms``; ``pace`` > 0 sleeps
        ``pace`` × the chunk's duration between them (0: as fast as the socket takes them)."""
        step = 16 * chunk_ms
        for i in range(0, len(pcm8k), step):
            payload = base64.b64encode(ulaw_encode(pcm8k[i:i + step])).decode()
            await self.ws.send(json.dumps({"event": "media", "streamSid": self.stream_sid, "media": {"payload": payload}}))
            self.media_sent.append(time.monotonic())
            if pace:
                await asyncio.sleep(pace * chunk_ms / 1000)

    async def mark(self, name: str) -> None:
        await self.ws.send(json.dumps({"event": "mark", "streamSid": self.stream_sid, "mark": {"name": name}}))
        self.marks_sent[name] = time.monotonic()

    async def clear(self) -> None:
        await self.ws.send(json.dumps({"event": "clear", "streamSid": self.stream_sid}))
        self.clears_sent.append(time.monotonic())

    async def send_raw(self, text: str) -> None:
        await self.ws.send(text)


class TwilioPeer:
    """The server end: each fork server connection becomes a :class:`Stream` in ``streams``."""

    def __init__(self) -> None:
        self.streams: list[Stream] = []
        self._new = asyncio.Event()
        self._server: Any = None
        self.port = 0

    async def start(self) -> None:
        self._server = await serve(self._handle, "127.0.0.1", 0, max_size=MAX_MESSAGE)
        self.port = self._server.sockets[0].getsockname()[1]

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/media"

    async def wait_stream(self, index: int = 0, timeout: float = 10.0) -> Stream:
        end = time.monotonic() + timeout
        while len(self.streams) <= index:
            if time.monotonic() > end:
                raise AssertionError(f"no Media Stream #{index} within {timeout} s")
            self._new.clear()
            try:
                async with asyncio.timeout(0.1):
                    await self._new.wait()
            except TimeoutError:
                pass
        s = self.streams[index]
        await s.wait(lambda s: s.of("start"), timeout, "start")
        return s

    async def _handle(self, ws: ServerConnection) -> None:
        stream = Stream(ws)
        self.streams.append(stream)
        self._new.set()
        try:
            async for text in ws:
                stream.got.append((time.monotonic(), json.loads(text)))
                stream.changed.set()
        except ConnectionClosed:
            pass
        finally:
            stream.closed = True
            stream.changed.set()

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()


async def rest_hang_up(port: int, account_sid: str, token: str, call_sid: str,
                       body: str = "Status=completed") -> tuple[int, dict[str, Any]]:
    """POST Twilio's call update as its REST clients do (form body, HTTP Basic)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        auth = base64.b64encode(f"{account_sid}:{token}".encode()).decode()
        data = body.encode()
        writer.write(
            f"POST /2010-04-01/Accounts/{account_sid}/Calls/{call_sid}.json HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            f"Authorization: Basic {auth}\r\nContent-Type: application/x-www-form-urlencoded\r\n"
            f"Content-Length: {len(data)}\r\n\r\n".encode() + data
        )
        head = await reader.readuntil(b"\r\n\r\n")
        length = next(int(l.split(b":")[1]) for l in head.split(b"\r\n") if l.lower().startswith(b"content-length"))
        return int(head.split()[1]), json.loads(await reader.readexactly(length))
    finally:
        writer.close()


def twilio_config(path: str | None = None, connector: str = "support-bot", account_sid: str = TEST_ACCOUNT_SID) -> Config:
    """The example config with one connector switched to the twilio dialect (token env TWILIO_AUTH_TOKEN)."""
    from .stack import EXAMPLE_CONFIG

    base = load_config(str(path or EXAMPLE_CONFIG))
    bot = dataclasses.replace(base.connectors[connector], protocol="twilio", account_sid=account_sid,
                              auth_token_env="TWILIO_AUTH_TOKEN")
    return dataclasses.replace(base, connectors={**base.connectors, connector: bot})
