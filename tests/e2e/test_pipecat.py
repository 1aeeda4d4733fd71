"""A real Pipecat bot (pipecat-ai 1.14.0, ``TwilioFrameSerializer``) takes calls through the
emulated FreeSWITCH: the bot code is Pipecat's Twilio shape, unchanged but for its REST
``base_url`` (testbed/pipecat_bot.py, run in the venv ``just pipecat-env`` makes).

Under CI=true a missing Pipecat venv fails the test (it must not skip there).
"""

import asyncio
import logging
import os
import time

import numpy as np
import pytest

pytest.importorskip("ESL")

from fork_server.dialects.twilio import call_sid, stream_sid  # noqa: E402
from testbed.speech import BOT_ANSWER, CALLER_BARGEIN, CALLER_QUESTION, load_wav  # noqa: E402
from testbed.stack import Stack  # noqa: E402
from testbed.pipecat_proc import PIPECAT_PY, start_bot  # noqa: E402
from testbed.twilio_peer import twilio_config  # noqa: E402

SUPPORT = "+15551234567"



def _need_pipecat() -> None:
    if PIPECAT_PY.exists():
        return
    msg = f"no Pipecat venv at {PIPECAT_PY}: run `just pipecat-env` (just test does)"
    if os.environ.get("CI") == "true":
        pytest.fail(msg)
    pytest.skip(msg)


@pytest.fixture
async def stack():
    _need_pipecat()
    s = Stack(twilio_config(), connector_url_override="ws://127.0.0.1:9/until-the-bot-is-up")
    await s.start()
    yield s
    try:
        s.switch.check()
        assert s.switch.errors == [], s.switch.errors
    finally:
        await s.close()


def _log_spectrogram(x: np.ndarray) -> np.ndarray:
    n = (len(x) - 256) // 80 + 1
    frames = np.lib.stride_tricks.sliding_window_view(x, 256)[::80][:n] * np.hanning(256)
    return np.log10(np.abs(np.fft.rfft(frames, axis=1)) ** 2 + 1.0)


def spectral_match(ref: np.ndarray, heard: np.ndarray, upto: int) -> float:
    """The worst, over 1 s windows of ``ref`` (up to sample ``upto``), of the correlation of its
    log spectrogram (32 ms frames, 10 ms hop) with ``heard``'s, each window aligned on its own
    (±400 ms from the last). Not a waveform SNR: Pipecat's resampler releases 8 kHz audio in
    137.5 ms bursts, and where the queue runs dry between two of them the file playback pads the
    partial frame with zeros (5-7 runs of 1-20 samples in 5 s; 40 runs, 95 ms, when every burst's
    pause padded it), which shifts the waveform by a few samples there; the spectrum does not care."""
    a, b = _log_spectrogram(ref[:upto]), _log_spectrogram(heard)
    worst, lag = 1.0, None
    for start in range(0, len(a) - 100 + 1, 100):
        win = a[start:start + 100].ravel()
        lags = range(-40, 41) if lag is None else range(lag - 40, lag + 41)
        best, best_lag = -1.0, 0
        for L in lags:
            if 0 <= start + L and start + L + 100 <= len(b):
                c = float(np.corrcoef(win, b[start + L:start + L + 100].ravel())[0, 1])
                if c > best:
                    best, best_lag = c, L
        worst, lag = min(worst, best), best_lag
    return worst


def zero_runs(pcm: np.ndarray, min_len: int = 8) -> tuple[int, float]:
    """Runs of at least ``min_len`` exact zero samples (padding; speech is never exactly 0 that long)."""
    z = np.r_[0, (pcm == 0).astype(np.int8), 0]
    d = np.diff(z)
    lengths = np.nonzero(d == -1)[0] - np.nonzero(d == 1)[0]
    long = lengths[lengths >= min_len]
    return len(long), float(long.sum()) / 8


def _rest_hangups(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if "REST hang-up from the bot" in r.getMessage()]


