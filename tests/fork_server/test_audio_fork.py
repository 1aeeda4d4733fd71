"""ForkIntake and the server→FreeSWITCH builders, driven with frames alone (REF = freeswitch-observed.md)."""

import base64
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fork_server import audio_fork as af
from fork_server.audio_fork import CallerAudio, ForkDrained, ForkIntake, ForkMetadata, ForkState, ForkText
from fork_server.errors import ForkProtocolError, LocalUsageError

UUID = "3f1a2b4c-5d6e-4f70-8a9b-0c1d2e3f4a5b"
META = '{"route":"support","uuid":"%s"}' % UUID


def streaming(**kwargs):
    intake = ForkIntake(expected_route="support", **kwargs)
    intake.receive_text(META)
    return intake


def audio_of(events):
    return b"".join(ev.pcm for ev in events if isinstance(ev, CallerAudio))


# --------------------------------------------------------------------------- metadata


def test_metadata_is_the_first_text_frame_verbatim():
    intake = ForkIntake(expected_route="support")
    assert intake.state is ForkState.AWAITING_METADATA
    assert intake.receive_text(META) == [ForkMetadata("support", UUID, META)]
    assert intake.state is ForkState.STREAMING
    assert intake.metadata == ForkMetadata("support", UUID, META)


def test_metadata_uuid_may_be_upper_case_and_extra_keys_are_kept_in_raw():
    raw = '{"uuid":"%s","route":"support","x":1}' % UUID.upper()
    (meta,) = ForkIntake().receive_text(raw)
    assert (meta.route, meta.uuid, meta.raw) == ("support", UUID.upper(), raw)


@pytest.mark.parametrize(("rate", "hz"), [("8k", 8000), ("16k", 16000), ("8000", 8000), ("48k", 48000), ("24000", 24000)])
def test_metadata_rate_is_what_the_switch_was_told(rate, hz):
    # The rendered metadata carries the fork's rate (rate: auto is the switch's pick at answer).
    (meta,) = ForkIntake().receive_text('{"route":"support","uuid":"%s","rate":"%s"}' % (UUID, rate))
    assert meta.rate == hz


def test_metadata_without_a_rate_leaves_it_to_the_route():
    (meta,) = ForkIntake().receive_text(META)
    assert meta.rate is None


@pytest.mark.parametrize("rate", ["", "12k", "44100", "0", "8", "8K", "${voicefork_fork_rate}", "-ERR no reply", 8000, None])
def test_a_bad_metadata_rate_is_a_fork_protocol_error(rate):
    text = json.dumps({"route": "support", "uuid": UUID, "rate": rate}, separators=(",", ":"))
    if rate is None:  # JSON null is as good as absent
        assert ForkIntake().receive_text(text)[0].rate is None
        return
    with pytest.raises(ForkProtocolError, match="metadata rate") as err:
        ForkIntake().receive_text(text)
    if rate == "${voicefork_fork_rate}":
        assert "not expanded" in str(err.value)


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("", "empty"),
        ("[1]", "JSON object"),
        ('{"route":"support"}', "uuid"),
        ('{"uuid":"%s"}' % UUID, "route"),
        ('{"route":"Support","uuid":"%s"}' % UUID, "route"),
        ('{"route":"../x","uuid":"%s"}' % UUID, "route"),
        ('{"route":"sales","uuid":"%s"}' % UUID, "does not match the URL path route 'support'"),
        ('{"route":"support","uuid":"${uuid}"}', "not expanded"),
        ('{"route":"support","uuid":"%s "}' % UUID, "uuid"),
        ('{"route":"support","uuid":"%s"}' % UUID.replace("-", ""), "uuid"),
        ('{"route":"support","uuid":7}', "uuid"),
    ],
)
def test_bad_metadata_is_a_fork_protocol_error(text, needle):
    intake = ForkIntake(expected_route="support")
    with pytest.raises(ForkProtocolError) as info:
        intake.receive_text(text)
    assert needle in str(info.value)
    assert info.value.peer == "freeswitch"
    assert intake.state is ForkState.FAILED


