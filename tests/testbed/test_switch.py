"""The emulated switch against REF (../shared/reference/freeswitch-observed.md), fact by fact.

Times are counted on the channel's frame clock (ticks of 20 ms), so holes and "within one
frame" are exact and do not depend on how busy the test machine is.
"""

import asyncio
import base64
import json

import numpy as np
import pytest
from websockets.asyncio.server import serve
from websockets.http11 import Response

from testbed.freeswitch.dialplan import Dialplan
from testbed.freeswitch.expand import expand
from testbed.freeswitch.fork_args import parse_fork_command, separate_blank
from testbed.freeswitch.switch import EmulatedSwitch, SwitchCrashed

DIALPLAN = """<include>
  <extension name="voicefork_support">
    <condition field="destination_number" expression="^\\+15551234567$">
      <action application="answer"/>
      <action application="set" data="voicefork_route=support"/>
      <action application="set" data="MOD_AUDIO_BASIC_AUTH_USERNAME=fs"/>
      <action application="set" data="MOD_AUDIO_BASIC_AUTH_PASSWORD=secret"/>
      <action application="set" data="fork_result=${{uuid_audio_fork(${{uuid}} start {url}/calls/support {mix} 16k {{&quot;route&quot;:&quot;support&quot;,&quot;uuid&quot;:&quot;${{uuid}}&quot;}})}}"/>
      <action application="park"/>
    </condition>
  </extension>
</include>
"""


# ---------------------------------------------------------------- pure parts


def test_argument_parser_splits_metadata_with_a_space_as_ref_says():
    cmd = parse_fork_command('u1 start ws://h/x mono 16k {"a": 1}')
    assert (cmd.bugname, cmd.metadata) == ('{"a":', "1}")


def test_lone_optional_argument_is_metadata_only_with_brace_or_bracket():
    assert parse_fork_command("u1 start ws://h/x mono 8k {}").metadata == "{}"
    assert parse_fork_command("u1 start ws://h/x mono 8k [1]").metadata == "[1]"
    cmd = parse_fork_command("u1 start ws://h/x mono 8k mybug")
    assert (cmd.bugname, cmd.metadata) == ("mybug", None)


def test_last_of_seven_tokens_keeps_the_rest_and_quotes_group():
    assert separate_blank("a b c d e f g h  i") == ["a", "b", "c", "d", "e", "f", "g h  i"]
    assert separate_blank("a 'b c' d") == ["a", "b c", "d"]
    assert separate_blank(r"a b\ c") == ["a", "b", "c"] or separate_blank(r"a b\ c") == ["a", "b c"]


def test_rates_follow_atoi_and_are_not_checked():
    assert parse_fork_command("u start ws://h mono 44100").rate == 44100
    assert parse_fork_command("u start ws://h mono 16k").rate == 16000


def test_expansion_runs_the_api_with_expanded_arguments():
    calls = []
    out = expand(
        'fork_result=${uuid_audio_fork(${uuid} start ws://h mono 16k {"uuid":"${uuid}"})}',
        {"uuid": "U"}.get,
        lambda cmd, args: calls.append((cmd, args)) or "+OK Success\n",
    )
    assert out == "fork_result=+OK Success\n"
    assert calls == [("uuid_audio_fork", 'U start ws://h mono 16k {"uuid":"U"}')]


def test_dialplan_routes_by_destination(tmp_path):
    f = tmp_path / "d.xml"
    f.write_text(DIALPLAN.format(url="ws://x", mix="mono"))
    dp = Dialplan.load(f)
    assert dp.route({"destination_number": "+15551234567"})[0] == "voicefork_support"
    assert dp.route({"destination_number": "+15551234568"}) is None


# ---------------------------------------------------------------- with a fork server stand-in


class Peer:
    def __init__(self, status=None, close_after=None, reply=None):
        self.status, self.close_after, self.reply = status, close_after, reply
        self.texts, self.binary, self.close_code, self.request = [], [], None, None

    async def process_request(self, conn, request):
        self.request = request
        if self.status:
            return Response(self.status, "Forbidden", __import__("websockets").Headers())
        return None

    async def handler(self, ws):
        try:
            async for m in ws:
                (self.texts if isinstance(m, str) else self.binary).append(m)
                if self.reply and len(self.texts) == 1 and isinstance(m, str):
                    for r in self.reply:
                        await ws.send(r)
                if self.close_after and len(self.binary) >= self.close_after:
                    await ws.close()
        finally:
            self.close_code = ws.close_code


