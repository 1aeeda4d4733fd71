"""Dialect-neutral messages: what a call says to its connector and what it hears back (values only).

The session and the playback cores speak these; a dialect (:mod:`fork_server.dialects`)
turns the outgoing ones into its wire frames and its wire frames into the events. The
session never sees a wire format, so a new dialect does not touch the call's state machine.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

__all__ = [
    # to the connector
    "Start",
    "DtmfPressed",
    "MarkDone",
    "Stop",
    "Message",
    # from the connector
    "TtsAudio",
    "AudioFormat",
    "Clear",
    "MarkRequest",
    "HangupRequest",
    "TransferRequest",
    "SendDtmf",
    "Malformed",
    "Event",
]


# --------------------------------------------------------------------------- to the connector


@dataclass(frozen=True, slots=True)
class Start:
    """The first message on every connector connection (``resumed`` after a reconnect).

    ``offset_ms``: where this leg's first caller frame sits on the call's caller-audio timeline."""

    uuid: str
    route: str
    from_: str
    to: str
    caller_name: str
    language: str
    metadata: Mapping[str, Any] = field(default_factory=dict)
    sample_rate: int = 16000
    frame_ms: int = 20
    resumed: bool = False
    offset_ms: int = 0
    direction: str = "inbound"  # | outbound (POST /v1/calls)


@dataclass(frozen=True, slots=True)
class DtmfPressed:
    """The caller pressed ``digit`` for ``duration_ms``."""

    digit: str
    duration_ms: int


@dataclass(frozen=True, slots=True)
class MarkDone:
    """A connector mark is done: ``played`` (its audio was heard) or ``cleared`` (dropped)."""

    name: str
    status: str


@dataclass(frozen=True, slots=True)
class Stop:
    """The last message before the connection closes. ``recording``: the path of the call's
    recording as the switch wrote it (routes with ``recording: true``), for dialects that carry it."""

    reason: str
    recording: str | None = None


Message = Start | DtmfPressed | MarkDone | Stop


# --------------------------------------------------------------------------- from the connector


@dataclass(frozen=True, slots=True)
class TtsAudio:
    """Connector audio: PCM s16le mono at ``sample_rate``; always a non-empty even length."""

    pcm: bytes
    sample_rate: int


@dataclass(frozen=True, slots=True)
class AudioFormat:
    """The connector's next audio is at this rate (8000–48000 Hz)."""

    sample_rate: int


@dataclass(frozen=True, slots=True)
class Clear:
    """Barge-in: stop playing, drop what is queued, report pending marks ``cleared``."""


@dataclass(frozen=True, slots=True)
class MarkRequest:
    """Report ``played`` when everything queued before this mark has played."""

    name: str


@dataclass(frozen=True, slots=True)
class HangupRequest:
    after_playback: bool
    reason: str | None


@dataclass(frozen=True, slots=True)
class TransferRequest:
    """``target`` is a dialplan extension or a ``sip:``/``sips:`` URI, already checked."""

    target: str
    after_playback: bool


@dataclass(frozen=True, slots=True)
class SendDtmf:
    digits: str


@dataclass(frozen=True, slots=True)
class Malformed:
    """The connector sent something off-spec. ``reason`` is safe to log (bounded, repr-quoted)."""

    reason: str


Event = TtsAudio | AudioFormat | Clear | MarkRequest | HangupRequest | TransferRequest | SendDtmf | Malformed
