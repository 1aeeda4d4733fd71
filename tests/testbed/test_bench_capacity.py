"""The capacity benchmark's machinery (issues 5 and 13).

A smoke run (a tiny N for a few seconds) asserts counts, never timings: the fork server ran as
its own process, every call came up, caller frames crossed it bit-exact (16k timestamps intact)
and none was lost, TTS was turned into playback commands, ESL events were counted, and the JSON
carries every field the table prints. The rest drives the bench's sans-I/O parts with bytes and
events alone (SIP dialog, RTP counts, caller-frame checks, the ESL tap's counts, the dialplan
flags) and the emulated switch's model of the real one (blanked frames, events per segment).
"""

import json

import numpy as np
import pytest
import soxr

pytest.importorskip("ESL")

from fork_server.esl_wire import EslReader  # noqa: E402
from testbed.bench import benchconf, capacity, plot, sipmsg  # noqa: E402
from testbed.bench.esltap import TapCounts  # noqa: E402
from testbed.bench.framecheck import FrameLog, analyse, identify, is_silent  # noqa: E402
from testbed.bench.load import BenchCall, LeanSwitch, Recorder  # noqa: E402
from testbed.bench.rtp import Heard, RtpSender, parse_header  # noqa: E402
from testbed.bench.voice import CallerVoice  # noqa: E402
from testbed.freeswitch.esl_server import serialize_event  # noqa: E402


@pytest.mark.parametrize("esl", ["python-esl", "asyncio"])
def test_a_tiny_run_measures_both_servers_and_writes_the_json(tmp_path, capsys, esl):
    result = capacity.run([
        "--calls", "4", "--window", "2.5", "--settle", "0.1", "--drain", "1.0",
        "--first-tts-within", "1.5", "--out", str(tmp_path), "--esl", esl,
    ])
    saved = json.loads((tmp_path / "capacity-latest.json").read_text())
    assert saved["rows"] == json.loads(json.dumps(result["rows"]))
    rows = {r["server"]: r for r in saved["rows"]}
    assert set(rows) == {"voicefork", "relay"}
    for row in rows.values():
        assert set(capacity.FIELDS) <= set(row)
        assert row["calls"] == 4 and row["calls_up"] == 4
        assert row["frames_in_window"] > 0 and row["frames_received"] > 0
        assert row["frames_lost"] == 0 and row["ts_mismatch"] == 0
        assert row["killed_by_server"] == 0 and row["forks_still_open"] == 0
        assert row["latency_ms"]["p50"] is not None and row["cpu_percent"] > 0
    ours = rows["voicefork"]
    assert ours["segments"] > 0 and ours["esl_commands_per_s"] > 0 and ours["esl_by_kind"]["sendmsg"] > 0
    assert ours["tts_latency_ms"]["p50"] is not None
    assert ours["switch"] == "emulated" and ours["esl_events_per_call_s"] > 0
    assert ours["esl_events_per_segment"] == 3.0  # PLAYBACK_START, PLAYBACK_STOP, CHANNEL_EXECUTE_COMPLETE
    assert ours["frames_missing"] == 0 and ours["caller_frames"] >= ours["frames_in_window"]
    assert ours["server_exit"] == 0  # SIGTERM drained and exited cleanly
    assert rows["relay"]["segments"] == 0  # the baseline does no playback
    assert saved["ratios"][0]["calls"] == 4
    out = capsys.readouterr().out
    assert "voicefork/relay" in out and "server" in out


def test_switch_real_without_freeswitch_bin_is_a_one_line_error(monkeypatch, capsys):
    monkeypatch.delenv("FREESWITCH_BIN", raising=False)
    with pytest.raises(SystemExit) as exc:
        capacity.parse_args(["--switch", "real"])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "just freeswitch" in err and "FREESWITCH_BIN" in err


def test_quick_real_is_a_few_calls_for_ten_seconds(monkeypatch, tmp_path):
    fake = tmp_path / "freeswitch"
    fake.write_text("#!/bin/sh\n")
    fake.chmod(0o755)
    monkeypatch.setenv("FREESWITCH_BIN", str(fake))
    opts = capacity.parse_args(["--switch", "real", "--quick"])
    assert opts.calls == [4] and opts.window == 10.0
    assert capacity.parse_args(["--quick"]).calls == [20, 50]  # CI's emulated run is unchanged


# ---------------------------------------------------------------- caller frames (framecheck)


