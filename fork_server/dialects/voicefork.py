"""The voicefork.v1 dialect, sans-I/O (docs/connector-protocol.md, DESIGN.md "Connector protocol v1").

The fork server is the WebSocket client; the connector is the server. This module does no I/O:

* builders (:func:`start`, :func:`dtmf`, :func:`mark`, :func:`stop`) check their arguments,
  raise :class:`~fork_server.errors.LocalUsageError` on a bad one, and return the compact JSON
  text frame to send;
* :class:`ConnectorParser` takes the frames the connector sent and returns events.

The parser never raises on what the connector sends. Anything wrong with a message (bad JSON,
an unknown type, a wrong field, a frame over the limit) becomes a :class:`Malformed` event that
the adapter logs and counts; the call goes on (DESIGN: "never fatal").

Caller-controlled strings (``from``, ``to``, ``caller_name``) are JSON-encoded by
:func:`json.dumps` (quotes, newlines, ``${...}`` are data, nothing more), stripped of lone
surrogates, and capped at :data:`MAX_CALLER_FIELD_CHARS` characters.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from typing import Any, Final

from fs_dialplan.spec import SIP_TARGET

from ..errors import LocalUsageError
from . import messages as m
from .base import Dialect
from .messages import (
    AudioFormat,
    Clear,
    Event,
    HangupRequest,
    Malformed,
    MarkRequest,
    SendDtmf,
    TransferRequest,
    TtsAudio,
)

__all__ = [
    "PROTOCOL_VERSION",
    "SUBPROTOCOL",
    "MAX_TEXT_BYTES",
    "MAX_BINARY_BYTES",
    "MAX_CALLER_FIELD_CHARS",
    "TRUNCATION_MARK",
    "STOP_REASONS",
    "MARK_STATUSES",
    "MIN_SAMPLE_RATE",
    "MAX_SAMPLE_RATE",
    "start",
    "dtmf",
    "mark",
    "stop",
    "ConnectorParser",
    "TtsAudio",
    "AudioFormat",
    "Clear",
    "MarkRequest",
    "HangupRequest",
    "TransferRequest",
    "SendDtmf",
    "Malformed",
    "Event",
    "encode",
    "VoiceforkDialect",
]

PROTOCOL_VERSION: Final = 1
SUBPROTOCOL: Final = "voicefork.v1"
MAX_TEXT_BYTES: Final = 64 * 1024  # a text frame, UTF-8 encoded, either direction
MAX_BINARY_BYTES: Final = 1 << 20  # a binary frame from the connector
MAX_CALLER_FIELD_CHARS: Final = 256  # from / to / caller_name in `start`, marker included
TRUNCATION_MARK: Final = "\u2026"  # "…" ends a caller string that was cut
STOP_REASONS: Final = frozenset(
    {"hangup", "transfer", "shutdown", "error", "connector_hangup", "max_duration"}
)
MARK_STATUSES: Final = frozenset({"played", "cleared"})
MIN_SAMPLE_RATE: Final = 8000
MAX_SAMPLE_RATE: Final = 48000
MAX_MARK_NAME_CHARS: Final = 128
MAX_REASON_CHARS: Final = 256
MAX_TRANSFER_TARGET_CHARS: Final = 256
MAX_DTMF_DIGITS: Final = 32
MAX_DTMF_DURATION_MS: Final = 60_000

_UUID_RE = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
_ROUTE_RE = re.compile(r"[a-z0-9][a-z0-9_-]{0,62}")
_LANGUAGE_RE = re.compile(r"[A-Za-z]{2,8}(?:-[A-Za-z0-9]{1,8}){0,7}")
_DIGIT_RE = re.compile(r"[0-9*#A-D]")
_DIGITS_RE = re.compile(r"[0-9*#A-D]{1,%d}" % MAX_DTMF_DIGITS)
_EXTENSION_RE = re.compile(r"[0-9A-Za-z*#+_.-]{1,64}")
# A SIP URI the fork server can bridge to inline (fs_dialplan.spec.SIP_TARGET: user@host[:port]).
_SIP_URI_RE = re.compile(SIP_TARGET)


# --------------------------------------------------------------------------- helpers


def _show(value: Any, limit: int = 40) -> str:
    """A peer value for a message: repr (so no raw newlines reach the log), cut to ``limit``."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _utf8_len_over(text: str, limit: int) -> bool:
    """True if ``text`` takes more than ``limit`` bytes as UTF-8, encoding only when needed."""
    if len(text) > limit:
        return True
    if 4 * len(text) <= limit:
        return False
    return len(text.encode("utf-8", "surrogatepass")) > limit


