"""Connector protocol v1 seen from the connector (pure; written from the protocol text only).

:class:`ForkStream` checks, strictly, what the fork server sends: ``start`` first and once,
caller audio in exact 640-byte frames, ``dtmf``/``mark``/``stop`` in their documented form,
nothing after ``stop``, and mark reports only for marks we requested, once each, in order.
It never raises on peer input: each problem comes out as a :class:`Violation` and the stream
goes on. The builders make what a connector sends and raise ValueError on a bad argument
(our own misuse), so a message that leaves this module is on-spec.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "AUDIO_FRAME_BYTES",
    "CallerAudio",
    "Dtmf",
    "ForkEvent",
    "ForkStream",
    "MarkReport",
    "MAX_BINARY_BYTES",
    "MAX_TEXT_BYTES",
    "STOP_REASONS",
    "Start",
    "Stop",
    "SUBPROTOCOL",
    "Violation",
    "audio_format",
    "clear",
    "hangup",
    "mark",
    "send_dtmf",
    "transfer",
]

SUBPROTOCOL = "voicefork.v1"
AUDIO_FRAME_BYTES = 640  # 20 ms of PCM s16le mono at 16 kHz
MAX_TEXT_BYTES = 64 * 1024
MAX_BINARY_BYTES = 1 << 20
STOP_REASONS = frozenset({"hangup", "transfer", "shutdown", "error", "connector_hangup", "max_duration"})
START_AUDIO = {"encoding": "pcm_s16le", "sample_rate": 16000, "channels": 1, "frame_ms": 20}

_DTMF_DIGIT = re.compile(r"[0-9*#A-D]\Z")
_DTMF_DIGITS = re.compile(r"[0-9*#A-D]{1,32}\Z")
_MARK_NAME = re.compile(r"[\x20-\x7e]{1,128}\Z")
_EXTENSION = re.compile(r"[0-9A-Za-z*#+_.-]{1,64}\Z")
_SIP_URI = re.compile(r"sips?:[^\s\"'\\<>{}\[\],|]{1,252}\Z", re.ASCII)
MAX_DTMF_MS = 60_000
MAX_CALLER_FIELD = 256  # from / to / caller_name, in characters (docs/connector-protocol.md)


# --- events out of ForkStream ----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Start:
    uuid: str
    route: str
    resumed: bool
    message: dict[str, Any] = field(repr=False)
    offset_ms: int = 0  # where this leg's first caller frame sits on the call's timeline


@dataclass(frozen=True, slots=True)
class CallerAudio:
    pcm: bytes = field(repr=False)
    index: int  # 0-based count of binary frames received on this connection


@dataclass(frozen=True, slots=True)
class Dtmf:
    digit: str
    duration_ms: int


@dataclass(frozen=True, slots=True)
class MarkReport:
    name: str
    status: str  # "played" | "cleared"


@dataclass(frozen=True, slots=True)
class Stop:
    reason: str
    recording: str | None = None  # the recording's path, on recorded routes


@dataclass(frozen=True, slots=True)
class Violation:
    """The fork server broke protocol v1; ``message`` says where and how."""

    message: str

    def __str__(self) -> str:
        return self.message


ForkEvent = Start | CallerAudio | Dtmf | MarkReport | Stop | Violation


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _keys(where: str, obj: dict[str, Any], required: set[str], optional: frozenset[str] = frozenset()) -> list[str]:
    problems = [f"{where}: missing key {k!r}" for k in sorted(required - obj.keys())]
    problems += [f"{where}: unexpected key {k!r}" for k in sorted(obj.keys() - required - optional)]
    return problems


class ForkStream:
    """Validate one connection's inbound messages; return events (and violations) per message."""

    def __init__(self) -> None:
        self.started = False
        self.stopped = False
        self.frames = 0  # binary frames received
        self.bad_frames = 0  # binary frames that were not exactly 640 bytes
        self.texts = 0
        self._pending_marks: list[str] = []  # marks we sent, not yet reported, in order

    # -- what we sent, so reports can be checked
    def mark_sent(self, name: str) -> None:
        self._pending_marks.append(name)

    @property
    def pending_marks(self) -> tuple[str, ...]:
        return tuple(self._pending_marks)

    # -- what came in
    def receive_binary(self, data: bytes) -> list[ForkEvent]:
        index = self.frames
        self.frames += 1
        out: list[ForkEvent] = []
        where = f"binary frame {index}"
        if self.stopped:
            out.append(Violation(f"{where}: audio after stop"))
        elif not self.started:
            out.append(Violation(f"{where}: audio before start"))
        if len(data) != AUDIO_FRAME_BYTES:
            self.bad_frames += 1
            out.append(Violation(f"{where}: {len(data)} bytes, expected {AUDIO_FRAME_BYTES}"))
        if len(data) > MAX_BINARY_BYTES:
            out.append(Violation(f"{where}: larger than {MAX_BINARY_BYTES} bytes"))
        out.append(CallerAudio(data, index))
        return out

    def receive_text(self, text: str) -> list[ForkEvent]:
        index = self.texts
        self.texts += 1
        where = f"text message {index}"
        size = len(text.encode("utf-8", "surrogatepass"))
        if size > MAX_TEXT_BYTES:
            return [Violation(f"{where}: {size} bytes, more than {MAX_TEXT_BYTES}")]
        try:
            msg = json.loads(text)
        except ValueError as exc:
            return [Violation(f"{where}: malformed JSON ({exc})")]
        if not isinstance(msg, dict):
            return [Violation(f"{where}: JSON {type(msg).__name__}, expected an object")]
        kind = msg.get("type")
        if not isinstance(kind, str):
            return [Violation(f"{where}: no string 'type'")]
        where = f"{where} ({kind})"
        out: list[ForkEvent] = []
        if self.stopped:
            out.append(Violation(f"{where}: message after stop"))
        elif kind != "start" and not self.started:
            out.append(Violation(f"{where}: before start"))
        handler = getattr(self, f"_on_{kind}", None)
        if handler is None or kind.startswith("_"):
            out.append(Violation(f"{where}: unknown type"))
            return out
        out.extend(handler(where, msg))
        return out

    def _on_start(self, where: str, msg: dict[str, Any]) -> list[ForkEvent]:
        out: list[ForkEvent] = []
        if self.started:
            out.append(Violation(f"{where}: start sent twice"))
        self.started = True
        problems = _keys(where, msg, {"type", "version", "resumed", "call", "audio"})
        if msg.get("version") != 1 or not _is_int(msg.get("version")):
            problems.append(f"{where}: version must be 1, got {msg.get('version')!r}")
        resumed = msg.get("resumed")
        if not isinstance(resumed, bool):
            problems.append(f"{where}: resumed must be true or false, got {resumed!r}")
        audio = msg.get("audio")
        fixed = {k: v for k, v in audio.items() if k != "offset_ms"} if isinstance(audio, dict) else audio
        offset = audio.get("offset_ms") if isinstance(audio, dict) else None
        if fixed != START_AUDIO or not all(type(audio[k]) is type(v) for k, v in START_AUDIO.items()):
            problems.append(f"{where}: audio must be {json.dumps(START_AUDIO)} and offset_ms, got {json.dumps(audio)}")
        elif not _is_int(offset) or offset < 0 or offset % 20:
            problems.append(f"{where}: audio.offset_ms must be a whole number of 20 ms frames >= 0, got {offset!r}")
            offset = 0
        call = msg.get("call")
        uuid = route = ""
        if not isinstance(call, dict):
            problems.append(f"{where}: call must be an object, got {call!r}")
        else:
            at = f"{where}: call"
            problems += _keys(at, call, {"uuid", "route", "from", "to", "caller_name", "language", "metadata"}, {"direction"})
            if call.get("direction", "inbound") not in ("inbound", "outbound"):
                problems.append(f"{at}.direction must be inbound or outbound, got {call.get('direction')!r:.40}")
            uuid, route = call.get("uuid"), call.get("route")
            if not isinstance(uuid, str) or not uuid:
                problems.append(f"{at}.uuid must be a non-empty string, got {uuid!r}")
                uuid = ""
            if not isinstance(route, str) or not route:
                problems.append(f"{at}.route must be a non-empty string, got {route!r}")
                route = ""
            for k in ("from", "to", "caller_name"):  # untrusted SIP values: strings, "" when missing
                if k in call and (not isinstance(call[k], str) or len(call[k]) > MAX_CALLER_FIELD):
                    problems.append(f"{at}.{k} must be a string of at most {MAX_CALLER_FIELD}, got {call[k]!r:.80}")
            if "language" in call and not isinstance(call["language"], str):
                problems.append(f"{at}.language must be a string, got {call['language']!r}")
            if "metadata" in call and not isinstance(call["metadata"], dict):
                problems.append(f"{at}.metadata must be an object, got {call['metadata']!r}")
        out.extend(Violation(p) for p in problems)
        out.append(Start(uuid, route, resumed is True, msg, offset if _is_int(offset) else 0))
        return out

    def _on_dtmf(self, where: str, msg: dict[str, Any]) -> list[ForkEvent]:
        problems = _keys(where, msg, {"type", "digit", "duration_ms"})
        digit, duration = msg.get("digit"), msg.get("duration_ms")
        if not isinstance(digit, str) or not _DTMF_DIGIT.match(digit):
            problems.append(f"{where}: digit must be one of 0-9*#A-D, got {digit!r}")
        if not _is_int(duration) or not 0 <= duration <= MAX_DTMF_MS:
            problems.append(f"{where}: duration_ms must be an integer 0..{MAX_DTMF_MS}, got {duration!r}")
        out: list[ForkEvent] = [Violation(p) for p in problems]
        if isinstance(digit, str):
            out.append(Dtmf(digit, duration if _is_int(duration) else 0))
        return out

    def _on_mark(self, where: str, msg: dict[str, Any]) -> list[ForkEvent]:
        problems = _keys(where, msg, {"type", "name", "status"})
        name, status = msg.get("name"), msg.get("status")
        if status not in ("played", "cleared"):
            problems.append(f"{where}: status must be 'played' or 'cleared', got {status!r}")
        if not isinstance(name, str):
            problems.append(f"{where}: name must be a string, got {name!r}")
            return [Violation(p) for p in problems]
        where = f"{where} {name!r}"
        if name not in self._pending_marks:
            problems.append(f"{where}: reported but not pending (never sent, or reported already)")
        else:
            if self._pending_marks[0] != name:
                problems.append(f"{where}: reported before earlier mark {self._pending_marks[0]!r}")
            self._pending_marks.remove(name)
        out: list[ForkEvent] = [Violation(p) for p in problems]
        out.append(MarkReport(name, status if isinstance(status, str) else ""))
        return out

    def _on_stop(self, where: str, msg: dict[str, Any]) -> list[ForkEvent]:
        problems = _keys(where, msg, {"type", "reason"}, frozenset({"recording"}))
        reason = msg.get("reason")
        recording = msg.get("recording")
        if recording is not None and not (isinstance(recording, str) and recording.startswith("/") and recording.endswith(".wav")):
            problems.append(f"{where}: recording must be an absolute .wav path, got {recording!r}")
            recording = None
        if reason not in STOP_REASONS:
            problems.append(f"{where}: reason must be one of {sorted(STOP_REASONS)}, got {reason!r}")
        self.stopped = True
        out: list[ForkEvent] = [Violation(p) for p in problems]
        out.append(Stop(reason if isinstance(reason, str) else "", recording))
        return out


