"""The capacity bench's voicefork config: one YAML for the fork server, and the FreeSWITCH conf
files rendered from the same YAML for the real switch (``fs_dialplan.render``, as an operator
would), so both switches run what the config says.

Two routes: ``bench16`` (forked mono 16k) and ``bench8`` (mono 8k); calls alternate between them.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path
from typing import NamedTuple

from fs_dialplan import load_config
from fs_dialplan.render import DIALPLAN_FILE, render

__all__ = ["BenchRoute", "ROUTES", "ESL_PASSWORD", "FORK_AUTH", "ENV", "write_config", "render_conf", "RouteFlags",
           "route_flags", "dialplan_variant", "KEEP", "DIALPLAN_FILE"]


class BenchRoute(NamedTuple):
    name: str
    rate: int
    number: str  # the dialled number (the real switch's dialplan matches it)


ROUTES = [BenchRoute("bench16", 16000, "+15550000016"), BenchRoute("bench8", 8000, "+15550000008")]
ESL_PASSWORD = "bench-esl-secret"
FORK_AUTH = ("freeswitch", "bench-fork-secret")
ENV = {"BENCH_ESL_PASSWORD": ESL_PASSWORD, "BENCH_FORK_PASSWORD": FORK_AUTH[1]}

CONFIG = """\
freeswitch:
  esl_host: 127.0.0.1
  esl_port: {esl_port}
  esl_password_env: BENCH_ESL_PASSWORD
  temp_dir: {tmp}
fork_server:
  public_url: ws://127.0.0.1:{fork_port}
  listen_host: 127.0.0.1
  listen_port: {fork_port}
  auth:
    username: {user}
    password_env: BENCH_FORK_PASSWORD
  drain_timeout: 5s
connectors:
  bench:
    url: {connector}
    connect_timeout: 5s
{ping}defaults:
  connector: bench
  language: en-US
  fallback:
    action: hangup
routes:
{routes}playback:
  spool_dir: {spool}
  freeswitch_spool_dir: {spool}
  command: sendmsg
  transport: {transport}
"""


def write_config(work: Path, *, esl_port: int, connector_url: str, spool: Path, fork_port: int = 8099,
                 ping_interval: float | None = None, transport: str = "file") -> Path:
    """``<work>/voicefork-bench.yaml``; ``fork_port`` is the one the rendered dialplan forks to."""
    routes = "".join(f'  - name: {r.name}\n    number: "{r.number}"\n    rate: {r.rate // 1000}k\n' for r in ROUTES)
    path = work / "voicefork-bench.yaml"
    path.write_text(CONFIG.format(
        esl_port=esl_port, tmp=work, fork_port=fork_port, user=FORK_AUTH[0], connector=connector_url, spool=spool,
        ping=f"    ping_interval: {ping_interval}s\n" if ping_interval else "", routes=routes, transport=transport,
    ))
    return path


def render_conf(config_path: Path) -> dict[str, str]:
    """The FreeSWITCH files for this config, rendered and checked by ``fs_dialplan``."""
    return render(load_config(str(config_path)), ENV)


class RouteFlags(NamedTuple):
    """What a route's extension in the rendered dialplan does to the channel, as far as the
    emulated switch cares: ``verbose_events`` (event sizes) and a jitter buffer (``jitterbuffer_msec``
    set before ``answer``; it changes what a playback start does to the caller's frames)."""

    verbose_events: bool
    jitter_ms: int | None


def route_flags(rendered: dict[str, str]) -> dict[str, RouteFlags]:
    root = ET.fromstring(rendered[DIALPLAN_FILE])
    out: dict[str, RouteFlags] = {}
    for ext in root.iter("extension"):
        name = ext.get("name", "")
        if not name.startswith("voicefork_"):
            continue
        verbose, jitter = False, None
        for action in ext.iter("action"):
            app, data = action.get("application"), action.get("data", "")
            if app == "verbose_events":
                verbose = True
            elif app == "set" and data.startswith("jitterbuffer_msec="):
                try:
                    jitter = int(data.split("=", 1)[1].split(":")[0])
                except ValueError:
                    jitter = None
        out[name[len("voicefork_"):]] = RouteFlags(verbose, jitter)
    return out


KEEP = object()  # dialplan_variant: leave this as rendered


def dialplan_variant(rendered: dict[str, str], *, verbose_events: bool | object = KEEP, jitter_ms: int | None | object = KEEP,
                     routes: set[str] | None = None) -> dict[str, str]:
    """The rendered files with the extensions of ``routes`` (default: all) made to run (or not)
    ``verbose_events`` and a jitter buffer of ``jitter_ms`` (None: none; ``KEEP``: as rendered),
    for measuring what each does (:mod:`testbed.bench.fsprobe`, ``capacity --no-jitter-buffer``);
    the rest of each extension is left as rendered."""
    root = ET.fromstring(rendered[DIALPLAN_FILE])
    for ext in root.iter("extension"):
        name = ext.get("name", "")
        if routes is not None and name[len("voicefork_"):] not in routes:
            continue
        for cond in ext.iter("condition"):
            for a in list(cond):
                app, data = a.get("application"), a.get("data", "")
                if (verbose_events is not KEEP and app == "verbose_events") or (
                        jitter_ms is not KEEP and app == "set" and data.startswith("jitterbuffer_msec=")):
                    cond.remove(a)
            actions = list(cond)
            answer = next((i for i, a in enumerate(actions) if a.get("application") == "answer"), 0)
            if jitter_ms is not KEEP and jitter_ms is not None:  # before answer, where the RTP session is made
                cond.insert(answer, ET.Element("action", {"application": "set", "data": f"jitterbuffer_msec={jitter_ms}"}))
                answer += 1
            if verbose_events is True:
                cond.insert(answer + 1, ET.Element("action", {"application": "verbose_events"}))
    out = dict(rendered)
    out[DIALPLAN_FILE] = '<?xml version="1.0" encoding="utf-8"?>\n' + ET.tostring(root, encoding="unicode")
    return out
