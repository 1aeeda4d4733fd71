"""Property tests of config → XML (hypothesis; budget from tests/conftest.py profiles).

1. Any valid generated config (routes with numbers or patterns, rates, languages, greetings,
   durations, fallbacks, metadata, defaults; trunks) renders to well-formed XML whose
   extensions give the route data back, parsed with xml.etree and, for the fork action,
   with the emulator's REF argument parser.
2. Any string in any config slot or secret either renders inert or is refused with a
   ConfigError (file:line: first) or RenderError: the XML keeps its shape, no ${ or $${
   but ours, the fork arguments stay six tokens.
"""

from __future__ import annotations

import ipaddress
import json
import re
import xml.etree.ElementTree as ET

import jsonschema
import yaml
from hypothesis import event, given, note, strategies as st

from fs_dialplan import ConfigError, parse_config, spec
from fs_dialplan.errors import RenderError
from fs_dialplan.model import Fallback
from fs_dialplan.render import ACL_FILE, DIALPLAN_FILE, render
from fs_dialplan.schema import build_schema
from testbed.freeswitch.expand import expand, preprocess
from testbed.freeswitch.fork_args import ForkCommand, parse_fork_command

PUBLIC_URL = "ws://127.0.0.1:8099"
VALIDATOR = jsonschema.Draft7Validator(build_schema())
RATE_TOKEN = {8000: "8k", 16000: "16k"}
BUILTIN = {"max_calls": None, "busy": ("reject", None), "rate": 0, "language": "en-US", "greeting": None, "max_duration": None, "fallback": Fallback(),
           "recording": False}

names = st.from_regex(r"[a-z0-9][a-z0-9_-]{0,15}", fullmatch=True)
numbers = st.from_regex(r"\+[1-9][0-9]{6,14}", fullmatch=True)
# Valid regexes, some with characters XML must escape (< > & ' ") or a space.
patterns = st.one_of(
    st.sampled_from([r"^\+44", r"^\+1(?P<area>[0-9]{3})", "^\\+49(?:\"|')?[0-9]+$", r"^(?:\+|00)33[&<>]?[0-9]*",
                     r"^\+81\d{9,10}$", r"^\+7 ?9"]),
    st.from_regex(r"\^\\\+[1-9][0-9]{0,4}", fullmatch=True),
)
languages = st.from_regex(r"[A-Za-z]{2,3}(-[A-Za-z0-9]{2,8}){0,2}", fullmatch=True)
files = st.from_regex(r"/[A-Za-z0-9_./-]{1,30}", fullmatch=True)
targets = st.one_of(st.from_regex(r"[0-9A-Za-z*#+_.-]{1,12}", fullmatch=True),
                    st.from_regex(r"sips?:[a-z0-9]{1,8}@[a-z0-9.]{1,12}", fullmatch=True))
fallbacks = st.one_of(
    st.just(({"action": "hangup"}, Fallback("hangup"))),
    files.map(lambda f: ({"action": "play", "file": f}, Fallback("play", file=f))),
    targets.map(lambda t: ({"action": "transfer", "target": t}, Fallback("transfer", target=t))),
)
rates = st.sampled_from([("8k", 8000), ("16k", 16000), (8000, 8000), (16000, 16000), ("16000", 16000), ("auto", 0)])
durations = st.integers(1, 86400).flatmap(
    lambda n: st.sampled_from([(n, n), (f"{n}s", n)] + ([(f"{n // 60}m", n)] if n % 60 == 0 else [])))
greetings = st.one_of(st.just(("none", None)), files.map(lambda f: (f, f)))
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.text(max_size=20),
    lambda c: st.lists(c, max_size=3) | st.dictionaries(st.from_regex(r"[a-z_][a-z0-9_]{0,8}", fullmatch=True), c, max_size=3),
    max_leaves=4,
)
metadata = st.dictionaries(st.from_regex(r"[a-z_][a-z0-9_]{0,8}", fullmatch=True), json_values, max_size=3)
secrets = st.from_regex(r"[A-Za-z0-9_.+=/-]{1,24}", fullmatch=True).filter(lambda s: s != "ClueCon")
hosts = st.from_regex(r"[a-z0-9]([a-z0-9-]{0,10}[a-z0-9])?(\.[a-z0-9]([a-z0-9-]{0,10}[a-z0-9])?){0,3}", fullmatch=True)
networks = st.one_of(
    st.tuples(st.ip_addresses(v=4), st.integers(1, 32)),
    st.tuples(st.ip_addresses(v=6), st.integers(1, 128)),
).map(lambda ip_p: str(ipaddress.ip_network(f"{ip_p[0]}/{ip_p[1]}", strict=False)))