def _no_lone_surrogates(text: str) -> str:
    """Replace unpaired surrogates (they cannot be sent as UTF-8) with U+FFFD."""
    return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")


def _cap(text: str, limit: int = MAX_CALLER_FIELD_CHARS) -> str:
    text = _no_lone_surrogates(text)
    return text if len(text) <= limit else text[: limit - len(TRUNCATION_MARK)] + TRUNCATION_MARK


def _json_default(value: Any) -> Any:
    if isinstance(value, Mapping):  # the config model keeps mappings as MappingProxyType
        return dict(value)
    raise TypeError(f"{type(value).__name__} is not JSON")


def _dumps(message: dict[str, Any]) -> str:
    try:
        text = json.dumps(
            message, ensure_ascii=False, allow_nan=False, separators=(",", ":"), default=_json_default
        )
        text.encode("utf-8")
    except (TypeError, ValueError, RecursionError) as exc:  # UnicodeEncodeError is a ValueError
        raise LocalUsageError(f"{message.get('type')}: cannot encode as JSON: {exc}") from None
    if _utf8_len_over(text, MAX_TEXT_BYTES):
        raise LocalUsageError(f"{message.get('type')}: message over {MAX_TEXT_BYTES} bytes")
    return text


def _check_str(name: str, value: Any) -> str:
    if not isinstance(value, str):
        raise LocalUsageError(f"{name}: expected str, got {type(value).__name__}")
    return value


def _check_mark_name(name: Any, where: str) -> str:
    _check_str(where, name)
    if not 1 <= len(name) <= MAX_MARK_NAME_CHARS or not name.isprintable():
        raise LocalUsageError(f"{where}: expected 1-{MAX_MARK_NAME_CHARS} printable chars, got {_show(name)}")
    return name


# --------------------------------------------------------------------------- builders


def start(
    *,
    uuid: str,
    route: str,
    from_: str,
    to: str,
    caller_name: str,
    language: str,
    metadata: Mapping[str, Any],
    sample_rate: int = 16000,
    frame_ms: int = 20,
    resumed: bool = False,
    offset_ms: int = 0,
    direction: str = "inbound",
) -> str:
    """The first message on every connector connection (``resumed=True`` after a reconnect).

    ``offset_ms``: where this leg's first caller frame sits on the call's caller-audio timeline
    (ms from its first frame); a resumed leg starts with audio the last leg may have had."""
    if not isinstance(uuid, str) or not _UUID_RE.fullmatch(uuid):
        raise LocalUsageError(f"start: uuid: expected a FreeSWITCH uuid, got {_show(uuid)}")
    if not isinstance(route, str) or not _ROUTE_RE.fullmatch(route):
        raise LocalUsageError(f"start: route: expected ^[a-z0-9][a-z0-9_-]{{0,62}}$, got {_show(route)}")
    if not isinstance(language, str) or not _LANGUAGE_RE.fullmatch(language):
        raise LocalUsageError(f"start: language: expected a BCP-47 tag like en-US, got {_show(language)}")
    caller = {"from": from_, "to": to, "caller_name": caller_name}
    for key, value in caller.items():
        caller[key] = _cap(_check_str(f"start: {key}", value))
    if not isinstance(metadata, Mapping) or not all(isinstance(k, str) for k in metadata):
        raise LocalUsageError("start: metadata: expected a mapping with str keys")
    if not _is_int(sample_rate) or not MIN_SAMPLE_RATE <= sample_rate <= MAX_SAMPLE_RATE:
        raise LocalUsageError(f"start: sample_rate: expected int 8000-48000, got {_show(sample_rate)}")
    if not _is_int(frame_ms) or not 10 <= frame_ms <= 200 or frame_ms % 10:
        raise LocalUsageError(f"start: frame_ms: expected a multiple of 10 in 10-200, got {_show(frame_ms)}")
    if not isinstance(resumed, bool):
        raise LocalUsageError(f"start: resumed: expected bool, got {_show(resumed)}")
    if not _is_int(offset_ms) or offset_ms < 0 or offset_ms % frame_ms:
        raise LocalUsageError(f"start: offset_ms: expected a whole number of frames >= 0, got {_show(offset_ms)}")
    if direction not in ("inbound", "outbound"):
        raise LocalUsageError(f"start: direction: expected inbound or outbound, got {_show(direction)}")
    return _dumps(
        {
            "type": "start",
            "version": PROTOCOL_VERSION,
            "resumed": resumed,
            "call": {"uuid": uuid, "route": route, "direction": direction, **caller, "language": language,
                     "metadata": dict(metadata)},
            "audio": {"encoding": "pcm_s16le", "sample_rate": sample_rate, "channels": 1, "frame_ms": frame_ms,
                      "offset_ms": offset_ms},
        }
    )


