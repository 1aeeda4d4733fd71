"""Twilio-speaking bots on a REAL FreeSWITCH (mod_audio_fork, SIP caller over G.711 RTP).

A test-driven Twilio peer (marks, clear, REST hang-up) and the real Pipecat bot
(testbed/pipecat_bot.py). μ-law limits what the caller heard to ~38 dB, twice over when
the bot's audio is μ-law too.
"""

import asyncio
import logging
import os
import time

import numpy as np
import pytest

BIN = os.environ.get("FREESWITCH_BIN")
pytestmark = pytest.mark.freeswitch  # skipped without FREESWITCH_BIN, failed under CI=true (conftest.py)
pytest.importorskip("ESL")

from fork_server.dialects.twilio import call_sid, stream_sid  # noqa: E402
from testbed.audio_compare import best_aligned_snr  # noqa: E402
from testbed.pipecat_proc import PIPECAT_PY, start_bot  # noqa: E402
from testbed.real_switch import RealStack  # noqa: E402
from testbed.sip_caller import ulaw_decode, ulaw_encode  # noqa: E402
from testbed.speech import BOT_ANSWER, CALLER_QUESTION, load_wav  # noqa: E402
from testbed.twilio_peer import TEST_ACCOUNT_SID as ACCOUNT, TwilioPeer, rest_hang_up, twilio_config  # noqa: E402

SUPPORT = "+15551234567"
CUT_BOUND_S = 0.4  # as test_real_calls: a behaviour check; the 40 ms target is the bench's


async def until(pred, timeout=10.0, what="condition"):
    end = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


async def test_twilio_stream_answer_marks_clear_and_rest_hang_up_on_a_real_switch():
    peer = TwilioPeer()
    await peer.start()
    try:
        async with RealStack(BIN, twilio_config(), connector_url_override=peer.url) as s:
            call = await s.place_call(SUPPORT, "+15550001111", "Alice")
            st = await peer.wait_stream(timeout=10)
            (live,) = s.app.calls.values()
            assert st.stream_sid == stream_sid(live.uuid) and st.start["start"]["callSid"] == call_sid(live.uuid)
            assert st.start["start"]["customParameters"]["from_number"] == "+15550001111"
            call.say(ulaw_decode(ulaw_encode(load_wav(CALLER_QUESTION, 8000))))
            await st.wait(lambda st: len(st.of("media")) >= 100, what="2 s of caller media")

            answer = load_wav(BOT_ANSWER, 8000)
            half = len(answer) // 2 // 320 * 320
            await st.media(answer[:half], chunk_ms=100)
            await st.mark("first-half")
            await st.wait(lambda st: st.marks_back(), timeout=20, what="the first mark back")
            await asyncio.sleep(0.3)
            heard = np.frombuffer(call.ear.pcm(), "<i2").astype(np.float64)
            snr = best_aligned_snr(np.frombuffer(answer[:half], "<i2").astype(np.float64), heard, in_band=True, rate=8000)
            assert snr >= 30, f"first half heard at {snr:.1f} dB"
            assert call.ear.gaps() == [], call.ear.gaps()

            await st.media(answer[half:], chunk_ms=100)
            await st.mark("second-half")
            n0 = len(call.ear.packets)
            await until(lambda: len(call.ear.packets) >= n0 + 40, what="0.8 s more of the answer")
            await st.clear()
            clear_at = st.clears_sent[0]
            await st.wait(lambda st: len(st.marks_back()) == 2, timeout=5, what="the cleared mark back")
            await asyncio.sleep(CUT_BOUND_S + 0.6)  # a clear that did nothing plays on through it
            late = [p for p in call.ear.packets if p.time > clear_at + CUT_BOUND_S]
            print(f"real FreeSWITCH twilio: first half heard at {snr:.1f} dB; after clear "
                  f"{1000 * (max(p.time for p in call.ear.packets) - clear_at):.0f} ms of RTP")
            assert late == [], f"{len(late)} packets more than {1000 * CUT_BOUND_S:.0f} ms after clear"

            status, body = await rest_hang_up(s.fork_port, ACCOUNT, s.env["TWILIO_AUTH_TOKEN"], st.start["start"]["callSid"])
            assert status == 200 and body["status"] == "completed"
            await asyncio.wait_for(call.hungup.wait(), 5)
            assert call.bye_from_switch
            await st.wait(lambda st: st.closed, what="the stream to close")
            assert st.of("stop")[0]["stop"]["callSid"] == call_sid(live.uuid)
            await until(lambda: not s.app.calls and not s.spool_files(), what="cleanup")
    finally:
        await peer.close()


async def test_pipecat_bot_takes_a_real_call(caplog):
    if not PIPECAT_PY.exists():
        pytest.fail(f"no Pipecat venv at {PIPECAT_PY}: run `just pipecat-env`") if os.environ.get("CI") == "true" \
            else pytest.skip("no Pipecat venv: just pipecat-env")
    caplog.set_level(logging.INFO, logger="voicefork")
    async with RealStack(BIN, twilio_config(), connector_url_override="ws://127.0.0.1:9/until-the-bot-is-up") as s:
        bot = await start_bot(s)
        try:
            call = await s.place_call(SUPPORT, "+15550001111", "Alice")
            start = await bot.wait("start")
            assert start["transport"] == "twilio" and start["from_number"] == "+15550001111"
            call.say(ulaw_decode(ulaw_encode(load_wav(CALLER_QUESTION, 8000))))
            answer = await bot.wait("answer")
            await asyncio.wait_for(call.hungup.wait(), 30)
            assert call.bye_from_switch  # the switch ended it: the bot's REST hang-up
            assert any("REST hang-up from the bot" in r.getMessage() for r in caplog.records)
            heard_ms = len(call.ear.packets) * 20
            first = call.ear.packets[0].time - answer["t"]
            print(f"real FreeSWITCH + Pipecat: answer pushed → first RTP {1000 * first:.0f} ms; heard {heard_ms} of "
                  f"{len(load_wav(BOT_ANSWER, 8000)) // 16} ms; holes {call.ear.gaps()}")
            assert heard_ms >= len(load_wav(BOT_ANSWER, 8000)) // 16 - 400
            # Pipecat paces its bursts in real time: with no playout lead each file ended before
            # the next burst came (1-2 frame holes in every run); 60 ms gave none in 5 runs.
            assert call.ear.gaps() == [], call.ear.gaps()
            await until(lambda: not s.app.calls and not s.spool_files(), what="cleanup")
        finally:
            await bot.stop()
