"""A whole voicefork deployment on loopback: emulated FreeSWITCH + ESL, the real fork server
(``fork_server.app.App``), the reference connector, and the dialplan RENDERED from the config.

Used by ``just demo``, the end-to-end tests and the benchmark. The switch executes the XML
that ``fs_dialplan.render`` produced, so a rendering bug breaks every call here.

Ports are all 0 (picked by the OS). The order matters: the fork server binds first, then the
config is rendered with its real URL, then the switch loads the rendered dialplan.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import tempfile
from pathlib import Path
from typing import Any, Mapping

from fork_server.app import App
from fs_dialplan import load_config
from fs_dialplan.model import Config
from fs_dialplan.render import render, write_tree

from .connector.server import ConnectorServer
from .freeswitch.esl_server import EslServer
from .freeswitch.switch import EmulatedSwitch
from .freeswitch.timings import Timings

__all__ = ["Stack", "EXAMPLE_CONFIG", "stack_env"]

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
    for t in config.trunks:
        if t.password_env:
            env[t.password_env] = "stack-trunk-secret"
    return env


class Stack:
    """``async with Stack(...) as s:`` then ``s.switch.place_call(...)``."""

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
        esl_up_at_start: bool = True,
    ) -> None:
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

        self.switch = EmulatedSwitch(timings=self.timings, temp_dir=str(self.fs_temp))
        await self.switch.start()
        self.esl = EslServer(self.switch, self.env[self.base.freeswitch.esl_password_env])
        await self.esl.start()
        if not self.esl_up_at_start:
            await self.esl.stop_listening()
        self.connector = ConnectorServer(self.connector_mode, **self.connector_options)
        await self.connector.start()

        config = self._wire(self.base, fork_port=0)
        self.app = App(config, env=self.env, listen_port=0, logger=self.logger)
        port = await self.app.start()
        self.config = self._wire(self.base, fork_port=port)
        self.rendered = render(self.config, self.env)
        write_tree(self.rendered, self.conf_dir)
        self.switch.load_dialplan(self.conf_dir / "dialplan" / "public")
        if self.esl_up_at_start and not await self.app.esl.wait_up(5.0):
            raise RuntimeError("the fork server did not get its ESL link to the emulated switch")

    def _wire(self, base: Config, fork_port: int) -> Config:
        """The config with every address pointed at this stack's loopback servers."""
        fs = dataclasses.replace(base.freeswitch, esl_host="127.0.0.1", esl_port=self.esl.port, temp_dir=str(self.fs_temp))
        fork = dataclasses.replace(
            base.fork_server, listen_host="127.0.0.1", listen_port=fork_port, public_url=f"ws://127.0.0.1:{fork_port}"
        )
        connectors = {
            name: dataclasses.replace(c, url=self.connector_url_override or self.connector.url(f"/{name}"))
            for name, c in base.connectors.items()
        }
        playback = dataclasses.replace(
            base.playback, spool_dir=str(self.spool), freeswitch_spool_dir=str(self.spool), **self.playback_overrides
        )
        return dataclasses.replace(base, freeswitch=fs, fork_server=fork, connectors=connectors, playback=playback)

    async def close(self) -> None:
        await self.switch.close()
        await self.app.drain(2.0)
        await self.app.stop()
        await self.connector.close()
        await self.esl.close()
        if self._tmp is not None:
            self._tmp.cleanup()

    def spool_files(self) -> list[str]:
        return sorted(str(p.relative_to(self.spool)) for p in self.spool.rglob("*") if p.is_file())

    def number_of(self, route: str) -> str:
        r = self.config.route(route)
        if r.number:
            return r.number
        raise ValueError(f"route {route} has a pattern, not a number; pass a destination")


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))
