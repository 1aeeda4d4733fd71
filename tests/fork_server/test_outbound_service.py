"""The outbound service's own duties, with a scripted ESL link (no sockets): an originate the
switch never took fails at once, one lost in flight waits for its job and the watchdog fails it
when none comes, an answered call whose fork ended and whose hang-up was never seen is asked
after, and the requests' answers."""

import asyncio
import json
import logging

import pytest

from fork_server import esl_messages as em
from fork_server.errors import EslLostInFlight, EslUnavailable
from fork_server.metrics import Metrics
from fork_server.outbound.service import OutboundService, mask
from fs_dialplan.model import (BasicAuth, Config, Connector, ForkServerSettings, FreeswitchSettings, OutboundSettings,
                               PlaybackSettings, Route, Trunk)

CALL = {"to": "+15551230000", "from": "+15557654321", "route": "support"}
HEADERS = {"authorization": "Bearer tok", "content-type": "application/json"}


class FakeEsl:
    def __init__(self):
        self.up = True
        self.bgapi_error: Exception | None = None
        self.sent: list[tuple[str, str]] = []
        self.exists = "true"

    async def bgapi(self, cmdline, job):
        self.sent.append((cmdline, job))
        if self.bgapi_error is not None:
            raise self.bgapi_error
        return f"+OK Job-UUID: {job}"

    async def api(self, cmdline):
        assert cmdline.startswith("uuid_exists ")
        return self.exists


def service(esl, **kw):
    config = Config(
        source="<test>", freeswitch=FreeswitchSettings(esl_password_env="X"),
        fork_server=ForkServerSettings(public_url="ws://127.0.0.1:1", auth=BasicAuth("u", "P")),
        connectors={"bot": Connector("bot", "ws://127.0.0.1:2/bot")},
        routes=(Route("support", "bot", number="+15551234567"),),
        playback=PlaybackSettings(spool_dir="/tmp/s", freeswitch_spool_dir="/tmp/s"),
        trunks=(Trunk("carrier", "sip.example.com", acl_cidrs=("192.0.2.0/24",)),),
        outbound=OutboundSettings(token_env="T", default_trunk="carrier", burst=10, calls_per_second=10),
    )
    return OutboundService(config, config.outbound, token="tok", esls={"default": esl}, metrics=Metrics(),
                           log=logging.getLogger("voicefork.test.outbound"), accepting=lambda: True, **kw)


async def until(pred, timeout=5.0):
    end = asyncio.get_running_loop().time() + timeout
    while not pred():
        assert asyncio.get_running_loop().time() < end, "timed out"
        await asyncio.sleep(0.01)


def post(svc, doc=CALL):
    return svc.answer("POST", "/v1/calls", HEADERS, json.dumps(doc).encode())


@pytest.mark.parametrize("error,status,cause", [
    (EslUnavailable("command queue full"), "failed", "ORIGINATE_NOT_SENT"),
    (EslLostInFlight("connection lost during raw"), "failed", "NO_JOB_RESULT"),  # by the watchdog
])
async def test_an_originate_the_switch_did_not_report_on(error, status, cause):
    esl = FakeEsl()
    esl.bgapi_error = error
    svc = service(esl, job_margin_s=0.2, watchdog_interval_s=0.05)
    await svc.start()
    try:
        code, doc, extra = post(svc, {**CALL, "timeout": 5})
        assert code == 202 and extra == {"Location": f"/v1/calls/{doc['id']}"}
        if isinstance(error, EslLostInFlight):
            await asyncio.sleep(0.3)
            assert svc.book.get(doc["id"]).status.value == "queued"  # waits for its job's event
        await until(lambda: svc.book.get(doc["id"]).status.value == status, timeout=8)
        assert svc.book.get(doc["id"]).cause == cause
    finally:
        await svc.close()


async def test_an_answered_call_whose_hangup_was_missed_is_asked_after():
    esl = FakeEsl()
    svc = service(esl, gone_check_s=0.1, watchdog_interval_s=0.05)
    await svc.start()
    try:
        code, doc, _ = post(svc)
        await until(lambda: esl.sent)
        svc.on_event(em.BackgroundJob(esl.sent[0][1], None, f"+OK {doc['id']}\n"))
        assert svc.book.get(doc["id"]).status.value == "answered"
        svc.on_fork_ended(doc["id"])
        await asyncio.sleep(0.3)
        assert svc.book.get(doc["id"]).status.value == "answered"  # the leg still exists
        esl.exists = "false"
        svc.on_fork_ended(doc["id"])
        await until(lambda: svc.book.get(doc["id"]).status.value == "completed")
        assert svc.book.get(doc["id"]).cause == "UNKNOWN"
    finally:
        await svc.close()


async def test_job_and_hangup_events():
    esl = FakeEsl()
    svc = service(esl)
    await svc.start()
    try:
        ids = []
        for _ in range(3):
            ids.append(post(svc)[1]["id"])
        await until(lambda: len(esl.sent) == 3)
        jobs = [job for _, job in esl.sent]
        # An unanswered leg's hang-up comes before its job's -ERR: only the job decides.
        svc.on_event(em.HangupComplete(ids[0], "support", "USER_BUSY", answered=False))
        assert svc.book.get(ids[0]).status.value == "queued"
        svc.on_event(em.BackgroundJob(jobs[0], None, "-ERR USER_BUSY\n"))
        svc.on_event(em.BackgroundJob(jobs[1], None, "-ERR weird stuff\n"))  # not a cause: UNKNOWN
        # A short call: answered and hung up before its job's +OK.
        svc.on_event(em.HangupComplete(ids[2], "support", "NORMAL_CLEARING", answered=True))
        svc.on_event(em.BackgroundJob(jobs[2], None, f"+OK {ids[2]}\n"))
        got = [(svc.book.get(i).status.value, svc.book.get(i).cause) for i in ids]
        assert got == [("busy", "USER_BUSY"), ("failed", "UNKNOWN"), ("completed", "NORMAL_CLEARING")]
        assert not svc.tracks(em.BackgroundJob(jobs[0], None, ""))  # a finished call's job is forgotten
    finally:
        await svc.close()


async def test_answers():
    esl = FakeEsl()
    svc = service(esl)
    await svc.start()
    try:
        assert svc.answer("POST", "/v1/calls", {**HEADERS, "authorization": "Bearer tok2"}, b"{}")[0] == 401
        assert svc.answer("POST", "/v1/calls", {"content-type": "application/json"}, b"{}")[0] == 401
        assert svc.answer("GET", "/v1/calls", HEADERS, b"")[0] == 405
        assert svc.answer("POST", "/v1/other", HEADERS, b"")[0] == 404
        code, doc, _ = post(svc)
        assert svc.answer("GET", f"/v1/calls/{doc['id']}", HEADERS, b"")[1]["status"] == "queued"
        assert svc.answer("DELETE", f"/v1/calls/{doc['id']}", HEADERS, b"")[0] == 405
        esl.up = False
        assert post(svc)[0] == 503
    finally:
        await svc.close()
    assert mask("+15551230000") == "+1555*****00" and mask("+1") == "**"
