"""What the reference connector saw and did on one connection (one call, or one resumed leg).

A :class:`CallRecord` is written by the server adapter and read by tests. Times are
``time.monotonic()`` seconds. Tests wait on it with :meth:`CallRecord.wait_until` or
:meth:`CallRecord.wait_stopped` instead of sleeping.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any, Callable

__all__ = ["AudioFrame", "CallRecord", "DtmfEvent", "MarkEvent", "Sent", "VadEvent"]


@dataclass(frozen=True, slots=True)
class AudioFrame:
    t: float
    pcm: bytes = field(repr=False)


@dataclass(frozen=True, slots=True)
class DtmfEvent:
    t: float
    digit: str
    duration_ms: int


@dataclass(frozen=True, slots=True)
class MarkEvent:
    t: float
    name: str
    status: str


@dataclass(frozen=True, slots=True)
class Sent:
    """One message we sent: ``kind`` is ``"audio"`` (``nbytes``) or the JSON ``type`` (``message``)."""

    t: float
    kind: str
    message: dict[str, Any] | None = None
    nbytes: int = 0


@dataclass(frozen=True, slots=True)
class VadEvent:
    t: float
    kind: str  # "speech_started" | "speech_ended"
    stream_ms: float  # where in the caller stream the speech started/ended


@dataclass(eq=False)
class CallRecord:
    """Everything about one connection. Mutable: the server appends as things happen."""

    index: int  # order of acceptance on this server, from 0
    path: str
    subprotocol: str | None
    headers: dict[str, str]  # request headers; Authorization is redacted
    connected_at: float
    store_audio: bool = True

    start: dict[str, Any] | None = None
    start_at: float | None = None
    uuid: str | None = None
    offset_ms: int = 0  # the start's audio.offset_ms: this leg's first frame on the call's timeline

    frames: list[AudioFrame] = field(default_factory=list)  # empty when store_audio is False
    frame_count: int = 0
    replayed_frames: int = 0  # frames a resumed leg got that an earlier leg had already had
    audio_bytes: int = 0
    bad_frames: int = 0  # binary frames that were not exactly 640 bytes
    first_audio_at: float | None = None
    last_audio_at: float | None = None

    dtmf: list[DtmfEvent] = field(default_factory=list)
    marks: list[MarkEvent] = field(default_factory=list)  # reports from the fork server
    vad: list[VadEvent] = field(default_factory=list)
    violations: list[str] = field(default_factory=list)

    sent: list[Sent] = field(default_factory=list)  # timeline; audio entries only when store_audio
    tts_bytes_sent: int = 0
    tts_messages_sent: int = 0
    clears_sent: list[float] = field(default_factory=list)

    stop_reason: str | None = None
    stop_recording: str | None = None  # the stop message's recording path
    stop_at: float | None = None
    close_code: int | None = None
    close_reason: str | None = None
    closed_at: float | None = None
    error: str | None = None  # an exception in our own behaviour (a bug in the testbed)

    _changed: asyncio.Event | None = field(default=None, repr=False)

    # -- reading helpers
    def frame_span(self) -> range:
        """The caller frames this leg received, as indices on the call's timeline (from offset_ms)."""
        first = self.offset_ms // 20
        return range(first, first + self.frame_count)

    def audio(self) -> bytes:
        """All caller audio received, joined (needs ``store_audio``)."""
        return b"".join(f.pcm for f in self.frames)

    def mark_status(self, name: str) -> str | None:
        for m in self.marks:
            if m.name == name:
                return m.status
        return None

    def sent_of(self, kind: str) -> list[Sent]:
        return [s for s in self.sent if s.kind == kind]

    @property
    def closed(self) -> bool:
        return self.closed_at is not None

    # -- waiting
    def touch(self) -> None:
        """Wake waiters; the server calls this after each change."""
        ev = self._changed
        if ev is not None:
            self._changed = None
            ev.set()

    async def wait_until(self, predicate: Callable[["CallRecord"], bool], timeout: float = 5.0) -> "CallRecord":
        """Return once ``predicate(self)`` holds; raise TimeoutError after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while not predicate(self):
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"call {self.uuid or self.index}: condition not met within {timeout} s")
            if self._changed is None:
                self._changed = asyncio.Event()
            try:
                async with asyncio.timeout(left):
                    await self._changed.wait()
            except TimeoutError:
                pass
        return self

    async def wait_stopped(self, timeout: float = 5.0) -> "CallRecord":
        """Wait until the connection is closed (after ``stop``, or a drop); everything is recorded then."""
        return await self.wait_until(lambda r: r.closed, timeout)

    async def wait_mark(self, name: str, timeout: float = 5.0) -> MarkEvent:
        await self.wait_until(lambda r: r.mark_status(name) is not None, timeout)
        return next(m for m in self.marks if m.name == name)
