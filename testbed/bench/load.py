"""The benchmark's load side: lean emulated FreeSWITCH (media forks + ESL) and a lean connector.

All of it runs in ONE asyncio process (the bench runner), apart from the server under test:

* :class:`MediaClient` — one mod_audio_fork WebSocket per call, REF "The WebSocket as the
  fork server sees it": the observed handshake, the metadata text frame first, then L16
  binary frames, 640 B (16k route) or 320 B (8k route) at 50/s, pongs to pings, close 1000
  with an empty reason on hangup. If the generator falls behind, the frames due are sent as
  ONE merged frame, as mod_audio_fork's service thread does under load (REF "Frame sizes").
* :class:`LeanSwitch` — the ESL core behind :class:`testbed.freeswitch.esl_server.EslServer`
  (the same wire framing python-ESL talks to): ``uuid_dump``, ``uuid_getvar``,
  ``uuid_break [all]``, ``uuid_kill``, ``uuid_audio_fork stop``, ``uuid_transfer``,
  ``uuid_send_dtmf`` and ``sendmsg`` execute playback. Playback runs on the 20 ms clock:
  PLAYBACK_START one tick (20 ms) after the command (REF: 20 ms median), files queued with
  event-lock play back to back, PLAYBACK_STOP ``done``/``break`` then
  CHANNEL_EXECUTE_COMPLETE; ``uuid_break all`` drops the queue (REF "Barge-in"). Its events,
  their sizes and the caller frames a playback blanks are the real switch's, measured
  2026-12-06 on FreeSWITCH 1.10.12 (see the class).
* :class:`ConnectorConn` — the voice connector (docs/connector-protocol.md): takes ``start``,
  counts and timestamps caller frames (and, in the window, checks each for blanking:
  :mod:`testbed.bench.framecheck`), answers pings, and speaks: TTS bursts, marks, and a
  barge-in ``clear`` now and then (:class:`TtsProfile`).

One timer drives everything: the 20 ms period is cut into ``SLOTS`` sub-ticks and each call
sends on its own sub-tick, so a tick does 1/SLOTS of the work and the load side's own
scheduling adds little to the latency it measures (real channels are not in phase either).

Latency: the generator records each frame's send time (CLOCK_MONOTONIC ns) per call and
index; on 16k routes the same ns is also embedded in the first 8 bytes of the payload, which
the fork server passes through bit-exact, and the connector checks that both agree. On 8k
routes the audio is resampled, so the k-th 640-byte frame out is matched to the k-th
320-byte frame in (the FIR is causal: 160 samples in give exactly 320 out).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
import uuid as uuidlib
from array import array
from collections import deque
from dataclasses import dataclass
from typing import Any, Callable, Mapping
from urllib.parse import quote

import numpy as np

from testbed.freeswitch.esl_server import EslServer

from . import wsframes as wf
from .benchconf import RouteFlags
from .framecheck import FrameLog
from .fsevents import ChannelEvents, EventTemplates
from .rtp import Heard

__all__ = ["TtsProfile", "LoadGen", "BenchCall", "LeanSwitch", "ConnectorConn", "Recorder", "SLOTS", "FRAME_NS", "now_ns",
           "percentiles"]

log = logging.getLogger("testbed.bench.load")

now_ns = time.monotonic_ns  # CLOCK_MONOTONIC: the same clock in every process on the box
FRAME_NS = 20_000_000
SLOTS = 10  # sub-ticks per 20 ms
_RING = 1024  # send times kept per call (20 s of frames; in flight is ~2 s at most: prestart)
_LOOP_FRAMES = 25  # distinct caller frames per call (0.5 s of audio, cycled)
FORK_SUBPROTOCOL = "audio.drachtio.org"
CONNECTOR_SUBPROTOCOL = "voicefork.v1"


@dataclass(frozen=True)
class TtsProfile:
    """How the bot talks: ``speech_s`` of TTS every ``period_s`` (40 % duty by default; 0 = silent
    bot), sent in ``chunk_ms`` chunks every ``chunk_every_ms`` (faster than real time, as TTS engines do),
    a mark after each utterance, and every ``bargein_every``-th utterance cut by a ``clear``
    ``bargein_after_s`` after it started."""

    period_s: float = 5.0
    speech_s: float = 2.0
    chunk_ms: int = 100
    # 2x real time. Not 60 ms: that is the fork server's idle-flush time (tts_idle_flush_s), and a
    # chunk gap right at it makes segment counts swing with load (measured: 340 -> 500 ESL/s at 200 calls).
    chunk_every_ms: int = 50
    bargein_every: int = 4
    bargein_after_s: float = 1.0

    @property
    def duty(self) -> float:
        return self.speech_s / self.period_s


def _speech_like(rate: int, seconds: float, seed: int) -> np.ndarray:
    """Band-limited noise with a syllable envelope at −20 dBFS (content does not change the cost)."""
    rng = np.random.default_rng(seed)
    n = int(rate * seconds)
    x = rng.standard_normal(n)
    spec = np.fft.rfft(x)
    f = np.fft.rfftfreq(n, 1 / rate)
    spec[(f < 100) | (f > 3400)] = 0
    x = np.fft.irfft(spec, n)
    env = 0.6 + 0.4 * np.sin(2 * np.pi * 4 * np.arange(n) / rate)
    x = x * env / (np.sqrt(np.mean(x**2)) + 1e-9) * 3277
    return np.clip(np.rint(x), -32768, 32767).astype("<i2")


_AUDIO = {rate: _speech_like(rate, _LOOP_FRAMES * 0.02, rate) for rate in (8000, 16000)}


class BenchCall:
    """One emulated call: the channel, its fork (media) side and its connector side."""

    __slots__ = (
        "idx", "uuid", "route", "rate", "slot", "number", "media", "conn", "t0", "sent", "recv",
        "send_ns", "frames", "hdr16", "body16", "m8", "tts_next", "tts_state", "utt", "utt_start",
        "chunks_left", "tts_t0", "marks_sent", "marks_back", "clears", "tts_bytes", "started",
        "mismatch", "ended", "stop_reason", "phase", "killed", "heard", "flog", "first_tts_ns", "clear_ns",
        "cut_last", "zero_next", "zero8", "zbody16",
    )

    def __init__(self, idx: int, route: str, rate: int, slot: int, phase: float) -> None:
        self.idx, self.route, self.rate, self.slot, self.phase = idx, route, rate, slot, phase
        self.uuid = str(uuidlib.uuid4())
        self.number = "+1555%07d" % idx
        self.media: MediaClient | None = None
        self.conn: ConnectorConn | None = None
        self.t0 = 0
        self.sent = 0
        self.recv = 0
        self.send_ns = array("q", bytes(8 * _RING))
        self.tts_next = 0
        self.tts_state = 0  # 0 idle, 1 speaking
        self.utt = 0
        self.utt_start = 0
        self.chunks_left = 0
        self.tts_t0 = 0
        self.marks_sent = self.marks_back = self.clears = self.tts_bytes = 0
        self.started = False
        self.mismatch = 0
        self.ended = False
        self.killed = False
        self.stop_reason: str | None = None
        self.frames: list[bytes] = []
        self.hdr16 = b""
        self.body16: list[bytes] = []
        self.m8 = 0
        self.heard = Heard()  # the bot's audio as the caller got it (real RTP, or the emulated 20 ms clock)
        self.flog = FrameLog()  # the caller's frames as the connector got them (in the window)
        self.first_tts_ns = 0  # the connector's first TTS byte of the utterance, until its first audio is heard
        self.clear_ns = 0  # a barge-in ``clear`` sent in the window, until the cut is measured
        self.cut_last = 0  # the last bot audio heard after that clear
        self.zero_next = 0  # caller frames the emulated switch blanks next (REF "Playback methods compared")
        self.zero8 = b""
        self.zbody16 = b""

    def prepare_frames(self, mask: bytes) -> None:
        """Pre-masked payloads: 8k frames whole; 16k bodies after the 8-byte timestamp."""
        audio = _AUDIO[self.rate]
        spf = self.rate // 50
        self.m8 = int.from_bytes(mask * 2, "big")
        if self.rate == 8000:
            hdr = wf.header(wf.OP_BINARY, 2 * spf, mask)
            self.frames = [hdr + wf.unmask(audio[i * spf : (i + 1) * spf].tobytes(), mask) for i in range(_LOOP_FRAMES)]
            self.zero8 = hdr + wf.unmask(bytes(2 * spf), mask)
        else:
            self.hdr16 = wf.header(wf.OP_BINARY, 2 * spf, mask)
            # Offset 8 is a multiple of 4, so the mask phase of the body is the mask itself.
            self.body16 = [wf.unmask(audio[i * spf : (i + 1) * spf].tobytes()[8:], mask) for i in range(_LOOP_FRAMES)]
            self.zbody16 = wf.unmask(bytes(2 * spf - 8), mask)


class Recorder:
    """What the load side measures; samples only while ``on`` (the measurement window)."""

    def __init__(self) -> None:
        self.on = False
        self.lat16 = array("q")
        self.lat8 = array("q")
        self.tts_lat = array("q")
        self.frames_in_window = 0
        self.esl_commands = 0
        self.esl_by_kind: dict[str, int] = {}
        self.gen_lag_max_ns = 0
        self.merged_sends = 0
        self.late_frames = 0  # added latency over one ptime (20 ms)
        self.played_ms = 0
        self.breaks = 0
        self.segments = 0
        self.tts_sent_ms = 0
        self.first_audio = array("q")  # connector's first TTS byte -> first bot audio at the caller, ns
        self.cuts = array("q")  # clear -> last bot audio at the caller, ns

    def reset(self) -> None:
        self.__init__()  # type: ignore[misc]


# ---------------------------------------------------------------------------- media (FS side)


class MediaClient(asyncio.Protocol):
    """mod_audio_fork's side of one fork WebSocket (REF "Handshake", "Frame order", "Close")."""

    def __init__(self, gen: "LoadGen", call: BenchCall, path: str, auth: tuple[str, str] | None) -> None:
        self.gen, self.call, self.path, self.auth = gen, call, path, auth
        self.key = wf.new_key()
        self.mask = os.urandom(4)
        self.transport: asyncio.Transport | None = None
        self.head = b""
        self.open = False
        self.closing = False
        self.closed = asyncio.get_running_loop().create_future()
        self.reader = wf.FrameReader()
        self.error: str | None = None
        self.texts_in = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        transport.write(wf.client_request(self.path, self.key, subprotocol=FORK_SUBPROTOCOL, auth=self.auth))  # type: ignore[attr-defined]

    def data_received(self, data: bytes) -> None:
        if not self.open:
            self.head += data
            end = self.head.find(b"\r\n\r\n")
            if end < 0:
                if len(self.head) > wf.MAX_HEAD:
                    self._fail("response head over the limit")
                return
            head, data = self.head[:end], self.head[end + 4 :]
            self.head = b""
            try:
                wf.parse_response_head(head, self.key, FORK_SUBPROTOCOL)
            except wf.WsError as exc:
                self._fail(str(exc))
                return
            self._opened()
            if not data:
                return
        try:
            frames = self.reader.feed(data)
        except wf.WsError as exc:
            self._fail(str(exc))
            return
        for op, payload, _ in frames:
            if op == wf.OP_PING:
                self.transport.write(wf.encode(wf.OP_PONG, payload, self.mask))  # type: ignore[union-attr]
            elif op == wf.OP_CLOSE:
                if not self.closing:  # the server closed first: echo, as libwebsockets does
                    self.closing = True
                    self.transport.write(wf.encode(wf.OP_CLOSE, payload[:2], self.mask))  # type: ignore[union-attr]
                    self.call.killed = True
                self.transport.close()  # type: ignore[union-attr]
            elif op == wf.OP_TEXT:
                self.texts_in += 1
            # REF (source): binary frames from the server are discarded.

    def _opened(self) -> None:
        c = self.call
        self.open = True
        meta = json.dumps({"route": c.route, "uuid": c.uuid}, separators=(",", ":")).encode()
        self.transport.write(wf.encode(wf.OP_TEXT, meta, self.mask))  # type: ignore[union-attr]
        c.prepare_frames(self.mask)
        # Audio starts on the call's next sub-tick (REF: 4–18 ms after the open).
        self.gen.start_audio(c)

    def _fail(self, reason: str) -> None:
        self.error = reason
        log.error("fork %s: %s", self.call.uuid, reason)
        if self.transport is not None:
            self.transport.close()

    def send_due(self, nominal: int, now: int) -> int:
        """Send every frame due by the tick's ``nominal`` time (one merged frame if more than one),
        stamped ``now``; returns how many."""
        c = self.call
        due = (nominal - c.t0) // FRAME_NS + 1 - c.sent
        if due <= 0 or self.closing or not self.open:
            return 0
        k = c.sent
        ring = c.send_ns
        if c.zero_next:
            self._send_blanked(due, now)
        elif c.rate == 8000:
            if due == 1:
                self.transport.write(c.frames[k % _LOOP_FRAMES])  # type: ignore[union-attr]
            else:
                payload = b"".join(c.frames[(k + i) % _LOOP_FRAMES][8:] for i in range(due))
                self.transport.write(wf.header(wf.OP_BINARY, len(payload), self.mask) + payload)  # type: ignore[union-attr]
        else:
            ts = ((now ^ c.m8) & 0xFFFFFFFFFFFFFFFF).to_bytes(8, "big")
            if due == 1:
                self.transport.write(c.hdr16 + ts + c.body16[k % _LOOP_FRAMES])  # type: ignore[union-attr]
            else:
                payload = b"".join(ts + c.body16[(k + i) % _LOOP_FRAMES] for i in range(due))
                self.transport.write(wf.header(wf.OP_BINARY, len(payload), self.mask) + payload)  # type: ignore[union-attr]
        for i in range(due):
            ring[(k + i) % _RING] = now
        c.sent = k + due
        return due

    def _send_blanked(self, due: int, now: int) -> None:
        """The due frames with the next ``zero_next`` of them blanked (all-zero samples, the 16k
        frames keeping their 8-byte send stamp): REF "What the AI hears while the bot plays", the
        switch replaces caller frames by ~zero at each playback start and return to park, keeping
        their count and timing."""
        c = self.call
        parts = []
        for i in range(due):
            k = c.sent + i
            blank = c.zero_next > 0
            if blank:
                c.zero_next -= 1
            if c.rate == 8000:
                parts.append(c.zero8[8:] if blank else c.frames[k % _LOOP_FRAMES][8:])
            else:
                ts = ((now ^ c.m8) & 0xFFFFFFFFFFFFFFFF).to_bytes(8, "big")
                parts.append(ts + (c.zbody16 if blank else c.body16[k % _LOOP_FRAMES]))
        payload = b"".join(parts)
        self.transport.write(wf.header(wf.OP_BINARY, len(payload), self.mask) + payload)  # type: ignore[union-attr]

    def hangup(self) -> None:
        """REF "Close": a hangup closes with 1000 and an empty reason, no final text."""
        if self.transport is None or self.closing:
            return
        self.closing = True
        if self.open:
            self.transport.write(wf.encode(wf.OP_CLOSE, wf.close_payload(1000), self.mask))
            asyncio.get_running_loop().call_later(3.0, self.transport.abort)
        else:
            self.transport.abort()

    def connection_lost(self, exc: Exception | None) -> None:
        self.open = False
        if not self.closed.done():
            self.closed.set_result(None)
        self.gen.media_closed(self.call)


