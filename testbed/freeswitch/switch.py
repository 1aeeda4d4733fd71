"""The emulated FreeSWITCH core: channels, the rendered dialplan, API commands, playback, events.

It implements the ``EslCore`` interface of docs/DESIGN.md (``api``, ``sendmsg``,
``subscribe``) so :mod:`testbed.freeswitch.esl_server` can put the real ESL wire protocol in
front of it. Facts are from ../shared/reference/freeswitch-observed.md (REF); where REF is
silent the docstring says "assumption".

One clock drives every channel, frame by frame (ptime), as FreeSWITCH's media loop does:
each tick a channel reads the caller's frame (fed to its forks) and writes the next frame of
the playing file into the caller's :class:`~testbed.freeswitch.media.Ear`. So a hole is a
missing frame on the channel clock, and "within one frame" is countable.

A parked channel writes a frame only while a file plays, or on every tick when the channel
variable ``send_silence_when_idle`` is a non-zero number when ``park`` starts (source:
switch_ivr.c:1014-1068, read once per park; ``-1`` writes exact zeros, other values noise of
amplitude 32768/value, assumption: not the same numbers as FreeSWITCH's generator). Measured with
the jambonz module (/tmp/jambonz_report.md Q1): without it a plain park writes nothing.

``fork_module`` chooses the mod_audio_fork build: ``"drachtio"`` (REF, the default) or
``"jambonz"`` (jambonz 30f2189, measured 2026-12-06 on 1.10.12: /tmp/jambonz_report.md, JREP in
the docstrings). The jambonz module's bidirectional stream plays the server's binary frames into
every frame the channel writes (:mod:`testbed.freeswitch.jambonz`); ``Ear`` frames say how many
streamed samples each carried, and ``Channel.mark_replies`` lists the mark replies by tick.

``record_session <path>`` (mod_dptools; switch_ivr_async.c 1.10.12) records from the tick it
runs until hangup, then writes a 16-bit WAV at the channel rate: with ``RECORD_STEREO=true``
(read when the recording starts) the caller's frame left and the frame the caller heard right,
a tick with no frame either way adding zeros (assumption: FreeSWITCH's record bug fills a
missing side with silence; the real-switch test measures alignment), else their mix. Missing
directories are made (switch_dir_make_recursive). Past ``MAX_RECORDING_FRAMES`` it stops
recording and logs an error.

``limit hash <realm> <id> <max> [<where> [<dialplan> [<context>]]]`` (mod_dptools
limit_function and mod_hash limit_incr_hash, 1.10.12 source): the count goes up unless it would
pass ``max``; a call over it is hung up with the cause after ``!`` (``!USER_BUSY``: a 486 before
answer) or transferred to ``<where>`` (default ``limit_exceeded``) in ``<context>`` (default
the call's own), where the rendered dialplan runs again (an extension it does not have: the
test sees ``transferred_to``). The count comes back when the channel hangs up or goes back to
routing, i.e. on any transfer (switch_limit.c limit_state_handler, without
``limit_ignore_transfer``).

``bgapi originate {vars}sofia/gateway/<gw>/<number> <exten> XML <context>`` (outbound calls) is
emulated as a real 1.10.12 did it (tests/freeswitch/test_outbound_real.py): a test says what each
callee does (``callees[number]``, else ``default_callee``: "answer", "busy", "no-answer" or a
cause) after ``ring_ms``, the ringing ones with a CHANNEL_PROGRESS first; the leg (``originated``) is a :class:`Channel` with
``direction="outbound"`` whose far end is the callee; answered, it runs ``<exten>`` of the
rendered ``<context>`` (``load_dialplan(path, context=...)``); ``gateways`` are the sofia
gateways the switch has (another is ``-ERR INVALID_GATEWAY``).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import dataclasses
import itertools
import json
import logging
import os
import re
import time
import typing
import uuid as uuidlib
import wave
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping
from urllib.parse import quote

import numpy as np

from .dialplan import Action, Dialplan
from .expand import expand
from .fork_args import ForkCommand, atoi, parse_fork_command, parse_jambonz_fork_command
from .fork_client import ForkBug
from .jambonz import StreamPlayout
from .media import Ear, Mouth, SoundFileError, read_sound_file, resample_clip
from .timings import Timings

__all__ = ["EmulatedSwitch", "Channel", "SwitchCrashed", "EmulatorError", "FORK_MODULES"]

log = logging.getLogger("testbed.freeswitch")

Listener = Callable[[Mapping[str, str], "str | None"], None]
_PLAY_AUDIO_COUNTER = itertools.count(1)
MAX_RECORDING_FRAMES = 4 * 3600 * 50  # 4 hours of 20 ms ticks; the emulator keeps them in memory  # REF: the <n> of play_audio files is global
FORK_MODULES = ("drachtio", "jambonz")


class EmulatorError(RuntimeError):
    """The emulated switch met something it cannot do faithfully (fails the test loudly)."""


class SwitchCrashed(EmulatorError):
    """The whole FreeSWITCH process died. REF: a playAudio without audioContentType segfaults it.
    JREP Q7 (jambonz): the same ``playAudio`` to a fork in file mode; binary frames from the
    server arriving while ``uuid_audio_fork <uuid> stop`` runs (heap corruption)."""


@dataclass(slots=True)
class _Play:
    path: str
    kind: str  # sendmsg | broadcast | dialplan | hangup (path holds the cause)
    event_lock: bool = True
    not_before_ms: float = 0.0
    lead_left: int = 0
    pcm: bytes = b""
    pos: int = 0
    started: bool = False  # PLAYBACK_START sent
    broken: str | None = None  # "all" | "one": uuid_break seen, events go out on the next tick
    app_uuid: str = field(default_factory=lambda: str(uuidlib.uuid4()))
    done: asyncio.Future[str] | None = None


class Channel:
    """One call leg, parked in the dialplan with a fork attached: an inbound call, or the leg an
    ``originate`` made (``direction="outbound"``; its far end, the caller's side here, is the
    callee: ``say`` is what the callee says, ``ear`` what it hears)."""

    def __init__(
        self,
        switch: "EmulatedSwitch",
        destination: str,
        caller_id_number: str,
        caller_id_name: str,
        codec: str,
        ptime_ms: int,
        caller_sends_rtp: bool,
        uuid: str | None = None,
        direction: str = "inbound",
        context: str = "public",
    ) -> None:
        self.switch = switch
        self.uuid = uuid or str(uuidlib.uuid4())
        self.direction = direction
        self.rate = 16000 if codec.upper() in ("L16", "G722") else 8000
        self.ptime_ms = ptime_ms
        self.frame_bytes = self.rate * ptime_ms // 1000 * 2
        self.caller_sends_rtp = caller_sends_rtp
        created = str(int(time.time() * 1_000_000))
        self.profile = {
            "Caller-Direction": direction,
            "Caller-Logical-Direction": direction,
            "Caller-Username": caller_id_number,
            "Caller-Dialplan": "XML",
            "Caller-Caller-ID-Name": caller_id_name,
            "Caller-Caller-ID-Number": caller_id_number,
            "Caller-Orig-Caller-ID-Name": caller_id_name,
            "Caller-Orig-Caller-ID-Number": caller_id_number,
            "Caller-Network-Addr": "127.0.0.1",
            "Caller-ANI": caller_id_number,
            "Caller-Destination-Number": destination,
            "Caller-Unique-ID": self.uuid,
            "Caller-Source": "mod_sofia",
            "Caller-Context": context,
            "Caller-Channel-Name": f"sofia/external/{caller_id_number}@127.0.0.1",
            "Caller-Profile-Index": "1",
            "Caller-Profile-Created-Time": created,
            "Caller-Channel-Created-Time": created,
            **{f"Caller-Channel-{k}-Time": "0" for k in ("Answered", "Progress", "Progress-Media", "Hangup",
                                                          "Transfer", "Resurrect", "Bridged")},
            "Caller-Channel-Last-Hold": "0",
            "Caller-Channel-Hold-Accum": "0",
            "Caller-Screen-Bit": "true",
            "Caller-Privacy-Hide-Name": "false",
            "Caller-Privacy-Hide-Number": "false",
        }
        fill = {"{uuid}": self.uuid, "{destination}": destination, "{caller_number}": caller_id_number,
                "{caller_name}": caller_id_name}
        self.vars: dict[str, str] = {
            **{k: _fill(v, fill) for k, v in _SIP_CHANNEL_VARS.items()},
            "uuid": self.uuid,
            "call_uuid": self.uuid,
            "direction": direction,
            "read_codec": codec.upper(),
            "write_codec": codec.upper(),
            "read_rate": str(self.rate),
            "write_rate": str(self.rate),
            "destination_number": destination,
            "caller_id_number": caller_id_number,
            "caller_id_name": caller_id_name,
        }
        self.state = "CS_ROUTING"
        self.answered = False
        self.parked = False
        self.mouth = Mouth(self.rate, ptime_ms)
        self.ear = Ear(self.rate, ptime_ms)
        self.t0 = switch.now()
        self.tick = 0  # frames processed on this channel's clock
        self.queue: deque[_Play] = deque()
        self.current: _Play | None = None
        self.nested: list[_Play] = []  # playbacks without event-lock nest (REF)
        self.bugs: dict[str, ForkBug] = {}
        self.dtmf_to_caller: list[tuple[str, float]] = []
        self.temp_files: list[str] = []
        self.transferred_to: str | None = None
        self.transferred_context: str | None = None
        self.verbose_events = False
        self.hangup_cause: str | None = None
        self.extension: str | None = None
        self.executed: list[Action] = []
        self.hungup = asyncio.Event()
        self.playbacks: list[tuple[str, str, int]] = []  # (path, status, tick it ended on)
        self._sched_hangup: asyncio.TimerHandle | None = None
        self.sync_silence = 0  # caller frames the forks get as silence (audio sync without a jitter buffer)
        self.silenced_frames = 0  # total, for tests
        self.jitter_buffer_ms = 0  # jitterbuffer_msec when the media came up (answer)
        self.idle_silence = 0  # atoi(send_silence_when_idle) when park started; 0: park writes nothing
        self._noise = np.random.default_rng(int(self.uuid[:8], 16))
        # jambonz: (tick, bugname, text) of every mark reply the module sent on a fork socket.
        self.mark_replies: list[tuple[int, str, str]] = []
        self.binary_discarded = 0  # jambonz: binary frames dropped as "unexpected" (bidirectional off)
        # record_session: (path, stereo, [(caller frame, heard frame)]) while recording
        self.recording: tuple[str, bool, list[tuple[bytes, bytes]]] | None = None
        self.recordings: list[str] = []  # files written at hangup
        self.limits: list[tuple[str, str]] = []  # (realm, id) this channel counts in (limit hash)
        self._heard: bytes | None = None  # the frame the caller heard this tick

    # ------------------------------------------------------------ test-side controls

    def say(self, pcm: bytes) -> None:
        """Queue caller speech (s16le at the channel rate), one ptime per tick from now."""
        self.mouth.say(pcm)

    def press(self, digit: str, duration_ms: int = 100) -> None:
        """The caller sends an RFC 2833 digit: a DTMF event (duration in 8 kHz samples, assumption)."""
        self.switch._emit(
            "DTMF", self, {"DTMF-Digit": digit, "DTMF-Duration": str(duration_ms * 8), "DTMF-Source": "RTP"}
        )

    def hangup(self, cause: str = "NORMAL_CLEARING") -> None:
        self.switch._hangup(self, cause)

    def ms(self) -> float:
        return (self.switch.now() - self.t0) * 1000

    def var(self, name: str) -> str | None:
        """switch_channel_get_variable_dup: the channel's variables, then the caller profile,
        then the switch's global variables (REF "Event sizes"; mod_audio_fork reads its
        Basic-auth credentials this way)."""
        if name in self.vars:
            return self.vars[name]
        if name in self.profile:
            return self.profile[name]
        return self.switch.globals.get(name)

    @property
    def alive(self) -> bool:
        return self.hangup_cause is None


class EmulatedSwitch:
    """An emulated FreeSWITCH with mod_audio_fork, driven by the rendered dialplan."""

    def __init__(
        self,
        dialplan_path: str | Path | None = None,
        *,
        timings: Timings | None = None,
        temp_dir: str = "/tmp",
        globals_: dict[str, str] | None = None,
        fork_module: str = "drachtio",
    ) -> None:
        if fork_module not in FORK_MODULES:
            raise ValueError(f"fork_module must be drachtio or jambonz, got {fork_module!r}")
        self.fork_module = fork_module
        self.globals: dict[str, str] = dict(globals_ or {})  # the XML preprocessor's "set" lines land here
        self.dialplan = Dialplan.load(dialplan_path, self.globals) if dialplan_path else Dialplan([])
        self.timings = timings or Timings()
        self.temp_dir = temp_dir
        self.core_uuid = str(uuidlib.uuid4())
        self.channels: dict[str, Channel] = {}
        self.ended: list[Channel] = []
        self.listeners: list[Listener] = []
        self.errors: list[str] = []  # things FreeSWITCH would log at ERR level
        self.crashed: str | None = None
        self.api_log: list[tuple[float, str]] = []
        self.sendmsg_log: list[tuple[float, str, dict[str, str]]] = []  # (time, uuid, headers) as received
        self._loop: asyncio.AbstractEventLoop | None = None
        self._clock: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._event_seq = 0
        self._started_at = 0.0
        self._peak = 0  # most channels at once (status)
        self.limit_usage: dict[tuple[str, str], set[str]] = {}  # mod_hash: (realm, id) -> channel uuids
        # originate (bgapi): dialplan contexts besides public, the sofia gateways, and what each
        # callee does: "answer", "busy", "no-answer" (rings until originate_timeout) or a cause.
        self.contexts: dict[str, Dialplan] = {}
        self.gateways: set[str] = set()
        self.callees: dict[str, str] = {}
        self.default_callee = "answer"
        self.ring_ms = 100.0  # from the originate to the callee's answer or refusal
        self.originated: list[Channel] = []  # every leg originate made, answered or not

    def load_dialplan(self, path: str | Path, globals_: dict[str, str] | None = None, context: str = "public") -> None:
        """(Re)load the rendered dialplan of ``context``, as ``reloadxml`` would."""
        if globals_:
            self.globals.update(globals_)
        if context == "public":
            self.dialplan = Dialplan.load(path, self.globals)
        else:
            self.contexts[context] = Dialplan.load(path, self.globals)

    # ------------------------------------------------------------ lifecycle

    def now(self) -> float:
        return time.monotonic() if self._loop is None else self._loop.time()

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._started_at = self._loop.time()
        self._clock = self._loop.create_task(self._run_clock(), name="switch-clock")

    async def close(self) -> None:
        for ch in list(self.channels.values()):
            self._hangup(ch, "SYSTEM_SHUTDOWN")
        await self.settle()
        if self._clock is not None:
            self._clock.cancel()
            await asyncio.gather(self._clock, return_exceptions=True)

    async def settle(self, timeout: float = 3.0) -> None:
        """Wait for forks and dialplan tasks of ended channels to finish."""
        pending = [t for t in self._tasks if not t.done()]
        if pending:
            await asyncio.wait(pending, timeout=timeout)

    def check(self) -> None:
        """Raise if the switch crashed or logged an emulation error (tests call this)."""
        if self.crashed:
            raise SwitchCrashed(self.crashed)

    def subscribe(self, listener: Listener) -> Callable[[], None]:
        self.listeners.append(listener)
        return lambda: self.listeners.remove(listener) if listener in self.listeners else None

    # ------------------------------------------------------------ calls

    def place_call(
        self,
        destination: str,
        caller_id_number: str = "+15550001111",
        caller_id_name: str = "Test Caller",
        *,
        codec: str = "PCMU",
        ptime_ms: int | None = None,
        caller_sends_rtp: bool = True,
        variables: Mapping[str, str] | None = None,
    ) -> Channel:
        """An inbound INVITE: route it through the rendered dialplan and run the extension.

        ``variables`` are channel variables the INVITE brought (e.g. ``sip_h_X-Foo`` from SIP
        headers): caller-controlled, like the caller ID."""
        self._alive()
        ch = Channel(
            self, destination, caller_id_number, caller_id_name, codec,
            ptime_ms or self.timings.ptime_ms, caller_sends_rtp,
        )
        if variables:
            ch.vars.update(variables)
        self.channels[ch.uuid] = ch
        self._peak = max(self._peak, len(self.channels))
        self._emit("CHANNEL_CREATE", ch)
        routed = self.dialplan.route({"destination_number": destination})
        if routed is None:
            self.errors.append(f"no route for {destination}")
            self._hangup(ch, "NO_ROUTE_DESTINATION")
            return ch
        ch.extension, actions = routed
        self._spawn(self._execute(ch, actions), f"dialplan-{ch.uuid}")
        return ch

    async def _execute(self, ch: Channel, actions: list[Action]) -> None:
        ch.state = "CS_EXECUTE"
        for action in actions:
            if not ch.alive or self.crashed:
                return
            ch.executed.append(action)
            app, data = action.application, self._expand(ch, action.data)
            if app == "answer":
                self._answer(ch)
            elif app in ("set", "export"):
                name, _, value = data.partition("=")
                ch.vars[name] = value
            elif app == "sched_hangup":
                self._sched_hangup(ch, data)
            elif app == "verbose_events":
                ch.verbose_events = True  # mod_dptools: sets CF_VERBOSE_EVENTS (it is not a variable)
            elif app == "playback":
                play = _Play(data, "dialplan", not_before_ms=ch.ms() + self.timings.sendmsg_start_ms)
                play.done = asyncio.get_running_loop().create_future()
                self._enqueue(ch, play)
                await play.done
            elif app == "park":
                ch.parked = True
                ch.state = "CS_PARK"
                # switch_ivr_park reads it once, when the media is up (switch_ivr.c:1014-1041).
                ch.idle_silence = atoi(ch.var("send_silence_when_idle") or "")
                self._audio_sync(ch)  # switch_ivr_park syncs (REF: 2 frames at each return to park)
                return
            elif app == "hangup":
                self._hangup(ch, data or "NORMAL_CLEARING")
                return
            elif app == "sleep":
                await asyncio.sleep(int(data or 0) / 1000)
            elif app == "limit":
                if self._limit(ch, data):
                    return  # hung up or sent elsewhere: this extension stops here
            elif app == "record_session":
                stereo = (ch.var("RECORD_STEREO") or "").lower() in ("true", "yes", "on", "1")
                ch.recording = (data.split(" ")[0], stereo, [])
            else:
                self.errors.append(f"dialplan application {app!r} is not emulated")
                raise EmulatorError(f"dialplan application {app!r} is not emulated")

    def _expand(self, ch: Channel, text: str) -> str:
        return expand(text, ch.var, lambda cmd, args: self.api(cmd, args))

    def _answer(self, ch: Channel) -> None:
        if not ch.answered:
            ch.answered = True
            ch.vars["answer_state"] = "answered"
            ch.profile["Caller-Channel-Answered-Time"] = str(int(time.time() * 1_000_000))
            # The jitter buffer is made with the RTP session, at answer: set it before (as FreeSWITCH).
            try:
                ch.jitter_buffer_ms = max(0, int((ch.var("jitterbuffer_msec") or "0").split(":")[0].rstrip("p") or 0))
            except ValueError:
                ch.jitter_buffer_ms = 0
            self._emit("CHANNEL_ANSWER", ch)

    def _audio_sync(self, ch: Channel) -> None:
        """switch_channel_audio_sync, run by every ``playback`` start and by ``park``: without a
        jitter buffer mod_sofia flushes the RTP socket and the fork gets silence in place of the
        caller for ``audio_sync_frames`` frames (measured 2026-12-06, see Timings)."""
        t = self.timings
        jb = ch.jitter_buffer_ms
        ch.sync_silence = t.audio_sync_frames if jb == 0 else t.audio_sync_frames_jb20 if jb <= 20 else t.audio_sync_frames_jb_larger

    def _sched_hangup(self, ch: Channel, data: str) -> None:
        when, _, cause = data.partition(" ")
        try:
            secs = float(when.lstrip("+"))
        except ValueError:
            self.errors.append(f"sched_hangup: bad time {when!r}")
            return
        assert self._loop is not None
        ch._sched_hangup = self._loop.call_later(secs, self._hangup, ch, cause or "ALLOTTED_TIMEOUT")

    def _hangup(self, ch: Channel, cause: str) -> None:
        if not ch.alive:
            return
        ch.hangup_cause = cause
        ch.state = "CS_HANGUP"
        if ch._sched_hangup is not None:
            ch._sched_hangup.cancel()
        # REF is silent; seen on a real 1.10.12 (uuid_kill 200 ms into a 400 ms file): the cut
        # playback reports Playback-Status done, then CHANNEL_EXECUTE_COMPLETE, then the hangup.
        if ch.current is not None and ch.current.started:
            self._finish(ch, ch.current, "done")
        for play in [*ch.queue, *ch.nested]:
            if play.done is not None and not play.done.done():
                play.done.set_result("hangup")
        ch.queue.clear()
        ch.nested.clear()
        ch.current = None
        for bug in ch.bugs.values():
            bug.hangup()  # REF: close 1000, empty reason, no final text
            self._spawn(bug.wait_closed(), f"fork-close-{ch.uuid}")
        for path in ch.temp_files:  # REF: play_audio files are deleted at hangup
            _unlink(path)
        if ch.recording is not None:
            self._write_recording(ch)
        self._release_limits(ch)
        self._emit("CHANNEL_HANGUP", ch, {"Hangup-Cause": cause})
        self._emit("CHANNEL_HANGUP_COMPLETE", ch, {"Hangup-Cause": cause})
        self.channels.pop(ch.uuid, None)
        self.ended.append(ch)
        ch.hungup.set()

    def _limit(self, ch: Channel, data: str) -> bool:
        """``limit`` (module docstring); True when the call was over the limit and sent on."""
        argv = data.split(" ")
        if len(argv) < 3 or argv[0] != "hash":
            self.errors.append(f"limit {data!r}: only the hash backend with realm and id is emulated")
            raise EmulatorError(f"limit {data!r} is not emulated")
        key = (argv[1], argv[2])
        top = -1 if len(argv) < 4 or argv[3].startswith("-") else max(0, atoi(argv[3].split("/")[0]))
        users = self.limit_usage.setdefault(key, set())
        if top < 0 or len(users) + 1 <= top:
            users.add(ch.uuid)
            ch.limits.append(key)
            return False
        where = argv[4] if len(argv) > 4 else "limit_exceeded"
        if where.startswith("!"):
            self._hangup(ch, where[1:])
        else:
            context = argv[6] if len(argv) > 6 else ch.profile["Caller-Context"]
            self._dialplan_transfer(ch, where, context)
        return True

    def _release_limits(self, ch: Channel) -> None:
        for key in ch.limits:
            self.limit_usage.get(key, set()).discard(ch.uuid)
        ch.limits.clear()

    def _dialplan_transfer(self, ch: Channel, dest: str, context: str) -> None:
        """switch_ivr_session_transfer: back to routing (limits given back), then the extension
        of ``dest`` in the rendered dialplan when ``context`` is ours (public), else only noted."""
        self._release_limits(ch)
        ch.transferred_to, ch.transferred_context = dest, context
        ch.parked = False
        self._emit("CHANNEL_EXECUTE", ch, {"Application": "transfer", "Application-Data": f"{dest} XML {context}"})
        if context != ch.profile["Caller-Context"]:
            return
        ch.vars["destination_number"] = dest
        routed = self.dialplan.route(_ChannelFields(ch, dest))
        if routed is None:
            self._hangup(ch, "NO_ROUTE_DESTINATION")
            return
        ch.extension, actions = routed
        self._spawn(self._execute(ch, actions), f"dialplan-{ch.uuid}-transfer")

    def _write_recording(self, ch: Channel) -> None:
        path, stereo, frames = ch.recording  # type: ignore[misc]
        ch.recording = None
        left = np.frombuffer(b"".join(c for c, _ in frames), "<i2").astype(np.int32)
        right = np.frombuffer(b"".join(h for _, h in frames), "<i2").astype(np.int32)
        pcm = np.stack([left, right], axis=1) if stereo else np.clip(left + right, -32768, 32767)
        try:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with wave.open(path, "wb") as w:
                w.setnchannels(2 if stereo else 1)
                w.setsampwidth(2)
                w.setframerate(ch.rate)
                w.writeframes(pcm.astype("<i2").tobytes())
        except OSError as e:
            self.errors.append(f"record_session {path}: {e}")
            return
        ch.recordings.append(path)

    # ------------------------------------------------------------ originate (bgapi)

    def bgapi(self, command: str, args: str = "") -> "str | typing.Coroutine[object, object, str]":
        """A bgapi job: ``originate`` runs for the ring time (a coroutine the ESL server awaits),
        anything else as ``api``."""
        if command == "originate":
            return self._originate(args)
        return self.api(command, args)

    async def _originate(self, args: str) -> str:
        """``originate {vars}sofia/gateway/<gw>/<number> <exten> XML <context>``, as a real 1.10.12
        did it (tests/freeswitch/test_outbound_real.py): an unknown gateway is ``-ERR
        INVALID_GATEWAY`` at once; otherwise a leg is made (CHANNEL_CREATE, with the variables
        given), and after ``ring_ms`` the callee answers (the leg is answered, the job says ``+OK
        <uuid>`` and the leg runs the extension in the context) or refuses (486: ``USER_BUSY``;
        another cause as given), or it rings until ``originate_timeout`` (``NO_ANSWER``); a leg
        that was not answered hangs up with the job's cause."""
        self._alive()
        self.api_log.append((self.now(), f"originate {args}"))
        m = _ORIGINATE.fullmatch(args)
        if m is None:
            self.errors.append(f"originate {args!r}: only {{vars}}sofia/gateway/<gw>/<number> <exten> XML <context> is emulated")
            return "-ERR INVALID_ARGS\n"
        raw_vars, gateway, number, exten, context = m.groups()
        variables = dict(v.split("=", 1) for v in raw_vars.split(",") if "=" in v)
        if gateway not in self.gateways:
            return "-ERR INVALID_GATEWAY\n"
        ch = Channel(self, exten, variables.get("origination_caller_id_number", "0000000000"),
                     variables.get("origination_caller_id_name", ""), "PCMU", self.timings.ptime_ms, True,
                     uuid=variables.get("origination_uuid"), direction="outbound", context=context)
        ch.vars.update({k: v for k, v in variables.items() if k != "origination_uuid"})
        ch.vars["dialed_number"] = number
        self.channels[ch.uuid] = ch
        self.originated.append(ch)
        self._peak = max(self._peak, len(self.channels))
        self._emit("CHANNEL_CREATE", ch)
        behaviour = self.callees.get(number, self.default_callee)
        timeout_s = float(variables.get("originate_timeout", "60") or 60)
        if behaviour in ("answer", "no-answer"):  # the callee's 180 (a busy one answers 486 at once)
            self._emit("CHANNEL_PROGRESS", ch)
        ring_s = timeout_s if behaviour == "no-answer" else self.ring_ms / 1000
        try:  # a leg killed while it rings (uuid_kill) ends the originate at once, with its cause
            async with asyncio.timeout(ring_s):
                await ch.hungup.wait()
        except TimeoutError:
            pass
        cause = "NO_ANSWER" if behaviour == "no-answer" else {"answer": "", "busy": "USER_BUSY"}.get(behaviour, behaviour)
        if not ch.alive:
            return f"-ERR {ch.hangup_cause}\n"
        if cause:
            self._hangup(ch, cause)
            return f"-ERR {cause}\n"
        self._answer(ch)
        dialplan = self.dialplan if context == "public" else self.contexts.get(context)
        routed = dialplan.route({"destination_number": exten}) if dialplan is not None else None
        if routed is None:
            self.errors.append(f"originate: no extension {exten} in context {context}")
            self._hangup(ch, "NO_ROUTE_DESTINATION")
            return "+OK " + ch.uuid + "\n"  # the originate succeeded; the transfer found nothing
        ch.extension, actions = routed
        self._spawn(self._execute(ch, actions), f"dialplan-{ch.uuid}")
        return "+OK " + ch.uuid + "\n"

    # ------------------------------------------------------------ EslCore: API

    def api(self, command: str, args: str = "") -> str:
        self._alive()
        self.api_log.append((self.now(), f"{command} {args}".strip()))
        handler = _API.get(command)
        if handler is None:
            return f"-ERR {command} Command not found!\n"
        return handler(self, args)

    def _channel(self, token: str) -> Channel | None:
        return self.channels.get(token)

    def _api_uuid_audio_fork(self, args: str) -> str:
        if self.fork_module == "jambonz":
            return self._api_jambonz_fork(args)
        cmd = parse_fork_command(args)
        if isinstance(cmd, str):
            return cmd
        ch = self._channel(cmd.uuid)
        if ch is None:
            return "-ERR Operation Failed\n"  # source: session not located
        if cmd.verb == "start":
            return self._fork_start(ch, cmd)
        bug = ch.bugs.get(cmd.bugname)
        if bug is None:
            return "-ERR Operation Failed\n"
        return self._fork_verb(ch, bug, cmd)

    def _api_jambonz_fork(self, args: str) -> str:
        """JREP Q1 and the jambonz source (mod_audio_fork.c:182-330): the parse is
        :func:`~testbed.freeswitch.fork_args.parse_jambonz_fork_command`; the verbs act as
        drachtio's (REF), plus ``stop_play``, which empties the playout buffer of the bug named
        ``audio_fork`` (always that name), fires nothing and keeps the pre-buffer and the marks."""
        cmd = parse_jambonz_fork_command(args)
        if isinstance(cmd, str):
            return cmd
        ch = self._channel(cmd.uuid)
        if ch is None:
            return "-ERR Operation Failed\n"
        if cmd.verb == "start":
            if cmd.rate is None:
                reason = "uuid_audio_fork start without a rate: strcmp(NULL, ...) in the jambonz module"
                self._crash(f"{reason} (source mod_audio_fork.c:301; assumption: not measured)")
                raise SwitchCrashed(reason)
            if cmd.mix not in ("mono", "mixed", "stereo"):
                self.errors.append(f"invalid mix type: {cmd.mix}")
                return "-ERR no reply\n"  # source: goto done, nothing written (assumption: ESL's text)
            return self._fork_start(ch, cmd)
        bug = ch.bugs.get(cmd.bugname)
        if bug is None:
            return "-ERR Operation Failed\n"
        if cmd.verb == "stop_play":
            bug.playout.stop_play()
            return "+OK Success\n"
        if cmd.verb == "send_text" and cmd.metadata is None:
            return "+OK Success\n"  # source: a bugname alone, no text: nothing sent
        return self._fork_verb(ch, bug, cmd)

    def _fork_verb(self, ch: Channel, bug: ForkBug, cmd: ForkCommand) -> str:
        if cmd.verb == "stop":
            bug.stop(cmd.metadata)
            if not bug.graceful:
                del ch.bugs[cmd.bugname]
                for path in ch.temp_files:  # REF: deleted on stop
                    _unlink(path)
                ch.temp_files.clear()
        elif cmd.verb == "send_text":
            if cmd.metadata is None:
                return "-ERR Operation Failed\n"
            bug.send_text(cmd.metadata)
        elif cmd.verb == "pause":
            bug.paused = True
        elif cmd.verb == "resume":
            bug.paused = False
        elif cmd.verb == "graceful-shutdown":
            bug.graceful_shutdown()
        return "+OK Success\n"

    def _fork_start(self, ch: Channel, cmd: ForkCommand) -> str:
        if cmd.bugname in ch.bugs:
            # REF: the fork stays attached after a server close or connect failure;
            # the next start fails ("bug audio_fork already attached") until stop is run.
            self.errors.append(f"{ch.uuid}: bug {cmd.bugname} already attached")
            return "-ERR Operation Failed\n"
        if cmd.mix not in ("mono", "mixed", "stereo"):
            self.errors.append(f"invalid mix type: {cmd.mix}")
            return "-ERR Operation Failed\n"
        # REF: an invalid URL or a rate not a multiple of 8000 is only logged; start goes ahead.
        if not (cmd.url or "").startswith(("ws://", "wss://", "http://", "https://")):
            self.errors.append(f"invalid websocket uri: {cmd.url}")
        if not cmd.rate or cmd.rate % 8000:
            self.errors.append(f"invalid sample rate: {cmd.rate}")
        if not ch.answered:  # REF: start pre-answers the channel
            ch.vars["answer_state"] = "early"
        user = ch.var("MOD_AUDIO_BASIC_AUTH_USERNAME")  # source: channel, then globals
        password = ch.var("MOD_AUDIO_BASIC_AUTH_PASSWORD")
        url = cmd.url or ""
        if url.startswith(("http://", "https://")):
            url = "ws" + url[4:]
        bug_cmd = dataclasses.replace(cmd, url=url, rate=cmd.rate or 8000)
        jambonz = self.fork_module == "jambonz"
        bug = ForkBug(
            bug_cmd,
            auth=(user, password) if user and password else None,
            channels=2 if cmd.mix == "stereo" else 1,
            fire=lambda name, body: self._emit_custom(ch, name, body),
            on_text=lambda b, text: self._on_fork_text(ch, b, text),
            buffer_secs=self.timings.fork_buffer_secs,
            merge_frames=self.timings.fork_merge_frames,
            module=self.fork_module,
            on_binary=(lambda b, data: self._on_jambonz_binary(ch, b, data)) if jambonz else None,
        )
        if jambonz:
            # Source: every fork has the buffers and mark lists (fork_data_init); the rate the
            # stream is resampled to is the channel's read codec rate (lws_glue.cpp:521-528).
            bug.playout = StreamPlayout(ch.rate, cmd.bidi_rate)
        ch.bugs[cmd.bugname] = bug
        return "+OK Success\n"

    def _api_uuid_broadcast(self, args: str) -> str:
        parts = args.split(" ")
        if len(parts) < 2:
            return "-USAGE: <uuid> <path> [aleg|bleg|holdb|both]\n"
        ch = self._channel(parts[0])
        if ch is None:
            return "-ERR Cannot locate session!\n"
        idle = ch.current is None and not ch.queue
        lead = self.timings.lead_frames if ch.caller_sends_rtp else self.timings.lead_frames_no_rtp
        setup = self.timings.broadcast_setup_ms if idle else 0
        self._enqueue(ch, _Play(parts[1], "broadcast", not_before_ms=ch.ms() + setup, lead_left=lead))
        return "+OK Message sent\n"

    def _api_uuid_break(self, args: str) -> str:
        parts = args.split()
        ch = self._channel(parts[0]) if parts else None
        if ch is None:
            return "-ERR no such channel\n"
        self._break(ch, all_=len(parts) > 1 and parts[1] == "all")
        return "+OK\n"

    def _api_uuid_kill(self, args: str) -> str:
        parts = args.split()
        ch = self._channel(parts[0]) if parts else None
        if ch is None:
            return "-ERR No such channel!\n"
        self._hangup(ch, parts[1] if len(parts) > 1 else "NORMAL_CLEARING")
        return "+OK\n"

    def _api_uuid_transfer(self, args: str) -> str:
        """``uuid_transfer <uuid> <dest> [<dialplan>] [<context>]``. Seen on a real 1.10.12: with
        no context the call goes to ``<dest>@default`` (not the call's own context). Assumption
        (REF silent): the test side sees ``transferred_to`` and ``transferred_context`` and the
        channel stays up (the agent leg is not emulated)."""
        parts = [p for p in args.split() if not p.startswith("-")]
        ch = self._channel(parts[0]) if parts else None
        if ch is None or len(parts) < 2:
            return "-ERR No such channel!\n"
        self._break(ch, all_=True)
        self._release_limits(ch)  # back to routing (see the module docstring)
        ch.transferred_to = parts[1]
        ch.transferred_context = parts[3] if len(parts) > 3 else "default"
        ch.parked = False
        self._emit("CHANNEL_EXECUTE", ch, {"Application": "transfer", "Application-Data": " ".join(parts[1:])})
        return "+OK\n"

    def _api_uuid_dump(self, args: str) -> str:
        ch = self._channel(args.split(" ")[0]) if args else None
        if ch is None:
            return "-ERR No such channel!\n"
        headers = self._headers("CHANNEL_DATA", ch)
        return "".join(f"{k}: {quote(v, safe='')}\n" for k, v in headers.items())

    def _api_uuid_getvar(self, args: str) -> str:
        parts = args.split()
        ch = self._channel(parts[0]) if parts else None
        if ch is None or len(parts) < 2:
            return "-ERR No such channel!\n"
        value = ch.var(parts[1])
        return "_undef_" if value is None else value

    def _api_uuid_setvar(self, args: str) -> str:
        parts = args.split(" ", 2)
        ch = self._channel(parts[0]) if parts else None
        if ch is None or len(parts) < 2:
            return "-ERR No such channel!\n"
        ch.vars[parts[1]] = parts[2] if len(parts) > 2 else ""
        return "+OK\n"

    def _api_uuid_send_dtmf(self, args: str) -> str:
        parts = args.split()
        ch = self._channel(parts[0]) if parts else None
        if ch is None or len(parts) < 2:
            return "-ERR no such channel\n"
        for digit in parts[1]:
            if digit in "0123456789*#ABCDabcd":
                ch.dtmf_to_caller.append((digit.upper(), self.now()))
        return "+OK Success\n"

    def _api_uuid_exists(self, args: str) -> str:
        return "true" if args.strip() in self.channels else "false"

    def _api_cond(self, args: str) -> str:
        """mod_commands ``cond <a> <op> <b> ? <true> : <false>``, numeric when both sides are
        numbers (the rendered dialplan's ``rate: auto`` uses ``${cond(${read_rate} > 8000 ? 16k : 8k)}``)."""
        expr, q, rest = args.partition("?")
        yes, colon, no = rest.partition(":")
        parts = expr.split()
        if not q or not colon or len(parts) != 3 or parts[1] not in _COND_OPS:
            return "-ERR syntax error\n"
        a, op, b = parts
        try:
            lhs, rhs = float(a), float(b)
        except ValueError:
            lhs, rhs = a, b  # type: ignore[assignment]
        return (yes if _COND_OPS[op](lhs, rhs) else no).strip()

    def _api_strftime(self, args: str) -> str:
        """mod_dptools' strftime API: the switch's local time (an empty format: "%Y-%m-%d %T")."""
        return time.strftime(args or "%Y-%m-%d %H:%M:%S")

    def _api_status(self, args: str) -> str:
        """The real 1.10.12 layout (fork_server/switch_status.py quotes one); the numbers are ours."""
        up = int(self.now() - self._started_at) if self._loop is not None else 0
        total = len(self.channels) + len(self.ended)
        return (f"UP 0 years, 0 days, {up // 3600} hours, {up // 60 % 60} minutes, {up % 60} seconds, 0 milliseconds, 0 microseconds\n"
                "FreeSWITCH (Version 1.10.12 -emulated 64bit) is ready\n"
                f"{total} session(s) since startup\n{len(self.channels)} session(s) - peak {self._peak}, last 5min {self._peak}\n"
                "0 session(s) per Sec out of max 30, peak 0, last 5min 0\n1000 session(s) max\n")

    def _api_version(self, args: str) -> str:
        return "FreeSWITCH Version 1.10.12-emulated~64bit (-emulated 64bit)\n"

    # ------------------------------------------------------------ EslCore: sendmsg

    def sendmsg(self, uuid: str, headers: Mapping[str, str], body: str | None = None) -> str:
        self._alive()
        self.sendmsg_log.append((self.now(), uuid, dict(headers)))
        ch = self._channel(uuid.strip())
        if ch is None:
            return f"-ERR invalid session id [{uuid.strip()}]"
        # mod_event_socket queues the message on the channel and fires PRIVATE_COMMAND with its
        # headers (one per sendmsg, seen on 1.10.12: 27 for 26 segments).
        self._emit("PRIVATE_COMMAND", ch, {k: v for k, v in headers.items()})
        h = {k.lower(): v for k, v in headers.items()}
        command = h.get("call-command", "")
        if command == "hangup":
            self._hangup(ch, h.get("hangup-cause", "NORMAL_CLEARING"))
            return "+OK"
        if command != "execute":
            return f"-ERR call-command {command!r} not emulated"
        app = h.get("execute-app-name", "")
        arg = h.get("execute-app-arg", body or "")
        if app == "hangup":
            # Queued like any execute: with event-lock it runs after the files queued before it.
            self._enqueue(ch, _Play(arg or "NORMAL_CLEARING", "hangup", not_before_ms=ch.ms()))
            return "+OK"
        if app != "playback":
            return f"-ERR execute {app!r} not emulated"
        lock = h.get("event-lock", "").lower() == "true"
        play = _Play(arg, "sendmsg", event_lock=lock, not_before_ms=ch.ms() + self.timings.sendmsg_start_ms)
        if not lock and (ch.current is not None or ch.queue or ch.nested):
            # REF: without event-lock playbacks nest; the last queued plays first. Modelled as
            # preemption: the new file starts now inside the current one, which resumes after.
            if ch.current is not None:
                ch.nested.append(ch.current)
                ch.current = None
            play.not_before_ms = 0
            ch.queue.appendleft(play)
            return "+OK"
        self._enqueue(ch, play)
        return "+OK"

    # ------------------------------------------------------------ playback

    def _enqueue(self, ch: Channel, play: _Play) -> None:
        if not ch.alive:
            return
        ch.queue.append(play)

    def _break(self, ch: Channel, all_: bool) -> None:
        """REF Barge-in: ``all`` stops the current file and drops the queue within a frame;
        without it only the current file stops and the next starts about 160 ms later."""
        if ch.current is not None:
            ch.current.broken = "all" if all_ else "one"
        if all_:
            for play in [*ch.queue, *ch.nested]:
                # Assumption (REF silent): dropped queued files produce no events.
                if play.done is not None and not play.done.done():
                    play.done.set_result("break")
            ch.queue.clear()
            ch.nested.clear()
        elif ch.queue:
            ch.queue[0].not_before_ms = max(ch.queue[0].not_before_ms, ch.ms() + self.timings.break_next_start_ms)

    def _start_next(self, ch: Channel, at_ms: float) -> None:
        if ch.current is not None or not ch.queue or ch.queue[0].not_before_ms > at_ms:
            return
        play = ch.queue.popleft()
        if play.kind == "hangup":
            self._emit("CHANNEL_EXECUTE", ch, {"Application": "hangup", "Application-Data": play.path})
            self._hangup(ch, play.path)
            return
        ch.current = play
        self._emit("CHANNEL_EXECUTE", ch, {"Application": "playback", "Application-Data": play.path, "Application-UUID": play.app_uuid})
        try:
            play.pcm = read_sound_file(play.path, ch.rate, ch.ptime_ms, self.timings.resample_loss_samples)
        except SoundFileError as e:
            # REF is silent; seen on a real 1.10.12: a missing file gives no PLAYBACK_START/STOP,
            # only CHANNEL_EXECUTE_COMPLETE with Application-Response "FILE NOT FOUND".
            self.errors.append(str(e))
            ch.current = None
            self._emit("CHANNEL_EXECUTE_COMPLETE", ch, {"Application": "playback", "Application-Data": play.path, "Application-Response": "FILE NOT FOUND", "Application-UUID": play.app_uuid})
            if play.done is not None and not play.done.done():
                play.done.set_result("error")
            self._start_next(ch, at_ms)
            return
        self._audio_sync(ch)  # switch_ivr_play_file, once the file is open

    def _finish(self, ch: Channel, play: _Play, status: str) -> None:
        ms = play.pos * 1000 // (ch.rate * 2)
        ch.vars["playback_ms"] = str(ms)
        ch.vars["playback_samples"] = str(play.pos // 2)
        if play.started:
            self._emit("PLAYBACK_STOP", ch, {"Playback-File-Path": play.path, "Playback-Status": status})
        ch.playbacks.append((play.path, status, ch.tick))
        # REF: CHANNEL_EXECUTE_COMPLETE says FILE PLAYED even after a break.
        self._emit("CHANNEL_EXECUTE_COMPLETE", ch, {"Application": "playback", "Application-Data": play.path, "Application-Response": "FILE PLAYED", "Application-UUID": play.app_uuid})
        if play.done is not None and not play.done.done():
            play.done.set_result(status)
        if ch.current is play:
            ch.current = None
            if ch.nested:
                ch.current = ch.nested.pop()
        if ch.current is None and not ch.queue and ch.parked and ch.alive:
            self._audio_sync(ch)  # back to park (REF "Playback methods compared": 2 frames)

    def _write_frame(self, ch: Channel, t_ms: float) -> bytes | None:
        """The frame the channel writes this tick, or None (no RTP: a hole). The caller hears it
        after the jambonz stream (if any) is added; what is returned is the frame before that,
        as a fork's own write stream sees it (source: switch_core_media.c:16121-16140 buffers the
        write stream before the same bug's write-replace)."""
        play = ch.current
        if play is not None and play.broken:
            kind = play.broken
            self._finish(ch, play, "break")
            if kind == "all":
                ch.current = None
                ch.nested.clear()
            play = None
        if ch.current is None:
            self._start_next(ch, t_ms)
        play = ch.current
        if play is None:
            if ch.parked and ch.idle_silence and ch.alive:  # the park loop's writer (module docstring)
                frame = self._idle_frame(ch)
                self._to_caller(ch, frame, "silence")
                return frame
            return None
        if play.lead_left > 0:  # uuid_broadcast reads lead frames first: no audio out (REF)
            play.lead_left -= 1
            return None
        if not play.started:
            play.started = True
            self._emit("PLAYBACK_START", ch, {"Playback-File-Path": play.path})
        frame = play.pcm[play.pos : play.pos + ch.frame_bytes]
        play.pos += ch.frame_bytes
        self._to_caller(ch, frame, play.path)
        if play.pos >= len(play.pcm):
            self._finish(ch, play, "done")
            # Back to back: the next queued file may start on the very next frame (REF sendmsg).
        return frame

    def _idle_frame(self, ch: Channel) -> bytes:
        """switch_generate_sln_silence (switch_resample.c:199-230): zeros for -1; otherwise
        uniform noise divided by the value (assumption: numpy's numbers, not FreeSWITCH's LCG)."""
        if ch.idle_silence == -1:
            return bytes(ch.frame_bytes)
        noise = ch._noise.integers(-32768, 32768, ch.frame_bytes // 2)
        return np.trunc(noise / ch.idle_silence).astype(np.int32).astype("<i2").tobytes()

    def _to_caller(self, ch: Channel, frame: bytes, source: str) -> None:
        """A written frame goes out: each jambonz stream bug adds its audio (write-replace),
        its mark replies go back on its socket, and the caller hears the result."""
        added = 0
        for bug in list(ch.bugs.values()):
            if bug.playout is None or not bug.cmd.bidi_plays:
                continue
            dub = bug.playout.dub(frame)
            frame = dub.frame
            added += dub.added
            for text in dub.replies:
                # Source: send_mark_event queues it only while the pipe exists and is connected.
                if bug.connected:
                    ch.mark_replies.append((ch.tick, bug.cmd.bugname, text))
                    bug.send_text(text)
        ch.ear.add(ch.tick, self.now(), frame, source, added)
        ch._heard = frame

    # ------------------------------------------------------------ the clock

    async def _run_clock(self) -> None:
        assert self._loop is not None
        step = 0.005
        while True:
            now = self._loop.time()
            for ch in list(self.channels.values()):
                while ch.alive and (ch.tick + 1) * ch.ptime_ms <= (now - ch.t0) * 1000:
                    ch.tick += 1
                    try:
                        self._tick(ch, ch.tick * ch.ptime_ms)
                    except Exception as e:  # noqa: BLE001 - an emulator bug must not stop the clock silently
                        self.errors.append(f"tick {ch.uuid}: {e!r}")
                        log.exception("emulator tick failed")
            await asyncio.sleep(step)

    def _tick(self, ch: Channel, t_ms: float) -> None:
        bug_rates = tuple({b.rate for b in ch.bugs.values()})
        caller = ch.mouth.frame(bug_rates)
        if caller is None and ch.caller_sends_rtp:
            caller = {r: bytes(r * ch.ptime_ms // 1000 * 2) for r in (ch.rate, *bug_rates)}
        written = self._write_frame(ch, t_ms)
        if ch.sync_silence and caller is not None:  # the RTP flush of an audio sync (see _audio_sync)
            ch.sync_silence -= 1
            ch.silenced_frames += 1
            caller = {r: bytes(len(pcm)) for r, pcm in caller.items()}
        if not ch.alive:
            return
        heard, ch._heard = ch._heard, None
        if ch.recording is not None:
            frames = ch.recording[2]
            if len(frames) < MAX_RECORDING_FRAMES:
                silent = bytes(ch.frame_bytes)
                frames.append((caller[ch.rate] if caller is not None else silent, heard or silent))
            elif len(frames) == MAX_RECORDING_FRAMES:
                frames.append((bytes(ch.frame_bytes), bytes(ch.frame_bytes)))
                self.errors.append(f"record_session {ch.recording[0]}: the emulator's limit of {MAX_RECORDING_FRAMES} frames")
        for bug in list(ch.bugs.values()):
            mix = bug.cmd.mix
            if mix == "mono":
                if caller is not None:
                    bug.feed(caller[bug.rate])
            elif written is not None:  # REF: mixed/stereo send nothing while nothing plays
                out = written if bug.rate == ch.rate else resample_clip(written, ch.rate, bug.rate)
                mine = caller[bug.rate] if caller is not None else bytes(len(out))
                a = np.frombuffer(mine, "<i2").astype(np.int32)
                b = np.frombuffer(out, "<i2").astype(np.int32)[: a.size]
                if mix == "mixed":
                    bug.feed(np.clip(a + b, -32768, 32767).astype("<i2").tobytes())
                else:
                    bug.feed(np.stack([a, b], axis=1).astype("<i2").tobytes())

    # ------------------------------------------------------------ mod_audio_fork messages

    def _on_fork_text(self, ch: Channel, bug: ForkBug, text: str) -> None:
        """REF "Messages from the server to FreeSWITCH"."""
        if self.fork_module == "jambonz":
            self._on_jambonz_text(ch, bug, text)
            return
        try:
            msg = json.loads(text)
        except ValueError:
            self.errors.append(f"{ch.uuid}: fork server sent text that is not JSON")
            return
        if not isinstance(msg, dict):
            self.errors.append(f"{ch.uuid}: fork server sent JSON that is not an object")
            return
        kind = msg.get("type")
        data = msg.get("data")
        if kind is None:
            self._emit_custom(ch, "json", text)
        elif kind == "playAudio":
            self._play_audio(ch, data if isinstance(data, dict) else {})
        elif kind == "killAudio":
            self._emit_custom(ch, "kill_audio", None)
            self._break(ch, all_=False)
        elif kind in ("transcription", "transfer", "error", "disconnect"):
            self._emit_custom(ch, kind, json.dumps(data, separators=(",", ":")))
        else:
            self.errors.append(f"{ch.uuid}: unknown message type {kind!r} from the fork server")

    def _on_jambonz_text(self, ch: Channel, bug: ForkBug, text: str) -> None:
        """The jambonz module's processIncomingMessage (lws_glue.cpp:205-390), JREP Q3, Q4, Q6, Q7:

        * not JSON: logged, nothing else; a ``type`` that is not a string (or no object at all)
          is type ``json``: ``mod_audio_fork::json`` with the whole message (parser.cpp);
        * ``playAudio`` only in file mode (``enabled`` and not ``stream``), as drachtio's, except
          that data without a string ``audioContentType`` segfaults the switch (JREP Q7.1: no
          ``audioContentType``, and ``"data":"x"``); no ``data``: logged only. In stream mode, or
          with ``enabled`` false, it is an "unsupported msg type" (JREP Q6);
        * ``killAudio``: ``mod_audio_fork::kill_audio`` (no body), CF_BREAK (a playing file
          breaks, as drachtio's), and the stream buffer is emptied at the next written frame;
        * ``mark`` with a string ``data.name``; ``clearMarks``; see :mod:`testbed.freeswitch.jambonz`;
        * ``transcription``/``transfer``/``disconnect``/``error``: their event, body the compact
          ``data`` or none without it (JREP Q6).
        """
        try:
            msg = json.loads(text)
        except ValueError:
            self.errors.append(f"{ch.uuid}: fork server sent text that is not JSON")
            return
        kind = msg.get("type") if isinstance(msg, dict) else None
        if not isinstance(kind, str):
            kind = "json"
        has_data = isinstance(msg, dict) and "data" in msg
        data = msg.get("data") if has_data else None
        if kind == "playAudio" and bug.cmd.file_mode:
            if not has_data:
                self.errors.append(f"{ch.uuid}: missing data payload in playAudio request")
            elif not isinstance(data, dict) or not isinstance(data.get("audioContentType"), str):
                self._crash(f"playAudio without a string audioContentType to a jambonz fork in file mode on {ch.uuid}: "
                            "strcmp(NULL) segfaults FreeSWITCH (JREP Q7.1)")
            else:
                self._play_audio(ch, data)
        elif kind == "killAudio":
            self._emit_custom(ch, "kill_audio", None)
            self._break(ch, all_=False)
            bug.playout.kill()
        elif kind == "mark":
            name = data.get("name") if isinstance(data, dict) else None
            if isinstance(name, str) and not bug.playout.mark(name):
                log.info("fork %s: mark count exceeded, discarding mark %s", ch.uuid, name)
        elif kind == "clearMarks":
            bug.playout.clear_marks()
        elif kind in ("transcription", "transfer", "disconnect", "error"):
            body = json.dumps(data, separators=(",", ":"), ensure_ascii=False) if has_data else None
            self._emit_custom(ch, kind, body)
        elif kind == "json":
            self._emit_custom(ch, "json", json.dumps(msg, separators=(",", ":"), ensure_ascii=False))
        else:
            self.errors.append(f"{ch.uuid}: unsupported msg type {kind!r} from the fork server")

    def _on_jambonz_binary(self, ch: Channel, bug: ForkBug, data: bytes) -> None:
        """A binary message from the server to a jambonz fork (JREP Q2, Q6, Q7.2).

        After ``uuid_audio_fork <uuid> stop`` (the socket closing), it crashes the switch: the
        real module's processIncomingBinary touches the pre-buffer and mark lists with no lock
        while stop frees them; 5 crashes in 60 stops under a binary flood, none with 20 ms frames
        at real time or with no binary in flight, none at hangup. Modelled as always: any binary
        message that reaches the fork after its stop crashes it (the server was still sending
        while stop ran). Otherwise: empty ones are dropped; with both bidirectional flags false
        they are discarded ("unexpected binary frame", and no crash); else they go into the stream
        buffers, played only in stream mode and otherwise kept, unbounded, until the fork ends."""
        if self.crashed or not data:
            return
        if not bug.cmd.bidi_pipe:  # never reaches processIncomingBinary, so no crash either
            ch.binary_discarded += 1
            if ch.binary_discarded == 1:
                self.errors.append(f"{ch.uuid}: received unexpected binary frame, discarding")
            return
        if bug.stopping:
            self._crash(f"binary frame from the fork server while uuid_audio_fork {ch.uuid} stop ran: heap "
                        "corruption in the jambonz module (JREP Q7.2; modelled as always crashing)")
            return
        bug.playout.receive_binary(data)

    def _play_audio(self, ch: Channel, data: dict) -> None:
        if "audioContentType" not in data:
            self._crash(f"playAudio without audioContentType on {ch.uuid}: FreeSWITCH segfaults (REF)")
            return
        ctype = data.get("audioContentType")
        rate = data.get("sampleRate")
        body = {k: v for k, v in data.items() if k != "audioContent"}
        if ctype == "raw":
            ext = f".r{rate // 1000}" if rate in (8000, 16000, 24000, 32000, 48000, 64000) else ".r16"
        elif ctype in ("wav", "wave"):
            ext = ".wav"
        else:
            ext = None
        if ext is not None:
            try:
                audio = base64.b64decode(str(data.get("audioContent", "")), validate=True)
            except (binascii.Error, ValueError):
                self.errors.append(f"{ch.uuid}: playAudio with bad base64")
                return
            path = os.path.join(self.temp_dir, f"{ch.uuid}_{next(_PLAY_AUDIO_COUNTER)}.tmp{ext}")
            Path(path).write_bytes(audio)
            ch.temp_files.append(path)
            body["file"] = path
        assert self._loop is not None
        self._loop.call_later(
            self.timings.play_audio_event_ms / 1000,
            lambda: ch.alive and self._emit_custom(ch, "play_audio", json.dumps(body, separators=(",", ":"))),
        )

    def _crash(self, reason: str) -> None:
        log.error("EMULATED FREESWITCH CRASHED: %s", reason)
        self.crashed = reason
        for ch in list(self.channels.values()):
            for bug in ch.bugs.values():
                bug.abort()
        self.channels.clear()
        for listener in list(self.listeners):
            try:
                listener({"Event-Name": "SHUTDOWN", "X-Emulator-Crash": reason}, None)
            except Exception:  # noqa: BLE001
                pass

    def _alive(self) -> None:
        if self.crashed:
            raise SwitchCrashed(self.crashed)

    # ------------------------------------------------------------ events

    def _headers(self, name: str, ch: Channel, extra: Mapping[str, str] | None = None) -> dict[str, str]:
        now = time.time()
        self._event_seq += 1
        # The header set of a real 1.10.12 event (switch_event_prep_for_delivery and
        # switch_channel_event_set_data), so events are as large as the switch's.
        h = {
            "Event-Name": name,
            "Core-UUID": self.core_uuid,
            "FreeSWITCH-Hostname": "emulated",
            "FreeSWITCH-Switchname": "emulated",
            "FreeSWITCH-IPv4": "127.0.0.1",
            "FreeSWITCH-IPv6": "::1",
            "Event-Date-Local": time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(now)),
            "Event-Date-GMT": time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(now)),
            "Event-Date-Timestamp": str(int(now * 1_000_000)),
            "Event-Calling-File": "emulator",
            "Event-Calling-Function": "emulator",
            "Event-Calling-Line-Number": "1",
            "Event-Sequence": str(self._event_seq),
            "Channel-State": ch.state,
            "Channel-Call-State": "ACTIVE" if ch.answered else "RINGING",
            "Channel-State-Number": "4",
            "Channel-Name": f"sofia/external/{ch.profile['Caller-Caller-ID-Number']}@127.0.0.1",
            "Unique-ID": ch.uuid,
            "Call-Direction": ch.direction,
            "Presence-Call-Direction": ch.direction,
            "Channel-HIT-Dialplan": "true",
            "Channel-Call-UUID": ch.uuid,
            "Answer-State": "answered" if ch.answered else "ringing",
            "Channel-Read-Codec-Name": ch.vars["read_codec"],
            "Channel-Read-Codec-Rate": str(ch.rate),
            "Channel-Read-Codec-Bit-Rate": "64000",
            "Channel-Write-Codec-Name": ch.vars["write_codec"],
            "Channel-Write-Codec-Rate": str(ch.rate),
            "Channel-Write-Codec-Bit-Rate": "64000",
        }
        h.update(ch.profile)
        if extra:
            h.update(extra)
        # Source (switch_channel.c, switch_channel_event_set_data): channel variables go only
        # on these events, or on every event of a channel with verbose_events set. A DTMF
        # event has none, so an ESL filter on variable_voicefork_route drops it (seen on a
        # real 1.10.12: the digit reached the switch and never the fork server). The flag is
        # set by the dialplan application verbose_events.
        if name in _EVENTS_WITH_VARIABLES or ch.verbose_events:
            for k, v in ch.vars.items():
                h[f"variable_{k}"] = v
        return h

    def _emit(self, name: str, ch: Channel, extra: Mapping[str, str] | None = None, body: str | None = None) -> None:
        headers = self._headers(name, ch, extra)
        for listener in list(self.listeners):
            listener(headers, body)

    def inject_event(self, ch: Channel, name: str, extra: Mapping[str, str] | None = None, body: str | None = None) -> None:
        """Chaos tests: an event as a buggy or hostile switch would send it, with the channel's
        real headers plus ``extra`` (CUSTOM: give ``Event-Subclass`` in ``extra``)."""
        self._emit(name, ch, extra, body)

    def _emit_custom(self, ch: Channel, subclass: str, body: str | None) -> None:
        # Source: responseHandler adds the channel's data (switch_channel_event_set_data).
        self._emit("CUSTOM", ch, {"Event-Subclass": f"mod_audio_fork::{subclass}"}, body)

    def _spawn(self, coro, name: str) -> None:  # type: ignore[no-untyped-def]
        assert self._loop is not None
        task = self._loop.create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            self.errors.append(f"{task.get_name()}: {task.exception()!r}")


_ORIGINATE = re.compile(r"\{([^{}]*)\}sofia/gateway/([A-Za-z0-9_.-]+)/([^ ]+) ([^ ]+) XML ([A-Za-z0-9_-]+)")

_COND_OPS: dict[str, Callable[[object, object], bool]] = {
    ">": lambda a, b: a > b, "<": lambda a, b: a < b, ">=": lambda a, b: a >= b,  # type: ignore[operator]
    "<=": lambda a, b: a <= b, "==": lambda a, b: a == b, "!=": lambda a, b: a != b,  # type: ignore[operator]
}

_SIP_CHANNEL_VARS: dict[str, str] = json.loads(
    (Path(__file__).with_name("sip_channel_vars.json")).read_text(encoding="utf-8"))["variables"]


class _ChannelFields(dict):
    """A condition's field as the dialplan reads it: ``destination_number``, or ``${var}``."""

    def __init__(self, ch: Channel, destination: str) -> None:
        super().__init__(destination_number=destination)
        self.ch = ch

    def get(self, key: str, default: str = "") -> str:  # type: ignore[override]
        if key.startswith("${") and key.endswith("}"):
            return self.ch.var(key[2:-1]) or default
        return super().get(key, default)


def _fill(value: str, fill: Mapping[str, str]) -> str:
    for k, v in fill.items():
        value = value.replace(k, v)
    return value


_EVENTS_WITH_VARIABLES = frozenset({
    "CHANNEL_CREATE", "CHANNEL_ORIGINATE", "CHANNEL_UUID", "CHANNEL_ANSWER", "CHANNEL_PARK",
    "CHANNEL_UNPARK", "CHANNEL_BRIDGE", "CHANNEL_UNBRIDGE", "CHANNEL_PROGRESS",
    "CHANNEL_PROGRESS_MEDIA", "CHANNEL_HANGUP", "CHANNEL_HANGUP_COMPLETE", "REQUEST_PARAMS",
    "CHANNEL_DATA", "CHANNEL_EXECUTE", "CHANNEL_EXECUTE_COMPLETE", "CHANNEL_DESTROY",
    "SESSION_HEARTBEAT", "API", "RECORD_START", "RECORD_STOP", "PLAYBACK_START", "PLAYBACK_STOP",
    "CALL_UPDATE", "MEDIA_BUG_START", "MEDIA_BUG_STOP", "CHANNEL_HOLD", "CHANNEL_UNHOLD", "TEXT",
    "CUSTOM",
})


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


_API: dict[str, Callable[[EmulatedSwitch, str], str]] = {
    "uuid_audio_fork": EmulatedSwitch._api_uuid_audio_fork,
    "uuid_broadcast": EmulatedSwitch._api_uuid_broadcast,
    "uuid_break": EmulatedSwitch._api_uuid_break,
    "uuid_kill": EmulatedSwitch._api_uuid_kill,
    "uuid_transfer": EmulatedSwitch._api_uuid_transfer,
    "uuid_dump": EmulatedSwitch._api_uuid_dump,
    "uuid_getvar": EmulatedSwitch._api_uuid_getvar,
    "uuid_setvar": EmulatedSwitch._api_uuid_setvar,
    "uuid_send_dtmf": EmulatedSwitch._api_uuid_send_dtmf,
    "uuid_exists": EmulatedSwitch._api_uuid_exists,
    "status": EmulatedSwitch._api_status,
    "cond": EmulatedSwitch._api_cond,
    "strftime": EmulatedSwitch._api_strftime,
    "version": EmulatedSwitch._api_version,
}
