"""One call's state machine: events in, actions out, no I/O (STYLE.md, after h11's ``_state.py``).

Every move is in ``TRANSITIONS``: ``{state: {EventType: next_state}}``. ``STAY`` keeps the
state, ``IGNORE`` drops an event that can legitimately arrive late (a peer racing the
hangup); anything missing from the table raises :class:`InvalidTransition`, since it
means our own adapter fed an event it should not have.

The adapter (``fork_server.call``) performs the returned actions in order and feeds the
results back as events. The hot path, caller audio, does not go through the table: at
50 frames/s per call it is a method, :meth:`CallSession.caller_audio`, gated by state.

Playback follows REF "Playback timing": segments are complete files, whole ptimes, at the
channel's write rate; PLAYBACK_START/STOP (by ``Playback-File-Path`` and
``Playback-Status``) tell what the caller has heard, which drives marks, file deletion,
hangup-after-playback and refilling the queue ahead.
"""

from __future__ import annotations

import enum
import posixpath
import re
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Mapping

from . import audio_fork, connector_protocol as cp, esl_messages as em
from .errors import InvalidTransition, LocalUsageError
from .pcm import Framer, StreamResampler
from .segments import Segment, SegmentPlanner
from .spool import SpoolLayout, valid_uuid

__all__ = [
    "State",
    "SessionSettings",
    "CallSession",
    "TRANSITIONS",
    # events the adapter creates
    "CallerInfoReady",
    "CallerInfoFailed",
    "ConnectorUp",
    "ConnectorFailed",
    "ConnectorClosed",
    "ForkClosed",
    "ForkFailed",
    "Shutdown",
    "TimerFired",
    "PlaybackFailed",
    # actions
    "LookupCaller",
    "ConnectConnector",
    "SendToConnector",
    "SendAudioToConnector",
    "CloseConnector",
    "WriteSegment",
    "PlayFile",
    "SendToFork",
    "BreakPlayback",
    "HangupCall",
    "TransferCall",
    "SendDtmfToCaller",
    "StopFork",
    "QueueHangup",
    "DeleteFile",
    "ArmTimer",
    "Finished",
    "CallSummary",
]

CONNECTOR_RATE = 16000
FRAME_MS = 20
FRAME_BYTES = CONNECTOR_RATE * FRAME_MS // 1000 * 2  # 640: 20 ms of 16 kHz s16le


class State(enum.Enum):
    LOOKUP = "lookup"  # asking ESL who is calling and at what rate
    CONNECTING = "connecting"  # opening the connector WebSocket
    ACTIVE = "active"
    RECONNECTING = "reconnecting"  # connector dropped mid-call; retrying with the same context
    FALLBACK = "fallback"  # connector unusable: the route's fallback runs
    ENDING = "ending"  # hangup/transfer requested; waiting for queued audio or the fork to close
    ENDED = "ended"


# --- events created by the adapter (protocol events come from connector_protocol / esl_messages)


@dataclass(frozen=True, slots=True)
class CallerInfoReady:
    number: str
    name: str
    destination: str
    write_rate: int


@dataclass(frozen=True, slots=True)
class CallerInfoFailed:
    reason: str


@dataclass(frozen=True, slots=True)
class ConnectorUp:
    pass


@dataclass(frozen=True, slots=True)
class ConnectorFailed:
    reason: str


@dataclass(frozen=True, slots=True)
class ConnectorClosed:
    code: int | None
    reason: str


@dataclass(frozen=True, slots=True)
class ForkClosed:
    code: int | None


@dataclass(frozen=True, slots=True)
class ForkFailed:
    """The fork sent something off-spec and we close it: the call cannot go on, but the
    channel is still up (a server-side close leaves it parked), so the route fallback runs."""

    reason: str


@dataclass(frozen=True, slots=True)
class Shutdown:
    pass


@dataclass(frozen=True, slots=True)
class TimerFired:
    name: str


@dataclass(frozen=True, slots=True)
class PlaybackFailed:
    """The switch never took this file's playback command (ESL lost it): it will not play."""

    path: str


# --- actions


@dataclass(frozen=True, slots=True)
class LookupCaller:
    uuid: str


@dataclass(frozen=True, slots=True)
class ConnectConnector:
    resumed: bool


@dataclass(frozen=True, slots=True)
class SendToConnector:
    text: str


@dataclass(frozen=True, slots=True)
class SendAudioToConnector:
    frames: tuple[bytes, ...]


@dataclass(frozen=True, slots=True)
class CloseConnector:
    pass


@dataclass(frozen=True, slots=True)
class WriteSegment:
    local_path: str
    pcm: bytes


@dataclass(frozen=True, slots=True)
class PlayFile:
    """Queue one file on the channel: ``command`` is "sendmsg" or "uuid_broadcast"."""

    uuid: str
    path: str
    command: str


