"""SIP for the bench's lean caller agent, sans-I/O: one unauthenticated INVITE dialog per call.

:class:`Dialog` builds the requests and reads the answers of one outbound call leg (INVITE
with a PCMU offer, ACK, BYE both ways, 200 to the switch's requests), the way
:mod:`testbed.sip_caller` does for the end-to-end tests; :func:`parse` cuts one UDP datagram
into a :class:`Message`. No sockets and no clock here: :mod:`testbed.bench.caller` moves the
bytes. Limits: a datagram over ``MAX_DATAGRAM`` bytes or with more than ``MAX_HEADERS`` header
lines is refused (:class:`SipParseError`); the bench's switch is on loopback, so there are no
retransmissions of our own (REF is silent on SIP; these are the RFC 3261 minimum FreeSWITCH
1.10.12's sofia accepted in the bench runs).
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass, field
from typing import NamedTuple

__all__ = ["Message", "Dialog", "parse", "SipParseError", "Answered", "Failed", "HungUp", "Reply",
           "reply_unknown", "MAX_DATAGRAM", "MAX_HEADERS", "PTIME_MS"]

MAX_DATAGRAM = 65_507
MAX_HEADERS = 100
PTIME_MS = 20
_EVENT_PT = 101


class SipParseError(ValueError):
    """A datagram that is not a SIP message this agent can read."""


class Message(NamedTuple):
    first: str  # the request or status line
    headers: dict[str, str]  # lower-case names, first occurrence of each
    body: str
    raw: str

    @property
    def status(self) -> int | None:
        if not self.first.startswith("SIP/2.0 "):
            return None
        try:
            return int(self.first.split()[1])
        except (IndexError, ValueError):
            return None

    @property
    def method(self) -> str:
        """The request's method, or for a response the method its CSeq names."""
        if self.status is None:
            return self.first.split(" ", 1)[0]
        return (self.headers.get("cseq", "").split() or [""])[-1]


def parse(data: bytes) -> Message:
    if len(data) > MAX_DATAGRAM:
        raise SipParseError(f"datagram of {len(data)} bytes")
    raw = data.decode("utf-8", "replace")
    head, _, body = raw.partition("\r\n\r\n")
    first, *lines = head.split("\r\n")
    if len(lines) > MAX_HEADERS:
        raise SipParseError(f"{len(lines)} header lines")
    if not first.startswith("SIP/2.0 ") and not first.endswith(" SIP/2.0"):
        raise SipParseError(f"not a SIP start line: {first[:40]!r}")
    headers: dict[str, str] = {}
    for line in lines:
        name, sep, value = line.partition(":")
        if sep:
            headers.setdefault(name.strip().lower(), value.strip())
    return Message(first, headers, body, raw)


def _uri(header: str) -> str:
    m = re.search(r"<([^>]+)>", header)
    return m.group(1) if m else header.split(";")[0].strip()


def _sdp_rtp_address(sdp: str) -> tuple[str, int] | None:
    ip = re.search(r"^c=IN IP4 (\S+)", sdp, re.M)
    port = re.search(r"^m=audio (\d+)", sdp, re.M)
    return (ip.group(1), int(port.group(1))) if ip and port else None


# What a dialog reports back (frozen, as the fork server's events are).
@dataclass(frozen=True, slots=True)
class Answered:
    rtp_addr: tuple[str, int]  # where the switch wants our RTP (its SDP answer)


@dataclass(frozen=True, slots=True)
class Failed:
    reason: str


@dataclass(frozen=True, slots=True)
class HungUp:
    by_switch: bool


@dataclass(frozen=True, slots=True)
class Reply:
    data: bytes  # a response to send back (to the switch's BYE, a retransmitted 200's ACK)