# ---------------------------------------------------------------------------- connector


class ConnectorConn(asyncio.Protocol):
    """The lean voice connector for one call (server side of docs/connector-protocol.md)."""

    def __init__(self, gen: "LoadGen") -> None:
        self.gen = gen
        self.transport: asyncio.Transport | None = None
        self.head = b""
        self.open = False
        self.reader = wf.FrameReader()
        self.call: BenchCall | None = None
        self.closing = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        if not self.open:
            self.head += data
            end = self.head.find(b"\r\n\r\n")
            if end < 0:
                if len(self.head) > wf.MAX_HEAD:
                    self.transport.close()  # type: ignore[union-attr]
                return
            head, data = self.head[:end], self.head[end + 4 :]
            self.head = b""
            try:
                _path, headers = wf.parse_request_head(head)
            except wf.WsError as exc:
                log.error("connector: %s", exc)
                self.transport.close()  # type: ignore[union-attr]
                return
            offered = [p.strip() for p in headers.get("sec-websocket-protocol", "").split(",") if p.strip()]
            proto = CONNECTOR_SUBPROTOCOL if CONNECTOR_SUBPROTOCOL in offered else None
            self.transport.write(wf.server_response(headers["sec-websocket-key"], proto))  # type: ignore[union-attr]
            self.open = True
            if not data:
                return
        t = now_ns()
        try:
            frames = self.reader.feed(data)
        except wf.WsError as exc:
            log.error("connector: %s", exc)
            self.transport.close()  # type: ignore[union-attr]
            return
        c = self.call
        rec = self.gen.rec
        real = self.gen.real
        for op, payload, mask in frames:
            if op == wf.OP_BINARY:
                if c is None:
                    continue
                k = c.recv
                c.recv = k + 1
                if real:  # what the caller said, through the switch: placed on its clock after the run (framecheck)
                    if rec.on:
                        rec.frames_in_window += 1
                        c.flog.add(wf.unmask(payload, mask) if mask is not None else payload, t, anchors=True)
                    continue
                sent = c.send_ns[k % _RING]
                if c.rate == 16000 and len(payload) >= 8 and mask is not None:
                    emb = int.from_bytes(payload[:8], "big") ^ int.from_bytes(mask * 2, "big")
                    if emb != sent:
                        c.mismatch += 1
                        sent = emb
                if rec.on:
                    rec.frames_in_window += 1
                    c.flog.add(wf.unmask(payload, mask) if mask is not None else payload, t, anchors=False)
                    if sent <= 0:  # more frames than were sent (a resumed leg's replay): no send time
                        c.mismatch += 1
                        continue
                    lat = t - sent
                    (rec.lat16 if c.rate == 16000 else rec.lat8).append(lat)
                    if lat > FRAME_NS:
                        rec.late_frames += 1
            elif op == wf.OP_TEXT:
                self._text(wf.unmask(payload, mask) if mask is not None else payload)
                c = self.call  # ``start`` binds the call; audio may follow in the same read
            elif op == wf.OP_PING:
                self.transport.write(wf.encode(wf.OP_PONG, wf.unmask(payload, mask) if mask else payload, None))  # type: ignore[union-attr]
            elif op == wf.OP_CLOSE:
                if not self.closing:
                    self.closing = True
                    body = wf.unmask(payload, mask) if mask and payload else payload
                    self.transport.write(wf.encode(wf.OP_CLOSE, body[:2], None))  # type: ignore[union-attr]
                self.transport.close()  # type: ignore[union-attr]

    def _text(self, raw: bytes) -> None:
        try:
            msg = json.loads(raw)
        except ValueError:
            return
        if not isinstance(msg, dict):
            return
        kind = msg.get("type")
        if self.call is None:
            # Our fork server sends ``start``; the bare relay forwards the fork metadata. A real
            # switch picks the uuid itself: the call is then known by its caller's number.
            info = msg.get("call") if kind == "start" else msg
            uuid = info.get("uuid") if isinstance(info, dict) else None
            c = self.gen.by_uuid.get(uuid) if isinstance(uuid, str) else None
            if c is None and isinstance(info, dict) and isinstance(info.get("from"), str):
                c = self.gen.by_number.get(info["from"])
                if c is not None and isinstance(uuid, str):
                    c.uuid = uuid
            if c is not None:
                self.call = c
                c.conn = self
                self.gen.connector_up(c)
            return
        if kind == "mark":
            self.call.marks_back += 1
        elif kind == "stop":
            self.call.stop_reason = str(msg.get("reason"))

    def send(self, data: bytes) -> None:
        if self.transport is not None and not self.closing:
            self.transport.write(data)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.call is not None and self.call.conn is self:
            self.call.conn = None


