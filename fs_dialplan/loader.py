"""YAML → validated, frozen :class:`Config`, with every error naming file, line and key path.

The YAML is read with ``yaml.compose`` (libyaml's ``CSafeLoader`` when available: the same
nodes and line marks, about 10x faster) so each value keeps its line mark (cfgv-style
context: ``routes[2].number``). All errors are collected and raised together. Allowed keys,
patterns, ranges and enums come from :mod:`fs_dialplan.spec`, which the JSON Schema is
generated from too.
"""

from __future__ import annotations

import difflib
import functools
import ipaddress
import re
from types import MappingProxyType
from typing import Any, Callable, Iterable
from urllib.parse import urlsplit

import yaml

from . import spec
from .errors import ConfigError, ConfigIssue
from .model import (
    DEFAULT_RECORDING_FILE,
    BasicAuth,
    Busy,
    Config,
    Connector,
    Fallback,
    ForkServerSettings,
    FreeswitchSettings,
    HaproxySettings,
    OutboundSettings,
    PlaybackSettings,
    RecordingSettings,
    Route,
    Trunk,
)

__all__ = ["load_config", "parse_config"]

_YAML_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

E164 = re.compile(spec.E164)
ROUTE_NAME = re.compile(spec.NAME)
ENV_NAME = re.compile(spec.ENV_NAME)
LANG = re.compile(spec.LANG)
_UNSAFE = re.compile(spec.UNSAFE_CHARS + r"|[\ud800-\udfff]")
_DURATION = re.compile(r"([0-9]+(?:\.[0-9]+)?)\s*(ms|s|m)?")
_CAPTURE_REF = re.compile(r"\$[0-9]")  # FreeSWITCH replaces $1.. in action data with regex captures


@functools.lru_cache(maxsize=None)
def _rx(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern)


class _Ctx:
    def __init__(self, file: str) -> None:
        self.file = file
        self.issues: list[ConfigIssue] = []
        self.warnings: list[ConfigIssue] = []

    def error(self, node: yaml.Node | None, path: str, message: str) -> None:
        line = node.start_mark.line + 1 if node is not None else 1
        self.issues.append(ConfigIssue(self.file, line, path, message))

    def warn(self, node: yaml.Node, path: str, message: str) -> None:
        self.warnings.append(ConfigIssue(self.file, node.start_mark.line + 1, path, "warning: " + message))


def _mapping(ctx: _Ctx, node: yaml.Node, path: str, allowed: Iterable[str]) -> dict[str, yaml.Node]:
    if not isinstance(node, yaml.MappingNode):
        ctx.error(node, path, f"expected a mapping, got {_kind(node)}")
        return {}
    out: dict[str, yaml.Node] = {}
    for key_node, value in node.value:
        key = key_node.value
        where = f"{path}.{key}" if path else str(key)
        if key in out:
            ctx.error(key_node, where, "duplicate key")
            continue
        if key not in allowed:
            near = difflib.get_close_matches(str(key), sorted(allowed), n=1)
            hint = f" (did you mean {near[0]!r}?)" if near else f"; known keys: {', '.join(sorted(allowed))}"
            ctx.error(key_node, where, f"unknown key{hint}")
            continue
        out[key] = value
    return out


def _kind(node: yaml.Node) -> str:
    if isinstance(node, yaml.MappingNode):
        return "a mapping"
    if isinstance(node, yaml.SequenceNode):
        return "a list"
    return f'"{node.value}"'


def _scalar(ctx: _Ctx, node: yaml.Node, path: str, expected: str) -> str | None:
    if not isinstance(node, yaml.ScalarNode):
        ctx.error(node, path, f"expected {expected}, got {_kind(node)}")
        return None
    return node.value


def _str(ctx: _Ctx, node: yaml.Node, path: str, pattern: re.Pattern[str] | None = None, expected: str = "a string") -> str | None:
    value = _scalar(ctx, node, path, expected)
    if value is None:
        return None
    if "${" in value or _UNSAFE.search(value):
        ctx.error(node, path, f'must not contain "${{" or control characters, got {value!r}')
        return None
    if pattern is not None and not pattern.match(value):
        ctx.error(node, path, f'expected {expected}, got "{value}"')
        return None
    return value


def _key_str(ctx: _Ctx, node: yaml.Node, path: str, key: spec.Key) -> str | None:
    """A string key checked by its spec pattern (or enum) with the spec's wording."""
    pattern = key.pattern or (spec.enum_pattern(key.enum) if key.enum else None)
    return _str(ctx, node, path, _rx(pattern) if pattern else None, key.expected or "a string")


def _int(ctx: _Ctx, node: yaml.Node, path: str, lo: int, hi: int) -> int | None:
    value = _scalar(ctx, node, path, f"an integer {lo}..{hi}")
    try:
        n = int(value) if value is not None else None
    except ValueError:
        n = None
    if n is None or not lo <= n <= hi:
        if value is not None:
            ctx.error(node, path, f'expected an integer {lo}..{hi}, got "{value}"')
        return None
    return n


def _key_int(ctx: _Ctx, node: yaml.Node, path: str, key: spec.Key) -> int | None:
    n = _int(ctx, node, path, int(key.lo), int(key.hi))  # type: ignore[arg-type]
    if n is not None and key.step and n % key.step:
        ctx.error(node, path, f"expected a multiple of the {key.step} ms ptime, got {n}")
        return None
    return n


