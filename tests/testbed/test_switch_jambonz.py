"""The emulated switch with the jambonz mod_audio_fork against what was measured on a real 1.10.12
(2026-12-06, /tmp/jambonz_report.md "JREP"), fact by fact.

The core (:mod:`testbed.freeswitch.jambonz`) is driven with bytes alone; the switch tests count
on the channel's frame clock (ticks of 20 ms), as tests/testbed/test_switch.py does.
"""

import asyncio
import json

import numpy as np
import pytest
from websockets.asyncio.server import serve
from websockets.exceptions import ConnectionClosed

from testbed.freeswitch.fork_args import parse_fork_command, parse_jambonz_fork_command
from testbed.freeswitch.jambonz import StreamPlayout, mark_reply
from testbed.freeswitch.switch import EmulatedSwitch, SwitchCrashed


def J(o):
    return json.dumps(o, separators=(",", ":"))


def MARK(name):
    return J({"type": "mark", "data": {"name": name}})


KILL = J({"type": "killAudio"})
STREAM_ARGS = 'audio_fork {"a":1} true true 8000'
STREAM_ARGS_XML = STREAM_ARGS.replace('"', "&quot;")


def noise(ms, seed, rate=8000, amp=8000):
    """Seeded noise with every -1 sample made 0 (JREP: a -1 sample is taken for a marker)."""
    x = np.random.default_rng(seed).integers(-amp, amp, rate * ms // 1000).astype("<i2")
    x[x == -1] = 0
    return x.tobytes()


def frames80(pcm, first=True):
    """JREP framing: the first message of a fork 160 ms, then 80 ms messages (at 8 kHz)."""
    out, i = [], 0
    if first:
        out.append(pcm[:2560])
        i = 2560
    out += [pcm[j : j + 1280] for j in range(i, len(pcm), 1280)]
    return out


# ---------------------------------------------------------------- the start syntax (JREP Q1)


@pytest.mark.parametrize("extra,want", [
    ('audio_fork {"a":1} true true 8000', ("audio_fork", '{"a":1}', True, True, 8000, True)),
    ('audio_fork {"a":1} true true', ("audio_fork", '{"a":1}', True, False, 0, False)),  # 9 tokens
    ("'' '' true true 8000", ("audio_fork", None, True, True, 8000, True)),
    ('audio_fork {"a": 1} true true 8000', ("audio_fork", '{"a":', False, True, 0, False)),  # a space
    ("audio_fork {} True true 8000", ("audio_fork", "{}", False, True, 8000, False)),
    ("audio_fork {} 1 1 8000", ("audio_fork", "{}", False, False, 8000, False)),
    ('{"a":1} true true 8000', ('{"a":1}', "true", True, False, 0, False)),  # bugname missing
    ('audio_fork {"a":1}', ("audio_fork", '{"a":1}', True, False, 0, False)),  # drachtio's 7 tokens
])
def test_start_forms_parse_as_measured(extra, want):
    cmd = parse_jambonz_fork_command(f"U start ws://h/x mono 8k {extra}")
    got = (cmd.bugname, cmd.metadata, cmd.bidi_enabled, cmd.bidi_stream, cmd.bidi_rate, cmd.bidi_plays)
    assert got == want


def test_file_mode_and_binary_pipe_follow_the_flags():
    seven = parse_jambonz_fork_command('U start ws://h/x mono 8k audio_fork {"a":1}')
    assert seven.file_mode and seven.bidi_pipe and not seven.bidi_plays  # buffered, never played
    wrong_case = parse_jambonz_fork_command("U start ws://h/x mono 8k b {} True true 8000")
    assert not wrong_case.file_mode and wrong_case.bidi_pipe  # frames buffered, never played
    ones = parse_jambonz_fork_command("U start ws://h/x mono 8k b {} 1 1 8000")
    assert not ones.bidi_pipe  # "unexpected binary frame, discarding"


def test_stop_and_other_verbs_take_one_token_of_text():
    cmd = parse_jambonz_fork_command('U stop {"a":1} x')
    assert (cmd.bugname, cmd.metadata) == ('{"a":1}', "x")
    assert parse_jambonz_fork_command('U stop {"a":1}').bugname == "audio_fork"  # a lone {..} is text
    assert parse_jambonz_fork_command("U STOP_PLAY").verb == "stop_play"
    assert parse_jambonz_fork_command("U start ws://h").startswith("-USAGE")


def test_drachtio_parser_is_unchanged_for_the_ten_token_form():
    # JREP Q1: the drachtio module takes the rest of the line as metadata.
    cmd = parse_fork_command('U start ws://h/x mono 8k audio_fork {"k":"v"} true true 8000')
    assert (cmd.bugname, cmd.metadata) == ("audio_fork", '{"k":"v"} true true 8000')


# ---------------------------------------------------------------- the core, bytes only (JREP Q2-Q4)


def play(p, frames, frame=bytes(320)):
    """Run ``frames`` written frames; returns (heard pcm, added per frame, replies per frame)."""
    out = [p.dub(frame) for _ in range(frames)]
    return b"".join(d.frame for d in out), [d.added for d in out], [d.replies for d in out]


def test_first_release_waits_for_160_ms_then_80_ms_batches():
    p = StreamPlayout(8000, 8000)
    p.receive_binary(bytes(2558))  # 159.9 ms
    assert p.buffered == 0 and p.prebuffered == 1279
    p.receive_binary(bytes(2))
    assert p.buffered == 1280 and p.prebuffered == 0
    p.receive_binary(bytes(1278))
    assert p.buffered == 1280 and p.prebuffered == 639  # 80 ms from now on, for ever
    p.receive_binary(bytes(2))
    assert p.buffered == 1920


def test_a_burst_leaves_a_stuck_tail_until_the_next_message():
    # JREP: a 1 s burst loses its last 40 ms, a 2 s burst 16 ms (512-sample pieces).
    for ms, stuck in ((1000, 320), (2000, 128)):
        p = StreamPlayout(8000, 8000)
        p.receive_binary(noise(ms, 1))
        assert p.prebuffered == stuck and p.buffered == 8 * ms - stuck
    p = StreamPlayout(8000, 8000)
    audio = noise(1000, 2)
    p.receive_binary(audio)
    heard, added, _ = play(p, 60)
    assert heard[: 2 * 7680] == audio[: 2 * 7680] and sum(added) == 7680  # silence afterwards
    p.receive_binary(bytes(1280))  # the 80 ms zero pad
    heard, _, _ = play(p, 10)
    assert heard[:640] == audio[-640:]


def test_80_ms_framing_leaves_nothing_behind_and_plays_bit_exact():
    p = StreamPlayout(8000, 8000)
    audio = noise(1200, 3)
    for m in frames80(audio):
        p.receive_binary(m)
    assert p.prebuffered == 0
    heard, added, _ = play(p, 60)
    assert heard[: len(audio)] == audio and added[:60] == [160] * 60


def test_odd_lengths_keep_a_byte_for_the_next_message():
    p = StreamPlayout(8000, 8000)
    audio = noise(400, 4)
    for i in range(0, len(audio), 333):
        p.receive_binary(audio[i : i + 333])
    p.receive_binary(bytes(1280))  # the pad that pushes the stuck tail out
    heard, _, _ = play(p, 30)
    assert heard[: len(audio)] == audio


def test_streamed_audio_is_added_to_the_written_frame_with_int16_wraparound():
    p = StreamPlayout(8000, 8000)
    p.receive_binary(np.full(1280, 30000, "<i2").tobytes())
    d = p.dub(np.full(160, 10000, "<i2").tobytes())
    assert set(np.frombuffer(d.frame, "<i2")) == {30000 + 10000 - 65536}


def test_marks_fire_where_their_audio_ends_one_sample_slot_each():
    p = StreamPlayout(8000, 8000)
    a, b = noise(160, 5), noise(80, 6)
    p.receive_binary(a)
    p.mark("after-a")
    p.receive_binary(b)
    p.mark("after-b")
    assert p.pending_marks == ("after-a", "after-b")
    heard, added, replies = play(p, 15)
    fired = {r: i for i, rs in enumerate(replies) for r in rs}
    assert fired == {mark_reply("after-a"): 8, mark_reply("after-b"): 13}
    # The marker takes a slot in frame 8: B's first 159 samples, then the frame's own sample (0).
    assert heard[:2560] == a and added[8] == 159
    assert heard[2560 : 2 * 1439] == b[: 2 * 159] and heard[2 * 1439 : 2 * 1440] == bytes(2)
    assert heard[2 * 1440 : 2 * 1440 + 2 * 481] == b[2 * 159 :]
    assert mark_reply("m17") == '{"type": "mark", "data": {"name":"m17", "event": "playout"}}'


def test_a_minus_one_sample_fires_a_pending_mark_early_and_is_dropped():
    p = StreamPlayout(8000, 8000)
    a2 = bytearray(noise(80, 8))
    a2[800:802] = b"\xff\xff"  # sample 400 of A2
    for pcm, name in ((noise(160, 7), "m1"), (bytes(a2), "m2"), (noise(80, 9), "m3")):
        p.receive_binary(pcm)
        p.mark(name)
    p.receive_binary(noise(80, 10))
    _, added, replies = play(p, 25)
    fired = [(i, r) for i, rs in enumerate(replies) for r in rs]
    # Due at frames 8, 12, 16; the -1 pops m2 at frame 10 and m2's marker pops m3 at 12.
    assert fired == [(8, mark_reply("m1")), (10, mark_reply("m2")), (12, mark_reply("m3"))]
    # The -1 is dropped; the last marker, with no name left to pop, plays as a -1 sample.
    assert sum(added) == 1280 + 3 * 640


def test_at_most_30_marks_pending_later_ones_dropped():
    p = StreamPlayout(8000, 8000)
    p.receive_binary(noise(400, 11))
    accepted = [p.mark(f"m{i}") for i in range(35)]
    assert accepted == [True] * 30 + [False] * 5 and p.marks_dropped == 5


def test_an_idle_fork_fires_one_inventory_mark_per_frame():
    p = StreamPlayout(8000, 8000)
    p.mark("a")
    p.mark("b")
    _, _, replies = play(p, 3)
    assert replies == [(mark_reply("a"),), (mark_reply("b"),), ()]


def test_kill_empties_the_playout_buffer_at_the_next_frame_not_the_prebuffer():
    p = StreamPlayout(8000, 8000)
    p.receive_binary(noise(1000, 12))  # 320 samples stay in the pre-buffer
    play(p, 5)
    p.mark("seg")
    p.receive_binary(noise(40, 13))  # "seg" in use; 320 + 1 + 320 released
    p.mark("late")  # inventory
    p.kill()
    p.receive_binary(noise(80, 14))  # arrives before the next frame: lost with the buffer
    d = p.dub(bytes(320))
    assert d.added == 0 and d.frame == bytes(320)
    assert d.replies == (mark_reply("seg", cleared=True), mark_reply("late", cleared=True))
    # "late" was moved to in use by the message after it: both names are now stale.
    assert p.buffered == 0 and p.stale_marks == ("seg", "late") and p.prebuffered == 0
    _, added, _ = play(p, 5)
    assert sum(added) == 0


def test_stale_marks_after_kill_swallow_new_ones_unless_drained():
    # JREP Q4: after a kill with a mark in flight the next mark never comes back; the drain
    # (one 0xFFFF sample per stale name at the head of the next message) fixes it.
    for drain in (False, True):
        p = StreamPlayout(8000, 8000)
        for m in frames80(noise(400, 15)):
            p.receive_binary(m)
        p.mark("a1")
        for m in frames80(noise(400, 16), first=False):
            p.receive_binary(m)
        play(p, 5)
        p.kill()
        assert p.dub(bytes(320)).replies == (mark_reply("a1", cleared=True),)
        b = noise(160, 17)
        p.receive_binary((b"\xff\xff" if drain else b"") + b[:1280])
        p.receive_binary(b[1280:])
        p.mark("b1")
        p.receive_binary(bytes(1280))
        _, _, replies = play(p, 20)
        assert [r for rs in replies for r in rs] == ([mark_reply("b1")] if drain else [])


def test_clear_marks_and_stop_play_make_marks_worse():
    p = StreamPlayout(8000, 8000)
    p.receive_binary(noise(160, 18))
    p.mark("x")
    p.clear_marks()
    p.receive_binary(noise(80, 19))  # no marker: "x" went to the cleared list
    p.mark("y")
    p.receive_binary(bytes(1280))  # y's marker pops the stale "x": y never fires
    _, _, replies = play(p, 20)
    assert [r for rs in replies for r in rs] == []
    q = StreamPlayout(8000, 8000)
    q.receive_binary(noise(160, 20))
    q.mark("seg1")
    q.receive_binary(noise(80, 21))
    q.stop_play()  # the buffer goes, "seg1" stays in use
    assert q.buffered == 0 and q.pending_marks == ("seg1",)
    q.receive_binary(noise(80, 22))
    q.mark("new1")
    q.receive_binary(bytes(1280))
    _, _, replies = play(q, 20)
    # JREP: after stop_play, old names fire as playout at the positions of the new marks.
    assert [r for rs in replies for r in rs] == [mark_reply("seg1")]


def test_a_stream_at_another_rate_is_resampled_to_the_channel_rate():
    p = StreamPlayout(8000, 16000)
    assert (p.factor, p.threshold) == (2, 2560)  # 160 ms at 16 kHz
    tone = (8000 * np.sin(2 * np.pi * 440 * np.arange(16000) / 16000)).astype("<i2").tobytes()
    p.receive_binary(tone)
    heard, added, _ = play(p, 60)
    assert 7000 < sum(added) <= 8000  # about 1 s at 8 kHz (the stuck tail and the resampler's delay)
    x = np.frombuffer(heard, "<i2")[1000:6000].astype(float)
    assert 4000 < np.abs(x).max() < 9000


# ---------------------------------------------------------------- the emulated switch, frame clock

DIALPLAN = """<include>
  <extension name="voicefork_support">
    <condition field="destination_number" expression="^\\+15551234567$">
      <action application="set" data="voicefork_route=support"/>
      {jb}
      {silence}
      <action application="answer"/>
      <action application="set" data="fork_result=${{uuid_audio_fork(${{uuid}} start {url}/calls/support mono 8k {args})}}"/>
      <action application="park"/>
    </condition>
  </extension>
</include>
"""
SILENCE = '<action application="set" data="send_silence_when_idle=-1"/>'
JB20 = '<action application="set" data="jitterbuffer_msec=20"/>'


class Peer:
    """A fork server stand-in: the test sends on ``ws`` itself; what comes back is recorded."""

    def __init__(self):
        self.texts, self.binary, self.close_code = [], [], None
        self.ws = asyncio.get_running_loop().create_future()

    async def handler(self, ws):
        self.ws.set_result(ws)
        try:
            async for m in ws:
                (self.texts if isinstance(m, str) else self.binary).append(m)
        finally:
            self.close_code = ws.close_code

    def marks(self):
        return [json.loads(t)["data"] for t in self.texts if t.startswith('{"type": "mark"')]


@pytest.fixture
async def rig(tmp_path):
    made = []

    async def make(args=STREAM_ARGS_XML, silence=True, jb=False):
        peer = Peer()
        server = await serve(peer.handler, "127.0.0.1", 0, subprotocols=["audio.drachtio.org"]).__aenter__()
        f = tmp_path / "dp.xml"
        url = f"ws://127.0.0.1:{server.sockets[0].getsockname()[1]}"
        f.write_text(DIALPLAN.format(url=url, args=args, silence=SILENCE if silence else "", jb=JB20 if jb else ""))
        sw = EmulatedSwitch(f, temp_dir=str(tmp_path), fork_module="jambonz")
        await sw.start()
        events, calls = [], []  # events as (headers, body, the call's tick when it fired)
        sw.subscribe(lambda h, b: events.append((dict(h), b, calls[0].tick if calls else None)))
        made.append((sw, server))
        ch = sw.place_call("+15551234567")
        calls.append(ch)
        ws = await asyncio.wait_for(peer.ws, 3)
        await until(lambda: ch.parked and ch.bugs["audio_fork"].connected if "audio_fork" in ch.bugs else ch.parked)
        return sw, ch, peer, ws, events

    yield make
    for sw, server in made:
        await sw.close()
        server.close()
        await server.wait_closed()


async def until(pred, timeout=5.0):
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not pred():
        assert loop.time() < end, "timed out"
        await asyncio.sleep(0.005)


async def ticks(ch, n):
    start = ch.tick
    await until(lambda: ch.tick >= start + n)


def streamed(ch):
    return [f for f in ch.ear.frames if f.stream]


def subclasses(events):
    return [h.get("Event-Subclass", h["Event-Name"]) for h, _, _ in events]


async def test_the_ten_token_dialplan_form_starts_a_stream_fork(rig):
    _sw, ch, peer, ws, _events = await rig()
    assert ch.vars["fork_result"] == "+OK Success\n"
    await until(lambda: peer.texts)
    assert peer.texts[0] == '{"a":1}'
    bug = ch.bugs["audio_fork"]
    assert bug.cmd.bidi_plays and bug.playout.stream_rate == 8000
    # JREP Q1: the probe mark comes back at once when audio will really play.
    await ws.send(MARK("probe"))
    await until(lambda: peer.marks())
    assert peer.texts[-1] == '{"type": "mark", "data": {"name":"probe", "event": "playout"}}'


async def test_start_forms_through_the_api(rig):
    sw, ch, _peer, _ws, _ = await rig()
    url = "ws://127.0.0.1:1/x"
    def fork(rest):
        return sw.api("uuid_audio_fork", f"{ch.uuid} {rest}")

    assert fork("stop") == "+OK Success\n"
    # '' '' : the default bugname and no metadata; a plain stop finds it.
    assert fork(f"start {url} mono 8k '' '' true true 8000") == "+OK Success\n"
    bug = ch.bugs["audio_fork"]
    assert bug.cmd.metadata is None and bug.cmd.bidi_plays
    assert fork("stop") == "+OK Success\n" and ch.bugs == {}
    # No bugname: the metadata becomes the bugname and "true" the metadata, no stream (JREP e15).
    assert fork(f'start {url} mono 8k {{"a":1}} true true 8000') == "+OK Success\n"
    assert ch.bugs['{"a":1}'].cmd.metadata == "true" and not ch.bugs['{"a":1}'].cmd.bidi_plays
    assert fork("stop") == "-ERR Operation Failed\n"
    assert fork('stop {"a":1}') == "-ERR Operation Failed\n"  # a lone {..} is the text, for audio_fork
    assert fork('stop {"a":1} x') == "+OK Success\n" and ch.bugs == {}
    assert fork(f"start {url} mono 8k audio_fork {{}} true true 8000") == "+OK Success\n"
    assert fork(f"start {url} mono 8k audio_fork {{}} true true 8000") == "-ERR Operation Failed\n"  # attached


async def test_80_ms_messages_play_gap_free_and_bit_exact(rig):
    _sw, ch, _peer, ws, events = await rig()
    await ticks(ch, 3)
    audio = noise(800, 30)
    sent_at = ch.tick
    for m in frames80(audio):
        await ws.send(m)
    await until(lambda: sum(f.stream for f in ch.ear.frames) >= 6400)
    await ticks(ch, 3)
    heard = streamed(ch)
    assert b"".join(f.pcm for f in heard) == audio  # bit-exact (the idle frames are zeros)
    assert [f.tick for f in heard] == list(range(heard[0].tick, heard[0].tick + 40))  # no hole
    assert heard[0].tick - sent_at <= 2  # JREP: first audio 2-20 ms for a first message of 160 ms
    assert ch.ear.gaps() == [] and ch.bugs["audio_fork"].playout.prebuffered == 0
    assert not any(n.startswith("PLAYBACK") for n in subclasses(events))  # no events for the stream


async def test_a_burst_leaves_its_tail_stuck_until_an_80_ms_zero_pad(rig):
    _sw, ch, _peer, ws, _ = await rig()
    audio = noise(1000, 31)
    await ws.send(audio)
    await until(lambda: sum(f.stream for f in ch.ear.frames) >= 7680)
    await ticks(ch, 10)
    assert sum(f.stream for f in ch.ear.frames) == 7680  # JREP: the last 40 ms is not heard
    assert ch.bugs["audio_fork"].playout.prebuffered == 320
    await ws.send(bytes(1280))
    await until(lambda: sum(f.stream for f in ch.ear.frames) >= 7680 + 832)
    heard = b"".join(f.pcm for f in streamed(ch))
    assert heard[: len(audio)] == audio and not any(heard[len(audio) :])


async def test_nothing_is_heard_on_a_plain_park(rig):
    # JREP Q1: 0 RTP packets after a 1 s frame, and no reply to a probe mark.
    _sw, ch, peer, ws, _ = await rig(silence=False)
    await ws.send(noise(1000, 32))
    await ws.send(MARK("probe"))
    await ticks(ch, 15)
    assert ch.ear.frames == [] and peer.marks() == []
    assert ch.bugs["audio_fork"].playout.buffered == 7680  # waiting for a writer


async def test_marks_come_back_when_their_audio_has_played(rig):
    _sw, ch, peer, ws, _ = await rig()
    a, b = noise(160, 33), noise(80, 34)
    await ws.send(a)
    await ws.send(MARK("after-a"))
    await ws.send(b)
    await ws.send(MARK("after-b"))
    await until(lambda: len(ch.mark_replies) == 2)
    await until(lambda: len(peer.marks()) == 2)
    first = streamed(ch)[0].tick
    assert [(t - first, text) for t, _, text in ch.mark_replies] == [(8, mark_reply("after-a")), (13, mark_reply("after-b"))]
    last_b = max(f.tick for f in streamed(ch))
    assert last_b == first + 12  # "after-b" one frame after the packet with B's last sample
    assert [m["name"] for m in peer.marks()] == ["after-a", "after-b"]


async def test_kill_audio_stops_at_the_next_frame_and_clears_pending_marks(rig):
    _sw, ch, peer, ws, events = await rig()
    for m in frames80(noise(2000, 35)):
        await ws.send(m)
    await ws.send(MARK("seg1"))
    await ws.send(bytes(1280))
    await ws.send(MARK("seg2"))
    await until(lambda: len(streamed(ch)) >= 10)
    await ws.send(KILL)
    await until(lambda: len(peer.marks()) == 2)
    kill_tick = next(t for h, _, t in events if h.get("Event-Subclass") == "mod_audio_fork::kill_audio")
    assert max(f.tick for f in streamed(ch)) <= kill_tick  # nothing heard after the kill
    assert [(t - kill_tick, text) for t, _, text in ch.mark_replies] == [
        (1, mark_reply("seg1", cleared=True)), (1, mark_reply("seg2", cleared=True))]
    assert ch.bugs["audio_fork"].playout.stale_marks == ("seg1",)


async def test_audio_sent_right_after_kill_audio_is_lost_and_a_fence_mark_makes_it_safe(rig):
    _sw, ch, peer, ws, _ = await rig()
    for m in frames80(noise(960, 36)):
        await ws.send(m)
    await until(lambda: len(streamed(ch)) >= 5)
    # Modelled ordering: the buffer is emptied at the next written frame, so what arrives before
    # it goes with it. Here it is sent with the kill, in the same event-loop turn, as JREP's
    # kill_then_new (B and an 80 ms pad in one frame, right after killAudio: 0 of 50 blocks heard).
    lost = noise(1000, 37)
    await ws.send(KILL)
    await ws.send(lost + bytes(1280))
    await ws.send(MARK("fence"))
    await until(lambda: peer.marks())
    assert peer.marks() == [{"name": "fence", "event": "cleared"}]
    # What stays is the pad's last 448 samples (8640 in 512-sample pieces): zeros (JREP Q2).
    assert ch.bugs["audio_fork"].playout.prebuffered == 448
    heard_at_fence = len(streamed(ch))
    after = noise(400, 38)
    for m in frames80(after, first=False):
        await ws.send(m)
    await ws.send(bytes(1280))
    await until(lambda: sum(f.stream for f in streamed(ch)[heard_at_fence:]) >= 448 + 3200)
    heard = b"".join(f.pcm for f in streamed(ch)[heard_at_fence:])
    assert heard[:896] == bytes(896) and heard[896 : 896 + len(after)] == after
    everything = b"".join(f.pcm for f in ch.ear.frames)
    assert not any(lost[i : i + 64] in everything for i in range(0, len(lost), 320))


async def test_kill_audio_leaves_the_prebuffer_tail_for_the_next_utterance(rig):
    # JREP Q3 (kill_rt): 60 ms of A was heard 0.92 s after the kill, just before B.
    _sw, ch, peer, ws, _ = await rig()
    a = noise(1000, 50)
    await ws.send(a)  # 320 samples stay in the pre-buffer
    await until(lambda: len(streamed(ch)) >= 5)
    await ws.send(KILL)
    await ws.send(MARK("fence"))
    await until(lambda: peer.marks())
    heard_at_fence = len(streamed(ch))
    b = noise(400, 51)
    for m in frames80(b, first=False):
        await ws.send(m)
    await ws.send(bytes(1280))
    await until(lambda: sum(f.stream for f in streamed(ch)[heard_at_fence:]) >= 320 + 3200)
    heard = b"".join(f.pcm for f in streamed(ch)[heard_at_fence:])
    assert heard[:640] == a[-640:] and heard[640 : 640 + len(b)] == b


async def test_at_most_30_marks_are_pending(rig):
    _sw, ch, peer, ws, _ = await rig()
    await ws.send(noise(400, 39))
    for i in range(35):
        await ws.send(MARK(f"m{i}"))
    await ws.send(bytes(1280))
    await until(lambda: len(peer.marks()) == 30)
    await ticks(ch, 10)
    assert [m["name"] for m in peer.marks()] == [f"m{i}" for i in range(30)]
    assert {t for t, _, _ in ch.mark_replies} == {streamed(ch)[0].tick + 20}  # all at the 400 ms point


async def test_a_minus_one_sample_fires_the_oldest_pending_mark_early(rig):
    _sw, ch, _peer, ws, _ = await rig()
    a2 = bytearray(noise(80, 41))
    a2[800:802] = b"\xff\xff"
    for pcm, name in ((noise(160, 40), "m1"), (bytes(a2), "m2"), (noise(80, 42), "m3")):
        await ws.send(pcm)
        await ws.send(MARK(name))
    await ws.send(noise(80, 43))
    await until(lambda: len(ch.mark_replies) == 3)
    first = streamed(ch)[0].tick
    assert [(t - first, text) for t, _, text in ch.mark_replies] == [
        (8, mark_reply("m1")), (10, mark_reply("m2")), (12, mark_reply("m3"))]  # due at 8, 12, 16


async def test_stream_audio_mixes_into_a_file_playback(rig, tmp_path):
    sw, ch, _peer, ws, _events = await rig()
    f = tmp_path / "greeting.r8"
    f.write_bytes(np.full(8000, 1000, "<i2").tobytes())
    sw.sendmsg(ch.uuid, {"call-command": "execute", "execute-app-name": "playback", "execute-app-arg": str(f), "event-lock": "true"})
    await until(lambda: any(fr.source == str(f) for fr in ch.ear.frames))
    await ws.send(np.full(1280, 2000, "<i2").tobytes())
    await until(lambda: sum(fr.stream for fr in ch.ear.frames) >= 1280)
    both = [fr for fr in ch.ear.frames if fr.stream and fr.source == str(f)]
    assert len(both) == 8 and all(set(np.frombuffer(fr.pcm, "<i2")) == {3000} for fr in both)


@pytest.mark.parametrize("jb", [False, True])
async def test_caller_frames_at_the_fork_stay_intact_while_the_stream_plays(rig, jb):
    # JREP Q5: 0 frames silenced or missing, bit-exact, with and without a jitter buffer.
    _, ch, peer, ws, _ = await rig(jb=jb)
    await until(lambda: len(peer.binary) >= 5)
    silenced = ch.silenced_frames
    start = len(peer.binary)
    caller = noise(1000, 44, amp=12000)
    ch.say(caller)
    for m in frames80(noise(1200, 45)):
        await ws.send(m)
    await until(lambda: len(peer.binary) >= start + 60)
    forked = b"".join(peer.binary[start:])
    at = forked.find(caller[:320])
    assert at >= 0 and forked[at : at + len(caller)] == caller
    assert ch.silenced_frames == silenced and len(streamed(ch)) >= 50


async def test_play_audio_to_a_file_mode_fork_without_a_content_type_crashes_the_switch(rig):
    sw, ch, peer, ws, _ = await rig(args='audio_fork {&quot;a&quot;:1}')  # drachtio's 7 tokens
    assert ch.bugs["audio_fork"].cmd.file_mode
    await ws.send(noise(400, 46))  # accepted, buffered, never played
    await until(lambda: ch.bugs["audio_fork"].playout.buffered == 3200)
    await ws.send(MARK("probe"))
    await ticks(ch, 5)
    assert not any(f.stream for f in ch.ear.frames) and peer.marks() == []
    await ws.send(J({"type": "playAudio", "data": {"audioContent": "AAAA"}}))
    await until(lambda: sw.crashed is not None)
    with pytest.raises(SwitchCrashed):
        sw.check()


async def test_play_audio_in_stream_mode_is_ignored(rig):
    sw, _ch, peer, ws, events = await rig()
    await ws.send(J({"type": "playAudio", "data": {"audioContent": "AAAA"}}))
    await ws.send(MARK("after"))
    await until(lambda: peer.marks())
    assert sw.crashed is None and "mod_audio_fork::play_audio" not in subclasses(events)


async def test_binary_arriving_while_stop_runs_crashes_the_switch(rig):
    sw, ch, _peer, ws, _ = await rig()

    async def flood():
        try:
            while True:
                await ws.send(bytes(1600))
                await asyncio.sleep(0)
        except ConnectionClosed:
            pass

    task = asyncio.get_running_loop().create_task(flood())
    await until(lambda: ch.bugs["audio_fork"].playout.buffered > 16000)
    assert sw.api("uuid_audio_fork", f"{ch.uuid} stop") == "+OK Success\n"
    await until(lambda: sw.crashed is not None)
    await task
    with pytest.raises(SwitchCrashed):
        sw.api("status")


async def test_stop_after_kill_and_fence_does_not_crash(rig):
    sw, ch, peer, ws, _ = await rig()
    for m in frames80(noise(1000, 47)):
        await ws.send(m)
    await until(lambda: len(streamed(ch)) >= 5)
    await ws.send(KILL)
    await ws.send(MARK("fence"))
    await until(lambda: peer.marks())
    assert sw.api("uuid_audio_fork", f"{ch.uuid} stop") == "+OK Success\n"
    await until(lambda: peer.close_code is not None)
    assert peer.close_code == 1000 and sw.crashed is None


async def test_stop_play_empties_the_buffer_silently(rig):
    sw, ch, _peer, ws, events = await rig()
    await ws.send(noise(1000, 48))
    await until(lambda: len(streamed(ch)) >= 3)
    n = len(events)
    assert sw.api("uuid_audio_fork", f"{ch.uuid} stop_play") == "+OK Success\n"
    await ticks(ch, 3)
    assert len(streamed(ch)) <= 4 and len(events) == n  # no event
    assert ch.bugs["audio_fork"].playout.prebuffered == 320  # the pre-buffer stays


async def test_bidirectional_off_discards_binary_frames(rig):
    _sw, ch, _peer, ws, _ = await rig(args="audio_fork {} 1 1 8000")
    await ws.send(noise(200, 49))
    await until(lambda: ch.binary_discarded == 1)
    assert ch.bugs["audio_fork"].playout.buffered == 0


async def test_a_stack_can_run_the_jambonz_module_with_todays_file_playback():
    # Today's rendered dialplan is drachtio's 7-token form: on the jambonz module that is file
    # mode (JREP Q1), so sendmsg playback works as with drachtio.
    from testbed.stack import Stack

    opts = {"bargein": False, "rate": 24000, "speed": 3.0, "answer_delay_ms": 100,
            "hangup_after_playback": True, "mark_every_ms": 0}
    async with Stack(fork_module="jambonz", connector_options=opts) as s:
        assert s.switch.fork_module == "jambonz"
        ch = s.switch.place_call("+15551234567")
        await asyncio.wait_for(ch.hungup.wait(), 20)
        assert ch.ear.gaps() == [] and len(ch.ear.frames) * 20 >= 4000
        s.switch.check()
        assert s.switch.errors == [], s.switch.errors
    with pytest.raises(ValueError):
        Stack(fork_module="freeswitch")
