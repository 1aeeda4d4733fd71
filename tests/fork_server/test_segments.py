import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from fork_server.errors import LocalUsageError
from fork_server.segments import Segment, SegmentPlanner

RATE = 8000
FRAME = 320  # 20 ms at 8 kHz


def tone(ms, amp=8000, rate=RATE):
    n = rate * ms // 1000
    return np.rint(np.sin(np.arange(n) * 0.3) * amp).astype("<i2").tobytes()


def quiet(ms, rate=RATE, level=0):
    """Silence; ``level`` > 0 gives low noise (-50 dBFS is an RMS of about 104)."""
    n = rate * ms // 1000
    noise = np.random.default_rng(ms).uniform(-level, level, n) if level else np.zeros(n)
    return np.rint(noise).astype("<i2").tobytes()


def replay(segments):
    """What the caller hears, with the trimmed lead put back where FreeSWITCH adds its hole."""
    return b"".join(s.pcm + quiet(s.trimmed_ms) for s in segments)


def feed_in(p, audio, chunk):
    return [s for i in range(0, len(audio), chunk) for s in p.feed(audio[i : i + chunk])]


# ------------------------------------------------------------------ sendmsg


def test_sendmsg_first_segment_small_then_doubling_up_to_the_segment_size():
    p = SegmentPlanner(RATE, "sendmsg", first_segment_ms=80, segment_ms=400)
    segs = feed_in(p, tone(1400), 2 * 160)  # 20 ms chunks: TTS streamed
    # Each file is twice the one before it, so at TTS faster than real time the next one
    # is queued before the one ahead has played, whatever PLAYBACK_START's delay.
    assert [s.ms for s in segs] == [80, 160, 320, 400, 400]
    assert [s.first for s in segs] == [True, False, False, False, False]
    assert [s.index for s in segs] == [0, 1, 2, 3, 4]
    assert p.buffered_ms == 40
    (rest,) = p.flush()
    assert rest.ms == 40 and rest.padded_ms == 0 and not rest.first
    (again,) = feed_in(p, tone(100), 2 * 160)
    assert again.first and again.ms == 80 and again.index == 6  # after flush a new utterance starts small
    assert [s.ms for s in feed_in(p, tone(140), 2 * 160)] == [160]  # and ramps up again


def test_tts_faster_than_real_time_makes_fewer_longer_files():
    # A due segment takes every whole ptime buffered, up to segment_ms (default 2 s): each file
    # costs 3 events of ~6.6 KB at the fork server on a real 1.10.12, so a burst is one file.
    p = SegmentPlanner(RATE, "sendmsg")
    assert [s.ms for s in p.feed(tone(3000))] == [2000]
    assert [s.ms for s in p.flush()] == [1000]
    p = SegmentPlanner(RATE, "sendmsg")
    segs = feed_in(p, tone(3000), 2 * 800)  # 100 ms chunks: 100, then at least twice the last
    assert [s.ms for s in segs] == [100, 200, 400, 800] and p.buffered_ms == 1500


def test_a_mark_cuts_its_segment_where_its_audio_ends():
    p = SegmentPlanner(RATE, "sendmsg")
    assert [s.ms for s in p.feed(tone(90))] == [80]  # 10 ms left over
    p.cut_at()  # a mark after 90 ms: its segment ends at 100 ms, the next whole ptime
    assert p.feed(tone(5)) == []
    # Exactly up to the cut, then the ramp goes on (due at 160 ms: every whole ptime buffered).
    assert [s.ms for s in p.feed(tone(300))] == [20, 280] and p.buffered_ms == 15
    p.cut_at()
    (tail,) = p.flush()  # the cut at the end: padded as any flush
    assert tail.ms == 20 and tail.padded_ms == 5


def test_a_cut_ends_a_segment_before_the_first_is_due_and_vanishes_on_clear():
    p = SegmentPlanner(RATE, "sendmsg")
    p.feed(tone(30))
    p.cut_at()  # at 40 ms
    assert [s.ms for s in p.feed(tone(50))] == [40]  # the mark's segment, before the first is due
    assert [s.ms for s in p.flush()] == [40]
    p.feed(tone(30))
    p.cut_at()
    p.clear()
    assert [s.ms for s in feed_in(p, tone(200), 2 * 160)] == [80]  # no stale cut at 40 ms


def test_sendmsg_ramp_restarts_after_barge_in():
    p = SegmentPlanner(RATE, "sendmsg", first_segment_ms=80, segment_ms=400)
    assert [s.ms for s in feed_in(p, tone(240), 2 * 160)] == [80, 160]
    p.clear()
    assert [(s.ms, s.first) for s in p.feed(tone(80))] == [(80, True)]


