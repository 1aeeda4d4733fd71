"""Chaos rows about the switch side (issue 6): FreeSWITCH hangs up at awkward moments, and
mod_audio_fork's own events (connect_failed, buffer_overrun, disconnect), handled as REF says."""

import asyncio

import pytest

pytest.importorskip("ESL")

from chaoslib import SALES, SUPPORT, bot, config, errors, open_fds, stack, until  # noqa: E402
from testbed.figures import record  # noqa: E402
from testbed.speech import CALLER_BARGEIN, load_wav  # noqa: E402


def _freed(s, ch):
    """Nothing of the call is left in the fork server: no call, no spool dir, no connector leg."""
    legs = [r for r in s.connector.connections if r.uuid == ch.uuid]
    return (ch.uuid not in s.app.calls and not (s.spool / ch.uuid.lower()).exists()
            and all(r.closed for r in legs))


async def _free_time(s, chans, hung_at, timeout=5.0):
    loop = asyncio.get_running_loop()
    freed: dict[str, float] = {}
    end = loop.time() + timeout
    while len(freed) < len(chans) and loop.time() < end:
        for ch in chans:
            if ch.uuid not in freed and _freed(s, ch):
                freed[ch.uuid] = loop.time() - hung_at[ch.uuid]
        await asyncio.sleep(0.005)
    return freed


@pytest.mark.parametrize("moment", ["mid_playback", "mid_connect", "mid_barge_in"])
async def test_switch_hangup_frees_everything_within_1_s(moment):
    n = 4
    opts = bot(speed=1.0, bargein=True, mark_every_ms=500)
    async with stack(options=opts) as s:
        loop = asyncio.get_running_loop()
        await asyncio.sleep(0.2)
        tasks0, fds0 = len(asyncio.all_tasks()), open_fds()
        if moment == "mid_connect":
            s.connector.handshake_delay_s = 1.5  # the connector takes its time to answer
        chans = [s.switch.place_call(SUPPORT if i % 2 else SALES) for i in range(n)]
        hung_at: dict[str, float] = {}
        if moment == "mid_connect":
            await until(lambda: s.connector.handshakes >= n, 5, "the connects under way")
            await asyncio.sleep(0.3)
            for ch in chans:
                hung_at[ch.uuid] = loop.time()
                ch.hangup()
        elif moment == "mid_playback":
            await until(lambda: all(len(ch.ear.frames) > 40 for ch in chans), 10, "bot speaking")
            for ch in chans:
                hung_at[ch.uuid] = loop.time()
                ch.hangup()
        else:
            await until(lambda: all(len(ch.ear.frames) > 20 for ch in chans), 10, "bot speaking")
            for ch in chans:
                ch.say(load_wav(CALLER_BARGEIN, 8000))
            pending = list(chans)
            while pending:  # each call hangs up the moment its bot sends clear
                for ch in list(pending):
                    r = s.connector.calls.get(ch.uuid)
                    if r is not None and r.clears_sent:
                        hung_at[ch.uuid] = loop.time()
                        ch.hangup()
                        pending.remove(ch)
                await asyncio.sleep(0.002)
        freed = await _free_time(s, chans, hung_at)
        await s.switch.settle()
        # (mid-connect: the testbed connector's own handshakes still sleep out their delay)
        await asyncio.sleep(0.3 if moment != "mid_connect" else 1.6)
        leaked_tasks = len(asyncio.all_tasks()) - tasks0
        leaked_fds = open_fds() - fds0
        ok = sum(1 for t in freed.values() if t <= 1.0)
        record(f"switch hangs up {moment.replace('_', ' ')}", n, ok,
               worst_free_s=round(max(freed.values(), default=float("nan")), 3),
               tasks_left=leaked_tasks, fds_left=leaked_fds,
               late_connector_legs=sum(1 for r in s.connector.connections if r.closed_at and r.start is not None
                                       and r.uuid in hung_at and r.start_at > hung_at[r.uuid]))
        assert ok == n, freed
        assert leaked_tasks <= 0 and leaked_fds <= 0


# ------------------------------------------------------------------ mod_audio_fork events (REF "Events", "Close")