def _seconds(ctx: _Ctx, node: yaml.Node, path: str, lo: float, hi: float) -> float | None:
    value = _scalar(ctx, node, path, "a duration in seconds")
    if value is None:
        return None
    m = _DURATION.fullmatch(value.strip())
    if not m:
        ctx.error(node, path, f'expected a duration like 2s, 500ms or 30m, got "{value}"')
        return None
    n = float(m.group(1)) * {"ms": 0.001, "s": 1.0, "m": 60.0, None: 1.0}[m.group(2)]
    if not lo <= n <= hi:
        ctx.error(node, path, f"expected a duration between {lo:g} s and {hi:g} s, got {value!r}")
        return None
    return n


def _key_seconds(ctx: _Ctx, node: yaml.Node, path: str, key: spec.Key) -> float | None:
    return _seconds(ctx, node, path, key.lo, key.hi)  # type: ignore[arg-type]


def _bool(ctx: _Ctx, node: yaml.Node, path: str) -> bool | None:
    value = _scalar(ctx, node, path, "true or false")
    if value is None:
        return None
    if value.lower() in spec.TRUE_WORDS:
        return True
    if value.lower() in spec.FALSE_WORDS:
        return False
    ctx.error(node, path, f'expected true or false, got "{value}"')
    return None


def _rate(ctx: _Ctx, node: yaml.Node, path: str) -> int | None:
    value = _scalar(ctx, node, path, "auto, 8k or 16k")
    if value is not None and value not in spec.RATES:
        ctx.error(node, path, f'expected auto, 8k or 16k, got "{value}"')
    return spec.RATES.get(value) if value is not None else None


def _ws_url(ctx: _Ctx, node: yaml.Node, path: str, *, allow_path: bool) -> str | None:
    value = _str(ctx, node, path, expected="a ws:// or wss:// URL")
    if value is None:
        return None
    parts = urlsplit(value)
    bad_chars = any(c in value for c in " '\"\\")
    if parts.scheme not in ("ws", "wss") or not parts.hostname or bad_chars:
        ctx.error(node, path, f'expected a ws:// or wss:// URL with a host and no spaces or quotes, got "{value}"')
        return None
    if not allow_path and (parts.path not in ("", "/") or parts.query or parts.fragment):
        ctx.error(node, path, f'expected ws(s)://host:port with no path (voicefork adds /calls/<route>), got "{value}"')
        return None
    if not allow_path and "$" in value:  # it lands in the fork action's data
        ctx.error(node, path, f'must not contain "$" (FreeSWITCH substitutes $1.. in dialplan actions), got "{value}"')
        return None
    return value


def _required(ctx: _Ctx, parent: yaml.Node, fields: dict[str, yaml.Node], key: str, path: str) -> yaml.Node | None:
    node = fields.get(key)
    if node is None:
        ctx.error(parent, f"{path}.{key}" if path else key, "required key is missing")
    return node


def _opt(fields: dict[str, yaml.Node], key: str, parse: Callable[[yaml.Node], Any], default: Any) -> Any:
    node = fields.get(key)
    if node is None:
        return default
    value = parse(node)
    return default if value is None else value


_SURROGATE = re.compile(r"[\ud800-\udfff]")


