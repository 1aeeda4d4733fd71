"""Security review as tests (issue 6): auth on the media socket, secrets never logged or
defaulted, peer paths and uuids kept out of the filesystem, caller-controlled strings kept out
of dialplan expansion, ESL command lines and connector JSON, the Event Socket on loopback."""

import asyncio
import base64
import json
import logging
import xml.etree.ElementTree as ET

import pytest
from hypothesis import given, strategies as st
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

pytest.importorskip("ESL")

from chaoslib import SALES, SUPPORT, bot, config, errors, stack, until  # noqa: E402
from fork_server import intake  # noqa: E402
from fork_server.app import App  # noqa: E402
from fork_server.errors import LocalUsageError  # noqa: E402
from fork_server.intake import BasicCredentials, check_basic_auth  # noqa: E402
from fs_dialplan.errors import ConfigError  # noqa: E402
from fs_dialplan.loader import parse_config  # noqa: E402
from fs_dialplan.render import render  # noqa: E402
from testbed.figures import record  # noqa: E402
from testbed.stack import EXAMPLE_CONFIG, stack_env  # noqa: E402

EXAMPLE = EXAMPLE_CONFIG.read_text()


# ------------------------------------------------------------------ the media socket needs auth, by default


def test_omitting_auth_is_a_config_error_and_auth_none_must_be_written():
    no_auth = EXAMPLE.replace("  auth:                            # Basic auth on the media socket; `auth: none` disables it\n"
                              "    username: freeswitch\n    password_env: VOICEFORK_FORK_PASSWORD\n", "")
    assert no_auth != EXAMPLE
    with pytest.raises(ConfigError) as err:
        parse_config(no_auth, "v.yaml")
    assert "fork_server.auth: required key is missing" in str(err.value)
    assert parse_config(no_auth.replace("fork_server:\n", "fork_server:\n  auth: none\n"), "v.yaml").fork_server.auth is None


async def test_a_fork_without_credentials_is_refused_and_the_call_gets_its_fallback():
    async with stack(options=bot(speak_after_first_utterance=True)) as s:
        base = f"ws://127.0.0.1:{s.fork_port}/calls/support"
        user = s.config.fork_server.auth.username
        codes = []
        for headers in ({}, {"Authorization": "Basic " + base64.b64encode(f"{user}:wrong".encode()).decode()},
                        {"Authorization": "Basic !!!"}, {"Authorization": "Bearer x"}):
            with pytest.raises(InvalidStatus) as exc:
                async with connect(base, additional_headers=headers):
                    pass
            codes.append(exc.value.response.status_code)
        assert codes == [401, 403, 403, 403]
        # Through the switch: a channel whose fork carries no credentials (the variables unset).
        ch = s.switch.place_call(SUPPORT)
        await until(lambda: s.connector.connections and s.connector.connections[0].start, 5, "the first fork")
        for var in ("MOD_AUDIO_BASIC_AUTH_USERNAME", "MOD_AUDIO_BASIC_AUTH_PASSWORD"):
            s.switch.api("uuid_setvar", f"{ch.uuid} {var}")
        s.switch.api("uuid_audio_fork", f"{ch.uuid} start {base} mono 16k second {{}}")
        await until(lambda: s.app.metrics.rejected.labels("auth_missing")._value.get() >= 2, 5, "refused")
        assert len(s.connector.connections) == 1  # nothing unauthenticated reached a connector
        ch.hangup()
        record("media socket without credentials", 5, 5, http_codes=codes + [401])


def test_credentials_are_compared_in_constant_time_both_halves_always(monkeypatch):
    calls = []
    real = intake.hmac.compare_digest

    def spy(a, b):
        calls.append((len(a), len(b)))
        return real(a, b)

    monkeypatch.setattr(intake.hmac, "compare_digest", spy)
    creds = BasicCredentials("freeswitch", "s3cret-pw")
    for user, pw, ok in [("freeswitch", "s3cret-pw", True), ("nobody", "s3cret-pw", False),
                         ("freeswitch", "s3cret-pX", False), ("x", "y", False)]:
        calls.clear()
        header = "Basic " + base64.b64encode(f"{user}:{pw}".encode()).decode()
        assert check_basic_auth(header, creds) is ok
        assert len(calls) == 2  # user and password are both compared, whichever is wrong
    assert "s3cret" not in repr(creds)


# ------------------------------------------------------------------ secrets: never logged, never defaulted