def _through_8k_route(voice, idx, k0, k1):
    """What the connector gets for packets k0..k1 of a call on the 8k route: μ-law decoded, then
    8k→16k (a soxr stand-in for the fork server's FIR), as 640-byte frames."""
    up = soxr.resample(voice.reference(idx, k0, k1).astype(np.float64), 8000, 16000)
    pcm = np.clip(np.rint(up), -32768, 32767).astype("<i2")
    return [pcm[i * 320 : (i + 1) * 320].tobytes() for i in range(k1 - k0)]


def test_a_blanked_stretch_of_half_a_frame_or_more_is_silent_and_speech_never_is():
    voice = CallerVoice()
    frames = _through_8k_route(voice, 3, 0, 200)
    assert not any(is_silent(f) for f in frames)
    assert is_silent(bytes(640))
    frame = np.frombuffer(frames[50], "<i2")
    for start, end, silent in [(40, 320, True), (0, 160, True), (0, 120, False), (161, 320, False), (100, 260, True)]:
        blanked = frame.copy()
        blanked[start:end] = 0
        assert is_silent(blanked.tobytes()) is silent, (start, end)


def test_identify_finds_the_packet_a_frame_came_from():
    voice = CallerVoice()
    frames = _through_8k_route(voice, 7, 100, 160)
    ref = lambda k0, k1: voice.reference(7, k0, k1)  # noqa: E731
    for j in (0, 17, 42):
        k, score, _, shift = identify(frames[j], ref, 100 + j + 6, 10)
        assert k == 100 + j and score > 0.9 and abs(shift) < 80
    assert identify(bytes(640), ref, 120, 10)[1] < 0.5


def test_analyse_finds_missing_blanked_and_replaced_frames_and_when_they_were():
    voice = CallerVoice()
    frames = _through_8k_route(voice, 1, 0, 300)
    other = _through_8k_route(voice, 2, 0, 300)  # another caller's voice: what a concealment would not be either
    log = FrameLog()
    sent = [1_000_000_000 + 20_000_000 * k for k in range(300)]
    t = 1_005_000_000
    runs = [[sent[120], sent[180]]]  # the bot talks over packets 120..180
    for k in range(300):
        if k in (70, 150, 240, 241):  # never arrive: one while the bot talks, three while it is silent
            continue
        late = 20_000_000 if 60 <= k < 70 else 0
        if k == 60:  # a concealed frame in packet 60's slot pushes 60..69 one frame later, until 70 is dropped
            log.add(other[59], t + 20_000_000 * k, anchors=True)
        frame = bytes(640) if k in (121, 122) else other[k] if k == 200 else frames[k]
        log.add(frame, t + 20_000_000 * k + late, anchors=True)
    out = analyse(log, runs, sent_ns=sent, reference=lambda k0, k1: voice.reference(1, k0, k1))
    assert out["frames"] == 297 and out["silent"] == 2 and out["silent_bot"] == 2
    # Packets that never reached the connector as themselves: 70, 150, 240, 241, and 200 (replaced).
    assert out["packets"] == 300 and out["missing"] == 5 and out["missing_bot"] == 1
    assert out["replaced"] == 2 and out["replaced_bot"] == 0
    assert out["anchors"] >= 10 and out["anchors_failed"] == 0 and out["backsteps"] == 0
    # Every matched frame is placed on its own packet, the ones after a missing frame too.
    assert len(out["latency_ns"]) == 297 - 2 - 2
    assert set(out["latency_ns"]) == {5_000_000, 25_000_000} and (out["latency_ns"] == 25_000_000).sum() == 10
    assert analyse(log, runs)["missing"] == 0  # without the caller's side, only blanking is counted


# ---------------------------------------------------------------- RTP and SIP (sans-I/O)


def test_heard_counts_utterances_holes_losses_and_resyncs():
    h = Heard()
    t, seq, ts = 0, 10, 1000
    for _ in range(5):  # one utterance, steady
        assert h.receive(seq, ts, False, t) is (t == 0)
        t, seq, ts = t + 20_000_000, seq + 1, ts + 160
    h.receive(seq + 2, ts + 320, False, t + 40_000_000)  # two packets lost: a hole
    t, seq, ts = t + 40_000_000, seq + 2, ts + 320
    h.receive(seq + 1, ts + 320, True, t + 20_000_000)  # timestamp jumps, packet on time: a resync
    t, seq, ts = t + 20_000_000, seq + 1, ts + 320
    h.receive(seq, ts, False, t)  # duplicate
    assert h.receive(seq + 1, ts + 160, True, t + 2_000_000_000)  # after 2 s of nothing: a new utterance
    assert (h.utterances, h.holes, h.hole_ptimes, h.lost, h.resyncs, h.duplicates, h.markers) == (2, 1, 2, 2, 1, 1, 2)
    assert len(h.runs) == 2 and h.runs[0][0] == 0