def parse_config(text: str, file: str = "<config>") -> Config:
    ctx = _Ctx(file)
    bad = _SURROGATE.search(text)
    if bad is not None:  # libyaml would raise UnicodeEncodeError, not a ConfigError (found by fuzzing)
        line = text.count("\n", 0, bad.start()) + 1
        raise ConfigError([ConfigIssue(file, line, "", "not valid text: a lone UTF-16 surrogate")])
    try:
        root = yaml.compose(text, Loader=_YAML_LOADER)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else 1
        raise ConfigError([ConfigIssue(file, line, "", f"not valid YAML: {getattr(exc, 'problem', exc)}")]) from None
    if root is None:
        raise ConfigError([ConfigIssue(file, 1, "", "the file is empty")])
    top = _mapping(ctx, root, "", spec.TOP)

    F = spec.FREESWITCH
    fs_node = _required(ctx, root, top, "freeswitch", "")
    fs = _mapping(ctx, fs_node, "freeswitch", F) if fs_node else {}
    pw_node = _required(ctx, fs_node, fs, "esl_password_env", "freeswitch") if fs_node else None
    freeswitch = FreeswitchSettings(
        esl_password_env=(_key_str(ctx, pw_node, "freeswitch.esl_password_env", F["esl_password_env"]) if pw_node else None) or "",
        esl_host=_opt(fs, "esl_host", lambda n: _str(ctx, n, "freeswitch.esl_host"), "127.0.0.1"),
        esl_port=_opt(fs, "esl_port", lambda n: _key_int(ctx, n, "freeswitch.esl_port", F["esl_port"]), 8021),
        esl_listen_ip=_opt(fs, "esl_listen_ip", lambda n: _ip(ctx, n, "freeswitch.esl_listen_ip", F["esl_listen_ip"]), "127.0.0.1"),
        esl_acl=_opt(fs, "esl_acl", lambda n: _key_str(ctx, n, "freeswitch.esl_acl", F["esl_acl"]), "loopback.auto"),
        temp_dir=_opt(fs, "temp_dir", lambda n: _str(ctx, n, "freeswitch.temp_dir"), "/tmp"),
    )

    switches = _switches(ctx, fs["switches"], freeswitch) if "switches" in fs else ()
    if switches and "esl_host" in fs:  # each switch names its own; this one would do nothing
        ctx.error(fs["esl_host"], "freeswitch.esl_host", "not used with switches: give each switch its esl_host")

    S = spec.FORK_SERVER
    fsv_node = _required(ctx, root, top, "fork_server", "")
    fsv = _mapping(ctx, fsv_node, "fork_server", S) if fsv_node else {}
    url_node = _required(ctx, fsv_node, fsv, "public_url", "fork_server") if fsv_node else None
    auth: BasicAuth | None = None
    auth_node = fsv.get("auth")
    if auth_node is None and fsv_node is not None:
        ctx.error(fsv_node, "fork_server.auth", "required key is missing (the media socket needs auth; write `auth: none` to disable it)")
    elif isinstance(auth_node, yaml.ScalarNode) and auth_node.value == S["auth"].literal:
        auth = None
    elif auth_node is not None:
        A = spec.AUTH
        a = _mapping(ctx, auth_node, "fork_server.auth", A)
        user = _required(ctx, auth_node, a, "username", "fork_server.auth")
        pwe = _required(ctx, auth_node, a, "password_env", "fork_server.auth")
        u = _key_str(ctx, user, "fork_server.auth.username", A["username"]) if user else None
        p = _key_str(ctx, pwe, "fork_server.auth.password_env", A["password_env"]) if pwe else None
        auth = BasicAuth(u or "", p or "")
    fork_server = ForkServerSettings(
        public_url=(_ws_url(ctx, url_node, "fork_server.public_url", allow_path=False) if url_node else None) or "",
        auth=auth,
        listen_host=_opt(fsv, "listen_host", lambda n: _str(ctx, n, "fork_server.listen_host"), "127.0.0.1"),
        listen_port=_opt(fsv, "listen_port", lambda n: _key_int(ctx, n, "fork_server.listen_port", S["listen_port"]), 8099),
        max_metadata_bytes=_opt(fsv, "max_metadata_bytes", lambda n: _key_int(ctx, n, "fork_server.max_metadata_bytes", S["max_metadata_bytes"]), 4096),
        drain_timeout_s=_opt(fsv, "drain_timeout", lambda n: _key_seconds(ctx, n, "fork_server.drain_timeout", S["drain_timeout"]), 30.0),
        drain_grace_s=_opt(fsv, "drain_grace", lambda n: _key_seconds(ctx, n, "fork_server.drain_grace", S["drain_grace"]), 0.0),
        haproxy=_haproxy(ctx, fsv["haproxy"]) if "haproxy" in fsv else None,
    )

    connectors: dict[str, Connector] = {}
    con_node = _required(ctx, root, top, "connectors", "")
    if con_node is not None:
        C = spec.CONNECTOR
        for name, node in _mapping(ctx, con_node, "connectors", _AnyKey()).items():
            path = f"connectors.{name}"
            c = _mapping(ctx, node, path, C)
            url = _required(ctx, node, c, "url", path)
            headers: dict[str, str] = {}
            if "headers" in c:
                for hk, hv in _mapping(ctx, c["headers"], f"{path}.headers", _AnyKey()).items():
                    v = _str(ctx, hv, f"{path}.headers.{hk}")
                    if v is not None:
                        headers[hk] = v
            connectors[name] = Connector(
                name=name,
                url=(_ws_url(ctx, url, f"{path}.url", allow_path=True) if url else None) or "",
                headers=MappingProxyType(headers),
                token_env=_opt(c, "token_env", lambda n: _key_str(ctx, n, f"{path}.token_env", C["token_env"]), None),
                connect_timeout_s=_opt(c, "connect_timeout", lambda n: _key_seconds(ctx, n, f"{path}.connect_timeout", C["connect_timeout"]), 2.0),
                ping_interval_s=_opt(c, "ping_interval", lambda n: _key_seconds(ctx, n, f"{path}.ping_interval", C["ping_interval"]), 0.5),
                ping_timeout_s=_opt(c, "ping_timeout", lambda n: _key_seconds(ctx, n, f"{path}.ping_timeout", C["ping_timeout"]), 1.0),
                reconnect_attempts=_opt(c, "reconnect_attempts", lambda n: _key_int(ctx, n, f"{path}.reconnect_attempts", C["reconnect_attempts"]), 1),
                playout_lead_ms=_opt(c, "playout_lead_ms", lambda n: _key_int(ctx, n, f"{path}.playout_lead_ms", C["playout_lead_ms"]), None),
                send_queue_ms=_opt(c, "send_queue", lambda n: (lambda s: int(s * 1000) if s is not None else None)(_key_seconds(ctx, n, f"{path}.send_queue", C["send_queue"])), 2000),
                **_twilio_fields(ctx, node, c, path),
            )

    defaults_node = top.get("defaults")
    defaults = _route_fields(ctx, defaults_node, "defaults", connectors) if defaults_node is not None else {}

    routes: list[Route] = []
    busy_unused: list[tuple[yaml.Node, str]] = []  # busy given where only limits.max_calls could use it
    recording_nodes: list[yaml.Node] = []  # where recording: true was said, once each
    r_node_paths: dict[int, str] = {}
    numbers: dict[str, tuple[str, yaml.Node]] = {}
    names: set[str] = set()
    compiled: list[tuple[str, str, re.Pattern[str]]] = []
    routes_node = _required(ctx, root, top, "routes", "")
    if routes_node is not None and not isinstance(routes_node, yaml.SequenceNode):
        ctx.error(routes_node, "routes", f"expected a list of routes, got {_kind(routes_node)}")
    elif routes_node is not None:
        for i, node in enumerate(routes_node.value):
            path = f"routes[{i}]"
            fields = _route_fields(ctx, node, path, connectors, is_route=True)
            # A route's own value wins, also an explicit "greeting: none" over a default greeting.
            # (An invalid value is None here too, but then the config fails anyway.)
            merged = {**defaults, **fields}
            name = merged.get("name")
            if name is not None and name in names:  # an invalid name is reported already
                ctx.error(node, f"{path}.name", f'duplicate route name "{name}"')
            names.add(name)
            number = merged.get("number")
            if number is not None:
                if number in numbers:
                    ctx.error(node, f"{path}.number", f'duplicate number "{number}" (also in route "{numbers[number][0]}")')
                numbers[number] = (name, node)
            if merged.get("connector") is None:
                ctx.error(node, f"{path}.connector", "required key is missing (no default connector either)")
            if name is None or not merged.get("connector") or (number is None and merged.get("pattern") is None):
                continue
            if "_busy_node" in merged and merged.get("max_calls") is None:
                busy_unused.append((merged["_busy_node"], f"{path}.busy" if "busy" in fields else "defaults.busy"))
            if merged.get("recording") and "_recording_node" in merged:
                r_node = merged["_recording_node"]
                if id(r_node) not in r_node_paths:
                    recording_nodes.append(r_node)
                    r_node_paths[id(r_node)] = f"{path}.recording" if "recording" in fields else "defaults.recording"
            if "_compiled" in fields:
                compiled.append((name, merged["pattern"], fields["_compiled"]))
            routes.append(
                Route(
                    name=name,
                    connector=merged["connector"],
                    rate=merged.get("rate", spec.AUTO_RATE),
                    number=number,
                    pattern=merged.get("pattern"),
                    language=merged.get("language", "en-US"),
                    greeting=merged.get("greeting"),
                    max_duration_s=merged.get("max_duration"),
                    fallback=merged.get("fallback", Fallback()),
                    metadata=MappingProxyType(merged.get("metadata", {})),
                    recording=merged.get("recording", False),
                    max_calls=merged.get("max_calls"),
                    busy=merged.get("busy", Busy()),
                    line=node.start_mark.line + 1,
                )
            )
        # An exact number that a regex route also matches: which wins is order-dependent.
        # O(patterns x numbers), each pattern compiled once (when it was validated).
        for rname, pattern, rx in compiled:
            for number, (other, node) in numbers.items():
                if other != rname and rx.search(number):
                    ctx.warn(node, f"route {other}", f'number {number} is also matched by route "{rname}" pattern {pattern!r}')

    trunks = _trunks(ctx, top["trunks"]) if "trunks" in top else ()

    P = spec.PLAYBACK
    pb_node = _required(ctx, root, top, "playback", "")
    pb = _mapping(ctx, pb_node, "playback", P) if pb_node else {}
    spool = _required(ctx, pb_node, pb, "spool_dir", "playback") if pb_node else None
    fspool = _required(ctx, pb_node, pb, "freeswitch_spool_dir", "playback") if pb_node else None
    playback = PlaybackSettings(
        spool_dir=(_str(ctx, spool, "playback.spool_dir") if spool else None) or "",
        freeswitch_spool_dir=(_key_str(ctx, fspool, "playback.freeswitch_spool_dir", P["freeswitch_spool_dir"]) if fspool else None) or "",
        command=_opt(pb, "command", lambda n: _key_str(ctx, n, "playback.command", P["command"]), "sendmsg"),
        transport=_opt(pb, "transport", lambda n: _key_str(ctx, n, "playback.transport", P["transport"]), "file"),
        first_segment_ms=_opt(pb, "first_segment_ms", lambda n: _key_int(ctx, n, "playback.first_segment_ms", P["first_segment_ms"]), 80),
        segment_ms=_opt(pb, "segment_ms", lambda n: _key_int(ctx, n, "playback.segment_ms", P["segment_ms"]), 2000),
        lead_ms=_opt(pb, "lead_ms", lambda n: _key_int(ctx, n, "playback.lead_ms", P["lead_ms"]), 100),
        max_spool_bytes_per_call=_opt(pb, "max_spool_bytes_per_call", lambda n: _key_int(ctx, n, "playback.max_spool_bytes_per_call", P["max_spool_bytes_per_call"]), 8 << 20),
    )

    recording = _recording(ctx, top["recording"]) if "recording" in top else None
    max_calls = None
    if "limits" in top:
        lim = _mapping(ctx, top["limits"], "limits", spec.LIMITS)
        if "max_calls" in lim:
            max_calls = _key_int(ctx, lim["max_calls"], "limits.max_calls", spec.LIMITS["max_calls"])
    if max_calls is None and not (ctx.issues and "limits" in top):  # (an invalid limits.max_calls is reported already)
        seen_busy: set[int] = set()
        for b_node, b_path in busy_unused:  # a key that would do nothing is refused
            if id(b_node) not in seen_busy:
                seen_busy.add(id(b_node))
                ctx.error(b_node, b_path, "busy is only used with max_calls (the route's, or limits.max_calls)")
    if recording is None and "recording" not in top:
        for r_node in recording_nodes:  # a key that would do nothing is refused, not accepted
            ctx.error(r_node, r_node_paths[id(r_node)], "recording: true needs a top-level `recording:` section "
                      "with `dir` (where FreeSWITCH writes the WAV files)")

    outbound = _outbound(ctx, top["outbound"], trunks) if "outbound" in top else None

    if ctx.issues:
        raise ConfigError(sorted(ctx.issues, key=lambda i: i.line))
    return Config(
        source=file,
        freeswitch=freeswitch,
        fork_server=fork_server,
        connectors=MappingProxyType(connectors),
        routes=tuple(routes),
        playback=playback,
        trunks=trunks,
        warnings=tuple(ctx.warnings),
        recording=recording,
        max_calls=max_calls,
        switches=switches,
        outbound=outbound,
    )


