"""The end-to-end calls of tests/e2e against a REAL FreeSWITCH with mod_audio_fork.

Run on the FreeSWITCH ``FREESWITCH_BIN`` names (``just freeswitch`` builds it, with mod_audio_fork,
mod_sofia, mod_event_socket, mod_commands, mod_dptools, mod_dialplan_xml, mod_sndfile,
mod_native_file, mod_tone_stream); skipped without one, and failed under ``CI=true`` (conftest.py). The switch runs the RENDERED config (testbed.real_switch); the caller is a SIP user
agent sending and receiving G.711 μ-law RTP (testbed.sip_caller), so what it heard is read
from RTP as REF measured it: a hole is a timestamp jump. μ-law coding limits any SNR of what
the caller heard to about 38 dB, so the audio thresholds here are lower than the emulator's.
"""

import asyncio
import json
import os
import time

import numpy as np
import pytest
import soxr

BIN = os.environ.get("FREESWITCH_BIN")
pytestmark = pytest.mark.freeswitch  # skipped without FREESWITCH_BIN, failed under CI=true (conftest.py)
pytest.importorskip("ESL")

from testbed.audio_compare import best_aligned_snr, blockwise, lag_of  # noqa: E402
from testbed.real_switch import RealStack  # noqa: E402
from testbed.sip_caller import ulaw_decode, ulaw_encode  # noqa: E402
from testbed.speech import BOT_ANSWER, CALLER_BARGEIN, CALLER_QUESTION, load_wav, sentences_with_pauses  # noqa: E402

SUPPORT, SALES, UK = "+15551234567", "+15557654321", "+442071234567"  # rate auto, 8k and 16k in config/voicefork.yaml

# Timing here is a behaviour check, not the target: the targets (first TTS audio <= 40 ms, the
# bot silent <= 40 ms after clear) are `just bench --switch real`'s, measured over many calls.
# These bounds still fail the designs they guard against: a playback that waits for a whole
# segment (80 ms first, then up to 2 s) or a tick before the first byte goes out, and a clear
# that does not stop the bot (the answer's queued seconds play on through the window looked at).
# One call on a loaded box (a CPU hog on the second core) measured 220 ms to first audio and
# the last packet 359 ms after clear; unloaded: 20-50 ms and 20-40 ms.
FIRST_AUDIO_BOUND_S = 0.5
CUT_BOUND_S = 0.4


def bot(**script):
    opts = {"bargein": False, "rate": 24000, "speed": 3.0, "answer_delay_ms": 100, "mark_every_ms": 0}
    opts.update(script)
    return opts


async def until(pred, timeout=10.0, what="condition"):
    end = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


def connector_lead_ms(record, rate=24000):
    """How far ahead of real time the connector's TTS stayed at its worst (ms): the audio it had
    sent with each message minus the time since its first. Under 0 the connector fell behind."""
    audio = record.sent_of("audio")
    done, least = 0.0, float("inf")
    for a in audio:
        done += a.nbytes / 2 / rate * 1000
        least = min(least, done - 1000 * (a.t - audio[0].t))
    return least


async def cleaned_up(s):
    await until(lambda: not s.app.calls and not s.spool_files(), what="cleanup")


@pytest.mark.parametrize("number,fork_rate,least_db", [
    (SUPPORT, 8000, 85),  # rate: auto on a PCMU call: forked at 8k, resampled by our FIR
    (SALES, 8000, 85),  # rate: 8k
    (UK, 16000, 30),  # rate: 16k: FreeSWITCH's own 8k->16k resampler gives ~37 dB (REF)
])
async def test_what_the_ai_hears_is_what_the_caller_said(number, fork_rate, least_db):
    async with RealStack(BIN, connector_options=bot(answer_delay_ms=60_000)) as s:
        call = await s.place_call(number, "+15550001111", "Alice")
        record = await s.wait_call(0, timeout=10)
        assert record.start["call"]["from"] == "+15550001111" and record.start["call"]["caller_name"] == "Alice"
        (live,) = s.app.calls.values()
        assert live.session.settings.fork_rate == fork_rate
        said = ulaw_decode(ulaw_encode(load_wav(CALLER_QUESTION, 8000)))  # what the caller's codec carries
        call.say(said)
        await until(lambda: not call.speaking, what="the caller to finish")
        await asyncio.sleep(0.5)
        call.hangup()
        await record.wait_stopped(timeout=5)
        got = np.frombuffer(record.audio(), "<i2")
        ref = soxr.resample(np.frombuffer(said, "<i2").astype(np.float64), 8000, 16000, "VHQ")
        snr = best_aligned_snr(ref, got, in_band=True)
        print(f"real FreeSWITCH, {fork_rate} Hz fork: connector audio vs reference resample: {snr:.1f} dB")
        # 8k: FreeSWITCH forks the decoded PCMU as is, so this is our FIR against soxr VHQ. Before
        # the jitter buffer (rendered dialplan) one run in four gave 38-51 dB: the return to park's
        # RTP flush silenced the first 1-2 frames of the caller's speech when it began just then.
        assert snr >= least_db, f"{snr:.1f} dB"
        await cleaned_up(s)