@pytest.fixture
async def rig(tmp_path):
    made = []

    async def make(mix="mono", **peer_kw):
        peer = Peer(**peer_kw)
        server = await serve(
            peer.handler, "127.0.0.1", 0, subprotocols=["audio.drachtio.org"], process_request=peer.process_request
        ).__aenter__()
        port = server.sockets[0].getsockname()[1]
        f = tmp_path / "dp.xml"
        f.write_text(DIALPLAN.format(url=f"ws://127.0.0.1:{port}", mix=mix))
        sw = EmulatedSwitch(f, temp_dir=str(tmp_path))
        await sw.start()
        events = []
        sw.subscribe(lambda h, b: events.append((dict(h), b)))
        made.append((sw, server))
        return sw, peer, events

    yield make
    for sw, server in made:
        await sw.close()
        server.close()
        await server.wait_closed()


def names(events, uuid=None):
    return [
        h["Event-Name"] if h["Event-Name"] != "CUSTOM" else h["Event-Subclass"]
        for h, _ in events
        if uuid is None or h.get("Unique-ID") == uuid
    ]


async def until(pred, timeout=3.0):
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not pred():
        assert loop.time() < end, "timed out"
        await asyncio.sleep(0.01)


def tone(ms, rate=8000, amp=8000, freq=440):
    n = rate * ms // 1000
    return (amp * np.sin(2 * np.pi * freq * np.arange(n) / rate)).astype("<i2").tobytes()


async def test_handshake_metadata_and_frames_are_as_observed(rig):
    sw, peer, events = await rig()
    ch = sw.place_call("+15551234567")
    await until(lambda: len(peer.binary) >= 25)
    h = peer.request.headers
    assert h["Host"] == "127.0.0.1" and h["Origin"] == "http://127.0.0.1"
    assert h["Sec-WebSocket-Protocol"] == "audio.drachtio.org"
    assert h["Pragma"] == "no-cache" and h["Cache-Control"] == "no-cache"
    assert h["Authorization"] == "Basic " + base64.b64encode(b"fs:secret").decode()
    assert "User-Agent" not in h
    assert peer.texts[0] == json.dumps({"route": "support", "uuid": ch.uuid}, separators=(",", ":"))
    assert {len(b) for b in peer.binary} == {640}  # PCMU 20 ms forked mono 16k
    assert ch.vars["fork_result"] == "+OK Success\n"
    ch.hangup()
    await until(lambda: peer.close_code is not None)
    assert peer.close_code == 1000
    assert "mod_audio_fork::connect" in names(events)
    assert names(events)[-1] == "CHANNEL_HANGUP_COMPLETE"


async def test_caller_speech_reaches_the_fork_resampled(rig):
    sw, peer, _ = await rig()
    ch = sw.place_call("+15551234567")
    await until(lambda: len(peer.binary) >= 2)
    start = len(peer.binary)
    ch.say(tone(200))
    await until(lambda: len(peer.binary) >= start + 15)
    got = np.frombuffer(b"".join(peer.binary[start:]), "<i2")
    assert np.abs(got).max() > 6000  # the tone, at 16 kHz


async def test_sendmsg_with_event_lock_is_gap_free_and_pads_partial_ptime(rig, tmp_path):
    sw, peer, events = await rig()
    ch = sw.place_call("+15551234567")
    await until(lambda: ch.parked)
    paths = []
    for i, ms in enumerate((100, 210, 40)):
        p = tmp_path / f"s{i}.r8"
        p.write_bytes(tone(ms, amp=4000 + 1000 * i))
        paths.append(str(p))
        assert sw.sendmsg(ch.uuid, {"call-command": "execute", "execute-app-name": "playback", "execute-app-arg": str(p), "event-lock": "true"}) == "+OK"
    await until(lambda: len(ch.playbacks) == 3)
    assert ch.ear.gaps() == []  # back to back on the frame clock
    assert [f.source for f in ch.ear.frames].count(paths[1]) == 11  # 210 ms padded to 220
    heard = ch.ear.pcm()
    assert len(heard) == (100 + 220 + 40) * 16
    assert heard[(100 + 210) * 16 : (100 + 220) * 16] == bytes(160)  # the 10 ms hole
    seq = [n for n in names(events, ch.uuid) if n.startswith("PLAYBACK")]
    assert seq == ["PLAYBACK_START", "PLAYBACK_STOP"] * 3
    stops = [h for h, _ in events if h["Event-Name"] == "PLAYBACK_STOP"]
    assert [h["Playback-Status"] for h in stops] == ["done"] * 3
    assert [h["Playback-File-Path"] for h in stops] == paths


