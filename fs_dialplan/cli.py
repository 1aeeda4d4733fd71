"""``python -m fs_dialplan check``: validate a config and print what it routes.

Rendering (``render``, ``schema``) is issue 2's remaining work and not here yet.
"""

from __future__ import annotations

import argparse
import sys

from .errors import ConfigError
from .loader import load_config

__all__ = ["main"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fs_dialplan")
    sub = parser.add_subparsers(dest="command", required=True)
    check = sub.add_parser("check", help="validate the config and list its routes")
    check.add_argument("--config", default="config/voicefork.yaml")
    args = parser.parse_args(argv)
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"{args.config}: {exc.strerror}", file=sys.stderr)
        return 1
    for warning in config.warnings:
        print(warning, file=sys.stderr)
    for r in config.routes:
        match = r.number or f"/{r.pattern}/"
        print(f"{args.config}:{r.line}: route {r.name}: {match} -> connector {r.connector} "
              f"({r.rate // 1000}k, {r.language}, fallback {r.fallback.action}) at {config.fork_server.fork_url(r.name)}")
    print(f"{args.config}: OK, {len(config.routes)} routes, {len(config.connectors)} connectors")
    return 0