busies = st.one_of(
    st.just(({"action": "reject"}, ("reject", None))),
    files.map(lambda f: ({"action": "play", "file": f}, ("play", f))),
    st.from_regex(r"[0-9A-Za-z*#+_.-]{1,12}", fullmatch=True).map(lambda t: ({"action": "transfer", "target": t}, ("transfer", t))),
)
ROUTE_FIELDS = {"max_calls": st.integers(1, 100_000).map(lambda n: (n, n)), "busy": busies, "rate": rates, "language": languages.map(lambda v: (v, v)), "greeting": greetings,
                "max_duration": durations, "fallback": fallbacks, "recording": st.booleans().map(lambda b: (b, b))}


@st.composite
def settings_subset(draw, connectors):
    """Some route fields, as (yaml value, expected value) pairs."""
    out = {}
    for key, strategy in ROUTE_FIELDS.items():
        if draw(st.booleans()):
            out[key] = draw(strategy)
    if draw(st.booleans()):
        c = draw(st.sampled_from(connectors))
        out["connector"] = (c, c)
    return out


@st.composite
def trunk_list(draw):
    tnames = draw(st.lists(names, max_size=3, unique=True))
    trunks, expect, env = [], [], {}
    for i, name in enumerate(tnames):
        proxy = draw(hosts) + draw(st.sampled_from(["", ":5060", ":5061", ":15080"]))
        t = {"name": name, "proxy": proxy, "acl_cidrs": draw(st.lists(networks, min_size=1, max_size=4, unique=True))}
        e = {"name": name, "proxy": proxy, "cidrs": list(t["acl_cidrs"]), "transport": "udp", "register": False,
             "username": None, "password": None, "caller_id": None, "realm": None}
        if draw(st.booleans()):
            t["transport"] = e["transport"] = draw(st.sampled_from(spec.TRANSPORTS))
        if draw(st.booleans()):
            t["realm"] = e["realm"] = draw(hosts)
        if draw(st.booleans()):
            t["username"] = e["username"] = draw(st.from_regex(r"[A-Za-z0-9_.+-]{1,20}", fullmatch=True))
            t["password_env"] = f"TRUNK_PW_{i}"
            env[t["password_env"]] = e["password"] = draw(secrets)
            if draw(st.booleans()):
                t["register"] = e["register"] = draw(st.booleans())
        if draw(st.booleans()):
            t["caller_id_number"] = e["caller_id"] = draw(numbers)
        trunks.append(t)
        expect.append(e)
    return trunks, expect, env


@st.composite
def configs(draw):
    connectors = draw(st.lists(names, min_size=1, max_size=3, unique=True))
    defaults = draw(settings_subset(connectors))
    if "connector" not in defaults and draw(st.booleans()):
        defaults["connector"] = (connectors[0], connectors[0])
    rnames = draw(st.lists(names, min_size=1, max_size=4, unique=True))
    rnumbers = iter(draw(st.lists(numbers, min_size=len(rnames), max_size=len(rnames), unique=True)))
    routes, expect = [], []
    for i, name in enumerate(rnames):
        own = draw(settings_subset(connectors))
        if "connector" not in own and "connector" not in defaults:
            own["connector"] = (connectors[0], connectors[0])
        route = {"name": name}
        e = {"name": name, "number": None, "pattern": None, "probe": f"vf-probe-{i}-zq"}
        if draw(st.booleans()):
            route["number"] = e["number"] = next(rnumbers)
        else:
            route["pattern"] = e["pattern"] = draw(patterns)
        route.update({k: v for k, (v, _) in own.items()})
        meta = {**draw(metadata), "probe": e["probe"]}  # must never reach the XML
        route["metadata"] = e["metadata"] = meta
        for key in (*ROUTE_FIELDS, "connector"):
            e[key] = own[key][1] if key in own else defaults[key][1] if key in defaults else BUILTIN.get(key)
        routes.append(route)
        expect.append(e)
    trunks, texpect, env = draw(trunk_list())
    auth = draw(st.booleans())
    env.update({"ESL_PW": draw(secrets), "FORK_PW": draw(secrets)})
    data = {
        "freeswitch": {"esl_password_env": "ESL_PW"},
        "fork_server": {"public_url": PUBLIC_URL,
                        "auth": {"username": "freeswitch", "password_env": "FORK_PW"} if auth else "none"},
        "connectors": {c: {"url": f"ws://127.0.0.1:8765/{c}"} for c in connectors},
        **({"defaults": {k: v for k, (v, _) in defaults.items()}} if defaults else {}),
        "routes": routes,
        **({"trunks": trunks} if trunks else {}),
        "playback": {"spool_dir": "/tmp/vf", "freeswitch_spool_dir": "/tmp/vf"},
        "recording": {"dir": "/rec", "file": "{date}/{route}-{time}-{uuid}.wav"},
        "limits": {"max_calls": (total := draw(st.integers(1, 100_000)))},
    }
    return data, env, {"routes": expect, "trunks": texpect, "auth": auth, "max_calls": total}


