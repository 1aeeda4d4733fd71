"""``python -m testbed.connector``: run the reference voice connector until Ctrl-C / SIGTERM.

    python -m testbed.connector --mode script --port 8765 --hangup-after-playback
    python -m testbed.connector --mode echo --port 8765
    python -m testbed.connector --mode sink --port 8765 --tts-duty 0.4 --clear-every 5
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
from typing import Any

from .modes import make_options
from .server import ConnectorServer

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m testbed.connector", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mode", choices=("script", "echo", "sink"), default="script")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=8765, help="0 = any free port (default: %(default)s)")
    ap.add_argument("--token-env", metavar="NAME",
                    help="require 'Authorization: Bearer <token>', the token read from this environment variable")
    ap.add_argument("--no-subprotocol", action="store_true", help="never select the voicefork.v1 subprotocol")
    ap.add_argument("--log-level", default="INFO")
    tts = ap.add_argument_group("TTS pacing (all modes)")
    tts.add_argument("--chunk-ms", type=int, help="TTS message length (default 100)")
    tts.add_argument("--speed", type=float, help="TTS sent this many times real time (script/echo 3, sink 1.5)")
    vad = ap.add_argument_group("caller VAD (echo, script)")
    vad.add_argument("--vad-threshold-dbfs", type=float, help="speech above this frame level (default -40)")
    vad.add_argument("--vad-hangover-ms", type=int, help="end of speech after this much quiet (default 400)")
    vad.add_argument("--vad-onset-ms", type=int, help="speech confirmed after this much loud audio (default 40)")
    sc = ap.add_argument_group("script mode")
    sc.add_argument("--wav", help="WAV to speak (default tests/data/bot_answer.wav); also the sink's burst source")
    sc.add_argument("--rate", type=int, help="rate the WAV is streamed at (default 24000)")
    sc.add_argument("--answer-delay-ms", type=int, help="default 200")
    sc.add_argument("--mark-every-ms", type=int, help="a seg-<n> mark after this much audio (default 1000)")
    sc.add_argument("--hangup-after-playback", action="store_true", default=None)
    sc.add_argument("--transfer-to", metavar="TARGET")
    sc.add_argument("--send-dtmf", metavar="DIGITS")
    sc.add_argument("--no-bargein", dest="bargein", action="store_false", default=None)
    sc.add_argument("--speak-after-first-utterance", action="store_true", default=None)
    sk = ap.add_argument_group("sink mode")
    sk.add_argument("--tts-duty", type=float, help="share of the time the bot speaks, 0..1 (default 0)")
    sk.add_argument("--tts-burst-ms", type=int, help="length of each spoken burst (default 2000)")
    sk.add_argument("--clear-every", type=int, help="cut every n-th burst with a clear (default 0: never)")
    return ap


_MODE_OPTIONS = {
    "script": ("wav", "rate", "answer_delay_ms", "mark_every_ms", "hangup_after_playback", "transfer_to",
               "send_dtmf", "bargein", "speak_after_first_utterance"),
    "echo": (),
    "sink": ("wav", "tts_duty", "tts_burst_ms", "clear_every"),
}
_COMMON = ("chunk_ms", "speed", "vad_threshold_dbfs", "vad_hangover_ms", "vad_onset_ms")


async def _run(server: ConnectorServer) -> None:
    await server.start()
    print(f"connector {server.mode} listening on {server.url()}", file=sys.stderr, flush=True)
    done = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, done.set)
    try:
        await done.wait()
    finally:
        await server.close()


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s %(message)s",
                        stream=sys.stderr)
    given = vars(args)
    chosen: dict[str, Any] = {}
    for name in _COMMON + _MODE_OPTIONS[args.mode]:
        if given.get(name) is not None:
            chosen[name] = given[name]
    ignored = [n for n in {n for opts in _MODE_OPTIONS.values() for n in opts} - set(_MODE_OPTIONS[args.mode])
               if given.get(n) is not None]
    if ignored:
        print(f"connector: ignoring option(s) not used by mode {args.mode}: {', '.join(sorted(ignored))}",
              file=sys.stderr)
    token = None
    if args.token_env:
        token = os.environ.get(args.token_env)
        if not token:
            print(f"connector: environment variable {args.token_env} is not set", file=sys.stderr)
            return 2
    try:
        options = make_options(args.mode, **chosen)
        server = ConnectorServer(args.mode, host=args.host, port=args.port, token=token,
                                 subprotocol=None if args.no_subprotocol else "voicefork.v1", options=options)
    except (ValueError, TypeError, OSError) as exc:
        print(f"connector: {exc}", file=sys.stderr)
        return 2
    try:
        asyncio.run(_run(server))
    except OSError as exc:
        print(f"connector: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
