"""YAML → validated, frozen :class:`Config`, with every error naming file, line and key path.

The YAML is read with ``yaml.compose`` so each value keeps its line mark (cfgv-style
context: ``routes[2].number``). All errors are collected and raised together.
"""

from __future__ import annotations

import difflib
import re
from types import MappingProxyType
from typing import Any, Callable
from urllib.parse import urlsplit

import yaml

from .errors import ConfigError, ConfigIssue
from .model import (
    BasicAuth,
    Config,
    Connector,
    Fallback,
    ForkServerSettings,
    FreeswitchSettings,
    PlaybackSettings,
    Route,
)

__all__ = ["load_config", "parse_config"]

E164 = re.compile(r"^\+[1-9][0-9]{6,14}$")
ROUTE_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
ENV_NAME = re.compile(r"^[A-Z_][A-Z0-9_]*$")
LANG = re.compile(r"^[A-Za-z]{2,3}(-[A-Za-z0-9]{2,8})*$")
_UNSAFE = re.compile(r"[\x00-\x1f\x7f\u2028\u2029]")


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


_MISSING = object()


def _mapping(ctx: _Ctx, node: yaml.Node, path: str, allowed: set[str]) -> dict[str, yaml.Node]:
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


def _seconds(ctx: _Ctx, node: yaml.Node, path: str, lo: float, hi: float) -> float | None:
    value = _scalar(ctx, node, path, "a duration in seconds")
    if value is None:
        return None
    m = re.fullmatch(r"([0-9]+(?:\.[0-9]+)?)\s*(ms|s|m)?", value.strip())
    if not m:
        ctx.error(node, path, f'expected a duration like 2s, 500ms or 30m, got "{value}"')
        return None
    n = float(m.group(1)) * {"ms": 0.001, "s": 1.0, "m": 60.0, None: 1.0}[m.group(2)]
    if not lo <= n <= hi:
        ctx.error(node, path, f"expected a duration between {lo:g} s and {hi:g} s, got {value!r}")
        return None
    return n


def _bool(ctx: _Ctx, node: yaml.Node, path: str) -> bool | None:
    value = _scalar(ctx, node, path, "true or false")
    if value is None:
        return None
    if value.lower() in ("true", "yes", "on"):
        return True
    if value.lower() in ("false", "no", "off"):
        return False
    ctx.error(node, path, f'expected true or false, got "{value}"')
    return None


def _rate(ctx: _Ctx, node: yaml.Node, path: str) -> int | None:
    value = _scalar(ctx, node, path, "8k or 16k")
    rates = {"8k": 8000, "8000": 8000, "16k": 16000, "16000": 16000}
    if value is not None and value not in rates:
        ctx.error(node, path, f'expected 8k or 16k, got "{value}"')
    return rates.get(value) if value is not None else None


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