@pytest.mark.parametrize("first_ms", [40, 60, 120])
def test_first_segment_is_emitted_as_soon_as_it_is_buffered(first_ms):
    p = SegmentPlanner(RATE, "sendmsg", first_segment_ms=first_ms)
    segs = feed_in(p, tone(first_ms - 20) + tone(20), 2 * 80)  # 10 ms chunks
    assert [s.ms for s in segs] == [first_ms]


def test_continuous_tts_is_never_padded_in_the_middle():
    p = SegmentPlanner(RATE, "sendmsg")
    segs = feed_in(p, tone(1234), 2 * 77)  # chunks that are no whole number of ptimes
    assert all(s.padded_ms == 0 for s in segs) and p.buffered_ms == 1234 - sum(s.ms for s in segs)
    (last,) = p.flush()
    assert last.padded_ms == 6 and last.ms % 20 == 0


def test_flush_pads_only_to_a_whole_ptime():
    p = SegmentPlanner(RATE, "sendmsg")
    p.feed(tone(50))
    (seg,) = p.flush()
    assert len(seg.pcm) % FRAME == 0 and seg.ms == 60 and seg.padded_ms == 10
    assert seg.pcm[-160:] == bytes(160)
    assert p.flush() == [] and p.buffered_ms == 0


def test_take_ready_tops_up_below_low_water_only():
    p = SegmentPlanner(RATE, "sendmsg", first_segment_ms=120)
    p.feed(tone(70))  # below the first target: nothing yet
    assert p.take_ready(queued_ahead_ms=200) == []
    assert p.take_ready(queued_ahead_ms=60) == []  # at the low-water mark is enough
    (seg,) = p.take_ready(queued_ahead_ms=20)  # 60 ms whole ptimes >= 40 ms floor
    assert seg.ms == 60 and seg.first and p.buffered_ms == 10
    assert p.take_ready(queued_ahead_ms=0) == []  # only a sub-ptime remainder left


def test_take_ready_waits_for_40_ms_while_something_plays():
    p = SegmentPlanner(RATE, "sendmsg", first_segment_ms=120)
    p.feed(tone(30))
    assert p.take_ready(queued_ahead_ms=20) == []  # a 20 ms top-up could fall behind
    assert p.take_ready(queued_ahead_ms=0, playing=True) == []  # the last file still plays: same
    (seg,) = p.take_ready(queued_ahead_ms=0)  # the channel is idle: waiting only adds a gap
    assert seg.ms == 20 and p.buffered_ms == 10


def test_take_ready_with_custom_low_water():
    p = SegmentPlanner(RATE, "sendmsg", low_water_ms=100, first_segment_ms=120)
    p.feed(tone(60))
    assert [s.ms for s in p.take_ready(queued_ahead_ms=80)] == [60]


def test_clear_drops_buffer_and_restarts_utterance():
    p = SegmentPlanner(RATE, "sendmsg")
    p.feed(tone(500))
    p.clear()
    assert p.buffered_ms == 0 and p.flush() == []
    (seg,) = p.feed(tone(80))
    assert seg.first and seg.ms == 80


def test_hold_hands_out_nothing_until_release_then_the_first_segment():
    # A start lead (Playback.start_lead_ms): however much is buffered, nothing goes out before
    # release(); then the due segment takes every whole ptime, and the ramp goes on from there.
    p = SegmentPlanner(RATE, "sendmsg", first_segment_ms=80)
    p.hold()
    assert p.holding and p.feed(tone(137)) == [] and p.feed(tone(100)) == []
    assert p.take_ready(queued_ahead_ms=0) == [] and p.take_whole() == []
    (seg,) = p.release()
    assert seg.first and seg.ms == 220 and not p.holding and p.buffered_ms == 17
    assert p.release() == []  # once only
    assert [s.ms for s in p.feed(tone(413))] == [] and [s.ms for s in p.feed(tone(20))] == [440]  # due at 2 x 220


def test_release_of_less_than_a_first_segment_hands_out_what_is_whole():
    p = SegmentPlanner(RATE, "sendmsg", first_segment_ms=80)
    p.hold()
    p.feed(tone(50))
    (seg,) = p.release()
    assert seg.ms == 40 and p.buffered_ms == 10


def test_flush_and_clear_end_a_hold():
    p = SegmentPlanner(RATE, "sendmsg")
    p.hold()
    p.feed(tone(30))
    (seg,) = p.flush()  # end of speech before the lead was over: it all goes, padded
    assert seg.ms == 40 and seg.padded_ms == 10 and not p.holding
    p.hold()
    p.feed(tone(200))
    p.clear()
    assert not p.holding and p.release() == [] and p.buffered_ms == 0


