import re
from pathlib import Path

import pytest
from hypothesis import given, settings, strategies as st

from fs_dialplan import ConfigError, load_config, parse_config

EXAMPLE = Path(__file__).parents[2] / "config" / "voicefork.yaml"


def test_example_config_loads_into_frozen_typed_model():
    c = load_config(str(EXAMPLE))
    assert [r.name for r in c.routes] == ["support", "sales", "uk-line"]
    support, sales, uk = c.routes
    assert support.rate == 0 and support.connector == "support-bot" and support.max_duration_s == 1800  # auto
    assert dict(support.metadata) == {"queue": "tier1"}
    assert sales.rate == 8000 and sales.fallback.action == "transfer" and sales.fallback.target == "1000"
    assert uk.pattern == r"^\+44" and uk.language == "en-GB" and uk.fallback.file.endswith(".wav") and uk.rate == 16000
    assert c.fork_server.auth.password_env == "VOICEFORK_FORK_PASSWORD"
    assert c.fork_server.fork_url("support") == "ws://127.0.0.1:8099/calls/support"
    with pytest.raises(AttributeError):
        support.rate = 8000  # frozen


def errors(text):
    with pytest.raises(ConfigError) as err:
        parse_config(text, "cfg.yaml")
    return [str(i) for i in err.value.issues]


BASE = """\
freeswitch:
  esl_password_env: ESL_PW
fork_server:
  public_url: ws://127.0.0.1:8099
  auth: none
connectors:
  bot:
    url: ws://127.0.0.1:8765/bot
routes:
  - name: support
    number: "+15551234567"
    connector: bot
playback:
  spool_dir: /tmp/s
  freeswitch_spool_dir: /tmp/s
"""


def test_base_is_valid():
    assert parse_config(BASE, "cfg.yaml").routes[0].number == "+15551234567"


def test_connector_keepalive_defaults_find_a_half_open_connector_inside_the_2_s_bar():
    bot = parse_config(BASE, "cfg.yaml").connectors["bot"]
    assert (bot.ping_interval_s, bot.ping_timeout_s) == (0.5, 1.0)
    text = BASE.replace("    url: ws://127.0.0.1:8765/bot\n", "    url: ws://127.0.0.1:8765/bot\n    ping_interval: 2s\n    ping_timeout: 3s\n")
    bot = parse_config(text, "cfg.yaml").connectors["bot"]
    assert (bot.ping_interval_s, bot.ping_timeout_s) == (2.0, 3.0)


@pytest.mark.parametrize(
    "old,new,expected",
    [
        ('number: "+15551234567"', 'number: "555-1234"', 'cfg.yaml:11: routes[0].number: expected E.164 like +15551234567, got "555-1234"'),
        ("connector: bot\nplayback", "connector: nobot\nplayback", 'cfg.yaml:12: routes[0].connector: unknown connector "nobot"; known: bot'),
        ("    url: ws://127.0.0.1:8765/bot", "    url: http://x/bot", 'cfg.yaml:8: connectors.bot.url: expected a ws:// or wss:// URL with a host and no spaces or quotes, got "http://x/bot"'),
        ("  esl_password_env: ESL_PW", "  esl_password_env: ClueCon", "cfg.yaml:2: freeswitch.esl_password_env: expected an environment variable NAME like VOICEFORK_ESL_PASSWORD (never the password itself), got \"ClueCon\""),
        ("    connector: bot\n", "    connector: bot\n    rate: 44k\n", 'cfg.yaml:13: routes[0].rate: expected auto, 8k or 16k, got "44k"'),
        ("  auth: none\n", "  auth: none\n  listen_prot: 1\n", "cfg.yaml:6: fork_server.listen_prot: unknown key (did you mean 'listen_port'?)"),
        ("  auth: none\n", "", "cfg.yaml:4: fork_server.auth: required key is missing (the media socket needs auth; write `auth: none` to disable it)"),
        ('    number: "+15551234567"', "    pattern: '^(+1'", "cfg.yaml:11: routes[0].pattern: invalid regular expression: nothing to repeat at position 2"),
        ("  public_url: ws://127.0.0.1:8099", "  public_url: ws://127.0.0.1:8099/x", 'cfg.yaml:4: fork_server.public_url: expected ws(s)://host:port with no path (voicefork adds /calls/<route>), got "ws://127.0.0.1:8099/x"'),
        ("  - name: support", "  - name: Support Line", 'cfg.yaml:10: routes[0].name: expected a route name of a-z, 0-9, _ and - (it goes into the URL), got "Support Line"'),
        ("  - name: support", "  - name: sup${system(id)}", "cfg.yaml:10: routes[0].name: must not contain \"${\" or control characters, got 'sup${system(id)}'"),
        ("    url: ws://127.0.0.1:8765/bot\n", "    url: ws://127.0.0.1:8765/bot\n    ping_timeout: 0.01s\n",
         "cfg.yaml:9: connectors.bot.ping_timeout: expected a duration between 0.1 s and 300 s, got '0.01s'"),
    ],
)
def test_exact_error_messages_with_line_numbers(old, new, expected):
    assert old in BASE
    assert errors(BASE.replace(old, new, 1)) == [expected]


