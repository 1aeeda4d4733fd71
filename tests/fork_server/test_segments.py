import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from fork_server.errors import LocalUsageError
from fork_server.segments import SegmentPlanner

RATE = 8000
FRAME = 320  # 20 ms at 8 kHz


def tone(ms, amp=8000):
    n = RATE * ms // 1000
    return np.rint(np.sin(np.arange(n) * 0.3) * amp).astype("<i2").tobytes()


def quiet(ms):
    return bytes(2 * (RATE * ms // 1000))


def replay(segments):
    """What the caller hears, with the trimmed lead put back where FreeSWITCH adds its hole."""
    return b"".join(s.pcm + quiet(s.trimmed_ms) for s in segments)


def test_sendmsg_first_segment_small_then_large():
    p = SegmentPlanner(RATE, "sendmsg", first_segment_ms=80, segment_ms=400)
    segs = p.feed(tone(1000))
    assert [s.ms for s in segs] == [80, 400, 400]
    assert segs[0].first and not segs[1].first
    assert p.buffered_ms == 120
    rest = p.flush()
    assert [s.ms for s in rest] == [120]
    assert p.feed(tone(100))[0].first  # after flush a new utterance starts small again


def test_flush_pads_only_to_a_whole_ptime():
    p = SegmentPlanner(RATE, "sendmsg")
    p.feed(tone(50))
    (seg,) = p.flush()
    assert len(seg.pcm) % FRAME == 0 and seg.ms == 60 and seg.padded_ms == 10
    assert p.flush() == []


def test_take_ready_refills_a_starving_queue_with_whole_ptimes():
    p = SegmentPlanner(RATE, "sendmsg", first_segment_ms=120)
    p.feed(tone(70))  # below the first target: nothing yet
    assert p.take_ready(queued_ahead_ms=200) == []
    (seg,) = p.take_ready(queued_ahead_ms=20)  # below the 60 ms low-water mark; 60 ms >= 40 ms floor
    assert seg.ms == 60 and seg.first and p.buffered_ms == 10


def test_take_ready_waits_for_40_ms_while_something_plays():
    p = SegmentPlanner(RATE, "sendmsg", first_segment_ms=120)
    p.feed(tone(30))
    assert p.take_ready(queued_ahead_ms=20) == []
    (seg,) = p.take_ready(queued_ahead_ms=0)
    assert seg.ms == 20


def test_clear_drops_buffer_and_restarts_utterance():
    p = SegmentPlanner(RATE, "sendmsg")
    p.feed(tone(500))
    p.clear()
    assert p.buffered_ms == 0 and p.flush() == []
    assert p.feed(tone(80))[0].first


def test_broadcast_cuts_only_in_pauses_and_trims_the_lead():
    p = SegmentPlanner(RATE, "uuid_broadcast", lead_ms=100)
    audio = tone(300) + quiet(240) + tone(200) + quiet(60) + tone(100)
    segs = p.feed(audio) + p.flush()
    assert len(segs) == 2  # the 60 ms pause is shorter than the lead: no cut there
    assert segs[0].trimmed_ms == 100 and segs[0].ms == 300 + 140
    assert replay(segs) == audio


def test_broadcast_without_pause_waits_for_flush():
    p = SegmentPlanner(RATE, "uuid_broadcast")
    assert p.feed(tone(2000)) == []
    assert p.take_ready(0) == []
    assert [s.ms for s in p.flush()] == [2000]


@settings(max_examples=80, deadline=None)
@given(
    policy=st.sampled_from(["sendmsg", "uuid_broadcast"]),
    parts=st.lists(st.tuples(st.booleans(), st.integers(1, 400)), min_size=1, max_size=12),
    chunk=st.integers(1, 3000),
    refills=st.lists(st.integers(0, 200), max_size=20),
)
def test_segments_rebuild_the_input_exactly(policy, parts, chunk, refills):
    audio = b"".join(tone(ms) if loud else quiet(ms) for loud, ms in parts)
    p = SegmentPlanner(RATE, policy)
    segs, i, r = [], 0, iter(refills)
    while i < len(audio):
        piece = audio[i : i + chunk * 2]
        i += len(piece)
        segs += p.feed(piece)
        segs += p.take_ready(next(r, 500))
    segs += p.flush()
    for s in segs:
        assert len(s.pcm) % FRAME == 0 and s.ms * RATE // 1000 * 2 == len(s.pcm)
    heard = replay(segs)
    assert heard[: len(audio)] == audio
    assert len(heard) - len(audio) < FRAME and not any(heard[len(audio) :])
    assert [s.index for s in segs] == list(range(len(segs)))


def test_bad_arguments_raise():
    with pytest.raises(LocalUsageError):
        SegmentPlanner(RATE, "fifo")
    with pytest.raises(LocalUsageError):
        SegmentPlanner(RATE, "sendmsg", first_segment_ms=50)
    with pytest.raises(LocalUsageError):
        SegmentPlanner(44100, "sendmsg")
    with pytest.raises(LocalUsageError):
        SegmentPlanner(RATE, "sendmsg").feed(b"\x00")


def test_buffer_is_bounded():
    p = SegmentPlanner(RATE, "uuid_broadcast", max_buffer_ms=1000)
    p.feed(tone(1500))
    assert p.buffered_ms == 1000 and p.dropped_ms == 500