@pytest.mark.parametrize(
    "text",
    [
        '{"a":',  # REF: {"a": 1} with no bugname → bugname '{"a":' …
        "1}",  # … and metadata '1}'
        '"support","uuid":"%s"}' % UUID,  # {"route": "support",... split after "route":
        "{\\",  # REF: {\"k\":\"v\"} in the XML attribute is cut to '{\'
        '{"route":"support",',
    ],
)
def test_metadata_cut_by_freeswitch_argument_parser_gets_a_hint(text):
    with pytest.raises(ForkProtocolError) as info:
        ForkIntake().receive_text(text)
    message = str(info.value)
    assert "splits its arguments on spaces" in message
    assert "&quot;" in message


def test_garbage_metadata_that_is_not_cut_gets_no_split_hint():
    with pytest.raises(ForkProtocolError) as info:
        ForkIntake().receive_text('{"route" "x"}')
    assert "splits" not in str(info.value)


def test_oversized_metadata_is_rejected_before_parsing():
    big = '{"route":"support","uuid":"%s","pad":"%s"}' % (UUID, "x" * 5000)
    with pytest.raises(ForkProtocolError, match="over 4096 bytes"):
        ForkIntake().receive_text(big)
    # The limit is in UTF-8 bytes, not characters.
    wide = '{"route":"support","uuid":"%s","pad":"%s"}' % (UUID, "é" * 30)
    with pytest.raises(ForkProtocolError, match="over 100 bytes"):
        ForkIntake(max_metadata_bytes=100).receive_text(wide)
    assert ForkIntake(max_metadata_bytes=len(META)).receive_text(META)[0].uuid == UUID


def test_audio_before_metadata_is_an_error():
    intake = ForkIntake()
    with pytest.raises(ForkProtocolError, match="metadata"):
        intake.receive_binary(b"\0\0")
    assert intake.state is ForkState.FAILED
    # Using the intake after it failed is our bug, not the peer's.
    with pytest.raises(LocalUsageError):
        intake.receive_text(META)


def test_zero_length_frame_before_metadata_is_an_error():
    with pytest.raises(ForkProtocolError):
        ForkIntake().receive_binary(b"")


# --------------------------------------------------------------------------- audio


def test_audio_frames_of_any_even_length_pass_through():
    intake = streaming()
    for size in (640, 320, 960, 1280, 1764, 2, 16000):  # REF sizes, merged frames under load
        frame = bytes(range(256)) * (size // 256) + bytes(size % 256)
        assert intake.receive_binary(frame) == [CallerAudio(frame)]
    assert intake.frames_in == 7
    assert intake.bytes_in == 640 + 320 + 960 + 1280 + 1764 + 2 + 16000
    assert intake.pending_bytes == 0


def test_odd_byte_is_carried_to_the_next_frame():
    intake = streaming()
    assert intake.receive_binary(b"\x01\x02\x03") == [CallerAudio(b"\x01\x02")]
    assert intake.pending_bytes == 1
    assert intake.receive_binary(b"\x04") == [CallerAudio(b"\x03\x04")]
    assert intake.receive_binary(b"\x05") == []
    assert intake.receive_binary(bytearray(b"\x06\x07\x08")) == [CallerAudio(b"\x05\x06\x07\x08")]
    assert intake.pending_bytes == 0
    assert intake.receive_binary(memoryview(b"\x09\x0a\x0b")) == [CallerAudio(b"\x09\x0a")]
    assert intake.pending_bytes == 1


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=4000), st.lists(st.integers(0, 4000), max_size=30))
def test_pcm_in_any_split_comes_out_as_the_even_prefix(stream, cuts):
    whole = streaming()
    whole_events = whole.receive_binary(stream) if stream else []
    pieces = streaming()
    bounds = sorted({0, len(stream), *(c for c in cuts if c <= len(stream))})
    events = []
    for lo, hi in zip(bounds, bounds[1:]):
        events += pieces.receive_binary(stream[lo:hi])
    even = len(stream) & ~1
    assert audio_of(whole_events) == audio_of(events) == stream[:even]
    assert all(ev.pcm and len(ev.pcm) % 2 == 0 for ev in events)
    # Trailing data (the odd byte) is left untouched: it is the first byte of the next sample.
    assert pieces.pending_bytes == len(stream) - even
    follow = pieces.receive_binary(b"\xaa")
    assert audio_of(follow) == (stream[even:] + b"\xaa" if len(stream) % 2 else b"")


