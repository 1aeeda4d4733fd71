"""The mod_audio_fork side of a call, sans-I/O (REF = shared/reference/freeswitch-observed.md).

FreeSWITCH is the WebSocket client. What it sends (REF "Frame order", "Close"):

1. one text frame, the metadata given to ``uuid_audio_fork ... start``, verbatim, about 0.5 ms
   after the open. Ours is ``{"route":"<name>","uuid":"<uuid>"}`` (DESIGN "Rendered dialplan");
2. binary frames of raw s16le PCM, no header, of ANY even length (one RTP packet per frame,
   but everything buffered in one frame under load: never assume 20 ms);
3. maybe later text frames (``send_text``, or ``stop <text>`` just before a 1000 close);
4. after ``graceful-shutdown``, zero-length binary frames, and never a close: we must close.

:class:`ForkIntake` turns those frames into events. Off-spec input raises
:class:`~fork_server.errors.ForkProtocolError` (the adapter closes with 1008 and logs it); no
other exception escapes on any input. The moves are one table, :data:`TRANSITIONS`.

Audio before the metadata is an error: REF has the metadata first, always, ~4 ms before the
first audio, and our dialplan always passes metadata. A binary first frame means a fork that
was started by hand or by a dialplan we did not render, and we cannot tell which call it is.

The builders return the text frames we send to FreeSWITCH (REF "Messages from the server to
FreeSWITCH"). :func:`play_audio` always carries ``audioContentType`` and ``sampleRate``: a
``playAudio`` without ``audioContentType`` crashes the whole FreeSWITCH process.
"""

from __future__ import annotations

import base64
import enum
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from .errors import ForkProtocolError, LocalUsageError

__all__ = [
    "ForkIntake",
    "ForkState",
    "TRANSITIONS",
    "ForkMetadata",
    "CallerAudio",
    "ForkDrained",
    "ForkText",
    "Event",
    "play_audio",
    "kill_audio",
    "stream_mark",
    "ModuleMark",
    "parse_module_text",
    "MAX_MARK_NAME",
    "disconnect",
    "transcription",
    "transfer",
    "error",
    "expected_play_audio_extension",
    "PLAY_AUDIO_RATES",
    "MAX_PLAY_AUDIO_BYTES",
    "MAX_PLAY_TEXT_CHARS",
    "MAX_MESSAGE_BYTES",
    "UUID_RE",
    "ROUTE_RE",
]

UUID_RE: Final = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
ROUTE_RE: Final = re.compile(r"[a-z0-9][a-z0-9_-]{0,62}")
SWITCH_RE: Final = re.compile(r"[a-z0-9][a-z0-9_-]{0,31}")  # fs_dialplan.spec.SWITCH_NAME

# REF "playAudio": raw at these rates gets a matching .rNN file; any other raw rate gets .r16.
PLAY_AUDIO_RATES: Final = {8000: ".r8", 16000: ".r16", 24000: ".r24", 32000: ".r32", 48000: ".r48", 64000: ".r64"}
MAX_PLAY_AUDIO_BYTES: Final = 960_000  # REF: a 30 s message (1.28 MB as base64) worked; no larger one was tried
MAX_PLAY_TEXT_CHARS: Final = 4096
MAX_MESSAGE_BYTES: Final = 64 * 1024  # disconnect / transcription / transfer / error


# --------------------------------------------------------------------------- events


@dataclass(frozen=True, slots=True)
class ForkMetadata:
    """The first text frame, checked. ``raw`` is the text exactly as it came."""

    route: str
    uuid: str
    raw: str
    rate: int | None = None  # the fork rate the switch was told ("rate" of the rendered metadata)
    # The drachtio module given the jambonz module's start (playback.transport: stream): it takes
    # the three bidirectional arguments as part of the metadata (measured) and will never play our audio.
    stream_args_ignored: bool = False
    switch: str | None = None  # several switches: the one that owns the call (rendered, from the config)
    direction: str = "inbound"  # outbound: the rendered outbound extension's fork (an originated call)


@dataclass(frozen=True, slots=True)
class CallerAudio:
    """Caller PCM s16le at the fork rate; non-empty, even length (an odd byte waits for the next frame)."""

    pcm: bytes


@dataclass(frozen=True, slots=True)
class ForkDrained:
    """A zero-length binary frame: graceful-shutdown stopped the audio; the server must close."""


@dataclass(frozen=True, slots=True)
class ForkText:
    """A text frame after the metadata (``send_text``, or ``stop <text>`` before the close)."""

    text: str


