"""The framing guard between python-ESL and the switch, on loopback (EslClient's default path).

The guard fronts python-ESL's command connections only; the default client takes its events
on the event loop (esl_async.EslEvents), so no event reaches python-ESL. Frames python-ESL
would die on are sent to a child process in tests/chaos/test_fuzz.py; here the peer sends only
what python-ESL survives, and the tests check what the guard does with it: records, drops, and
the handshake it now runs itself.
"""

import asyncio
import logging
import threading

import pytest

pytest.importorskip("ESL")

from fork_server import esl_messages as em  # noqa: E402
from fork_server.errors import EslLostInFlight, LocalUsageError  # noqa: E402
from fork_server.esl_client import EslClient  # noqa: E402
from fork_server.esl_guard import EslGuard  # noqa: E402
from fork_server.esl_wire import SKIP, EslReader, python_esl_verdict  # noqa: E402
from mini_esl import MiniEsl, event_frame  # noqa: E402

U = "3f1a2b4c-5d6e-4f70-8a9b-0c1d2e3f4a5b"


def _client(port, events=None, **kw):
    return EslClient("127.0.0.1", port, "pw", on_event=(events if events is not None else []).append,
                     event_names=["PLAYBACK_START"], filters=[], logger=logging.getLogger("t.guard"), **kw)


async def _until(pred, timeout=5.0):
    for _ in range(int(timeout / 0.02)):
        if pred():
            return True
        await asyncio.sleep(0.02)
    return pred()


async def test_a_reply_larger_than_a_record_reaches_python_esl_whole():
    # python-ESL reads 65 535 bytes at a time: a 300 kB api reply goes as several records.
    peer = MiniEsl()
    big = "".join(f"line {i:06d}\n" for i in range(25_000))
    peer.on_api = lambda cmd: big if cmd.startswith("show") else None
    await peer.start()
    client = _client(peer.port)
    await client.start()
    try:
        assert await client.wait_up(5)
        assert await client.api("show channels") == big
        assert (await client.api("status")).startswith("+OK")  # and the stream is still in step
    finally:
        await client.close()
        await peer.close()


async def test_an_event_python_esl_cannot_take_is_delivered_now_and_never_reaches_python_esl(caplog):
    # The guard used to skip it (python-ESL recurses on it), so a caller could keep their own
    # call's events from the server. Events no longer go through python-ESL: our parser takes it.
    caplog.set_level(logging.WARNING, logger="t.guard")
    peer, events = MiniEsl(), []
    await peer.start()
    client = _client(peer.port, events)
    await client.start()
    try:
        assert await client.wait_up(5) and await _until(lambda: peer.event_writers)
        # A caller-ID name with ARRAY:: at byte 7 or later: the switch sends ':' as %3A.
        hostile = event_frame({"Event-Name": "PLAYBACK_START", "Unique-ID": U, "Playback-File-Path": "/spool/a.r8",
                               "Caller-Caller-ID-Name": "Mallory the ARRAY::"})
        (frame,) = EslReader().feed(hostile)
        verdict, why = python_esl_verdict(frame, events=True)
        assert verdict == SKIP and "nested ARRAY::" in why  # still one python-ESL cannot take
        peer.send_events(hostile)
        peer.emit({"Event-Name": "PLAYBACK_START", "Unique-ID": U, "Playback-File-Path": "/spool/b.r8"})
        assert await _until(lambda: len(events) == 2)
        assert events == [em.PlaybackStarted(U, None, "/spool/a.r8"), em.PlaybackStarted(U, None, "/spool/b.r8")]
        assert client.guard.dropped == 0 and client.event_link.dropped == 0 and client.reconnects == 0
        assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    finally:
        await client.close()
        await peer.close()


