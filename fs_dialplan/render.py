"""Config → FreeSWITCH XML (``templates/*.j2``), checked back after rendering.

One Jinja environment with ``autoescape=True`` (``select_autoescape`` does not match
``*.xml.j2``) and ``StrictUndefined``. Every value that lands in the XML passes
:func:`_safe` first: no ``${``/``$${`` (FreeSWITCH would expand them), no control
characters, and for values that end up as application arguments split on spaces (REF "How
arguments are parsed") no spaces or quotes either. Secrets are read from the environment
here, at render time, and are checked the same way.

The fork action is the form REF says works: ``fork_result=${uuid_audio_fork(${uuid} start
<url> mono <8k|16k> <metadata>)}`` with compact JSON metadata holding only the route name and
``${uuid}``; caller-controlled values are never rendered (the fork server reads them over ESL).
"""

from __future__ import annotations

import json
import os
import re
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Mapping

from jinja2 import Environment, FileSystemLoader, StrictUndefined

from .errors import RenderError
from .model import Config, Route

__all__ = ["render", "write_tree", "fork_action_data", "DIALPLAN_FILE", "TEMPLATES"]

TEMPLATES = Path(__file__).resolve().parent.parent / "templates"
DIALPLAN_FILE = "dialplan/public/50_voicefork.xml"
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_ARG_UNSAFE = re.compile(r"[\s'\"\\]")

_env = Environment(
    loader=FileSystemLoader(str(TEMPLATES)),
    autoescape=True,
    undefined=StrictUndefined,
    keep_trailing_newline=True,
    trim_blocks=False,
)


def _safe(value: str, what: str, *, argument: bool = False) -> str:
    if "${" in value or "$${" in value:
        raise RenderError(f"{what}: {value!r} contains '${{', which FreeSWITCH would expand")
    if _CONTROL.search(value):
        raise RenderError(f"{what}: control characters are not allowed")
    if argument and _ARG_UNSAFE.search(value):
        raise RenderError(f"{what}: {value!r} contains a space, quote or backslash, which FreeSWITCH's argument parser would split or eat")
    return value


def _secret(env: Mapping[str, str], name: str, what: str) -> str:
    value = env.get(name)
    if not value:
        raise RenderError(f"{what}: environment variable {name} is not set (secrets are never defaulted)")
    if value == "ClueCon":
        raise RenderError(f"{what}: {name} holds FreeSWITCH's well-known default password; choose another")
    return _safe(value, f"{what} (value of {name})", argument=True)


def rate_token(rate: int) -> str:
    return {8000: "8k", 16000: "16k"}[rate]


def fork_metadata(route: Route) -> str:
    """Compact JSON, no spaces anywhere (REF: a space splits the arguments)."""
    return json.dumps({"route": route.name, "uuid": "${uuid}"}, separators=(",", ":"))


def fork_action_data(config: Config, route: Route) -> str:
    url = _safe(config.fork_server.fork_url(route.name), f"routes[{route.name}] fork URL", argument=True)
    return f"fork_result=${{uuid_audio_fork(${{uuid}} start {url} mono {rate_token(route.rate)} {fork_metadata(route)})}}"


def _route_view(config: Config, r: Route) -> dict[str, object]:
    where = f"routes[{r.name}]"
    expression = f"^{re.escape(r.number)}$" if r.number else (r.pattern or "")
    return {
        "name": _safe(r.name, f"{where}.name", argument=True),
        "expression": _safe(expression, f"{where}.pattern"),
        "fork_url": _safe(config.fork_server.fork_url(r.name), f"{where} fork URL", argument=True),
        "rate": rate_token(r.rate),
        "metadata": fork_metadata(r),
        "max_duration_s": r.max_duration_s,
        "greeting": _safe(r.greeting, f"{where}.greeting", argument=True) if r.greeting else None,
    }