def _outbound(ctx: _Ctx, node: yaml.Node, trunks: tuple[Trunk, ...]) -> OutboundSettings | None:
    """``outbound:``: the Bearer token is required unless it says ``token_env: none`` (as the media
    socket's auth); calls go out through a configured trunk, so there must be one, and with
    several the default must name one of them."""
    K = spec.OUTBOUND
    f = _mapping(ctx, node, "outbound", K)
    if not f and not isinstance(node, yaml.MappingNode):
        return None
    tok_node = _required(ctx, node, f, "token_env", "outbound")
    token_env: str | None = None
    if isinstance(tok_node, yaml.ScalarNode) and tok_node.value in K["token_env"].none_words:
        token_env = None
    elif tok_node is not None:
        token_env = _key_str(ctx, tok_node, "outbound.token_env", K["token_env"])
    names = [t.name for t in trunks]
    default = _opt(f, "default_trunk", lambda n: _key_str(ctx, n, "outbound.default_trunk", K["default_trunk"]), None)
    if not trunks:
        ctx.error(node, "outbound", "calls go out through a trunk: add one under `trunks:`")
    elif default is not None and default not in names:
        ctx.error(f["default_trunk"], "outbound.default_trunk", f'no trunk "{default}"; the trunks are {", ".join(names)}')
    elif default is None and len(trunks) > 1:
        ctx.error(node, "outbound.default_trunk", f"required with several trunks (one of {', '.join(names)})")
    elif default is None:
        default = names[0]
    webhook = _opt(f, "status_webhook", lambda n: _key_str(ctx, n, "outbound.status_webhook", K["status_webhook"]), None)
    if webhook is not None:
        parts = urlsplit(webhook)
        try:
            parts.port
        except ValueError:
            parts = parts._replace(netloc="")
        if not parts.hostname:
            ctx.error(f["status_webhook"], "outbound.status_webhook", f'expected an http:// or https:// URL with a host, got "{webhook}"')
    return OutboundSettings(
        token_env=token_env,
        default_trunk=default,
        calls_per_second=_opt(f, "calls_per_second", lambda n: _key_int(ctx, n, "outbound.calls_per_second", K["calls_per_second"]), 1),
        burst=_opt(f, "burst", lambda n: _key_int(ctx, n, "outbound.burst", K["burst"]), 5),
        max_pending=_opt(f, "max_pending", lambda n: _key_int(ctx, n, "outbound.max_pending", K["max_pending"]), 20),
        default_timeout_s=_opt(f, "default_timeout", lambda n: _key_seconds(ctx, n, "outbound.default_timeout", K["default_timeout"]), 30.0),
        status_webhook=webhook,
    )


