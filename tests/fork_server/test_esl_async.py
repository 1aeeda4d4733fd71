"""The asyncio ESL client (``--esl asyncio``): what only it does, against the minimal peer, and
the event parser both clients use (esl_messages.parse_plain) on bytes. Its framing
(fork_server.esl_wire, shared with the python-ESL guard) is tested in test_esl_wire.py; the
behaviour it shares with the default adapter (the event link, esl_async.EslEvents, among it)
is tested for both in test_esl_client.py."""

import asyncio
import logging

import pytest

from fork_server import esl_messages as em
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


def _event_payload(lines, body=b""):
    """A text/event-plain payload as the switch writes it: header lines, a blank line, a body."""
    return b"".join(line + b"\n" for line in lines) + b"\n" + body


def test_parse_plain_decodes_the_lines_it_reads():
    raw = _event_payload([b"Event-Name: PLAYBACK_STOP", b"Core-UUID: x", b"Unique-ID: " + U.encode(),
                          b"variable_voicefork_route: sup%70ort", b"Playback-File-Path: %2Ftmp%2Fa%20b%25.r8",
                          b"Playback-Status: break", b"variable_playback_ms: 1520"])
    assert em.parse_plain(raw) == em.PlaybackStopped(U, "support", "/tmp/a b%.r8", "break", 1520)
    (frame,) = EslReader().feed(serialize_event(
        {"Event-Name": "CUSTOM", "Event-Subclass": "mod_audio_fork::play_audio", "Unique-ID": U,
         "Playback-File-Path": "/tmp/a b%.r8"}, '{"file":"/tmp/x.r8"}'))
    assert em.parse_plain(frame.body) == em.ForkEvent(U, None, "play_audio", {"file": "/tmp/x.r8"})


def test_parse_plain_first_occurrence_wins():
    raw = _event_payload([b"Event-Name: PLAYBACK_START", b"Unique-ID: " + U.encode(),
                          b"Playback-File-Path: /first.r8", b"Event-Name: CUSTOM", b"Playback-File-Path: /second.r8"])
    assert em.parse_plain(raw) == em.PlaybackStarted(U, None, "/first.r8")


def test_parse_plain_takes_the_custom_body_by_its_content_length_and_no_header_from_it():
    body = b'{"type":"connect"}'
    lines = [b"Event-Name: CUSTOM", b"Event-Subclass: mod_audio_fork%3A%3Aconnect", b"Unique-ID: " + U.encode(),
             b"Content-Length: %d" % len(body)]
    # Bytes past the Content-Length are not the body; the body's lines are not headers.
    assert em.parse_plain(_event_payload(lines, body + b"trailing")) == em.ForkEvent(U, None, "connect", {"type": "connect"})
    inside = b"variable_voicefork_route: sales\nPlayback-File-Path: /x.r8\n"
    raw = _event_payload([b"Event-Name: PLAYBACK_START", b"Unique-ID: " + U.encode(), b"Content-Length: %d" % len(inside)],
                         inside)
    assert em.parse_plain(raw) == em.PlaybackStarted(U, None, "")
    # A header whose name only ends in one we read is another header.
    raw = _event_payload([b"Event-Name: PLAYBACK_START", b"Unique-ID: " + U.encode(), b"X-Playback-File-Path: /x.r8"])
    assert em.parse_plain(raw) == em.PlaybackStarted(U, None, "")


@pytest.mark.parametrize("raw", [
    b"", b"\n", b"\n\n", b"Event-Name", b"Event-Name: CUSTOM\nUnique-ID: " + U.encode(),  # no blank line, no end
    b"\xff\xfe\x00\n\n\x00", b"Event-Name: %%%ZZ%\nUnique-ID: %\xff\xfe\n\n",
    b"Event-Name: CUSTOM\nEvent-Subclass: mod_audio_fork::x\nUnique-ID: " + U.encode() + b"\nContent-Length: -5\n\n{}",
    b"Event-Name: CUSTOM\nEvent-Subclass: mod_audio_fork::x\nUnique-ID: " + U.encode() + b"\nContent-Length: 99999\n\n{",
    b"Event-Name: PLAYBACK_START\nUnique-ID: " + U.encode() + b"\nPlayback-File-Path: " + b"%41" * 200_000 + b"\n\n",
    bytes(range(256)) * 40,
])
def test_parse_plain_never_raises_on_junk(raw):
    ev = em.parse_plain(raw)
    assert ev is None or isinstance(ev, em.EslEvent)
    if isinstance(ev, em.PlaybackStarted):
        assert len(ev.path) <= 256  # bounded, whatever the switch sent


def test_parse_plain_event_decodes_values_and_keeps_the_body():
    # All the headers, for tools that look at every one (testbed.bench.esltap).
    (frame,) = EslReader().feed(serialize_event(
        {"Event-Name": "CUSTOM", "Event-Subclass": "mod_audio_fork::play_audio", "Unique-ID": U,
         "Playback-File-Path": "/tmp/a b%.r8"}, '{"file":"/tmp/x.r8"}'))
    headers, body = parse_plain_event(frame.body)
    assert headers["Playback-File-Path"] == "/tmp/a b%.r8" and headers["Event-Subclass"] == "mod_audio_fork::play_audio"
    assert body == '{"file":"/tmp/x.r8"}'