# --- builders for what a connector sends -----------------------------------------------------


def _dump(obj: dict[str, Any]) -> str:
    return json.dumps(obj, separators=(",", ":"))


def audio_format(sample_rate: int) -> str:
    if not _is_int(sample_rate) or not 8000 <= sample_rate <= 48000:
        raise ValueError(f"sample_rate must be an integer 8000..48000, got {sample_rate!r}")
    return _dump({"type": "audio_format", "sample_rate": sample_rate, "encoding": "pcm_s16le", "channels": 1})


def clear() -> str:
    return _dump({"type": "clear"})


def mark(name: str) -> str:
    if not isinstance(name, str) or not _MARK_NAME.match(name):
        raise ValueError(f"mark name must be 1-128 printable ASCII characters, got {name!r}")
    return _dump({"type": "mark", "name": name})


def hangup(*, after_playback: bool = True, reason: str | None = None) -> str:
    msg: dict[str, Any] = {"type": "hangup", "after_playback": bool(after_playback)}
    if reason is not None:
        msg["reason"] = reason
    return _dump(msg)


def transfer(target: str, *, after_playback: bool = True) -> str:
    ok = isinstance(target, str) and (
        _EXTENSION.match(target) is not None
        or (target.isascii() and _SIP_URI.match(target) is not None and "${" not in target)
    )
    if not ok:
        raise ValueError(f"transfer target must be an extension or a sip:/sips: URI, got {target!r}")
    return _dump({"type": "transfer", "target": target, "after_playback": bool(after_playback)})


def send_dtmf(digits: str) -> str:
    if not isinstance(digits, str) or not _DTMF_DIGITS.match(digits):
        raise ValueError(f"digits must be 1-32 of 0-9*#A-D, got {digits!r}")
    return _dump({"type": "send_dtmf", "digits": digits})
