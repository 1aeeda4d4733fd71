"""asyncio adapter: commands through python-ESL (blocking, kept off the event loop), events on
the event loop.

Events do not go through python-ESL. Every event the fork server subscribes to for its
channels (PLAYBACK_START/STOP, CHANNEL_EXECUTE_COMPLETE, CHANNEL_HANGUP_COMPLETE, CUSTOM
mod_audio_fork::*) carries every channel variable: 6.3-6.8 KB, ~150 header lines each on
FreeSWITCH 1.10.12. Profiling 30 real calls, python-ESL's event thread (``recvEventTimed``:
libesl splits and %-decodes all ~150 headers in C), the guard relaying every event byte over
its socket pair and the guard's check of every frame cost together ~20-25 % of the fork
server's CPU: ~14.3 ms of CPU per call-second against ~12.2 for ``--esl asyncio``. So events
come in on one asyncio connection, :class:`fork_server.esl_async.EslEvents` (the asyncio
client's own event side): framed by :class:`~fork_server.esl_wire.EslReader` and read by
:func:`fork_server.esl_messages.parse_plain`, which reads only the ~14 header lines the server
uses (40 us against 210 us for parsing all of a real 6.3 KB event). ``event_filter`` (set by
worker processes) drops other workers' events right there, before they cost anything more.
Measured after the move (``python -m testbed.bench.esl``): 194 us of CPU per 8 KB event
against 650 through the guard and python-ESL; capacity bench, 30 calls on a real 1.10.12 and
on the emulator: 14.1 ms of fork-server CPU per call-second against 16.9-17.6 the same day.

Commands (api, sendmsg) go through python-ESL on several command connections. Each is served
by its own thread (python-ESL connections are not thread-safe) and all of them take from
one queue: a command's round trip blocks only its own connection, so 50 calls starting at
once no longer queue behind one socket (measured on the emulator: one connection, 50 calls
starting together, round trip p50 150 ms and the second TTS segment of every call late).
mod_event_socket serves every inbound connection on its own thread, so they run in
parallel on the switch too. A call awaits each command before its next one, so its own
commands stay in order whichever connection carries them. ``up`` is the event connection up
and at least one command connection up.

Every connection reconnects with jittered exponential backoff, capped at 0.5 s: the switch is
local and a refused connect costs nothing, while every second of delay after it is back is a
second the callers hear nothing (issue 6). A command issued while no command connection is up
waits up to ``command_timeout`` and then raises ``EslUnavailable``: it is reported to the
caller, never dropped silently. An idle command connection is checked for a hang-up before
each command (python-ESL notices only when a command fails), so a command is not handed to a
dead connection; one lost in flight is sent again only when that is harmless (uuid_kill,
uuid_break, uuid_dump, ...), never a playback.

python-ESL never talks to the switch itself: every command connection goes through
:class:`~fork_server.esl_guard.EslGuard`, which drops the link before python-ESL reads a frame
it would crash or hang on (issue 6: a negative or huge Content-Length segfaulted the process).
``guard=False`` connects python-ESL directly, for comparison only, and then receives events
on a python-ESL event thread too, as before.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import queue
import random
import select
import threading
from typing import Any, Callable, Mapping

from . import esl_messages as em
from .errors import EslCommandError, EslLostInFlight, EslUnavailable, LocalUsageError
from .esl_async import EslEvents
from .esl_guard import EslGuard
from .spool import valid_uuid

__all__ = ["EslClient"]

_QUEUE_MAX = 10_000  # commands waiting for the command thread


# API commands that may be sent again when the connection died with no reply: a second run
# changes nothing (the channel is already killed, broken, dumped, stopped).
_IDEMPOTENT_API = ("uuid_kill ", "uuid_break ", "uuid_dump ", "uuid_getvar ", "uuid_exists ", "status")


def _idempotent(kind: str, payload: Any) -> bool:
    if kind != "api" or not isinstance(payload, str):
        return False
    if payload.startswith("uuid_audio_fork ") and payload.split(" ")[2:3] == ["stop"]:
        return True
    return payload.startswith(_IDEMPOTENT_API)


def _dead(con: Any) -> bool:
    """An idle command connection receives nothing unless the switch closed it (EOF, or a
    disconnect notice) or it broke, so readable means dead. python-ESL's ``connected()`` would
    only find out on the next command, which would then be lost."""
    try:
        fd = con.socketDescriptor()
        if fd < 0:
            return True
        readable, _, broken = select.select([fd], [], [fd], 0)
    except (OSError, ValueError):
        return True
    return bool(readable or broken)


def _load_esl() -> Any:
    import ESL  # python-ESL, built by the justfile's bootstrap

    return ESL



def _settle(fut: concurrent.futures.Future[Any], result: Any = None, exc: BaseException | None = None) -> None:
    """Complete a command's future from the command thread, unless its caller gave up on it
    meanwhile (cancelled: a timeout or a call that ended). set_result on a cancelled future
    raises, and that killed the command thread: every later command then waited for ever."""
    try:
        if exc is not None:
            fut.set_exception(exc)
        else:
            fut.set_result(result)
    except concurrent.futures.InvalidStateError:
        pass

class EslClient:
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
        backoff_max: float = 0.5,
        command_timeout: float = 5.0,
        command_connections: int = 4,
        guard: bool = True,
    ) -> None:
        if not 1 <= command_connections <= 32:
            raise LocalUsageError(f"command_connections must be 1..32, got {command_connections!r}")
        self._addr = (host, str(port))
        self._password = password
        self._on_event = on_event
        self._event_names = " ".join(event_names)
        self._filters = list(filters)
        self.log = logger
        self._on_state = on_state
        self._backoff = (backoff_initial, backoff_max)
        self.command_timeout = command_timeout
        self._loop: asyncio.AbstractEventLoop | None = None
        self._commands: queue.Queue[Any] = queue.Queue(_QUEUE_MAX)
        self._stop = threading.Event()
        self._cmd_up = [threading.Event() for _ in range(command_connections)]
        self._evt_up = threading.Event()
        self._state_lock = threading.Lock()
        self._was_up = False
        self._threads: list[threading.Thread] = []
        self.reconnects = 0
        self.guard = EslGuard(host, port, password, logger=logger, timeout=command_timeout) if guard else None
        # Events on the event loop (the module docstring says why); python-ESL's event thread
        # only without the guard, the comparison mode.
        self.event_link = EslEvents(
            host, port, password, on_event=on_event, event_names=event_names, filters=filters, logger=logger,
            on_change=lambda up: self._set_state(self._evt_up, up), backoff=self._backoff, timeout=command_timeout,
        ) if guard else None
        self._event_filter: Callable[[em.EslEvent], bool] | None = None

    @property
    def up(self) -> bool:
        return self._evt_up.is_set() and any(flag.is_set() for flag in self._cmd_up)

    @property
    def event_filter(self) -> Callable[[em.EslEvent], bool] | None:
        """Worker processes (issue 5): every worker gets every event; this drops the ones for
        other workers' calls as they are parsed, before they reach the app."""
        return self._event_filter

    @event_filter.setter
    def event_filter(self, wants: Callable[[em.EslEvent], bool] | None) -> None:
        self._event_filter = wants
        if self.event_link is not None:
            self.event_link.event_filter = wants

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        workers = [(self._command_thread, f"esl-commands-{i}", (flag,)) for i, flag in enumerate(self._cmd_up)]
        if self.event_link is None:
            workers.append((self._event_thread, "esl-events", ()))
        for target, name, args in workers:
            t = threading.Thread(target=target, name=name, args=args, daemon=True)
            t.start()
            self._threads.append(t)
        if self.event_link is not None:
            await self.event_link.start()

    async def wait_up(self, timeout: float) -> bool:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not self.up and loop.time() < deadline:
            await asyncio.sleep(0.02)
        return self.up

    async def close(self) -> None:
        self._stop.set()
        if self.event_link is not None:
            await self.event_link.close()
        for t in self._threads:
            await asyncio.to_thread(t.join, 2.0)
        self._threads.clear()
        if self.guard is not None:
            self.guard.close()

    # ---------------------------------------------------------------- commands

    async def _submit(self, kind: str, payload: Any) -> str:
        fut: concurrent.futures.Future[str] = concurrent.futures.Future()
        try:
            self._commands.put_nowait((kind, payload, fut))
        except queue.Full:
            raise EslUnavailable("command queue full") from None
        try:
            async with asyncio.timeout(self.command_timeout):
                return await asyncio.wrap_future(fut)
        except TimeoutError:
            fut.cancel()
            raise EslUnavailable(f"no answer within {self.command_timeout:.1f} s ({kind})") from None

    async def api(self, cmdline: str) -> str:
        self.log.debug("> api %s", cmdline)
        reply = await self._submit("api", cmdline)
        if reply.startswith("-ERR") or reply.startswith("-USAGE"):
            raise EslCommandError(cmdline, reply)
        return reply

    async def bgapi(self, cmdline: str, job_uuid: str) -> str:
        """``bgapi`` with our own Job-UUID; the reply only says the job was taken (``+OK
        Job-UUID: ...``), its outcome comes later as a BACKGROUND_JOB event. Never sent twice."""
        text = em.bgapi_text(cmdline, job_uuid)
        self.log.debug("> bgapi %s", cmdline)
        reply = await self._submit("raw", text)
        if not reply.startswith("+OK"):
            raise EslCommandError("bgapi " + cmdline.split(" ", 1)[0], reply)
        return reply

    async def execute_playback(self, cmd: em.PlaybackCommand) -> None:
        await self.sendmsg(cmd.uuid, cmd.headers())

    async def sendmsg(self, uuid: str, headers: Mapping[str, str]) -> None:
        if not valid_uuid(uuid) or any(
            ch in kv for k, v in headers.items() for kv in (k, v) for ch in "\r\n\0"
        ):
            raise LocalUsageError(f"unsafe sendmsg to {uuid!r}")  # a newline would start a new command
        reply = await self._submit("sendmsg", (uuid, dict(headers)))
        if not reply.startswith("+OK"):
            raise EslCommandError("sendmsg " + headers.get("execute-app-name", ""), reply)

    def _connect(self) -> Any:
        ESL = _load_esl()
        if self.guard is None:
            con = ESL.ESLconnection(self._addr[0], self._addr[1], self._password)
        else:
            fd = self.guard.open_for_thread(self._loop) if self._loop is not None else None
            if fd is None:
                return None
            con = ESL.ESLconnection(fd)  # python-ESL's attach: it sends "connect", the guard answers
        return con if con.connected() else None

    def _set_state(self, flag: threading.Event, up: bool) -> None:
        with self._state_lock:  # several threads flip flags; report each change of `up` once
            flag.set() if up else flag.clear()
            now = self.up
            changed, self._was_up = now != self._was_up, now
        # After close() the links go down on purpose: no "link down" report then.
        if changed and not self._stop.is_set() and self._on_state is not None and self._loop is not None:
            self._loop.call_soon_threadsafe(self._on_state, now)

    def _backoff_sleep(self, attempt: int) -> None:
        lo, hi = self._backoff
        self._stop.wait(min(hi, lo * 2**attempt) * random.uniform(0.5, 1.0))

    def _command_thread(self, flag: threading.Event) -> None:
        attempt = 0
        carry: tuple[str, Any, Any, bool] | None = None  # a command for the next connection
        while not self._stop.is_set():
            con = self._connect()
            if con is None:
                self._backoff_sleep(attempt)
                attempt += 1
                continue
            if attempt:
                self.reconnects += 1
            attempt = 0
            self._set_state(flag, True)
            while not self._stop.is_set() and con.connected():
                if carry is not None:
                    (kind, payload, fut, retried), carry = carry, None
                else:
                    try:
                        kind, payload, fut = self._commands.get(timeout=0.2)
                    except queue.Empty:
                        if _dead(con):  # noticed while idle, not by the next command
                            break
                        continue
                    retried = False
                if fut.cancelled():
                    continue
                if _dead(con):
                    carry = (kind, payload, fut, retried)  # never sent: it goes out on the next connection
                    break
                reply = self._run(con, kind, payload)
                if reply is None:
                    if not retried and _idempotent(kind, payload):
                        carry = (kind, payload, fut, True)  # lost in flight; safe to send again
                    else:  # sendmsg playback is not idempotent: reported, never silently lost
                        _settle(fut, exc=EslLostInFlight(f"connection lost during {kind}"))
                    break
                _settle(fut, reply)
            self._set_state(flag, False)
            con.disconnect()
        if carry is not None:
            _settle(carry[2], exc=EslUnavailable("ESL client closed"))
        self._fail_pending()

    def _log_unreachable(self, attempt: int) -> None:
        # One clear line when the switch cannot be reached, then one every ~30 attempts.
        if attempt % 30 == 0 and not self._stop.is_set():
            self.log.error(
                "ESL %s:%s unreachable or refusing our password (attempt %d); /healthz is 503 until it is up; retrying",
                self._addr[0], self._addr[1], attempt + 1,
            )

    @staticmethod
    def _run(con: Any, kind: str, payload: Any) -> str | None:
        if kind == "api":
            name, _, args = payload.partition(" ")
            ev = con.api(name, args)
            return ev.getBody() or "" if ev is not None else None
        if kind == "raw":  # a command block checked by its builder (bgapi_text); the reply's text
            ev = con.sendRecv(payload)
            return ev.getHeader("Reply-Text") or "" if ev is not None else None
        uuid, headers = payload
        # The raw sendmsg block: ESLevent("sendmsg") + sendMSG() segfaults in python-ESL 1.4.18
        # (the event type name is unknown, so the event is NULL). Headers were validated by
        # esl_messages.execute_headers: no CR/LF can end the block early.
        text = f"sendmsg {uuid}\n" + "".join(f"{k}: {v}\n" for k, v in headers.items())
        ev = con.sendRecv(text)
        return ev.getHeader("Reply-Text") or "" if ev is not None else None

    def _fail_pending(self) -> None:
        while True:
            try:
                _, _, fut = self._commands.get_nowait()
            except queue.Empty:
                return
            _settle(fut, exc=EslUnavailable("ESL client closed"))

    # ---------------------------------------------------------------- events, without the guard only

    def _event_thread(self) -> None:
        """python-ESL's event connection, for ``guard=False`` (the comparison mode): nothing
        stands between it and the switch, as before the guard."""
        attempt = 0
        while not self._stop.is_set():
            con = self._connect()
            if con is None:
                self._log_unreachable(attempt)
                self._backoff_sleep(attempt)
                attempt += 1
                continue
            attempt = 0
            con.events("plain", self._event_names)
            for header, value in self._filters:
                con.filter(header, value)
            self._set_state(self._evt_up, True)
            while not self._stop.is_set() and con.connected():
                e = con.recvEventTimed(200)
                if e is None:
                    continue
                parsed = em.parse_event(_EventHeaders(e), e.getBody())
                if parsed is not None and self._loop is not None:
                    if self._event_filter is None or self._event_filter(parsed):
                        self._loop.call_soon_threadsafe(self._on_event, parsed)
            self._set_state(self._evt_up, False)
            con.disconnect()


class _EventHeaders:
    """The headers of a python-ESL event, read on demand.

    parse_event reads a handful of headers; copying all of them (a real event has 50-150)
    cost three SWIG calls each and held the GIL against the event loop (issue 5 profile).
    """

    __slots__ = ("_e",)

    def __init__(self, e: Any) -> None:
        self._e = e

    def get(self, name: str, default: Any = None) -> Any:
        value = self._e.getHeader(name)
        return default if value is None else value