async def test_secrets_are_never_logged_nor_served(caplog):
    caplog.set_level(logging.DEBUG)  # every logger, every level
    cfg = config(connector={"token_env": "VOICEFORK_CONNECTOR_TOKEN"})
    env = stack_env(cfg)
    secrets = [v for k, v in env.items()]
    async with stack(cfg=cfg, options={**bot(hangup_after_playback=True), "token": env["VOICEFORK_CONNECTOR_TOKEN"]}) as s:
        user = s.config.fork_server.auth.username
        for pw in ("wrong-guess", env[s.config.fork_server.auth.password_env] + "x"):  # failed logins are logged
            with pytest.raises(InvalidStatus):
                header = "Basic " + base64.b64encode(f"{user}:{pw}".encode()).decode()
                async with connect(f"ws://127.0.0.1:{s.fork_port}/calls/support", additional_headers={"Authorization": header}):
                    pass
        ch = s.switch.place_call(SUPPORT)
        await asyncio.wait_for(ch.hungup.wait(), 20)
        live = s.switch.place_call(SUPPORT)
        await until(lambda: live.uuid in s.app.calls, what="a live call for GET /calls/<uuid>")
        await asyncio.sleep(0.6)  # one poll of the switch for /freeswitch/status
        ops = ("/metrics", "/calls", "/healthz", f"/calls/{live.uuid}", "/freeswitch/status")
        replies = [await s._get(p) for p in ops]
        assert [code for code, _ in replies] == [200] * len(ops)
        served = [body.decode() for _, body in replies]
    forms = secrets + [base64.b64encode(f"{user}:{env[cfg.fork_server.auth.password_env]}".encode()).decode()]
    # Every record but the testbed's own (the emulated switch and connector log under testbed.*;
    # they are not the product, and a real FreeSWITCH does not log through Python).
    ours = [r for r in caplog.records if not r.name.startswith("testbed")]
    assert any(r.name == "voicefork.websockets" and "Authorization" in r.getMessage() for r in ours)
    leaked = [(r.name, r.getMessage()[:120]) for r in ours for f in forms if f in r.getMessage()]
    leaked += [("http", p) for p, body in zip(ops, served) for f in forms if f in body]
    record("secrets in logs and ops endpoints", len(ours), len(ours) - len(leaked),
           log_records=len(ours), secrets_checked=len(forms))
    assert len(ours) > 50 and leaked == []


def test_the_esl_password_is_never_a_default():
    cfg = config()
    env = stack_env(cfg)
    # Not in the YAML at all: the config names an environment variable, and it is required.
    no_pw = EXAMPLE.replace("  esl_password_env: VOICEFORK_ESL_PASSWORD   # never FreeSWITCH's default \"ClueCon\"\n", "")
    with pytest.raises(ConfigError, match="freeswitch.esl_password_env: required key is missing"):
        parse_config(no_pw, "v.yaml")
    # Unset, empty, or FreeSWITCH's well-known default: the fork server refuses to start.
    for value in (None, "", "ClueCon"):
        e = dict(env)
        if value is None:
            del e[cfg.freeswitch.esl_password_env]
        else:
            e[cfg.freeswitch.esl_password_env] = value
        with pytest.raises(LocalUsageError, match=cfg.freeswitch.esl_password_env):
            App(cfg, env=e, listen_port=0)
    # The renderer refuses it too.
    with pytest.raises(Exception, match="default password"):
        render(cfg, {**env, cfg.freeswitch.esl_password_env: "ClueCon"})


def test_the_rendered_event_socket_binds_loopback_unless_told_otherwise():
    cfg = config()
    env = stack_env(cfg)
    params = lambda tree: {p.get("name"): p.get("value") for p in ET.fromstring(tree).iter("param")}  # noqa: E731
    files = render(cfg, env)
    es = params(files[next(k for k in files if k.endswith("event_socket.conf.xml"))])
    assert es["listen-ip"] == "127.0.0.1" and es["apply-inbound-acl"] == "loopback.auto"
    assert es["password"] == env[cfg.freeswitch.esl_password_env] != "ClueCon"
    wide = parse_config(EXAMPLE.replace("  esl_listen_ip: 127.0.0.1", "  esl_listen_ip: 10.0.0.5"), "v.yaml")
    files = render(wide, env)
    es = params(files[next(k for k in files if k.endswith("event_socket.conf.xml"))])
    assert es["listen-ip"] == "10.0.0.5" and es["apply-inbound-acl"] == "loopback.auto"  # the ACL stays


# ------------------------------------------------------------------ peer uuids and paths never reach the filesystem unchecked


