"""The interface every connector dialect implements (sans-I/O, after websockets' protocol.py).

One instance per connector connection: it numbers what it sends (Twilio's sequenceNumber)
and keeps what it parsed (a voicefork odd byte). No sockets, no asyncio, no clock.
"""

from __future__ import annotations

import abc
from typing import ClassVar, Sequence

from .messages import Event, Message

__all__ = ["Dialect"]


class Dialect(abc.ABC):
    """Turns :mod:`~fork_server.dialects.messages` into wire frames and wire frames into events.

    ``audio_rate``: the rate of the caller audio the dialect carries (the session resamples to
    it); ``binary_audio``: :meth:`encode_audio` returns the frames unchanged, so the adapter's
    hot path may skip the call; ``max_message_bytes``: the largest frame taken from the peer
    (the WebSocket's ``max_size``); ``playout_lead_ms``: how long file playback waits before an
    utterance's first file by default (the connector's ``playout_lead_ms`` overrides it): bots
    that pace their audio in real time need that margin. ``receive_*`` never raise on what the peer sent: anything
    off-spec is a :class:`~fork_server.dialects.messages.Malformed` event, counted in
    ``malformed``.
    """

    name: ClassVar[str]
    subprotocol: ClassVar[str | None]
    audio_rate: ClassVar[int]
    binary_audio: ClassVar[bool]
    max_message_bytes: ClassVar[int]
    playout_lead_ms: ClassVar[int]

    @abc.abstractmethod
    def encode(self, message: Message) -> list[str]:
        """The text frames for one message, in order (raises LocalUsageError on a bad one)."""

    @abc.abstractmethod
    def encode_audio(self, frames: Sequence[bytes]) -> Sequence[bytes | str]:
        """The frames for 20 ms blocks of caller PCM s16le at ``audio_rate``."""

    @abc.abstractmethod
    def receive_text(self, text: str) -> list[Event]:
        """Events for one text frame from the connector."""

    @abc.abstractmethod
    def receive_binary(self, data: bytes) -> list[Event]:
        """Events for one binary frame from the connector."""

    @property
    @abc.abstractmethod
    def malformed(self) -> int:
        """How many off-spec frames the peer has sent on this connection."""
