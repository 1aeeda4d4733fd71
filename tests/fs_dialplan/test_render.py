"""Rendering: golden files for the example config, the fork action exactly as REF says works,
determinism, secrets, and injection attempts that must fail or stay inert."""

import os
import re
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from hypothesis import given, settings, strategies as st

from fs_dialplan import load_config, parse_config
from fs_dialplan.errors import ConfigError, RenderError
from fs_dialplan.render import DIALPLAN_FILE, render

ROOT = Path(__file__).resolve().parents[2]
GOLDEN = Path(__file__).parent / "golden"
ENV = {"VOICEFORK_ESL_PASSWORD": "esl-golden", "VOICEFORK_FORK_PASSWORD": "fork-golden", "VOICEFORK_TWILIO_PASSWORD": "twilio-golden"}


@pytest.fixture(scope="module")
def example():
    return load_config(str(ROOT / "config" / "voicefork.yaml"))


def test_golden_files(example):
    files = render(example, ENV)
    if os.environ.get("UPDATE_GOLDEN"):
        for rel, text in files.items():
            (GOLDEN / rel).parent.mkdir(parents=True, exist_ok=True)
            (GOLDEN / rel).write_text(text)
    golden = {str(p.relative_to(GOLDEN)): p.read_text() for p in GOLDEN.rglob("*") if p.is_file()}
    assert golden == files


def test_fork_action_is_the_observed_working_form(example):
    root = ET.fromstring(render(example, ENV)[DIALPLAN_FILE])
    ext = next(e for e in root.iter("extension") if e.get("name") == "voicefork_uk-line")  # rate: 16k
    data = [a.get("data") for a in ext.iter("action")]
    assert 'fork_result=${uuid_audio_fork(${uuid} start ws://127.0.0.1:8099/calls/uk-line mono 16k {"route":"uk-line","uuid":"${uuid}","rate":"16k"})}' in data
    apps = [a.get("application") for a in ext.iter("action")]
    # The jitter buffer is set before answer (the RTP session is made then), park comes last.
    # (uk-line has max_calls: its limit comes first, before answer, so a reject is a 486.)
    assert apps[:4] == ["set", "limit", "set", "answer"] and data[2] == "jitterbuffer_msec=20" and apps[-1] == "park"
    assert "verbose_events" not in apps  # it put every channel variable into every event


def test_rate_auto_lets_the_switch_pick_the_fork_rate_from_the_codec(example):
    root = ET.fromstring(render(example, ENV)[DIALPLAN_FILE])
    ext = next(e for e in root.iter("extension") if e.get("name") == "voicefork_support")  # rate: auto (defaults)
    assert ext.find("condition").get("expression") == r"^\+15551234567$"
    data = [a.get("data") for a in ext.iter("action")]
    assert data[3] == "voicefork_fork_rate=${cond(${read_rate} > 8000 ? 16k : 8k)}"  # right after answer
    assert data[4] == ('fork_result=${uuid_audio_fork(${uuid} start ws://127.0.0.1:8099/calls/support mono '
                       '${voicefork_fork_rate} {"route":"support","uuid":"${uuid}","rate":"${voicefork_fork_rate}"})}')


def test_media_socket_credentials_are_globals_never_channel_variables(example):
    text = render(example, ENV)[DIALPLAN_FILE]
    root = ET.fromstring(text)
    assert [(p.get("cmd"), p.get("data")) for p in root.findall("X-PRE-PROCESS")] == [
        ("set", "MOD_AUDIO_BASIC_AUTH_USERNAME=freeswitch"), ("set", "MOD_AUDIO_BASIC_AUTH_PASSWORD=fork-golden")]
    assert not [a for a in root.iter("action") if "MOD_AUDIO_BASIC_AUTH" in (a.get("data") or "")]
    # FreeSWITCH's preprocessor reads data="..." raw, line by line: each on its own line.
    assert all(line.strip().startswith("<X-PRE-PROCESS") for line in text.splitlines() if "X-PRE-PROCESS" in line)
    for bad in ("a&b", "a<b", "a>b"):
        with pytest.raises(RenderError, match="preprocessor"):
            render(example, {**ENV, "VOICEFORK_FORK_PASSWORD": bad})


