"""The test SIP caller's pure parts: G.711 μ-law and reading holes off RTP timestamps."""

import numpy as np
from hypothesis import given, strategies as st

from testbed.sip_caller import RtpEar, RtpPacket, ulaw_decode, ulaw_encode


@given(st.lists(st.integers(-32768, 32767), min_size=1, max_size=400))
def test_ulaw_round_trip_is_within_one_quantisation_step(samples):
    x = np.array(samples, "<i2")
    y = np.frombuffer(ulaw_decode(ulaw_encode(x.tobytes())), "<i2").astype(np.int32)
    err = np.abs(y - x.astype(np.int32))
    # G.711: the step grows with the magnitude, 2**(exponent+3) at most, clipped at 32635.
    assert np.all(err <= np.maximum(np.abs(x.astype(np.int32)) // 16 + 8, 140))


def test_ulaw_matches_known_codes():
    assert ulaw_encode(np.array([0, -1, 32767, -32768], "<i2").tobytes()) == bytes([0xFF, 0x7F, 0x80, 0x00])
    assert np.frombuffer(ulaw_decode(bytes([0xFF, 0x80, 0x00])), "<i2").tolist() == [0, 32124, -32124]


def ear(*packets):
    return RtpEar([RtpPacket(t / 1000, i, ts * 160, m, bytes([i + 1]) * 320) for i, (t, ts, m) in enumerate(packets)])


def test_a_late_packet_after_a_timestamp_jump_is_a_hole():
    e = ear((0, 0, True), (20, 1, False), (60, 3, True), (80, 4, False))
    assert e.gaps() == [(1, 1)] and e.resyncs() == []
    assert len(e.timeline()) == 5 * 320 and e.timeline()[2 * 320 : 3 * 320] == bytes(320)


def test_a_timestamp_jump_with_packets_on_time_is_a_resync_not_a_hole():
    e = ear((0, 0, True), (20, 2, True), (40, 3, False))
    assert e.gaps() == [] and e.resyncs() == [(0, 1)]
    # On the RTP clock the resync is a frame of silence; closed, the audio runs on unbroken.
    assert e.timeline() == bytes([1]) * 320 + bytes(320) + bytes([2]) * 320 + bytes([3]) * 320
    assert e.timeline(close_resyncs=True) == bytes([1]) * 320 + bytes([2]) * 320 + bytes([3]) * 320


def test_closing_resyncs_keeps_real_holes():
    e = ear((0, 0, True), (20, 2, True), (80, 5, False))  # a resync, then a hole of 2 frames
    assert e.resyncs() == [(0, 1)] and e.gaps() == [(1, 2)]
    assert e.timeline(close_resyncs=True) == bytes([1]) * 320 + bytes([2]) * 320 + bytes(640) + bytes([3]) * 320
