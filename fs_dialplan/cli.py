"""``python -m fs_dialplan check|render|schema``: validate a config; render FreeSWITCH's XML
from it; write the config's JSON Schema.

``check`` validates the config AND renders it in memory (every file parsed back and
verified) without writing anything. ``render`` writes the tree. Secrets come from the
environment; ``check`` substitutes placeholders for missing ones, ``render`` refuses.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

from .errors import ConfigError, RenderError
from .loader import load_config
from .render import rate_name, render, write_tree

__all__ = ["main"]


def _placeholder_env(config) -> dict[str, str]:  # type: ignore[no-untyped-def]
    """Stand-in secrets so ``check`` can render without them (never written anywhere)."""
    env = dict(os.environ)
    names = [sw.esl_password_env for sw in config.all_switches()]
    if config.fork_server.auth is not None:
        names.append(config.fork_server.auth.password_env)
    names += [t.password_env for t in config.trunks if t.password_env]
    for name in names:
        env.setdefault(name, "check-placeholder")
    return env


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fs_dialplan")
    sub = parser.add_subparsers(dest="command", required=True)
    check = sub.add_parser("check", help="validate the config and its rendered XML; write nothing")
    check.add_argument("--config", default="config/voicefork.yaml")
    rend = sub.add_parser("render", help="write the FreeSWITCH conf tree")
    rend.add_argument("--config", default="config/voicefork.yaml")
    rend.add_argument("--out", default="build/fs-conf")
    sch = sub.add_parser("schema", help="write the config's JSON Schema (for editors with a YAML language server)")
    sch.add_argument("--out", default="-", help="file to write, - for stdout")
    args = parser.parse_args(argv)
    if args.command == "schema":
        return _schema(args.out)
    t0 = time.perf_counter()
    try:
        config = load_config(args.config)
        files = render(config, _placeholder_env(config) if args.command == "check" else os.environ)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 1
    except RenderError as exc:
        print(f"{args.config}: cannot render: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"{args.config}: {exc.strerror}", file=sys.stderr)
        return 1
    for warning in config.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    for r in config.routes:
        match = r.number or f"/{r.pattern}/"
        print(f"{args.config}:{r.line}: route {r.name}: {match} -> connector {r.connector} "
              f"({rate_name(r.rate)}, {r.language}, fallback {r.fallback.action}) at {config.fork_server.fork_url(r.name)}")
    for sw in config.switches:
        print(f"{args.config}: switch {sw.name}: ESL {sw.esl_host}:{sw.esl_port}, conf tree {sw.name}/"
              + (f", dispatched to {sw.sip_uri}" if sw.sip_uri else ""))
    if config.fork_server.haproxy is not None:
        h = config.fork_server.haproxy
        print(f"{args.config}: haproxy.cfg: {h.bind} -> {', '.join(h.servers)} (health /healthz every {h.check_interval_s:g} s)")
    for t in config.trunks:
        print(f"{args.config}:{t.line}: trunk {t.name}: {t.proxy} ({t.transport}{', registers' if t.register else ''}), "
              f"{len(t.acl_cidrs)} signalling CIDRs in ACL voicefork_trunks")
    ms = (time.perf_counter() - t0) * 1000
    if args.command == "render":
        for path in write_tree(files, args.out):
            print(f"wrote {path}")
        print(f"{args.config}: rendered {len(files)} files for {len(config.routes)} routes into {args.out} in {ms:.0f} ms")
    else:
        print(f"{args.config}: OK, {len(config.routes)} routes, {len(config.connectors)} connectors, "
              f"{len(config.trunks)} trunk{'s' if len(config.trunks) != 1 else ''}; "
              f"{len(files)} files render and verify ({ms:.0f} ms)")
    return 0


def _schema(out: str) -> int:
    from pathlib import Path

    from .schema import schema_text

    text = schema_text()
    if out == "-":
        sys.stdout.write(text)
        return 0
    path = Path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    print(f"wrote {path}")
    return 0
