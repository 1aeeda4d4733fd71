"""The stream transport's core (jambonz mod_audio_fork) driven by events alone.

Each rule it follows was measured on a real 1.10.12 with the jambonz module on 2026-12-06
(fork_server/playback/stream.py cites them)."""

import json

import numpy as np

from fork_server import audio_fork as af, connector_protocol as cp
from fork_server.actions import ArmTimer, CloseFork, SendAudioToFork, SendToConnector, SendToFork, StopFork, TransferCall
from fork_server.playback import PROBE_TIMER, STREAM_WATCHDOG, TTS_IDLE, StreamPlayback
from fork_server.session import CallerInfoReady, CallSession, ConnectorUp, SessionSettings, TimerFired, WriteSegment
from fork_server.spool import SpoolLayout

U = "3f1a2b4c-5d6e-4f70-8a9b-0c1d2e3f4a5b"
MS = 16  # bytes per ms at 8 kHz


def tts(ms, rate=8000, value=None):
    n = rate * ms // 1000
    a = np.full(n, value, "<i2") if value is not None else (np.sin(np.arange(n) * 0.3) * 8000 + 100).astype("<i2")
    return cp.TtsAudio(a.tobytes(), rate)


def audio(acts):
    return [a.pcm for a in acts if isinstance(a, SendAudioToFork)]


def module_marks(acts):
    return [json.loads(a.text)["data"]["name"] for a in acts if isinstance(a, SendToFork) and '"mark"' in a.text]


def connector_marks(acts):
    return [(m["name"], m["status"]) for m in (json.loads(a.text) for a in acts if isinstance(a, SendToConnector))
            if m["type"] == "mark"]


def probed():
    s = StreamPlayback(U)
    acts = s.begin(8000)
    (probe,) = module_marks(acts)
    assert ArmTimer(PROBE_TIMER, 0.5) in acts
    assert s.module_mark(af.ModuleMark(probe, "playout")) == [] and s.probe == "ok"
    return s


def test_an_utterance_starts_at_160_ms_then_goes_in_80_ms_messages():
    s = probed()
    sent = []
    for _ in range(7):  # 20 ms chunks: nothing until 160 ms is buffered (ahead of real time)
        sent += audio(s.tts(tts(20)))
    assert sent == []
    sent += audio(s.tts(tts(20)))
    assert [len(p) for p in sent] == [160 * MS]  # the module's first release is 160 ms
    for _ in range(8):
        sent += audio(s.tts(tts(20)))
    assert [len(p) for p in sent] == [160 * MS, 80 * MS, 80 * MS]


def test_the_end_of_an_utterance_is_padded_and_pushed_out_by_80_ms_of_zeros_then_an_end_mark():
    s = probed()
    acts = s.tts(tts(250))
    assert [len(p) for p in audio(acts)] == [160 * MS, 80 * MS]  # 10 ms left over
    assert ArmTimer(TTS_IDLE, 0.25) in acts  # an end pad is 80 ms of silence: only after a real pause
    end = s.timer(TTS_IDLE)
    pcm = audio(end)
    assert [len(p) for p in pcm] == [80 * MS, 80 * MS]  # the 10 ms padded, then the zero pad
    assert pcm[0][10 * MS :] == bytes(70 * MS) and pcm[1] == bytes(80 * MS)
    (name,) = module_marks(end)
    assert name.startswith("e") and not s.idle
    assert s.module_mark(af.ModuleMark(name, "playout")) == [] and s.idle


def test_a_minus_one_sample_never_reaches_the_module():
    # A -1 sample while a mark is pending fires it early (it is taken for the mark's marker).
    s = probed()
    pcm = audio(s.tts(tts(200, value=-1)))
    assert pcm and all(not (np.frombuffer(p, "<i2") == -1).any() for p in pcm)


def test_a_mark_follows_its_audio_and_is_played_when_the_module_says():
    s = probed()
    acts = s.tts(tts(100)) + s.mark("greeting-1")  # before 160 ms: the mark sends what precedes it
    assert [len(p) for p in audio(acts)] == [160 * MS]  # the fork's first message is whole
    (name,) = module_marks(acts)
    assert connector_marks(acts) == []
    assert connector_marks(s.module_mark(af.ModuleMark(name, "playout"))) == [("greeting-1", "played")]
    assert module_marks(s.mark("mid")) and not connector_marks(s.mark("mid2"))  # still speaking: via the module
    (end,) = [n for n in module_marks(s.flush()) if n.startswith("e")]
    s.module_mark(af.ModuleMark(end, "playout"))
    assert connector_marks(s.mark("nothing-left")) == [("nothing-left", "played")]  # all heard: at once


