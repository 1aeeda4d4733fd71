"""Caller-audio hot path in one process, without sockets: CPU µs per 20 ms frame of our own code.

A masked fork frame goes into :class:`fork_server.intake.ForkConnection` (websockets'
ServerProtocol parses it), through :meth:`Call._on_fork_message`, ``ForkIntake``, the
session's resampler and framer, :class:`ConnectorLink`'s fast path and the client
:class:`fork_server.wsconn.WsConnection` (websockets' ClientProtocol masks it), into a
transport that only counts bytes. The kernel's share (two socket syscalls per frame) is not
in this figure; ``testbed.bench.capacity`` measures everything. Timed with
``time.process_time`` (CPU, not wall), best of three, so it moves less with other load.

Run: ``python -m testbed.bench.hotpath [frames]``.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import time
from typing import Any

from websockets.client import ClientProtocol
from websockets.protocol import OPEN
from websockets.server import ServerProtocol
from websockets.uri import parse_uri


from fork_server import dialects
from fork_server.actions import SendToConnector
from fork_server.audio_fork import ForkIntake
from fork_server.call import Call, ConnectorTarget
from fork_server.connector_link import ConnectorLink
from fork_server.intake import ForkConnection
from fork_server.metrics import Metrics
from fork_server.session import CallerInfoReady, CallSession, ConnectorUp, SessionSettings
from fork_server.spool import SpoolLayout
from fork_server.wsconn import WsConnection

__all__ = ["run", "main"]

U = "3f1a2b4c-5d6e-4f70-8a9b-0c1d2e3f4a5b"


class _Sink(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.bytes = 0

    def write(self, data: Any) -> None:
        self.bytes += len(data)

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return ("127.0.0.1", 1) if name == "peername" else default

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        pass

    def is_closing(self) -> bool:
        return False

    def can_write_eof(self) -> bool:
        return True


class _Server:
    connections: set = set()


def _call(rate: int, protocol: str = "voicefork") -> tuple[ForkConnection, _Sink]:
    make = dialects.factory(protocol, account_sid="AC" + "0" * 32)
    settings = SessionSettings(
        route="bench", fork_rate=rate, language="en-US", metadata={}, fallback_action="hangup",
        fallback_file=None, fallback_target=None, spool=SpoolLayout("/tmp/vf-hot", "/tmp/vf-hot"),
        connector_rate=dialects.DIALECTS[protocol].audio_rate,
    )
    session = CallSession(U, settings)
    session.start()
    session.handle(CallerInfoReady("+1", "x", "+2", rate))
    start = next(a.message for a in session.handle(ConnectorUp()) if isinstance(a, SendToConnector))
    fork = ForkConnection(_Server())  # type: ignore[arg-type]
    fork.protocol = ServerProtocol(state=OPEN, max_size=1 << 20)  # past the handshake
    fork.connection_made(_Sink())
    intake = ForkIntake(expected_route="bench")
    intake.receive_text('{"route":"bench","uuid":"%s"}' % U)
    log = logging.getLogger("hotpath")
    call = Call(session, fork, intake, ConnectorTarget("ws://x/", {}, 1, 10, 2000), None, Metrics(), log)
    link = ConnectorLink("ws://x/", headers={}, connect_timeout_s=1, ping_interval_s=10, max_queued_frames=100,
                         on_event=lambda e: None, on_lost=lambda c, r: None, log=call.log, dialect=make)
    link.dialect.encode(start)  # the stream is started (twilio numbers its media from here)
    client = WsConnection(ClientProtocol(parse_uri("ws://x/"), state=OPEN), ping_interval=None)
    out = _Sink()
    client.connection_made(out)
    link._ws = client  # type: ignore[assignment]
    call._link = link
    fork.set_receiver(call._on_fork_message, lambda: None)
    return fork, out


def _wire(rate: int, frames: int) -> list[bytes]:
    c = ClientProtocol(parse_uri("ws://x/"), state=OPEN)
    out = []
    for i in range(frames):
        c.send_binary(bytes([i & 0xFF]) * (rate // 25))
        out.append(c.data_to_send()[0])
    return out


async def _measure(rate: int, frames: int, protocol: str = "voicefork") -> dict[str, float]:
    wire = _wire(rate, 500)
    best = float("inf")
    least = 640 if protocol == "voicefork" else 300  # bytes a frame puts on the connector's wire
    for _ in range(3):
        fork, out = _call(rate, protocol)
        t0 = time.process_time()
        for i in range(frames):
            fork.data_received(wire[i % 500])
        best = min(best, time.process_time() - t0)
        if out.bytes < frames * least:
            raise RuntimeError(f"only {out.bytes} bytes reached the connector side")
    return {"route": f"{rate // 1000}k", "protocol": protocol, "us_per_frame": round(best / frames * 1e6, 2),
            "wire_bytes_per_frame": round(out.bytes / frames, 1)}


def run(frames: int = 20000) -> list[dict[str, float]]:
    async def both() -> list[dict[str, float]]:
        return [await _measure(16000, frames), await _measure(8000, frames)]

    return asyncio.run(both())


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    for row in run(int(args[0]) if args else 20000):
        print(f"hot path (in-process, no syscalls): {row['route']} route {row['us_per_frame']:.1f} us CPU per caller frame")
    return 0


if __name__ == "__main__":
    sys.exit(main())



