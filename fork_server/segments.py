"""TTS playback segment planning (pure): PCM at the channel's write rate in, segment files out.

Facts it implements (REF "Playback timing"):

* A file must be complete before it is queued (a growing file plays only up to the EOF
  seen at open), and a whole number of ptimes long (a partial frame is padded with
  silence: a 210 ms file leaves a 10 ms hole). So every segment is whole ptimes, and the
  sub-ptime remainder stays buffered until more audio or ``flush()`` comes.
* ``sendmsg`` playback with event-lock plays queued files back to back, sample-exact. So
  the first segment of an utterance is small (``first_segment_ms``, 80 by default) for a
  fast start and each later one at least twice the one before: 80, 160, 320, ... REF: "queue
  each segment as soon as it is written, keeping at least one ahead"; with TTS faster than
  real time the doubling has the next file queued before the one ahead has played, without
  waiting for its PLAYBACK_START (measured on the emulator, 50 calls starting at once: a flat
  80-then-400 plan left the second file late in most calls). Once a segment is due it takes
  every whole ptime buffered, up to ``segment_ms`` (2000): TTS that comes faster than real
  time makes fewer, longer files, and every file costs the switch 5 events of ~6 KB and us 3
  (measured on 1.10.12, 2026-12-06: ~5 segments per TTS second at 400 ms). ``take_ready()``
  tops up a queue about to run dry with whatever whole ptimes are buffered: 20 ms segments
  sent on PLAYBACK_START sometimes fell behind and 40 ms never did, so while something still
  plays it waits for ``min_refill_ms`` (40).
* ``cut_at()`` (a mark): the segment holding the end of what is buffered ends there, rounded
  up to a whole ptime, so the mark's own file stops at most one ptime after its audio (not a
  2 s segment later). uuid_broadcast ignores it: a cut costs a 100 ms hole there.
* ``uuid_broadcast`` puts ``lead_ms`` (5 × ptime = 100 ms) of no audio before EVERY file.
  So a cut is made only once a pause (every 10 ms window below ``silence_dbfs``) has
  lasted ``lead_ms``: the segment ends where the speech did, and those ``lead_ms`` of
  silence are dropped (``trimmed_ms``) because FreeSWITCH puts its hole there instead;
  the caller hears the original timing. Speech without such a pause stays in one segment
  until ``flush()``. Leading silence of an utterance is never trimmed: its hole is there
  anyway. Latency cost: the first audio of an utterance waits for the first pause of at
  least ``lead_ms`` (or ``flush()``), plus the 100–128 ms FreeSWITCH takes to start a
  broadcast, against ~30 ms for the first ``sendmsg`` segment.

Invariant: concatenating the segments, each followed by ``trimmed_ms`` of silence, gives
the input followed only by the final padding (less than one ptime). Trimmed audio is
below ``silence_dbfs`` but not necessarily digital zero.

Bounded: audio still buffered beyond ``max_buffer_ms`` (only reachable by broadcast
speech with no pause, or a flood) is dropped oldest first, whole ptimes, and counted in
``dropped_ms``; the planner never raises on what a connector sends.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from .errors import LocalUsageError

__all__ = ["POLICIES", "Policy", "Segment", "SegmentPlanner"]

Policy = Literal["sendmsg", "uuid_broadcast"]
POLICIES: tuple[str, ...] = ("sendmsg", "uuid_broadcast")
_RATES = (8000, 16000, 24000, 32000, 48000)  # raw files FreeSWITCH plays as .r8 ... .r48
_WINDOW_MS = 10  # silence is judged per 10 ms window
_MAX_CUTS = 1024  # pending mark cuts (each distinct ptime at most once); past it marks share a later cut


@dataclass(frozen=True, slots=True)
class Segment:
    """One file to write and queue. ``pcm`` is whole ptimes at the planner's rate."""

    pcm: bytes
    ms: int
    index: int  # 0, 1, 2, ... over the planner's life
    first: bool  # first segment of an utterance
    trimmed_ms: int = 0  # silence dropped after this segment (uuid_broadcast: FreeSWITCH's lead hole)
    padded_ms: float = 0.0  # silence appended to reach a whole ptime (flush only)


