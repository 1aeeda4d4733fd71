"""Scale-out config (issue 17): several switches, fork servers behind HAProxy, Kamailio's
dispatcher list. Loaded with file:line:key errors; rendered one conf tree per switch whose
fork metadata names it; haproxy.cfg checked by Debian's haproxy itself."""

import json
import re
import shutil
import subprocess
import xml.etree.ElementTree as ET

import pytest

from fs_dialplan import ConfigError, parse_config
from fs_dialplan.render import DIALPLAN_FILE, DISPATCHER_FILE, HAPROXY_FILE, render, switch_tree, verify

ENV = {"ESL_PW": "esl-a-secret", "ESL_PW_B": "esl-b-secret"}

MULTI = """\
freeswitch:
  esl_password_env: ESL_PW
  esl_port: 8021
  switches:
    - name: fs-a
      esl_host: 10.0.0.11
      sip_uri: sip:10.0.0.11:5080
    - name: fs-b
      esl_host: 10.0.0.12
      esl_port: 8022
      esl_password_env: ESL_PW_B
      sip_uri: sip:10.0.0.12:5080
fork_server:
  public_url: ws://10.0.0.5:8099
  auth: none
  drain_grace: 1.5s
  haproxy:
    bind: 10.0.0.5:8099
    servers: [10.0.0.21:8099, 10.0.0.22:8099]
    check_interval: 250ms
connectors:
  bot:
    url: ws://127.0.0.1:8765/bot
routes:
  - name: support
    number: "+15551234567"
    connector: bot
playback:
  spool_dir: /var/spool/voicefork
  freeswitch_spool_dir: /var/spool/voicefork
"""


def errors(text):
    with pytest.raises(ConfigError) as err:
        parse_config(text, "cfg.yaml")
    return [str(i) for i in err.value.issues]


def test_switches_inherit_the_section_s_keys_and_keep_their_own():
    c = parse_config(MULTI, "cfg.yaml")
    a, b = c.all_switches()
    assert (a.name, a.esl_host, a.esl_port, a.esl_password_env, a.sip_uri) == ("fs-a", "10.0.0.11", 8021, "ESL_PW", "sip:10.0.0.11:5080")
    assert (b.name, b.esl_host, b.esl_port, b.esl_password_env) == ("fs-b", "10.0.0.12", 8022, "ESL_PW_B")
    assert c.fork_server.drain_grace_s == 1.5
    h = c.fork_server.haproxy
    assert (h.bind, h.servers, h.check_interval_s) == ("10.0.0.5:8099", ("10.0.0.21:8099", "10.0.0.22:8099"), 0.25)
    one = parse_config(MULTI.split("  switches:")[0] + MULTI[MULTI.index("fork_server:"):], "cfg.yaml")
    assert [s.name for s in one.all_switches()] == ["default"] and one.switches == ()


@pytest.mark.parametrize("old,new,expected", [
    ("    - name: fs-b\n", "    - name: fs-a\n", 'cfg.yaml:8: freeswitch.switches[1].name: duplicate switch name "fs-a"'),
    ("      esl_host: 10.0.0.12\n      esl_port: 8022\n", "      esl_host: 10.0.0.11\n",
     "cfg.yaml:9: freeswitch.switches[1].esl_host: 10.0.0.11:8021 is already another switch's Event Socket"),
    ("    - name: fs-b\n", "    - name: FS B\n", 'cfg.yaml:8: freeswitch.switches[1].name: expected a switch name of a-z, 0-9, _ and - (at most 32), got "FS B"'),
    ("      sip_uri: sip:10.0.0.12:5080\n", "", "cfg.yaml:5: freeswitch.switches: sip_uri on every switch or on none"),
    ("servers: [10.0.0.21:8099, 10.0.0.22:8099]", "servers: [10.0.0.21]",
     'cfg.yaml:19: fork_server.haproxy.servers[0]: expected host:port (the fork server\'s listen port), got "10.0.0.21"'),
    ("    bind: 10.0.0.5:8099\n", "", "cfg.yaml:18: fork_server.haproxy.bind: required key is missing"),
    ("  drain_grace: 1.5s\n", "  drain_grace: 2m\n", "cfg.yaml:16: fork_server.drain_grace: expected a duration between 0 s and 60 s"),
    ("  esl_port: 8021\n", "  esl_port: 8021\n  esl_host: 10.0.0.9\n",
     "cfg.yaml:4: freeswitch.esl_host: not used with switches: give each switch its esl_host"),
    ("      esl_host: 10.0.0.11\n", "      esl_hots: 10.0.0.11\n", "cfg.yaml:6: freeswitch.switches[0].esl_hots: unknown key (did you mean 'esl_host'?)"),
])
def test_scale_out_errors_name_file_line_and_key(old, new, expected):
    assert old in MULTI
    got = errors(MULTI.replace(old, new))
    assert any(e.startswith(expected) for e in got), got


