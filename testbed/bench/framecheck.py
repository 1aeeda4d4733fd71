"""Caller frames at the connector, frame by frame against what the caller sent (sans-I/O).

The bench caller never stops talking (:mod:`testbed.bench.voice`), so every 20 ms frame the
connector gets should carry speech. Two ways a caller's frame is lost:

* **silent**: it arrived as near-silence. REF "What the AI hears while the bot plays": FreeSWITCH
  replaces caller frames by ~zero (RMS 1) at every file playback start and on the return to
  ``park`` ("Playback methods compared"), keeping their count and timing. A frame counts as
  silent when at least half of it is one stretch of samples under ``SILENCE_PEAK``
  (:func:`is_silent`, probing every 4th sample), so a blanked 40 ms counts as 2 frames wherever
  it falls: on the 16k route FreeSWITCH's own resampler spread the 2 blanked frames over 275-286
  samples of one fork frame and all 320 of the next (fsprobe, 2026-12-06), and on the 8k route
  the fork server's 8k→16k FIR (2.5 ms delay) carries the previous frame's tail into the first
  80 samples of a blanked one. The bench voice has no such stretch (its frames' RMS is never
  under ~1500).
* **missing**: the caller's packet never reached the connector as itself. The caller's packets
  carry no mark the switch passes on, so :func:`identify` finds which packet a received frame
  came from by correlating it with what the caller sent (:meth:`CallerVoice.reference`) near
  where it should be: an *anchor* every ``ANCHOR_EVERY`` frames, after the run. Every frame also
  keeps a 60-sample signature (``SIG_SAMPLES`` of each 8 kHz phase from its last 75 %), matched
  against the packet each offset its anchors allow (a couple more either side) says it came
  from; the best match places it on the caller's clock (so its latency, caller RTP sent →
  connector received, follows). A blanked frame stands for the packet after the previous
  placed one. The caller's packets from the first to the last placed are its frames in the
  window (``packets``); those no frame stands for are missing, each dated by the next placed
  frame.
* apart, **replaced** (not lost, since the caller's packets are counted above): a frame that
  arrived, not silent, matching no packet (best match under ``MIN_SCORE``), e.g. a jitter
  buffer's concealment of a late packet. Seen on the real switch with ``jitterbuffer_msec=20``
  when the bench caller's packets came late: a concealed frame pushed the caller's frames one
  later until the buffer dropped a packet (1 replaced, 1 missing).

"While the bot plays" is judged at the connector's arrival time against the bot's runs of RTP at
the caller (:class:`testbed.bench.rtp.Heard`): from ``BEFORE_NS`` before a run's first packet to
``AFTER_NS`` after its last. REF: the 2 blanked frames of a start leave with the first bot
packets, the 2 of the return to park right after the last; the margins add the way to the
connector. The emulated switch marks its runs the same way on its 20 ms clock.

Limits: per call at most ``MAX_FRAMES`` frames (with 120 bytes of signature each) and
``MAX_ANCHORS`` anchors are kept (the bench window is far shorter).
"""

from __future__ import annotations

from array import array
from collections.abc import Sequence
from typing import Any, Callable

import numpy as np

__all__ = ["FrameLog", "is_silent", "identify", "analyse", "SILENCE_PEAK", "ANCHOR_EVERY", "MAX_FRAMES",
           "MAX_ANCHORS", "BEFORE_NS", "AFTER_NS", "MIN_SCORE", "SIG_SAMPLES"]

SILENCE_PEAK = 64
ANCHOR_EVERY = 25  # one identified frame per 0.5 s of each call
MAX_FRAMES = 1 << 16  # 22 min of frames per call
MAX_ANCHORS = 4096
BEFORE_NS = 20_000_000
AFTER_NS = 150_000_000
MIN_SCORE = 0.5  # normalised correlation; a frame that is the caller's scores ~0.9-0.99 through μ-law and both resamplers
SIG_SAMPLES = 30  # per phase: 16 kHz samples 80, 88, ... 312 (even phase) and 81, 89, ... 313 (odd)
_MAX_CANDIDATES = 9  # offsets tried between two anchors (8 frames missing in half a second)


