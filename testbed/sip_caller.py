"""A SIP caller for tests against a REAL FreeSWITCH: INVITE over UDP, G.711 μ-law RTP both ways.

REF's measurements were taken on RTP sent to a sipp caller over loopback; sipp cannot tell
a test what the caller heard, so this small user agent does the same calls and keeps every
RTP packet it receives, with its arrival time, sequence number, timestamp and marker bit
(REF "Playback timing": an idle park sends no RTP, so a hole is a timestamp jump, and
playback starts with the marker bit set). It speaks only what such a test needs: one
unauthenticated INVITE per call (the profile must not challenge), ACK, BYE both ways, RFC
4733 telephone-events for DTMF. It is also called (a UAS, for outbound calls the switch
originates through a gateway whose proxy is this agent): per dialled number it answers (180,
then 200 with SDP, RTP both ways as a caller's), is busy (486) or rings (180) until the
switch CANCELs (200, then 487); ACK, BYE and retransmitted INVITEs are handled. Not for
production.

The caller's RTP goes out from a thread of its own on an absolute 20 ms schedule, not from the
event loop: the tests run the fork server in the same process, and a busy loop sent packets
late in bursts, which the switch's jitter buffer concealed and re-timed (one frame of PLC and a
one-frame shift of everything after: 1.5 dB against the caller's audio in a loaded run). A real
caller's network jitter is not what these tests measure; steady RTP is.

:class:`SipCall` mirrors the emulator's ``Channel`` (``say``, ``press``, ``hangup``,
``hungup``, ``ear``) so the same checks read both.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import random
import re
import socket
import struct
import threading
import time
from dataclasses import dataclass, field

import numpy as np

__all__ = ["SipCaller", "SipCall", "SipCallee", "RtpEar", "ulaw_encode", "ulaw_decode", "SipError"]

log = logging.getLogger("testbed.sip")

PTIME_MS = 20
SAMPLES = 160  # 20 ms at 8 kHz
MAX_DATAGRAM = 65535
_EVENT_PT = 101


class SipError(RuntimeError):
    """The switch refused or did not answer the call."""


# ------------------------------------------------------------------ G.711 μ-law (ITU-T G.711)

_BIAS, _CLIP = 0x84, 32635


def ulaw_encode(pcm: bytes) -> bytes:
    x = np.frombuffer(pcm, "<i2").astype(np.int32)
    sign = np.where(x < 0, 0x80, 0)
    mag = np.minimum(np.abs(x), _CLIP) + _BIAS
    exponent = np.floor(np.log2(mag)).astype(np.int32) - 7
    exponent = np.clip(exponent, 0, 7)
    mantissa = (mag >> (exponent + 3)) & 0x0F
    return (~(sign | (exponent << 4) | mantissa) & 0xFF).astype(np.uint8).tobytes()


_DECODE = np.zeros(256, np.int16)
for _u in range(256):
    _v = ~_u & 0xFF
    _t = (((_v & 0x0F) << 3) + _BIAS) << ((_v & 0x70) >> 4)
    _DECODE[_u] = (_BIAS - _t) if _v & 0x80 else (_t - _BIAS)


def ulaw_decode(data: bytes) -> bytes:
    return _DECODE[np.frombuffer(data, np.uint8)].astype("<i2").tobytes()


# ------------------------------------------------------------------ what the caller heard


@dataclass(frozen=True, slots=True)
class RtpPacket:
    time: float  # arrival, loop clock
    seq: int
    timestamp: int
    marker: bool
    pcm: bytes  # decoded s16le at 8 kHz


@dataclass(slots=True)
class RtpEar:
    packets: list[RtpPacket] = field(default_factory=list)

    @property
    def frames(self) -> list[RtpPacket]:
        return self.packets

    def _jumps(self) -> list[tuple[int, int, float]]:
        """(index, missing ptimes by timestamp, arrival gap in ptimes) per timestamp jump."""
        out = []
        for i, (a, b) in enumerate(zip(self.packets, self.packets[1:])):
            step = (b.timestamp - a.timestamp) & 0xFFFFFFFF
            if step > SAMPLES:
                out.append((i, step // SAMPLES - 1, (b.time - a.time) * 1000 / PTIME_MS))
        return out

    def gaps(self) -> list[tuple[int, int]]:
        """(packet index, missing ptimes) where the caller heard a hole: the timestamp jumps AND
        the next packet came late (arrival gap over 1.5 ptimes). Seen on a real 1.10.12 under
        load: FreeSWITCH sometimes jumps the timestamp by a frame (often with the marker bit)
        while packets keep arriving every 20 ms and no audio is missing; those are
        :meth:`resyncs`, not holes."""
        return [(i, n) for i, n, arrival in self._jumps() if arrival >= 1.5]

    def resyncs(self) -> list[tuple[int, int]]:
        """Timestamp jumps with no late packet (see :meth:`gaps`)."""
        return [(i, n) for i, n, arrival in self._jumps() if arrival < 1.5]

    def pcm(self) -> bytes:
        return b"".join(p.pcm for p in self.packets)

    def timeline(self, *, close_resyncs: bool = False) -> bytes:
        """Everything heard on the RTP clock, holes as silence (from the first packet).

        With ``close_resyncs`` a timestamp jump that is a :meth:`resyncs` adds no silence: the
        packets kept coming every ptime, so no audio was missing, only the switch's clock moved."""
        if not self.packets:
            return b""
        closed = {i + 1: n * SAMPLES for i, n in self.resyncs()} if close_resyncs else {}
        t0, shift = self.packets[0].timestamp, 0
        offs = []
        for i, p in enumerate(self.packets):
            shift += closed.get(i, 0)
            offs.append(((p.timestamp - t0) & 0xFFFFFFFF) - shift)
        out = bytearray(2 * (offs[-1] + SAMPLES))
        for p, off in zip(self.packets, offs):
            out[2 * off : 2 * off + len(p.pcm)] = p.pcm
        return bytes(out)


