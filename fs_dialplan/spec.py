"""The config's shape, once: allowed keys, required keys, patterns, ranges and enums.

The loader (:mod:`fs_dialplan.loader`) validates against these tables and the JSON Schema
(:mod:`fs_dialplan.schema`, ``just schema``) is generated from them, so the two cannot
drift. Patterns are written in the common subset of Python ``re`` and ECMA-262 regex (what
JSON Schema's ``pattern`` uses). Cross-field rules (a default connector, numbers that must
not repeat, a valid regex, CIDR host bits) live in the loader only; the schema is a guide
for editors, the loader is the authority.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import MappingProxyType
from typing import Mapping

__all__ = ["Key", "TOP", "FREESWITCH", "SWITCH", "AUTH", "FORK_SERVER", "HAPROXY", "CONNECTOR", "FALLBACK",
           "ROUTE_DEFAULTS", "ROUTE", "TRUNK", "PLAYBACK", "RECORDING", "RECORDING_FIELDS", "BUSY", "LIMITS",
           "OUTBOUND", "enum_pattern"]

E164 = r"^\+[1-9][0-9]{6,14}$"
NAME = r"^[a-z0-9][a-z0-9_-]{0,62}$"  # route and trunk names: URL path, file name, dialplan
ENV_NAME = r"^[A-Z_][A-Z0-9_]*$"
LANG = r"^[A-Za-z]{2,3}(-[A-Za-z0-9]{2,8})*$"
USERNAME = r"^[A-Za-z0-9_.-]{1,64}$"
SIP_USER = r"^[A-Za-z0-9_.+-]{1,64}$"
ABS_PATH = r"^/[A-Za-z0-9_./-]*$"
ABS_FILE = r"^/[A-Za-z0-9_./-]+$"
# A transfer target: a dialplan extension, or a SIP URI the fork server bridges to inline
# (uuid_transfer <uuid> bridge:sofia/external/<uri> inline). An inline dialplan splits on
# commas into applications, so the URI is kept to user@host[:port][;transport=...]: no comma,
# quote, space, brace, pipe or "$" can reach it. One definition, used by the loader, the
# connector protocol and the ESL command builder.
EXTENSION_TARGET = r"[0-9A-Za-z*#+_.-]{1,64}"
SIP_TARGET = r"[sS][iI][pP][sS]?:[A-Za-z0-9_.+%*~!-]{1,64}@[A-Za-z0-9.-]{1,190}(:[0-9]{1,5})?(;transport=(udp|tcp|tls))?"
TARGET = rf"^({EXTENSION_TARGET}|{SIP_TARGET})$"
DURATION = r"^[0-9]+(\.[0-9]+)?\s*(ms|s|m)?$"
_LABEL = r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
HOST = rf"^({_LABEL}(\.{_LABEL})*|\[[0-9A-Fa-f:.]+\])$"
HOST_PORT = rf"^({_LABEL}(\.{_LABEL})*|\[[0-9A-Fa-f:.]+\])(:[0-9]{{1,5}})?$"
CIDR = r"^[0-9A-Fa-f:.]+(/[0-9]{1,3})?$"  # shape only; the loader checks it with ipaddress

# Never in a config string: C0 and C1 controls and DEL, line/paragraph separators, and U+FFFE/U+FFFF
# (not XML 1.0 characters). The loader also refuses lone surrogates (not encodable).
UNSAFE_CHARS = r"[\x00-\x1f\x7f-\x9f\u2028\u2029\ufffe\uffff]"

ENV_EXPECT = "an environment variable NAME like VOICEFORK_ESL_PASSWORD (never the password itself)"


def enum_pattern(values: tuple[str, ...]) -> str:
    return "^(" + "|".join(v.replace(".", r"\.") for v in values) + ")$"


@dataclass(frozen=True, slots=True)
class Key:
    """One config key. ``kind``: str | int | seconds | bool | rate | map | list | names | json."""

    help: str
    kind: str = "str"
    required: bool = False
    pattern: str | None = None
    expected: str | None = None  # the "expected ..." wording of the loader's error
    lo: float | None = None
    hi: float | None = None
    step: int | None = None  # a multiple of this (ptimes)
    enum: tuple[str, ...] = ()
    keys: Mapping[str, "Key"] | None = None  # kind=map: a fixed set of sub-keys
    items: "Key | None" = None  # kind=list: each item; kind=names: each value of a named map
    min_items: int = 0
    literal: str | None = None  # a scalar accepted in place of the mapping (auth: none)
    none_words: tuple[str, ...] = ()  # scalars that mean "not set" (greeting: none)
    json_types: tuple[str, ...] = ("string",)  # what a YAML editor may see for a str key


def _section(**keys: Key) -> Mapping[str, Key]:
    return MappingProxyType(keys)


# A switch's name: in the fork metadata, a conf-tree directory, a metric label.
SWITCH_NAME = r"^[a-z0-9][a-z0-9_-]{0,31}$"
SIP_URI = r"^sips?:[A-Za-z0-9.-]{1,190}(:[0-9]{1,5})?(;transport=(udp|tcp|tls))?$"

SWITCH = _section(
    name=Key("The switch's name (its fork metadata carries it; its conf tree is rendered under it).", required=True,
             pattern=SWITCH_NAME, expected="a switch name of a-z, 0-9, _ and - (at most 32)"),
    esl_host=Key("Where the fork server reaches this switch's Event Socket.", required=True, pattern=HOST,
                 expected="a host name or IP address"),
    esl_port=Key("This switch's Event Socket port (default: freeswitch.esl_port).", "int", lo=1, hi=65535),
    esl_password_env=Key("NAME of the env var holding this switch's ESL password (default: freeswitch.esl_password_env).",
                         pattern=ENV_NAME, expected=ENV_EXPECT),
    sip_uri=Key("Where a SIP dispatcher sends calls for this switch (Kamailio's dispatcher.list).", pattern=SIP_URI,
                expected="a SIP URI like sip:10.0.0.11:5080"),
)

FREESWITCH = _section(
    esl_host=Key("Where the fork server reaches FreeSWITCH's Event Socket (with switches, each names its own)."),
    esl_port=Key("Event Socket port.", "int", lo=1, hi=65535),
    esl_password_env=Key("NAME of the env var holding the ESL password (no literal, no default).", required=True,
                         pattern=ENV_NAME, expected=ENV_EXPECT),
    esl_listen_ip=Key("The address the rendered event_socket.conf.xml binds to (loopback by default).",
                      pattern=r"^[0-9A-Fa-f:.]+$", expected="an IP address like 127.0.0.1"),
    esl_acl=Key("apply-inbound-acl of the Event Socket (an ACL list name; empty: none).", pattern=r"^[A-Za-z0-9_.-]*$",
                expected="an ACL list name like loopback.auto"),
    temp_dir=Key("FreeSWITCH's temp dir (in-band playAudio files land here)."),
    switches=Key("Several switches (scale-out): each its own Event Socket; keys it leaves out come from this section.",
                 "list", min_items=2, items=Key("A switch.", "map", keys=SWITCH)),
)

AUTH = _section(
    username=Key("Basic-auth user FreeSWITCH presents on the media socket.", required=True, pattern=USERNAME,
                 expected="a user name of letters, digits, _ . -"),
    password_env=Key("NAME of the env var holding the media-socket password.", required=True, pattern=ENV_NAME,
                     expected=ENV_EXPECT),
)

HAPROXY = _section(
    bind=Key("host:port HAProxy listens on for the switches' forks (fork_server.public_url should reach it).",
             required=True, pattern=HOST_PORT, expected="host:port like 10.0.0.5:8099"),
    servers=Key("The fork servers, host:port each (their listen address).", "list", required=True, min_items=1,
                items=Key("A fork server.", pattern=HOST_PORT, expected="host:port like 10.0.0.21:8099")),
    check_interval=Key("How often HAProxy checks each fork server's /healthz.", "seconds", lo=0.1, hi=60),
)

FORK_SERVER = _section(
    # URL patterns are for the schema; the loader parses URLs (urlsplit) with the same rules.
    public_url=Key("ws(s)://host:port at which FreeSWITCH reaches the fork server (no path).", required=True,
                   pattern=r"^wss?://[^\s'\"\\/?#$]+/?$", expected="a ws:// or wss:// URL"),
    listen_host=Key("Address the fork server listens on."),
    listen_port=Key("Port the fork server listens on.", "int", lo=0, hi=65535),
    auth=Key("Basic auth on the media socket; `none` disables it.", "map", required=True, keys=AUTH, literal="none"),
    max_metadata_bytes=Key("Largest fork metadata frame accepted.", "int", lo=256, hi=65536),
    drain_timeout=Key("On SIGTERM, how long live calls may run on.", "seconds", lo=0, hi=3600),
    drain_grace=Key("On SIGTERM, /healthz fails at once and new forks are still taken this long, so a load "
                    "balancer's health checks stop sending them first; then the listener closes.", "seconds", lo=0, hi=60),
    haproxy=Key("Fork servers behind HAProxy: `just render` writes haproxy.cfg balancing the media WebSockets.",
                "map", keys=HAPROXY),
)

CONNECTOR_PROTOCOLS = ("voicefork", "twilio")
ACCOUNT_SID = r"^AC[0-9a-f]{32}$"
CONNECTOR = _section(
    url=Key("ws:// or wss:// URL of the voice connector.", required=True, pattern=r"^wss?://[^\s'\"\\]+$",
            expected="a ws:// or wss:// URL"),
    headers=Key("Extra HTTP headers on the connector handshake.", "names", items=Key("Header value.")),
    token_env=Key("NAME of the env var with a bearer token for the connector.", pattern=ENV_NAME, expected=ENV_EXPECT),
    connect_timeout=Key("Give up connecting after this long; then the route's fallback runs.", "seconds", lo=0.05, hi=60),
    ping_interval=Key("WebSocket ping interval (pongs also confirm which caller audio the connector has read).",
                      "seconds", lo=0.1, hi=300),
    ping_timeout=Key("No pong within this long: the connector counts as dropped (half-open); then reconnect.",
                     "seconds", lo=0.1, hi=300),
    reconnect_attempts=Key("Reconnects after a mid-call drop.", "int", lo=0, hi=10),
    send_queue=Key("Caller audio buffered for a slow connector (oldest dropped).", "seconds", lo=0.1, hi=30),
    protocol=Key("The connector's wire: voicefork (voicefork.v1, the default) or twilio (Twilio Media Streams).",
                 enum=CONNECTOR_PROTOCOLS, expected="voicefork or twilio"),
    account_sid=Key("protocol twilio: the AccountSid the bot sees and its REST hang-up uses (AC + 32 hex).",
                    pattern=ACCOUNT_SID, expected="an account sid like AC followed by 32 lowercase hex digits"),
    auth_token_env=Key("protocol twilio: NAME of the env var with the auth token the bot's REST calls present "
                       "(HTTP Basic, account_sid as the user).", pattern=ENV_NAME, expected=ENV_EXPECT),
    playout_lead_ms=Key("File playback: an utterance that starts on a silent channel waits this long before its first "
                        "file, as margin for TTS paced in real time (default: 60 for protocol twilio, 0 for voicefork).",
                        "int", lo=0, hi=500),
)

FALLBACK_ACTIONS = ("hangup", "play", "transfer")
FALLBACK = _section(
    action=Key("What to do when the connector cannot be reached.", enum=FALLBACK_ACTIONS,
               expected="hangup, play or transfer"),
    file=Key("File to play (action: play).", pattern=ABS_FILE, expected="an absolute file path without spaces"),
    target=Key("Extension or sip: URI to transfer to (action: transfer).", pattern=TARGET,
               expected="an extension or a sip: URI", json_types=("string", "integer")),
)

BUSY_ACTIONS = ("reject", "play", "transfer")
BUSY = _section(
    action=Key("What a call over max_calls gets: reject (SIP 486 Busy Here), play (a file, then hang up) or "
               "transfer (to an extension).", enum=BUSY_ACTIONS, expected="reject, play or transfer"),
    file=Key("File to play (action: play).", pattern=ABS_FILE, expected="an absolute file path without spaces"),
    target=Key("Extension to transfer to (action: transfer; FreeSWITCH's limit transfers to extensions only).",
               pattern=f"^{EXTENSION_TARGET}$", expected="an extension like 1000", json_types=("string", "integer")),
)
MAX_CALLS = 100_000

# 0 is "auto": fork at the caller's codec rate, 8k on G.711, 16k on wideband codecs (issue 14: a 16k
# fork of a G.711 leg goes through FreeSWITCH's own 8k->16k resampler, 37 dB; ours gives 86 dB).
AUTO_RATE = 0
RATES = {"auto": AUTO_RATE, "8k": 8000, "8000": 8000, "16k": 16000, "16000": 16000}
TRUE_WORDS = ("true", "yes", "on")  # the loader compares lower-cased
FALSE_WORDS = ("false", "no", "off")

ROUTE_DEFAULTS = _section(
    connector=Key("Name of a connector under `connectors`."),
    rate=Key("Fork sample rate: auto (the caller's codec: 8k on G.711, 16k on wideband codecs), 8k or 16k.", "rate",
             enum=tuple(RATES), expected="auto, 8k or 16k"),
    language=Key("BCP-47 language tag passed to the connector.", pattern=LANG,
                 expected="a BCP-47 language tag like en-US"),
    greeting=Key("none, or a file FreeSWITCH plays while the connector connects.", pattern=ABS_FILE,
                 expected="none or an absolute file path without spaces", none_words=("none", "null", "")),
    max_duration=Key("Hang up after this long (sched_hangup).", "seconds", lo=1, hi=86400),
    fallback=Key("What happens when the connector is unreachable.", "map", keys=FALLBACK),
    max_calls=Key("Calls this route takes at once (FreeSWITCH's limit, hash backend); the next gets `busy`.",
                  "int", lo=1, hi=MAX_CALLS),
    busy=Key("What a call over max_calls (the route's or limits.max_calls) gets.", "map", keys=BUSY),
    recording=Key("Record the call: a stereo WAV (caller left, what the caller heard right) by FreeSWITCH's "
                  "record_session, under the top-level `recording.dir`.", "bool"),
)

ROUTE = _section(
    name=Key("Route name: a-z, 0-9, _ and - (it goes into the URL and the dialplan).", required=True, pattern=NAME,
             expected="a route name of a-z, 0-9, _ and - (it goes into the URL)"),
    number=Key("Exact E.164 number, quoted: \"+15551234567\" (give number or pattern).", pattern=E164,
               expected="E.164 like +15551234567"),
    pattern=Key("Regular expression on destination_number (give number or pattern).",
                expected="a regular expression"),
    metadata=Key("Free-form data passed to the connector in `start`; never rendered into the dialplan.", "json"),
    **ROUTE_DEFAULTS,
)

TRANSPORTS = ("udp", "tcp", "tls")
TRUNK = _section(
    name=Key("Gateway name (sofia/gateway/<name>/...; also the file name).", required=True, pattern=NAME,
             expected="a trunk name of a-z, 0-9, _ and -"),
    proxy=Key("host[:port] the gateway sends to, e.g. the trunk's termination URI example.pstn.twilio.com.",
              required=True, pattern=HOST_PORT, expected="a host or host:port like example.pstn.twilio.com (no sip: prefix)"),
    realm=Key("Digest realm, if the carrier needs one (default: the proxy).", pattern=HOST,
              expected="a host name like sip.example.com"),
    username=Key("Digest user (e.g. of a Twilio credential list); needs password_env.", pattern=SIP_USER,
                 expected="a SIP user of letters, digits, _ . + -"),
    password_env=Key("NAME of the env var holding the trunk password; needs username.", pattern=ENV_NAME,
                     expected=ENV_EXPECT),
    register=Key("Register with the carrier (Twilio Elastic SIP Trunking does not).", "bool"),
    transport=Key("SIP transport to the carrier: udp, tcp or tls.", enum=TRANSPORTS, expected="udp, tcp or tls"),
    acl_cidrs=Key("Signalling CIDRs inbound calls come from; the external profile refuses all others.", "list",
                  required=True, min_items=1,
                  items=Key("CIDR like 54.172.60.0/30.", pattern=CIDR, expected="a CIDR like 54.172.60.0/30")),
    caller_id_number=Key("E.164 number sent as the From user on calls out through the trunk.", pattern=E164,
                         expected="E.164 like +15551234567"),
)

PLAYBACK_COMMANDS = ("sendmsg", "uuid_broadcast")
PLAYBACK_TRANSPORTS = ("file", "inband", "stream")
PLAYBACK = _section(
    spool_dir=Key("Spool directory as the fork server sees it.", required=True),
    freeswitch_spool_dir=Key("The same directory as FreeSWITCH sees it.", required=True, pattern=ABS_PATH,
                             expected="an absolute path without spaces"),
    command=Key("sendmsg (gap-free) or uuid_broadcast.", enum=PLAYBACK_COMMANDS, expected="sendmsg or uuid_broadcast"),
    transport=Key("file (the default), inband (playAudio over the fork socket), or stream (binary audio over the "
                  "fork socket; needs the jambonz mod_audio_fork, AGPL outside jambonz).", enum=PLAYBACK_TRANSPORTS,
                  expected="file, inband or stream"),
    first_segment_ms=Key("First TTS segment of an utterance, ms.", "int", lo=40, hi=120, step=20),
    segment_ms=Key("Longest later TTS segment, ms (TTS faster than real time fills it: fewer files, fewer events).", "int",
                   lo=40, hi=5000, step=20),
    lead_ms=Key("uuid_broadcast lead trimmed at each cut, ms.", "int", lo=20, hi=1000, step=20),
    max_spool_bytes_per_call=Key("Spool limit per call.", "int", lo=64 << 10, hi=1 << 30),
)

# The only fields a recording's file name may hold: none of them comes from the caller.
RECORDING_FIELDS = ("date", "time", "route", "uuid")
RECORDING_FILE = r"^[A-Za-z0-9_{}-][A-Za-z0-9_./{}-]{0,199}\.wav$"
RECORDING = _section(
    dir=Key("Directory FreeSWITCH writes recordings under, as FreeSWITCH sees it (it makes missing directories).",
            required=True, pattern=ABS_FILE, expected="an absolute directory path without spaces"),
    fork_server_dir=Key("The same directory as the fork server sees it (sidecars, retention); default: dir.",
                        pattern=ABS_FILE, expected="an absolute directory path without spaces"),
    file=Key("File name under dir, from {date} {time} {route} {uuid} only (must hold {uuid}); ends .wav.",
             pattern=RECORDING_FILE, expected="a relative .wav path of letters, digits, _ . - / and the fields "
             "{date} {time} {route} {uuid}"),
    retention_days=Key("The fork server deletes recordings and sidecars older than this many days (0: keep all).",
                       "int", lo=0, hi=36500),
)

LIMITS = _section(
    max_calls=Key("Calls the switch takes at once over all routes (FreeSWITCH's limit, hash backend); the next "
                  "gets its route's `busy`.", "int", lo=1, hi=MAX_CALLS),
)

HTTP_URL = r"^https?://[^\s'\"\\\\#]+$"
OUTBOUND = _section(
    token_env=Key("NAME of the env var holding the Bearer token of POST/GET /v1/calls; `none` disables auth.",
                  required=True, pattern=ENV_NAME, expected=ENV_EXPECT + ", or none", none_words=("none",)),
    default_trunk=Key("The trunk a call goes out through when the request names none (required with several trunks).",
                      pattern=NAME, expected="a trunk name of a-z, 0-9, _ and -"),
    calls_per_second=Key("New calls accepted per second (a token bucket; over it: 429).", "int", lo=1, hi=1000),
    burst=Key("Calls accepted at once above the per-second rate (the bucket's size).", "int", lo=1, hi=10000),
    max_pending=Key("Calls originating (not yet answered or failed) at once; over it: 429.", "int", lo=1, hi=10000),
    default_timeout=Key("How long a call rings before it is no-answer, when the request gives no timeout.", "seconds",
                        lo=5, hi=120),
    status_webhook=Key("http(s) URL the fork server POSTs each status change of a call to (JSON).", pattern=HTTP_URL,
                       expected="an http:// or https:// URL"),
)

TOP = _section(
    freeswitch=Key("FreeSWITCH's Event Socket.", "map", required=True, keys=FREESWITCH),
    fork_server=Key("The fork server as FreeSWITCH reaches it.", "map", required=True, keys=FORK_SERVER),
    connectors=Key("Named voice-connector endpoints.", "names", required=True, items=Key("A connector.", "map", keys=CONNECTOR)),
    defaults=Key("Route settings every route gets unless it says otherwise.", "map", keys=ROUTE_DEFAULTS),
    routes=Key("Which number goes to which connector; first match wins.", "list", required=True,
               items=Key("A route.", "map", keys=ROUTE)),
    trunks=Key("SIP trunks: gateways and the signalling ACL.", "list", items=Key("A trunk.", "map", keys=TRUNK)),
    playback=Key("Where TTS segments are written and how they are played.", "map", required=True, keys=PLAYBACK),
    recording=Key("Where recorded calls go (routes with recording: true).", "map", keys=RECORDING),
    limits=Key("Limits over all routes.", "map", keys=LIMITS),
    outbound=Key("Outbound calls: POST /v1/calls on the fork server's port originates through a trunk into a route.",
                 "map", keys=OUTBOUND),
)