def test_one_byte_at_a_time():
    intake = streaming()
    stream = bytes(range(101))
    events = [ev for b in stream for ev in intake.receive_binary(bytes([b]))]
    assert audio_of(events) == stream[:100]
    assert all(len(ev.pcm) == 2 for ev in events)


def test_oversized_frame_is_an_error():
    intake = streaming(max_frame_bytes=1024)
    assert intake.receive_binary(bytes(1024)) == [CallerAudio(bytes(1024))]
    with pytest.raises(ForkProtocolError, match="over 1024"):
        intake.receive_binary(bytes(1026))


# --------------------------------------------------------------------------- text and close


def test_later_text_frame_is_fork_text():
    intake = streaming()
    assert intake.receive_text("bye now") == [ForkText("bye now")]
    assert intake.receive_text(META) == [ForkText(META)]  # only the first text is metadata
    assert intake.state is ForkState.STREAMING


def test_later_text_frame_is_bounded():
    intake = streaming(max_text_bytes=10)
    assert intake.receive_text("x" * 10) == [ForkText("x" * 10)]
    with pytest.raises(ForkProtocolError, match="over 10 bytes"):
        intake.receive_text("x" * 11)


def test_zero_length_frame_means_drained_once():
    intake = streaming()
    intake.receive_binary(b"\x01\x02\x03")
    assert intake.receive_binary(b"") == [ForkDrained()]
    assert intake.state is ForkState.DRAINED
    assert intake.pending_bytes == 0  # half a sample is dropped: no more audio comes
    # REF: after graceful-shutdown, send_text and stop only send more zero-length frames.
    assert intake.receive_binary(b"") == []
    # Frames already in flight are harmless.
    assert intake.receive_binary(b"\0\0") == [CallerAudio(b"\0\0")]
    assert intake.receive_text("late") == [ForkText("late")]


def test_transition_table_is_complete_and_failed_is_terminal():
    assert set(af.TRANSITIONS) == set(ForkState)
    assert af.TRANSITIONS[ForkState.FAILED] == {}


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(st.text(max_size=200), st.binary(max_size=200)), max_size=8))
def test_arbitrary_frames_raise_only_fork_protocol_error(frames):
    intake = ForkIntake(expected_route="support", max_metadata_bytes=128, max_frame_bytes=150, max_text_bytes=64)
    for frame in frames:
        try:
            events = intake.receive_text(frame) if isinstance(frame, str) else intake.receive_binary(frame)
        except ForkProtocolError:
            assert intake.state is ForkState.FAILED
            return
        for ev in events:
            if isinstance(ev, CallerAudio):
                assert ev.pcm and len(ev.pcm) % 2 == 0


@settings(max_examples=100, deadline=None)
@given(st.text(max_size=300))
def test_arbitrary_metadata_text_raises_only_fork_protocol_error(text):
    try:
        ForkIntake().receive_text(text)
    except ForkProtocolError:
        pass


def test_deeply_nested_metadata_is_a_fork_protocol_error():
    with pytest.raises(ForkProtocolError):
        ForkIntake(max_metadata_bytes=1 << 20).receive_text("[" * 200_000)


@pytest.mark.parametrize(
    "kwargs",
    [{"expected_route": "Bad Route"}, {"max_metadata_bytes": 0}, {"max_frame_bytes": True}, {"max_text_bytes": -1}],
)
def test_constructor_arguments_are_checked(kwargs):
    with pytest.raises(LocalUsageError):
        ForkIntake(**kwargs)


def test_wrong_types_are_local_usage_errors():
    with pytest.raises(LocalUsageError):
        ForkIntake().receive_text(b"{}")  # type: ignore[arg-type]
    with pytest.raises(LocalUsageError):
        streaming().receive_binary("pcm")  # type: ignore[arg-type]


# --------------------------------------------------------------------------- builders


@pytest.mark.parametrize("rate", [8000, 16000, 24000, 32000, 48000, 64000])
def test_play_audio_always_has_content_type_and_rate(rate):
    pcm = b"\x01\x00\xff\x7f" * 10
    msg = json.loads(af.play_audio(pcm, rate))
    assert msg["type"] == "playAudio"
    data = msg["data"]
    assert data["audioContentType"] == "raw"
    assert data["sampleRate"] == rate
    assert base64.b64decode(data["audioContent"]) == pcm
    assert "textContent" not in data