async def test_hostile_paths_and_uuids_from_peers_never_touch_the_filesystem(tmp_path):
    canary = tmp_path / "canary.r8"
    canary.write_bytes(b"\0" * 320)
    async with stack(options=bot(speed=1.0), playback={"transport": "inband"}) as s:
        a, b = s.switch.place_call(SUPPORT), s.switch.place_call(SALES)
        await until(lambda: a.ear.frames and b.ear.frames, 10, "both bots speaking")
        # 1. A hostile Playback-File-Path: the canary, a traversal into the other call, the temp dir.
        for path in (str(canary), f"{s.fs_temp}/../../{canary.name}", f"{s.spool}/{b.uuid}/../{b.uuid}/000000.r8"):
            for name in ("PLAYBACK_START", "PLAYBACK_STOP"):
                s.switch.inject_event(a, name, {"Playback-File-Path": path, "Playback-Status": "done"})
        # 2. A hostile play_audio `file` (inband transport): outside the switch's temp dir.
        for f in ("/etc/passwd", f"{s.fs_temp}/../../etc/passwd", str(canary), f"{s.fs_temp}/{a.uuid}_1.tmp.r8/../../x"):
            s.switch.inject_event(a, "CUSTOM", {"Event-Subclass": "mod_audio_fork::play_audio"}, json.dumps({"file": f}))
        # Each is refused: as the answer to a pending playAudio (bad file) or as one we never asked for
        # (waited for, not slept on: under load the call's events took longer than 0.5 s).
        await until(lambda: errors(s.app, "inband_bad_file") + errors(s.app, "inband_unexpected_file") >= 4, 5,
                    "the four play_audio files refused")
        await asyncio.sleep(0.2)  # and whatever the hostile PLAYBACK_* events would have caused
        played = [h.get("execute-app-arg", "") for _, _, h in s.switch.sendmsg_log]
        played += [line for _, line in s.switch.api_log if line.startswith("uuid_broadcast")]
        assert canary.exists() and all("passwd" not in p and str(canary) not in p and ".." not in p for p in played)
        # 3. A fork whose metadata uuid is a path: refused before any directory is made.
        url = f"{s.config.fork_server.public_url}/calls/support"
        s.switch.api("uuid_audio_fork", f'{a.uuid} start {url} mono 16k evil {{"route":"support","uuid":"../../etc"}}')
        await until(lambda: s.app.metrics.rejected.labels("bad_metadata")._value.get() >= 1, 5, "refused")
        # 4. A route path that walks out of /calls/.
        for path in ("/calls/../../etc", "/calls/%2e%2e/x", "/calls/support/../../etc"):
            with pytest.raises(InvalidStatus) as exc:
                async with connect(f"ws://127.0.0.1:{s.fork_port}{path}"):
                    pass
            assert exc.value.response.status_code == 404
        assert a.alive and b.alive  # both calls went on
        made = {p.name for p in s.workdir.rglob("*") if p.is_dir()} - {"spool", "fs-tmp", "fs-conf", "dialplan", "public",
                                                                        "autoload_configs", a.uuid.lower(), b.uuid.lower()}
        a.hangup()
        b.hangup()
    assert "etc" not in made, made
    record("hostile paths and uuids from peers", 11, 11)


# ------------------------------------------------------------------ hostile caller IDs

HOSTILE_IDS = [
    ('"Bob" <sip:bob@x>', '+1555" 1234'),
    ("Eve\n\napi uuid_kill all\n\n", "+1555\r\nsendmsg x\n"),
    ("${uuid_kill(${uuid})}", "$${hold_music}"),
    ("Mallory ' OR 1=1 --", "%0A%0Dapi status"),
    ("\u202eevil\u0000nul", "+15550001111"),
    ("A" * 10_000, "9" * 10_000),
    ("x\\y\\\\z {\"a\":1}", "[1,2]"),
]


async def test_hostile_caller_ids_never_reach_esl_the_dialplan_or_json_unescaped():
    async with stack(options=bot(hangup_after_playback=True)) as s:
        chans = [s.switch.place_call(SUPPORT if i % 2 else SALES, number, name,
                                     variables={"sip_h_X-Evil": name, "sip_from_display": name})
                 for i, (name, number) in enumerate(HOSTILE_IDS)]
        await asyncio.gather(*(asyncio.wait_for(ch.hungup.wait(), 25) for ch in chans))
        await until(lambda: not s.app.calls, 5, "calls ended")
        commands = list(s.esl.commands)  # every ESL command line the switch received
        api = [line for _, line in s.switch.api_log]
        sendmsg = [h for _, _, h in s.switch.sendmsg_log]
        ok = 0
        for ch, (name, number) in zip(chans, HOSTILE_IDS):
            r = s.connector.calls[ch.uuid]
            call = r.start["call"]
            # Connector JSON: the caller's strings as data, exactly, capped at 256 characters.
            want = lambda v: v if len(v) <= 256 else v[:255] + "\u2026"  # noqa: E731
            same = call["caller_name"] == want(name) and call["from"] == want(number)
            # Dialplan: no action ever saw the caller's strings.
            clean_dialplan = all(name[:20] not in (a.data or "") and number[:20] not in (a.data or "") for a in ch.executed)
            ok += same and clean_dialplan and r.stop_reason == "connector_hangup"
        probes = [p for n, m in HOSTILE_IDS for p in (n[:12], m[:12]) if len(p) >= 4]
        in_esl = [c for c in commands + api if any(p in c for p in probes)]
        in_esl += [h for h in sendmsg for v in h.values() if any(p in v for p in probes)]
        verbs = {c.split(" ", 1)[0] for c in commands}
        apis = {c.split(" ", 1)[0] for c in api}
        record("hostile caller IDs (7 kinds)", len(chans), ok, esl_lines_with_caller_text=len(in_esl),
               esl_verbs=sorted(verbs), api_commands=sorted(apis))
        assert ok == len(chans)
        assert in_esl == []
        # One command per line: no caller newline ever split one into two.
        assert verbs <= {"auth", "event", "filter", "api", "sendmsg", "exit"}
        assert apis <= {"uuid_dump", "uuid_audio_fork", "uuid_kill", "uuid_break", "uuid_transfer", "uuid_send_dtmf",
                        "uuid_broadcast", "cond",  # cond: the dialplan's rate: auto, on read_rate only
                        "strftime",  # the recording's file name: the switch's clock only
                        "version", "status"}  # GET /freeswitch/status's poll: constant commands