async def test_connect_failed_runs_the_route_fallback_and_frees_the_bug(tmp_path):
    # The fork server stops accepting (its socket is closed): mod_audio_fork cannot connect and
    # fires connect_failed {"reason":"Unable to connect"}. REF: the bug stays attached after a
    # connect failure, so the fork server stops it, then runs the route's fallback.
    from chaoslib import UK, prompt_file

    prompt = prompt_file(tmp_path)
    async with stack(cfg=config(prompt=prompt), options=bot()) as s:
        loop = asyncio.get_running_loop()
        s.app.intake.stop_accepting()
        kinds = [(SUPPORT, "hangup"), (SALES, "transfer"), (UK, "play")]
        t0 = loop.time()
        chans = [(s.switch.place_call(number), kind) for number, kind in kinds]
        waits, detached = [], 0
        for ch, kind in chans:
            if kind == "hangup":
                await asyncio.wait_for(ch.hungup.wait(), 5)
                waits.append(loop.time() - t0)
            elif kind == "transfer":
                await until(lambda: ch.transferred_to == "1000" and not ch.bugs, 5, "transfer, bug stopped")
                waits.append(loop.time() - t0)
                ch.hangup()
            else:
                await until(lambda: ch.ear.frames, 5, "prompt")
                waits.append(ch.ear.frames[0].time - t0)
                detached += not ch.bugs
                await asyncio.wait_for(ch.hungup.wait(), 5)
        stops = [line for _, line in s.switch.api_log if line.startswith("uuid_audio_fork") and line.endswith(" stop")]
        record("mod_audio_fork connect_failed", len(chans), sum(w <= 2.0 for w in waits),
               worst_fallback_s=round(max(waits), 3), forks_stopped=len(stops))
        assert max(waits) <= 2.0 and len(stops) == len(chans) and detached == 1
        assert s.connector.connections == []


async def test_buffer_overrun_is_counted_and_the_call_goes_on(caplog):
    # The switch's fork stops sending for 3 s (its 2 s buffer fills): one buffer_overrun event,
    # caller audio dropped on the switch (REF "Buffering"). The fork server counts and logs it
    # and the call goes on: audio reaches the connector again (the 2 s backlog arrives as one
    # merged frame, REF), the bot still speaks, and the call ends normally.
    caplog.set_level("WARNING", logger="voicefork")
    n = 2
    async with stack(options=bot(speed=1.0)) as s:
        chans = [s.switch.place_call(SUPPORT if i % 2 else SALES) for i in range(n)]
        await until(lambda: all(ch.bugs for ch in chans) and len(s.connector.connections) == n, 5, "forks")
        records = [s.connector.calls[ch.uuid] for ch in chans]
        await asyncio.sleep(0.3)
        for ch in chans:
            next(iter(ch.bugs.values())).stall(3.0)
        await until(lambda: errors(s.app, "fork_buffer_overrun") == n, 5, "overruns counted")
        before = [r.frame_count for r in records]
        await asyncio.sleep(3.5)
        after = [r.frame_count for r in records]
        heard = [len(ch.ear.frames) for ch in chans]
        logged = [r for r in caplog.records if "buffer_overrun" in r.getMessage()]
        ok = sum(1 for b, a, h, ch in zip(before, after, heard, chans) if a > b + 100 and h > 100 and ch.alive)
        for ch in chans:
            ch.hangup()
        await until(lambda: not s.app.calls, 5, "ended")
        record("mod_audio_fork buffer_overrun", n, ok, overruns=int(errors(s.app, "fork_buffer_overrun")),
               log_lines=len(logged))
        assert ok == n and len(logged) == n


