"""FreeSWITCH's Event Socket (mod_event_socket, inbound mode) on the wire, in front of an EslCore.

python-ESL connects to it unchanged. Framing and replies follow mod_event_socket.c:
* on connect ``Content-Type: auth/request``; ``auth <pw>`` → ``command/reply`` with
  ``Reply-Text: +OK accepted`` or ``-ERR invalid`` followed by a disconnect notice;
* ``api`` → ``api/response`` with ``Content-Length``; ``bgapi`` → ``+OK Job-UUID: …`` (the
  command's own ``Job-UUID`` header if it has one) then a BACKGROUND_JOB event carrying the
  output as its body, fired to every connection subscribed to it, not to the one that sent the
  bgapi unless it is subscribed too (seen on a real 1.10.12); a core's ``bgapi`` may return a
  coroutine (``originate`` rings for a while): the event goes out when it is done;
* ``event plain <words>``: event names, and after ``CUSTOM`` every further word is a subclass
  name (so a subscription must list CUSTOM last); ``ALL`` subscribes everything;
* ``filter <header> <value>``: once any filter exists an event is sent only if some filter
  matches it (mod_event_socket.c: filters are OR'ed; a value is compared case-insensitively, or,
  written ``/regex/flags``, matched as a PCRE as switch_regex_perform does; ``+``/``-`` prefixes,
  negative filters, are not emulated);
* ``sendmsg <uuid>`` with header lines and an optional ``Content-Length`` body;
* events go out as ``Content-Length`` + ``Content-Type: text/event-plain`` and the event
  serialised as ``Name: url-encoded value`` lines; a body follows its own ``Content-Length``
  header and a blank line (switch_event_serialize);
* ``exit`` → ``+OK bye`` and a disconnect notice.
Limits (assumptions, FreeSWITCH has its own): a command block ≤ 1 MiB; a listener whose
event queue exceeds 100 000 events is disconnected with a log line.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import re
import uuid as uuidlib
from typing import Callable, Mapping, Protocol
from urllib.parse import quote

__all__ = ["EslServer", "EslCore", "serialize_event", "parse_block"]

log = logging.getLogger("testbed.freeswitch.esl")

MAX_BLOCK = 1 << 20
MAX_QUEUE = 100_000
DISCONNECT = "Disconnected, goodbye.\nSee you at ClueCon! http://www.cluecon.com/\n"


class EslCore(Protocol):
    def api(self, command: str, args: str) -> str: ...
    def sendmsg(self, uuid: str, headers: Mapping[str, str], body: str | None) -> str: ...
    def subscribe(self, listener: Callable[[Mapping[str, str], "str | None"], None]) -> Callable[[], None]: ...


@functools.lru_cache(maxsize=1 << 16)
def _quoted(value: str) -> str:
    # Cached: most header values repeat per channel, and the benchmark sends thousands a second.
    return quote(value, safe="")


def serialize_event(headers: Mapping[str, str], body: str | None) -> bytes:
    """One event in ``text/event-plain`` framing, outer header included."""
    text = "".join(f"{k}: {_quoted(str(v))}\n" for k, v in headers.items())
    if body:
        raw = body.encode()
        data = text.encode() + b"Content-Length: %d\n\n" % len(raw) + raw
    else:
        data = (text + "\n").encode()
    return b"Content-Length: %d\nContent-Type: text/event-plain\n\n" % len(data) + data


def reply(text: str) -> bytes:
    return f"Content-Type: command/reply\nReply-Text: {text}\n\n".encode()


def parse_block(block: str) -> tuple[str, dict[str, str]]:
    """A command block: the first line is the command, then ``Name: value`` header lines."""
    lines = block.strip("\n").split("\n")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if sep:
            headers[name.strip()] = value.strip()
    return lines[0].rstrip("\r"), headers


@functools.lru_cache(maxsize=256)
def _filter_regex(value: str) -> "re.Pattern[str] | None":
    body, slash, opts = value[1:].rpartition("/")
    if not slash:
        return None  # FreeSWITCH logs "missing ending '/' delimeter" and matches nothing
    flags = (re.IGNORECASE if "i" in opts else 0) | (re.DOTALL if "s" in opts else 0)
    try:
        return re.compile(body, flags)
    except re.error:
        return None


def _filter_match(header: str | None, value: str) -> bool:
    if header is None:
        return False
    if value.startswith("/"):
        rx = _filter_regex(value)
        return rx is not None and rx.search(header) is not None
    return header.lower() == value.lower()


class _Listener:
    def __init__(self, server: "EslServer", reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.server, self.reader, self.writer = server, reader, writer
        self.authed = False
        self.events: set[str] = set()
        self.subclasses: set[str] = set()
        self.all_events = False
        self.filters: list[tuple[str, str]] = []
        self.queue: asyncio.Queue[bytes | None] = asyncio.Queue()
        self.unsubscribe: Callable[[], None] | None = None

    def wants(self, headers: Mapping[str, str]) -> bool:
        name = headers.get("Event-Name", "")
        if name == "CUSTOM":
            if not (self.all_events or "CUSTOM" in self.events):
                return False
            if self.subclasses and not self.all_events and headers.get("Event-Subclass", "") not in self.subclasses:
                return False
        elif not (self.all_events or name in self.events):
            return False
        if self.filters:
            return any(_filter_match(headers.get(h), v) for h, v in self.filters)
        return True

    def on_event(self, headers: Mapping[str, str], body: str | None) -> None:
        if not self.wants(headers):
            return
        if self.queue.qsize() >= MAX_QUEUE:
            log.error("ESL listener not reading: %d events queued; disconnecting it", MAX_QUEUE)
            self.writer.transport.abort()
            return
        self.queue.put_nowait(serialize_event(headers, body))

    async def pump(self) -> None:
        while True:
            item = await self.queue.get()
            if item is None:
                return
            self.writer.write(item)
            await self.writer.drain()


class EslServer:
    def __init__(self, core: EslCore, password: str, host: str = "127.0.0.1", port: int = 0) -> None:
        if not password:
            raise ValueError("the ESL password must not be empty")
        self.core, self.password, self.host, self._port = core, password, host, port
        self._server: asyncio.base_events.Server | None = None
        self._listeners: set[_Listener] = set()
        self.commands: list[str] = []  # every command line received, for tests
        # Chaos tests: a slow switch. A command line starting with a key is answered that many
        # seconds late (the connection's later commands wait behind it, as on the real socket).
        self.reply_delay_s: dict[str, float] = {}
        self._jobs: set[asyncio.Task[str]] = set()  # bgapi jobs still running (originate rings)

    @property
    def port(self) -> int:
        return self._port

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._client, self.host, self._port, limit=MAX_BLOCK)
        self._port = self._server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        for job in list(self._jobs):
            job.cancel()
        server, self._server = self._server, None
        if server is not None:
            server.close()
        for lst in list(self._listeners):
            lst.writer.transport.abort()
        if server is not None:
            await server.wait_closed()

    def drop_connections(self) -> None:
        """Cut every client connection (an ESL outage, for chaos tests); the port stays open."""
        for lst in list(self._listeners):
            lst.writer.transport.abort()

    @property
    def listening(self) -> bool:
        return self._server is not None

    async def stop_listening(self) -> None:
        """FreeSWITCH went away (chaos tests): live connections are cut with no notice and new
        ones are refused (connection refused) until :meth:`resume_listening`."""
        if self._server is not None:
            self._server.close()
            self._server = None
        self.drop_connections()

    async def resume_listening(self) -> None:
        """The switch is back, on the same port."""
        if self._server is None:
            self._server = await asyncio.start_server(self._client, self.host, self._port, limit=MAX_BLOCK)

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        lst = _Listener(self, reader, writer)
        self._listeners.add(lst)
        pump = asyncio.get_running_loop().create_task(lst.pump())
        try:
            writer.write(b"Content-Type: auth/request\n\n")
            while True:
                try:
                    raw = await reader.readuntil(b"\n\n")
                except asyncio.LimitOverrunError:
                    log.error("ESL client sent a command block over %d bytes; closing", MAX_BLOCK)
                    return
                block = raw.decode("utf-8", "replace")
                cmd, headers = parse_block(block)
                body = None
                if "Content-Length" in headers or "content-length" in headers:
                    try:
                        n = int(headers.get("Content-Length") or headers.get("content-length") or 0)
                    except ValueError:
                        n = 0
                    if 0 < n <= MAX_BLOCK:
                        body = (await reader.readexactly(n)).decode("utf-8", "replace")
                if not cmd.strip():
                    continue
                self.commands.append(cmd)
                delay = max((d for k, d in self.reply_delay_s.items() if cmd.startswith(k)), default=0.0)
                if delay > 0:
                    await asyncio.sleep(delay)
                out = self._command(lst, cmd, headers, body)
                if out is None:  # close after the queued replies
                    lst.queue.put_nowait(b"Content-Type: text/disconnect-notice\nContent-Length: %d\n\n" % len(DISCONNECT) + DISCONNECT.encode())
                    lst.queue.put_nowait(None)
                    await pump
                    return
                lst.queue.put_nowait(out)
        except (asyncio.IncompleteReadError, ConnectionError):
            return
        except Exception:  # noqa: BLE001 - a core error must not kill the server; the test sees the log
            log.exception("ESL emulator: command failed")
        finally:
            if lst.unsubscribe is not None:
                lst.unsubscribe()
            self._listeners.discard(lst)
            pump.cancel()
            writer.close()

    def _command(self, lst: _Listener, cmd: str, headers: Mapping[str, str], body: str | None) -> bytes | None:
        word, _, rest = cmd.partition(" ")
        word = word.lower()
        if not lst.authed:
            if word == "auth":
                if rest == self.password:
                    lst.authed = True
                    return reply("+OK accepted")
                lst.queue.put_nowait(reply("-ERR invalid"))
                return None
            return reply("-ERR command not found")
        if word == "api":
            name, _, args = rest.partition(" ")
            out = self.core.api(name, args).encode()
            return b"Content-Type: api/response\nContent-Length: %d\n\n" % len(out) + out
        if word == "bgapi":
            job = headers.get("Job-UUID") or str(uuidlib.uuid4())
            name, _, args = rest.partition(" ")
            loop = asyncio.get_running_loop()
            loop.call_soon(self._bgapi, lst, job, name, args)
            return f"Content-Type: command/reply\nReply-Text: +OK Job-UUID: {job}\nJob-UUID: {job}\n\n".encode()
        if word == "event":
            return self._event(lst, rest.split())
        if word == "noevents":
            lst.events.clear()
            lst.subclasses.clear()
            lst.all_events = False
            return reply("+OK no longer listening for events")
        if word == "filter":
            header, _, value = rest.partition(" ")
            if header == "delete":
                h, _, v = value.partition(" ")
                lst.filters = [f for f in lst.filters if not (f[0] == h and (not v or f[1] == v))]
                return reply(f"+OK filter deleted. [{h}]=[{v}]")
            if not header or not value:
                return reply("-ERR invalid syntax")
            lst.filters.append((header, value))
            return reply(f"+OK filter added. [{header}]=[{value}]")
        if word == "sendmsg":
            out = self.core.sendmsg(rest.strip(), headers, body)
            return reply(out)
        if word == "exit":
            lst.queue.put_nowait(reply("+OK bye"))
            return None
        return reply("-ERR command not found")

    def _event(self, lst: _Listener, words: list[str]) -> bytes:
        if words and words[0].lower() in ("plain", "json", "xml"):
            fmt, words = words[0].lower(), words[1:]
            if fmt != "plain":
                return reply(f"-ERR event format {fmt} is not emulated")
        custom = False
        keys = 0
        for w in words:
            if custom:
                lst.subclasses.add(w)
            elif w == w.upper():
                keys += 1
                if w == "ALL":
                    lst.all_events = True
                lst.events.add(w)
                custom = w == "CUSTOM"
        if not keys:
            return reply("-ERR no keywords supplied")
        if lst.unsubscribe is None:
            lst.unsubscribe = self.core.subscribe(lst.on_event)
        return reply("+OK event listener enabled plain")

    def _bgapi(self, lst: _Listener, job: str, name: str, args: str) -> None:
        run = getattr(self.core, "bgapi", None)
        out = run(name, args) if run is not None else self.core.api(name, args)
        if asyncio.iscoroutine(out):
            task = asyncio.get_running_loop().create_task(out)
            self._jobs.add(task)
            task.add_done_callback(lambda t: (self._jobs.discard(t), None if t.cancelled() else
                                              self._job_done(job, name, args, t.result() if t.exception() is None
                                                             else f"-ERR {t.exception()!r}\n")))
            return
        self._job_done(job, name, args, out)

    def _job_done(self, job: str, name: str, args: str, out: str) -> None:
        headers = {"Event-Name": "BACKGROUND_JOB", "Job-UUID": job, "Job-Command": name, "Job-Command-Arg": args}
        for listener in list(self._listeners):
            if listener.authed:
                listener.on_event(headers, out)