def test_rendering_is_deterministic(example):
    assert render(example, ENV) == render(example, ENV)


def test_secrets_come_from_the_environment_and_are_never_defaulted(example):
    with pytest.raises(RenderError, match="VOICEFORK_ESL_PASSWORD is not set"):
        render(example, {"VOICEFORK_FORK_PASSWORD": "x"})
    with pytest.raises(RenderError, match="well-known default"):
        render(example, {**ENV, "VOICEFORK_ESL_PASSWORD": "ClueCon"})
    for bad in ("a b", "x${y}", "q'uote", 'q"uote', "new\nline"):
        with pytest.raises(RenderError):
            render(example, {**ENV, "VOICEFORK_FORK_PASSWORD": bad})


def test_event_socket_binds_to_loopback_by_default(example):
    root = ET.fromstring(render(example, ENV)["autoload_configs/event_socket.conf.xml"])
    params = {p.get("name"): p.get("value") for p in root.iter("param")}
    assert params["listen-ip"] == "127.0.0.1" and params["password"] == "esl-golden"


BASE = """freeswitch: {{esl_password_env: E}}
fork_server: {{public_url: "ws://127.0.0.1:8099", auth: {{username: fs, password_env: F}}}}
connectors: {{bot: {{url: "ws://127.0.0.1:8765/bot"}}}}
playback: {{spool_dir: /tmp/vf, freeswitch_spool_dir: /tmp/vf}}
routes:
  - {{name: r1, number: "+15551234567", connector: bot, greeting: {greeting}}}
"""


def try_render(greeting_yaml):
    text = BASE.format(greeting=greeting_yaml)
    config = parse_config(text, "<test>")
    return render(config, {"E": "e1", "F": "f1"})


@pytest.mark.parametrize("value", ["'${system(rm -rf /)}'", "'$${hostname}'", "'/a b.wav'", "'/a\"b.wav'", '"/a\\nb.wav"'])
def test_injection_through_a_yaml_value_is_refused(value):
    with pytest.raises((ConfigError, RenderError)):
        try_render(value)


@settings(max_examples=150, deadline=None)
@given(st.text(min_size=1, max_size=40))
def test_any_greeting_renders_inert_or_is_refused(value):
    import json

    try:
        files = try_render(json.dumps(value))
    except (ConfigError, RenderError):
        return
    root = ET.fromstring(files[DIALPLAN_FILE])
    played = [a.get("data") for a in root.iter("action") if a.get("application") == "playback"]
    if value in ("none", "null"):  # the config's words for "no greeting"
        assert played == []
        return
    assert played == [value]  # round-trips exactly through the XML escaping
    # only ours: ${uuid_audio_fork(, ${uuid} twice, the rate variable twice and ${cond(${read_rate}
    assert files[DIALPLAN_FILE].count("${") == 7
    assert not re.search(r"[\s'\"]", value)


# --- trunks: gateways and the ACL ---------------------------------------------------------

from fs_dialplan.render import ACL_FILE, verify  # noqa: E402

GATEWAY = "sip_profiles/external/twilio.xml"


def test_gateway_is_rendered_with_the_password_from_the_environment(example):
    root = ET.fromstring(render(example, ENV)[GATEWAY])
    (gw,) = root.findall("gateway")
    params = {p.get("name"): p.get("value") for p in gw.iter("param")}
    assert gw.get("name") == "twilio"
    assert params["proxy"] == "example.pstn.twilio.com" and params["password"] == "twilio-golden"
    assert params["register"] == "false" and params["register-transport"] == "udp"
    # From carries the trunk's number; calls in through the gateway land in public, dialled number
    assert params["caller-id-in-from"] == "false" and params["from-user"] == "+15551234567"
    assert params["context"] == "public" and params["extension"] == "auto_to_user"