def dtmf(digit: str, duration_ms: int) -> str:
    """The caller pressed ``digit`` (one of ``0-9*#A-D``) for ``duration_ms``."""
    if not isinstance(digit, str) or not _DIGIT_RE.fullmatch(digit):
        raise LocalUsageError(f"dtmf: digit: expected one of 0-9*#A-D, got {_show(digit)}")
    if not _is_int(duration_ms) or not 0 <= duration_ms <= MAX_DTMF_DURATION_MS:
        raise LocalUsageError(f"dtmf: duration_ms: expected int 0-{MAX_DTMF_DURATION_MS}, got {_show(duration_ms)}")
    return _dumps({"type": "dtmf", "digit": digit, "duration_ms": duration_ms})


def mark(name: str, status: str) -> str:
    """Report a connector mark back: ``played`` or ``cleared``."""
    _check_mark_name(name, "mark: name")
    if status not in MARK_STATUSES:
        raise LocalUsageError(f"mark: status: expected played or cleared, got {_show(status)}")
    return _dumps({"type": "mark", "name": name, "status": status})


def stop(reason: str, recording: str | None = None) -> str:
    """The last message before the fork server closes with 1000; ``recording``: the path of the
    call's recording as the switch wrote it (routes with ``recording: true``)."""
    if reason not in STOP_REASONS:
        raise LocalUsageError(f"stop: reason: expected one of {sorted(STOP_REASONS)}, got {_show(reason)}")
    if recording is None:
        return _dumps({"type": "stop", "reason": reason})
    if not isinstance(recording, str) or not _RECORDING_PATH.fullmatch(recording):
        raise LocalUsageError(f"stop: recording: expected an absolute .wav path, got {_show(recording)}")
    return _dumps({"type": "stop", "reason": reason, "recording": recording})


_RECORDING_PATH = re.compile(r"/[A-Za-z0-9_./-]{1,1000}\.wav")


# --------------------------------------------------------------------------- parser


class _Bad(Exception):
    """Internal: one message is malformed (never leaves this module)."""


def _fields(msg: dict[str, Any], allowed: frozenset[str]) -> None:
    extra = sorted(set(msg) - allowed - {"type"})
    if extra:
        raise _Bad(f"{msg['type']}: unknown field {_show(extra[0])}")


def _get_bool(msg: dict[str, Any], key: str, default: bool) -> bool:
    value = msg.get(key, default)
    if not isinstance(value, bool):
        raise _Bad(f"{msg['type']}: {key}: expected true or false, got {_show(value)}")
    return value


def _get_str(msg: dict[str, Any], key: str) -> str:
    if key not in msg:
        raise _Bad(f"{msg['type']}: missing {key}")
    value = msg[key]
    if not isinstance(value, str):
        raise _Bad(f"{msg['type']}: {key}: expected a string, got {type(value).__name__}")
    return value


def _valid_transfer_target(target: str) -> bool:
    if len(target) > MAX_TRANSFER_TARGET_CHARS:
        return False
    if _EXTENSION_RE.fullmatch(target):
        return True
    return _SIP_URI_RE.fullmatch(target) is not None and "${" not in target


def _parse_audio_format(msg: dict[str, Any]) -> Event:
    _fields(msg, frozenset({"sample_rate", "encoding", "channels"}))
    rate = msg.get("sample_rate")
    if not _is_int(rate) or not MIN_SAMPLE_RATE <= rate <= MAX_SAMPLE_RATE:
        raise _Bad(f"audio_format: sample_rate: expected an integer 8000-48000, got {_show(rate)}")
    if msg.get("encoding", "pcm_s16le") != "pcm_s16le":
        raise _Bad(f"audio_format: encoding: only pcm_s16le, got {_show(msg['encoding'])}")
    channels = msg.get("channels", 1)
    if not _is_int(channels) or channels != 1:
        raise _Bad(f"audio_format: channels: only 1, got {_show(channels)}")
    return AudioFormat(rate)