@given(st.text(max_size=300), st.text(max_size=300))
def test_any_caller_id_round_trips_through_the_dump_and_start(name, number):
    # The same path without sockets, for any text: the switch URL-encodes uuid_dump values;
    # our parser decodes them; the start message carries them as JSON strings.
    from urllib.parse import quote

    from fork_server import connector_protocol as cp, esl_messages as em

    dump = f"Caller-Caller-ID-Name: {quote(name, safe='')}\nCaller-Caller-ID-Number: {quote(number, safe='')}\n"
    try:
        info = em.caller_info(em.parse_dump(dump))
    except Exception as exc:  # noqa: BLE001 - must not happen: reported with the input
        raise AssertionError(f"{name!r}/{number!r}: {exc!r}") from None
    start = json.loads(cp.start(uuid="3f1a2b4c-5d6e-4f70-8a9b-0c1d2e3f4a5b", route="support", from_=info.number,
                                to="", caller_name=info.name, language="en-US", metadata={}))
    clean = lambda v: v.encode("utf-16", "surrogatepass").decode("utf-16", "replace")  # noqa: E731
    for got, sent in ((start["call"]["caller_name"], name), (start["call"]["from"], number)):
        want = clean(sent)
        assert got == (want if len(want) <= 256 else want[:255] + "\u2026")  # exact, or cut and marked


# ------------------------------------------------------------------ outbound calls: no dial-string injection

INJECTIONS = [
    "+15551230000,origination_uuid=00000000-0000-4000-8000-000000000000",
    "+15551230000}sofia/gateway/other/+1900",
    "+15551230000 park XML default",
    "+15551230000\napi shutdown",
    "${system(id)}",
    "$${ESL_PW}",
    "+1555123|9000",
    "sofia/external/x@evil.example",
    "+15551230000&bgapi status",
]


async def test_outbound_requests_never_put_their_text_on_the_esl_wire():
    async with stack() as s:
        s.switch.default_callee = "busy"
        headers = {"Authorization": "Bearer " + s.env["VOICEFORK_API_TOKEN"], "Content-Type": "application/json"}
        good = {"to": "+15551230000", "from": "+15557654321", "route": "support"}
        for field in ("to", "from", "route", "trunk"):
            for bad in INJECTIONS:
                code, _, body = await s.http("POST", "/v1/calls", json.dumps({**good, field: bad}).encode(), headers)
                assert code == 400 and json.loads(body)["field"] == field, (field, bad, body)
        code, _, body = await s.http("POST", "/v1/calls", json.dumps({**good, "metadata": {"x": INJECTIONS[0], "y": "${a}"}}).encode(), headers)
        assert code == 202
        call_id = json.loads(body)["id"]
        await until(lambda: s.switch.originated, what="the one originate")
        bg = [c for c in s.esl.commands if c.startswith("bgapi")]
        assert bg == [f"bgapi originate {{origination_uuid={call_id},origination_caller_id_number=+15557654321,"
                      "origination_caller_id_name=+15557654321,originate_timeout=30,voicefork_route=support,"
                      "jitterbuffer_msec=20,ignore_early_media=true}sofia/gateway/twilio/+15551230000 support XML voicefork_outbound"]
        leg = s.switch.originated[0]
        assert not any("${" in v or "origination_uuid=0000" in v for v in leg.vars.values())  # metadata stayed home
        code, _, _ = await s.http("POST", "/v1/calls", json.dumps(good).encode(), {**headers, "Authorization": "Bearer " + "x" * 4000})
        assert code == 401