def test_play_audio_with_text_and_wav():
    msg = json.loads(af.play_audio(b"\0\0", 8000, text='say "hi"\n'))
    assert msg["data"]["textContent"] == 'say "hi"\n'
    wav = b"RIFF" + (36).to_bytes(4, "little") + b"WAVE" + bytes(32)
    data = json.loads(af.play_audio(wav, 22050, content_type="wav"))["data"]
    assert (data["audioContentType"], data["sampleRate"]) == ("wav", 22050)
    assert base64.b64decode(data["audioContent"]) == wav


@pytest.mark.parametrize(
    ("pcm", "rate", "kwargs"),
    [
        (b"\0\0", 44100, {}),
        (b"\0\0", 22050, {}),
        (b"\0\0", 8000.0, {}),
        (b"\0\0", True, {}),
        (b"\0\0", None, {}),
        (b"\0\0", 8000, {"content_type": "mp3"}),
        (b"\0\0", 8000, {"content_type": "wave"}),
        (b"\0\0", 8000, {"content_type": None}),
        (b"\0\0\0", 8000, {}),
        (b"", 8000, {}),
        ("pcm", 8000, {}),
        (bytes(af.MAX_PLAY_AUDIO_BYTES + 2), 16000, {}),
        (b"\0\0", 8000, {"text": 5}),
        (b"\0\0", 8000, {"text": "x" * (af.MAX_PLAY_TEXT_CHARS + 1)}),
        (bytes(64), 8000, {"content_type": "wav"}),  # not a RIFF/WAVE file
    ],
)
def test_play_audio_rejects_what_freeswitch_would_mishandle(pcm, rate, kwargs):
    with pytest.raises(LocalUsageError):
        af.play_audio(pcm, rate, **kwargs)


def test_kill_audio_and_other_messages():
    assert json.loads(af.kill_audio()) == {"type": "killAudio"}
    assert json.loads(af.disconnect()) == {"type": "disconnect"}
    assert json.loads(af.disconnect({"why": "bye"})) == {"type": "disconnect", "data": {"why": "bye"}}
    assert json.loads(af.transcription({"text": "hi"}))["type"] == "transcription"
    assert json.loads(af.transfer({"to": "1000"}))["data"] == {"to": "1000"}
    assert json.loads(af.error({"e": (1, 2)}))["data"] == {"e": [1, 2]}
    for build in (af.transcription, af.transfer, af.error):
        with pytest.raises(LocalUsageError):
            build(None)
    with pytest.raises(LocalUsageError):
        af.error({"x": {1, 2}})
    with pytest.raises(LocalUsageError):
        af.error({"x": float("nan")})
    with pytest.raises(LocalUsageError):
        af.transcription({"text": "x" * af.MAX_MESSAGE_BYTES})


@pytest.mark.parametrize(
    ("content_type", "rate", "ext"),
    [
        ("raw", 8000, ".r8"),
        ("raw", 16000, ".r16"),
        ("raw", 24000, ".r24"),
        ("raw", 32000, ".r32"),
        ("raw", 48000, ".r48"),
        ("raw", 64000, ".r64"),
        ("raw", 44100, ".r16"),
        ("raw", 11025, ".r16"),
        ("wav", 8000, ".wav"),
        ("wave", 44100, ".wav"),
        ("mp3", 8000, None),
        ("", 8000, None),
    ],
)
def test_expected_play_audio_extension_follows_ref_table(content_type, rate, ext):
    assert af.expected_play_audio_extension(content_type, rate) == ext


def test_the_drachtio_module_given_the_stream_start_is_recognised():
    # Measured: the drachtio module takes the jambonz module's three bidirectional arguments as
    # part of the metadata; such a fork will never play streamed audio.
    text = '{"route":"support","uuid":"%s","rate":"8k"} true true 8000' % UUID
    (meta,) = ForkIntake(expected_route="support").receive_text(text)
    assert (meta.uuid, meta.rate, meta.stream_args_ignored, meta.raw) == (UUID, 8000, True, text)
    (plain,) = ForkIntake().receive_text(META)
    assert plain.stream_args_ignored is False