def _twilio_fields(ctx: _Ctx, node: yaml.Node, c: dict[str, yaml.Node], path: str) -> dict[str, Any]:
    """protocol, and the keys only a twilio connector has (both required there, refused elsewhere)."""
    C = spec.CONNECTOR
    protocol = _opt(c, "protocol", lambda n: _key_str(ctx, n, f"{path}.protocol", C["protocol"]), "voicefork")
    out: dict[str, Any] = {"protocol": protocol}
    for key in ("account_sid", "auth_token_env"):
        if protocol == "twilio":
            if _required(ctx, node, c, key, path) is not None:
                out[key] = _key_str(ctx, c[key], f"{path}.{key}", C[key])
        elif key in c:
            ctx.error(c[key], f"{path}.{key}", f"only for protocol: twilio (this connector speaks {protocol})")
    return out


class _AnyKey(set):
    """Allowed-keys set that accepts every key (named maps like connectors)."""

    def __contains__(self, key: object) -> bool:
        return True


def _route_fields(ctx: _Ctx, node: yaml.Node, path: str, connectors: dict[str, Connector], *, is_route: bool = False) -> dict[str, Any]:
    R = spec.ROUTE
    f = _mapping(ctx, node, path, R if is_route else spec.ROUTE_DEFAULTS)
    out: dict[str, Any] = {}
    if is_route:
        name = _required(ctx, node, f, "name", path)
        out["name"] = _key_str(ctx, name, f"{path}.name", R["name"]) if name else None
        if ("number" in f) == ("pattern" in f):
            ctx.error(node, path, "expected exactly one of number (E.164) or pattern (regex)")
        if "number" in f:
            out["number"] = _key_str(ctx, f["number"], f"{path}.number", R["number"])
        if "pattern" in f:
            pat = _key_str(ctx, f["pattern"], f"{path}.pattern", R["pattern"])
            if pat is not None:
                try:
                    out["_compiled"] = re.compile(pat)
                    out["pattern"] = pat
                except re.error as exc:
                    ctx.error(f["pattern"], f"{path}.pattern", f"invalid regular expression: {exc}")
        if "metadata" in f:
            try:
                meta = yaml.safe_load(yaml.serialize(f["metadata"]))
            except yaml.YAMLError:  # e.g. an empty value whose round trip is no document (found by fuzzing)
                meta = None
            if not isinstance(meta, dict):
                ctx.error(f["metadata"], f"{path}.metadata", f"expected a mapping, got {_kind(f['metadata'])}")
            else:
                out["metadata"] = meta
    if "connector" in f:
        c = _str(ctx, f["connector"], f"{path}.connector")
        if c is not None and c not in connectors:
            ctx.error(f["connector"], f"{path}.connector", f'unknown connector "{c}"; known: {", ".join(sorted(connectors)) or "none"}')
            c = None
        out["connector"] = c or False  # False: given but invalid (already reported)
    if "rate" in f:
        out["rate"] = _rate(ctx, f["rate"], f"{path}.rate")
    if "language" in f:
        out["language"] = _key_str(ctx, f["language"], f"{path}.language", R["language"])
    if "greeting" in f:
        g = f["greeting"]
        none = isinstance(g, yaml.ScalarNode) and (g.value in R["greeting"].none_words or g.tag == "tag:yaml.org,2002:null")
        out["greeting"] = None if none else _key_str(ctx, g, f"{path}.greeting", R["greeting"])
    if "max_duration" in f:
        d = _key_seconds(ctx, f["max_duration"], f"{path}.max_duration", R["max_duration"])
        out["max_duration"] = int(d) if d is not None else None
    if "recording" in f:
        out["recording"] = _bool(ctx, f["recording"], f"{path}.recording")
        out["_recording_node"] = f["recording"]
    if "max_calls" in f:
        out["max_calls"] = _key_int(ctx, f["max_calls"], f"{path}.max_calls", R["max_calls"])
    if "busy" in f:
        B = spec.BUSY
        b = _mapping(ctx, f["busy"], f"{path}.busy", B)
        action = _key_str(ctx, b["action"], f"{path}.busy.action", B["action"]) if "action" in b else None
        if "action" not in b and isinstance(f["busy"], yaml.MappingNode):
            ctx.error(f["busy"], f"{path}.busy.action", "required key is missing")
        file = _key_str(ctx, b["file"], f"{path}.busy.file", B["file"]) if "file" in b else None
        target = _key_str(ctx, b["target"], f"{path}.busy.target", B["target"]) if "target" in b else None
        if action == "play" and "file" not in b:
            ctx.error(f["busy"], f"{path}.busy.file", "required when action is play")
        if action == "transfer" and "target" not in b:
            ctx.error(f["busy"], f"{path}.busy.target", "required when action is transfer")
        for key, given, wants in (("file", file, "play"), ("target", target, "transfer")):
            if given and action != wants:  # a key that would do nothing
                ctx.error(b[key], f"{path}.busy.{key}", f"only used with action: {wants}")
        out["_busy_node"] = f["busy"]
        if action:
            out["busy"] = Busy(action, file if action == "play" else None, target if action == "transfer" else None)
    if "fallback" in f:
        FB = spec.FALLBACK
        fb = _mapping(ctx, f["fallback"], f"{path}.fallback", FB)
        action = _key_str(ctx, fb["action"], f"{path}.fallback.action", FB["action"]) if "action" in fb else None
        file = _key_str(ctx, fb["file"], f"{path}.fallback.file", FB["file"]) if "file" in fb else None
        target = _key_str(ctx, fb["target"], f"{path}.fallback.target", FB["target"]) if "target" in fb else None
        if action == "play" and not file:
            ctx.error(f["fallback"], f"{path}.fallback.file", "required when action is play")
        if action == "transfer" and not target:
            ctx.error(f["fallback"], f"{path}.fallback.target", "required when action is transfer")
        if action:
            out["fallback"] = Fallback(action, file, target)
    return out


