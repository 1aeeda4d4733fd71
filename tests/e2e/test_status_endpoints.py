"""GET /calls/<uuid> and GET /freeswitch/status on the fork server's port, against the emulated
switch: what they say, and that they say nothing secret."""

import asyncio
import json
import time
import uuid

import pytest

pytest.importorskip("ESL")

from testbed.stack import Stack  # noqa: E402

SALES = "+15557654321"  # recorded, in config/voicefork.yaml


async def test_one_call_and_the_switch_status():
    async with Stack(connector_options={"answer_delay_ms": 60_000}) as s:
        ch = s.switch.place_call(SALES, "+15550001111", "Mallory")
        await s.connector.wait_call(0, timeout=5)
        end = time.monotonic() + 5
        while (info := json.loads((await s._get(f"/calls/{ch.uuid}"))[1]))["state"] != "active":
            assert time.monotonic() < end, info
            await asyncio.sleep(0.05)
        assert {k: info[k] for k in ("uuid", "route", "connector", "fork_rate", "state")} == {
            "uuid": ch.uuid, "route": "sales", "connector": "sales-bot", "fork_rate": 8000, "state": "active"}
        assert info["recording"].endswith(f"/sales-{ch.uuid}.wav")
        assert "+15550001111" not in json.dumps(info) and "Mallory" not in json.dumps(info)  # no caller data
        assert (await s._get(f"/calls/{uuid.uuid4()}"))[0] == 404
        assert (await s._get(f"/calls/{ch.uuid.upper()}"))[0] == 200

        end = time.monotonic() + 8
        while (status := json.loads((await s._get("/freeswitch/status"))[1])).get("sessions") != 1:
            assert time.monotonic() < end, status
            await asyncio.sleep(0.2)
        assert status["esl"]["up"] is True and status["version"].startswith("FreeSWITCH Version 1.10.12")
        assert status["ready"] is True and status["sessions_max"] == 1000 and status["fork_server_calls"] == 1
        assert 0 <= status["checked_s_ago"] < 6
        body = json.dumps(status) + json.dumps(info)
        for secret in s.env.values():
            assert secret not in body
        ch.hangup()
        await asyncio.wait_for(ch.hungup.wait(), 5)
        end = time.monotonic() + 5
        while (await s._get(f"/calls/{ch.uuid}"))[0] != 404:
            assert time.monotonic() < end
            await asyncio.sleep(0.05)
