"""Whole calls with ``playback.transport: stream`` on the emulated switch running the jambonz
mod_audio_fork (testbed/freeswitch/jambonz.py, modelled on what the real module did on 1.10.12).
The same calls run on the real switch in tests/freeswitch/test_real_calls.py."""

import asyncio
import time

import numpy as np
import pytest
import soxr

pytest.importorskip("ESL")

from testbed.audio_compare import best_aligned_snr, blockwise  # noqa: E402
from testbed.speech import BOT_ANSWER, CALLER_BARGEIN, CALLER_QUESTION, load_wav  # noqa: E402
from testbed.stack import Stack  # noqa: E402

SUPPORT, SALES = "+15551234567", "+15557654321"
STREAM = {"playback": {"transport": "stream"}, "fork_module": "jambonz"}


def bot(**script):
    opts = {"bargein": False, "rate": 24000, "speed": 3.0, "answer_delay_ms": 100}
    opts.update(script)
    return opts


async def until(pred, timeout=10.0, what="condition"):
    end = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


def spoken(ch):
    return [f for f in ch.ear.frames if f.stream]


async def test_the_caller_hears_the_whole_answer_in_order_and_no_file_is_written():
    async with Stack(connector_options=bot(mark_every_ms=1000), **STREAM) as s:
        ch = s.switch.place_call(SUPPORT)
        record = await s.connector.wait_call(0, timeout=5)
        await record.wait_mark("end", timeout=20)
        heard = np.frombuffer(b"".join(f.pcm for f in ch.ear.frames), "<i2").astype(np.float64)
        ref = np.frombuffer(load_wav(BOT_ANSWER, 8000), "<i2").astype(np.float64)
        blocks = blockwise(ref, heard)
        lags, snrs = [lag for lag, _ in blocks], sorted(snr for _, snr in blocks)
        assert max(lags) - min(lags) <= 16, lags  # in order: one sample per module mark at most
        assert snrs[len(snrs) // 2] >= 50, snrs
        assert all(m.status == "played" for m in record.marks) and record.mark_status("end") == "played"
        assert not s.spool_files() and not [a for _, a in s.switch.api_log if a.startswith("uuid_break")]
        first = spoken(ch)[0].time - record.sent_of("audio")[0].t
        print(f"stream: first TTS byte sent → first audio heard: {1000 * first:.0f} ms; per-block SNR median "
              f"{snrs[len(snrs) // 2]:.1f} dB; lags {min(lags)}..{max(lags)}")
        s.switch.check()


async def test_barge_in_silences_the_bot_within_60_ms_and_clears_marks():
    async with Stack(connector_options=bot(bargein=True, speed=1.5, mark_every_ms=500), **STREAM) as s:
        ch = s.switch.place_call(SUPPORT)
        record = await s.connector.wait_call(0, timeout=5)
        await until(lambda: len(spoken(ch)) >= 40, what="0.8 s of bot speech")
        ch.say(load_wav(CALLER_BARGEIN, 8000))
        await until(lambda: record.clears_sent, what="clear")
        clear_at = record.clears_sent[0]
        await asyncio.sleep(0.5)
        late = [f for f in spoken(ch) if f.time > clear_at + 0.060]
        assert late == [], f"{len(late)} frames of bot audio more than 60 ms after clear"
        assert [m for m in record.marks if m.status == "cleared"], record.marks
        s.switch.check()


async def test_the_ai_hears_every_caller_frame_while_the_bot_talks():
    async with Stack(connector_options=bot(mark_every_ms=0), **STREAM) as s:
        ch = s.switch.place_call(SALES)
        record = await s.connector.wait_call(0, timeout=5)
        said = load_wav(CALLER_QUESTION, 8000) * 2
        await until(lambda: record.sent_of("audio"), what="the bot to start")
        ch.say(said)
        await until(lambda: spoken(ch) and record.frame_count * 20 >= len(said) / 16 + 1000, timeout=20,
                    what="the caller's speech at the connector")
        assert ch.silenced_frames == 0  # no playback start ever flushed the caller's audio
        ch.hangup()
        await record.wait_stopped(timeout=5)
        got = np.frombuffer(record.audio(), "<i2")
        ref = soxr.resample(np.frombuffer(said, "<i2").astype(np.float64), 8000, 16000, "VHQ")
        assert best_aligned_snr(ref, got, in_band=True) >= 80
        s.switch.check()


async def test_a_switch_without_the_jambonz_module_plays_files_instead(caplog):
    # The drachtio module takes the stream start's three extra arguments for metadata (measured):
    # the fork server notices, logs it, and plays that call's speech as files.
    caplog.set_level("ERROR", logger="voicefork")
    async with Stack(connector_options=bot(mark_every_ms=0), playback={"transport": "stream"}) as s:
        ch = s.switch.place_call(SUPPORT)
        record = await s.connector.wait_call(0, timeout=5)
        await record.wait_mark("end", timeout=20)
        assert len(ch.ear.frames) * 20 >= 4000 and ch.ear.gaps() == []
        assert any("not the jambonz module" in r.getMessage() for r in caplog.records)
