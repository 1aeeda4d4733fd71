"""Whole calls through the emulated FreeSWITCH with a bot that speaks Twilio Media Streams.

The fork server runs the twilio dialect for the support route's connector; the bot
(:class:`testbed.twilio_peer.TwilioPeer`) is driven by the test: it answers with the bot
WAV as μ-law media, asks for marks, clears on barge-in and hangs up through Twilio's REST
API. What the caller heard is read from the emulated ear.
"""

import asyncio
import time

import numpy as np
import pytest

pytest.importorskip("ESL")

from fork_server.dialects.twilio import call_sid, stream_sid  # noqa: E402
from testbed.audio_compare import best_aligned_snr  # noqa: E402
from testbed.speech import BOT_ANSWER, CALLER_QUESTION, load_wav  # noqa: E402
from testbed.stack import Stack  # noqa: E402
from testbed.twilio_peer import TEST_ACCOUNT_SID as ACCOUNT, TwilioPeer, rest_hang_up, twilio_config  # noqa: E402

SUPPORT = "+15551234567"


@pytest.fixture
async def peer():
    p = TwilioPeer()
    await p.start()
    yield p
    await p.close()


@pytest.fixture
async def stack(peer):
    s = Stack(twilio_config(), connector_url_override=peer.url)
    await s.start()
    yield s
    try:
        s.switch.check()
        assert s.switch.errors == [], s.switch.errors
    finally:
        await s.close()


async def until(pred, timeout=10.0, what="condition"):
    end = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


async def test_the_bot_gets_a_twilio_stream_and_the_caller_hears_its_answer(stack, peer):
    ch = stack.switch.place_call(SUPPORT, "+15550001111", "Alice", codec="PCMU")
    s = await peer.wait_stream()
    connected, start = s.got[0][1], s.got[1][1]
    assert connected == {"event": "connected", "protocol": "Call", "version": "1.0.0"}
    assert start["streamSid"] == stream_sid(ch.uuid) and start["start"]["callSid"] == call_sid(ch.uuid)
    assert start["start"]["accountSid"] == ACCOUNT
    params = start["start"]["customParameters"]
    assert params["from_number"] == "+15550001111" and params["to_number"] == SUPPORT
    assert params["caller_name"] == "Alice" and params["queue"] == "tier1"  # the route's metadata

    # caller → bot: μ-law at 8 kHz, 20 ms a message, counters as strings
    said = load_wav(CALLER_QUESTION, 8000)[: 8000 * 2 * 2]  # 2 s
    ch.say(said)
    await s.wait(lambda s: len(s.of("media")) * 320 >= len(said) + 3200, what="the question at the bot")
    media = s.of("media")
    assert [m["media"]["chunk"] for m in media[:3]] == ["1", "2", "3"]
    assert [int(m["media"]["timestamp"]) for m in media[:3]] == [0, 20, 40]
    seqs = [int(m["sequenceNumber"]) for _, m in s.got[1:]]
    assert seqs == list(range(1, len(seqs) + 1))
    got = np.frombuffer(s.caller_pcm(), "<i2").astype(np.float64)
    snr = best_aligned_snr(np.frombuffer(said, "<i2").astype(np.float64), got, in_band=True, rate=8000)
    assert snr >= 30, f"caller audio at the bot: {snr:.1f} dB (one μ-law pass: ~38 dB)"

    # bot → caller: the answer as μ-law media, a mark after it
    answer = load_wav(BOT_ANSWER, 8000)
    await s.media(answer, chunk_ms=100)
    await s.mark("answer-end")
    await s.wait(lambda s: ("answer-end" in [n for _, n in s.marks_back()]), timeout=30, what="the mark back")
    heard = np.frombuffer(ch.ear.pcm(), "<i2").astype(np.float64)
    ref = np.frombuffer(answer, "<i2").astype(np.float64)
    snr = best_aligned_snr(ref, heard, in_band=True, rate=8000)
    assert snr >= 30, f"bot audio heard: {snr:.1f} dB"
    assert abs(len(heard) - len(ref)) <= 2 * 160 + 8000 * 0.080
    mark_at = dict((n, t) for t, n in s.marks_back())["answer-end"]
    assert mark_at >= ch.ear.frames[-1].time - 0.05  # reported once its audio was heard
    print(f"twilio: bot answer heard at {snr:.1f} dB; first media sent → first audio heard "
          f"{1000 * (ch.ear.frames[0].time - s.media_sent[0]):.0f} ms")
    ch.hangup()
    await s.wait(lambda s: s.closed, what="the stream to close")
    stop = s.of("stop")[0]
    assert stop["stop"] == {"accountSid": ACCOUNT, "callSid": call_sid(ch.uuid)}


