"""The emulated Event Socket: framing byte for byte, python-ESL unchanged, subscription rules."""

import asyncio
import json

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from testbed.freeswitch.esl_server import EslServer, parse_block, serialize_event

ESL = pytest.importorskip("ESL")


class Core:
    def __init__(self):
        self.listeners, self.sent = [], []

    def api(self, command, args):
        return f"+OK {command} {args}\n" if command != "bad" else "-ERR no\n"

    def sendmsg(self, uuid, headers, body):
        self.sent.append((uuid, dict(headers), body))
        return "+OK"

    def subscribe(self, listener):
        self.listeners.append(listener)
        return lambda: self.listeners.remove(listener)

    def fire(self, headers, body=None):
        for listener in list(self.listeners):
            listener(headers, body)


@pytest.fixture
async def server():
    core = Core()
    srv = EslServer(core, "s3cret")
    await srv.start()
    yield srv, core
    await srv.close()


async def talk(port, *blocks, read_for=0.2):
    r, w = await asyncio.open_connection("127.0.0.1", port)
    for b in blocks:
        w.write(b)
        await w.drain()
    await asyncio.sleep(read_for)
    w.close()
    out = b""
    try:
        while chunk := await asyncio.wait_for(r.read(65536), 0.3):
            out += chunk
    except (TimeoutError, ConnectionError):
        pass
    return out


def test_event_serialisation_matches_switch_event_serialize():
    raw = serialize_event({"Event-Name": "CUSTOM", "Caller-Caller-ID-Name": "A B"}, '{"x":1}')
    inner = b"Event-Name: CUSTOM\nCaller-Caller-ID-Name: A%20B\nContent-Length: 7\n\n{\"x\":1}"
    assert raw == b"Content-Length: %d\nContent-Type: text/event-plain\n\n" % len(inner) + inner
    assert serialize_event({"Event-Name": "DTMF"}, None).endswith(b"Event-Name: DTMF\n\n")


def test_parse_block():
    assert parse_block("sendmsg u\ncall-command: execute\nevent-lock: true\n\n") == (
        "sendmsg u",
        {"call-command": "execute", "event-lock": "true"},
    )


async def test_auth_then_api_framing(server):
    srv, _ = server
    out = await talk(srv.port, b"auth s3cret\n\n", b"api status now\n\n")
    assert out == (
        b"Content-Type: auth/request\n\n"
        b"Content-Type: command/reply\nReply-Text: +OK accepted\n\n"
        b"Content-Type: api/response\nContent-Length: 15\n\n+OK status now\n"
    )


async def test_wrong_password_is_refused_and_disconnected(server):
    srv, _ = server
    out = await talk(srv.port, b"auth nope\n\n", b"api status\n\n")
    assert b"Reply-Text: -ERR invalid\n\n" in out
    assert b"Content-Type: text/disconnect-notice" in out
    assert b"api/response" not in out


async def test_commands_before_auth_are_refused(server):
    srv, _ = server
    out = await talk(srv.port, b"api status\n\n")
    assert b"-ERR command not found" in out and b"api/response" not in out


async def test_every_word_after_custom_is_a_subclass(server):
    srv, core = server
    r, w = await asyncio.open_connection("127.0.0.1", srv.port)
    w.write(b"auth s3cret\n\nevent plain CUSTOM mod_audio_fork::connect PLAYBACK_START\n\n")
    await asyncio.sleep(0.1)
    core.fire({"Event-Name": "PLAYBACK_START", "Unique-ID": "u"})  # taken as a subclass: not sent
    core.fire({"Event-Name": "CUSTOM", "Event-Subclass": "mod_audio_fork::connect", "Unique-ID": "u"})
    core.fire({"Event-Name": "CUSTOM", "Event-Subclass": "other::thing", "Unique-ID": "u"})
    await asyncio.sleep(0.1)
    w.close()
    out = await r.read()
    assert out.count(b"text/event-plain") == 1 and b"mod_audio_fork%3A%3Aconnect" in out


async def test_filters_pass_an_event_when_any_matches(server):
    srv, core = server
    r, w = await asyncio.open_connection("127.0.0.1", srv.port)
    w.write(b"auth s3cret\n\nevent plain DTMF\n\nfilter variable_voicefork_route a\n\nfilter variable_voicefork_route b\n\n")
    await asyncio.sleep(0.1)
    for route in ("a", "b", "c"):
        core.fire({"Event-Name": "DTMF", "variable_voicefork_route": route})
    core.fire({"Event-Name": "DTMF"})
    await asyncio.sleep(0.1)
    w.close()
    out = await r.read()
    assert out.count(b"text/event-plain") == 2
    assert b"+OK filter added. [variable_voicefork_route]=[a]" in out


def _python_esl_session(port, core_fire):
    con = ESL.ESLconnection("127.0.0.1", str(port), "s3cret")
    assert con.connected()
    assert con.api("status", "x").getBody() == "+OK status x\n"
    con.events("plain", "DTMF CUSTOM mod_audio_fork::play_audio")
    con.filter("Unique-ID", "u1")
    ev = con.sendRecv("sendmsg u1\ncall-command: execute\nexecute-app-name: playback\nexecute-app-arg: /x.r8\nevent-lock: true")
    assert ev.getHeader("Reply-Text") == "+OK"
    core_fire()
    e = con.recvEventTimed(2000)
    got = (e.getHeader("Event-Subclass"), e.getHeader("Caller-Caller-ID-Name"), e.getBody())
    con.disconnect()
    return got


async def test_python_esl_connects_unchanged(server):
    srv, core = server
    loop = asyncio.get_running_loop()
    body = json.dumps({"file": "/tmp/u1_1.tmp.r8"})

    def fire():
        loop.call_soon_threadsafe(
            core.fire,
            {"Event-Name": "CUSTOM", "Event-Subclass": "mod_audio_fork::play_audio", "Unique-ID": "u1", "Caller-Caller-ID-Name": "Ann \"O\" Neil"},
            body,
        )

    got = await asyncio.to_thread(_python_esl_session, srv.port, fire)
    assert got == ("mod_audio_fork::play_audio", 'Ann "O" Neil', body)
    assert core.sent == [("u1", {"call-command": "execute", "execute-app-name": "playback", "execute-app-arg": "/x.r8", "event-lock": "true"}, None)]


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(junk=st.binary(max_size=600))
async def test_garbage_never_takes_the_server_down(server, junk):
    srv, _ = server
    await talk(srv.port, junk, b"\n\n", read_for=0.01)
    out = await talk(srv.port, b"auth s3cret\n\n", b"api status\n\n", read_for=0.05)
    assert b"+OK status" in out
