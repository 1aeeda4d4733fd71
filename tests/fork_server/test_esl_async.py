"""The asyncio ESL client (``--esl asyncio``): what only it does, against the minimal peer, and
its event parser on bytes. Its framing (fork_server.esl_wire, shared with the python-ESL guard)
is tested in test_esl_wire.py; the behaviour it shares with the python-ESL adapter is tested for
both in test_esl_client.py."""

import asyncio
import logging

import pytest

from fork_server.errors import LocalUsageError
from fork_server.esl_async import AsyncEslClient, EslReader, parse_plain_event
from mini_esl import MiniEsl
from testbed.freeswitch.esl_server import serialize_event

U = "3f1a2b4c-5d6e-4f70-8a9b-0c1d2e3f4a5b"


async def started(peer, events, password="pw", **kw):
    client = AsyncEslClient(
        "127.0.0.1", peer.port, password, on_event=events.append, event_names=["PLAYBACK_START"],
        filters=[("variable_voicefork_route", "support")], logger=logging.getLogger("t"), **kw,
    )
    await client.start()
    return client


async def test_a_lost_link_goes_down_backs_off_and_reconnects():
    peer, states = MiniEsl(), []
    await peer.start()
    client = await started(peer, [], on_state=states.append, backoff_initial=0.05)
    try:
        assert await client.wait_up(5)
        for w in list(peer.event_writers):
            w.transport.abort()
        peer.server.close()  # no listener for a moment: the client backs off
        await asyncio.sleep(0.2)
        assert states[0] is True and False in states
        peer.server = await asyncio.start_server(peer.client, "127.0.0.1", peer.port)
        assert await client.wait_up(5)
        assert (await client.api("status")).startswith("+OK")
    finally:
        await client.close()
        await peer.close()


async def test_sendmsg_and_api_refuse_newlines_before_anything_is_sent():
    client = AsyncEslClient("127.0.0.1", 1, "pw", on_event=print, event_names=[], filters=[], logger=logging.getLogger("t"))
    with pytest.raises(LocalUsageError):
        await client.sendmsg(U, {"execute-app-arg": "/a\n\napi system id"})
    with pytest.raises(LocalUsageError):
        await client.sendmsg("x\nexit", {})
    with pytest.raises(LocalUsageError):
        await client.api("status\n\napi system id")


def test_parse_plain_event_decodes_values_and_keeps_the_body():
    (frame,) = EslReader().feed(serialize_event(
        {"Event-Name": "CUSTOM", "Event-Subclass": "mod_audio_fork::play_audio", "Unique-ID": U,
         "Playback-File-Path": "/tmp/a b%.r8"}, '{"file":"/tmp/x.r8"}'))
    headers, body = parse_plain_event(frame.body)
    assert headers["Playback-File-Path"] == "/tmp/a b%.r8" and headers["Event-Subclass"] == "mod_audio_fork::play_audio"
    assert body == '{"file":"/tmp/x.r8"}'
