"""The ESL adapters on loopback, against a minimal ESL peer written here: the default one
(commands through python-ESL behind the guard, events on the event loop), python-ESL alone
(``--esl python-esl-unguarded``, for comparison) and, where the behaviour is shared, the
asyncio one (``--esl asyncio``). The default client and the asyncio one receive events with
the same code (esl_async.EslEvents), tested here for both.

The peer frames replies as FreeSWITCH's mod_event_socket does (auth/request, command/reply
with Reply-Text, api/response with Content-Length, text/event-plain with URL-encoded
header values).
"""

import asyncio
import functools
import logging
import os
import sys
import threading

import pytest

pytest.importorskip("ESL")

from fork_server import esl_messages as em  # noqa: E402
from fork_server.errors import EslCommandError, EslUnavailable  # noqa: E402
from fork_server.esl_async import AsyncEslClient  # noqa: E402
from fork_server.esl_client import EslClient  # noqa: E402
from mini_esl import MiniEsl  # noqa: E402

U = "3f1a2b4c-5d6e-4f70-8a9b-0c1d2e3f4a5b"
V = "9e8d7c6b-5a49-4382-9170-6f5e4d3c2b1a"
both_clients = pytest.mark.parametrize("cls", [EslClient, AsyncEslClient], ids=["python-esl", "asyncio"])
every_client = pytest.mark.parametrize(
    "cls", [EslClient, AsyncEslClient, functools.partial(EslClient, guard=False)],
    ids=["python-esl", "asyncio", "python-esl-unguarded"])


async def started(peer, events, password="pw", cls=EslClient, **kw):
    client = cls(
        "127.0.0.1", peer.port, password, on_event=events.append, event_names=["PLAYBACK_START"],
        filters=[("variable_voicefork_route", "support")], logger=logging.getLogger("t"), **kw,
    )
    await client.start()
    return client


async def _until(pred, timeout=5.0):
    for _ in range(int(timeout / 0.02)):
        if pred():
            return True
        await asyncio.sleep(0.02)
    return pred()


@every_client
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


@every_client
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


@every_client
async def test_event_filter_drops_other_workers_events_before_they_are_delivered(cls):
    # Worker processes set it after the client is built (cli.py): it must reach the event link.
    peer, events, asked = MiniEsl(), [], []
    await peer.start()
    client = await started(peer, events, cls=cls)
    client.event_filter = lambda ev: asked.append(ev.uuid) or ev.uuid == U
    try:
        assert await client.wait_up(5) and await _until(lambda: peer.event_writers)
        for uuid, path in ((V, "/spool/v.r8"), (U, "/spool/u.r8"), (V, "/spool/w.r8")):
            peer.emit({"Event-Name": "PLAYBACK_START", "Unique-ID": uuid, "Playback-File-Path": path})
        assert await _until(lambda: len(asked) == 3)
        await asyncio.sleep(0.05)
        assert events == [em.PlaybackStarted(U, None, "/spool/u.r8")] and asked == [V, U, V]
    finally:
        await client.close()
        await peer.close()


async def test_the_default_client_takes_events_on_the_loop_and_python_esl_only_commands():
    # python-ESL's event thread is gone from the default client (its C parse of every header of
    # every 6-7 KB event, and the guard's relay of it, cost ~20 % of the server's CPU); it is
    # still there without the guard, the comparison mode.
    for guard, names in ((True, ["esl-commands-0"]), (False, ["esl-commands-0", "esl-events"])):
        peer, events = MiniEsl(), []
        await peer.start()
        before = set(threading.enumerate())
        client = await started(peer, events, command_connections=1, guard=guard)
        try:
            assert sorted(t.name for t in set(threading.enumerate()) - before if t.name.startswith("esl-")) == names
            assert (client.event_link is not None) == guard
            assert any(t.get_name() == "esl-events" for t in asyncio.all_tasks()) == guard
            assert await client.wait_up(5) and await _until(lambda: peer.event_writers)
            peer.emit({"Event-Name": "PLAYBACK_START", "Unique-ID": U, "Playback-File-Path": "/spool/a.r8"})
            assert await _until(lambda: events) and events == [em.PlaybackStarted(U, None, "/spool/a.r8")]
        finally:
            await client.close()
            await peer.close()
        assert not [t for t in asyncio.all_tasks() if t.get_name().startswith("esl-")]


