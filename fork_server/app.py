"""Wires the fork server together and owns its lifecycle (start, drain, stop).

The config is the same typed ``fs_dialplan`` model the renderer uses, so the URL path,
the metadata and the route settings always agree with the XML the switch runs.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import signal
from dataclasses import replace
from typing import Any, Callable, Mapping

from websockets.exceptions import ConnectionClosed

from fs_dialplan.model import Config, Route

from . import dialects, esl_messages as em, twilio_rest
from .outbound import OutboundService
from .audio_fork import ForkIntake, ForkMetadata
from .call import Call, CallLogger, ConnectorTarget
from .errors import EslError, ForkProtocolError, LocalUsageError
from .esl_client import EslClient
from .intake import BasicCredentials, ForkConnection, IntakeServer
from .metrics import CONTENT_TYPE, SHARE_INTERVAL_S, Metrics, WorkerShare, merge
from .recording import RecordingStore
from .dialects.messages import HangupRequest
from .session import CallSession, SessionSettings, Shutdown
from .spool import SpoolLayout
from .switch_status import parse_status, parse_version

__all__ = ["App", "SUBSCRIBED_EVENTS", "ESL_FILTERS"]

log = logging.getLogger("voicefork")

# mod_event_socket takes every word after CUSTOM as a subclass name, so CUSTOM and its
# subclasses must come last, or PLAYBACK_START etc. would silently never be delivered.
SUBSCRIBED_EVENTS = [
    "PLAYBACK_START",
    "PLAYBACK_STOP",
    # A third of the events per segment (~60 us each in python-ESL), but the only word the switch
    # says about a file it cannot open: no PLAYBACK_*, just "FILE NOT FOUND" here (seen on 1.10.12).
    "CHANNEL_EXECUTE_COMPLETE",
    "DTMF",
    "CHANNEL_HANGUP_COMPLETE",
    # Outbound calls: the originate's outcome (+OK <uuid> | -ERR <CAUSE>); fired to every
    # connection subscribed to it, ours being the event connection (seen on 1.10.12). And the
    # callee's ringing (a 180) on the leg, which carries voicefork_route from the originate;
    # an inbound call of ours is answered without one, so it sends none (checked on 1.10.12:
    # a whole inbound call sent CHANNEL_ANSWER and no CHANNEL_PROGRESS or _MEDIA).
    "BACKGROUND_JOB",
    "CHANNEL_PROGRESS",
    "CUSTOM",
    "mod_audio_fork::connect",
    "mod_audio_fork::connect_failed",
    "mod_audio_fork::disconnect",
    "mod_audio_fork::buffer_overrun",
    "mod_audio_fork::play_audio",
    "mod_audio_fork::kill_audio",
]
SWITCH_STATUS_INTERVAL_S = 5.0  # how stale GET /freeswitch/status may be
RETENTION_INTERVAL_S = 3600.0  # retention is in days; an hourly sweep is late by at most an hour
_METADATA_TIMEOUT_S = 5.0  # REF: metadata arrives ~0.5 ms after open

# What the switch sends us (mod_event_socket filters are OR'ed; switch_regex_perform takes
# "/regex/"): every event of a channel that has voicefork_route (the rendered dialplan sets it
# on every route), and DTMF events, which carry no channel variables unless the channel has
# verbose_events (switch_channel.c), whatever their channel: digits are rare and events of
# other channels are dropped by uuid. Two filters whatever the number of routes: FreeSWITCH
# looks each filter's header up in every event it sends (one filter per route cost 10,000
# lookups per event with 10,000 routes). (verbose_events does not make the events we get any
# larger: PLAYBACK_*, CHANNEL_EXECUTE* and CHANNEL_HANGUP* carry every channel variable anyway,
# 6.6-6.8 KB on 1.10.12; it only bloated DTMF and the events we do not subscribe to.)
# A third filter passes BACKGROUND_JOB (no channel, so no variables): the outcome of our
# originates; other jobs on the switch are dropped by their Job-UUID.
ESL_FILTERS = [("variable_voicefork_route", "/^[a-z0-9]/"), ("Event-Name", "DTMF"), ("Event-Name", "BACKGROUND_JOB")]


def _secret(env: Mapping[str, str], name: str, what: str) -> str:
    value = env.get(name)
    if not value:
        raise LocalUsageError(f"{what}: environment variable {name} is not set")
    if value == "ClueCon":  # REF: FreeSWITCH's well-known default ESL password; never run with it
        raise LocalUsageError(f"{what}: environment variable {name} holds FreeSWITCH's default password ClueCon")
    return value


class App:
    def __init__(
        self,
        config: Config,
        *,
        env: Mapping[str, str] = os.environ,
        listen_port: int | None = None,
        esl_factory: Callable[..., Any] = EslClient,
        logger: logging.Logger = log,
    ) -> None:
        self.config = config
        self.log = logger
        self.metrics = Metrics()
        self.calls: dict[str, Call] = {}
        self._accepting = True
        self._draining = False
        self._listen_port = config.fork_server.listen_port if listen_port is None else listen_port
        auth = config.fork_server.auth
        self._credentials = (
            BasicCredentials(auth.username, _secret(env, auth.password_env, "fork_server.auth.password_env"))
            if auth is not None
            else None
        )
        self._connector_headers: dict[str, dict[str, str]] = {}
        for name, c in config.connectors.items():
            headers = dict(c.headers)
            if c.token_env:
                headers["Authorization"] = "Bearer " + _secret(env, c.token_env, f"connectors.{name}.token_env")
            self._connector_headers[name] = headers
        # Connector dialects, and the auth tokens Twilio-speaking bots present to the REST hang-up.
        self._dialects = {name: dialects.factory(c.protocol, account_sid=c.account_sid)
                          for name, c in config.connectors.items()}
        self._twilio_tokens: dict[str, str] = {}
        for name, c in config.connectors.items():
            if c.protocol != "twilio" or c.account_sid is None or c.auth_token_env is None:
                continue
            token = _secret(env, c.auth_token_env, f"connectors.{name}.auth_token_env")
            if self._twilio_tokens.setdefault(c.account_sid, token) != token:
                raise LocalUsageError(f"connectors.{name}: account {c.account_sid} has another auth token in another connector")
        # One ESL link per switch (freeswitch.switches); a call's commands go to the switch its
        # fork metadata names. One switch: its link is "default" and forks name none.
        self.multi_switch = bool(config.switches)
        self.esls: dict[str, Any] = {}
        for sw in config.all_switches():
            self.esls[sw.name] = esl_factory(
                sw.esl_host,
                sw.esl_port,
                _secret(env, sw.esl_password_env, "freeswitch.esl_password_env"),
                on_event=functools.partial(self._on_esl_event, switch=sw.name),
                event_names=SUBSCRIBED_EVENTS,
                filters=ESL_FILTERS,
                logger=logger.getChild("esl" if not self.multi_switch else f"esl.{sw.name}"),
                on_state=functools.partial(self._on_esl_state, switch=sw.name),
            )
        self.esl = next(iter(self.esls.values()))  # the first switch's (the only one, usually)
        p = config.playback
        self.spool = SpoolLayout(os.path.abspath(p.spool_dir), p.freeswitch_spool_dir)
        self.intake = IntakeServer(
            routes={r.name for r in config.routes},
            credentials=self._credentials,
            on_call=self._on_call,
            healthy=self._healthy,
            metrics_body=lambda: (self._metrics_body(), CONTENT_TYPE),
            calls_body=lambda: [c.info() for c in self.calls.values()],
            accepting=lambda: self._accepting,
            on_reject=lambda reason: self.metrics.rejected.labels(reason).inc(),
            call_body=self._call_info,
            switch_body=self._switch_info,
            rest_answer=self._rest_answer if self._twilio_tokens else None,
            api_answer=self._api_answer,
        )
        ob = config.outbound
        self.outbound = OutboundService(
            config, ob, token=_secret(env, ob.token_env, "outbound.token_env") if ob.token_env else None,
            esls=self.esls, metrics=self.metrics, log=logger.getChild("outbound"), accepting=lambda: not self._draining,
            over_limit=lambda name, ringing_route, ringing: self._over_limit(self.config.route(name), ringing_route, ringing),
        ) if ob is not None else None
        # The last poll of each switch (see _switch_status_loop): what, and when.
        self._switch: dict[str, dict[str, Any]] = {name: {} for name in self.esls}
        self._switch_checked: dict[str, float | None] = {name: None for name in self.esls}
        self.recordings = RecordingStore(config.recording) if config.recording is not None else None
        self.metrics_share: WorkerShare | None = None  # set by cli --workers: /metrics is the whole server's
        self.port: int | None = None
        self._background: set[asyncio.Task[Any]] = set()
        # With worker processes (cli --workers) every worker sees every ESL event: only one
        # runs the fallback of a fork that never reached any of them (connect_failed).
        self.orphan_events = True

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> int:
        os.makedirs(self.spool.local_root, mode=0o750, exist_ok=True)
        for esl in self.esls.values():
            await esl.start()
        fs = self.config.fork_server
        self.port = await self.intake.start(fs.listen_host, self._listen_port)
        for name in self.esls:
            self._spawn(self._switch_status_loop(name))
        if self.metrics_share is not None:
            self._spawn(self._share_metrics_loop(self.metrics_share))
        if self.recordings is not None:
            await self.recordings.start()
        if self.outbound is not None:
            await self.outbound.start()
        # One sweeper per server: with --workers only worker 0 (the one with orphan_events).
        if self.recordings is not None and self.recordings.settings.retention_days > 0 and self.orphan_events:
            self._spawn(self._retention_loop(self.recordings))
        self.log.info(
            "fork server listening on %s:%d (%d routes, auth %s, playback %s/%s, ESL %s)",
            fs.listen_host,
            self.port,
            len(self.config.routes),
            "on" if self._credentials else "OFF",
            self.config.playback.command,
            self.config.playback.transport,
            ", ".join(f"{'' if not self.multi_switch else sw.name + ' '}{sw.esl_host}:{sw.esl_port} "
                      f"{'up' if self.esls[sw.name].up else 'not up yet'}" for sw in self.config.all_switches()),
        )
        return self.port

    async def drain(self, timeout_s: float | None = None) -> None:
        """Stop accepting; let calls finish up to the timeout; then end the rest cleanly."""
        timeout_s = self.config.fork_server.drain_timeout_s if timeout_s is None else timeout_s
        grace = self.config.fork_server.drain_grace_s
        self._draining = True
        if grace > 0:
            # /healthz fails from now; a load balancer notices within its check interval and stops
            # sending forks here, while forks already on their way are still taken.
            self.log.info("draining: /healthz fails now; taking new forks for %.1f s more", grace)
            await asyncio.sleep(grace)
        self._accepting = False
        self.intake.stop_accepting()
        self.log.info("draining: %d live calls, timeout %.0f s%s", len(self.calls), timeout_s,
                      "; POST /v1/calls answers 503 now" if self.outbound is not None else "")
        await self._wait_calls(timeout_s)
        if self.calls:
            self.log.warning("drain timeout: ending %d calls with their route fallback", len(self.calls))
            for call in list(self.calls.values()):
                call.post(Shutdown())
            await self._wait_calls(5.0)

    async def _wait_calls(self, timeout_s: float) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while self.calls and loop.time() < deadline:
            await asyncio.sleep(0.05)

    async def stop(self) -> None:
        await self.intake.close()
        if self.outbound is not None:
            await self.outbound.close()
        await self._cancel_background()
        for esl in self.esls.values():
            await esl.close()
        if self.recordings is not None:
            self.recordings.close()

    async def _cancel_background(self, attempts: int = 10) -> None:
        """Cancel the app's own tasks (pollers, sweeps, fallbacks of calls already gone) and wait
        for them. A task that swallows its cancel is cancelled again each second, then left with
        an error line: stop() must end. (Python 3.11's wait_for lost a cancel that arrived in the
        same loop turn as its result; the status poller then polled on and a test's teardown
        waited for it for ever. The client code now uses asyncio.timeout, which does not.)"""
        for _ in range(attempts):
            pending = [t for t in self._background if not t.done()]
            if not pending:
                return
            for task in pending:
                task.cancel()
            _, still = await asyncio.wait(pending, timeout=1.0)
            if still:
                self.log.warning("stop: %d background tasks ignored their cancel (%s); cancelling again",
                                 len(still), ", ".join(sorted(t.get_name() for t in still)))
        left = [t.get_name() for t in self._background if not t.done()]
        if left:
            self.log.error("stop: background tasks still running after %d cancels: %s", attempts, ", ".join(sorted(left)))

    async def serve_forever(self) -> None:
        """Run until SIGTERM/SIGINT, then drain and stop."""
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await self.start()
        await stop.wait()
        self.log.info("signal received")
        await self.drain()
        await self.stop()

    # ------------------------------------------------------------------ calls

    def _settings(self, route: Route, fork_rate: int, outbound: Any = None, direction: str = "inbound") -> SessionSettings:
        p = self.config.playback
        c = self.config.connectors[route.connector]
        metadata = route.metadata
        if outbound is not None:  # the request's metadata over the route's (the more specific wins)
            metadata = {**route.metadata, **outbound.request.metadata}
        return SessionSettings(
            direction=direction,
            parties=(outbound.request.from_, outbound.request.to) if outbound is not None else None,
            route=route.name,
            fork_rate=fork_rate,
            language=route.language,
            metadata=metadata,
            fallback_action=route.fallback.action,
            fallback_file=route.fallback.file,
            fallback_target=route.fallback.target,
            spool=self.spool,
            playback_command=p.command,
            transport=p.transport,
            first_segment_ms=p.first_segment_ms,
            segment_ms=p.segment_ms,
            lead_ms=p.lead_ms,
            reconnect_attempts=c.reconnect_attempts,
            max_spool_bytes=p.max_spool_bytes_per_call,
            switch_temp_dir=self.config.freeswitch.temp_dir,
            connector_rate=dialects.DIALECTS[c.protocol].audio_rate,
            start_lead_ms=(c.playout_lead_ms if c.playout_lead_ms is not None
                           else dialects.DIALECTS[c.protocol].playout_lead_ms),
        )

    async def _on_call(self, ws: ForkConnection, route_name: str) -> None:
        route = self.config.route(route_name)
        intake = ForkIntake(expected_route=route.name, max_metadata_bytes=self.config.fork_server.max_metadata_bytes)
        peer = ws.remote_address
        try:
            async with asyncio.timeout(_METADATA_TIMEOUT_S):
                first = await ws.recv()
            if isinstance(first, bytes):
                raise ForkProtocolError("audio before the metadata text frame")
            meta = next(ev for ev in intake.receive_text(first) if isinstance(ev, ForkMetadata))
        except (TimeoutError, ConnectionClosed, StopIteration, ForkProtocolError) as exc:
            self.metrics.rejected.labels("bad_metadata").inc()
            self.log.error("< fork from %s on /calls/%s: no usable metadata: %s", peer, route_name, exc or type(exc).__name__)
            await ws.close(1008, "bad metadata")
            return
        esl = self._esl_of(meta)
        if esl is None:
            self.metrics.rejected.labels("unknown_switch").inc()
            self.log.error("< fork for %s on /calls/%s names switch %r, which is not in freeswitch.switches (%s); refused",
                           meta.uuid, route_name, meta.switch, ", ".join(self.esls) if self.multi_switch else "one switch, none named")
            await ws.close(1008, "unknown switch")
            return
        if meta.uuid in self.calls:
            self.metrics.rejected.labels("duplicate_uuid").inc()
            self.log.error("< fork for %s on /calls/%s: uuid already has a live call", meta.uuid, route_name)
            await ws.close(1008, "duplicate call")
            return
        over = self._over_limit(route)
        if over:
            # The switch's limit keeps these calls out; one that gets here anyway (a dialplan
            # rendered before the limit, a second switch) gets its route's busy action.
            self.metrics.rejected.labels("over_limit").inc()
            self.log.warning("< fork for %s on /calls/%s: over %s; busy %s", meta.uuid, route_name, over, route.busy.action)
            await ws.close(1013, "over max_calls")
            self._spawn(self._busy_without_call(meta.uuid, route, esl))
            return
        # The rate the switch was told is the one that arrives: the metadata's (rate: auto is the
        # switch's pick at answer); a dialplan rendered before rates were sent has the route's.
        fork_rate = meta.rate or route.rate
        if not fork_rate:
            self.metrics.rejected.labels("bad_metadata").inc()
            self.log.error("< fork for %s on /calls/%s: no rate in the metadata and the route's is auto; re-render the dialplan (just render)", meta.uuid, route_name)
            await ws.close(1008, "bad metadata")
            return
        connector = self.config.connectors[route.connector]
        target = ConnectorTarget(
            connector.url,
            self._connector_headers[route.connector],
            connector.connect_timeout_s,
            connector.ping_interval_s,
            connector.send_queue_ms,
            connector.ping_timeout_s,
            self._dialects[route.connector],
        )
        # An outbound call of ours (its uuid is the one we originated with), or one the switch says
        # was originated (the outbound extension's fork metadata; another fork server's call).
        outbound = self.outbound.on_fork(meta.uuid) if self.outbound is not None else None
        direction = "outbound" if outbound is not None or meta.direction == "outbound" else "inbound"
        settings = self._settings(route, fork_rate, outbound, direction)
        if meta.stream_args_ignored:
            # playback.transport: stream, but the switch runs a mod_audio_fork that took the
            # jambonz module's bidirectional arguments for metadata (the drachtio one): files.
            self.metrics.errors.labels("stream_not_playing").inc()
            self.log.error("< fork for %s: playback.transport is stream but this switch's mod_audio_fork is not the jambonz "
                           "module (it took the bidirectional arguments as metadata); this call plays files", meta.uuid)
            settings = replace(settings, transport="file")
        session = CallSession(meta.uuid, settings)
        call = Call(session, ws, intake, target, esl, self.metrics, self.log, recordings=self.recordings)
        call.switch = meta.switch or "default"
        self.calls[meta.uuid] = call
        self.metrics.active_calls.inc()
        call.log.info("< fork open on /calls/%s from %s (%d Hz, %s)", route.name, peer, fork_rate, direction)
        try:
            await call.run()
        finally:
            self.calls.pop(meta.uuid, None)
            self.metrics.active_calls.dec()
            if self.outbound is not None:
                self.outbound.on_fork_ended(meta.uuid)

    def _metrics_body(self) -> bytes:
        own = self.metrics.render()
        if self.metrics_share is None:
            return own
        try:
            return merge([own, *self.metrics_share.siblings()])
        except (OSError, ValueError) as exc:  # a sibling's file we cannot read: serve ours, say so
            self.metrics.errors.labels("metrics_merge").inc()
            self.log.error("/metrics: could not add the other workers' metrics: %s", exc)
            return own

    async def _share_metrics_loop(self, share: WorkerShare) -> None:
        while True:
            try:
                share.write(self.metrics.render())
            except OSError as exc:
                self.log.error("metrics snapshot %s: %s", share.path, exc)
            await asyncio.sleep(SHARE_INTERVAL_S)

    def _call_info(self, uuid: str) -> dict[str, Any] | None:
        """GET /calls/<uuid>: what /calls says of it, plus its recording's path; no caller numbers."""
        call = self.calls.get(uuid)
        if call is None:
            return None
        caller = call.session.caller
        return {**call.info(), "connector": self.config.route(call.session.settings.route).connector,
                "fork_rate": call.session.settings.fork_rate,
                "recording": caller.recording if caller is not None else None}

    def _switch_info(self) -> dict[str, Any]:
        """GET /freeswitch/status: the ESL link now, and the switch as last polled. Several
        switches: the same for each under ``switches``, by name."""
        loop = asyncio.get_running_loop()

        def one(sw: Any) -> dict[str, Any]:
            checked = self._switch_checked[sw.name]
            return {
                "esl": {"up": bool(self.esls[sw.name].up), "host": sw.esl_host, "port": sw.esl_port},
                "checked_s_ago": None if checked is None else round(loop.time() - checked, 1),
                **self._switch[sw.name],
            }

        switches = self.config.all_switches()
        if not self.multi_switch:
            return {**one(switches[0]), "fork_server_calls": len(self.calls)}
        return {"switches": {sw.name: {**one(sw), "fork_server_calls": sum(1 for c in self.calls.values() if c.switch == sw.name)}
                             for sw in switches}, "fork_server_calls": len(self.calls)}

    async def _switch_status_loop(self, name: str, interval_s: float = SWITCH_STATUS_INTERVAL_S) -> None:
        """Polls ``version`` and ``status`` of one switch while its ESL is up (two API commands per
        interval), so the endpoint answers at once from the last poll and says how old it is."""
        esl = self.esls[name]
        while True:
            if esl.up:
                try:
                    version = parse_version(await esl.api("version"))
                    status = parse_status(await esl.api("status"))
                    self._switch[name] = {"version": version, **status}
                    self._switch_checked[name] = asyncio.get_running_loop().time()
                except EslError as exc:
                    self.log.warning("> esl version/status for /freeswitch/status: %s", exc)
                await asyncio.sleep(interval_s)
            else:
                await asyncio.sleep(min(interval_s, 0.5))  # poll soon after ESL comes up

    async def _retention_loop(self, store: RecordingStore, interval_s: float = RETENTION_INTERVAL_S) -> None:
        """recording.retention_days: sweep at start, then every interval (in a thread: a big tree
        takes a while to walk)."""
        while True:
            try:
                deleted = await store.run(store.sweep)
                if deleted:
                    self.log.info("recording retention: deleted %d files older than %d days", len(deleted),
                                  store.settings.retention_days)
            except OSError as exc:
                self.metrics.errors.labels("recording_retention").inc()
                self.log.error("recording retention sweep failed: %s", exc)
            await asyncio.sleep(interval_s)

    # ------------------------------------------------------------------ outbound calls

    def _api_answer(self, method: str, target: str, headers: Any, body: bytes) -> tuple[int, dict[str, Any], dict[str, str]]:
        """/v1/calls: the outbound service's answer; 404 saying why when outbound is not configured."""
        if self.outbound is None:
            status, doc, extra = 404, {"error": "outbound calls are not configured (no outbound: section in the config)"}, {}
        else:
            status, doc, extra = self.outbound.answer(method, target, headers, body)
        self.log.info("< %s %.80s: %d", method[:10], target, status)
        return status, doc, extra

    # ------------------------------------------------------------------ Twilio REST

    def _rest_answer(self, request: twilio_rest.RestRequest) -> tuple[int, dict[str, Any], dict[str, str]]:
        status, body, extra = twilio_rest.answer(request, tokens=self._twilio_tokens, hang_up=self._rest_hang_up)
        self.log.info("< REST %s %.120s: %d", request.method[:10], request.target, status)
        return status, body, extra

    def _rest_hang_up(self, account_sid: str, call_sid: str) -> bool:
        """A bot's ``Status=completed``: the connector's hang-up, as if it had asked on its socket."""
        h = call_sid[2:]
        call = self.calls.get(f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}")
        if call is None:
            return False
        connector = self.config.connectors[self.config.route(call.session.settings.route).connector]
        if connector.protocol != "twilio" or connector.account_sid != account_sid:
            return False  # another account's call is not found, as at Twilio
        call.log.info("< REST hang-up from the bot (Status=completed)")
        call.post(HangupRequest(after_playback=False, reason="twilio rest"))
        return True

    # ------------------------------------------------------------------ ESL

    def _esl_of(self, meta: ForkMetadata) -> Any:
        """The ESL link of the switch that owns the call: the one its metadata names (several
        switches; a fork naming none is refused then), the only one otherwise."""
        if not self.multi_switch:
            return self.esl if meta.switch is None else None
        return self.esls.get(meta.switch) if meta.switch is not None else None

    def _healthy(self) -> bool:
        """/healthz: 200 while new calls are welcome: not draining, and an ESL link up (any
        switch's: calls from the others still work)."""
        return not self._draining and any(esl.up for esl in self.esls.values())

    def _on_esl_state(self, up: bool, switch: str = "default") -> None:
        self.metrics.esl_up.labels(switch).set(1 if up else 0)
        where = "" if not self.multi_switch else f" to {switch}"
        if up:
            self.log.info("ESL link%s up", where)
        else:
            self.metrics.esl_reconnects.labels(switch).inc()
            self.log.warning("ESL link%s down; reconnecting", where)

    def wants_event(self, event: Any) -> bool:
        """Would ``_on_esl_event`` act on it? (Asked for every event before it is posted, on the loop, or on
        python-ESL's event thread in the unguarded comparison mode: dict lookups only.)"""
        if event.uuid in self.calls:
            return True
        if self.outbound is not None and self.outbound.tracks(event):
            return True
        return self.orphan_events and isinstance(event, em.ForkEvent) and event.name == "connect_failed"

    def _on_esl_event(self, event: Any, switch: str = "default") -> None:
        if isinstance(event, em.ForkEvent) and event.name == "disconnect" and event.route:
            # REF "Close": after a server-side close the bug stays attached and the next start
            # on the channel fails until `stop` is run; so it is run, whatever the call's state.
            self._spawn(self._detach_fork(event.uuid, self.esls[switch]))
        if isinstance(event, em.Progress):  # only outbound legs ring; no call session takes it
            if self.outbound is not None:
                self.outbound.on_event(event)
            return
        if self.outbound is not None and isinstance(event, (em.BackgroundJob, em.HangupComplete)):
            self.outbound.on_event(event)
            if isinstance(event, em.BackgroundJob):
                return
        call = self.calls.get(event.uuid)
        if call is not None:
            call.post(event)
            return
        if not self.orphan_events:
            return
        if isinstance(event, em.ForkEvent) and event.name == "connect_failed" and event.route:
            try:
                route = self.config.route(event.route)
            except KeyError:
                return
            task = asyncio.get_running_loop().create_task(
                self._fallback_without_call(event.uuid, route, event.body, self.esls[switch]))
            self._background.add(task)
            task.add_done_callback(self._background.discard)

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro, name=getattr(coro, "__qualname__", None))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _detach_fork(self, uuid: str, esl: Any) -> None:
        clog = CallLogger(self.log, {"uuid": uuid})
        try:
            await esl.api(em.uuid_audio_fork_stop(uuid))
            clog.info("< mod_audio_fork::disconnect; > uuid_audio_fork stop (the bug stays attached otherwise)")
        except EslError as exc:
            clog.info("< mod_audio_fork::disconnect; > uuid_audio_fork stop: %s", exc)

    def _over_limit(self, route: Route, ringing_route: int = 0, ringing: int = 0) -> str | None:
        """The fork-server guard: which max_calls a new call of ``route`` would pass, if any
        (this process's calls, and for a new outbound call those it has ringing; with
        --workers each worker guards its own share)."""
        top = self.config.max_calls
        if top is not None and len(self.calls) + ringing >= top:
            return f"limits.max_calls ({top})"
        if route.max_calls is not None:
            n = sum(1 for c in self.calls.values() if c.session.settings.route == route.name) + ringing_route
            if n >= route.max_calls:
                return f"routes[{route.name}].max_calls ({route.max_calls})"
        return None

    async def _busy_without_call(self, uuid: str, route: Route, esl: Any) -> None:
        """The route's busy action over ESL for a call the guard turned away (already answered, so
        reject is a hangup with USER_BUSY, not a 486)."""
        clog = CallLogger(self.log, {"uuid": uuid})
        b = route.busy
        try:
            await esl.api(em.uuid_audio_fork_stop(uuid))
        except EslError as exc:
            clog.warning("> uuid_audio_fork stop: %s", exc)
        try:
            if b.action == "transfer" and b.target:
                await esl.api(em.uuid_transfer(uuid, b.target))
            elif b.action == "play" and b.file:
                await esl.execute_playback(em.PlaybackCommand(uuid, b.file))
                await esl.sendmsg(uuid, em.execute_headers("hangup", "USER_BUSY"))
            else:
                await esl.api(em.uuid_kill(uuid, "USER_BUSY"))
            clog.info("> busy %s for route %s", b.action, route.name)
        except EslError as exc:
            self.metrics.errors.labels("busy_failed").inc()
            clog.error("> busy action for route %s failed: %s", route.name, exc)

    async def _fallback_without_call(self, uuid: str, route: Route, body: Any, esl: Any) -> None:
        """mod_audio_fork could not reach us for one of our routes: run its fallback (REF "Events")."""
        clog = CallLogger(self.log, {"uuid": uuid})
        clog.error("< mod_audio_fork::connect_failed on route %s: %s; fallback %s", route.name, body, route.fallback.action)
        self.metrics.calls.labels("connect_failed").inc()
        fb = route.fallback
        try:
            # The bug stays attached after a failed connect (REF "Close"); free it.
            await esl.api(em.uuid_audio_fork_stop(uuid))
        except EslError as exc:
            clog.warning("> uuid_audio_fork stop: %s", exc)
        try:
            if fb.action == "transfer" and fb.target:
                await esl.api(em.uuid_transfer(uuid, fb.target))
            elif fb.action == "play" and fb.file:
                # Queued with event-lock, hangup runs after the prompt has played.
                await esl.execute_playback(em.PlaybackCommand(uuid, fb.file))
                await esl.sendmsg(uuid, em.execute_headers("hangup", "NORMAL_CLEARING"))
            else:
                await esl.api(em.uuid_kill(uuid))
        except EslError as exc:
            self.metrics.errors.labels("fallback_failed").inc()
            clog.error("> fallback for route %s failed: %s", route.name, exc)
