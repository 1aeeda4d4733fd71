"""A whole voicefork deployment on loopback: emulated FreeSWITCH + ESL, the real fork server
(``fork_server.app.App``), the reference connector, and the dialplan RENDERED from the config.

Used by ``just demo``, the end-to-end tests and the benchmark. The switch executes the XML
that ``fs_dialplan.render`` produced, so a rendering bug breaks every call here.

Ports are all 0 (picked by the OS). The order matters: the fork server binds first, then the
config is rendered with its real URL, then the switch loads the rendered dialplan.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import dataclasses
import json
import logging
import os
import signal
import sys
import tempfile
from pathlib import Path
from typing import Any, Callable, Mapping

from fork_server.app import App
from fork_server.esl_async import AsyncEslClient
from fork_server.esl_client import EslClient
from fs_dialplan import load_config
from fs_dialplan.model import Config
from fs_dialplan.render import OUTBOUND_CONTEXT, OUTBOUND_FILE, render, write_tree

from .connector.server import ConnectorServer
from .freeswitch.esl_server import EslServer
from .freeswitch.switch import FORK_MODULES, EmulatedSwitch
from .freeswitch.timings import Timings

__all__ = ["Stack", "EXAMPLE_CONFIG", "stack_env", "wire", "open_fds", "malloc_trim", "esl_factory", "http_request"]

EXAMPLE_CONFIG = Path(__file__).resolve().parent.parent / "config" / "voicefork.yaml"
log = logging.getLogger("testbed.stack")


def stack_env(config: Config) -> dict[str, str]:
    """Throwaway secrets for every ``*_env`` the config names (never FreeSWITCH's default)."""
    env: dict[str, str] = {config.freeswitch.esl_password_env: "stack-esl-secret"}
    if config.fork_server.auth is not None:
        env[config.fork_server.auth.password_env] = "stack-fork-secret"
    for c in config.connectors.values():
        if c.token_env:
            env[c.token_env] = "stack-connector-token"
        if c.auth_token_env:
            env[c.auth_token_env] = "stack-twilio-auth-token"
    for t in config.trunks:
        if t.password_env:
            env[t.password_env] = "stack-trunk-secret"
    if config.outbound is not None and config.outbound.token_env:
        env[config.outbound.token_env] = "stack-api-token"
    return env


def wire(
    base: Config,
    *,
    fork_port: int,
    esl_port: int,
    fs_temp: str,
    spool: str,
    connector_urls: Mapping[str, str],
    playback: Mapping[str, Any] | None = None,
    recordings: str | None = None,
) -> Config:
    """The config with every address pointed at a stack's loopback servers (and its recordings,
    if it records, into ``recordings``)."""
    fs = dataclasses.replace(base.freeswitch, esl_host="127.0.0.1", esl_port=esl_port, temp_dir=fs_temp)
    fork = dataclasses.replace(
        base.fork_server, listen_host="127.0.0.1", listen_port=fork_port, public_url=f"ws://127.0.0.1:{fork_port}"
    )
    connectors = {name: dataclasses.replace(c, url=connector_urls[name]) for name, c in base.connectors.items()}
    pb = dataclasses.replace(base.playback, spool_dir=spool, freeswitch_spool_dir=spool, **dict(playback or {}))
    rec = base.recording
    if rec is not None and recordings is not None:
        rec = dataclasses.replace(rec, dir=recordings, fork_server_dir=recordings)
    return dataclasses.replace(base, freeswitch=fs, fork_server=fork, connectors=connectors, playback=pb, recording=rec)


class Stack:
    """``async with Stack(...) as s:`` then ``s.switch.place_call(...)``.

    ``fork_server="process"`` runs the fork server as its own process
    (:mod:`testbed.fork_process`), as deployed; ``s.app`` is then None, ``s.fork_pid`` names
    the process and :meth:`live_calls` asks it over HTTP.

    ``fork_module`` is the emulated switch's mod_audio_fork: ``"drachtio"`` (the default) or
    ``"jambonz"`` (bidirectional stream playback; see :mod:`testbed.freeswitch.jambonz`).
    """

    def __init__(
        self,
        config: Config | str | Path = EXAMPLE_CONFIG,
        *,
        connector_mode: str = "script",
        connector_options: Mapping[str, Any] | None = None,
        playback: Mapping[str, Any] | None = None,
        timings: Timings | None = None,
        workdir: str | Path | None = None,
        connector_url_override: str | None = None,
        logger: logging.Logger | None = None,
        fork_server: str = "inprocess",
        esl_up_at_start: bool = True,
        esl: str = "python-esl",
        fork_module: str = "drachtio",
    ) -> None:
        if fork_server not in ("inprocess", "process"):
            raise ValueError(f"fork_server must be inprocess or process, got {fork_server!r}")
        esl_factory(esl)  # checks the name
        if fork_module not in FORK_MODULES:
            raise ValueError(f"fork_module must be drachtio or jambonz, got {fork_module!r}")
        self.fork_module = fork_module
        self.fork_server = fork_server
        self.esl_client = esl  # the fork server's ESL client, as voicefork-server --esl
        self.base = config if isinstance(config, Config) else load_config(str(config))
        self.connector_mode = connector_mode
        self.connector_options = dict(connector_options or {})
        self.playback_overrides = dict(playback or {})
        self.timings = timings
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        self.workdir = Path(workdir) if workdir else None
        self.connector_url_override = connector_url_override
        self.esl_up_at_start = esl_up_at_start  # False: the switch's Event Socket refuses connections at start
        self.logger = logger or logging.getLogger("voicefork")
        self.env = stack_env(self.base)
        self.rendered: dict[str, str] = {}
        self.app: App | None = None
        self.proc: asyncio.subprocess.Process | None = None
        self.fork_port = 0

    async def __aenter__(self) -> "Stack":
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def start(self) -> None:
        if self.workdir is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="voicefork-stack-")
            self.workdir = Path(self._tmp.name)
        self.spool = self.workdir / "spool"
        self.fs_temp = self.workdir / "fs-tmp"
        self.conf_dir = self.workdir / "fs-conf"
        for d in (self.spool, self.fs_temp):
            d.mkdir(parents=True, exist_ok=True)

        self.switch = EmulatedSwitch(timings=self.timings, temp_dir=str(self.fs_temp), fork_module=self.fork_module)
        await self.switch.start()
        self.esl = EslServer(self.switch, self.env[self.base.freeswitch.esl_password_env])
        await self.esl.start()
        if not self.esl_up_at_start:
            await self.esl.stop_listening()
        self.connector = ConnectorServer(self.connector_mode, **self.connector_options)
        await self.connector.start()

        self.wiring = {
            "esl_port": self.esl.port,
            "fs_temp": str(self.fs_temp),
            "spool": str(self.spool),
            "connector_urls": {
                name: self.connector_url_override or self.connector.url(f"/{name}") for name in self.base.connectors
            },
            "playback": self.playback_overrides,
            "recordings": str(self.workdir / "recordings"),
        }
        if self.fork_server == "process":
            self.fork_port = await self._start_process()
        else:
            self.app = App(wire(self.base, fork_port=0, **self.wiring), env=self.env, listen_port=0, logger=self.logger,
                           esl_factory=esl_factory(self.esl_client))
            self.fork_port = await self.app.start()
        self.config = wire(self.base, fork_port=self.fork_port, **self.wiring)
        self.rendered = render(self.config, self.env)
        write_tree(self.rendered, self.conf_dir)
        self.switch.load_dialplan(self.conf_dir / "dialplan" / "public")
        if OUTBOUND_FILE in self.rendered:
            self.switch.load_dialplan(self.conf_dir / OUTBOUND_FILE, context=OUTBOUND_CONTEXT)
        self.switch.gateways = {Path(rel).stem for rel in self.rendered if rel.startswith("sip_profiles/external/")}
        if not self.esl_up_at_start:
            return
        if self.app is not None and not await self.app.esl.wait_up(5.0):
            raise RuntimeError("the fork server did not get its ESL link to the emulated switch")
        if self.app is None and not await self._wait_healthy(5.0):
            raise RuntimeError("the fork server process did not get its ESL link to the emulated switch")

    async def _start_process(self) -> int:
        if self.base.source in ("", "<config>") or not os.path.exists(self.base.source):
            raise ValueError("fork_server='process' needs a config loaded from a file")
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "testbed.fork_process", "--config", self.base.source,
            "--wiring", json.dumps(self.wiring), "--esl", self.esl_client,
            env={**os.environ, **self.env}, stdout=asyncio.subprocess.PIPE,
        )
        assert self.proc.stdout is not None
        try:
            line = await asyncio.wait_for(self.proc.stdout.readline(), 20)
        except TimeoutError:
            line = b""
        if not line.startswith(b"LISTENING "):
            self.proc.kill()
            await self.proc.wait()
            raise RuntimeError(f"the fork server process did not start (said {line!r}, exit {self.proc.returncode})")
        return int(line.split()[1])

    @property
    def fork_pid(self) -> int:
        return self.proc.pid if self.proc is not None else os.getpid()

    async def _get(self, path: str) -> tuple[int, bytes]:
        reader, writer = await asyncio.open_connection("127.0.0.1", self.fork_port)
        try:
            writer.write(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
            head = await reader.readuntil(b"\r\n\r\n")
            status = int(head.split()[1])
            length = next(
                (int(l.split(b":")[1]) for l in head.split(b"\r\n") if l.lower().startswith(b"content-length")), 0
            )
            return status, await reader.readexactly(length)
        finally:
            writer.close()

    async def _wait_healthy(self, timeout: float) -> bool:
        loop = asyncio.get_running_loop()
        end = loop.time() + timeout
        while loop.time() < end:
            if (await self._get("/healthz"))[0] == 200:
                return True
            await asyncio.sleep(0.05)
        return False

    async def live_calls(self) -> list[dict[str, Any]]:
        """The fork server's live calls (``GET /calls``), wherever it runs."""
        if self.app is not None:
            return [c.info() for c in self.app.calls.values()]
        status, body = await self._get("/calls")
        if status != 200:
            raise RuntimeError(f"GET /calls answered {status}")
        return json.loads(body)

    async def close(self) -> None:
        await self.switch.close()
        if self.app is not None:
            await self.app.drain(2.0)
            await self.app.stop()
        if self.proc is not None and self.proc.returncode is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                async with asyncio.timeout(10):
                    await self.proc.wait()
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()
        await self.connector.close()
        await self.esl.close()
        if self._tmp is not None:
            self._tmp.cleanup()

    def point_connector(self, name: str, url: str) -> None:
        """Send the calls of connector ``name`` to ``url`` from now on (in-process fork server):
        for a bot that can only start once it knows the fork server's address (a Twilio bot's
        REST ``base_url``)."""
        if self.app is None:
            raise RuntimeError("point_connector needs the in-process fork server")
        for holder in (self, self.app):
            c = holder.config.connectors
            holder.config = dataclasses.replace(holder.config, connectors={**c, name: dataclasses.replace(c[name], url=url)})

    def spool_files(self) -> list[str]:
        # os.walk, not rglob: a call's directory may vanish while it is being listed.
        return sorted(
            os.path.relpath(os.path.join(d, f), self.spool) for d, _, files in os.walk(self.spool) for f in files
        )

    async def http(self, method: str, path: str, body: bytes = b"", headers: Mapping[str, str] | None = None
                   ) -> tuple[int, dict[str, str], bytes]:
        """One HTTP/1.1 request to the fork server's port: (status, lower-case headers, body)."""
        return await http_request(self.fork_port, method, path, body, headers)

    def number_of(self, route: str) -> str:
        r = self.config.route(route)
        if r.number:
            return r.number
        raise ValueError(f"route {route} has a pattern, not a number; pass a destination")


async def http_request(port: int, method: str, path: str, body: bytes = b"", headers: Mapping[str, str] | None = None,
                       timeout: float = 10.0) -> tuple[int, dict[str, str], bytes]:
    """One HTTP/1.1 request to 127.0.0.1:``port`` (Connection: close): (status, lower-case headers, body)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        head = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1", "Connection: close", f"Content-Length: {len(body)}"]
        head += [f"{k}: {v}" for k, v in (headers or {}).items()]
        writer.write(("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body)
        raw = await asyncio.wait_for(reader.read(), timeout)
    finally:
        writer.close()
    top, _, data = raw.partition(b"\r\n\r\n")
    lines = top.decode("latin-1").split("\r\n")
    got = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    return int(lines[0].split()[1]), got, data


def open_fds(pid: int | None = None) -> int:
    return len(os.listdir(f"/proc/{pid or 'self'}/fd"))


def esl_factory(name: str) -> Callable[..., Any]:
    """The fork server's ESL client by its ``voicefork-server --esl`` name."""
    clients: dict[str, Callable[..., Any]] = {"python-esl": EslClient, "asyncio": AsyncEslClient}
    if name not in clients:
        raise ValueError(f"esl must be python-esl or asyncio, got {name!r}")
    return clients[name]


def malloc_trim() -> bool:
    """glibc's ``malloc_trim(0)``: give freed heap memory back to the OS (every arena). False
    where there is no glibc. Tells fragmentation (RSS drops) from memory still in use."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.malloc_trim(0)
    except (OSError, AttributeError):
        return False
    return True