def fork_command(data: str, auto_rate: str = "8k") -> ForkCommand:
    """Expand the fork action as FreeSWITCH would and parse the API line as mod_audio_fork does
    (``auto_rate``: what the switch picked at answer for a ``rate: auto`` route)."""
    calls = []
    channel = {"uuid": "the-uuid", "voicefork_fork_rate": auto_rate}
    expand(data, var=channel.get, api=lambda f, a: calls.append((f, a)) or "+OK\n")
    assert [f for f, _ in calls] == ["uuid_audio_fork"]
    cmd = parse_fork_command(calls[0][1])
    assert isinstance(cmd, ForkCommand), cmd
    return cmd


@given(configs())
def test_generated_config_round_trips_through_the_xml(case):
    data, env, expect = case
    text = yaml.safe_dump(data, sort_keys=False, allow_unicode=True)
    note(text)
    config = parse_config(text, "gen.yaml")
    files = render(config, env)
    roots = {p: ET.fromstring(t) for p, t in files.items() if p.endswith(".xml")}
    # The media-socket credentials as FreeSWITCH's preprocessor sets them: globals, exactly.
    globals_: dict[str, str] = {}
    preprocess(files[DIALPLAN_FILE], globals_)
    assert globals_ == ({"MOD_AUDIO_BASIC_AUTH_USERNAME": "freeswitch", "MOD_AUDIO_BASIC_AUTH_PASSWORD": env["FORK_PW"]}
                        if expect["auth"] else {})
    # Metadata as the YAML holds it: PyYAML's emitter writes a raw U+0085 into a single-quoted
    # scalar, which reads back as a space; the loader can only see what the file says.
    as_written = [r["metadata"] for r in yaml.safe_load(text)["routes"]]

    exts = roots[DIALPLAN_FILE].findall("extension")
    busy = [r for r in expect["routes"] if r["busy"][0] == "play"]  # their extensions come first
    for r, ext in zip(busy, exts):
        conds = [(c.get("field"), c.get("expression"), [(a.get("application"), a.get("data")) for a in c]) for c in ext]
        assert conds == [("${voicefork_route}", f"^{r['name']}$", []),
                         ("destination_number", f"^voicefork_busy_{r['name']}$",
                          [("answer", None), ("playback", r["busy"][1]), ("hangup", "USER_BUSY")])]
    exts = exts[len(busy):]
    assert [e.get("name") for e in exts] == [f"voicefork_{r['name']}" for r in expect["routes"]]
    for r, ext, meta in zip(expect["routes"], exts, as_written):
        (cond,) = ext.findall("condition")
        expr = cond.get("expression")
        assert cond.get("field") == "destination_number"
        if r["number"]:
            assert expr == "^" + re.escape(r["number"]) + "$" and re.fullmatch(expr, r["number"])
        else:
            assert expr == r["pattern"]
        actions = [(a.get("application"), a.get("data")) for a in cond.findall("action")]
        apps = [a for a, _ in actions]
        # The limits before answer: over all routes, then the route's; a call over either is sent on.
        where = {"reject": "!USER_BUSY", "play": f"voicefork_busy_{r['name']} XML public",
                 "transfer": f"{r['busy'][1]} XML default"}[r["busy"][0]]
        limits = [("limit", f"hash voicefork all_routes {expect['max_calls']} {where}")]
        if r["max_calls"]:
            limits.append(("limit", f"hash voicefork route_{r['name']} {r['max_calls']} {where}"))
        assert actions[: 2 + len(limits)] == [("set", f"voicefork_route={r['name']}"), *limits, ("set", "jitterbuffer_msec=20")]
        apps = apps[len(limits):]
        assert apps[2] == "answer" and apps[-1] == "park"
        assert not [d for a, d in actions if "MOD_AUDIO_BASIC_AUTH_" in (d or "")]  # globals, never channel variables
        (fork,) = [d for a, d in actions if a == "set" and d.startswith("fork_result=")]
        auto = [d for a, d in actions if a == "set" and d.startswith("voicefork_fork_rate=")]
        assert auto == (["voicefork_fork_rate=${cond(${read_rate} > 8000 ? 16k : 8k)}"] if r["rate"] == 0 else [])
        for picked, hz in (("8k", 8000), ("16k", 16000)) if r["rate"] == 0 else ((None, r["rate"]),):
            cmd = fork_command(fork, picked or "")
            assert (cmd.uuid, cmd.verb, cmd.url, cmd.mix, cmd.rate, cmd.bugname) == (
                "the-uuid", "start", f"{PUBLIC_URL}/calls/{r['name']}", "mono", hz, "audio_fork")
            assert json.loads(cmd.metadata) == {"route": r["name"], "uuid": "the-uuid", "rate": RATE_TOKEN[hz]}
        assert [d for a, d in actions if a == "sched_hangup"] == (
            [f"+{r['max_duration']} ALLOTTED_TIMEOUT"] if r["max_duration"] else [])
        assert [d for a, d in actions if a == "playback"] == ([r["greeting"]] if r["greeting"] else [])
        # A recorded route names its file from the switch's clock, the route and the uuid only.
        record = [(a, d) for a, d in actions if a == "record_session" or (d or "").startswith(("RECORD_", "voicefork_recording="))]
        assert record == ([("set", "RECORD_STEREO=true"),
                           ("set", f"voicefork_recording=/rec/${{strftime(%Y-%m-%d)}}/{r['name']}-${{strftime(%H%M%S)}}-${{uuid}}.wav"),
                           ("record_session", "${voicefork_recording}")] if r["recording"] else [])
        # What the fork server looks up by voicefork_route (connector, fallback, metadata, ...).
        route = config.route(r["name"])
        assert (route.connector, route.language, route.fallback, route.recording, dict(route.metadata)) == (
            r["connector"], r["language"], r["fallback"], r["recording"], meta)
        assert (route.max_calls, route.busy.action, route.busy.file or route.busy.target) == (r["max_calls"], *r["busy"])

    for t in expect["trunks"]:
        (gw,) = roots[f"sip_profiles/external/{t['name']}.xml"].findall("gateway")
        params = {p.get("name"): p.get("value") for p in gw.findall("param")}
        assert gw.get("name") == t["name"] and params["proxy"] == t["proxy"]
        assert params["register-transport"] == t["transport"] and params["register"] == str(t["register"]).lower()
        assert (params.get("username"), params.get("password"), params.get("realm")) == (t["username"], t["password"], t["realm"])
        assert params.get("from-user") == t["caller_id"]
        assert params["caller-id-in-from"] == ("false" if t["caller_id"] else "true")
        assert params["context"] == "public"
    nodes = roots[ACL_FILE].findall("network-lists/list/node")
    assert [n.get("cidr") for n in nodes] == [c for t in expect["trunks"] for c in t["cidrs"]]
    assert len([p for p in files if p.startswith("sip_profiles/")]) == len(expect["trunks"])

    for r in expect["routes"]:
        assert not any(r["probe"] in t for t in files.values())
    assert VALIDATOR.is_valid(yaml.safe_load(text))  # what the loader takes, the schema takes


