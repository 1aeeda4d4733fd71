"""One whole call through the real App on loopback: a websockets client speaking as
mod_audio_fork (REF handshake: subprotocol audio.drachtio.org, metadata first, raw L16),
a minimal ESL peer that "plays" each queued file, and the reference script connector.
The emulator with REF's real timing and the caller's ear comes with issue 4."""

import asyncio
import base64
import dataclasses
import json
import logging
import os

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

pytest.importorskip("ESL")

from fork_server.app import App  # noqa: E402
from fs_dialplan.model import (  # noqa: E402
    BasicAuth, Config, Connector, ForkServerSettings, FreeswitchSettings, PlaybackSettings, Route,
)
from mini_esl import MiniEsl  # noqa: E402
from testbed.connector.server import ConnectorServer  # noqa: E402
from testbed.speech import CALLER_QUESTION, load_wav  # noqa: E402

U = "3f1a2b4c-5d6e-4f70-8a9b-0c1d2e3f4a5b"
ENV = {"ESL_PW": "pw", "FORK_PW": "fork-secret"}
AUTH = {"Authorization": "Basic " + base64.b64encode(b"freeswitch:fork-secret").decode()}


def config(esl_port, connector_url, spool, rate=16000):
    return Config(
        source="<test>",
        freeswitch=FreeswitchSettings(esl_password_env="ESL_PW", esl_port=esl_port),
        fork_server=ForkServerSettings(public_url="ws://127.0.0.1:0", auth=BasicAuth("freeswitch", "FORK_PW")),
        connectors={"bot": Connector("bot", connector_url, connect_timeout_s=1.0)},
        routes=(Route("support", "bot", rate=rate, number="+15551234567", metadata={"tier": "gold"}),),
        playback=PlaybackSettings(spool_dir=str(spool), freeswitch_spool_dir=str(spool)),
    )


class FakeSwitch:
    """Scripts MiniEsl: a caller lookup, playback of queued files, uuid_kill ends the fork."""

    def __init__(self, esl, speed=8.0):
        self.speed = speed
        self.esl, self.played, self.killed, self.fork, self.breaks = esl, [], asyncio.Event(), None, []
        self.queue: asyncio.Queue = asyncio.Queue()
        esl.on_api, esl.on_sendmsg = self.api, self.sendmsg
        self.task = asyncio.get_running_loop().create_task(self.player())

    def api(self, cmd):
        if cmd.startswith("uuid_dump"):
            return ("Caller-Caller-ID-Number: %2B15550001111\nCaller-Caller-ID-Name: Alice%20%22Q%22\n"
                    "Caller-Destination-Number: %2B15551234567\nvariable_write_rate: 8000\n")
        if cmd.startswith("uuid_break"):
            self.breaks.append(cmd)
            while not self.queue.empty():  # REF: "all" stops the current file and drops the queue
                self.queue.get_nowait()
        if cmd.startswith("uuid_kill"):
            self.killed.set()
            self.esl.emit(self.headers("CHANNEL_HANGUP_COMPLETE", **{"Hangup-Cause": "NORMAL_CLEARING"}))
        return None

    def headers(self, name, **kw):
        return {"Event-Name": name, "Unique-ID": U, "variable_voicefork_route": "support", **kw}

    def sendmsg(self, uuid, hdrs):
        assert hdrs.get("event-lock") == "true"
        self.queue.put_nowait(hdrs["execute-app-arg"])

    async def player(self):
        while True:
            path = await self.queue.get()
            with open(path, "rb") as f:
                self.played.append(f.read())
            self.esl.emit(self.headers("PLAYBACK_START", **{"Playback-File-Path": path}))
            await asyncio.sleep(len(self.played[-1]) / 16000 / self.speed)
            self.esl.emit(self.headers("PLAYBACK_STOP", **{"Playback-File-Path": path, "Playback-Status": "done"}))


@pytest.fixture
async def stack(tmp_path, request):
    opts = getattr(request, "param", {})
    esl = MiniEsl("pw")
    await esl.start()
    switch = FakeSwitch(esl, speed=opts.get("speed", 8.0))
    bot = ConnectorServer("script", hangup_after_playback=True, bargein=opts.get("bargein", False))
    await bot.start()
    url = "ws://127.0.0.1:9/unreachable" if opts.get("dead") else bot.url("/bot")
    app = App(config(esl.port, url, tmp_path / "spool", opts.get("rate", 16000)), env=ENV, listen_port=0,
              logger=logging.getLogger("voicefork.test"))
    await app.start()
    assert await app.esl.wait_up(5)
    yield app, switch, bot, tmp_path / "spool"
    await app.stop()
    await bot.close()
    switch.task.cancel()
    await esl.close()


async def test_a_whole_call_reaches_the_connector_and_the_bot_is_played_back(stack):
    app, switch, bot, spool = stack
    caller = load_wav(CALLER_QUESTION, 16000)
    url = f"ws://127.0.0.1:{app.port}/calls/support"
    async with connect(url, subprotocols=["audio.drachtio.org"], additional_headers=AUTH, compression=None) as fork:
        assert fork.subprotocol == "audio.drachtio.org"
        await fork.send(json.dumps({"route": "support", "uuid": U}, separators=(",", ":")))
        for i in range(0, len(caller), 640):
            await fork.send(caller[i : i + 640])
            await asyncio.sleep(0.005)
        await asyncio.wait_for(switch.killed.wait(), 15)  # the bot hung up after its answer played
    record = await bot.wait_call(U, timeout=5)
    await record.wait_stopped(timeout=5)
    assert record.start["call"]["from"] == "+15550001111" and record.start["call"]["caller_name"] == 'Alice "Q"'
    assert record.start["call"]["metadata"] == {"tier": "gold"}
    got = record.audio()
    assert got == caller[: len(got)] and len(caller) - len(got) < 640  # 16k route: passthrough, whole frames
    assert record.violations == []
    assert record.stop_reason == "connector_hangup"
    heard = b"".join(switch.played)
    assert len(heard) >= 0.9 * 5.1 * 8000 * 2  # ~5.1 s of TTS at the 8 kHz write rate
    assert all(len(seg) % 320 == 0 for seg in switch.played)  # whole 20 ms ptimes
    for _ in range(50):
        if not app.calls:
            break
        await asyncio.sleep(0.05)
    assert not app.calls and not any(os.scandir(spool))  # nothing left behind


