"""The WebSocket server mod_audio_fork connects to, plus the ops endpoints on the same port.

Handshake facts from REF "The WebSocket as the fork server sees it": FreeSWITCH sends
``GET <path>`` with ``Host: 127.0.0.1`` (no port), ``Origin: http://127.0.0.1`` and offers
``audio.drachtio.org`` (the name can be changed on the switch, so any offer, or none, is
accepted). Basic auth arrives only when the channel sets ``MOD_AUDIO_BASIC_AUTH_*``; a
refusal is reported by FreeSWITCH as ``connect_failed`` "HS: ws upgrade response not 101".
"""

from __future__ import annotations

import asyncio

import base64
import binascii
import hmac
import http
import json
import re
from dataclasses import dataclass
from typing import Any, Awaitable, Callable, Mapping

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.http11 import Request, Response

from .redact import WS_LOGGER

__all__ = ["BasicCredentials", "IntakeServer", "FORK_SUBPROTOCOL", "check_basic_auth"]

FORK_SUBPROTOCOL = "audio.drachtio.org"
_CALL_PATH = re.compile(r"^/calls/([a-z0-9][a-z0-9_-]{0,62})/?(?:\?.*)?$")
# Merged frames under load can hold a whole buffer: 5 s (MOD_AUDIO_FORK_BUFFER_SECS max) of 16k mono = 160 KB.
MAX_FORK_MESSAGE = 1 << 20


@dataclass(frozen=True, slots=True)
class BasicCredentials:
    username: str
    password: str

    def __repr__(self) -> str:  # never log the secret
        return f"BasicCredentials(username={self.username!r}, password=***)"


def check_basic_auth(header: str | None, expected: BasicCredentials) -> bool:
    """Constant-time check of an ``Authorization: Basic`` header against the credentials."""
    if not header or not header.startswith("Basic "):
        return False
    try:
        raw = base64.b64decode(header[6:].strip(), validate=True)
    except (binascii.Error, ValueError):
        return False
    user, sep, password = raw.partition(b":")
    if not sep:
        return False
    # Both compares always run, so timing does not tell which half was wrong.
    ok_user = hmac.compare_digest(user, expected.username.encode())
    ok_pass = hmac.compare_digest(password, expected.password.encode())
    return ok_user & ok_pass


def _response(status: http.HTTPStatus, body: bytes, content_type: str, extra: Mapping[str, str] = {}) -> Response:
    headers = Headers({"Content-Type": content_type, "Content-Length": str(len(body)), "Connection": "close"})
    for k, v in extra.items():
        headers[k] = v
    return Response(status.value, status.phrase, headers, body)


class IntakeServer:
    """Owns the websockets server; hands accepted call sockets to ``on_call(ws, route_name)``."""

    def __init__(
        self,
        *,
        routes: set[str],
        credentials: BasicCredentials | None,
        on_call: Callable[[ServerConnection, str], Awaitable[None]],
        healthy: Callable[[], bool],
        metrics_body: Callable[[], tuple[bytes, str]],
        calls_body: Callable[[], list[dict[str, Any]]],
        accepting: Callable[[], bool],
        on_reject: Callable[[str], None],
    ) -> None:
        self._routes = routes
        self._credentials = credentials
        self._on_call = on_call
        self._healthy = healthy
        self._metrics_body = metrics_body
        self._calls_body = calls_body
        self._accepting = accepting
        self._on_reject = on_reject
        self.server: Server | None = None

    async def start(self, host: str, port: int) -> int:
        self.server = await serve(
            self._handler,
            host,
            port,
            process_request=self._process_request,
            select_subprotocol=self._select_subprotocol,
            compression=None,  # mod_audio_fork does not negotiate it; it would only cost CPU
            max_size=MAX_FORK_MESSAGE,
            max_queue=64,
            ping_interval=20,
            ping_timeout=20,
            close_timeout=2,
            server_header="voicefork",
            logger=WS_LOGGER,  # its DEBUG lines hold the Authorization header: redacted there
        )
        return self.server.sockets[0].getsockname()[1]

    @staticmethod
    def _select_subprotocol(connection: ServerConnection, offered: Any) -> Any:
        return FORK_SUBPROTOCOL if FORK_SUBPROTOCOL in offered else None

    def _process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        path = request.path
        if path == "/healthz":
            ok = self._healthy()
            body = b"ok\n" if ok else b"esl down\n"
            return _response(http.HTTPStatus.OK if ok else http.HTTPStatus.SERVICE_UNAVAILABLE, body, "text/plain")
        if path == "/metrics":
            body, ctype = self._metrics_body()
            return _response(http.HTTPStatus.OK, body, ctype)
        if path == "/calls":
            body = json.dumps(self._calls_body(), indent=1).encode()
            return _response(http.HTTPStatus.OK, body, "application/json")
        m = _CALL_PATH.match(path)
        if m is None or m.group(1) not in self._routes:
            self._on_reject("unknown_route")
            return _response(http.HTTPStatus.NOT_FOUND, b"unknown route\n", "text/plain")
        if not self._accepting():
            self._on_reject("draining")
            return _response(http.HTTPStatus.SERVICE_UNAVAILABLE, b"draining\n", "text/plain")
        if self._credentials is not None:
            header = request.headers.get("Authorization")
            if header is None:
                self._on_reject("auth_missing")
                return _response(
                    http.HTTPStatus.UNAUTHORIZED,
                    b"authorization required\n",
                    "text/plain",
                    {"WWW-Authenticate": 'Basic realm="voicefork"'},
                )
            if not check_basic_auth(header, self._credentials):
                self._on_reject("auth_failed")
                return _response(http.HTTPStatus.FORBIDDEN, b"forbidden\n", "text/plain")
        connection.voicefork_route = m.group(1)  # type: ignore[attr-defined]
        return None

    async def _handler(self, connection: ServerConnection) -> None:
        await self._on_call(connection, connection.voicefork_route)  # type: ignore[attr-defined]

    def stop_accepting(self) -> None:
        """Close the listening socket; live calls keep their connections."""
        if self.server is not None:
            self.server.close(close_connections=False)

    async def close(self) -> None:
        if self.server is not None:
            # After stop_accepting() a second Server.close() is a no-op in websockets, so the
            # live connections are closed here one by one (1001: going away).
            self.server.close(close_connections=True)
            conns = list(self.server.connections)
            await asyncio.gather(*(c.close(1001, "server shutdown") for c in conns), return_exceptions=True)
            await self.server.wait_closed()