def is_silent(frame: bytes) -> bool:
    """True if at least half of a frame of s16le samples is one near-silent stretch."""
    v = memoryview(frame).cast("h")
    n = len(v)
    if n < 8:
        return False
    t = SILENCE_PEAK
    # A stretch of half the frame holds two neighbouring points of this grid: look closer only then.
    step = n >> 2
    q0, q1, q2, q3 = -t < v[0] < t, -t < v[step] < t, -t < v[2 * step] < t, -t < v[3 * step] < t
    if not ((q0 and q1) or (q1 and q2) or (q2 and q3)):
        return False
    run = best = 0
    for x in v[::4]:
        if -t < x < t:
            run += 1
            if run > best:
                best = run
        else:
            run = 0
    return best * 4 >= n // 2


class FrameLog:
    """What the connector of one call kept about the caller's frames during the window."""

    __slots__ = ("arrivals", "silent", "anchors", "sigs", "_since_anchor", "_prev_silent")

    def __init__(self) -> None:
        self.arrivals = array("q")  # arrival (ns) of every frame in the window
        self.silent = array("i")  # indices (into arrivals) of the near-silent ones
        self.anchors: list[tuple[int, bytes]] = []  # (index, frame) kept for identification
        self.sigs = array("h")  # with anchors: 2 * SIG_SAMPLES per frame (see the module docstring)
        self._since_anchor = ANCHOR_EVERY
        self._prev_silent = True

    def add(self, frame: bytes, t_ns: int, *, anchors: bool) -> None:
        j = len(self.arrivals)
        if j >= MAX_FRAMES:
            return
        self.arrivals.append(t_ns)
        silent = is_silent(frame)
        if silent:
            self.silent.append(j)
        if anchors:
            v = memoryview(frame).cast("h") if len(frame) == 640 else memoryview(bytes(640)).cast("h")
            self.sigs.frombytes(v[80 : 80 + 8 * SIG_SAMPLES : 8].tobytes())
            self.sigs.frombytes(v[81 : 81 + 8 * SIG_SAMPLES : 8].tobytes())
            if not silent and len(frame) == 640:
                self._since_anchor += 1
                if self._since_anchor >= ANCHOR_EVERY and not self._prev_silent and len(self.anchors) < MAX_ANCHORS:
                    self.anchors.append((j, bytes(frame)))
                    self._since_anchor = 0
        self._prev_silent = silent


def identify(frame: bytes, reference: Callable[[int, int], np.ndarray], k_guess: int,
             search: int) -> tuple[int, float, int, int]:
    """(packet number, score, phase, shift) of a received 16 kHz frame: the caller's packet it
    came from, looked for within ``k_guess ± search`` by normalised correlation of its even
    (phase 0) and odd (phase 1) samples with ``reference(k0, k1)`` (8 kHz); sample ``2m + phase``
    of the frame is 8 kHz sample ``160 * k + shift + m`` of the caller's stream. A score under
    ``MIN_SCORE`` means not found."""
    x16 = np.frombuffer(frame, "<i2").astype(np.float32)
    k0 = max(0, k_guess - search - 1)
    k1 = k_guess + search + 2
    ref = reference(k0, k1)
    energy = np.concatenate(([0.0], np.cumsum(ref.astype(np.float64) ** 2)))
    win = energy[160:] - energy[:-160]
    best_k, best, best_phase, best_shift = k_guess, -1.0, 0, 0
    for phase, x in enumerate((x16[0::2], x16[1::2])):
        nx = float(np.dot(x, x))
        if nx <= 0:
            continue
        c = np.correlate(ref, x, "valid")
        score = c / np.sqrt(np.maximum(win[: len(c)], 1e-9) * nx)
        i = int(np.argmax(score))
        if score[i] > best:
            # The resamplers' delay is a few ms, well under half a frame: round to the frame.
            k = k0 + int(round(i / 160))
            best, best_k, best_phase, best_shift = float(score[i]), k, phase, i - 160 * (k - k0)
    return best_k, best, best_phase, best_shift