async def test_the_fork_socket_refuses_missing_or_wrong_auth_and_unknown_routes(stack):
    app = stack[0]
    base = f"ws://127.0.0.1:{app.port}"
    for url, headers, status in [
        (f"{base}/calls/support", {}, 401),
        (f"{base}/calls/support", {"Authorization": "Basic " + base64.b64encode(b"freeswitch:nope").decode()}, 403),
        (f"{base}/calls/nosuch", AUTH, 404),
    ]:
        with pytest.raises(InvalidStatus) as err:
            async with connect(url, additional_headers=headers):
                pass
        assert err.value.response.status_code == status


async def open_fork(app):
    fork = await connect(f"ws://127.0.0.1:{app.port}/calls/support", subprotocols=["audio.drachtio.org"],
                         additional_headers=AUTH, compression=None)
    await fork.send(json.dumps({"route": "support", "uuid": U}, separators=(",", ":")))
    return fork


@pytest.mark.parametrize("stack", [{"dead": True}], indirect=True)
async def test_unreachable_connector_runs_the_fallback_within_the_connect_timeout(stack):
    app, switch, _, _ = stack
    fork = await open_fork(app)
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    await asyncio.wait_for(switch.killed.wait(), 3)  # route fallback: hangup
    assert loop.time() - t0 < 2.0
    await fork.close()


@pytest.mark.parametrize("stack", [{"bargein": True, "rate": 8000, "speed": 1.0}], indirect=True)
async def test_barge_in_breaks_playback_and_reports_marks_cleared(stack):
    app, switch, bot, _ = stack
    fork = await open_fork(app)
    quiet = bytes(320)
    for _ in range(10):  # 200 ms of silence at 8 kHz: the bot starts talking
        await fork.send(quiet)
        await asyncio.sleep(0.02)
    record = await bot.wait_call(U, timeout=5)
    for _ in range(200):  # barge in once the bot has queued a mark that cannot have played yet
        if switch.played and record.sent_of("mark"):
            break
        await asyncio.sleep(0.01)
    first_mark = record.sent_of("mark")[0].message["name"]
    speech = load_wav(CALLER_QUESTION, 8000)
    for i in range(0, len(speech) // 2, 320):  # the caller talks over the bot
        await fork.send(speech[i : i + 320])
        await asyncio.sleep(0.01)
        if switch.breaks:
            break
    for _ in range(100):
        if switch.breaks:
            break
        await asyncio.sleep(0.02)
    assert switch.breaks and switch.breaks[0].endswith(" all")
    for _ in range(100):
        if record.mark_status(first_mark) is not None:
            break
        await asyncio.sleep(0.02)
    # Played at real time while the bot streams at 3x: the first mark is still queued at the break.
    assert record.mark_status(first_mark) == "cleared"
    assert app.calls[U].session.barge_ins == 1
    await fork.close()
    await record.wait_stopped(timeout=5)
    assert record.stop_reason == "hangup" and record.violations == []


async def test_stop_ends_even_when_a_background_task_swallows_its_cancel(stack, caplog):
    # A lost cancel (Python 3.11's wait_for, fixed at the source with asyncio.timeout) kept the
    # status poller polling, and stop() waited for it for ever. stop() cancels again.
    app, *_ = stack
    cancels = []

    async def stubborn():
        while len(cancels) < 2:
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                cancels.append(1)  # swallowed, as a lost cancel looks from outside
        await asyncio.sleep(3600)

    app._spawn(stubborn())
    await asyncio.sleep(0)
    await asyncio.wait_for(app.stop(), 10)
    assert len(cancels) == 2 and not app._background
    assert "ignored their cancel (test_stop_ends_even_when_a_background_task_swallows_its_cancel.<locals>.stubborn)" in caplog.text


def test_a_call_s_start_lead_is_its_connector_s_or_its_protocol_s(tmp_path):
    # Twilio bots pace their audio in real time (Twilio plays it from a buffer): 60 ms by default;
    # voicefork connectors send unpaced: none; a connector's playout_lead_ms wins over both.
    base = config(1, "ws://127.0.0.1:9/bot", tmp_path)
    sid = "AC" + "0123456789abcdef" * 2
    connectors = {
        "bot": Connector("bot", "ws://127.0.0.1:9/bot"),
        "tw": Connector("tw", "ws://127.0.0.1:9/tw", protocol="twilio", account_sid=sid, auth_token_env="FORK_PW"),
        "slow": Connector("slow", "ws://127.0.0.1:9/slow", playout_lead_ms=100),
        "tw0": Connector("tw0", "ws://127.0.0.1:9/tw0", protocol="twilio", account_sid=sid, auth_token_env="FORK_PW",
                         playout_lead_ms=0),
    }
    routes = tuple(Route(n, n, number=f"+1555123456{i}") for i, n in enumerate(connectors))
    app = App(dataclasses.replace(base, connectors=connectors, routes=routes), env=ENV, listen_port=0)
    leads = {r.name: app._settings(r, 8000).start_lead_ms for r in routes}
    assert leads == {"bot": 0, "tw": 60, "slow": 100, "tw0": 0}
