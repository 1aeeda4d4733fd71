"""testbed.timeline_plot: the demo's timeline picture, from plain data (no call is run).

The plan says where each lane's audio went; the tests read it, not pixels. The PNG is only
checked for being a PNG of the promised size.
"""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("matplotlib")

from testbed import demo  # noqa: E402
from testbed import timeline_plot as tp  # noqa: E402


def tone(ms: float, rate: int, amp: float = 0.5, hz: float = 300.0) -> bytes:
    n = round(rate * ms / 1000)
    x = amp * np.sin(2 * np.pi * hz * np.arange(n) / rate)
    return (x * 32767).astype("<i2").tobytes()


def frames(start_ms: float, count: int, rate: int, skip: tuple[int, ...] = (), amp: float = 0.5) -> list[tp.Clip]:
    """20 ms frames back to back from ``start_ms``; frames at indices in ``skip`` are missing (holes)."""
    return [tp.Clip(start_ms + 20 * i, tone(20, rate, amp), rate) for i in range(count) if i not in skip]


def png_size(path: Path) -> tuple[int, int]:
    head = path.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", head[16:24])


def flat(spans: list[tuple[float, float]]) -> list[float]:
    return [t for span in spans for t in span]


def whole_call() -> tp.CallTimeline:
    # The caller speaks at 10 ms (1 s) and barges in at 2600 ms; the connector sends 100 ms TTS
    # messages every 40 ms from 1500 ms; the caller hears 20 ms frames from 1550 ms, with frames
    # 10, 11 and 30 missing; clear at 2630 ms, last frame heard at 2620 ms.
    said = [
        tp.Clip(10, tone(1000, 8000), 8000, label="question"),
        tp.Clip(2600, tone(300, 8000), 8000, label="stop"),
    ]
    ai = frames(20, 150, 16000)  # 3 s of caller audio at the connector
    sent = [tp.Clip(1500 + 40 * i, tone(100, 24000), 24000, span_ms=40) for i in range(20)]
    heard = frames(1550, 54, 8000, skip=(10, 11, 30))  # last frame starts at 1550 + 53 * 20 = 2610
    marks = [
        tp.MarkEvent("seg-1", sent_ms=1700, reported_ms=2500, status="played"),
        tp.MarkEvent("seg-2", sent_ms=1900, reported_ms=2632, status="cleared"),
        tp.MarkEvent("seg-3", sent_ms=2100, reported_ms=2633, status="cleared"),
    ]
    return tp.CallTimeline(
        title="route support", caller_said=said, ai_heard=ai, bot_sent=sent, caller_heard=heard,
        barge_in_ms=2600, clear_ms=2630, hangup_ms=3100, marks=marks, lane_notes={"bot_sent": "24 kHz"},
    )


def test_draws_a_png_of_the_promised_size(tmp_path: Path) -> None:
    out = tmp_path / "deep" / "timeline.png"
    p = tp.draw_timeline(whole_call(), out)
    assert png_size(out) == p.size_px == (1600, 900)


def test_each_lane_is_placed_at_its_times() -> None:
    p = tp.plan(whole_call())
    assert p.xlim_ms[0] < 0 < 3100 < p.xlim_ms[1]  # the axis starts at the INVITE, ends after the BYE
    tol = p.bin_ms
    said = p.lane("caller_said")
    assert said.spans_ms == ((10, 1010), (2600, 2900))
    assert said.labels == ((10, "question"), (2600, "stop"))
    assert flat(said.drawn_spans_ms()) == pytest.approx([10, 1010, 2600, 2900], abs=tol)
    assert p.lane("ai_heard").spans_ms == ((20, 3020),)
    assert p.lane("ai_heard").clips == 150
    # TTS messages are drawn squeezed into their 40 ms: 20 of them cover 1500..2300, not 1500..3400
    sent = p.lane("bot_sent")
    assert sent.spans_ms == ((1500, 2300),)
    assert flat(sent.drawn_spans_ms()) == pytest.approx([1500, 2300], abs=tol)
    assert sent.audio_ms == pytest.approx(2000)
    heard = p.lane("caller_heard")
    assert heard.spans_ms == ((1550, 1750), (1790, 2150), (2170, 2630))
    assert heard.holes_ms == ((1750, 1790), (2150, 2170))
    # the holes are drawn empty, even the one of a single frame
    assert flat(heard.drawn_spans_ms()) == pytest.approx([1550, 1750, 1790, 2150, 2170, 2630], abs=tol)
    assert np.nanmax(heard.hi) == pytest.approx(0.5, abs=0.01)
    assert np.isnan(heard.hi[heard.centers_ms < 1500]).all()  # nothing heard before the bot spoke