async def test_pipecat_bot_answers_and_hangs_up_through_the_rest_api(stack, caplog):
    caplog.set_level(logging.INFO, logger="voicefork")
    bot = await start_bot(stack)
    try:
        ch = stack.switch.place_call(SUPPORT, "+15550001111", "Alice", codec="PCMU")
        start = await bot.wait("start")
        assert start["transport"] == "twilio"  # Pipecat's runner recognised a Twilio stream
        assert (start["stream_id"], start["call_id"]) == (stream_sid(ch.uuid), call_sid(ch.uuid))
        assert (start["from_number"], start["to_number"]) == ("+15550001111", SUPPORT)
        ch.say(load_wav(CALLER_QUESTION, 8000))
        answer = await bot.wait("answer")
        await asyncio.wait_for(ch.hungup.wait(), 30)  # nobody but the bot ends this call
        assert _rest_hangups(caplog), "the call did not end through the REST hang-up"
        ref = np.frombuffer(load_wav(BOT_ANSWER, 8000), "<i2").astype(np.float64)
        heard = np.frombuffer(ch.ear.pcm(), "<i2").astype(np.float64)
        # Twilio's REST hang-up ends the call at once: what Pipecat sent last may be cut, as at Twilio.
        assert len(heard) >= len(ref) - 8000 * 0.4, f"heard {len(heard) / 8} ms of {len(ref) / 8} ms"
        upto = len(ref) - 8000 * 4 // 10
        match = spectral_match(ref, heard, upto)
        assert match >= 0.75, f"the answer as heard: worst 1 s window matches the WAV's spectrum at r={match:.2f}"
        other = np.frombuffer(load_wav(CALLER_QUESTION, 8000), "<i2").astype(np.float64)
        assert spectral_match(other, heard, min(upto, len(other))) < match - 0.2  # the measure tells speech apart
        runs, pad_ms = zero_runs(heard)
        first = ch.ear.frames[0].time - answer["t"]
        print(f"pipecat: answer pushed → first audio heard {1000 * first:.0f} ms; heard {len(heard) / 8:.0f} of "
              f"{len(ref) / 8:.0f} ms, spectrum r>={match:.2f}; {runs} zero runs ({pad_ms:.1f} ms, the WAV's own "
              f"2.1) inserted; hang-up by REST; holes {ch.ear.gaps()}")
        # A burst's partial frame waits for the next burst while a file plays (95.5 ms of zeros when
        # every pause padded it; 15.5 measured after); a loaded box may run dry a few times more.
        assert pad_ms <= 60, f"{runs} runs of zeros, {pad_ms:.1f} ms, in the answer"
        # Pipecat paces its bursts in real time: without the twilio playout lead the emulator, like
        # the real switch, had 2-3 one-frame holes in every answer (3 runs each way).
        assert ch.ear.gaps() == [], ch.ear.gaps()
        await bot.wait("ended", timeout=10)
    finally:
        await bot.stop()


async def test_pipecat_barge_in_clear_cuts_the_bot(stack, caplog):
    caplog.set_level(logging.INFO, logger="voicefork")
    bot = await start_bot(stack, "--bargein", "--listen-ms", "1500")  # answers 0.5 s after the question
    try:
        ch = stack.switch.place_call(SUPPORT)
        await bot.wait("start")
        ch.say(load_wav(CALLER_QUESTION, 8000)[: 8000 * 2])  # 1 s
        await bot.wait("answer")
        await asyncio.sleep(0.2)
        end = time.monotonic() + 10
        while len(ch.ear.frames) < 50:  # 1 s of the answer heard
            assert time.monotonic() < end and not bot.of("interrupted"), "the answer was not heard"
            await asyncio.sleep(0.02)
        ch.say(load_wav(CALLER_BARGEIN, 8000))
        cut = await bot.wait("interrupted")
        await asyncio.wait_for(ch.hungup.wait(), 10)
        last = max(f.time for f in ch.ear.frames)
        heard_ms = len(ch.ear.frames) * 20
        print(f"pipecat barge-in: last bot audio {1000 * (last - cut['t']):.0f} ms after Pipecat's interruption; "
              f"heard {heard_ms} of {len(load_wav(BOT_ANSWER, 8000)) // 16} ms")
        assert last - cut["t"] < 0.3, f"bot audio went on {1000 * (last - cut['t']):.0f} ms after the interruption"
        assert heard_ms < 4000
        assert _rest_hangups(caplog)
        end = time.monotonic() + 5
        while not (ended := [r.getMessage() for r in caplog.records if "call ended:" in r.getMessage()]):
            assert time.monotonic() < end, "the call did not end in the fork server"
            await asyncio.sleep(0.05)
        assert ended and "barge_ins=1" in ended[0], ended  # Pipecat's interruption came as a Twilio clear
    finally:
        await bot.stop()