def _parse_clear(msg: dict[str, Any]) -> Event:
    _fields(msg, frozenset())
    return Clear()


def _parse_mark(msg: dict[str, Any]) -> Event:
    _fields(msg, frozenset({"name"}))
    name = _get_str(msg, "name")
    if not 1 <= len(name) <= MAX_MARK_NAME_CHARS or not name.isprintable():
        raise _Bad(f"mark: name: expected 1-{MAX_MARK_NAME_CHARS} printable chars, got {_show(name)}")
    return MarkRequest(name)


def _parse_hangup(msg: dict[str, Any]) -> Event:
    _fields(msg, frozenset({"after_playback", "reason"}))
    after = _get_bool(msg, "after_playback", True)
    reason = msg.get("reason")
    if reason is not None and (
        not isinstance(reason, str) or len(reason) > MAX_REASON_CHARS or not reason.isprintable()
    ):
        raise _Bad(f"hangup: reason: expected a printable string of at most {MAX_REASON_CHARS}, got {_show(reason)}")
    return HangupRequest(after, reason)


def _parse_transfer(msg: dict[str, Any]) -> Event:
    _fields(msg, frozenset({"target", "after_playback"}))
    target = _get_str(msg, "target")
    if not _valid_transfer_target(target):
        raise _Bad(f"transfer: target: expected an extension or a sip:/sips: URI, got {_show(target)}")
    return TransferRequest(target, _get_bool(msg, "after_playback", True))


def _parse_send_dtmf(msg: dict[str, Any]) -> Event:
    _fields(msg, frozenset({"digits"}))
    digits = _get_str(msg, "digits")
    if not _DIGITS_RE.fullmatch(digits):
        raise _Bad(f"send_dtmf: digits: expected 1-{MAX_DTMF_DIGITS} of 0-9*#A-D, got {_show(digits)}")
    return SendDtmf(digits)


_PARSERS = {
    "audio_format": _parse_audio_format,
    "clear": _parse_clear,
    "mark": _parse_mark,
    "hangup": _parse_hangup,
    "transfer": _parse_transfer,
    "send_dtmf": _parse_send_dtmf,
}


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