def test_all_errors_are_reported_at_once_and_duplicates_caught():
    text = BASE + """\
  - name: support
    number: "+15551234567"
    connector: bot
    rate: 12k
"""
    text = text.replace("playback:\n  spool_dir: /tmp/s\n  freeswitch_spool_dir: /tmp/s\n", "") + "playback:\n  spool_dir: /tmp/s\n  freeswitch_spool_dir: /tmp/s\n"
    got = errors(text)
    assert any("duplicate route name" in e for e in got)
    assert any('duplicate number "+15551234567"' in e for e in got)
    assert any("rate: expected auto, 8k or 16k" in e for e in got)
    assert len(got) == 3


def test_duplicate_yaml_keys_and_overlap_warning():
    assert any("duplicate key" in e for e in errors(BASE.replace("  auth: none\n", "  auth: none\n  auth: none\n")))
    overlap = BASE.replace("playback:", "  - name: us\n    pattern: '^\\+1'\n    connector: bot\nplayback:")
    c = parse_config(overlap, "cfg.yaml")
    assert any("+15551234567 is also matched" in str(w) for w in c.warnings)


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=80))
def test_any_string_value_loads_or_fails_with_a_config_error(value):
    quoted = '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    for key in ("  - name: support", '    number: "+15551234567"', "    connector: bot"):
        field = key.split(":")[0]
        text = BASE.replace(key, f"{field}: {quoted}", 1)
        try:
            c = parse_config(text, "cfg.yaml")
        except ConfigError as err:
            assert all(re.match(r"cfg\.yaml:\d+: ", str(i)) for i in err.issues)
        else:
            r = c.routes[0]
            for s in (r.name, r.number or "", r.connector):
                assert "${" not in s and not re.search(r"[\x00-\x1f]", s)


def test_check_command_lists_routes_and_reports_errors(tmp_path, capsys):
    from fs_dialplan.cli import main

    assert main(["check", "--config", str(EXAMPLE)]) == 0
    out = capsys.readouterr().out
    assert "route sales: +15557654321 -> connector sales-bot (8k" in out and "OK, 3 routes" in out
    bad = tmp_path / "bad.yaml"
    bad.write_text(BASE.replace('"+15551234567"', '"555"'))
    assert main(["check", "--config", str(bad)]) == 1
    assert f'{bad}:11: routes[0].number: expected E.164' in capsys.readouterr().err


# --- trunks -----------------------------------------------------------------------------

TRUNK = BASE + """\
trunks:
  - name: twilio
    proxy: example.pstn.twilio.com
    username: vf
    password_env: TW_PW
    acl_cidrs: [54.172.60.0/30, 54.244.51.0/30]
"""


