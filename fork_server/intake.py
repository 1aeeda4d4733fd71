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
import logging
import re
from dataclasses import dataclass
from typing import Any, Awaitable, Callable, Mapping

from websockets.datastructures import Headers
from websockets.http11 import Request, Response
from websockets.server import ServerProtocol

from . import twilio_rest
from .redact import WS_LOGGER
from .wsconn import WsConnection

__all__ = ["BasicCredentials", "IntakeServer", "ForkConnection", "FORK_SUBPROTOCOL", "check_basic_auth"]

FORK_SUBPROTOCOL = "audio.drachtio.org"
# GET /calls/<uuid> without an Upgrade header is a status request; with one it is a fork (whose
# route name could look like a uuid).
_STATUS_PATH = re.compile(r"^/calls/([0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12})/?$")
_CALL_PATH = re.compile(r"^/calls/([a-z0-9][a-z0-9_-]{0,62})/?(?:\?.*)?$")
# Merged frames under load can hold a whole buffer: 5 s (MOD_AUDIO_FORK_BUFFER_SECS max) of 16k mono = 160 KB.
MAX_FORK_MESSAGE = 1 << 20
_OPEN_TIMEOUT_S = 10.0  # websockets' default: a client that never finishes its handshake is dropped
_BACKLOG = 1024  # a burst of new calls must not overflow the accept queue
_log = logging.getLogger("voicefork.intake")


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


class ForkConnection(WsConnection):
    """The server side of one fork WebSocket (or one ops HTTP request) on the intake port.

    websockets' own :class:`~websockets.server.ServerProtocol` does the handshake, framing,
    limits and close handshake; :class:`~fork_server.wsconn.WsConnection` feeds it from
    ``data_received``, so a caller frame reaches the call's callback with no task switch.
    """

    def __init__(self, server: "IntakeServer") -> None:
        protocol = ServerProtocol(
            select_subprotocol=_select_subprotocol,
            max_size=MAX_FORK_MESSAGE,
            logger=WS_LOGGER,  # its DEBUG lines hold the Authorization header: redacted there
        )
        # Keepalive as before: ping every 20 s, 20 s for the pong (REF: libwebsockets answers pings).
        super().__init__(protocol, ping_interval=20, ping_timeout=20, close_timeout=2, max_queue=64)
        self.server = server
        self.route: str | None = None
        self._open_timer: asyncio.TimerHandle | None = None
        self.handler: asyncio.Task[None] | None = None
        self._answered = False
        self._first = True
        self._rest: twilio_rest.RequestReader | None = None
        self._api_request = False  # the POST is to /v1/ (outbound calls), not Twilio's REST

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self.server.connections.add(self)
        self._open_timer = self.loop.call_later(_OPEN_TIMEOUT_S, self._open_timeout)

    def data_received(self, data: bytes) -> None:
        # A WebSocket handshake is a GET; a POST on this port is Twilio's REST API (a bot's
        # hang-up) or /v1/calls (outbound calls), read by twilio_rest's bounded reader since
        # websockets reads GET requests only.
        if self._first:
            self._first = False
            if data[:1] == b"P" and (self.server.rest_answer is not None or self.server.api_answer is not None):
                self._rest = twilio_rest.RequestReader()
                self._api_request = data.startswith(b"POST /v1/")
        if self._rest is not None:
            self._rest_data(data)
            return
        super().data_received(data)

    def _rest_data(self, data: bytes) -> None:
        if self._answered or self.transport is None:
            return
        try:
            request = self._rest.feed(data)  # type: ignore[union-attr]
        except twilio_rest.RestError as exc:
            if self._api_request:  # /v1/calls answers in its own shape; a body over the reader's bound is 413
                reply = twilio_rest.encode_response(413 if "over" in str(exc) else 400, {"error": str(exc)}, {})
            else:
                reply = twilio_rest.encode_response(400, {"code": None, "message": str(exc), "more_info": None,
                                                          "status": 400}, {})
        else:
            if request is None:
                return
            try:
                if request.target.startswith("/v1/") and self.server.api_answer is not None:
                    reply = twilio_rest.encode_response(*self.server.api_answer(request.method, request.target,
                                                                                  request.headers, request.body))
                elif self.server.rest_answer is not None:
                    reply = twilio_rest.encode_response(*self.server.rest_answer(request))
                else:
                    reply = twilio_rest.encode_response(404, {"error": "not found"}, {})
            except Exception:  # noqa: BLE001 - as for the ops endpoints: a 500, not a dead server
                _log.exception("intake: REST handler failed")
                reply = twilio_rest.encode_response(500, {"code": None, "message": "internal error",
                                                          "more_info": None, "status": 500}, {})
        self._answered = True
        self.transport.write(reply)
        self.transport.close()

    def _open_timeout(self) -> None:
        if self.handler is None:
            self.abort()

    def _handshake_event(self, event: Any) -> None:
        if not isinstance(event, Request) or self._answered:
            return
        self._answered = True
        try:
            response = self.server._process_request(self, event)
        except Exception:  # noqa: BLE001 - as websockets: an ops endpoint bug is a 500, not a dead server
            _log.exception("intake: request handler failed")
            response = _response(http.HTTPStatus.INTERNAL_SERVER_ERROR, b"internal error\n", "text/plain")
        if response is None:
            response = self.protocol.accept(event)  # type: ignore[attr-defined]
        response.headers["Server"] = "voicefork"
        # Request and Response are not kept on the connection: ~5 KB a call for nothing.
        self.protocol.send_response(response)  # type: ignore[attr-defined]
        self._send_data()
        if response.status_code == 101 and self.open:
            if self._open_timer is not None:
                self._open_timer.cancel()
            self._arm_ping()
            self.handler = self.loop.create_task(self.server._handle(self))

    def connection_lost(self, exc: Exception | None) -> None:
        if self._open_timer is not None:
            self._open_timer.cancel()
        self.server.connections.discard(self)
        super().connection_lost(exc)


