"""Twilio's side of a bidirectional Media Stream, sans-I/O.

Wire format as Twilio documents it in "Media Streams - WebSocket Messages"
(https://www.twilio.com/docs/voice/media-streams/websocket-messages), so a bot written for
Twilio (Pipecat's ``TwilioFrameSerializer`` and the like) takes FreeSWITCH calls unchanged:

* to the bot: ``connected``, ``start``, ``media`` (every 20 ms: base64 μ-law at 8 kHz, with
  ``track``, ``chunk``, ``timestamp`` and ``sequenceNumber`` as strings), ``dtmf``, ``mark``
  (its audio played, or ``clear`` dropped it) and ``stop``; field names and order as Twilio's
  examples show them;
* from the bot: ``media`` (base64 μ-law 8 kHz, any length up to :data:`MAX_TEXT_BYTES`),
  ``mark`` and ``clear``. Anything else (another event, a binary frame, bad JSON or base64,
  another stream's ``streamSid``) is a :class:`~fork_server.dialects.messages.Malformed`
  event, logged and counted like a malformed voicefork message; the call goes on.

Twilio's ids are derived from the FreeSWITCH uuid so logs join: ``callSid`` is ``CA`` and
``streamSid`` ``MZ`` followed by the uuid's 32 hex digits. A bot ends the call through
Twilio's REST API (served by :mod:`fork_server.intake`), not over this socket.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from typing import Any, Final, Mapping, Sequence

from ..errors import LocalUsageError
from ..pcm import ulaw_decode, ulaw_encode
from . import messages as m
from .base import Dialect
from .voicefork import MAX_MARK_NAME_CHARS, _cap, _show, _utf8_len_over

__all__ = [
    "AUDIO_RATE",
    "MAX_TEXT_BYTES",
    "MAX_OUT_BYTES",
    "ACCOUNT_SID_RE",
    "call_sid",
    "stream_sid",
    "TwilioDialect",
]

AUDIO_RATE: Final = 8000  # mediaFormat: audio/x-mulaw, 8000 Hz, mono
MAX_TEXT_BYTES: Final = 512 * 1024  # a bot's media message: ~48 s of μ-law once base64-decoded
MAX_OUT_BYTES: Final = 64 * 1024  # a message we build (start with its customParameters)
MAX_PARAMETERS: Final = 64  # customParameters entries (route metadata + caller fields)
ACCOUNT_SID_RE: Final = re.compile(r"AC[0-9a-f]{32}")
_UUID_RE = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
_DIGIT_RE = re.compile(r"[0-9*#A-D]")


def _hex32(uuid: str) -> str:
    if not isinstance(uuid, str) or not _UUID_RE.fullmatch(uuid):
        raise LocalUsageError(f"twilio: expected a FreeSWITCH uuid, got {_show(uuid)}")
    return uuid.replace("-", "").lower()


def call_sid(uuid: str) -> str:
    """``CA`` + the uuid's 32 hex digits (Twilio's Call SID shape)."""
    return "CA" + _hex32(uuid)


def stream_sid(uuid: str) -> str:
    """``MZ`` + the uuid's 32 hex digits (Twilio's Stream SID shape)."""
    return "MZ" + _hex32(uuid)


def _parameter(value: Any) -> str:
    """customParameters are strings at Twilio: a non-string metadata value goes as its JSON."""
    if not isinstance(value, str):
        value = json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=dict)
    return _cap(value)


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


class TwilioDialect(Dialect):
    """One Media Stream: numbers its messages, turns the bot's frames into events.

    Counters: ``malformed`` (every :class:`Malformed`), ``unknown_events`` (the part with an
    event Twilio does not accept), ``media_in`` and ``bytes_in`` (μ-law bytes from the bot).
    """

    name = "twilio"
    subprotocol = None  # Twilio offers none
    audio_rate = AUDIO_RATE
    binary_audio = False
    max_message_bytes = MAX_TEXT_BYTES
    # Twilio plays a bot's media from its own buffer, so bots pace it in real time (Pipecat: 137.5
    # ms bursts 120-160 ms apart). Real 1.10.12 with Pipecat, 5 runs each: no lead, a 1-2 frame
    # hole at the first bursts of every answer; 40 ms, one hole in 5; 60 ms, none.
    playout_lead_ms = 60

    def __init__(self, account_sid: str, *, max_text_bytes: int = MAX_TEXT_BYTES) -> None:
        if not isinstance(account_sid, str) or not ACCOUNT_SID_RE.fullmatch(account_sid):
            raise LocalUsageError(f"twilio: account_sid: expected AC + 32 lowercase hex, got {_show(account_sid)}")
        self.account_sid = account_sid
        self.max_text_bytes = max_text_bytes
        self.stream_sid: str | None = None
        self.call_sid: str | None = None
        self._seq = 0  # sequenceNumber of the last message sent ("1" is the start)
        self._chunk = 0
        self._samples = 0  # caller samples sent: the media timestamp
        self._offset_ms = 0
        self._malformed = 0
        self.unknown_events = 0
        self.media_in = 0
        self.bytes_in = 0

    @property
    def malformed(self) -> int:
        return self._malformed

    # ------------------------------------------------------------------ to the bot

    def _next(self) -> str:
        self._seq += 1
        return str(self._seq)

    def _sid(self, what: str) -> str:
        if self.stream_sid is None:
            raise LocalUsageError(f"twilio: {what} before start")
        return self.stream_sid

    def encode(self, message: m.Message) -> list[str]:
        kind = type(message)
        if kind is m.Start:
            return self._start(message)  # type: ignore[arg-type]
        if kind is m.MarkDone:
            sid = self._sid("mark")
            name = message.name  # type: ignore[union-attr]
            if not isinstance(name, str) or not 1 <= len(name) <= MAX_MARK_NAME_CHARS:
                raise LocalUsageError(f"twilio: mark: name: expected 1-{MAX_MARK_NAME_CHARS} chars, got {_show(name)}")
            # Twilio answers a mark when its audio played and when clear dropped it: same message.
            return [self._dumps({"event": "mark", "sequenceNumber": self._next(), "streamSid": sid,
                                 "mark": {"name": name}})]
        if kind is m.DtmfPressed:
            sid = self._sid("dtmf")
            digit = message.digit  # type: ignore[union-attr]
            if not isinstance(digit, str) or not _DIGIT_RE.fullmatch(digit):
                raise LocalUsageError(f"twilio: dtmf: digit: expected one of 0-9*#A-D, got {_show(digit)}")
            return [self._dumps({"event": "dtmf", "streamSid": sid, "sequenceNumber": self._next(),
                                 "dtmf": {"track": "inbound_track", "digit": digit}})]
        if kind is m.Stop:
            sid = self._sid("stop")
            return [self._dumps({"event": "stop", "sequenceNumber": self._next(), "streamSid": sid,
                                 "stop": {"accountSid": self.account_sid, "callSid": self.call_sid}})]
        raise LocalUsageError(f"twilio: cannot encode {kind.__name__}")

    def _start(self, s: m.Start) -> list[str]:
        if self.stream_sid is not None:
            raise LocalUsageError("twilio: start sent twice on one stream")
        if s.sample_rate != AUDIO_RATE or s.frame_ms != 20:
            raise LocalUsageError(f"twilio: start: the stream is 8000 Hz in 20 ms frames, got {s.sample_rate} Hz, {s.frame_ms} ms")
        if not isinstance(s.metadata, Mapping) or not all(isinstance(k, str) for k in s.metadata):
            raise LocalUsageError("twilio: start: metadata: expected a mapping with str keys")
        if not isinstance(s.offset_ms, int) or s.offset_ms < 0:
            raise LocalUsageError(f"twilio: start: offset_ms: expected int >= 0, got {_show(s.offset_ms)}")
        params = {_cap(k): _parameter(v) for k, v in s.metadata.items()}
        for key, value in (("from", s.from_), ("to", s.to), ("caller_name", s.caller_name),
                           ("from_number", s.from_), ("to_number", s.to)):
            if not isinstance(value, str):
                raise LocalUsageError(f"twilio: start: {key}: expected str, got {type(value).__name__}")
            params[key] = _cap(value)
        if s.direction == "outbound":  # a call the fork server originated (POST /v1/calls)
            params["direction"] = "outbound"
        if len(params) > MAX_PARAMETERS:
            raise LocalUsageError(f"twilio: start: over {MAX_PARAMETERS} customParameters")
        call, stream = call_sid(s.uuid), stream_sid(s.uuid)
        self.call_sid, self.stream_sid = call, stream
        self._offset_ms = s.offset_ms
        connected = self._dumps({"event": "connected", "protocol": "Call", "version": "1.0.0"})
        start = self._dumps({
            "event": "start",
            "sequenceNumber": self._next(),
            "start": {
                "accountSid": self.account_sid,
                "streamSid": stream,
                "callSid": call,
                "tracks": ["inbound"],
                "customParameters": params,
                "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": AUDIO_RATE, "channels": 1},
            },
            "streamSid": stream,
        })
        return [connected, start]

    def encode_audio(self, frames: Sequence[bytes]) -> list[str]:
        """One ``media`` message per frame (20 ms, 320 bytes of PCM s16le at 8 kHz)."""
        sid = self._sid("media")
        ulaw = ulaw_encode(b"".join(frames))  # one table lookup for the batch
        out = []
        pos = 0
        for frame in frames:
            n = len(frame) >> 1
            self._seq += 1
            self._chunk += 1
            ts = self._offset_ms + self._samples // 8  # ms since the stream began (8 samples a ms)
            self._samples += n
            payload = base64.b64encode(ulaw[pos:pos + n]).decode("ascii")
            pos += n
            # Formatted by hand: every field is digits, base64 or the sid (no escaping), and this
            # runs 50 times a second per call (json.dumps costs ~3x; test_twilio checks the shape).
            out.append(
                '{"event":"media","sequenceNumber":"%d","media":{"track":"inbound","chunk":"%d",'
                '"timestamp":"%d","payload":"%s"},"streamSid":"%s"}' % (self._seq, self._chunk, ts, payload, sid)
            )
        return out

    def _dumps(self, message: dict[str, Any]) -> str:
        text = json.dumps(message, ensure_ascii=False, separators=(",", ":"))
        if _utf8_len_over(text, MAX_OUT_BYTES):
            raise LocalUsageError(f"twilio: {message['event']}: message over {MAX_OUT_BYTES} bytes")
        return text

    # ------------------------------------------------------------------ from the bot

    def receive_binary(self, data: bytes) -> list[m.Event]:
        size = len(data) if not isinstance(data, memoryview) else data.nbytes
        return self._bad(f"binary frame of {size} bytes (Media Streams carry JSON text only)")

    def receive_text(self, text: str) -> list[m.Event]:
        if not isinstance(text, str):
            raise LocalUsageError(f"receive_text: expected str, got {type(text).__name__}")
        if _utf8_len_over(text, self.max_text_bytes):
            return self._bad(f"text frame over {self.max_text_bytes} bytes")
        try:
            msg = json.loads(text, parse_constant=_reject_constant)
        except (ValueError, RecursionError) as exc:
            detail = exc.msg if isinstance(exc, json.JSONDecodeError) else type(exc).__name__
            return self._bad(f"invalid JSON ({_show(detail, 60)}): {_show(text)}")
        if not isinstance(msg, dict):
            return self._bad(f"expected a JSON object, got {type(msg).__name__}")
        event = msg.get("event")
        if event not in ("media", "mark", "clear"):
            if isinstance(event, str):
                self.unknown_events += 1
            return self._bad(f"event: expected media, mark or clear, got {_show(event)}")
        sid = msg.get("streamSid")
        if sid != self.stream_sid or sid is None:
            return self._bad(f"{event}: streamSid: expected {self.stream_sid}, got {_show(sid)}")
        if event == "clear":
            return [m.Clear()]
        body = msg.get(event)
        if not isinstance(body, dict):
            return self._bad(f"{event}: missing {event} object")
        if event == "mark":
            name = body.get("name")
            if not isinstance(name, str) or not 1 <= len(name) <= MAX_MARK_NAME_CHARS or not name.isprintable():
                return self._bad(f"mark: name: expected 1-{MAX_MARK_NAME_CHARS} printable chars, got {_show(name)}")
            return [m.MarkRequest(name)]
        payload = body.get("payload")
        if not isinstance(payload, str):
            return self._bad(f"media: payload: expected a base64 string, got {_show(payload)}")
        try:
            ulaw = base64.b64decode(payload, validate=True)
        except (binascii.Error, ValueError):
            return self._bad(f"media: payload: not base64: {_show(payload)}")
        self.media_in += 1
        if not ulaw:
            return []
        self.bytes_in += len(ulaw)
        return [m.TtsAudio(ulaw_decode(ulaw), AUDIO_RATE)]

    def _bad(self, reason: str) -> list[m.Event]:
        self._malformed += 1
        return [m.Malformed(reason)]