# ------------------------------------------------------------------ SIP text


def _headers(text: str) -> tuple[str, dict[str, str], str]:
    head, _, body = text.partition("\r\n\r\n")
    first, *lines = head.split("\r\n")
    headers: dict[str, str] = {}
    for line in lines:
        name, sep, value = line.partition(":")
        if sep:
            headers.setdefault(name.strip().lower(), value.strip())
    return first, headers, body


def _uri(header: str) -> str:
    m = re.search(r"<([^>]+)>", header)
    return m.group(1) if m else header.split(";")[0].strip()


def _sdp_rtp_address(sdp: str) -> tuple[str, int] | None:
    ip = re.search(r"^c=IN IP4 (\S+)", sdp, re.M)
    port = re.search(r"^m=audio (\d+)", sdp, re.M)
    return (ip.group(1), int(port.group(1))) if ip and port else None


class _Udp(asyncio.DatagramProtocol):
    def __init__(self, on_datagram) -> None:  # type: ignore[no-untyped-def]
        self.on_datagram = on_datagram

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.on_datagram(data, addr)


class SipCall:
    """One outbound call leg from the caller's side."""

    def __init__(self, caller: "SipCaller", destination: str, number: str, name: str) -> None:
        self.caller = caller
        self.destination = destination
        self.call_id = f"{random.getrandbits(64):016x}@voicefork-test"
        self.tag = f"{random.getrandbits(32):08x}"
        self.number, self.name = number, name
        self.remote_tag: str | None = None
        self.remote_target: str | None = None
        self.cseq = itertools.count(1)
        self.ear = RtpEar()
        self.answered = asyncio.Event()
        self.hungup = asyncio.Event()
        self.final: asyncio.Future[tuple[int, dict[str, str], str]] = asyncio.get_running_loop().create_future()
        self.bye_from_switch = False
        self.dtmf_heard: list[tuple[str, int]] = []  # (digit, RTP timestamp) from the switch
        self._speech = bytearray()
        self._events: list[tuple[str, int]] = []  # DTMF digits to send, with duration in ms
        self._lock = threading.Lock()  # _speech and _events: filled on the loop, sent by the thread
        self._rtp: asyncio.DatagramTransport | None = None
        self._remote_rtp: tuple[str, int] | None = None
        self._sender: threading.Thread | None = None
        self._stopping = threading.Event()
        self._send_sock: socket.socket | None = None
        self._seq = random.randrange(1 << 16)
        self._ts = random.randrange(1 << 32)
        self._ssrc = random.getrandbits(32)
        self.rtp_port = 0

    # -- controls (as the emulator's Channel)
    def say(self, pcm: bytes) -> None:
        """Queue caller speech, s16le at 8 kHz, sent one 20 ms packet at a time."""
        with self._lock:
            self._speech += pcm

    @property
    def speaking(self) -> bool:
        with self._lock:
            return bool(self._speech)

    def press(self, digit: str, duration_ms: int = 100) -> None:
        with self._lock:
            self._events.append((digit, duration_ms))

    def hangup(self) -> None:
        if not self.hungup.is_set() and self.remote_target:
            self.caller._send(self._request("BYE", self.remote_target))
            self._stop()

    # -- SIP
    def _request(self, method: str, uri: str, body: str = "", cseq: int | None = None) -> str:
        c = self.caller
        to = f"<sip:{self.destination}@{c.host}>" + (f";tag={self.remote_tag}" if self.remote_tag else "")
        lines = [
            f"{method} {uri} SIP/2.0",
            f"Via: SIP/2.0/UDP {c.local_ip}:{c.port};branch=z9hG4bK{random.getrandbits(48):012x};rport",
            "Max-Forwards: 70",
            f'From: "{self.name}" <sip:{self.number}@{c.local_ip}>;tag={self.tag}',
            f"To: {to}",
            f"Call-ID: {self.call_id}",
            f"CSeq: {cseq if cseq is not None else next(self.cseq)} {method}",
            f"Contact: <sip:caller@{c.local_ip}:{c.port}>",
            "User-Agent: voicefork-test-caller",
        ]
        if body:
            lines.append("Content-Type: application/sdp")
        lines.append(f"Content-Length: {len(body.encode())}")
        return "\r\n".join(lines) + "\r\n\r\n" + body

    def _sdp(self) -> str:
        ip = self.caller.local_ip
        return (
            f"v=0\r\no=caller 1 1 IN IP4 {ip}\r\ns=voicefork\r\nc=IN IP4 {ip}\r\nt=0 0\r\n"
            f"m=audio {self.rtp_port} RTP/AVP 0 {_EVENT_PT}\r\na=rtpmap:0 PCMU/8000\r\n"
            f"a=rtpmap:{_EVENT_PT} telephone-event/8000\r\na=fmtp:{_EVENT_PT} 0-16\r\na=ptime:{PTIME_MS}\r\na=sendrecv\r\n"
        )

    async def _start(self, timeout: float) -> None:
        loop = asyncio.get_running_loop()
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind((self.caller.local_ip, 0))
        self._send_sock = socket.socket(fileno=os.dup(sock.fileno()))  # the sender thread's own handle
        self._rtp, _ = await loop.create_datagram_endpoint(lambda: _Udp(self._on_rtp), sock=sock)
        self.rtp_port = sock.getsockname()[1]
        uri = f"sip:{self.destination}@{self.caller.host}:{self.caller.sip_port}"
        self.caller._send(self._request("INVITE", uri, self._sdp(), cseq=1))
        try:
            code, headers, body = await asyncio.wait_for(self.final, timeout)
        except TimeoutError:
            self._stop()
            raise SipError(f"no final answer to INVITE {self.destination} within {timeout} s") from None
        if code != 200:
            self._stop()
            raise SipError(f"INVITE {self.destination} answered {code}")
        self.remote_tag = re.search(r"tag=([^;>\s]+)", headers.get("to", "")).group(1)  # type: ignore[union-attr]
        self.remote_target = _uri(headers.get("contact", uri))
        self._remote_rtp = _sdp_rtp_address(body)
        self.caller._send(self._request("ACK", self.remote_target, cseq=1))
        self.answered.set()
        self._sender = threading.Thread(target=self._send_rtp, name=f"rtp-{self.call_id}", daemon=True)
        self._sender.start()

    def _on_response(self, code: int, headers: dict[str, str], body: str) -> None:
        method = headers.get("cseq", "").split()[-1:] or [""]
        if method[0] == "INVITE" and code >= 200 and not self.final.done():
            self.final.set_result((code, headers, body))
        elif method[0] == "INVITE" and code >= 200:  # a retransmitted 200: ACK again
            if self.remote_target:
                self.caller._send(self._request("ACK", self.remote_target, cseq=1))

    def _on_request(self, first: str, headers: dict[str, str], raw: str) -> None:
        method = first.split()[0]
        self.caller._reply(raw, 200, "OK")
        if method == "BYE":
            self.bye_from_switch = True
            self._stop()

    def _stop(self) -> None:
        self._stopping.set()
        if self._sender is not None and self._sender is not threading.current_thread():
            self._sender.join(1.0)
        if self._send_sock is not None:
            self._send_sock.close()
            self._send_sock = None
        if self._rtp is not None:
            self._rtp.close()
        self.hungup.set()
        self.caller.calls.pop(self.call_id, None)

    # -- RTP
    def _on_rtp(self, data: bytes, addr: tuple[str, int]) -> None:
        if len(data) < 12:
            return
        b0, b1, seq, ts = struct.unpack("!BBHI", data[:8])
        cc = b0 & 0x0F
        payload = data[12 + 4 * cc :]
        pt = b1 & 0x7F
        if pt == _EVENT_PT and len(payload) >= 4:
            # RFC 4733: one event spans several packets with the same timestamp; keep it once.
            if not self.dtmf_heard or self.dtmf_heard[-1][1] != ts:
                self.dtmf_heard.append(("0123456789*#ABCD"[payload[0]] if payload[0] < 16 else "?", ts))
            return
        if pt != 0:
            return  # only PCMU is audio
        self.ear.packets.append(RtpPacket(asyncio.get_running_loop().time(), seq, ts, bool(b1 & 0x80), ulaw_decode(payload)))

    def _packet(self, pt: int, payload: bytes, marker: bool = False, ts: int | None = None) -> bytes:
        self._seq = (self._seq + 1) & 0xFFFF
        head = struct.pack("!BBHII", 0x80, (0x80 if marker else 0) | pt, self._seq, self._ts if ts is None else ts, self._ssrc)
        return head + payload

    def _send_rtp(self) -> None:
        """The sender thread: one packet per ptime on an absolute schedule (a late wake-up sends
        the packets due at once, in order, as a real endpoint's sound card clock would)."""
        silence = ulaw_encode(bytes(2 * SAMPLES))
        start, n = time.monotonic(), 0
        dtmf: tuple[str, int, int] | None = None  # digit, duration in samples, start timestamp
        sock, remote = self._send_sock, self._remote_rtp
        if sock is None or remote is None:
            return
        while True:
            n += 1
            delay = start + n * PTIME_MS / 1000 - time.monotonic()
            if self._stopping.wait(max(0.0, delay)):
                return
            try:
                dtmf = self._send_one(sock, remote, silence, dtmf)
            except OSError:
                return

    def _send_one(self, sock: socket.socket, remote: tuple[str, int], silence: bytes,
                  dtmf: tuple[str, int, int] | None) -> tuple[str, int, int] | None:
        """Send this ptime's packet(s): a DTMF event in progress, or the next 20 ms of speech
        (silence when there is none). Returns the DTMF event still in progress."""
        with self._lock:
            if dtmf is None and self._events:
                digit, ms = self._events.pop(0)
                dtmf = (digit, ms * 8, self._ts)
            if dtmf is not None:
                digit, dur, ts0 = dtmf
                elapsed = self._ts - ts0 + SAMPLES
                end = elapsed >= dur
                event = "0123456789*#ABCD".index(digit.upper())
                payload = struct.pack("!BBH", event, (0x80 if end else 0) | 10, min(elapsed, dur))
                for _ in range(3 if end else 1):  # RFC 4733: the end packet is sent three times
                    sock.sendto(self._packet(_EVENT_PT, payload, marker=elapsed == SAMPLES, ts=ts0), remote)
                if end:
                    dtmf = None
            else:
                chunk = bytes(self._speech[: 2 * SAMPLES])
                del self._speech[: 2 * SAMPLES]
                payload = ulaw_encode(chunk.ljust(2 * SAMPLES, b"\0")) if chunk else silence
                sock.sendto(self._packet(0, payload), remote)
            self._ts = (self._ts + SAMPLES) & 0xFFFFFFFF
        return dtmf