@dataclass(frozen=True, slots=True)
class SendToFork:
    text: str


@dataclass(frozen=True, slots=True)
class BreakPlayback:
    """``uuid_break <uuid> all``: stops the current file and drops the queue (REF "Barge-in")."""

    uuid: str


@dataclass(frozen=True, slots=True)
class HangupCall:
    uuid: str
    cause: str = "NORMAL_CLEARING"


@dataclass(frozen=True, slots=True)
class TransferCall:
    uuid: str
    target: str


@dataclass(frozen=True, slots=True)
class SendDtmfToCaller:
    uuid: str
    digits: str


@dataclass(frozen=True, slots=True)
class StopFork:
    uuid: str


@dataclass(frozen=True, slots=True)
class QueueHangup:
    """sendmsg execute hangup with event-lock: the switch hangs up once what is queued has
    played (the fallback prompt), with no need for us to see its PLAYBACK_STOP."""

    uuid: str


@dataclass(frozen=True, slots=True)
class DeleteFile:
    local_path: str


@dataclass(frozen=True, slots=True)
class ArmTimer:
    """(Re)arm the named timer; a later ArmTimer with the same name replaces it."""

    name: str
    delay_s: float


@dataclass(frozen=True, slots=True)
class CallSummary:
    uuid: str
    route: str
    outcome: str
    caller_bytes: int
    connector_frames: int
    tts_bytes: int
    segments_played: int
    barge_ins: int
    marks_played: int
    marks_cleared: int
    dropped_frames: int
    errors: Mapping[str, int]


@dataclass(frozen=True, slots=True)
class Finished:
    summary: CallSummary


# --- the table

STAY = "stay"
IGNORE = "ignore"

def _table() -> dict[State, dict[type, Any]]:
    S = State
    connector_events = (
        cp.TtsAudio,
        cp.AudioFormat,
        cp.Clear,
        cp.MarkRequest,
        cp.HangupRequest,
        cp.TransferRequest,
        cp.SendDtmf,
        cp.Malformed,
    )
    esl_events = (em.PlaybackStarted, em.PlaybackStopped, em.ExecuteComplete, em.Dtmf, em.ForkEvent)
    ending = {ForkClosed: S.ENDED, em.HangupComplete: S.ENDED}
    late_connector = {ev: IGNORE for ev in connector_events}
    late_connector.update({ConnectorUp: IGNORE, ConnectorFailed: IGNORE, ConnectorClosed: IGNORE})
    playback = {ev: STAY for ev in (*esl_events, PlaybackFailed)}
    t: dict[State, dict[type, Any]] = {
        S.LOOKUP: {
            CallerInfoReady: S.CONNECTING,
            CallerInfoFailed: S.FALLBACK,
            Shutdown: S.FALLBACK,
            ForkFailed: S.FALLBACK,
            TimerFired: IGNORE,
            PlaybackFailed: IGNORE,
            **{ev: IGNORE for ev in esl_events},
            **ending,
        },
        S.CONNECTING: {
            ConnectorUp: S.ACTIVE,
            ConnectorFailed: S.FALLBACK,
            ConnectorClosed: S.FALLBACK,
            Shutdown: S.FALLBACK,
            ForkFailed: S.FALLBACK,
            TimerFired: STAY,
            **playback,
            **ending,
        },
        S.ACTIVE: {
            **{ev: STAY for ev in connector_events},
            ConnectorClosed: STAY,  # handler picks RECONNECTING or FALLBACK
            ConnectorFailed: STAY,
            Shutdown: S.FALLBACK,
            ForkFailed: S.FALLBACK,
            TimerFired: STAY,
            **playback,
            **ending,
        },
        S.RECONNECTING: {
            ConnectorUp: S.ACTIVE,
            ConnectorFailed: STAY,  # handler retries or falls back
            ConnectorClosed: STAY,
            **{ev: IGNORE for ev in connector_events},
            Shutdown: S.FALLBACK,
            ForkFailed: S.FALLBACK,
            TimerFired: STAY,
            **playback,
            **ending,
        },
        S.FALLBACK: {**late_connector, Shutdown: IGNORE, ForkFailed: IGNORE, TimerFired: STAY, **playback, **ending},
        S.ENDING: {**late_connector, Shutdown: STAY, ForkFailed: IGNORE, TimerFired: STAY, **playback, **ending},
        S.ENDED: {
            **late_connector,
            **{ev: IGNORE for ev in esl_events},
            ForkClosed: IGNORE,
            ForkFailed: IGNORE,
            em.HangupComplete: IGNORE,
            Shutdown: IGNORE,
            TimerFired: IGNORE,
            PlaybackFailed: IGNORE,
            CallerInfoReady: IGNORE,
            CallerInfoFailed: IGNORE,
        },
    }
    # A call can end (or be asked to) while the lookup is still running.
    for state in (S.CONNECTING, S.ACTIVE, S.RECONNECTING, S.FALLBACK, S.ENDING):
        t[state].setdefault(CallerInfoReady, IGNORE)
        t[state].setdefault(CallerInfoFailed, IGNORE)
    return t


