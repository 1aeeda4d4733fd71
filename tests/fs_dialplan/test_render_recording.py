"""recording: true renders record_session (stereo, the switch's clock, the route and the uuid in
the file name) or is refused with file, line and key; a file-name template holds no other field."""

import xml.etree.ElementTree as ET

import pytest

from fs_dialplan import ConfigError, parse_config
from fs_dialplan.render import DIALPLAN_FILE, render
from testbed.freeswitch.expand import expand

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
ENV = {"ESL_PW": "esl-secret"}
RECORDING = "recording:\n  dir: /var/rec\n"


def errors(text):
    with pytest.raises(ConfigError) as err:
        parse_config(text, "cfg.yaml")
    return [str(i) for i in err.value.issues]


def recorded(text=BASE.replace("    connector: bot\n", "    connector: bot\n    recording: true\n") + RECORDING):
    return parse_config(text, "cfg.yaml")


def actions(config):
    root = ET.fromstring(render(config, ENV)[DIALPLAN_FILE])
    (cond,) = root.find("extension").findall("condition")
    return [(a.get("application"), a.get("data")) for a in cond]


def test_a_recorded_route_renders_stereo_record_session_after_answer_and_before_the_fork():
    acts = actions(recorded())
    apps = [a for a, _ in acts]
    i = apps.index("record_session")
    assert apps.index("answer") < i < [n for n, (a, d) in enumerate(acts) if d and d.startswith("fork_result=")][0]
    assert acts[i - 2: i + 1] == [
        ("set", "RECORD_STEREO=true"),
        ("set", "voicefork_recording=/var/rec/${strftime(%Y-%m-%d)}/support-${uuid}.wav"),
        ("record_session", "${voicefork_recording}"),
    ]
    # As the switch expands it: only the clock and the uuid are filled in.
    _, data = acts[i - 1]
    out = expand(data, {"uuid": "u-1"}.get, lambda f, a: {"strftime": "2026-12-07"}[f])
    assert out == "voicefork_recording=/var/rec/2026-12-07/support-u-1.wav"


def test_a_route_without_recording_renders_none():
    assert "record_session" not in [a for a, _ in actions(parse_config(BASE + RECORDING, "cfg.yaml"))]


def test_recording_in_defaults_applies_and_a_route_may_turn_it_off():
    text = BASE.replace("routes:\n", "defaults:\n  recording: true\nroutes:\n") + RECORDING
    assert recorded(text).routes[0].recording is True
    off = text.replace("    connector: bot\n", "    connector: bot\n    recording: false\n")
    assert "record_session" not in [a for a, _ in actions(parse_config(off, "cfg.yaml"))]


def test_recording_true_without_a_recording_section_is_refused_naming_the_line():
    text = BASE.replace("    connector: bot\n", "    connector: bot\n    recording: true\n")
    assert errors(text) == ["cfg.yaml:13: routes[0].recording: recording: true needs a top-level `recording:` "
                            "section with `dir` (where FreeSWITCH writes the WAV files)"]
    text = BASE.replace("routes:\n", "defaults:\n  recording: true\nroutes:\n")
    assert errors(text) == ["cfg.yaml:10: defaults.recording: recording: true needs a top-level `recording:` "
                            "section with `dir` (where FreeSWITCH writes the WAV files)"]


@pytest.mark.parametrize("file,message", [
    ("'{caller}-{uuid}.wav'", "unknown field {caller}"),
    ("'{date}/{route}.wav'", "must hold {uuid}"),
    ("'../{uuid}.wav'", "expected a relative .wav path"),
    ("'a/../{uuid}.wav'", 'expected a relative path without ".."'),
    ("'{uuid}.mp3'", "expected a relative .wav path"),
    ("'${caller_id_number}-{uuid}.wav'", 'must not contain "${"'),
    ("'{uuid} x.wav'", "expected a relative .wav path"),
    ("'/abs/{uuid}.wav'", "expected a relative .wav path"),
])
def test_a_file_name_template_holds_only_safe_fields(file, message):
    text = BASE + RECORDING + f"  file: {file}\n"
    (err,) = errors(text)
    assert err.startswith("cfg.yaml:18: recording.file: ") and message in err, err


@pytest.mark.parametrize("extra,message", [
    ("  dir: relative/dir\n", "cfg.yaml:17: recording.dir: expected an absolute directory path"),
    ("  dir: /var/rec\n  retention_days: -1\n", "cfg.yaml:18: recording.retention_days: expected an integer 0..36500"),
    ("  dir: /var/rec\n  keep: 3\n", "cfg.yaml:18: recording.keep: unknown key"),
    ("  file: '{uuid}.wav'\n", "cfg.yaml:17: recording.dir: required key is missing"),
])
def test_recording_section_errors_name_file_line_and_key(extra, message):
    (err,) = errors(BASE + "recording:\n" + extra)
    assert err.startswith(message), err


def test_settings_and_the_fork_servers_view_of_the_directory():
    c = parse_config(BASE + "recording:\n  dir: /fs/rec\n  fork_server_dir: /srv/rec\n  retention_days: 7\n", "cfg.yaml")
    assert (c.recording.dir, c.recording.fork_server_dir, c.recording.retention_days) == ("/fs/rec", "/srv/rec", 7)
    assert c.recording.local_path("/fs/rec/2026-12-07/a-u.wav") == "/srv/rec/2026-12-07/a-u.wav"
    assert c.recording.local_path("/elsewhere/a.wav") is None
    assert parse_config(BASE + RECORDING, "cfg.yaml").recording.fork_server_dir == "/var/rec"