# ---------------------------------------------------------------------------- ESL core


class _Chan:
    __slots__ = ("call", "events", "blank", "queue", "current", "left_ms", "seq", "ts")

    def __init__(self, call: BenchCall, events: ChannelEvents, blank: int) -> None:
        self.call = call
        self.events = events
        self.blank = blank  # caller frames blanked at each playback start and each return to park
        self.queue: deque[tuple[str, int]] = deque()
        self.current: str | None = None
        self.left_ms = 0
        self.seq = 0  # of the bot's 20 ms frames, as RTP to the caller would number them
        self.ts = 0


_EXT_RATE = {".r8": 8000, ".r16": 16000, ".r24": 24000, ".r32": 32000, ".r48": 48000}
_TEMPLATES: EventTemplates | None = None
_REF_DIALPLAN = RouteFlags(verbose_events=True, jitter_ms=None)


def _templates() -> EventTemplates:
    global _TEMPLATES
    if _TEMPLATES is None:
        _TEMPLATES = EventTemplates()
    return _TEMPLATES


class LeanSwitch:
    """EslCore for :class:`EslServer`: channels without a media engine, playback on the 20 ms tick.

    What it copies from the real switch (FreeSWITCH 1.10.12 with the drachtio mod_audio_fork,
    measured 2026-12-06 with ``python -m testbed.bench.fsprobe``, and REF):

    * Channels are what the bench's SIP calls are on the real switch: PCMU at 8 kHz on either
      route (the route sets only the fork's rate), so the fork server writes ``.r8`` segments.
    * Events are the captured ones (:mod:`testbed.bench.fsevents`): 6.1-6.8 KB, 143-163
      headers, every channel variable; CHANNEL_HANGUP_COMPLETE 9.2-9.6 KB. Whether the channel
      ran ``verbose_events`` changes only PRIVATE_COMMAND among the events here (6.4 KB with,
      2.3 KB without); FreeSWITCH puts the variables in the others whatever the flag.
    * Each file: CHANNEL_EXECUTE and PLAYBACK_START when it starts, one tick (20 ms) after the
      command (REF: PLAYBACK_START 20 ms median); PLAYBACK_STOP (``done``/``break``),
      CHANNEL_EXECUTE_COMPLETE and PRIVATE_COMMAND when it ends: 5 events, 3 of which reach a
      listener subscribed as the fork server subscribes (seen on the real switch: exactly these,
      for every segment). A file still queued at ``uuid_break all`` gives no event (seen).
    * Caller frames blanked, on a channel with no jitter buffer: 2 at every file's start and 2
      when the channel goes back to park after its last queued file, a break included (fsprobe,
      either route: one 1 s file 2 + 2; three files queued at once 2 + 2 + 2 + 2; a file broken by
      ``uuid_break all`` 2 + 2; REF "Playback methods compared"). With a jitter buffer
      (``jitterbuffer_msec`` set before ``answer``, as the dialplan rendered since does) none, and
      none missing either (fsprobe, 20 ms: 0 of ~670 frames over the same playbacks; other sizes
      not measured, taken to be the same). The switch only counts them (``call.zero_next``); the
      media client blanks the next frames it sends. The ~10 frames REF saw at an utterance's
      start are this mechanism, not a separate rule: whenever the queue runs dry between short
      first segments the channel parks (2) and starts again (2).

    ``flags`` (per route, :func:`testbed.bench.benchconf.route_flags` of the rendered dialplan)
    says which; a route not in it gets verbose events and no jitter buffer (the dialplan REF
    measured).
    """

    def __init__(self, rec: Recorder, *, flags: Mapping[str, RouteFlags] | None = None, spool: str = "") -> None:
        self.rec = rec
        self.flags = dict(flags or {})
        self.spool = spool
        self.channels: dict[str, _Chan] = {}
        self.listeners: list[Callable[[Mapping[str, str], str | None], None]] = []
        self.playing: set[_Chan] = set()
        self.tick_no = 0
        self.on_kill: Callable[[BenchCall], None] | None = None
        # Each 20 ms frame of bot audio "sent to the caller": (call, seq, ts, t_ns).
        self.on_audio: Callable[[BenchCall, int, int, int], None] | None = None

    # ---- channels

    def add(self, call: BenchCall, route: str, destination: str = "+15550000000") -> None:
        flags = self.flags.get(route, _REF_DIALPLAN)
        events = _templates().channel(
            verbose=flags.verbose_events, uuid=call.uuid, number=call.number, name=f"Bench {call.idx}",
            destination=destination, route=route, spool=self.spool,
        )
        self.channels[call.uuid] = _Chan(call, events, 0 if flags.jitter_ms else 2)

    def remove(self, uuid: str) -> None:
        ch = self.channels.pop(uuid, None)
        if ch is not None:
            self.playing.discard(ch)
            self._emit("CHANNEL_HANGUP_COMPLETE", ch)

    # ---- EslCore

    def subscribe(self, listener: Callable[[Mapping[str, str], str | None], None]) -> Callable[[], None]:
        self.listeners.append(listener)
        return lambda: self.listeners.remove(listener) if listener in self.listeners else None

    def _count(self, kind: str) -> None:
        rec = self.rec
        if rec.on:
            rec.esl_commands += 1
            rec.esl_by_kind[kind] = rec.esl_by_kind.get(kind, 0) + 1

    def api(self, command: str, args: str) -> str:
        self._count(command)
        parts = args.split()
        ch = self.channels.get(parts[0]) if parts else None
        if command == "status":
            return "UP 0 years, 0 days\n"
        if ch is None:
            return "-ERR No such channel!\n"
        if command == "uuid_dump":
            return "".join(f"{k}: {quote(v, safe='')}\n" for k, v in ch.events.dump.items())
        if command == "uuid_getvar":
            v = ch.events.dump.get("variable_" + parts[1]) if len(parts) > 1 else None
            return "_undef_" if v is None else v
        if command == "uuid_break":
            self._break(ch, all_=len(parts) > 1 and parts[1] == "all")
            return "+OK\n"
        if command in ("uuid_kill", "uuid_transfer"):
            ch.call.killed = True
            if self.on_kill is not None:
                self.on_kill(ch.call)
            return "+OK\n"
        if command in ("uuid_audio_fork", "uuid_send_dtmf"):
            return "+OK Success\n"
        return f"-ERR {command} Command not found!\n"

    def sendmsg(self, uuid: str, headers: Mapping[str, str], body: str | None) -> str:
        self._count("sendmsg")
        ch = self.channels.get(uuid.strip())
        if ch is None:
            return f"-ERR invalid session id [{uuid.strip()}]"
        h = {k.lower(): v for k, v in headers.items()}
        app = h.get("execute-app-name", "")
        if app == "hangup":
            ch.call.killed = True
            if self.on_kill is not None:
                self.on_kill(ch.call)
            return "+OK"
        if app != "playback" or h.get("event-lock", "").lower() != "true":
            return f"-ERR execute {app!r} not emulated"
        path = h.get("execute-app-arg", "")
        rate = _EXT_RATE.get(os.path.splitext(path)[1], 8000)
        try:
            ms = os.stat(path).st_size * 1000 // (2 * rate)
        except OSError:
            ms = -1  # FILE NOT FOUND: no PLAYBACK_* (fork_server.app: seen on 1.10.12); EXECUTE/PRIVATE_COMMAND assumed
        c = ch.call
        rec = self.rec
        if c.tts_t0:
            if rec.on:
                rec.tts_lat.append(now_ns() - c.tts_t0)
            c.tts_t0 = 0
        if rec.on:
            rec.segments += 1
        ch.queue.append((path, ms))
        if ch.current is None:
            self.playing.add(ch)
        return "+OK"

    # ---- the 20 ms clock

    def tick(self) -> None:
        """Advance every playing channel by one ptime (REF: sendmsg start 20 ms after the command)."""
        self.tick_no += 1
        done: list[_Chan] = []
        on = self.rec.on
        t = now_ns()
        audio = self.on_audio
        for ch in self.playing:
            if ch.current is not None:
                ch.left_ms -= 20
                if ch.left_ms <= 0:
                    self._stop(ch, "done")
            while ch.current is None and ch.queue:
                path, ms = ch.queue.popleft()
                self._emit("CHANNEL_EXECUTE", ch, path)
                if ms < 0:
                    self._emit("CHANNEL_EXECUTE_COMPLETE", ch, path, {"Application-Response": "FILE NOT FOUND"})
                    self._emit("PRIVATE_COMMAND", ch, path)
                    continue
                ch.current, ch.left_ms = path, -(-ms // 20) * 20  # padded to whole ptimes (REF)
                ch.call.zero_next += ch.blank  # a playback start blanks 2 caller frames (no jitter buffer)
                self._emit("PLAYBACK_START", ch, path)
            if ch.current is None:
                ch.call.zero_next += ch.blank  # back to park: 2 more
                done.append(ch)
                continue
            if on:
                self.rec.played_ms += 20
            ch.seq += 1
            ch.ts += 160
            if audio is not None:
                audio(ch.call, ch.seq, ch.ts, t)
        for ch in done:
            self.playing.discard(ch)

    def _stop(self, ch: _Chan, status: str) -> None:
        path, ch.current = ch.current or "", None
        self._emit("PLAYBACK_STOP", ch, path, {"Playback-Status": status})
        self._emit("CHANNEL_EXECUTE_COMPLETE", ch, path, {"Application-Response": "FILE PLAYED"})
        self._emit("PRIVATE_COMMAND", ch, path)

    def _break(self, ch: _Chan, all_: bool) -> None:
        if all_:
            ch.queue.clear()  # seen on 1.10.12: the dropped files give no event
        if ch.current is not None:
            if self.rec.on:
                self.rec.breaks += 1
            self._stop(ch, "break")

    def _emit(self, name: str, ch: _Chan, path: str = "", extra: Mapping[str, str] | None = None) -> None:
        if not self.listeners:
            return
        h = ch.events.headers(name, path)
        if extra:
            h.update(extra)
        for listener in list(self.listeners):
            listener(h, None)


# ---------------------------------------------------------------------------- the generator


class LoadGen:
    """Owns the ESL server, the connector server, the calls and the one clock.

    ``real`` is False here: the calls are emulated forks to the fork server. A subclass that
    calls through a real switch (:class:`testbed.bench.caller.SipLoadGen`) sets it, and the
    connector then places the caller's frames on the caller's clock after the run."""

    real = False

    def __init__(self, *, esl_password: str, tts: TtsProfile | None = None, seed: int = 1,
                 first_tts_within_s: float | None = None) -> None:
        self.rec = Recorder()
        self.switch = LeanSwitch(self.rec)
        self.switch.on_kill = self._killed
        self.switch.on_audio = self.bot_audio
        self.esl = EslServer(self.switch, esl_password)
        self.tts = tts or TtsProfile()
        # Each call's first utterance starts at a random point of this span after its connector is up.
        self.first_tts_within_s = self.tts.period_s if first_tts_within_s is None else first_tts_within_s
        self.calls: list[BenchCall] = []
        self.by_uuid: dict[str, BenchCall] = {}
        self.by_number: dict[str, BenchCall] = {}
        self.slots: list[list[BenchCall]] = [[] for _ in range(SLOTS)]
        self._connector: asyncio.base_events.Server | None = None
        self.connector_port = 0
        self._timer: asyncio.TimerHandle | None = None
        self._next_tick = self._epoch = 0
        self._sub = 0
        self.audio_on = True
        self.connected = 0
        self._rng = np.random.default_rng(seed)
        chunk_bytes = 16000 * 2 * self.tts.chunk_ms // 1000
        tts_pcm = _speech_like(16000, 1.0, 7).tobytes()
        # Server→client frames are unmasked: the same bytes serve every call.
        self._tts_frames = [
            wf.encode(wf.OP_BINARY, (tts_pcm * 2)[i * chunk_bytes : (i + 1) * chunk_bytes], None)
            for i in range(int(self.tts.speech_s * 1000) // self.tts.chunk_ms)
        ]
        self._clear = wf.encode(wf.OP_TEXT, b'{"type":"clear"}', None)
        self.failed: list[str] = []

    @property
    def esl_port(self) -> int:
        return self.esl.port

    def connector_url(self, path: str = "/bench") -> str:
        return f"ws://127.0.0.1:{self.connector_port}{path}"

    async def start(self) -> None:
        await self.esl.start()
        loop = asyncio.get_running_loop()
        self._connector = await loop.create_server(lambda: ConnectorConn(self), "127.0.0.1", 0, backlog=4096)
        self.connector_port = self._connector.sockets[0].getsockname()[1]
        self._next_tick = self._epoch = now_ns()
        self._timer = loop.call_soon(self._tick)

    async def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        for c in self.calls:
            if c.media is not None and c.media.transport is not None:
                c.media.transport.abort()
        for c in self.calls:
            if c.conn is not None and c.conn.transport is not None:
                c.conn.transport.abort()
        if self._connector is not None:
            self._connector.close()
        await self.esl.close()

    # ---- calls

    async def place_calls(self, n: int, fork_host: str, fork_port: int, *, routes: list[tuple[str, int]],
                          auth: tuple[str, str] | None, ramp_per_s: float) -> None:
        """Open ``n`` forks, ``ramp_per_s`` a second, routes taken in turn (8k and 16k mixed)."""
        loop = asyncio.get_running_loop()
        base = len(self.calls)
        start = loop.time()
        pending = []
        for i in range(n):
            route, rate = routes[i % len(routes)]
            idx = base + i
            c = BenchCall(idx, route, rate, idx % SLOTS, float(self._rng.uniform(0, self.first_tts_within_s)))
            self.calls.append(c)
            self.by_uuid[c.uuid] = c
            self.by_number[c.number] = c
            self.switch.add(c, route)
            delay = start + i / ramp_per_s - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            pending.append(loop.create_task(self._open(c, fork_host, fork_port, auth)))
        await asyncio.gather(*pending)

    async def _open(self, c: BenchCall, host: str, port: int, auth: tuple[str, str] | None) -> None:
        loop = asyncio.get_running_loop()
        try:
            _, proto = await loop.create_connection(lambda: MediaClient(self, c, f"/calls/{c.route}", auth), host, port)
        except OSError as exc:
            self.failed.append(f"{c.uuid}: {exc}")
            return
        c.media = proto  # type: ignore[assignment]

    def start_audio(self, c: BenchCall) -> None:
        # Frame k is due on the call's sub-tick at t0 + k·20 ms (nominal times, not wake-ups).
        first = self._epoch + c.slot * FRAME_NS // SLOTS
        c.t0 = first + -(-(now_ns() - first) // FRAME_NS) * FRAME_NS
        self.slots[c.slot].append(c)

    def connector_up(self, c: BenchCall) -> None:
        self.connected += 1
        c.started = True
        t = now_ns()
        c.utt_start = t + int(c.phase * 1e9)
        c.tts_next = c.utt_start

    def media_closed(self, c: BenchCall) -> None:
        c.ended = True
        try:
            self.slots[c.slot].remove(c)
        except ValueError:
            pass
        self.switch.remove(c.uuid)

    def bot_audio(self, c: BenchCall, seq: int, ts: int, t: int, marker: bool = False) -> None:
        """One 20 ms frame of the bot's speech reached the caller at ``t`` (a real RTP packet, or
        the emulated switch's clock): utterance starts, holes, first audio, barge-in cut."""
        if c.heard.receive(seq, ts, marker, t):
            if c.first_tts_ns:
                if self.rec.on:
                    self.rec.first_audio.append(t - c.first_tts_ns)
                c.first_tts_ns = 0
            self._cut_done(c)
        if c.clear_ns and t > c.clear_ns:
            c.cut_last = t

    def _cut_done(self, c: BenchCall) -> None:
        """The barge-in cut: the last bot audio the caller got after the ``clear`` (0 if none came
        after it; not counted if the caller heard none of that utterance, e.g. the bare relay)."""
        if c.clear_ns:
            runs = c.heard.runs
            if runs and runs[-1][1] >= c.utt_start:
                self.rec.cuts.append(max(0, c.cut_last - c.clear_ns))
            c.clear_ns = c.cut_last = 0

    def finish_cuts(self) -> None:
        for c in self.calls:
            self._cut_done(c)

    def _killed(self, c: BenchCall) -> None:
        if c.media is not None:
            asyncio.get_running_loop().call_soon(c.media.hangup)

    def hangup_all(self) -> None:
        for c in self.calls:
            if c.media is not None and not c.ended:
                c.media.hangup()

    async def wait_closed(self, timeout: float) -> int:
        """Wait for every fork to close; returns how many are still open."""
        waits = [c.media.closed for c in self.calls if c.media is not None and not c.media.closed.done()]
        if waits:
            await asyncio.wait(waits, timeout=timeout)
        return sum(1 for c in self.calls if c.media is not None and not c.media.closed.done())

    # ---- the clock

    def _tick(self) -> None:
        loop = asyncio.get_running_loop()
        t = now_ns()
        sub = self._sub
        nominal = self._next_tick
        if sub == 0:
            self.switch.tick()
        lag = t - nominal
        if self.rec.on and lag > self.rec.gen_lag_max_ns:
            self.rec.gen_lag_max_ns = lag
        if self.audio_on:
            for c in self.slots[sub]:
                m = c.media
                if m is not None and m.send_due(nominal, t) > 1 and self.rec.on:
                    self.rec.merged_sends += 1
        for c in self.slots[sub]:
            if c.conn is not None and t >= c.tts_next and c.started:
                self._tts_step(c, t)
        self._sub = (sub + 1) % SLOTS
        self._next_tick += FRAME_NS // SLOTS
        # Absolute schedule: a late tick does not shift the ones after it.
        delay = (self._next_tick - now_ns()) / 1e9
        self._timer = loop.call_later(max(0.0, delay), self._tick)

    def _bargein(self, c: BenchCall) -> bool:
        # Spread over the calls, so a short window sees barge-ins too.
        n = self.tts.bargein_every
        return bool(n) and (c.utt + c.idx) % n == 0

    def _tts_step(self, c: BenchCall, t: int) -> None:
        p = self.tts
        conn = c.conn
        if conn is None:
            return
        if not self._tts_frames:
            c.tts_next = t + 3600 * 10**9  # a silent bot
            return
        if c.tts_state == 0:
            c.utt += 1
            c.tts_state = 1
            c.chunks_left = len(self._tts_frames)
            c.utt_start = t
            c.tts_t0 = t  # read by LeanSwitch.sendmsg: first playback of this utterance
            c.first_tts_ns = t  # read by bot_audio: the utterance's first audio at the caller
        if self._bargein(c) and t - c.utt_start >= int(p.bargein_after_s * 1e9):
            conn.send(self._clear)
            c.clears += 1
            self._cut_done(c)
            if self.rec.on:
                c.clear_ns, c.cut_last = t, 0
            c.tts_state = 0
            c.tts_t0 = 0
            c.tts_next = c.utt_start + int(p.period_s * 1e9)
            return
        if c.chunks_left > 0:
            conn.send(self._tts_frames[len(self._tts_frames) - c.chunks_left])
            c.chunks_left -= 1
            c.tts_bytes += 16000 * 2 * p.chunk_ms // 1000
            if self.rec.on:
                self.rec.tts_sent_ms += p.chunk_ms
            if c.chunks_left == 0:
                name = f"u{c.utt}"
                conn.send(wf.encode(wf.OP_TEXT, b'{"type":"mark","name":"%s"}' % name.encode(), None))
                c.marks_sent += 1
                if not self._bargein(c):
                    c.tts_state = 0
                    c.tts_next = c.utt_start + int(p.period_s * 1e9)
                    return
            c.tts_next = t + p.chunk_every_ms * 1_000_000
            return
        # A barge-in utterance whose audio is all sent: wait for the clear time.
        c.tts_next = c.utt_start + int(p.bargein_after_s * 1e9)

    # ---- results

    def totals(self) -> dict[str, Any]:
        calls = [c for c in self.calls]
        return {
            "calls": len(calls),
            "forks_open_failed": len(self.failed) + sum(1 for c in calls if c.media is not None and c.media.error),
            "connector_started": sum(1 for c in calls if c.started),
            "frames_sent": sum(c.sent for c in calls),
            "frames_received": sum(c.recv for c in calls),
            "ts_mismatch": sum(c.mismatch for c in calls),
            "marks_sent": sum(c.marks_sent for c in calls),
            "marks_back": sum(c.marks_back for c in calls),
            "clears": sum(c.clears for c in calls),
            "tts_bytes": sum(c.tts_bytes for c in calls),
            "killed_by_server": sum(1 for c in calls if c.killed),
        }


def percentiles(samples: array, qs: tuple[float, ...] = (50, 99)) -> dict[str, float | None]:
    """ms values of the ns samples: p50, p99, max (None when there are none)."""
    if not len(samples):
        return {**{f"p{int(q)}": None for q in qs}, "max": None}
    a = np.frombuffer(samples, dtype=np.int64).astype(np.float64) / 1e6
    out = {f"p{int(q)}": round(float(np.percentile(a, q)), 3) for q in qs}
    out["max"] = round(float(a.max()), 3)
    return out


