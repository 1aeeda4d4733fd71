"""RTP for the bench's lean caller agent, sans-I/O: packets out, and what the caller heard kept
as counts (sequence, timestamp, arrival, marker), never as decoded audio.

:class:`RtpSender` numbers the caller's PCMU packets (20 ms, 160 samples each). :class:`Heard`
reads the switch's packets one by one (``receive(seq, ts, marker, t_ns)``; the adapter parses the
12-byte header and passes the arrival time) and keeps:

* utterances: REF "Playback timing": an idle park sends no RTP, so the bot's speech arrives
  as runs of packets; a run starts after ``UTTERANCE_GAP_NS`` without any packet (the bench's
  bot pauses at least 3 s between utterances, so a hole inside one is never taken for a pause);
  ``runs`` holds their (first, last) arrival times, the last ``MAX_RUNS``;
* holes the caller heard inside an utterance, counted as :class:`testbed.sip_caller.RtpEar`
  does: a timestamp jump whose next packet also came late (arrival gap >= 1.5 ptimes), or a
  sequence jump (packets lost); a timestamp jump with no late packet is a ``resync`` (seen on a
  real 1.10.12 under load: the timestamp jumps by a frame, often with the marker bit, while
  packets keep coming every 20 ms), counted apart.
"""

from __future__ import annotations

import struct
from collections import deque

__all__ = ["RtpSender", "Heard", "HEADER", "SAMPLES", "PTIME_NS", "UTTERANCE_GAP_NS", "MAX_RUNS", "parse_header"]

HEADER = struct.Struct("!BBHII")  # V/P/X/CC, M/PT, sequence, timestamp, SSRC
SAMPLES = 160  # 20 ms of PCMU at 8 kHz
PTIME_NS = 20_000_000
UTTERANCE_GAP_NS = 1_000_000_000
MAX_RUNS = 4096
_LATE_NS = 30_000_000  # 1.5 ptimes
PCMU = 0


class RtpSender:
    """Sequence, timestamp and SSRC of one outgoing stream (PT 0, no marker: steady speech)."""

    __slots__ = ("seq", "ts", "ssrc")

    def __init__(self, seq: int, ts: int, ssrc: int) -> None:
        self.seq, self.ts, self.ssrc = seq & 0xFFFF, ts & 0xFFFFFFFF, ssrc & 0xFFFFFFFF

    def packet(self, payload: bytes) -> bytes:
        self.seq = (self.seq + 1) & 0xFFFF
        head = HEADER.pack(0x80, PCMU, self.seq, self.ts, self.ssrc)
        self.ts = (self.ts + SAMPLES) & 0xFFFFFFFF
        return head + payload


def parse_header(data: bytes) -> tuple[int, int, int, bool] | None:
    """(payload type, sequence, timestamp, marker) of a datagram, or None if it is not RTP v2."""
    if len(data) < 12:
        return None
    b0, b1, seq, ts, _ = HEADER.unpack_from(data)
    if b0 >> 6 != 2:
        return None
    return b1 & 0x7F, seq, ts, bool(b1 & 0x80)


class Heard:
    """What one caller heard, as counts. ``receive`` returns True when the packet starts an utterance."""

    __slots__ = ("packets", "markers", "utterances", "holes", "hole_ptimes", "lost", "resyncs", "duplicates",
                 "runs", "_seq", "_ts", "_t")

    def __init__(self) -> None:
        self.packets = self.markers = self.utterances = 0
        self.holes = self.hole_ptimes = self.lost = self.resyncs = self.duplicates = 0
        self.runs: deque[list[int]] = deque(maxlen=MAX_RUNS)
        self._seq = self._ts = self._t = -1

    def reset_counts(self) -> None:
        """Zero the counters (a measurement window starts); utterance state and runs are kept."""
        self.packets = self.markers = self.utterances = 0
        self.holes = self.hole_ptimes = self.lost = self.resyncs = self.duplicates = 0

    def receive(self, seq: int, ts: int, marker: bool, t_ns: int) -> bool:
        self.packets += 1
        self.markers += marker
        start = self._t < 0 or t_ns - self._t > UTTERANCE_GAP_NS
        if start:
            self.utterances += 1
            self.runs.append([t_ns, t_ns])
        else:
            self.runs[-1][1] = t_ns
            dseq = (seq - self._seq) & 0xFFFF
            if dseq == 0 or dseq >= 0x8000:  # a duplicate or a late, reordered packet: heard already
                self.duplicates += 1
                self._t = t_ns
                return False
            step = (ts - self._ts) & 0xFFFFFFFF
            if dseq > 1:
                self.lost += dseq - 1
                self.holes += 1
                self.hole_ptimes += dseq - 1
            elif SAMPLES < step < 0x80000000:
                if t_ns - self._t >= _LATE_NS:
                    self.holes += 1
                    self.hole_ptimes += step // SAMPLES - 1
                else:
                    self.resyncs += 1
        self._seq, self._ts, self._t = seq, ts, t_ns
        return start