async def test_clear_cuts_the_bot_and_its_marks_come_back(stack, peer):
    ch = stack.switch.place_call(SUPPORT)
    s = await peer.wait_stream()
    answer = load_wav(BOT_ANSWER, 8000)
    await s.media(answer[: len(answer) // 2], chunk_ms=20)
    await s.mark("first-half")
    await s.media(answer[len(answer) // 2:], chunk_ms=20)
    await s.mark("second-half")
    await until(lambda: len(ch.ear.frames) >= 40, what="0.8 s of bot speech")
    await s.clear()
    clear_at = s.clears_sent[0]
    await s.wait(lambda s: len(s.marks_back()) == 2, timeout=5, what="both marks back")
    assert {n for _, n in s.marks_back()} == {"first-half", "second-half"}  # played or dropped: both answered
    assert all(t >= clear_at for t, _ in s.marks_back())  # neither had played yet (4.4 s answer)
    await asyncio.sleep(0.5)
    late = [f for f in ch.ear.frames if f.time > clear_at + 0.060]
    assert late == [], f"{len(late)} frames heard more than 60 ms after clear"
    heard_ms = len(ch.ear.frames) * 20
    assert heard_ms < len(answer) / 16 - 1000, "clear did not cut the answer"
    print(f"twilio barge-in: last bot audio {1000 * (max(f.time for f in ch.ear.frames) - clear_at):.0f} ms after "
          f"clear; heard {heard_ms} of {len(answer) // 16} ms")
    ch.hangup()


async def test_rest_hang_up_ends_the_sip_call(stack, peer):
    ch = stack.switch.place_call(SUPPORT)
    s = await peer.wait_stream()
    token = stack.env["TWILIO_AUTH_TOKEN"]
    call = s.start["start"]["callSid"]
    assert (await rest_hang_up(stack.fork_port, ACCOUNT, "wrong", call))[0] == 401
    assert not ch.hungup.is_set()
    status, body = await rest_hang_up(stack.fork_port, ACCOUNT, token, call, body="Status=completed&Twiml=x")
    assert status == 400 and "Twiml" in body["message"] and not ch.hungup.is_set()
    status, body = await rest_hang_up(stack.fork_port, ACCOUNT, token, call)
    assert status == 200 and body["sid"] == call and body["status"] == "completed"
    await asyncio.wait_for(ch.hungup.wait(), 5)
    await s.wait(lambda s: s.closed, what="the stream to close")
    assert s.of("stop")
    # Once the fork server has let the call go (a moment after the stream closed; until then a
    # second hang-up is answered as the first): Twilio's "already ended" (Pipecat logs it at debug).
    end = time.monotonic() + 5
    while (answer := await rest_hang_up(stack.fork_port, ACCOUNT, token, call))[0] != 404:
        assert answer[0] == 200 and time.monotonic() < end, answer
        await asyncio.sleep(0.05)
    assert answer[1]["code"] == 20404


async def test_dtmf_reaches_the_bot_and_junk_is_counted_not_fatal(stack, peer):
    ch = stack.switch.place_call(SUPPORT)
    s = await peer.wait_stream()
    ch.press("5", 100)
    await s.wait(lambda s: s.of("dtmf"), what="dtmf")
    assert s.of("dtmf")[0]["dtmf"] == {"track": "inbound_track", "digit": "5"}
    await s.send_raw('{"event":"hangup"}')
    await s.send_raw("not json")
    await s.mark("still-alive")
    await s.wait(lambda s: s.marks_back(), what="the mark after junk")
    call = stack.app.calls[ch.uuid]
    assert call.session.errors.get("connector_malformed") == 2
    ch.hangup()
