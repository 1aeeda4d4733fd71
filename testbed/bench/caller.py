"""The bench's lean caller agent: N real SIP calls with steady 20 ms PCMU RTP, in one process.

:class:`SipLoadGen` is :class:`testbed.bench.load.LoadGen` with its emulated forks replaced by
real calls into a FreeSWITCH (the switch then forks to the fork server itself). The connector
and the one clock are the generator's own: the clock's tick sends every call's RTP on that
call's sub-tick (``send_due``, as the emulated media clients do), so there is no task per call.

Per call: one UDP socket for its RTP (:class:`RtpLeg`); one UDP socket for all the SIP
(:class:`SipAgent`, dialogs from :mod:`testbed.bench.sipmsg`). The caller speaks the bench voice
for the whole call (:mod:`testbed.bench.voice`: never silent); what it hears is kept as counts
(:class:`testbed.bench.rtp.Heard`), never decoded. Per call it keeps every packet's send time
(an ``array('q')``, at most ``framecheck.MAX_FRAMES``), for placing the connector's frames on
its clock.
"""

from __future__ import annotations

import asyncio
import logging
import random
from array import array
from typing import Any

from . import sipmsg
from .framecheck import MAX_FRAMES
from .load import FRAME_NS, SLOTS, BenchCall, ConnectorConn, LoadGen, now_ns
from .rtp import RtpSender, parse_header
from .voice import CallerVoice

__all__ = ["SipLoadGen", "RtpLeg", "SipAgent"]

log = logging.getLogger("testbed.bench.caller")

_PCMU = 0


class RtpLeg(asyncio.DatagramProtocol):
    """One call's RTP both ways, and its place in the generator (``c.media``)."""

    def __init__(self, gen: "SipLoadGen", call: BenchCall) -> None:
        self.gen, self.call = gen, call
        self.tx = RtpSender(random.getrandbits(16), random.getrandbits(32), random.getrandbits(32))
        self.sent_ns = array("q")
        self.transport: asyncio.DatagramTransport | None = None
        self.remote: tuple[str, int] | None = None
        self.dialog: sipmsg.Dialog | None = None
        self.answered: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.error: str | None = None
        self.closing = False

    # -- the generator's media interface (LoadGen._tick, hangup_all, wait_closed, close)
    def send_due(self, nominal: int, now: int) -> int:
        c = self.call
        due = (nominal - c.t0) // FRAME_NS + 1 - c.sent
        if due <= 0 or self.closing or self.remote is None or self.transport is None:
            return 0
        voice = self.gen.voice
        for i in range(due):
            self.transport.sendto(self.tx.packet(voice.payload(c.idx, c.sent + i)), self.remote)
            if len(self.sent_ns) < MAX_FRAMES:
                self.sent_ns.append(now)
        c.sent += due
        return due

    def hangup(self) -> None:
        if self.closing:
            return
        self.closing = True
        bye = self.dialog.bye() if self.dialog is not None else None
        if bye is not None:
            self.gen.agent.send(bye)
            asyncio.get_running_loop().call_later(3.0, self.ended)  # no 200 to our BYE: give up
        else:
            self.ended()

    def ended(self) -> None:
        self.closing = True
        if self.transport is not None:
            self.transport.close()
        if not self.closed.done():
            self.closed.set_result(None)
            self.gen.media_closed(self.call)

    # -- asyncio
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        h = parse_header(data)
        if h is not None and h[0] == _PCMU:
            # Digital silence (μ-law 0xFF/0x7F) is no bot audio: a channel that writes frames all the
            # time (the stream transport's send_silence_when_idle) sends it between utterances and on
            # an underrun, which then reads as a hole. (The bench's bot is never digitally silent.)
            if not data[12 + 4 * (data[0] & 0x0F):].translate(None, b"\xff\x7f"):
                return
            self.gen.bot_audio(self.call, h[1], h[2], now_ns(), h[3])

    def error_received(self, exc: Exception) -> None:
        # ICMP port unreachable after the switch closed the call's RTP port: nothing to do.
        pass