def parse_config(text: str, file: str = "<config>") -> Config:
    ctx = _Ctx(file)
    try:
        root = yaml.compose(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else 1
        raise ConfigError([ConfigIssue(file, line, "", f"not valid YAML: {getattr(exc, 'problem', exc)}")]) from None
    if root is None:
        raise ConfigError([ConfigIssue(file, 1, "", "the file is empty")])
    top = _mapping(ctx, root, "", {"freeswitch", "fork_server", "connectors", "defaults", "routes", "trunks", "playback"})

    fs_node = _required(ctx, root, top, "freeswitch", "")
    fs = _mapping(ctx, fs_node, "freeswitch", {"esl_host", "esl_port", "esl_password_env", "esl_listen_ip", "esl_acl", "temp_dir"}) if fs_node else {}
    pw_node = _required(ctx, fs_node, fs, "esl_password_env", "freeswitch") if fs_node else None
    env_expect = "an environment variable NAME like VOICEFORK_ESL_PASSWORD (never the password itself)"
    freeswitch = FreeswitchSettings(
        esl_password_env=(_str(ctx, pw_node, "freeswitch.esl_password_env", ENV_NAME, env_expect) if pw_node else None) or "",
        esl_host=_opt(fs, "esl_host", lambda n: _str(ctx, n, "freeswitch.esl_host"), "127.0.0.1"),
        esl_port=_opt(fs, "esl_port", lambda n: _int(ctx, n, "freeswitch.esl_port", 1, 65535), 8021),
        esl_listen_ip=_opt(fs, "esl_listen_ip", lambda n: _str(ctx, n, "freeswitch.esl_listen_ip"), "127.0.0.1"),
        esl_acl=_opt(fs, "esl_acl", lambda n: _str(ctx, n, "freeswitch.esl_acl"), "loopback.auto"),
        temp_dir=_opt(fs, "temp_dir", lambda n: _str(ctx, n, "freeswitch.temp_dir"), "/tmp"),
    )

    fsv_node = _required(ctx, root, top, "fork_server", "")
    fsv = _mapping(ctx, fsv_node, "fork_server", {"public_url", "listen_host", "listen_port", "auth", "max_metadata_bytes", "drain_timeout"}) if fsv_node else {}
    url_node = _required(ctx, fsv_node, fsv, "public_url", "fork_server") if fsv_node else None
    auth: BasicAuth | None = None
    auth_node = fsv.get("auth")
    if auth_node is None and fsv_node is not None:
        ctx.error(fsv_node, "fork_server.auth", "required key is missing (the media socket needs auth; write `auth: none` to disable it)")
    elif isinstance(auth_node, yaml.ScalarNode) and auth_node.value == "none":
        auth = None
    elif auth_node is not None:
        a = _mapping(ctx, auth_node, "fork_server.auth", {"username", "password_env"})
        user = _required(ctx, auth_node, a, "username", "fork_server.auth")
        pwe = _required(ctx, auth_node, a, "password_env", "fork_server.auth")
        u = _str(ctx, user, "fork_server.auth.username", re.compile(r"^[A-Za-z0-9_.-]{1,64}$"), "a user name of letters, digits, _ . -") if user else None
        p = _str(ctx, pwe, "fork_server.auth.password_env", ENV_NAME, env_expect) if pwe else None
        auth = BasicAuth(u or "", p or "")
    fork_server = ForkServerSettings(
        public_url=(_ws_url(ctx, url_node, "fork_server.public_url", allow_path=False) if url_node else None) or "",
        auth=auth,
        listen_host=_opt(fsv, "listen_host", lambda n: _str(ctx, n, "fork_server.listen_host"), "127.0.0.1"),
        listen_port=_opt(fsv, "listen_port", lambda n: _int(ctx, n, "fork_server.listen_port", 0, 65535), 8099),
        max_metadata_bytes=_opt(fsv, "max_metadata_bytes", lambda n: _int(ctx, n, "fork_server.max_metadata_bytes", 256, 65536), 4096),
        drain_timeout_s=_opt(fsv, "drain_timeout", lambda n: _seconds(ctx, n, "fork_server.drain_timeout", 0, 3600), 30.0),
    )

    connectors: dict[str, Connector] = {}
    con_node = _required(ctx, root, top, "connectors", "")
    if con_node is not None:
        for name, node in _mapping(ctx, con_node, "connectors", _AnyKey()).items():
            path = f"connectors.{name}"
            c = _mapping(ctx, node, path, {"url", "headers", "token_env", "connect_timeout", "ping_interval", "reconnect_attempts", "send_queue"})
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
                token_env=_opt(c, "token_env", lambda n: _str(ctx, n, f"{path}.token_env", ENV_NAME, env_expect), None),
                connect_timeout_s=_opt(c, "connect_timeout", lambda n: _seconds(ctx, n, f"{path}.connect_timeout", 0.05, 60), 2.0),
                ping_interval_s=_opt(c, "ping_interval", lambda n: _seconds(ctx, n, f"{path}.ping_interval", 1, 300), 10.0),
                reconnect_attempts=_opt(c, "reconnect_attempts", lambda n: _int(ctx, n, f"{path}.reconnect_attempts", 0, 10), 1),
                send_queue_ms=_opt(c, "send_queue", lambda n: (lambda s: int(s * 1000) if s is not None else None)(_seconds(ctx, n, f"{path}.send_queue", 0.1, 30)), 2000),
            )

    defaults_node = top.get("defaults")
    defaults = _route_fields(ctx, defaults_node, "defaults", connectors) if defaults_node is not None else {}

    routes: list[Route] = []
    numbers: dict[str, tuple[str, yaml.Node]] = {}
    names: set[str] = set()
    routes_node = _required(ctx, root, top, "routes", "")
    if routes_node is not None and not isinstance(routes_node, yaml.SequenceNode):
        ctx.error(routes_node, "routes", f"expected a list of routes, got {_kind(routes_node)}")
    elif routes_node is not None:
        for i, node in enumerate(routes_node.value):
            path = f"routes[{i}]"
            fields = _route_fields(ctx, node, path, connectors, is_route=True)
            merged = {**defaults, **{k: v for k, v in fields.items() if v is not None or k == "connector"}}
            name = merged.get("name")
            if name in names:
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
            routes.append(
                Route(
                    name=name,
                    connector=merged["connector"],
                    rate=merged.get("rate", 16000),
                    number=number,
                    pattern=merged.get("pattern"),
                    language=merged.get("language", "en-US"),
                    greeting=merged.get("greeting"),
                    max_duration_s=merged.get("max_duration"),
                    fallback=merged.get("fallback", Fallback()),
                    metadata=MappingProxyType(merged.get("metadata", {})),
                    recording=merged.get("recording", False),
                    line=node.start_mark.line + 1,
                )
            )
        for r in routes:  # an exact number that a regex route also matches: which wins is order-dependent
            if r.pattern is None:
                continue
            for number, (other, node) in numbers.items():
                if other != r.name and re.search(r.pattern, number):
                    ctx.warn(node, f"route {other}", f'number {number} is also matched by route "{r.name}" pattern {r.pattern!r}')

    pb_node = _required(ctx, root, top, "playback", "")
    pb = _mapping(ctx, pb_node, "playback", {"spool_dir", "freeswitch_spool_dir", "command", "transport", "first_segment_ms", "segment_ms", "lead_ms", "max_spool_bytes_per_call"}) if pb_node else {}
    spool = _required(ctx, pb_node, pb, "spool_dir", "playback") if pb_node else None
    fspool = _required(ctx, pb_node, pb, "freeswitch_spool_dir", "playback") if pb_node else None
    abs_path = re.compile(r"^/[A-Za-z0-9_./-]*$")
    playback = PlaybackSettings(
        spool_dir=(_str(ctx, spool, "playback.spool_dir") if spool else None) or "",
        freeswitch_spool_dir=(_str(ctx, fspool, "playback.freeswitch_spool_dir", abs_path, "an absolute path without spaces") if fspool else None) or "",
        command=_opt(pb, "command", lambda n: _str(ctx, n, "playback.command", re.compile(r"^(sendmsg|uuid_broadcast)$"), "sendmsg or uuid_broadcast"), "sendmsg"),
        transport=_opt(pb, "transport", lambda n: _str(ctx, n, "playback.transport", re.compile(r"^(file|inband)$"), "file or inband"), "file"),
        first_segment_ms=_opt(pb, "first_segment_ms", lambda n: _ptime_multiple(ctx, n, "playback.first_segment_ms", 40, 120), 80),
        segment_ms=_opt(pb, "segment_ms", lambda n: _ptime_multiple(ctx, n, "playback.segment_ms", 40, 5000), 400),
        lead_ms=_opt(pb, "lead_ms", lambda n: _ptime_multiple(ctx, n, "playback.lead_ms", 20, 1000), 100),
        max_spool_bytes_per_call=_opt(pb, "max_spool_bytes_per_call", lambda n: _int(ctx, n, "playback.max_spool_bytes_per_call", 64 << 10, 1 << 30), 8 << 20),
    )
    if "trunks" in top:
        ctx.error(top["trunks"], "trunks", "trunks are not supported by this version yet")

    if ctx.issues:
        raise ConfigError(sorted(ctx.issues, key=lambda i: i.line))
    return Config(
        source=file,
        freeswitch=freeswitch,
        fork_server=fork_server,
        connectors=MappingProxyType(connectors),
        routes=tuple(routes),
        playback=playback,
        warnings=tuple(ctx.warnings),
    )


