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
ENV = {"VOICEFORK_ESL_PASSWORD": "esl-golden", "VOICEFORK_FORK_PASSWORD": "fork-golden"}


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
    ext = next(e for e in root.iter("extension") if e.get("name") == "voicefork_support")
    data = [a.get("data") for a in ext.iter("action")]
    assert 'fork_result=${uuid_audio_fork(${uuid} start ws://127.0.0.1:8099/calls/support mono 16k {"route":"support","uuid":"${uuid}"})}' in data
    assert ext.find("condition").get("expression") == r"^\+15551234567$"
    assert [a.get("application") for a in ext.iter("action")][0] == "answer"
    assert [a.get("application") for a in ext.iter("action")][-1] == "park"


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
    assert played == [value]  # round-trips exactly through the XML escaping
    assert files[DIALPLAN_FILE].count("${") == 3  # only ours: ${uuid_audio_fork(, ${uuid} twice
    assert not re.search(r"[\s'\"]", value)
