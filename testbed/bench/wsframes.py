"""Lean RFC 6455 framing and handshakes for the load generator (sans-I/O, no asyncio).

The benchmark's load side must drive 1000 calls (50 000 frames/s each way) on a machine it
shares with the fork server, so it does not use websockets' per-message machinery: frames
are encoded from precomputed headers and parsed by index from one buffer. What it puts on
the wire is still plain RFC 6455, and the handshakes are the ones REF describes for
mod_audio_fork (``Host`` without a port, ``Origin``, subprotocol ``audio.drachtio.org``,
``Pragma``/``Cache-Control``, Basic auth).

Limits: a frame over ``max_frame`` bytes or an HTTP head over ``MAX_HEAD`` raises
:class:`WsError`; the caller closes the socket.
"""

from __future__ import annotations

import base64
import hashlib
import os
import struct

try:
    from websockets.speedups import apply_mask as _apply_mask
except ImportError:  # pragma: no cover - websockets ships the C speedups on CPython wheels
    from websockets.utils import apply_mask as _apply_mask

__all__ = [
    "WsError",
    "OP_CONT",
    "OP_TEXT",
    "OP_BINARY",
    "OP_CLOSE",
    "OP_PING",
    "OP_PONG",
    "GUID",
    "accept_key",
    "header",
    "encode",
    "close_payload",
    "FrameReader",
    "client_request",
    "parse_response_head",
    "parse_request_head",
    "server_response",
    "MAX_HEAD",
    "unmask",
]

OP_CONT, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0, 1, 2, 8, 9, 10
GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
MAX_HEAD = 16 * 1024


class WsError(Exception):
    """The peer sent something this lean codec does not accept (oversized, fragmented, bad head)."""


def accept_key(key: str | bytes) -> str:
    raw = key.encode() if isinstance(key, str) else key
    return base64.b64encode(hashlib.sha1(raw + GUID).digest()).decode()


def header(opcode: int, length: int, mask: bytes | None) -> bytes:
    """The frame header (FIN set) for a payload of ``length`` bytes, with the mask key if any."""
    b1 = 0x80 | opcode
    m = 0x80 if mask is not None else 0
    if length < 126:
        h = struct.pack("!BB", b1, m | length)
    elif length < 65536:
        h = struct.pack("!BBH", b1, m | 126, length)
    else:
        h = struct.pack("!BBQ", b1, m | 127, length)
    return h + mask if mask is not None else h


def unmask(data: bytes, mask: bytes) -> bytes:
    return _apply_mask(data, mask)


def encode(opcode: int, payload: bytes, mask: bytes | None) -> bytes:
    """One whole frame; ``mask`` is a 4-byte key (client side) or None (server side)."""
    body = _apply_mask(payload, mask) if mask is not None and payload else payload
    return header(opcode, len(payload), mask) + body


def close_payload(code: int, reason: str = "") -> bytes:
    return struct.pack("!H", code) + reason.encode()


class FrameReader:
    """Incremental parser: ``feed(data)`` returns ``[(opcode, payload, mask_or_None), ...]``.

    Payloads are returned as they came (still masked when ``mask`` is not None) so a hot
    reader can unmask only the bytes it looks at. Fragmented messages are refused: neither
    mod_audio_fork nor the fork server fragments.
    """

    __slots__ = ("_buf", "max_frame")

    def __init__(self, max_frame: int = 2 << 20) -> None:
        self._buf = b""
        self.max_frame = max_frame

    def feed(self, data: bytes) -> list[tuple[int, bytes, bytes | None]]:
        buf = self._buf + data if self._buf else data
        out: list[tuple[int, bytes, bytes | None]] = []
        pos, size = 0, len(buf)
        while size - pos >= 2:
            b1, b2 = buf[pos], buf[pos + 1]
            length = b2 & 0x7F
            p = pos + 2
            if length == 126:
                if size - p < 2:
                    break
                length = (buf[p] << 8) | buf[p + 1]
                p += 2
            elif length == 127:
                if size - p < 8:
                    break
                length = int.from_bytes(buf[p : p + 8], "big")
                p += 8
            if length > self.max_frame:
                raise WsError(f"frame of {length} bytes over {self.max_frame}")
            mask = None
            if b2 & 0x80:
                if size - p < 4:
                    break
                mask = buf[p : p + 4]
                p += 4
            if size - p < length:
                break
            if not b1 & 0x80 or (b1 & 0x0F) == OP_CONT:
                raise WsError("fragmented message")
            out.append((b1 & 0x0F, buf[p : p + length], mask))
            pos = p + length
        self._buf = buf[pos:] if pos < size else b""
        if len(self._buf) > self.max_frame + 14:
            raise WsError("partial frame over the limit")
        return out


def client_request(path: str, key: str, *, subprotocol: str | None, auth: tuple[str, str] | None) -> bytes:
    """The upgrade request mod_audio_fork (libwebsockets) sends (REF "Handshake")."""
    lines = [
        f"GET {path} HTTP/1.1",
        "Host: 127.0.0.1",
        "Upgrade: websocket",
        "Connection: Upgrade",
        f"Sec-WebSocket-Key: {key}",
        "Origin: http://127.0.0.1",
    ]
    if subprotocol:
        lines.append(f"Sec-WebSocket-Protocol: {subprotocol}")
    lines += ["Sec-WebSocket-Version: 13", "Pragma: no-cache", "Cache-Control: no-cache"]
    if auth is not None:
        token = base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
        lines.append(f"Authorization: Basic {token}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def new_key() -> str:
    return base64.b64encode(os.urandom(16)).decode()


def _head_lines(head: bytes) -> tuple[str, dict[str, str]]:
    if len(head) > MAX_HEAD:
        raise WsError("HTTP head over the limit")
    text = head.decode("latin-1")
    first, *rest = text.split("\r\n")
    headers: dict[str, str] = {}
    for line in rest:
        name, sep, value = line.partition(":")
        if sep:
            headers[name.strip().lower()] = value.strip()
    return first, headers


def parse_response_head(head: bytes, key: str, subprotocol: str | None) -> None:
    """Check a 101 answer to ``client_request``; raises WsError with the status line otherwise."""
    first, headers = _head_lines(head)
    parts = first.split(" ", 2)
    if len(parts) < 2 or parts[1] != "101":
        raise WsError(f"upgrade refused: {first}")
    if headers.get("sec-websocket-accept") != accept_key(key):
        raise WsError("bad Sec-WebSocket-Accept")
    chosen = headers.get("sec-websocket-protocol")
    if chosen is not None and chosen != subprotocol:
        raise WsError(f"server chose subprotocol {chosen!r}")


def parse_request_head(head: bytes) -> tuple[str, dict[str, str]]:
    """(path, lower-cased headers) of an upgrade request."""
    first, headers = _head_lines(head)
    parts = first.split(" ")
    if len(parts) != 3 or parts[0] != "GET":
        raise WsError(f"not a GET: {first[:80]}")
    if "sec-websocket-key" not in headers:
        raise WsError("no Sec-WebSocket-Key")
    return parts[1], headers


def server_response(key: str, subprotocol: str | None) -> bytes:
    lines = [
        "HTTP/1.1 101 Switching Protocols",
        "Upgrade: websocket",
        "Connection: Upgrade",
        f"Sec-WebSocket-Accept: {accept_key(key)}",
    ]
    if subprotocol:
        lines.append(f"Sec-WebSocket-Protocol: {subprotocol}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()