def test_acl_lists_every_trunk_cidr_and_denies_the_rest(example):
    root = ET.fromstring(render(example, ENV)[ACL_FILE])
    (lst,) = root.iter("list")
    assert lst.get("name") == "voicefork_trunks" and lst.get("default") == "deny"
    assert [n.get("cidr") for n in lst] == list(example.trunks[0].acl_cidrs)
    assert {n.get("type") for n in lst} == {"allow"}


def test_trunk_password_is_never_defaulted_and_checked_like_every_secret(example):
    env = {k: v for k, v in ENV.items() if k != "VOICEFORK_TWILIO_PASSWORD"}
    with pytest.raises(RenderError, match="VOICEFORK_TWILIO_PASSWORD is not set"):
        render(example, env)
    for bad in ("a b", "x${y}", "x$${y}", "p$1", "q'uote", 'q"uote', "back\\slash", "new\nline"):
        with pytest.raises(RenderError):
            render(example, {**ENV, "VOICEFORK_TWILIO_PASSWORD": bad})
    files = render(example, {**ENV, "VOICEFORK_TWILIO_PASSWORD": "<&>p4ss"})  # markup is escaped, not refused
    params = {p.get("name"): p.get("value") for p in ET.fromstring(files[GATEWAY]).iter("param")}
    assert params["password"] == "<&>p4ss"


def test_registering_tls_trunk_without_caller_id():
    text = BASE.format(greeting="none") + """trunks:
  - {name: carrier-a, proxy: "sip.example.net:5061", transport: tls, register: true, username: "+4420", password_env: T,
     realm: example.net, acl_cidrs: ["2001:db8::/48", 198.51.100.0/24]}
  - {name: carrier-b, proxy: 203.0.113.9, acl_cidrs: [203.0.113.9/32]}
"""
    files = render(parse_config(text, "<test>"), {"E": "e1", "F": "f1", "T": "t1"})
    a = [(p.get("name"), p.get("value")) for p in ET.fromstring(files["sip_profiles/external/carrier-a.xml"]).iter("param")]
    assert a == [("proxy", "sip.example.net:5061"), ("realm", "example.net"), ("username", "+4420"), ("password", "t1"),
                 ("register", "true"), ("register-transport", "tls"), ("caller-id-in-from", "true"),
                 ("context", "public"), ("extension", "auto_to_user")]
    b = {p.get("name"): p.get("value") for p in ET.fromstring(files["sip_profiles/external/carrier-b.xml"]).iter("param")}
    assert "username" not in b and "password" not in b and b["register"] == "false"
    cidrs = [n.get("cidr") for n in ET.fromstring(files[ACL_FILE]).iter("node")]
    assert cidrs == ["2001:db8::/48", "198.51.100.0/24", "203.0.113.9/32"]
    assert "carrier-a, carrier-b" in files["README.txt"]


@pytest.mark.parametrize(
    "path,old,new,message",
    [
        (GATEWAY, 'value="example.pstn.twilio.com"', 'value="evil.example.com"', "gateway params"),
        (GATEWAY, '<param name="context" value="public"/>', '<param name="context" value="default"/>', "gateway params"),
        (GATEWAY, '<gateway name="twilio">', '<gateway name="twilio2">', "exactly one <gateway"),
        (ACL_FILE, '      <node type="allow" cidr="54.244.51.0/30"/><!-- twilio -->\n', "", "nodes"),
        (ACL_FILE, 'default="deny"', 'default="allow"', "default='deny'"),
        (DIALPLAN_FILE, "mono 16k", "mono 8k", "data of action"),
        (DIALPLAN_FILE, '<action application="park"/>', '<action application="park"/><action application="bridge" data="x"/>', "actions"),
        (DIALPLAN_FILE, 'expression="^\\+15551234567$"', 'expression="^\\+1555"', "condition"),
        ("autoload_configs/event_socket.conf.xml", 'value="127.0.0.1"', 'value="0.0.0.0"', "params"),
        ("autoload_configs/modules.conf.xml", 'module="mod_audio_fork"', 'module="mod_other"', "loads"),
    ],
)
def test_verify_catches_a_tampered_tree(example, path, old, new, message):
    files = render(example, ENV)
    verify(example, files, ENV)  # the real output passes
    assert old in files[path]
    with pytest.raises(RenderError, match=re.escape(message)):
        verify(example, {**files, path: files[path].replace(old, new, 1)}, ENV)