def test_example_config_has_the_twilio_trunk():
    (t,) = load_config(str(EXAMPLE)).trunks
    assert t.name == "twilio" and t.proxy == "example.pstn.twilio.com" and t.register is False
    assert t.password_env == "VOICEFORK_TWILIO_PASSWORD" and t.transport == "udp"
    assert t.caller_id_number == "+15551234567"
    assert t.acl_cidrs[:2] == ("54.172.60.0/30", "54.244.51.0/30") and len(t.acl_cidrs) == 8


def test_trunk_loads_and_cidrs_are_normalised():
    text = TRUNK.replace("[54.172.60.0/30, 54.244.51.0/30]", "[54.172.60.0/30, 192.0.2.7, '2001:DB8::/32']")
    (t,) = parse_config(text.replace("username: vf", "username: vf\n    transport: tls\n    register: yes"), "cfg.yaml").trunks
    assert t.acl_cidrs == ("54.172.60.0/30", "192.0.2.7/32", "2001:db8::/32")
    assert t.transport == "tls" and t.register is True and t.line == 17


@pytest.mark.parametrize(
    "old,new,expected",
    [
        ("proxy: example.pstn.twilio.com", "proxy: sip:example.pstn.twilio.com",
         'cfg.yaml:18: trunks[0].proxy: expected a host or host:port like example.pstn.twilio.com (no sip: prefix), got "sip:example.pstn.twilio.com"'),
        ("proxy: example.pstn.twilio.com", "proxy: example.pstn.twilio.com:70000",
         'cfg.yaml:18: trunks[0].proxy: expected a port 1..65535, got "example.pstn.twilio.com:70000"'),
        ("proxy: example.pstn.twilio.com", "proxy: '[1::2::3]:5060'",
         'cfg.yaml:18: trunks[0].proxy: expected an IPv6 address in brackets, got "[1::2::3]:5060"'),
        ("[54.172.60.0/30,", "[54.172.60.1/30,",
         'cfg.yaml:21: trunks[0].acl_cidrs[0]: expected a CIDR like 54.172.60.0/30, got "54.172.60.1/30" (54.172.60.1/30 has host bits set)'),
        ("[54.172.60.0/30,", "[twilio,",
         "cfg.yaml:21: trunks[0].acl_cidrs[0]: expected a CIDR like 54.172.60.0/30, got \"twilio\" ('twilio' does not appear to be an IPv4 or IPv6 network)"),
        ("[54.172.60.0/30,", "[0.0.0.0/0,",
         "cfg.yaml:21: trunks[0].acl_cidrs[0]: \"0.0.0.0/0\" would allow every address; list the carrier's signalling ranges"),
        ("54.244.51.0/30]", "54.172.60.0/30]", 'cfg.yaml:21: trunks[0].acl_cidrs[1]: duplicate CIDR "54.172.60.0/30"'),
        ("    acl_cidrs: [54.172.60.0/30, 54.244.51.0/30]\n", "    acl_cidrs: []\n",
         "cfg.yaml:21: trunks[0].acl_cidrs: expected at least one CIDR (inbound calls from the trunk come from these)"),
        ("    acl_cidrs: [54.172.60.0/30, 54.244.51.0/30]\n", "", "cfg.yaml:17: trunks[0].acl_cidrs: required key is missing"),
        ("password_env: TW_PW", "password_env: hunter2",
         'cfg.yaml:20: trunks[0].password_env: expected an environment variable NAME like VOICEFORK_ESL_PASSWORD (never the password itself), got "hunter2"'),
        ("    password_env: TW_PW\n", "",
         "cfg.yaml:17: trunks[0].password_env: required with username (digest credentials need the password)"),
        ("    username: vf\n", "", "cfg.yaml:17: trunks[0].username: required with password_env (digest credentials need the user)"),
        ("username: vf", "username: vf\n    transport: sctp", 'cfg.yaml:20: trunks[0].transport: expected udp, tcp or tls, got "sctp"'),
        ("username: vf", "username: vf\n    caller_id_number: 555-1234",
         'cfg.yaml:20: trunks[0].caller_id_number: expected E.164 like +15551234567, got "555-1234"'),
        ("username: vf", "username: vf\n    pasword: x", "cfg.yaml:20: trunks[0].pasword: unknown key (did you mean 'password_env'?)"),
        ("  - name: twilio", "  - name: Twilio", 'cfg.yaml:17: trunks[0].name: expected a trunk name of a-z, 0-9, _ and -, got "Twilio"'),
        ("  - name: twilio", "  - name: ../../etc", 'cfg.yaml:17: trunks[0].name: expected a trunk name of a-z, 0-9, _ and -, got "../../etc"'),
        ("proxy: example.pstn.twilio.com", "proxy: ex${x}", "cfg.yaml:18: trunks[0].proxy: must not contain \"${\" or control characters, got 'ex${x}'"),
    ],
)
def test_trunk_errors_name_file_line_and_key_path(old, new, expected):
    assert old in TRUNK
    assert errors(TRUNK.replace(old, new, 1)) == [expected]