def test_rtp_sender_numbers_20_ms_pcmu_packets():
    tx = RtpSender(0xFFFF, 0xFFFFFF00, 5)
    a, b = tx.packet(b"\xff" * 160), tx.packet(b"\xff" * 160)
    assert parse_header(a) == (0, 0, 0xFFFFFF00, False) and parse_header(b) == (0, 1, 0xFFFFFF00 + 160, False)
    assert len(a) == 172 and parse_header(b"\x00" * 12) is None and parse_header(b"short") is None


def test_sip_dialog_invite_answer_ack_and_bye_both_ways():
    d = sipmsg.Dialog("+15550000008", "+15550000001", "Bench 1", ("127.0.0.1", 5070), ("127.0.0.1", 5080), 40000)
    invite = sipmsg.parse(d.invite())
    assert invite.method == "INVITE" and "m=audio 40000 RTP/AVP 0" in invite.body
    ok = ("SIP/2.0 200 OK\r\nVia: x\r\nTo: <sip:+15550000008@127.0.0.1>;tag=abc\r\nFrom: y\r\n"
          f"Call-ID: {d.call_id}\r\nCSeq: 1 INVITE\r\nContact: <sip:fs@127.0.0.1:5080>\r\n\r\n"
          "v=0\r\nc=IN IP4 127.0.0.1\r\nm=audio 30000 RTP/AVP 0\r\n")
    ack, answered = d.receive(sipmsg.parse(ok.encode()))
    assert isinstance(answered, sipmsg.Answered) and answered.rtp_addr == ("127.0.0.1", 30000)
    assert sipmsg.parse(ack.data).first == "ACK sip:fs@127.0.0.1:5080 SIP/2.0"
    again = d.receive(sipmsg.parse(ok.encode()))  # a retransmitted 200 is ACKed again
    assert [type(e) for e in again] == [sipmsg.Reply]
    bye = ("BYE sip:caller@127.0.0.1:5070 SIP/2.0\r\nVia: v\r\nFrom: f\r\nTo: t\r\n"
           f"Call-ID: {d.call_id}\r\nCSeq: 5 BYE\r\n\r\n")
    reply, hung = d.receive(sipmsg.parse(bye.encode()))
    assert sipmsg.parse(reply.data).status == 200 and hung == sipmsg.HungUp(by_switch=True)
    assert d.bye() is None  # ended already: nothing to send
    with pytest.raises(sipmsg.SipParseError):
        sipmsg.parse(b"hello")


# ---------------------------------------------------------------- the ESL tap's counts


def test_tap_counts_events_bytes_and_the_events_of_each_segment():
    counts = TapCounts()
    reader = EslReader()
    stream = b""
    for name, extra in [("PLAYBACK_START", {"Playback-File-Path": "/s/1.r8"}),
                        ("PLAYBACK_STOP", {"Playback-File-Path": "/s/1.r8", "Playback-Status": "done"}),
                        ("CHANNEL_EXECUTE_COMPLETE", {"Application": "playback", "Application-Data": "/s/1.r8"}),
                        ("PLAYBACK_START", {"Playback-File-Path": "/s/2.r8"})]:
        stream += serialize_event({"Event-Name": name, "Unique-ID": "u", **extra}, None)
    frames = reader.feed(stream)
    counts.feed(frames[0])  # not counting yet
    counts.on = True
    for f in frames[1:]:
        counts.feed(f)
    assert counts.events == {"PLAYBACK_STOP": 1, "CHANNEL_EXECUTE_COMPLETE": 1, "PLAYBACK_START": 1}
    assert counts.total()[1] == sum(len(f.head) + len(f.body) for f in frames[1:])
    assert counts.segment_profile() == {"PLAYBACK_START": 1}  # segment 1's start came before counting


# ---------------------------------------------------------------- the rendered dialplan's flags