# --- any string in any slot -----------------------------------------------------------------


def base() -> dict:
    return {
        "freeswitch": {"esl_password_env": "ESL_PW", "esl_host": "127.0.0.1", "esl_listen_ip": "127.0.0.1",
                       "esl_acl": "loopback.auto", "temp_dir": "/tmp"},
        "fork_server": {"public_url": PUBLIC_URL, "auth": {"username": "freeswitch", "password_env": "FORK_PW"}},
        "connectors": {"bot": {"url": "ws://127.0.0.1:8765/bot", "headers": {"X-Tenant": "acme"}}},
        "routes": [
            {"name": "support", "number": "+15551234567", "connector": "bot", "greeting": "/tmp/hello.wav",
             "language": "en-US", "fallback": {"action": "transfer", "target": "1000"}, "metadata": {"k": "v"},
             "recording": True, "max_calls": 5, "busy": {"action": "play", "file": "/tmp/busy.wav"}},
            {"name": "uk", "pattern": r"^\+44", "connector": "bot", "fallback": {"action": "play", "file": "/tmp/sorry.wav"},
             "max_calls": 3, "busy": {"action": "transfer", "target": "2000"}},
        ],
        "trunks": [{"name": "carrier", "proxy": "sip.example.com", "realm": "example.com", "username": "vf",
                    "password_env": "TRUNK_PW", "caller_id_number": "+15557654321", "acl_cidrs": ["192.0.2.0/24"]}],
        "playback": {"spool_dir": "/var/spool/vf", "freeswitch_spool_dir": "/var/spool/vf"},
        "recording": {"dir": "/var/rec", "file": "{date}/{route}-{uuid}.wav"},
    }


