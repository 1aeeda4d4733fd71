"""One call's state machine: events in, actions out, no I/O (STYLE.md, after h11's ``_state.py``).

Every move is in ``TRANSITIONS``: ``{state: {EventType: next_state}}``. ``STAY`` keeps the
state, ``IGNORE`` drops an event that can legitimately arrive late (a peer racing the
hangup); anything missing from the table raises :class:`InvalidTransition`, since it
means our own adapter fed an event it should not have.

The adapter (``fork_server.call``) performs the returned actions in order and feeds the
results back as events. The hot path, caller audio, does not go through the table: at
50 frames/s per call it is a method, :meth:`CallSession.caller_audio`, gated by state.

What the caller hears of the connector's speech is the playback core's job
(:mod:`fork_server.playback`, one small strategy per transport); the session feeds it and
decides what a finished playback means for the call (a hangup or transfer after playback).
Events and actions are values of :mod:`fork_server.actions`.
"""

from __future__ import annotations

import enum
from collections import deque
from dataclasses import dataclass
from typing import Any, Mapping

from . import audio_fork, esl_messages as em
from .dialects import messages as msg
from .actions import (
    ArmTimer,
    BreakPlayback,
    CallerInfoFailed,
    CallerInfoReady,
    CallSummary,
    CloseConnector,
    CloseFork,
    ConnectConnector,
    ConnectorClosed,
    ConnectorFailed,
    ConnectorUp,
    DeleteFile,
    Finished,
    ForkClosed,
    ForkFailed,
    HangupCall,
    LookupCaller,
    PlaybackFailed,
    PlayFile,
    QueueHangup,
    SendAudioToConnector,
    SendAudioToFork,
    SendDtmfToCaller,
    SendToConnector,
    SendToFork,
    Shutdown,
    StopFork,
    TimerFired,
    TransferCall,
    WriteSegment,
)
from .errors import InvalidTransition, LocalUsageError
from .pcm import Framer, StreamResampler
from .playback import PROBE_TIMER, FileTransport, InbandTransport, Playback, StreamPlayback
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
    "SendAudioToFork",
]

CONNECTOR_RATE = 16000  # voicefork.v1's; a dialect may carry another (SessionSettings.connector_rate)
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


# --- the table

STAY = "stay"
IGNORE = "ignore"

def _table() -> dict[State, dict[type, Any]]:
    S = State
    connector_events = (
        msg.TtsAudio,
        msg.AudioFormat,
        msg.Clear,
        msg.MarkRequest,
        msg.HangupRequest,
        msg.TransferRequest,
        msg.SendDtmf,
        msg.Malformed,
    )
    esl_events = (em.PlaybackStarted, em.PlaybackStopped, em.ExecuteComplete, em.Dtmf, em.ForkEvent,
                  audio_fork.ModuleMark)
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
    segment_ms: int = 2000
    lead_ms: int = 100
    ptime_ms: int = 20
    reconnect_attempts: int = 1
    max_spool_bytes: int = 8 << 20
    prestart_buffer_ms: int = 2000  # caller audio kept while the connector connects
    tts_idle_flush_s: float = 0.06
    start_lead_ms: int = 0  # file playback: an utterance's first file waits this long (the connector's playout_lead_ms)
    switch_temp_dir: str = "/tmp"
    connector_rate: int = CONNECTOR_RATE  # caller audio to the connector: the dialect's audio_rate
    direction: str = "inbound"  # | outbound: a call the fork server originated (POST /v1/calls)
    parties: tuple[str, str] | None = None  # outbound: (from, to) of the request, instead of the leg's caller ID