def test_trunk_shape_errors():
    assert errors(BASE + "trunks: {twilio: {}}\n") == ['cfg.yaml:16: trunks: expected a list of trunks, got a mapping']
    reg = TRUNK.replace("    username: vf\n    password_env: TW_PW\n", "    register: true\n")
    assert errors(reg) == ["cfg.yaml:19: trunks[0].register: register: true needs username and password_env (FreeSWITCH skips the gateway otherwise)"]
    twice = TRUNK + TRUNK[TRUNK.index("  - name: twilio"):]
    assert errors(twice) == ['cfg.yaml:22: trunks[1].name: duplicate trunk name "twilio"']


def test_public_url_must_not_carry_capture_references():
    # the URL lands in the fork action's data, where the dialplan replaces $1.. with captures
    got = errors(BASE.replace("ws://127.0.0.1:8099", "ws://h$1:8099"))
    assert got == ['cfg.yaml:4: fork_server.public_url: must not contain "$" (FreeSWITCH substitutes $1.. in dialplan actions), got "ws://h$1:8099"']


def test_libyaml_and_pure_python_loaders_give_the_same_config():
    from fs_dialplan import loader

    fast = parse_config(EXAMPLE.read_text(), "cfg.yaml")
    saved = loader._YAML_LOADER
    loader._YAML_LOADER = __import__("yaml").SafeLoader
    try:
        slow = parse_config(EXAMPLE.read_text(), "cfg.yaml")
        broken = errors(TRUNK.replace("54.172.60.0/30,", "54.172.60.1/30,"))
    finally:
        loader._YAML_LOADER = saved
    assert fast == slow
    assert broken == errors(TRUNK.replace("54.172.60.0/30,", "54.172.60.1/30,"))


def test_a_route_can_override_a_default_greeting_with_none():
    text = BASE.replace("routes:\n", "defaults:\n  greeting: /tmp/hello.wav\nroutes:\n") + (
        '  - {name: quiet, number: "+15557654321", connector: bot, greeting: none}\n')
    text = text.replace("playback:\n  spool_dir: /tmp/s\n  freeswitch_spool_dir: /tmp/s\n", "") + "playback:\n  spool_dir: /tmp/s\n  freeswitch_spool_dir: /tmp/s\n"
    support, quiet = parse_config(text, "cfg.yaml").routes
    assert support.greeting == "/tmp/hello.wav" and quiet.greeting is None