def _select_subprotocol(protocol: ServerProtocol, offered: Any) -> Any:
    return FORK_SUBPROTOCOL if FORK_SUBPROTOCOL in offered else None


class IntakeServer:
    """Owns the listening socket; hands accepted call sockets to ``on_call(conn, route_name)``.

    ``reuse_port`` sets SO_REUSEPORT, so several worker processes can listen on one port and
    the kernel spreads the new connections between them (a call lives in one process).
    """

    def __init__(
        self,
        *,
        routes: set[str],
        credentials: BasicCredentials | None,
        on_call: Callable[[ForkConnection, str], Awaitable[None]],
        healthy: Callable[[], bool],
        metrics_body: Callable[[], tuple[bytes, str]],
        calls_body: Callable[[], list[dict[str, Any]]],
        accepting: Callable[[], bool],
        on_reject: Callable[[str], None],
        reuse_port: bool = False,
        call_body: Callable[[str], dict[str, Any] | None] | None = None,
        switch_body: Callable[[], dict[str, Any]] | None = None,
        rest_answer: Callable[[twilio_rest.RestRequest], tuple[int, dict[str, Any], dict[str, str]]] | None = None,
        api_answer: Callable[[str, str, Mapping[str, str], bytes], tuple[int, dict[str, Any], dict[str, str]]] | None = None,
    ) -> None:
        self._call_body = call_body
        self._switch_body = switch_body
        self._routes = routes
        self.rest_answer = rest_answer  # Twilio's REST hang-up (twilio connectors), or None: no POST
        self.api_answer = api_answer  # /v1/calls (outbound calls; 404 when not configured)
        self._credentials = credentials
        self._on_call = on_call
        self._healthy = healthy
        self._metrics_body = metrics_body
        self._calls_body = calls_body
        self._accepting = accepting
        self._on_reject = on_reject
        self.reuse_port = reuse_port
        self.server: asyncio.base_events.Server | None = None
        self.connections: set[ForkConnection] = set()
        self._listening = False

    async def start(self, host: str, port: int) -> int:
        loop = asyncio.get_running_loop()
        self.server = await loop.create_server(
            lambda: ForkConnection(self), host, port, backlog=_BACKLOG, reuse_port=self.reuse_port or None
        )
        self._listening = True
        return self.server.sockets[0].getsockname()[1]

    def _process_request(self, connection: ForkConnection, request: Request) -> Response | None:
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
        if path == "/freeswitch/status" and self._switch_body is not None:
            return _response(http.HTTPStatus.OK, json.dumps(self._switch_body(), indent=1).encode(), "application/json")
        if path.startswith("/v1/") and self.api_answer is not None:
            headers = {k.lower(): v for k, v in request.headers.raw_items()}
            code, doc, extra = self.api_answer("GET", path, headers, b"")
            return _response(http.HTTPStatus(code), json.dumps(doc, indent=1).encode(), "application/json", extra)
        status = _STATUS_PATH.match(path)
        if status is not None and self._call_body is not None and "upgrade" not in request.headers.get("Connection", "").lower():
            info = self._call_body(status.group(1).lower())
            if info is None:
                return _response(http.HTTPStatus.NOT_FOUND, b"no such call\n", "text/plain")
            return _response(http.HTTPStatus.OK, json.dumps(info, indent=1).encode(), "application/json")
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
        connection.route = m.group(1)
        return None

    async def _handle(self, connection: ForkConnection) -> None:
        try:
            await self._on_call(connection, connection.route)  # type: ignore[arg-type]
        except Exception:  # noqa: BLE001 - as websockets: log, close 1011, keep serving
            _log.exception("intake: call handler failed")
            await connection.close(1011, "internal error")
            return
        # As websockets: when the handler returns, the connection is closed (1000).
        await connection.close()

    def stop_accepting(self) -> None:
        """Close the listening socket; live calls keep their connections."""
        if self.server is not None and self._listening:
            self._listening = False
            self.server.close()

    async def close(self) -> None:
        if self.server is None:
            return
        self.stop_accepting()
        # Live connections are closed here one by one (1001: going away), then their handlers end.
        conns = list(self.connections)
        await asyncio.gather(*(c.close(1001, "server shutdown") for c in conns), return_exceptions=True)
        handlers = [c.handler for c in conns if c.handler is not None and not c.handler.done()]
        if handlers:
            await asyncio.wait(handlers, timeout=5)
        self.server = None
