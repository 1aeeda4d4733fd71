"""The call state machine driven by events alone (no sockets, no clock)."""

import json

import numpy as np
import pytest

from fork_server import connector_protocol as cp, esl_messages as em
from fork_server.errors import InvalidTransition, LocalUsageError
from fork_server.session import (
    TimerFired,
    TRANSITIONS,
    BreakPlayback,
    CallerInfoReady,
    CallSession,
    CloseConnector,
    ConnectConnector,
    ConnectorClosed,
    ConnectorFailed,
    ConnectorUp,
    DeleteFile,
    Finished,
    ForkClosed,
    HangupCall,
    LookupCaller,
    PlayFile,
    QueueHangup,
    SendAudioToConnector,
    SendToConnector,
    SessionSettings,
    State,
    StopFork,
    TransferCall,
    WriteSegment,
)
from fork_server.spool import SpoolLayout

U = "3f1a2b4c-5d6e-4f70-8a9b-0c1d2e3f4a5b"


def settings(**kw):
    base = dict(
        route="support",
        fork_rate=16000,
        language="en-US",
        metadata={"tier": "gold"},
        fallback_action="hangup",
        fallback_file=None,
        fallback_target=None,
        spool=SpoolLayout("/var/spool/vf", "/fs/spool"),
    )
    base.update(kw)
    return SessionSettings(**base)


def tts(ms, rate=16000):
    n = rate * ms // 1000
    return cp.TtsAudio(np.rint(np.sin(np.arange(n) * 0.2) * 8000).astype("<i2").tobytes(), rate)


def sent(actions):
    return [json.loads(a.text) for a in actions if isinstance(a, SendToConnector)]


