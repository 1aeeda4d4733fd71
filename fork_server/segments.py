"""TTS playback segment planning (pure): PCM at the channel's write rate in, segment files out.

Facts it implements (REF "Playback timing"):

* A file must be complete before it is queued (a growing file plays only up to the EOF
  seen at open), and a whole number of ptimes long (a partial frame is padded with
  silence: a 210 ms file leaves a 10 ms hole).
* ``sendmsg`` playback with event-lock plays queued files back to back, sample-exact. So
  the first segment of an utterance is small (``first_segment_ms``, 40–120 ms) for a fast
  start and later ones larger; 20 ms segments sometimes fell behind, 40 ms never did, so a
  starving queue is refilled with at least ``min_refill_ms`` when there is that much.
* ``uuid_broadcast`` puts ``lead_ms`` (5 × ptime) of no audio before EVERY file. So cuts
  are made only inside a pause of at least ``lead_ms`` and exactly ``lead_ms`` of that
  silence is trimmed at the cut: FreeSWITCH adds it back and the caller hears the
  original timing. Speech without such a pause stays in one segment until ``flush()``.

Invariant: concatenating the segments, each followed by its ``trimmed_ms`` of silence,
gives the input followed only by the final padding (less than one ptime).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .errors import LocalUsageError

__all__ = ["Segment", "SegmentPlanner", "POLICIES"]

POLICIES = ("sendmsg", "uuid_broadcast")


@dataclass(frozen=True, slots=True)
class Segment:
    pcm: bytes
    ms: int
    index: int
    first: bool  # first segment of an utterance
    trimmed_ms: int  # silence removed after this segment (uuid_broadcast lead)
    padded_ms: float = 0.0  # silence appended to reach a whole ptime (flush only)


class SegmentPlanner:
    def __init__(
        self,
        rate: int,
        policy: str,
        *,
        ptime_ms: int = 20,
        first_segment_ms: int = 80,
        segment_ms: int = 400,
        lead_ms: int = 100,
        low_water_ms: int = 60,
        min_refill_ms: int = 40,
        silence_dbfs: float = -50.0,
        max_buffer_ms: int = 120_000,
    ) -> None:
        if policy not in POLICIES:
            raise LocalUsageError(f"policy must be one of {POLICIES}, got {policy!r}")
        if rate not in (8000, 16000, 24000, 32000, 48000):
            raise LocalUsageError(f"unsupported write rate {rate!r}")
        for name, value in (
            ("first_segment_ms", first_segment_ms),
            ("segment_ms", segment_ms),
            ("lead_ms", lead_ms),
            ("min_refill_ms", min_refill_ms),
        ):
            if value <= 0 or value % ptime_ms:
                raise LocalUsageError(f"{name} must be a positive multiple of ptime {ptime_ms} ms, got {value}")
        self.rate = rate
        self.policy = policy
        self.ptime_ms = ptime_ms
        self.frame_bytes = rate * ptime_ms // 1000 * 2
        self.first_segment_ms = first_segment_ms
        self.segment_ms = segment_ms
        self.lead_frames = lead_ms // ptime_ms
        self.low_water_ms = low_water_ms
        self.min_refill_ms = min_refill_ms
        # Mean square of a frame at the threshold level, in int16 units.
        self._silence_ms = (32768.0 * 10 ** (silence_dbfs / 20)) ** 2
        self.max_buffer_bytes = max_buffer_ms // ptime_ms * self.frame_bytes
        self._buf = bytearray()
        self._first = True
        self._index = 0
        self.dropped_ms = 0

    @property
    def buffered_ms(self) -> int:
        return len(self._buf) * 1000 // (2 * self.rate)

    def _bytes(self, ms: int) -> int:
        return ms // self.ptime_ms * self.frame_bytes

    def _emit(self, nbytes: int, trimmed_frames: int = 0, pad: int = 0) -> Segment:
        pcm = bytes(self._buf[:nbytes]) + bytes(pad)
        del self._buf[: nbytes + trimmed_frames * self.frame_bytes]
        seg = Segment(
            pcm=pcm,
            ms=len(pcm) * 1000 // (2 * self.rate),
            index=self._index,
            first=self._first,
            trimmed_ms=trimmed_frames * self.ptime_ms,
            padded_ms=pad * 1000 / (2 * self.rate),
        )
        self._index += 1
        self._first = False
        return seg

    def feed(self, pcm: bytes) -> list[Segment]:
        if len(pcm) % 2:
            raise LocalUsageError(f"PCM s16le must have an even length, got {len(pcm)} bytes")
        self._buf += pcm
        over = len(self._buf) - self.max_buffer_bytes
        if over > 0:
            # Bounded: the oldest whole frames go, counted (the session also caps spool bytes).
            drop = -(-over // self.frame_bytes) * self.frame_bytes
            del self._buf[:drop]
            self.dropped_ms += drop * 1000 // (2 * self.rate)
        if self.policy == "sendmsg":
            return self._cut_sendmsg()
        return self._cut_at_pauses()

    def _cut_sendmsg(self) -> list[Segment]:
        out = []
        while True:
            want = self._bytes(self.first_segment_ms if self._first else self.segment_ms)
            if len(self._buf) < want:
                return out
            out.append(self._emit(want))

    def _silent_frames(self) -> np.ndarray:
        n = len(self._buf) // self.frame_bytes
        if n == 0:
            return np.zeros(0, dtype=bool)
        x = np.frombuffer(self._buf, dtype="<i2", count=n * self.frame_bytes // 2).astype(np.float64)
        power = np.mean(x.reshape(n, -1) ** 2, axis=1)
        return power < self._silence_ms

    def _cut_at_pauses(self) -> list[Segment]:
        out = []
        while True:
            silent = self._silent_frames()
            cut = _pause_end(silent, self.lead_frames)
            if cut is None:
                return out
            keep = cut - self.lead_frames
            out.append(self._emit(keep * self.frame_bytes, trimmed_frames=self.lead_frames))

    def take_ready(self, queued_ahead_ms: int) -> list[Segment]:
        """When the queue ahead runs low, hand out the whole ptimes buffered now (sendmsg only)."""
        if self.policy != "sendmsg" or queued_ahead_ms >= self.low_water_ms:
            return []
        whole = len(self._buf) - len(self._buf) % self.frame_bytes
        if whole == 0:
            return []
        if whole < self._bytes(self.min_refill_ms) and queued_ahead_ms > 0:
            return []  # something still plays: wait for a segment that cannot fall behind
        return [self._emit(whole)]

    def flush(self) -> list[Segment]:
        """End of an utterance: everything buffered goes out, padded to a whole ptime."""
        if not self._buf:
            self._first = True
            return []
        pad = (-len(self._buf)) % self.frame_bytes
        seg = self._emit(len(self._buf), pad=pad)
        self._first = True
        return [seg]

    def clear(self) -> None:
        """Barge-in: drop what is buffered; the next segment starts a new utterance."""
        self._buf.clear()
        self._first = True


def _pause_end(silent: np.ndarray, lead: int) -> int | None:
    """End frame of the first silent run of >= lead frames that has speech before and after it."""
    n = silent.size
    run_start = None
    for i in range(n):
        if silent[i]:
            if run_start is None:
                run_start = i
        else:
            if run_start is not None and run_start > 0 and i - run_start >= lead:
                return i
            run_start = None
    return None
