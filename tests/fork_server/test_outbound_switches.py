"""Outbound calls with several switches, on loopback ESL peers: a request naming a switch
originates on it, one naming none takes the next switch whose link is up, a switch that is down
is never asked; the job's event and the fork from that switch are matched to the call by their
uuids."""

import asyncio
import base64
import json
import logging
import re

import pytest
from websockets.asyncio.client import connect

pytest.importorskip("ESL")

from fork_server.app import App  # noqa: E402
from fs_dialplan.model import (  # noqa: E402
    BasicAuth, Config, Connector, ForkServerSettings, FreeswitchSettings, OutboundSettings, PlaybackSettings, Route,
    Trunk,
)
from mini_esl import MiniEsl  # noqa: E402
from testbed.connector.server import ConnectorServer  # noqa: E402
from testbed.stack import http_request  # noqa: E402

ENV = {"ESL_PW": "pw-a", "ESL_PW_B": "pw-b", "FORK_PW": "fork-secret", "API": "api-secret"}
API = {"Authorization": "Bearer api-secret", "Content-Type": "application/json"}
FORK_AUTH = {"Authorization": "Basic " + base64.b64encode(b"freeswitch:fork-secret").decode()}
CALL = {"to": "+15551230000", "from": "+15557654321", "route": "support"}


def config(port_a, port_b, connector_url, spool):
    return Config(
        source="<test>",
        freeswitch=FreeswitchSettings(esl_password_env="ESL_PW"),
        switches=(FreeswitchSettings(esl_password_env="ESL_PW", esl_port=port_a, name="fs-a"),
                  FreeswitchSettings(esl_password_env="ESL_PW_B", esl_port=port_b, name="fs-b")),
        fork_server=ForkServerSettings(public_url="ws://127.0.0.1:0", auth=BasicAuth("freeswitch", "FORK_PW")),
        connectors={"bot": Connector("bot", connector_url, connect_timeout_s=1.0)},
        routes=(Route("support", "bot", rate=8000, number="+15551234567", metadata={"tier": "gold"}),),
        playback=PlaybackSettings(spool_dir=str(spool), freeswitch_spool_dir=str(spool)),
        trunks=(Trunk("carrier", "sip.example.com", acl_cidrs=("192.0.2.0/24",)),),
        outbound=OutboundSettings(token_env="API", default_trunk="carrier", calls_per_second=100, burst=100),
    )


@pytest.fixture
async def two(tmp_path):
    a, b = MiniEsl("pw-a"), MiniEsl("pw-b")
    await a.start()
    await b.start()
    a.on_api = b.on_api = lambda cmd: ("Caller-Caller-ID-Number: %2B15557654321\nvariable_write_rate: 8000\n"
                                       if cmd.startswith("uuid_dump") else None)
    bot = ConnectorServer("script", bargein=False)
    await bot.start()
    app = App(config(a.port, b.port, bot.url("/bot"), tmp_path / "spool"), env=ENV, listen_port=0,
              logger=logging.getLogger("voicefork.test"))
    await app.start()
    assert await app.esls["fs-a"].wait_up(5) and await app.esls["fs-b"].wait_up(5)
    yield app, a, b, bot
    await app.stop()
    await bot.close()
    await a.close()
    await b.close()


async def until(pred, timeout=5.0):
    end = asyncio.get_running_loop().time() + timeout
    while not pred():
        assert asyncio.get_running_loop().time() < end, "timed out"
        await asyncio.sleep(0.01)


async def post(app, doc):
    code, _, body = await http_request(app.port, "POST", "/v1/calls", json.dumps(doc).encode(), API)
    return code, json.loads(body)


def bgapis(esl):
    return [c for c in esl.commands if c.startswith("bgapi originate")]


def job_event(job, body):
    data = f"Event-Name: BACKGROUND_JOB\nJob-UUID: {job}\nJob-Command: originate\nContent-Length: {len(body)}\n\n{body}"
    return b"Content-Type: text/event-plain\nContent-Length: %d\n\n" % len(data) + data.encode()


async def test_each_originate_goes_to_the_switch_asked_for_or_the_next_one_up(two):
    app, a, b, bot = two
    code, doc = await post(app, {**CALL, "switch": "fs-b"})
    assert code == 202 and doc["switch"] == "fs-b"
    await until(lambda: len(bgapis(b)) == 1)
    assert bgapis(a) == [] and f"origination_uuid={doc['id']}" in bgapis(b)[0]
    job = re.search(r"Job-UUID: (\S+)", bgapis(b)[0]).group(1)
    b.send_events(job_event(job, f"+OK {doc['id']}\n"))  # answered, as the switch reports it
    await until(lambda: app.outbound.book.get(doc["id"]).status.value == "answered")
    # Its fork, from fs-b: matched by uuid, the start says outbound with the request's numbers.
    ws = await connect(f"ws://127.0.0.1:{app.port}/calls/support", subprotocols=["audio.drachtio.org"],
                       additional_headers=FORK_AUTH, compression=None)
    await ws.send(json.dumps({"route": "support", "uuid": doc["id"], "rate": "8k", "switch": "fs-b",
                              "direction": "outbound"}, separators=(",", ":")))
    record = await bot.wait_call(0, timeout=5)
    call = record.start["call"]
    assert (call["direction"], call["from"], call["to"], call["metadata"]) == ("outbound", CALL["from"], CALL["to"], {"tier": "gold"})
    await ws.close()
    # No switch named: in turn over the switches whose link is up.
    picks = [(await post(app, CALL))[1]["switch"] for _ in range(4)]
    assert sorted(picks) == ["fs-a", "fs-a", "fs-b", "fs-b"]
    await b.close()
    await until(lambda: not app.esls["fs-b"].up)
    assert [(await post(app, CALL))[1]["switch"] for _ in range(3)] == ["fs-a"] * 3
    code, doc = await post(app, {**CALL, "switch": "fs-b"})
    assert code == 503 and "fs-b" in doc["error"]
    code, doc = await post(app, {**CALL, "switch": "fs-c"})
    assert code == 400 and doc["field"] == "switch"


async def test_a_fork_saying_outbound_that_this_server_did_not_originate_is_still_outbound(two):
    """Another fork server's call (scale-out): the rendered metadata says so; no request metadata here."""
    app, a, b, bot = two
    uuid = "3f1a2b4c-5d6e-4f70-8a9b-0c1d2e3f4a59"
    ws = await connect(f"ws://127.0.0.1:{app.port}/calls/support", subprotocols=["audio.drachtio.org"],
                       additional_headers=FORK_AUTH, compression=None)
    await ws.send(json.dumps({"route": "support", "uuid": uuid, "rate": "8k", "switch": "fs-a", "direction": "outbound"},
                             separators=(",", ":")))
    record = await bot.wait_call(0, timeout=5)
    assert record.start["call"]["direction"] == "outbound" and record.start["call"]["metadata"] == {"tier": "gold"}
    await ws.close()