class _OddPeer:
    """Answers auth and commands; ``uuid_broadcast`` is answered with an event instead of a
    reply (never sent on a command connection: python-ESL would queue it for ever); ``silent``
    accepts connections and never says anything."""

    def __init__(self, silent=False):
        self.silent, self.connections = silent, 0

    async def start(self):
        self.server = await asyncio.start_server(self.client, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]

    async def client(self, reader, writer):
        self.connections += 1
        try:
            if self.silent:
                await reader.read()
                return
            writer.write(b"Content-Type: auth/request\n\n")
            await reader.readuntil(b"\n\n")
            writer.write(b"Content-Type: command/reply\nReply-Text: +OK accepted\n\n")
            while True:
                block = await reader.readuntil(b"\n\n")
                if block.startswith(b"api uuid_broadcast"):
                    writer.write(b"Content-Type: text/event-plain\nContent-Length: 19\n\nEvent-Name: CUSTOM\n")
                elif block.startswith(b"api "):
                    writer.write(b"Content-Type: api/response\nContent-Length: 4\n\n+OK\n")
                else:
                    writer.write(b"Content-Type: command/reply\nReply-Text: +OK\n\n")
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    async def close(self):
        self.server.close()


async def test_a_frame_that_cannot_go_to_python_esl_drops_the_link_and_the_command_fails_cleanly(caplog):
    caplog.set_level(logging.ERROR, logger="t.guard")
    peer = _OddPeer()
    await peer.start()
    client = _client(peer.port, command_connections=1, backoff_initial=0.02)
    await client.start()
    try:
        assert await client.wait_up(5)
        with pytest.raises(EslLostInFlight):  # sent, then the link went: it may have run
            await client.api(f"uuid_broadcast {U} /x.wav aleg")
        assert client.guard.dropped == 1
        assert await client.api("status") == "+OK\n"  # reconnected
        (line,) = [r.getMessage() for r in caplog.records if "dropping it" in r.getMessage()]
        assert line.startswith("ESL commands link: 'text/event-plain' frame on a command connection")
    finally:
        await client.close()
        await peer.close()


async def test_a_switch_that_never_says_auth_request_is_given_up_on_and_close_does_not_hang():
    # python-ESL's own connect waited for ever for auth/request; the guard's handshake is bounded.
    peer = _OddPeer(silent=True)
    await peer.start()
    before = set(threading.enumerate())
    client = _client(peer.port, command_connections=1, command_timeout=0.2, backoff_initial=0.02)
    await client.start()
    ours = [t for t in threading.enumerate() if t not in before and t.name.startswith("esl-")]
    try:
        assert not await client.wait_up(1.0)
        assert peer.connections >= 4  # each attempt given up on and retried
    finally:
        loop = asyncio.get_running_loop()
        t = loop.time()
        await client.close()
        # The command thread (python-ESL's) and the event link's task (on the loop) are gone.
        assert [th.name for th in ours] == ["esl-commands-0"] and loop.time() - t < 1.5
        assert not any(th.is_alive() for th in ours)
        assert not [task for task in asyncio.all_tasks() if task.get_name().startswith("esl-")]
        await peer.close()


def test_a_password_that_would_end_the_auth_command_is_refused():
    with pytest.raises(LocalUsageError):
        EslGuard("127.0.0.1", 1, "pw\n\napi system id", logger=logging.getLogger("t"))


async def test_a_command_too_long_for_one_record_is_refused_not_cut(caplog):
    caplog.set_level(logging.ERROR, logger="t.guard")
    peer = MiniEsl()
    await peer.start()
    client = _client(peer.port, command_connections=1, backoff_initial=0.02)
    await client.start()
    try:
        assert await client.wait_up(5)
        with pytest.raises(EslLostInFlight):
            await client.api("uuid_broadcast " + "x" * 70_000)
        assert not any(c.startswith("api uuid_broadcast") for c in peer.commands)  # nothing half-sent
        assert any("a command of over 65535 bytes" in r.getMessage() for r in caplog.records)
        assert (await client.api("status")).startswith("+OK")
    finally:
        await client.close()
        await peer.close()
