"""Several switches behind one fork server (issue 17), on loopback: each call's ESL commands go
to the switch its fork metadata names, a fork naming an unknown switch is refused with one log
line, /healthz and /metrics show each switch's link, and a draining server fails /healthz
before it stops taking forks (so a load balancer's checks send it no new calls)."""

import asyncio
import base64
import json
import logging
import urllib.request

import pytest
from websockets.asyncio.client import connect

pytest.importorskip("ESL")

from fork_server.app import App  # noqa: E402
from fs_dialplan.model import (  # noqa: E402
    BasicAuth, Config, Connector, ForkServerSettings, FreeswitchSettings, PlaybackSettings, Route,
)
from mini_esl import MiniEsl  # noqa: E402
from testbed.connector.server import ConnectorServer  # noqa: E402

ENV = {"ESL_PW": "pw-a", "ESL_PW_B": "pw-b", "FORK_PW": "fork-secret"}
AUTH = {"Authorization": "Basic " + base64.b64encode(b"freeswitch:fork-secret").decode()}
U1 = "3f1a2b4c-5d6e-4f70-8a9b-0c1d2e3f4a51"
U2 = "3f1a2b4c-5d6e-4f70-8a9b-0c1d2e3f4a52"


def config(port_a, port_b, connector_url, spool, grace=0.0):
    base = FreeswitchSettings(esl_password_env="ESL_PW")
    return Config(
        source="<test>",
        freeswitch=base,
        switches=(FreeswitchSettings(esl_password_env="ESL_PW", esl_port=port_a, name="fs-a"),
                  FreeswitchSettings(esl_password_env="ESL_PW_B", esl_port=port_b, name="fs-b")),
        fork_server=ForkServerSettings(public_url="ws://127.0.0.1:0", auth=BasicAuth("freeswitch", "FORK_PW"),
                                       drain_grace_s=grace, drain_timeout_s=5),
        connectors={"bot": Connector("bot", connector_url, connect_timeout_s=1.0)},
        routes=(Route("support", "bot", rate=8000, number="+15551234567"),),
        playback=PlaybackSettings(spool_dir=str(spool), freeswitch_spool_dir=str(spool)),
    )


def dump(cmd):
    if cmd.startswith("uuid_dump"):
        return "Caller-Caller-ID-Number: %2B15550001111\nCaller-Destination-Number: %2B15551234567\nvariable_write_rate: 8000\n"
    return None


@pytest.fixture
async def cluster(tmp_path, request):
    a, b = MiniEsl("pw-a"), MiniEsl("pw-b")
    await a.start()
    await b.start()
    a.on_api = b.on_api = dump
    bot = ConnectorServer("script", bargein=False)
    await bot.start()
    app = App(config(a.port, b.port, bot.url("/bot"), tmp_path / "spool", getattr(request, "param", 0.0)),
              env=ENV, listen_port=0, logger=logging.getLogger("voicefork.test"))
    await app.start()
    assert await app.esls["fs-a"].wait_up(5) and await app.esls["fs-b"].wait_up(5)
    yield app, a, b, bot
    await app.stop()
    await bot.close()
    await a.close()
    await b.close()


def _get(port, path):
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


async def _fork(app, uuid, switch):
    ws = await connect(f"ws://127.0.0.1:{app.port}/calls/support", subprotocols=["audio.drachtio.org"],
                       additional_headers=AUTH, compression=None)
    meta = {"route": "support", "uuid": uuid, "rate": "8k"}
    if switch is not None:
        meta["switch"] = switch
    await ws.send(json.dumps(meta, separators=(",", ":")))
    return ws


async def until(pred, timeout=5.0):
    end = asyncio.get_running_loop().time() + timeout
    while not pred():
        assert asyncio.get_running_loop().time() < end, "timed out"
        await asyncio.sleep(0.01)


async def test_each_call_s_commands_go_to_the_switch_that_owns_it(cluster):
    app, a, b, bot = cluster
    f1, f2 = await _fork(app, U1, "fs-a"), await _fork(app, U2, "fs-b")
    try:
        await until(lambda: len(app.calls) == 2)
        await until(lambda: any(U1 in c for c in a.commands) and any(U2 in c for c in b.commands))
        assert not any(U2 in c for c in a.commands) and not any(U1 in c for c in b.commands)
        assert {c["uuid"]: c["switch"] for c in (call.info() for call in app.calls.values())} == {U1: "fs-a", U2: "fs-b"}
    finally:
        await f1.close()
        await f2.close()
    await until(lambda: not app.calls)
    assert not any(U2 in c for c in a.commands) and not any(U1 in c for c in b.commands)


async def test_a_fork_naming_an_unknown_switch_or_none_is_refused(cluster, caplog):
    app, a, b, bot = cluster
    for uuid, switch in ((U1, "fs-c"), (U2, None)):
        ws = await _fork(app, uuid, switch)
        await asyncio.wait_for(ws.wait_closed(), 5)
        assert ws.close_code == 1008 and ws.close_reason == "unknown switch"
    assert not app.calls
    assert app.metrics.rejected.labels("unknown_switch")._value.get() == 2
    lines = [r.getMessage() for r in caplog.records if "not in freeswitch.switches" in r.getMessage()]
    assert len(lines) == 2 and "'fs-c'" in lines[0] and "fs-a, fs-b" in lines[0]
    assert not any(U1 in c or U2 in c for c in a.commands + b.commands)


async def test_healthz_and_metrics_show_each_switch(cluster):
    app, a, b, bot = cluster
    status, _ = await asyncio.to_thread(_get, app.port, "/healthz")
    assert status == 200
    _, metrics = await asyncio.to_thread(_get, app.port, "/metrics")
    assert 'voicefork_esl_up{switch="fs-a"} 1.0' in metrics and 'voicefork_esl_up{switch="fs-b"} 1.0' in metrics
    await b.close()  # fs-b's Event Socket goes away; calls from fs-a still work, so still healthy
    await until(lambda: not app.esls["fs-b"].up)
    status, _ = await asyncio.to_thread(_get, app.port, "/healthz")
    _, metrics = await asyncio.to_thread(_get, app.port, "/metrics")
    assert status == 200 and 'voicefork_esl_up{switch="fs-b"} 0.0' in metrics
    assert 'voicefork_esl_reconnects_total{switch="fs-b"}' in metrics


@pytest.mark.parametrize("cluster", [0.6], indirect=True)
async def test_draining_fails_healthz_first_and_still_takes_forks_during_the_grace(cluster):
    app, a, b, bot = cluster
    drain = asyncio.create_task(app.drain(5))
    await asyncio.sleep(0.1)
    status, body = await asyncio.to_thread(_get, app.port, "/healthz")
    assert status == 503
    ws = await _fork(app, U1, "fs-a")  # already on its way when the balancer last looked: taken
    await until(lambda: U1 in app.calls)
    await asyncio.sleep(0.7)  # the grace is over: the listener is closed
    with pytest.raises(OSError):
        await connect(f"ws://127.0.0.1:{app.port}/calls/support", subprotocols=["audio.drachtio.org"],
                      additional_headers=AUTH, open_timeout=2)
    assert U1 in app.calls  # the live call runs on
    await ws.close()
    await asyncio.wait_for(drain, 6)