def test_key_numbers_and_markers() -> None:
    p = tp.plan(whole_call())
    assert p.first_sent_ms == 1500 and p.first_heard_ms == 1550
    assert p.first_audio_latency_ms == 50
    assert p.last_audio_ms == 2610
    assert p.cut_after_clear_ms == -20 and p.cut_after_barge_in_ms == 10
    assert "first audio 50 ms" in p.subtitle and "-20 ms after `clear`" in p.subtitle and "2 holes" in p.subtitle
    at = {(m.kind, m.label): m.at_ms for m in p.markers}
    assert at[("barge_in", "caller barges in")] == 2600
    assert at[("clear", "`clear` sent")] == 2630
    assert at[("last_audio", "last bot audio (-20 ms vs clear)")] == 2610
    assert at[("mark_sent", "seg-1")] == 1700 and at[("mark_sent", "seg-3")] == 2100
    assert at[("mark_report", "seg-1 played")] == 2500
    assert at[("mark_report", "seg-2, seg-3 cleared")] == 2632  # reported together: one line
    assert at[("hangup", "caller hangs up")] == 3100
    assert [m.at_ms for m in p.markers] == sorted(m.at_ms for m in p.markers)
    assert p.zoom is not None
    assert p.zoom.xlim_ms[0] < 2600 and p.zoom.xlim_ms[1] > 2630
    assert p.zoom.bin_ms < p.bin_ms
    assert p.zoom.heard.spans_ms[-1] == (2170, 2630)


def test_a_call_that_failed_before_the_bot_spoke_still_draws(tmp_path: Path) -> None:
    data = tp.CallTimeline(
        title="route support", caller_said=[tp.Clip(10, tone(1000, 8000), 8000)], ai_heard=frames(20, 50, 16000),
        outcome="FAILED", failure="timed out after 20 s waiting for the bot's first word in the caller's ear",
    )
    out = tmp_path / "timeline.png"
    p = tp.draw_timeline(data, out)
    assert png_size(out) == (1600, 900)
    assert p.lane("bot_sent").empty and p.lane("caller_heard").empty
    assert p.lane("ai_heard").spans_ms == ((20, 1020),)
    assert p.first_audio_latency_ms is None and p.last_audio_ms is None and p.zoom is None
    assert p.markers == ()
    assert p.title.endswith("FAILED") and p.failure is not None and p.failure.startswith("timed out")
    assert "the bot sent no audio" in p.subtitle


def test_nothing_at_all_still_draws(tmp_path: Path) -> None:
    out = tmp_path / "timeline.png"
    p = tp.draw_timeline(tp.CallTimeline(title="nothing"), out)
    assert png_size(out) == (1600, 900)
    assert all(lane.empty for lane in p.lanes)


def test_clips_accept_arrays_and_check_their_arguments() -> None:
    c = tp.Clip(5, np.array([0, 16384, -16384, 0], dtype=np.int16), 8000)
    assert c.duration_ms == 0.5 and c.end_ms == 5.5
    assert c.samples().tolist() == [0.0, 0.5, -0.5, 0.0]
    with pytest.raises(ValueError, match="rate"):
        tp.Clip(0, b"", 0)
    with pytest.raises(ValueError, match="span_ms"):
        tp.Clip(0, b"", 8000, span_ms=-1)


def test_the_demo_rebuilds_the_tts_it_sent_from_the_script_wav() -> None:
    from types import SimpleNamespace

    from testbed.connector.modes import ScriptBehaviour, make_options
    from testbed.connector.recording import CallRecord, Sent

    options = {"rate": 24000, "speed": 3.0}
    record = CallRecord(index=0, path="/support", subprotocol=None, headers={}, connected_at=0.0)
    record.sent.append(Sent(0.990, "audio_format", {"type": "audio_format", "sample_rate": 24000}))
    for i in range(4):  # 100 ms messages every 33 ms
        record.sent.append(Sent(1.0 + 0.033 * i, "audio", None, 4800))
    tl = demo.Timeline()
    tl.t0 = 0.5
    clips, note = demo._sent_clips(tl, SimpleNamespace(connector_mode="script", connector_options=options), record)
    wav = ScriptBehaviour.prepare(make_options("script", **options))
    assert [c.at_ms for c in clips] == pytest.approx([500, 533, 566, 599])
    assert [c.span_ms for c in clips] == pytest.approx([33, 33, 33, 33])  # the last one: like the others
    assert b"".join(bytes(c.pcm) for c in clips) == wav[: 4 * 4800]
    assert note.startswith("24 kHz") and "3\u00d7" in note


def test_the_demo_warns_but_does_not_fail_when_the_picture_breaks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    tl = demo.Timeline()
    demo._draw(tmp_path / "timeline.png", tl, None, None, None, [])  # a call that never started
    assert f"wrote {tmp_path / 'timeline.png'}" in capsys.readouterr().out

    def broken(*_: object) -> None:
        raise RuntimeError("no fonts")

    monkeypatch.setattr(tp, "draw_timeline", broken)
    demo._draw(tmp_path / "again.png", tl, None, None, None, [])
    cap = capsys.readouterr()
    assert "warning:" in cap.err and "RuntimeError: no fonts" in cap.err and "wrote" not in cap.out