async def test_server_side_close_detaches_the_bug_and_runs_the_fallback(tmp_path):
    # The switch sends the fork a 5 kB text frame (`uuid_audio_fork <uuid> send_text {...}`),
    # over our 4 kB limit: the fork server closes that fork (1008). A server-side close fires
    # mod_audio_fork::disconnect and the bug STAYS attached (REF "Close"): the next start on the
    # channel fails until `stop` is run. The fork server runs it, and since the channel is
    # still up with nobody serving it, it runs the route fallback (hangup, transfer, prompt).
    from chaoslib import UK, prompt_file

    prompt = prompt_file(tmp_path)
    async with stack(cfg=config(prompt=prompt), options=bot(speak_after_first_utterance=True)) as s:
        loop = asyncio.get_running_loop()
        kinds = [(SUPPORT, "hangup"), (SALES, "transfer"), (UK, "play")]
        chans = [(s.switch.place_call(number), kind) for number, kind in kinds]
        await until(lambda: len(s.connector.connections) == 3 and all(r.start for r in s.connector.connections), 5, "up")
        big = '{"note":"' + "x" * 5000 + '"}'
        t0 = loop.time()
        for ch, _ in chans:
            assert s.switch.api("uuid_audio_fork", f"{ch.uuid} send_text {big}").startswith("+OK")
        waits, detached = [], 0
        for ch, kind in chans:
            if kind == "hangup":
                await asyncio.wait_for(ch.hungup.wait(), 5)
                waits.append(loop.time() - t0)
            elif kind == "transfer":
                await until(lambda: ch.transferred_to == "1000", 5, "transfer")
                waits.append(loop.time() - t0)
                await until(lambda: not ch.bugs, 3, "the bug detached")
                url = f"{s.config.fork_server.public_url}/calls/sales"
                again = s.switch.api("uuid_audio_fork", f"{ch.uuid} start {url} mono 8k")
                detached += again.startswith("+OK")  # the channel can be forked again
                ch.hangup()
            else:
                await until(lambda: ch.ear.frames, 5, "the prompt")
                waits.append(ch.ear.frames[0].time - t0)
                await asyncio.wait_for(ch.hungup.wait(), 5)
        await until(lambda: not s.app.calls and all(r.closed for r in s.connector.connections), 5, "cleanup")
        record("mod_audio_fork disconnect (server-side close)", len(chans), sum(w <= 2.0 for w in waits),
               worst_fallback_s=round(max(waits), 3), restart_after_stop=detached,
               fork_protocol_errors=int(errors(s.app, "fork_protocol")))
        assert max(waits) <= 2.0 and detached == 1


async def test_graceful_shutdown_is_closed_by_the_fork_server():
    # REF "Close": after graceful-shutdown mod_audio_fork sends a zero-length frame and never
    # closes, so the server must. (REF is silent on whether `stop` then detaches the bug; the
    # emulator assumes it does not, so the channel's fork is the switch operator's business.)
    async with stack(options=bot(speak_after_first_utterance=True)) as s:
        ch = s.switch.place_call(SUPPORT)
        await until(lambda: s.connector.connections and s.connector.connections[0].start, 5, "up")
        s.switch.api("uuid_audio_fork", f"{ch.uuid} graceful-shutdown")
        await until(lambda: not s.app.calls, 3, "the fork server closed the fork")
        r = s.connector.connections[0]
        await r.wait_stopped(3)
        record("mod_audio_fork graceful-shutdown", 1, int(r.stop_reason == "hangup" and ch.alive))
        assert r.stop_reason == "hangup" and ch.alive
        ch.hangup()


async def test_a_fork_for_a_channel_that_is_already_gone_is_closed_by_us():
    # Seen on a real 1.10.12 (REF is silent): a call hung up ~20 ms after `start` still got its
    # fork opened afterwards, and FreeSWITCH never closed that socket. The caller lookup then
    # answers "-ERR No such channel!"; nobody else would ever end such a call.
    import base64
    import uuid as uuidlib

    from websockets.asyncio.client import connect
    from websockets.exceptions import ConnectionClosed

    async with stack(options=bot()) as s:
        loop = asyncio.get_running_loop()
        user = s.config.fork_server.auth.username
        auth = base64.b64encode(f"{user}:{s.env[s.config.fork_server.auth.password_env]}".encode()).decode()
        gone = str(uuidlib.uuid4())
        async with connect(f"ws://127.0.0.1:{s.fork_port}/calls/support", subprotocols=["audio.drachtio.org"],
                           additional_headers={"Authorization": f"Basic {auth}"}) as ws:
            await ws.send('{"route":"support","uuid":"%s"}' % gone)
            t0 = loop.time()

            async def stream():  # like mod_audio_fork, keep streaming until the server closes
                while True:
                    await ws.send(bytes(640))
                    await asyncio.sleep(0.02)

            with pytest.raises(ConnectionClosed):
                await asyncio.wait_for(stream(), 5)
            closed_after = loop.time() - t0
        await until(lambda: gone not in s.app.calls, 2, "the call to end")
        assert closed_after < 1.0 and not s.connector.connections  # no connector leg for a dead call
        record("fork for a channel already gone", 1, 1, closed_after_s=round(closed_after, 3))
