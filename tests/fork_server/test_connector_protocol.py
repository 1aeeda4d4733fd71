"""Connector protocol v1 (DESIGN.md): builders and ConnectorParser, on strings and bytes alone."""

import json
from types import MappingProxyType

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fork_server import connector_protocol as cp
from fork_server.connector_protocol import (
    AudioFormat,
    Clear,
    ConnectorParser,
    HangupRequest,
    Malformed,
    MarkRequest,
    SendDtmf,
    TransferRequest,
    TtsAudio,
)
from fork_server.errors import LocalUsageError

UUID = "3f1a2b4c-5d6e-4f70-8a9b-0c1d2e3f4a5b"
START = dict(
    uuid=UUID,
    route="support",
    from_="+15551230000",
    to="+15551234567",
    caller_name="Ann Smith",
    language="en-US",
    metadata={"tier": "gold"},
)


# --------------------------------------------------------------------------- builders


def test_start_has_the_documented_shape():
    msg = json.loads(cp.start(**START))
    assert msg == {
        "type": "start",
        "version": 1,
        "resumed": False,
        "call": {
            "uuid": UUID,
            "route": "support",
            "direction": "inbound",
            "from": "+15551230000",
            "to": "+15551234567",
            "caller_name": "Ann Smith",
            "language": "en-US",
            "metadata": {"tier": "gold"},
        },
        "audio": {"encoding": "pcm_s16le", "sample_rate": 16000, "channels": 1, "frame_ms": 20, "offset_ms": 0},
    }
    assert json.loads(cp.start(**START, resumed=True))["resumed"] is True


def test_start_is_compact_and_keeps_type_first():
    text = cp.start(**START)
    assert text.startswith('{"type":"start",')
    assert ": " not in text and ", " not in text.replace("Ann Smith", "")


def test_start_takes_config_metadata_made_of_mapping_proxies_and_tuples():
    meta = MappingProxyType({"skills": ("billing", "en"), "nested": MappingProxyType({"a": None, "b": 1.5})})
    msg = json.loads(cp.start(**{**START, "metadata": meta}))
    assert msg["call"]["metadata"] == {"skills": ["billing", "en"], "nested": {"a": None, "b": 1.5}}


HOSTILE = [
    '"},"type":"stop","x":{"',
    "line1\nline2\r\n\x00\x1b[31m",
    "${system(rm -rf /)}",
    "\\\"'<>&",
    "\u2028\u2029",
    "\ud800 lone surrogate",
    "x" * 10_000,
    "é" * 1000,
    "",
]


@pytest.mark.parametrize("value", HOSTILE)
def test_start_encodes_hostile_caller_strings_safely(value):
    text = cp.start(**{**START, "from_": value, "to": value, "caller_name": value})
    text.encode("utf-8")  # sendable as a text frame
    msg = json.loads(text)
    assert msg["type"] == "start" and set(msg) == {"type", "version", "resumed", "call", "audio"}
    for key in ("from", "to", "caller_name"):
        got = msg["call"][key]
        assert len(got) <= cp.MAX_CALLER_FIELD_CHARS
        if len(value) > cp.MAX_CALLER_FIELD_CHARS:
            assert got.endswith(cp.TRUNCATION_MARK)
            assert got[:-1] == value[: cp.MAX_CALLER_FIELD_CHARS - 1]
        elif "\ud800" in value:
            assert got == value.replace("\ud800", "\ufffd")
        else:
            assert got == value


@given(st.text(max_size=600), st.text(max_size=600), st.text(max_size=600))
@settings(max_examples=200, deadline=None)
def test_start_round_trips_any_caller_strings(from_, to, name):
    msg = json.loads(cp.start(**{**START, "from_": from_, "to": to, "caller_name": name}))
    for key, value in (("from", from_), ("to", to), ("caller_name", name)):
        got = msg["call"][key]
        clean = value.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
        if len(clean) <= cp.MAX_CALLER_FIELD_CHARS:
            assert got == clean
        else:
            assert got == clean[: cp.MAX_CALLER_FIELD_CHARS - 1] + cp.TRUNCATION_MARK


