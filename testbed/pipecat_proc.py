"""The Pipecat bot (testbed/pipecat_bot.py) as a subprocess in the Pipecat venv, and its events."""

from __future__ import annotations

import asyncio
import json
import os
import time
from pathlib import Path
from typing import Any

from .speech import BOT_ANSWER
from .twilio_peer import TEST_ACCOUNT_SID

__all__ = ["PIPECAT_PY", "Bot", "start_bot"]

ROOT = Path(__file__).resolve().parents[1]
PIPECAT_PY = Path(os.environ.get("VOICEFORK_PIPECAT_PYTHON", ROOT / ".venv-pipecat" / "bin" / "python"))


class Bot:
    """The Pipecat bot process and the JSON events it prints."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.events: list[dict[str, Any]] = []
        self._reader = asyncio.get_running_loop().create_task(self._read())

    async def _read(self) -> None:
        assert self.proc.stdout is not None
        while line := await self.proc.stdout.readline():
            try:
                self.events.append(json.loads(line))
            except ValueError:
                pass  # a library's own print

    def of(self, name: str) -> list[dict[str, Any]]:
        return [e for e in self.events if e["event"] == name]

    async def wait(self, name: str, timeout: float = 20.0) -> dict[str, Any]:
        end = time.monotonic() + timeout
        while not self.of(name):
            if time.monotonic() > end or self.proc.returncode is not None:
                raise AssertionError(f"the Pipecat bot did not report {name!r} (events: {self.events})")
            await asyncio.sleep(0.02)
        return self.of(name)[0]

    async def stop(self) -> None:
        if self.proc.returncode is None:
            self.proc.terminate()
            try:
                async with asyncio.timeout(10):
                    await self.proc.wait()
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()
        self._reader.cancel()


async def start_bot(stack: Any, *extra: str, connector: str = "support-bot") -> Bot:
    """Start the bot for ``stack`` (Stack or RealStack: its fork server is the REST base_url) and
    point ``connector`` at it."""
    env = {**os.environ, "TWILIO_ACCOUNT_SID": TEST_ACCOUNT_SID, "TWILIO_AUTH_TOKEN": stack.env["TWILIO_AUTH_TOKEN"],
           "PIPECAT_LOG_LEVEL": "WARNING"}
    proc = await asyncio.create_subprocess_exec(
        str(PIPECAT_PY), str(ROOT / "testbed" / "pipecat_bot.py"), "--wav", str(BOT_ANSWER),
        "--base-url", f"http://127.0.0.1:{stack.fork_port}", *extra,
        env=env, stdout=asyncio.subprocess.PIPE, cwd=str(ROOT),
    )
    bot = Bot(proc)
    port = (await bot.wait("LISTENING", timeout=60))["port"]
    stack.point_connector(connector, f"ws://127.0.0.1:{port}/ws")
    return bot


