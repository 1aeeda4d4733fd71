"""The bench's emulated switch agrees with a REAL FreeSWITCH on the same short scenario (issue 13).

One run of ``python -m testbed.bench.capacity --switch real``: 6 calls, a 12 s window, the bot
talking 40 % of the time with barge-ins, first through the bench's emulated switch
(testbed.bench.load.LeanSwitch), then as real SIP calls through the real switch, the same fork
server process and connector both times. Route ``bench8`` runs without the jitter buffer the
rendered dialplan gives it (``--no-jitter-buffer bench8``, on both switches), so playback blanks
caller frames there and the emulator's model of it is exercised; ``bench16`` runs as rendered.

Agreement, within stated tolerances (this compares the two switches; it is not a speed target):

* caller frames lost at the connector, as % of the caller's frames: within 2 points;
* ESL events per played segment, to a listener subscribed as the fork server subscribes: exactly
  the same sequence (and so the same count) for every segment seen whole;
* fork-server CPU per call-second: within 30 % (72 call-seconds in each window).

Measured 2026-12-06 over 18 runs on the shared 2-core box (loadavg 0.3-2.8, other people's
tests and, in 2 runs, a CPU burner running): fork-server CPU 20-26 ms per call-second on the
emulated switch, 20-30 on the real one, apart by 0-18 % (the real one higher in 13 runs); caller
frames lost 4.99-5.33 % and 4.58-6.57 %, apart by 0.01-1.4 points (0.5 at most once frames were
placed one by one); 3 events per segment every time; about 41 s a run.
"""

import json

import pytest

pytestmark = pytest.mark.freeswitch  # skipped without FREESWITCH_BIN, failed under CI=true (conftest.py)
pytest.importorskip("ESL")

from testbed.bench import capacity  # noqa: E402

CALLS, WINDOW_S = 6, 12.0


@pytest.fixture(scope="module")
def rows(tmp_path_factory):
    out = tmp_path_factory.mktemp("agreement")
    capacity.run([
        "--switch", "real", "--calls", str(CALLS), "--window", str(WINDOW_S), "--settle", "1", "--drain", "0.5",
        "--first-tts-within", "1.5", "--no-baseline", "--no-jitter-buffer", "bench8", "--out", str(out),
    ])
    saved = json.loads((out / "capacity-latest.json").read_text())
    by_switch = {r["switch"]: r for r in saved["rows"]}
    for switch in ("emulated", "real"):
        r = by_switch.get(switch)
        assert r is not None and "error" not in r, r
        assert r["calls_up"] == CALLS and r["killed_by_server"] == 0, r
        # The scenario did what it is for: segments played, barge-ins, frames blanked (bench8).
        assert r["segments"] > 0 and r["clears"] > 0 and r["frames_silent"] > 0, r
    print("agreement: " + "; ".join(
        f"{s}: lost {r['lost_percent']} % ({r['frames_missing']} missing, {r['frames_silent']} blanked of "
        f"{r['caller_frames']}; {r['lost_bot_percent']} % while the bot plays; {r['frames_replaced']} replaced), "
        f"fork server {r['cpu_ms_per_call_s']} ms/call-s, {r['segments']} segments, {r['esl_events_per_segment']} events/segment"
        for s, r in by_switch.items()))
    return by_switch


@pytest.mark.parametrize("figure", ["lost_percent", "lost_idle_percent"])
def test_caller_frames_lost_agree_within_2_points(rows, figure):
    """All the caller's frames; and those while the bot is silent (none lost on either switch,
    give or take a late packet). The split while the bot plays is printed, not asserted: it is a
    third of the frames, so the same few frames weigh three times as much there."""
    emulated, real = rows["emulated"][figure], rows["real"][figure]
    assert abs(emulated - real) <= 2.0, (figure, emulated, real)


def test_esl_events_per_segment_are_the_same(rows):
    emulated, real = rows["emulated"], rows["real"]
    assert emulated["esl_segments_seen"] > 0 and real["esl_segments_seen"] > 0
    whole = {s: {k for k in r["esl_segment_profile"] if k.endswith("CHANNEL_EXECUTE_COMPLETE")} for s, r in rows.items()}
    assert whole["emulated"] == whole["real"] == {"PLAYBACK_START PLAYBACK_STOP CHANNEL_EXECUTE_COMPLETE"}, whole
    assert emulated["esl_events_per_segment"] == real["esl_events_per_segment"] == 3.0


def test_fork_server_cpu_per_call_second_agrees_within_30_percent(rows):
    emulated, real = rows["emulated"]["cpu_ms_per_call_s"], rows["real"]["cpu_ms_per_call_s"]
    assert abs(emulated - real) <= 0.30 * max(emulated, real), (emulated, real)