@pytest.mark.parametrize(
    "override",
    [
        {"uuid": "not-a-uuid"},
        {"uuid": UUID + "\n"},
        {"route": "Bad Route"},
        {"route": ""},
        {"language": "english please"},
        {"language": ""},
        {"from_": None},
        {"caller_name": 42},
        {"metadata": ["x"]},
        {"metadata": {1: "x"}},
        {"metadata": {"x": {1, 2}}},
        {"metadata": {"x": float("inf")}},
        {"metadata": {"x": "y" * cp.MAX_TEXT_BYTES}},
        {"sample_rate": 7999},
        {"sample_rate": 16000.0},
        {"sample_rate": True},
        {"frame_ms": 0},
        {"frame_ms": 25},
        {"resumed": 1},
        {"offset_ms": -20},
        {"offset_ms": 30},
        {"offset_ms": 20.0},
    ],
)
def test_start_rejects_bad_arguments(override):
    with pytest.raises(LocalUsageError):
        cp.start(**{**START, **override})


def test_dtmf_mark_stop():
    assert json.loads(cp.dtmf("5", 100)) == {"type": "dtmf", "digit": "5", "duration_ms": 100}
    assert json.loads(cp.dtmf("#", 0))["digit"] == "#"
    assert json.loads(cp.mark("greeting-1", "played")) == {"type": "mark", "name": "greeting-1", "status": "played"}
    assert json.loads(cp.mark("n", "cleared"))["status"] == "cleared"
    for reason in cp.STOP_REASONS:
        assert json.loads(cp.stop(reason)) == {"type": "stop", "reason": reason}


def test_stop_carries_the_recording_path_and_refuses_anything_else():
    assert json.loads(cp.stop("hangup", "/rec/2026-12-07/sales-u.wav")) == {
        "type": "stop", "reason": "hangup", "recording": "/rec/2026-12-07/sales-u.wav"}
    for bad in ("rec/a.wav", "/rec/a.mp3", "/rec/a b.wav", '/rec/"x".wav', "/rec/${x}.wav", 5):
        with pytest.raises(LocalUsageError):
            cp.stop("hangup", bad)


@pytest.mark.parametrize(
    ("build", "args"),
    [
        (cp.dtmf, ("55", 100)),
        (cp.dtmf, ("", 100)),
        (cp.dtmf, ("E", 100)),
        (cp.dtmf, ("5", -1)),
        (cp.dtmf, ("5", 1.5)),
        (cp.dtmf, ("5", cp.MAX_DTMF_DURATION_MS + 1)),
        (cp.mark, ("", "played")),
        (cp.mark, ("x" * 129, "played")),
        (cp.mark, ("a\nb", "played")),
        (cp.mark, ("n", "done")),
        (cp.mark, (None, "played")),
        (cp.stop, ("bye",)),
        (cp.stop, (None,)),
    ],
)
def test_builders_reject_bad_arguments(build, args):
    with pytest.raises(LocalUsageError):
        build(*args)


# --------------------------------------------------------------------------- parser: control messages


def one(text, parser=None):
    events = (parser or ConnectorParser()).receive_text(text)
    assert len(events) == 1
    return events[0]


