"""``python -m testbed.fork_process``: the real fork server in its own process, wired to a Stack.

A deployment runs the fork server as its own process next to FreeSWITCH; in one process the
emulator, the connector and the fork server share one event loop and one GIL, and a load
test then measures that sharing more than the fork server. :class:`testbed.stack.Stack` with
``fork_server="process"`` starts this module, which loads the same YAML, applies the same
wiring as the in-process stack (:func:`testbed.stack.wire`), binds port 0 and prints
``LISTENING <port>`` on stdout. Secrets come from the environment. SIGTERM drains and exits;
SIGUSR1 prints ``TASKS <n>`` (its asyncio tasks) on stdout; SIGUSR2 runs glibc's
``malloc_trim(0)`` and prints ``TRIMMED <0|1>`` (whether it could), so the churn can tell
memory that was freed but kept by the allocator from memory still in use.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
import sys

from fork_server.app import App
from fs_dialplan import load_config

from .stack import esl_factory, malloc_trim, wire

__all__ = ["main"]


async def _serve(args: argparse.Namespace) -> None:
    w = json.loads(args.wiring)
    config = wire(load_config(args.config), fork_port=0, **w)
    app = App(config, env=os.environ, listen_port=0, esl_factory=esl_factory(args.esl))
    port = await app.start()
    print(f"LISTENING {port}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    # The churn test (testbed.churn) counts this process's asyncio tasks: SIGUSR1 prints them.
    loop.add_signal_handler(signal.SIGUSR1, lambda: print(f"TASKS {len(asyncio.all_tasks())}", flush=True))
    loop.add_signal_handler(signal.SIGUSR2, lambda: print(f"TRIMMED {int(malloc_trim())}", flush=True))
    await stop.wait()
    await app.drain(args.drain)
    await app.stop()


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m testbed.fork_process", description=__doc__.splitlines()[0])
    ap.add_argument("--config", required=True)
    ap.add_argument("--wiring", required=True, help="JSON keyword arguments of testbed.stack.wire")
    ap.add_argument("--esl", choices=("python-esl", "asyncio"), default="python-esl",
                    help="ESL client, as voicefork-server --esl")
    ap.add_argument("--drain", type=float, default=2.0)
    ap.add_argument("--log-level", default="WARNING")
    args = ap.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        stream=sys.stderr)
    asyncio.run(_serve(args))


if __name__ == "__main__":
    main()
