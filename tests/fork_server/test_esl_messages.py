import pytest
from hypothesis import given, strategies as st

from fork_server import esl_messages as em
from fork_server.errors import EslCommandError, LocalUsageError

U = "3f1a2b4c-5d6e-4f70-8a9b-0c1d2e3f4a5b"


def test_builders_make_one_safe_line():
    assert em.uuid_break(U) == f"uuid_break {U} all"
    assert em.uuid_break(U, all=False) == f"uuid_break {U}"
    assert em.uuid_broadcast(U, "/spool/a/000001.r8") == f"uuid_broadcast {U} /spool/a/000001.r8 aleg"
    assert em.uuid_kill(U, "NORMAL_CLEARING") == f"uuid_kill {U} NORMAL_CLEARING"
    assert em.uuid_transfer(U, "1000") == f"uuid_transfer {U} 1000 XML default"
    assert em.uuid_transfer(U, "sip:agent@example.com") == f"uuid_transfer {U} bridge:sofia/external/sip:agent@example.com inline"
    assert em.uuid_send_dtmf(U, "12#") == f"uuid_send_dtmf {U} 12#"
    assert em.uuid_getvar(U, "write_rate") == f"uuid_getvar {U} write_rate"
    assert em.uuid_audio_fork_stop(U) == f"uuid_audio_fork {U} stop"
    cmd = em.PlaybackCommand(U, "/spool/x.r8")
    assert cmd.headers()["event-lock"] == "true"  # REF: never omit it


@pytest.mark.parametrize(
    "build",
    [
        lambda: em.uuid_send_dtmf(U, "1\napi system rm -rf /"),
        lambda: em.uuid_send_dtmf(U, "1 2"),
        lambda: em.uuid_transfer(U, "${system(id)}"),
        lambda: em.uuid_transfer(U, "1000\nexit"),
        lambda: em.uuid_transfer(U, 'sip:a"b@x'),
        lambda: em.uuid_transfer(U, "sip:a@x,system:reboot"),  # an inline dialplan splits on commas
        lambda: em.uuid_transfer(U, "sip:a@x;x=$$1"),
        lambda: em.uuid_broadcast(U, "/spool/../etc/passwd"),
        lambda: em.uuid_broadcast(U, "relative.r8"),
        lambda: em.uuid_broadcast(U, "/spool/a b.r8"),
        lambda: em.uuid_break("not-a-uuid"),
        lambda: em.uuid_kill(U + "\n"),
        lambda: em.uuid_kill(U, "cause with space"),
        lambda: em.uuid_getvar(U, "x;y"),
        lambda: em.PlaybackCommand(U, "/spool/$${x}.r8"),
        lambda: em.execute_headers("playback", "/a\n/b"),
        lambda: em.uuid_send_dtmf(U, "1" * 10_000),
    ],
)
def test_injection_attempts_are_refused(build):
    with pytest.raises(LocalUsageError):
        build()


def headers(name, **extra):
    return {"Event-Name": name, "Unique-ID": U, "variable_voicefork_route": "support", **extra}


def test_events_are_typed():
    ev = em.parse_event(headers("PLAYBACK_STOP", **{"Playback-File-Path": "/s/1.r8", "Playback-Status": "break", "variable_playback_ms": "140"}), None)
    assert ev == em.PlaybackStopped(U, "support", "/s/1.r8", "break", 140)
    assert em.parse_event(headers("PLAYBACK_START", **{"Playback-File-Path": "/s/1.r8"}), None).path == "/s/1.r8"
    assert em.parse_event(headers("DTMF", **{"DTMF-Digit": "5", "DTMF-Duration": "800"}), None).duration_ms == 100
    assert em.parse_event(headers("CHANNEL_HANGUP_COMPLETE", **{"Hangup-Cause": "NORMAL_CLEARING"}), None).cause == "NORMAL_CLEARING"
    fork = em.parse_event(headers("CUSTOM", **{"Event-Subclass": "mod_audio_fork::connect_failed"}), '{"reason":"Unable to connect"}')
    assert fork.name == "connect_failed" and fork.body == {"reason": "Unable to connect"} and fork.route == "support"
    bad = em.parse_event(headers("CUSTOM", **{"Event-Subclass": "mod_audio_fork::json"}), "{not json")
    assert bad.body is None and bad.body_invalid
    assert em.parse_event(headers("HEARTBEAT"), None) is None
    assert em.parse_event({"Event-Name": "PLAYBACK_START", "Unique-ID": "../x"}, None) is None


@given(st.dictionaries(st.sampled_from(["Event-Name", "Unique-ID", "DTMF-Digit", "DTMF-Duration", "Event-Subclass", "Playback-Status", "variable_playback_ms"]), st.text(max_size=50)), st.one_of(st.none(), st.text(max_size=100)))
def test_arbitrary_events_never_raise(hdrs, body):
    em.parse_event(hdrs, body)


def test_dump_and_caller_info():
    dump = em.parse_dump("Caller-Caller-ID-Number: %2B15550001111\nCaller-Caller-ID-Name: Alice%20%22Q%22\nCaller-Destination-Number: %2B15551234567\nvariable_write_rate: 8000\n")
    info = em.caller_info(dump)
    assert info == em.CallerInfo("+15550001111", 'Alice "Q"', "+15551234567", 8000)
    with pytest.raises(EslCommandError):
        em.parse_dump("-ERR No such channel!\n")
