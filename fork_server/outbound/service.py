"""Outbound calls, the asyncio side: the ``/v1/calls`` answers, the originate over ESL, the
events that move a call's status, the watchdog and the webhook.

``POST /v1/calls`` is answered at once (202, ``Location: /v1/calls/<id>``, status ``queued``)
and the originate runs in a task: ``bgapi`` returns as soon as the switch took the job, and
the outcome arrives as the job's BACKGROUND_JOB event (see
:mod:`fork_server.outbound.originate`). The call's id is the uuid the fork server gave the
leg (``origination_uuid``): its fork, its events and its status share it. A call the switch
never reports on (an ESL link lost meanwhile) is failed by a watchdog once its ring time and
a margin have passed, and an answered call whose fork ended with no hang-up event seen is
asked after with ``uuid_exists``.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import re
import time
import uuid as uuidlib
from typing import Any, Callable, Final, Mapping

from fs_dialplan.model import Config, OutboundSettings

from .. import esl_messages as em
from ..errors import EslError, EslLostInFlight
from ..metrics import Metrics
from .originate import originate_args
from .request import RequestError, parse_request
from .status import FINISHED, RINGING_OR_QUEUED, Answered, CallBook, CallRecord, Ended, Failed, Ringing, Status, TokenBucket
from .webhook import WebhookSender

__all__ = ["OutboundService", "API_PREFIX", "mask"]

API_PREFIX: Final = "/v1/calls"
_ID_PATH: Final = re.compile(r"/v1/calls/([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})/?")
_CAUSE: Final = re.compile(r"[A-Z_]{1,64}")
JOB_MARGIN_S: Final = 30.0  # after the ring time: a call still queued then never got its job event
GONE_CHECK_S: Final = 10.0  # after an answered call's fork ended: is the leg still there?

Reply = tuple[int, dict[str, Any], dict[str, str]]


def mask(number: str) -> str:
    """A number for the log: country and area digits and the last two, ``+1555*****67``."""
    return number[:5] + "*" * max(0, len(number) - 7) + number[-2:] if len(number) > 7 else "*" * len(number)


def _error(status: int, message: str, field: str | None = None, extra: Mapping[str, str] | None = None) -> Reply:
    body: dict[str, Any] = {"error": message}
    if field is not None:
        body["field"] = field
    return status, body, dict(extra or {})


class OutboundService:
    def __init__(self, config: Config, settings: OutboundSettings, *, token: str | None, esls: Mapping[str, Any],
                 metrics: Metrics, log: logging.Logger, accepting: Callable[[], bool],
                 over_limit: Callable[[str, int, int], str | None] = lambda route, ringing_route, ringing: None,
                 wall: Callable[[], float] = time.time, job_margin_s: float = JOB_MARGIN_S,
                 gone_check_s: float = GONE_CHECK_S, watchdog_interval_s: float = 1.0) -> None:
        self.config = config
        self.settings = settings
        self._token = token
        self.esls = esls
        self.metrics = metrics
        self.log = log
        self._accepting = accepting
        # (route, its calls ringing, all calls ringing) -> the max_calls a new call would pass, or None
        self._over_limit = over_limit
        self._wall = wall
        self.job_margin_s, self.gone_check_s, self.watchdog_interval_s = job_margin_s, gone_check_s, watchdog_interval_s
        self.book = CallBook()
        self._routes = {r.name for r in config.routes}
        self._trunks = {t.name for t in config.trunks}
        self._switch_names = [sw.name for sw in config.switches]  # empty: one switch ("default")
        self._next_switch = 0
        self._bucket: TokenBucket | None = None
        self._deadlines: dict[str, float] = {}  # id -> loop time after which a queued call is failed
        self._fork_gone: dict[str, float] = {}  # id -> loop time its fork ended (answered calls)
        self._tasks: set[asyncio.Task[Any]] = set()
        self.webhook = (WebhookSender(settings.status_webhook, log=log.getChild("webhook"),
                                      on_result=lambda r: metrics.errors.labels("webhook_" + r).inc() if r != "sent" else None)
                        if settings.status_webhook else None)

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._bucket = TokenBucket(self.settings.calls_per_second, self.settings.burst, loop.time())
        if self.webhook is not None:
            self.webhook.start()
        self._spawn(self._watchdog(self.watchdog_interval_s))

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self.webhook is not None:
            await self.webhook.close()

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # ------------------------------------------------------------------ HTTP

    def authorized(self, header: str | None) -> bool:
        if self._token is None:
            return True
        if not header or not header.startswith("Bearer "):
            return False
        return hmac.compare_digest(header[7:].strip().encode(), self._token.encode())

    def answer(self, method: str, target: str, headers: Mapping[str, str], body: bytes) -> Reply:
        """One ``/v1/calls`` request: (status, JSON body, extra headers). ``headers``: lower-case names."""
        path = target.split("?", 1)[0]
        if not self.authorized(headers.get("authorization")):
            self._refused("auth")
            return _error(401, "a Bearer token is required (Authorization: Bearer <token>)", None,
                          {"WWW-Authenticate": 'Bearer realm="voicefork"'})
        m = _ID_PATH.fullmatch(path)
        if m is not None:
            if method != "GET":
                return _error(405, f"{method[:10]} is not allowed here; GET a call's status", None, {"Allow": "GET"})
            record = self.book.get(m.group(1))
            if record is None:
                return _error(404, "no such call (finished calls are kept for an hour, the last 1000)")
            return 200, record.to_json(), {}
        if path.rstrip("/") != API_PREFIX:
            return _error(404, f"no such resource {path[:100]!r}; POST /v1/calls, GET /v1/calls/<id>")
        if method != "POST":
            return _error(405, f"{method[:10]} is not allowed here; POST a call", None, {"Allow": "POST"})
        return self._post(headers, body)

    def _post(self, headers: Mapping[str, str], body: bytes) -> Reply:
        if not self._accepting():
            self._refused("draining")
            return _error(503, "the fork server is draining; try another", None, {"Retry-After": "1"})
        try:
            req = parse_request(body, headers.get("content-type"), routes=self._routes, trunks=self._trunks,
                                default_trunk=self.settings.default_trunk,
                                default_timeout_s=self.settings.default_timeout_s, switches=self._switch_names)
        except RequestError as exc:
            self._refused("invalid")
            return _error(exc.status, exc.message, exc.field)
        switch = self._pick_switch(req.switch)
        if switch is None:
            self._refused("esl_down")
            which = f"switch {req.switch}'s" if req.switch else "no switch's"
            return _error(503, f"{which} ESL link is up; try again shortly", None, {"Retry-After": "1"})
        loop = asyncio.get_running_loop()
        assert self._bucket is not None  # start() ran
        if self.book.pending() >= self.settings.max_pending:
            self._refused("max_pending")
            return _error(429, f"{self.settings.max_pending} calls are ringing already (outbound.max_pending)", None,
                          {"Retry-After": "1"})
        ringing = [r for r in self.book.live.values() if r.status in RINGING_OR_QUEUED]
        over = self._over_limit(req.route, sum(1 for r in ringing if r.request.route == req.route), len(ringing))
        if over:
            self._refused("max_calls")
            return _error(429, f"route {req.route} is at its {over} (its live and ringing calls)", "route",
                          {"Retry-After": "1"})
        if not self._bucket.take(loop.time()):
            self._refused("rate")
            return _error(429, f"over {self.settings.calls_per_second} calls a second (outbound.calls_per_second, "
                          f"burst {self.settings.burst})", None, {"Retry-After": "1"})
        call_id, job = str(uuidlib.uuid4()), str(uuidlib.uuid4())
        record = CallRecord(id=call_id, request=req, switch=switch, created=round(self._wall(), 3), job=job)
        self.book.add(record)
        self._deadlines[call_id] = loop.time() + req.timeout_s + self.job_margin_s
        self.log.info("< POST /v1/calls %s: to %s from %s via %s into route %s on %s, ring %d s", call_id, mask(req.to),
                      mask(req.from_), req.trunk, req.route, switch, req.timeout_s)
        self._changed(record)
        self._spawn(self._originate(record))
        return 202, record.to_json(), {"Location": f"{API_PREFIX}/{call_id}"}

    def _refused(self, why: str) -> None:
        self.metrics.originates.labels("refused_" + why).inc()

    def _pick_switch(self, wanted: str | None) -> str | None:
        """The switch named (if its ESL is up), else the next one up in turn."""
        if not self._switch_names:
            return "default" if self.esls["default"].up else None
        if wanted is not None:
            return wanted if self.esls[wanted].up else None
        n = len(self._switch_names)
        for i in range(n):
            name = self._switch_names[(self._next_switch + i) % n]
            if self.esls[name].up:
                self._next_switch = (self._next_switch + i + 1) % n
                return name
        return None

    # ------------------------------------------------------------------ ESL

    async def _originate(self, record: CallRecord) -> None:
        r = record.request
        args = originate_args(uuid=record.id, to=r.to, from_=r.from_, trunk=r.trunk, route=r.route, timeout_s=r.timeout_s)
        try:
            await self.esls[record.switch].bgapi("originate " + args, record.job)
            self.log.info("> bgapi originate %s (job %s)", record.id, record.job)
        except EslLostInFlight as exc:
            # It may have reached the switch: its job event decides, or the watchdog.
            self.log.warning("> bgapi originate %s: %s; waiting for its job's event", record.id, exc)
        except EslError as exc:
            self.log.error("> bgapi originate %s: %s", record.id, exc)
            self._apply(record.id, Failed("ORIGINATE_NOT_SENT"))

    def tracks(self, event: Any) -> bool:
        """Would :meth:`on_event` act on it? (dict lookups only: asked for every event)"""
        if isinstance(event, em.BackgroundJob):
            return self.book.by_job(event.uuid) is not None
        return isinstance(event, (em.HangupComplete, em.Progress)) and event.uuid in self.book.live

    def on_event(self, event: Any) -> None:
        if isinstance(event, em.BackgroundJob):
            record = self.book.by_job(event.uuid)
            if record is None:
                return
            word, _, rest = event.body.strip().partition(" ")
            if word == "+OK":
                self._apply(record.id, Answered())
            else:
                cause = rest.strip().split(" ", 1)[0] if word == "-ERR" else ""
                self._apply(record.id, Failed(cause if _CAUSE.fullmatch(cause) else "UNKNOWN"))
        elif isinstance(event, em.Progress):
            if event.uuid in self.book.live:
                self._apply(event.uuid, Ringing())
        elif isinstance(event, em.HangupComplete):
            record = self.book.live.get(event.uuid)
            # An originated leg that never answered also hangs up (with the cause its job
            # reports too): only an answered one's hang-up ends an answered call.
            if record is not None and (event.answered or record.status is Status.ANSWERED):
                self._apply(record.id, Ended(event.cause if _CAUSE.fullmatch(event.cause) else "UNKNOWN"))

    def on_fork(self, uuid: str) -> CallRecord | None:
        """A fork arrived for ``uuid``: our outbound call's record (answered now), or None."""
        if uuid not in self.book.live:
            return None
        self._fork_gone.pop(uuid, None)
        self._apply(uuid, Answered())
        return self.book.get(uuid)

    def on_fork_ended(self, uuid: str) -> None:
        if uuid in self.book.live:
            self._fork_gone[uuid] = asyncio.get_running_loop().time()

    def _apply(self, call_id: str, event: Ringing | Answered | Failed | Ended) -> None:
        result = self.book.apply(call_id, event, round(self._wall(), 3))
        if result is None or not result[1]:
            return
        self._changed(result[0])

    def _changed(self, record: CallRecord) -> None:
        r = record.request
        if record.status not in RINGING_OR_QUEUED:
            self.metrics.originates.labels(record.status.value).inc()
        if record.status in FINISHED:
            self._deadlines.pop(record.id, None)
            self._fork_gone.pop(record.id, None)
            took = (record.ended or record.created) - (record.answered or record.created)
            self.log.info("outbound %s to %s via %s, route %s: %s%s%s", record.id, mask(r.to), r.trunk, r.route,
                          record.status.value, f" ({record.cause})" if record.cause else "",
                          f" after {took:.1f} s talking" if record.answered else
                          f" after {(record.ended or record.created) - record.created:.1f} s")
        elif record.status is Status.ANSWERED:
            self.log.info("outbound %s answered after %.1f s", record.id, (record.answered or 0) - record.created)
        if self.webhook is not None:
            self.webhook.post({"event": "status", **record.to_json()})

    async def _watchdog(self, interval_s: float = 1.0) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(interval_s)
            now = loop.time()
            for call_id, deadline in list(self._deadlines.items()):
                record = self.book.live.get(call_id)
                if record is None or record.status not in RINGING_OR_QUEUED:
                    self._deadlines.pop(call_id, None)
                elif now > deadline:
                    self.log.error("outbound %s: no result from the switch %.0f s after its ring time", call_id, self.job_margin_s)
                    self._apply(call_id, Failed("NO_JOB_RESULT"))
            for call_id, gone in list(self._fork_gone.items()):
                if now - gone >= self.gone_check_s:
                    self._fork_gone.pop(call_id, None)
                    self._spawn(self._check_gone(call_id))

    async def _check_gone(self, call_id: str) -> None:
        record = self.book.live.get(call_id)
        if record is None:
            return
        try:
            exists = (await self.esls[record.switch].api(f"uuid_exists {call_id}")).strip()
        except EslError as exc:
            self.log.warning("> uuid_exists %s: %s; asking again later", call_id, exc)
            if call_id in self.book.live:
                self._fork_gone[call_id] = asyncio.get_running_loop().time()
            return
        if exists == "false":
            self._apply(call_id, Ended("UNKNOWN"))