async def test_sendmsg_starts_within_two_frames(rig, tmp_path):
    sw, _, _ = await rig()
    ch = sw.place_call("+15551234567")
    await until(lambda: ch.parked)
    p = tmp_path / "a.r8"
    p.write_bytes(tone(60))
    tick = ch.tick
    sw.sendmsg(ch.uuid, {"call-command": "execute", "execute-app-name": "playback", "execute-app-arg": str(p), "event-lock": "true"})
    await until(lambda: ch.playbacks)
    assert 1 <= ch.ear.frames[0].tick - tick <= 2  # REF: first audio 30 ms (max 39)


async def test_broadcast_puts_five_lead_frames_before_every_file(rig, tmp_path):
    sw, _, _ = await rig()
    ch = sw.place_call("+15551234567")
    await until(lambda: ch.parked)
    paths = []
    for i in range(3):
        p = tmp_path / f"b{i}.r8"
        p.write_bytes(tone(100))
        paths.append(str(p))
    tick = ch.tick
    for p in paths:
        assert sw.api("uuid_broadcast", f"{ch.uuid} {p} aleg") == "+OK Message sent\n"
    await until(lambda: len(ch.playbacks) == 3)
    assert [n for _, n in ch.ear.gaps()] == [5, 5]  # REF: 100 ms before every file
    first = ch.ear.frames[0].tick - tick
    assert 6 <= first <= 8  # REF: 128 ms median on an idle park


async def test_broadcast_hole_is_nine_frames_when_the_caller_sends_no_rtp(rig, tmp_path):
    sw, _, _ = await rig()
    ch = sw.place_call("+15551234567", caller_sends_rtp=False)
    await until(lambda: ch.parked)
    for i in range(2):
        p = tmp_path / f"b{i}.r8"
        p.write_bytes(tone(60))
        sw.api("uuid_broadcast", f"{ch.uuid} {p} aleg")
    await until(lambda: len(ch.playbacks) == 2)
    assert [n for _, n in ch.ear.gaps()] == [9]  # REF: 180 ms


async def test_break_all_stops_within_a_frame_and_drops_the_queue(rig, tmp_path):
    sw, _, events = await rig()
    ch = sw.place_call("+15551234567")
    await until(lambda: ch.parked)
    for i in range(3):
        p = tmp_path / f"l{i}.r8"
        p.write_bytes(tone(1000))
        sw.sendmsg(ch.uuid, {"call-command": "execute", "execute-app-name": "playback", "execute-app-arg": str(p), "event-lock": "true"})
    await until(lambda: len(ch.ear.frames) >= 10)
    assert sw.api("uuid_break", f"{ch.uuid} all") == "+OK\n"
    heard_at_break = len(ch.ear.frames)
    await asyncio.sleep(0.3)
    assert len(ch.ear.frames) == heard_at_break  # nothing after the command
    stops = [h for h, _ in events if h["Event-Name"] == "PLAYBACK_STOP"]
    assert [h["Playback-Status"] for h in stops] == ["break"]
    completes = [h for h, _ in events if h["Event-Name"] == "CHANNEL_EXECUTE_COMPLETE" and h.get("Application") == "playback"]
    assert completes[-1]["Application-Response"] == "FILE PLAYED"  # REF: still says so


async def test_break_without_all_stops_only_the_current_file(rig, tmp_path):
    sw, _, _ = await rig()
    ch = sw.place_call("+15551234567")
    await until(lambda: ch.parked)
    for i in range(2):
        p = tmp_path / f"l{i}.r8"
        p.write_bytes(tone(400))
        sw.sendmsg(ch.uuid, {"call-command": "execute", "execute-app-name": "playback", "execute-app-arg": str(p), "event-lock": "true"})
    await until(lambda: len(ch.ear.frames) >= 5)
    sw.api("uuid_break", ch.uuid)
    await until(lambda: len(ch.playbacks) == 2)
    assert [s for _, s, _ in ch.playbacks] == ["break", "done"]
    assert 7 <= ch.ear.gaps()[0][1] <= 9  # REF: the next one starts about 160 ms later