ENV = {"ESL_PW": "esl-secret", "FORK_PW": "fork-secret", "TRUNK_PW": "trunk-secret"}
SLOTS = [
    "freeswitch.esl_host", "freeswitch.esl_listen_ip", "freeswitch.esl_acl", "freeswitch.temp_dir",
    "fork_server.public_url", "fork_server.auth.username", "connectors.bot.url", "connectors.bot.headers.X-Tenant",
    "routes.0.name", "routes.0.number", "routes.0.greeting", "routes.0.language", "routes.0.fallback.target",
    "routes.0.metadata.k", "routes.0.connector", "routes.1.pattern", "routes.1.fallback.file",
    "trunks.0.name", "trunks.0.proxy", "trunks.0.realm", "trunks.0.username", "trunks.0.caller_id_number",
    "trunks.0.acl_cidrs.0", "playback.spool_dir", "playback.freeswitch_spool_dir",
    "recording.dir", "recording.file", "routes.0.busy.file", "routes.1.busy.target",
    "env:ESL_PW", "env:FORK_PW", "env:TRUNK_PW",
]
# Slots whose empty value legitimately drops an element: compared with a twin holding the
# canonical empty value instead (greeting: none; esl_acl: "" renders no apply-inbound-acl).
OPTIONAL = {"routes.0.greeting": (lambda c: c.routes[0].greeting, "none"),
            "freeswitch.esl_acl": (lambda c: c.freeswitch.esl_acl, ""),
            "trunks.0.realm": (lambda c: c.trunks[0].realm, None)}
NASTY = ["${uuid}", "$${hostname}", "${system(id)}", "$1", "a b", "'", '"', "<", ">", "&", "&amp;", "]]>", "-->",
         "<!--", "\n", "\r", "\t", "\x00", "\x1b", "\x85", "\u2028", "\ufffe", "é", "😀", "\\", "{", "}", ",",
         ";", "=", "/", "%", "+15551234567", "/calls/x", "ws://h", "none", "mono 8k"]
values = st.one_of(
    st.text(max_size=40),
    st.lists(st.one_of(st.sampled_from(NASTY), st.text(max_size=4)), min_size=1, max_size=6).map("".join),
)


def _put(data: dict, path: str, value) -> None:
    *parents, last = path.split(".")
    for p in parents:
        data = data[int(p)] if isinstance(data, list) else data[p]
    data[int(last) if isinstance(data, list) else last] = value


def skeleton(files: dict[str, str]) -> list:
    """Every XML file's elements and attribute names, file names left out (a trunk name is one)."""
    return sorted(tuple((e.tag, tuple(sorted(e.attrib))) for e in ET.fromstring(t).iter())
                  for p, t in files.items() if p.endswith(".xml"))


def _render_yaml(data: dict, env: dict) -> dict[str, str]:
    return render(parse_config(yaml.safe_dump(data, sort_keys=False, allow_unicode=True), "cfg.yaml"), env)


