"""Scale-out on loopback (issue 17): two real FreeSWITCH, two fork servers behind HAProxy, all
from one YAML (testbed.cluster). Calls are placed on both switches; each call's playback must
come from its own switch (a command sent to the other switch finds no such channel: the caller
would hear nothing), calls spread over the fork servers, a fork server stopped mid-run ends its
own calls with the route's fallback and disturbs no other, and a rolling restart of both fork
servers (one at a time, draining first) loses no call."""

import asyncio
import json
import os
import shutil
import signal
import time
import urllib.request

import pytest

BIN = os.environ.get("FREESWITCH_BIN")
pytestmark = pytest.mark.freeswitch  # skipped without FREESWITCH_BIN, failed under CI=true (conftest.py)
pytest.importorskip("ESL")
if shutil.which("haproxy") is None and os.environ.get("CI") != "true":  # just bootstrap installs it
    pytest.skip("haproxy is not installed (apt-get install haproxy)", allow_module_level=True)

from testbed.cluster import ROUTE_NUMBER, Cluster  # noqa: E402

HEARD = 50  # RTP packets of bot audio (1 s) that make a call "answered by the bot"


def bot(**kw):
    return {"bargein": False, "speed": 1.0, "answer_delay_ms": 100, "mark_every_ms": 0, **kw}


def live_calls(port):
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/calls", timeout=2) as r:
            return json.loads(r.read())
    except OSError:
        return []


async def until(pred, timeout=10.0, what="condition"):
    end = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


async def place(c, i):
    """Call i goes to switch i % 2, from a number that says which call it is."""
    return await c.callers[i % len(c.callers)].place_call(ROUTE_NUMBER, f"+1555100{i:04d}", f"Caller {i}")


def switch_of_number(c):
    """uuid -> the switch whose caller placed the call (from the connector's start: the caller number)."""
    return {r.uuid: f"fs-{chr(ord('a') + int(r.start['call']['from'][-4:]) % 2)}" for r in c.connector.connections if r.start}


async def test_calls_spread_play_on_their_own_switch_and_a_stopped_fork_server_disturbs_no_other():
    async with Cluster(BIN, drain_timeout_s=2.0, connector_options=bot()) as c:
        calls = [await place(c, i) for i in range(8)]
        await until(lambda: all(len(call.ear.packets) >= HEARD for call in calls), 20, "every caller to hear the bot")
        on_server = [live_calls(fs.port) for fs in c.fork_servers]
        # Each fork server knows which switch owns each of its calls: the one the call was placed on.
        placed_on = switch_of_number(c)
        assert {info["uuid"]: info["switch"] for calls_ in on_server for info in calls_} == placed_on
        per_server = [len(x) for x in on_server]
        per_switch = [sum(1 for s in placed_on.values() if s == name) for name in ("fs-a", "fs-b")]
        print(f"cluster: 8 calls, per switch {per_switch}, per fork server {per_server} (leastconn)")
        assert per_switch == [4, 4] and sorted(per_server) == [4, 4]
        for call in calls:
            call.hangup()
        await until(lambda: not any(live_calls(fs.port) for fs in c.fork_servers), 10, "the calls to end")

        # Stop fork server 0 mid-run (SIGTERM, drain timeout 2 s): its calls end with the route's
        # fallback (hangup) at the timeout; fork server 1's calls and new calls go on.
        calls = [await place(c, 100 + i) for i in range(4)]
        await until(lambda: all(len(call.ear.packets) >= HEARD for call in calls), 20, "the bot on the new calls")
        owner = {info["uuid"]: i for i, fs in enumerate(c.fork_servers) for info in live_calls(fs.port)}
        assert sorted(owner.values()) == [0, 0, 1, 1], owner
        by_uuid = {r.uuid: r for r in c.connector.connections if r.start}
        number_of = {u: r.start["call"]["from"] for u, r in by_uuid.items()}
        victims = [call for call in calls if owner[next(u for u, n in number_of.items() if n == call.number)] == 0]
        others = [call for call in calls if call not in victims]
        t0 = time.monotonic()
        code = await c.fork_servers[0].stop(signal.SIGTERM)
        assert code == 0
        await until(lambda: all(call.hungup.is_set() for call in victims), 10, "the stopped server's calls to end")
        took = time.monotonic() - t0
        assert all(call.bye_from_switch for call in victims)  # the fallback hung them up, not the caller
        assert not any(call.hungup.is_set() for call in others)
        late = await place(c, 200)  # a new call after the stop reaches the other fork server
        await until(lambda: len(late.ear.packets) >= HEARD, 20, "the bot on a call placed after the stop")
        assert any(info["switch"] == "fs-a" for info in live_calls(c.fork_servers[1].port))
        print(f"cluster: fork server 0 stopped with 2 live calls: ended with the route fallback after {took:.1f} s "
              f"(drain timeout 2 s); the other 2 calls and a new one went on")
        for call in others + [late]:
            assert not call.hungup.is_set()
            call.hangup()


async def test_a_rolling_restart_under_calls_loses_none():
    async with Cluster(BIN, drain_timeout_s=20.0, drain_grace_s=1.0, connector_options=bot()) as c:
        placed, stop = [], asyncio.Event()

        async def one_call(i):
            call = await place(c, i)
            placed.append(call)
            try:
                await until(lambda: len(call.ear.packets) >= HEARD, 15, f"call {i} to hear the bot")
            finally:
                call.hangup()

        async def caller_load():
            i, tasks = 0, []
            while not stop.is_set():
                tasks.append(asyncio.create_task(one_call(i)))
                i += 1
                await asyncio.sleep(0.4)
            return await asyncio.gather(*tasks, return_exceptions=True)

        t0 = time.monotonic()
        load = asyncio.create_task(caller_load())
        await asyncio.sleep(2)
        for fs in c.fork_servers:  # one at a time: drain (health fails first), exit, start, healthy again
            assert await fs.stop(signal.SIGTERM) == 0
            await fs.start()
            await c.wait_balanced_up()  # HAProxy counts it up again (rise 2) before the next one goes
        await asyncio.sleep(1)
        stop.set()
        outcomes = await load
        wall = time.monotonic() - t0
        failed = [(i, o) for i, o in enumerate(outcomes) if isinstance(o, BaseException)]
        dropped = [call for call in placed if call.bye_from_switch]
        print(f"cluster rolling restart: {len(outcomes)} calls over {wall:.1f} s, {len(failed)} without the bot, "
              f"{len(dropped)} hung up by the switch")
        assert len(outcomes) >= 20
        assert failed == [] and dropped == []
