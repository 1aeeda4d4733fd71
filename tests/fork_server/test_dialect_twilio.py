"""The twilio dialect on messages alone: every Media Streams message both ways, ids, limits, μ-law.

Expected shapes are Twilio's "Media Streams - WebSocket Messages" examples (field names,
order, numbers as strings)."""

import base64
import json
import warnings

with warnings.catch_warnings():  # CPython's G.711 (Sun g711.c): deprecated, present up to 3.12; the reference
    warnings.simplefilter("ignore", DeprecationWarning)
    import audioop

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from fork_server.dialects import DIALECTS, TwilioDialect, VoiceforkDialect, factory
from fork_server.dialects import messages as m
from fork_server.dialects.twilio import MAX_TEXT_BYTES, call_sid, stream_sid
from fork_server.errors import LocalUsageError
from fork_server.pcm import ulaw_decode, ulaw_encode

UUID = "0f3b6c1e-9a7d-4e2b-8c5f-1234567890ab"
HEX = "0f3b6c1e9a7d4e2b8c5f1234567890ab"
ACCOUNT = "AC" + "0123456789abcdef" * 2
SID = "MZ" + HEX


def start_msg(**kw):
    fields = dict(uuid=UUID, route="support", from_="+15551230000", to="+15557654321", caller_name="Ann",
                  language="en-US", metadata={"queue": "tier1", "vip": True}, sample_rate=8000)
    fields.update(kw)
    return m.Start(**fields)


def started():
    d = TwilioDialect(ACCOUNT)
    d.encode(start_msg())
    return d


def test_ids_are_twilio_shaped_and_join_the_freeswitch_uuid():
    assert call_sid(UUID) == "CA" + HEX and stream_sid(UUID) == SID
    assert call_sid(UUID.upper()) == "CA" + HEX  # Twilio sids are lowercase hex
    with pytest.raises(LocalUsageError):
        call_sid("not-a-uuid")


def test_connected_then_start_exactly_as_twilio_sends_them():
    d = TwilioDialect(ACCOUNT)
    connected, start = d.encode(start_msg())
    assert list(json.loads(connected).items()) == [("event", "connected"), ("protocol", "Call"), ("version", "1.0.0")]
    s = json.loads(start)
    assert list(s) == ["event", "sequenceNumber", "start", "streamSid"]
    assert s["sequenceNumber"] == "1" and s["streamSid"] == SID
    assert list(s["start"]) == ["accountSid", "streamSid", "callSid", "tracks", "customParameters", "mediaFormat"]
    assert s["start"]["accountSid"] == ACCOUNT and s["start"]["callSid"] == "CA" + HEX
    assert s["start"]["tracks"] == ["inbound"]
    assert s["start"]["mediaFormat"] == {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1}
    assert s["start"]["customParameters"] == {
        "queue": "tier1", "vip": "true",  # route metadata, as strings
        "from": "+15551230000", "to": "+15557654321", "caller_name": "Ann",
        "from_number": "+15551230000", "to_number": "+15557654321",  # Pipecat's runner reads these
    }


def test_custom_parameters_are_capped_strings():
    d = TwilioDialect(ACCOUNT)
    long = "x" * 1000
    params = json.loads(d.encode(start_msg(caller_name=long, metadata={"k": long}))[1])["start"]["customParameters"]
    assert len(params["caller_name"]) == 256 and params["caller_name"].endswith("\u2026")
    assert len(params["k"]) == 256
    with pytest.raises(LocalUsageError):
        TwilioDialect(ACCOUNT).encode(start_msg(metadata={f"k{i}": "v" for i in range(70)}))


def test_start_refuses_what_twilio_cannot_carry():
    with pytest.raises(LocalUsageError):
        TwilioDialect(ACCOUNT).encode(start_msg(sample_rate=16000))
    d = started()
    with pytest.raises(LocalUsageError):  # one start per stream
        d.encode(start_msg())
    with pytest.raises(LocalUsageError):
        TwilioDialect("AC123")
    with pytest.raises(LocalUsageError):  # nothing but connected/start before the stream exists
        TwilioDialect(ACCOUNT).encode(m.MarkDone("a", "played"))
    with pytest.raises(LocalUsageError):
        TwilioDialect(ACCOUNT).encode_audio([bytes(320)])