BASELINE = skeleton(_render_yaml(base(), ENV))
_FORK = re.compile(r"fork_result=\$\{uuid_audio_fork\(\$\{uuid\} (.*)\)\}")


@given(st.sampled_from(SLOTS), values)
def test_any_string_value_renders_inert_or_is_refused(slot, value):
    data, env = base(), dict(ENV)
    if slot.startswith("env:"):
        env[slot[4:]] = value
    else:
        _put(data, slot, value)
    text = yaml.safe_dump(data, sort_keys=False, allow_unicode=True)
    note(text)
    try:
        config = parse_config(text, "cfg.yaml")
    except ConfigError as err:
        assert err.issues and all(re.match(r"cfg\.yaml:\d+: \S", str(i)) for i in err.issues), err
        event("refused by the loader")
        return
    try:
        files = render(config, env)
    except RenderError as err:
        assert str(err).strip()
        event("refused by the renderer")
        return
    event("rendered")

    # The shape is the base config's (or its twin without the optional element).
    if slot in OPTIONAL and not OPTIONAL[slot][0](config):
        twin = base()
        _put(twin, slot, OPTIONAL[slot][1])
        assert skeleton(files) == skeleton(_render_yaml(twin, ENV))
    else:
        assert skeleton(files) == BASELINE
    for path, body in files.items():
        assert not re.search(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u2028\u2029\ufffe\uffff]", body), path
        globals_: dict[str, str] = {}
        out = preprocess(body, globals_)
        # The XML preprocessor changes nothing but take out its own "set" lines (the credentials).
        assert "$${" not in body and out == "".join(l for l in body.splitlines(keepends=True) if "X-PRE-PROCESS" not in l), path
        assert set(globals_) <= {"MOD_AUDIO_BASIC_AUTH_USERNAME", "MOD_AUDIO_BASIC_AUTH_PASSWORD"}, path
        if path.endswith(".xml") and path != DIALPLAN_FILE:
            assert "${" not in body, path
    dialplan = ET.fromstring(files[DIALPLAN_FILE])
    # ours: the API call and ${uuid} twice; rate: auto adds the variable twice and ${cond(${read_rate}
    autos = sum(r.rate == 0 for r in config.routes)
    # recording: the path's ${strftime(...)} and ${uuid} fields and record_session's variable;
    # busy: play: the busy extension's condition on ${voicefork_route}.
    rec = config.recording
    per_recording = 1 + sum(rec.file.count("{%s}" % f) for f in ("date", "time", "uuid")) if rec else 0
    recorded = sum(r.recording for r in config.routes)
    busy_play = sum(r.busy.action == "play" and bool(r.max_calls or config.max_calls) for r in config.routes)
    assert files[DIALPLAN_FILE].count("${") == 3 * len(config.routes) + 4 * autos + per_recording * recorded + busy_play
    for action in dialplan.iter("action"):
        data_ = action.get("data") or ""
        assert not re.search(r"\$[0-9]", data_)  # no regex-capture substitution
        m = _FORK.fullmatch(data_)
        if m:  # six space-separated tokens, nothing to quote or escape (REF "How arguments are parsed")
            args = m.group(1).split(" ")
            assert len(args) == 5 and args[0] == "start" and args[2] == "mono" and args[3] in ("8k", "16k", "${voicefork_fork_rate}")
            assert not re.search(r"['\\]", m.group(1)) and '"' not in args[1]  # JSON's own " are fine (REF)
            cmd = fork_command(data_)
            assert cmd.url == args[1] and json.loads(cmd.metadata)["uuid"] == "the-uuid"
    if slot.startswith("env:"):  # a secret that renders comes back exactly where it belongs
        everything = [a.get("value") for f, t in files.items() if f.endswith(".xml") for a in ET.fromstring(t).iter("param")]
        everything += [a.get("data") for a in dialplan.iter("action")]
        everything += [p.get("data") for p in dialplan.iter("X-PRE-PROCESS")]
        assert value in everything or f"MOD_AUDIO_BASIC_AUTH_PASSWORD={value}" in everything


def test_the_injection_baseline_is_the_full_shape():
    # so the property above compares against a config that has every optional element
    files = _render_yaml(base(), ENV)
    assert "sip_profiles/external/carrier.xml" in files
    assert any(a.get("application") == "playback" for a in ET.fromstring(files[DIALPLAN_FILE]).iter("action"))