class SipCallee(SipCall):
    """One call the switch placed to this agent (we are the UAS): ``behaviour`` is "answer"
    (180, then 200 with SDP after ``answer_after_ms``), "busy" (486) or "ring" (180 until the
    switch CANCELs). ``say``/``ear``/``hangup``/``hungup`` as for a call we placed."""

    def __init__(self, caller: "SipCaller", invite: str, behaviour: str, answer_after_ms: float) -> None:
        first, headers, body = _headers(invite)
        super().__init__(caller, first.split()[1], "", "")
        self.call_id = headers.get("call-id", self.call_id)
        self.dialled = re.sub(r"^sips?:([^@;>]*).*$", r"\1", first.split()[1])
        self.invite_headers = headers
        self.behaviour = behaviour
        self.answer_after_ms = answer_after_ms
        self.remote_tag = (re.search(r"tag=([^;>\s]+)", headers.get("from", "")) or [None, None])[1]  # type: ignore[index]
        self.remote_target = _uri(headers.get("contact", ""))
        self._remote_rtp = _sdp_rtp_address(body)
        self._invite = invite
        self._last: str | None = None  # the last response to the INVITE (sent again on a retransmission)
        self.cancelled = False
        self.acked = asyncio.Event()
        self.rang = asyncio.Event()

    def _response(self, code: int, reason: str, body: str = "") -> str:
        c = self.caller
        keep = [line for line in self._invite.split("\r\n\r\n", 1)[0].split("\r\n")[1:]
                if line.split(":", 1)[0].strip().lower() in ("via", "from", "call-id", "cseq")]
        to = self.invite_headers.get("to", "")
        lines = [f"SIP/2.0 {code} {reason}", *keep, f"To: {to};tag={self.tag}" if "tag=" not in to else f"To: {to}",
                 f"Contact: <sip:callee@{c.local_ip}:{c.port}>", "User-Agent: voicefork-test-callee"]
        if body:
            lines.append("Content-Type: application/sdp")
        lines.append(f"Content-Length: {len(body.encode())}")
        return "\r\n".join(lines) + "\r\n\r\n" + body

    def _request(self, method: str, uri: str, body: str = "", cseq: int | None = None) -> str:
        """An in-dialog request from the callee's side (BYE): From and To the other way round."""
        c = self.caller
        lines = [
            f"{method} {uri} SIP/2.0",
            f"Via: SIP/2.0/UDP {c.local_ip}:{c.port};branch=z9hG4bK{random.getrandbits(48):012x};rport",
            "Max-Forwards: 70",
            f"From: {self.invite_headers.get('to', '')};tag={self.tag}",
            f"To: {self.invite_headers.get('from', '')}",
            f"Call-ID: {self.call_id}",
            f"CSeq: {cseq if cseq is not None else next(self.cseq)} {method}",
            "Content-Length: 0",
        ]
        return "\r\n".join(lines) + "\r\n\r\n"

    def _reply_invite(self, code: int, reason: str, body: str = "") -> None:
        self._last = self._response(code, reason, body)
        self.caller._send(self._last)

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind((self.caller.local_ip, 0))
        self._send_sock = socket.socket(fileno=os.dup(sock.fileno()))
        self._rtp, _ = await loop.create_datagram_endpoint(lambda: _Udp(self._on_rtp), sock=sock)
        self.rtp_port = sock.getsockname()[1]
        self.cseq = itertools.count(int(self.invite_headers.get("cseq", "1").split()[0]) + 100)
        if self.behaviour == "busy":
            self._reply_invite(486, "Busy Here")
            self._stop()
            return
        self._reply_invite(180, "Ringing")
        self.rang.set()
        if self.behaviour != "answer":
            return  # rings until the switch CANCELs
        await asyncio.sleep(self.answer_after_ms / 1000)
        if self.cancelled or self.hungup.is_set():
            return
        self._reply_invite(200, "OK", self._sdp())
        self.answered.set()
        self._sender = threading.Thread(target=self._send_rtp, name=f"rtp-{self.call_id}", daemon=True)
        self._sender.start()
        for _ in range(6):  # RFC 3261 13.3.1.4: the 200 again until the ACK comes
            try:
                async with asyncio.timeout(0.5):
                    await self.acked.wait()
                return
            except TimeoutError:
                if self.hungup.is_set():
                    return
                self.caller._send(self._last)  # type: ignore[arg-type]

    def _on_request(self, first: str, headers: dict[str, str], raw: str) -> None:
        method = first.split()[0]
        if method == "INVITE":  # a retransmission: our last answer again
            if self._last is not None:
                self.caller._send(self._last)
        elif method == "ACK":
            self.acked.set()
        elif method == "CANCEL":
            self.caller._reply(raw, 200, "OK")
            if not self.answered.is_set():
                self.cancelled = True
                self._reply_invite(487, "Request Terminated")
                self._stop()
        elif method == "BYE":
            self.caller._reply(raw, 200, "OK")
            self.bye_from_switch = True
            self._stop()
        else:
            self.caller._reply(raw, 200, "OK")

    def _on_response(self, code: int, headers: dict[str, str], body: str) -> None:
        pass  # the 200 to our BYE