def test_media_every_20_ms_with_string_counters_and_mulaw_payload():
    d = started()
    pcm = (np.sin(np.arange(480) * 0.3) * 9000).astype("<i2").tobytes()
    frames = [pcm[i:i + 320] for i in range(0, 960, 320)]
    out = [json.loads(t) for t in d.encode_audio(frames[:2]) + d.encode_audio(frames[2:])]
    for i, msg in enumerate(out):
        assert list(msg) == ["event", "sequenceNumber", "media", "streamSid"]
        assert list(msg["media"]) == ["track", "chunk", "timestamp", "payload"]
        assert msg["event"] == "media" and msg["streamSid"] == SID and msg["media"]["track"] == "inbound"
        assert msg["sequenceNumber"] == str(i + 2)  # start was 1
        assert msg["media"]["chunk"] == str(i + 1)
        assert msg["media"]["timestamp"] == str(20 * i)
        assert base64.b64decode(msg["media"]["payload"]) == audioop.lin2ulaw(frames[i], 2)


def test_resumed_stream_timestamps_start_at_the_offset():
    d = TwilioDialect(ACCOUNT)
    d.encode(start_msg(resumed=True, offset_ms=4000))
    assert json.loads(d.encode_audio([bytes(320)])[0])["media"]["timestamp"] == "4000"


def test_dtmf_mark_stop_to_the_bot():
    d = started()
    dtmf, = d.encode(m.DtmfPressed("7", 120))
    assert list(json.loads(dtmf).items()) == [
        ("event", "dtmf"), ("streamSid", SID), ("sequenceNumber", "2"), ("dtmf", {"track": "inbound_track", "digit": "7"})]
    played, = d.encode(m.MarkDone("m1", "played"))
    cleared, = d.encode(m.MarkDone("m2", "cleared"))  # Twilio answers a cleared mark the same way
    assert list(json.loads(played).items()) == [
        ("event", "mark"), ("sequenceNumber", "3"), ("streamSid", SID), ("mark", {"name": "m1"})]
    assert json.loads(cleared)["mark"] == {"name": "m2"} and json.loads(cleared)["sequenceNumber"] == "4"
    stop, = d.encode(m.Stop("hangup"))
    assert list(json.loads(stop).items()) == [
        ("event", "stop"), ("sequenceNumber", "5"), ("streamSid", SID),
        ("stop", {"accountSid": ACCOUNT, "callSid": "CA" + HEX})]
    with pytest.raises(LocalUsageError):
        d.encode(m.DtmfPressed("x", 10))


def test_media_mark_clear_from_the_bot():
    d = started()
    ulaw = audioop.lin2ulaw((np.arange(400) * 50).astype("<i2").tobytes(), 2)
    media = {"event": "media", "streamSid": SID, "media": {"payload": base64.b64encode(ulaw).decode()}}
    assert d.receive_text(json.dumps(media)) == [m.TtsAudio(audioop.ulaw2lin(ulaw, 2), 8000)]
    assert d.receive_text(json.dumps({"event": "mark", "streamSid": SID, "mark": {"name": "end"}})) == [m.MarkRequest("end")]
    assert d.receive_text(json.dumps({"event": "clear", "streamSid": SID})) == [m.Clear()]
    assert d.malformed == 0 and d.media_in == 1 and d.bytes_in == 400