class SegmentPlanner:
    """Cuts TTS audio into playback segments under the ``sendmsg`` or ``uuid_broadcast`` policy.

    ``feed()`` returns the segments ready now; ``take_ready()`` tops up a starving sendmsg
    queue; ``flush()`` ends an utterance (padding to a whole ptime); ``clear()`` is barge-in.
    """

    def __init__(
        self,
        rate: int,
        policy: Policy = "sendmsg",
        *,
        ptime_ms: int = 20,
        first_segment_ms: int = 80,
        segment_ms: int = 2000,
        lead_ms: int | None = None,
        low_water_ms: int = 60,
        min_refill_ms: int = 40,
        silence_dbfs: float = -50.0,
        max_buffer_ms: int = 120_000,
    ) -> None:
        if policy not in POLICIES:
            raise LocalUsageError(f"policy must be one of {POLICIES}, got {policy!r}")
        if rate not in _RATES or isinstance(rate, bool):
            raise LocalUsageError(f"rate must be one of {_RATES} (a raw file FreeSWITCH plays), got {rate!r}")
        if not _is_int(ptime_ms) or ptime_ms <= 0 or ptime_ms % _WINDOW_MS:
            raise LocalUsageError(f"ptime_ms must be a positive multiple of {_WINDOW_MS}, got {ptime_ms!r}")
        if lead_ms is None:
            lead_ms = 5 * ptime_ms  # REF: broadcast reads 5 frames before every file
        for name, value, least in (
            ("first_segment_ms", first_segment_ms, 1),
            ("segment_ms", segment_ms, 1),
            ("min_refill_ms", min_refill_ms, 0),
            ("max_buffer_ms", max_buffer_ms, 1),
            ("low_water_ms", low_water_ms, 0),
        ):
            if not _is_int(value) or value < least:
                raise LocalUsageError(f"{name} must be an int >= {least}, got {value!r}")
        if not _is_int(lead_ms) or lead_ms <= 0 or lead_ms % ptime_ms:
            raise LocalUsageError(f"lead_ms must be a positive multiple of ptime {ptime_ms} ms, got {lead_ms!r}")
        # Sizes are rounded up to whole ptimes, so defaults work at a 30 ms ptime too.
        first_segment_ms = -(-first_segment_ms // ptime_ms) * ptime_ms
        segment_ms = -(-segment_ms // ptime_ms) * ptime_ms
        max_buffer_ms = max_buffer_ms // ptime_ms * ptime_ms
        if max_buffer_ms < max(first_segment_ms, segment_ms):
            raise LocalUsageError(f"max_buffer_ms {max_buffer_ms} is below a segment ({segment_ms} ms)")
        if not -120.0 <= silence_dbfs < 0:
            raise LocalUsageError(f"silence_dbfs must be in [-120, 0), got {silence_dbfs!r}")
        self.rate = rate
        self.policy = policy
        self.ptime_ms = ptime_ms
        self.first_segment_ms = first_segment_ms
        self.segment_ms = segment_ms
        self.lead_ms = lead_ms
        self.low_water_ms = low_water_ms
        self.min_refill_ms = min_refill_ms
        self.silence_dbfs = silence_dbfs
        self.max_buffer_ms = max_buffer_ms
        self.frame_bytes = 2 * rate * ptime_ms // 1000
        self._lead_frames = lead_ms // ptime_ms
        # Mean square of a window at the threshold, in int16 units squared.
        self._silent_power = (32768.0 * 10 ** (silence_dbfs / 20)) ** 2
        self._buf = bytearray()
        self._cuts: list[int] = []  # forced segment ends (mark positions), bytes from the buffer start
        self._index = 0
        self.dropped_ms = 0
        self._new_utterance()

    @property
    def holding(self) -> bool:
        """A start lead is running: nothing goes out yet (see :meth:`hold`)."""
        return self._holding

    def hold(self) -> None:
        """sendmsg, an utterance starts with nothing playing: hand out nothing until
        :meth:`release` (the start-lead timer), :meth:`flush` or :meth:`clear`. A connector that
        paces its audio in real time (Pipecat: 137.5 ms bursts 120-160 ms apart) otherwise has
        each file end before its next burst arrives. However much is buffered, only time makes
        that margin: a big first burst of a real-time connector leaves none after it."""
        if self.policy == "sendmsg":
            self._holding = True

    def release(self) -> list[Segment]:
        """The start lead is over: hand out the first segment, whatever whole ptimes there are."""
        if not self._holding:
            return []
        self._holding = False
        return self._cut_sendmsg() or self.take_ready(0)

    def _new_utterance(self) -> None:
        self._holding = False
        self._first = True
        # sendmsg sizes ramp up, 80, 160, 320, 400 ms: each next file is ready (at TTS faster
        # than real time) before the one ahead of it has played, with no wait for PLAYBACK_START.
        self._next_ms = self.first_segment_ms
        self._scan_reset()

    def _scan_reset(self) -> None:
        # uuid_broadcast pause scan over whole frames of the buffer, kept across feeds.
        self._scanned = 0  # frames of _buf already classified
        self._speech = False  # a loud frame since the buffer start
        self._run = 0  # silent frames just before _scanned

    @property
    def buffered_ms(self) -> int:
        """Audio held (whole ms, rounded down), including a sub-ptime remainder."""
        return len(self._buf) * 1000 // (2 * self.rate)

    def _bytes(self, ms: int) -> int:
        return ms // self.ptime_ms * self.frame_bytes

    def _emit(self, nbytes: int, *, trimmed_frames: int = 0, pad: int = 0) -> Segment:
        pcm = bytes(self._buf[:nbytes]) + bytes(pad)
        gone = nbytes + trimmed_frames * self.frame_bytes
        del self._buf[:gone]
        self._cuts = [c - gone for c in self._cuts if c - gone > 0]
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
        """Buffer TTS audio (even length) and return the segments that are complete now."""
        if len(pcm) % 2:
            raise LocalUsageError(f"PCM s16le must have an even length, got {len(pcm)} bytes (carry the odd byte)")
        self._buf += pcm
        out = self._cut_sendmsg() if self.policy == "sendmsg" else self._cut_at_pauses()
        self._bound()
        return out

    def _bound(self) -> None:
        over = len(self._buf) - self._bytes(self.max_buffer_ms)
        if over <= 0:
            return
        frames = -(-over // self.frame_bytes)  # whole ptimes, so later cuts stay aligned
        gone = frames * self.frame_bytes
        del self._buf[:gone]
        self._cuts = [c - gone for c in self._cuts if c - gone > 0]
        self.dropped_ms += frames * self.ptime_ms
        self._scan_reset()  # the scan restarts on what is left (rare: a pathological stream)

    def cut_at(self) -> None:
        """End a segment where the buffered audio ends now, rounded up to a whole ptime (a mark)."""
        if self.policy != "sendmsg" or not self._buf:
            return
        cut = -(-len(self._buf) // self.frame_bytes) * self.frame_bytes
        if (not self._cuts or self._cuts[-1] < cut) and len(self._cuts) < _MAX_CUTS:
            self._cuts.append(cut)

    def _cut_sendmsg(self) -> list[Segment]:
        out: list[Segment] = []
        if self._holding:
            return out
        while True:
            if self._cuts and self._cuts[0] <= len(self._buf):  # a mark's segment ends exactly there
                seg = self._emit(self._cuts[0])
            else:
                whole = len(self._buf) - len(self._buf) % self.frame_bytes
                if whole < self._bytes(self._next_ms):
                    return out
                seg = self._emit(min(whole, self._bytes(self.segment_ms)))
            out.append(seg)
            self._next_ms = min(self.segment_ms, max(self._next_ms, 2 * seg.ms))

    def _cut_at_pauses(self) -> list[Segment]:
        out = []
        fb, lead = self.frame_bytes, self._lead_frames
        total = len(self._buf) // fb
        if total <= self._scanned:
            return out
        silent = self._silent_frames(self._scanned, total)
        i = self._scanned
        for quiet in silent:
            i += 1
            if not quiet:
                self._speech, self._run = True, 0
                continue
            self._run += 1
            if self._speech and self._run == lead:
                # Cut where the speech ended; the lead's worth of pause is FreeSWITCH's hole.
                out.append(self._emit((i - lead) * fb, trimmed_frames=lead))
                i = 0
                self._speech, self._run = False, 0
        self._scanned = i
        return out

    def _silent_frames(self, start: int, stop: int) -> np.ndarray:
        """Per whole frame in [start, stop): every 10 ms window below the threshold."""
        fb = self.frame_bytes
        x = np.frombuffer(self._buf, dtype="<i2", count=(stop - start) * fb // 2, offset=start * fb)
        windows = x.astype(np.float64).reshape(-1, self.rate * _WINDOW_MS // 1000)
        quiet = np.mean(windows * windows, axis=1) < self._silent_power
        return quiet.reshape(stop - start, -1).all(axis=1)

    def take_ready(self, queued_ahead_ms: int, playing: bool = False) -> list[Segment]:
        """sendmsg: when less than ``low_water_ms`` is queued ahead, hand out the whole ptimes buffered now.

        While something is still queued or playing (``playing``: a file has started and not
        stopped), only a segment of at least ``min_refill_ms`` is handed out: shorter ones fell
        behind in REF, and on a real 1.10.12 a 20 ms top-up sent on PLAYBACK_START left a
        one-frame hole after it. A channel with nothing playing takes even one ptime.
        uuid_broadcast never tops up: every extra file costs a 100 ms hole.
        """
        if self.policy != "sendmsg" or queued_ahead_ms >= self.low_water_ms or self._holding:
            return []
        whole = self._whole_to_cut()
        busy = queued_ahead_ms > 0 or playing
        if whole == 0 or (busy and whole * 1000 < self.min_refill_ms * 2 * self.rate):
            return []
        return [self._emit(whole)]

    def take_whole(self) -> list[Segment]:
        """sendmsg, the connector paused while a file still plays: the whole ptimes buffered go out
        now, never across a mark's cut; the partial frame stays for the next audio (see
        :meth:`fork_server.playback.core.Playback.timer`)."""
        if self.policy != "sendmsg" or self._holding:
            return []
        whole = self._whole_to_cut()
        return [self._emit(whole)] if whole else []

    def _whole_to_cut(self) -> int:
        """Bytes of whole ptimes buffered, never across a mark's cut."""
        whole = len(self._buf) - len(self._buf) % self.frame_bytes
        return min(whole, self._cuts[0]) if self._cuts else whole

    def flush(self) -> list[Segment]:
        """End of an utterance (or a mark): everything buffered goes out, padded to a whole ptime."""
        out = []
        while self._cuts and self._cuts[0] < len(self._buf):  # marks inside keep their own segments
            out.append(self._emit(self._cuts[0]))
        if self._buf:
            out.append(self._emit(len(self._buf), pad=(-len(self._buf)) % self.frame_bytes))
        self._cuts.clear()
        self._new_utterance()
        return out

    def clear(self) -> None:
        """Barge-in: drop what is buffered; the next segment starts a new utterance."""
        self._buf.clear()
        self._cuts.clear()
        self._new_utterance()


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)
