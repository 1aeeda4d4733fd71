"""Chaos rows about the Event Socket (issue 6): the emulated switch's ESL server drops every
connection, or stops listening for a while, or is never there; python-ESL and the fork
server's EslClient talk to it unchanged."""

import asyncio

import pytest

pytest.importorskip("ESL")

from chaoslib import SALES, SUPPORT, bot, config, errors, silence_ms, stack, until  # noqa: E402
from testbed.figures import record  # noqa: E402


@pytest.mark.parametrize("outage_s", [0.0, 1.5])
async def test_esl_drop_and_return_calls_keep_going_and_nothing_is_lost(outage_s):
    # 4 calls; the bot speaks its 5 s answer at real time with a mark every 0.5 s and hangs up
    # after playback. 1.5 s in, every ESL connection is cut (and with outage_s the switch
    # refuses new ones for that long). The fork server reconnects with backoff; the calls go
    # on; every playback command issued meanwhile is sent after the reconnect or fails the
    # call cleanly; every mark is reported; every bot hangs up after its answer.
    n = 4
    opts = bot(speed=1.0, mark_every_ms=500, hangup_after_playback=True)
    async with stack(options=opts) as s:
        loop = asyncio.get_running_loop()
        chans = [s.switch.place_call(SUPPORT if i % 2 else SALES) for i in range(n)]
        await until(lambda: len(s.connector.connections) == n, 5, "connected")
        await asyncio.sleep(1.5)
        cut_at = loop.time()
        if outage_s:
            await s.esl.stop_listening()
            await asyncio.sleep(outage_s)
            await s.esl.resume_listening()
        else:
            s.esl.drop_connections()
        await until(lambda: s.app.esl.up, 10, "ESL back")
        back_at = loop.time()
        await asyncio.gather(*(asyncio.wait_for(ch.hungup.wait(), 20) for ch in chans))
        await until(lambda: not s.app.calls and not s.spool_files(), 10, "cleanup")
        ok, worst, detail = 0, 0.0, []
        for ch in chans:
            r = s.connector.calls[ch.uuid]
            requested = [m.message["name"] for m in r.sent_of("mark")]
            reported = {m.name: m.status for m in r.marks}
            gap = silence_ms(ch, cut_at, back_at + 0.5)
            worst = max(worst, gap)
            detail.append((r.stop_reason, sorted(set(requested) - set(reported)), gap, ch.hangup_cause))
            ok += (r.stop_reason == "connector_hangup" and set(reported) == set(requested)
                   and gap <= 2000 and ch.hangup_cause == "NORMAL_CLEARING")
        # Playback commands in flight when the link died are counted (esl_command) and their
        # marks reported "cleared": the switch may or may not have taken them.
        record(f"ESL drops and comes back (refused for {outage_s:g} s)", n, ok,
               reconnect_s=round(back_at - cut_at, 2), worst_silence_ms=worst,
               playback_commands_lost_in_flight=int(errors(s.app, "esl_command")))
        assert ok == n, detail


async def test_esl_outage_over_the_end_of_speech_still_ends_the_call():
    # The bot streams its 5 s answer fast (3x) and asks to hang up after playback. The ESL
    # link is down from 4 s to 6 s, over the end of the answer: the switch's PLAYBACK_STOP of
    # the last segments is never delivered. The call must not wait for it forever: the "end"
    # mark is reported and the bot's hangup happens within a few seconds of the reconnect.
    n = 2
    opts = bot(speed=3.0, mark_every_ms=0, hangup_after_playback=True)
    async with stack(options=opts) as s:
        loop = asyncio.get_running_loop()
        chans = [s.switch.place_call(SUPPORT if i % 2 else SALES) for i in range(n)]
        await until(lambda: len(s.connector.connections) == n, 5, "connected")
        await until(lambda: all(r.start_at for r in s.connector.connections), 5, "started")
        t0 = min(r.start_at for r in s.connector.connections)
        await asyncio.sleep(max(0.0, t0 + 4.0 - loop.time()))
        await s.esl.stop_listening()
        await asyncio.sleep(2.0)
        await s.esl.resume_listening()
        await until(lambda: s.app.esl.up, 10, "ESL back")
        back_at = loop.time()
        done = await asyncio.wait([asyncio.ensure_future(ch.hungup.wait()) for ch in chans], timeout=8)
        ended = sum(1 for ch in chans if ch.hungup.is_set())
        late = max((_kill_time(s, ch) - back_at for ch in chans if ch.hungup.is_set()), default=float("nan"))
        marks = [s.connector.calls[ch.uuid].mark_status("end") for ch in chans]
        record("ESL down over the end of speech (2 s)", n, ended, hangup_after_reconnect_s=round(late, 2),
               end_marks=marks)
        for ch in chans:
            ch.hangup()
        assert ended == n and marks == ["played"] * n


def _kill_time(s, ch):
    return next(t for t, line in s.switch.api_log if line.startswith("uuid_kill") and ch.uuid in line)


async def _healthz(port):
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    head = await reader.readuntil(b"\r\n\r\n")
    writer.close()
    return int(head.split()[1])


async def test_esl_never_reachable_at_start_up(tmp_path, caplog):
    # The switch's Event Socket refuses connections from the start. /healthz says 503 and the
    # log says why, at once. Calls still arrive (mod_audio_fork does not need ESL): no fallback
    # can run without ESL (REF: no mod_audio_fork message hangs up, transfers or plays), so
    # each call waits for its caller lookup (5 s) and then for ESL to run its route fallback,
    # which happens as soon as the switch answers again; nothing is connected to the AI.
    from chaoslib import UK, prompt_file

    caplog.set_level("INFO", logger="voicefork")
    prompt = prompt_file(tmp_path)
    async with stack(cfg=config(prompt=prompt), options=bot(), esl_up_at_start=False) as s:
        loop = asyncio.get_running_loop()
        await asyncio.sleep(0.3)
        assert await _healthz(s.fork_port) == 503
        lines = [r.getMessage() for r in caplog.records if "unreachable" in r.getMessage()]
        assert lines and f"127.0.0.1:{s.esl.port}" in lines[0] and "/healthz is 503" in lines[0]
        kinds = [(SUPPORT, "hangup"), (SALES, "transfer"), (UK, "play")]
        chans = [(s.switch.place_call(number), kind) for number, kind in kinds]
        await asyncio.sleep(6.0)  # past the caller lookup's 5 s
        assert all(ch.alive and ch.transferred_to is None and not ch.ear.frames for ch, _ in chans)
        assert s.connector.connections == []
        await s.esl.resume_listening()
        back = loop.time()
        await until(lambda: s.app.esl.up, 5, "ESL up")
        assert await _healthz(s.fork_port) == 200
        waits = []
        for ch, kind in chans:
            if kind == "hangup":
                await asyncio.wait_for(ch.hungup.wait(), 5)
                waits.append(loop.time() - back)
            elif kind == "transfer":
                await until(lambda: ch.transferred_to == "1000", 5, "transfer")
                waits.append(loop.time() - back)
                ch.hangup()
            else:
                await until(lambda: ch.ear.frames, 5, "the prompt")
                waits.append(ch.ear.frames[0].time - back)
                await asyncio.wait_for(ch.hungup.wait(), 5)
        await until(lambda: not s.app.calls, 5, "calls ended")
        record("ESL never reachable at start-up (back after 6.3 s)", len(chans), sum(w <= 2.0 for w in waits),
               healthz_while_down=503, fallback_after_esl_back_s=round(max(waits), 2))
        assert max(waits) <= 2.0