@pytest.mark.parametrize(
    ("text", "event"),
    [
        ('{"type":"audio_format","sample_rate":24000}', AudioFormat(24000)),
        ('{"type":"audio_format","sample_rate":8000,"encoding":"pcm_s16le","channels":1}', AudioFormat(8000)),
        ('{"type":"audio_format","sample_rate":48000}', AudioFormat(48000)),
        ('{"type":"clear"}', Clear()),
        ('{"type":"mark","name":"greeting-1"}', MarkRequest("greeting-1")),
        ('{"type":"mark","name":"%s"}' % ("m" * 128), MarkRequest("m" * 128)),
        ('{"type":"hangup"}', HangupRequest(True, None)),
        ('{"type":"hangup","after_playback":true,"reason":"done"}', HangupRequest(True, "done")),
        ('{"type":"hangup","after_playback":false,"reason":null}', HangupRequest(False, None)),
        ('{"type":"transfer","target":"1000"}', TransferRequest("1000", True)),
        ('{"type":"transfer","target":"*98#","after_playback":false}', TransferRequest("*98#", False)),
        ('{"type":"transfer","target":"sip:agent@example.com"}', TransferRequest("sip:agent@example.com", True)),
        (
            '{"type":"transfer","target":"sips:+1555@pbx.example.com:5061;transport=tls"}',
            TransferRequest("sips:+1555@pbx.example.com:5061;transport=tls", True),
        ),
        ('{"type":"send_dtmf","digits":"12#"}', SendDtmf("12#")),
        ('{"type":"send_dtmf","digits":"%s"}' % ("0123456789*#ABCD" * 2), SendDtmf("0123456789*#ABCD" * 2)),
        (' \n{"type" : "clear"}\n', Clear()),
    ],
)
def test_valid_control_messages(text, event):
    parser = ConnectorParser()
    assert parser.receive_text(text) == [event]
    assert parser.malformed == 0


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("", "invalid JSON"),
        ("{", "invalid JSON"),
        ('{"type":"clear"} x', "invalid JSON"),
        ('{"type":"audio_format","sample_rate":NaN}', "invalid JSON"),
        ("[]", "JSON object"),
        ('"clear"', "JSON object"),
        ("{}", "missing type"),
        ('{"type":null}', "type"),
        ('{"type":["clear"]}', "type"),
        ('{"type":"dance"}', "unknown type"),
        ('{"type":"start"}', "unknown type"),
        ('{"type":"clear","now":true}', "unknown field"),
        ('{"type":"audio_format"}', "sample_rate"),
        ('{"type":"audio_format","sample_rate":7999}', "sample_rate"),
        ('{"type":"audio_format","sample_rate":48001}', "sample_rate"),
        ('{"type":"audio_format","sample_rate":16000.0}', "sample_rate"),
        ('{"type":"audio_format","sample_rate":"16000"}', "sample_rate"),
        ('{"type":"audio_format","sample_rate":true}', "sample_rate"),
        ('{"type":"audio_format","sample_rate":1e999}', "sample_rate"),
        ('{"type":"audio_format","sample_rate":16000,"encoding":"mulaw"}', "encoding"),
        ('{"type":"audio_format","sample_rate":16000,"channels":2}', "channels"),
        ('{"type":"audio_format","sample_rate":16000,"channels":true}', "channels"),
        ('{"type":"mark"}', "missing name"),
        ('{"type":"mark","name":""}', "name"),
        ('{"type":"mark","name":"%s"}' % ("m" * 129), "name"),
        ('{"type":"mark","name":"a\\nb"}', "name"),
        ('{"type":"mark","name":"\\ud800"}', "name"),
        ('{"type":"mark","name":3}', "name"),
        ('{"type":"hangup","after_playback":"yes"}', "after_playback"),
        ('{"type":"hangup","after_playback":1}', "after_playback"),
        ('{"type":"hangup","reason":7}', "reason"),
        ('{"type":"hangup","reason":"%s"}' % ("r" * 257), "reason"),
        ('{"type":"hangup","reason":"a\\u0000b"}', "reason"),
        ('{"type":"transfer"}', "missing target"),
        ('{"type":"transfer","target":""}', "target"),
        ('{"type":"transfer","target":"1000 XML default"}', "target"),
        ('{"type":"transfer","target":"%s"}' % ("1" * 65), "target"),
        ('{"type":"transfer","target":"sip:"}', "target"),
        ('{"type":"transfer","target":"sip:a@b c"}', "target"),
        ('{"type":"transfer","target":"sip:${hack}@x"}', "target"),
        ('{"type":"transfer","target":"sip:a\\"@x"}', "target"),
        ('{"type":"transfer","target":"sip:a@x,sip:b@y"}', "target"),
        ('{"type":"transfer","target":"sip:a@x|sofia/gw/1"}', "target"),
        ('{"type":"transfer","target":"sip:a@x\\n"}', "target"),
        ('{"type":"transfer","target":"sip:%s@x"}' % ("a" * 260), "target"),
        ('{"type":"transfer","target":"http://x"}', "target"),
        ('{"type":"transfer","target":"1000","after_playback":null}', "after_playback"),
        ('{"type":"send_dtmf"}', "missing digits"),
        ('{"type":"send_dtmf","digits":""}', "digits"),
        ('{"type":"send_dtmf","digits":"12e"}', "digits"),
        ('{"type":"send_dtmf","digits":"%s"}' % ("1" * 33), "digits"),
        ('{"type":"send_dtmf","digits":12}', "digits"),
    ],
)
def test_malformed_control_messages(text, needle):
    parser = ConnectorParser()
    events = parser.receive_text(text)
    assert len(events) == 1 and isinstance(events[0], Malformed), events
    assert needle in events[0].reason
    assert parser.malformed == 1
    assert parser.sample_rate == 16000