class _AnyKey(set):
    """Allowed-keys set that accepts every key (named maps like connectors)."""

    def __contains__(self, key: object) -> bool:
        return True


def _ptime_multiple(ctx: _Ctx, node: yaml.Node, path: str, lo: int, hi: int) -> int | None:
    n = _int(ctx, node, path, lo, hi)
    if n is not None and n % 20:
        ctx.error(node, path, f"expected a multiple of the 20 ms ptime, got {n}")
        return None
    return n


def _route_fields(ctx: _Ctx, node: yaml.Node, path: str, connectors: dict[str, Connector], *, is_route: bool = False) -> dict[str, Any]:
    keys = {"connector", "rate", "language", "greeting", "max_duration", "fallback", "recording"}
    if is_route:
        keys |= {"name", "number", "pattern", "metadata"}
    f = _mapping(ctx, node, path, keys)
    out: dict[str, Any] = {}
    if is_route:
        name = _required(ctx, node, f, "name", path)
        out["name"] = _str(ctx, name, f"{path}.name", ROUTE_NAME, "a route name of a-z, 0-9, _ and - (it goes into the URL)") if name else None
        if ("number" in f) == ("pattern" in f):
            ctx.error(node, path, "expected exactly one of number (E.164) or pattern (regex)")
        if "number" in f:
            out["number"] = _str(ctx, f["number"], f"{path}.number", E164, "E.164 like +15551234567")
        if "pattern" in f:
            pat = _str(ctx, f["pattern"], f"{path}.pattern", expected="a regular expression")
            if pat is not None:
                try:
                    re.compile(pat)
                    out["pattern"] = pat
                except re.error as exc:
                    ctx.error(f["pattern"], f"{path}.pattern", f"invalid regular expression: {exc}")
        if "metadata" in f:
            meta = yaml.safe_load(yaml.serialize(f["metadata"]))
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
        out["language"] = _str(ctx, f["language"], f"{path}.language", LANG, "a BCP-47 language tag like en-US")
    if "greeting" in f:
        g = f["greeting"]
        out["greeting"] = None if g.value in ("none", "null", "") else _str(ctx, g, f"{path}.greeting", re.compile(r"^/[A-Za-z0-9_./-]+$"), "none or an absolute file path without spaces")
    if "max_duration" in f:
        d = _seconds(ctx, f["max_duration"], f"{path}.max_duration", 1, 86400)
        out["max_duration"] = int(d) if d is not None else None
    if "recording" in f:
        out["recording"] = _bool(ctx, f["recording"], f"{path}.recording")
    if "fallback" in f:
        fb = _mapping(ctx, f["fallback"], f"{path}.fallback", {"action", "file", "target"})
        action = _str(ctx, fb["action"], f"{path}.fallback.action", re.compile(r"^(hangup|play|transfer)$"), "hangup, play or transfer") if "action" in fb else None
        file = _str(ctx, fb["file"], f"{path}.fallback.file", re.compile(r"^/[A-Za-z0-9_./-]+$"), "an absolute file path without spaces") if "file" in fb else None
        target = _str(ctx, fb["target"], f"{path}.fallback.target", re.compile(r"^([0-9A-Za-z*#+_.-]{1,64}|sips?:[^\s'\"\\]{1,250})$"), "an extension or a sip: URI") if "target" in fb else None
        if action == "play" and not file:
            ctx.error(f["fallback"], f"{path}.fallback.file", "required when action is play")
        if action == "transfer" and not target:
            ctx.error(f["fallback"], f"{path}.fallback.target", "required when action is transfer")
        if action:
            out["fallback"] = Fallback(action, file, target)
    return out


def load_config(path: str) -> Config:
    with open(path, encoding="utf-8") as f:
        return parse_config(f.read(), path)
