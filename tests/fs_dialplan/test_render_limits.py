"""max_calls and busy: rendered as FreeSWITCH's `limit hash` before answer, or refused with file,
line and key (a busy action that no limit could ever use included)."""

import xml.etree.ElementTree as ET

import pytest

from fs_dialplan import ConfigError, parse_config
from fs_dialplan.render import DIALPLAN_FILE, render

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
ROUTE_END = "    connector: bot\n"


def errors(text):
    with pytest.raises(ConfigError) as err:
        parse_config(text, "cfg.yaml")
    return [str(i) for i in err.value.issues]


def extensions(text):
    root = ET.fromstring(render(parse_config(text, "cfg.yaml"), {"ESL_PW": "s3cret"})[DIALPLAN_FILE])
    return {e.get("name"): [(a.get("application"), a.get("data")) for c in e for a in c] for e in root.iter("extension")}


@pytest.mark.parametrize("busy,where", [
    ("", "!USER_BUSY"),
    ("    busy: {action: reject}\n", "!USER_BUSY"),
    ("    busy: {action: transfer, target: 1000}\n", "1000 XML default"),
    ("    busy: {action: play, file: /s/busy.wav}\n", "voicefork_busy_support XML public"),
])
def test_max_calls_renders_limit_before_answer(busy, where):
    exts = extensions(BASE.replace(ROUTE_END, ROUTE_END + "    max_calls: 3\n" + busy) + "limits:\n  max_calls: 10\n")
    acts = exts["voicefork_support"]
    assert acts[:4] == [("set", "voicefork_route=support"), ("limit", f"hash voicefork all_routes 10 {where}"),
                        ("limit", f"hash voicefork route_support 3 {where}"), ("set", "jitterbuffer_msec=20")]
    assert acts[4] == ("answer", None)
    if "play" in busy:
        assert list(exts)[0] == "voicefork_busy_support"
        assert exts["voicefork_busy_support"] == [("answer", None), ("playback", "/s/busy.wav"), ("hangup", "USER_BUSY")]
    else:
        assert list(exts) == ["voicefork_support"]


def test_no_limit_renders_no_limit():
    assert "limit" not in [a for a, _ in extensions(BASE)["voicefork_support"]]


@pytest.mark.parametrize("extra,top,message", [
    ("    max_calls: 0\n", "", "cfg.yaml:13: routes[0].max_calls: expected an integer 1..100000"),
    ("    busy: {action: reject}\n", "", "cfg.yaml:13: routes[0].busy: busy is only used with max_calls"),
    ("    max_calls: 1\n    busy: {action: play}\n", "", "cfg.yaml:14: routes[0].busy.file: required when action is play"),
    ("    max_calls: 1\n    busy: {action: transfer}\n", "", "cfg.yaml:14: routes[0].busy.target: required when action is transfer"),
    ("    max_calls: 1\n    busy: {action: transfer, target: 'sip:a@b'}\n", "", "cfg.yaml:14: routes[0].busy.target: expected an extension like 1000"),
    ("    max_calls: 1\n    busy: {action: reject, file: /a.wav}\n", "", "cfg.yaml:14: routes[0].busy.file: only used with action: play"),
    ("    max_calls: 1\n    busy: {action: hangup}\n", "", "cfg.yaml:14: routes[0].busy.action: expected reject, play or transfer"),
    ("", "limits:\n  max_calls: x\n", "cfg.yaml:17: limits.max_calls: expected an integer 1..100000"),
    ("", "limits:\n  calls: 3\n", "cfg.yaml:17: limits.calls: unknown key"),
    ("    busy: {action: reject}\n", "limits: {}\n", "cfg.yaml:13: routes[0].busy: busy is only used with max_calls"),
])
def test_limit_errors_name_file_line_and_key(extra, top, message):
    (err,) = errors(BASE.replace(ROUTE_END, ROUTE_END + extra) + top)
    assert err.startswith(message), err


def test_busy_in_defaults_serves_the_routes_with_max_calls_or_the_global_limit():
    text = BASE.replace("routes:\n", "defaults:\n  busy: {action: transfer, target: 1000}\nroutes:\n")
    assert errors(text)[0].startswith("cfg.yaml:10: defaults.busy: busy is only used with max_calls")
    config = parse_config(text + "limits:\n  max_calls: 5\n", "cfg.yaml")
    assert (config.max_calls, config.routes[0].busy.target, config.routes[0].max_calls) == (5, "1000", None)