def test_a_single_switch_list_is_refused():
    text = MULTI[: MULTI.index("    - name: fs-b")] + MULTI[MULTI.index("fork_server:"):]
    assert any("freeswitch.switches: expected at least two switches" in e for e in errors(text))


def test_one_tree_per_switch_whose_forks_name_it():
    c = parse_config(MULTI, "cfg.yaml")
    files = render(c, ENV)
    for sw, port, pw in (("fs-a", "8021", "esl-a-secret"), ("fs-b", "8022", "esl-b-secret")):
        tree = switch_tree(files, sw)
        assert DIALPLAN_FILE in tree and "autoload_configs/event_socket.conf.xml" in tree
        params = {p.get("name"): p.get("value") for p in ET.fromstring(tree["autoload_configs/event_socket.conf.xml"]).iter("param")}
        assert params["listen-port"] == port and params["password"] == pw
        fork = next(a.get("data") for a in ET.fromstring(tree[DIALPLAN_FILE]).iter("action") if "uuid_audio_fork" in (a.get("data") or ""))
        meta = json.loads(re.search(r"(\{\"route\".*\})\)\}$", fork).group(1))
        assert meta == {"route": "support", "uuid": "${uuid}", "rate": "${voicefork_fork_rate}", "switch": sw}
    verify(c, files, ENV)
    # A tree rendered for one switch does not pass as another's (the metadata names the switch).
    swapped = dict(files)
    swapped[f"fs-a/{DIALPLAN_FILE}"] = files[f"fs-b/{DIALPLAN_FILE}"]
    with pytest.raises(Exception, match="fork|action"):
        verify(c, swapped, ENV)


def test_dispatcher_list_has_every_switch():
    files = render(parse_config(MULTI, "cfg.yaml"), ENV)
    lines = [l for l in files[DISPATCHER_FILE].splitlines() if not l.startswith("#")]
    assert lines == ["1 sip:10.0.0.11:5080 0 0 name=fs-a", "1 sip:10.0.0.12:5080 0 0 name=fs-b"]


@pytest.mark.skipif(shutil.which("haproxy") is None, reason="Debian's haproxy is not installed")
def test_haproxy_cfg_is_valid_for_haproxy_and_checks_healthz(tmp_path):
    text = render(parse_config(MULTI, "cfg.yaml"), ENV)[HAPROXY_FILE]
    assert "bind 10.0.0.5:8099" in text and "http-check send meth GET uri /healthz" in text
    assert re.findall(r"server fork\d (\S+) check", text) == ["10.0.0.21:8099", "10.0.0.22:8099"]
    assert "inter 250ms" in text and "option redispatch" in text
    cfg = tmp_path / "haproxy.cfg"
    cfg.write_text("global\n    maxconn 100\ndefaults\n    timeout connect 1s\n\n" + text)
    r = subprocess.run(["haproxy", "-c", "-f", str(cfg)], capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stdout + r.stderr