def test_uuid_broadcast_never_holds():
    p = SegmentPlanner(RATE, "uuid_broadcast")
    p.hold()
    assert not p.holding


# ------------------------------------------------------------------ uuid_broadcast


def test_broadcast_cuts_only_in_pauses_and_trims_exactly_the_lead():
    p = SegmentPlanner(RATE, "uuid_broadcast", lead_ms=100)
    audio = tone(300) + quiet(240) + tone(200) + quiet(60) + tone(100)
    segs = p.feed(audio) + p.flush()
    assert [(s.ms, s.trimmed_ms, s.first) for s in segs] == [(300, 100, True), (140 + 200 + 60 + 100, 0, False)]
    assert replay(segs) == audio


def test_broadcast_emits_a_segment_as_soon_as_the_pause_reaches_the_lead():
    p = SegmentPlanner(RATE, "uuid_broadcast", lead_ms=100)
    assert p.feed(tone(300) + quiet(80)) == []
    (seg,) = feed_in(p, quiet(20), 2 * 40)
    assert seg.ms == 300 and seg.trimmed_ms == 100
    assert p.feed(quiet(500)) == []  # more silence: no speech since the cut, no second hole
    assert p.feed(tone(100)) == []
    (rest,) = p.flush()
    assert rest.ms == 600 and rest.trimmed_ms == 0


def test_broadcast_never_trims_the_leading_silence_of_an_utterance():
    p = SegmentPlanner(RATE, "uuid_broadcast")
    segs = p.feed(quiet(300) + tone(200)) + p.flush()
    assert [(s.ms, s.trimmed_ms) for s in segs] == [(500, 0)]


def test_broadcast_pause_detection_uses_a_threshold_not_digital_zero():
    p = SegmentPlanner(RATE, "uuid_broadcast", silence_dbfs=-50)
    hiss = quiet(200, level=100)  # about -55 dBFS RMS: silent
    (seg,) = p.feed(tone(200) + hiss + tone(100))
    assert seg.ms == 200 and seg.trimmed_ms == 100
    loud = SegmentPlanner(RATE, "uuid_broadcast", silence_dbfs=-60)
    assert loud.feed(tone(200) + hiss + tone(100)) == []  # at -60 dBFS the hiss counts as sound


def test_broadcast_judges_silence_per_10_ms_window():
    # A soft blip filling one 10 ms window (-48 dBFS) makes its 20 ms frame average -51 dBFS:
    # judged per frame it would vanish; per window it breaks the pause.
    gap = bytearray(quiet(200))
    gap[2 * 720 : 2 * 800] = tone(10, amp=184)
    p = SegmentPlanner(RATE, "uuid_broadcast", lead_ms=100, silence_dbfs=-50)
    (seg,) = p.feed(tone(200) + bytes(gap) + tone(100))
    assert seg.ms == 200 + 100 and seg.trimmed_ms == 100  # cut after the blip, not at the speech


def test_broadcast_without_pause_waits_for_flush():
    p = SegmentPlanner(RATE, "uuid_broadcast")
    assert feed_in(p, tone(2000), 640) == []
    assert p.take_ready(0) == []
    assert [(s.ms, s.first) for s in p.flush()] == [(2000, True)]


def test_broadcast_clear_forgets_a_pause_in_progress():
    p = SegmentPlanner(RATE, "uuid_broadcast")
    p.feed(tone(200) + quiet(80))
    p.clear()
    assert p.feed(quiet(40)) == [] and [s.first for s in p.flush()] == [True]


@pytest.mark.parametrize("ptime_ms,rate", [(20, 16000), (30, 8000), (10, 24000)])
def test_other_rates_and_ptimes(ptime_ms, rate):
    p = SegmentPlanner(rate, "uuid_broadcast", ptime_ms=ptime_ms)  # lead defaults to 5 ptimes
    audio = tone(300, rate=rate) + quiet(400, rate=rate) + tone(100, rate=rate)
    segs = p.feed(audio) + p.flush()
    frame = 2 * rate * ptime_ms // 1000
    assert all(len(s.pcm) % frame == 0 for s in segs)
    assert segs[0].trimmed_ms == 5 * ptime_ms
    assert b"".join(s.pcm + quiet(s.trimmed_ms, rate) for s in segs)[: len(audio)] == audio


# ------------------------------------------------------------------ invariants


