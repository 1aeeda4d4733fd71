"""The typed, frozen config model shared by the renderer and the fork server (docs/DESIGN.md).

Values here are already validated; the YAML loader (issue 2) builds them with file:line
errors. Collections are tuples or read-only mappings so a Config can be shared freely.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Mapping

__all__ = [
    "FreeswitchSettings",
    "HaproxySettings",
    "BasicAuth",
    "ForkServerSettings",
    "Connector",
    "Fallback",
    "Route",
    "Trunk",
    "PlaybackSettings",
    "RecordingSettings",
    "Busy",
    "OutboundSettings",
    "Config",
]

_EMPTY: Mapping[str, Any] = MappingProxyType({})


@dataclass(frozen=True, slots=True)
class FreeswitchSettings:
    esl_password_env: str  # the NAME of the env var; never a literal password, no default
    esl_host: str = "127.0.0.1"
    esl_port: int = 8021
    esl_listen_ip: str = "127.0.0.1"
    esl_acl: str | None = "loopback.auto"
    temp_dir: str = "/tmp"
    name: str = "default"  # one switch: "default", carried nowhere; several: from freeswitch.switches
    sip_uri: str | None = None  # for a SIP dispatcher's list


@dataclass(frozen=True, slots=True)
class HaproxySettings:
    bind: str  # host:port
    servers: tuple[str, ...]  # host:port of each fork server
    check_interval_s: float = 0.5


@dataclass(frozen=True, slots=True)
class BasicAuth:
    username: str
    password_env: str


@dataclass(frozen=True, slots=True)
class ForkServerSettings:
    public_url: str  # ws(s)://host:port as FreeSWITCH reaches us
    auth: BasicAuth | None
    listen_host: str = "127.0.0.1"
    listen_port: int = 8099
    max_metadata_bytes: int = 4096
    drain_timeout_s: float = 30.0
    drain_grace_s: float = 0.0
    haproxy: HaproxySettings | None = None

    def fork_url(self, route: str) -> str:
        return f"{self.public_url.rstrip('/')}/calls/{route}"


@dataclass(frozen=True, slots=True)
class Connector:
    name: str
    url: str
    headers: Mapping[str, str] = field(default_factory=lambda: _EMPTY)
    token_env: str | None = None
    connect_timeout_s: float = 2.0
    # A half-open connector is found within interval + timeout (1.5 s), inside the 2 s silence
    # bar (issue 6); two pings a second cost ~1 % of the messages a call carries.
    ping_interval_s: float = 0.5
    ping_timeout_s: float = 1.0
    reconnect_attempts: int = 1
    send_queue_ms: int = 2000
    protocol: str = "voicefork"  # | twilio (fork_server.dialects)
    account_sid: str | None = None  # twilio: AC + 32 hex
    auth_token_env: str | None = None  # twilio: env var with the REST hang-up's auth token
    playout_lead_ms: int | None = None  # None: the protocol's (fork_server.dialects: twilio 60, voicefork 0)


@dataclass(frozen=True, slots=True)
class Fallback:
    action: str = "hangup"  # hangup | play | transfer
    file: str | None = None
    target: str | None = None


@dataclass(frozen=True, slots=True)
class Busy:
    action: str = "reject"  # reject | play | transfer
    file: str | None = None
    target: str | None = None


@dataclass(frozen=True, slots=True)
class Route:
    name: str
    connector: str
    rate: int = 0  # fork rate in Hz; 0: auto, the caller's codec rate (8000 on G.711, 16000 wideband)
    number: str | None = None
    pattern: str | None = None
    language: str = "en-US"
    greeting: str | None = None
    max_duration_s: int | None = None
    fallback: Fallback = field(default_factory=Fallback)
    metadata: Mapping[str, Any] = field(default_factory=lambda: _EMPTY)
    recording: bool = False
    max_calls: int | None = None  # None: no per-route limit
    busy: Busy = field(default_factory=Busy)
    line: int = 0


@dataclass(frozen=True, slots=True)
class Trunk:
    name: str
    proxy: str
    realm: str | None = None
    username: str | None = None
    password_env: str | None = None  # the NAME of the env var; never a literal
    register: bool = False
    transport: str = "udp"  # udp | tcp | tls
    acl_cidrs: tuple[str, ...] = ()  # normalised by ipaddress (strict: no host bits)
    caller_id_number: str | None = None  # E.164 From user on calls out; None: the channel's caller ID
    line: int = 0  # YAML line of the trunk, for messages


@dataclass(frozen=True, slots=True)
class PlaybackSettings:
    spool_dir: str
    freeswitch_spool_dir: str
    command: str = "sendmsg"  # | uuid_broadcast
    transport: str = "file"  # | inband
    first_segment_ms: int = 80
    segment_ms: int = 2000
    lead_ms: int = 100
    max_spool_bytes_per_call: int = 8 << 20


DEFAULT_RECORDING_FILE = "{date}/{route}-{uuid}.wav"


@dataclass(frozen=True, slots=True)
class RecordingSettings:
    dir: str  # as FreeSWITCH sees it
    fork_server_dir: str  # the same directory as the fork server sees it
    file: str = DEFAULT_RECORDING_FILE
    retention_days: int = 0  # 0: keep everything

    def local_path(self, switch_path: str) -> str | None:
        """The fork server's path of a recording the switch wrote, or None if it is not under ``dir``."""
        root = self.dir.rstrip("/") + "/"
        if not switch_path.startswith(root):
            return None
        return self.fork_server_dir.rstrip("/") + "/" + switch_path[len(root):]


@dataclass(frozen=True, slots=True)
class OutboundSettings:
    """``outbound:``: POST /v1/calls originates through a trunk into a route (fork_server.outbound)."""

    token_env: str | None  # the NAME of the Bearer token's env var; None: `token_env: none`, no auth
    default_trunk: str | None = None  # None: every request names its trunk
    calls_per_second: int = 1
    burst: int = 5
    max_pending: int = 20
    default_timeout_s: float = 30.0
    status_webhook: str | None = None


@dataclass(frozen=True, slots=True)
class Config:
    source: str
    freeswitch: FreeswitchSettings
    fork_server: ForkServerSettings
    connectors: Mapping[str, Connector]
    routes: tuple[Route, ...]
    playback: PlaybackSettings
    trunks: tuple[Trunk, ...] = ()
    warnings: tuple[Any, ...] = ()
    recording: RecordingSettings | None = None
    max_calls: int | None = None  # limits.max_calls: over all routes
    # freeswitch.switches, each complete (the section's keys filled in); empty: one switch, `freeswitch`.
    switches: tuple[FreeswitchSettings, ...] = ()
    outbound: OutboundSettings | None = None

    def trunk(self, name: str) -> Trunk:
        for t in self.trunks:
            if t.name == name:
                return t
        raise KeyError(name)

    def all_switches(self) -> tuple[FreeswitchSettings, ...]:
        return self.switches or (self.freeswitch,)

    def route(self, name: str) -> Route:
        for r in self.routes:
            if r.name == name:
                return r
        raise KeyError(name)