async def test_without_event_lock_the_last_queued_plays_first(rig, tmp_path):
    sw, _, _ = await rig()
    ch = sw.place_call("+15551234567")
    await until(lambda: ch.parked)
    paths = []
    for i in range(3):
        p = tmp_path / f"n{i}.r8"
        p.write_bytes(tone(100))
        paths.append(str(p))
    sw.sendmsg(ch.uuid, {"call-command": "execute", "execute-app-name": "playback", "execute-app-arg": paths[0]})
    await until(lambda: ch.ear.frames)
    for p in paths[1:]:
        sw.sendmsg(ch.uuid, {"call-command": "execute", "execute-app-name": "playback", "execute-app-arg": p})
    await until(lambda: len(ch.playbacks) == 3)
    assert [p for p, _, _ in ch.playbacks][0] == paths[2]  # nested: scrambled order


async def test_r16_into_an_8k_call_loses_samples_at_every_boundary(rig, tmp_path):
    sw, _, _ = await rig()
    ch = sw.place_call("+15551234567")
    await until(lambda: ch.parked)
    for i in range(2):
        p = tmp_path / f"w{i}.r16"
        p.write_bytes(tone(200, rate=16000, amp=10000))
        sw.sendmsg(ch.uuid, {"call-command": "execute", "execute-app-name": "playback", "execute-app-arg": str(p), "event-lock": "true"})
    await until(lambda: len(ch.playbacks) == 2)
    heard = np.frombuffer(ch.ear.pcm(), "<i2")
    assert heard.size == 3200
    assert not heard[1600 - 17 : 1600].any()  # REF: ~17 samples, a 2.1 ms hole


async def test_play_audio_without_content_type_crashes_the_switch(rig):
    sw, peer, _ = await rig(reply=[json.dumps({"type": "playAudio", "data": {"audioContent": "AAAA"}})])
    ch = sw.place_call("+15551234567")
    await until(lambda: sw.crashed is not None)
    with pytest.raises(SwitchCrashed):
        sw.check()
    with pytest.raises(SwitchCrashed):
        sw.api("status", "")
    assert not ch.alive or sw.channels == {}


async def test_play_audio_writes_a_file_and_fires_an_event_but_does_not_play(rig, tmp_path):
    pcm = tone(100)
    msg = {"type": "playAudio", "data": {"audioContentType": "raw", "sampleRate": 8000, "audioContent": base64.b64encode(pcm).decode(), "textContent": "hi"}}
    sw, _, events = await rig(reply=[json.dumps(msg)])
    ch = sw.place_call("+15551234567")
    await until(lambda: "mod_audio_fork::play_audio" in names(events))
    h, body = next((h, b) for h, b in events if h.get("Event-Subclass") == "mod_audio_fork::play_audio")
    data = json.loads(body)
    assert data["file"].endswith(".tmp.r8") and data["file"].startswith(str(tmp_path) + f"/{ch.uuid}_")
    assert "audioContent" not in data and data["textContent"] == "hi"
    assert h["variable_voicefork_route"] == "support"  # source: channel data on CUSTOM events
    with open(data["file"], "rb") as f:
        assert f.read() == pcm
    await asyncio.sleep(0.1)
    assert ch.ear.frames == []  # REF: it does not play the file
    ch.hangup()
    await sw.settle()
    import os

    assert not os.path.exists(data["file"])  # deleted at hangup


async def test_server_close_fires_disconnect_and_the_bug_stays_attached(rig):
    sw, peer, events = await rig(close_after=3)
    ch = sw.place_call("+15551234567")
    await until(lambda: "mod_audio_fork::disconnect" in names(events))
    again = f"{ch.uuid} start ws://127.0.0.1:1/calls/x mono 16k"
    assert sw.api("uuid_audio_fork", again) == "-ERR Operation Failed\n"
    assert sw.api("uuid_audio_fork", f"{ch.uuid} stop") == "+OK Success\n"


async def test_refused_handshake_gives_connect_failed_with_the_observed_reason(rig):
    sw, _, events = await rig(status=403)
    sw.place_call("+15551234567")
    await until(lambda: "mod_audio_fork::connect_failed" in names(events))
    body = next(b for h, b in events if h.get("Event-Subclass") == "mod_audio_fork::connect_failed")
    assert json.loads(body) == {"reason": "HS: ws upgrade response not 101"}


