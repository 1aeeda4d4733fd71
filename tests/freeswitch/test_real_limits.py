"""Call limits on a REAL FreeSWITCH (``FREESWITCH_BIN``, with mod_hash): N+1 simultaneous calls
to a route with max_calls N; the last gets the route's busy action from the rendered
``limit hash`` and never reaches the fork server."""

import asyncio
import os
import time
import wave
from pathlib import Path

import numpy as np
import pytest
import yaml

BIN = os.environ.get("FREESWITCH_BIN")
pytestmark = pytest.mark.freeswitch  # skipped without FREESWITCH_BIN, failed under CI=true (conftest.py)
pytest.importorskip("ESL")

from testbed.real_switch import EXAMPLE_CONFIG, RealStack  # noqa: E402
from testbed.sip_caller import SipError  # noqa: E402

SUPPORT, SALES = "+15551234567", "+15557654321"
QUIET_BOT = {"answer_delay_ms": 60_000}


async def until(pred, timeout=10.0, what="condition"):
    end = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


def config_file(tmp_path, sales, limits=None):
    data = yaml.safe_load(Path(EXAMPLE_CONFIG).read_text())
    next(r for r in data["routes"] if r["name"] == "sales").update(sales)
    if limits:
        data["limits"] = limits
    path = tmp_path / "limits.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


async def test_the_call_over_max_calls_gets_486_and_a_freed_place_is_taken_again(tmp_path):
    async with RealStack(BIN, config_file(tmp_path, {"max_calls": 2}), connector_options=QUIET_BOT) as s:
        calls = [await s.place_call(SALES) for _ in range(2)]
        await until(lambda: len(s.app.calls) == 2, what="two forked calls")
        t0 = time.monotonic()
        with pytest.raises(SipError, match="answered 486"):
            await s.place_call(SALES)
        print(f"real FreeSWITCH limit: the 3rd call got 486 in {1000 * (time.monotonic() - t0):.0f} ms")
        await asyncio.sleep(0.3)
        assert len(s.app.calls) == 2 and len(s.connector.calls) == 2  # it never forked
        other = await s.place_call(SUPPORT)  # another route is not limited by this one
        await until(lambda: len(s.app.calls) == 3, what="the support call")
        calls[0].hangup()
        await until(lambda: len(s.app.calls) == 2, what="the first call to end")
        await asyncio.sleep(0.2)
        again = await s.place_call(SALES)  # its place was given back at hangup (mod_hash)
        await until(lambda: len(s.app.calls) == 3, what="the new sales call")
        for c in (calls[1], other, again):
            c.hangup()


async def test_limits_max_calls_over_all_routes_and_busy_play(tmp_path):
    prompt = tmp_path / "busy.wav"
    with wave.open(str(prompt), "wb") as w:
        w.setnchannels(1), w.setsampwidth(2), w.setframerate(8000)
        w.writeframes((np.sin(np.arange(8000) * 2 * np.pi * 440 / 8000) * 8000).astype("<i2").tobytes())
    cfg = config_file(tmp_path, {"busy": {"action": "play", "file": str(prompt)}}, limits={"max_calls": 1})
    async with RealStack(BIN, cfg, connector_options=QUIET_BOT) as s:
        first = await s.place_call(SUPPORT)
        await until(lambda: len(s.app.calls) == 1, what="the first call")
        busy = await s.place_call(SALES)  # answered: it plays the busy prompt, then the switch hangs up
        await asyncio.wait_for(busy.hungup.wait(), 5)
        assert busy.bye_from_switch
        heard = np.frombuffer(busy.ear.pcm(), "<i2").astype(np.float64)
        loud = np.sqrt(np.mean(heard**2)) if heard.size else 0.0
        print(f"real FreeSWITCH busy play: {len(busy.ear.packets)} packets heard, RMS {loud:.0f}")
        assert len(busy.ear.packets) >= 40 and loud > 1000  # the 1 s, 440 Hz prompt (RMS 5657 sent)
        assert len(s.app.calls) == 1 and len(s.connector.calls) == 1
        first.hangup()