def test_route_flags_read_the_rendered_dialplan_and_variants_change_only_what_they_say(tmp_path):
    cfg = benchconf.write_config(tmp_path, esl_port=8021, connector_url="ws://127.0.0.1:9/c", spool=tmp_path / "s", fork_port=1234)
    rendered = benchconf.render_conf(cfg)
    flags = benchconf.route_flags(rendered)
    assert set(flags) == {r.name for r in benchconf.ROUTES}
    plain = benchconf.dialplan_variant(rendered, verbose_events=False, jitter_ms=None, routes={"bench8"})
    both = benchconf.dialplan_variant(rendered, verbose_events=True, jitter_ms=40)
    assert benchconf.route_flags(plain) == {**flags, "bench8": benchconf.RouteFlags(False, None)}
    assert set(benchconf.route_flags(both).values()) == {benchconf.RouteFlags(True, 40)}
    assert "uuid_audio_fork" in both[benchconf.DIALPLAN_FILE]


# ---------------------------------------------------------------- the emulated switch's model


def _switch(tmp_path, jitter_ms):
    rec = Recorder()
    sw = LeanSwitch(rec, flags={"bench8": benchconf.RouteFlags(False, jitter_ms)})
    call = BenchCall(0, "bench8", 8000, 0, 0.0)
    sw.add(call, "bench8")
    events = []
    sw.subscribe(lambda h, body: events.append(h))
    files = []
    for i, ms in enumerate((60, 40, 40)):
        p = tmp_path / f"{i}.r8"
        p.write_bytes(bytes(16 * ms))
        files.append(str(p))
    return sw, call, events, files


def _play(sw, call, files):
    for f in files:
        assert sw.sendmsg(call.uuid, {"execute-app-name": "playback", "execute-app-arg": f, "event-lock": "true"}, None) == "+OK"


def test_each_playback_start_and_the_return_to_park_blank_two_caller_frames(tmp_path):
    sw, call, events, files = _switch(tmp_path, None)
    _play(sw, call, files)  # three files queued at once
    for _ in range(10):
        sw.tick()
    assert call.zero_next == 2 * 3 + 2
    names = [e["Event-Name"] for e in events]
    per_file = ["CHANNEL_EXECUTE", "PLAYBACK_START", "PLAYBACK_STOP", "CHANNEL_EXECUTE_COMPLETE", "PRIVATE_COMMAND"]
    assert names == per_file * 3
    assert [e.get("Playback-File-Path") for e in events if e["Event-Name"] == "PLAYBACK_START"] == files
    sizes = [len(serialize_event(e, None)) for e in events]
    assert 6000 < min(sizes[:4]) and max(sizes) < 7500  # the real switch's ~6.2-6.8 KB (testbed.bench.fsevents)
    assert len(serialize_event(events[4], None)) < 3000  # PRIVATE_COMMAND without verbose_events: no variables


def test_a_jitter_buffer_blanks_nothing_and_a_break_drops_the_queue_without_events(tmp_path):
    sw, call, events, files = _switch(tmp_path, 20)
    _play(sw, call, files)
    sw.tick()
    assert sw.api("uuid_break", f"{call.uuid} all") == "+OK\n"
    for _ in range(5):
        sw.tick()
    assert call.zero_next == 0
    assert [e["Event-Name"] for e in events] == [
        "CHANNEL_EXECUTE", "PLAYBACK_START", "PLAYBACK_STOP", "CHANNEL_EXECUTE_COMPLETE", "PRIVATE_COMMAND"]
    assert events[2]["Playback-Status"] == "break"


def test_the_picture_is_drawn(tmp_path):
    pytest.importorskip("matplotlib")
    rows = [{"server": "voicefork", "switch": s, "calls": n, "cpu_ms_per_call_s": 3.0 + n / 100,
             "fs_cpu_ms_per_call_s": 6.0 if s == "real" else None, "latency_ms": {"p99": 1.0 + n / 50}}
            for s in ("emulated", "real") for n in (20, 50)]
    rows.append({"server": "relay", "switch": "emulated", "calls": 20, "cpu_ms_per_call_s": 1.0, "latency_ms": {"p99": 0.5}})
    assert plot.draw(rows, tmp_path / "c.png").startswith("wrote")
    assert (tmp_path / "c.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_protocol_bench_measures_both_dialects_on_the_wire():
    """`just bench --protocol twilio`: both rows, and the bytes are what each wire carries."""
    from testbed.bench import protocol

    rows = {r["protocol"]: r for r in protocol.run(200)}
    assert set(rows) == {"voicefork", "twilio"}
    assert rows["voicefork"]["wire_bytes"] >= 640 + 6  # 20 ms at 16 kHz plus a masked frame header
    # 160 mu-law bytes in base64 (216) plus the media JSON, in a masked text frame
    assert 216 < rows["twilio"]["wire_bytes"] < 640
    assert all(r["encode_us"] > 0 and r["decode_us"] > 0 and r["hot_path_us"] > 0 for r in rows.values())