@pytest.mark.parametrize(
    "line,expected",
    [
        ("  esl_listen_ip: 0.0.0.0 1", 'cfg.yaml:3: freeswitch.esl_listen_ip: expected an IP address like 127.0.0.1, got "0.0.0.0 1"'),
        ("  esl_listen_ip: 1.2.3", 'cfg.yaml:3: freeswitch.esl_listen_ip: expected an IP address like 127.0.0.1, got "1.2.3"'),
        ("  esl_acl: lan acl", 'cfg.yaml:3: freeswitch.esl_acl: expected an ACL list name like loopback.auto, got "lan acl"'),
    ],
)
def test_event_socket_values_that_land_in_the_xml_are_checked_where_they_are_written(line, expected):
    assert errors(BASE.replace("  esl_password_env: ESL_PW\n", f"  esl_password_env: ESL_PW\n{line}\n")) == [expected]


# --- connectors.*.protocol, account_sid, auth_token_env (issue 15)

ACCOUNT = "AC" + "0123456789abcdef" * 2
TWILIO = BASE.replace(
    "    url: ws://127.0.0.1:8765/bot\n",
    f"    url: ws://127.0.0.1:8765/bot\n    protocol: twilio\n    account_sid: {ACCOUNT}\n    auth_token_env: BOT_TOKEN\n",
)


def test_default_is_voicefork():
    bot = parse_config(BASE, "cfg.yaml").connectors["bot"]
    assert (bot.protocol, bot.account_sid, bot.auth_token_env) == ("voicefork", None, None)


def test_twilio_connector_loads():
    bot = parse_config(TWILIO, "cfg.yaml").connectors["bot"]
    assert (bot.protocol, bot.account_sid, bot.auth_token_env) == ("twilio", ACCOUNT, "BOT_TOKEN")


@pytest.mark.parametrize(
    "old, new, expected",
    [
        ("protocol: twilio", "protocol: plivo", 'cfg.yaml:9: connectors.bot.protocol: expected voicefork or twilio, got "plivo"'),
        (f"account_sid: {ACCOUNT}", "account_sid: AC12",
         'cfg.yaml:10: connectors.bot.account_sid: expected an account sid like AC followed by 32 lowercase hex digits, got "AC12"'),
        ("auth_token_env: BOT_TOKEN", "auth_token_env: hunter2",
         'cfg.yaml:11: connectors.bot.auth_token_env: expected an environment variable NAME like VOICEFORK_ESL_PASSWORD (never the password itself), got "hunter2"'),
        (f"    account_sid: {ACCOUNT}\n", "", "cfg.yaml:8: connectors.bot.account_sid: required key is missing"),
        ("    auth_token_env: BOT_TOKEN\n", "", "cfg.yaml:8: connectors.bot.auth_token_env: required key is missing"),
        ("protocol: twilio", "protocol: voicefork",
         "cfg.yaml:10: connectors.bot.account_sid: only for protocol: twilio (this connector speaks voicefork)"),
    ],
)
def test_errors_name_file_line_and_key(old, new, expected):
    text = TWILIO.replace(old, new, 1)
    got = errors(text)
    assert got[0] == expected


def test_twilio_keys_without_protocol_twilio_are_refused_not_ignored():
    text = BASE.replace("    url: ws://127.0.0.1:8765/bot\n", "    url: ws://127.0.0.1:8765/bot\n    auth_token_env: BOT_TOKEN\n")
    assert errors(text) == ["cfg.yaml:9: connectors.bot.auth_token_env: only for protocol: twilio (this connector speaks voicefork)"]


def test_the_example_configs_commented_twilio_connector_loads_when_uncommented():
    text = EXAMPLE.read_text()
    block = text[text.index("  # twilio-bot:"):text.index("defaults:")]
    lines = [line.replace("  # ", "  ", 1) for line in block.splitlines() if line.startswith("  #   ") or line.startswith("  # twilio-bot")]
    c = parse_config(text.replace(block, block + "\n".join(lines) + "\n"), "voicefork.yaml").connectors["twilio-bot"]
    assert (c.protocol, c.account_sid, c.auth_token_env) == ("twilio", "AC" + "0123456789abcdef" * 2, "VOICEFORK_TWILIO_TOKEN")
    assert c.playout_lead_ms == 60


