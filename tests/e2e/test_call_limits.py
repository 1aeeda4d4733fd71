"""Call limits on the emulated switch: the rendered `limit hash` keeps a call over max_calls
(a route's or limits.max_calls) away from the fork server and gives it the route's busy action;
the fork server's guard does the same for a fork that arrives anyway."""

import asyncio
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

pytest.importorskip("ESL")

from fs_dialplan import load_config  # noqa: E402
from fs_dialplan.render import DIALPLAN_FILE, render, write_tree  # noqa: E402
from testbed.stack import Stack  # noqa: E402

EXAMPLE = Path(__file__).parents[2] / "config" / "voicefork.yaml"
SUPPORT, SALES = "+15551234567", "+15557654321"
QUIET_BOT = {"connector_options": {"answer_delay_ms": 60_000}}


async def until(pred, timeout=10.0, what="condition"):
    end = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


def config_file(tmp_path, *, sales=None, limits=None, name="limits.yaml"):
    data = yaml.safe_load(EXAMPLE.read_text())
    route = next(r for r in data["routes"] if r["name"] == "sales")
    route.update(sales or {})
    if limits:
        data["limits"] = limits
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def busy_prompt(tmp_path):
    path = tmp_path / "busy.r8"
    path.write_bytes((np.sin(np.arange(8000 * 0.4) * 2 * np.pi * 440 / 8000) * 8000).astype("<i2").tobytes())
    return str(path)


async def test_the_call_over_a_routes_max_calls_is_rejected_busy_and_never_forks(tmp_path):
    async with Stack(config_file(tmp_path, sales={"max_calls": 2}), **QUIET_BOT) as s:
        first = [s.switch.place_call(SALES) for _ in range(2)]
        await until(lambda: len(s.app.calls) == 2, what="two forked calls")
        third = s.switch.place_call(SALES)
        await asyncio.wait_for(third.hungup.wait(), 5)
        assert third.hangup_cause == "USER_BUSY" and not third.answered  # a 486 before answer
        await asyncio.sleep(0.3)
        assert len(s.app.calls) == 2 and third.uuid not in s.connector.calls
        # Another route is not limited by this one.
        other = s.switch.place_call(SUPPORT)
        await until(lambda: other.uuid in s.app.calls, what="a support call")
        # A call that ends gives its count back.
        first[0].hangup()
        await until(lambda: first[0].uuid not in s.app.calls, what="the first call to end")
        fourth = s.switch.place_call(SALES)
        await until(lambda: fourth.uuid in s.app.calls, what="the fourth call to fork")
        assert s.switch.limit_usage[("voicefork", "route_sales")] == {first[1].uuid, fourth.uuid}
        assert s.switch.errors == []


async def test_busy_play_answers_plays_the_file_and_hangs_up(tmp_path):
    prompt = busy_prompt(tmp_path)
    async with Stack(config_file(tmp_path, sales={"max_calls": 1, "busy": {"action": "play", "file": prompt}}), **QUIET_BOT) as s:
        s.switch.place_call(SALES)
        await until(lambda: len(s.app.calls) == 1, what="the first call")
        second = s.switch.place_call(SALES)
        await asyncio.wait_for(second.hungup.wait(), 5)
        assert second.answered and second.hangup_cause == "USER_BUSY"
        assert second.extension == "voicefork_busy_sales" and [p for p, status, _ in second.playbacks] == [prompt]
        assert len(s.app.calls) == 1 and second.uuid not in s.connector.calls
        assert s.switch.errors == []


async def test_limits_max_calls_counts_every_route(tmp_path):
    async with Stack(config_file(tmp_path, limits={"max_calls": 2}), **QUIET_BOT) as s:
        s.switch.place_call(SUPPORT)
        s.switch.place_call(SALES)
        await until(lambda: len(s.app.calls) == 2, what="two calls")
        third = s.switch.place_call(SUPPORT)
        await asyncio.wait_for(third.hungup.wait(), 5)
        assert third.hangup_cause == "USER_BUSY" and len(s.app.calls) == 2


async def test_the_fork_server_guard_turns_away_a_fork_the_switch_let_through(tmp_path):
    # The switch runs a dialplan rendered without the limit; the fork server has it.
    async with Stack(config_file(tmp_path, sales={"max_calls": 1}), **QUIET_BOT) as s:
        unlimited = load_config(str(config_file(tmp_path, name="plain.yaml")))
        plain = s.config.__class__(**{**{f: getattr(s.config, f) for f in s.config.__dataclass_fields__},
                                      "routes": unlimited.routes, "source": s.config.source})
        write_tree(render(plain, s.env), tmp_path / "plain")
        assert "route_sales" not in (tmp_path / "plain" / DIALPLAN_FILE).read_text()
        s.switch.load_dialplan(tmp_path / "plain" / "dialplan" / "public")
        first = s.switch.place_call(SALES)
        await until(lambda: first.uuid in s.app.calls, what="the first call")
        second = s.switch.place_call(SALES)
        await asyncio.wait_for(second.hungup.wait(), 5)
        assert second.answered and second.hangup_cause == "USER_BUSY"  # answered by then: uuid_kill USER_BUSY
        assert second.uuid not in s.connector.calls and list(s.app.calls) == [first.uuid]
        assert s.app.metrics.rejected.labels("over_limit")._value.get() == 1
