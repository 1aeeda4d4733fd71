"""The events the call adapter makes and the actions the call's cores ask it to perform (values only).

Shared by :mod:`fork_server.session` (the call's state machine) and :mod:`fork_server.playback`
(what the caller hears), and performed by :mod:`fork_server.call`. Events from the peers'
protocols live with their parsers (:mod:`fork_server.dialects.messages`,
:mod:`fork_server.esl_messages`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

from .dialects import voicefork
from .dialects.messages import Message

__all__ = [
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
    "SendAudioToFork",
    "BreakPlayback",
    "HangupCall",
    "TransferCall",
    "SendDtmfToCaller",
    "StopFork",
    "CloseFork",
    "QueueHangup",
    "DeleteFile",
    "ArmTimer",
    "Finished",
    "CallSummary",
]


# --- events created by the adapter (protocol events come from connector_protocol / esl_messages)


@dataclass(frozen=True, slots=True)
class CallerInfoReady:
    number: str
    name: str
    destination: str
    write_rate: int
    recording: str | None = None  # the recording's path as the switch writes it (checked by the adapter)


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
    """One dialect-neutral message; the connector link's dialect writes its wire frames."""

    message: Message

    @property
    def text(self) -> str:
        """The message as voicefork.v1 would send it (logs and tests; the link encodes its own)."""
        return voicefork.encode(self.message)


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
class SendAudioToFork:
    """Binary audio over the fork socket (the jambonz module's bidirectional audio)."""

    pcm: bytes


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
class CloseFork:
    """Close the fork socket from our side (the stream transport's way to end the fork: binary
    frames arriving while ``uuid_audio_fork stop`` runs corrupted the jambonz module's heap, 5
    crashes in 60 stops; after our close nothing more can arrive, and the disconnect event's
    ``stop`` then frees the bug)."""


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
