"""Per-point figures of the caller's side, the same for the emulated and the real switch.

* caller frames lost at the connector (:mod:`testbed.bench.framecheck`): ``frames_missing``
  (never arrived) and ``frames_silent`` (arrived blanked), each also "while the bot plays"
  (``_bot``), as a % of the caller's frames in the window (``caller_frames``); the rest is "while
  it is silent". Apart: ``frames_replaced``, frames that arrived but are not what the caller
  sent (a jitter buffer's concealment). On the emulated switch the bench numbers every frame
  itself and sends nothing else, so missing is frames sent minus frames received over the run
  (as before) and none is replaced; on the real one they are found frame by frame in the window.
* what the caller heard (:class:`testbed.bench.rtp.Heard`): holes inside utterances, packets
  lost, timestamp resyncs, the bot's talk time; first audio of an utterance after the connector's
  first TTS byte; the barge-in cut (last bot audio after ``clear``);
* added latency: emulated, fork frame sent → connector (stamped in the frame); real, caller RTP
  sent → connector (the frame placed on the caller's clock by the anchors), which includes the
  switch's own read timing;
* ESL events and bytes per call-second and per played segment, from an :class:`EslTap`
  subscribed as the fork server subscribes, on a sample of the calls.
"""

from __future__ import annotations

from functools import partial
from typing import Any

import numpy as np

from .esltap import TapCounts
from .framecheck import analyse
from .load import LoadGen, percentiles

__all__ = ["HeardSnapshot", "caller_figures", "tap_figures"]

_HEARD = ("packets", "utterances", "holes", "hole_ptimes", "lost", "resyncs", "markers")


class HeardSnapshot:
    """Sum of every call's :class:`Heard` counters when taken (the window's end)."""

    def __init__(self, gen: LoadGen) -> None:
        self.totals = {k: sum(getattr(c.heard, k) for c in gen.calls) for k in _HEARD}


def _pct(part: int, whole: int) -> float | None:
    return round(100.0 * part / whole, 2) if whole else None


def caller_figures(gen: LoadGen, *, window_s: float, n: int, heard: HeardSnapshot) -> dict[str, Any]:
    tot = {"frames": 0, "frames_bot": 0, "silent": 0, "silent_bot": 0, "missing": 0, "missing_bot": 0, "replaced": 0,
           "replaced_bot": 0, "packets": 0, "packets_bot": 0, "anchors": 0, "anchors_failed": 0, "backsteps": 0}
    lats = []
    for c in gen.calls:
        runs = [list(r) for r in c.heard.runs]
        if gen.real:
            a = analyse(c.flog, runs, sent_ns=gen.sent_ns(c), reference=partial(gen.voice.reference, c.idx))  # type: ignore[attr-defined]
            if len(a["latency_ns"]):
                lats.append(a["latency_ns"])
        else:
            a = analyse(c.flog, runs)
        for k in tot:
            tot[k] += a[k]
    if not gen.real:
        t = gen.totals()
        tot["missing"] = max(0, t["frames_sent"] - t["frames_received"])  # whole run; not placed in time
        tot["packets"] += tot["missing"]
    caller_frames = tot["packets"]
    lost = tot["silent"] + tot["missing"]
    bot_frames = tot["packets_bot"] + tot["missing_bot"]
    lost_bot = tot["silent_bot"] + tot["missing_bot"]
    out: dict[str, Any] = {
        "caller_frames": caller_frames,
        "frames_missing": tot["missing"],
        "frames_silent": tot["silent"],
        "frames_replaced": tot["replaced"],
        "frames_bot": bot_frames,
        "frames_missing_bot": tot["missing_bot"],
        "frames_silent_bot": tot["silent_bot"],
        "frames_replaced_bot": tot["replaced_bot"],
        "lost_percent": _pct(lost, caller_frames),
        "lost_bot_percent": _pct(lost_bot, bot_frames),
        "lost_idle_percent": _pct(lost - lost_bot, caller_frames - bot_frames),
        "anchors": tot["anchors"],
        "anchors_failed": tot["anchors_failed"],
        "frames_backsteps": tot["backsteps"],  # frames seen twice or anchors placed wrong: should be 0
        "holes": heard.totals["holes"],
        "hole_ptimes": heard.totals["hole_ptimes"],
        "rtp_lost": heard.totals["lost"],
        "resyncs": heard.totals["resyncs"],
        "utterances_heard": heard.totals["utterances"],
        "bot_speaking_percent": round(heard.totals["packets"] * 0.02 / window_s / n * 100, 1) if n else None,
        "first_audio_ms": percentiles(gen.rec.first_audio),
        "cut_ms": percentiles(gen.rec.cuts),
    }
    if gen.real:
        lat = np.concatenate(lats) if lats else np.zeros(0, np.int64)
        out["latency_ms"] = percentiles(np.ascontiguousarray(lat, dtype=np.int64))  # type: ignore[arg-type]
    return out


def tap_figures(counts: TapCounts, *, calls: int, window_s: float) -> dict[str, Any]:
    """ESL events and bytes per call-second over the watched calls, per name, per segment."""
    n, b = counts.total()
    cs = calls * window_s
    profile = counts.segment_profile()
    # Segments wholly inside the window: their start and their last event (CHANNEL_EXECUTE_COMPLETE) seen.
    whole = {k: v for k, v in profile.items() if k.split()[-1] == "CHANNEL_EXECUTE_COMPLETE"}
    segs = sum(whole.values())
    subscribed_per_seg = sum(len(k.split()) * v for k, v in whole.items()) / segs if segs else None
    return {
        "esl_tap_calls": calls,
        "esl_events_per_call_s": round(n / cs, 2) if cs else None,
        "esl_kb_per_call_s": round(b / cs / 1000, 2) if cs else None,
        "esl_bytes_per_event": round(b / n) if n else None,
        "esl_by_event": {k: {"events": counts.events[k], "bytes_each": round(counts.bytes[k] / counts.events[k])}
                         for k in sorted(counts.events)},
        "esl_segments_seen": segs,
        "esl_events_per_segment": round(subscribed_per_seg, 3) if subscribed_per_seg is not None else None,
        "esl_segment_profile": profile,
    }