def test_unknown_types_are_counted_apart():
    parser = ConnectorParser()
    parser.receive_text('{"type":"dance"}')
    parser.receive_text("nope")
    assert (parser.malformed, parser.unknown_types, parser.text_in) == (2, 1, 2)


def test_malformed_reasons_are_bounded_and_single_line():
    parser = ConnectorParser()
    for text in [
        '{"type":"' + "x\n" * 5000 + '"}',
        "\n" * 100 + "garbage" * 1000,
        '{"type":"mark","name":"' + "\u0007" * 300 + '"}',
    ]:
        (ev,) = parser.receive_text(text)
        assert isinstance(ev, Malformed)
        assert len(ev.reason) < 200 and "\n" not in ev.reason


def test_oversized_text_is_not_parsed():
    parser = ConnectorParser(max_text_bytes=100)
    ok = '{"type":"mark","name":"%s"}' % ("m" * (100 - 25))
    assert len(ok) == 100
    assert parser.receive_text(ok) == [MarkRequest("m" * 75)]
    (ev,) = parser.receive_text(ok[:-2] + 'm"}')
    assert isinstance(ev, Malformed) and "over 100 bytes" in ev.reason
    # Bytes, not characters: 40 x "é" is 80 bytes of name.
    (ev,) = parser.receive_text('{"type":"mark","name":"%s"}' % ("é" * 40))
    assert isinstance(ev, Malformed)
    # A deeply nested document under the limit is malformed, not a RecursionError.
    (ev,) = ConnectorParser().receive_text("[" * 60_000)
    assert isinstance(ev, Malformed)
    (ev,) = ConnectorParser().receive_text('{"type":"mark","name":' + "[" * 60_000)
    assert isinstance(ev, Malformed)


# --------------------------------------------------------------------------- parser: audio


def test_binary_is_tts_audio_at_the_current_rate():
    parser = ConnectorParser()
    assert parser.sample_rate == 16000
    assert parser.receive_binary(b"\x01\x02") == [TtsAudio(b"\x01\x02", 16000)]
    assert parser.receive_text('{"type":"audio_format","sample_rate":24000}') == [AudioFormat(24000)]
    assert parser.sample_rate == 24000
    assert parser.receive_binary(bytearray(4)) == [TtsAudio(bytes(4), 24000)]
    assert parser.receive_binary(b"") == []
    assert (parser.binary_in, parser.bytes_in) == (3, 6)
    assert ConnectorParser(default_rate=8000).receive_binary(b"\0\0") == [TtsAudio(b"\0\0", 8000)]


def test_odd_byte_is_carried_and_dropped_at_a_format_change_or_clear():
    parser = ConnectorParser()
    assert parser.receive_binary(b"\x01\x02\x03") == [TtsAudio(b"\x01\x02", 16000)]
    assert parser.pending_bytes == 1
    assert parser.receive_binary(b"\x04\x05\x06") == [TtsAudio(b"\x03\x04\x05\x06", 16000)]
    assert parser.receive_binary(b"\x07") == []
    parser.receive_text('{"type":"audio_format","sample_rate":24000}')
    assert parser.pending_bytes == 0 and parser.carry_dropped == 1
    assert parser.receive_binary(b"\x08\x09") == [TtsAudio(b"\x08\x09", 24000)]
    parser.receive_binary(b"\x0a")
    parser.receive_text('{"type":"clear"}')
    assert parser.receive_binary(b"\x0b\x0c") == [TtsAudio(b"\x0b\x0c", 24000)]
    assert parser.carry_dropped == 2
    # Other messages leave the carry untouched.
    parser.receive_binary(b"\x0d")
    parser.receive_text('{"type":"mark","name":"m"}')
    parser.receive_text("garbage")
    assert parser.receive_binary(b"\x0e") == [TtsAudio(b"\x0d\x0e", 24000)]