Event = ForkMetadata | CallerAudio | ForkDrained | ForkText


class ForkState(enum.Enum):
    AWAITING_METADATA = "awaiting_metadata"
    STREAMING = "streaming"
    DRAINED = "drained"  # graceful-shutdown seen; the adapter closes
    FAILED = "failed"  # a ForkProtocolError was raised; the adapter closes


# What arrives, as table keys.
_TEXT, _AUDIO, _EMPTY = "text frame", "binary frame", "zero-length binary frame"

# Every allowed move. A frame whose (state, kind) is missing is off-spec: ForkProtocolError.
# DRAINED takes anything: frames already in flight when graceful-shutdown ran are harmless,
# and REF says later send_text/stop only produce more zero-length frames.
TRANSITIONS: Final[Mapping[ForkState, Mapping[str, ForkState]]] = {
    ForkState.AWAITING_METADATA: {_TEXT: ForkState.STREAMING},
    ForkState.STREAMING: {_TEXT: ForkState.STREAMING, _AUDIO: ForkState.STREAMING, _EMPTY: ForkState.DRAINED},
    ForkState.DRAINED: {_TEXT: ForkState.DRAINED, _AUDIO: ForkState.DRAINED, _EMPTY: ForkState.DRAINED},
    ForkState.FAILED: {},
}


