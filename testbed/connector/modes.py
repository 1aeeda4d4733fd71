"""What the reference connector does on a call: ``echo``, ``script`` or ``sink``.

A mode is an options dataclass plus a behaviour class. The server adapter feeds each validated
event to ``await behaviour.on_event(event)`` and gives the behaviour a :class:`CallIO` to send
with and to start tasks in (the call's TaskGroup, cancelled when the connection ends).

* ``echo``   — energy VAD on the caller audio; at the end of each utterance it sends back what it
  heard as TTS at 16 kHz (bursts faster than real time), then a mark ``echo-<n>``.
* ``script`` — after ``answer_delay_ms`` (or after the caller's first utterance) it streams a WAV
  as TTS, declaring ``audio_format`` when the rate is not 16 kHz, with marks ``seg-<n>`` every
  ``mark_every_ms`` of audio and ``end`` at the end; then optional ``send_dtmf`` and ``transfer``
  or ``hangup``. Barge-in: caller speech while it is speaking (until ``end`` is reported) makes it
  send ``clear`` and stop streaming.
* ``sink``   — counts what arrives; optionally speaks bursts with a duty cycle and now and then
  cuts one short with ``clear`` (benchmark load).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Coroutine, Protocol

from testbed import speech

from . import protocol as p
from .recording import CallRecord, VadEvent
from .vad import EnergyVad, SpeechEnded, SpeechStarted

__all__ = [
    "MODES",
    "Behaviour",
    "CallIO",
    "EchoBehaviour",
    "EchoOptions",
    "ModeOptions",
    "ScriptBehaviour",
    "ScriptOptions",
    "SinkBehaviour",
    "SinkOptions",
    "make_options",
]

RATE = 16000  # caller audio, and TTS unless audio_format says otherwise


class CallIO(Protocol):
    """What the server adapter gives a behaviour."""

    record: CallRecord
    log: logging.LoggerAdapter

    async def send_text(self, text: str) -> bool: ...  # False when the connection is gone
    async def send_audio(self, pcm: bytes) -> bool: ...
    def spawn(self, coro: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None]: ...


# --- options ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ModeOptions:
    chunk_ms: int = 100  # TTS message length
    speed: float = 3.0  # TTS sent this many times faster than real time (inf: no pacing)
    vad_threshold_dbfs: float = -40.0
    vad_hangover_ms: int = 400
    vad_onset_ms: int = 40

    def __post_init__(self) -> None:
        if not 10 <= self.chunk_ms <= 5000:
            raise ValueError(f"chunk_ms must be 10..5000, got {self.chunk_ms}")
        if not self.speed > 0:
            raise ValueError(f"speed must be > 0, got {self.speed}")

    def vad(self) -> EnergyVad:
        return EnergyVad(
            threshold_dbfs=self.vad_threshold_dbfs,
            hangover_ms=self.vad_hangover_ms,
            onset_ms=self.vad_onset_ms,
            rate=RATE,
        )


@dataclass(frozen=True, slots=True)
class EchoOptions(ModeOptions):
    max_utterance_ms: int = 30_000  # longer speech is cut (bounded memory)
    preroll_ms: int = 100  # audio kept from before the onset was confirmed
    tail_ms: int = 100  # silence kept after the last loud frame


@dataclass(frozen=True, slots=True)
class ScriptOptions(ModeOptions):
    wav: str | None = None  # default: tests/data/bot_answer.wav
    rate: int = 24000  # rate the WAV is streamed at (audio_format sent unless 16000)
    answer_delay_ms: int = 200
    mark_every_ms: int = 1000  # a mark seg-<n> after each this much audio; 0: only "end"
    hangup_after_playback: bool = False
    transfer_to: str | None = None
    send_dtmf: str | None = None
    bargein: bool = True
    speak_after_first_utterance: bool = False

    def __post_init__(self) -> None:
        ModeOptions.__post_init__(self)
        if not 8000 <= self.rate <= 48000:
            raise ValueError(f"rate must be 8000..48000, got {self.rate}")
        if self.answer_delay_ms < 0 or self.mark_every_ms < 0:
            raise ValueError("answer_delay_ms and mark_every_ms must be >= 0")
        if self.hangup_after_playback and self.transfer_to is not None:
            raise ValueError("choose hangup_after_playback or transfer_to, not both")
        if self.transfer_to is not None:
            p.transfer(self.transfer_to)  # raises ValueError when malformed
        if self.send_dtmf is not None:
            p.send_dtmf(self.send_dtmf)

    @property
    def wav_path(self) -> Path:
        return Path(self.wav) if self.wav else speech.BOT_ANSWER


@dataclass(frozen=True, slots=True)
class SinkOptions(ModeOptions):
    speed: float = 1.5
    tts_duty: float = 0.0  # share of each period the bot speaks; 0: never
    tts_burst_ms: int = 2000
    clear_every: int = 0  # every n-th burst is cut halfway by a clear; 0: never
    wav: str | None = None  # source of the bursts (looped), default tests/data/bot_answer.wav

    def __post_init__(self) -> None:
        ModeOptions.__post_init__(self)
        if not 0.0 <= self.tts_duty <= 1.0:
            raise ValueError(f"tts_duty must be 0..1, got {self.tts_duty}")
        if self.tts_burst_ms < self.chunk_ms:
            raise ValueError("tts_burst_ms must be at least chunk_ms")
        if self.clear_every < 0:
            raise ValueError("clear_every must be >= 0")


# --- shared helpers --------------------------------------------------------------------------


async def _stream(io: CallIO, pcm: bytes, rate: int, opts: ModeOptions, *, t0: float | None = None,
                  offset_ms: float = 0.0) -> bool:
    """Send ``pcm`` in ``chunk_ms`` messages paced at ``speed``× real time; False if the link is gone.

    Each message leaves when the audio before it, played ``speed`` times faster from ``t0``
    (default: now), would have ended; pacing against ``t0`` keeps sleeps from adding up drift.
    """
    chunk = rate * opts.chunk_ms // 1000 * 2
    t0 = time.monotonic() if t0 is None else t0
    sent_ms = offset_ms
    for at in range(0, len(pcm), chunk):
        delay = t0 + sent_ms / 1000 / opts.speed - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        piece = pcm[at : at + chunk]
        if not await io.send_audio(piece):
            return False
        sent_ms += len(piece) / 2 / rate * 1000
    return True


class Behaviour:
    """Base: one instance per connection."""

    options_type: type[ModeOptions] = ModeOptions
    store_audio = True

    def __init__(self, io: CallIO, options: ModeOptions, shared: Any) -> None:
        self.io = io
        self.options = options
        self.shared = shared

    @classmethod
    def prepare(cls, options: ModeOptions) -> Any:
        """Load what every call of this mode shares (done once per server)."""
        return None

    async def on_event(self, event: p.ForkEvent) -> None:
        return None

    def _note_vad(self, decision: SpeechStarted | SpeechEnded) -> None:
        now = time.monotonic()
        if isinstance(decision, SpeechStarted):
            self.io.record.vad.append(VadEvent(now, "speech_started", decision.start_ms))
            self.io.log.debug("caller speech started at %.0f ms", decision.start_ms)
        else:
            self.io.record.vad.append(VadEvent(now, "speech_ended", decision.end_ms))
            self.io.log.debug("caller speech ended at %.0f ms (%.0f ms long)", decision.end_ms, decision.duration_ms)


# --- echo ------------------------------------------------------------------------------------


class EchoBehaviour(Behaviour):
    options_type = EchoOptions

    def __init__(self, io: CallIO, options: ModeOptions, shared: Any) -> None:
        super().__init__(io, options, shared)
        opts = self.opts = options if isinstance(options, EchoOptions) else EchoOptions()
        self.vad = opts.vad()
        keep = max(1, (opts.vad_onset_ms + opts.preroll_ms) // 20 + 1)
        self._history: deque[tuple[float, bytes]] = deque(maxlen=keep)  # (stream ms, frame)
        self._utterance: list[tuple[float, bytes]] | None = None
        self._utterance_bytes = 0
        self._n = 0
        self._lock = asyncio.Lock()

    async def on_event(self, event: p.ForkEvent) -> None:
        if not isinstance(event, p.CallerAudio):
            return
        begin = self.vad.position_ms
        decision = self.vad.process(event.pcm)
        item = (begin, event.pcm)
        self._history.append(item)
        if isinstance(decision, SpeechStarted):
            self._note_vad(decision)
            keep_from = decision.start_ms - self.opts.preroll_ms
            self._utterance = [h for h in self._history if h[0] >= keep_from]
            self._utterance_bytes = sum(len(h[1]) for h in self._utterance)
            return
        if self._utterance is not None and self._utterance_bytes < self.opts.max_utterance_ms * RATE // 500:
            self._utterance.append(item)
            self._utterance_bytes += len(event.pcm)
        if isinstance(decision, SpeechEnded) and self._utterance is not None:
            self._note_vad(decision)
            stop_ms = decision.end_ms + self.opts.tail_ms
            pcm = b"".join(pcm for at, pcm in self._utterance if at < stop_ms)
            self._utterance = None
            self._n += 1
            self.io.spawn(self._play(pcm, self._n), f"echo-{self._n}")

    async def _play(self, pcm: bytes, n: int) -> None:
        async with self._lock:  # utterances are echoed one after another, never interleaved
            self.io.log.info("echoing %d ms", len(pcm) // 32)
            if await _stream(self.io, pcm, RATE, self.opts):
                await self.io.send_text(p.mark(f"echo-{n}"))


# --- script ----------------------------------------------------------------------------------


class ScriptBehaviour(Behaviour):
    options_type = ScriptOptions

    def __init__(self, io: CallIO, options: ModeOptions, shared: Any) -> None:
        super().__init__(io, options, shared)
        self.opts = options if isinstance(options, ScriptOptions) else ScriptOptions()
        self.pcm: bytes = shared
        self.vad = self.opts.vad()
        self.speaking = False  # from the first TTS message until "end" is reported
        self.finished = False  # everything streamed and "end" sent
        self.barged_in_at: float | None = None
        self._task: asyncio.Task[None] | None = None
        self._utterances = 0

    @classmethod
    def prepare(cls, options: ModeOptions) -> bytes:
        opts = options if isinstance(options, ScriptOptions) else ScriptOptions()
        return speech.load_wav(opts.wav_path, opts.rate)

    async def on_event(self, event: p.ForkEvent) -> None:
        if isinstance(event, p.CallerAudio):
            decision = self.vad.process(event.pcm)
            if decision is None:
                return
            self._note_vad(decision)
            if isinstance(decision, SpeechStarted):
                if self.opts.bargein and self.speaking:
                    await self._barge_in()
            else:
                self._utterances += 1
                if self._utterances == 1 and self.opts.speak_after_first_utterance and self._task is None:
                    self._task = self.io.spawn(self._speak(), "script-speak")
        elif isinstance(event, p.Start):
            if not self.opts.speak_after_first_utterance and self._task is None:
                self._task = self.io.spawn(self._speak(), "script-speak")
        elif isinstance(event, p.MarkReport):
            if event.name == "end":
                self.speaking = False
        elif isinstance(event, p.Stop):
            if self._task is not None:
                self._task.cancel()

    async def _barge_in(self) -> None:
        self.speaking = False
        self.barged_in_at = time.monotonic()
        if self._task is not None:
            self._task.cancel()
        self.io.log.info("barge-in: clearing playback")
        await self.io.send_text(p.clear())

    async def _speak(self) -> None:
        opts, io = self.opts, self.io
        await asyncio.sleep(opts.answer_delay_ms / 1000)
        if opts.rate != RATE and not await io.send_text(p.audio_format(opts.rate)):
            return
        pcm = self.pcm
        seg_bytes = opts.rate * opts.mark_every_ms // 1000 * 2 if opts.mark_every_ms else len(pcm)
        self.speaking = True
        t0 = time.monotonic()
        n = 0
        for at in range(0, len(pcm), max(seg_bytes, 2)):
            segment = pcm[at : at + seg_bytes]
            if not await _stream(io, segment, opts.rate, opts, t0=t0, offset_ms=at / 2 / opts.rate * 1000):
                return
            if at + seg_bytes < len(pcm):
                n += 1
                if not await io.send_text(p.mark(f"seg-{n}")):
                    return
        if not await io.send_text(p.mark("end")):
            return
        self.finished = True
        if opts.send_dtmf:
            await io.send_text(p.send_dtmf(opts.send_dtmf))
        if opts.transfer_to is not None:
            await io.send_text(p.transfer(opts.transfer_to, after_playback=True))
        elif opts.hangup_after_playback:
            await io.send_text(p.hangup(after_playback=True))


# --- sink ------------------------------------------------------------------------------------


class SinkBehaviour(Behaviour):
    options_type = SinkOptions
    store_audio = False

    def __init__(self, io: CallIO, options: ModeOptions, shared: Any) -> None:
        super().__init__(io, options, shared)
        self.opts = options if isinstance(options, SinkOptions) else SinkOptions()
        self.source: bytes = shared

    @classmethod
    def prepare(cls, options: ModeOptions) -> bytes:
        opts = options if isinstance(options, SinkOptions) else SinkOptions()
        if opts.tts_duty <= 0:
            return b""
        return speech.load_wav(Path(opts.wav) if opts.wav else speech.BOT_ANSWER, RATE)

    async def on_event(self, event: p.ForkEvent) -> None:
        if isinstance(event, p.Start) and self.opts.tts_duty > 0 and self.source:
            self.io.spawn(self._bursts(), "sink-bursts")

    async def _bursts(self) -> None:
        opts, io, src = self.opts, self.io, self.source
        burst_bytes = RATE * opts.tts_burst_ms // 1000 * 2
        period_s = opts.tts_burst_ms / 1000 / opts.tts_duty
        at = 0
        n = 0
        t0 = time.monotonic()
        while True:
            n += 1
            burst = bytearray()
            while len(burst) < burst_bytes:  # loop the source
                take = src[at : at + burst_bytes - len(burst)]
                burst += take
                at = (at + len(take)) % len(src)
            cut = opts.clear_every > 0 and n % opts.clear_every == 0
            if cut:
                burst = burst[: len(burst) // 2 & ~1]
            if not await _stream(io, bytes(burst), RATE, opts):
                return
            if not await io.send_text(p.clear() if cut else p.mark(f"burst-{n}")):
                return
            delay = t0 + n * period_s - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)


MODES: dict[str, type[Behaviour]] = {"echo": EchoBehaviour, "script": ScriptBehaviour, "sink": SinkBehaviour}


def make_options(mode: str, **kw: Any) -> ModeOptions:
    """Build the options dataclass of ``mode`` from keywords; unknown keywords raise TypeError."""
    try:
        cls = MODES[mode].options_type
    except KeyError:
        raise ValueError(f"unknown mode {mode!r}; expected one of {sorted(MODES)}") from None
    names = {f.name for f in fields(cls)}
    unknown = sorted(set(kw) - names)
    if unknown:
        raise TypeError(f"mode {mode!r} has no option(s) {', '.join(unknown)}; it has {', '.join(sorted(names))}")
    return cls(**kw)