def render(config: Config, env: Mapping[str, str] = os.environ) -> dict[str, str]:
    """Every file of the FreeSWITCH conf tree, by relative path, checked."""
    auth = None
    if config.fork_server.auth is not None:
        a = config.fork_server.auth
        auth = {
            "username": _safe(a.username, "fork_server.auth.username", argument=True),
            "password": _secret(env, a.password_env, "fork_server.auth.password_env"),
        }
    fs = config.freeswitch
    routes = [_route_view(config, r) for r in config.routes]
    trunks = []
    for t in config.trunks:
        where = f"trunks[{t.name}]"
        trunks.append({
            "name": _safe(t.name, f"{where}.name", argument=True),
            "proxy": _safe(t.proxy, f"{where}.proxy", argument=True),
            "realm": _safe(t.realm, f"{where}.realm", argument=True) if t.realm else None,
            "username": _safe(t.username, f"{where}.username", argument=True) if t.username else None,
            "password": _secret(env, t.password_env, f"{where}.password_env") if t.password_env else None,
            "register": t.register,
            "transport": _safe(t.transport, f"{where}.transport", argument=True),
            "caller_id_number": _safe(t.caller_id_number, f"{where}.caller_id_number", argument=True) if t.caller_id_number else None,
            "acl_cidrs": [_safe(c, f"{where}.acl_cidrs", argument=True) for c in t.acl_cidrs],
        })
    source = os.path.basename(config.source)
    files = {
        DIALPLAN_FILE: _env.get_template("dialplan.xml.j2").render(source=source, routes=routes, auth=auth),
        "autoload_configs/event_socket.conf.xml": _env.get_template("event_socket.conf.xml.j2").render(
            source=source,
            listen_ip=_safe(fs.esl_listen_ip, "freeswitch.esl_listen_ip", argument=True),
            port=fs.esl_port,
            password=_secret(env, fs.esl_password_env, "freeswitch.esl_password_env"),
            acl=_safe(fs.esl_acl, "freeswitch.esl_acl", argument=True) if fs.esl_acl else None,
        ),
        "autoload_configs/acl.conf.xml": _env.get_template("acl.conf.xml.j2").render(source=source, trunks=trunks),
        "autoload_configs/modules.conf.xml": _env.get_template("modules.conf.xml.j2").render(),
        "README.txt": _env.get_template("README.txt.j2").render(
            source=source, routes=[r.name for r in config.routes], trunks=[t["name"] for t in trunks]
        ),
    }
    for t in trunks:
        files[f"sip_profiles/external/{t['name']}.xml"] = _env.get_template("gateway.xml.j2").render(source=source, t=t)
    verify(config, files, auth is not None)
    return dict(sorted(files.items()))


def verify(config: Config, files: Mapping[str, str], auth: bool) -> None:
    """Parse every XML file back and check the dialplan is exactly what was intended."""
    for path, text in files.items():
        if path.endswith(".xml"):
            try:
                ET.fromstring(text.encode())
            except ET.ParseError as e:
                raise RenderError(f"{path}: rendered XML is not well-formed: {e}") from None
    root = ET.fromstring(files[DIALPLAN_FILE].encode())
    exts = {e.get("name"): e for e in root.iter("extension")}
    if len(exts) != len(config.routes):
        raise RenderError(f"{DIALPLAN_FILE}: {len(exts)} extensions for {len(config.routes)} routes")
    for r in config.routes:
        ext = exts.get(f"voicefork_{r.name}")
        if ext is None:
            raise RenderError(f"{DIALPLAN_FILE}: no extension for route {r.name}")
        actions = [(a.get("application"), a.get("data")) for a in ext.iter("action")]
        apps = [a for a, _ in actions]
        expected = ["answer", "set", "verbose_events", *(["set", "set"] if auth else []), "set"]
        if apps[: len(expected)] != expected or apps[-1] != "park":
            raise RenderError(f"{DIALPLAN_FILE}: route {r.name}: unexpected action order {apps}")
        fork = actions[len(expected) - 1][1]
        if fork != fork_action_data(config, r):
            raise RenderError(f"{DIALPLAN_FILE}: route {r.name}: fork action is {fork!r}")
        if actions[1][1] != f"voicefork_route={r.name}":
            raise RenderError(f"{DIALPLAN_FILE}: route {r.name}: voicefork_route not set first")
        # Only our own ${...}: the uuid twice and the API call once.
        for _, data in actions:
            if data and data != fork and "${" in data:
                raise RenderError(f"{DIALPLAN_FILE}: route {r.name}: unexpected expansion in {data!r}")


def write_tree(files: Mapping[str, str], out_dir: str | Path) -> list[Path]:
    out = Path(out_dir)
    written = []
    for rel, text in files.items():
        p = out / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        tmp = p.with_suffix(p.suffix + ".tmp")
        tmp.write_text(text, encoding="utf-8")
        os.chmod(tmp, 0o640)  # holds secrets
        tmp.replace(p)
        written.append(p)
    return written
