"""Outbound calls through the emulated switch: POST /v1/calls on the fork server's port, the
originate over ESL (bgapi, BACKGROUND_JOB), the answered leg running the RENDERED outbound
extension and forking like an inbound call; busy, no-answer and failure reported on GET
/v1/calls/<id> and to the status webhook; the API's refusals over loopback HTTP."""

import asyncio
import dataclasses
import json
import time

import numpy as np
import pytest

pytest.importorskip("ESL")

from fs_dialplan import load_config  # noqa: E402
from testbed.speech import CALLER_QUESTION, load_wav  # noqa: E402
from testbed.stack import EXAMPLE_CONFIG, Stack  # noqa: E402

CALLEE, OURS = "+15551230000", "+15557654321"
TOKEN = "stack-api-token"  # testbed.stack.stack_env
AUTH = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}


async def until(pred, timeout=10.0, what="condition"):
    end = time.monotonic() + timeout
    while not (await pred() if asyncio.iscoroutinefunction(pred) else pred()):
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


async def post(s, doc, headers=AUTH):
    status, head, body = await s.http("POST", "/v1/calls", json.dumps(doc).encode(), headers)
    return status, head, json.loads(body or b"null")


async def status_of(s, call_id, headers=AUTH):
    code, _, body = await s.http("GET", f"/v1/calls/{call_id}", b"", headers)
    return code, json.loads(body)


async def final(s, call_id, timeout=10.0):
    out = {}

    async def done():
        out.update((await status_of(s, call_id))[1])
        return out["status"] not in ("queued", "ringing", "answered")
    await until(done, timeout, f"call {call_id} to finish")
    return out


async def status_becomes(s, call_id, status, timeout=5.0):
    async def reached():
        return (await status_of(s, call_id))[1]["status"] == status
    await until(reached, timeout, f"call {call_id} {status}")