async def test_sendmsg_caller_hears_all_tts_in_order_with_no_gap():
    async with RealStack(BIN, connector_options=bot(mark_every_ms=1000)) as s:
        call = await s.place_call(SUPPORT)
        record = await s.wait_call(0, timeout=10)
        await record.wait_mark("end", timeout=30)
        await asyncio.sleep(0.3)
        assert call.ear.gaps() == [], call.ear.gaps()
        heard = np.frombuffer(call.ear.pcm(), "<i2").astype(np.float64)
        ref = np.frombuffer(load_wav(BOT_ANSWER, 8000), "<i2").astype(np.float64)
        snr = best_aligned_snr(ref, heard, in_band=True, rate=8000)
        latency = call.ear.packets[0].time - record.sent_of("audio")[0].t
        print(f"real FreeSWITCH sendmsg: {len(call.ear.packets)} packets, 0 holes, {len(call.ear.resyncs())} timestamp resyncs, heard vs sent {snr:.1f} dB, "
              f"first TTS byte sent → first RTP at the caller {1000 * latency:.0f} ms")
        assert snr >= 30, f"{snr:.1f} dB"
        assert latency <= FIRST_AUDIO_BOUND_S, f"{1000 * latency:.0f} ms"
        assert all(m.status == "played" for m in record.marks) and record.mark_status("end") == "played"
        call.hangup()
        await cleaned_up(s)


