"""The real FreeSWITCH for the benches: which binary, which ports, and a safe start.

``FREESWITCH_BIN`` names the binary (``just freeswitch`` builds it and prints the line to set).
:func:`start_real_switch` runs :class:`testbed.real_switch.RealSwitch` on a bench's rendered conf
files with its own SIP and ESL ports and RealSwitch's own pick of an RTP range nobody holds, and
returns once a fork can safely be started: seen
here on 1.10.12 (drachtio mod_audio_fork, 2026-12-06), a fork started within ~50 ms of the Event
Socket first answering killed FreeSWITCH with SIGSEGV (2 tries of 3; 0.2 s later 6 of 6 were
fine), so it waits ``SETTLE_S`` more.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Mapping

from testbed.real_switch import RealSwitch

__all__ = ["SETTLE_S", "freeswitch_bin", "MissingSwitch", "start_real_switch"]

SETTLE_S = 1.0


class MissingSwitch(RuntimeError):
    """``FREESWITCH_BIN`` is unset or names no executable."""


def freeswitch_bin() -> str:
    binary = os.environ.get("FREESWITCH_BIN")
    if not binary or not os.access(binary, os.X_OK):
        got = f" (it is {binary!r})" if binary else ""
        raise MissingSwitch(f"the real switch needs FREESWITCH_BIN{got}: run `just freeswitch`, which prints the FREESWITCH_BIN to use")
    return binary


async def start_real_switch(binary: str, rendered: Mapping[str, str], work: Path, *, sip_port: int, esl_port: int,
                            esl_password: str, log_level: str | None = None, fork_module: str = "drachtio") -> RealSwitch:
    fs = RealSwitch(binary, rendered, work, sip_port=sip_port, esl_port=esl_port, esl_password=esl_password,
                    log_level=log_level, fork_module=fork_module)
    await fs.start()
    await asyncio.sleep(SETTLE_S)
    if fs.pid is None:
        raise RuntimeError(f"FreeSWITCH exited right after starting; see {fs.log_file}")
    return fs
