"""The ESL adapters on loopback, against a minimal ESL peer written here: the python-ESL one
(the default) and, where the behaviour is shared, the asyncio one (``--esl asyncio``).

The peer frames replies as FreeSWITCH's mod_event_socket does (auth/request, command/reply
with Reply-Text, api/response with Content-Length, text/event-plain with URL-encoded
header values).
"""

import asyncio
import logging
import os
import sys

import pytest

pytest.importorskip("ESL")

from fork_server import esl_messages as em  # noqa: E402
from fork_server.errors import EslCommandError, EslUnavailable  # noqa: E402
from fork_server.esl_async import AsyncEslClient  # noqa: E402
from fork_server.esl_client import EslClient  # noqa: E402
from mini_esl import MiniEsl  # noqa: E402

U = "3f1a2b4c-5d6e-4f70-8a9b-0c1d2e3f4a5b"
both_clients = pytest.mark.parametrize("cls", [EslClient, AsyncEslClient], ids=["python-esl", "asyncio"])


async def started(peer, events, password="pw", cls=EslClient, **kw):
    client = cls(
        "127.0.0.1", peer.port, password, on_event=events.append, event_names=["PLAYBACK_START"],
        filters=[("variable_voicefork_route", "support")], logger=logging.getLogger("t"), **kw,
    )
    await client.start()
    return client


@both_clients
async def test_api_sendmsg_and_events_round_trip(cls):
    peer, events = MiniEsl(), []
    await peer.start()
    client = await started(peer, events, cls=cls)
    try:
        assert await client.wait_up(5)
        assert (await client.api(em.uuid_getvar(U, "write_rate"))).startswith("+OK uuid_getvar")
        with pytest.raises(EslCommandError):
            await client.api("bad command")
        replies = await asyncio.gather(*(client.api(f"status {i}") for i in range(50)))  # concurrent, each its own reply
        assert replies == [f"+OK status {i}\n" for i in range(50)]
        await client.execute_playback(em.PlaybackCommand(U, "/spool/a_b/1.r8"))
        sendmsg = next((c for c in peer.commands if c.startswith("sendmsg")), repr(peer.commands))
        assert f"sendmsg {U}" in sendmsg and "event-lock: true" in sendmsg and "execute-app-name: playback" in sendmsg
        assert any(c.startswith("event plain PLAYBACK_START") for c in peer.commands)
        assert any(c.startswith("filter variable_voicefork_route support") for c in peer.commands)
        peer.emit({"Event-Name": "PLAYBACK_START", "Unique-ID": U, "Playback-File-Path": "/spool/x y.r8"})
        for _ in range(100):
            if events:
                break
            await asyncio.sleep(0.02)
        assert events == [em.PlaybackStarted(U, None, "/spool/x y.r8")]
    finally:
        await client.close()
        await peer.close()


@both_clients
async def test_wrong_password_stays_down_and_commands_fail_cleanly(cls):
    peer, events = MiniEsl(), []
    await peer.start()
    client = await started(peer, events, password="nope", cls=cls, command_timeout=0.5)
    try:
        assert not await client.wait_up(0.5)
        with pytest.raises(EslUnavailable):
            await client.api(em.uuid_dump(U))
    finally:
        await client.close()
        await peer.close()


async def test_sendmsg_refuses_newlines_before_anything_is_sent():
    from fork_server.errors import LocalUsageError

    client = EslClient("127.0.0.1", 1, "pw", on_event=print, event_names=[], filters=[], logger=logging.getLogger("t"))
    with pytest.raises(LocalUsageError):
        await client.sendmsg(U, {"execute-app-arg": "/a\n\napi system id"})
    with pytest.raises(LocalUsageError):
        await client.sendmsg("x\nexit", {})


async def test_a_stalled_command_does_not_hold_up_commands_of_other_calls():
    peer, events = MiniEsl(), []
    await peer.start()
    release = asyncio.Event()

    async def slow(cmd):
        await release.wait()
        return "+OK slow\n"

    peer.on_api = lambda cmd: slow(cmd) if cmd.startswith("uuid_dump") else None
    client = await started(peer, events, command_connections=2)
    try:
        assert await client.wait_up(5)
        for _ in range(100):  # both command connections authenticated
            if sum(c.startswith("auth ") for c in peer.commands) >= 3:
                break
            await asyncio.sleep(0.02)
        stalled = asyncio.create_task(client.api(em.uuid_dump(U)))
        reply = await asyncio.wait_for(client.api(em.uuid_getvar(U, "write_rate")), 3)
        assert reply.startswith("+OK uuid_getvar") and not stalled.done()
        release.set()
        assert (await asyncio.wait_for(stalled, 3)) == "+OK slow\n"
    finally:
        release.set()
        await client.close()
        await peer.close()


async def test_command_connections_are_bounded():
    from fork_server.errors import LocalUsageError

    for n in (0, 33):
        with pytest.raises(LocalUsageError):
            EslClient("127.0.0.1", 1, "pw", on_event=print, event_names=[], filters=[],
                      logger=logging.getLogger("t"), command_connections=n)


# A python-ESL client alone in its own process, so its RSS is its own: connects, sends
# `api status` N times, prints how much its RSS grew.
_RSS_CLIENT = """
import sys, ESL
def rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096
con = ESL.ESLconnection("127.0.0.1", sys.argv[1], "pw")
assert con.connected()
con.api("status", "")
before = rss()
for _ in range(int(sys.argv[2])):
    con.api("status", "")
print(rss() - before)
"""


@pytest.mark.skipif(not os.path.exists("/proc/self/statm"), reason="reads RSS from /proc")
async def test_python_esl_rss_does_not_grow_with_the_bytes_it_receives():
    """libesl (esl.h, 1.4.18) gives each connection a 6.5 MB receive buffer whose read and write
    heads walk to its end before moving back: every byte received touched a new byte of it, so
    a connection's RSS grew with its traffic up to 6.5 MB (the churn's ~1.9 MB per 1000 calls
    over 4 command connections). The bootstrap builds python-ESL with a 128 KiB one."""
    peer = MiniEsl()
    peer.on_api = lambda cmd: "+OK " + "x" * 2000 + "\n"
    await peer.start()
    try:
        n = 4000  # ~8 MB received: more than the whole 6.5 MB buffer
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-c", _RSS_CLIENT, str(peer.port), str(n), stdout=asyncio.subprocess.PIPE)
        out, _ = await asyncio.wait_for(proc.communicate(), 60)
        assert proc.returncode == 0
        grew = int(out)
        # Unpatched: +6.4 MB. Patched: a few pages at most.
        assert grew < 1_000_000, f"RSS grew {grew / 1e6:.1f} MB over {n} api replies of 2 KB"
    finally:
        await peer.close()