def test_comment_text_cannot_end_an_xml_comment(tmp_path):
    cfg = tmp_path / "a--b$${x}<c>.yaml"
    cfg.write_text((ROOT / "config" / "voicefork.yaml").read_text())
    files = render(load_config(str(cfg)), ENV)
    for rel, text in files.items():
        if rel.endswith(".xml"):
            ET.fromstring(text)
            assert "$${" not in text and "a--b" not in text


def test_stream_transport_renders_the_jambonz_modules_start_and_idle_silence(example):
    # Measured on 1.10.12 with the jambonz mod_audio_fork: the bidirectional arguments count only
    # with all 10 tokens (bugname included), its audio plays bit-exact at the channel's own rate
    # (read_rate), and a parked channel plays it only with send_silence_when_idle.
    from dataclasses import replace

    config = replace(example, playback=replace(example.playback, transport="stream"))
    root = ET.fromstring(render(config, ENV)[DIALPLAN_FILE])
    ext = next(e for e in root.iter("extension") if e.get("name") == "voicefork_uk-line")
    data = [a.get("data") for a in ext.iter("action")]
    apps = [a.get("application") for a in ext.iter("action")]
    assert ('fork_result=${uuid_audio_fork(${uuid} start ws://127.0.0.1:8099/calls/uk-line mono 16k audio_fork '
            '{"route":"uk-line","uuid":"${uuid}","rate":"16k"} true true ${read_rate})}') in data
    assert apps[-2:] == ["set", "park"] and data[-2] == "send_silence_when_idle=-1"
    from testbed.freeswitch.fork_args import separate_blank

    fork = next(d for d in data if d and d.startswith("fork_result="))
    line = fork[len("fork_result=${uuid_audio_fork("):-2].replace("${uuid}", "U").replace("${read_rate}", "8000")
    assert separate_blank(line, 10)[5:] == ["audio_fork", '{"route":"uk-line","uuid":"U","rate":"16k"}', "true", "true", "8000"]


def test_outbound_context_only_with_an_outbound_section(example):
    import dataclasses

    from fs_dialplan.render import OUTBOUND_CONTEXT, OUTBOUND_FILE, TRUNK_CONTEXT
    files = render(example, ENV)
    root = ET.fromstring(files[OUTBOUND_FILE])
    (ctx,) = root
    assert ctx.tag == "context" and ctx.get("name") == OUTBOUND_CONTEXT != TRUNK_CONTEXT
    exts = {e.get("name"): e for e in ctx}
    assert list(exts) == [f"voicefork_outbound_{r.name}" for r in example.routes]
    cond = exts["voicefork_outbound_uk-line"].find("condition")
    assert (cond.get("field"), cond.get("expression")) == ("destination_number", "^uk-line$")
    data = [a.get("data") for a in cond.iter("action")]
    assert 'fork_result=${uuid_audio_fork(${uuid} start ws://127.0.0.1:8099/calls/uk-line mono 16k {"route":"uk-line","uuid":"${uuid}","rate":"16k","direction":"outbound"})}' in data
    # The inbound extensions are the same whether or not outbound is configured.
    without = render(dataclasses.replace(example, outbound=None), ENV)
    assert OUTBOUND_FILE not in without and without[DIALPLAN_FILE] == files[DIALPLAN_FILE]
    assert "voicefork_outbound" not in files[DIALPLAN_FILE]