def _host_port(ctx: _Ctx, node: yaml.Node, path: str, key: spec.Key) -> str | None:
    value = _key_str(ctx, node, path, key)
    if value is None:
        return None
    if value.startswith("["):  # [IPv6]:port; the pattern allows no other colons outside brackets
        host, _, rest = value[1:].partition("]")
        port = rest[1:]
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            ctx.error(node, path, f'expected an IPv6 address in brackets, got "{value}"')
            return None
    else:
        host, _, port = value.partition(":")
    if port and not 1 <= int(port) <= 65535:
        ctx.error(node, path, f'expected a port 1..65535, got "{value}"')
        return None
    return value


def _ip(ctx: _Ctx, node: yaml.Node, path: str, key: spec.Key) -> str | None:
    value = _key_str(ctx, node, path, key)
    if value is None:
        return None
    try:
        ipaddress.ip_address(value)
    except ValueError:
        ctx.error(node, path, f'expected {key.expected}, got "{value}"')
        return None
    return value


def _cidr(ctx: _Ctx, node: yaml.Node, path: str, key: spec.Key) -> str | None:
    value = _scalar(ctx, node, path, key.expected or "a CIDR")
    if value is None:
        return None
    try:
        net = ipaddress.ip_network(value.strip(), strict=True)
    except ValueError as exc:
        ctx.error(node, path, f'expected {key.expected}, got "{value}" ({exc})')
        return None
    if net.prefixlen == 0:
        ctx.error(node, path, f'"{value}" would allow every address; list the carrier\'s signalling ranges')
        return None
    return str(net)


