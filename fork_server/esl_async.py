"""An Event Socket client on the event loop itself (no threads), the same interface as EslClient.

Why (issue 5, measured with ``just bench``): python-ESL runs on two threads, and at 200 calls
they used ~22 % of a core (~160 us per event, ~210 us per command), most of it handing the
GIL back and forth with the event loop; python-ESL's own C parse is ~36 us an event. This
client speaks mod_event_socket's framing (the same the emulator in
``testbed/freeswitch/esl_server.py`` serves, from mod_event_socket.c) from ``data_received``:

* on connect ``Content-Type: auth/request``; ``auth <pw>`` → ``command/reply`` ``+OK accepted``
  or ``-ERR invalid`` and a disconnect notice;
* ``api <cmd> <args>`` → ``api/response`` with ``Content-Length``; ``sendmsg <uuid>`` + header
  lines → ``command/reply``; ``event plain <names>`` and ``filter <h> <v>`` → ``command/reply``;
  replies come in the order of the commands, so commands are pipelined on one connection;
* events: ``Content-Length`` + ``text/event-plain``, the event as URL-encoded ``Name: value``
  lines, its body after its own ``Content-Length``.

Same semantics as :class:`~fork_server.esl_client.EslClient`: two connections (commands,
events) that reconnect with jittered exponential backoff; a command issued while the link is
down waits for it up to ``command_timeout`` then raises ``EslUnavailable``; a connection lost
with commands in flight fails them (not retried: playback is not idempotent); a command with
no answer within ``command_timeout`` fails and the connection is dropped (its replies can no
longer be matched). Framing and its limits are :class:`fork_server.esl_wire.EslReader`'s (the
guard in front of python-ESL reads with the same one); ≤ 10 000 commands waiting; a peer
over a limit is disconnected.

:class:`EslEvents` is the event connection alone (subscribe, filter, reconnect, frame, parse
with :func:`fork_server.esl_messages.parse_plain`, ``event_filter``): this client's, and the
default EslClient's, which keeps python-ESL for its commands only.

Selected with ``voicefork-server --esl asyncio``; python-ESL stays the default.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections import deque
from typing import Callable, Mapping
from urllib.parse import unquote

from . import esl_messages as em
from .errors import EslCommandError, EslLostInFlight, EslProtocolError, EslUnavailable, LocalUsageError
from .esl_wire import EslReader
from .spool import valid_uuid

__all__ = ["AsyncEslClient", "EslEvents", "EslReader", "parse_plain_event"]

_QUEUE_MAX = 10_000


def _parse_lines(text: str, *, decode: bool) -> dict[str, str]:
    headers: dict[str, str] = {}
    for line in text.split("\n"):
        name, sep, value = line.partition(": ")
        if sep:
            headers[name] = unquote(value) if decode and "%" in value else value
    return headers


def parse_plain_event(raw: bytes) -> tuple[dict[str, str], str | None]:
    """A ``text/event-plain`` payload: all its URL-decoded headers, then the event's own body if
    any. For tools that look at every header (testbed.bench.esltap); the clients read events
    with :func:`fork_server.esl_messages.parse_plain`, which reads only the lines they use."""
    text = raw.decode("utf-8", "replace")
    head, sep, rest = text.partition("\n\n")
    headers = _parse_lines(head, decode=True)
    body = None
    if "Content-Length" in headers and sep:
        try:
            n = int(headers["Content-Length"])
        except ValueError:
            n = -1
        body = rest.encode()[:n].decode("utf-8", "replace") if n >= 0 else rest
    return headers, body


class _Link(asyncio.Protocol):
    """One ESL connection: auth, then replies in order (commands) or events (``keeper.events``)."""

    def __init__(self, keeper: "_Keeper") -> None:
        self.keeper = keeper
        self.reader = EslReader()
        self.transport: asyncio.Transport | None = None
        self.pending: deque[tuple[asyncio.Future[tuple[dict[str, str], bytes | None]], str]] = deque()
        self.authed: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self.lost: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def send(self, text: str, what: str) -> asyncio.Future[tuple[dict[str, str], bytes | None]]:
        fut: asyncio.Future[tuple[dict[str, str], bytes | None]] = asyncio.get_running_loop().create_future()
        self.pending.append((fut, what))
        self.transport.write(text.encode())  # type: ignore[union-attr]
        return fut

    def data_received(self, data: bytes) -> None:
        try:
            messages = self.reader.feed(data)
        except EslProtocolError as exc:
            self.keeper.dropped += 1
            self.keeper.log.error("ESL %s link: %s; dropping it", self.keeper.kind, exc.message)
            self.transport.abort()  # type: ignore[union-attr]
            return
        for head, body, _ in messages:
            ctype = head.get("Content-Type", "")
            if ctype == "text/event-plain":
                # Only on the connection that subscribed: mod_event_socket sends a connection
                # the events it asked for, so one elsewhere is not ours to take.
                if body is not None and self.keeper.events:
                    self.keeper.event(body)
            elif ctype == "auth/request":
                self.transport.write(self.keeper.auth)  # type: ignore[union-attr]
            elif ctype == "text/disconnect-notice":
                self.transport.close()  # type: ignore[union-attr]
            elif ctype in ("command/reply", "api/response"):
                if not self.authed.done():
                    ok = head.get("Reply-Text", "").startswith("+OK")
                    self.authed.set_result(ok)
                    if not ok:
                        self.transport.close()  # type: ignore[union-attr]
                    continue
                if self.pending:
                    fut, _ = self.pending.popleft()
                    if not fut.done():
                        fut.set_result((head, body))

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.authed.done():
            self.authed.set_result(False)
        while self.pending:
            fut, what = self.pending.popleft()
            if not fut.done():
                fut.set_exception(EslLostInFlight(f"connection lost during {what}"))  # it may have run
        if not self.lost.done():
            self.lost.set_result(None)


class _Keeper:
    """Keeps one ESL connection up: connects, authenticates, sends ``_setup()``'s commands, and
    when the connection fails or is lost backs off (jittered, exponential, capped) and connects
    again. ``link`` is the connection while it is up; ``on_change(up)`` hears each change."""

    kind = "commands"
    events = False

    def __init__(
        self,
        host: str,
        port: int,
        password: str,
        *,
        logger: logging.Logger,
        on_change: Callable[[bool], None] | None,
        backoff: tuple[float, float],
        timeout: float,
    ) -> None:
        if any(ch in password for ch in "\r\n\0"):
            raise LocalUsageError("the ESL password holds a CR, LF or NUL")  # it would end the auth command
        self._addr = (host, port)
        self.auth = f"auth {password}\n\n".encode()
        self.log = logger
        self._on_change = on_change
        self._backoff = backoff
        self.timeout = timeout
        self.link: _Link | None = None
        self.reconnects = 0  # connections made after one or more failed attempts
        self.dropped = 0  # links dropped on framing EslReader refuses
        self._task: asyncio.Task[None] | None = None
        self._stopping = False

    async def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._keep(), name=f"esl-{self.kind}")

    async def close(self) -> None:
        self._stopping = True
        if self.link is not None and self.link.transport is not None:
            self.link.transport.close()
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    def event(self, raw: bytes) -> None:
        """A ``text/event-plain`` payload from the switch (only a keeper with ``events`` gets any)."""

    def _setup(self) -> list[tuple[str, str]]:
        return []

    def _unreachable(self, attempt: int) -> None:
        pass

    def _set(self, link: _Link | None) -> None:
        self.link = link
        if self._on_change is not None:
            self._on_change(link is not None)

    async def _keep(self) -> None:
        attempt = 0
        while not self._stopping:
            link = await self._open()
            if link is None:
                if not self._stopping:
                    self._unreachable(attempt)
                lo, hi = self._backoff
                await asyncio.sleep(min(hi, lo * 2**attempt) * random.uniform(0.5, 1.0))
                attempt += 1
                continue
            if self._stopping:
                # close() ran while this link was being opened (its cancel lost, as 3.11's wait_for
                # lost one that came with a result, before _open used asyncio.timeout): the link
                # is ours to close. Without this, close() waited for ever on a link nobody would
                # close (1 run in 3 of the hostile Content-Length test under load).
                if link.transport is not None:
                    link.transport.close()
                return
            if attempt:
                self.reconnects += 1
            attempt = 0
            self._set(link)
            try:
                await link.lost
            finally:
                self._set(None)

    async def _open(self) -> _Link | None:
        loop = asyncio.get_running_loop()
        link: _Link | None = None
        try:
            async with asyncio.timeout(self.timeout):
                _, link = await loop.create_connection(lambda: _Link(self), *self._addr)
            async with asyncio.timeout(self.timeout):
                authed = await asyncio.shield(link.authed)
            if not authed:
                link.transport.close()  # type: ignore[union-attr]
                return None
            for text, what in self._setup():
                async with asyncio.timeout(self.timeout):
                    await link.send(text, what)
            return link
        except (OSError, TimeoutError, EslUnavailable):
            if link is not None and link.transport is not None:
                link.transport.abort()  # a half set-up connection is not left open
            return None
        except BaseException:  # cancelled by close(): nothing left open behind it
            if link is not None and link.transport is not None:
                link.transport.abort()
            raise


class EslEvents(_Keeper):
    """The event connection, on the event loop: ``event plain <names>`` and the filters on each
    (re)connect; each event framed by :class:`~fork_server.esl_wire.EslReader`, read by
    :func:`fork_server.esl_messages.parse_plain` (the ~14 header lines the server uses, of a
    real event's ~150), dropped here unless ``event_filter`` (set by worker processes) wants it,
    else handed to ``on_event``. The receiving side of both clients: AsyncEslClient's and the
    default EslClient's (whose commands go through python-ESL). A switch that cannot be reached
    is one error line, then one every 30 attempts."""

    kind = "events"
    events = True

    def __init__(
        self,
        host: str,
        port: int,
        password: str,
        *,
        on_event: Callable[[em.EslEvent], None],
        event_names: list[str],
        filters: list[tuple[str, str]],
        logger: logging.Logger,
        on_change: Callable[[bool], None] | None = None,
        backoff: tuple[float, float] = (0.1, 0.5),
        timeout: float = 5.0,
    ) -> None:
        super().__init__(host, port, password, logger=logger, on_change=on_change, backoff=backoff, timeout=timeout)
        self._on_event = on_event
        self._subscribe = f"event plain {' '.join(event_names)}\n\n"
        self._filters = [f"filter {header} {value}\n\n" for header, value in filters]
        self.event_filter: Callable[[em.EslEvent], bool] | None = None

    @property
    def up(self) -> bool:
        return self.link is not None

    def event(self, raw: bytes) -> None:
        parsed = em.parse_plain(raw)
        if parsed is not None and (self.event_filter is None or self.event_filter(parsed)):
            self._on_event(parsed)

    def _setup(self) -> list[tuple[str, str]]:
        return [(self._subscribe, "event"), *((f, "filter") for f in self._filters)]

    def _unreachable(self, attempt: int) -> None:
        if attempt % 30 == 0:  # one clear line, then one every ~30 attempts
            self.log.error(
                "ESL %s:%s unreachable or refusing our password (attempt %d); /healthz is 503 until it is up; retrying",
                self._addr[0], self._addr[1], attempt + 1,
            )


class AsyncEslClient:
    """Drop-in for :class:`~fork_server.esl_client.EslClient` (same constructor and methods)."""

    def __init__(
        self,
        host: str,
        port: int,
        password: str,
        *,
        on_event: Callable[[em.EslEvent], None],
        event_names: list[str],
        filters: list[tuple[str, str]],
        logger: logging.Logger,
        on_state: Callable[[bool], None] | None = None,
        backoff_initial: float = 0.1,
        backoff_max: float = 0.5,  # as EslClient: a local switch, and every second back is a second of silence
        command_timeout: float = 5.0,
    ) -> None:
        self.log = logger
        self._on_state = on_state
        self.command_timeout = command_timeout
        backoff = (backoff_initial, backoff_max)
        self._commands = _Keeper(host, port, password, logger=logger, on_change=self._changed, backoff=backoff,
                                 timeout=command_timeout)
        self.event_link = EslEvents(host, port, password, on_event=on_event, event_names=event_names, filters=filters,
                                    logger=logger, on_change=self._changed, backoff=backoff, timeout=command_timeout)
        self._cmd_up = asyncio.Event()
        self._stopping = False
        self._waiting = 0
        self._was_up = False

    @property
    def up(self) -> bool:
        return self._commands.link is not None and self.event_link.link is not None

    @property
    def reconnects(self) -> int:
        return self._commands.reconnects

    @property
    def event_filter(self) -> Callable[[em.EslEvent], bool] | None:
        """Worker processes (issue 5): drops other workers' events as they are parsed."""
        return self.event_link.event_filter

    @event_filter.setter
    def event_filter(self, wants: Callable[[em.EslEvent], bool] | None) -> None:
        self.event_link.event_filter = wants

    async def start(self) -> None:
        await self._commands.start()
        await self.event_link.start()

    async def wait_up(self, timeout: float) -> bool:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not self.up and loop.time() < deadline:
            await asyncio.sleep(0.02)
        return self.up

    async def close(self) -> None:
        self._stopping = True
        await asyncio.gather(self._commands.close(), self.event_link.close())

    def _changed(self, _: bool) -> None:
        self._cmd_up.set() if self._commands.link is not None else self._cmd_up.clear()
        if self.up != self._was_up:
            self._was_up = self.up
            if self._on_state is not None:
                self._on_state(self.up)

    # ---------------------------------------------------------------- commands

    async def _submit(self, text: str, what: str) -> tuple[dict[str, str], bytes | None]:
        if self._waiting >= _QUEUE_MAX:
            raise EslUnavailable("command queue full")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.command_timeout
        self._waiting += 1
        try:
            while self._commands.link is None:
                left = deadline - loop.time()
                if left <= 0 or self._stopping:
                    raise EslUnavailable(f"no answer within {self.command_timeout:.1f} s ({what})")
                try:
                    async with asyncio.timeout(left):
                        await self._cmd_up.wait()
                except TimeoutError:
                    raise EslUnavailable(f"no answer within {self.command_timeout:.1f} s ({what})") from None
            link = self._commands.link
            fut = link.send(text, what)
            try:
                async with asyncio.timeout_at(deadline):
                    return await fut
            except TimeoutError:
                # Its reply may still come and would be matched to the next command: drop the link.
                if link.transport is not None:
                    link.transport.abort()
                raise EslLostInFlight(f"no answer within {self.command_timeout:.1f} s ({what})") from None  # sent: may have run
        finally:
            self._waiting -= 1

    async def api(self, cmdline: str) -> str:
        if "\n" in cmdline or "\r" in cmdline:
            raise LocalUsageError(f"unsafe api command {cmdline[:60]!r}")
        self.log.debug("> api %s", cmdline)
        _, body = await self._submit(f"api {cmdline}\n\n", "api")
        reply = (body or b"").decode("utf-8", "replace")
        if reply.startswith("-ERR") or reply.startswith("-USAGE"):
            raise EslCommandError(cmdline, reply)
        return reply

    async def bgapi(self, cmdline: str, job_uuid: str) -> str:
        """As :meth:`fork_server.esl_client.EslClient.bgapi`."""
        self.log.debug("> bgapi %s", cmdline)
        head, _ = await self._submit(em.bgapi_text(cmdline, job_uuid) + "\n\n", "bgapi")
        reply = head.get("Reply-Text", "")
        if not reply.startswith("+OK"):
            raise EslCommandError("bgapi " + cmdline.split(" ", 1)[0], reply)
        return reply

    async def execute_playback(self, cmd: em.PlaybackCommand) -> None:
        await self.sendmsg(cmd.uuid, cmd.headers())

    async def sendmsg(self, uuid: str, headers: Mapping[str, str]) -> None:
        if not valid_uuid(uuid) or any(ch in kv for k, v in headers.items() for kv in (k, v) for ch in "\r\n\0"):
            raise LocalUsageError(f"unsafe sendmsg to {uuid!r}")  # a newline would start a new command
        text = f"sendmsg {uuid}\n" + "".join(f"{k}: {v}\n" for k, v in headers.items()) + "\n"
        head, _ = await self._submit(text, "sendmsg")
        reply = head.get("Reply-Text", "")
        if not reply.startswith("+OK"):
            raise EslCommandError("sendmsg " + headers.get("execute-app-name", ""), reply)