TRANSITIONS: dict[State, dict[type, Any]] = _table()

# Moves that depend on a guard and are made by a handler, not by the table's target column.
GUARDED_MOVES: dict[State, frozenset[State]] = {
    State.ACTIVE: frozenset({State.RECONNECTING, State.FALLBACK, State.ENDING}),
    State.RECONNECTING: frozenset({State.FALLBACK}),
    State.FALLBACK: frozenset({State.ENDING}),
}


@dataclass(frozen=True, slots=True)
class SessionSettings:
    """What a session needs from the config (built by the app from ``fs_dialplan.Config``)."""

    route: str
    fork_rate: int  # 8000 | 16000, as in the rendered uuid_audio_fork start
    language: str
    metadata: Mapping[str, Any]
    fallback_action: str  # hangup | play | transfer
    fallback_file: str | None
    fallback_target: str | None
    spool: SpoolLayout
    playback_command: str = "sendmsg"  # | uuid_broadcast
    transport: str = "file"  # | inband
    first_segment_ms: int = 80
    segment_ms: int = 400
    lead_ms: int = 100
    ptime_ms: int = 20
    reconnect_attempts: int = 1
    max_spool_bytes: int = 8 << 20
    prestart_buffer_ms: int = 2000  # caller audio kept while the connector connects
    tts_idle_flush_s: float = 0.06
    switch_temp_dir: str = "/tmp"


@dataclass(slots=True)
class _Item:
    """One file queued (or about to be) on the channel."""

    path: str | None  # FreeSWITCH's path; None while an inband playAudio awaits its event
    local_path: str | None  # ours to delete; None for fallback prompts and inband files
    ms: int
    size: int
    started: bool = False
    marks: list[str] = field(default_factory=list)
    end_pos: int = 0  # TTS stream position (bytes at the write rate) where this item ends


_INBAND_FILE = re.compile(r"^[0-9a-fA-F-]{36}_[0-9]{1,12}\.tmp\.(r8|r16|r24|r32|r48|r64|wav)$")


