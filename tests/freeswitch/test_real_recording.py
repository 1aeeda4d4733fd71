"""Recording on a REAL FreeSWITCH (``FREESWITCH_BIN``): the rendered record_session with
RECORD_STEREO=true writes the caller on the left and what the caller heard on the right; the
recording belongs to the switch, so it goes on through a fork-server restart mid-call.

Both sides are compared with what was sent: the caller's speech as its μ-law leg carried it
(left), the bot's TTS at 8 kHz (right), in the telephone band, per 400 ms block at each block's
own alignment (a caller packet the switch's jitter buffer drops under load shifts everything
after it by a frame, which one alignment for the whole clip would count as noise), and as a
whole clip for the record.
"""

import asyncio
import json
import os
import time
import wave

import numpy as np
import pytest

BIN = os.environ.get("FREESWITCH_BIN")
pytestmark = pytest.mark.freeswitch  # skipped without FREESWITCH_BIN, failed under CI=true (conftest.py)
pytest.importorskip("ESL")

from fork_server.app import App  # noqa: E402
from testbed.audio_compare import best_aligned_snr, blockwise  # noqa: E402
from testbed.real_switch import RealStack  # noqa: E402
from testbed.sip_caller import ulaw_decode, ulaw_encode  # noqa: E402
from testbed.speech import BOT_ANSWER, CALLER_BARGEIN, CALLER_QUESTION, load_wav  # noqa: E402

SALES = "+15557654321"  # recording: true in config/voicefork.yaml


def bot(**script):
    opts = {"bargein": False, "rate": 24000, "speed": 3.0, "answer_delay_ms": 100, "mark_every_ms": 0}
    opts.update(script)
    return opts


async def until(pred, timeout=10.0, what="condition"):
    end = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


def read_stereo(path):
    with wave.open(str(path), "rb") as w:
        shape = (w.getnchannels(), w.getsampwidth(), w.getframerate())
        pcm = np.frombuffer(w.readframes(w.getnframes()), "<i2")
    assert shape == (2, 2, 8000), shape
    pcm = pcm.reshape(-1, 2).astype(np.float64)
    return pcm[:, 0], pcm[:, 1]


def blocks_ok(ref, got, least_db=30.0):
    """(median block SNR, share of blocks at least ``least_db``): ``ref`` found again in ``got``."""
    snrs = sorted(snr for _, snr in blockwise(ref, got))
    return snrs[len(snrs) // 2], sum(x >= least_db for x in snrs) / len(snrs)


def as_carried(clip):
    return ulaw_decode(ulaw_encode(load_wav(clip, 8000)))  # what the caller's PCMU leg carries


async def test_recording_has_the_caller_left_and_the_bot_right():
    async with RealStack(BIN, connector_options=bot()) as s:
        call = await s.place_call(SALES, "+15550001111", "Eve")
        record = await s.wait_call(0, timeout=10)
        said = as_carried(CALLER_QUESTION)
        call.say(said)
        await record.wait_mark("end", timeout=30)
        await until(lambda: not call.speaking, what="the caller to finish")
        await asyncio.sleep(0.3)
        call.hangup()
        await record.wait_stopped(timeout=5)
        await until(lambda: not s.app.calls, what="the call to end")
        path = record.stop_recording
        day = time.strftime("%Y-%m-%d")
        assert path is not None and path.startswith(f"{s.workdir}/recordings/{day}/sales-") and path.endswith(".wav")
        sidecar = path[:-4] + ".json"
        await until(lambda: os.path.exists(sidecar), what="the sidecar")
        await asyncio.sleep(0.5)  # the switch closes the WAV at hangup
        left, right = read_stereo(path)
        caller = np.frombuffer(said, "<i2").astype(np.float64)
        tts = np.frombuffer(load_wav(BOT_ANSWER, 8000), "<i2").astype(np.float64)
        snr = {
            "left vs caller": best_aligned_snr(caller, left, in_band=True, rate=8000),
            "right vs bot": best_aligned_snr(tts, right, in_band=True, rate=8000),
            "left vs bot": best_aligned_snr(tts, left, in_band=True, rate=8000),
            "right vs caller": best_aligned_snr(caller, right, in_band=True, rate=8000),
        }
        per_block = {"left vs caller": blocks_ok(caller, left), "right vs bot": blocks_ok(tts, right)}
        print(f"real FreeSWITCH recording, {len(left) / 8000:.2f} s stereo, whole clip: "
              + ", ".join(f"{k} {v:.1f} dB" for k, v in snr.items())
              + "; per 400 ms block: " + ", ".join(f"{k} median {m:.1f} dB, {100 * share:.0f} % >= 30 dB"
                                                  for k, (m, share) in per_block.items()))
        for median, share in per_block.values():
            assert median >= 30 and share >= 0.8, per_block
        assert snr["left vs bot"] < 3 and snr["right vs caller"] < 3, snr  # each party on its own side
        meta = json.loads(open(sidecar).read())
        assert (meta["route"], meta["from"], meta["to"], meta["recording"], meta["outcome"]) == (
            "sales", "+15550001111", SALES, path, "completed")
        assert meta["uuid"] in path and meta["marks"] == {"played": 1, "cleared": 0}


async def test_recording_survives_a_fork_server_restart_mid_call():
    async with RealStack(BIN, connector_options=bot(answer_delay_ms=60_000)) as s:
        call = await s.place_call(SALES)
        record = await s.wait_call(0, timeout=10)
        first, second = as_carried(CALLER_QUESTION), as_carried(CALLER_BARGEIN)
        call.say(first)
        await until(lambda: not call.speaking, timeout=20, what="the first clip")
        path = s.app.calls[record.start["call"]["uuid"]].session.caller.recording
        port = s.app.port
        await s.app.stop()  # the fork server goes away mid-call
        await until(lambda: record.closed_at is not None, what="the connector link to drop")
        s.app = App(s.config, env=s.env, listen_port=port)
        await s.app.start()
        assert await s.app.esl.wait_up(10)
        call.say(second)
        await until(lambda: not call.speaking, timeout=20, what="the second clip")
        await asyncio.sleep(0.3)
        call.hangup()
        await until(lambda: os.path.exists(path) and os.path.getsize(path) > 44, what="the recording")
        await asyncio.sleep(0.5)
        left, _ = read_stereo(path)
        refs = {name: np.frombuffer(clip, "<i2").astype(np.float64) for name, clip in (("before", first), ("after", second))}
        whole = {name: best_aligned_snr(ref, left, in_band=True, rate=8000) for name, ref in refs.items()}
        got = {name: blocks_ok(ref, left) for name, ref in refs.items()}
        print(f"real FreeSWITCH recording across a fork-server restart: {len(left) / 8000:.2f} s; caller "
              + ", ".join(f"{n}: whole {whole[n]:.1f} dB, block median {m:.1f} dB, {100 * share:.0f} % >= 30 dB"
                          for n, (m, share) in got.items()))
        for median, share in got.values():
            assert median >= 30 and share >= 0.8, got
        # In order, one after the other. (The file's length is not checked: on 1.10.12 it was
        # 3.38-3.56 s for 3.41 s of speech with silence before, between and after; not explained.)
        at = {n: int(np.argmax(np.correlate(left, ref[:4000], "valid"))) for n, ref in refs.items()}
        assert at["after"] >= at["before"] + len(refs["before"]) - 160, at