def _switches(ctx: _Ctx, node: yaml.Node, base: FreeswitchSettings) -> tuple[FreeswitchSettings, ...]:
    """``freeswitch.switches:`` → one complete FreeswitchSettings per switch; the section's own
    keys are the defaults. Names and Event Socket addresses must not repeat (a fork names its
    switch, and every ESL command of the call goes to that one)."""
    W = spec.SWITCH
    if not isinstance(node, yaml.SequenceNode):
        ctx.error(node, "freeswitch.switches", f"expected a list of switches, got {_kind(node)}")
        return ()
    if len(node.value) < 2:
        ctx.error(node, "freeswitch.switches", "expected at least two switches (one switch needs no list)")
    out: list[FreeswitchSettings] = []
    names: set[str] = set()
    addresses: set[tuple[str, int]] = set()
    for i, snode in enumerate(node.value):
        path = f"freeswitch.switches[{i}]"
        f = _mapping(ctx, snode, path, W)
        name_node = _required(ctx, snode, f, "name", path)
        host_node = _required(ctx, snode, f, "esl_host", path)
        name = _key_str(ctx, name_node, f"{path}.name", W["name"]) if name_node else None
        host = _key_str(ctx, host_node, f"{path}.esl_host", W["esl_host"]) if host_node else None
        port = _opt(f, "esl_port", lambda n: _key_int(ctx, n, f"{path}.esl_port", W["esl_port"]), base.esl_port)
        if name is not None:
            if name in names:
                ctx.error(name_node, f"{path}.name", f'duplicate switch name "{name}"')
            names.add(name)
        if host is not None:
            if (host, port) in addresses:
                ctx.error(host_node, f"{path}.esl_host", f"{host}:{port} is already another switch's Event Socket")
            addresses.add((host, port))
        if name is None or host is None:
            continue
        out.append(FreeswitchSettings(
            esl_password_env=_opt(f, "esl_password_env", lambda n: _key_str(ctx, n, f"{path}.esl_password_env", W["esl_password_env"]),
                                  base.esl_password_env),
            esl_host=host,
            esl_port=port,
            esl_listen_ip=base.esl_listen_ip,
            esl_acl=base.esl_acl,
            temp_dir=base.temp_dir,
            name=name,
            sip_uri=_opt(f, "sip_uri", lambda n: _key_str(ctx, n, f"{path}.sip_uri", W["sip_uri"]), None),
        ))
    with_uri = [sw.name for sw in out if sw.sip_uri]
    if with_uri and len(with_uri) != len(out):
        ctx.error(node, "freeswitch.switches", f"sip_uri on every switch or on none (a dispatcher list of some "
                                               f"switches would never send calls to the others); it is on {', '.join(with_uri)}")
    return tuple(out)


def _haproxy(ctx: _Ctx, node: yaml.Node) -> HaproxySettings | None:
    H = spec.HAPROXY
    path = "fork_server.haproxy"
    f = _mapping(ctx, node, path, H)
    bind_node = _required(ctx, node, f, "bind", path)
    servers_node = _required(ctx, node, f, "servers", path)
    bind = _host_port(ctx, bind_node, f"{path}.bind", H["bind"]) if bind_node else None
    servers: list[str] = []
    if servers_node is not None and not isinstance(servers_node, yaml.SequenceNode):
        ctx.error(servers_node, f"{path}.servers", f"expected a list of host:port, got {_kind(servers_node)}")
    elif servers_node is not None:
        if not servers_node.value:
            ctx.error(servers_node, f"{path}.servers", "expected at least one fork server")
        for j, item in enumerate(servers_node.value):
            v = _host_port(ctx, item, f"{path}.servers[{j}]", H["servers"].items)  # type: ignore[arg-type]
            if v is not None and ":" not in v.rsplit("]", 1)[-1]:
                ctx.error(item, f"{path}.servers[{j}]", f'expected host:port (the fork server\'s listen port), got "{v}"')
            elif v is not None and v in servers:
                ctx.error(item, f"{path}.servers[{j}]", f'duplicate fork server "{v}"')
            elif v is not None:
                servers.append(v)
    if bind is not None and ":" not in bind.rsplit("]", 1)[-1]:
        ctx.error(bind_node, f"{path}.bind", f'expected host:port, got "{bind}"')
        bind = None
    interval = _opt(f, "check_interval", lambda n: _key_seconds(ctx, n, f"{path}.check_interval", H["check_interval"]), 0.5)
    if bind is None or not servers:
        return None
    return HaproxySettings(bind=bind, servers=tuple(servers), check_interval_s=interval)


