"""Helpers of the chaos suite: stacks with faulty peers, waiting, and silence on the frame clock."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import time
from pathlib import Path
from typing import Any, AsyncIterator

import numpy as np

from fs_dialplan import load_config
from fs_dialplan.model import Config, Fallback
from testbed.speech import write_wav
from testbed.stack import EXAMPLE_CONFIG, Stack

SUPPORT, SALES, UK = "+15551234567", "+15557654321", "+442071234567"  # config/voicefork.yaml: hangup, transfer, play


async def until(pred, timeout=10.0, what="condition", step=0.01):
    end = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > end:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(step)


def config(*, connector: dict[str, Any] | None = None, prompt: str | None = None, playback: dict[str, Any] | None = None,
           fork_server: dict[str, Any] | None = None) -> Config:
    """The example config with every connector changed by ``connector`` and the uk-line
    fallback prompt pointed at ``prompt`` (the shipped path is a real switch's sound file)."""
    base = load_config(str(EXAMPLE_CONFIG))
    connectors = {n: dataclasses.replace(c, **(connector or {})) for n, c in base.connectors.items()}
    routes = tuple(
        dataclasses.replace(r, fallback=Fallback("play", prompt, None)) if r.name == "uk-line" and prompt else r
        for r in base.routes
    )
    out = dataclasses.replace(base, connectors=connectors, routes=routes)
    if playback:
        out = dataclasses.replace(out, playback=dataclasses.replace(out.playback, **playback))
    if fork_server:
        out = dataclasses.replace(out, fork_server=dataclasses.replace(out.fork_server, **fork_server))
    return out


def prompt_file(directory: Path, ms: int = 600) -> str:
    """A fallback prompt: a 440 Hz tone at 8 kHz, so what the caller heard can be told apart."""
    t = np.arange(8 * ms) / 8000
    pcm = (8000 * np.sin(2 * np.pi * 440 * t)).astype("<i2").tobytes()
    path = directory / "fallback-prompt.wav"
    write_wav(path, pcm, 8000)
    return str(path)


def bot(**kw: Any) -> dict[str, Any]:
    opts = {"bargein": False, "rate": 24000, "speed": 3.0, "answer_delay_ms": 100, "mark_every_ms": 0}
    opts.update(kw)
    return opts


@contextlib.asynccontextmanager
async def stack(*, mode: str = "chaos", options: dict[str, Any] | None = None, cfg: Config | None = None,
                check_errors: bool = True, **kw: Any) -> AsyncIterator[Stack]:
    s = Stack(cfg or config(), connector_mode=mode, connector_options=options or {}, **kw)
    await s.start()
    try:
        yield s
        s.switch.check()
        if check_errors:
            assert s.switch.errors == [], s.switch.errors
    finally:
        await s.close()


def silence_ms(ch, t_from: float, t_to: float) -> float:
    """The longest stretch with nothing heard, on the channel's frame clock, within [t_from, t_to]
    (loop times). A hole is counted in whole ptimes, as the caller's phone would see it."""
    ptime = ch.ptime_ms
    first = int((t_from - ch.t0) * 1000 // ptime)
    last = int((t_to - ch.t0) * 1000 // ptime)
    ticks = [f.tick for f in ch.ear.frames if first <= f.tick <= last]
    edges = [first, *ticks, last]
    return max((b - a - 1) * ptime for a, b in zip(edges, edges[1:])) if len(edges) > 1 else 0.0


def errors(app, kind: str) -> float:
    return app.metrics.errors.labels(kind)._value.get()


def metric(counter) -> float:
    return counter._value.get()


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))