def test_playout_lead_is_the_protocols_unless_the_connector_says():
    # None here: the fork server takes the dialect's (twilio 60 ms, voicefork 0).
    assert parse_config(BASE, "cfg.yaml").connectors["bot"].playout_lead_ms is None
    text = BASE.replace("    url: ws://127.0.0.1:8765/bot\n", "    url: ws://127.0.0.1:8765/bot\n    playout_lead_ms: 40\n")
    assert parse_config(text, "cfg.yaml").connectors["bot"].playout_lead_ms == 40
    assert errors(text.replace("playout_lead_ms: 40", "playout_lead_ms: 600")) == [
        'cfg.yaml:9: connectors.bot.playout_lead_ms: expected an integer 0..500, got "600"']
    assert errors(text.replace("playout_lead_ms: 40", "playout_lead_ms: 60ms"))[0].startswith(
        "cfg.yaml:9: connectors.bot.playout_lead_ms: expected an integer")


OUTBOUND = TRUNK + """\
outbound:
  token_env: API_TOKEN
"""


def test_outbound_section_loads_with_its_defaults():
    ob = parse_config(OUTBOUND, "cfg.yaml").outbound
    assert (ob.token_env, ob.default_trunk, ob.calls_per_second, ob.burst, ob.max_pending, ob.default_timeout_s,
            ob.status_webhook) == ("API_TOKEN", "twilio", 1, 5, 20, 30.0, None)
    assert parse_config(OUTBOUND.replace("API_TOKEN", "none"), "cfg.yaml").outbound.token_env is None
    assert parse_config(BASE, "cfg.yaml").outbound is None
    c = load_config(str(EXAMPLE)).outbound
    assert (c.token_env, c.default_trunk, c.calls_per_second, c.burst) == ("VOICEFORK_API_TOKEN", "twilio", 2, 10)


@pytest.mark.parametrize("text,expected", [
    (BASE + "outbound:\n  token_env: API_TOKEN\n",
     ["cfg.yaml:17: outbound: calls go out through a trunk: add one under `trunks:`"]),
    (TRUNK + "outbound: {default_trunk: twilio}\n",
     ["cfg.yaml:22: outbound.token_env: required key is missing"]),
    (OUTBOUND + "  default_trunk: carrier\n",
     ['cfg.yaml:24: outbound.default_trunk: no trunk "carrier"; the trunks are twilio']),
    (OUTBOUND.replace("API_TOKEN", "my-secret-token"),
     ['cfg.yaml:23: outbound.token_env: expected an environment variable NAME like VOICEFORK_ESL_PASSWORD (never the password itself), or none, got "my-secret-token"']),
    (OUTBOUND + "  default_timeout: 3m\n",
     ["cfg.yaml:24: outbound.default_timeout: expected a duration between 5 s and 120 s, got '3m'"]),
    (OUTBOUND + "  status_webhook: ftp://x/y\n",
     ['cfg.yaml:24: outbound.status_webhook: expected an http:// or https:// URL, got "ftp://x/y"']),
    (OUTBOUND + "  burts: 5\n",
     ["cfg.yaml:24: outbound.burts: unknown key (did you mean 'burst'?)"]),
])
def test_outbound_errors_name_file_line_and_key(text, expected):
    assert errors(text) == expected


def test_outbound_needs_a_default_trunk_with_several_trunks():
    two = TRUNK + TRUNK[TRUNK.index("  - name: twilio"):].replace("twilio", "backup") + "outbound:\n  token_env: API_TOKEN\n"
    assert errors(two) == ["cfg.yaml:28: outbound.default_trunk: required with several trunks (one of twilio, backup)"]
    ok = parse_config(two + "  default_trunk: backup\n", "cfg.yaml").outbound
    assert ok.default_trunk == "backup"