def _show(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _utf8_len_over(text: str, limit: int) -> bool:
    if len(text) > limit:
        return True
    if 4 * len(text) <= limit:
        return False
    return len(text.encode("utf-8", "surrogatepass")) > limit


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


_SPLIT_HINT = (
    "; it looks cut short: uuid_audio_fork splits its arguments on spaces (the part before a "
    "space becomes the bugname), so the metadata must be compact JSON with no spaces, and the "
    "dialplan must write quotes as &quot;, not \\\" (which cuts the attribute)"
)


_STREAM_ARGS_TAIL = re.compile(r"^(\{.*\}) true true [0-9]{1,6}$", re.S)


def _parse_metadata(text: str, expected_route: str | None) -> ForkMetadata:
    """Check the metadata text; raise ForkProtocolError with a message that says what to fix."""
    if not text:
        raise ForkProtocolError("empty metadata text frame")
    tail = _STREAM_ARGS_TAIL.match(text)
    if tail is not None:
        meta = _parse_metadata(tail.group(1), expected_route)
        return ForkMetadata(meta.route, meta.uuid, text, meta.rate, stream_args_ignored=True, switch=meta.switch,
                            direction=meta.direction)
    try:
        doc = json.loads(text)
    except (ValueError, RecursionError) as exc:
        detail = exc.msg if isinstance(exc, json.JSONDecodeError) else type(exc).__name__
        stripped = text.strip()
        cut = (
            not stripped.startswith("{")
            or stripped.endswith("\\")
            or (isinstance(exc, json.JSONDecodeError) and exc.pos >= len(text.rstrip()))
        )
        raise ForkProtocolError(
            f"metadata is not valid JSON ({detail}): {_show(text)}" + (_SPLIT_HINT if cut else "")
        ) from None
    if not isinstance(doc, dict):
        raise ForkProtocolError(f"metadata must be a JSON object, got {type(doc).__name__}: {_show(text)}")
    route, uuid = doc.get("route"), doc.get("uuid")
    if not isinstance(route, str) or not ROUTE_RE.fullmatch(route):
        raise ForkProtocolError(f"metadata route: expected ^[a-z0-9][a-z0-9_-]{{0,62}}$, got {_show(route)}")
    if expected_route is not None and route != expected_route:
        raise ForkProtocolError(f"metadata route {route!r} does not match the URL path route {expected_route!r}")
    if not isinstance(uuid, str) or not UUID_RE.fullmatch(uuid):
        hint = " (the dialplan variable was not expanded)" if isinstance(uuid, str) and "${" in uuid else ""
        raise ForkProtocolError(f"metadata uuid: expected a FreeSWITCH uuid 8-4-4-4-12 hex, got {_show(uuid)}{hint}")
    switch = doc.get("switch")
    if switch is not None and (not isinstance(switch, str) or not SWITCH_RE.fullmatch(switch)):
        raise ForkProtocolError(f"metadata switch: expected ^[a-z0-9][a-z0-9_-]{{0,31}}$, got {_show(switch)}")
    direction = doc.get("direction", "inbound")
    if direction not in ("inbound", "outbound"):
        raise ForkProtocolError(f"metadata direction: expected inbound or outbound, got {_show(direction)}")
    return ForkMetadata(route, uuid, text, _fork_rate(doc.get("rate", None)), switch=switch, direction=direction)


_RATE_TOKEN = re.compile(r"^([1-9][0-9]?)k$|^([1-9][0-9]{3,4})$")


def _fork_rate(value: Any) -> int | None:
    """The metadata's ``rate``, as uuid_audio_fork takes it ("8k", "16k" or Hz; REF "The API"):
    a multiple of 8000 up to 48000. Absent: None (a dialplan rendered before rates were sent)."""
    if value is None:
        return None
    m = _RATE_TOKEN.match(value) if isinstance(value, str) else None
    hz = (int(m.group(1)) * 1000 if m.group(1) else int(m.group(2))) if m else 0
    if not (8000 <= hz <= 48000 and hz % 8000 == 0):
        hint = " (the dialplan variable was not expanded)" if isinstance(value, str) and "${" in value else ""
        raise ForkProtocolError(f"metadata rate: expected 8k, 16k or a multiple of 8000 Hz up to 48000, got {_show(value)}{hint}")
    return hz


# --------------------------------------------------------------------------- intake


class ForkIntake:
    """One fork WebSocket, FreeSWITCH → us. Frames in, events out; errors raise ForkProtocolError.

    Counters: ``frames_in`` (binary frames accepted, zero-length ones included), ``bytes_in``
    (their bytes), ``texts_in`` (text frames, the metadata included). ``pending_bytes`` is the
    odd byte (0 or 1) held for the next frame; it is dropped when the fork drains.
    """

    def __init__(
        self,
        *,
        expected_route: str | None = None,
        max_metadata_bytes: int = 4096,
        max_frame_bytes: int = 1 << 20,
        max_text_bytes: int = 4096,
    ) -> None:
        if expected_route is not None and not (isinstance(expected_route, str) and ROUTE_RE.fullmatch(expected_route)):
            raise LocalUsageError(f"expected_route: expected a route name, got {_show(expected_route)}")
        for name, value, low in (
            ("max_metadata_bytes", max_metadata_bytes, 64),
            ("max_frame_bytes", max_frame_bytes, 2),
            ("max_text_bytes", max_text_bytes, 0),
        ):
            if not _is_int(value) or value < low:
                raise LocalUsageError(f"{name}: expected int >= {low}, got {_show(value)}")
        self.expected_route = expected_route
        self.max_metadata_bytes = max_metadata_bytes
        self.max_frame_bytes = max_frame_bytes
        self.max_text_bytes = max_text_bytes
        self.state = ForkState.AWAITING_METADATA
        self.metadata: ForkMetadata | None = None
        self.frames_in = 0
        self.bytes_in = 0
        self.texts_in = 0
        self._carry = b""

    @property
    def pending_bytes(self) -> int:
        return len(self._carry)

    def _move(self, kind: str) -> ForkState:
        state = self.state
        new = TRANSITIONS[state].get(kind)
        if new is None:
            if state is ForkState.FAILED:
                raise LocalUsageError(f"{kind} after a ForkProtocolError: the fork must be closed")
            self._fail()
            hint = ""
            if state is ForkState.AWAITING_METADATA:
                hint = " (audio before the metadata: the fork was not started by our dialplan)"
            raise ForkProtocolError(f"{kind} is not allowed in state {state.value}{hint}")
        return new

    def _fail(self) -> None:
        self.state = ForkState.FAILED
        self._carry = b""

    def receive_text(self, text: str) -> list[Event]:
        if not isinstance(text, str):
            raise LocalUsageError(f"receive_text: expected str, got {type(text).__name__}")
        new = self._move(_TEXT)
        self.texts_in += 1
        if self.state is ForkState.AWAITING_METADATA:
            if _utf8_len_over(text, self.max_metadata_bytes):
                self._fail()
                raise ForkProtocolError(f"metadata over {self.max_metadata_bytes} bytes: {_show(text[:80])}")
            try:
                meta = _parse_metadata(text, self.expected_route)
            except ForkProtocolError:
                self._fail()
                raise
            self.metadata = meta
            self.state = new
            return [meta]
        if _utf8_len_over(text, self.max_text_bytes):
            self._fail()
            raise ForkProtocolError(f"text frame over {self.max_text_bytes} bytes: {_show(text[:80])}")
        self.state = new
        return [ForkText(text)]

    def receive_audio(self, data: bytes) -> bytes | None:
        """Hot path for the common frame: the PCM of a non-empty, even, in-limit ``bytes`` frame
        while streaming with no odd byte carried, counted as :meth:`receive_binary` counts it.
        Anything else returns None and must go through :meth:`receive_binary` (same frame)."""
        size = len(data)
        if (
            self.state is not ForkState.STREAMING
            or type(data) is not bytes
            or not size
            or size & 1
            or size > self.max_frame_bytes
            or self._carry
        ):
            return None
        self.frames_in += 1
        self.bytes_in += size
        return data

    def receive_binary(self, data: bytes) -> list[Event]:
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise LocalUsageError(f"receive_binary: expected bytes, got {type(data).__name__}")
        size = data.nbytes if isinstance(data, memoryview) else len(data)
        if not size:
            was = self.state
            self.state = self._move(_EMPTY)
            self.frames_in += 1
            self._carry = b""  # half a sample, and no more audio comes
            return [ForkDrained()] if was is not ForkState.DRAINED else []
        self.state = self._move(_AUDIO)
        if size > self.max_frame_bytes:
            self._fail()
            raise ForkProtocolError(f"binary frame of {size} bytes over {self.max_frame_bytes}")
        self.frames_in += 1
        self.bytes_in += size
        if not self._carry and not size & 1:
            return [CallerAudio(bytes(data))]
        pcm = self._carry + bytes(data)
        cut = len(pcm) & ~1
        self._carry = pcm[cut:]
        return [CallerAudio(pcm[:cut])] if cut else []


# --------------------------------------------------------------------------- builders (us → FreeSWITCH)


def expected_play_audio_extension(content_type: str, rate: int) -> str | None:
    """The extension of the file FreeSWITCH writes for a playAudio (REF "playAudio").

    ``raw`` at 8000…64000 → ``.r8`` … ``.r64``, any other raw rate → ``.r16``; ``wav``/``wave``
    → ``.wav``; any other type → None (the event then has no ``file``).
    """
    if content_type == "raw":
        return PLAY_AUDIO_RATES.get(rate, ".r16")
    if content_type in ("wav", "wave"):
        return ".wav"
    return None


def _dumps(message: dict[str, Any], limit: int | None = MAX_MESSAGE_BYTES) -> str:
    def default(value: Any) -> Any:
        if isinstance(value, Mapping):
            return dict(value)
        raise TypeError(f"{type(value).__name__} is not JSON")

    try:
        text = json.dumps(message, ensure_ascii=False, allow_nan=False, separators=(",", ":"), default=default)
        text.encode("utf-8")
    except (TypeError, ValueError, RecursionError) as exc:
        raise LocalUsageError(f"{message['type']}: cannot encode as JSON: {exc}") from None
    if limit is not None and _utf8_len_over(text, limit):
        raise LocalUsageError(f"{message['type']}: message over {limit} bytes")
    return text


def play_audio(pcm: bytes, sample_rate: int, *, content_type: str = "raw", text: str | None = None) -> str:
    """A ``playAudio`` text frame: FreeSWITCH writes the audio to a file and fires ``play_audio``.

    ``raw``: ``pcm`` is s16le mono at ``sample_rate``, one of :data:`PLAY_AUDIO_RATES` (other
    rates would be written as .r16 and play at the wrong speed). ``wav``: ``pcm`` is a whole
    RIFF/WAVE file whose header agrees with ``sample_rate``. FreeSWITCH does not play the file
    by itself (REF): the adapter plays the ``file`` of the event.
    """
    if not isinstance(pcm, (bytes, bytearray, memoryview)):
        raise LocalUsageError(f"play_audio: pcm: expected bytes, got {type(pcm).__name__}")
    audio = bytes(pcm)
    if not audio:
        raise LocalUsageError("play_audio: no audio")
    if len(audio) > MAX_PLAY_AUDIO_BYTES:
        raise LocalUsageError(f"play_audio: {len(audio)} bytes of audio, over {MAX_PLAY_AUDIO_BYTES}")
    if content_type == "raw":
        if not _is_int(sample_rate) or sample_rate not in PLAY_AUDIO_RATES:
            raise LocalUsageError(
                f"play_audio: raw sample_rate must be one of {sorted(PLAY_AUDIO_RATES)}, got {_show(sample_rate)}"
            )
        if len(audio) & 1:
            raise LocalUsageError(f"play_audio: raw s16le audio must have an even length, got {len(audio)}")
    elif content_type == "wav":
        if not _is_int(sample_rate) or not 8000 <= sample_rate <= 192000:
            raise LocalUsageError(f"play_audio: wav sample_rate: expected int 8000-192000, got {_show(sample_rate)}")
        if len(audio) < 44 or audio[:4] != b"RIFF" or audio[8:12] != b"WAVE":
            raise LocalUsageError("play_audio: wav audio must be a whole RIFF/WAVE file")
    else:
        raise LocalUsageError(f"play_audio: content_type must be raw or wav, got {_show(content_type)}")
    data: dict[str, Any] = {
        "audioContentType": content_type,  # never omitted: without it FreeSWITCH segfaults (REF)
        "sampleRate": sample_rate,
        "audioContent": base64.b64encode(audio).decode("ascii"),
    }
    if text is not None:
        if not isinstance(text, str) or len(text) > MAX_PLAY_TEXT_CHARS:
            raise LocalUsageError(f"play_audio: text: expected str of at most {MAX_PLAY_TEXT_CHARS} chars")
        data["textContent"] = text
    return _dumps({"type": "playAudio", "data": data}, limit=None)


def kill_audio() -> str:
    """``killAudio``: FreeSWITCH stops the current playback (PLAYBACK_STOP ``break``); the jambonz
    module's stream mode also drops the audio it holds (not its 80 ms pre-buffer)."""
    return '{"type":"killAudio"}'


# --------------------------------------------------------------------------- the jambonz module's stream mode
# Measured 2026-12-06 on 1.10.12 with the jambonz mod_audio_fork (bidirectional audio, stream on):
# a mark is played back as the text frame {"type": "mark", "data": {"name":"<n>", "event": "playout"}}
# (or "cleared" at a killAudio), with the name NOT JSON-escaped: names are ours, [a-z0-9] only.

MAX_MARK_NAME = 32
_MARK_NAME = re.compile(r"^[a-z][a-z0-9]{0,31}$")


def stream_mark(name: str) -> str:
    """A mark in the jambonz module's stream: reported back when the audio sent before it has played."""
    if not isinstance(name, str) or not _MARK_NAME.match(name):
        raise LocalUsageError(f"stream mark names are ours: [a-z][a-z0-9]{{0,31}}, got {name!r}")
    return '{"type":"mark","data":{"name":"%s"}}' % name


@dataclass(frozen=True, slots=True)
class ModuleMark:
    """The module's report of one of our stream marks: ``event`` is "playout" or "cleared"."""

    name: str
    event: str


def parse_module_text(text: str) -> ModuleMark | None:
    """A text frame from the jambonz module after the metadata: its mark reports; anything else
    (text a ``send_text`` or ``stop <text>`` carried) is None. Never raises."""
    if not isinstance(text, str) or len(text) > 4096 or '"mark"' not in text:
        return None
    try:
        doc = json.loads(text)
    except (ValueError, RecursionError):
        return None
    data = doc.get("data") if isinstance(doc, dict) and doc.get("type") == "mark" else None
    if not isinstance(data, dict):
        return None
    name, event = data.get("name"), data.get("event")
    if not isinstance(name, str) or not _MARK_NAME.match(name) or event not in ("playout", "cleared"):
        return None
    return ModuleMark(name, event)


def _with_data(kind: str, data: Any) -> str:
    message: dict[str, Any] = {"type": kind}
    if data is not None:
        message["data"] = data
    return _dumps(message)


def disconnect(data: Any = None) -> str:
    """``disconnect``: fires ``mod_audio_fork::disconnect``; it does NOT hang up the call (REF)."""
    return _with_data("disconnect", data)


def transcription(data: Any) -> str:
    """``transcription``: fires ``mod_audio_fork::transcription`` with ``data`` as the body."""
    if data is None:
        raise LocalUsageError("transcription: data is required")
    return _with_data("transcription", data)


def transfer(data: Any) -> str:
    """``transfer``: fires ``mod_audio_fork::transfer`` with ``data`` as the body (no transfer by itself)."""
    if data is None:
        raise LocalUsageError("transfer: data is required")
    return _with_data("transfer", data)


def error(data: Any) -> str:
    """``error``: fires ``mod_audio_fork::error`` with ``data`` as the body."""
    if data is None:
        raise LocalUsageError("error: data is required")
    return _with_data("error", data)