class SipCaller:
    """One UDP SIP socket on 127.0.0.1 placing calls to ``host:sip_port``, and taking calls to
    the numbers in ``callees`` (number -> "answer" | "busy" | "ring"; others get 404)."""

    def __init__(self, host: str = "127.0.0.1", sip_port: int = 5080, local_ip: str = "127.0.0.1") -> None:
        self.host, self.sip_port, self.local_ip = host, sip_port, local_ip
        self.port = 0
        self.calls: dict[str, SipCall] = {}
        self.callees: dict[str, str] = {}
        self.answer_after_ms = 200.0
        self.incoming: list[SipCallee] = []
        self._incoming_event = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()
        self._transport: asyncio.DatagramTransport | None = None

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._transport, _ = await loop.create_datagram_endpoint(lambda: _Udp(self._on_sip), local_addr=(self.local_ip, 0))
        self.port = self._transport.get_extra_info("sockname")[1]

    async def close(self) -> None:
        for call in list(self.calls.values()):
            call.hangup()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await asyncio.sleep(0.05)
        if self._transport is not None:
            self._transport.close()

    async def wait_incoming(self, index: int = 0, timeout: float = 10.0) -> SipCallee:
        """The ``index``-th call the switch placed to this agent (from 0), once its INVITE is in."""
        loop = asyncio.get_running_loop()
        end = loop.time() + timeout
        while len(self.incoming) <= index:
            self._incoming_event.clear()
            left = end - loop.time()
            if left <= 0:
                raise SipError(f"no INVITE number {index} within {timeout} s")
            try:
                await asyncio.wait_for(self._incoming_event.wait(), left)
            except TimeoutError:
                pass
        return self.incoming[index]

    def _on_invite(self, raw: str) -> None:
        first, headers, _ = _headers(raw)
        number = re.sub(r"^sips?:([^@;>]*).*$", r"\1", first.split()[1])
        behaviour = self.callees.get(number)
        if behaviour is None:
            self._reply(raw, 404, "Not Found")
            return
        callee = SipCallee(self, raw, behaviour, self.answer_after_ms)
        self.calls[callee.call_id] = callee
        self.incoming.append(callee)
        self._incoming_event.set()
        task = asyncio.get_running_loop().create_task(callee._run())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def place_call(
        self, destination: str, caller_id_number: str = "+15550001111", caller_id_name: str = "Test Caller",
        timeout: float = 10.0,
    ) -> SipCall:
        call = SipCall(self, destination, caller_id_number, caller_id_name)
        self.calls[call.call_id] = call
        await call._start(timeout)
        return call

    def _send(self, text: str) -> None:
        if self._transport is not None:
            log.debug("> %s", text.split("\r\n", 1)[0])
            self._transport.sendto(text.encode(), (self.host, self.sip_port))

    def _reply(self, raw: str, code: int, reason: str) -> None:
        _, headers, _ = _headers(raw)
        # Via, From, To, Call-ID and CSeq are copied from the request (RFC 3261 8.2.6).
        keep = [line for line in raw.split("\r\n\r\n", 1)[0].split("\r\n")[1:]
                if line.split(":", 1)[0].strip().lower() in ("via", "from", "to", "call-id", "cseq")]
        self._send("\r\n".join([f"SIP/2.0 {code} {reason}", *keep, "Content-Length: 0"]) + "\r\n\r\n")

    def _on_sip(self, data: bytes, addr: tuple[str, int]) -> None:
        if len(data) >= MAX_DATAGRAM:
            return
        raw = data.decode("utf-8", "replace")
        first, headers, body = _headers(raw)
        call = self.calls.get(headers.get("call-id", ""))
        log.debug("< %s", first)
        if first.startswith("SIP/2.0 "):
            if call is not None:
                call._on_response(int(first.split()[1]), headers, body)
        elif call is not None:
            call._on_request(first, headers, raw)
        elif first.startswith("INVITE "):
            self._on_invite(raw)
        elif first.startswith("ACK "):
            pass  # the ACK of a final answer to a call that is over (486, 487)
        else:
            self._reply(raw, 481, "Call/Transaction Does Not Exist")