async def test_broadcast_keeps_the_tts_timing_within_a_frame(tmp_path):
    wav, starts = sentences_with_pauses(tmp_path / "answer.wav")
    async with RealStack(BIN, connector_options=bot(wav=str(wav)), playback={"command": "uuid_broadcast"}) as s:
        call = await s.place_call(SUPPORT)
        record = await s.wait_call(0, timeout=10)
        await record.wait_mark("end", timeout=30)
        await asyncio.sleep(0.3)
        # REF: the RTP timestamp runs on through holes, so the timeline keeps real timing.
        heard = np.frombuffer(call.ear.timeline(), "<i2").astype(np.float64)
        ref = np.frombuffer(load_wav(wav, 8000), "<i2").astype(np.float64)
        starts8 = [x // 3 for x in starts]
        ends8 = starts8[1:] + [len(ref)]
        first = lag_of(ref[starts8[0] : ends8[0]], heard, 0, search=len(heard) // 2)
        offsets = [lag_of(ref[a:b], heard, first + a) - (first + a) for a, b in zip(starts8, ends8)]
        print(f"real FreeSWITCH uuid_broadcast: holes {call.ear.gaps()}, resyncs {call.ear.resyncs()}; "
              f"sentence onsets off by {[round(o / 8, 1) for o in offsets]} ms; first TTS → first RTP "
              f"{1000 * (call.ear.packets[0].time - record.sent[0].t):.0f} ms")
        # REF: a 5-frame hole before each later file; cut at the two pauses only, they fall
        # inside the pauses, so the sentences keep their place:
        assert sum(n for _, n in call.ear.gaps() + call.ear.resyncs()) >= 2 * 5
        assert max(abs(o) for o in offsets) <= 160, offsets
        call.hangup()
        await cleaned_up(s)


async def test_barge_in_silences_the_bot_and_clears_marks():
    async with RealStack(BIN, connector_options=bot(bargein=True, speed=1.5, mark_every_ms=500)) as s:
        call = await s.place_call(SUPPORT)
        record = await s.wait_call(0, timeout=10)
        await until(lambda: len(call.ear.packets) >= 40, what="0.8 s of bot speech")
        call.say(ulaw_decode(ulaw_encode(load_wav(CALLER_BARGEIN, 8000))))
        await until(lambda: record.clears_sent, what="clear")
        clear_at = record.clears_sent[0]
        await asyncio.sleep(CUT_BOUND_S + 0.6)  # a clear that did nothing plays on through it
        late = [p for p in call.ear.packets if p.time > clear_at + CUT_BOUND_S]
        last = max(p.time for p in call.ear.packets)
        print(f"real FreeSWITCH barge-in: last RTP {1000 * (last - clear_at):.0f} ms after clear")
        assert late == [], f"{len(late)} packets more than {1000 * CUT_BOUND_S:.0f} ms after clear"
        assert [m for m in record.marks if m.status == "cleared"], record.marks
        call.hangup()
        await cleaned_up(s)


async def test_bot_hangs_up_after_its_answer_has_played():
    async with RealStack(BIN, connector_options=bot(hangup_after_playback=True)) as s:
        call = await s.place_call(SUPPORT)
        record = await s.wait_call(0, timeout=10)
        await asyncio.wait_for(call.hungup.wait(), 30)
        assert call.bye_from_switch and record.mark_status("end") == "played"
        assert call.ear.gaps() == [] and len(call.ear.packets) * 20 >= 4000
        await record.wait_stopped(timeout=5)
        assert record.stop_reason == "connector_hangup"
        await cleaned_up(s)


async def test_bot_dtmf_reaches_the_caller():
    async with RealStack(BIN, connector_options=bot(send_dtmf="42", hangup_after_playback=True)) as s:
        call = await s.place_call(SUPPORT)
        await asyncio.wait_for(call.hungup.wait(), 30)
        assert "".join(d for d, _ in call.dtmf_heard) == "42", call.dtmf_heard
        await cleaned_up(s)


async def test_caller_dtmf_and_hangup_reach_the_connector():
    async with RealStack(BIN, connector_options=bot(answer_delay_ms=60_000)) as s:
        call = await s.place_call(SUPPORT)
        record = await s.wait_call(0, timeout=10)
        await record.wait_until(lambda r: r.frame_count > 5)
        call.press("7", 120)
        await record.wait_until(lambda r: r.dtmf, timeout=5)
        print(f"real FreeSWITCH DTMF: {[(d.digit, d.duration_ms) for d in record.dtmf]}")
        assert record.dtmf[0].digit == "7"
        call.hangup()
        await record.wait_stopped(timeout=5)
        assert record.stop_reason == "hangup" and record.close_code == 1000
        await cleaned_up(s)


async def test_unreachable_connector_runs_the_route_fallback():
    async with RealStack(BIN, connector_url_override="ws://127.0.0.1:9/dead") as s:
        a = await s.place_call(SUPPORT)  # fallback: hangup
        b = await s.place_call(SALES)  # fallback: transfer to 1000
        t0 = time.monotonic()
        await asyncio.wait_for(a.hungup.wait(), 5)
        print(f"real FreeSWITCH fallback: hangup {1000 * (time.monotonic() - t0):.0f} ms after answer")

        async def dests():
            rows = json.loads(await s.app.esl.api("show channels as json")).get("rows") or []
            return [r.get("dest") for r in rows]

        end = time.monotonic() + 5
        while "1000" not in await dests():
            assert time.monotonic() < end, await dests()
            await asyncio.sleep(0.1)
        b.hangup()
        await cleaned_up(s)


# ------------------------------------------------------------------ playback.transport: stream (the jambonz module)

STREAM = {"playback": {"transport": "stream"}, "fork_module": "jambonz"}


async def test_stream_caller_hears_all_tts_in_order_with_no_gap():
    async with RealStack(BIN, connector_options=bot(mark_every_ms=1000), **STREAM) as s:
        call = await s.place_call(SUPPORT)
        record = await s.wait_call(0, timeout=10)
        await record.wait_mark("end", timeout=30)
        await asyncio.sleep(0.3)
        # The channel writes frames all the time (send_silence_when_idle): the bot's speech is the
        # loud part of what the caller heard, and it must be whole, in order, with no hole. A loaded
        # switch sometimes moves its RTP clock a frame while packets keep coming every 20 ms (a
        # resync, see RtpEar.gaps): no audio is missing, so it must not count as a slip.
        heard = np.frombuffer(call.ear.timeline(close_resyncs=True), "<i2").astype(np.float64)
        ref = np.frombuffer(load_wav(BOT_ANSWER, 8000), "<i2").astype(np.float64)
        blocks = blockwise(ref, heard)  # the module slides the audio one sample per mark it is given
        lags, snrs = [lag for lag, _ in blocks], sorted(snr for _, snr in blocks)
        loud = [p for p in call.ear.packets if np.abs(np.frombuffer(p.pcm, "<i2")).max() > 300]
        first_loud = loud[0].time - record.sent_of("audio")[0].t
        print(f"real FreeSWITCH stream: {len(call.ear.packets)} packets, holes {call.ear.gaps()}, "
              f"resyncs {call.ear.resyncs()}, connector's least lead on real time {connector_lead_ms(record):.0f} ms "
              f"(under 0 it fell behind real time), heard vs sent per "
              f"400 ms block: median {snrs[len(snrs) // 2]:.1f} dB, worst {snrs[0]:.1f} dB, lag {min(lags)}..{max(lags)} "
              f"samples; first TTS byte sent → first speech at the caller {1000 * first_loud:.0f} ms; "
              f"marks {[(m.name, m.status) for m in record.marks]}")
        assert call.ear.gaps() == [] and max(lags) - min(lags) <= 16, lags  # in order, nothing lost or added
        assert snrs[len(snrs) // 2] >= 30, snrs  # μ-law bounds it at ~38 dB
        assert all(m.status == "played" for m in record.marks) and record.mark_status("end") == "played"
        assert not s.spool_files()  # no file was ever written
        call.hangup()
        await cleaned_up(s)


async def test_stream_barge_in_silences_the_bot_and_clears_marks():
    async with RealStack(BIN, connector_options=bot(bargein=True, speed=1.5, mark_every_ms=500), **STREAM) as s:
        call = await s.place_call(SUPPORT)
        record = await s.wait_call(0, timeout=10)
        loud = lambda: [p for p in call.ear.packets if np.abs(np.frombuffer(p.pcm, "<i2")).max() > 300]  # noqa: E731
        await until(lambda: len(loud()) >= 40, what="0.8 s of bot speech")
        call.say(ulaw_decode(ulaw_encode(load_wav(CALLER_BARGEIN, 8000))))
        await until(lambda: record.clears_sent, what="clear")
        clear_at = record.clears_sent[0]
        await asyncio.sleep(CUT_BOUND_S + 0.6)  # a clear that did nothing plays on through it
        late = [p for p in loud() if p.time > clear_at + CUT_BOUND_S]
        last = max(p.time for p in loud())
        print(f"real FreeSWITCH stream barge-in: last loud RTP {1000 * (last - clear_at):.0f} ms after clear")
        assert late == [], f"{len(late)} loud packets more than {1000 * CUT_BOUND_S:.0f} ms after clear"
        assert [m for m in record.marks if m.status == "cleared"], record.marks
        call.hangup()
        await cleaned_up(s)


async def test_stream_the_ai_hears_every_caller_frame_while_the_bot_talks():
    # Full duplex: the caller talks over the bot for the whole answer; what the connector got is
    # what the caller's codec carried, frame for frame (file playback silenced 2 frames per file
    # before the jitter buffer; the stream never touches the caller's read path).
    async with RealStack(BIN, connector_options=bot(mark_every_ms=0), **STREAM) as s:
        call = await s.place_call(SALES)
        record = await s.wait_call(0, timeout=10)
        said = ulaw_decode(ulaw_encode(load_wav(CALLER_QUESTION, 8000) * 2))
        await until(lambda: record.sent_of("audio"), what="the bot to start")
        call.say(said)
        await until(lambda: not call.speaking, timeout=20, what="the caller to finish")
        await asyncio.sleep(0.5)
        call.hangup()
        await record.wait_stopped(timeout=5)
        got = np.frombuffer(record.audio(), "<i2")
        ref = soxr.resample(np.frombuffer(said, "<i2").astype(np.float64), 8000, 16000, "VHQ")
        snr = best_aligned_snr(ref, got, in_band=True)
        print(f"real FreeSWITCH stream, caller over the bot: connector audio vs reference {snr:.1f} dB")
        assert snr >= 85, f"{snr:.1f} dB"
        await cleaned_up(s)


async def test_files_the_ai_hears_every_caller_frame_while_the_bot_talks():
    # Full duplex with the default file transport: the caller talks over the whole bot answer
    # (many playback starts and returns to park). Without the rendered 20 ms jitter buffer each
    # start silenced 2 caller frames (REF: 9-16 % while the bot plays); one lost frame here
    # would cost far more than the 85 dB asked (an 8k fork is 86.4 dB when nothing is lost).
    async with RealStack(BIN, connector_options=bot(mark_every_ms=500)) as s:
        call = await s.place_call(SALES)
        record = await s.wait_call(0, timeout=10)
        said = ulaw_decode(ulaw_encode(load_wav(CALLER_QUESTION, 8000) * 2))
        await until(lambda: record.sent_of("audio"), what="the bot to start")
        await until(lambda: call.ear.packets, what="the bot's first audio at the caller")
        call.say(said)
        await until(lambda: not call.speaking, timeout=20, what="the caller to finish")
        await asyncio.sleep(0.5)
        played = [m for m in record.marks if m.status == "played"]
        call.hangup()
        await record.wait_stopped(timeout=5)
        got = np.frombuffer(record.audio(), "<i2")
        ref = soxr.resample(np.frombuffer(said, "<i2").astype(np.float64), 8000, 16000, "VHQ")
        snr = best_aligned_snr(ref, got, in_band=True)
        blocks = sorted(x for _, x in blockwise(ref, got.astype(np.float64), rate=16000))
        print(f"real FreeSWITCH files, caller over the bot ({len(played)} marks played on the way): "
              f"connector audio vs reference {snr:.1f} dB; per 400 ms block: median {blocks[len(blocks) // 2]:.1f}, "
              f"worst {blocks[:3]}")
        assert len(played) >= 4  # the bot really was playing files while the caller spoke
        # Without the jitter buffer every playback start costs 2 frames: most blocks fall below
        # 60 dB (a clean block: 82-88). Under load the switch can still miss a frame (the bench counts those: 1.3-1.9 %
        # loaded, 0.07-0.31 % quiet); one such block is let pass here (a full run on 2026-12-07:
        # 22.4 dB over the whole clip, from a single slip), two are not.
        assert blocks[len(blocks) // 2] >= 85 and sum(x < 60 for x in blocks) <= 1, blocks
        await cleaned_up(s)


async def _esl_listen(port, password, sink):
    """A raw ESL listener taking every event of the switch (``event plain ALL``) into ``sink``,
    and able to run api commands whose replies land there too."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    await reader.readuntil(b"\n\n")
    writer.write(f"auth {password}\n\n".encode())
    assert b"+OK accepted" in await reader.readuntil(b"\n\n")
    writer.write(b"event plain ALL\n\n")

    async def pump():
        while chunk := await reader.read(65536):
            sink.extend(chunk)

    return writer, asyncio.create_task(pump())


async def test_no_event_dump_or_hangup_record_holds_the_media_socket_password():
    # REF "Event sizes": a `set` channel variable rode in every event of a call (153 in 7.5 s).
    # Rendered as preprocessor globals, the password is found where it must be (the global, as
    # mod_audio_fork falls back to it) and nowhere in the call's events, its uuid_dump or its
    # CHANNEL_HANGUP_COMPLETE (what CDR modules write: every channel variable).
    async with RealStack(BIN, connector_options=bot(mark_every_ms=500)) as s:
        password = s.env[s.base.fork_server.auth.password_env]
        assert len(password) >= 8
        seen = bytearray()
        writer, pump = await _esl_listen(s.switch.esl_port, s.switch.esl_password, seen)
        try:
            call = await s.place_call(SUPPORT)
            record = await s.wait_call(0, timeout=10)
            await record.wait_mark("end", timeout=30)
            writer.write(f"api uuid_dump {record.uuid}\n\n".encode())
            writer.write(b"api global_getvar MOD_AUDIO_BASIC_AUTH_PASSWORD\n\n")
            await until(lambda: seen.count(b"Content-Type: api/response") >= 2, what="the api replies")
            call.hangup()
            await until(lambda: b"CHANNEL_HANGUP_COMPLETE" in seen, what="the hangup record")
            await asyncio.sleep(0.3)
        finally:
            pump.cancel()
            writer.close()
        text = bytes(seen)
        events = text.count(b"Event-Name: ")
        ours = text.count(b"variable_voicefork_route: ")
        print(f"real FreeSWITCH: {events} events, {ours} carrying the call's variables, {len(text)} bytes; "
              f"the password {text.count(password.encode())} times (the global_getvar reply)")
        assert ours >= 10 and b"PLAYBACK_START" in text  # the call's own events were really read
        assert record.uuid.encode() in text and b"variable_voicefork_route" in text.split(b"Content-Type: api/response")[1]
        # Exactly once: in the global_getvar reply. The search finds it, and finds it nowhere else.
        assert text.count(password.encode()) == 1, "the media-socket password is in an event or the dump"
        await cleaned_up(s)