async def test_unreachable_server_gives_unable_to_connect(tmp_path):
    f = tmp_path / "dp.xml"
    f.write_text(DIALPLAN.format(url="ws://127.0.0.1:1", mix="mono"))
    sw = EmulatedSwitch(f)
    await sw.start()
    events = []
    sw.subscribe(lambda h, b: events.append((dict(h), b)))
    ch = sw.place_call("+15551234567")
    await until(lambda: "mod_audio_fork::connect_failed" in names(events))
    assert ch.vars["fork_result"] == "+OK Success\n"  # REF: the connect is asynchronous
    body = next(b for h, b in events if h.get("Event-Subclass") == "mod_audio_fork::connect_failed")
    assert json.loads(body) == {"reason": "Unable to connect"}
    await sw.close()


async def test_mixed_sends_nothing_while_nothing_plays(rig):
    sw, peer, _ = await rig(mix="mixed")
    ch = sw.place_call("+15551234567")
    await until(lambda: len(peer.texts) == 1)
    await asyncio.sleep(0.3)
    assert peer.binary == []


async def test_stop_with_text_sends_it_then_closes_1000(rig):
    sw, peer, _ = await rig()
    ch = sw.place_call("+15551234567")
    await until(lambda: len(peer.binary) >= 2)
    assert sw.api("uuid_audio_fork", f'{ch.uuid} stop {{"bye":1}}') == "+OK Success\n"
    await until(lambda: peer.close_code is not None)
    assert peer.texts[-1] == '{"bye":1}' and peer.close_code == 1000


async def test_uuid_dump_and_getvar(rig):
    sw, _, _ = await rig()
    ch = sw.place_call("+15551234567", caller_id_number="+15550002222", caller_id_name="Ann O'Neil")
    await until(lambda: ch.parked)
    dump = sw.api("uuid_dump", ch.uuid)
    assert "Caller-Caller-ID-Name: Ann%20O%27Neil\n" in dump
    assert sw.api("uuid_getvar", f"{ch.uuid} write_rate") == "8000"
    assert sw.api("uuid_getvar", f"{ch.uuid} nope") == "_undef_"
    assert sw.api("uuid_kill", "00000000-0000-0000-0000-000000000000").startswith("-ERR")


async def test_dtmf_both_ways(rig):
    sw, _, events = await rig()
    ch = sw.place_call("+15551234567")
    await until(lambda: ch.parked)
    ch.press("5", 100)
    h = next(h for h, _ in events if h["Event-Name"] == "DTMF")
    assert (h["DTMF-Digit"], h["DTMF-Duration"]) == ("5", "800")
    assert sw.api("uuid_send_dtmf", f"{ch.uuid} 12#") == "+OK Success\n"
    assert [d for d, _ in ch.dtmf_to_caller] == ["1", "2", "#"]


# ---------------------------------------------------------------- measured on a real 1.10.12 (2026-12-06)

JB_DIALPLAN = """<include>
  <X-PRE-PROCESS cmd="set" data="MOD_AUDIO_BASIC_AUTH_USERNAME=fs"/>
  <X-PRE-PROCESS cmd="set" data="MOD_AUDIO_BASIC_AUTH_PASSWORD=secret"/>
  <extension name="voicefork_support">
    <condition field="destination_number" expression="^\\+15551234567$">
      <action application="set" data="voicefork_route=support"/>
      <action application="set" data="jitterbuffer_msec={jb}"/>
      <action application="answer"/>
      <action application="set" data="voicefork_fork_rate=${{cond(${{read_rate}} > 8000 ? 16k : 8k)}}"/>
      <action application="set" data="fork_result=${{uuid_audio_fork(${{uuid}} start {url}/calls/support mono ${{voicefork_fork_rate}} {{&quot;route&quot;:&quot;support&quot;,&quot;uuid&quot;:&quot;${{uuid}}&quot;,&quot;rate&quot;:&quot;${{voicefork_fork_rate}}&quot;}})}}"/>
      <action application="park"/>
    </condition>
  </extension>
</include>
"""


async def _play_three_files_while_the_caller_talks(sw, ch, peer, tmp_path):
    await until(lambda: ch.parked and len(peer.binary) >= 3)
    # Longer than the test needs, so a stall on a loaded box never counts the silence after it.
    ch.say(tone(10000, rate=ch.rate, amp=6000, freq=1000))
    await until(lambda: len(peer.binary) >= 8)
    before_frames, before_silenced = len(peer.binary), ch.silenced_frames
    for i in range(3):
        p = tmp_path / f"sync{i}.r8"
        p.write_bytes(tone(400))
        sw.sendmsg(ch.uuid, {"call-command": "execute", "execute-app-name": "playback", "execute-app-arg": str(p), "event-lock": "true"})
    await until(lambda: len(ch.playbacks) == 3)
    await until(lambda: len(peer.binary) >= before_frames + 70)  # past the return to park
    quiet = sum(1 for b in peer.binary[before_frames:] if not np.frombuffer(b, "<i2").any())
    return quiet, ch.silenced_frames - before_silenced


