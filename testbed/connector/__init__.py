"""Reference voice connector for tests, demos and benchmarks (protocol v1, connector side).

It is written from the protocol text (docs/DESIGN.md, docs/connector-protocol.md) and imports
nothing from ``fork_server``, so it checks the fork server's side of the protocol independently.
Run it with ``python -m testbed.connector``.
"""

from . import chaos as _chaos  # noqa: F401 - registers mode "chaos"
from .chaos import ChaosOptions
from .modes import EchoOptions, ModeOptions, ScriptOptions, SinkOptions, make_options
from .recording import AudioFrame, CallRecord, DtmfEvent, MarkEvent, Sent, VadEvent
from .server import ConnectorServer

__all__ = [
    "AudioFrame",
    "ChaosOptions",
    "CallRecord",
    "ConnectorServer",
    "DtmfEvent",
    "EchoOptions",
    "MarkEvent",
    "ModeOptions",
    "ScriptOptions",
    "Sent",
    "SinkOptions",
    "VadEvent",
    "make_options",
]
