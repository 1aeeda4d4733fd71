"""Config → FreeSWITCH XML (``templates/*.j2``), checked back after rendering.

One Jinja environment with ``autoescape=True`` (``select_autoescape`` does not match
``*.xml.j2``) and ``StrictUndefined``. Every value that lands in the XML passes
:func:`_safe` first: no ``${``/``$${`` (FreeSWITCH would expand them), no ``$1``.. (the
dialplan substitutes regex captures into action data), no control characters, and for values
that end up as application arguments split on spaces (REF "How arguments are parsed") no
spaces, quotes or backslashes either. Secrets are read from the environment here, at render
time, and are checked the same way. Text in XML comments passes :func:`_comment_text`.

The fork action is the form REF says works: ``fork_result=${uuid_audio_fork(${uuid} start
<url> mono <rate> <metadata>)}`` with compact JSON metadata holding only the route name,
``${uuid}`` and the fork rate; caller-controlled values are never rendered (the fork server reads
them over ESL). A route with ``rate: auto`` forks at the caller's codec rate, picked by the switch
at answer (``cond`` on ``read_rate``: 8k on G.711, 16k on wideband codecs).

Every extension sets ``jitterbuffer_msec=20`` before ``answer``. Measured on a real 1.10.12
(2026-12-06): without a jitter buffer every ``playback`` start and every return to ``park``
flushes the RTP socket (``switch_channel_audio_sync`` -> ``rtp_flush_read_buffer``), and the
fork gets 2 frames of silence in place of the caller each time (9-16 % of the caller's frames
while the bot talks); with a jitter buffer the flush is skipped (``do_flush``), and a 20 ms one
lost none of 300 frames over 3 playbacks, with no added latency (24 ms caller-to-fork against
30 without); 40 ms lost 5 (its reset drops what it holds) and added 18 ms.

mod_audio_fork's Basic-auth credentials are global variables (``<X-PRE-PROCESS cmd="set">`` in
the dialplan file), never channel variables: the module reads them with
``switch_channel_get_variable_dup``, which falls back to globals (REF "Event sizes"), and a
channel variable rides in every event of the call (153 times in a 7.5 s call).

Trunks render as sofia gateways (``sip_profiles/external/<trunk>.xml``) and one ACL list
``voicefork_trunks`` of their signalling CIDRs. REF is silent on SIP; the gateway params
follow FreeSWITCH's sofia.c ``parse_gateways`` (source): ``register-transport`` also sets the
transport of calls out, ``caller-id-in-from=false`` puts ``from-user`` in From, ``context`` and
``extension=auto_to_user`` route calls that come in through a registration to the dialled
number in ``public``.

A route with ``recording: true`` sets ``RECORD_STEREO=true`` and runs ``record_session`` after
``answer``: switch_ivr_async.c (1.10.12) reads RECORD_STEREO when the recording starts and makes
the file's directory itself (``switch_dir_make_recursive``); the stereo file has the channel's
read stream (the caller) left and its write stream (what the caller hears) right, which the
real-switch test checks. The path is set first into ``voicefork_recording`` (the fork server
reads it back with uuid_dump for the sidecar and the connector's ``stop``); its fields are
``${strftime(...)}``, the route name and ``${uuid}``, never a caller-controlled value.

``max_calls`` (a route's, and ``limits.max_calls`` over all routes) renders FreeSWITCH's
``limit hash voicefork <resource> <max> <where>`` before ``answer`` (mod_dptools
limit_function, 1.10.12: the count goes up first and a call over the max is sent on at once:
``!USER_BUSY`` hangs it up, which is a 486 before answer; anything else is
``switch_ivr_session_transfer(<where>, <dialplan>, <context>)``; mod_hash gives the count back
when the channel is destroyed). ``busy: play`` transfers to a rendered extension
``voicefork_busy_<route>`` that only a call of that route reaches (a second condition on
``${voicefork_route}``, which no caller can set), which answers, plays and hangs up.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Mapping, NamedTuple

from jinja2 import Environment, FileSystemLoader, StrictUndefined

from .errors import RenderError
from .model import Config, FreeswitchSettings, RecordingSettings, Route, Trunk
from .spec import AUTO_RATE, RECORDING_FILE

__all__ = ["render", "write_tree", "verify", "switch_tree", "haproxy_cfg", "dispatcher_list", "HAPROXY_FILE", "DISPATCHER_FILE", "fork_action_data", "gateway_params", "rate_name", "DIALPLAN_FILE",
           "ACL_FILE", "ACL_LIST", "TRUNK_CONTEXT", "OUTBOUND_FILE", "OUTBOUND_CONTEXT", "TEMPLATES", "JITTER_BUFFER_MS", "AUTO_RATE_DATA", "AUTH_GLOBALS"]

TEMPLATES = Path(__file__).resolve().parent.parent / "templates"
DIALPLAN_FILE = "dialplan/public/50_voicefork.xml"
# Outbound calls (config `outbound:`): a context of its own, which no SIP profile routes into.
# FreeSWITCH's stock freeswitch.xml includes dialplan/*.xml into the dialplan section.
OUTBOUND_FILE = "dialplan/voicefork_outbound.xml"
OUTBOUND_CONTEXT = "voicefork_outbound"
ACL_FILE = "autoload_configs/acl.conf.xml"
ESL_FILE = "autoload_configs/event_socket.conf.xml"
MODULES_FILE = "autoload_configs/modules.conf.xml"
HAPROXY_FILE = "haproxy.cfg"
DISPATCHER_FILE = "dispatcher.list"
ACL_LIST = "voicefork_trunks"
TRUNK_CONTEXT = "public"  # where 50_voicefork.xml lives
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff\ufffe\uffff]")  # and not XML 1.0 characters
_ARG_UNSAFE = re.compile(r"[\s'\"\\]")
_CAPTURE_REF = re.compile(r"\$[0-9]")
_COMMENT_UNSAFE = re.compile(r"[^A-Za-z0-9_.+-]")


def _comment_text(value: object) -> str:
    """Text for inside ``<!-- -->``: no ``--`` (ends a comment), no markup, no ``$${``."""
    return re.sub(r"-{2,}", "-", _COMMENT_UNSAFE.sub("_", str(value)))


_env = Environment(
    loader=FileSystemLoader(str(TEMPLATES)),
    autoescape=True,
    undefined=StrictUndefined,
    keep_trailing_newline=True,
    trim_blocks=False,
)
_env.filters["comment"] = _comment_text


def _safe(value: str, what: str, *, argument: bool = False, expression: bool = False) -> str:
    if "${" in value or "$${" in value:
        raise RenderError(f"{what}: {value!r} contains '${{', which FreeSWITCH would expand")
    if _CONTROL.search(value):
        raise RenderError(f"{what}: control characters are not allowed")
    if not expression and _CAPTURE_REF.search(value):
        raise RenderError(f"{what}: {value!r} contains '$' and a digit, which the dialplan replaces with a regex capture")
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


JITTER_BUFFER_MS = 20  # see the module docstring: 20 lost no caller frame at playback starts, 40 did
FORK_RATE_VAR = "voicefork_fork_rate"
# The switch's pick for rate: auto, at answer: 8k on G.711 (read_rate 8000), 16k above.
AUTO_RATE_DATA = f"{FORK_RATE_VAR}=${{cond(${{read_rate}} > 8000 ? 16k : 8k)}}"


def rate_token(rate: int) -> str:
    """What ``uuid_audio_fork start`` gets for the route's rate (auto: the variable set at answer)."""
    if rate == AUTO_RATE:
        return f"${{{FORK_RATE_VAR}}}"
    return {8000: "8k", 16000: "16k"}[rate]


def rate_name(rate: int) -> str:
    return "auto" if rate == AUTO_RATE else rate_token(rate)


def fork_metadata(route: Route, switch: str | None = None, outbound: bool = False) -> str:
    """Compact JSON, no spaces anywhere (REF: a space splits the arguments). ``rate`` tells the
    fork server what the switch picked for a ``rate: auto`` route; ``switch`` (several switches
    only) which switch owns the call, from the config, so its ESL commands go there;
    ``direction`` (the outbound extensions only) that the call was originated, so any fork
    server that gets the fork knows it, not only the one that originated it."""
    doc = {"route": route.name, "uuid": "${uuid}", "rate": rate_token(route.rate)}
    if switch is not None:
        doc["switch"] = switch
    if outbound:
        doc["direction"] = "outbound"
    return json.dumps(doc, separators=(",", ":"))


# playback.transport: stream (the jambonz mod_audio_fork, measured on 1.10.12 on 2026-12-06): its
# bidirectional arguments are read only with all 10 tokens, the bugname included; its audio is
# played at the channel's own rate (bit-exact at read_rate, broken at any other); and it plays
# only while the channel writes frames, which a parked channel does with send_silence_when_idle.
STREAM_ARGS = "true true ${read_rate}"
STREAM_BUGNAME = "audio_fork"
STREAM_IDLE_DATA = "send_silence_when_idle=-1"


RECORD_STEREO_DATA = "RECORD_STEREO=true"
RECORDING_VAR = "voicefork_recording"
RECORD_SESSION_DATA = f"${{{RECORDING_VAR}}}"
# The switch's clock names the file (strftime is mod_dptools' API; local time of the switch).
_RECORDING_FIELD_DATA = {"date": "${strftime(%Y-%m-%d)}", "time": "${strftime(%H%M%S)}", "uuid": "${uuid}"}


def recording_path_data(rec: RecordingSettings, route: Route) -> str:
    """The ``set`` data naming the route's recording; every field one the caller cannot touch."""
    fields = re.findall(r"\{([^{}]*)\}", rec.file)
    if not re.fullmatch(RECORDING_FILE, rec.file) or any(f not in (*_RECORDING_FIELD_DATA, "route") for f in fields):
        raise RenderError(f"recording.file: {rec.file!r} is not a .wav path of the fields {sorted(_RECORDING_FIELD_DATA)} and route")
    _safe(f"{rec.dir}/{rec.file}", "recording.dir and recording.file", argument=True)
    name = rec.file.replace("{route}", _safe(route.name, f"routes[{route.name}].name", argument=True))
    for field, value in _RECORDING_FIELD_DATA.items():
        name = name.replace("{" + field + "}", value)
    return f"{RECORDING_VAR}={rec.dir.rstrip('/')}/{name}"


LIMIT_REALM = "voicefork"
LIMIT_ALL = "all_routes"  # the resource of limits.max_calls (route resources are route_<name>)
BUSY_PREFIX = "voicefork_busy_"


def busy_where(route: Route) -> str:
    """The ``limit`` application's arguments after ``<max>``: where a call over it goes."""
    b = route.busy
    if b.action == "play":
        return f"{BUSY_PREFIX}{route.name} XML {TRUNK_CONTEXT}"
    if b.action == "transfer":
        return f"{_safe(str(b.target), f'routes[{route.name}].busy.target', argument=True)} XML default"
    return "!USER_BUSY"


def limit_actions(config: Config, route: Route) -> list[tuple[str, str]]:
    out = []
    where = busy_where(route)
    if config.max_calls:
        out.append(("limit", f"hash {LIMIT_REALM} {LIMIT_ALL} {config.max_calls} {where}"))
    if route.max_calls:
        out.append(("limit", f"hash {LIMIT_REALM} route_{route.name} {route.max_calls} {where}"))
    return out


def busy_extension(config: Config, route: Route) -> list[tuple[str, str | None]] | None:
    """The actions of the route's busy extension (busy: play under a limit), or None."""
    if route.busy.action != "play" or not (route.max_calls or config.max_calls):
        return None
    return [("answer", None), ("playback", _safe(str(route.busy.file), f"routes[{route.name}].busy.file", argument=True)),
            ("hangup", "USER_BUSY")]


def fork_action_data(config: Config, route: Route, switch: str | None = None, outbound: bool = False) -> str:
    url = _safe(config.fork_server.fork_url(route.name), f"routes[{route.name}] fork URL", argument=True)
    meta = fork_metadata(route, switch, outbound)
    if config.playback.transport == "stream":
        args = f"{STREAM_BUGNAME} {meta} {STREAM_ARGS}"
    else:
        args = meta
    return f"fork_result=${{uuid_audio_fork(${{uuid}} start {url} mono {rate_token(route.rate)} {args})}}"


def route_expression(route: Route) -> str:
    return f"^{re.escape(route.number)}$" if route.number else (route.pattern or "")


class _RouteView(NamedTuple):  # attributes, not a dict: Jinja's r.name is a plain getattr then
    name: str
    expression: str
    fork: str  # the fork action's data
    auto_rate: str | None  # the set action's data for rate: auto
    stream: bool  # playback.transport: stream
    max_duration_s: int | None
    greeting: str | None
    record: str | None  # the set data of the recording path; None: not recorded
    limits: tuple[tuple[str, str], ...]  # (application, data) of the limit actions
    busy: tuple[tuple[str, str | None], ...] | None  # the busy extension's actions (busy: play)


class _TrunkView(NamedTuple):
    name: str
    params: tuple[tuple[str, str], ...]
    acl_cidrs: tuple[str, ...]


def _route_view(config: Config, r: Route, switch: str | None) -> _RouteView:
    where = f"routes[{r.name}]"
    return _RouteView(
        name=_safe(r.name, f"{where}.name", argument=True),
        expression=_safe(route_expression(r), f"{where}.pattern", expression=True),
        fork=fork_action_data(config, r, switch),
        auto_rate=AUTO_RATE_DATA if r.rate == AUTO_RATE else None,
        stream=config.playback.transport == "stream",
        max_duration_s=r.max_duration_s,
        greeting=_safe(r.greeting, f"{where}.greeting", argument=True) if r.greeting else None,
        record=_record_data(config, r),
        limits=tuple(limit_actions(config, r)),
        busy=tuple(b) if (b := busy_extension(config, r)) else None,
    )


def _record_data(config: Config, r: Route) -> str | None:
    if not r.recording:
        return None
    if config.recording is None:
        raise RenderError(f"routes[{r.name}].recording: true, but the config has no `recording:` section")
    return recording_path_data(config.recording, r)


def gateway_params(t: Trunk, env: Mapping[str, str]) -> tuple[tuple[str, str], ...]:
    """The gateway's ``<param>``s in order, every value checked (the password from ``env``)."""
    where = f"trunks[{t.name}]"
    params = [("proxy", _safe(t.proxy, f"{where}.proxy", argument=True))]
    if t.realm:
        params.append(("realm", _safe(t.realm, f"{where}.realm", argument=True)))
    if t.username:
        params.append(("username", _safe(t.username, f"{where}.username", argument=True)))
    if t.password_env:
        params.append(("password", _secret(env, t.password_env, f"{where}.password_env")))
    params += [
        ("register", "true" if t.register else "false"),
        ("register-transport", _safe(t.transport, f"{where}.transport", argument=True)),
    ]
    if t.caller_id_number:  # From: <sip:+1555...@proxy> on every call out
        params += [("caller-id-in-from", "false"),
                   ("from-user", _safe(t.caller_id_number, f"{where}.caller_id_number", argument=True))]
    else:  # From carries the channel's caller ID
        params.append(("caller-id-in-from", "true"))
    params += [("context", TRUNK_CONTEXT), ("extension", "auto_to_user")]
    return tuple(params)


def _trunk_view(t: Trunk, env: Mapping[str, str]) -> _TrunkView:
    where = f"trunks[{t.name}]"
    return _TrunkView(
        name=_safe(t.name, f"{where}.name", argument=True),
        params=gateway_params(t, env),
        acl_cidrs=tuple(_cidr(c, f"{where}.acl_cidrs") for c in t.acl_cidrs),
    )


def _cidr(value: str, what: str) -> str:
    try:
        return str(ipaddress.ip_network(_safe(value, what, argument=True), strict=True))
    except ValueError as e:
        raise RenderError(f"{what}: {value!r} is not a CIDR ({e})") from None


def gateway_file(name: str) -> str:
    return f"sip_profiles/external/{name}.xml"


AUTH_GLOBALS = ("MOD_AUDIO_BASIC_AUTH_USERNAME", "MOD_AUDIO_BASIC_AUTH_PASSWORD")
_PREPROCESS_UNSAFE = re.compile(r"[&<>\"']")


def _preprocess_value(value: str, what: str) -> str:
    """FreeSWITCH's XML preprocessor reads ``data="..."`` of an X-PRE-PROCESS line as raw text
    (switch_xml.c: before any XML parsing, so no entity is decoded): ``&amp;`` would be taken
    literally and a quote would end the value."""
    if _PREPROCESS_UNSAFE.search(value):
        raise RenderError(f"{what}: one of & < > \" ' cannot go through FreeSWITCH's XML preprocessor; choose a value without them")
    return value


def _auth(config: Config, env: Mapping[str, str]) -> dict[str, str] | None:
    a = config.fork_server.auth
    if a is None:
        return None
    return {
        "username": _preprocess_value(_safe(a.username, "fork_server.auth.username", argument=True), "fork_server.auth.username"),
        "password": _preprocess_value(_secret(env, a.password_env, "fork_server.auth.password_env"),
                                      f"fork_server.auth.password_env (value of {a.password_env})"),
    }


def _esl(config: Config, env: Mapping[str, str], fs: FreeswitchSettings | None = None) -> dict[str, object]:
    fs = fs or config.freeswitch
    return {
        "listen_ip": _safe(fs.esl_listen_ip, "freeswitch.esl_listen_ip", argument=True),
        "port": fs.esl_port,
        "password": _secret(env, fs.esl_password_env, "freeswitch.esl_password_env"),
        "acl": _safe(fs.esl_acl, "freeswitch.esl_acl", argument=True) if fs.esl_acl else None,
    }


def render(config: Config, env: Mapping[str, str] = os.environ) -> dict[str, str]:
    """Every file of the FreeSWITCH conf tree, by relative path, checked. With several switches
    (``freeswitch.switches``), one tree per switch under its name; with ``fork_server.haproxy``,
    ``haproxy.cfg`` beside them; with every switch's ``sip_uri``, Kamailio's ``dispatcher.list``."""
    files: dict[str, str] = {}
    if not config.switches:
        files.update(_render_switch(config, env, None))
    for sw in config.switches:
        files.update({f"{sw.name}/{rel}": text for rel, text in _render_switch(config, env, sw).items()})
    if config.fork_server.haproxy is not None:
        files[HAPROXY_FILE] = haproxy_cfg(config)
    if config.switches and all(sw.sip_uri for sw in config.switches):
        files[DISPATCHER_FILE] = dispatcher_list(config)
    return dict(sorted(files.items()))


def switch_tree(files: Mapping[str, str], name: str) -> dict[str, str]:
    """One switch's conf tree out of ``render``'s files (several switches)."""
    prefix = f"{name}/"
    return {rel[len(prefix):]: text for rel, text in files.items() if rel.startswith(prefix)}


def haproxy_cfg(config: Config) -> str:
    """The media WebSockets balanced over the fork servers (HAProxy 2.x, Debian's): leastconn
    (calls are long and uneven), health from ``/healthz`` (503 while a fork server drains or has
    no ESL link), a tunnel timeout longer than any call, and redispatch so a fork refused by a
    server that just closed its listener is retried on another."""
    h = config.fork_server.haproxy
    assert h is not None
    return _env.get_template("haproxy.cfg.j2").render(
        source=os.path.basename(config.source), bind=h.bind, servers=list(enumerate(h.servers, 1)),
        inter_ms=max(100, int(h.check_interval_s * 1000)),
        max_call_s=max([r.max_duration_s or 0 for r in config.routes] + [4 * 3600]),
    )


def dispatcher_list(config: Config) -> str:
    """Kamailio's dispatcher.list: set 1, one line per switch (``setid destination flags priority``)."""
    lines = [f"# Rendered by voicefork from {_comment_text(os.path.basename(config.source))}: the switches of set 1."]
    lines += [f"1 {_safe(sw.sip_uri or '', f'freeswitch.switches[{sw.name}].sip_uri', argument=True)} 0 0 "
              f"name={sw.name}" for sw in config.switches]
    return "\n".join(lines) + "\n"


def _render_switch(config: Config, env: Mapping[str, str], sw: FreeswitchSettings | None) -> dict[str, str]:
    auth = _auth(config, env)
    esl = _esl(config, env, sw)
    switch = sw.name if sw is not None else None
    routes = [_route_view(config, r, switch) for r in config.routes]
    trunks = [_trunk_view(t, env) for t in config.trunks]
    source = os.path.basename(config.source)
    files = {
        DIALPLAN_FILE: _env.get_template("dialplan.xml.j2").render(
            source=source, routes=routes, auth=auth, jitter_buffer_ms=JITTER_BUFFER_MS),
        ESL_FILE: _env.get_template("event_socket.conf.xml.j2").render(source=source, **esl),
        ACL_FILE: _env.get_template("acl.conf.xml.j2").render(source=source, trunks=trunks, acl_list=ACL_LIST),
        MODULES_FILE: _env.get_template("modules.conf.xml.j2").render(),
        "README.txt": _env.get_template("README.txt.j2").render(
            source=source, routes=[r.name for r in config.routes], trunks=trunks, acl_list=ACL_LIST,
            context=TRUNK_CONTEXT, outbound=OUTBOUND_CONTEXT if config.outbound is not None else None,
        ),
    }
    for t in trunks:
        files[gateway_file(t.name)] = _env.get_template("gateway.xml.j2").render(source=source, t=t)
    if config.outbound is not None:
        files[OUTBOUND_FILE] = _env.get_template("outbound.xml.j2").render(
            source=source, context=OUTBOUND_CONTEXT,
            routes=[{"name": v.name, "actions": _outbound_actions(config, r, switch)} for v, r in zip(routes, config.routes)])
    _verify(config, files, auth, esl, trunks, switch)
    return files


def _outbound_actions(config: Config, r: Route, switch: str | None) -> list[tuple[str, str | None]]:
    """A route's outbound extension: the inbound one's actions, the fork saying direction
    outbound. ``answer`` is a no-op there (the callee answered before the channel got here);
    the jitter buffer is set on the originated leg itself (fork_server.outbound), before its
    media comes up, and the extension's own set of it changes nothing then."""
    return _expected_actions(r, fork_action_data(config, r, switch, outbound=True), config.playback.transport == "stream",
                             _record_data(config, r), limit_actions(config, r))


def _parse(path: str, text: str) -> ET.Element:
    try:
        return ET.fromstring(text)
    except ET.ParseError as e:
        raise RenderError(f"{path}: rendered XML is not well-formed: {e}") from None


def _expected_actions(r: Route, fork: str, stream: bool, record: str | None = None,
                      limits: list[tuple[str, str]] | tuple[()] = ()) -> list[tuple[str, str | None]]:
    """DESIGN.md "Rendered dialplan": the exact action list of a route's extension."""
    actions: list[tuple[str, str | None]] = [
        ("set", f"voicefork_route={r.name}"), *limits, ("set", f"jitterbuffer_msec={JITTER_BUFFER_MS}"), ("answer", None),
    ]
    if r.rate == AUTO_RATE:
        actions.append(("set", AUTO_RATE_DATA))
    if record:
        actions += [("set", RECORD_STEREO_DATA), ("set", record), ("record_session", RECORD_SESSION_DATA)]
    actions.append(("set", fork))
    if r.max_duration_s:
        actions.append(("sched_hangup", f"+{r.max_duration_s} ALLOTTED_TIMEOUT"))
    if r.greeting:
        actions.append(("playback", r.greeting))
    if stream:
        actions.append(("set", STREAM_IDLE_DATA))
    actions.append(("park", None))
    return actions


def verify(config: Config, files: Mapping[str, str], env: Mapping[str, str] = os.environ) -> None:
    """Parse every XML file back (once) and check each is exactly what ``config`` intends."""
    trunks = [_trunk_view(t, env) for t in config.trunks]
    if not config.switches:
        _verify(config, files, _auth(config, env), _esl(config, env), trunks, None)
    for sw in config.switches:
        _verify(config, switch_tree(files, sw.name), _auth(config, env), _esl(config, env, sw), trunks, sw.name)


def _verify(config: Config, files: Mapping[str, str], auth: Mapping[str, str] | None,
            esl: Mapping[str, object], trunks: list[_TrunkView], switch: str | None) -> None:
    roots = {path: _parse(path, text) for path, text in files.items() if path.endswith(".xml")}
    for path in (DIALPLAN_FILE, ESL_FILE, MODULES_FILE, ACL_FILE):
        if path not in roots:
            raise RenderError(f"{path}: missing from the rendered tree")
    _verify_dialplan(config, roots[DIALPLAN_FILE], auth, switch)
    _verify_event_socket(roots[ESL_FILE], esl)
    mods = [m.get("module") for m in roots[MODULES_FILE].iter("load")]
    if mods != ["mod_audio_fork"]:
        raise RenderError(f"{MODULES_FILE}: loads {mods}, expected mod_audio_fork")
    _verify_trunks(roots, trunks)
    if (OUTBOUND_FILE in roots) != (config.outbound is not None):
        raise RenderError(f"{OUTBOUND_FILE}: rendered {'without' if config.outbound is None else 'missing with'} an outbound: section")
    if config.outbound is not None:
        _verify_outbound(config, roots[OUTBOUND_FILE], switch)


def _verify_outbound(config: Config, root: ET.Element, switch: str | None) -> None:
    ctxs = list(root)
    if root.tag != "include" or len(ctxs) != 1 or ctxs[0].tag != "context" or ctxs[0].get("name") != OUTBOUND_CONTEXT:
        raise RenderError(f"{OUTBOUND_FILE}: expected <include> with one <context name={OUTBOUND_CONTEXT!r}>")
    exts = list(ctxs[0])
    if [e.get("name") for e in exts] != [f"voicefork_outbound_{r.name}" for r in config.routes]:
        raise RenderError(f"{OUTBOUND_FILE}: extensions {[e.get('name') for e in exts]} differ from one per route")
    for r, ext in zip(config.routes, exts):
        conds = list(ext)
        if len(conds) != 1 or conds[0].get("field") != "destination_number" or conds[0].get("expression") != f"^{r.name}$":
            raise RenderError(f"{OUTBOUND_FILE}: route {r.name}: expected one condition on destination_number ^{r.name}$")
        if [(a.get("application"), a.get("data")) for a in conds[0]] != _outbound_actions(config, r, switch):
            raise RenderError(f"{OUTBOUND_FILE}: route {r.name}: actions differ from the intended")


def _verify_dialplan(config: Config, root: ET.Element, auth: Mapping[str, str] | None, switch: str | None) -> None:
    pre = [(p.get("cmd"), p.get("data")) for p in root.findall("X-PRE-PROCESS")]
    want_pre = [("set", f"{name}={auth[key]}") for name, key in zip(AUTH_GLOBALS, ("username", "password"))] if auth else []
    if pre != want_pre:
        raise RenderError(f"{DIALPLAN_FILE}: preprocessor lines {[d.split('=')[0] for _, d in pre]} differ from the intended")
    exts = root.findall("extension")
    busy = [r for r in config.routes if busy_extension(config, r)]
    if len(exts) != len(config.routes) + len(busy) or len(list(root)) != len(exts) + len(pre):
        raise RenderError(f"{DIALPLAN_FILE}: {len(exts)} extensions for {len(config.routes)} routes and {len(busy)} busy extensions")
    for r, ext in zip(busy, exts):  # first: no route pattern may catch the transfer
        conds = [(c.get("field"), c.get("expression"), [(a.get("application"), a.get("data")) for a in c]) for c in ext]
        want = [("${voicefork_route}", f"^{r.name}$", []),
                ("destination_number", f"^{BUSY_PREFIX}{r.name}$", busy_extension(config, r))]
        if ext.get("name") != f"{BUSY_PREFIX}{r.name}" or conds != want:
            raise RenderError(f"{DIALPLAN_FILE}: busy extension of route {r.name} differs from the intended")
    exts = exts[len(busy):]
    for r, ext in zip(config.routes, exts):  # document order is route order: the first match wins
        if ext.get("name") != f"voicefork_{r.name}":
            raise RenderError(f"{DIALPLAN_FILE}: extension {ext.get('name')!r} where route {r.name} belongs")
        conds = list(ext)
        if len(conds) != 1 or conds[0].tag != "condition":
            raise RenderError(f"{DIALPLAN_FILE}: route {r.name}: expected one condition, got {[c.tag for c in conds]}")
        cond = conds[0]
        if cond.get("field") != "destination_number" or cond.get("expression") != route_expression(r):
            raise RenderError(f"{DIALPLAN_FILE}: route {r.name}: condition {cond.attrib} does not match the route")
        actions = [(a.get("application"), a.get("data")) for a in cond]
        if any(a.tag != "action" or len(a.attrib) > 2 for a in cond):
            raise RenderError(f"{DIALPLAN_FILE}: route {r.name}: unexpected element in the condition")
        fork = fork_action_data(config, r, switch)
        stream = config.playback.transport == "stream"
        record = _record_data(config, r)
        expected = _expected_actions(r, fork, stream, record, limit_actions(config, r))
        if actions != expected:
            apps, want = [a for a, _ in actions], [a for a, _ in expected]
            if apps != want:
                raise RenderError(f"{DIALPLAN_FILE}: route {r.name}: actions {apps} differ from the intended {want}")
            i = next(i for i, (a, b) in enumerate(zip(actions, expected)) if a != b)
            raise RenderError(f"{DIALPLAN_FILE}: route {r.name}: data of action {i} ({apps[i]}) differs from the intended")
        # Only our own ${...}: in the fork action the API call, ${uuid} twice and, for rate: auto,
        # the rate variable twice; and the auto-rate action's cond on read_rate.
        for _, data in actions:
            if data and data not in (fork, AUTO_RATE_DATA, record, RECORD_SESSION_DATA) and "${" in data:
                raise RenderError(f"{DIALPLAN_FILE}: route {r.name}: unexpected expansion in {data!r}")
        if fork.count("${") != (5 if r.rate == AUTO_RATE else 3) + (1 if stream else 0):
            raise RenderError(f"{DIALPLAN_FILE}: route {r.name}: the fork action holds an extra expansion")


def _verify_event_socket(root: ET.Element, esl: Mapping[str, object]) -> None:
    params = [(p.get("name"), p.get("value")) for p in root.iter("param")]
    expected = [("nat-map", "false"), ("listen-ip", esl["listen_ip"]), ("listen-port", str(esl["port"])),
                ("password", esl["password"])]
    if esl["acl"]:
        expected.append(("apply-inbound-acl", esl["acl"]))
    if root.get("name") != "event_socket.conf" or params != expected:
        raise RenderError(f"{ESL_FILE}: params {[n for n, _ in params]} differ from the intended")


def _verify_trunks(roots: Mapping[str, ET.Element], trunks: list[_TrunkView]) -> None:
    gateways = sorted(p for p in roots if p.startswith("sip_profiles/"))
    if gateways != sorted(gateway_file(t.name) for t in trunks):
        raise RenderError(f"sip_profiles: gateway files {gateways} for trunks {[t.name for t in trunks]}")
    for t in trunks:
        path = gateway_file(t.name)
        root = roots[path]
        gws = list(root)
        if root.tag != "include" or len(gws) != 1 or gws[0].tag != "gateway" or gws[0].get("name") != t.name:
            raise RenderError(f"{path}: expected <include> with exactly one <gateway name={t.name!r}>")
        params = [(p.get("name"), p.get("value")) for p in gws[0]]
        if any(p.tag != "param" for p in gws[0]) or tuple(params) != t.params:
            raise RenderError(f"{path}: gateway params {[n for n, _ in params]} differ from the intended {[n for n, _ in t.params]}")
    acl = roots[ACL_FILE]
    lists = acl.findall("network-lists/list")
    if acl.get("name") != "acl.conf" or len(lists) != 1 or lists[0].get("name") != ACL_LIST or lists[0].get("default") != "deny":
        raise RenderError(f"{ACL_FILE}: expected one <list name={ACL_LIST!r} default='deny'>")
    nodes = list(lists[0])
    got = [(n.tag, n.get("type"), n.get("cidr")) for n in nodes]
    want = [("node", "allow", c) for t in trunks for c in t.acl_cidrs]
    if got != want:
        raise RenderError(f"{ACL_FILE}: nodes {got} differ from the trunks' CIDRs {want}")


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
