"""Mode ``chaos``: the ``script`` connector with faults switched on by options (issue 6).

Each option is one fault a real connector shows; all are off by default, so ``chaos`` with
no options behaves exactly like ``script``:

* ``drop_after_ms`` — this long after ``start`` the connection goes: ``drop_how`` ``abort``
  (TCP reset, no close frame: a crashed process), ``close`` (close 1011) or ``hang`` (it stops
  reading and sending but keeps the socket: only the fork server's pings can tell). Only the
  first ``drop_legs`` connections of a call drop (a ``hang`` ends after ``hang_ms``); a resumed leg (``"resumed": true``) is
  counted as a leg. ``refuse_resumed`` closes a resumed leg (1011) as soon as its ``start``
  arrives, so the reconnect fails and the route fallback must run.
* ``stall_after_ms`` / ``stall_ms`` / ``read_speed`` — a slow reader: from ``stall_after_ms``
  after ``start``, for ``stall_ms``, it reads caller audio at ``read_speed`` times real time
  (0: not at all). With the server's ``rcvbuf`` small, the fork server's writes back up within
  a few KB.
* ``garbage`` — junk sent right after ``start``, each ``garbage_repeat`` times, before the
  script speaks (on the first ``garbage_legs`` connections of a call, 0: all); kinds in
  :data:`GARBAGE`. ``oversize`` and ``bad_utf8`` break the WebSocket
  itself (the fork server must close that connection, and may reconnect).
* ``odd_chunks`` — every TTS message is split at an odd byte count (a connector that cuts its
  PCM anywhere).
* ``flood_s`` — instead of the script, this many seconds of TTS (the WAV looped) sent as
  fast as the socket takes it, in ``flood_frame_bytes`` messages, then mark ``end``.

Faults of the whole server (refused or hanging handshakes) are ``ConnectorServer``
attributes: ``refuse_status``, ``handshake_delay_s``, ``rcvbuf``.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any

from . import protocol as p
from .modes import MODES, RATE, CallIO, ModeOptions, ScriptBehaviour, ScriptOptions

__all__ = ["ChaosBehaviour", "ChaosOptions", "GARBAGE"]

# Junk a connector can send. Values are (frame, text flag for send); see ChaosBehaviour._garbage.
GARBAGE: dict[str, tuple[str | bytes, bool | None]] = {
    "bad_json": ('{"type": "mark", "name": ', None),
    "not_object": ("[1, 2, 3]", None),
    "no_type": ('{"name": "x"}', None),
    "unknown_type": ('{"type": "dance", "style": "tango"}', None),
    "bad_field": ('{"type": "mark", "name": "x", "colour": "red"}', None),
    "bad_rate": ('{"type": "audio_format", "sample_rate": 7}', None),
    "bad_dtmf": ('{"type": "send_dtmf", "digits": "1\\n2"}', None),
    "bad_transfer": ('{"type": "transfer", "target": "1000 XML default\\napi uuid_kill"}', None),
    "nan": ('{"type": "audio_format", "sample_rate": NaN}', None),
    "deep": ("[" * 100_000 + "]" * 100_000, None),
    "huge_text": ('{"type":"mark","name":"' + "x" * 200_000 + '"}', None),
    "empty_binary": (b"", None),
    "odd_binary": (b"\x01\x02\x03", None),
    # These two break the WebSocket itself: over the 1 MiB frame limit, and a text frame that
    # is not UTF-8. The fork server closes (1009 / 1007).
    "oversize": (b"\x00" * ((1 << 20) + 4096), None),
    "bad_utf8": (b'{"type":"clear"}\xff\xfe', True),
}
TRANSPORT_BREAKING = frozenset({"oversize", "bad_utf8"})


@dataclass(frozen=True, slots=True)
class ChaosOptions(ScriptOptions):
    drop_after_ms: int = 0
    drop_how: str = "abort"  # abort | close | hang
    drop_legs: int = 1
    hang_ms: int = 8000
    refuse_resumed: bool = False
    stall_after_ms: int = 0
    stall_ms: int = 0
    read_speed: float = 0.0
    garbage: tuple[str, ...] = ()
    garbage_repeat: int = 1
    garbage_legs: int = 0  # only the first n connections of a call send it; 0: every one
    odd_chunks: bool = False
    flood_s: float = 0.0
    flood_frame_bytes: int = 65536

    def __post_init__(self) -> None:
        ScriptOptions.__post_init__(self)
        if self.drop_how not in ("abort", "close", "hang"):
            raise ValueError(f"drop_how must be abort, close or hang, got {self.drop_how!r}")
        unknown = sorted(set(self.garbage) - GARBAGE.keys())
        if unknown:
            raise ValueError(f"unknown garbage kinds {unknown}; known: {sorted(GARBAGE)}")
        if min(self.drop_after_ms, self.drop_legs, self.stall_after_ms, self.stall_ms, self.garbage_repeat,
               self.read_speed) < 0:
            raise ValueError("chaos counts and times must be >= 0")
        if not 2 <= self.flood_frame_bytes <= 1 << 20 or self.flood_frame_bytes % 2:
            raise ValueError("flood_frame_bytes must be even, 2..1 MiB")


@dataclass(slots=True)
class _Shared:
    pcm: bytes
    legs: dict[str, int]  # call uuid -> connections seen


class _OddIO:
    """Wraps a CallIO so every audio message goes out as two pieces split at an odd byte."""

    def __init__(self, io: CallIO) -> None:
        self._io = io

    def __getattr__(self, name: str) -> Any:
        return getattr(self._io, name)

    async def send_audio(self, pcm: bytes) -> bool:
        cut = min(len(pcm) - 1, (len(pcm) // 3) | 1)
        if cut <= 0:
            return await self._io.send_audio(pcm)
        return await self._io.send_audio(pcm[:cut]) and await self._io.send_audio(pcm[cut:])


class ChaosBehaviour(ScriptBehaviour):
    options_type = ChaosOptions

    def __init__(self, io: CallIO, options: ModeOptions, shared: Any) -> None:
        opts = options if isinstance(options, ChaosOptions) else ChaosOptions()
        super().__init__(_OddIO(io) if opts.odd_chunks else io, opts, shared.pcm)
        self.chaos = opts
        self.raw_io = io
        self._shared: _Shared = shared
        self.leg = 0
        self.hung = False
        self._stall_at: float | None = None
        self._stall_until = 0.0

    @classmethod
    def prepare(cls, options: ModeOptions) -> _Shared:
        return _Shared(ScriptBehaviour.prepare(options), {})

    async def on_event(self, event: p.ForkEvent) -> None:
        opts = self.chaos
        if self.hung:
            # Reads nothing more. Its own socket is paused, so it would never see the fork
            # server's reset either: after hang_ms it gives up too (testbed cleanup).
            try:
                async with asyncio.timeout(opts.hang_ms / 1000):
                    await self.raw_io.ws.wait_closed()
            except TimeoutError:
                self.raw_io.ws.transport.abort()
            return
        if isinstance(event, p.Start):
            self.leg = self._shared.legs.get(event.uuid, 0) + 1
            self._shared.legs[event.uuid] = self.leg
            if opts.refuse_resumed and event.resumed:
                self.raw_io.log.info("chaos: refusing the resumed leg")
                await self.raw_io.ws.close(1011, "chaos: no resume")
                return
            if opts.drop_after_ms and self.leg <= opts.drop_legs:
                self.raw_io.spawn(self._drop(), "chaos-drop")
            if opts.stall_ms:
                self._stall_at = time.monotonic() + opts.stall_after_ms / 1000
            junk = opts.garbage if not opts.garbage_legs or self.leg <= opts.garbage_legs else ()
            for kind in junk:
                frame, text = GARBAGE[kind]
                for _ in range(opts.garbage_repeat):
                    if not await self.raw_io.send_raw(frame, text=text):
                        return
        elif isinstance(event, p.CallerAudio) and self._stall_at is not None and time.monotonic() >= self._stall_at:
            now = time.monotonic()
            if not self._stall_until:
                self._stall_until = now + opts.stall_ms / 1000
                self.raw_io.log.info("chaos: reading at %.2fx for %d ms", opts.read_speed, opts.stall_ms)
            if now >= self._stall_until:
                self._stall_at = None
            elif opts.read_speed <= 0:
                await asyncio.sleep(self._stall_until - now)
            else:
                await asyncio.sleep(min(0.02 / opts.read_speed, self._stall_until - now))
        await super().on_event(event)

    async def _drop(self) -> None:
        opts, io = self.chaos, self.raw_io
        await asyncio.sleep(opts.drop_after_ms / 1000)
        io.log.info("chaos: dropping the connection (%s)", opts.drop_how)
        if self._task is not None:
            self._task.cancel()
        if opts.drop_how == "abort":
            io.ws.transport.abort()
        elif opts.drop_how == "close":
            await io.ws.close(1011, "chaos: dropped")
        else:
            self.hung = True

    async def _speak(self) -> None:
        if self.chaos.flood_s <= 0:
            await super()._speak()
            return
        opts, io = self.chaos, self.io
        await asyncio.sleep(opts.answer_delay_ms / 1000)
        src = self.pcm
        if opts.rate != RATE and not await io.send_text(p.audio_format(opts.rate)):
            return
        total = int(opts.flood_s * opts.rate) * 2
        frame, at, sent = opts.flood_frame_bytes, 0, 0
        self.speaking = True
        while sent < total:
            piece = bytearray()
            while len(piece) < min(frame, total - sent):
                take = src[at : at + min(frame, total - sent) - len(piece)]
                piece += take
                at = (at + len(take)) % len(src)
            if not await io.send_audio(bytes(piece)):
                return
            sent += len(piece)
        if await io.send_text(p.mark("end")):
            self.finished = True


def _register() -> None:
    MODES.setdefault("chaos", ChaosBehaviour)


_register()
