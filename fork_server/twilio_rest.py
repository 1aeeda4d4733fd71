"""Twilio's REST hang-up, served on the fork server's port, sans-I/O.

A bot written for Twilio ends its call through Twilio's REST API: Pipecat's
``TwilioFrameSerializer`` (auto hang-up) POSTs ``Status=completed`` as a form to
``{base_url}/2010-04-01/Accounts/{AccountSid}/Calls/{CallSid}.json`` with HTTP Basic
(AccountSid, auth token) and reads 200 as done, 404 with code 20404 as "already ended"
(its source, pipecat 1.14.0; Twilio: "Update a Call resource", errors/20404). This module
reads one such request (bounded) and decides the answer; :mod:`fork_server.intake` moves
the bytes and :mod:`fork_server.app` ends the call.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import http
import json
import re
from dataclasses import dataclass
from typing import Callable, Final, Mapping
from urllib.parse import parse_qsl

__all__ = ["MAX_REQUEST_BYTES", "RestRequest", "RequestReader", "RestError", "answer", "encode_response"]

MAX_REQUEST_BYTES: Final = 16 * 1024  # head and body: a hang-up form is ~100 bytes
CALL_PATH: Final = re.compile(r"/2010-04-01/Accounts/(AC[0-9a-f]{32})/Calls/(CA[0-9a-f]{32})\.json")
_TOKEN_RE = re.compile(rb"[!#$%&'*+.^_`|~0-9A-Za-z-]+")


class RestError(Exception):
    """The request cannot be read as HTTP/1.1 (a 400 with this text, then close)."""


@dataclass(frozen=True, slots=True)
class RestRequest:
    method: str
    target: str
    headers: Mapping[str, str]  # lower-case names; a repeated header keeps its last value
    body: bytes


class RequestReader:
    """Feed bytes; :meth:`feed` returns the request once head and body (Content-Length) are in.

    Raises :class:`RestError` on anything that is not one plain HTTP/1.1 request within
    ``max_bytes`` (no chunked bodies: a form client sends Content-Length)."""

    def __init__(self, max_bytes: int = MAX_REQUEST_BYTES) -> None:
        self._buf = bytearray()
        self._max = max_bytes
        self._head: tuple[str, str, dict[str, str]] | None = None
        self._body_at = 0
        self._length = 0

    def feed(self, data: bytes) -> RestRequest | None:
        self._buf += data
        if len(self._buf) > self._max:
            raise RestError(f"request over {self._max} bytes")
        if self._head is None:
            end = self._buf.find(b"\r\n\r\n")
            if end < 0:
                return None
            self._head = self._parse_head(bytes(self._buf[:end]))
            self._body_at = end + 4
        if len(self._buf) - self._body_at < self._length:
            return None
        method, target, headers = self._head
        return RestRequest(method, target, headers, bytes(self._buf[self._body_at:self._body_at + self._length]))

    def _parse_head(self, head: bytes) -> tuple[str, str, dict[str, str]]:
        lines = head.split(b"\r\n")
        parts = lines[0].split(b" ")
        if len(parts) != 3 or parts[2] not in (b"HTTP/1.1", b"HTTP/1.0") or not _TOKEN_RE.fullmatch(parts[0]):
            raise RestError("bad request line")
        headers: dict[str, str] = {}
        for line in lines[1:]:
            name, sep, value = line.partition(b":")
            if not sep or not _TOKEN_RE.fullmatch(name):
                raise RestError("bad header line")
            headers[name.decode("ascii").lower()] = value.strip().decode("latin-1")
        if "transfer-encoding" in headers:
            raise RestError("Transfer-Encoding is not supported; send Content-Length")
        length = headers.get("content-length", "0")
        if not length.isdigit() or int(length) > self._max:
            raise RestError(f"bad Content-Length {length[:20]!r}")
        self._length = int(length)
        return parts[0].decode("ascii"), parts[1].decode("latin-1"), headers


def _error(status: int, message: str, code: int | None = None) -> tuple[int, dict[str, object]]:
    """Twilio's error body: code, message, more_info, status."""
    body: dict[str, object] = {"code": code, "message": message, "more_info": None, "status": status}
    if code is not None:
        body["more_info"] = f"https://www.twilio.com/docs/errors/{code}"
    return status, body


def _basic_ok(header: str | None, user: str, token: str) -> bool:
    if not header or not header.startswith("Basic "):
        return False
    try:
        raw = base64.b64decode(header[6:].strip(), validate=True)
    except (binascii.Error, ValueError):
        return False
    got_user, sep, got_token = raw.partition(b":")
    ok_user = hmac.compare_digest(got_user, user.encode())
    ok_token = hmac.compare_digest(got_token, token.encode())  # both always run: constant time
    return bool(sep) & ok_user & ok_token


def answer(
    request: RestRequest,
    *,
    tokens: Mapping[str, str],
    hang_up: Callable[[str, str], bool],
) -> tuple[int, dict[str, object], dict[str, str]]:
    """(status, JSON body, extra headers) for one request.

    ``tokens``: account sid → auth token (twilio connectors); ``hang_up(account_sid,
    call_sid)`` ends a live call of that account and says whether there was one."""
    path = request.target.split("?", 1)[0]
    m = CALL_PATH.fullmatch(path)
    if m is None:
        return (*_error(404, f"The requested resource {path[:200]} was not found", 20404), {})
    account, call = m.groups()
    token = tokens.get(account)
    # An unknown account is refused like a wrong token (no account discovery).
    if token is None or not _basic_ok(request.headers.get("authorization"), account, token):
        return (*_error(401, "Authenticate", 20003), {"WWW-Authenticate": 'Basic realm="Twilio API"'})
    if request.method != "POST":
        return (*_error(405, f"method {request.method[:20]} not allowed; POST Status=completed"), {"Allow": "POST"})
    ctype = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if ctype != "application/x-www-form-urlencoded":
        return (*_error(400, f"expected a form (application/x-www-form-urlencoded), got {ctype[:60]!r}"), {})
    try:
        form = parse_qsl(request.body.decode("utf-8"), keep_blank_values=True, strict_parsing=True, max_num_fields=16)
    except (UnicodeDecodeError, ValueError):
        return (*_error(400, "the body is not a valid form"), {})
    fields = dict(form)
    if len(fields) != len(form) or set(fields) != {"Status"} or fields["Status"] != "completed":
        shown = ", ".join(f"{k[:40]}={v[:40]}" for k, v in form)
        return (*_error(400, f"only Status=completed is supported (hang up), got: {shown or 'an empty form'}"), {})
    if not hang_up(account, call):
        return (*_error(404, f"The requested resource {path} was not found", 20404), {})
    return 200, {"sid": call, "account_sid": account, "status": "completed"}, {}


def encode_response(status: int, body: dict[str, object], extra: Mapping[str, str]) -> bytes:
    """The HTTP/1.1 response bytes (JSON body, Connection: close)."""
    data = json.dumps(body, separators=(",", ":")).encode()
    head = [f"HTTP/1.1 {status} {http.HTTPStatus(status).phrase}", "Content-Type: application/json",
            f"Content-Length: {len(data)}", "Connection: close", "Server: voicefork"]
    head += [f"{k}: {v}" for k, v in extra.items()]
    return ("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + data