async def test_without_a_jitter_buffer_each_playback_start_and_park_costs_two_caller_frames(rig, tmp_path):
    # Measured: 2 frames of silence at the fork at each file's start and 2 at the return to park
    # (3 files: 8), switch_channel_audio_sync -> mod_sofia's RTP flush.
    sw, peer, _ = await rig()
    ch = sw.place_call("+15551234567")
    quiet, silenced = await _play_three_files_while_the_caller_talks(sw, ch, peer, tmp_path)
    assert silenced == 8 and quiet == 8


@pytest.mark.parametrize("jb,lost", [(20, 0), (40, 4)])
async def test_a_jitter_buffer_set_before_answer_keeps_the_caller_frames(tmp_path, jb, lost):
    # Measured: jitterbuffer_msec=20 lost none of 300 frames over 3 playbacks; 40 lost 1 per sync.
    peer = Peer()
    server = await serve(peer.handler, "127.0.0.1", 0, subprotocols=["audio.drachtio.org"], process_request=peer.process_request).__aenter__()
    f = tmp_path / "jb.xml"
    f.write_text(JB_DIALPLAN.format(url=f"ws://127.0.0.1:{server.sockets[0].getsockname()[1]}", jb=jb))
    sw = EmulatedSwitch(f, temp_dir=str(tmp_path))
    await sw.start()
    try:
        ch = sw.place_call("+15551234567")
        quiet, silenced = await _play_three_files_while_the_caller_talks(sw, ch, peer, tmp_path)
        assert ch.jitter_buffer_ms == jb and silenced == lost and quiet == lost
        # The credentials came from the preprocessor's globals, not from channel variables.
        assert peer.request.headers["Authorization"] == "Basic " + base64.b64encode(b"fs:secret").decode()
        assert "MOD_AUDIO_BASIC_AUTH_PASSWORD" not in ch.vars
        # rate: auto on a PCMU leg forks at 8k and says so in the metadata.
        # (20 ms frames of 320 bytes; a late send carries two or more in one message, as
        # mod_audio_fork's does when its service thread is late: seen under load.)
        assert json.loads(peer.texts[0])["rate"] == "8k" and {len(b) % 320 for b in peer.binary} == {0}
    finally:
        await sw.close()
        server.close()
        await server.wait_closed()


def test_cond_is_numeric_when_both_sides_are_numbers():
    sw = EmulatedSwitch()
    assert sw.api("cond", "8000 > 8000 ? 16k : 8k") == "8k"
    assert sw.api("cond", "16000 > 8000 ? 16k : 8k") == "16k"
    assert sw.api("cond", "48000 > 8000 ? 16k : 8k") == "16k"
    assert sw.api("cond", "nonsense").startswith("-ERR")


async def test_each_segment_makes_the_events_of_a_real_switch_at_real_sizes(rig, tmp_path):
    from testbed.freeswitch.esl_server import serialize_event

    sw, _, events = await rig()
    ch = sw.place_call("+15551234567")
    await until(lambda: ch.parked)
    events.clear()
    p = tmp_path / "one.r8"
    p.write_bytes(tone(100))
    sw.sendmsg(ch.uuid, {"call-command": "execute", "execute-app-name": "playback", "execute-app-arg": str(p), "event-lock": "true"})
    await until(lambda: ch.playbacks)
    # Seen on 1.10.12: the channel's events for one sendmsg playback.
    assert names(events, ch.uuid) == ["PRIVATE_COMMAND", "CHANNEL_EXECUTE", "PLAYBACK_START", "PLAYBACK_STOP",
                                      "CHANNEL_EXECUTE_COMPLETE"]
    sizes = {h["Event-Name"]: len(serialize_event(h, b)) for h, b in events}
    # Measured: PLAYBACK_START/STOP of a SIP channel 5.9-6.5 KB (every channel variable);
    # PRIVATE_COMMAND, with no variables unless verbose_events, is much smaller.
    assert 5000 <= sizes["PLAYBACK_START"] <= 8000 and 5000 <= sizes["PLAYBACK_STOP"] <= 8000, sizes
    assert sizes["PRIVATE_COMMAND"] < 3000, sizes