def active(**kw):
    s = CallSession(U, settings(**kw))
    assert s.start() == [LookupCaller(U)]
    assert s.handle(CallerInfoReady("+15550001111", "Alice", "+15551234567", 8000)) == [ConnectConnector(resumed=False)]
    assert s.state is State.CONNECTING
    # Caller audio while connecting is kept, not lost.
    assert s.caller_audio(bytes(640)) == []
    acts = s.handle(ConnectorUp())
    start = sent(acts)[0]
    assert start["type"] == "start" and start["call"]["from"] == "+15550001111"
    assert start["call"]["metadata"] == {"tier": "gold"} and start["resumed"] is False
    frames = [len(f) for a in acts if isinstance(a, SendAudioToConnector) for f in a.frames]
    assert frames == [640] * (16000 // s.settings.fork_rate)  # 640 B at the fork rate, as 20 ms 16 kHz frames
    assert s.state is State.ACTIVE
    return s


def test_every_state_handles_the_call_ending():
    for state, row in TRANSITIONS.items():
        assert ForkClosed in row and em.HangupComplete in row, state


def test_an_event_missing_from_the_table_raises():
    s = CallSession(U, settings())
    with pytest.raises(InvalidTransition) as err:
        s.handle(ConnectorUp())
    assert "ConnectorUp" in str(err.value) and "lookup" in str(err.value)


def test_caller_audio_8k_becomes_640_byte_16k_frames():
    s = active(fork_rate=8000)
    frames = s.caller_audio(bytes(320) * 5)  # 100 ms at 8 kHz
    assert frames and all(len(f) == 640 for f in frames)


def test_tts_is_written_at_the_write_rate_and_queued_with_sendmsg():
    s = active()
    acts = s.handle(tts(80)) + s.handle(tts(420))
    writes = [a for a in acts if isinstance(a, WriteSegment)]
    plays = [a for a in acts if isinstance(a, PlayFile)]
    assert writes and len(writes) == len(plays)
    assert writes[0].local_path.startswith(f"/var/spool/vf/{U}/") and writes[0].local_path.endswith(".r8")
    assert plays[0].path.startswith(f"/fs/spool/{U}/") and plays[0].command == "sendmsg"
    assert len(writes[0].pcm) == 80 * 16  # first segment 80 ms at 8 kHz
    assert [len(w.pcm) // 16 for w in writes] == [80, 420]  # then every whole ptime buffered


def test_mark_is_played_after_its_audio_and_files_are_deleted():
    s = active()
    acts = s.handle(tts(200)) + s.handle(cp.MarkRequest("m1"))
    assert not any(m["type"] == "mark" for m in sent(acts))
    reports, deleted = [], 0
    for _ in range(10):  # time passes: queued files play, the idle timer looks again
        paths = [a.path for a in acts if isinstance(a, PlayFile)]
        acts = s.handle(TimerFired("tts_idle"))
        for p in paths:
            out = s.handle(em.PlaybackStarted(U, "support", p))
            out += s.handle(em.PlaybackStopped(U, "support", p, "done", 80))
            reports += [m for m in sent(out) if m["type"] == "mark"]
            deleted += sum(isinstance(a, DeleteFile) for a in out)
            acts += out
        if reports:
            break
    assert reports == [{"type": "mark", "name": "m1", "status": "played"}]
    assert deleted == len([a for a in acts if isinstance(a, DeleteFile)]) + deleted - deleted and deleted >= 1  # played files go


def test_mark_with_nothing_queued_is_played_at_once():
    s = active()
    assert sent(s.handle(cp.MarkRequest("now")))[0]["status"] == "played"


def test_clear_breaks_playback_deletes_files_and_clears_marks():
    s = active()
    acts = s.handle(tts(1000)) + s.handle(cp.MarkRequest("m"))
    files = [a.local_path for a in acts if isinstance(a, WriteSegment)]
    acts = s.handle(cp.Clear())
    assert acts[0] == BreakPlayback(U)
    assert {a.local_path for a in acts if isinstance(a, DeleteFile)} == set(files)
    assert {"type": "mark", "name": "m", "status": "cleared"} in sent(acts)
    assert s.barge_ins == 1
    # A late event for a dropped file is ignored.
    assert s.handle(em.PlaybackStopped(U, "support", "/fs/spool/x", "break", 10)) == []


def test_hangup_after_playback_waits_for_the_last_file():
    s = active()
    acts = s.handle(tts(100)) + s.handle(cp.HangupRequest(True, "done"))
    assert not any(isinstance(a, HangupCall) for a in acts) and s.state is State.ENDING
    paths = [a.path for a in acts if isinstance(a, PlayFile)]
    for p in paths[:-1]:
        assert not any(isinstance(a, HangupCall) for a in s.handle(em.PlaybackStopped(U, None, p, "done", 0)))
    acts = s.handle(em.PlaybackStopped(U, None, paths[-1], "done", 0))
    assert HangupCall(U) in acts and {"type": "stop", "reason": "connector_hangup"} in sent(acts)


def test_transfer_now_stops_connector_then_transfers_and_stops_the_fork():
    s = active()
    acts = s.handle(cp.TransferRequest("1000", False))
    assert TransferCall(U, "1000") in acts and StopFork(U) in acts and CloseConnector() in acts


def test_dtmf_goes_both_ways():
    s = active()
    assert sent(s.handle(em.Dtmf(U, None, "5", 100))) == [{"type": "dtmf", "digit": "5", "duration_ms": 100}]
    (act,) = s.handle(cp.SendDtmf("12#"))
    assert act.digits == "12#"


def test_connector_unreachable_runs_the_fallback():
    s = CallSession(U, settings(fallback_action="transfer", fallback_target="2000"))
    s.handle(CallerInfoReady("1", "a", "2", 8000))
    acts = s.handle(ConnectorFailed("refused"))
    assert s.state is State.FALLBACK and TransferCall(U, "2000") in acts


def test_play_fallback_hangs_up_after_the_prompt():
    s = CallSession(U, settings(fallback_action="play", fallback_file="/sounds/sorry.wav"))
    s.handle(CallerInfoReady("1", "a", "2", 8000))
    acts = s.handle(ConnectorFailed("timeout"))
    # The hangup is queued on the switch behind the prompt (event-lock), so it happens after
    # the prompt even if its PLAYBACK_STOP is never seen (issue 6).
    kinds = [type(a).__name__ for a in acts]
    assert PlayFile(U, "/sounds/sorry.wav", "sendmsg") in acts and "HangupCall" not in kinds
    assert kinds.index("PlayFile") + 1 == kinds.index("QueueHangup")
    assert not any(isinstance(a, HangupCall) for a in s.handle(em.PlaybackStopped(U, None, "/sounds/sorry.wav", "done", 900)))


def test_connector_drop_reconnects_once_with_the_same_context_then_falls_back():
    s = active(reconnect_attempts=1)
    assert s.handle(ConnectorClosed(1006, "gone")) == [ConnectConnector(resumed=True)]
    assert s.state is State.RECONNECTING
    assert sent(s.handle(ConnectorUp()))[0]["resumed"] is True
    acts = s.handle(ConnectorClosed(1006, "gone again"))
    assert s.state is State.FALLBACK and HangupCall(U) in acts


def test_hangup_ends_the_call_with_stop_and_a_summary():
    s = active()
    s.handle(tts(300))
    acts = s.handle(ForkClosed(1000))
    assert {"type": "stop", "reason": "hangup"} in sent(acts)
    assert isinstance(acts[-1], Finished) and acts[-1].summary.outcome == "completed"
    assert any(isinstance(a, DeleteFile) for a in acts)
    assert s.state is State.ENDED
    assert s.handle(cp.Clear()) == [] and s.handle(em.HangupComplete(U, None, "NORMAL_CLEARING")) == []
    assert s.caller_audio(bytes(640)) == []


def test_inband_transport_plays_the_file_the_switch_reports():
    s = active(transport="inband")
    acts = [a for ms in (80, 160, 320, 440) for a in s.handle(tts(ms))]  # streamed: several segments
    play_audio = [json.loads(a.text) for a in acts if type(a).__name__ == "SendToFork"]
    assert play_audio and all(m["data"]["audioContentType"] == "raw" and m["data"]["sampleRate"] == 8000 for m in play_audio)
    ok = em.ForkEvent(U, None, "play_audio", {"file": f"/tmp/{U}_1.tmp.r8"})
    assert [a for a in s.handle(ok) if type(a).__name__ != "ArmTimer"] == [PlayFile(U, f"/tmp/{U}_1.tmp.r8", "sendmsg")]
    evil = em.ForkEvent(U, None, "play_audio", {"file": "/etc/passwd"})
    assert not any(isinstance(a, PlayFile) for a in s.handle(evil))
    assert s.errors["inband_bad_file"] == 1
    for n in range(2, len(play_audio)):  # the rest of the outstanding playAudio messages
        acts = s.handle(em.ForkEvent(U, None, "play_audio", {"file": f"/tmp/{U}_{n}.tmp.r8"}))
        assert [type(a).__name__ for a in acts] == ["PlayFile", "ArmTimer"]  # the playback watchdog
    assert s.handle(em.ForkEvent(U, None, "play_audio", {"file": f"/tmp/{U}_9.tmp.r8"})) == []
    assert s.errors["inband_unexpected_file"] == 1


def test_no_20_ms_top_up_while_the_first_file_plays():
    # Seen on a real 1.10.12: a 20 ms file queued on the first file's PLAYBACK_START was
    # followed by a one-frame hole. While a file plays, a top-up waits for 40 ms (REF).
    s = active()
    acts = s.handle(tts(80)) + s.handle(tts(20))  # the 80 ms first file and 20 ms left over
    (first,) = [a for a in acts if isinstance(a, PlayFile)]
    out = s.handle(em.PlaybackStarted(U, "support", first.path))
    assert not [a for a in out if isinstance(a, PlayFile)]
    out = s.handle(tts(40))
    writes = [a for a in out if isinstance(a, WriteSegment)]
    assert [len(w.pcm) // 16 for w in writes] == [60]  # 20 + 40 ms, whole ptimes, in one file


def test_a_missing_fallback_prompt_still_hangs_up():
    # Seen on a real 1.10.12: a missing file gets no PLAYBACK_* events, only
    # CHANNEL_EXECUTE_COMPLETE "FILE NOT FOUND"; the call must not wait for it forever.
    # The hangup is queued on the switch behind the prompt (QueueHangup, event-lock), and a
    # queued execute runs after a failed one, so the switch hangs up without our help.
    s = CallSession(U, settings(fallback_action="play", fallback_file="/sounds/missing.wav"))
    s.handle(CallerInfoReady("1", "a", "2", 8000))
    assert QueueHangup(U) in s.handle(ConnectorFailed("timeout"))
    s.handle(em.ExecuteComplete(U, None, "playback", "/sounds/missing.wav", "FILE NOT FOUND"))
    assert s.errors["playback_failed"] == 1


def test_a_tts_file_that_cannot_be_played_clears_its_marks():
    s = active()
    acts = s.handle(tts(100)) + s.handle(cp.MarkRequest("m1")) + s.handle(TimerFired("tts_idle"))
    pending = [a.path for a in acts if isinstance(a, PlayFile)]
    plays, out = list(pending), []
    while pending:  # each failure refills the queue with what is buffered
        more = s.handle(em.ExecuteComplete(U, "support", "playback", pending.pop(0), "FILE NOT FOUND"))
        pending += [a.path for a in more if isinstance(a, PlayFile)]
        plays += [a.path for a in more if isinstance(a, PlayFile)]
        out += more
    assert {"type": "mark", "name": "m1", "status": "cleared"} in sent(out)
    assert sum(isinstance(a, DeleteFile) for a in out) == len(plays) and s.errors["playback_failed"] == len(plays)
    # A file that played says FILE PLAYED, after its PLAYBACK_STOP: nothing more happens.
    assert s.handle(em.ExecuteComplete(U, "support", "playback", plays[0], "FILE PLAYED")) == []


def _frame(i):
    return i.to_bytes(2, "little") * 320  # a 640-byte frame that says which one it is


def test_frames_a_lost_leg_may_not_have_read_go_first_on_the_resumed_leg_with_their_offset():
    s = active(reconnect_attempts=1)  # 1 frame made while connecting, sent at start (offset 0)
    live = [f for i in range(10) for f in s.caller_audio(_frame(i + 1))]
    assert len(live) == 10
    # The link is lost: frames 6..10 had no pong; they come back with one handed out after the loss.
    s.undelivered(live[5:])
    s.undelivered(s.caller_audio(_frame(11)))
    assert s.handle(ConnectorClosed(1006, "keepalive ping timeout")) == [ConnectConnector(resumed=True)]
    during = s.caller_audio(_frame(12))  # said while reconnecting: buffered, not lost
    assert during == []
    acts = s.handle(ConnectorUp())
    start = sent(acts)[0]
    assert start["resumed"] is True
    replay = [f for a in acts if isinstance(a, SendAudioToConnector) for f in a.frames]
    assert replay == [_frame(i) for i in range(6, 13)]
    # Frame 0 was the one made while connecting; frame 6 is the 7th of the call.
    assert start["audio"]["offset_ms"] == 6 * 20
    assert s.replayed_frames == 6 and s.dropped_frames == 0


def test_the_replay_is_bounded_by_the_prestart_buffer_and_the_overflow_counted():
    s = active(reconnect_attempts=1, prestart_buffer_ms=100)  # 5 frames
    live = [f for i in range(8) for f in s.caller_audio(_frame(i + 1))]
    s.undelivered(live)
    s.handle(ConnectorClosed(1006, "gone"))
    acts = s.handle(ConnectorUp())
    replay = [f for a in acts if isinstance(a, SendAudioToConnector) for f in a.frames]
    assert replay == [_frame(i) for i in range(4, 9)]  # the newest 5, in order
    assert sent(acts)[0]["audio"]["offset_ms"] == 4 * 20 and s.dropped_frames == 3


def test_undelivered_frames_are_ignored_once_the_call_is_past_the_connector():
    s = active(reconnect_attempts=0)
    s.handle(ConnectorClosed(1006, "gone"))
    assert s.state is State.FALLBACK
    s.undelivered([_frame(1)])
    assert s.replayed_frames == 0


def test_connector_rate_comes_from_the_settings_a_twilio_call_gets_8k_frames():
    """The dialect's audio rate (twilio: 8 kHz) sets the caller frames and the start's rate."""
    s = CallSession(U, settings(fork_rate=8000, connector_rate=8000))
    s.start()
    s.handle(CallerInfoReady("+15550001111", "Alice", "+15551234567", 8000))
    acts = s.handle(ConnectorUp())
    start = next(a.message for a in acts if isinstance(a, SendToConnector))
    assert start.sample_rate == 8000 and start.frame_ms == 20
    pcm = (np.sin(np.arange(800) * 0.1) * 5000).astype("<i2").tobytes()
    frames = s.caller_audio(pcm)  # 100 ms at 8 kHz, fork rate = connector rate: passed through
    assert [len(f) for f in frames] == [320] * 5 and b"".join(frames) == pcm
    with pytest.raises(LocalUsageError):
        CallSession(U, settings(connector_rate=11025))


def test_tts_in_bursts_with_pauses_is_played_whole_with_no_silence_inserted():
    # Pipecat's resampler releases 8 kHz TTS in 137.5 ms bursts (1100 samples: not whole 20 ms
    # frames) with a pause after each, longer than the 60 ms TTS-idle flush. The flush padded each
    # burst's partial frame with zeros: ~39 runs of 1-20 samples of silence in 5 s of speech
    # (tests/e2e/test_pipecat.py). While a file still plays, the partial frame waits for the next
    # burst; it is padded only at the end, when the queue has run dry.
    s = active()
    bursts = [np.rint(np.sin(np.arange(i * 1100, (i + 1) * 1100) * 0.05) * 8000).astype("<i2").tobytes() for i in range(12)]
    writes, playing = [], []
    for burst in bursts:
        acts = s.handle(cp.TtsAudio(burst, 8000)) + s.handle(TimerFired("tts_idle"))
        for _ in range(3):  # the switch starts what was queued and finishes all but the newest file
            for a in acts:
                if isinstance(a, PlayFile):
                    playing.append(a.path)
                    acts += s.handle(em.PlaybackStarted(U, "support", a.path))
            writes += [a.pcm for a in acts if isinstance(a, WriteSegment)]
            acts = []
            while len(playing) > 1:
                acts += s.handle(em.PlaybackStopped(U, "support", playing.pop(0), "done", None))
    while playing:  # the last file ends: the queue runs dry, the held partial frame goes out
        acts = s.handle(em.PlaybackStopped(U, "support", playing.pop(0), "done", None))
        for a in acts:
            if isinstance(a, PlayFile):
                playing.append(a.path)
        writes += [a.pcm for a in acts if isinstance(a, WriteSegment)]
    spoken = b"".join(bursts)
    heard = b"".join(writes)
    assert all(len(w) % 320 == 0 for w in writes)  # whole ptimes, always
    assert heard[: len(spoken)] == spoken  # nothing inserted, nothing lost
    assert len(heard) - len(spoken) < 320 and not any(heard[len(spoken):])  # one pad, at the very end


def _burst(i):
    return np.rint(np.sin(np.arange(i * 1100, (i + 1) * 1100) * 0.05) * 8000).astype("<i2").tobytes()


def test_a_start_lead_holds_an_utterance_s_first_file_until_its_timer():
    # TTS paced in real time (Pipecat, 137.5 ms bursts 120-160 ms apart): on a real 1.10.12 each
    # file ended before the next burst came and the caller heard 1-2 frame holes; the first
    # file now waits start_lead_ms, so every later burst has that margin.
    s = active(start_lead_ms=60)
    acts = s.handle(cp.TtsAudio(_burst(0), 8000))
    assert not [a for a in acts if isinstance(a, (WriteSegment, PlayFile))]
    assert ("start_lead", 0.06) in [(a.name, a.delay_s) for a in acts if type(a).__name__ == "ArmTimer"]
    assert not [a for a in s.handle(TimerFired("tts_idle")) if isinstance(a, (WriteSegment, PlayFile))]
    acts = s.handle(TimerFired("start_lead"))
    (first,) = [a for a in acts if isinstance(a, WriteSegment)]
    (play,) = [a for a in acts if isinstance(a, PlayFile)]
    assert first.pcm == _burst(0)[:1920]  # its 6 whole ptimes; the partial frame waits
    s.handle(em.PlaybackStarted(U, "support", play.path))
    # While a file plays, the next burst is not held: it goes out as it comes.
    acts = s.handle(cp.TtsAudio(_burst(1), 8000))
    assert [a.pcm for a in acts if isinstance(a, WriteSegment)] == [(_burst(0) + _burst(1))[1920:4160]]
    assert "start_lead" not in [a.name for a in acts if type(a).__name__ == "ArmTimer"]


def test_a_clear_during_the_start_lead_drops_it_and_the_timer_plays_nothing():
    s = active(start_lead_ms=60)
    s.handle(cp.TtsAudio(_burst(0), 8000))
    acts = s.handle(cp.MarkRequest("m1"))
    assert sent(acts) == []  # its audio has not played
    assert sent(s.handle(cp.Clear())) == [{"type": "mark", "name": "m1", "status": "cleared"}]
    assert not [a for a in s.handle(TimerFired("start_lead")) if isinstance(a, (WriteSegment, PlayFile))]
    # The next utterance starts on a silent channel again: it is held again.
    acts = s.handle(cp.TtsAudio(_burst(1), 8000))
    assert not [a for a in acts if isinstance(a, (WriteSegment, PlayFile))]
    assert [len(a.pcm) for a in s.handle(TimerFired("start_lead")) if isinstance(a, WriteSegment)] == [1920]


def test_no_start_lead_by_default():
    s = active()
    acts = s.handle(cp.TtsAudio(_burst(0), 8000))
    assert [len(a.pcm) for a in acts if isinstance(a, WriteSegment)] == [1920]
    assert "start_lead" not in [a.name for a in acts if type(a).__name__ == "ArmTimer"]
    with pytest.raises(LocalUsageError):
        active(start_lead_ms=-1)