class ConnectorParser:
    """Turns the connector's frames into events; never raises on what the connector sends.

    ``sample_rate`` is the rate of the connector's audio: ``default_rate`` until an
    ``audio_format`` changes it. An odd trailing byte of a binary frame is carried to the next
    one; ``audio_format`` and ``clear`` start a new stream and drop it (counted in
    ``carry_dropped``). Counters: ``malformed`` (every :class:`Malformed`), ``unknown_types``
    (the part of those with an unknown ``type``), ``text_in``, ``binary_in``, ``bytes_in``.
    """

    def __init__(
        self,
        *,
        max_text_bytes: int = MAX_TEXT_BYTES,
        max_binary_bytes: int = MAX_BINARY_BYTES,
        default_rate: int = 16000,
    ) -> None:
        if not _is_int(max_text_bytes) or max_text_bytes < 64:
            raise LocalUsageError(f"max_text_bytes: expected int >= 64, got {_show(max_text_bytes)}")
        if not _is_int(max_binary_bytes) or max_binary_bytes < 2:
            raise LocalUsageError(f"max_binary_bytes: expected int >= 2, got {_show(max_binary_bytes)}")
        if not _is_int(default_rate) or not MIN_SAMPLE_RATE <= default_rate <= MAX_SAMPLE_RATE:
            raise LocalUsageError(f"default_rate: expected int 8000-48000, got {_show(default_rate)}")
        self.max_text_bytes = max_text_bytes
        self.max_binary_bytes = max_binary_bytes
        self.sample_rate = default_rate
        self._carry = b""
        self.malformed = 0
        self.unknown_types = 0
        self.carry_dropped = 0
        self.text_in = 0
        self.binary_in = 0
        self.bytes_in = 0

    @property
    def pending_bytes(self) -> int:
        """Bytes held back for the next binary frame (0 or 1)."""
        return len(self._carry)

    def receive_text(self, text: str) -> list[Event]:
        if not isinstance(text, str):
            raise LocalUsageError(f"receive_text: expected str, got {type(text).__name__}")
        self.text_in += 1
        if _utf8_len_over(text, self.max_text_bytes):
            return self._malformed(f"text frame over {self.max_text_bytes} bytes")
        try:
            msg = json.loads(text, parse_constant=_reject_constant)
        except (ValueError, RecursionError) as exc:
            detail = exc.msg if isinstance(exc, json.JSONDecodeError) else type(exc).__name__
            return self._malformed(f"invalid JSON ({_show(detail, 60)}): {_show(text)}")
        if not isinstance(msg, dict):
            return self._malformed(f"expected a JSON object, got {type(msg).__name__}")
        if "type" not in msg:
            return self._malformed(f"missing type: {_show(text)}")
        kind = msg["type"]
        if not isinstance(kind, str):
            return self._malformed(f"type: expected a string, got {_show(kind)}")
        parse = _PARSERS.get(kind)
        if parse is None:
            self.unknown_types += 1
            return self._malformed(f"unknown type {_show(kind)}")
        try:
            event = parse(msg)
        except _Bad as exc:
            return self._malformed(str(exc))
        if isinstance(event, AudioFormat):
            self._drop_carry()
            self.sample_rate = event.sample_rate
        elif isinstance(event, Clear):
            self._drop_carry()
        return [event]

    def receive_binary(self, data: bytes) -> list[Event]:
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise LocalUsageError(f"receive_binary: expected bytes, got {type(data).__name__}")
        self.binary_in += 1
        size = len(data) if not isinstance(data, memoryview) else data.nbytes
        if size > self.max_binary_bytes:
            return self._malformed(f"binary frame of {size} bytes over {self.max_binary_bytes}")
        if not size:
            return []
        self.bytes_in += size
        if not self._carry and not size & 1:
            return [TtsAudio(bytes(data), self.sample_rate)]
        pcm = self._carry + bytes(data)
        cut = len(pcm) & ~1
        self._carry = pcm[cut:]
        if not cut:
            return []
        return [TtsAudio(pcm[:cut], self.sample_rate)]

    def _drop_carry(self) -> None:
        if self._carry:
            self._carry = b""
            self.carry_dropped += 1

    def _malformed(self, reason: str) -> list[Event]:
        self.malformed += 1
        return [Malformed(reason)]


# --------------------------------------------------------------------------- the dialect


def encode(message: m.Message) -> str:
    """The voicefork.v1 text frame for one dialect-neutral message."""
    kind = type(message)
    if kind is m.MarkDone:
        return mark(message.name, message.status)  # type: ignore[union-attr]
    if kind is m.DtmfPressed:
        return dtmf(message.digit, message.duration_ms)  # type: ignore[union-attr]
    if kind is m.Stop:
        return stop(message.reason, message.recording)  # type: ignore[union-attr]
    if kind is m.Start:
        s: m.Start = message  # type: ignore[assignment]
        return start(uuid=s.uuid, route=s.route, from_=s.from_, to=s.to, caller_name=s.caller_name,
                     language=s.language, metadata=s.metadata, sample_rate=s.sample_rate,
                     frame_ms=s.frame_ms, resumed=s.resumed, offset_ms=s.offset_ms, direction=s.direction)
    raise LocalUsageError(f"voicefork: cannot encode {kind.__name__}")


class VoiceforkDialect(Dialect):
    """voicefork.v1: JSON control frames, caller audio as binary PCM s16le at 16 kHz."""

    name = "voicefork"
    subprotocol = SUBPROTOCOL
    audio_rate = 16000
    binary_audio = True
    max_message_bytes = MAX_BINARY_BYTES
    playout_lead_ms = 0  # connector-protocol.md asks for TTS unpaced, as it is made: no lead needed

    def __init__(self) -> None:
        self.parser = ConnectorParser()

    def encode(self, message: m.Message) -> list[str]:
        return [encode(message)]

    def encode_audio(self, frames: Sequence[bytes]) -> Sequence[bytes]:
        return frames

    def receive_text(self, text: str) -> list[Event]:
        return self.parser.receive_text(text)

    def receive_binary(self, data: bytes) -> list[Event]:
        return self.parser.receive_binary(data)

    @property
    def malformed(self) -> int:
        return self.parser.malformed