def test_binary_over_the_limit_is_malformed_and_dropped():
    parser = ConnectorParser(max_binary_bytes=1024)
    parser.receive_binary(b"\x01")
    (ev,) = parser.receive_binary(bytes(1025))
    assert isinstance(ev, Malformed) and "1025" in ev.reason
    assert parser.pending_bytes == 1  # the stream goes on where it was
    assert parser.receive_binary(b"\x02" * 1023) == [TtsAudio(b"\x01" + b"\x02" * 1023, 16000)]
    big = ConnectorParser()
    assert big.receive_binary(bytes(cp.MAX_BINARY_BYTES)) == [TtsAudio(bytes(cp.MAX_BINARY_BYTES), 16000)]
    assert isinstance(big.receive_binary(bytes(cp.MAX_BINARY_BYTES + 1))[0], Malformed)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=3000), st.lists(st.integers(0, 3000), max_size=30))
def test_tts_pcm_in_any_split_comes_out_as_the_even_prefix(stream, cuts):
    whole = ConnectorParser().receive_binary(stream)
    parser = ConnectorParser()
    bounds = sorted({0, len(stream), *(c for c in cuts if c <= len(stream))})
    events = []
    for lo, hi in zip(bounds, bounds[1:]):
        events += parser.receive_binary(stream[lo:hi])
    even = len(stream) & ~1
    assert b"".join(e.pcm for e in whole) == b"".join(e.pcm for e in events) == stream[:even]
    assert all(isinstance(e, TtsAudio) and e.pcm and len(e.pcm) % 2 == 0 for e in events)
    assert parser.pending_bytes == len(stream) - even  # the trailing byte waits, untouched


# --------------------------------------------------------------------------- parser: never raises


EVENT_TYPES = (TtsAudio, AudioFormat, Clear, MarkRequest, HangupRequest, TransferRequest, SendDtmf, Malformed)


@settings(max_examples=500, deadline=None)
@given(st.lists(st.one_of(st.text(max_size=300), st.binary(max_size=300)), max_size=10))
def test_arbitrary_frames_never_raise(frames):
    parser = ConnectorParser(max_text_bytes=256, max_binary_bytes=256)
    for frame in frames:
        events = parser.receive_text(frame) if isinstance(frame, str) else parser.receive_binary(frame)
        assert all(isinstance(e, EVENT_TYPES) for e in events)
        assert 8000 <= parser.sample_rate <= 48000


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=10,
)
field_names = st.sampled_from(
    ["type", "sample_rate", "encoding", "channels", "name", "after_playback", "reason", "target", "digits", "x"]
)
type_names = st.sampled_from(["audio_format", "clear", "mark", "hangup", "transfer", "send_dtmf", "start", ""])


@settings(max_examples=500, deadline=None)
@given(type_names, st.dictionaries(field_names, json_values | st.integers(7000, 50000), max_size=5))
def test_near_miss_messages_never_raise(kind, fields):
    text = json.dumps({"type": kind, **{k: v for k, v in fields.items() if k != "type"}})
    (ev,) = ConnectorParser().receive_text(text)
    assert isinstance(ev, EVENT_TYPES) and not isinstance(ev, TtsAudio)
    if isinstance(ev, TransferRequest):
        assert " " not in ev.target and "${" not in ev.target and len(ev.target) <= 256
    if isinstance(ev, Malformed):
        assert ev.reason


def test_constructor_and_local_misuse_raise():
    for kwargs in ({"max_text_bytes": 0}, {"max_binary_bytes": 1}, {"default_rate": 44}, {"default_rate": 16000.0}):
        with pytest.raises(LocalUsageError):
            ConnectorParser(**kwargs)
    with pytest.raises(LocalUsageError):
        ConnectorParser().receive_text(b"{}")  # type: ignore[arg-type]
    with pytest.raises(LocalUsageError):
        ConnectorParser().receive_binary("pcm")  # type: ignore[arg-type]
