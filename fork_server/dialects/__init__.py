"""Connector dialects: the wire formats a voice connector may speak, behind one interface.

* :mod:`.messages` — what the session says and hears, whatever the wire;
* :mod:`.base` — :class:`Dialect`, the sans-I/O interface every dialect implements;
* :mod:`.voicefork` — ``voicefork.v1`` (docs/connector-protocol.md), the default;
* :mod:`.twilio` — Twilio Media Streams, for bots written for Twilio.

A new dialect (Telnyx, Plivo, …) is one module here and a line in :data:`DIALECTS`.
"""

from __future__ import annotations

from typing import Callable

from ..errors import LocalUsageError
from .base import Dialect
from .twilio import TwilioDialect
from .voicefork import VoiceforkDialect

__all__ = ["Dialect", "DIALECTS", "factory", "VoiceforkDialect", "TwilioDialect"]

DIALECTS: dict[str, type[Dialect]] = {"voicefork": VoiceforkDialect, "twilio": TwilioDialect}


def factory(protocol: str, *, account_sid: str | None = None) -> Callable[[], Dialect]:
    """A maker of fresh dialect instances (one per connector connection) for a config's ``protocol``."""
    if protocol == "voicefork":
        return VoiceforkDialect
    if protocol == "twilio":
        if account_sid is None:
            raise LocalUsageError("twilio: account_sid is required")
        TwilioDialect(account_sid)  # check it now, not at the first call
        return lambda: TwilioDialect(account_sid)
    raise LocalUsageError(f"unknown connector protocol {protocol!r}; known: {', '.join(DIALECTS)}")
