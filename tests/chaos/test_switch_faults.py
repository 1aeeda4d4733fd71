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
