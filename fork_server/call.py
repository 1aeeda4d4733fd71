"""One call's adapter: runs a :class:`CallSession` and performs its actions (I/O only).

Events from the fork socket, the connector and ESL are queued and fed to the session one
at a time, in arrival order, by a single task; actions are performed in the order the
session returned them. Caller audio is the exception (hot path): it goes straight from
the fork socket through ``session.caller_audio`` to the connector's send queue.

All of a call's tasks live in one TaskGroup, so a call that ends leaves nothing running.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from typing import Any, Awaitable, Callable, Mapping

from websockets.exceptions import ConnectionClosed

from . import esl_messages as em
from .audio_fork import CallerAudio, ForkDrained, ForkIntake, ForkText, parse_module_text
from .connector_link import ConnectorLink
from .dialects import Dialect, VoiceforkDialect
from .errors import (
    ConnectorProtocolError,
    EslCommandError,
    EslError,
    EslLostInFlight,
    EslUnavailable,
    ForkProtocolError,
    LocalUsageError,
)
from .metrics import Metrics
from .recording import RecordingStore
from .session import (
    ArmTimer,
    BreakPlayback,
    CallerInfoFailed,
    CallerInfoReady,
    CallSession,
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
    State,
    StopFork,
    TimerFired,
    TransferCall,
    WriteSegment,
)

__all__ = ["Call", "ConnectorTarget", "CallLogger"]

_EVENT_QUEUE_MAX = 4096  # events per call waiting for the session; far above any real burst
# The connector may fill only this much of it: past that its link stops reading (TCP pushes
# back on the connector), so a flood of connector messages never crowds out the switch's events.
_CONNECTOR_EVENTS_MAX = _EVENT_QUEUE_MAX // 2
# A mid-call reconnect happens while the caller may hear nothing: all attempts together get this
# long from the drop, so the route fallback starts inside the 2 s silence bar (issue 6).
_RECONNECT_BUDGET_S = 1.2
# ...but a reconnect always gets this long, even after a slow half-open detection.
_MIN_RECONNECT_S = 0.3
# connect_timeout is the caller's longest wait, up to the fallback *starting*: the handshake
# gets this much less (at most a fifth of the timeout), kept for sending the fallback over ESL
# on a busy box (a CI run measured 147 ms from giving up to the switch seeing the command).
_FALLBACK_LEAD_S = 0.25


_ERROR_TEXT = {
    "spool_full": "TTS dropped: the call's spool is full (playback.max_spool_bytes_per_call)",
    "connector_lost": "connector connection lost",
    "fork_buffer_overrun": "< mod_audio_fork::buffer_overrun: FreeSWITCH dropped caller audio",
    "fork_disconnect": "< mod_audio_fork::disconnect",
    "inband_bad_file": "< play_audio event with a file outside the switch's temp dir: refused",
    "tts_after_end": "connector audio after the call was ending: dropped",
}


class CallLogger(logging.LoggerAdapter):
    """Puts the call uuid on every line (STYLE.md)."""

    def process(self, msg: Any, kwargs: Any) -> tuple[Any, Any]:
        return f"[{self.extra['uuid']}] {msg}", kwargs


class ConnectorTarget:
    """Where and how to reach the route's connector."""

    def __init__(
        self,
        url: str,
        headers: Mapping[str, str],
        connect_timeout_s: float,
        ping_interval_s: float,
        send_queue_ms: int,
        ping_timeout_s: float | None = None,
        dialect: Callable[[], Dialect] = VoiceforkDialect,
    ) -> None:
        self.url = url
        self.dialect = dialect  # makes one per connection (fork_server.dialects.factory)
        self.headers = dict(headers)
        self.connect_timeout_s = connect_timeout_s
        self.ping_interval_s = ping_interval_s
        self.ping_timeout_s = ping_timeout_s if ping_timeout_s is not None else 2 * ping_interval_s
        self.max_queued_frames = max(5, send_queue_ms // 20)


class Call:
    def __init__(
        self,
        session: CallSession,
        fork: Any,  # fork_server.intake.ForkConnection (WsConnection)
        intake: ForkIntake,
        connector: ConnectorTarget,
        esl: Any,
        metrics: Metrics,
        logger: logging.Logger,
        recordings: RecordingStore | None = None,
    ) -> None:
        self.session = session
        self.recordings = recordings
        self.started_at = time.time()
        self.uuid = session.uuid
        self.fork = fork
        self.intake = intake
        self.connector = connector
        self.esl = esl
        self.switch = "default"  # which switch owns the call (its ESL link is ``esl``)
        self.metrics = metrics
        self.log = CallLogger(logger, {"uuid": session.uuid})
        self.started = time.monotonic()
        self._events: asyncio.Queue[Any] = asyncio.Queue(_EVENT_QUEUE_MAX)
        self._room = asyncio.Event()  # set while the connector may post
        self._room.set()
        self._link: ConnectorLink | None = None
        self._lost_link: ConnectorLink | None = None  # lost, until the next leg is up
        self._timers: dict[str, asyncio.TimerHandle] = {}
        self._done = asyncio.Event()
        self._tg: asyncio.TaskGroup | None = None
        self._made_dirs: set[str] = set()
        self._connector_lost_at: float | None = None
        self._link_dropped = 0  # caller frames a slow connector's link dropped
        self._errors_counted: dict[str, int] = {}
        self._retry_queue: list[Any] = []
        self._retrier: asyncio.Task[None] | None = None
        self._connecting: asyncio.Task[None] | None = None

    # ------------------------------------------------------------------ public

    def post(self, event: Any) -> None:
        """Queue an event for the session (from ESL, timers, the connector)."""
        try:
            self._events.put_nowait(event)
        except asyncio.QueueFull:
            self.metrics.errors.labels("event_queue_full").inc()
            self.log.error("event queue full; dropped %s", type(event).__name__)

    async def post_from_connector(self, event: Any) -> None:
        """Queue a connector event, waiting while the connector's share of the queue is used."""
        while self._events.qsize() >= _CONNECTOR_EVENTS_MAX:
            self._room.clear()
            await self._room.wait()
        self.post(event)

    def info(self) -> dict[str, Any]:
        s = self.session
        return {
            "uuid": self.uuid,
            "route": s.settings.route,
            "switch": self.switch,
            "state": s.state.value,
            "seconds": round(time.monotonic() - self.started, 1),
            "caller_bytes": s.caller_bytes,
            "connector_frames": s.connector_frames,
            "tts_bytes": s.tts_bytes,
            "barge_ins": s.barge_ins,
        }

    async def run(self) -> None:
        """Run the call until the session finishes; returns when everything is torn down."""
        try:
            async with asyncio.TaskGroup() as tg:
                self._tg = tg
                tg.create_task(self._session_loop(), name=f"session-{self.uuid}")
                # Hot path: fork messages arrive by callback from the socket read, no task switch.
                self.fork.set_receiver(self._on_fork_message, self._on_fork_closed)
                self._perform_now(self.session.start())
                await self._done.wait()
                self.fork.set_receiver(None, None)
                if self._retrier is not None:
                    self._retrier.cancel()
                if self._connecting is not None:
                    self._connecting.cancel()  # a hangup mid-connect must not wait for the connector
        finally:
            for handle in self._timers.values():
                handle.cancel()
            self._timers.clear()
            if self._link is not None:
                self._link.abort()
            self._remove_call_dir()

    # ------------------------------------------------------------------ fork side

    def _on_fork_message(self, message: bytes | str) -> None:
        """One fork WebSocket message, called from the socket read (REF "Frame order")."""
        try:
            if type(message) is bytes:
                pcm = self.intake.receive_audio(message)
                if pcm is not None:
                    self._caller_audio(pcm)
                    return
                events = self.intake.receive_binary(message)
            else:
                events = self.intake.receive_text(message)  # type: ignore[arg-type]
        except ForkProtocolError as exc:
            self.metrics.errors.labels("fork_protocol").inc()
            self.log.error("< fork: %s", exc)
            self.post(ForkFailed(str(exc)))  # the channel stays up: its fallback runs
            self.fork.set_receiver(None, self._on_fork_closed)
            self.fork.close_now(1008, "protocol error")
            return
        for ev in events:
            if type(ev) is CallerAudio:
                self._caller_audio(ev.pcm)
            elif type(ev) is ForkDrained:
                # REF "Close": after graceful-shutdown the server must close.
                self.log.info("< fork drained (graceful-shutdown); closing")
                self.fork.close_now(1000)
            elif type(ev) is ForkText and (mark := parse_module_text(ev.text)) is not None:
                self.post(mark)  # the jambonz module reporting one of our stream marks
            else:
                self.log.info("< fork text %.80r", getattr(ev, "text", ev))

    def _caller_audio(self, pcm: bytes) -> None:
        m = self.metrics
        m.frames_in.inc()
        sample = m.sample_relay()
        t0 = time.perf_counter() if sample else 0.0
        frames = self.session.caller_audio(pcm)
        if frames:
            link = self._link
            if link is not None and link is not self._lost_link:
                link.send_audio(frames)
                m.frames_out.inc(len(frames))
            elif link is not None:  # lost, and the session has not heard yet: keep for the next leg
                self.session.undelivered(frames)
        if sample:
            m.relay_latency.observe(time.perf_counter() - t0)

    def _on_fork_closed(self) -> None:
        self.post(ForkClosed(self.fork.close_code))

    # ------------------------------------------------------------------ the session loop

    async def _session_loop(self) -> None:
        while not self._done.is_set():
            event = await self._events.get()
            if not self._room.is_set() and self._events.qsize() < _CONNECTOR_EVENTS_MAX // 2:
                self._room.set()
            try:
                actions = self.session.handle(event)
            except LocalUsageError:
                self.metrics.errors.labels("session_bug").inc()
                self.log.exception("session rejected %s", type(event).__name__)
                continue
            if self.session.errors != self._errors_counted:
                self._count_errors()
            await self._perform(actions)

    def _count_errors(self) -> None:
        """Session error counts go to the metrics as they happen, not at the end of the call, and
        the first of each kind on a call is logged (issue 6); the call's last line has the totals."""
        for kind, n in self.session.errors.items():
            old = self._errors_counted.get(kind, 0)
            if n > old:
                self.metrics.errors.labels(kind).inc(n - old)
                self._errors_counted[kind] = n
                if not old and kind != "connector_malformed":  # that one the link logs itself
                    self.log.warning("%s (first on this call; voicefork_errors{kind=%s})", _ERROR_TEXT.get(kind, kind), kind)

    def _perform_now(self, actions: list[Any]) -> None:
        """Start actions from outside the session loop (the first LookupCaller)."""
        if self._tg is None:
            raise LocalUsageError("call is not running")
        self._tg.create_task(self._perform(actions))

    async def _perform(self, actions: list[Any]) -> None:
        for action in actions:
            handler = _ACTIONS[type(action)]
            try:
                await handler(self, action)
            except EslError as exc:
                # Reported on the call (REF: no command silently lost): counted and logged.
                self.metrics.errors.labels("esl_command").inc()
                self.log.error("> esl %s failed: %s", type(action).__name__, exc)
                never_sent = isinstance(exc, EslUnavailable) and not isinstance(exc, EslLostInFlight)
                if never_sent and self.session.state in (State.FALLBACK, State.ENDING) and type(action) in _FALLBACK_ACTIONS:
                    self._retry_when_esl_is_back(action)
                elif type(action) is PlayFile and not isinstance(exc, EslLostInFlight):
                    # Surely not queued on the switch: the session must not wait for it or call it
                    # played. Lost in flight it may still play, so it stays queued (and its file).
                    self.post(PlaybackFailed(action.path))
            except OSError as exc:
                self.metrics.errors.labels("spool_io").inc()
                self.log.error("spool I/O for %s failed: %s", type(action).__name__, exc)

    def _retry_when_esl_is_back(self, action: Any) -> None:
        """The route fallback could not reach the switch: ESL is down (or never came up). Only
        ESL can end or move the call, so its commands are sent again, in order, once ESL is
        up, for as long as the call lasts (issue 6: a caller must not stay parked for good)."""
        if self._tg is None or self._done.is_set():
            return
        self.log.warning("> %s waits for ESL to come back", type(action).__name__)
        self._retry_queue.append(action)
        if self._retrier is None or self._retrier.done():
            self._retrier = self._tg.create_task(self._retry_loop(), name=f"esl-retry-{self.uuid}")

    async def _retry_loop(self) -> None:
        while self._retry_queue and not self._done.is_set():
            action = self._retry_queue[0]
            await self.esl.wait_up(1.0)
            if not self.esl.up:
                continue
            try:
                await _ACTIONS[type(action)](self, action)
                self.log.info("> %s sent after ESL came back", type(action).__name__)
            except EslLostInFlight:
                pass  # it may have run; never sent twice
            except EslUnavailable:
                continue
            except EslError as exc:
                self.log.error("> esl %s failed after ESL came back: %s", type(action).__name__, exc)
            self._retry_queue.pop(0)

    # ------------------------------------------------------------------ actions

    async def _lookup(self, action: LookupCaller) -> None:
        self._tg.create_task(self._lookup_task(action.uuid))  # type: ignore[union-attr]

    async def _lookup_task(self, uuid: str) -> None:
        try:
            dump = em.parse_dump(await self.esl.api(em.uuid_dump(uuid)))
            info = em.caller_info(dump)
        except EslCommandError as exc:
            if "no such channel" in exc.reply.lower():
                # The channel ended before its fork opened (seen on a real 1.10.12: the socket is
                # then never closed by FreeSWITCH). Nothing can be played or transferred: end the
                # call by closing the fork, which ends the session (ForkClosed).
                self.log.warning("< esl: channel already gone (%s); closing its fork", exc.reply.strip())
                self.metrics.errors.labels("channel_gone").inc()
                self.fork.close_now(1000, "channel gone")
                return
            self.log.error("< esl caller lookup failed: %s", exc)
            self.post(CallerInfoFailed(str(exc)))
            return
        except EslError as exc:
            self.log.error("< esl caller lookup failed: %s", exc)
            self.post(CallerInfoFailed(str(exc)))
            return
        self.log.info("< caller %r <%s> to %s at %d Hz", info.name, info.number, info.destination, info.write_rate)
        recording = None
        if info.recording is not None:
            recording = self.recordings.accept(info.recording) if self.recordings is not None else None
            if recording is None:
                self.metrics.errors.labels("recording_path").inc()
                self.log.error("< esl: voicefork_recording %.200r is not a .wav under recording.dir; no sidecar", info.recording)
            else:
                self.log.info("< recording to %s", recording)
        self.post(CallerInfoReady(info.number, info.name, info.destination, info.write_rate, recording))

    async def _connect(self, action: ConnectConnector) -> None:
        self._connecting = self._tg.create_task(self._connect_task(action.resumed))  # type: ignore[union-attr]

    async def _connect_task(self, resumed: bool) -> None:
        c = self.connector
        # The caller's wait is counted from the call's start (caller lookup included) or from
        # the drop, so the fallback runs within connect_timeout of the fork opening, and
        # within the reconnect budget of a mid-call drop (issue 6).
        if resumed:
            lost = self._connector_lost_at if self._connector_lost_at is not None else time.monotonic()
            timeout = min(c.connect_timeout_s, _RECONNECT_BUDGET_S - (time.monotonic() - lost))
        else:
            lead = min(_FALLBACK_LEAD_S, c.connect_timeout_s / 5)
            timeout = c.connect_timeout_s - lead - (time.monotonic() - self.started)
        timeout = min(c.connect_timeout_s, max(_MIN_RECONNECT_S if resumed else 0.05, timeout))
        link = ConnectorLink(
            c.url,
            headers=c.headers,
            connect_timeout_s=timeout,
            ping_interval_s=c.ping_interval_s,
            ping_timeout_s=c.ping_timeout_s,
            max_queued_frames=c.max_queued_frames,
            max_replay_frames=self.session.settings.prestart_buffer_ms // 20,
            on_event=self.post_from_connector,
            on_lost=lambda code, reason: self._on_connector_lost(link, code, reason),
            log=self.log,
            on_dropped=self._on_frames_dropped,
            dialect=c.dialect,
        )
        t0 = time.monotonic()
        try:
            await link.open()
        except ConnectorProtocolError as exc:
            self.log.warning("> connector %s (%.0f ms)", exc, (time.monotonic() - t0) * 1000)
            self.post(ConnectorFailed(str(exc)))
            return
        if self._done.is_set():  # the call ended while we were connecting
            link.abort()
            return
        self._link = link
        self._lost_link = None
        self._connector_lost_at = None
        self.log.info("> connector %s up in %.1f ms%s", c.url, (time.monotonic() - t0) * 1000, " (resumed)" if resumed else "")
        self.post(ConnectorUp())

    def _on_frames_dropped(self, n: int) -> None:
        self._link_dropped += n
        self.metrics.frames_dropped.inc(n)  # live, not at the end of the call (issue 6)

    def _on_connector_lost(self, link: ConnectorLink, code: int | None, reason: str) -> None:
        if link is not self._link:
            return  # an old leg
        self._lost_link = link
        if self._connector_lost_at is None:
            # A half-open connector went quiet at its last pong, not when the ping timed out:
            # the caller's silence, and so the reconnect budget, counts from there.
            self._connector_lost_at = link.alive_at if link.timed_out else time.monotonic()
        replay = link.take_unconfirmed()
        if replay:
            self.session.undelivered(replay)
            self.log.info("> connector link lost with %d caller frames unconfirmed; they go to the next leg",
                          len(replay))
        self.post(ConnectorClosed(code, reason))

    async def _send_text(self, action: SendToConnector) -> None:
        if self._link is not None:
            self._link.send_message(action.message)

    async def _send_audio(self, action: SendAudioToConnector) -> None:
        if self._link is not None:
            self._link.send_audio(action.frames)
            self.metrics.frames_out.inc(len(action.frames))

    async def _close_connector(self, action: CloseConnector) -> None:
        link, self._link = self._link, None
        if link is not None:
            self._tg.create_task(link.close())  # type: ignore[union-attr]

    async def _write_segment(self, action: WriteSegment) -> None:
        directory = os.path.dirname(action.local_path)
        if directory not in self._made_dirs:
            os.makedirs(directory, mode=0o750, exist_ok=True)
            self._made_dirs.add(directory)
        # Complete before it is queued: FreeSWITCH plays a file only up to the EOF seen at open (REF).
        with open(action.local_path, "wb") as f:
            f.write(action.pcm)

    async def _play(self, action: PlayFile) -> None:
        self.metrics.segments.inc()
        if action.command == "uuid_broadcast":
            await self.esl.api(em.uuid_broadcast(action.uuid, action.path))
        else:
            await self.esl.execute_playback(em.PlaybackCommand(action.uuid, action.path))

    async def _send_fork(self, action: SendToFork | SendAudioToFork) -> None:
        try:
            await self.fork.send(action.text if type(action) is SendToFork else action.pcm)  # type: ignore[union-attr]
        except ConnectionClosed:
            pass

    async def _close_fork(self, action: CloseFork) -> None:
        self.fork.close_now(1000)

    async def _break(self, action: BreakPlayback) -> None:
        self.metrics.barge_ins.inc()
        await self.esl.api(em.uuid_break(action.uuid, all=True))

    async def _hangup(self, action: HangupCall) -> None:
        await self.esl.api(em.uuid_kill(action.uuid, action.cause))

    async def _transfer(self, action: TransferCall) -> None:
        await self.esl.api(em.uuid_transfer(action.uuid, action.target))

    async def _dtmf(self, action: SendDtmfToCaller) -> None:
        await self.esl.api(em.uuid_send_dtmf(action.uuid, action.digits))

    async def _queue_hangup(self, action: QueueHangup) -> None:
        await self.esl.sendmsg(action.uuid, em.execute_headers("hangup", "NORMAL_CLEARING"))

    async def _stop_fork(self, action: StopFork) -> None:
        await self.esl.api(em.uuid_audio_fork_stop(action.uuid))

    async def _delete(self, action: DeleteFile) -> None:
        try:
            os.unlink(action.local_path)
        except FileNotFoundError:
            pass

    async def _arm(self, action: ArmTimer) -> None:
        old = self._timers.pop(action.name, None)
        if old is not None:
            old.cancel()
        loop = asyncio.get_running_loop()
        self._timers[action.name] = loop.call_later(action.delay_s, self.post, TimerFired(action.name))

    async def _finished(self, action: Finished) -> None:
        s = action.summary
        self.log.info(
            "call ended: route=%s outcome=%s duration=%.1fs caller_in=%d B to_connector=%d frames "
            "tts_in=%d B segments_played=%d barge_ins=%d marks=%d/%d dropped=%d errors=%s",
            s.route,
            s.outcome,
            time.monotonic() - self.started,
            s.caller_bytes,
            s.connector_frames,
            s.tts_bytes,
            s.segments_played,
            s.barge_ins,
            s.marks_played,
            s.marks_cleared,
            s.dropped_frames + self._link_dropped,
            dict(s.errors) or "{}",
        )
        self.metrics.frames_dropped.inc(s.dropped_frames)  # pre-start overflow; the links' drops are counted live
        self.metrics.calls.labels(s.outcome).inc()
        self.metrics.tts_bytes.inc(s.tts_bytes)
        await self._write_sidecar(s)
        if self._link is not None:
            await self._link.close()
            self._link = None
        self._done.set()

    async def _write_sidecar(self, s: Any) -> None:
        caller = self.session.caller
        if self.recordings is None or caller is None or caller.recording is None:
            return
        data = self.recordings.sidecar(
            uuid=self.uuid, route=s.route, from_=caller.number, to=caller.destination, start=self.started_at,
            end=time.time(), outcome=s.outcome, marks_played=s.marks_played, marks_cleared=s.marks_cleared,
            recording=caller.recording,
        )
        try:
            path = await self.recordings.run(self.recordings.write_sidecar, caller.recording, data)
        except (OSError, ValueError) as exc:
            self.metrics.errors.labels("recording_sidecar").inc()
            self.log.error("> recording sidecar for %s: %s", caller.recording, exc)
            return
        self.log.info("> recording sidecar %s", path)

    def _remove_call_dir(self) -> None:
        for directory in self._made_dirs:
            try:
                for name in os.listdir(directory):
                    os.unlink(os.path.join(directory, name))
                os.rmdir(directory)
            except FileNotFoundError:
                pass
            except OSError as exc:
                self.log.error("could not remove spool dir %s: %s", directory, exc)


# What ends or moves a call (the route fallback, the connector's hangup or transfer); resent once
# ESL is back (see Call._retry_when_esl_is_back).
_FALLBACK_ACTIONS = frozenset({HangupCall, TransferCall, StopFork, PlayFile, QueueHangup})

_ACTIONS: dict[type, Callable[[Call, Any], Awaitable[None]]] = {
    LookupCaller: Call._lookup,
    ConnectConnector: Call._connect,
    SendToConnector: Call._send_text,
    SendAudioToConnector: Call._send_audio,
    CloseConnector: Call._close_connector,
    WriteSegment: Call._write_segment,
    PlayFile: Call._play,
    SendToFork: Call._send_fork,
    SendAudioToFork: Call._send_fork,
    CloseFork: Call._close_fork,
    BreakPlayback: Call._break,
    HangupCall: Call._hangup,
    TransferCall: Call._transfer,
    SendDtmfToCaller: Call._dtmf,
    StopFork: Call._stop_fork,
    QueueHangup: Call._queue_hangup,
    DeleteFile: Call._delete,
    ArmTimer: Call._arm,
    Finished: Call._finished,
}