def _in_runs(t: np.ndarray, runs: Sequence[Sequence[int]]) -> np.ndarray:
    if len(t) == 0 or not runs:
        return np.zeros(len(t), bool)
    r = np.asarray(runs, dtype=np.int64)
    starts, ends = r[:, 0] - BEFORE_NS, r[:, 1] + AFTER_NS
    i = np.searchsorted(starts, t, side="right") - 1
    ok = i >= 0
    out = np.zeros(len(t), bool)
    out[ok] = t[ok] <= ends[i[ok]]
    return out


def _match(sig: np.ndarray, ks: np.ndarray, shift: int, reference: Callable[[int, int], np.ndarray]) -> np.ndarray:
    """Normalised correlation of each frame's signature with packet ``ks[i]``'s samples."""
    lo, hi = int(ks.min()), int(ks.max())
    ref = reference(lo - 1, hi + 2)  # one packet of margin each side for the shift
    pos = (ks - (lo - 1))[:, None] * 160 + shift + 40 + 4 * np.arange(SIG_SAMPLES)[None, :]
    r = ref[np.clip(pos, 0, len(ref) - 1)].astype(np.float64)
    x = sig.astype(np.float64)
    den = np.sqrt((x * x).sum(1) * (r * r).sum(1))
    return np.where(den > 0, (x * r).sum(1) / np.maximum(den, 1e-9), 0.0)