def test_marks_with_nothing_between_share_one_module_mark_and_the_module_keeps_28_at_most():
    s = probed()
    s.tts(tts(200))
    acts = s.mark("a") + s.mark("b")
    assert len(module_marks(acts)) == 1 or len(module_marks(acts)) == 2  # two calls, one send each
    names = []
    for i in range(40):  # audio between each: one module mark each, up to the module's room
        names += module_marks(s.tts(tts(80)) + s.mark(f"x{i}"))
    assert len(s._pending) == 28  # 30 in the module; the rest wait here, in order
    first = names[0]
    back = s.module_mark(af.ModuleMark(first, "playout"))
    assert module_marks(back)  # room again: the next one goes


def test_barge_in_kills_fences_and_drains_the_stale_markers():
    s = probed()
    s.tts(tts(400))
    m1 = module_marks(s.mark("m1"))
    s.tts(tts(400))  # audio after m1: its marker goes stale in the module at the kill
    acts = s.drop()
    assert [a.text for a in acts if isinstance(a, SendToFork)][0] == af.kill_audio()
    (fence,) = module_marks(acts)
    assert fence.startswith("k") and connector_marks(acts) == [("m1", "cleared")]
    assert audio(s.tts(tts(300))) == []  # held: audio right after killAudio is lost
    assert s.module_mark(af.ModuleMark(m1[0], "cleared")) == []  # a killed stream's mark: ignored
    pcm = audio(s.module_mark(af.ModuleMark(fence, "cleared")))
    assert pcm and pcm[0][:2] == b"\xff\xff" and pcm[0][2:4] != b"\xff\xff"  # one stale marker, one -1 sample


def test_progress_marks_bound_how_far_ahead_the_stream_runs():
    s = StreamPlayback(U, max_ahead_ms=4000)
    probe = module_marks(s.begin(8000))[0]
    s.module_mark(af.ModuleMark(probe, "playout"))
    acts = s.tts(tts(10_000))  # a flood: 4 s go out, the rest waits here
    progress = module_marks(acts)
    assert sum(len(p) for p in audio(acts)) // MS == 4000 and progress and s.sent_ms == 4000
    more = s.module_mark(af.ModuleMark(progress[0], "playout"))  # the caller has heard 2 s
    assert sum(len(p) for p in audio(more)) // MS == 2000


def test_no_reply_to_the_probe_sends_the_call_to_files_with_what_waited():
    settings = SessionSettings(route="support", fork_rate=8000, language="en-US", metadata={}, fallback_action="hangup",
                               fallback_file=None, fallback_target=None, spool=SpoolLayout("/var/spool/vf", "/fs/spool"),
                               transport="stream")
    s = CallSession(U, settings)
    s.start()
    acts = s.handle(CallerInfoReady("+15550001111", "A", "+15551234567", 8000))
    assert module_marks(acts)  # the probe
    s.handle(ConnectorUp())
    assert not audio(s.handle(tts(300)))  # probing: held
    s.handle(cp.MarkRequest("m"))
    out = s.handle(TimerFired(PROBE_TIMER))
    assert s.errors["stream_not_playing"] == 1 and s.playback is s.files
    assert [len(w.pcm) // MS for w in out if isinstance(w, WriteSegment)] == [300]  # the held audio, as a file
    # Ending a streaming call never runs `uuid_audio_fork stop` (frames in flight crashed the module).
    s2 = CallSession(U, settings)
    s2.start()
    s2.handle(CallerInfoReady("+15550001111", "A", "+15551234567", 8000))
    s2.handle(ConnectorUp())
    acts = s2.handle(cp.TransferRequest("1000", after_playback=False))
    assert TransferCall(U, "1000") in acts and CloseFork() in acts and not [a for a in acts if isinstance(a, StopFork)]


def test_the_watchdog_takes_a_silent_module_as_played():
    s = probed()
    acts = s.tts(tts(300)) + s.mark("m")
    assert s.needs_watchdog(None, acts) and s.watchdog().name == STREAM_WATCHDOG
    assert connector_marks(s.timer(STREAM_WATCHDOG)) == [("m", "played")] and s.errors["playback_events_lost"] == 1


def test_module_text_is_parsed_only_when_it_is_one_of_our_marks():
    assert af.parse_module_text('{"type": "mark", "data": {"name":"m12", "event": "playout"}}') == af.ModuleMark("m12", "playout")
    for junk in ('{"type": "mark", "data": {"name":"a"b", "event": "playout"}}', "{", "[]", '{"type":"mark"}',
                 '{"type": "mark", "data": {"name":"m1", "event": "later"}}', "x" * 5000):
        assert af.parse_module_text(junk) is None