@both_clients
async def test_a_frame_our_reader_refuses_drops_the_event_link_alone_and_it_comes_back(cls, caplog):
    # A Content-Length python-ESL would segfault on, sent where events come in: our own reader
    # refuses it, the event link is dropped with one line and reconnects (subscribing and
    # filtering again); the command connections are not touched.
    caplog.set_level(logging.ERROR, logger="t")
    peer, events, states = MiniEsl(), [], []
    await peer.start()
    client = await started(peer, events, cls=cls, on_state=states.append, backoff_initial=0.02)
    try:
        assert await client.wait_up(5) and await _until(lambda: peer.event_writers)
        assert await _until(lambda: states == [True])
        peer.send_events(b"Content-Length: -5\nContent-Type: text/event-plain\n\n")
        assert await _until(lambda: states == [True, False, True])
        assert await _until(lambda: sum(c.startswith("filter ") for c in peer.commands) == 2)
        peer.emit({"Event-Name": "PLAYBACK_START", "Unique-ID": U, "Playback-File-Path": "/spool/b.r8"})
        assert await _until(lambda: events) and events == [em.PlaybackStarted(U, None, "/spool/b.r8")]
        assert (await client.api("status")).startswith("+OK")
        assert client.event_link.dropped == 1 and client.reconnects == 0
        assert getattr(client, "guard", None) is None or client.guard.dropped == 0
        (line,) = [r.getMessage() for r in caplog.records if "dropping it" in r.getMessage()]
        assert line == "ESL events link: Content-Length '-5' is not 0..4194304; dropping it"
    finally:
        await client.close()
        await peer.close()


@both_clients
async def test_an_event_that_is_junk_is_passed_over_and_the_link_stays(cls):
    # Framed right, but its lines are junk (bad escapes, bytes that are not UTF-8, a NUL):
    # not an event of ours, so nothing is delivered; the next one is.
    peer, events = MiniEsl(), []
    await peer.start()
    client = await started(peer, events, cls=cls)
    try:
        assert await client.wait_up(5) and await _until(lambda: peer.event_writers)
        junk = b"Event-Name: %%%ZZ%\nUnique-ID: %\xff\xfe\n\x00\n\n"
        peer.send_events(b"Content-Type: text/event-plain\nContent-Length: %d\n\n" % len(junk) + junk)
        peer.emit({"Event-Name": "PLAYBACK_START", "Unique-ID": U, "Playback-File-Path": "/spool/b.r8"})
        assert await _until(lambda: events)
        await asyncio.sleep(0.05)
        assert events == [em.PlaybackStarted(U, None, "/spool/b.r8")]
        assert client.event_link.dropped == 0 and client.reconnects == 0
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


async def _slow_dump_peer():
    """A MiniEsl whose uuid_dump replies wait for ``release``; other api commands answer at once."""
    peer, release = MiniEsl(), asyncio.Event()
    await peer.start()

    async def slow(cmd):
        await release.wait()
        return "+OK slow\n"

    peer.on_api = lambda cmd: slow(cmd) if cmd.startswith("uuid_dump") else None
    return peer, release


async def test_a_stalled_command_does_not_hold_up_commands_of_other_calls():
    (peer, release), events = await _slow_dump_peer(), []
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


async def test_a_command_given_up_while_in_flight_leaves_the_command_thread_working():
    # A call that ends (or times out) cancels its command while python-ESL still waits for the
    # reply; the reply then arrives for a cancelled future. Setting it raised InvalidStateError
    # and killed the command thread, and every later command waited for ever (a hung full run).
    (peer, release), events = await _slow_dump_peer(), []
    client = await started(peer, events, command_connections=1)
    try:
        assert await client.wait_up(5)
        gone = asyncio.create_task(client.api(em.uuid_dump(U)))
        for _ in range(100):  # the command is on the wire
            if any(c.startswith("api uuid_dump") for c in peer.commands):
                break
            await asyncio.sleep(0.02)
        gone.cancel()
        release.set()  # its reply comes back now, to nobody
        reply = await asyncio.wait_for(client.api(em.uuid_getvar(U, "write_rate")), 5)
        assert reply.startswith("+OK uuid_getvar")
    finally:
        release.set()
        await client.close()
        await peer.close()


async def test_a_command_cancelled_as_its_reply_arrives_is_cancelled():
    # Python 3.11's wait_for returns the result when the reply lands in the same loop turn as the
    # cancel, and the cancel is lost: App.stop() cancelled the /freeswitch/status poller that way
    # and waited for it for ever (a CI run hung 120 s in a real-switch test's teardown, its loop
    # waking only for the poller's 5 s sleep). The same turn is made here on purpose.
    client = EslClient("127.0.0.1", 1, "pw", on_event=print, event_names=[], filters=[], logger=logging.getLogger("t"))
    task = asyncio.create_task(client.api("status"))
    for _ in range(10):
        await asyncio.sleep(0)
        if not client._commands.empty():
            break
    _, _, fut = client._commands.get_nowait()
    fut.set_result("UP 0 years")
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
