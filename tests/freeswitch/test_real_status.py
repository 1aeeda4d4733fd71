"""GET /freeswitch/status and GET /calls/<uuid> against a REAL FreeSWITCH (``FREESWITCH_BIN``):
the parser reads the real ``version`` and ``status`` replies."""

import asyncio
import json
import os
import time

import pytest

BIN = os.environ.get("FREESWITCH_BIN")
pytestmark = pytest.mark.freeswitch  # skipped without FREESWITCH_BIN, failed under CI=true (conftest.py)
pytest.importorskip("ESL")

from testbed.real_switch import RealStack  # noqa: E402

SALES = "+15557654321"


async def get(port, path):
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
        head = await reader.readuntil(b"\r\n\r\n")
        length = next(int(l.split(b":")[1]) for l in head.split(b"\r\n") if l.lower().startswith(b"content-length"))
        return int(head.split()[1]), await reader.readexactly(length)
    finally:
        writer.close()


async def test_status_endpoints_on_a_real_switch():
    async with RealStack(BIN, connector_options={"answer_delay_ms": 60_000}) as s:
        call = await s.place_call(SALES)
        record = await s.wait_call(0, timeout=10)
        uuid = record.start["call"]["uuid"]
        print("real `status` reply:\n" + await s.app.esl.api("status"))
        end = time.monotonic() + 8
        while (status := json.loads((await get(s.app.port, "/freeswitch/status"))[1])).get("sessions") != 1:
            assert time.monotonic() < end, status
            await asyncio.sleep(0.2)
        print(f"GET /freeswitch/status: {status}")
        assert status["version"].startswith("FreeSWITCH Version 1.10.12") and status["ready"] is True
        assert status["esl"]["up"] is True and status["sessions_max"] > 0 and status["uptime_s"] >= 0
        code, body = await get(s.app.port, f"/calls/{uuid}")
        info = json.loads(body)
        assert code == 200 and info["route"] == "sales" and info["recording"].endswith(f"sales-{uuid}.wav")
        call.hangup()