class Hook:
    """A status webhook on loopback: records each POSTed JSON document."""

    def __init__(self, fail_first: int = 0):
        self.docs: list[dict] = []
        self.fail_first = fail_first
        self.requests = 0

    async def start(self):
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.url = f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}/hook"

    async def _serve(self, reader, writer):
        head = await reader.readuntil(b"\r\n\r\n")
        n = next(int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length"))
        body = await reader.readexactly(n)
        self.requests += 1
        if self.requests <= self.fail_first:
            writer.write(b"HTTP/1.1 503 Busy\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
        else:
            assert head.startswith(b"POST /hook HTTP/1.1\r\n") and b"application/json" in head
            self.docs.append(json.loads(body))
            writer.write(b"HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n")
        await writer.drain()
        writer.close()

    def statuses(self, call_id):
        return [d["status"] for d in self.docs if d["id"] == call_id]


def _config(**outbound):
    base = load_config(str(EXAMPLE_CONFIG))
    return dataclasses.replace(base, outbound=dataclasses.replace(base.outbound, **outbound))


@pytest.fixture
async def hook():
    h = Hook(fail_first=1)  # the first post fails once: the retry delivers it
    await h.start()
    yield h
    h.server.close()


async def test_answered_call_forks_as_outbound_with_the_requests_metadata(hook):
    async with Stack(_config(status_webhook=hook.url), connector_options={"rate": 24000, "speed": 3.0, "bargein": False,
                                                                          "answer_delay_ms": 100}) as s:
        t0 = time.monotonic()
        code, head, doc = await post(s, {"to": CALLEE, "from": OURS, "route": "sales", "timeout": 20,
                                         "metadata": {"lead": "L-42", "queue": "outbound", "score": 7}})
        assert code == 202 and doc["status"] == "queued" and head["location"] == f"/v1/calls/{doc['id']}"
        call_id = doc["id"]
        record = await s.connector.wait_call(0, timeout=10)
        took = time.monotonic() - t0
        call = record.start["call"]
        assert call["uuid"] == call_id and call["route"] == "sales" and call["direction"] == "outbound"
        assert (call["from"], call["to"]) == (OURS, CALLEE)
        assert call["metadata"] == {"lead": "L-42", "queue": "outbound", "score": 7}  # the request's over the route's
        ch = s.switch.channels[call_id]
        assert ch.direction == "outbound" and ch.extension == "voicefork_outbound_sales" and ch.jitter_buffer_ms == 20
        assert (await status_of(s, call_id))[1]["status"] == "answered"
        said = load_wav(CALLER_QUESTION, ch.rate)
        ch.say(said)  # the callee speaks: the connector hears it, and its bot answers
        await until(lambda: record.frame_count * 20 >= len(said) / (ch.rate // 500), what="the callee at the connector")
        await until(lambda: len(ch.ear.pcm()) > 8000, what="the bot's answer at the callee")
        heard = np.frombuffer(ch.ear.pcm(), "<i2")
        assert np.abs(heard).max() > 1000
        ch.hangup("NORMAL_CLEARING")
        await record.wait_stopped(timeout=5)
        doc = await final(s, call_id)
        assert doc["status"] == "completed" and doc["cause"] == "NORMAL_CLEARING" and doc["duration_s"] > 0
        await until(lambda: len(hook.statuses(call_id)) == 4, what="four webhook posts")
        assert hook.statuses(call_id) == ["queued", "ringing", "answered", "completed"]  # in order, the first one retried
        assert hook.docs[-1]["metadata"]["lead"] == "L-42"
        metrics = (await s.http("GET", "/metrics"))[2].decode()
        assert 'voicefork_outbound_calls_total{outcome="answered"} 1.0' in metrics
        assert 'voicefork_outbound_calls_total{outcome="completed"} 1.0' in metrics
        print(f"\nemulator: POST to the connector's start {took * 1000:.0f} ms (ring 100 ms)")


@pytest.mark.parametrize("callee,status,cause", [
    ("busy", "busy", "USER_BUSY"),
    ("no-answer", "no-answer", "NO_ANSWER"),
    ("CALL_REJECTED", "failed", "CALL_REJECTED"),
])
async def test_calls_that_are_not_answered(callee, status, cause):
    async with Stack() as s:
        s.switch.callees[CALLEE] = callee
        code, _, doc = await post(s, {"to": CALLEE, "from": OURS, "route": "support", "timeout": 5})
        assert code == 202
        if callee == "no-answer":
            await status_becomes(s, doc["id"], "ringing")
        doc = await final(s, doc["id"], timeout=15)
        assert (doc["status"], doc["cause"], doc["answered"]) == (status, cause, None)
        assert s.connector.calls == {} and not s.app.calls
        leg = s.switch.originated[0]
        assert leg.hangup_cause == cause and leg.direction == "outbound"
        if callee == "no-answer":  # rang for its whole timeout
            assert doc["ended"] - doc["created"] >= 4.9


async def test_unknown_gateway_fails_at_once():
    async with Stack() as s:
        s.switch.gateways.clear()  # the switch has not loaded the trunk's gateway
        code, _, doc = await post(s, {"to": CALLEE, "from": OURS, "route": "support"})
        doc = await final(s, doc["id"])
        assert (doc["status"], doc["cause"]) == ("failed", "INVALID_GATEWAY")


async def test_api_refusals():
    async with Stack(_config(calls_per_second=1, burst=2, max_pending=2)) as s:
        s.switch.default_callee = "no-answer"  # they keep ringing: pending
        good = {"to": CALLEE, "from": OURS, "route": "support", "timeout": 30}
        code, head, doc = await post(s, good, {"Content-Type": "application/json"})
        assert code == 401 and head["www-authenticate"].startswith("Bearer") and "Bearer" in doc["error"]
        assert (await post(s, good, {**AUTH, "Authorization": "Bearer wrong"}))[0] == 401
        assert (await status_of(s, "3f1a2b4c-5d6e-4f70-8a9b-0c1d2e3f4a5b", {}))[0] == 401
        code, _, doc = await post(s, {**good, "to": "+1 555 123"})
        assert code == 400 and doc["field"] == "to" and "E.164" in doc["error"]
        code, _, doc = await post(s, {**good, "route": "nope"})
        assert code == 400 and doc["field"] == "route"
        code, _, doc = await post(s, {**good, "to": CALLEE + "@evil.example"})
        assert code == 400 and doc["field"] == "to"
        code, _, _ = await s.http("POST", "/v1/calls", b"to=1", {**AUTH, "Content-Type": "application/x-www-form-urlencoded"})
        assert code == 415
        code, _, _ = await s.http("POST", "/v1/calls", b"{" + b" " * 20000 + b"}", AUTH)
        assert code == 413  # over the request reader's 16 KiB: refused before it is read whole
        ids = []
        for _ in range(2):
            code, _, doc = await post(s, good)
            assert code == 202
            ids.append(doc["id"])
        code, head, doc = await post(s, good)
        assert code == 429 and "max_pending" in doc["error"] and head["retry-after"] == "1"
        assert (await status_of(s, "3f1a2b4c-5d6e-4f70-8a9b-0c1d2e3f4a5b"))[0] == 404
        assert (await status_of(s, ids[0]))[1]["status"] in ("queued", "ringing")
        await until(lambda: len(s.switch.originated) == 2, what="both legs at the switch")
        for leg in list(s.switch.originated):  # end the ringing: the switch's own cancel
            leg.hangup("ORIGINATOR_CANCEL")
        await until(lambda: not s.app.outbound.book.pending(), what="the pending calls to end")
        code, _, doc = await post(s, good)
        assert code == 429 and "calls_per_second" in doc["error"]  # the burst of 2 is spent
        await s.esl.stop_listening()  # the switch's ESL goes away
        await until(lambda: not s.app.esl.up, what="ESL down")
        await asyncio.sleep(1.1)  # a token back (1 a second), so only the ESL state answers
        code, _, doc = await post(s, good)
        assert code == 503 and "ESL" in doc["error"]


async def test_not_configured_is_404_and_the_switch_never_sees_an_originate():
    base = load_config(str(EXAMPLE_CONFIG))
    async with Stack(dataclasses.replace(base, outbound=None)) as s:
        code, _, doc = await post(s, {"to": CALLEE, "from": OURS, "route": "support"})
        assert code == 404 and "not configured" in doc["error"]
        assert (await s.http("GET", "/v1/calls/3f1a2b4c-5d6e-4f70-8a9b-0c1d2e3f4a5b"))[0] == 404
        assert "voicefork_outbound.xml" not in " ".join(s.rendered)
        assert not any(cmd.startswith("bgapi") for cmd in s.esl.commands)


async def test_a_draining_server_answers_503():
    base = _config()
    base = dataclasses.replace(base, fork_server=dataclasses.replace(base.fork_server, drain_grace_s=1.0))
    async with Stack(base) as s:
        drain = asyncio.get_running_loop().create_task(s.app.drain(1.0))
        await until(lambda: s.app._draining, what="draining")  # still listening: the grace
        code, _, doc = await post(s, {"to": CALLEE, "from": OURS, "route": "support"})
        assert code == 503 and "draining" in doc["error"]
        await drain


async def test_a_route_at_its_max_calls_refuses_a_new_call():
    base = _config()
    routes = tuple(dataclasses.replace(r, max_calls=1) if r.name == "support" else r for r in base.routes)
    async with Stack(dataclasses.replace(base, routes=routes)) as s:
        s.switch.default_callee = "no-answer"
        good = {"to": CALLEE, "from": OURS, "route": "support", "timeout": 30}
        assert (await post(s, good))[0] == 202
        code, _, doc = await post(s, good)  # one ringing already counts
        assert code == 429 and doc["field"] == "route" and "max_calls (1)" in doc["error"]
        assert (await post(s, {**good, "route": "sales"}))[0] == 202  # another route is not held
        await until(lambda: len(s.switch.originated) == 2, what="both legs at the switch")
        (support,) = [leg for leg in s.switch.originated if leg.vars["voicefork_route"] == "support"]
        support.hangup("ORIGINATOR_CANCEL")
        await until(lambda: s.app.outbound.book.pending() == 1, what="the first call to end")
        assert (await post(s, good))[0] == 202


async def test_the_asyncio_esl_client_originates_too():
    async with Stack(esl="asyncio") as s:
        s.switch.callees[CALLEE] = "busy"
        code, _, doc = await post(s, {"to": CALLEE, "from": OURS, "route": "support"})
        assert code == 202
        doc = await final(s, doc["id"])
        assert (doc["status"], doc["cause"]) == ("busy", "USER_BUSY")
        assert any(c.startswith("bgapi originate") for c in s.esl.commands)