@dataclass(slots=True)
class Dialog:
    """One call leg from the caller's side; ``local`` is the SIP socket's (ip, port)."""

    destination: str
    number: str
    name: str
    local: tuple[str, int]
    switch: tuple[str, int]
    rtp_port: int
    call_id: str = field(default_factory=lambda: f"{random.getrandbits(64):016x}@voicefork-bench")
    tag: str = field(default_factory=lambda: f"{random.getrandbits(32):08x}")
    remote_tag: str | None = None
    remote_target: str | None = None
    state: str = "new"  # new -> inviting -> up -> ended
    _cseq: int = 1

    def _request(self, method: str, uri: str, cseq: int, body: str = "") -> bytes:
        ip, port = self.local
        to = f"<sip:{self.destination}@{self.switch[0]}>" + (f";tag={self.remote_tag}" if self.remote_tag else "")
        lines = [
            f"{method} {uri} SIP/2.0",
            f"Via: SIP/2.0/UDP {ip}:{port};branch=z9hG4bK{random.getrandbits(48):012x};rport",
            "Max-Forwards: 70",
            f'From: "{self.name}" <sip:{self.number}@{ip}>;tag={self.tag}',
            f"To: {to}",
            f"Call-ID: {self.call_id}",
            f"CSeq: {cseq} {method}",
            f"Contact: <sip:caller@{ip}:{port}>",
            "User-Agent: voicefork-bench-caller",
        ]
        if body:
            lines.append("Content-Type: application/sdp")
        lines.append(f"Content-Length: {len(body.encode())}")
        return ("\r\n".join(lines) + "\r\n\r\n" + body).encode()

    def invite(self) -> bytes:
        ip = self.local[0]
        sdp = (
            f"v=0\r\no=caller 1 1 IN IP4 {ip}\r\ns=voicefork-bench\r\nc=IN IP4 {ip}\r\nt=0 0\r\n"
            f"m=audio {self.rtp_port} RTP/AVP 0 {_EVENT_PT}\r\na=rtpmap:0 PCMU/8000\r\n"
            f"a=rtpmap:{_EVENT_PT} telephone-event/8000\r\na=fmtp:{_EVENT_PT} 0-16\r\na=ptime:{PTIME_MS}\r\na=sendrecv\r\n"
        )
        self.state = "inviting"
        return self._request("INVITE", f"sip:{self.destination}@{self.switch[0]}:{self.switch[1]}", 1, sdp)

    def bye(self) -> bytes | None:
        """The BYE to send, or None if the call is not up (then it just ends here)."""
        if self.state != "up" or not self.remote_target:
            self.state = "ended"
            return None
        self._cseq += 1
        self.state = "ended"
        return self._request("BYE", self.remote_target, self._cseq)

    def receive(self, msg: Message) -> list[Answered | Failed | HungUp | Reply]:
        status = msg.status
        if status is not None:
            return self._response(status, msg)
        out: list[Answered | Failed | HungUp | Reply] = [Reply(_reply(msg, 200, "OK"))]
        if msg.method == "BYE" and self.state != "ended":
            self.state = "ended"
            out.append(HungUp(by_switch=True))
        return out

    def _response(self, status: int, msg: Message) -> list[Answered | Failed | HungUp | Reply]:
        if msg.method == "BYE":
            return [HungUp(by_switch=False)] if status >= 200 else []
        if msg.method != "INVITE" or status < 200:
            return []
        if self.state == "up" or self.state == "ended":
            # A retransmitted 200 (our ACK was late or lost): ACK again.
            return [Reply(self._ack())] if status == 200 and self.remote_target else []
        if status != 200:
            self.state = "ended"
            return [Failed(f"INVITE answered {status}")]
        m = re.search(r"tag=([^;>\s]+)", msg.headers.get("to", ""))
        addr = _sdp_rtp_address(msg.body)
        if m is None or addr is None:
            self.state = "ended"
            return [Failed("200 without a To tag or an SDP audio address")]
        self.remote_tag = m.group(1)
        self.remote_target = _uri(msg.headers.get("contact", f"sip:{self.destination}@{self.switch[0]}:{self.switch[1]}"))
        self.state = "up"
        return [Reply(self._ack()), Answered(addr)]

    def _ack(self) -> bytes:
        return self._request("ACK", self.remote_target or "", 1)


def _reply(msg: Message, code: int, reason: str) -> bytes:
    """A response echoing Via, From, To, Call-ID and CSeq (RFC 3261 8.2.6)."""
    keep = [line for line in msg.raw.split("\r\n\r\n", 1)[0].split("\r\n")[1:]
            if line.split(":", 1)[0].strip().lower() in ("via", "from", "to", "call-id", "cseq")]
    return ("\r\n".join([f"SIP/2.0 {code} {reason}", *keep, "Content-Length: 0"]) + "\r\n\r\n").encode()


def reply_unknown(msg: Message) -> bytes:
    """481 for a request on a dialog we do not know."""
    return _reply(msg, 481, "Call/Transaction Does Not Exist")