@settings(max_examples=150, deadline=None)
@given(
    policy=st.sampled_from(["sendmsg", "uuid_broadcast"]),
    parts=st.lists(st.tuples(st.booleans(), st.integers(1, 400)), min_size=1, max_size=12),
    chunk=st.integers(1, 3000),
    refills=st.lists(st.integers(0, 200), max_size=20),
    first_ms=st.sampled_from([40, 60, 80, 100, 120]),
    flush_every=st.integers(0, 6),
)
def test_segments_rebuild_the_input_exactly(policy, parts, chunk, refills, first_ms, flush_every):
    audio = b"".join(tone(ms) if loud else quiet(ms) for loud, ms in parts)
    p = SegmentPlanner(RATE, policy, first_segment_ms=first_ms)
    segs, expected, fed, r = [], b"", b"", iter(refills)
    for n, i in enumerate(range(0, len(audio), 2 * chunk), start=1):
        piece = audio[i : i + 2 * chunk]
        fed += piece
        segs += p.feed(piece) + p.take_ready(next(r, 500))
        if flush_every and n % flush_every == 0:
            # An utterance ends mid-stream: its audio comes back padded to a whole ptime.
            segs += p.flush()
            expected += fed + bytes(-len(fed) % FRAME)
            fed = b""
    segs += p.flush()
    expected += fed + bytes(-len(fed) % FRAME)
    for s in segs:
        assert len(s.pcm) % FRAME == 0 and s.ms * RATE // 1000 * 2 == len(s.pcm)
        assert s.trimmed_ms in (0, 100) and (s.trimmed_ms == 0 or policy == "uuid_broadcast")
    assert [s.index for s in segs] == list(range(len(segs)))
    assert replay(segs) == expected
    assert p.buffered_ms == 0 and p.dropped_ms == 0


@settings(max_examples=60, deadline=None)
@given(
    parts=st.lists(st.tuples(st.booleans(), st.integers(1, 400)), min_size=1, max_size=10),
    chunks=st.lists(st.integers(1, 2000), min_size=1, max_size=30),
)
def test_broadcast_cuts_do_not_depend_on_chunking(parts, chunks):
    audio = b"".join(tone(ms) if loud else quiet(ms) for loud, ms in parts)
    one = SegmentPlanner(RATE, "uuid_broadcast")
    reference = one.feed(audio) + one.flush()
    p, got, i, k = SegmentPlanner(RATE, "uuid_broadcast"), [], 0, 0
    while i < len(audio):
        n = 2 * chunks[k % len(chunks)]
        got += p.feed(audio[i : i + n])
        i, k = i + n, k + 1
    assert got + p.flush() == reference
    for s in reference[:-1]:
        assert s.trimmed_ms == 100 and any(s.pcm[-FRAME:])  # every cut: speech, then the trimmed lead


def test_sizes_round_up_to_whole_ptimes():
    p = SegmentPlanner(RATE, "sendmsg", ptime_ms=30, first_segment_ms=80, segment_ms=400)
    assert (p.first_segment_ms, p.segment_ms, p.lead_ms) == (90, 420, 150)
    assert [s.ms for s in feed_in(p, tone(1050), 2 * 240)] == [90, 180, 360, 420]  # the ramp stays on whole ptimes


def test_segment_is_a_frozen_value():
    seg = Segment(pcm=b"", ms=0, index=0, first=True)
    with pytest.raises(AttributeError):
        seg.ms = 20  # type: ignore[misc]


def test_bad_arguments_raise():
    for kwargs in (
        {"policy": "fifo"},
        {"first_segment_ms": 0},
        {"segment_ms": 0},
        {"min_refill_ms": 20.0},
        {"lead_ms": 90},
        {"ptime_ms": 25},
        {"low_water_ms": -1},
        {"silence_dbfs": 3.0},
        {"max_buffer_ms": 200},
    ):
        with pytest.raises(LocalUsageError):
            SegmentPlanner(RATE, **{"policy": "sendmsg", **kwargs})
    with pytest.raises(LocalUsageError):
        SegmentPlanner(44100, "sendmsg")
    with pytest.raises(LocalUsageError):
        SegmentPlanner(RATE, "sendmsg").feed(b"\x00")


def test_buffer_is_bounded_dropping_the_oldest_and_counting():
    p = SegmentPlanner(RATE, "uuid_broadcast", max_buffer_ms=1000, segment_ms=400)
    head = tone(500, amp=1000)
    tail = tone(1000)
    assert p.feed(head + tail) == []
    assert p.buffered_ms == 1000 and p.dropped_ms == 500
    (seg,) = p.flush()
    assert seg.pcm == tail


def test_sendmsg_takes_a_big_chunk_without_dropping():
    p = SegmentPlanner(RATE, "sendmsg", max_buffer_ms=1000, segment_ms=400)
    segs = p.feed(tone(30_000))
    assert p.dropped_ms == 0 and sum(s.ms for s in segs) + p.buffered_ms == 30_000
