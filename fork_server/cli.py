"""``voicefork-server``: run the fork server on a config file.

``--workers N`` runs N worker processes on one port (SO_REUSEPORT: the kernel spreads new
fork connections over them), so a box with N cores can use all of them; Python runs one
event loop per core at most. A call lives in one worker from its first frame to its end.
Each worker has its own ESL connections and /healthz; ``/metrics`` in any worker is the whole
server's (each worker shares its own in a directory the parent makes and removes; see
fork_server.metrics); the spool is shared safely because every call writes only
under ``<spool>/<uuid>/``. The parent forwards SIGTERM/SIGINT to the workers (each drains),
restarts a worker that dies on its own, and exits with the worst worker exit code.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import gc
import logging
import os
import shutil
import signal
import socket
import sys
import tempfile
import time
from typing import Any, Callable

__all__ = ["main"]

_LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"
_RESTART_DELAY_S = 1.0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="voicefork-server", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="config/voicefork.yaml", help="YAML config (default: %(default)s)")
    parser.add_argument("--port", type=int, default=None, help="override fork_server.listen_port (0 = any free port)")
    parser.add_argument("--log-level", default="INFO")
    parser.add_argument("--uvloop", action="store_true", help="run on uvloop if it is installed")
    parser.add_argument("--workers", type=int, default=1,
                        help="worker processes sharing the listen port (SO_REUSEPORT); default 1")
    parser.add_argument("--esl", choices=("python-esl", "asyncio", "python-esl-unguarded"), default="python-esl",
                        help="ESL client: python-ESL for commands behind the framing guard, events on the event loop (default), "
                             "fork_server.esl_async on the event loop, or python-ESL without the guard (for "
                             "comparison only: a hostile ESL peer can crash it)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format=_LOG_FORMAT, stream=sys.stderr)

    from fs_dialplan import load_config
    from fs_dialplan.errors import ConfigError

    try:
        config = load_config(args.config)
    except (ConfigError, OSError) as exc:
        print(f"voicefork-server: {exc}", file=sys.stderr)
        return 1
    for warning in config.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    if not 1 <= args.workers <= 64:
        print(f"voicefork-server: --workers must be 1..64, got {args.workers}", file=sys.stderr)
        return 1
    if args.workers > 1 and config.outbound is not None:
        # A call's status and its request's metadata live in the process that took the POST;
        # its fork (and GET /v1/calls/<id>) could land in any worker.
        print("voicefork-server: outbound: is served by one process only; run it without --workers", file=sys.stderr)
        return 1
    runner = _runner(args.uvloop)
    port = config.fork_server.listen_port if args.port is None else args.port
    esl = args.esl
    if args.workers == 1:
        return _serve(config, port, runner, worker=None, esl=esl)
    return _supervise(config, port, runner, args.workers, esl)


def _runner(want_uvloop: bool) -> Callable[[Any], Any]:
    if want_uvloop:
        try:
            import uvloop

            return uvloop.run
        except ImportError:
            print("voicefork-server: uvloop is not installed; using asyncio", file=sys.stderr)
    return asyncio.run


def _serve(config: Any, port: int, runner: Callable[[Any], Any], worker: int | None, esl: str = "python-esl",
           metrics_dir: str | None = None) -> int:
    from .app import App
    from .errors import LocalUsageError

    extra: dict[str, Any] = {}
    if esl == "asyncio":
        from .esl_async import AsyncEslClient

        extra["esl_factory"] = AsyncEslClient
    elif esl == "python-esl-unguarded":
        from .esl_client import EslClient

        extra["esl_factory"] = functools.partial(EslClient, guard=False)
    try:
        app = App(config, listen_port=port, **extra)
    except LocalUsageError as exc:
        print(f"voicefork-server: {exc}", file=sys.stderr)
        return 1
    if worker is not None:
        app.intake.reuse_port = True
        app.orphan_events = worker == 0  # one worker runs the fallback of a fork that reached none
        for esl in app.esls.values():
            esl.event_filter = app.wants_event
        if metrics_dir is not None:
            from .metrics import WorkerShare

            app.metrics_share = WorkerShare(metrics_dir, worker)
    # Everything alive now (modules, the config, the app: ~36 000 objects) lives as long as the
    # process: moved out of the collector's generations, a full collection no longer walks it
    # (issue 5: full collections stalled the event loop for 40 ms at 300 calls).
    gc.freeze()
    try:
        runner(app.serve_forever())
    except KeyboardInterrupt:
        pass
    return 0


def _supervise(config: Any, port: int, runner: Callable[[Any], Any], n: int, esl: str) -> int:
    log = logging.getLogger("voicefork.workers")
    host = config.fork_server.listen_host
    # Port 0: pick one now and hold it (bound with SO_REUSEPORT, never listening, so it
    # takes no connections) so that every worker binds the same port.
    holder = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    holder.bind((host, port))
    port = holder.getsockname()[1]
    metrics_dir = tempfile.mkdtemp(prefix="voicefork-metrics-")  # 0700; removed when the parent ends
    children: dict[int, int] = {}  # pid -> worker index
    stopping = False
    worst = 0

    def spawn(index: int) -> None:
        pid = os.fork()
        if pid == 0:  # the worker
            holder.close()
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            signal.signal(signal.SIGINT, signal.SIG_DFL)
            for h in logging.getLogger().handlers:
                h.setFormatter(logging.Formatter(_LOG_FORMAT.replace("%(name)s", f"w{index} %(name)s")))
            code = 1
            try:
                code = _serve(config, port, runner, worker=index, esl=esl, metrics_dir=metrics_dir)
            finally:
                logging.shutdown()
                os._exit(code)
        children[pid] = index

    def forward(signum: int, _frame: Any) -> None:
        nonlocal stopping
        stopping = True
        for pid in list(children):
            try:
                os.kill(pid, signum)
            except ProcessLookupError:
                pass

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    for i in range(n):
        spawn(i)
    log.info("%d workers on %s:%d (SO_REUSEPORT)", n, host, port)
    while children:
        try:
            pid, status = os.wait()
        except ChildProcessError:
            break
        index = children.pop(pid, None)
        if index is None:
            continue
        code = os.waitstatus_to_exitcode(status)
        worst = max(worst, code if code >= 0 else 128 - code)
        if not stopping:
            log.error("worker %d (pid %d) exited with %d; restarting in %.0f s", index, pid, code, _RESTART_DELAY_S)
            time.sleep(_RESTART_DELAY_S)
            if not stopping:
                spawn(index)
    holder.close()
    shutil.rmtree(metrics_dir, ignore_errors=True)
    return 0 if stopping and worst == 0 else worst