class CallSession:
    """The sans-I/O core of one call (one mod_audio_fork WebSocket)."""

    def __init__(self, uuid: str, settings: SessionSettings) -> None:
        if not valid_uuid(uuid):
            raise LocalUsageError(f"invalid call uuid {uuid!r}")
        if settings.playback_command not in ("sendmsg", "uuid_broadcast"):
            raise LocalUsageError(f"unknown playback command {settings.playback_command!r}")
        if settings.transport not in ("file", "inband"):
            raise LocalUsageError(f"unknown playback transport {settings.transport!r}")
        self.uuid = uuid
        self.settings = settings
        self.state = State.LOOKUP
        self.caller: CallerInfoReady | None = None
        self.write_rate = settings.fork_rate
        self.outcome = "completed"
        self.errors: dict[str, int] = {}
        # caller → connector
        self._up = StreamResampler(settings.fork_rate, CONNECTOR_RATE)
        self._framer = Framer(FRAME_BYTES, max_bytes=FRAME_BYTES * 64)
        self._prestart: deque[bytes] = deque(maxlen=max(1, settings.prestart_buffer_ms // FRAME_MS))
        self.caller_bytes = 0
        self._made = 0  # 16 kHz frames made from the caller's audio: the caller's timeline
        self.replayed_frames = 0
        self.connector_frames = 0
        self.dropped_frames = 0
        # connector → caller
        self._tts_rate = CONNECTOR_RATE
        self._down: StreamResampler | None = None
        self._planner: SegmentPlanner | None = None
        self._queue: deque[_Item] = deque()
        self._awaiting_file: deque[_Item] = deque()  # inband: playAudio sent, event pending
        self._orphan_marks: list[str] = []
        # Marks sit at a byte position of the TTS stream at the write rate; a segment that
        # ends at or after it carries it. Nothing is flushed or padded for a mark.
        self._tts_pos = 0  # bytes fed to the planner (resampled TTS)
        self._emitted_pos = 0  # bytes handed out as segments (incl. padding)
        self._pending_marks: list[tuple[int, str]] = []
        self._seq = 0
        self._spool_bytes = 0
        self.tts_bytes = 0
        self.segments_played = 0
        self.barge_ins = 0
        self.marks_played = 0
        self.marks_cleared = 0
        self._reconnects_left = settings.reconnect_attempts
        self._pending_end: HangupRequest | TransferRequest | None = None  # type: ignore[name-defined]
        self._connector_connected = False
        self._tts_idle = False  # the idle timer fired with enough queued: flush when it runs low

    # ---------------------------------------------------------------- entry points

    def start(self) -> list[Any]:
        """Actions to run once the fork's metadata has been accepted."""
        return [LookupCaller(self.uuid)]

    def caller_audio(self, pcm: bytes) -> list[bytes]:
        """Caller PCM at the fork rate in; 640-byte 16 kHz frames to send now out."""
        self.caller_bytes += len(pcm)
        state = self.state
        if state is State.ENDED or state is State.FALLBACK or state is State.ENDING:
            return []
        frames = self._framer.push(self._up.process(pcm))
        self._made += len(frames)
        if state is State.ACTIVE:
            self.connector_frames += len(frames)
            return frames
        if len(self._prestart) + len(frames) > self._prestart.maxlen:  # type: ignore[operator]
            self.dropped_frames += len(self._prestart) + len(frames) - self._prestart.maxlen  # type: ignore[operator]
        self._prestart.extend(frames)
        return []

    def undelivered(self, frames: list[bytes]) -> None:
        """Caller frames handed out for a connector that is gone, and that it may not have read
        (written but unconfirmed by a pong, still queued, or handed out after the loss): they go
        out again, ahead of newer audio, on the next leg. Oldest first; they are the newest
        unbroken run of the caller's timeline, so the next ``start`` can give its offset."""
        if not frames or self.state not in (State.ACTIVE, State.RECONNECTING):
            return
        self.connector_frames -= len(frames)
        self.replayed_frames += len(frames)
        keep = self._prestart.maxlen or 1
        # While ACTIVE the buffer holds only earlier undelivered frames; once RECONNECTING it
        # holds what the caller said since, which is newer.
        if self.state is State.ACTIVE:
            run = list(self._prestart) + list(frames)
        else:
            run = list(frames) + list(self._prestart)
        if len(run) > keep:
            self.dropped_frames += len(run) - keep
            run = run[-keep:]
        self._prestart.clear()
        self._prestart.extend(run)

    def handle(self, event: Any) -> list[Any]:
        """Feed one event; get the actions to perform, in order."""
        row = TRANSITIONS[self.state]
        target = row.get(type(event), _MISSING)
        if target is _MISSING:
            raise InvalidTransition(self.state.value, type(event).__name__)
        if target is IGNORE:
            return []
        handler = _HANDLERS.get(type(event))
        actions: list[Any] = []
        if target is not STAY and target is not self.state:
            actions += self._enter(target, event)
        if handler is not None and self.state is not State.ENDED:
            actions += handler(self, event)
        if self._queue and self.state is not State.ENDED and (
            type(event) in _PLAYBACK_PROGRESS or any(type(a) is PlayFile for a in actions)
        ):
            actions.append(self._watchdog())
        return actions

    def _watchdog(self) -> ArmTimer:
        """(Re)arm the playback watchdog: if the switch reports no playback progress for as long
        as everything queued takes to play, plus slack, its PLAYBACK_* events were lost (an ESL
        outage) and the queue is taken as played (issue 6: never wait for them forever)."""
        ms = [item.ms for item in self._queue]
        if 0 in ms:  # a fallback prompt: its length is unknown here
            return ArmTimer(_WATCHDOG, _WATCHDOG_UNKNOWN_S)
        return ArmTimer(_WATCHDOG, sum(ms) / 1000 + _WATCHDOG_SLACK_S)

    def _move(self, target: State) -> None:
        """A move a handler decides (it depends on a guard, e.g. reconnects left)."""
        if target not in GUARDED_MOVES.get(self.state, ()):
            raise InvalidTransition(self.state.value, f"move to {target.value}")
        self.state = target

    # ---------------------------------------------------------------- state entry

    def _enter(self, target: State, event: Any) -> list[Any]:
        previous, self.state = self.state, target
        if target is State.CONNECTING:
            return []  # the CallerInfoReady handler connects
        if target is State.ACTIVE:
            self._connector_connected = True
            resumed = previous is State.RECONNECTING
            frames = tuple(self._prestart)
            self._prestart.clear()
            self.connector_frames += len(frames)
            # The buffer holds the newest unbroken run of the caller's frames.
            offset_ms = (self._made - len(frames)) * FRAME_MS
            acts: list[Any] = [SendToConnector(self._start_message(resumed, offset_ms))]
            if frames:
                acts.append(SendAudioToConnector(frames))
            return acts
        if target is State.FALLBACK:
            return self._run_fallback(event)
        if target is State.ENDED:
            return self._finish(event)
        return []

    def _start_message(self, resumed: bool, offset_ms: int = 0) -> str:
        info = self.caller
        return cp.start(
            uuid=self.uuid,
            route=self.settings.route,
            from_=info.number if info else "",
            to=info.destination if info else "",
            caller_name=info.name if info else "",
            language=self.settings.language,
            metadata=dict(self.settings.metadata),
            sample_rate=CONNECTOR_RATE,
            frame_ms=FRAME_MS,
            resumed=resumed,
            offset_ms=offset_ms,
        )

    def _run_fallback(self, event: Any) -> list[Any]:
        s = self.settings
        if isinstance(event, Shutdown):
            self.outcome = "shutdown"
        elif self.outcome == "completed":
            self.outcome = "fallback"
        acts: list[Any] = self._drop_playback(reason_cleared=True)
        if isinstance(event, Shutdown) and self._connector_open():
            self._connector_connected = False
            acts += [SendToConnector(cp.stop("shutdown")), CloseConnector()]
        # CallerInfoFailed (no ESL) too: the fallback's commands wait in the adapter until ESL
        # is back, since nothing else can end or move the call (REF: no mod_audio_fork message
        # hangs up, transfers or plays).
        if s.fallback_action == "transfer" and s.fallback_target:
            return acts + [TransferCall(self.uuid, s.fallback_target), StopFork(self.uuid)]
        if isinstance(event, ForkFailed):
            self.outcome = "fork_error"
            if s.fallback_action != "transfer":  # (a transfer stops the fork anyway)
                acts.append(StopFork(self.uuid))  # we close it: the bug would stay attached (REF "Close")
        if s.fallback_action == "play" and s.fallback_file:
            self._queue.append(_Item(path=s.fallback_file, local_path=None, ms=0, size=0))
            # Queued behind the prompt on the switch (event-lock): the hangup happens after it
            # has played even if we never see its PLAYBACK_STOP, or the fork is gone by then.
            return acts + [PlayFile(self.uuid, s.fallback_file, "sendmsg"), QueueHangup(self.uuid)]
        return acts + [HangupCall(self.uuid)]

    def _connector_open(self) -> bool:
        return self._connector_connected

    def _finish(self, event: Any) -> list[Any]:
        acts: list[Any] = []
        if isinstance(event, Shutdown):
            self.outcome = "shutdown"
        if self._connector_open():
            self._connector_connected = False
            reason = "hangup"
            if self.outcome == "transfer":
                reason = "transfer"
            elif self.outcome == "connector_hangup":
                reason = "connector_hangup"
            acts += [SendToConnector(cp.stop(reason)), CloseConnector()]
        else:
            acts.append(CloseConnector())
        for item in list(self._queue) + list(self._awaiting_file):
            if item.local_path:
                acts.append(DeleteFile(item.local_path))
            self.marks_cleared += len(item.marks)
        self._queue.clear()
        self._awaiting_file.clear()
        acts.append(Finished(self.summary()))
        return acts

    def summary(self) -> CallSummary:
        return CallSummary(
            uuid=self.uuid,
            route=self.settings.route,
            outcome=self.outcome,
            caller_bytes=self.caller_bytes,
            connector_frames=self.connector_frames,
            tts_bytes=self.tts_bytes,
            segments_played=self.segments_played,
            barge_ins=self.barge_ins,
            marks_played=self.marks_played,
            marks_cleared=self.marks_cleared,
            dropped_frames=self.dropped_frames + self._framer.dropped_bytes // FRAME_BYTES,
            errors=dict(self.errors),
        )

    def _count(self, kind: str) -> None:
        self.errors[kind] = self.errors.get(kind, 0) + 1

    # ---------------------------------------------------------------- handlers: lifecycle

    def _on_caller_info(self, ev: CallerInfoReady) -> list[Any]:
        self.caller = ev
        if ev.write_rate in (8000, 16000, 24000, 32000, 48000):
            self.write_rate = ev.write_rate
        else:
            self._count("write_rate_unusable")
        s = self.settings
        self._planner = SegmentPlanner(
            self.write_rate,
            s.playback_command,
            ptime_ms=s.ptime_ms,
            first_segment_ms=s.first_segment_ms,
            segment_ms=s.segment_ms,
            lead_ms=s.lead_ms,
        )
        return [ConnectConnector(resumed=False)]

    def _on_connector_lost(self, ev: ConnectorClosed | ConnectorFailed) -> list[Any]:
        if self.state is not State.ACTIVE and self.state is not State.RECONNECTING:
            return []  # the table already moved on (CONNECTING → FALLBACK runs the fallback)
        self._connector_connected = False
        self._count("connector_lost")
        if self._reconnects_left > 0:
            self._reconnects_left -= 1
            if self.state is not State.RECONNECTING:
                self._move(State.RECONNECTING)
            return [ConnectConnector(resumed=True)]
        self._move(State.FALLBACK)
        return self._run_fallback(ev)

    # ---------------------------------------------------------------- handlers: connector

    def _on_tts(self, ev: cp.TtsAudio) -> list[Any]:
        if self.state is not State.ACTIVE or self._pending_end is not None or self._planner is None:
            self._count("tts_after_end")
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
        acts += self._queue_segments(self._planner.feed(pcm))
        acts += self._refill()
        acts.append(ArmTimer("tts_idle", self._idle_flush_s()))
        return acts

    def _idle_flush_s(self) -> float:
        # uuid_broadcast: a flush mid-word costs a 100 ms hole (REF), so a burst gap of a
        # loaded connector must not look like the end of speech.
        if self.settings.playback_command == "uuid_broadcast":
            return max(self.settings.tts_idle_flush_s, 0.25)
        return self.settings.tts_idle_flush_s

    def _flush_resampler(self) -> list[Any]:
        if self._down is None or self._planner is None:
            return []
        tail = self._down.flush()
        self._tts_pos += len(tail)
        return self._queue_segments(self._planner.feed(tail)) if tail else []

    def _on_audio_format(self, ev: cp.AudioFormat) -> list[Any]:
        acts = self._flush_resampler()
        self._tts_rate = ev.sample_rate
        self._down = StreamResampler(ev.sample_rate, self.write_rate)
        return acts

    def _on_clear(self, ev: cp.Clear) -> list[Any]:
        self.barge_ins += 1
        return self._drop_playback(reason_cleared=True)

    def _drop_playback(self, *, reason_cleared: bool) -> list[Any]:
        acts: list[Any] = []
        self._tts_idle = False  # nothing is left to flush
        if self._planner is not None:
            self._planner.clear()
        if self._down is not None:
            self._down.reset()
        items = list(self._queue) + list(self._awaiting_file)
        if any(item.path is not None for item in self._queue):
            acts.append(BreakPlayback(self.uuid))
        marks = list(self._orphan_marks) + [name for _, name in self._pending_marks]
        self._orphan_marks.clear()
        self._pending_marks.clear()
        self._tts_pos = self._emitted_pos  # the buffered audio is gone
        for item in items:
            marks += item.marks
            if item.local_path:
                acts.append(DeleteFile(item.local_path))
                self._spool_bytes -= item.size
        self._queue.clear()
        self._awaiting_file.clear()
        if self._pending_end is not None:
            # Nothing is left to wait for: the requested hangup/transfer happens now.
            pending, self._pending_end = self._pending_end, None
            acts += self._end_now(pending)
        for name in marks:
            self.marks_cleared += 1
            acts.append(SendToConnector(cp.mark(name, "cleared")))
        return acts

    def _on_mark(self, ev: cp.MarkRequest) -> list[Any]:
        # The mark covers everything fed so far. (The FIR's 2.5 ms ring-out is not emitted at a
        # flush, to keep lengths exact, so the position does not add the filter delay.)
        pos = self._tts_pos
        if pos <= self._emitted_pos:
            target = self._item_covering(pos)
            if target is None:
                self.marks_played += 1
                return [SendToConnector(cp.mark(ev.name, "played"))]
            target.marks.append(ev.name)
            return []
        self._pending_marks.append((pos, ev.name))
        return self._refill()

    def _item_covering(self, pos: int) -> _Item | None:
        """The earliest queued item whose audio ends at or after ``pos``."""
        for item in [*self._queue, *self._awaiting_file]:
            if item.end_pos >= pos:
                return item
        return None

    def _last_item(self) -> _Item | None:
        if self._awaiting_file:
            return self._awaiting_file[-1]
        return self._queue[-1] if self._queue else None

    def _on_hangup_request(self, ev: cp.HangupRequest) -> list[Any]:
        return self._request_end(ev)

    def _on_transfer_request(self, ev: cp.TransferRequest) -> list[Any]:
        return self._request_end(ev)

    def _request_end(self, ev: Any) -> list[Any]:
        acts = self._flush_all() if ev.after_playback else self._drop_playback(reason_cleared=True)
        if ev.after_playback and self._last_item() is not None:
            self._pending_end = ev
            self._move(State.ENDING)
            return acts
        return acts + self._end_now(ev)

    def _end_now(self, ev: Any) -> list[Any]:
        if self.state is not State.ENDING:
            self._move(State.ENDING)
        self._connector_connected = False
        if isinstance(ev, cp.TransferRequest):
            self.outcome = "transfer"
            return [
                SendToConnector(cp.stop("transfer")),
                CloseConnector(),
                TransferCall(self.uuid, ev.target),
                StopFork(self.uuid),
            ]
        self.outcome = "connector_hangup"
        return [SendToConnector(cp.stop("connector_hangup")), CloseConnector(), HangupCall(self.uuid)]

    def _on_send_dtmf(self, ev: cp.SendDtmf) -> list[Any]:
        return [SendDtmfToCaller(self.uuid, ev.digits)]

    def _on_malformed(self, ev: cp.Malformed) -> list[Any]:
        self._count("connector_malformed")
        return []

    # ---------------------------------------------------------------- handlers: ESL

    def _find(self, path: str) -> int | None:
        for i, item in enumerate(self._queue):
            if item.path == path:
                return i
        return None

    def _on_playback_started(self, ev: em.PlaybackStarted) -> list[Any]:
        i = self._find(ev.path)
        if i is None:
            return []  # a file we already dropped (barge-in race) or not ours
        self._queue[i].started = True
        return self._refill() + self._flush_if_idle_and_low()

    def _on_playback_stopped(self, ev: em.PlaybackStopped) -> list[Any]:
        i = self._find(ev.path)
        if i is None:
            return []
        acts: list[Any] = []
        # Files play in order: anything queued before this one is finished too.
        for _ in range(i + 1):
            item = self._queue.popleft()
            if item.local_path:
                acts.append(DeleteFile(item.local_path))
                self._spool_bytes -= item.size
                self.segments_played += ev.status == "done"
            status = "played" if ev.status == "done" else "cleared"
            for name in item.marks:
                if status == "played":
                    self.marks_played += 1
                else:
                    self.marks_cleared += 1
                acts.append(SendToConnector(cp.mark(name, status)))
        if self.state is State.ENDING and self._pending_end is not None and not self._queue:
            if not self._awaiting_file and (self._planner is None or self._planner.buffered_ms == 0):
                pending, self._pending_end = self._pending_end, None
                acts += self._end_now(pending)
                return acts
        return acts + self._refill() + self._flush_if_idle_and_low()

    def _on_playback_failed(self, ev: PlaybackFailed) -> list[Any]:
        i = self._find(ev.path)
        if i is None:
            return []
        item = self._queue[i]
        del self._queue[i]
        acts: list[Any] = []
        if item.local_path:
            acts.append(DeleteFile(item.local_path))
            self._spool_bytes -= item.size
        self.marks_cleared += len(item.marks)
        acts += [SendToConnector(cp.mark(name, "cleared")) for name in item.marks]  # not heard: not "played"
        if self.state is State.ENDING and self._pending_end is not None and not self._queue and not self._awaiting_file:
            pending, self._pending_end = self._pending_end, None
            return acts + self._end_now(pending)
        return acts + self._refill()

    def _on_dtmf(self, ev: em.Dtmf) -> list[Any]:
        if self.state is not State.ACTIVE:
            return []
        return [SendToConnector(cp.dtmf(ev.digit, ev.duration_ms))]

    def _on_execute_complete(self, ev: em.ExecuteComplete) -> list[Any]:
        """A playback that never started: a missing file gets no PLAYBACK_START/STOP, only this
        with "FILE NOT FOUND" (seen on a real 1.10.12). Without it the queue would wait for
        the file forever: its marks, a hangup after playback, the fallback's hangup."""
        if ev.application != "playback" or ev.response == "FILE PLAYED":
            return []
        i = self._find(ev.data)
        if i is None or self._queue[i].started:
            return []
        self._count("playback_failed")
        return self._on_playback_stopped(em.PlaybackStopped(ev.uuid, ev.route, ev.data, "error", 0))

    def _on_fork_event(self, ev: em.ForkEvent) -> list[Any]:
        if ev.name == "play_audio":
            if self._awaiting_file:
                return self._on_inband_file(ev)
            self._count("inband_unexpected_file")
        if ev.name == "buffer_overrun":
            self._count("fork_buffer_overrun")
        elif ev.name == "disconnect":
            self._count("fork_disconnect")
        return []

    def _on_inband_file(self, ev: em.ForkEvent) -> list[Any]:
        item = self._awaiting_file.popleft()
        path = (ev.body or {}).get("file") if isinstance(ev.body, dict) else None
        temp = self.settings.switch_temp_dir
        ok = (
            isinstance(path, str)
            and posixpath.dirname(path) == temp.rstrip("/")
            and _INBAND_FILE.match(posixpath.basename(path)) is not None
        )
        if not ok:
            self._count("inband_bad_file")
            return [SendToConnector(cp.mark(m, "cleared")) for m in item.marks]
        item.path = path
        self._queue.append(item)
        return [PlayFile(self.uuid, path, self.settings.playback_command)]

    def _on_timer(self, ev: TimerFired) -> list[Any]:
        if ev.name == _WATCHDOG:
            return self._on_watchdog()
        if ev.name != "tts_idle" or self._planner is None:
            return []
        # The connector paused: whatever is buffered must not wait for more audio.
        if self._queued_ahead_ms() < 2 * self.settings.ptime_ms:
            self._tts_idle = False
            return self._flush_all()
        # Enough is queued to cover the pause for now. What is queued ahead only shrinks when a
        # file starts or stops (PLAYBACK_START/STOP), so from now on those handlers flush the
        # tail as soon as it runs low; the tail (and any mark on it) never waits for TTS that
        # may never come, and the queue cannot run dry first. (This polled every 10 ms
        # before: 11 timer events per call per second, 3x all other events; issue 5.)
        self._tts_idle = True
        return self._refill()

    def _flush_if_idle_and_low(self) -> list[Any]:
        if self._tts_idle and self._queued_ahead_ms() < 2 * self.settings.ptime_ms:
            self._tts_idle = False
            return self._flush_all()
        return []

    def _on_watchdog(self) -> list[Any]:
        if not self._queue:
            return []
        self._count("playback_events_lost")
        last = self._queue[-1]
        # As if the last file had stopped: files play in order, so everything before it too.
        return self._on_playback_stopped(em.PlaybackStopped(self.uuid, self.settings.route, last.path or "", "done", None))

    # ---------------------------------------------------------------- playback helpers

    def _queued_ahead_ms(self) -> int:
        return sum(item.ms for item in self._queue if not item.started) + sum(
            item.ms for item in self._awaiting_file
        )

    def _refill(self) -> list[Any]:
        if self._planner is None:
            return []
        playing = any(item.started for item in self._queue)
        return self._queue_segments(self._planner.take_ready(self._queued_ahead_ms(), playing))

    def _flush_all(self) -> list[Any]:
        acts = self._flush_resampler()
        if self._planner is not None:
            acts += self._queue_segments(self._planner.flush())
        self._tts_pos = self._emitted_pos  # padding counted; nothing buffered now
        if self._pending_marks:  # all their audio went out just now
            last = self._last_item()
            names = [name for _, name in self._pending_marks]
            self._pending_marks.clear()
            if last is None:
                self.marks_played += len(names)
                acts += [SendToConnector(cp.mark(n, "played")) for n in names]
            else:
                last.marks.extend(names)
        return acts

    def _queue_segments(self, segments: list[Segment]) -> list[Any]:
        acts: list[Any] = []
        s = self.settings
        for seg in segments:
            if not seg.pcm:
                continue
            if self._spool_bytes + len(seg.pcm) > s.max_spool_bytes:
                self._count("spool_full")
                continue
            self._emitted_pos += len(seg.pcm)
            if s.transport == "inband":
                item = _Item(path=None, local_path=None, ms=seg.ms, size=0, end_pos=self._emitted_pos)
                self._awaiting_file.append(item)
                self._attach_marks(item)
                acts.append(SendToFork(audio_fork.play_audio(seg.pcm, self.write_rate)))
                continue
            local, remote = s.spool.segment_paths(self.uuid, self._seq, self.write_rate)
            self._seq += 1
            self._spool_bytes += len(seg.pcm)
            item = _Item(path=remote, local_path=local, ms=seg.ms, size=len(seg.pcm), end_pos=self._emitted_pos)
            self._queue.append(item)
            self._attach_marks(item)
            acts.append(WriteSegment(local, seg.pcm))
            acts.append(PlayFile(self.uuid, remote, s.playback_command))
        return acts

    def _attach_marks(self, item: _Item) -> None:
        while self._pending_marks and self._pending_marks[0][0] <= item.end_pos:
            item.marks.append(self._pending_marks.pop(0)[1])


_MISSING = object()
_WATCHDOG = "playback_watchdog"
_WATCHDOG_SLACK_S = 2.0  # REF: PLAYBACK_START comes 20-40 ms after the command, STOP at the file's end
_WATCHDOG_UNKNOWN_S = 60.0
_PLAYBACK_PROGRESS = frozenset({em.PlaybackStarted, em.PlaybackStopped})

# Imported names used in annotations above.
HangupRequest = cp.HangupRequest
TransferRequest = cp.TransferRequest

_HANDLERS = {
    CallerInfoReady: CallSession._on_caller_info,
    ConnectorClosed: CallSession._on_connector_lost,
    ConnectorFailed: CallSession._on_connector_lost,
    cp.TtsAudio: CallSession._on_tts,
    cp.AudioFormat: CallSession._on_audio_format,
    cp.Clear: CallSession._on_clear,
    cp.MarkRequest: CallSession._on_mark,
    cp.HangupRequest: CallSession._on_hangup_request,
    cp.TransferRequest: CallSession._on_transfer_request,
    cp.SendDtmf: CallSession._on_send_dtmf,
    cp.Malformed: CallSession._on_malformed,
    em.PlaybackStarted: CallSession._on_playback_started,
    em.PlaybackStopped: CallSession._on_playback_stopped,
    em.Dtmf: CallSession._on_dtmf,
    em.ExecuteComplete: CallSession._on_execute_complete,
    em.ForkEvent: CallSession._on_fork_event,
    TimerFired: CallSession._on_timer,
    PlaybackFailed: CallSession._on_playback_failed,
}