@pytest.mark.parametrize(
    "frame, needle",
    [
        ('{"event":"hangup","streamSid":"%s"}' % SID, "event"),
        ('{"event":"media","streamSid":"MZ%s","media":{"payload":"AAAA"}}' % ("1" * 32), "streamSid"),
        ('{"event":"media","media":{"payload":"AAAA"}}', "streamSid"),
        ('{"event":"media","streamSid":"%s","media":{"payload":"@@@"}}' % SID, "base64"),
        ('{"event":"media","streamSid":"%s","media":{}}' % SID, "payload"),
        ('{"event":"media","streamSid":"%s"}' % SID, "media object"),
        ('{"event":"mark","streamSid":"%s","mark":{"name":""}}' % SID, "name"),
        ('{"event":"mark","streamSid":"%s","mark":{"name":"a\\nb"}}' % SID, "name"),
        ('{"event":"clear","streamSid":NaN}', "JSON"),
        ("[1,2]", "object"),
        ("{", "JSON"),
    ],
)
def test_anything_else_from_the_bot_is_malformed_and_counted(frame, needle):
    d = started()
    (ev,) = d.receive_text(frame)
    assert isinstance(ev, m.Malformed) and needle in ev.reason and "\n" not in ev.reason
    assert d.malformed == 1


def test_binary_frames_and_oversized_text_are_malformed():
    d = started()
    assert isinstance(d.receive_binary(b"\x00" * 10)[0], m.Malformed)
    big = '{"event":"media","streamSid":"%s","media":{"payload":"%s"}}' % (SID, "A" * MAX_TEXT_BYTES)
    assert isinstance(d.receive_text(big)[0], m.Malformed)
    assert d.malformed == 2 and d.unknown_events == 0


@given(st.one_of(st.text(max_size=300), st.binary(max_size=300).map(lambda b: b.decode("latin-1")),
                 st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=20),
                              lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=8), c, max_size=4),
                              max_leaves=12).map(json.dumps)))
@settings(max_examples=300, deadline=None)
def test_parser_never_raises_and_every_frame_gives_at_most_one_event(text):
    d = started()
    events = d.receive_text(text)
    assert len(events) <= 1
    if events and isinstance(events[0], m.Malformed):
        assert len(events[0].reason) < 400 and "\n" not in events[0].reason


@given(st.binary(max_size=2000), st.sampled_from(["media", "mark", "clear"]), st.text(min_size=1, max_size=128))
@settings(max_examples=200, deadline=None)
def test_parser_accepts_every_well_formed_bot_message(audio, event, name):
    d = started()
    msg = {"event": event, "streamSid": SID}
    if event == "media":
        msg["media"] = {"payload": base64.b64encode(audio).decode()}
    elif event == "mark":
        msg["mark"] = {"name": name}
    events = d.receive_text(json.dumps(msg))
    if event == "media":
        assert events == ([m.TtsAudio(audioop.ulaw2lin(audio, 2), 8000)] if audio else [])
    elif event == "clear":
        assert events == [m.Clear()]
    elif name.isprintable():
        assert events == [m.MarkRequest(name)]
    else:
        assert isinstance(events[0], m.Malformed)


def test_mulaw_tables_are_bit_exact_with_g711():
    every = np.arange(-32768, 32768, dtype="<i2").tobytes()
    assert ulaw_encode(every) == audioop.lin2ulaw(every, 2)
    assert ulaw_decode(bytes(range(256))) == audioop.ulaw2lin(bytes(range(256)), 2)
    with pytest.raises(LocalUsageError):
        ulaw_encode(b"\x00")


def test_dialect_registry_and_rates():
    assert set(DIALECTS) == {"voicefork", "twilio"}
    assert VoiceforkDialect.audio_rate == 16000 and TwilioDialect.audio_rate == 8000
    assert isinstance(factory("twilio", account_sid=ACCOUNT)(), TwilioDialect)
    assert factory("twilio", account_sid=ACCOUNT)() is not factory("twilio", account_sid=ACCOUNT)()
    with pytest.raises(LocalUsageError):
        factory("twilio")
    with pytest.raises(LocalUsageError):
        factory("plivo")


def test_voicefork_dialect_writes_what_the_builders_wrote():
    d = VoiceforkDialect()
    s = start_msg(sample_rate=16000)
    from fork_server import connector_protocol as cp
    assert d.encode(s) == [cp.start(uuid=UUID, route="support", from_="+15551230000", to="+15557654321",
                                    caller_name="Ann", language="en-US", metadata={"queue": "tier1", "vip": True})]
    assert d.encode(m.MarkDone("a", "cleared")) == ['{"type":"mark","name":"a","status":"cleared"}']
    assert d.encode_audio([b"ab"]) == [b"ab"]
