"""Stream playback: TTS as binary frames over the fork socket, for the jambonz mod_audio_fork.

Everything here follows what that module did on a real 1.10.12 (measured 2026-12-06; the
report's sections in brackets), not its documentation:

* The audio is s16le at the channel's own rate (bit-exact at 8000 on G.711; any other rate is
  resampled at low quality and breaks marks) [Q2].
* It is released in batches, 160 ms the first time per fork, then 80 ms; a tail shorter than a
  batch waits for more audio, with no timer. So messages are whole 80 ms (the fork's first one
  160 ms), an utterance starts once one release is buffered (160 ms for the fork's first, then
  80: a connector faster than real time stays ahead from there; sent at exactly real time the
  module left holes), and ends with 80 ms of zeros that push the tail out [Q2].
* Its mark is the only "heard" notice: a ``-1`` sample while a mark is pending is taken for the
  mark's own marker and fires it early, so every ``-1`` becomes ``0``; at most 30 are pending
  (later ones are dropped silently); names are not escaped, so ours are ``[a-z][a-z0-9]*`` and the
  connector's names map onto them [Q4].
* ``killAudio`` drops what is held (last audio 0-8 ms after it), but audio sent right after it is
  lost: a fence mark follows it, and audio waits until the fence comes back. Marks that were
  pending with audio sent after them stay behind in the module and swallow as many later marks:
  the next audio starts with that many ``-1`` samples, each taking one stale marker [Q3, Q4].
* No PLAYBACK_* or other event: progress marks every ``progress_ms`` of audio say what has been
  heard, and bound how far ahead of the caller we send (the module's buffer has no limit) [Q2].
* A probe mark at the start: no reply means the audio would never play (the drachtio module, or
  the start without its bidirectional arguments), and the call falls back to files [Q1].
* An utterance ends (padded, zeros, end mark) only after ``tts_idle_flush_s`` with no TTS, at
  least 250 ms: an end pad is 80 ms of silence, so ending at the file path's 60 ms put 120 ms of
  silence after every chunk of a connector sending 100 ms every 83 ms (1.2x real time; measured:
  308 silent packets inside 5 s of speech). What waits is our sub-message tail, not the module's.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .. import audio_fork
from ..dialects import messages as msg
from ..actions import ArmTimer, SendAudioToFork, SendToConnector, SendToFork
from ..errors import LocalUsageError
from ..pcm import StreamResampler
from .core import CONNECTOR_RATE, TTS_IDLE

__all__ = ["StreamPlayback", "PROBE_TIMER", "STREAM_WATCHDOG"]

PROBE_TIMER = "stream_probe"
STREAM_WATCHDOG = "stream_watchdog"
_PROBE_S = 0.5  # the probe came back within 5.7 ms when the audio would play [Q1]
_MAX_MODULE_MARKS = 28  # the module keeps 30; two are left for the fence and the end
_WATCHDOG_SLACK_S = 2.0
_MIN_IDLE_S = 0.25


@dataclass(slots=True)
class _Mark:
    name: str  # ours, sent to the module
    kind: str  # probe | mark | progress | end | fence
    connector: list[str] = field(default_factory=list)  # the connector's marks it reports
    at_ms: int = 0  # audio sent before it
    audio_after: bool = False  # audio was sent after it (for the drain after a killAudio)


class StreamPlayback:
    """The TTS path of one call over the jambonz module's stream (the same methods as
    :class:`~fork_server.playback.core.Playback` that the session uses).

    What is to be sent waits in ``_out``, in stream order: audio (at the write rate) and marks,
    each mark after the audio it follows; ``_pump`` moves it to the module as the rules above allow.
    """

    def __init__(
        self,
        uuid: str,
        *,
        message_ms: int = 80,
        first_ms: int = 160,
        progress_ms: int = 2000,
        max_ahead_ms: int = 50_000,
        max_buffer_ms: int = 120_000,
        tts_idle_flush_s: float = 0.06,
    ) -> None:
        for name, value in (("message_ms", message_ms), ("first_ms", first_ms), ("progress_ms", progress_ms)):
            if not isinstance(value, int) or value <= 0 or value % 20:
                raise LocalUsageError(f"{name} must be a positive multiple of 20 ms, got {value!r}")
        self.uuid = uuid
        self.message_ms, self.first_ms, self.progress_ms = message_ms, first_ms, progress_ms
        self.max_ahead_ms, self.max_buffer_ms = max_ahead_ms, max_buffer_ms
        self.tts_idle_flush_s = max(tts_idle_flush_s, _MIN_IDLE_S)
        self.write_rate = 0
        self._tts_rate = CONNECTOR_RATE
        self._down: StreamResampler | None = None
        self._out: deque[bytearray | _Mark] = deque()  # not sent yet, in stream order
        self._buffered = 0  # audio bytes in _out
        self._pending: deque[_Mark] = deque()  # at the module, in stream order
        self._seq = 0
        self._fork_first = True
        self._speaking = False  # audio sent since the last end pad
        self._held = False  # after a killAudio, until its fence comes back
        self._drain = 0  # -1 samples to lead the next audio with
        self._since_progress = 0
        self.sent_ms = 0
        self.played_ms = 0  # by the last progress, end or connector mark played
        self.probe = "none"  # none | pending | ok | failed
        self.tts_bytes = 0
        self.segments_played = 0  # messages sent (there are no files)
        self.marks_played = 0
        self.marks_cleared = 0
        self.errors: dict[str, int] = {}
        self.queue: tuple[()] = ()  # no files

    # ------------------------------------------------------------------ set-up and state

    def begin(self, write_rate: int) -> list[Any]:
        """The channel's rate is known: probe the module (its reply says the audio will play)."""
        self.write_rate = write_rate
        self.probe = "pending"
        return [self._send_mark(_Mark(self._name("p"), "probe")), ArmTimer(PROBE_TIMER, _PROBE_S)]

    @property
    def ready(self) -> bool:
        return self.write_rate > 0 and self.probe != "failed"

    @property
    def failed(self) -> bool:
        """The module never answered the probe: this call's audio must go another way."""
        return self.probe == "failed"

    @property
    def idle(self) -> bool:
        return not self._out and not any(m.kind in ("mark", "end", "fence") for m in self._pending)

    def last_item(self) -> Any:
        return self if not self.idle else None

    def take_unsent(self) -> tuple[bytes, list[str]]:
        """What never went out: its audio (at the write rate) and its marks' names, for the file
        path once the probe failed."""
        audio = b"".join(bytes(x) for x in self._out if not isinstance(x, _Mark))
        names = [n for x in self._out if isinstance(x, _Mark) for n in x.connector]
        self._out.clear()
        self._buffered = 0
        return audio, names

    def _count(self, kind: str) -> None:
        self.errors[kind] = self.errors.get(kind, 0) + 1

    def _name(self, prefix: str) -> str:
        self._seq += 1
        return f"{prefix}{self._seq}"

    # ------------------------------------------------------------------ from the connector

    def tts(self, ev: msg.TtsAudio) -> list[Any]:
        if not self.write_rate:
            return []
        if ev.sample_rate != self._tts_rate or self._down is None:
            self._flush_resampler()
            self._tts_rate = ev.sample_rate
            self._down = StreamResampler(ev.sample_rate, self.write_rate)
        self.tts_bytes += len(ev.pcm)
        self._add_audio(self._down.process(ev.pcm))
        return self._pump() + [ArmTimer(TTS_IDLE, self.tts_idle_flush_s)]

    def audio_format(self, ev: msg.AudioFormat) -> list[Any]:
        self._flush_resampler()
        self._tts_rate = ev.sample_rate
        self._down = StreamResampler(ev.sample_rate, self.write_rate) if self.write_rate else None
        return self._pump()

    def mark(self, name: str) -> list[Any]:
        if not self._out and not self._speaking and not any(m.kind in ("mark", "end") for m in self._pending):
            self.marks_played += 1  # nothing of the connector's audio is left to play
            return [SendToConnector(msg.MarkDone(name, "played"))]
        last = self._out[-1] if self._out else None
        if isinstance(last, _Mark) and last.kind == "mark":
            last.connector.append(name)  # nothing between them: one module mark for both
        else:
            self._out.append(_Mark("", "mark", [name]))
        return self._pump()

    def flush(self) -> list[Any]:
        """End of speech: the audio goes out padded to whole messages, then 80 ms of zeros (the
        module holds a shorter tail back), then an end mark that says it has all played."""
        self._flush_resampler()
        if self._speaking or self._buffered:
            self._out.append(_Mark("", "end"))
        return self._pump(force=True)

    def drop(self) -> list[Any]:
        """Barge-in: killAudio, then a fence; what was pending is reported cleared now."""
        if self._down is not None:
            self._down.reset()
        names = [n for x in self._out if isinstance(x, _Mark) for n in x.connector]
        names += [n for m in self._pending for n in m.connector]
        self._out.clear()
        self._buffered = 0
        self._speaking = False
        acts: list[Any] = []
        audible = [m for m in self._pending if m.kind in ("mark", "progress", "end")]
        if audible or self.sent_ms > self.played_ms:
            self._drain += sum(1 for m in audible if m.audio_after)
            self._pending = deque(m for m in self._pending if m.kind in ("probe", "fence"))
            acts.append(SendToFork(audio_fork.kill_audio()))
            acts.append(self._send_mark(_Mark(self._name("k"), "fence")))
            self._held = True
            self.played_ms = self.sent_ms  # nothing sent before the kill will be heard any more
        self.marks_cleared += len(names)
        return acts + [SendToConnector(msg.MarkDone(n, "cleared")) for n in names]

    def finish(self) -> list[Any]:
        self.marks_cleared += sum(len(x.connector) for x in (*self._out, *self._pending) if isinstance(x, _Mark))
        self._out.clear()
        self._pending.clear()
        self._buffered = 0
        return []

    # ------------------------------------------------------------------ from the module

    def module_mark(self, ev: audio_fork.ModuleMark) -> list[Any]:
        if not any(m.name == ev.name for m in self._pending):
            return []  # a mark of a killed stream, or not ours
        acts: list[Any] = []
        while self._pending:  # the module plays in order: everything before it is done too
            m = self._pending.popleft()
            played = ev.event == "playout"
            if m.kind == "probe":
                self.probe = "ok"
            elif m.kind == "fence":
                self._held = False
            elif played:
                self.played_ms = max(self.played_ms, m.at_ms)
            status = "played" if played else "cleared"
            if played:
                self.marks_played += len(m.connector)
            else:
                self.marks_cleared += len(m.connector)
            acts += [SendToConnector(msg.MarkDone(n, status)) for n in m.connector]
            if m.name == ev.name:
                break
        return acts + self._pump()

    def timer(self, name: str) -> list[Any]:
        if name == PROBE_TIMER and self.probe == "pending":
            self.probe = "failed"
            self._count("stream_not_playing")
            return []
        if name == TTS_IDLE:
            return self.flush()
        if name == STREAM_WATCHDOG and self._pending:
            # The module's marks stopped coming (it never reports else): take them as played
            # rather than wait for ever (a hangup after playback, the connector's marks).
            self._count("playback_events_lost")
            return self.module_mark(audio_fork.ModuleMark(self._pending[-1].name, "playout"))
        return []

    def needs_watchdog(self, event: Any, actions: list[Any]) -> bool:
        return bool(self._pending) and (
            type(event) is audio_fork.ModuleMark or any(type(a) is SendAudioToFork for a in actions))

    def watchdog(self) -> ArmTimer:
        return ArmTimer(STREAM_WATCHDOG, max(0, self.sent_ms - self.played_ms) / 1000 + _WATCHDOG_SLACK_S)

    # ------------------------------------------------------------------ internals

    def _bytes(self, ms: int) -> int:
        return self.write_rate * ms // 1000 * 2

    def _add_audio(self, pcm: bytes) -> None:
        if not pcm:
            return
        pcm = _no_minus_one(pcm)
        last = self._out[-1] if self._out else None
        if isinstance(last, bytearray):
            last += pcm
        else:
            self._out.append(bytearray(pcm))
        self._buffered += len(pcm)
        over = self._buffered - self._bytes(self.max_buffer_ms)
        if over > 0:  # a flood: the oldest unsent audio goes, counted
            self._count("stream_buffer_full")
            while over > 0 and self._out:
                head = self._out[0]
                if isinstance(head, _Mark):
                    break
                cut = min(len(head), over + over % 2)
                del head[:cut]
                self._buffered -= cut
                over -= cut
                if not head:
                    self._out.popleft()

    def _flush_resampler(self) -> None:
        if self._down is not None and self.write_rate:
            self._add_audio(self._down.flush())

    def _pump(self, force: bool = False) -> list[Any]:
        """Move what the rules allow from ``_out`` to the module: whole messages once an utterance
        has started (at ``first_ms`` buffered); a shorter piece only before a mark, and padded to a
        whole message before an end (with the 80 ms of zeros after it)."""
        acts: list[Any] = []
        while self._out and self.probe == "ok" and not self._held:
            head = self._out[0]
            if isinstance(head, _Mark):
                if head.kind == "end":
                    if self._speaking:
                        acts.append(self._audio(bytes(self._bytes(self.message_ms))))
                        head.name, head.at_ms = self._name("e"), self.sent_ms
                        acts.append(self._send_mark(head))
                    self._speaking = False
                elif len(self._pending) >= _MAX_MODULE_MARKS:
                    break  # the module drops marks past 30: this one waits for room
                else:
                    head.name, head.at_ms = self._name("m"), self.sent_ms
                    acts.append(self._send_mark(head))
                self._out.popleft()
                continue
            if self.sent_ms - self.played_ms >= self.max_ahead_ms:
                break  # far ahead of the caller: the rest waits here (bounded) for progress marks
            before_mark = len(self._out) > 1
            msg = self._bytes(self.first_ms if self._fork_first else self.message_ms)
            start = self.first_ms if self._fork_first else self.message_ms
            if not self._speaking and not before_mark and not force and self._buffered < self._bytes(start):
                break  # an utterance starts with a whole release of the module (160 ms, then 80)
            if len(head) >= msg:
                take = msg
            elif before_mark or force:
                take = len(head)
            else:
                break
            chunk = bytes(head[:take])
            del head[:take]
            self._buffered -= take
            if not head:
                self._out.popleft()
            last = not self._out or isinstance(self._out[0], _Mark) and self._out[0].kind == "end"
            if (self._fork_first or (force and last)) and len(chunk) < msg:
                chunk = chunk.ljust(msg, b"\0")  # the first release, and an end, are whole messages
            self._fork_first = False
            acts.append(self._audio(chunk))
            if self._since_progress >= self.progress_ms and len(self._pending) < _MAX_MODULE_MARKS:
                acts.append(self._send_mark(_Mark(self._name("g"), "progress", at_ms=self.sent_ms)))
        return acts

    def _audio(self, pcm: bytes) -> SendAudioToFork:
        if self._drain:
            # Stale markers of a killed stream take one -1 sample each (they are dropped).
            pcm = b"\xff\xff" * self._drain + pcm
            self._drain = 0
        self._speaking = True
        for m in self._pending:
            m.audio_after = True
        ms = len(pcm) * 1000 // (2 * self.write_rate)
        self.sent_ms += ms
        self.segments_played += 1
        self._since_progress += ms
        return SendAudioToFork(pcm)

    def _send_mark(self, mark: _Mark) -> SendToFork:
        self._pending.append(mark)
        if mark.kind in ("progress", "end"):
            self._since_progress = 0
        return SendToFork(audio_fork.stream_mark(mark.name))


def _no_minus_one(pcm: bytes) -> bytes:
    """The module takes a -1 sample for its mark marker while a mark is pending [Q4]."""
    if not pcm:
        return pcm
    a = np.frombuffer(pcm, "<i2")
    if not (a == -1).any():
        return pcm
    b = a.copy()
    b[b == -1] = 0
    return b.tobytes()