def analyse(
    log: FrameLog,
    runs: Sequence[Sequence[int]],
    *,
    sent_ns: Sequence[int] | None = None,
    reference: Callable[[int, int], np.ndarray] | None = None,
) -> dict[str, Any]:
    """Counts for one call's window. With ``sent_ns`` (the caller's packet send times) and
    ``reference``, frames are placed on the caller's clock (anchors, then every frame's
    signature), giving ``missing`` and ``replaced`` frames and ``latency_ns`` per frame; without
    them (the emulated switch, whose frames the bench numbers itself) only the silent frames are
    counted."""
    arr = np.frombuffer(log.arrivals, dtype=np.int64) if len(log.arrivals) else np.zeros(0, np.int64)
    bot = _in_runs(arr, runs)
    silent = np.frombuffer(log.silent, dtype=np.int32) if len(log.silent) else np.zeros(0, np.int32)
    out: dict[str, Any] = {
        "frames": int(len(arr)),
        "frames_bot": int(bot.sum()),
        "silent": int(len(silent)),
        "silent_bot": int(bot[silent].sum()) if len(silent) else 0,
        "missing": 0,
        "missing_bot": 0,
        "replaced": 0,
        "replaced_bot": 0,
        "packets": int(len(arr)),  # the caller's packets in the window (real: placed; emulated: as received)
        "packets_bot": int(bot.sum()),
        "anchors": 0,
        "anchors_failed": 0,
        "backsteps": 0,
        "latency_ns": np.zeros(0, np.int64),
    }
    if sent_ns is None or reference is None or not log.anchors or len(sent_ns) == 0:
        return out
    sent = np.asarray(sent_ns, dtype=np.int64)
    aligned: list[tuple[int, int]] = []  # (frame index, packet number)
    shapes: list[tuple[int, int]] = []  # (phase, shift) of each identified anchor
    for j, frame in log.anchors:
        if aligned:
            pj, pk = aligned[-1]
            guess, search = pk + (j - pj), 10
        else:
            guess, search = int(np.searchsorted(sent, arr[j] - 20_000_000)), 50
        k, score, phase, shift = identify(frame, reference, guess, search)
        if score < MIN_SCORE or not 0 <= k < len(sent):
            out["anchors_failed"] += 1
            continue
        aligned.append((j, k))
        shapes.append((phase, shift))
    out["anchors"] = len(aligned)
    if not aligned:
        return out
    # The resamplers' delay is the call's own: take the anchors' most common one.
    phase, shift = max(set(shapes), key=shapes.count)
    n = len(arr)
    sigs = np.frombuffer(log.sigs, dtype=np.int16)[: n * 2 * SIG_SAMPLES].reshape(n, 2, SIG_SAMPLES)[:, phase, :]
    offset = np.full(n, aligned[0][1] - aligned[0][0], dtype=np.int64)
    score = np.full(n, -1.0)
    # Each stretch between two anchors (and before the first, after the last) tries the offsets
    # its anchors allow, and a couple either side (a concealed frame pushes the ones after it one
    # later until a packet is dropped: the net over the stretch is then 0); each frame takes the
    # offset its signature matches best.
    o_first, o_last = aligned[0][1] - aligned[0][0], aligned[-1][1] - aligned[-1][0]
    bounds = [(0, o_first, o_first)] + [(ja, ka - ja, kb - jb) for (ja, ka), (jb, kb) in zip(aligned, aligned[1:])]
    bounds.append((aligned[-1][0], o_last, o_last))
    ends = [b[0] for b in bounds[1:]] + [n]
    for (start, oa, ob), end in zip(bounds, ends):
        if end <= start:
            continue
        lo, hi = min(oa, ob) - 2, max(oa, ob) + 2
        cands = range(lo, hi + 1) if hi - lo < _MAX_CANDIDATES else sorted({*range(oa - 2, oa + 3), *range(ob - 2, ob + 3)})
        js = np.arange(start, end)
        for o in cands:
            ks = js + o
            ok = (ks >= 0) & (ks < len(sent))
            if not ok.any():
                continue
            sc = np.full(len(js), -1.0)
            sc[ok] = _match(sigs[js[ok]], ks[ok], shift, reference)
            better = sc > score[start:end]
            offset[start:end][better], score[start:end][better] = o, sc[better]
    is_silent_frame = np.zeros(n, bool)
    is_silent_frame[silent] = True
    good = (score >= MIN_SCORE) & ~is_silent_frame
    replaced = (score < MIN_SCORE) & ~is_silent_frame
    out["replaced"] = int(replaced.sum())
    out["replaced_bot"] = int((replaced & bot).sum())
    out["packets_bot"] = int((bot & ~replaced).sum())
    if not good.any():
        return out
    # A blanked frame stands in the place of the packet after the previous good frame's; a
    # replaced one stands for none (a concealment pushes the frames after it one later, and a
    # packet dropped later lets them catch up: 1 replaced, 1 missing). The caller's packets from
    # the first to the last placed are those it sent in the window; the ones no frame stands for
    # are the missing ones.
    gi = np.flatnonzero(good)
    last_good = np.maximum.accumulate(np.where(good, np.arange(n), -1))
    ff = np.where(last_good >= 0, offset[np.maximum(last_good, 0)], offset[gi[0]])
    k_of = np.arange(n) + np.where(good, offset, ff)
    placed = good | is_silent_frame
    kp = k_of[placed]
    k_lo, k_hi = int(kp.min()), int(kp.max())
    claimed = np.zeros(k_hi - k_lo + 1, bool)
    claimed[kp - k_lo] = True
    lost_k = np.flatnonzero(~claimed) + k_lo
    out["packets"] = k_hi - k_lo + 1
    out["missing"] = int(len(lost_k))
    kg = k_of[gi]
    out["backsteps"] = int((np.diff(kg) <= 0).sum())  # a packet's audio twice, or placed wrong: should be 0
    if len(lost_k):
        # When: the arrival of the first good frame after the lost packet.
        at = np.minimum(np.searchsorted(np.maximum.accumulate(kg), lost_k, side="right"), len(gi) - 1)
        out["missing_bot"] = int(_in_runs(arr[gi[at]], runs).sum())
    ok = good & (k_of >= 0) & (k_of < len(sent))
    out["latency_ns"] = arr[ok] - sent[k_of[ok]]
    out["match"] = score  # per frame: how well it matched the caller's packet (for looking closer)
    out["packet"] = k_of  # per frame: the caller's packet it stands for
    return out
