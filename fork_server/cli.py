"""``voicefork-server``: run the fork server on a config file."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys

__all__ = ["main"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="voicefork-server", description=__doc__)
    parser.add_argument("--config", default="config/voicefork.yaml", help="YAML config (default: %(default)s)")
    parser.add_argument("--port", type=int, default=None, help="override fork_server.listen_port (0 = any free port)")
    parser.add_argument("--log-level", default="INFO")
    parser.add_argument("--uvloop", action="store_true", help="run on uvloop if it is installed")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s %(message)s", stream=sys.stderr
    )

    from fs_dialplan import load_config
    from fs_dialplan.errors import ConfigError

    from .app import App
    from .errors import LocalUsageError

    try:
        config = load_config(args.config)
    except (ConfigError, OSError) as exc:
        print(f"voicefork-server: {exc}", file=sys.stderr)
        return 1
    for warning in config.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    try:
        app = App(config, listen_port=args.port)
    except LocalUsageError as exc:
        print(f"voicefork-server: {exc}", file=sys.stderr)
        return 1
    runner = asyncio.run
    if args.uvloop:
        try:
            import uvloop

            runner = uvloop.run
        except ImportError:
            print("voicefork-server: uvloop is not installed; using asyncio", file=sys.stderr)
    try:
        runner(app.serve_forever())
    except KeyboardInterrupt:
        pass
    return 0