class SipAgent(asyncio.DatagramProtocol):
    """The one SIP socket: routes each message to its dialog by Call-ID."""

    def __init__(self, switch: tuple[str, int]) -> None:
        self.switch = switch
        self.transport: asyncio.DatagramTransport | None = None
        self.legs: dict[str, RtpLeg] = {}
        self.bad = 0

    @property
    def local(self) -> tuple[str, int]:
        return self.transport.get_extra_info("sockname")[:2]  # type: ignore[union-attr]

    def send(self, data: bytes) -> None:
        if self.transport is not None:
            self.transport.sendto(data, self.switch)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        try:
            msg = sipmsg.parse(data)
        except sipmsg.SipParseError:
            self.bad += 1
            return
        leg = self.legs.get(msg.headers.get("call-id", ""))
        if leg is None or leg.dialog is None:
            if msg.status is None and msg.method != "ACK":
                self.send(sipmsg.reply_unknown(msg))
            return
        for ev in leg.dialog.receive(msg):
            if isinstance(ev, sipmsg.Reply):
                self.send(ev.data)
            elif isinstance(ev, sipmsg.Answered):
                leg.remote = ev.rtp_addr
                if not leg.answered.done():
                    leg.answered.set_result(None)
            elif isinstance(ev, sipmsg.Failed):
                leg.error = ev.reason
                if not leg.answered.done():
                    leg.answered.set_exception(ConnectionError(ev.reason))
                leg.ended()
            elif isinstance(ev, sipmsg.HungUp):
                if ev.by_switch and not leg.closing:
                    leg.call.killed = True  # the switch (on the fork server's word) ended the call
                self.legs.pop(leg.dialog.call_id, None)
                leg.ended()

    def error_received(self, exc: Exception) -> None:
        self.bad += 1


class SipLoadGen(LoadGen):
    """:class:`LoadGen` whose calls are real SIP calls into ``sip_addr``; ``place_sip_calls`` places them."""

    real = True

    def __init__(self, *, voice: CallerVoice | None = None, **kw: Any) -> None:
        super().__init__(esl_password="unused", **kw)  # the emulated ESL server is never started
        self.voice = voice or CallerVoice()
        self.agent = SipAgent(("127.0.0.1", 0))

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._connector = await loop.create_server(lambda: ConnectorConn(self), "127.0.0.1", 0, backlog=4096)
        self.connector_port = self._connector.sockets[0].getsockname()[1]
        await loop.create_datagram_endpoint(lambda: self.agent, local_addr=("127.0.0.1", 0))
        self._next_tick = self._epoch = now_ns()
        self._timer = loop.call_soon(self._tick)

    async def close(self) -> None:
        await super().close()
        if self.agent.transport is not None:
            self.agent.transport.close()

    async def place_sip_calls(self, n: int, sip_addr: tuple[str, int], *, routes: list[tuple[str, int, str]],
                              ramp_per_s: float, answer_timeout: float = 10.0) -> None:
        """INVITE ``n`` calls, ``ramp_per_s`` a second; routes (name, fork rate, number) in turn."""
        self.agent.switch = sip_addr
        loop = asyncio.get_running_loop()
        base = len(self.calls)
        start = loop.time()
        pending = []
        for i in range(n):
            route, rate, number = routes[i % len(routes)]
            idx = base + i
            c = BenchCall(idx, route, rate, idx % SLOTS, float(self._rng.uniform(0, self.first_tts_within_s)))
            self.calls.append(c)
            self.by_number[c.number] = c
            delay = start + i / ramp_per_s - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            pending.append(loop.create_task(self._call(c, number, answer_timeout)))
        await asyncio.gather(*pending)

    async def _call(self, c: BenchCall, destination: str, timeout: float) -> None:
        loop = asyncio.get_running_loop()
        leg = RtpLeg(self, c)
        c.media = leg  # type: ignore[assignment]
        try:
            await loop.create_datagram_endpoint(lambda: leg, local_addr=("127.0.0.1", 0))
            port = leg.transport.get_extra_info("sockname")[1]  # type: ignore[union-attr]
            leg.dialog = sipmsg.Dialog(destination, c.number, f"Bench {c.idx}", self.agent.local, self.agent.switch, port)
            self.agent.legs[leg.dialog.call_id] = leg
            self.agent.send(leg.dialog.invite())
            await asyncio.wait_for(leg.answered, timeout)
        except (OSError, ConnectionError, TimeoutError) as exc:
            self.failed.append(f"{c.number}: {type(exc).__name__}: {exc}")
            leg.error = leg.error or str(exc) or type(exc).__name__
            leg.ended()
            return
        self.start_audio(c)

    def sent_ns(self, c: BenchCall) -> array:
        leg = c.media
        return leg.sent_ns if isinstance(leg, RtpLeg) else array("q")
