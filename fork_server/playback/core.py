"""What the caller hears of the connector's speech: one call's playback core (no I/O).

TTS PCM comes in at the connector's rate; it is resampled once, per stream, to the channel's
write rate (:class:`~fork_server.pcm.StreamResampler`), cut into segments
(:class:`~fork_server.segments.SegmentPlanner`) and handed to the call's transport strategy
(:mod:`.files`, :mod:`.inband`), which says how a segment reaches the switch. The switch's
feedback (PLAYBACK_START/STOP by ``Playback-File-Path`` and ``Playback-Status``, REF "Playback
timing") tells what the caller has heard: it drives marks, file deletion and refilling the
queue ahead. Every method returns the actions to perform, in order.

Marks sit at a byte position of the TTS stream at the write rate. The planner cuts a segment
at a mark's position, rounded up to a whole ptime (REF: a partial ptime is padded with
silence, a hole), so a mark is reported when its own segment's PLAYBACK_STOP comes: at most one
ptime after its audio, never before it and never a whole segment late.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Any, Protocol

from .. import esl_messages as em
from ..dialects import messages as msg
from ..actions import ArmTimer, BreakPlayback, DeleteFile, PlayFile, SendToConnector
from ..errors import LocalUsageError
from ..pcm import StreamResampler
from ..segments import Segment, SegmentPlanner

__all__ = ["Playback", "Item", "Transport", "CONNECTOR_RATE", "WATCHDOG", "TTS_IDLE", "START_LEAD"]

CONNECTOR_RATE = 16000  # what a connector sends until it says otherwise (audio_format)
WATCHDOG = "playback_watchdog"
TTS_IDLE = "tts_idle"
START_LEAD = "start_lead"
_WATCHDOG_SLACK_S = 2.0  # REF: PLAYBACK_START comes 20-40 ms after the command, STOP at the file's end
_WATCHDOG_UNKNOWN_S = 60.0


@dataclass(slots=True)
class Item:
    """One file queued (or about to be) on the channel."""

    path: str | None  # FreeSWITCH's path; None while an inband playAudio awaits its event
    local_path: str | None  # ours to delete; None for fallback prompts and inband files
    ms: int
    size: int
    started: bool = False
    marks: list[str] = field(default_factory=list)
    end_pos: int = 0  # TTS stream position (bytes at the write rate) where this item ends


class Transport(Protocol):
    """How a segment reaches the switch (one small strategy per transport)."""

    name: str
    spooled: bool  # segments are files we write (their bytes count against the spool limit)

    def send(self, playback: "Playback", seg: Segment, end_pos: int) -> list[Any]:
        """Queue ``seg`` (ending at ``end_pos`` of the stream): append its :class:`Item` with
        ``playback.enqueue`` or ``playback.await_file`` and return the actions that play it."""
        ...


class Playback:
    """The TTS path of one call, from the connector's PCM to the switch's playback events."""

    def __init__(
        self,
        uuid: str,
        transport: Transport,
        *,
        command: str = "sendmsg",
        ptime_ms: int = 20,
        first_segment_ms: int = 80,
        segment_ms: int = 400,
        lead_ms: int = 100,
        max_spool_bytes: int = 8 << 20,
        tts_idle_flush_s: float = 0.06,
        start_lead_ms: int = 0,
    ) -> None:
        if command not in ("sendmsg", "uuid_broadcast"):
            raise LocalUsageError(f"unknown playback command {command!r}")
        if not isinstance(start_lead_ms, int) or isinstance(start_lead_ms, bool) or not 0 <= start_lead_ms <= 1000:
            raise LocalUsageError(f"start_lead_ms must be an int in [0, 1000], got {start_lead_ms!r}")
        self.uuid = uuid
        self.transport = transport
        self.command = command
        self.ptime_ms = ptime_ms
        self._planner_args = dict(ptime_ms=ptime_ms, first_segment_ms=first_segment_ms, segment_ms=segment_ms,
                                  lead_ms=lead_ms)
        self.max_spool_bytes = max_spool_bytes
        self.tts_idle_flush_s = tts_idle_flush_s
        self.start_lead_ms = start_lead_ms
        self.write_rate = 0
        self._tts_rate = CONNECTOR_RATE
        self._down: StreamResampler | None = None
        self._planner: SegmentPlanner | None = None
        self.queue: deque[Item] = deque()
        self.awaiting_file: deque[Item] = deque()  # inband: playAudio sent, its event pending
        self._tts_pos = 0  # bytes fed to the planner (resampled TTS)
        self._emitted_pos = 0  # bytes handed out as segments (incl. padding)
        self._pending_marks: list[tuple[int, str]] = []
        self._spool_bytes = 0
        self._tts_idle = False  # the idle timer fired with enough queued: flush when it runs low
        self.tts_bytes = 0
        self.segments_played = 0
        self.marks_played = 0
        self.marks_cleared = 0
        self.errors: dict[str, int] = {}

    # ------------------------------------------------------------------ set-up and state

    def begin(self, write_rate: int) -> list[Any]:
        """The channel's write rate is known (the caller lookup): segments can be made."""
        self.write_rate = write_rate
        self._planner = SegmentPlanner(write_rate, self.command, **self._planner_args)  # type: ignore[arg-type]
        return []

    @property
    def ready(self) -> bool:
        return self._planner is not None

    @property
    def idle(self) -> bool:
        """Nothing queued on the switch, awaited from it or buffered here: a hangup may go now."""
        return not self.queue and not self.awaiting_file and (self._planner is None or self._planner.buffered_ms == 0)

    def _count(self, kind: str) -> None:
        self.errors[kind] = self.errors.get(kind, 0) + 1

    # ------------------------------------------------------------------ from the connector

    def tts(self, ev: msg.TtsAudio) -> list[Any]:
        if self._planner is None:
            return []
        if ev.sample_rate != self._tts_rate or self._down is None:
            acts = self._flush_resampler()
            self._tts_rate = ev.sample_rate
            self._down = StreamResampler(ev.sample_rate, self.write_rate)
        else:
            acts = []
        self._tts_idle = False  # the connector is talking again
        self.tts_bytes += len(ev.pcm)
        pcm = self._down.process(ev.pcm)
        self._tts_pos += len(pcm)
        acts += self._start_lead()
        acts += self._send(self._planner.feed(pcm))
        acts += self._refill()
        acts.append(ArmTimer(TTS_IDLE, self._idle_flush_s()))
        return acts

    def audio_format(self, ev: msg.AudioFormat) -> list[Any]:
        acts = self._flush_resampler()
        self._tts_rate = ev.sample_rate
        self._down = StreamResampler(ev.sample_rate, self.write_rate) if self.write_rate else None
        return acts

    def mark(self, name: str) -> list[Any]:
        # The mark covers everything fed so far. (The FIR's 2.5 ms ring-out is not emitted at a
        # flush, to keep lengths exact, so the position does not add the filter delay.)
        pos = self._tts_pos
        if pos <= self._emitted_pos:
            target = self._item_covering(pos)
            if target is None:
                self.marks_played += 1
                return [SendToConnector(msg.MarkDone(name, "played"))]
            target.marks.append(name)
            return []
        self._pending_marks.append((pos, name))
        if self._planner is not None:
            self._planner.cut_at()
        return self._refill()

    def flush(self) -> list[Any]:
        """End of speech: everything buffered goes out now (padded to a whole ptime)."""
        acts = self._flush_resampler()
        if self._planner is not None:
            acts += self._send(self._planner.flush())
        self._tts_pos = self._emitted_pos  # padding counted; nothing buffered now
        if self._pending_marks:  # all their audio went out just now
            last = self.last_item()
            names = [name for _, name in self._pending_marks]
            self._pending_marks.clear()
            if last is None:
                self.marks_played += len(names)
                acts += [SendToConnector(msg.MarkDone(n, "played")) for n in names]
            else:
                last.marks.extend(names)
        return acts

    def drop(self) -> list[Any]:
        """Barge-in, or the call leaving the connector: stop what plays (``uuid_break all``),
        forget what is queued or buffered, delete its files, report its marks ``cleared``."""
        acts: list[Any] = []
        self._tts_idle = False  # nothing is left to flush
        if self._planner is not None:
            self._planner.clear()
        if self._down is not None:
            self._down.reset()
        items = list(self.queue) + list(self.awaiting_file)
        if any(item.path is not None for item in self.queue):
            acts.append(BreakPlayback(self.uuid))
        marks = [name for _, name in self._pending_marks]
        self._pending_marks.clear()
        self._tts_pos = self._emitted_pos  # the buffered audio is gone
        for item in items:
            marks += item.marks
            acts += self._release(item)
        self.queue.clear()
        self.awaiting_file.clear()
        self.marks_cleared += len(marks)
        acts += [SendToConnector(msg.MarkDone(name, "cleared")) for name in marks]
        return acts

    def finish(self) -> list[Any]:
        """The call is over: delete what is left; its marks count as cleared (no one to tell)."""
        acts: list[Any] = []
        for item in list(self.queue) + list(self.awaiting_file):
            acts += self._release(item)
            self.marks_cleared += len(item.marks)
        self.queue.clear()
        self.awaiting_file.clear()
        return acts

    def prompt(self, path: str) -> list[Any]:
        """A fallback prompt, queued with sendmsg like a segment (its length is unknown here)."""
        self.queue.append(Item(path=path, local_path=None, ms=0, size=0))
        return [PlayFile(self.uuid, path, "sendmsg")]

    # ------------------------------------------------------------------ from the switch

    def started(self, ev: em.PlaybackStarted) -> list[Any]:
        i = self._find(ev.path)
        if i is None:
            return []  # a file we already dropped (barge-in race) or not ours
        self.queue[i].started = True
        return self._refill() + self._flush_if_idle_and_low()

    def stopped(self, ev: em.PlaybackStopped, *, refill: bool = True) -> list[Any]:
        i = self._find(ev.path)
        if i is None:
            return []
        acts: list[Any] = []
        # Files play in order: anything queued before this one is finished too.
        for _ in range(i + 1):
            item = self.queue.popleft()
            if item.local_path:
                self.segments_played += ev.status == "done"
            acts += self._release(item)
            status = "played" if ev.status == "done" else "cleared"
            if status == "played":
                self.marks_played += len(item.marks)
            else:
                self.marks_cleared += len(item.marks)
            acts += [SendToConnector(msg.MarkDone(name, status)) for name in item.marks]
        if refill:
            acts += self._refill() + self._flush_if_idle_and_low()
        return acts

    def failed(self, path: str) -> list[Any]:
        """The switch never took this file's playback command (ESL lost it): it will not play."""
        i = self._find(path)
        if i is None:
            return []
        item = self.queue[i]
        del self.queue[i]
        acts = self._release(item)
        self.marks_cleared += len(item.marks)
        acts += [SendToConnector(msg.MarkDone(name, "cleared")) for name in item.marks]  # not heard: not "played"
        return acts

    def not_started(self, ev: em.ExecuteComplete) -> list[Any]:
        """A playback that never started: a missing file gets no PLAYBACK_START/STOP, only
        CHANNEL_EXECUTE_COMPLETE with "FILE NOT FOUND" (seen on a real 1.10.12). Without this the
        queue would wait for the file forever: its marks, a hangup after playback, the fallback's."""
        if ev.application != "playback" or ev.response == "FILE PLAYED":
            return []
        i = self._find(ev.data)
        if i is None or self.queue[i].started:
            return []
        self._count("playback_failed")
        return self.stopped(em.PlaybackStopped(ev.uuid, ev.route, ev.data, "error", 0))

    def file_arrived(self, ev: em.ForkEvent) -> list[Any]:
        """mod_audio_fork::play_audio: the inband transport's file, written by the switch."""
        if not self.awaiting_file:
            self._count("inband_unexpected_file")
            return []
        return self.transport.file_arrived(self, ev)  # type: ignore[attr-defined]

    def timer(self, name: str) -> list[Any]:
        if name == WATCHDOG:
            return self._on_watchdog()
        if name == START_LEAD and self._planner is not None:
            return self._send(self._planner.release()) + self._flush_if_idle_and_low()
        if name != TTS_IDLE or self._planner is None:
            return []
        if self._planner.holding:
            self._tts_idle = True  # the start lead's end sends it, and flushes once it runs low
            return []
        # The connector paused: what is buffered must not wait for more audio.
        if self._queued_ahead_ms() < 2 * self.ptime_ms:
            return self._idle_out()
        # Enough is queued to cover the pause for now. What is queued ahead only shrinks when a
        # file starts or stops (PLAYBACK_START/STOP), so from now on those handlers flush the
        # tail as soon as it runs low; the tail (and any mark on it) never waits for TTS that
        # may never come, and the queue cannot run dry first. (This polled every 10 ms
        # before: 11 timer events per call per second, 3x all other events; issue 5.)
        self._tts_idle = True
        return self._refill()

    def needs_watchdog(self, event: Any, actions: list[Any]) -> bool:
        """Playback progress, or a file newly queued: the watchdog is (re)armed."""
        return bool(self.queue) and (
            type(event) in (em.PlaybackStarted, em.PlaybackStopped) or any(type(a) is PlayFile for a in actions))

    def watchdog(self) -> ArmTimer:
        """(Re)arm the playback watchdog: if the switch reports no playback progress for as long
        as everything queued takes to play, plus slack, its PLAYBACK_* events were lost (an ESL
        outage) and the queue is taken as played (issue 6: never wait for them forever)."""
        ms = [item.ms for item in self.queue]
        if 0 in ms:  # a fallback prompt: its length is unknown here
            return ArmTimer(WATCHDOG, _WATCHDOG_UNKNOWN_S)
        return ArmTimer(WATCHDOG, sum(ms) / 1000 + _WATCHDOG_SLACK_S)

    # ------------------------------------------------------------------ for the transports

    def enqueue(self, item: Item) -> None:
        self.queue.append(item)
        self._attach_marks(item)

    def await_file(self, item: Item) -> None:
        self.awaiting_file.append(item)
        self._attach_marks(item)

    def last_item(self) -> Item | None:
        if self.awaiting_file:
            return self.awaiting_file[-1]
        return self.queue[-1] if self.queue else None

    # ------------------------------------------------------------------ internals

    def _idle_flush_s(self) -> float:
        # uuid_broadcast: a flush mid-word costs a 100 ms hole (REF), so a burst gap of a
        # loaded connector must not look like the end of speech.
        if self.command == "uuid_broadcast":
            return max(self.tts_idle_flush_s, 0.25)
        return self.tts_idle_flush_s

    def _start_lead(self) -> list[Any]:
        """An utterance starts on a silent channel: its first file waits ``start_lead_ms``, so TTS
        paced in real time keeps that margin over the switch's playout. Measured on a real
        1.10.12 with Pipecat's Twilio serializer: with no lead each later burst came 0-40 ms after
        the file before it had ended, and the caller heard a 1-2 frame hole at the first bursts
        of every answer."""
        if (not self.start_lead_ms or self.command != "sendmsg" or self.queue or self.awaiting_file
                or self._planner is None or self._planner.buffered_ms or self._planner.holding):
            return []
        self._planner.hold()
        return [ArmTimer(START_LEAD, self.start_lead_ms / 1000)]

    def _flush_resampler(self) -> list[Any]:
        if self._down is None or self._planner is None:
            return []
        tail = self._down.flush()
        self._tts_pos += len(tail)
        return self._send(self._planner.feed(tail)) if tail else []

    def _release(self, item: Item) -> list[Any]:
        if not item.local_path:
            return []
        self._spool_bytes -= item.size
        return [DeleteFile(item.local_path)]

    def _find(self, path: str) -> int | None:
        for i, item in enumerate(self.queue):
            if item.path == path:
                return i
        return None

    def _item_covering(self, pos: int) -> Item | None:
        """The earliest queued item whose audio ends at or after ``pos``."""
        for item in [*self.queue, *self.awaiting_file]:
            if item.end_pos >= pos:
                return item
        return None

    def _on_watchdog(self) -> list[Any]:
        if not self.queue:
            return []
        self._count("playback_events_lost")
        last = self.queue[-1]
        # As if the last file had stopped: files play in order, so everything before it too.
        return self.stopped(em.PlaybackStopped(self.uuid, "", last.path or "", "done", None))

    def _queued_ahead_ms(self) -> int:
        return sum(item.ms for item in self.queue if not item.started) + sum(item.ms for item in self.awaiting_file)

    def _refill(self) -> list[Any]:
        if self._planner is None:
            return []
        playing = any(item.started for item in self.queue)
        return self._send(self._planner.take_ready(self._queued_ahead_ms(), playing))

    def _flush_if_idle_and_low(self) -> list[Any]:
        if self._tts_idle and self._queued_ahead_ms() < 2 * self.ptime_ms:
            return self._idle_out()
        return []

    def _idle_out(self) -> list[Any]:
        """The connector paused and what is queued runs low. With nothing left on the channel (or
        a mark waiting for its audio, or uuid_broadcast) everything buffered goes out, its last
        partial frame padded: that is the end of speech. While a file still plays only whole
        ptimes go, and the partial frame (< 1 ptime) waits for the next audio or for the queue to
        run dry. A connector that sends in bursts with pauses (Pipecat's 8 kHz TTS: 137.5 ms,
        not whole frames, each pause longer than the 60 ms idle flush) had each burst's partial
        frame padded with zeros: ~39 runs of 1-20 samples of silence in 5 s of speech."""
        assert self._planner is not None
        if self._pending_marks or self.command != "sendmsg" or not (self.queue or self.awaiting_file):
            self._tts_idle = False
            return self.flush()
        self._tts_idle = True  # the queue's next start or stop looks again; the last stop flushes
        return self._send(self._planner.take_whole())

    def _send(self, segments: list[Segment]) -> list[Any]:
        acts: list[Any] = []
        for seg in segments:
            if not seg.pcm:
                continue
            if self.transport.spooled and self._spool_bytes + len(seg.pcm) > self.max_spool_bytes:
                self._count("spool_full")
                continue
            self._emitted_pos += len(seg.pcm)
            if self.transport.spooled:
                self._spool_bytes += len(seg.pcm)
            acts += self.transport.send(self, seg, self._emitted_pos)
        return acts

    def _attach_marks(self, item: Item) -> None:
        while self._pending_marks and self._pending_marks[0][0] <= item.end_pos:
            item.marks.append(self._pending_marks.pop(0)[1])