def _trunks(ctx: _Ctx, node: yaml.Node) -> tuple[Trunk, ...]:
    """``trunks:`` → gateways and the ACL of their signalling CIDRs (FreeSWITCH sofia.c
    parse_gateways: a registering gateway without username or password is skipped)."""
    if not isinstance(node, yaml.SequenceNode):
        ctx.error(node, "trunks", f"expected a list of trunks, got {_kind(node)}")
        return ()
    T = spec.TRUNK
    trunks: list[Trunk] = []
    seen: set[str] = set()
    for i, tnode in enumerate(node.value):
        path = f"trunks[{i}]"
        f = _mapping(ctx, tnode, path, T)
        if not f and not isinstance(tnode, yaml.MappingNode):
            continue
        name_node = _required(ctx, tnode, f, "name", path)
        name = _key_str(ctx, name_node, f"{path}.name", T["name"]) if name_node else None
        if name is not None and name in seen:
            ctx.error(name_node, f"{path}.name", f'duplicate trunk name "{name}"')
        seen.add(name or "")
        proxy_node = _required(ctx, tnode, f, "proxy", path)
        proxy = _host_port(ctx, proxy_node, f"{path}.proxy", T["proxy"]) if proxy_node else None
        realm = _opt(f, "realm", lambda n: _key_str(ctx, n, f"{path}.realm", T["realm"]), None)
        username = _opt(f, "username", lambda n: _key_str(ctx, n, f"{path}.username", T["username"]), None)
        password_env = _opt(f, "password_env", lambda n: _key_str(ctx, n, f"{path}.password_env", T["password_env"]), None)
        register = _opt(f, "register", lambda n: _bool(ctx, n, f"{path}.register"), False)
        transport = _opt(f, "transport", lambda n: _key_str(ctx, n, f"{path}.transport", T["transport"]), "udp")
        caller_id = _opt(f, "caller_id_number", lambda n: _key_str(ctx, n, f"{path}.caller_id_number", T["caller_id_number"]), None)
        if "username" in f and "password_env" not in f:
            ctx.error(tnode, f"{path}.password_env", "required with username (digest credentials need the password)")
        if "password_env" in f and "username" not in f:
            ctx.error(tnode, f"{path}.username", "required with password_env (digest credentials need the user)")
        if register and not ("username" in f and "password_env" in f):
            ctx.error(f["register"], f"{path}.register", "register: true needs username and password_env (FreeSWITCH skips the gateway otherwise)")
        cidrs: list[str] = []
        cidr_node = _required(ctx, tnode, f, "acl_cidrs", path)
        if cidr_node is not None and not isinstance(cidr_node, yaml.SequenceNode):
            ctx.error(cidr_node, f"{path}.acl_cidrs", f"expected a list of CIDRs like 54.172.60.0/30, got {_kind(cidr_node)}")
        elif cidr_node is not None:
            if not cidr_node.value:
                ctx.error(cidr_node, f"{path}.acl_cidrs", "expected at least one CIDR (inbound calls from the trunk come from these)")
            for j, item in enumerate(cidr_node.value):
                cidr = _cidr(ctx, item, f"{path}.acl_cidrs[{j}]", T["acl_cidrs"].items)  # type: ignore[arg-type]
                if cidr is not None and cidr in cidrs:
                    ctx.error(item, f"{path}.acl_cidrs[{j}]", f'duplicate CIDR "{cidr}"')
                elif cidr is not None:
                    cidrs.append(cidr)
        if name is None or proxy is None:
            continue
        trunks.append(Trunk(
            name=name, proxy=proxy, realm=realm, username=username, password_env=password_env,
            register=register, transport=transport, acl_cidrs=tuple(cidrs), caller_id_number=caller_id,
            line=tnode.start_mark.line + 1,
        ))
    return tuple(trunks)


_RECORDING_FIELD = re.compile(r"\{([^{}]*)\}")


def _recording(ctx: _Ctx, node: yaml.Node) -> RecordingSettings | None:
    """``recording:``: where FreeSWITCH's record_session writes, and the file-name template,
    whose only fields are ones no caller controls (spec.RECORDING_FIELDS)."""
    K = spec.RECORDING
    f = _mapping(ctx, node, "recording", K)
    dir_node = _required(ctx, node, f, "dir", "recording")
    rdir = _key_str(ctx, dir_node, "recording.dir", K["dir"]) if dir_node else None
    local = _opt(f, "fork_server_dir", lambda n: _key_str(ctx, n, "recording.fork_server_dir", K["fork_server_dir"]), None)
    file = _opt(f, "file", lambda n: _key_str(ctx, n, "recording.file", K["file"]), DEFAULT_RECORDING_FILE)
    if "file" in f and file is not None:
        fields = _RECORDING_FIELD.findall(file)
        bad = [x for x in fields if x not in spec.RECORDING_FIELDS]
        rest = _RECORDING_FIELD.sub("", file)
        if bad or "{" in rest or "}" in rest:
            ctx.error(f["file"], "recording.file", f"unknown field {{{bad[0] if bad else '?'}}}; the fields are "
                      + " ".join("{%s}" % x for x in spec.RECORDING_FIELDS))
            file = None
        elif "uuid" not in fields:
            ctx.error(f["file"], "recording.file", "must hold {uuid} (two calls would otherwise write one file)")
            file = None
        elif ".." in file.split("/") or "//" in file or file.startswith("/"):
            ctx.error(f["file"], "recording.file", f'expected a relative path without "..", got "{file}"')
            file = None
    retention = _opt(f, "retention_days", lambda n: _key_int(ctx, n, "recording.retention_days", K["retention_days"]), 0)
    if rdir is None or file is None:
        return None
    return RecordingSettings(dir=rdir, fork_server_dir=local or rdir, file=file, retention_days=retention)


def load_config(path: str) -> Config:
    with open(path, "rb") as f:
        raw = f.read()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:  # a ConfigError naming the line, not a traceback
        line = raw.count(b"\n", 0, exc.start) + 1
        raise ConfigError([ConfigIssue(path, line, "", f"not UTF-8: byte 0x{raw[exc.start]:02x} at offset {exc.start}")]) from None
    return parse_config(text, path)