class CallSession:
    """The sans-I/O core of one call (one mod_audio_fork WebSocket)."""

    def __init__(self, uuid: str, settings: SessionSettings) -> None:
        if not valid_uuid(uuid):
            raise LocalUsageError(f"invalid call uuid {uuid!r}")
        if settings.playback_command not in ("sendmsg", "uuid_broadcast"):
            raise LocalUsageError(f"unknown playback command {settings.playback_command!r}")
        transport: FileTransport | InbandTransport
        if settings.transport in ("file", "stream"):
            transport = FileTransport(settings.spool, settings.playback_command)
        elif settings.transport == "inband":
            transport = InbandTransport(settings.switch_temp_dir, settings.playback_command)
        else:
            raise LocalUsageError(f"unknown playback transport {settings.transport!r}")
        self.uuid = uuid
        self.settings = settings
        self.state = State.LOOKUP
        self.caller: CallerInfoReady | None = None
        self.write_rate = settings.fork_rate
        self.outcome = "completed"
        self.errors: dict[str, int] = {}
        # caller → connector
        if settings.connector_rate not in (8000, 16000, 24000, 48000):
            raise LocalUsageError(f"connector_rate: expected 8000, 16000, 24000 or 48000, got {settings.connector_rate!r}")
        self._frame_bytes = settings.connector_rate * FRAME_MS // 1000 * 2
        self._up = StreamResampler(settings.fork_rate, settings.connector_rate)
        self._framer = Framer(self._frame_bytes, max_bytes=self._frame_bytes * 64)
        self._prestart: deque[bytes] = deque(maxlen=max(1, settings.prestart_buffer_ms // FRAME_MS))
        self.caller_bytes = 0
        self._made = 0  # 16 kHz frames made from the caller's audio: the caller's timeline
        self.replayed_frames = 0
        self.connector_frames = 0
        self.dropped_frames = 0
        # connector → caller: files (the fallback prompt in every mode, and the TTS unless it streams)
        self.files = Playback(
            uuid, transport, command=settings.playback_command, ptime_ms=settings.ptime_ms,
            first_segment_ms=settings.first_segment_ms, segment_ms=settings.segment_ms, lead_ms=settings.lead_ms,
            max_spool_bytes=settings.max_spool_bytes, tts_idle_flush_s=settings.tts_idle_flush_s,
            start_lead_ms=settings.start_lead_ms,
        )
        self.files.errors = self.errors  # one count per call, whoever counts
        self.stream: StreamPlayback | None = None
        if settings.transport == "stream":
            self.stream = StreamPlayback(uuid, tts_idle_flush_s=settings.tts_idle_flush_s)
            self.stream.errors = self.errors
        self.playback: Playback | StreamPlayback = self.stream or self.files
        self.barge_ins = 0
        self._reconnects_left = settings.reconnect_attempts
        self._pending_end: HangupRequest | TransferRequest | None = None  # type: ignore[name-defined]
        self._connector_connected = False

    def _cores(self) -> list[Playback | StreamPlayback]:
        return [self.files] if self.stream is None else [self.files, self.stream]

    @property
    def tts_bytes(self) -> int:
        return sum(c.tts_bytes for c in self._cores())

    @property
    def segments_played(self) -> int:
        return sum(c.segments_played for c in self._cores())

    @property
    def marks_played(self) -> int:
        return sum(c.marks_played for c in self._cores())

    @property
    def marks_cleared(self) -> int:
        return sum(c.marks_cleared for c in self._cores())

    # ---------------------------------------------------------------- entry points

    def start(self) -> list[Any]:
        """Actions to run once the fork's metadata has been accepted."""
        return [LookupCaller(self.uuid)]

    def caller_audio(self, pcm: bytes) -> list[bytes]:
        """Caller PCM at the fork rate in; 20 ms frames at the connector rate to send now out."""
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
        if self.state is not State.ENDED:
            for core in self._cores():
                if core.needs_watchdog(event, actions):
                    actions.append(core.watchdog())
        return actions

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

    def _start_message(self, resumed: bool, offset_ms: int = 0) -> msg.Start:
        info = self.caller
        parties = self.settings.parties
        return msg.Start(
            uuid=self.uuid,
            route=self.settings.route,
            from_=parties[0] if parties else info.number if info else "",
            to=parties[1] if parties else info.destination if info else "",
            direction=self.settings.direction,
            caller_name=info.name if info else "",
            language=self.settings.language,
            metadata=dict(self.settings.metadata),
            sample_rate=self.settings.connector_rate,
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
        acts: list[Any] = self._drop_playback()
        if isinstance(event, Shutdown) and self._connector_open():
            self._connector_connected = False
            acts += [SendToConnector(self._stop_message("shutdown")), CloseConnector()]
        # CallerInfoFailed (no ESL) too: the fallback's commands wait in the adapter until ESL
        # is back, since nothing else can end or move the call (REF: no mod_audio_fork message
        # hangs up, transfers or plays).
        if s.fallback_action == "transfer" and s.fallback_target:
            return acts + [TransferCall(self.uuid, s.fallback_target), self._stop_fork()]
        if isinstance(event, ForkFailed):
            self.outcome = "fork_error"
            if s.fallback_action != "transfer":  # (a transfer stops the fork anyway)
                acts.append(self._stop_fork())  # we close it: the bug would stay attached (REF "Close")
        if s.fallback_action == "play" and s.fallback_file:
            # Queued behind the prompt on the switch (event-lock): the hangup happens after it
            # has played even if we never see its PLAYBACK_STOP, or the fork is gone by then.
            return acts + self.files.prompt(s.fallback_file) + [QueueHangup(self.uuid)]
        return acts + [HangupCall(self.uuid)]

    def _stop_message(self, reason: str) -> msg.Stop:
        return msg.Stop(reason, self.caller.recording if self.caller is not None else None)

    def _connector_open(self) -> bool:
        return self._connector_connected

    def _stop_fork(self) -> StopFork | CloseFork:
        # Streaming: never `uuid_audio_fork stop` while our frames may still arrive (see CloseFork).
        return CloseFork() if self.stream is not None else StopFork(self.uuid)

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
            acts += [SendToConnector(self._stop_message(reason)), CloseConnector()]
        else:
            acts.append(CloseConnector())
        for core in self._cores():
            acts += core.finish()
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
            dropped_frames=self.dropped_frames + self._framer.dropped_bytes // self._frame_bytes,
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
        acts: list[Any] = []
        for core in self._cores():
            acts += core.begin(self.write_rate)
        return acts + [ConnectConnector(resumed=False)]

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

    def _on_tts(self, ev: msg.TtsAudio) -> list[Any]:
        if self.state is not State.ACTIVE or self._pending_end is not None or not self.playback.ready:
            self._count("tts_after_end")
            return []
        return self.playback.tts(ev)

    def _on_audio_format(self, ev: msg.AudioFormat) -> list[Any]:
        acts: list[Any] = []
        for core in self._cores():  # both: the files take over if the stream never plays
            acts += core.audio_format(ev)
        return acts

    def _on_clear(self, ev: msg.Clear) -> list[Any]:
        self.barge_ins += 1
        return self._drop_playback()

    def _drop_playback(self) -> list[Any]:
        acts: list[Any] = []
        for core in self._cores():
            acts += core.drop()
        if self._pending_end is not None:
            # Nothing is left to wait for: the requested hangup/transfer happens now.
            pending, self._pending_end = self._pending_end, None
            acts += self._end_now(pending)
        return acts

    def _on_mark(self, ev: msg.MarkRequest) -> list[Any]:
        return self.playback.mark(ev.name)

    def _on_hangup_request(self, ev: msg.HangupRequest) -> list[Any]:
        return self._request_end(ev)

    def _on_transfer_request(self, ev: msg.TransferRequest) -> list[Any]:
        return self._request_end(ev)

    def _request_end(self, ev: Any) -> list[Any]:
        acts = self.playback.flush() if ev.after_playback else self._drop_playback()
        if ev.after_playback and self.playback.last_item() is not None:
            self._pending_end = ev
            self._move(State.ENDING)
            return acts
        return acts + self._end_now(ev)

    def _end_now(self, ev: Any) -> list[Any]:
        if self.state is not State.ENDING:
            self._move(State.ENDING)
        self._connector_connected = False
        if isinstance(ev, msg.TransferRequest):
            self.outcome = "transfer"
            return [
                SendToConnector(self._stop_message("transfer")),
                CloseConnector(),
                TransferCall(self.uuid, ev.target),
                self._stop_fork(),
            ]
        self.outcome = "connector_hangup"
        return [SendToConnector(self._stop_message("connector_hangup")), CloseConnector(), HangupCall(self.uuid)]

    def _end_if_played(self) -> list[Any]:
        """A hangup or transfer asked for after playback goes once nothing is left to play."""
        if self.state is State.ENDING and self._pending_end is not None and all(c.idle for c in self._cores()):
            pending, self._pending_end = self._pending_end, None
            return self._end_now(pending)
        return []

    def _on_send_dtmf(self, ev: msg.SendDtmf) -> list[Any]:
        return [SendDtmfToCaller(self.uuid, ev.digits)]

    def _on_malformed(self, ev: msg.Malformed) -> list[Any]:
        self._count("connector_malformed")
        return []

    # ---------------------------------------------------------------- handlers: ESL

    def _on_playback_started(self, ev: em.PlaybackStarted) -> list[Any]:
        return self.files.started(ev)

    def _on_playback_stopped(self, ev: em.PlaybackStopped) -> list[Any]:
        return self.files.stopped(ev) + self._end_if_played()

    def _on_playback_failed(self, ev: PlaybackFailed) -> list[Any]:
        return self.files.failed(ev.path) + self._end_if_played()

    def _on_module_mark(self, ev: audio_fork.ModuleMark) -> list[Any]:
        if self.stream is None:
            return []
        return self.stream.module_mark(ev) + self._end_if_played()

    def _on_dtmf(self, ev: em.Dtmf) -> list[Any]:
        if self.state is not State.ACTIVE:
            return []
        return [SendToConnector(msg.DtmfPressed(ev.digit, ev.duration_ms))]

    def _on_execute_complete(self, ev: em.ExecuteComplete) -> list[Any]:
        return self.files.not_started(ev) + self._end_if_played()

    def _on_fork_event(self, ev: em.ForkEvent) -> list[Any]:
        if ev.name == "play_audio":
            return self.files.file_arrived(ev)
        if ev.name == "buffer_overrun":
            self._count("fork_buffer_overrun")
        elif ev.name == "disconnect":
            self._count("fork_disconnect")
        return []

    def _on_timer(self, ev: TimerFired) -> list[Any]:
        acts: list[Any] = []
        for core in self._cores():
            acts += core.timer(ev.name)
        if ev.name == PROBE_TIMER and self.stream is not None and self.stream.failed:
            acts += self._stream_to_files()
        return acts + self._end_if_played()

    def _stream_to_files(self) -> list[Any]:
        """The module never answered the probe (the drachtio module, or a start without the
        bidirectional arguments): this call's speech goes as files, what waited included."""
        stream = self.stream
        if stream is None:
            return []
        audio, marks = stream.take_unsent()
        self.playback = self.files
        acts: list[Any] = []
        if audio and self.state is State.ACTIVE:
            acts += self.files.tts(msg.TtsAudio(audio, self.write_rate))
        for name in marks:
            acts += self.files.mark(name)
        return acts


_MISSING = object()

# Imported names used in annotations above.
HangupRequest = msg.HangupRequest
TransferRequest = msg.TransferRequest

_HANDLERS = {
    CallerInfoReady: CallSession._on_caller_info,
    ConnectorClosed: CallSession._on_connector_lost,
    ConnectorFailed: CallSession._on_connector_lost,
    msg.TtsAudio: CallSession._on_tts,
    msg.AudioFormat: CallSession._on_audio_format,
    msg.Clear: CallSession._on_clear,
    msg.MarkRequest: CallSession._on_mark,
    msg.HangupRequest: CallSession._on_hangup_request,
    msg.TransferRequest: CallSession._on_transfer_request,
    msg.SendDtmf: CallSession._on_send_dtmf,
    msg.Malformed: CallSession._on_malformed,
    em.PlaybackStarted: CallSession._on_playback_started,
    em.PlaybackStopped: CallSession._on_playback_stopped,
    em.Dtmf: CallSession._on_dtmf,
    em.ExecuteComplete: CallSession._on_execute_complete,
    em.ForkEvent: CallSession._on_fork_event,
    audio_fork.ModuleMark: CallSession._on_module_mark,
    TimerFired: CallSession._on_timer,
    PlaybackFailed: CallSession._on_playback_failed,
}
